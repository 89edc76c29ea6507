//! The torrent as peer connections see it: [`Swarm`] and [`PeerHost`] over
//! [`Shared`], plus the admission policy for new connections.
//!
//! Each trait method takes the state lock once, for a short, non-blocking
//! section. Admission ([`admit`]) is a pure function of the peer table so
//! its rules (bans, one connection per IP, peer-id clashes, eviction of
//! useless peers when full) are unit-tested without sockets.

use super::shared::{
    BAN_STRIKES, EVICT_AFTER, Limits, MAX_PEX_SEEDS, PEX_REMEMBER_SEEDS, PeerEntry, Shared,
    keep_new_connection,
};
use super::verify::deliver_block;
use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::id::{InfoHash, PeerId};
use crate::merkle::Hash;
use crate::metainfo::Info;
use crate::peer::conn::{PeerHost, Refused, Registration};
use crate::peer::hashes::HashRequest;
use crate::peer::message::BlockRef;
use crate::peer::metadata::{MetadataError, MetadataMessage, serve_piece};
use crate::peer::pex::FLAG_SEED;
use crate::peer::state::PeerCommand;
use crate::peer::swarm::{Swarm, TorrentInfo};
use crate::picker::PeerKey;
use crate::webseed::WebSeedHost;
use bytes::Bytes;
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Instant;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// What admitting a connection takes.
#[derive(Debug, PartialEq, Eq)]
pub enum Admission {
    /// Room for it as things are.
    Room,
    /// Admit it and close this other connection (a duplicate it replaces,
    /// or a useless peer evicted to make room).
    Replace(PeerKey),
}

/// Decides whether a handshaken connection from `reg` may join `peers`.
/// `our_id` is our peer id, `now` the current instant.
pub fn admit(
    peers: &HashMap<PeerKey, PeerEntry>,
    banned: &HashSet<IpAddr>,
    limits: Limits,
    our_id: &PeerId,
    reg: &Registration,
    now: Instant,
) -> Result<Admission, Refused> {
    let ip = reg.addr.ip();
    if banned.contains(&ip) {
        return Err(Refused::Banned);
    }
    if reg.peer_id == *our_id {
        return Err(Refused::SelfConnection);
    }
    let mut replaced = None;
    if let Some((k, old)) = peers.iter().find(|(_, p)| p.peer_id == reg.peer_id) {
        // Only the same address may reopen a connection under a peer id;
        // anyone else claiming it is lying and must not evict the real one.
        // Except the peer we dialled ourselves while it was dialling us: a
        // client on this host (or behind this NAT) is reached at one of its
        // addresses and connects from another, and both sides must apply
        // the same tie-break below or both connections are lost.
        let simultaneous_open = reg.outgoing && !old.outgoing;
        if old.addr.ip() != ip && !simultaneous_open {
            return Err(Refused::PeerIdTaken);
        }
        if !keep_new_connection(our_id, &reg.peer_id, reg.outgoing, old.outgoing) {
            return Err(Refused::Duplicate);
        }
        replaced = Some(*k);
    } else if let Some((k, _)) = peers.iter().find(|(_, p)| {
        p.addr == reg.addr && p.link.transport == reg.link.transport && !reg.outgoing
    }) {
        // Another peer id from the very address (IP and port) and
        // transport of a connection we hold: the peer restarted (a new
        // process draws a new id) on its port, and the old connection is
        // dead though nothing told us: a killed uTP peer sends no FIN or
        // RESET, so it would hold the IP's one slot until it timed out and
        // the restarted peer, refused, would wait out its redial back-off.
        // A live connection's address cannot be taken by another socket.
        replaced = Some(*k);
    }
    let from_ip = peers
        .iter()
        .filter(|(k, p)| p.addr.ip() == ip && Some(**k) != replaced)
        .count();
    if from_ip >= limits.max_per_ip {
        return Err(Refused::PerIpLimit);
    }
    if let Some(k) = replaced {
        return Ok(Admission::Replace(k));
    }
    if peers.len() < limits.max_peers {
        return Ok(Admission::Room);
    }
    // Full: make room by closing the peer that has been useless longest,
    // if any has been useless for long.
    peers
        .iter()
        .filter(|(_, p)| {
            now.saturating_duration_since(p.connected_at) >= EVICT_AFTER
                && now.saturating_duration_since(p.last_useful) >= EVICT_AFTER
        })
        .min_by_key(|(_, p)| p.last_useful)
        .map(|(k, _)| Admission::Replace(*k))
        .ok_or(Refused::Full)
}

impl Swarm for Shared {
    fn torrent(&self) -> Option<TorrentInfo> {
        self.data().map(|d| TorrentInfo {
            geometry: d.geometry,
            metadata_size: d.meta.info_bytes.len() as u32,
        })
    }

