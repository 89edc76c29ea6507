//! Verifying a completed piece and writing it, off the reactor.
//!
//! Only a piece whose SHA-1 matches is written, and it is marked as had only
//! after the write returned: a crash at any point leaves nothing on disk
//! that the start-up check would wrongly trust, and no bad byte on disk.

use super::shared::{PeerCommand, Shared};
use crate::peer::message::BlockRef;
use crate::picker::{BlockOutcome, PeerKey};
use crate::storage::disk::piece_matches;
use std::sync::Arc;

/// A block arrived from source `key` (a peer or a web seed): counts it,
/// stores it, cancels the same request at the other peers that have it in
/// flight, and verifies the piece once it is whole.
pub fn deliver_block(shared: &Arc<Shared>, key: PeerKey, piece: u32, offset: u32, data: &[u8]) {
    Shared::add(&shared.counters.downloaded, data.len() as u64);
    let mut st = shared.lock();
    let Some(picker) = st.picker.as_mut() else {
        return;
    };
    let (cancel, complete) = match picker.on_block(key, piece, offset, data) {
        BlockOutcome::Unwanted => return,
        BlockOutcome::Stored { cancel } => (cancel, None),
        BlockOutcome::Complete {
            piece,
            data,
            contributors,
            cancel,
        } => (cancel, Some((piece, data, contributors))),
    };
    let r = BlockRef {
        piece,
        offset,
        len: data.len() as u32,
    };
    for k in cancel {
        if let Some(p) = st.peers.get(&k) {
            let _ = p.tx.try_send(PeerCommand::Cancel(r));
        }
    }
    drop(st);
    if let Some((piece, buf, contributors)) = complete {
        spawn_verify(shared.clone(), piece, buf, contributors);
    }
}

/// Hashes `buf` as piece `piece` on the blocking pool, writes it when it
/// matches, then records the outcome (HAVE broadcast, or strikes and refetch).
pub fn spawn_verify(shared: Arc<Shared>, piece: u32, buf: Vec<u8>, contributors: Vec<PeerKey>) {
    let tracker = shared.disk_tasks.clone();
    tracker.spawn(async move {
        let Some(data) = shared.data().cloned() else {
            return;
        };
        let job = {
            let data = data.clone();
            tokio::task::spawn_blocking(move || {
                let expected = &data.meta.info.pieces[piece as usize];
                if !piece_matches(&buf, expected) {
                    return (Ok(false), buf);
                }
                let r = data.storage.write(data.geometry.piece_offset(piece), &buf);
                (r.map(|()| true), buf)
            })
        };
        let Ok((result, buf)) = job.await else { return };
        let mut st = shared.lock();
        let Some(picker) = st.picker.as_mut() else {
            return;
        };
        match result {
            Ok(true) => {
                picker.piece_verified(piece);
                picker.recycle(buf);
                st.verified_log.push(piece);
                drop(st);
                shared.pieces_verified.send_modify(|v| *v += 1);
            }
            Ok(false) => {
                picker.piece_failed(piece);
                picker.recycle(buf);
                Shared::add(
                    &shared.counters.wasted,
                    data.geometry.piece_len(piece) as u64,
                );
                let banned = shared.strike(&mut st, &contributors);
                drop(st);
                tracing::warn!("piece {piece} failed its hash check; fetching it again");
                for ip in banned {
                    tracing::warn!("banned {ip}: it kept sending corrupt data");
                }
            }
            Err(e) => {
                picker.piece_failed(piece);
                drop(st);
                shared.fail(format!("writing piece {piece}: {e}"));
            }
        }
    });
}
