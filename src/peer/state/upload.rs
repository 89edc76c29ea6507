//! The serving half of [`PeerState`]: the peer's requests, queued within
//! a budget or refused, our choke, and the batches read from disk for the
//! outbox.

use super::{MAX_UPLOAD_QUEUE, Outbox, PeerError, PeerState, SERVE_BATCH, SERVE_HIGH_WATER};
use crate::peer::message::{BlockRef, MAX_REQUEST_LEN, Message};
use crate::peer::swarm::Swarm;
use bytes::Bytes;
use std::time::Instant;

impl PeerState {
    pub(super) fn on_request(
        &mut self,
        r: BlockRef,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        let Some(info) = swarm.torrent() else {
            return Ok(());
        };
        if r.len == 0
            || r.len > MAX_REQUEST_LEN
            || !info.geometry.contains(r.piece, r.offset, r.len)
        {
            return Err(PeerError::Protocol(format!(
                "bad request: piece {} offset {} length {}",
                r.piece, r.offset, r.len
            )));
        }
        // A choked peer is served only the allowed-fast pieces we sent it,
        // within the same queue budget as an unchoked one and its set's own.
        if self.upload_queue.len() >= MAX_UPLOAD_QUEUE
            || !swarm.we_have(r.piece)
            || (self.am_choking && !self.charge_fast(&r))
        {
            // Without the fast extension the peer learns from the choke (or
            // our bitfield); with it, every request gets an answer. The
            // outbox cap (`read_pause`) bounds what a flood of them costs.
            if self.fast {
                out.push(&Message::RejectRequest(r));
            }
            return Ok(());
        }
        self.upload_queue.push_back(r);
        Ok(())
    }

    pub(super) fn set_choke(&mut self, choke: bool, out: &mut Outbox) {
        if choke == self.am_choking {
            return;
        }
        self.am_choking = choke;
        out.push(if choke {
            &Message::Choke
        } else {
            &Message::Unchoke
        });
        if choke {
            // BEP 6: with the fast extension a choke no longer discards the
            // peer's requests implicitly; each gets its reject, except those
            // for allowed-fast pieces, which are still served.
            let queued = std::mem::take(&mut self.upload_queue);
            for r in queued {
                if self.charge_fast(&r) {
                    self.upload_queue.push_back(r);
                } else if self.fast {
                    out.push(&Message::RejectRequest(r));
                }
            }
        }
    }

    /// Up to `SERVE_BATCH` queued requests to read from disk, when the
    /// outbox has room. Only servable requests are queued (while choked:
    /// allowed-fast pieces only; a choke rejects the rest).
    pub fn take_upload_batch(&mut self, out: &Outbox) -> Option<Vec<BlockRef>> {
        if self.serving || self.upload_queue.is_empty() || out.len() >= SERVE_HIGH_WATER {
            return None;
        }
        let n = self.upload_queue.len().min(SERVE_BATCH);
        self.serving = true;
        Some(self.upload_queue.drain(..n).collect())
    }

    /// Blocks read from disk for the batch taken last; `None` data means
    /// the read failed and the block is skipped.
    pub fn on_blocks_read(
        &mut self,
        blocks: Vec<(BlockRef, Option<Bytes>)>,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) {
        self.serving = false;
        for (r, data) in blocks {
            let Some(data) = data.filter(|_| self.may_serve(r.piece)) else {
                // Choked meanwhile, or the read failed: BEP 6 wants an answer.
                if self.fast {
                    out.push(&Message::RejectRequest(r));
                }
                continue;
            };
            let n = data.len() as u64;
            out.push(&Message::Piece {
                piece: r.piece,
                offset: r.offset,
                data,
            });
            self.up.add(n);
            swarm.count_uploaded(n);
        }
    }

    /// The socket took some of the outbox.
    pub fn on_written(&mut self, now: Instant) {
        self.last_sent = now;
        self.last_drain = now;
    }
}
