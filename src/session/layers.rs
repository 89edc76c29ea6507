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
//!   [`metainfo`] builds the torrent from it with the fetched layers.

use super::shared::Shared;
use crate::id::InfoHash;
use crate::merkle::Hash;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::peer::hash_picker::HashPicker;
use crate::peer::hashes::{HashRequest, LayerTree};
use crate::peer::metadata::MetadataAssembler;
use crate::picker::PeerKey;
use bytes::Bytes;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, OnceLock};
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
}

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

/// The answer to a hash request, from the layers of the installed torrent.
pub fn answer(shared: &Shared, req: &HashRequest) -> Option<Vec<Hash>> {
    let data = shared.data()?;
    let served = shared.hashx.served.get_or_init(|| {
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
    });
    let answer = served.get(&req.pieces_root)?.answer(req);
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

/// The next hash request for `key`, while layers are fetched.
pub fn next_request(shared: &Shared, key: PeerKey, now: Instant) -> Option<HashRequest> {
    let mut f = shared.hashx.fetch();
    let f = f.as_mut().filter(|f| f.layers.is_none())?;
    f.picker.next_request(key, now)
}

/// Whether our request `req` to `key` is still awaited.
pub fn pending(shared: &Shared, key: PeerKey, req: &HashRequest, now: Instant) -> bool {
    let mut f = shared.hashx.fetch();
    f.as_mut()
        .is_some_and(|f| f.picker.is_pending(key, req, now))
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
}

/// `key` left: its hash requests go to others.
pub fn peer_gone(shared: &Shared, key: PeerKey) {
    if let Some(f) = shared.hashx.fetch().as_mut() {
        f.picker.on_peer_gone(key);
    }
}
