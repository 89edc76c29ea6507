//! Verifying a completed piece and writing it, off the reactor; pinning a
//! bad piece on the peer that sent the bad block.
//!
//! Only a piece whose SHA-1 matches is written, and it is marked as had only
//! after the write returned: a crash at any point leaves nothing on disk
//! that the start-up check would wrongly trust, and no bad byte on disk.
//!
//! Smart ban (as libtorrent does it): when a piece fails, the SHA-1 of every
//! block and who sent it are kept. When the piece later passes, each kept
//! block is compared with the good data: a peer whose block differs sent
//! bad data and is banned at once; peers whose blocks matched are cleared.
//!
//! Block-level blame (v2 and hybrid pieces, BEP 52): a piece whose merkle
//! check fails is judged block by block against its 16 KiB leaves (known
//! at once for a piece of one data block; else cached, or asked of a v2
//! peer while the piece waits in `session::layers`, then verified again
//! here). The sender of each bad block is banned at once (the evidence is
//! exact), its co-contributors lose nothing, and the piece goes back to
//! the picker with its good blocks kept: only the bad ones are fetched
//! again, and only they count as wasted. Without leaves (nobody answered)
//! it falls back to the whole-piece re-fetch and the smart ban.

use super::shared::{
    BAN_STRIKES, MAX_SOURCES, MAX_SUSPECT_PIECES, PeerCommand, Shared, Source, Suspect,
};
use crate::merkle::BLOCK;
use crate::peer::blame::{self, Verdict};
use crate::peer::message::{BLOCK_LEN, BlockRef};
use crate::picker::{BlockOutcome, PeerKey};
use sha1::{Digest, Sha1};
use std::collections::HashSet;
use std::net::IpAddr;
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
    let outcome = picker.on_block(key, piece, offset, data);
    if !matches!(outcome, BlockOutcome::Unwanted) && st.sources.len() < MAX_SOURCES {
        let source = st
            .peers
            .get(&key)
            .map_or(Source::Other(key), |p| Source::Peer(p.peer_id));
        st.sources.insert(source);
    }
    let (cancel, complete) = match outcome {
        BlockOutcome::Unwanted => return,
        BlockOutcome::Stored { cancel } => (cancel, None),
        BlockOutcome::Complete {
            piece,
            data,
            contributors,
            senders,
            cancel,
        } => (cancel, Some((piece, data, contributors, senders))),
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
    if let Some((piece, buf, contributors, senders)) = complete {
        spawn_verify(shared.clone(), piece, buf, contributors, senders);
    }
}

/// SHA-1 of each block of a piece.
fn block_hashes(buf: &[u8]) -> Vec<[u8; 20]> {
    buf.chunks(BLOCK_LEN as usize)
        .map(|b| Sha1::digest(b).into())
        .collect()
}

/// Bytes of completed pieces one worker takes per trip to the blocking
/// pool. One trip per piece cost more than the hashing with small pieces:
/// a 1.5 GiB torrent of 16 KiB pieces (98,304 of them) took 10 CPU-s, most
/// of it thread wake-ups, against 2 CPU-s in 1 MiB pieces.
const BATCH_BYTES: usize = 8 << 20;

/// A completed piece waiting for its hash check and write.
pub struct VerifyJob {
    piece: u32,
    buf: Vec<u8>,
    contributors: Vec<PeerKey>,
    senders: Vec<PeerKey>,
    /// Judge a failure block by block (v2); off once the leaves could not
    /// be had.
    blame: bool,
    /// The IP of each block's sender, taken when the piece first failed
    /// (a sender may have left by the time its leaves arrive); empty
    /// before.
    ips: Vec<Option<IpAddr>>,
}

impl VerifyJob {
    /// No block-level blame for this job: a failure is a whole-piece one.
    pub fn no_blame(&mut self) {
        self.blame = false;
    }
}

/// What the block-level check of a failed piece found.
enum Blame {
    /// Not a v2 piece, blame off, or nothing to pin on a block.
    None,
    /// These blocks are bad.
    Exact(Verdict),
    /// The piece's leaves are needed first.
    NeedLeaves,
}

