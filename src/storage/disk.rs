//! Blocking file I/O for one torrent: positioned reads and writes across the
//! torrent's files, piece verification, and the start-up check of existing
//! data.
//!
//! Deliberately synchronous: callers run it on tokio's blocking pool. Positioned
//! `pread`/`pwrite` on shared handles let several blocking threads work on
//! one torrent without a lock around the I/O, and the page cache does the
//! buffering a userspace cache would duplicate; written data is handed to
//! the disk at once and leaves the cache once 32 MiB newer data follows it
//! ([`super::writeback`]). Knows nothing of peers or sessions.

use super::beneath::{self, Access, Target};
use super::layout::Layout;
use super::writeback::{FileRange, WRITE_BEHIND_BUDGET, WriteBehind};
use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::metainfo::Info;
use crate::resume::FileStamp;
use sha1::{Digest, Sha1};
use std::collections::HashMap;
use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

mod handles;
use handles::{Handles, open_files_ceiling};

/// Bytes read per `pread` when hashing data already on disk (the start-up
/// check here, `btc create` too). Measured on a 2 GiB file in the page
/// cache (2 cores, SHA-NI): reads of 16-64 KiB cost ~0.25 s of system time
/// in all, reads of 128 KiB or more ~0.9 s, because the copy out of the
/// page cache then no longer lands in a buffer the core's L2 still holds
/// when SHA-1 reads it back. Each piece is hashed chunk by chunk.
pub const HASH_READ_CHUNK: usize = 64 * 1024;

/// `POSIX_FADV_DONTNEED` on a range: starts the writeback of its dirty
/// pages and drops its clean ones. Advice only, so a failure (a filesystem
/// that does not take it) is ignored: the kernel then caches as usual.
fn advise_dont_need(f: &File, offset: u64, len: u64) {
    if let Some(len) = std::num::NonZeroU64::new(len) {
        let _ = rustix::fs::fadvise(f, offset, Some(len), rustix::fs::Advice::DontNeed);
    }
}

/// Buffers per `pwritev` of [`Storage::write_run`] (Linux's `IOV_MAX`).
pub const MAX_IOVECS: usize = 1024;

/// Writes all of `bufs`, one after the other, at `offset` of `f`: one
/// `pwritev` per [`MAX_IOVECS`] buffers, continued after a short write.
fn write_all_vectored_at(f: &File, bufs: &[&[u8]], mut offset: u64) -> std::io::Result<()> {
    use std::io::IoSlice;
    // The first buffer not yet written whole, and how much of it was.
    let (mut first, mut done) = (0, 0);
    while first < bufs.len() {
        let slices: Vec<IoSlice<'_>> = bufs[first..]
            .iter()
            .take(MAX_IOVECS)
            .enumerate()
            .map(|(k, b)| IoSlice::new(if k == 0 { &b[done..] } else { b }))
            .collect();
        let mut n = match rustix::io::pwritev(f, &slices, offset) {
            Ok(0) if slices.iter().any(|s| !s.is_empty()) => {
                return Err(std::io::ErrorKind::WriteZero.into());
            }
            Ok(n) => n,
            Err(rustix::io::Errno::INTR) => continue,
            Err(e) => return Err(e.into()),
        };
        offset += n as u64;
        // Skip what was written: whole buffers, then part of one.
        while first < bufs.len() && n >= bufs[first].len() - done {
            n -= bufs[first].len() - done;
            first += 1;
            done = 0;
        }
        done += n;
    }
    Ok(())
}

/// Files flushed at once by [`Storage::sync`].
const SYNC_THREADS: usize = 8;

/// Pieces each extra hashing thread of [`Storage::check_existing`] is
/// worth: fewer are hashed on the calling thread alone.
const SMALL_CHECK_PIECES: usize = 4;

/// When the process runs out of descriptors (`EMFILE`/`ENFILE`) and the
/// cache has nothing left to close, an open is retried every
/// [`FD_RETRY_PAUSE`] for this long in total (sockets come and go) before
/// the error is returned.
const FD_RETRY_TOTAL: Duration = Duration::from_secs(60);

