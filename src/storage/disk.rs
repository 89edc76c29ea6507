//! Blocking file I/O for one torrent: positioned reads and writes across the
//! torrent's files, piece verification, and the start-up check of existing
//! data.
//!
//! Deliberately synchronous: callers run it on tokio's blocking pool. Positioned
//! `pread`/`pwrite` on shared handles let several blocking threads work on
//! one torrent without a lock around the I/O, and the page cache does the
//! buffering a userspace cache would duplicate. Knows nothing of peers or
//! sessions.

use super::beneath::{self, Access, Target};
use super::layout::Layout;
use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::metainfo::Info;
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet};
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

/// Most file handles kept open at once; torrents with more files reopen
/// them as needed (least recently used first out).
const MAX_OPEN_FILES: usize = 128;

/// The handle cache takes at most this share (1/N) of the process's soft
/// descriptor limit (`ulimit -n`), leaving the rest to sockets: under
/// `ulimit -n 256` it keeps 64 files open.
const FD_LIMIT_SHARE: u64 = 4;

/// When the process runs out of descriptors (`EMFILE`/`ENFILE`) and the
/// cache has nothing left to close, an open is retried every
/// [`FD_RETRY_PAUSE`] for this long in total (sockets come and go) before
/// the error is returned.
const FD_RETRY_TOTAL: Duration = Duration::from_secs(60);

/// Pause between two tries of an open that ran out of descriptors.
const FD_RETRY_PAUSE: Duration = Duration::from_millis(50);

/// After the cache was shrunk for lack of descriptors, it may grow back by
/// one handle every this many successful opens, up to its ceiling.
const REGROW_AFTER: u32 = 64;

/// A storage failure. These are fatal to the download: the disk is ours.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    /// A file could not be created, opened, read or written. The OS error
    /// is part of the message rather than a `source`: callers in the
    /// session print storage errors with `{}` alone.
    #[error("{op} {path}: {error}")]
    Io {
        /// What we were doing.
        op: &'static str,
        /// Which file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// A torrent path that would land outside the output folder. Metainfo
    /// validation should make this impossible; this is the last fence.
    #[error("refusing path outside the output folder: {0}")]
    UnsafePath(PathBuf),
    /// A symlink below the output folder, where a torrent file or folder
    /// goes: following it could write anywhere.
    #[error("refusing to follow the symlink {0} inside the output folder")]
    Symlink(PathBuf),
    /// Something other than a regular file (a folder, a FIFO, a device)
    /// where a torrent file goes.
    #[error("{0} is in the way: it is not a regular file")]
    NotAFile(PathBuf),
    /// An existing file that btc did not make (see [`Storage::prepare`]).
    #[error(
        "refusing to overwrite {0}: it exists and none of its data is this torrent's (--overwrite replaces it)"
    )]
    NotOurs(PathBuf),
}

impl StorageError {
    /// The process (or the system) is out of file descriptors: worth a
    /// retry once some are closed.
    fn is_out_of_descriptors(&self) -> bool {
        let emfile = rustix::io::Errno::MFILE.raw_os_error();
        let enfile = rustix::io::Errno::NFILE.raw_os_error();
        matches!(self, StorageError::Io { error, .. }
            if matches!(error.raw_os_error(), Some(c) if c == emfile || c == enfile))
    }
}

struct FileSlot {
    /// The torrent's path components below the output folder.
    parts: Vec<String>,
    /// `root` joined with `parts`, for messages.
    path: PathBuf,
    /// Offset in the torrent's content.
    offset: u64,
    length: u64,
    /// A BEP 47 pad file: all zeros, never on disk.
    pad: bool,
}

struct OpenFile {
    file: Arc<File>,
    writable: bool,
    /// Value of [`Handles::clock`] at the last use.
    used: u64,
}

/// The open file handles: an LRU bounded by `cap`, which shrinks when the
/// process runs out of descriptors.
struct Handles {
    open: HashMap<usize, OpenFile>,
    /// Most handles kept now.
    cap: usize,
    /// What `cap` may grow back to.
    ceiling: usize,
    clock: u64,
    opens_since_shrink: u32,
    /// Files written (or resized) since the last [`Storage::sync`].
    dirty: HashSet<usize>,
}

impl Handles {
    fn new(ceiling: usize) -> Self {
        Handles {
            open: HashMap::new(),
            cap: ceiling,
            ceiling,
            clock: 0,
            opens_since_shrink: 0,
            dirty: HashSet::new(),
        }
    }

