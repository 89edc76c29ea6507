//! BEP 52 piece layers for one torrent: the merkle trees we answer hash
//! requests from, and the fetch of the layers a v2 info dict came without.
//!
//! Owns [`HashX`], one per torrent in `Shared`. The pure parts are
//! `peer::hashes` (messages, proofs) and `peer::hash_picker` (what to ask
//! whom, and what to trust); this module only holds them behind a lock and
//! connects them to the torrent:
//! - serving: the trees of every file with a piece layer are built on the
//!   first hash request (checked against each file's root) and kept;
//! - fetching: when the metadata exchange of a v2 swarm assembles an info
//!   dict whose files miss their layers, the dict is held here and the
//!   picker asks v2 peers for the layers; once all are in and proven, the
//!   dict goes to the torrent's loop like any fetched one, and
//!   [`metainfo`] builds the torrent from it with the fetched layers;
//! - block-level blame: a v2 piece that failed its hash check waits here
//!   (its data and senders kept, still `verifying` in the picker) while a
//!   v2 peer that has it is asked for its 16 KiB leaves
//!   (`peer::blame::LeafAsks`); proven leaves are cached and the piece
//!   goes back to the verify queue, which then names the bad blocks
//!   (`session::verify`); a piece nobody answers for is given up on and
//!   verified again without blame (a whole-piece re-fetch);
//! - serving below the piece layer: a request for leaves (or any layer
//!   under the piece layer) of a piece we have is answered off the
//!   reactor, from the piece read back from disk and hashed
//!   ([`answer_later`]).

use super::shared::{Shared, TorrentData};
use super::verify::VerifyJob;
use crate::bitfield::Bitfield;
use crate::id::InfoHash;
use crate::merkle;
use crate::merkle::Hash;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::peer::blame::{self, LeafAnswer, LeafAsks, PieceSpot};
use crate::peer::hash_picker::HashPicker;
use crate::peer::hashes::{self, HashRequest, LayerTree, TreeShape};
use crate::peer::metadata::MetadataAssembler;
use crate::peer::state::PeerCommand;
use crate::picker::PeerKey;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Instant;

/// The hash exchange state of one torrent.
#[derive(Default)]
pub struct HashX {
    /// The swarm is a v2 one (a v2-only torrent, or one joined by its v2
    /// hash): our handshake sets the v2 bit.
    v2: AtomicBool,
    /// The trees we serve, by root (built on the first request).
    served: OnceLock<HashMap<Hash, LayerTree>>,
    /// Layers being fetched, or fetched.
    fetch: Mutex<Option<Fetch>>,
    /// Failed pieces waiting for their leaves (block-level blame).
    leaf_asks: Mutex<LeafAsks<VerifyJob>>,
    /// Proven leaves of failed pieces, by piece (at most
    /// [`MAX_CACHED_LEAVES`] pieces): a second failure needs no request.
    leaf_cache: Mutex<HashMap<u32, Vec<Hash>>>,
}

/// Pieces whose proven leaves are kept.
pub const MAX_CACHED_LEAVES: usize = 64;
/// Bytes of failed pieces held while their leaves are asked for (one
/// piece at least); more fail whole at once.
pub const MAX_WAITING_BYTES: u64 = 32 << 20;

struct Fetch {
    /// The info dict (its hash checked) whose layers are fetched.
    info: Bytes,
    picker: HashPicker,
    /// Set once, when the picker is done: the layers by root.
    layers: Option<Vec<(Hash, Vec<Hash>)>>,
}

impl HashX {
    fn fetch(&self) -> MutexGuard<'_, Option<Fetch>> {
        self.fetch.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether our handshake sets the v2 bit.
    pub fn speaks_v2(&self) -> bool {
        self.v2.load(Ordering::Relaxed)
    }

    fn leaf_asks(&self) -> MutexGuard<'_, LeafAsks<VerifyJob>> {
        self.leaf_asks.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn leaf_cache(&self) -> MutexGuard<'_, HashMap<u32, Vec<Hash>>> {
        self.leaf_cache.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// `(chunks verified, chunks in all)` of the layer fetch, if any.
    pub fn progress(&self) -> Option<(usize, usize)> {
        self.fetch().as_ref().map(|f| f.picker.progress())
    }
}

/// A torrent that waits for its metadata: the assembler checks the info
/// dict against the full v2 hash when the swarm is the v2 one (the magnet
/// had only `urn:btmh`, or the source was a bare 64-hex hash).
pub fn await_metadata(shared: &Shared, info_hash: InfoHash, v2: Option<[u8; 32]>) {
    let v2 = v2.filter(|h| h[..20] == info_hash.0[..]);
    shared.hashx.v2.store(v2.is_some(), Ordering::Relaxed);
    shared.lock().assembler = Some(MetadataAssembler::new(info_hash).with_v2(v2));
}