/// Pause between two tries of an open that ran out of descriptors.
const FD_RETRY_PAUSE: Duration = Duration::from_millis(50);

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
    /// Not selected for download: never created; what of it falls in a
    /// piece shared with a selected file lives in the parts file.
    skip: bool,
    /// BEP 47 `x`: made executable.
    executable: bool,
    /// BEP 47 `l`: a symlink, no data of its own (never a regular file).
    symlink: bool,
    /// Its text (relative, within the torrent's folder); `None` when the
    /// target leaves the folder and the link is not made.
    link: Option<String>,
}

/// The text of a BEP 47 symlink at `path` (the torrent's name first) to
/// `target` (relative to the torrent's folder, `..` going up): relative,
/// so the folder can be moved. `None` when the target leaves the
/// torrent's folder (or is the folder itself), or for a single-file
/// torrent, which has no folder to point into.
pub(crate) fn link_text(path: &[String], target: &[String]) -> Option<String> {
    if path.len() < 2 {
        return None;
    }
    let mut resolved: Vec<&str> = Vec::new();
    for c in target {
        match c.as_str() {
            ".." => {
                resolved.pop()?;
            }
            c if is_plain_name(c) => resolved.push(c),
            _ => return None,
        }
    }
    if resolved.is_empty() {
        return None;
    }
    // Up from the link's folder to the torrent's folder, then down.
    let mut text = "../".repeat(path.len() - 2);
    text.push_str(&resolved.join("/"));
    Some(text)
}

/// Whether `c` is one plain path component (no `/`, `..`, `.` or root).
fn is_plain_name(c: &str) -> bool {
    let mut it = Path::new(c).components();
    matches!(it.next(), Some(Component::Normal(_))) && it.next().is_none()
}

/// Adds execute permission wherever there is read permission (`chmod +x`
/// under the usual umask), for BEP 47 `x` files.
fn make_executable(file: &File, path: &Path) -> Result<(), StorageError> {
    use std::os::unix::fs::PermissionsExt;
    let io = |error| StorageError::Io {
        op: "making executable",
        path: path.to_path_buf(),
        error,
    };
    let mode = file.metadata().map_err(io)?.permissions().mode();
    let with_x = mode | ((mode & 0o444) >> 2);
    if with_x != mode {
        file.set_permissions(std::fs::Permissions::from_mode(with_x))
            .map_err(io)?;
    }
    Ok(())
}

/// The files of one torrent under one output folder.
///
/// Every path below the output folder is opened without following
/// symlinks (see `super::beneath`). File handles are a budget: at most
/// `min(128, ulimit -n / 4)` stay open, and running out of descriptors
/// anyway shrinks that budget and retries instead of failing.
pub struct Storage {
    root: PathBuf,
    /// The torrent's files, then (with a file selection) the parts file.
    files: Vec<FileSlot>,
    /// How many of `files` are the torrent's.
    torrent_files: usize,
    /// Piece -> slot in the parts file, for pieces shared by a selected and
    /// an unselected file (see [`Storage::select`]).
    parts_slots: HashMap<u32, u64>,
    layout: Layout,
    piece_length: u64,
    handles: Mutex<Handles>,
    /// Serializes writes. Concurrent `pwrite`s to one file make the kernel
    /// spin on the inode lock (measured: ~11% of a 1 GiB download's CPU);
    /// waiting here sleeps instead, and one writer keeps the disk as busy.
    write_lock: Mutex<()>,
    /// Written ranges still cached (see [`super::writeback`]).
    write_behind: Mutex<WriteBehind>,
    /// The out-of-descriptors warning was printed.
    warned_fds: AtomicBool,
}