/// Completed pieces in the order they completed, and the workers draining
/// them (at most one per core).
#[derive(Default)]
pub struct VerifyQueue {
    jobs: std::collections::VecDeque<VerifyJob>,
    workers: usize,
}

impl VerifyQueue {
    /// The next batch: at least one job, more while under [`BATCH_BYTES`].
    fn next_batch(&mut self) -> Vec<VerifyJob> {
        let mut batch = Vec::new();
        let mut bytes = 0;
        while let Some(job) = self.jobs.front() {
            if !batch.is_empty() && bytes + job.buf.len() > BATCH_BYTES {
                break;
            }
            bytes += job.buf.len();
            batch.extend(self.jobs.pop_front());
        }
        batch
    }
}

/// What a verified batch leaves to do once the lock is released.
enum After {
    Verified {
        piece: u32,
        liars: Vec<IpAddr>,
    },
    Failed {
        piece: u32,
        banned: Vec<IpAddr>,
        /// The piece had failed before and waited for leaves in vain.
        again: bool,
    },
    /// Bad blocks found: `bad` of `blocks` fetched again.
    Blamed {
        piece: u32,
        bad: usize,
        blocks: usize,
        banned: Vec<IpAddr>,
        first: bool,
    },
    /// Failed; waiting for its leaves.
    AwaitingLeaves {
        piece: u32,
    },
    DiskError {
        piece: u32,
        error: String,
    },
}

/// Queues piece `piece` (`buf`) to be hashed and, when it matches, written
/// on the blocking pool, then its outcome recorded (HAVE broadcast and
/// smart-ban verdicts, or lost trust, suspects and a refetch). Starts a
/// worker while fewer than one per core run.
pub fn spawn_verify(
    shared: Arc<Shared>,
    piece: u32,
    buf: Vec<u8>,
    contributors: Vec<PeerKey>,
    senders: Vec<PeerKey>,
) {
    requeue(
        shared,
        VerifyJob {
            piece,
            buf,
            contributors,
            senders,
            blame: true,
            ips: Vec::new(),
        },
    );
}

/// Queues `job` (a new piece, or a failed one back with its leaves or
/// without hope of them), starting a worker if fewer than one per core run.
pub fn requeue(shared: Arc<Shared>, job: VerifyJob) {
    // Asked once: the answer reads cgroup files, too slow for every piece.
    static MAX_WORKERS: std::sync::OnceLock<usize> = std::sync::OnceLock::new();
    let max_workers = *MAX_WORKERS
        .get_or_init(|| std::thread::available_parallelism().map_or(2, |n| n.get().clamp(1, 8)));
    let start = {
        let mut q = shared
            .verify_queue
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        q.jobs.push_back(job);
        let start = q.workers < max_workers;
        if start {
            q.workers += 1;
        }
        start
    };
    if start {
        let tracker = shared.disk_tasks.clone();
        tracker.spawn(verify_worker(shared));
    }
}