/// A torrent whose metadata is known: a v2-only one speaks v2.
pub fn installed(shared: &Shared, meta: &Metainfo) {
    if meta.info.is_v2_only() {
        shared.hashx.v2.store(true, Ordering::Relaxed);
    }
}

/// The metadata exchange assembled `info` (its hash checked). A v2 dict
/// whose files miss piece layers waits here while they are fetched;
/// anything else goes to the torrent's loop at once.
pub fn metadata_assembled(shared: &Shared, info: Bytes) {
    if let Some(picker) = missing_layers(&info) {
        tracing::info!(
            "metadata received without piece layers: fetching {} chunks of hashes from peers",
            picker.progress().1
        );
        *shared.hashx.fetch() = Some(Fetch {
            info,
            picker,
            layers: None,
        });
        return;
    }
    shared.metadata_found(info);
}

/// The picker for the layers `info` misses, if it is a v2 dict missing any.
fn missing_layers(info: &[u8]) -> Option<HashPicker> {
    match Metainfo::from_info_bytes(info, Vec::new()) {
        Err(MetainfoError::V2Only { .. }) => {}
        _ => return None,
    }
    let (v2, piece_length) = crate::metainfo::v2_files(info)?;
    let picker = HashPicker::new(&v2.files, piece_length);
    (!picker.is_done()).then_some(picker)
}

/// The torrent from a fetched info dict: with the layers fetched for it,
/// if it needed any.
pub fn metainfo(
    shared: &Shared,
    info: &[u8],
    trackers: Vec<Vec<String>>,
) -> Result<Metainfo, MetainfoError> {
    let layers = shared
        .hashx
        .fetch()
        .as_ref()
        .filter(|f| f.info[..] == *info)
        .and_then(|f| f.layers.clone());
    let meta = Metainfo::from_info_bytes_with_layers(info, trackers, &layers.unwrap_or_default())?;
    installed(shared, &meta);
    Ok(meta)
}

/// The trees we serve, by root, built on first use.
fn served<'a>(shared: &'a Shared, data: &TorrentData) -> &'a HashMap<Hash, LayerTree> {
    shared.hashx.served.get_or_init(|| {
        let Some(v2) = &data.meta.v2 else {
            return HashMap::new();
        };
        let pl = data.meta.info.piece_length;
        v2.files
            .iter()
            .filter_map(|f| {
                let root = f.pieces_root?;
                let tree = LayerTree::new(f.layer.as_ref()?, f.length, pl, &root)?;
                Some((root, tree))
            })
            .collect()
    })
}

/// The answer to a hash request, from the layers of the installed torrent.
pub fn answer(shared: &Shared, req: &HashRequest) -> Option<Vec<Hash>> {
    let data = shared.data()?;
    let answer = served(shared, data).get(&req.pieces_root)?.answer(req);
    if answer.is_some() {
        tracing::debug!(
            "answered a hash request: {} hashes of layer {} from {}",
            req.length,
            req.base_layer,
            req.index
        );
    }
    answer
}

/// The next hash request for `key` (which has the pieces in `bf`): a
/// chunk of a missing piece layer, else the leaves of a failed piece.
pub fn next_request(
    shared: &Shared,
    key: PeerKey,
    bf: Option<&Bitfield>,
    now: Instant,
) -> Option<HashRequest> {
    {
        let mut f = shared.hashx.fetch();
        if let Some(f) = f.as_mut().filter(|f| f.layers.is_none())
            && let Some(r) = f.picker.next_request(key, now)
        {
            return Some(r);
        }
    }
    let mut asks = shared.hashx.leaf_asks();
    if asks.is_empty() {
        return None;
    }
    let has = |piece: u32| bf.is_some_and(|b| b.get(piece as usize));
    asks.next_request(key, has, now)
}

/// Whether our request `req` to `key` is still awaited.
pub fn pending(shared: &Shared, key: PeerKey, req: &HashRequest, now: Instant) -> bool {
    let fetching = {
        let mut f = shared.hashx.fetch();
        f.as_mut()
            .is_some_and(|f| f.picker.is_pending(key, req, now))
    };
    fetching || shared.hashx.leaf_asks().is_pending(key, req, now)
}