    fn our_bitfield(&self) -> (Option<Bytes>, usize) {
        let st = self.lock();
        let bf = st
            .picker
            .as_ref()
            .filter(|p| p.have().count() > 0)
            .map(|p| Bytes::copy_from_slice(p.have().as_bytes()));
        (bf, st.verified_log.len())
    }

    fn new_haves(&self, cursor: &mut usize, out: &mut Vec<u32>) {
        let st = self.lock();
        if let Some(new) = st.verified_log.get(*cursor..) {
            out.extend_from_slice(new);
            *cursor = st.verified_log.len();
        }
    }

    fn we_have(&self, piece: u32) -> bool {
        self.lock()
            .picker
            .as_ref()
            .is_some_and(|p| p.have().get(piece as usize))
    }

    fn is_interesting(&self, bf: &Bitfield) -> bool {
        self.lock()
            .picker
            .as_ref()
            .is_some_and(|p| p.is_interesting(bf))
    }

    fn is_complete(&self) -> bool {
        Shared::is_complete(self)
    }

    fn peer_bitfield(&self, key: PeerKey, bf: &Bitfield) {
        let mut st = self.lock();
        if let Some(p) = st.picker.as_mut() {
            p.add_availability(bf);
        }
        if let Some(e) = st.peers.get_mut(&key) {
            e.seed = bf.is_full();
        }
    }

    fn peer_have(&self, key: PeerKey, piece: u32, now_seed: bool) {
        let mut st = self.lock();
        if let Some(p) = st.picker.as_mut() {
            p.add_have(piece);
        }
        if let Some(e) = st.peers.get_mut(&key) {
            e.seed = now_seed;
        }
    }

    fn pick(
        &self,
        key: PeerKey,
        bf: &Bitfield,
        want: usize,
        in_flight: &[BlockRef],
        now: Instant,
    ) -> Vec<BlockRef> {
        if self.disk_paused() {
            return Vec::new();
        }
        let mut st = self.lock();
        match st.picker.as_mut() {
            Some(p) => p.pick(key, bf, want, in_flight, now),
            None => Vec::new(),
        }
    }

    fn release(&self, key: PeerKey, blocks: &[BlockRef]) {
        if let Some(p) = self.lock().picker.as_mut() {
            p.release(key, Some(blocks));
        }
    }

    fn deliver(&self, key: PeerKey, piece: u32, offset: u32, data: &[u8]) {
        if let Some(e) = self.lock().peers.get_mut(&key) {
            e.last_useful = Instant::now();
        }
        // Needs the Arc for the verify task; peers only ever hold one.
        if let Some(me) = self.this.upgrade() {
            deliver_block(&me, key, piece, offset, data);
        }
    }

    fn set_interested(&self, key: PeerKey, interested: bool) {
        if let Some(e) = self.lock().peers.get_mut(&key) {
            e.interested = interested;
            e.last_useful = Instant::now();
        }
        self.rechoke.notify_one();
    }

    fn set_rates(&self, key: PeerKey, down: u64, up: u64) {
        if let Some(e) = self.lock().peers.get_mut(&key) {
            e.down_rate = down;
            e.up_rate = up;
            if down > 0 || up > 0 {
                e.last_useful = Instant::now();
            }
        }
    }

    fn count_uploaded(&self, n: u64) {
        Shared::add(&self.counters.uploaded, n);
    }

    fn metadata_piece(&self, piece: u32) -> MetadataMessage {
        self.data()
            .and_then(|d| serve_piece(&d.meta.info_bytes, piece))
            .unwrap_or(MetadataMessage::Reject { piece })
    }

    fn metadata_size(&self, key: PeerKey, size: u32) {
        if let Some(a) = self.lock().assembler.as_mut() {
            let _ = a.on_peer_size(key, size);
        }
    }

    fn next_metadata_request(&self, key: PeerKey, now: Instant) -> Option<u32> {
        self.lock().assembler.as_mut()?.next_request(key, now)
    }

    fn metadata_data(
        &self,
        key: PeerKey,
        piece: u32,
        total_size: u32,
        data: &[u8],
        now: Instant,
    ) -> Result<(), MetadataError> {
        let mut st = self.lock();
        let Some(a) = st.assembler.as_mut() else {
            return Ok(());
        };
        let result = a.on_data(key, piece, total_size, data, now);
        let bad = a.bad_peers();
        let me_bad = a.is_bad(key);
        // Peers proven to send wrong or malformed metadata are banned: they
        // are not asked again, here or after a reconnect.
        let ips: Vec<IpAddr> = bad
            .iter()
            .filter_map(|k| st.peers.get(k).map(|p| p.addr.ip()))
            .collect();
        for ip in ips {
            if !st.banned.contains(&ip) {
                tracing::info!("banned {ip}: it sent metadata that does not match the info-hash");
                Shared::ban(&mut st, ip);
            }
        }
        drop(st);
        match result {
            Ok(Some(info)) => {
                super::layers::metadata_assembled(self, info);
                Ok(())
            }
            Ok(None) if me_bad => Err(MetadataError::HashMismatch {
                contributors: vec![key],
            }),
            Ok(None) => Ok(()),
            Err(MetadataError::HashMismatch { contributors }) => {
                if contributors.contains(&key) && me_bad {
                    Err(MetadataError::HashMismatch { contributors })
                } else {
                    Ok(())
                }
            }
            Err(e) => Err(e),
        }
    }

