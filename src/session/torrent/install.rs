//! Making a torrent's data live: the check of what is already on disk
//! (hashing only what resume data does not vouch for), the web seeds that
//! start once the metadata is known, and the info dicts remembered from
//! earlier runs so a magnet starts at once the next time.

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::id::InfoHash;
use crate::metainfo::Metainfo;
use crate::session::shared::{Shared, TorrentData};
use crate::session::status::{self, Phase, Status};
use crate::session::{Session, resume};
use crate::storage::disk::Storage;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::Duration;
use tokio::sync::watch;

use super::Options;

/// A torrent's usable web seeds and the HTTP client for them.
pub(super) struct WebSeeds {
    urls: Vec<String>,
    client: Option<reqwest::Client>,
}

impl WebSeeds {
    /// The usable ones among `urls` (a client is made only if one is).
    pub(super) fn new(urls: &[String], bind: Option<std::net::IpAddr>) -> Self {
        let urls = web_seed_urls(urls);
        let client = if urls.is_empty() {
            None
        } else {
            crate::webseed::client(bind)
                .inspect_err(|e| tracing::warn!("web seeds disabled: {e}"))
                .ok()
        };
        WebSeeds { urls, client }
    }

    /// Whether there is none.
    pub(super) fn is_empty(&self) -> bool {
        self.urls.is_empty()
    }

    /// Starts the web seed tasks once the metadata is installed, unless
    /// there is nothing left to fetch. They end on their own (complete,
    /// given up) or with the torrent.
    pub(super) fn start(&self, shared: &Arc<Shared>) {
        let Some(client) = &self.client else { return };
        if shared.data().is_none() || shared.is_complete() {
            return;
        }
        for url in &self.urls {
            crate::webseed::spawn(
                shared.clone(),
                client.clone(),
                url.clone(),
                &shared.tasks,
                shared.shutdown.clone(),
            );
        }
    }
}

/// The usable web seed URLs among `urls`, without repeats, at most
/// [`MAX_WEB_SEEDS`](crate::webseed::MAX_WEB_SEEDS).
fn web_seed_urls(urls: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        if !crate::webseed::is_usable(u) {
            tracing::info!("ignoring web seed {u}: only http and https are supported");
        } else if !out.contains(u) && out.len() < crate::webseed::MAX_WEB_SEEDS {
            out.push(u.clone());
        }
    }
    out
}

/// Checks the disk for existing data (hashing only what resume data does
/// not vouch for), then makes the torrent live. Returns whether the resume
/// data on disk already says all of it (complete, every piece trusted):
/// then there is nothing to save.
pub(super) async fn install(
    session: &Session,
    shared: &Arc<Shared>,
    meta: Metainfo,
    opts: &Options,
    status_tx: &watch::Sender<Status>,
    status: &mut Status,
) -> Result<bool> {
    let geometry = Geometry::new(meta.info.total_length, meta.info.piece_length);
    let mut storage = Storage::new(&opts.output, &meta.info).context("laying out the files")?;
    let selected = match &opts.selection {
        Some(sel) => Some(
            crate::select::selected_files(&meta.info, sel)
                .map_err(anyhow::Error::msg)
                .context("selecting files")?,
        ),
        None => None,
    };
    let wanted = selected.as_ref().map(|s| {
        storage.select(s, &format!(".btc-parts-{}", meta.info_hash.to_hex()));
        crate::select::wanted_pieces(&meta.info, &geometry, s)
    });
    status.total = match &wanted {
        Some(w) => w
            .iter_ones()
            .map(|i| u64::from(geometry.piece_len(i as u32)))
            .sum(),
        None => geometry.total_length,
    };
    status.name = meta.info.name.clone();
    let data = Arc::new(TorrentData {
        meta,
        geometry,
        storage,
    });
    let progress = Arc::new(AtomicU32::new(0));
    // One check per core at a time, however many torrents start together.
    // The slot is taken before the blocking job is spawned: 50,000 torrents
    // starting at once must not start a blocking thread each (the pool
    // grows to 512 threads while they wait).
    let _turn = session.checks.acquire().await;
    let check = {
        let data = data.clone();
        let progress = progress.clone();
        let threads = session.cores;
        let overwrite = opts.overwrite;
        let (state_dir, recheck) = (opts.state_dir.clone(), opts.check);
        let output = resume::output_key(&opts.output);
        tokio::task::spawn_blocking(move || {
            let (trusted, on_disk) = resume::plan(state_dir.as_deref(), &data, &output, recheck);
            let current = trusted.is_full() && on_disk.is_full();
            let mut to_check = Bitfield::new(trusted.len());
            for i in (0..trusted.len()).filter(|&i| !trusted.get(i)) {
                to_check.set(i);
            }
            let mut have = data.storage.check_existing(
                &data.geometry,
                &data.meta.info,
                &to_check,
                threads,
                &progress,
            );
            for i in on_disk.iter_ones() {
                have.set(i);
            }
            let prepared = data
                .storage
                .prepare(&have, overwrite)
                .map(|()| (have, current));
            // Checked and sized: whatever reads or writes next reopens
            // its files (no descriptor per torrent waiting or seeding).
            data.storage.close_files();
            prepared
        })
    };
    tokio::pin!(check);
    let (have, resume_current): (Bitfield, bool) = loop {
        tokio::select! {
            r = &mut check => break r.context("checking existing data")?.context("preparing the output files")?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                status.phase = Phase::Checking {
                    done: progress.load(Ordering::Relaxed),
                    total: geometry.piece_count,
                };
                status_tx.send_replace(status.clone());
            }
        }
    };
    if have.count() > 0 {
        tracing::info!(
            "{} of {} pieces already on disk",
            have.count(),
            geometry.piece_count
        );
    }
    status.resumed_pieces = have.count();
    status.resumed_bytes = have
        .iter_ones()
        .map(|i| geometry.piece_len(i as u32) as u64)
        .sum();
    shared.emit(status::SessionEvent::Metadata {
        name: data.meta.info.name.clone(),
        size: geometry.total_length,
        pieces: geometry.piece_count,
        piece_length: geometry.piece_length,
        files: data
            .meta
            .info
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| (f.path.join("/"), f.length))
            .collect(),
        info_hash_v2: data.meta.v2.as_ref().map(|v| v.hash_hex()),
    });
    let sequential = match opts.stream {
        Some(index) => Some(crate::select::file_pieces(
            &data.meta.info,
            &geometry,
            index,
        )),
        None => opts
            .sequential
            .then(|| crate::select::file_end_pieces(&data.meta.info, &geometry)),
    };
    shared.install(data, have, sequential, wanted);
    Ok(resume_current)
}

fn cached_info_path(dir: &std::path::Path, ih: InfoHash) -> PathBuf {
    dir.join("metadata").join(format!("{}.info", ih.to_hex()))
}

/// Reads an info dict remembered from an earlier run, if it still matches.
pub fn load_cached_info(dir: &std::path::Path, ih: InfoHash) -> Option<Vec<u8>> {
    use sha1::{Digest, Sha1};
    let bytes = std::fs::read(cached_info_path(dir, ih)).ok()?;
    (Sha1::digest(&bytes).as_slice() == ih.0).then_some(bytes)
}

/// Remembers a fetched info dict so the same magnet starts at once next time.
pub fn save_cached_info(dir: &std::path::Path, ih: InfoHash, info: &[u8]) {
    let path = cached_info_path(dir, ih);
    let tmp = path.with_extension("tmp");
    let r = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, info))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = r {
        tracing::warn!("could not remember the metadata in {}: {e}", path.display());
    }
}
