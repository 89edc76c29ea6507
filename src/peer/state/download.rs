//! The fetching half of [`PeerState`]: the request pipeline (metadata
//! pieces before the info dictionary is known, blocks after) and the
//! blocks that answer it, requested or not.

use super::{
    MAX_UNREQUESTED, METADATA_IN_FLIGHT, Outbox, PICK_IDLE, PeerError, PeerState, RECENTLY_RELEASED,
};
use crate::bitfield::Bitfield;
use crate::peer::message::{BlockRef, Message};
use crate::peer::metadata::MetadataMessage;
use crate::peer::swarm::Swarm;
use bytes::Bytes;
use std::time::Instant;

impl PeerState {
    /// Remembers requests we gave up on, so their late blocks are not
    /// mistaken for unrequested ones, and hands them back to the picker.
    pub(super) fn forget(&mut self, dropped: &[BlockRef], swarm: &dyn Swarm) {
        if dropped.is_empty() {
            return;
        }
        swarm.release(self.key, dropped);
        for r in dropped {
            if self.recently_released.len() >= RECENTLY_RELEASED {
                self.recently_released.pop_front();
            }
            self.recently_released.push_back(*r);
        }
    }

    pub(super) fn on_block(
        &mut self,
        piece: u32,
        offset: u32,
        data: Bytes,
        now: Instant,
        swarm: &dyn Swarm,
    ) -> Result<(), PeerError> {
        let len = data.len() as u32;
        let same = |r: &BlockRef| r.piece == piece && r.offset == offset && r.len == len;
        if !self.in_flight.arrived(same, now, self.reqq) {
            let Some(i) = self.recently_released.iter().position(same) else {
                self.unrequested += 1;
                if self.unrequested > MAX_UNREQUESTED {
                    return Err(PeerError::Unrequested(self.unrequested));
                }
                return Ok(());
            };
            // Sent before our cancel or choke reached the peer: still useful
            // if nobody else delivered it meanwhile.
            self.recently_released.remove(i);
        }
        self.down.add(len as u64);
        self.last_block = now;
        self.snubbed = false;
        swarm.deliver(self.key, piece, offset, &data);
        Ok(())
    }

    /// Keeps the request pipeline full: ut_metadata pieces before the
    /// metadata is known, blocks after.
    pub fn fill_requests(&mut self, now: Instant, swarm: &dyn Swarm, out: &mut Outbox) {
        if swarm.torrent().is_none() {
            self.fill_metadata_requests(now, swarm, out);
            return;
        }
        // Choked, we may still ask for the peer's ALLOWED FAST pieces.
        let allowed_only = self.peer_choking;
        if (allowed_only && (!self.fast || self.allowed_fast.is_empty())) || !self.am_interested {
            return;
        }
        let Some(full_bf) = &self.bitfield else {
            return;
        };
        if self.pick_idle_until.is_some_and(|t| now < t) {
            return;
        }
        let masked;
        let bf = if allowed_only {
            let mut m = Bitfield::new(full_bf.len());
            for &i in &self.allowed_fast {
                if (i as usize) < full_bf.len() && full_bf.get(i as usize) {
                    m.set(i as usize);
                }
            }
            masked = m;
            &masked
        } else {
            full_bf
        };
        // The peer's bandwidth-delay product (see `pipeline`), never more
        // than it said it queues.
        let target = self.pipeline_target();
        let deficit = target.saturating_sub(self.in_flight.len());
        // Batch small top-ups to spare the lock, but never let the pipe run dry.
        if deficit == 0 || (deficit < (target / 4).clamp(1, 8) && !self.in_flight.is_empty()) {
            return;
        }
        let picked = swarm.pick(self.key, bf, deficit, self.in_flight.as_slice(), now);
        if picked.is_empty() {
            self.pick_idle_until = Some(now + PICK_IDLE);
            if self.in_flight.is_empty() && !allowed_only {
                let want = swarm.is_interesting(full_bf);
                self.set_interest(want, out);
            }
        }
        for r in picked {
            out.push(&Message::Request(r));
            self.in_flight.push(r, now);
        }
    }

    pub(super) fn fill_metadata_requests(
        &mut self,
        now: Instant,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) {
        let Some(their_id) = self.their_ut_metadata else {
            return;
        };
        while self.metadata_in_flight < METADATA_IN_FLIGHT {
            let Some(piece) = swarm.next_metadata_request(self.key, now) else {
                break;
            };
            self.metadata_in_flight += 1;
            out.push(&Message::Extended {
                id: their_id,
                payload: Bytes::from(MetadataMessage::Request { piece }.encode()),
            });
        }
    }
}