/// Drains the verify queue a batch at a time until it is empty.
async fn verify_worker(shared: Arc<Shared>) {
    loop {
        let (batch, data) = {
            let mut q = shared
                .verify_queue
                .lock()
                .unwrap_or_else(|e| e.into_inner());
            let batch = q.next_batch();
            match shared.data().cloned() {
                Some(data) if !batch.is_empty() => (batch, data),
                _ => {
                    // Deciding to stop under the lock that queues jobs: a
                    // job queued after this starts a worker of its own.
                    q.workers -= 1;
                    return;
                }
            }
        };
        let suspected: Vec<bool> = {
            let st = shared.lock();
            batch
                .iter()
                .map(|j| st.suspects.contains_key(&j.piece))
                .collect()
        };
        // Leaves proven for pieces that failed before (rare: none cached
        // costs one lock per batch).
        let leaves: Vec<Option<Vec<crate::merkle::Hash>>> = batch
            .iter()
            .map(|j| {
                j.blame
                    .then(|| super::layers::cached_leaves(&shared, j.piece))
                    .flatten()
            })
            .collect();
        let blocking_data = data.clone();
        let job = tokio::task::spawn_blocking(move || {
            check_and_write(&blocking_data, batch, &suspected, leaves)
        });
        let Ok(results) = job.await else {
            shared
                .verify_queue
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .workers -= 1;
            return;
        };
        let mut after = Vec::with_capacity(results.len());
        {
            let mut st = shared.lock();
            for (job, result, hashes, blame) in results {
                after.extend(record(&shared, &mut st, &data, job, result, &hashes, blame));
            }
        }
        let verified = after
            .iter()
            .filter(|a| matches!(a, After::Verified { .. }))
            .count() as u64;
        if verified > 0 {
            shared.pieces_verified.send_modify(|v| *v += verified);
        }
        for a in after {
            match a {
                After::Verified { piece, liars } => {
                    for ip in liars {
                        tracing::warn!("banned {ip}: it sent corrupt data for piece {piece}");
                    }
                }
                After::Failed {
                    piece,
                    banned,
                    again,
                } => {
                    if again {
                        tracing::warn!("piece {piece}: fetching it again whole");
                    } else {
                        shared.emit(super::status::SessionEvent::PieceFailed { piece });
                        tracing::warn!("piece {piece} failed its hash check; fetching it again");
                    }
                    for ip in banned {
                        tracing::warn!("banned {ip}: it kept sending corrupt data");
                    }
                }
                After::Blamed {
                    piece,
                    bad,
                    blocks,
                    banned,
                    first,
                } => {
                    if first {
                        shared.emit(super::status::SessionEvent::PieceFailed { piece });
                        tracing::warn!(
                            "piece {piece} failed its hash check; {bad} of its {blocks} blocks bad, fetching only those again"
                        );
                    } else {
                        tracing::warn!(
                            "piece {piece}: {bad} of its {blocks} blocks bad, fetching only those again"
                        );
                    }
                    for ip in banned {
                        tracing::warn!("banned {ip}: it sent a corrupt block of piece {piece}");
                    }
                }
                After::AwaitingLeaves { piece } => {
                    shared.emit(super::status::SessionEvent::PieceFailed { piece });
                    tracing::warn!(
                        "piece {piece} failed its hash check; asking a v2 peer for its block hashes"
                    );
                }
                After::DiskError { piece, error } => {
                    shared.pause_disk(format!("writing piece {piece}: {error}"));
                }
            }
        }
    }
}

/// What became of one piece of a batch: `Ok(true)` written, `Ok(false)`
/// a bad piece, `Err` the write failed (why); with the block hashes the
/// smart ban needs (of a bad piece, or of a good one that once failed),
/// and for a bad v2 piece what its blocks say.
type Checked = (VerifyJob, Result<bool, String>, Vec<[u8; 20]>, Blame);

/// Hashes a batch of completed pieces (`suspected[k]`: job `k` failed
/// before; `leaves[k]`: its proven leaves, if known) and writes those that
/// match, pieces that follow one another on
/// disk in one run each ([`crate::storage::disk::Storage::write_run`]):
/// with 16 KiB pieces a write per piece cost a system call, three locks
/// and a writeback hint per 16 KiB.
fn check_and_write(
    data: &super::shared::TorrentData,
    batch: Vec<VerifyJob>,
    suspected: &[bool],
    mut leaves: Vec<Option<Vec<crate::merkle::Hash>>>,
) -> Vec<Checked> {
    let info = &data.meta.info;
    let good: Vec<bool> = batch
        .iter()
        .map(|j| {
            (j.piece as usize) < info.piece_count() && info.piece_matches(j.piece as usize, &j.buf)
        })
        .collect();
    let mut order: Vec<usize> = (0..batch.len()).filter(|&k| good[k]).collect();
    order.sort_unstable_by_key(|&k| batch[k].piece);
    let mut written: Vec<Option<Result<(), String>>> = vec![None; batch.len()];
    for run in runs(&order, |k| {
        (
            data.geometry.piece_offset(batch[k].piece),
            batch[k].buf.len() as u64,
        )
    }) {
        let bufs: Vec<&[u8]> = run.iter().map(|&k| batch[k].buf.as_slice()).collect();
        let at = data.geometry.piece_offset(batch[run[0]].piece);
        let r = data.storage.write_run(at, &bufs).map_err(|e| e.to_string());
        for &k in run {
            written[k] = Some(r.clone());
        }
    }
    batch
        .into_iter()
        .zip(written)
        .enumerate()
        .map(|(k, (job, written))| {
            let bad = !good[k] && (job.piece as usize) < info.piece_count();
            let blame = if bad && job.blame {
                judge_blocks(info, &job, leaves.get_mut(k).and_then(Option::take))
            } else {
                Blame::None
            };
            // Evidence for the smart ban, when the blame is not exact.
            let hashes = if (bad && matches!(blame, Blame::None))
                || (good[k] && suspected.get(k) == Some(&true))
            {
                block_hashes(&job.buf)
            } else {
                Vec::new()
            };
            let result = match written {
                None => Ok(false),
                Some(r) => r.map(|()| true),
            };
            (job, result, hashes, blame)
        })
        .collect()
}

