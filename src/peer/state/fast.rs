//! The fast extension (BEP 6) half of [`PeerState`]: the peer's HAVE ALL /
//! HAVE NONE and REJECT REQUEST. Our own rejects are sent where requests
//! are refused, in the parent module.

use super::{PICK_IDLE, PeerError, PeerState};
use crate::bitfield::Bitfield;
use crate::peer::message::BlockRef;
use crate::peer::state::Outbox;
use crate::peer::swarm::Swarm;
use std::time::Instant;

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
        if let Some(i) = self.in_flight.iter().position(|x| *x == r) {
            self.in_flight.swap_remove(i);
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
