//! Opening a torrent's files strictly below the output folder.
//!
//! The output folder (`-o`) is the user's choice and is opened like any
//! path, following a symlink if it is one: `-o ~/dl` where `~/dl` links
//! to a bigger disk is a normal setup. Everything *below* it comes from
//! the torrent, and there no symlink is ever followed: each folder is
//! opened relative to its parent with `O_NOFOLLOW | O_DIRECTORY`
//! (`openat`), and the file itself with `O_NOFOLLOW`. A symlink anywhere
//! on the way, say `~/.config` when a torrent holds `.config/autostart/x`
//! and is downloaded into `~`, is refused with [`StorageError::Symlink`]
//! naming it, and nothing is written through it. Walking by descriptors
//! instead of checking paths first also closes the race where a folder is
//! swapped for a symlink between the check and the open.
//!
//! Files are opened `O_NONBLOCK` so a FIFO planted at a file's path cannot
//! hang the open; anything that is not a regular file is then refused
//! with [`StorageError::NotAFile`]. A walk holds at most two descriptors
//! at a time and closes them before returning.

use super::disk::StorageError;
use crate::resume::FileStamp;
use rustix::fs::{AtFlags, FileType, Mode, OFlags};
use rustix::io::Errno;
use std::fs::File;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};

/// One torrent file: the output folder, the torrent's path components
/// below it (at least one, each a plain name) and the joined path for
/// messages.
#[derive(Clone, Copy)]
pub(super) struct Target<'a> {
    pub root: &'a Path,
    pub parts: &'a [String],
    pub path: &'a Path,
}

/// How a file is opened.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Access {
    /// Read only; the file must exist.
    Read,
    /// Read and write, creating the file and its folders as needed. Never
    /// truncates.
    Write,
}

const DIR_FLAGS: OFlags = OFlags::RDONLY
    .union(OFlags::DIRECTORY)
    .union(OFlags::NOFOLLOW)
    .union(OFlags::CLOEXEC);

fn io_err(op: &'static str, path: &Path, e: Errno) -> StorageError {
    StorageError::Io {
        op,
        path: path.to_path_buf(),
        error: e.into(),
    }
}

/// Turns a failed `openat` of `name` in `dir` into the error to show: a
/// symlink is named as such, anything else is the OS error.
fn classify(dir: &OwnedFd, name: &str, path: &Path, op: &'static str, e: Errno) -> StorageError {
    if matches!(e, Errno::LOOP | Errno::NOTDIR | Errno::MLINK)
        && let Ok(st) = rustix::fs::statat(dir, name, AtFlags::SYMLINK_NOFOLLOW)
        && FileType::from_raw_mode(st.st_mode) == FileType::Symlink
    {
        return StorageError::Symlink(path.to_path_buf());
    }
    io_err(op, path, e)
}

/// The output folder itself (symlinks followed: it is the user's own
/// path). `None` when it does not exist and `create` is false.
pub(super) fn open_root(root: &Path, create: bool) -> Result<Option<OwnedFd>, StorageError> {
    let flags = OFlags::RDONLY | OFlags::DIRECTORY | OFlags::CLOEXEC;
    match rustix::fs::open(root, flags, Mode::empty()) {
        Ok(fd) => Ok(Some(fd)),
        Err(Errno::NOENT) if create => {
            std::fs::create_dir_all(root).map_err(|error| StorageError::Io {
                op: "creating folder",
                path: root.to_path_buf(),
                error,
            })?;
            rustix::fs::open(root, flags, Mode::empty())
                .map(Some)
                .map_err(|e| io_err("opening folder", root, e))
        }
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err("opening folder", root, e)),
    }
}

/// The folder that holds `t`'s file, walked from the root without
/// following symlinks; created on the way when `create`. `None` when a
/// folder is missing and `create` is false.
fn open_parent(t: Target<'_>, create: bool) -> Result<Option<OwnedFd>, StorageError> {
    let Some(mut dir) = open_root(t.root, create)? else {
        return Ok(None);
    };
    let mut path: PathBuf = t.root.to_path_buf();
    let folders = t.parts.len().saturating_sub(1);
    for name in &t.parts[..folders] {
        path.push(name);
        let next = match rustix::fs::openat(&dir, name.as_str(), DIR_FLAGS, Mode::empty()) {
            Ok(fd) => fd,
            Err(Errno::NOENT) if create => {
                match rustix::fs::mkdirat(&dir, name.as_str(), Mode::from_raw_mode(0o777)) {
                    Ok(()) | Err(Errno::EXIST) => {}
                    Err(e) => return Err(io_err("creating folder", &path, e)),
                }
                rustix::fs::openat(&dir, name.as_str(), DIR_FLAGS, Mode::empty())
                    .map_err(|e| classify(&dir, name, &path, "opening folder", e))?
            }
            Err(Errno::NOENT) => return Ok(None),
            Err(e) => return Err(classify(&dir, name, &path, "opening folder", e)),
        };
        dir = next;
    }
    Ok(Some(dir))
}