/// Splits `order` into runs of items that follow one another: `at(k)` is
/// item `k`'s `(offset, length)`.
fn runs(order: &[usize], at: impl Fn(usize) -> (u64, u64)) -> Vec<&[usize]> {
    let mut out = Vec::new();
    let mut start = 0;
    for i in 1..=order.len() {
        let continues = i < order.len() && {
            let (o, n) = at(order[i - 1]);
            o.checked_add(n) == Some(at(order[i]).0)
        };
        if !continues && start < i {
            out.push(&order[start..i]);
            start = i;
        }
    }
    out
}

/// The blocks of failed piece `job` that do not match their leaves: with
/// `leaves` (proven), or at once for a piece of at most one data block.
fn judge_blocks(
    info: &crate::metainfo::Info,
    job: &VerifyJob,
    leaves: Option<Vec<crate::merkle::Hash>>,
) -> Blame {
    let Some(check) = info
        .v2_pieces
        .as_ref()
        .and_then(|c| c.get(job.piece as usize))
    else {
        return Blame::None;
    };
    if check.matches(&job.buf, info.piece_length) {
        // The merkle half passes (a hybrid whose SHA-1 disagrees): no
        // block is provably bad.
        return Blame::None;
    }
    let data_len = (check.data_len as usize).min(job.buf.len());
    let leaves = match data_len.div_ceil(BLOCK) {
        0 => Vec::new(),
        1 => vec![blame::one_leaf(
            &check.hash,
            check.whole_file,
            info.piece_length,
            &job.buf[..data_len],
        )],
        _ => match leaves {
            Some(l) => l,
            None => return Blame::NeedLeaves,
        },
    };
    match blame::blame(&leaves, data_len, &job.buf, &job.senders) {
        Some(v) if !v.bad.is_empty() => Blame::Exact(v),
        _ => Blame::None,
    }
}

/// Records one piece's outcome under the torrent's lock.
fn record(
    shared: &Shared,
    st: &mut super::shared::State,
    data: &super::shared::TorrentData,
    job: VerifyJob,
    result: Result<bool, String>,
    hashes: &[[u8; 20]],
    blame: Blame,
) -> Option<After> {
    st.picker.as_ref()?;
    let failed = matches!(result, Ok(false));
    let job = match blame {
        Blame::Exact(v) if failed => return Some(blamed(shared, st, data, job, &v)),
        Blame::NeedLeaves if failed => {
            let ips = sender_ips(st, &job);
            let mut job = job;
            job.ips = ips;
            let piece = job.piece;
            let contributors = job.contributors.clone();
            match super::layers::wait_for_leaves(
                shared,
                piece,
                contributors,
                job,
                std::time::Instant::now(),
            ) {
                // Stays out of the picks meanwhile.
                Ok(()) => {
                    if let Some(p) = st.picker.as_mut() {
                        p.piece_awaits_hashes(piece);
                    }
                    return Some(After::AwaitingLeaves { piece });
                }
                Err(job) => job,
            }
        }
        _ => job,
    };
    let again = !job.blame;
    let VerifyJob {
        piece,
        buf,
        contributors,
        senders,
        ..
    } = job;
    let picker = st.picker.as_mut()?;
    match result {
        Ok(true) => {
            picker.piece_verified(piece);
            super::layers::forget_leaves(shared, piece);
            picker.recycle(buf);
            st.verified_log.push(piece);
            Shared::reward(st, &contributors);
            let liars = convict(st.suspects.remove(&piece), hashes);
            for ip in &liars {
                Shared::ban(st, *ip);
            }
            Some(After::Verified { piece, liars })
        }
        Ok(false) => {
            picker.piece_failed(piece);
            picker.recycle(buf);
            Shared::add(
                &shared.counters.wasted,
                data.geometry.piece_len(piece) as u64,
            );
            remember_suspects(st, piece, &senders, hashes);
            let banned = shared.strike(st, &contributors);
            Some(After::Failed {
                piece,
                banned,
                again,
            })
        }
        Err(e) => {
            // Not the peers' fault: nobody is blamed, the piece is fetched
            // again once writes work.
            picker.piece_failed(piece);
            picker.recycle(buf);
            Some(After::DiskError { piece, error: e })
        }
    }
}

