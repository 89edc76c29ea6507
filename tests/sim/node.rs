//! One simulated node's torrent side: [`SimSwarm`] implements btc's
//! `Swarm` trait over the real `Picker` and `MetadataAssembler`, verifies
//! pieces with the real `Info::piece_matches` (SHA-1), and keeps the ban
//! books. What the session's tokio actor does around that (command
//! channels, the verify worker, the peer table) is reduced here to plain
//! queues the world drains after every event.

use crate::rng::Rng;
use btc::bitfield::Bitfield;
use btc::geometry::Geometry;
use btc::id::InfoHash;
use btc::metainfo::Metainfo;
use btc::peer::message::{BLOCK_LEN, BlockRef};
use btc::peer::metadata::{MetadataAssembler, MetadataError, MetadataMessage, serve_piece};
use btc::peer::pex::FLAG_SEED;
use btc::peer::state::PeerCommand;
use btc::peer::swarm::{Swarm, TorrentInfo};
use btc::picker::{BlockOutcome, PeerKey, Picker};
use bytes::Bytes;
use sha1::{Digest, Sha1};
use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Mutex, MutexGuard};
use std::time::Instant;

/// The port every simulated node listens on.
pub const PORT: u16 = 6881;

/// The torrent every node of a run shares: its content is generated once
/// and served by slicing (no copy per node).
pub struct Torrent {
    pub info_hash: InfoHash,
    pub info_bytes: Bytes,
    pub meta: Metainfo,
    pub geometry: Geometry,
    pub content: Bytes,
}

impl Torrent {
    /// A single-file torrent of `len` random bytes in pieces of `piece_len`.
    pub fn new(len: u64, piece_len: u32, rng: &mut Rng) -> Torrent {
        let mut content = vec![0u8; len as usize];
        rng.fill(&mut content);
        let mut pieces = Vec::new();
        for p in content.chunks(piece_len as usize) {
            pieces.extend_from_slice(&Sha1::digest(p));
        }
        // Keys in bencode order.
        let mut info = format!(
            "d6:lengthi{len}e4:name3:sim12:piece lengthi{piece_len}e6:pieces{}:",
            pieces.len()
        )
        .into_bytes();
        info.extend_from_slice(&pieces);
        info.push(b'e');
        let meta =
            Metainfo::from_info_bytes(&info, Vec::new()).expect("the sim's info dict parses");
        assert_eq!(meta.info_hash.0, <[u8; 20]>::from(Sha1::digest(&info)));
        Torrent {
            info_hash: meta.info_hash,
            info_bytes: Bytes::from(info),
            geometry: Geometry::new(len, piece_len),
            meta,
            content: Bytes::from(content),
        }
    }
}

/// How a node serves blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Behaviour {
    Honest,
    /// Every block it serves has its bytes flipped.
    Corrupt,
    /// One block in four (by index in the torrent) has one byte wrong:
    /// harder to pin, since most of what it sends is good.
    Sly,
}

/// The session's trust policy (`session/shared.rs`), reproduced: it lives
/// in the tokio side, not in the sans-IO core.
const BAN_TRUST: i32 = -7;
const MAX_TRUST: i32 = 20;
const MAX_SUSPECT_PIECES: usize = 256;

/// What the session's `PeerEntry` holds that the choker and PEX need.
#[derive(Debug, Clone)]
pub struct Entry {
    pub ip: IpAddr,
    pub interested: bool,
    pub choked: bool,
    pub down_rate: u64,
    pub up_rate: u64,
    pub seed: bool,
}

/// A failed piece's block, kept for the smart ban (`session/verify.rs`).
struct Suspect {
    ip: IpAddr,
    block: usize,
    hash: [u8; 20],
}

