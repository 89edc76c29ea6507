//! The peer exchange (BEP 11) half of [`PeerState`]: our extended
//! handshake (which offers `ut_pex` only when the torrent allows it), the
//! once-a-minute diff we send, and what we take from the peer's messages.

use super::{MAX_PEX_SENT, MAX_UPLOAD_QUEUE, Outbox, PEX_INTERVAL, PEX_MIN_GAP, PeerState};
use crate::peer::extension::{ExtendedHandshake, HANDSHAKE_ID, LOCAL_UT_METADATA};
use crate::peer::message::Message;
use crate::peer::pex::{LOCAL_UT_PEX, MAX_PEX_PEERS, PexMessage};
use crate::peer::swarm::Swarm;
use bytes::Bytes;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::time::Instant;

impl PeerState {
    /// Our BEP 10 handshake. `ut_pex` is offered only when the torrent
    /// allows PEX, which a magnet learns with its metadata (BEP 27: never
    /// for private torrents); the handshake is then sent again.
    pub(super) fn push_ext_handshake(&mut self, swarm: &dyn Swarm, out: &mut Outbox) {
        self.pex_offered = swarm.pex_allowed();
        let hs = ExtendedHandshake {
            ut_metadata: Some(LOCAL_UT_METADATA),
            ut_pex: self.pex_offered.then_some(LOCAL_UT_PEX),
            metadata_size: swarm.torrent().map(|i| i.metadata_size),
            client: Some(concat!("btc ", env!("CARGO_PKG_VERSION")).to_string()),
            listen_port: Some(self.local.listen_port),
            reqq: Some(MAX_UPLOAD_QUEUE as u32),
            yourip: Some(self.local.their_ip),
        };
        out.push(&Message::Extended {
            id: HANDSHAKE_ID,
            payload: Bytes::from(hs.encode()),
        });
    }

    /// A PEX message: its added peers go to the torrent's address book.
    /// Never fatal: a garbled or early one is dropped, and one we did not
    /// ask for (private torrent, or before we offered) is ignored.
    pub(super) fn on_pex(&mut self, payload: &[u8], now: Instant, swarm: &dyn Swarm) {
        if !self.pex_offered || !swarm.pex_allowed() {
            return;
        }
        if self
            .last_pex_in
            .is_some_and(|t| now.saturating_duration_since(t) < PEX_MIN_GAP)
        {
            return;
        }
        self.last_pex_in = Some(now);
        if let Ok(m) = PexMessage::decode(payload)
            && !m.added.is_empty()
        {
            swarm.pex_learned(self.key, &m.added);
        }
    }

    /// Sends the peer the connected peers it has not heard of from us and
    /// those that left since our last message, when one is due.
    pub(super) fn send_pex(&mut self, now: Instant, swarm: &dyn Swarm, out: &mut Outbox) {
        let (Some(id), Some(due)) = (self.their_ut_pex, self.next_pex) else {
            return;
        };
        if now < due || !self.pex_offered || !swarm.pex_allowed() {
            return;
        }
        self.next_pex = Some(now + PEX_INTERVAL);
        let current = swarm.pex_peers(self.key);
        let now_set: HashSet<SocketAddr> = current.iter().map(|(a, _)| *a).collect();
        let mut m = PexMessage::default();
        let (mut v4, mut v6) = (0, 0);
        let mut room = |a: &SocketAddr| {
            let n = if a.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            *n <= MAX_PEX_PEERS
        };
        for (a, f) in &current {
            if !self.pex_sent.contains(a) && self.pex_sent.len() < MAX_PEX_SENT && room(a) {
                self.pex_sent.insert(*a);
                m.added.push((*a, *f));
            }
        }
        let (mut v4, mut v6) = (0, 0);
        let mut room = |a: &SocketAddr| {
            let n = if a.is_ipv4() { &mut v4 } else { &mut v6 };
            *n += 1;
            *n <= MAX_PEX_PEERS
        };
        m.dropped = self
            .pex_sent
            .iter()
            .filter(|a| !now_set.contains(*a))
            .copied()
            .filter(|a| room(a))
            .collect();
        for a in &m.dropped {
            self.pex_sent.remove(a);
        }
        if m.added.is_empty() && m.dropped.is_empty() {
            return;
        }
        out.push(&Message::Extended {
            id,
            payload: Bytes::from(m.encode()),
        });
    }
}