/// The IP of each block's sender: taken when the piece first failed, or
/// now from the peer table.
fn sender_ips(st: &super::shared::State, job: &VerifyJob) -> Vec<Option<IpAddr>> {
    job.senders
        .iter()
        .enumerate()
        .map(|(b, k)| {
            job.ips
                .get(b)
                .copied()
                .flatten()
                .or_else(|| st.peers.get(k).map(|p| p.addr.ip()))
        })
        .collect()
}

/// Failed piece `job` whose bad blocks `v` names: their senders banned
/// (web seeds dropped), the piece back in the picker with its good blocks
/// kept, the bad ones counted as wasted.
fn blamed(
    shared: &Shared,
    st: &mut super::shared::State,
    data: &super::shared::TorrentData,
    job: VerifyJob,
    v: &Verdict,
) -> After {
    let ips = sender_ips(st, &job);
    let mut banned: Vec<IpAddr> = Vec::new();
    for &b in &v.bad {
        let key = job.senders.get(b as usize).copied().unwrap_or(0);
        if let Some(s) = st.web_seed_strikes.get_mut(&key) {
            // A web seed's task sees its strikes and stops itself.
            *s = (*s).max(BAN_STRIKES);
            continue;
        }
        if let Some(ip) = ips.get(b as usize).copied().flatten()
            && !banned.contains(&ip)
        {
            banned.push(ip);
        }
    }
    for ip in &banned {
        Shared::ban(st, *ip);
    }
    let piece = job.piece;
    let wasted: u64 = v
        .bad
        .iter()
        .map(|&b| u64::from(data.geometry.block_len(piece, b)))
        .sum();
    Shared::add(&shared.counters.wasted, wasted);
    // The exact evidence replaces the smart ban's.
    st.suspects.remove(&piece);
    let first = job.ips.is_empty();
    let blocks = job.senders.len();
    if let Some(picker) = st.picker.as_mut() {
        picker.refetch_blocks(piece, job.buf, &job.senders, &v.bad);
    }
    After::Blamed {
        piece,
        bad: v.bad.len(),
        blocks,
        banned,
        first,
    }
}

/// Keeps who sent which block of failed piece `piece`, bounded.
fn remember_suspects(
    st: &mut super::shared::State,
    piece: u32,
    senders: &[PeerKey],
    hashes: &[[u8; 20]],
) {
    if !st.suspects.contains_key(&piece) && st.suspects.len() >= MAX_SUSPECT_PIECES {
        return;
    }
    let found: Vec<Suspect> = senders
        .iter()
        .zip(hashes)
        .enumerate()
        .filter_map(|(b, (k, h))| {
            let ip = st.peers.get(k)?.addr.ip();
            Some(Suspect {
                ip,
                block: b as u32,
                hash: *h,
            })
        })
        .collect();
    let list = st.suspects.entry(piece).or_default();
    // One failed attempt per piece is enough evidence per block and IP;
    // keep the list from growing with repeated failures.
    for s in found {
        if !list.iter().any(|x| x.ip == s.ip && x.block == s.block) {
            list.push(s);
        }
    }
}

/// The IPs whose remembered blocks differ from the verified piece's blocks.
fn convict(suspects: Option<Vec<Suspect>>, good: &[[u8; 20]]) -> Vec<IpAddr> {
    let mut liars: Vec<IpAddr> = Vec::new();
    let mut seen = HashSet::new();
    for s in suspects.unwrap_or_default() {
        let differs = good.get(s.block as usize).is_some_and(|h| *h != s.hash);
        if differs && seen.insert(s.ip) {
            liars.push(s.ip);
        }
    }
    liars
}

