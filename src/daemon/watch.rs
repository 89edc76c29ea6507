//! The watch folder: a `.torrent` (or a `.magnet` file holding a magnet
//! link) dropped in it is added, then renamed `NAME.added`, or
//! `NAME.invalid` with the reason logged.
//!
//! Polled (no inotify: it works the same on network file systems). A file
//! is taken only once it is [`settled`]: the same size and modification
//! time at two polls in a row and last modified at least a second ago, so
//! one still being written is not read half-way.

use super::serve::Daemon;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::session::manager::{AddRequest, ManagerError};
use crate::session::torrent::Source;
use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio_util::sync::CancellationToken;

/// Time between two looks at the folder.
const POLL: Duration = Duration::from_secs(1);
/// A file modified more recently than this is not taken yet.
const QUIET: Duration = Duration::from_secs(1);
/// Largest file read (a `.torrent` is checked the same way elsewhere).
const MAX_FILE: u64 = 64 * 1024 * 1024;

/// What a file looked like at a poll.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Seen {
    /// Its size.
    pub len: u64,
    /// Its modification time.
    pub modified: SystemTime,
}

/// Whether a file seen as `now` (and as `before` at the last poll) may be
/// read: unchanged since then and quiet for `QUIET` at `at`.
pub fn settled(before: Option<Seen>, now: Seen, at: SystemTime) -> bool {
    before == Some(now) && at.duration_since(now.modified).is_ok_and(|d| d >= QUIET)
}

/// Whether the watch folder takes this file name.
pub fn wanted(name: &str) -> bool {
    name.ends_with(".torrent") || name.ends_with(".magnet")
}

/// Polls `dir` until `stop`.
pub async fn run(dir: PathBuf, daemon: Arc<Daemon>, stop: CancellationToken) {
    tracing::info!("watching {} for .torrent and .magnet files", dir.display());
    let mut seen: HashMap<PathBuf, Seen> = HashMap::new();
    loop {
        tokio::select! {
            _ = tokio::time::sleep(POLL) => {}
            _ = stop.cancelled() => return,
        }
        let Ok(entries) = std::fs::read_dir(&dir) else {
            continue;
        };
        let now = SystemTime::now();
        let mut still = HashMap::new();
        for entry in entries.flatten() {
            let path = entry.path();
            let Some(name) = path.file_name().and_then(|n| n.to_str()) else {
                continue;
            };
            if !wanted(name) {
                continue;
            }
            let Ok(md) = entry.metadata() else { continue };
            if !md.is_file() {
                continue;
            }
            let s = Seen {
                len: md.len(),
                modified: md.modified().unwrap_or(now),
            };
            if settled(seen.get(&path).copied(), s, now) {
                take(&path, &daemon);
            } else {
                still.insert(path, s);
            }
        }
        seen = still;
    }
}

/// Adds one settled file and renames it.
fn take(path: &Path, daemon: &Daemon) {
    let outcome = read(path).and_then(|source| {
        daemon
            .manager
            .add(AddRequest {
                source,
                dir: None,
                paused: false,
                unwanted: Vec::new(),
            })
            .or_else(|e| match e {
                // Already there: done all the same.
                ManagerError::Duplicate(id) => Ok(id),
                e => Err(e.to_string()),
            })
    });
    let suffix = match &outcome {
        Ok(id) => {
            daemon
                .added
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!("watch folder: added {} as {id}", path.display());
            "added"
        }
        Err(why) => {
            tracing::warn!("watch folder: {}: {why}", path.display());
            "invalid"
        }
    };
    let mut to = path.as_os_str().to_owned();
    to.push(".");
    to.push(suffix);
    if let Err(e) = std::fs::rename(path, &to) {
        tracing::warn!("watch folder: renaming {}: {e}", path.display());
    }
}

fn read(path: &Path) -> Result<Source, String> {
    let len = std::fs::metadata(path).map_err(|e| e.to_string())?.len();
    if len > MAX_FILE {
        return Err(format!("{len} bytes is too large"));
    }
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    if path.extension().is_some_and(|e| e == "magnet") {
        let text = String::from_utf8_lossy(&bytes);
        let link = text.trim();
        Magnet::parse(link)
            .map(Source::Magnet)
            .map_err(|e| format!("not a magnet link: {e}"))
    } else {
        Metainfo::from_bytes(&bytes)
            .map(|m| Source::Torrent(Box::new(m)))
            .map_err(|e| format!("not a valid torrent: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_taken_once_unchanged_for_a_poll_and_quiet_for_a_second() {
        let t0 = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let s = Seen {
            len: 100,
            modified: t0,
        };
        // First sight: never.
        assert!(!settled(None, s, t0 + Duration::from_secs(5)));
        // Grew since the last poll: still being written.
        let grown = Seen { len: 200, ..s };
        assert!(!settled(Some(s), grown, t0 + Duration::from_secs(5)));
        // Touched since: not yet.
        let touched = Seen {
            modified: t0 + Duration::from_secs(4),
            ..s
        };
        assert!(!settled(Some(s), touched, t0 + Duration::from_secs(5)));
        // Same, but modified half a second ago: not yet.
        assert!(!settled(Some(s), s, t0 + Duration::from_millis(500)));
        // Same at two polls and quiet: taken.
        assert!(settled(Some(s), s, t0 + Duration::from_secs(2)));
        // A clock that went back does not make it quiet.
        assert!(!settled(Some(s), s, t0 - Duration::from_secs(2)));
    }

    #[test]
    fn only_torrent_and_magnet_files_are_taken() {
        assert!(wanted("a.torrent"));
        assert!(wanted("b.magnet"));
        assert!(!wanted("a.torrent.added"));
        assert!(!wanted("a.torrent.invalid"));
        assert!(!wanted("a.torrent.part"));
        assert!(!wanted("notes.txt"));
    }
}