impl Storage {
    /// Maps the torrent's files under `root`. Touches nothing on disk.
    pub fn new(root: &Path, info: &Info) -> Result<Self, StorageError> {
        let mut files = Vec::with_capacity(info.files.len());
        let mut offset = 0u64;
        for f in &info.files {
            let mut path = root.to_path_buf();
            for c in &f.path {
                if !is_plain_name(c) {
                    return Err(StorageError::UnsafePath(root.join(c)));
                }
                path.push(c);
            }
            if f.path.is_empty() {
                return Err(StorageError::UnsafePath(path));
            }
            let link = f.attr.symlink.as_ref().and_then(|target| {
                let text = link_text(&f.path, target);
                if text.is_none() {
                    tracing::warn!(
                        "not creating the symlink {}: its target {} is outside the torrent's folder",
                        path.display(),
                        target.join("/")
                    );
                }
                text
            });
            files.push(FileSlot {
                parts: f.path.clone(),
                path,
                offset,
                length: f.length,
                pad: f.pad,
                skip: false,
                executable: f.attr.executable,
                symlink: f.attr.symlink.is_some(),
                link,
            });
            offset = offset.saturating_add(f.length);
        }
        let layout = Layout::new(info.files.iter().map(|f| f.length));
        Ok(Storage {
            root: root.to_path_buf(),
            torrent_files: files.len(),
            parts_slots: HashMap::new(),
            files,
            layout,
            piece_length: u64::from(info.piece_length).max(1),
            handles: Mutex::new(Handles::new(open_files_ceiling())),
            write_lock: Mutex::new(()),
            write_behind: Mutex::new(WriteBehind::new(WRITE_BEHIND_BUDGET)),
            warned_fds: AtomicBool::new(false),
        })
    }

    /// Downloads only the files where `selected` is true (torrent order,
    /// pad files included). Unselected files are never created. A piece
    /// that straddles a selected and an unselected file still has to be
    /// whole to be verified and served, so the unselected part of it is
    /// kept in one hidden file, `parts_name` in the output folder, a piece
    /// slot each. Call before any I/O.
    pub fn select(&mut self, selected: &[bool], parts_name: &str) {
        let n = self.torrent_files;
        for (f, sel) in self.files.iter_mut().take(n).zip(selected) {
            f.skip = !f.pad && !*sel;
        }
        let pl = self.piece_length;
        let mut touches: HashMap<u64, (bool, bool)> = HashMap::new();
        for f in self.files.iter().take(n).filter(|f| !f.pad && f.length > 0) {
            // Only a file's first and last piece can hold another file's
            // bytes: the pieces between are its own, however many.
            let (first, last) = (f.offset / pl, (f.offset + f.length - 1) / pl);
            for p in [first, last] {
                let t = touches.entry(p).or_default();
                if f.skip {
                    t.1 = true;
                } else {
                    t.0 = true;
                }
            }
        }
        let mut shared: Vec<u64> = touches
            .into_iter()
            .filter(|(_, (sel, skip))| *sel && *skip)
            .map(|(p, _)| p)
            .collect();
        shared.sort_unstable();
        self.parts_slots = shared
            .iter()
            .enumerate()
            .filter_map(|(k, p)| Some((u32::try_from(*p).ok()?, k as u64)))
            .collect();
        self.files.truncate(n);
        if !self.parts_slots.is_empty() {
            self.files.push(FileSlot {
                parts: vec![parts_name.to_string()],
                path: self.root.join(parts_name),
                offset: 0,
                length: self.parts_slots.len() as u64 * pl,
                pad: false,
                skip: false,
                executable: false,
                symlink: false,
                link: None,
            });
        }
    }

    /// Where the unselected bytes at content offset `global..+len` live in
    /// the parts file: (parts offset, offset into the caller's buffer, length).
    fn parts_spans(
        &self,
        global: u64,
        len: usize,
    ) -> Result<Vec<(u64, usize, usize)>, StorageError> {
        let pl = self.piece_length;
        let mut out = Vec::new();
        let mut done = 0usize;
        while done < len {
            let g = global + done as u64;
            let piece = g / pl;
            let n = ((piece + 1) * pl - g).min((len - done) as u64) as usize;
            let slot = u32::try_from(piece)
                .ok()
                .and_then(|p| self.parts_slots.get(&p))
                .ok_or_else(|| StorageError::Io {
                    op: "mapping",
                    path: self.root.clone(),
                    error: std::io::Error::other(format!("piece {piece} has no parts slot")),
                })?;
            out.push((slot * pl + (g - piece * pl), done, n));
            done += n;
        }
        Ok(out)
    }

    /// Overrides the handle budget (tests exercise eviction and running
    /// out of descriptors with it).
    #[cfg(test)]
    fn set_open_files(&self, n: usize) {
        let mut h = self.lock_handles();
        h.ceiling = n.max(1);
        h.cap = n.max(1);
    }