pub struct Inner {
    pub known: bool,
    pub picker: Option<Picker>,
    pub assembler: Option<MetadataAssembler>,
    pub verified_log: Vec<u32>,
    pub peers: BTreeMap<PeerKey, Entry>,
    /// Commands for connections, as the session's channels carry them.
    pub cmds: VecDeque<(PeerKey, PeerCommand)>,
    /// A piece was verified or the metadata arrived: every connection
    /// runs `on_pieces_changed` (the session's `verified` watch).
    pub changed: bool,
    /// Interest changed or a peer left: the choker runs (`rechoke` notify).
    pub rechoke: bool,
    pub learned: Vec<SocketAddr>,
    trust: BTreeMap<IpAddr, i32>,
    pub banned: BTreeSet<IpAddr>,
    suspects: BTreeMap<u32, Vec<Suspect>>,
    /// Ground truth the node cannot see: IPs whose corrupt block went
    /// into a piece this node assembled.
    pub fed_corrupt_by: BTreeSet<IpAddr>,
    pub uploaded: u64,
    pub downloaded: u64,
    pub hash_fails: u64,
    /// Bans by the smart ban (a kept block differed from the good piece)
    /// and by strikes (trust fell to `BAN_TRUST`).
    pub smart_bans: u64,
    pub strike_bans: u64,
    /// Bytes read to serve, per piece.
    pub served: Vec<u64>,
    /// Bytes served to peers we choke (their allowed-fast sets, BEP 6).
    pub served_choked: u64,
    pub metadata_at: Option<Instant>,
    picker_seed: u64,
}

/// One node's torrent, behind the `Swarm` seam.
pub struct SimSwarm {
    pub t: std::sync::Arc<Torrent>,
    pub behaviour: Behaviour,
    inner: Mutex<Inner>,
}

impl SimSwarm {
    /// A node with `have` (a seeder: all; a leecher: none); `known`
    /// false for a magnet that must fetch the info dictionary first.
    pub fn new(
        t: std::sync::Arc<Torrent>,
        have: Bitfield,
        known: bool,
        behaviour: Behaviour,
        rng: &mut Rng,
    ) -> SimSwarm {
        let picker_seed = rng.next_u64();
        let inner = Inner {
            known,
            picker: known.then(|| Picker::new(t.geometry, have, picker_seed)),
            assembler: (!known).then(|| MetadataAssembler::new(t.info_hash)),
            verified_log: Vec::new(),
            peers: BTreeMap::new(),
            cmds: VecDeque::new(),
            changed: false,
            rechoke: false,
            learned: Vec::new(),
            trust: BTreeMap::new(),
            banned: BTreeSet::new(),
            suspects: BTreeMap::new(),
            fed_corrupt_by: BTreeSet::new(),
            uploaded: 0,
            downloaded: 0,
            hash_fails: 0,
            smart_bans: 0,
            strike_bans: 0,
            served: Vec::new(),
            served_choked: 0,
            metadata_at: None,
            picker_seed,
        };
        SimSwarm {
            t,
            behaviour,
            inner: Mutex::new(inner),
        }
    }