#[cfg(test)]
mod tests {
    use super::*;

    fn suspect(ip: &str, block: u32, data: &[u8]) -> Suspect {
        Suspect {
            ip: ip.parse().unwrap(),
            block,
            hash: Sha1::digest(data).into(),
        }
    }

    /// Regression: "from 2 peers" in the summary of a download from one
    /// seeder, which had connected to us both ways at once (LSD on both
    /// sides) and sent blocks over each connection: sources are counted by
    /// peer id, not by connection.
    #[test]
    fn regression_one_peer_connected_twice_counts_once_in_the_summary() {
        use crate::bitfield::Bitfield;
        use crate::geometry::Geometry;
        use crate::id::{InfoHash, PeerId};
        use crate::peer::message::BlockRef;
        use crate::picker::Picker;
        use crate::session::shared::{Limits, PeerEntry};
        let limits = Limits {
            max_peers: 4,
            max_per_ip: 2,
        };
        let token = tokio_util::sync::CancellationToken::new();
        let shared = Shared::create(InfoHash([1; 20]), PeerId([2; 20]), 1, None, limits, token);
        let geometry = Geometry::new(4 * BLOCK_LEN as u64, 4 * BLOCK_LEN);
        let now = std::time::Instant::now();
        let entry = |key: u64| PeerEntry {
            addr: std::net::SocketAddr::from(([10, 0, 0, 1], 6881 + key as u16)),
            peer_id: PeerId([7; 20]),
            interested: false,
            choked: true,
            down_rate: 0,
            up_rate: 0,
            seed: true,
            outgoing: key == 1,
            link: Default::default(),
            tx: tokio::sync::mpsc::channel(1).0,
            connected_at: now,
            last_useful: now,
            listen_port: None,
        };
        let blocks: Vec<BlockRef> = {
            let mut st = shared.lock();
            let mut picker = Picker::new(geometry, Bitfield::new(1), 1);
            let got = picker.pick(1, &Bitfield::full(1), 4, &[], now);
            st.picker = Some(picker);
            st.peers.insert(1, entry(1));
            st.peers.insert(2, entry(2));
            got
        };
        assert!(blocks.len() >= 2, "{blocks:?}");
        let data = vec![0u8; BLOCK_LEN as usize];
        deliver_block(&shared, 1, blocks[0].piece, blocks[0].offset, &data);
        deliver_block(&shared, 2, blocks[1].piece, blocks[1].offset, &data);
        assert_eq!(shared.lock().sources.len(), 1);
    }

    #[test]
    fn pieces_that_follow_one_another_are_written_as_one_run() {
        // (offset, length) by item; `order` is sorted by piece.
        let at = [(0, 10), (10, 10), (30, 10), (40, 5), (45, 10), (100, 1)];
        let order: Vec<usize> = (0..at.len()).collect();
        let runs = runs(&order, |k| at[k]);
        assert_eq!(runs, vec![&[0, 1][..], &[2, 3, 4], &[5]]);
        assert!(super::runs(&[], |k| at[k]).is_empty());
        assert_eq!(super::runs(&[3], |k| at[k]), vec![&[3][..]]);
    }

    #[test]
    fn regression_smart_ban_convicts_only_the_sender_of_the_bad_block() {
        let good_piece: Vec<u8> = (0..3 * BLOCK_LEN).map(|i| i as u8).collect();
        let good = block_hashes(&good_piece);
        let blocks: Vec<&[u8]> = good_piece.chunks(BLOCK_LEN as usize).collect();
        // Honest 10.0.0.1 sent blocks 0 and 2, liar 10.0.0.9 sent block 1 wrong.
        let suspects = vec![
            suspect("10.0.0.1", 0, blocks[0]),
            suspect("10.0.0.9", 1, &[0xee; BLOCK_LEN as usize]),
            suspect("10.0.0.1", 2, blocks[2]),
        ];
        let liars = convict(Some(suspects), &good);
        assert_eq!(liars, vec!["10.0.0.9".parse::<IpAddr>().unwrap()]);
        assert!(convict(None, &good).is_empty());
    }
}