/// Hashes from `key`; when they complete the layers, the info dict goes
/// to the torrent's loop.
pub fn received(
    shared: &Shared,
    key: PeerKey,
    req: &HashRequest,
    hashes: &[Hash],
    now: Instant,
) -> Result<(), String> {
    let answer = shared.hashx.leaf_asks().on_hashes(key, req, hashes);
    match answer {
        LeafAnswer::NotOurs => {}
        LeafAnswer::Bad => return Err("block hashes that do not hash up to their piece".into()),
        LeafAnswer::Proven {
            piece,
            leaves,
            payload,
        } => {
            tracing::info!(
                "piece {piece}: block hashes received and checked; finding the bad blocks"
            );
            cache_leaves(shared, piece, leaves);
            if let Some(me) = shared.this.upgrade() {
                super::verify::requeue(me, payload);
            }
            return Ok(());
        }
    }
    let done = {
        let mut f = shared.hashx.fetch();
        let Some(f) = f.as_mut().filter(|f| f.layers.is_none()) else {
            return Ok(());
        };
        f.picker.on_hashes(key, req, hashes, now)?;
        if !f.picker.is_done() {
            return Ok(());
        }
        f.layers = f.picker.layers();
        f.layers.as_ref().map(|_| f.info.clone())
    };
    if let Some(info) = done {
        tracing::info!("piece layers complete and checked against every file's root");
        shared.metadata_found(info);
    }
    Ok(())
}

/// `key` rejected `req`.
pub fn rejected(shared: &Shared, key: PeerKey, req: &HashRequest, now: Instant) {
    if let Some(f) = shared.hashx.fetch().as_mut() {
        f.picker.on_reject(key, req, now);
    }
    shared.hashx.leaf_asks().on_reject(key, req);
}

/// `key` left: its hash requests go to others.
pub fn peer_gone(shared: &Shared, key: PeerKey) {
    if let Some(f) = shared.hashx.fetch().as_mut() {
        f.picker.on_peer_gone(key);
    }
    shared.hashx.leaf_asks().peer_gone(key);
}

/// Where piece `piece` of the torrent lies in its file's tree: `None`
/// for a v1 torrent, or a piece no file starts in (pure padding).
pub fn piece_spot(data: &TorrentData, piece: u32) -> Option<PieceSpot> {
    let v2 = data.meta.v2.as_ref()?;
    let info = &data.meta.info;
    let pl = u64::from(info.piece_length);
    let at = u64::from(piece) * pl;
    // Every file starts a piece in the aligned layout (v2-only, or a
    // hybrid's v1 half with its pad files).
    let starts = info.files.iter().filter(|f| !f.pad).map(|f| f.offset);
    v2.files.iter().zip(starts).find_map(|(f, start)| {
        let root = f.pieces_root?;
        let inside = at >= start && at < start + f.length;
        inside.then(|| PieceSpot {
            root,
            file_len: f.length,
            index: ((at - start) / pl) as u32,
        })
    })
}

/// The proven leaves of failed piece `piece`, if any.
pub fn cached_leaves(shared: &Shared, piece: u32) -> Option<Vec<Hash>> {
    shared.hashx.leaf_cache().get(&piece).cloned()
}

fn cache_leaves(shared: &Shared, piece: u32, leaves: Vec<Hash>) {
    let mut c = shared.hashx.leaf_cache();
    if c.len() >= MAX_CACHED_LEAVES && !c.contains_key(&piece) {
        let Some(old) = c.keys().next().copied() else {
            return;
        };
        c.remove(&old);
    }
    c.insert(piece, leaves);
}

/// Piece `piece` passed: its cached leaves are no longer needed.
pub fn forget_leaves(shared: &Shared, piece: u32) {
    let mut c = shared.hashx.leaf_cache();
    if !c.is_empty() {
        c.remove(&piece);
    }
}

/// Failed piece `piece` (`job`, its data and senders) waits for its
/// leaves, asked of peers; `Err` gives the job back when it cannot (a v1
/// torrent, a piece of one leaf, too many waiting).
pub fn wait_for_leaves(
    shared: &Shared,
    piece: u32,
    contributors: Vec<PeerKey>,
    job: VerifyJob,
    now: Instant,
) -> Result<(), VerifyJob> {
    let Some(data) = shared.data() else {
        return Err(job);
    };
    let info = &data.meta.info;
    let Some(hash) = info
        .v2_pieces
        .as_ref()
        .and_then(|c| c.get(piece as usize))
        .map(|c| c.hash)
    else {
        return Err(job);
    };
    let Some(req) =
        piece_spot(data, piece).and_then(|s| blame::leaf_request(&s, info.piece_length))
    else {
        return Err(job);
    };
    let mut asks = shared.hashx.leaf_asks();
    let held = (asks.len() as u64 + 1) * u64::from(info.piece_length);
    if !asks.is_empty() && held > MAX_WAITING_BYTES {
        return Err(job);
    }
    asks.add(piece, req, hash, contributors, now, job)
}