    pub fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().expect("the sim is single-threaded")
    }

    /// A restart with resume data: verified pieces kept, half-done pieces,
    /// connections and queued commands lost (bans too: they are not saved).
    pub fn restart(&self) {
        let mut st = self.lock();
        let have = st.picker.as_ref().map(|p| p.have().clone());
        let seed = st.picker_seed.wrapping_add(1);
        st.picker_seed = seed;
        st.picker = have.map(|h| Picker::new(self.t.geometry, h, seed));
        if !st.known {
            st.assembler = Some(MetadataAssembler::new(self.t.info_hash));
        }
        st.verified_log.clear();
        st.peers.clear();
        st.cmds.clear();
        st.changed = false;
        st.learned.clear();
        st.suspects.clear();
    }

    pub fn register(&self, key: PeerKey, ip: IpAddr) {
        let mut st = self.lock();
        st.peers.insert(
            key,
            Entry {
                ip,
                interested: false,
                choked: true,
                down_rate: 0,
                up_rate: 0,
                seed: false,
            },
        );
        st.rechoke = true;
    }

    pub fn unregister(&self, key: PeerKey) {
        let mut st = self.lock();
        st.peers.remove(&key);
        st.cmds.retain(|(k, _)| *k != key);
        st.rechoke = true;
    }

    pub fn is_banned(&self, ip: IpAddr) -> bool {
        self.lock().banned.contains(&ip)
    }

    /// The blocks of a serve batch, as the session's `read_blocks` gives
    /// them (zero-copy slices of the content; a corrupt node's are altered).
    pub fn read_blocks(&self, blocks: Vec<BlockRef>) -> Vec<(BlockRef, Option<Bytes>)> {
        let g = self.t.geometry;
        {
            let mut st = self.lock();
            if st.served.is_empty() {
                st.served = vec![0; g.piece_count as usize];
            }
            for r in &blocks {
                st.served[r.piece as usize] += r.len as u64;
            }
        }
        blocks
            .into_iter()
            .map(|r| {
                let off = (g.piece_offset(r.piece) + r.offset as u64) as usize;
                let data = self.t.content.slice(off..off + r.len as usize);
                let data = match self.behaviour {
                    Behaviour::Honest => data,
                    Behaviour::Corrupt => Bytes::from(data.iter().map(|b| !b).collect::<Vec<u8>>()),
                    Behaviour::Sly if (off / BLOCK_LEN as usize).is_multiple_of(4) => {
                        let mut v = data.to_vec();
                        v[0] ^= 1;
                        Bytes::from(v)
                    }
                    Behaviour::Sly => data,
                };
                (r, Some(data))
            })
            .collect()
    }

    fn ban(st: &mut Inner, ip: IpAddr) {
        st.banned.insert(ip);
        let keys: Vec<PeerKey> = st
            .peers
            .iter()
            .filter(|(_, e)| e.ip == ip)
            .map(|(k, _)| *k)
            .collect();
        for k in keys {
            st.cmds.push_back((k, PeerCommand::Close));
        }
    }

    /// A whole piece: hash it (the production check), then the session's
    /// trust, strike and smart-ban rules.
    fn complete_piece(
        &self,
        st: &mut Inner,
        piece: u32,
        data: Vec<u8>,
        contributors: Vec<PeerKey>,
        senders: Vec<PeerKey>,
    ) {
        let good = self.t.meta.info.piece_matches(piece as usize, &data);
        // Block hashes only when the smart ban needs them (as production).
        let hashes: Vec<[u8; 20]> = if !good || st.suspects.contains_key(&piece) {
            data.chunks(BLOCK_LEN as usize)
                .map(|b| Sha1::digest(b).into())
                .collect()
        } else {
            Vec::new()
        };
        // Ground truth for the test's verdict (not used by the policy).
        if !good {
            let off = self.t.geometry.piece_offset(piece) as usize;
            for (b, chunk) in data.chunks(BLOCK_LEN as usize).enumerate() {
                let o = off + b * BLOCK_LEN as usize;
                if chunk != &self.t.content[o..o + chunk.len()]
                    && let Some(e) = senders.get(b).and_then(|k| st.peers.get(k))
                {
                    let ip = e.ip;
                    st.fed_corrupt_by.insert(ip);
                }
            }
        }
        let Some(picker) = st.picker.as_mut() else {
            return;
        };
        if good {
            picker.piece_verified(piece);
            picker.recycle(data);
            st.verified_log.push(piece);
            st.changed = true;
            for k in &contributors {
                if let Some(ip) = st.peers.get(k).map(|e| e.ip) {
                    let t = st.trust.entry(ip).or_insert(0);
                    *t = (*t + 1).min(MAX_TRUST);
                }
            }
            // Smart ban: a kept block that differs from the good one.
            for s in st.suspects.remove(&piece).unwrap_or_default() {
                if hashes.get(s.block).is_some_and(|h| *h != s.hash) && !st.banned.contains(&s.ip) {
                    st.smart_bans += 1;
                    Self::ban(st, s.ip);
                }
            }
        } else {
            picker.piece_failed(piece);
            picker.recycle(data);
            st.hash_fails += 1;
            st.changed = true;
            if st.suspects.contains_key(&piece) || st.suspects.len() < MAX_SUSPECT_PIECES {
                let found: Vec<Suspect> = senders
                    .iter()
                    .zip(&hashes)
                    .enumerate()
                    .filter_map(|(b, (k, h))| {
                        Some(Suspect {
                            ip: st.peers.get(k)?.ip,
                            block: b,
                            hash: *h,
                        })
                    })
                    .collect();
                let list = st.suspects.entry(piece).or_default();
                for s in found {
                    if !list.iter().any(|x| x.ip == s.ip && x.block == s.block) {
                        list.push(s);
                    }
                }
            }
            for k in &contributors {
                let Some(ip) = st.peers.get(k).map(|e| e.ip) else {
                    continue;
                };
                let t = st.trust.entry(ip).or_insert(0);
                *t = t.saturating_sub(2);
                if *t <= BAN_TRUST && !st.banned.contains(&ip) {
                    st.strike_bans += 1;
                    Self::ban(st, ip);
                }
            }
        }
    }
}

