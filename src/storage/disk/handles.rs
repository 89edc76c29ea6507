//! The open file handles of one torrent's storage: an LRU bounded by a cap
//! that shrinks when the process runs out of descriptors.

use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::sync::Arc;

/// Most file handles kept open at once; torrents with more files reopen
/// them as needed (least recently used first out).
const MAX_OPEN_FILES: usize = 128;

/// The handle cache takes at most this share (1/N) of the process's soft
/// descriptor limit (`ulimit -n`), leaving the rest to sockets: under
/// `ulimit -n 256` it keeps 64 files open.
const FD_LIMIT_SHARE: u64 = 4;

/// After the cache was shrunk for lack of descriptors, it may grow back by
/// one handle every this many successful opens, up to its ceiling.
const REGROW_AFTER: u32 = 64;

pub(super) struct OpenFile {
    pub(super) file: Arc<File>,
    writable: bool,
    /// Value of [`Handles::clock`] at the last use.
    used: u64,
}

/// The open file handles: an LRU bounded by `cap`, which shrinks when the
/// process runs out of descriptors.
pub(super) struct Handles {
    pub(super) open: HashMap<usize, OpenFile>,
    /// Most handles kept now.
    pub(super) cap: usize,
    /// What `cap` may grow back to.
    pub(super) ceiling: usize,
    clock: u64,
    opens_since_shrink: u32,
    /// Files written (or resized) since the last [`super::Storage::sync`].
    pub(super) dirty: HashSet<usize>,
}

impl Handles {
    pub(super) fn new(ceiling: usize) -> Self {
        Handles {
            open: HashMap::new(),
            cap: ceiling,
            ceiling,
            clock: 0,
            opens_since_shrink: 0,
            dirty: HashSet::new(),
        }
    }

    pub(super) fn get(&mut self, i: usize, write: bool) -> Option<Arc<File>> {
        self.clock += 1;
        let clock = self.clock;
        let f = self.open.get_mut(&i)?;
        if write && !f.writable {
            return None;
        }
        f.used = clock;
        Some(f.file.clone())
    }

    /// Closes the least recently used handle, if any.
    pub(super) fn evict_lru(&mut self) -> bool {
        let Some(k) = self
            .open
            .iter()
            .min_by_key(|(_, f)| f.used)
            .map(|(k, _)| *k)
        else {
            return false;
        };
        self.open.remove(&k);
        true
    }

    /// Closes least recently used handles until one more fits under `cap`.
    pub(super) fn make_room(&mut self) {
        while self.open.len() >= self.cap && self.evict_lru() {}
    }

    pub(super) fn insert(&mut self, i: usize, file: Arc<File>, writable: bool) {
        self.clock += 1;
        self.open.insert(
            i,
            OpenFile {
                file,
                writable,
                used: self.clock,
            },
        );
        self.opens_since_shrink = self.opens_since_shrink.saturating_add(1);
        if self.cap < self.ceiling && self.opens_since_shrink >= REGROW_AFTER {
            self.cap += 1;
            self.opens_since_shrink = 0;
        }
    }

    /// Out of descriptors: halves the cap (to what is open now, at least
    /// one) and closes handles so that one more fits. Returns whether any
    /// handle was closed (then a retry may succeed).
    pub(super) fn shrink(&mut self) -> bool {
        let before = self.open.len();
        self.cap = (before / 2).clamp(1, self.cap.max(1));
        self.opens_since_shrink = 0;
        self.make_room();
        self.open.len() < before
    }
}

/// How many handles the cache may keep, from the soft `RLIMIT_NOFILE`.
pub(super) fn open_files_ceiling() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit {
        Some(n) => usize::try_from(n / FD_LIMIT_SHARE)
            .unwrap_or(MAX_OPEN_FILES)
            .clamp(1, MAX_OPEN_FILES),
        None => MAX_OPEN_FILES,
    }
}