/// Failed pieces whose leaves nobody sent in time go back to the verify
/// queue, to be failed whole (called from the torrent's tick).
pub fn expire_leaf_asks(shared: &Arc<Shared>, now: Instant) {
    let expired = {
        let mut asks = shared.hashx.leaf_asks();
        if asks.is_empty() {
            return;
        }
        asks.expire(now)
    };
    for (piece, mut job) in expired {
        tracing::info!("piece {piece}: no peer sent its block hashes in time");
        job.no_blame();
        super::verify::requeue(shared.clone(), job);
    }
}

/// A hash request below the piece layer, for a piece we have: answered
/// off the reactor from the piece read back from disk, the answer sent
/// to `key`'s task. Its cost is the leaves hashed (`None`, reject it,
/// above `budget` or for anything else).
pub fn answer_later(shared: &Shared, key: PeerKey, req: &HashRequest, budget: u32) -> Option<u32> {
    let data = shared.data().cloned()?;
    let job = leaf_job(&data, req)?;
    let work = u32::try_from(job.width).ok().filter(|&w| w <= budget)?;
    let tx = {
        let st = shared.lock();
        let have = st
            .picker
            .as_ref()
            .is_some_and(|p| p.have().get(job.piece as usize));
        match st.peers.get(&key) {
            Some(p) if have => p.tx.clone(),
            _ => return None,
        }
    };
    let me = shared.this.upgrade()?;
    let req = *req;
    shared.tasks.spawn(async move {
        let answer = move || {
            let tree = served(&me, &data).get(&req.pieces_root);
            job.answer(&data, &req, tree)
        };
        let hashes = tokio::task::spawn_blocking(answer).await.ok().flatten();
        let _ = tx.send(PeerCommand::HashAnswer { req, hashes }).await;
    });
    Some(work)
}

/// What answering a request below the piece layer takes: the piece its
/// nodes fall under, and where it lies in its file.
struct LeafJob {
    piece: u32,
    shape: TreeShape,
    /// Leaves under the piece's node.
    width: u64,
    /// The piece's index in its file.
    index: u64,
    /// Bytes of file data in the piece.
    data_len: usize,
}

fn leaf_job(data: &TorrentData, req: &HashRequest) -> Option<LeafJob> {
    let v2 = data.meta.v2.as_ref()?;
    let info = &data.meta.info;
    let pl = info.piece_length;
    let starts = info.files.iter().filter(|f| !f.pad).map(|f| f.offset);
    let (file, start) = v2
        .files
        .iter()
        .zip(starts)
        .find(|(f, _)| f.pieces_root == Some(req.pieces_root))?;
    let shape = TreeShape::of_file(file.length)?;
    let width = (merkle::blocks_per_piece(pl) as u64).min(shape.leaves);
    if req.check().is_err() || !shape.fits(req) || req.base_layer >= width.trailing_zeros() {
        return None;
    }
    let first = u64::from(req.index) << req.base_layer;
    let last = (u64::from(req.index) + u64::from(req.length)) << req.base_layer;
    let index = first / width;
    if last > (index + 1) * width {
        return None;
    }
    let offset = index * u64::from(pl);
    let data_len = file.length.checked_sub(offset)?.min(u64::from(pl)) as usize;
    let piece = u32::try_from((start + offset) / u64::from(pl)).ok()?;
    Some(LeafJob {
        piece,
        shape,
        width,
        index,
        data_len,
    })
}

impl LeafJob {
    /// Reads the piece back and answers `req` from its leaves (blocking).
    fn answer(
        &self,
        data: &TorrentData,
        req: &HashRequest,
        tree: Option<&LayerTree>,
    ) -> Option<Vec<Hash>> {
        let mut buf = vec![0u8; self.data_len];
        data.storage
            .read(data.geometry.piece_offset(self.piece), &mut buf)
            .ok()?;
        let leaves = merkle::leaves(&buf);
        let top = self.shape.layers - 1;
        let root = req.pieces_root;
        let above = |layer: u32, i: u64| match tree {
            Some(t) => t.node(layer, i),
            None => (layer == top && i == 0).then_some(root),
        };
        hashes::answer_from_piece(req, &self.shape, self.width, self.index, &leaves, above)
    }
}