    fn metadata_reject(&self, key: PeerKey, piece: u32) {
        if let Some(a) = self.lock().assembler.as_mut() {
            a.on_reject(key, piece);
        }
    }

    fn metadata_junk(&self, key: PeerKey) {
        if let Some(a) = self.lock().assembler.as_mut() {
            a.on_peer_junk(key);
        }
    }

    fn metadata_outstanding(&self, key: PeerKey) -> usize {
        self.lock()
            .assembler
            .as_ref()
            .map_or(0, |a| a.in_flight(key))
    }

    fn peer_gone(&self, key: PeerKey, bf: Option<&Bitfield>) {
        let mut st = self.lock();
        let empty = Bitfield::default();
        if let Some(p) = st.picker.as_mut() {
            p.peer_gone(key, bf.unwrap_or(&empty));
        }
        if let Some(a) = st.assembler.as_mut() {
            a.on_peer_gone(key);
        }
        drop(st);
        super::layers::peer_gone(self, key);
    }

    fn hash_answer(&self, req: &HashRequest) -> Option<Vec<Hash>> {
        super::layers::answer(self, req)
    }

    fn hash_answer_later(&self, key: PeerKey, req: &HashRequest, budget: u32) -> Option<u32> {
        super::layers::answer_later(self, key, req, budget)
    }

    fn next_hash_request(
        &self,
        key: PeerKey,
        bf: Option<&Bitfield>,
        now: Instant,
    ) -> Option<HashRequest> {
        super::layers::next_request(self, key, bf, now)
    }

    fn hash_request_pending(&self, key: PeerKey, req: &HashRequest, now: Instant) -> bool {
        super::layers::pending(self, key, req, now)
    }

    fn hashes_received(
        &self,
        key: PeerKey,
        req: &HashRequest,
        hashes: &[Hash],
        now: Instant,
    ) -> Result<(), String> {
        super::layers::received(self, key, req, hashes, now)
    }

    fn hash_rejected(&self, key: PeerKey, req: &HashRequest, now: Instant) {
        super::layers::rejected(self, key, req, now)
    }

    fn peer_listen_port(&self, key: PeerKey, port: u16) {
        if let Some(e) = self.lock().peers.get_mut(&key) {
            e.listen_port = Some(port);
        }
    }

    fn pex_allowed(&self) -> bool {
        self.data().is_some_and(|d| !d.meta.info.private)
    }

    fn pex_peers(&self, key: PeerKey) -> Vec<(SocketAddr, u8)> {
        let mut st = self.lock();
        let now = Instant::now();
        while st
            .pex_seeds
            .front()
            .is_some_and(|s| now.saturating_duration_since(s.2) >= PEX_REMEMBER_SEEDS)
        {
            st.pex_seeds.pop_front();
        }
        let theirs = st.peers.get(&key).and_then(PeerEntry::listen_addr);
        let mut out: Vec<(SocketAddr, u8)> = st
            .peers
            .iter()
            .filter(|(k, _)| **k != key)
            .filter_map(|(_, e)| e.listen_addr().map(|a| (a, e.pex_flags())))
            .filter(|(a, _)| Some(*a) != theirs)
            .collect();
        for (a, f, _) in &st.pex_seeds {
            if Some(*a) != theirs && !out.iter().any(|(x, _)| x == a) {
                out.push((*a, *f));
            }
        }
        out
    }

    fn pex_learned(&self, _key: PeerKey, added: &[(SocketAddr, u8)]) {
        if !self.pex_allowed() {
            return;
        }
        let tx = self.pex_sender();
        // A seed is no use to us once we have everything.
        let complete = self.is_complete();
        let addrs: Vec<(SocketAddr, u8)> = added
            .iter()
            .filter(|(a, f)| {
                let useless_seed = complete && f & FLAG_SEED != 0;
                let unusable = a.port() == 0 || a.ip().is_unspecified() || a.ip().is_multicast();
                !useless_seed && !unusable
            })
            .copied()
            .collect();
        if !addrs.is_empty() {
            let _ = tx.try_send(addrs);
        }
    }
}

impl PeerHost for Shared {
    fn encryption(&self) -> crate::mse::Encryption {
        self.encryption.get().copied().unwrap_or_default()
    }

