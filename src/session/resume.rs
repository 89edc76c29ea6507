//! Resume data on disk: where it lives, reading it at start, and saving it
//! while the torrent runs and at exit. The format and the rule for which
//! pieces it vouches for are in [`crate::resume`].
//!
//! Saving takes the set of verified pieces *first*, then flushes the files
//! and reads their sizes and times, then writes `NAME.PID.tmp` beside the
//! final file, flushes it and renames it over: a crash at any point leaves
//! the old data or the new, and every piece the data names was on disk
//! (and flushed) before the times it is checked against were read. All of
//! it runs on the blocking pool; a failed save is a warning, never an
//! error (the next start just hashes more).

use super::shared::{Shared, TorrentData};
use crate::bitfield::Bitfield;
use crate::id::InfoHash;
use crate::resume::{self, Expect, ResumeData, ResumeError};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// Saves are at least this far apart while pieces keep arriving.
pub const SAVE_INTERVAL: Duration = Duration::from_secs(5);

/// Where the resume data of `ih` is kept under the state folder.
pub fn path(state_dir: &Path, ih: InfoHash) -> PathBuf {
    state_dir
        .join("resume")
        .join(format!("{}.resume", ih.to_hex()))
}

/// The output folder as recorded in resume data: absolute, symlinks
/// resolved when it exists, so `-o dl` and `-o ./dl/` are the same folder.
pub fn output_key(output: &Path) -> PathBuf {
    std::fs::canonicalize(output)
        .or_else(|_| std::path::absolute(output))
        .unwrap_or_else(|_| output.to_path_buf())
}

/// Why resume data was not used (said in an info line; the start then
/// hashes everything).
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    /// None saved yet.
    #[error("none saved")]
    Missing,
    /// Could not be read.
    #[error("reading {path}: {error}")]
    Io {
        /// The resume file.
        path: PathBuf,
        /// The OS error.
        error: std::io::Error,
    },
    /// Larger than any resume data of this torrent can be.
    #[error("{0} is too large to be this torrent's")]
    TooLarge(PathBuf),
    /// Did not decode.
    #[error("{path} is unusable: {error}")]
    Bad {
        /// The resume file.
        path: PathBuf,
        /// What was wrong.
        error: ResumeError,
    },
    /// Saved for a download into another folder.
    #[error("it is for the output folder {0}")]
    OtherOutput(PathBuf),
}

/// Reads the resume data of `data`'s torrent for the output folder `output`
/// (as given by [`output_key`]). Blocking.
pub fn load(state_dir: &Path, data: &TorrentData, output: &Path) -> Result<ResumeData, LoadError> {
    let path = path(state_dir, data.meta.info_hash);
    let expect = Expect {
        info_hash: data.meta.info_hash,
        files: data.meta.info.files.len(),
        pieces: data.geometry.piece_count as usize,
    };
    let cap = resume::max_len(&expect);
    let io = |error: std::io::Error| LoadError::Io {
        path: path.clone(),
        error,
    };
    let file = match std::fs::File::open(&path) {
        Ok(f) => f,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Err(LoadError::Missing),
        Err(e) => return Err(io(e)),
    };
    if file.metadata().map_err(io)?.len() > cap as u64 {
        return Err(LoadError::TooLarge(path));
    }
    // The file may grow between the check and the read: read at most one
    // byte past the cap, which the decoder then refuses.
    let mut bytes = Vec::new();
    file.take(cap as u64 + 1)
        .read_to_end(&mut bytes)
        .map_err(io)?;
    let r = resume::decode(&bytes, &expect).map_err(|error| LoadError::Bad {
        path: path.clone(),
        error,
    })?;
    if r.output != output {
        return Err(LoadError::OtherOutput(r.output));
    }
    Ok(r)
}

/// Saves `have` (already taken) with the files' current stamps. Blocking.
pub fn save(
    state_dir: &Path,
    data: &TorrentData,
    output: &Path,
    have: Bitfield,
) -> Result<(), String> {
    // The pieces in `have` were written before it was taken; make them
    // durable before vouching for them.
    data.storage.sync().map_err(|e| e.to_string())?;
    let r = ResumeData {
        info_hash: data.meta.info_hash,
        output: output.to_path_buf(),
        files: data.storage.stamps(),
        have,
    };
    let path = path(state_dir, data.meta.info_hash);
    write_atomically(&path, &resume::encode(&r))
        .map_err(|e| format!("writing {}: {e}", path.display()))
}