impl Swarm for SimSwarm {
    fn torrent(&self) -> Option<TorrentInfo> {
        self.lock().known.then(|| TorrentInfo {
            geometry: self.t.geometry,
            metadata_size: self.t.info_bytes.len() as u32,
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
        self.lock().picker.as_ref().is_some_and(|p| p.is_complete())
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
        match self.lock().picker.as_mut() {
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
        let mut st = self.lock();
        st.downloaded += data.len() as u64;
        let Some(picker) = st.picker.as_mut() else {
            return;
        };
        let r = BlockRef {
            piece,
            offset,
            len: data.len() as u32,
        };
        match picker.on_block(key, piece, offset, data) {
            BlockOutcome::Unwanted => {}
            BlockOutcome::Stored { cancel } => {
                st.cmds
                    .extend(cancel.into_iter().map(|k| (k, PeerCommand::Cancel(r))));
            }
            BlockOutcome::Complete {
                piece,
                data,
                contributors,
                senders,
                cancel,
            } => {
                st.cmds
                    .extend(cancel.into_iter().map(|k| (k, PeerCommand::Cancel(r))));
                // Verified at once (the session hands it to a worker).
                self.complete_piece(&mut st, piece, data, contributors, senders);
            }
        }
    }

    fn set_interested(&self, key: PeerKey, interested: bool) {
        let mut st = self.lock();
        if let Some(e) = st.peers.get_mut(&key) {
            e.interested = interested;
        }
        st.rechoke = true;
    }

    fn set_rates(&self, key: PeerKey, down: u64, up: u64) {
        if let Some(e) = self.lock().peers.get_mut(&key) {
            e.down_rate = down;
            e.up_rate = up;
        }
    }

    fn count_uploaded(&self, n: u64) {
        self.lock().uploaded += n;
    }

    fn metadata_piece(&self, piece: u32) -> MetadataMessage {
        if self.lock().known {
            serve_piece(&self.t.info_bytes, piece).unwrap_or(MetadataMessage::Reject { piece })
        } else {
            MetadataMessage::Reject { piece }
        }
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
        match a.on_data(key, piece, total_size, data, now) {
            Ok(Some(info)) => {
                // What the session's `metadata_found` does: parse, install
                // the picker, tell every connection.
                let meta =
                    Metainfo::from_info_bytes(&info, Vec::new()).expect("verified metadata parses");
                assert_eq!(meta.info_hash, self.t.info_hash);
                let n = self.t.geometry.piece_count as usize;
                st.assembler = None;
                st.known = true;
                st.picker = Some(Picker::new(
                    self.t.geometry,
                    Bitfield::new(n),
                    st.picker_seed,
                ));
                st.metadata_at = Some(now);
                st.changed = true;
                Ok(())
            }
            Ok(None) => Ok(()),
            Err(MetadataError::HashMismatch { contributors }) if !contributors.contains(&key) => {
                Ok(())
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
    }

    fn peer_listen_port(&self, _key: PeerKey, _port: u16) {}

    fn pex_allowed(&self) -> bool {
        self.lock().known
    }

    fn pex_peers(&self, key: PeerKey) -> Vec<(SocketAddr, u8)> {
        let st = self.lock();
        st.peers
            .iter()
            .filter(|(k, _)| **k != key)
            .map(|(_, e)| {
                (
                    SocketAddr::new(e.ip, PORT),
                    if e.seed { FLAG_SEED } else { 0 },
                )
            })
            .collect()
    }

    fn pex_learned(&self, _key: PeerKey, added: &[(SocketAddr, u8)]) {
        let mut st = self.lock();
        st.learned.extend(added.iter().map(|(a, _)| *a));
    }
}
