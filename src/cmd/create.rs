//! `btc create`: hash files into a new `.torrent`.

use crate::create::{CreateOptions, create_torrent};
use crate::metainfo::Metainfo;
use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::path::{Path, PathBuf};

/// Arguments of `btc create`.
pub struct CreateArgs {
    /// File or folder to share.
    pub path: PathBuf,
    /// Where to write the `.torrent`.
    pub output: PathBuf,
    /// Trackers.
    pub trackers: Vec<String>,
    /// Piece length in bytes.
    pub piece_length: Option<u32>,
    /// BEP 27 private flag.
    pub private: bool,
    /// Comment.
    pub comment: Option<String>,
    /// Web seeds.
    pub web_seeds: Vec<String>,
    /// Which BitTorrent versions to write.
    pub format: crate::create::Format,
    /// Hide the progress bar.
    pub quiet: bool,
}

/// Runs `btc create`; returns the new torrent.
pub fn run(args: CreateArgs) -> Result<Metainfo> {
    let opts = CreateOptions {
        path: args.path.clone(),
        trackers: args.trackers,
        piece_length: args.piece_length,
        private: args.private,
        comment: args.comment,
        web_seeds: args.web_seeds,
        format: args.format,
        created_by: concat!("btc ", env!("CARGO_PKG_VERSION")).to_string(),
        creation_date: std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .ok()
            .map(|d| d.as_secs() as i64),
    };
    let total = dir_size(&args.path);
    let bar = if crate::ui::bars_enabled(args.quiet) {
        ProgressBar::new(total)
    } else {
        ProgressBar::hidden()
    };
    bar.set_style(
        ProgressStyle::with_template(
            "hashing {bar:30.cyan/blue} {bytes}/{total_bytes} {bytes_per_sec}",
        )
        .expect("valid template")
        .progress_chars("=> "),
    );
    let bytes = create_torrent(&opts, &|n| bar.set_position(n)).context("creating a torrent")?;
    bar.finish_and_clear();
    let meta = Metainfo::from_bytes(&bytes).context("checking the new torrent")?;
    write_atomic(&args.output, &bytes)
        .with_context(|| format!("writing {}", args.output.display()))?;
    Ok(meta)
}

fn dir_size(p: &Path) -> u64 {
    match std::fs::metadata(p) {
        Ok(m) if m.is_dir() => std::fs::read_dir(p)
            .map(|rd| rd.flatten().map(|e| dir_size(&e.path())).sum())
            .unwrap_or(0),
        Ok(m) => m.len(),
        Err(_) => 0,
    }
}

/// Writes via a temporary file and a rename, so a crash never leaves half a torrent.
fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".part");
    let tmp = PathBuf::from(tmp);
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path)
}