    /// Closes every cached handle (a read or write reopens what it needs).
    /// An idle torrent keeps no descriptor: 50,000 seeding torrents must
    /// not hold 50,000 files open. Files written since the last
    /// [`Storage::sync`] stay on its list and are reopened to be flushed.
    pub fn close_files(&self) {
        let closed = std::mem::take(&mut self.lock_handles().open);
        drop(closed);
    }

    /// Files open in the handle cache now.
    pub fn open_files(&self) -> usize {
        self.lock_handles().open.len()
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
        let n = self.torrent_files;
        let mut replace = vec![false; n];
        let mut whole = vec![false; n];
        // Complete: nothing will be written, so files already at their
        // size are not opened for writing (a seedbox starting 50,000
        // torrents skips 50,000 opens).
        let complete = have.is_full();
        for (i, f) in self.files.iter().enumerate().take(n) {
            if f.pad || f.skip || f.length == 0 {
                continue;
            }
            let Some(len) = self.file_len(i)? else {
                continue;
            };
            whole[i] = complete && len == f.length;
            if !self.is_ours(i, len, have)? {
                if !overwrite {
                    return Err(StorageError::NotOurs(f.path.clone()));
                }
                replace[i] = true;
            }
        }
        for (i, f) in self.files.iter().enumerate().take(n) {
            if let Some(link) = f.link.as_deref().filter(|_| !f.skip) {
                beneath::make_symlink(self.target(i), link)?;
            }
        }
        for (i, f) in self
            .files
            .iter()
            .enumerate()
            .take(n)
            .filter(|(i, f)| f.executable && !f.pad && !f.skip && !f.symlink && whole[*i])
        {
            make_executable(&*self.handle(i, false)?, &f.path)?;
        }
        for (i, f) in self
            .files
            .iter()
            .enumerate()
            .take(n)
            .filter(|(i, f)| !f.pad && !f.skip && !f.symlink && (!whole[*i] || replace[*i]))
        {
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
            if f.executable {
                make_executable(&file, &f.path)?;
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
        self.write_locked(offset, data)
    }

    /// Writes `bufs`, which follow one another, from content offset
    /// `offset`: as [`Storage::write`] of each, but a run that falls in one
    /// file is one `pwritev` (at most [`MAX_IOVECS`] buffers a call), so
    /// small pieces cost a system call, a lock and a writeback hint per
    /// run rather than per piece.
    pub fn write_run(&self, offset: u64, bufs: &[&[u8]]) -> Result<(), StorageError> {
        let _one_writer = self.write_lock.lock().unwrap_or_else(|e| e.into_inner());
        let total: usize = bufs.iter().map(|b| b.len()).sum();
        let spans = self.layout.spans(offset, total);
        let plain = match spans.as_slice() {
            [s] if s.len == total && !self.files[s.file].pad && !self.files[s.file].skip => Some(s),
            _ => None,
        };
        let Some(s) = plain else {
            let mut at = offset;
            for b in bufs {
                self.write_locked(at, b)?;
                at += b.len() as u64;
            }
            return Ok(());
        };
        let f = self.handle(s.file, true)?;
        write_all_vectored_at(&f, bufs, s.file_offset).map_err(|error| StorageError::Io {
            op: "writing",
            path: self.files[s.file].path.clone(),
            error,
        })?;
        self.lock_handles().dirty.insert(s.file);
        self.write_behind(&f, s.file, s.file_offset, total as u64);
        Ok(())
    }

    /// [`Storage::write`] with the write lock held.
    fn write_locked(&self, offset: u64, data: &[u8]) -> Result<(), StorageError> {
        for s in self.layout.spans(offset, data.len()) {
            if self.files[s.file].pad {
                continue;
            }
            if self.files[s.file].skip {
                let parts = self.torrent_files;
                let global = self.files[s.file].offset + s.file_offset;
                let f = self.handle(parts, true)?;
                for (at, rel, n) in self.parts_spans(global, s.len)? {
                    let from = s.buf_offset + rel;
                    f.write_all_at(&data[from..from + n], at).map_err(|error| {
                        StorageError::Io {
                            op: "writing",
                            path: self.files[parts].path.clone(),
                            error,
                        }
                    })?;
                }
                self.lock_handles().dirty.insert(parts);
                continue;
            }
            let f = self.handle(s.file, true)?;
            f.write_all_at(&data[s.buf_offset..s.buf_offset + s.len], s.file_offset)
                .map_err(|error| StorageError::Io {
                    op: "writing",
                    path: self.files[s.file].path.clone(),
                    error,
                })?;
            // Marked after the write: a `sync` running meanwhile may have
            // taken the mark already, and resume data saved after this
            // write relies on the next `sync` flushing it.
            self.lock_handles().dirty.insert(s.file);
            self.write_behind(&f, s.file, s.file_offset, s.len as u64);
        }
        Ok(())
    }

    /// Starts the writeback of a range just written to file `i` (through
    /// `f`) and drops from the page cache the ranges that aged out of the
    /// write-behind window, when their file is still open (a closed one is
    /// left to the kernel). See [`super::writeback`].
    fn write_behind(&self, f: &File, i: usize, offset: u64, len: u64) {
        let advice = self
            .write_behind
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .written(FileRange {
                file: i,
                offset,
                len,
            });
        for r in advice.start.into_iter().chain(advice.drop) {
            if r.file == i {
                advise_dont_need(f, r.offset, r.len);
                continue;
            }
            let open = self
                .lock_handles()
                .open
                .get(&r.file)
                .map(|h| h.file.clone());
            if let Some(h) = open {
                advise_dont_need(&h, r.offset, r.len);
            }
        }
    }

    /// Fills `buf` from content offset `offset`; pad files read as zeros.
    pub fn read(&self, offset: u64, buf: &mut [u8]) -> Result<(), StorageError> {
        for s in self.layout.spans(offset, buf.len()) {
            if self.files[s.file].pad {
                buf[s.buf_offset..s.buf_offset + s.len].fill(0);
                continue;
            }
            if self.files[s.file].skip {
                let parts = self.torrent_files;
                let global = self.files[s.file].offset + s.file_offset;
                let f = self.handle(parts, false)?;
                for (at, rel, n) in self.parts_spans(global, s.len)? {
                    let from = s.buf_offset + rel;
                    f.read_exact_at(&mut buf[from..from + n], at)
                        .map_err(|error| StorageError::Io {
                            op: "reading",
                            path: self.files[parts].path.clone(),
                            error,
                        })?;
                }
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

    /// SHA-1 of the `len` content bytes at `offset`, read through `buf`
    /// a chunk at a time (see [`HASH_READ_CHUNK`]).
    fn hash_range(
        &self,
        offset: u64,
        len: usize,
        buf: &mut [u8],
    ) -> Result<[u8; 20], StorageError> {
        let mut hasher = Sha1::new();
        let mut done = 0;
        while done < len {
            let n = buf.len().min(len - done);
            self.read(offset + done as u64, &mut buf[..n])?;
            hasher.update(&buf[..n]);
            done += n;
        }
        Ok(hasher.finalize().into())
    }

    /// Whether every file touched by `[offset, offset+len)` exists at full length;
    /// lets the start-up check skip reading pieces that cannot be there.
    fn range_present(&self, offset: u64, len: usize, sizes: &[Option<u64>]) -> bool {
        self.layout.spans(offset, len).iter().all(|s| {
            self.files[s.file].pad
                || self.files[s.file].skip
                || sizes[s.file].is_some_and(|l| l >= s.file_offset + s.len as u64)
        })
    }

    /// Flushes written data to the disk: every file written since the last
    /// flush, through its cached handle or, if that was closed since (more
    /// files than handles), by opening it again for the flush. Files are
    /// flushed one by one (`fdatasync`), never the whole filesystem: other
    /// programs' pending writes are not ours to wait for. Up to
    /// `SYNC_THREADS` flushes run at once, so a torrent of thousands of
    /// small files does not wait for each journal commit in turn (the
    /// filesystem batches concurrent ones). A file that fails to flush
    /// stays marked for the next call.
    pub fn sync(&self) -> Result<(), StorageError> {
        let mut dirty: Vec<usize> = {
            let mut h = self.lock_handles();
            h.dirty.drain().collect()
        };
        dirty.sort_unstable();
        let next = std::sync::atomic::AtomicUsize::new(0);
        let failed: Mutex<Vec<(usize, StorageError)>> = Mutex::new(Vec::new());
        let threads = SYNC_THREADS.min(dirty.len());
        std::thread::scope(|scope| {
            for _ in 0..threads {
                scope.spawn(|| {
                    loop {
                        let n = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                        let Some(&i) = dirty.get(n) else { break };
                        if let Err(e) = self.sync_one(i) {
                            failed
                                .lock()
                                .unwrap_or_else(|p| p.into_inner())
                                .push((i, e));
                        }
                    }
                });
            }
        });
        let failed = failed.into_inner().unwrap_or_else(|p| p.into_inner());
        let mut first = None;
        for (i, e) in failed {
            self.lock_handles().dirty.insert(i);
            first.get_or_insert(e);
        }
        first.map_or(Ok(()), Err)
    }

    fn sync_one(&self, i: usize) -> Result<(), StorageError> {
        let cached = self.lock_handles().open.get(&i).map(|f| f.file.clone());
        match cached {
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
        })
    }

    /// Size and modification time of every file, in torrent order: `None`
    /// for pad files and files that are missing or cannot be examined.
    /// For resume data (see [`crate::resume`]).
    pub fn stamps(&self) -> Vec<Option<FileStamp>> {
        (0..self.torrent_files)
            .map(|i| {
                if self.files[i].pad || self.files[i].skip || self.files[i].symlink {
                    return None;
                }
                self.retry_fds(|_| beneath::file_stamp(self.target(i)))
                    .ok()
                    .flatten()
            })
            .collect()
    }

    /// Checks which of the pieces in `check` are on disk and match their
    /// hashes, on `threads` threads; pieces outside `check` are neither
    /// read nor reported (resume data vouches for them). `progress` is
    /// bumped once per piece, checked or not. Missing or short files simply
    /// count as missing pieces, and so do files behind a symlink
    /// ([`Storage::prepare`] then refuses them).
    pub fn check_existing(
        &self,
        geometry: &Geometry,
        info: &crate::metainfo::Info,
        check: &Bitfield,
        threads: usize,
        progress: &AtomicU32,
    ) -> Bitfield {
        let sizes: Vec<Option<u64>> = (0..self.torrent_files)
            .map(|i| {
                if self.files[i].pad || self.files[i].skip || self.files[i].symlink {
                    None
                } else {
                    self.file_len(i).ok().flatten()
                }
            })
            .collect();
        let n = geometry.piece_count;
        let mut have = Bitfield::new(n as usize);
        if sizes.iter().all(|s| s.is_none()) || check.count() == 0 {
            progress.store(n, Ordering::Relaxed);
            return have;
        }
        let skipped = (0..n as usize).filter(|&i| !check.get(i)).count();
        progress.fetch_add(u32::try_from(skipped).unwrap_or(n), Ordering::Relaxed);
        let next = AtomicU32::new(0);
        let work = || {
            let mut good = Vec::new();
            let mut buf = vec![0u8; HASH_READ_CHUNK];
            // A v2 merkle check needs the piece whole: read into this one,
            // grown on first use.
            let mut piece = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= n {
                    break;
                }
                if !check.get(i as usize) {
                    continue;
                }
                let len = geometry.piece_len(i) as usize;
                let off = geometry.piece_offset(i);
                let mut matches = || match &info.v2_pieces {
                    None => self
                        .hash_range(off, len, &mut buf)
                        .is_ok_and(|h| info.pieces.get(i as usize) == Some(&h)),
                    Some(_) => {
                        piece.resize(len, 0);
                        self.read(off, &mut piece).is_ok() && info.piece_matches(i as usize, &piece)
                    }
                };
                if self.range_present(off, len, &sizes) && matches() {
                    good.push(i);
                }
                progress.fetch_add(1, Ordering::Relaxed);
            }
            good
        };
        // A few pieces are hashed on the calling thread: a thread per core
        // for each of 50,000 one-piece torrents is 100,000 thread starts.
        let threads = threads.clamp(1, check.count().div_ceil(SMALL_CHECK_PIECES));
        let results: Vec<Vec<u32>> = if threads == 1 {
            vec![work()]
        } else {
            std::thread::scope(|scope| {
                let workers: Vec<_> = (0..threads).map(|_| scope.spawn(work)).collect();
                workers
                    .into_iter()
                    .map(|w| w.join().unwrap_or_default())
                    .collect()
            })
        };
        for i in results.into_iter().flatten() {
            have.set(i as usize);
        }
        have
    }
}

#[cfg(test)]
mod tests;