/// Writes `bytes` to `path` so that it holds either the old or the new
/// content whatever happens: a temporary file in the same folder, flushed,
/// then renamed over.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().unwrap_or(Path::new("."));
    std::fs::create_dir_all(dir)?;
    // The process id keeps two runs of the same torrent off each other's
    // temporary file.
    let tmp = path.with_extension(format!("{}.tmp", std::process::id()));
    let written = std::fs::File::create(&tmp).and_then(|mut f| {
        f.write_all(bytes)?;
        f.sync_all()
    });
    if let Err(e) = written.and_then(|()| std::fs::rename(&tmp, path)) {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    // The rename itself, on disk (best effort).
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Removes the resume data of `ih` (best effort).
pub fn remove(state_dir: &Path, ih: InfoHash) {
    let _ = std::fs::remove_file(path(state_dir, ih));
}

/// Saves resume data from the session loop: at most every
/// [`SAVE_INTERVAL`] while the set of verified pieces changes, and once
/// more at the end.
pub struct Saver {
    state_dir: PathBuf,
    output: PathBuf,
    /// `pieces_verified` as of the last save started.
    saved: Option<u64>,
    last: Option<Instant>,
    task: Option<JoinHandle<()>>,
}

impl Saver {
    /// A saver into `state_dir` for downloads into `output`.
    pub fn new(state_dir: PathBuf, output: &Path) -> Self {
        Saver {
            state_dir,
            output: output_key(output),
            saved: None,
            last: None,
            task: None,
        }
    }

    /// Says the resume data on disk already holds what is verified now
    /// (the start trusted all of it and hashed nothing): no save until a
    /// piece is verified. 50,000 torrents starting from resume data
    /// rewrote (and fsynced) 50,000 unchanged files.
    pub fn saved_now(&mut self, shared: &Shared) {
        self.saved = Some(*shared.pieces_verified.borrow());
    }

    /// Starts a save in the background if pieces were verified since the
    /// last one, that one is done, and it is [`SAVE_INTERVAL`] old (or
    /// `now` says not to wait: the download just completed).
    pub fn tick(&mut self, shared: &Arc<Shared>, now: bool) {
        if self.task.as_ref().is_some_and(|t| !t.is_finished()) {
            return;
        }
        let due = now || self.last.is_none_or(|t| t.elapsed() >= SAVE_INTERVAL);
        if !due {
            return;
        }
        if let Some(job) = self.start(shared) {
            self.task = Some(tokio::task::spawn_blocking(job));
        }
    }

    /// The last save: waits for one in flight, then saves what is verified
    /// now if anything changed.
    pub async fn finish(mut self, shared: &Arc<Shared>) {
        if let Some(t) = self.task.take() {
            let _ = t.await;
        }
        if let Some(job) = self.start(shared) {
            let _ = tokio::task::spawn_blocking(job).await;
        }
    }

    /// The save to run, if one is needed: the verified pieces are taken
    /// here, before anything else.
    fn start(&mut self, shared: &Arc<Shared>) -> Option<impl FnOnce() + Send + 'static> {
        let data = shared.data()?.clone();
        let generation = *shared.pieces_verified.borrow();
        if self.saved == Some(generation) {
            return None;
        }
        let have = shared.lock().picker.as_ref()?.have().clone();
        self.saved = Some(generation);
        self.last = Some(Instant::now());
        let (dir, output) = (self.state_dir.clone(), self.output.clone());
        Some(move || {
            if let Err(e) = save(&dir, &data, &output, have) {
                tracing::warn!("could not save resume data: {e}");
            }
        })
    }
}

/// What a start may skip hashing: `(trusted, on_disk)`, where `trusted` are
/// the pieces resume data vouches for (present or missing) and `on_disk`
/// those of them that are verified. Both empty when there is no usable
/// resume data, or with `--check`; says why in an info line. Blocking.
pub fn plan(
    state_dir: Option<&Path>,
    data: &TorrentData,
    output: &Path,
    recheck: bool,
) -> (Bitfield, Bitfield) {
    let n = data.geometry.piece_count as usize;
    let none = || (Bitfield::new(n), Bitfield::new(n));
    if recheck {
        tracing::info!("--check: ignoring resume data, hashing all {n} pieces");
        return none();
    }
    let Some(dir) = state_dir else {
        return none();
    };
    let saved = match load(dir, data, output) {
        Ok(r) => r,
        Err(e) => {
            tracing::info!("resume data not used ({e}); hashing all {n} pieces");
            return none();
        }
    };
    let now = data.storage.stamps();
    if now.iter().all(Option::is_none) {
        tracing::info!("resume data dropped: none of the torrent's files exist");
        remove(dir, data.meta.info_hash);
        return none();
    }
    let trusted = resume::trusted(
        &saved,
        &now,
        &data.meta.info.files,
        data.geometry.piece_length,
    );
    let mut on_disk = Bitfield::new(n);
    for i in saved.have.iter_ones().filter(|&i| trusted.get(i)) {
        on_disk.set(i);
    }
    tracing::info!(
        "resume: {} of {n} pieces trusted without hashing ({} of them on disk), {} to hash",
        trusted.count(),
        on_disk.count(),
        n - trusted.count()
    );
    (trusted, on_disk)
}
