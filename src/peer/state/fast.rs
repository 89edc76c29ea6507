//! The fast extension (BEP 6) half of [`PeerState`]: the peer's HAVE ALL /
//! HAVE NONE and REJECT REQUEST, and the ALLOWED FAST set we give a peer
//! with (almost) nothing. Our own rejects are sent where requests are
//! refused, in the parent module.

use super::{PICK_IDLE, PeerError, PeerState};
use crate::bitfield::Bitfield;
use crate::id::InfoHash;
use crate::peer::message::{BlockRef, Message};
use crate::peer::state::Outbox;
use crate::peer::swarm::Swarm;
use sha1::{Digest, Sha1};
use std::net::{IpAddr, Ipv4Addr};
use std::time::Instant;

/// Pieces in the ALLOWED FAST set we generate for a peer. BEP 6 suggests
/// 10; libtorrent's default `allowed_fast_set_size` is 5. Ten lets a new
/// peer fetch a few pieces to trade while it waits for an unchoke slot; a
/// connection costs at most `FAST_PIECE_REPEATS` times that much upload,
/// and every connection from one /24 gets the same pieces.
pub const ALLOWED_FAST_SET_SIZE: usize = 10;

/// SHA-1 rounds [`allowed_fast_set`] runs at most. Each yields 5 indices;
/// for k = 10 the set comes out short only with a chance far below 2^-40
/// (the worst case is 11 pieces, one index missing after 320 draws).
const MAX_FAST_SET_ROUNDS: usize = 64;

/// Times over each ALLOWED FAST piece may be requested while choked. BEP 6
/// lets us refuse a piece already sent: a peer asking for its set again and
/// again would take upload without ever earning a slot.
const FAST_PIECE_REPEATS: u64 = 2;

/// BEP 6's canonical allowed-fast set: the first `k` distinct indices of
/// the SHA-1 chain seeded with the peer's /24 and the info-hash, or every
/// piece when there are no more than `k`. Depends only on its arguments,
/// so a peer cannot get a different set by reconnecting from its /24.
pub fn allowed_fast_set(info_hash: &InfoHash, ip: Ipv4Addr, num_pieces: u32, k: usize) -> Vec<u32> {
    if num_pieces as usize <= k {
        return (0..num_pieces).collect();
    }
    // Never more than the rounds can yield, whatever `k` says.
    let mut set = Vec::with_capacity(k.min(MAX_FAST_SET_ROUNDS * 5));
    if k == 0 {
        return set;
    }
    let mut seed = [0u8; 24];
    seed[..4].copy_from_slice(&(u32::from(ip) & 0xFFFF_FF00).to_be_bytes());
    seed[4..].copy_from_slice(&info_hash.0);
    let mut x: [u8; 20] = Sha1::digest(seed).into();
    for _ in 0..MAX_FAST_SET_ROUNDS {
        for word in x.chunks_exact(4) {
            let y = u32::from_be_bytes([word[0], word[1], word[2], word[3]]);
            let index = y % num_pieces;
            if !set.contains(&index) {
                set.push(index);
                if set.len() == k {
                    return set;
                }
            }
        }
        x = Sha1::digest(x).into();
    }
    set
}

impl PeerState {
    /// A fast message on a connection that did not negotiate BEP 6.
    pub(super) fn require_fast(&self, what: &str) -> Result<(), PeerError> {
        if self.fast {
            Ok(())
        } else {
            Err(PeerError::Protocol(format!(
                "{what} without the fast extension"
            )))
        }
    }

    pub(super) fn on_have_all_or_none(
        &mut self,
        all: bool,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        let name = if all { "have all" } else { "have none" };
        self.require_fast(name)?;
        if self.piece_set_seen {
            return Err(PeerError::Protocol(format!(
                "{name} after the peer's pieces were announced"
            )));
        }
        self.piece_set_seen = true;
        if !all {
            return Ok(());
        }
        let Some(known) = self.bitfield.as_ref() else {
            self.has_all_early = true;
            return Ok(());
        };
        // Nothing was announced before, so the known set is empty and the
        // whole set is new: one availability pass, not a HAVE per piece.
        let full = Bitfield::full(known.len());
        swarm.peer_bitfield(self.key, &full);
        let want = swarm.is_interesting(&full);
        self.bitfield = Some(full);
        if swarm.is_complete() {
            return Err(PeerError::BothSeeds);
        }
        self.pick_idle_until = None;
        self.set_interest(want, out);
        Ok(())
    }

    /// The peer will not serve one of our requests (BEP 6).
    pub(super) fn on_reject(
        &mut self,
        r: BlockRef,
        now: Instant,
        swarm: &dyn Swarm,
    ) -> Result<(), PeerError> {
        self.require_fast("reject request")?;
        if self.in_flight.remove(&r) {
            swarm.release(self.key, &[r]);
            // Do not ask again at once: the picker could hand the same
            // block straight back to this peer.
            self.pick_idle_until = Some(now + PICK_IDLE);
        } else if let Some(i) = self.recently_released.iter().position(|x| *x == r) {
            // The answer to a cancel or to requests a choke released.
            self.recently_released.remove(i);
        } else {
            return Err(PeerError::Protocol(format!(
                "reject for {}:{}+{}, which we never requested",
                r.piece, r.offset, r.len
            )));
        }
        Ok(())
    }
}

impl PeerState {
    /// Sends the peer the pieces of its allowed-fast set that we have, once
    /// per connection, as soon as the fast extension is on, the metadata and
    /// the peer's piece set are known, and we choke it. Like libtorrent, only
    /// to a peer with fewer pieces than the set: one that has more can trade
    /// for an unchoke. IPv6 peers get none (BEP 6 defines no IPv6 set).
    pub(super) fn offer_allowed_fast(&mut self, swarm: &dyn Swarm, out: &mut Outbox) {
        if !self.fast || self.fast_set_decided || !self.piece_set_seen || !self.am_choking {
            return;
        }
        let (Some(info), Some(bf)) = (swarm.torrent(), self.bitfield.as_ref()) else {
            return;
        };
        self.fast_set_decided = true;
        if bf.count() >= ALLOWED_FAST_SET_SIZE || bf.is_full() {
            return;
        }
        // A v4-mapped address on a dual-stack socket is an IPv4 peer.
        let IpAddr::V4(ip) = self.local.their_ip.to_canonical() else {
            return;
        };
        let set = allowed_fast_set(
            &self.local.info_hash,
            ip,
            info.geometry.piece_count,
            ALLOWED_FAST_SET_SIZE,
        );
        for i in set {
            if swarm.we_have(i) {
                out.push(&Message::AllowedFast(i));
                self.fast_set_sent.push(i);
                let len = u64::from(info.geometry.piece_len(i));
                self.fast_bytes_left += FAST_PIECE_REPEATS * len;
            }
        }
    }

    /// Whether a request for `piece` may be served now: the peer is
    /// unchoked, or the piece is in the allowed-fast set we sent it.
    pub(super) fn may_serve(&self, piece: u32) -> bool {
        !self.am_choking || self.fast_set_sent.contains(&piece)
    }

    /// Whether `r` may be queued while we choke the peer: its piece is in
    /// the set we sent and the set's byte budget covers it, which it then
    /// pays for.
    pub(super) fn charge_fast(&mut self, r: &BlockRef) -> bool {
        let len = u64::from(r.len);
        if !self.fast_set_sent.contains(&r.piece) || len > self.fast_bytes_left {
            return false;
        }
        self.fast_bytes_left -= len;
        true
    }
}