fn file_name<'a>(t: Target<'a>) -> Result<&'a str, StorageError> {
    t.parts
        .last()
        .map(String::as_str)
        .ok_or_else(|| StorageError::UnsafePath(t.path.to_path_buf()))
}

/// Opens `t`'s file below the root; see the module doc for what is refused.
pub(super) fn open_file(t: Target<'_>, access: Access) -> Result<File, StorageError> {
    let name = file_name(t)?;
    let write = access == Access::Write;
    let Some(dir) = open_parent(t, write)? else {
        return Err(io_err("opening", t.path, Errno::NOENT));
    };
    let flags = OFlags::NOFOLLOW
        | OFlags::CLOEXEC
        | OFlags::NONBLOCK
        | if write {
            OFlags::RDWR | OFlags::CREATE
        } else {
            OFlags::RDONLY
        };
    let fd = rustix::fs::openat(&dir, name, flags, Mode::from_raw_mode(0o666))
        .map_err(|e| classify(&dir, name, t.path, "opening", e))?;
    let st = rustix::fs::fstat(&fd).map_err(|e| io_err("examining", t.path, e))?;
    if FileType::from_raw_mode(st.st_mode) != FileType::RegularFile {
        return Err(StorageError::NotAFile(t.path.to_path_buf()));
    }
    Ok(File::from(fd))
}

/// Makes `t` a symlink whose text is `link` (a relative path the caller
/// built from checked components), folders created on the way. One that
/// is already there with that text is left alone; anything else in the
/// way is refused ([`StorageError::NotAFile`]).
pub(super) fn make_symlink(t: Target<'_>, link: &str) -> Result<(), StorageError> {
    let name = file_name(t)?;
    let Some(dir) = open_parent(t, true)? else {
        return Err(io_err("creating the symlink", t.path, Errno::NOENT));
    };
    match rustix::fs::symlinkat(link, &dir, name) {
        Ok(()) => Ok(()),
        Err(Errno::EXIST) => match rustix::fs::readlinkat(&dir, name, Vec::new()) {
            Ok(text) if text.as_bytes() == link.as_bytes() => Ok(()),
            _ => Err(StorageError::NotAFile(t.path.to_path_buf())),
        },
        Err(e) => Err(io_err("creating the symlink", t.path, e)),
    }
}

/// The length of `t`'s file, `None` if it (or a folder above it) does not
/// exist. Symlinks and non-files are errors, as for [`open_file`].
pub(super) fn file_len(t: Target<'_>) -> Result<Option<u64>, StorageError> {
    Ok(file_stamp(t)?.map(|s| s.size))
}

/// Size and modification time of the regular file at `t`, `None` if it
/// does not exist; errors like [`file_len`].
pub(super) fn file_stamp(t: Target<'_>) -> Result<Option<FileStamp>, StorageError> {
    let name = file_name(t)?;
    let Some(dir) = open_parent(t, false)? else {
        return Ok(None);
    };
    match rustix::fs::statat(&dir, name, AtFlags::SYMLINK_NOFOLLOW) {
        Ok(st) => match FileType::from_raw_mode(st.st_mode) {
            FileType::RegularFile => {
                let ns = i128::from(st.st_mtime) * 1_000_000_000 + i128::from(st.st_mtime_nsec);
                Ok(Some(FileStamp {
                    size: u64::try_from(st.st_size).unwrap_or(0),
                    mtime_ns: i64::try_from(ns).unwrap_or(i64::MAX),
                }))
            }
            FileType::Symlink => Err(StorageError::Symlink(t.path.to_path_buf())),
            _ => Err(StorageError::NotAFile(t.path.to_path_buf())),
        },
        Err(Errno::NOENT) => Ok(None),
        Err(e) => Err(io_err("examining", t.path, e)),
    }
}

/// Whether every byte of `file` (of length `len`) is zero. Holes are
/// skipped with `SEEK_DATA`/`SEEK_HOLE` where the filesystem supports
/// them, so a sparse file costs almost nothing; data extents are read.
pub(super) fn is_all_zeros(file: &File, len: u64, path: &Path) -> Result<bool, StorageError> {
    use rustix::fs::SeekFrom;
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; 64 * 1024];
    let mut pos = 0u64;
    while pos < len {
        // Where the next data starts, and where it ends.
        let (start, end) = match rustix::fs::seek(file, SeekFrom::Data(pos)) {
            Ok(d) => (d, rustix::fs::seek(file, SeekFrom::Hole(d)).unwrap_or(len)),
            // No data after `pos`: the rest is a hole.
            Err(Errno::NXIO) => return Ok(true),
            // No SEEK_DATA here: read everything.
            Err(_) => (pos, len),
        };
        let end = end.min(len);
        let mut at = start;
        while at < end {
            let n = (end - at).min(buf.len() as u64) as usize;
            let got = file
                .read_at(&mut buf[..n], at)
                .map_err(|error| StorageError::Io {
                    op: "reading",
                    path: path.to_path_buf(),
                    error,
                })?;
            if got == 0 {
                return Ok(true);
            }
            if buf[..got].iter().any(|&b| b != 0) {
                return Ok(false);
            }
            at += got as u64;
        }
        pos = end.max(start + 1);
    }
    Ok(true)
}