    fn rate_limits(&self) -> crate::ratelimit::RateLimits {
        self.rate_limits.get().cloned().unwrap_or_default()
    }

    fn info_hash(&self) -> InfoHash {
        self.info_hash
    }

    fn speaks_v2(&self) -> bool {
        self.hashx.speaks_v2()
    }

    fn hybrid(&self) -> Option<(InfoHash, InfoHash)> {
        self.hybrid.get().copied()
    }

    fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    fn ports(&self) -> (u16, Option<u16>) {
        (self.listen_port, self.dht_port)
    }

    fn register(&self, key: PeerKey, reg: Registration) -> Result<(), Refused> {
        let now = Instant::now();
        let mut st = self.lock();
        let admission = admit(&st.peers, &st.banned, self.limits, &self.peer_id, &reg, now)?;
        let budget = self.budget.get();
        if admission == Admission::Room && budget.is_some_and(|b| b.is_full()) {
            return Err(Refused::Full);
        }
        if let Admission::Replace(old) = admission
            && let Some(p) = st.peers.get(&old)
        {
            // The old task unregisters itself when it ends.
            let _ = p.tx.try_send(PeerCommand::Close);
        }
        st.peers.insert(
            key,
            PeerEntry {
                addr: reg.addr,
                peer_id: reg.peer_id,
                interested: false,
                choked: true,
                down_rate: 0,
                up_rate: 0,
                seed: false,
                outgoing: reg.outgoing,
                link: reg.link,
                tx: reg.tx,
                connected_at: now,
                last_useful: now,
                listen_port: None,
            },
        );
        if let Some(b) = budget {
            b.open.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        }
        drop(st);
        self.emit(super::status::SessionEvent::PeerConnected {
            addr: reg.addr,
            link: reg.link,
            outgoing: reg.outgoing,
        });
        self.peer_joined.notify_one();
        Ok(())
    }

    fn unregister(&self, key: PeerKey) {
        let mut st = self.lock();
        let gone = st.peers.remove(&key);
        if let Some(e) = &gone
            && e.seed
            && st.picker.as_ref().is_some_and(|p| p.have().is_full())
            && let Some(addr) = e.listen_addr()
        {
            // Two seeds part at once, but the one that left still serves
            // every leecher we meet: keep telling them about it for a while.
            st.pex_seeds.retain(|s| s.0 != addr);
            if st.pex_seeds.len() >= MAX_PEX_SEEDS {
                st.pex_seeds.pop_front();
            }
            st.pex_seeds
                .push_back((addr, e.pex_flags(), Instant::now()));
        }
        drop(st);
        if let Some(e) = &gone {
            self.emit(super::status::SessionEvent::PeerDisconnected { addr: e.addr });
        }
        if gone.is_some()
            && let Some(b) = self.budget.get()
        {
            b.open.fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
        }
        self.rechoke.notify_one();
    }

    fn read_blocks(&self, blocks: Vec<BlockRef>) -> Vec<(BlockRef, Option<Bytes>)> {
        let Some(data) = self.data() else {
            return blocks.into_iter().map(|r| (r, None)).collect();
        };
        blocks
            .into_iter()
            .map(|r| {
                let mut buf = vec![0u8; r.len as usize];
                let off = data.geometry.piece_offset(r.piece) + r.offset as u64;
                match data.storage.read(off, &mut buf) {
                    Ok(()) => (r, Some(Bytes::from(buf))),
                    Err(e) => {
                        tracing::warn!("serving a block: {e}");
                        (r, None)
                    }
                }
            })
            .collect()
    }

    fn verified(&self) -> watch::Receiver<u64> {
        self.pieces_verified.subscribe()
    }

    fn shutdown(&self) -> CancellationToken {
        self.shutdown.clone()
    }
}

impl WebSeedHost for Shared {
    fn download_limit(&self) -> Option<Arc<crate::ratelimit::RateLimiter>> {
        self.rate_limits.get().and_then(|r| r.down.clone())
    }

    fn web_seed_torrent(&self) -> Option<(Info, Geometry)> {
        self.data().map(|d| (d.meta.info.clone(), d.geometry))
    }

    fn web_seed_joined(&self, key: PeerKey) {
        self.lock().web_seed_strikes.insert(key, 0);
    }

    fn web_seed_left(&self, key: PeerKey) {
        self.lock().web_seed_strikes.remove(&key);
    }

    fn web_seed_banned(&self, key: PeerKey) -> bool {
        self.lock()
            .web_seed_strikes
            .get(&key)
            .is_some_and(|s| *s >= BAN_STRIKES)
    }
}

/// The same shared state, as the trait object peer tasks hold.
pub fn as_host(shared: &Arc<Shared>) -> Arc<dyn PeerHost> {
    shared.clone()
}

#[cfg(test)]
mod tests;
