//! session-stats' `cumulative-stats`: what the daemon's earlier runs
//! downloaded, uploaded and added, how many runs there were and how long
//! they lasted, kept in `STATE_DIR/daemon-stats.json` (saved every minute
//! and at shutdown, written to a temporary file then renamed over). A
//! missing or unreadable file starts the totals from zero; a torrent
//! removed during a run takes its bytes of that run out of the current
//! numbers, and so out of what is added to the totals.

use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// The file, in the state dir.
pub const FILE: &str = "daemon-stats.json";
/// Read at most this much of it (it is a few dozen bytes).
const MAX_FILE: u64 = 64 * 1024;

/// The totals of some runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Totals {
    /// Payload bytes downloaded.
    pub downloaded: u64,
    /// Payload bytes uploaded.
    pub uploaded: u64,
    /// Torrents added.
    pub files_added: u64,
    /// Runs.
    pub session_count: u64,
    /// Seconds the runs lasted.
    pub seconds_active: u64,
}

impl Totals {
    /// The totals in `bytes` (the file); zero when they are not ours.
    pub fn parse(bytes: &[u8]) -> Totals {
        serde_json::from_slice(bytes).unwrap_or_default()
    }

    /// These totals and one more run's numbers.
    pub fn plus(&self, run: &Totals) -> Totals {
        Totals {
            downloaded: self.downloaded.saturating_add(run.downloaded),
            uploaded: self.uploaded.saturating_add(run.uploaded),
            files_added: self.files_added.saturating_add(run.files_added),
            session_count: self.session_count.saturating_add(run.session_count),
            seconds_active: self.seconds_active.saturating_add(run.seconds_active),
        }
    }
}

fn path(state_dir: &Path) -> PathBuf {
    state_dir.join(FILE)
}

/// The earlier runs' totals (zero if none were saved or the file is
/// unreadable, which is logged).
pub fn load(state_dir: &Path) -> Totals {
    use std::io::Read;
    let p = path(state_dir);
    let mut bytes = Vec::new();
    match std::fs::File::open(&p).and_then(|f| f.take(MAX_FILE).read_to_end(&mut bytes)) {
        Ok(_) => Totals::parse(&bytes),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Totals::default(),
        Err(e) => {
            tracing::warn!(
                "reading {}: {e}; the cumulative stats start over",
                p.display()
            );
            Totals::default()
        }
    }
}

/// Saves `totals` (this run included) over the last ones.
pub fn save(state_dir: &Path, totals: &Totals) -> std::io::Result<()> {
    let p = path(state_dir);
    let tmp = p.with_extension(format!("json.{}.tmp", std::process::id()));
    let bytes = serde_json::to_vec(totals).map_err(std::io::Error::other)?;
    let r = std::fs::write(&tmp, bytes).and_then(|()| std::fs::rename(&tmp, &p));
    if r.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn totals_add_up_and_survive_a_save_and_a_load() {
        let a = Totals {
            downloaded: 10,
            uploaded: 5,
            files_added: 2,
            session_count: 1,
            seconds_active: 60,
        };
        let b = Totals {
            downloaded: u64::MAX,
            session_count: 1,
            ..Totals::default()
        };
        let sum = a.plus(&b);
        assert_eq!(sum.downloaded, u64::MAX);
        assert_eq!(sum.uploaded, 5);
        assert_eq!(sum.session_count, 2);
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(load(dir.path()), Totals::default());
        save(dir.path(), &a).unwrap();
        assert_eq!(load(dir.path()), a);
    }

    #[test]
    fn a_foreign_or_partial_file_counts_as_zero_or_as_far_as_it_goes() {
        assert_eq!(Totals::parse(b"not json"), Totals::default());
        assert_eq!(Totals::parse(b"\"totals\""), Totals::default());
        assert_eq!(Totals::parse(b"{\"downloaded\":-1}"), Totals::default());
        let t = Totals::parse(b"{\"uploaded\":7,\"unknown\":1}");
        assert_eq!(t.uploaded, 7);
        assert_eq!(t.session_count, 0);
    }
}