    fn get(&mut self, i: usize, write: bool) -> Option<Arc<File>> {
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
    fn evict_lru(&mut self) -> bool {
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
    fn make_room(&mut self) {
        while self.open.len() >= self.cap && self.evict_lru() {}
    }

    fn insert(&mut self, i: usize, file: Arc<File>, writable: bool) {
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
    fn shrink(&mut self) -> bool {
        let before = self.open.len();
        self.cap = (before / 2).clamp(1, self.cap.max(1));
        self.opens_since_shrink = 0;
        self.make_room();
        self.open.len() < before
    }
}

/// The files of one torrent under one output folder.
///
/// Every path below the output folder is opened without following
/// symlinks (see [`super::beneath`]). File handles are a budget: at most
/// `min(128, ulimit -n / 4)` stay open, and running out of descriptors
/// anyway shrinks that budget and retries instead of failing.
pub struct Storage {
    root: PathBuf,
    files: Vec<FileSlot>,
    layout: Layout,
    piece_length: u64,
    handles: Mutex<Handles>,
    /// Serializes writes. Concurrent `pwrite`s to one file make the kernel
    /// spin on the inode lock (measured: ~11% of a 1 GiB download's CPU);
    /// waiting here sleeps instead, and one writer keeps the disk as busy.
    write_lock: Mutex<()>,
    /// The out-of-descriptors warning was printed.
    warned_fds: AtomicBool,
}

/// How many handles the cache may keep, from the soft `RLIMIT_NOFILE`.
fn open_files_ceiling() -> usize {
    let limit = rustix::process::getrlimit(rustix::process::Resource::Nofile).current;
    match limit {
        Some(n) => usize::try_from(n / FD_LIMIT_SHARE)
            .unwrap_or(MAX_OPEN_FILES)
            .clamp(1, MAX_OPEN_FILES),
        None => MAX_OPEN_FILES,
    }
}

impl Storage {
    /// Maps the torrent's files under `root`. Touches nothing on disk.
    pub fn new(root: &Path, info: &Info) -> Result<Self, StorageError> {
        let mut files = Vec::with_capacity(info.files.len());
        let mut offset = 0u64;
        for f in &info.files {
            let mut path = root.to_path_buf();
            for c in &f.path {
                let comp = Path::new(c);
                let mut it = comp.components();
                let ok = matches!(it.next(), Some(Component::Normal(_))) && it.next().is_none();
                if !ok {
                    return Err(StorageError::UnsafePath(root.join(c)));
                }
                path.push(comp);
            }
            if f.path.is_empty() {
                return Err(StorageError::UnsafePath(path));
            }
            files.push(FileSlot {
                parts: f.path.clone(),
                path,
                offset,
                length: f.length,
                pad: f.pad,
            });
            offset = offset.saturating_add(f.length);
        }
        let layout = Layout::new(info.files.iter().map(|f| f.length));
        Ok(Storage {
            root: root.to_path_buf(),
            files,
            layout,
            piece_length: u64::from(info.piece_length).max(1),
            handles: Mutex::new(Handles::new(open_files_ceiling())),
            write_lock: Mutex::new(()),
            warned_fds: AtomicBool::new(false),
        })
    }

    /// Overrides the handle budget (tests exercise eviction and running
    /// out of descriptors with it).
    #[cfg(test)]
    fn set_open_files(&self, n: usize) {
        let mut h = self.lock_handles();
        h.ceiling = n.max(1);
        h.cap = n.max(1);
    }

    fn target(&self, i: usize) -> Target<'_> {
        let f = &self.files[i];
        Target {
            root: &self.root,
            parts: &f.parts,
            path: &f.path,
        }
    }

    fn lock_handles(&self) -> MutexGuard<'_, Handles> {
        self.handles.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether an existing file at file `i`'s path is btc's to write to
    /// (see [`Storage::prepare`]).
    fn is_ours(&self, i: usize, len: u64, have: &Bitfield) -> Result<bool, StorageError> {
        let f = &self.files[i];
        if len == 0 || self.has_verified_piece(i, have) {
            return Ok(true);
        }
        if len != f.length {
            return Ok(false);
        }
        let file = self.retry_fds(|_| beneath::open_file(self.target(i), Access::Read))?;
        beneath::is_all_zeros(&file, len, &f.path)
    }

    /// Whether a piece overlapping file `i` is in `have`.
    fn has_verified_piece(&self, i: usize, have: &Bitfield) -> bool {
        let f = &self.files[i];
        if f.length == 0 {
            return false;
        }
        let first = f.offset / self.piece_length;
        let last = (f.offset + f.length - 1) / self.piece_length;
        (first..=last).any(|p| usize::try_from(p).is_ok_and(|p| have.get(p)))
    }

    /// Creates folders and files (sparse, full length) so writes can land
    /// anywhere and zero-length files exist too. Pad files are not created.
    ///
    /// # Whose file is it?
    ///
    /// `have` is what [`Storage::check_existing`] found. A file already at
    /// a torrent file's path is btc's to write to when
    /// - it is empty, or
    /// - a piece that overlaps it passed the hash check (its data is this
    ///   torrent's: an interrupted download resuming), or
    /// - it has exactly the torrent file's length and holds only zeros:
    ///   what btc's own sparse preallocation leaves until the file's first
    ///   verified piece lands (pieces are written only once verified).
    ///
    /// Anything else (e.g. a torrent named `.bashrc` run in the home
    /// folder) is the user's: the whole call fails with
    /// [`StorageError::NotOurs`] before anything is created, unless
    /// `overwrite`, which truncates such files and downloads over them.
    /// Zero-length torrent files are never written, so they never refuse.
    /// Known limits, both erring on the side of the user's data: a crash in
    /// the middle of a file's very first piece write leaves bytes that pass
    /// no check; and a file whose every piece also covers a file that is
    /// missing (deleted from a finished multi-file download) cannot be
    /// checked at all. Either file is refused until `--overwrite` is given
    /// (it is then downloaded again).
    ///
    /// Never truncates a file that is btc's.
    pub fn prepare(&self, have: &Bitfield, overwrite: bool) -> Result<(), StorageError> {
        let mut replace = vec![false; self.files.len()];
        for (i, f) in self.files.iter().enumerate() {
            if f.pad || f.length == 0 {
                continue;
            }
            let Some(len) = self.file_len(i)? else {
                continue;
            };
            if !self.is_ours(i, len, have)? {
                if !overwrite {
                    return Err(StorageError::NotOurs(f.path.clone()));
                }
                replace[i] = true;
            }
        }
        for (i, f) in self.files.iter().enumerate().filter(|(_, f)| !f.pad) {
            let file = self.handle(i, true)?;
            let sizing = |error| StorageError::Io {
                op: "sizing",
                path: f.path.clone(),
                error,
            };
            if replace[i] {
                tracing::warn!("overwriting {} (--overwrite)", f.path.display());
                self.lock_handles().dirty.insert(i);
                file.set_len(0).map_err(sizing)?;
            }
            let len = file
                .metadata()
                .map_err(|error| StorageError::Io {
                    op: "examining",
                    path: f.path.clone(),
                    error,
                })?
                .len();
            if len < f.length {
                self.lock_handles().dirty.insert(i);
                file.set_len(f.length).map_err(sizing)?;
            }
        }
        Ok(())
    }

    /// A handle on file `i` from the cache, opened if needed.
    fn handle(&self, i: usize, write: bool) -> Result<Arc<File>, StorageError> {
        let access = if write { Access::Write } else { Access::Read };
        self.retry_fds(|h| {
            if let Some(f) = h.get(i, write) {
                return Ok(f);
            }
            h.make_room();
            let f = Arc::new(beneath::open_file(self.target(i), access)?);
            h.insert(i, f.clone(), write);
            Ok(f)
        })
    }

    /// Runs `op` (which opens descriptors) with the handle cache locked.
    /// When the process is out of descriptors it closes cached handles and
    /// retries at once, and once there is nothing left to close it waits
    /// for descriptors, retrying for up to [`FD_RETRY_TOTAL`].
    fn retry_fds<T>(
        &self,
        mut op: impl FnMut(&mut Handles) -> Result<T, StorageError>,
    ) -> Result<T, StorageError> {
        let mut waited = Duration::ZERO;
        loop {
            let mut h = self.lock_handles();
            let err = match op(&mut h) {
                Err(e) if e.is_out_of_descriptors() => e,
                r => return r,
            };
            if !self.warned_fds.swap(true, Ordering::Relaxed) {
                tracing::warn!(
                    "out of file descriptors; keeping fewer files open (raise `ulimit -n` for speed)"
                );
            }
            if h.shrink() {
                tracing::debug!("out of descriptors: at most {} files open now", h.cap);
                continue;
            }
            drop(h);
            if waited >= FD_RETRY_TOTAL {
                return Err(err);
            }
            std::thread::sleep(FD_RETRY_PAUSE);
            waited += FD_RETRY_PAUSE;
        }
    }

    /// The length of file `i` on disk, `None` if it does not exist.
    fn file_len(&self, i: usize) -> Result<Option<u64>, StorageError> {
        self.retry_fds(|_| beneath::file_len(self.target(i)))
    }

    /// Writes `data` at content offset `offset` (what falls in pad files is
    /// dropped: it is zeros, as the piece hash has just confirmed).
    pub fn write(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        let _one_writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        for s in self.layout.spans(offset, data.len()) {
            if self.files[s.file].pad {
                continue;
            }
            let f = self.handle(s.file, true)?;
            self.lock_handles().dirty.insert(s.file);
            f.write_all_at(&data[s.buf_offset..s.buf_offset + s.len], s.file_offset)
                .map_err(|error| StorageError::Io {
                    op: "writing",
                    path: self.files[s.file].path.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Fills `buf` from content offset `offset`; pad files read as zeros.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        for s in self.layout.spans(offset, buf.len()) {
            if self.files[s.file].pad {
                buf[s.buf_offset..s.buf_offset + s.len].fill(0);
                continue;
            }
            let f = self.handle(s.file, false)?;
            f.read_exact_at(&mut buf[s.buf_offset..s.buf_offset + s.len], s.file_offset)
                .map_err(|error| StorageError::Io {
                    op: "reading",
                    path: self.files[s.file].path.clone(),
                    error,
                })?;
        }
        Ok(())
    }

    /// Whether every file touched by `[offset, offset+len)` exists at full length;
    /// lets the start-up check skip reading pieces that cannot be there.
    fn range_present(&self, offset: u64, len: usize, sizes: &[Option<u64>]) -> bool {
        self.layout.spans(offset, len).iter().all(|s| {
            self.files[s.file].pad
                || sizes[s.file].is_some_and(|l| l >= s.file_offset + s.len as u64)
        })
    }

    /// Flushes written data to the disk: every file written since the last
    /// flush, through its cached handle or, if that was closed since (more
    /// files than handles), by opening it again for the flush. Files are
    /// flushed one by one (`fdatasync`), never the whole filesystem: other
    /// programs' pending writes are not ours to wait for. A file that fails
    /// to flush stays marked for the next call.
    pub fn sync(&self) -> Result<(), StorageError> {
        let mut dirty: Vec<usize> = {
            let mut h = self.lock_handles();
            h.dirty.drain().collect()
        };
        dirty.sort_unstable();
        for (n, &i) in dirty.iter().enumerate() {
            let cached = self.lock_handles().open.get(&i).map(|f| f.file.clone());
            let r = match cached {
                Some(f) => Ok(f),
                None => self
                    .retry_fds(|_| beneath::open_file(self.target(i), Access::Read))
                    .map(Arc::new),
            }
            .and_then(|f| {
                f.sync_data().map_err(|error| StorageError::Io {
                    op: "flushing",
                    path: self.files[i].path.clone(),
                    error,
                })
            });
            if let Err(e) = r {
                self.lock_handles().dirty.extend(&dirty[n..]);
                return Err(e);
            }
        }
        Ok(())
    }

    /// Checks which pieces already on disk match their hashes, on `threads`
    /// threads. `progress` is bumped once per piece examined. Missing or short
    /// files simply count as missing pieces, and so do files behind a
    /// symlink ([`Storage::prepare`] then refuses them).
    pub fn check_existing(
        &self,
        geometry: &Geometry,
        hashes: &[[u8; 20]],
        threads: usize,
        progress: &AtomicU32,
    ) -> Bitfield {
        let sizes: Vec<Option<u64>> = (0..self.files.len())
            .map(|i| {
                if self.files[i].pad {
                    None
                } else {
                    self.file_len(i).ok().flatten()
                }
            })
            .collect();
        let n = geometry.piece_count;
        let mut have = Bitfield::new(n as usize);
        if sizes.iter().all(|s| s.is_none()) {
            progress.store(n, Ordering::Relaxed);
            return have;
        }
        let next = AtomicU32::new(0);
        let results: Vec<Vec<u32>> = std::thread::scope(|scope| {
            let workers: Vec<_> = (0..threads.max(1))
                .map(|_| {
                    scope.spawn(|| {
                        let mut good = Vec::new();
                        let mut buf = vec![0u8; geometry.piece_length as usize];
                        loop {
                            let i = next.fetch_add(1, Ordering::Relaxed);
                            if i >= n {
                                break;
                            }
                            let len = geometry.piece_len(i) as usize;
                            let off = geometry.piece_offset(i);
                            if self.range_present(off, len, &sizes)
                                && self.read(off, &mut buf[..len]).is_ok()
                                && piece_matches(&buf[..len], &hashes[i as usize])
                            {
                                good.push(i);
                            }
                            progress.fetch_add(1, Ordering::Relaxed);
                        }
                        good
                    })
                })
                .collect();
            workers
                .into_iter()
                .map(|w| w.join().unwrap_or_default())
                .collect()
        });
        for i in results.into_iter().flatten() {
            have.set(i as usize);
        }
        have
    }
}

/// SHA-1 of `data` equals `expected`.
pub fn piece_matches(data: &[u8], expected: &[u8; 20]) -> bool {
    Sha1::digest(data).as_slice() == expected
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metainfo::FileEntry;

    fn info(files: &[(&[&str], u64)], piece_length: u32, content: &[u8]) -> Info {
        let mut off = 0;
        let files: Vec<FileEntry> = files
            .iter()
            .map(|(p, l)| {
                let e = FileEntry {
                    path: p.iter().map(|s| s.to_string()).collect(),
                    length: *l,
                    offset: off,
                    md5sum: None,
                    pad: p.contains(&".pad"),
                };
                off += l;
                e
            })
            .collect();
        let pieces = content
            .chunks(piece_length as usize)
            .map(|c| {
                let mut h = [0u8; 20];
                h.copy_from_slice(&Sha1::digest(c));
                h
            })
            .collect();
        Info {
            name: files[0].path[0].clone(),
            piece_length,
            pieces,
            private: false,
            files,
            total_length: off,
            multi_file: true,
        }
    }

    #[test]
    fn write_read_check_across_files() {
        let dir = tempfile::tempdir().unwrap();
        let content: Vec<u8> = (0..100_000u32).map(|i| (i * 7 % 251) as u8).collect();
        let info = info(
            &[
                (&["t", "a"], 30_000),
                (&["t", "empty"], 0),
                (&["t", "sub", "b"], 70_000),
            ],
            32768,
            &content,
        );
        let g = Geometry::new(info.total_length, info.piece_length);
        let st = Storage::new(dir.path(), &info).unwrap();
        let progress = AtomicU32::new(0);
        assert_eq!(st.check_existing(&g, &info.pieces, 2, &progress).count(), 0);
        st.prepare(&Bitfield::new(g.piece_count as usize), false)
            .unwrap();
        assert!(dir.path().join("t/empty").exists());
        // Write pieces 0 and 2 only.
        for i in [0u32, 2] {
            let off = g.piece_offset(i) as usize;
            st.write(off as u64, &content[off..off + g.piece_len(i) as usize])
                .unwrap();
        }
        st.sync().unwrap();
        let progress = AtomicU32::new(0);
        let have = st.check_existing(&g, &info.pieces, 2, &progress);
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0, 2]);
        assert_eq!(progress.load(Ordering::Relaxed), g.piece_count);
        // A read straddling the a -> empty -> sub/b boundary inside piece 0.
        let mut buf = vec![0u8; 5000];
        st.read(27_000, &mut buf).unwrap();
        assert!(buf[..] == content[27_000..32_000]);
        assert!(std::fs::read(dir.path().join("t/a")).unwrap()[..] == content[..30_000]);
    }

    #[test]
    fn refuses_escaping_paths() {
        let dir = tempfile::tempdir().unwrap();
        let mut i = info(&[(&["t", "a"], 10)], 16384, &[0u8; 10]);
        i.files[0].path = vec!["t".into(), "../x".into()];
        assert!(matches!(
            Storage::new(dir.path(), &i),
            Err(StorageError::UnsafePath(_))
        ));
        i.files[0].path = vec!["/etc".into()];
        assert!(Storage::new(dir.path(), &i).is_err());
    }

    /// BEP 47 pad files: never created or written, read as zeros, and the
    /// pieces they fill verify from the real files alone.
    #[test]
    fn pad_files_stay_virtual() {
        let dir = tempfile::tempdir().unwrap();
        let mut content: Vec<u8> = (0..65536u32).map(|i| (i % 249) as u8 + 1).collect();
        content[20_000..32_768].fill(0);
        let info = info(
            &[
                (&["t", "a"], 20_000),
                (&["t", ".pad", "12768"], 12_768),
                (&["t", "b"], 32_768),
            ],
            32768,
            &content,
        );
        let g = Geometry::new(info.total_length, info.piece_length);
        let st = Storage::new(dir.path(), &info).unwrap();
        st.prepare(&Bitfield::new(g.piece_count as usize), false)
            .unwrap();
        assert!(!dir.path().join("t/.pad").exists());
        // A piece whose pad bytes came in as garbage is stored as zeros.
        let mut piece0 = content[..32_768].to_vec();
        piece0[25_000] = 7;
        st.write(0, &piece0).unwrap();
        st.write(32_768, &content[32_768..]).unwrap();
        assert!(!dir.path().join("t/.pad").exists());
        let mut buf = vec![1u8; 32_768];
        st.read(0, &mut buf).unwrap();
        assert!(buf[..] == content[..32_768]);
        let have = st.check_existing(&g, &info.pieces, 1, &AtomicU32::new(0));
        assert_eq!(have.count(), 2);
    }

    /// Content, torrent and storage for the tests below: `files` under `root`.
    fn setup(root: &Path, files: &[(&[&str], u64)]) -> (Vec<u8>, Info, Geometry, Storage) {
        let total: u64 = files.iter().map(|f| f.1).sum();
        let content: Vec<u8> = (0..total).map(|i| (i * 13 % 251) as u8 + 1).collect();
        let info = info(files, 16384, &content);
        let g = Geometry::new(info.total_length, info.piece_length);
        let st = Storage::new(root, &info).unwrap();
        (content, info, g, st)
    }

    fn none(g: &Geometry) -> Bitfield {
        Bitfield::new(g.piece_count as usize)
    }

    /// A symlinked folder inside the output folder (the torrent's own top
    /// folder here) is never written through: prepare and write refuse,
    /// naming it, and nothing appears at its target.
    #[test]
    fn symlinked_folder_below_output_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        let outside = dir.path().join("outside");
        std::fs::create_dir_all(&out).unwrap();
        std::fs::create_dir_all(&outside).unwrap();
        std::os::unix::fs::symlink(&outside, out.join("t")).unwrap();
        let (content, _info, g, st) = setup(&out, &[(&["t", "sub", "a"], 20_000)]);
        match st.prepare(&none(&g), true) {
            Err(StorageError::Symlink(p)) => assert_eq!(p, out.join("t")),
            other => panic!("expected a symlink refusal, got {other:?}"),
        }
        assert!(matches!(
            st.write(0, &content[..16384]),
            Err(StorageError::Symlink(_))
        ));
        assert_eq!(std::fs::read_dir(&outside).unwrap().count(), 0);
        let msg = st.prepare(&none(&g), false).unwrap_err().to_string();
        assert!(
            msg.contains("symlink") && msg.contains(&out.join("t").display().to_string()),
            "{msg}"
        );
        assert!(!msg.contains('\n'), "{msg}");
    }

    /// A symlink where a torrent file goes, pointing at a file outside:
    /// the outside file is neither overwritten (even with --overwrite) nor
    /// read (its bytes, here the torrent's own, are not trusted as pieces
    /// to seed).
    #[test]
    fn symlinked_file_below_output_is_neither_written_nor_read() {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out");
        std::fs::create_dir_all(out.join("t")).unwrap();
        let (content, info, g, st) = setup(&out, &[(&["t", "a"], 40_000)]);
        let victim = dir.path().join("victim");
        std::fs::write(&victim, &content).unwrap();
        std::os::unix::fs::symlink(&victim, out.join("t/a")).unwrap();
        let have = st.check_existing(&g, &info.pieces, 2, &AtomicU32::new(0));
        assert_eq!(have.count(), 0, "pieces were read through a symlink");
        assert!(matches!(
            st.prepare(&have, true),
            Err(StorageError::Symlink(p)) if p == out.join("t/a")
        ));
        assert!(matches!(
            st.write(0, &[0u8; 16384]),
            Err(StorageError::Symlink(_))
        ));
        let mut buf = vec![0u8; 100];
        assert!(st.read(0, &mut buf).is_err());
        assert_eq!(std::fs::read(&victim).unwrap(), content);
    }

    /// The output folder itself may be a symlink (the user's own `-o`):
    /// it is followed.
    #[test]
    fn output_folder_symlink_is_followed() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().join("real");
        std::fs::create_dir_all(&real).unwrap();
        let link = dir.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let (content, _info, g, st) = setup(&link, &[(&["t", "a"], 20_000)]);
        st.prepare(&none(&g), false).unwrap();
        st.write(0, &content[..16384]).unwrap();
        st.sync().unwrap();
        assert_eq!(
            std::fs::read(real.join("t/a")).unwrap()[..16384],
            content[..16384]
        );
    }

    /// A FIFO where a file goes is refused at once, not opened and hung on.
    #[test]
    fn fifo_in_place_of_a_file_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("t")).unwrap();
        let (_content, _info, g, st) = setup(dir.path(), &[(&["t", "a"], 100)]);
        let parent = rustix::fs::open(
            dir.path().join("t"),
            rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::DIRECTORY,
            rustix::fs::Mode::empty(),
        )
        .unwrap();
        rustix::fs::mknodat(
            &parent,
            "a",
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(
            st.prepare(&none(&g), true),
            Err(StorageError::NotAFile(_))
        ));
        let mut buf = [0u8; 10];
        assert!(matches!(
            st.read(0, &mut buf),
            Err(StorageError::NotAFile(_))
        ));
    }

    /// A file at the torrent's path that btc did not make and whose data
    /// passes no piece check (a torrent named `.bashrc` run in `~`) is
    /// refused, byte for byte untouched; `--overwrite` replaces it.
    #[test]
    fn foreign_file_is_refused_unless_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let (content, info, g, st) = setup(dir.path(), &[(&[".bashrc"], 30_000)]);
        let mine = b"export PATH=$HOME/bin:$PATH\n".repeat(100);
        std::fs::write(dir.path().join(".bashrc"), &mine).unwrap();
        let have = st.check_existing(&g, &info.pieces, 2, &AtomicU32::new(0));
        let err = st.prepare(&have, false).unwrap_err();
        assert!(matches!(&err, StorageError::NotOurs(p) if p == &dir.path().join(".bashrc")));
        assert!(err.to_string().contains("--overwrite"), "{err}");
        assert_eq!(std::fs::read(dir.path().join(".bashrc")).unwrap(), mine);
        // Same length as the torrent's file, other bytes: still refused.
        std::fs::write(dir.path().join(".bashrc"), vec![7u8; 30_000]).unwrap();
        assert!(matches!(
            st.prepare(&have, false),
            Err(StorageError::NotOurs(_))
        ));
        // --overwrite: truncated, sized, and written over.
        std::fs::write(dir.path().join(".bashrc"), vec![7u8; 50_000]).unwrap();
        st.prepare(&have, true).unwrap();
        let on_disk = std::fs::read(dir.path().join(".bashrc")).unwrap();
        assert_eq!(on_disk.len(), 30_000);
        assert!(on_disk.iter().all(|&b| b == 0));
        st.write(0, &content).unwrap();
        assert_eq!(std::fs::read(dir.path().join(".bashrc")).unwrap(), content);
    }

    /// Files btc made itself are resumed without --overwrite: one with a
    /// verified piece, one preallocated and still all zeros (interrupted
    /// before its first piece), an empty one, and one with its first piece
    /// verified but the rest unwritten.
    #[test]
    fn own_partial_files_resume_without_overwrite() {
        let dir = tempfile::tempdir().unwrap();
        let files: &[(&[&str], u64)] = &[
            (&["t", "a"], 40_000),
            (&["t", "b"], 24_000),
            (&["t", "c"], 30_000),
        ];
        let (content, info, g, st) = setup(dir.path(), files);
        st.prepare(&none(&g), false).unwrap();
        st.write(0, &content[..16384]).unwrap();
        st.sync().unwrap();
        drop(st);
        // Run 2: a resumes (verified piece), b and c are btc's zeros.
        let st = Storage::new(dir.path(), &info).unwrap();
        let have = st.check_existing(&g, &info.pieces, 2, &AtomicU32::new(0));
        assert_eq!(have.iter_ones().collect::<Vec<_>>(), vec![0]);
        st.prepare(&have, false).unwrap();
        assert_eq!(
            std::fs::read(dir.path().join("t/a")).unwrap()[..16384],
            content[..16384]
        );
        // An empty file (created, crashed before sizing) is fine too.
        std::fs::write(dir.path().join("t/c"), b"").unwrap();
        st.prepare(&have, false).unwrap();
        assert_eq!(
            std::fs::metadata(dir.path().join("t/c")).unwrap().len(),
            30_000
        );
        // But foreign bytes in b (no verified piece there) are refused.
        std::fs::write(dir.path().join("t/b"), vec![1u8; 24_000]).unwrap();
        assert!(matches!(
            st.prepare(&have, false),
            Err(StorageError::NotOurs(p)) if p == dir.path().join("t/b")
        ));
    }

    /// Zero detection skips holes and reads data extents.
    #[test]
    fn all_zeros_sees_data_in_a_sparse_file() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("f");
        let f = std::fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(true)
            .open(&p)
            .unwrap();
        f.set_len(10 << 20).unwrap();
        assert!(beneath::is_all_zeros(&f, 10 << 20, &p).unwrap());
        f.write_all_at(&[0u8; 5000], 3 << 20).unwrap();
        assert!(beneath::is_all_zeros(&f, 10 << 20, &p).unwrap());
        f.write_all_at(&[9], (7 << 20) + 1).unwrap();
        assert!(!beneath::is_all_zeros(&f, 10 << 20, &p).unwrap());
    }

    /// With more files than handles, every path (check, prepare, write,
    /// read, sync) keeps the cache within its budget, and reads back what
    /// was written.
    #[test]
    fn handle_cache_stays_within_budget() {
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..300).map(|i| format!("f{i:03}")).collect();
        let files: Vec<(Vec<&str>, u64)> = names
            .iter()
            .map(|n| (vec!["t", n.as_str()], 100 + (n.len() as u64)))
            .collect();
        let refs: Vec<(&[&str], u64)> = files.iter().map(|(p, l)| (p.as_slice(), *l)).collect();
        let (content, info, g, st) = setup(dir.path(), &refs);
        st.set_open_files(8);
        let within = |st: &Storage| assert!(st.lock_handles().open.len() <= 8);
        st.check_existing(&g, &info.pieces, 2, &AtomicU32::new(0));
        within(&st);
        st.prepare(&none(&g), false).unwrap();
        within(&st);
        st.write(0, &content).unwrap();
        within(&st);
        st.sync().unwrap();
        assert!(st.lock_handles().dirty.is_empty());
        let mut back = vec![0u8; content.len()];
        st.read(0, &mut back).unwrap();
        within(&st);
        assert!(back == content);
        let have = st.check_existing(&g, &info.pieces, 2, &AtomicU32::new(0));
        assert_eq!(have.count(), g.piece_count as usize);
        within(&st);
    }

    /// The child half of `running_out_of_descriptors_shrinks_and_retries`:
    /// only meaningful in a process of its own, whose descriptor limit it
    /// lowers.
    #[test]
    #[ignore = "run by running_out_of_descriptors_shrinks_and_retries in a child process"]
    fn fd_starved_child() {
        use rustix::process::{Resource, getrlimit, setrlimit};
        if std::env::var_os("BTC_FD_STARVED_CHILD").is_none() {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let names: Vec<String> = (0..60).map(|i| format!("f{i:02}")).collect();
        let files: Vec<(Vec<&str>, u64)> = names
            .iter()
            .map(|n| (vec!["t", "d", n.as_str()], 3000))
            .collect();
        let refs: Vec<(&[&str], u64)> = files.iter().map(|(p, l)| (p.as_slice(), *l)).collect();
        let (content, info, g, st) = setup(dir.path(), &refs);
        // A budget far above what the limit allows: only the reactive path
        // (EMFILE -> close handles -> retry) can keep this working.
        st.set_open_files(1000);
        let open_now = std::fs::read_dir("/proc/self/fd").unwrap().count() as u64;
        let old = getrlimit(Resource::Nofile);
        let mut low = old;
        low.current = Some(open_now + 5);
        setrlimit(Resource::Nofile, low).unwrap();
        let r = (|| -> Result<(Bitfield, Vec<u8>), StorageError> {
            st.prepare(&none(&g), false)?;
            st.write(0, &content)?;
            st.sync()?;
            let mut back = vec![0u8; content.len()];
            st.read(0, &mut back)?;
            let have = st.check_existing(&g, &info.pieces, 2, &AtomicU32::new(0));
            Ok((have, back))
        })();
        let cap = st.lock_handles().cap;
        drop(st);
        setrlimit(Resource::Nofile, old).unwrap();
        let (have, back) = r.unwrap();
        assert!(back == content);
        assert_eq!(have.count(), g.piece_count as usize);
        assert!(cap < 10, "the cache did not shrink: cap {cap}");
        println!("fd-starved-child-ok cap={cap}");
    }

    /// Running out of descriptors (EMFILE) shrinks the handle cache and
    /// retries: prepare, write, sync, read and check all succeed in a
    /// process allowed only 5 descriptors more than it had.
    #[test]
    fn running_out_of_descriptors_shrinks_and_retries() {
        let exe = std::env::current_exe().unwrap();
        let out = std::process::Command::new(exe)
            .args([
                "--exact",
                "storage::disk::tests::fd_starved_child",
                "--ignored",
                "--nocapture",
                "--test-threads",
                "1",
            ])
            .env("BTC_FD_STARVED_CHILD", "1")
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success() && stdout.contains("fd-starved-child-ok"),
            "child failed: {}\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
