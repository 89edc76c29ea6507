//! The session's torrents at run time: add, list, stop, start, remove
//! (with or without the data), re-verify, change the file selection or the
//! folder. `btc daemon` drives it (its RPC and its watch folder).
//!
//! Each running torrent is one [`torrent::run`] actor; the manager holds
//! its cancellation token (stop works in every phase, also during the
//! start-up check), its command channel ([`Command::Snapshot`]) and its
//! status. What cannot change under a running actor (selection, folder,
//! a re-check) is applied by stopping it, which saves its resume data, and
//! starting it again, which trusts that data: no piece is hashed twice.
//!
//! The list (source, folder, paused, selection, limits) is kept in
//! `STATE_DIR/daemon.json`, the info dict of each torrent in the metadata
//! cache that magnets already use; [`Manager::restore`] reads them back.

use super::status::{Phase, Status};
use super::torrent::{self, Command, Options, Snapshot, Source};
use super::{Report, Session};
use crate::config::Config;
use crate::id::InfoHash;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_util::sync::CancellationToken;

/// Torrents one manager holds at most.
pub const MAX_TORRENTS: usize = 100_000;
/// How long a stop waits for a torrent's orderly shutdown.
const STOP_GRACE: Duration = Duration::from_secs(10);
/// The list's file in the state dir.
const LIST_FILE: &str = "daemon.json";

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum ManagerError {
    /// The torrent is already there.
    #[error("torrent already added (id {0})")]
    Duplicate(u32),
    /// No such torrent.
    #[error("no torrent with id {0}")]
    NoSuchTorrent(u32),
    /// A file number past the last file.
    #[error("there is no file {0}")]
    NoSuchFile(usize),
    /// Too many torrents.
    #[error("{MAX_TORRENTS} torrents is the most one daemon holds")]
    Full,
    /// A file operation failed.
    #[error("{0}")]
    Io(String),
}

/// What is remembered of a torrent across restarts.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Spec {
    /// Info-hash, 40 hex digits.
    pub info_hash: String,
    /// A magnet link for it (trackers, name, web seeds); the info dict is
    /// in the metadata cache once known.
    pub magnet: String,
    /// Private (BEP 27): never run from the magnet link alone.
    #[serde(default)]
    pub private: bool,
    /// Download folder.
    pub dir: PathBuf,
    /// Stopped by the user.
    pub paused: bool,
    /// File numbers (1-based, as `btc info` shows them) not downloaded.
    #[serde(default)]
    pub unwanted: Vec<usize>,
    /// Download limit in bytes/s, when enabled.
    #[serde(default)]
    pub down_limit: Option<u64>,
    /// Upload limit in bytes/s, when enabled.
    #[serde(default)]
    pub up_limit: Option<u64>,
    /// Stop seeding at this ratio.
    #[serde(default)]
    pub seed_ratio: Option<f64>,
    /// When it was added, seconds since the epoch.
    pub added: u64,
    /// When it completed, seconds since the epoch.
    #[serde(default)]
    pub done: Option<u64>,
    /// Payload bytes downloaded by its earlier runs.
    #[serde(default)]
    pub downloaded: u64,
    /// Payload bytes uploaded by its earlier runs.
    #[serde(default)]
    pub uploaded: u64,
}

/// A torrent as listed: its settings and its last status.
#[derive(Debug, Clone)]
pub struct View {
    /// Its id (1, 2, … in the order added; stable while the process runs).
    pub id: u32,
    /// Info-hash.
    pub info_hash: InfoHash,
    /// Its settings.
    pub spec: Spec,
    /// The last status (live while it runs).
    pub status: Status,
    /// Whether its actor runs.
    pub running: bool,
    /// Why it stopped on its own, if it did.
    pub error: Option<String>,
    /// The torrent, once the metadata is known.
    pub meta: Option<Arc<Metainfo>>,
    /// Payload bytes (down, up) since this process started, all runs.
    pub session_bytes: (u64, u64),
    /// Payload bytes (down, up) since it was added, all runs.
    pub ever_bytes: (u64, u64),
}

/// What to add.
pub struct AddRequest {
    /// The torrent or magnet.
    pub source: Source,
    /// Download folder (`None`: the default).
    pub dir: Option<PathBuf>,
    /// Added stopped.
    pub paused: bool,
    /// File numbers (1-based) not to download.
    pub unwanted: Vec<usize>,
}

struct Running {
    token: CancellationToken,
    commands: mpsc::Sender<Command>,
    status: watch::Receiver<Status>,
    task: tokio::task::JoinHandle<()>,
}

struct Entry {
    id: u32,
    info_hash: InfoHash,
    spec: Spec,
    meta: Option<Arc<Metainfo>>,
    run: Option<Running>,
    /// Which start `run` is (a finished actor of an older one is ignored).
    generation: u64,
    last: Status,
    error: Option<String>,
    /// Payload bytes (down, up) of this process's finished runs.
    session_bytes: (u64, u64),
    /// Its own limiters (under the session's), kept across its runs.
    limits: crate::ratelimit::RateLimits,
}

impl Entry {
    /// A run ended with `status`: its byte counts join the totals.
    fn ended(&mut self, status: &Status) {
        self.session_bytes.0 += status.downloaded;
        self.session_bytes.1 += status.uploaded;
        self.spec.downloaded += status.downloaded;
        self.spec.uploaded += status.uploaded;
        self.last = status.clone();
        self.last.phase = Phase::Stopping;
        self.last.downloaded = 0;
        self.last.uploaded = 0;
        self.last.down_rate = 0;
        self.last.up_rate = 0;
        self.last.peers_connected = 0;
    }
}

#[derive(Default)]
struct Inner {
    entries: Vec<Entry>,
    next_id: u32,
    next_generation: u64,
}

/// See the module doc.
pub struct Manager {
    session: Arc<Session>,
    base: Arc<Config>,
    state_dir: PathBuf,
    default_dir: Mutex<PathBuf>,
    inner: Mutex<Inner>,
    me: Weak<Manager>,
}

fn now_secs() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

impl Manager {
    /// A manager with no torrent; `base` holds the session flags every
    /// torrent runs with (its `output` is the default folder).
    pub fn new(session: Arc<Session>, base: Config, state_dir: PathBuf) -> Arc<Manager> {
        let default_dir = base.output.clone();
        Arc::new_cyclic(|me| Manager {
            session,
            base: Arc::new(base),
            state_dir,
            default_dir: Mutex::new(default_dir),
            inner: Mutex::new(Inner {
                next_id: 1,
                ..Inner::default()
            }),
            me: me.clone(),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The folder new torrents go to by default.
    pub fn default_dir(&self) -> PathBuf {
        self.default_dir
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Changes the default folder.
    pub fn set_default_dir(&self, dir: PathBuf) {
        *self.default_dir.lock().unwrap_or_else(|e| e.into_inner()) = dir;
    }

    /// Reads the list saved by an earlier run and starts what was not
    /// paused. A torrent whose entry cannot be used is skipped with a
    /// warning. Returns how many were restored.
    pub fn restore(&self) -> usize {
        let path = self.state_dir.join(LIST_FILE);
        let text = match std::fs::read_to_string(&path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return 0,
            Err(e) => {
                tracing::warn!("reading {}: {e}", path.display());
                return 0;
            }
        };
        let specs: Vec<Spec> = match serde_json::from_str(&text) {
            Ok(s) => s,
            Err(e) => {
                tracing::warn!("{}: {e}; starting with no torrent", path.display());
                return 0;
            }
        };
        let mut n = 0;
        for spec in specs {
            let Ok(ih) = InfoHash::parse(&spec.info_hash) else {
                tracing::warn!("{}: bad info-hash {}", path.display(), spec.info_hash);
                continue;
            };
            let meta = self.cached_meta(ih, &spec.magnet);
            if meta.is_none() && spec.private {
                tracing::warn!("{}: the private torrent's metadata is gone", spec.info_hash);
                continue;
            }
            let spec_limits = (spec.down_limit, spec.up_limit);
            let mut inner = self.lock();
            let id = inner.next_id;
            inner.next_id += 1;
            inner.entries.push(Entry {
                id,
                info_hash: ih,
                last: Status {
                    name: meta
                        .as_ref()
                        .map_or_else(|| ih.to_hex(), |m| m.info.name.clone()),
                    info_hash: ih,
                    ..Status::default()
                },
                spec,
                meta,
                run: None,
                generation: 0,
                error: None,
                session_bytes: (0, 0),
                limits: self.limits_for(&spec_limits),
            });
            let paused = inner.entries.last().is_some_and(|e| e.spec.paused);
            drop(inner);
            if !paused {
                self.start_entry(id, false);
            }
            n += 1;
        }
        n
    }

    /// A torrent's own limiters for (down, up) bytes/s (`None`: none),
    /// under the session's.
    fn limits_for(&self, (down, up): &(Option<u64>, Option<u64>)) -> crate::ratelimit::RateLimits {
        use crate::ratelimit::{RateLimiter, UNLIMITED};
        let session = &self.session.rate_limits;
        crate::ratelimit::RateLimits {
            down: Some(RateLimiter::under(
                down.unwrap_or(UNLIMITED),
                session.down.clone(),
            )),
            up: Some(RateLimiter::under(
                up.unwrap_or(UNLIMITED),
                session.up.clone(),
            )),
        }
    }

    /// The torrent from the metadata cache and the magnet's trackers.
    fn cached_meta(&self, ih: InfoHash, magnet: &str) -> Option<Arc<Metainfo>> {
        let info = torrent::load_cached_info(&self.state_dir, ih)?;
        let tiers = Magnet::parse(magnet)
            .map(|m| m.trackers.into_iter().map(|t| vec![t]).collect())
            .unwrap_or_default();
        let mut meta = Metainfo::from_info_bytes(&info, tiers).ok()?;
        if let Ok(m) = Magnet::parse(magnet) {
            meta.url_list = m.web_seeds;
        }
        Some(Arc::new(meta))
    }

    /// Adds a torrent and starts it unless asked paused; returns its id.
    pub fn add(&self, req: AddRequest) -> Result<u32, ManagerError> {
        let (ih, meta, magnet) = match req.source {
            Source::Torrent(m) => {
                let magnet = Magnet::from_metainfo(&m).to_uri();
                (m.info_hash, Some(Arc::new(*m)), magnet)
            }
            Source::Magnet(m) => (
                m.info_hash,
                self.cached_meta(m.info_hash, &m.to_uri()),
                m.to_uri(),
            ),
        };
        if let Some(m) = &meta {
            let count = m.info.files.iter().filter(|f| !f.pad).count();
            if let Some(&bad) = req.unwanted.iter().find(|&&n| n == 0 || n > count) {
                return Err(ManagerError::NoSuchFile(bad));
            }
            torrent::save_cached_info(&self.state_dir, ih, &m.info_bytes);
        }
        let id = {
            let mut inner = self.lock();
            if let Some(e) = inner.entries.iter().find(|e| e.info_hash == ih) {
                return Err(ManagerError::Duplicate(e.id));
            }
            if inner.entries.len() >= MAX_TORRENTS {
                return Err(ManagerError::Full);
            }
            let id = inner.next_id;
            inner.next_id += 1;
            let name = meta.as_ref().map_or_else(
                || {
                    Magnet::parse(&magnet)
                        .ok()
                        .and_then(|m| m.name)
                        .unwrap_or_else(|| ih.to_hex())
                },
                |m| m.info.name.clone(),
            );
            inner.entries.push(Entry {
                id,
                info_hash: ih,
                spec: Spec {
                    info_hash: ih.to_hex(),
                    magnet,
                    private: meta.as_ref().is_some_and(|m| m.info.private),
                    dir: req.dir.unwrap_or_else(|| self.default_dir()),
                    paused: req.paused,
                    unwanted: req.unwanted,
                    down_limit: None,
                    up_limit: None,
                    seed_ratio: None,
                    added: now_secs(),
                    done: None,
                    downloaded: 0,
                    uploaded: 0,
                },
                meta,
                run: None,
                generation: 0,
                last: Status {
                    name,
                    info_hash: ih,
                    ..Status::default()
                },
                error: None,
                session_bytes: (0, 0),
                limits: self.limits_for(&(None, None)),
            });
            id
        };
        if !req.paused {
            self.start_entry(id, false);
        }
        self.save();
        Ok(id)
    }

    /// Every torrent, in id order.
    pub fn list(&self) -> Vec<View> {
        let mut inner = self.lock();
        let state_dir = self.state_dir.clone();
        let mut changed = false;
        let views = inner
            .entries
            .iter_mut()
            .map(|e| {
                if let Some(r) = &e.run {
                    e.last = r.status.borrow().clone();
                }
                if e.meta.is_none() && e.last.total > 0 {
                    // A magnet's metadata arrived: the actor cached it.
                    e.meta = load_meta(&state_dir, e.info_hash, &e.spec.magnet);
                }
                if e.spec.done.is_none()
                    && e.last.total > 0
                    && e.last.have == e.last.total
                    && matches!(e.last.phase, Phase::Seeding)
                {
                    e.spec.done = Some(now_secs());
                    changed = true;
                }
                View {
                    id: e.id,
                    info_hash: e.info_hash,
                    spec: e.spec.clone(),
                    status: e.last.clone(),
                    running: e.run.is_some(),
                    error: e.error.clone(),
                    meta: e.meta.clone(),
                    session_bytes: (
                        e.session_bytes.0 + e.last.downloaded,
                        e.session_bytes.1 + e.last.uploaded,
                    ),
                    ever_bytes: (
                        e.spec.downloaded + e.last.downloaded,
                        e.spec.uploaded + e.last.uploaded,
                    ),
                }
            })
            .collect();
        drop(inner);
        if changed {
            self.save();
        }
        views
    }

    /// The id of the torrent with this info-hash.
    pub fn find(&self, ih: InfoHash) -> Option<u32> {
        self.lock()
            .entries
            .iter()
            .find(|e| e.info_hash == ih)
            .map(|e| e.id)
    }

    /// Asks a running torrent for its detail; `None` when it is stopped
    /// (or does not answer).
    pub async fn snapshot(&self, id: u32) -> Option<Snapshot> {
        let tx = {
            let inner = self.lock();
            inner
                .entries
                .iter()
                .find(|e| e.id == id)?
                .run
                .as_ref()?
                .commands
                .clone()
        };
        let (reply, rx) = oneshot::channel();
        tx.send(Command::Snapshot(reply)).await.ok()?;
        tokio::time::timeout(Duration::from_secs(2), rx)
            .await
            .ok()?
            .ok()
    }

    /// Asks a running torrent to announce to its trackers now; a stopped
    /// one has nothing to announce (not an error, as in Transmission).
    pub async fn reannounce(&self, id: u32) -> Result<(), ManagerError> {
        let tx = {
            let mut inner = self.lock();
            let e = entry(&mut inner, id)?;
            e.run.as_ref().map(|r| r.commands.clone())
        };
        if let Some(tx) = tx {
            let _ = tx.send(Command::Reannounce).await;
        }
        Ok(())
    }

    /// Starts a stopped torrent (a running one is left alone).
    pub fn start(&self, id: u32) -> Result<(), ManagerError> {
        {
            let mut inner = self.lock();
            let e = entry(&mut inner, id)?;
            e.spec.paused = false;
        }
        self.start_entry(id, false);
        self.save();
        Ok(())
    }

    /// Stops a torrent (its resume data saved) and keeps it stopped.
    pub async fn stop(&self, id: u32) -> Result<(), ManagerError> {
        {
            let mut inner = self.lock();
            entry(&mut inner, id)?.spec.paused = true;
        }
        self.halt(id).await;
        self.save();
        Ok(())
    }

    /// Hashes the torrent's data again (resume data not trusted), then
    /// goes on as before (stopped stays stopped once checked).
    pub async fn verify(&self, id: u32) -> Result<(), ManagerError> {
        entry(&mut self.lock(), id)?;
        self.halt(id).await;
        self.start_entry(id, true);
        Ok(())
    }

    /// Changes which files are downloaded (1-based numbers to skip).
    pub async fn set_unwanted(&self, id: u32, unwanted: Vec<usize>) -> Result<(), ManagerError> {
        let was_running = {
            let mut inner = self.lock();
            let e = entry(&mut inner, id)?;
            if let Some(m) = &e.meta {
                let count = m.info.files.iter().filter(|f| !f.pad).count();
                if let Some(&bad) = unwanted.iter().find(|&&n| n == 0 || n > count) {
                    return Err(ManagerError::NoSuchFile(bad));
                }
            }
            if e.spec.unwanted == unwanted {
                return Ok(());
            }
            e.spec.unwanted = unwanted;
            e.spec.done = None;
            e.run.is_some()
        };
        if was_running {
            self.halt(id).await;
            self.start_entry(id, false);
        }
        self.save();
        Ok(())
    }

    /// Per-torrent limits and seed ratio (`None` leaves one unchanged;
    /// `Some(None)` clears it).
    pub fn set_limits(
        &self,
        id: u32,
        down: Option<Option<u64>>,
        up: Option<Option<u64>>,
        ratio: Option<Option<f64>>,
    ) -> Result<(), ManagerError> {
        {
            let mut inner = self.lock();
            let e = entry(&mut inner, id)?;
            if let Some(d) = down {
                e.spec.down_limit = d;
            }
            if let Some(u) = up {
                e.spec.up_limit = u;
            }
            let rate = |l: Option<u64>| l.unwrap_or(crate::ratelimit::UNLIMITED);
            if let Some(l) = &e.limits.down {
                l.set_rate(rate(e.spec.down_limit));
            }
            if let Some(l) = &e.limits.up {
                l.set_rate(rate(e.spec.up_limit));
            }
            if let Some(r) = ratio {
                e.spec.seed_ratio = r;
            }
        }
        self.save();
        Ok(())
    }

    /// Points the torrent at another folder, moving its data there when
    /// `move_data` (a rename: the same file system only).
    pub async fn set_location(
        &self,
        id: u32,
        dir: PathBuf,
        move_data: bool,
    ) -> Result<(), ManagerError> {
        let was_running = entry(&mut self.lock(), id)?.run.is_some();
        self.halt(id).await;
        let r = {
            let mut inner = self.lock();
            let e = entry(&mut inner, id)?;
            let r = if move_data && let Some(m) = &e.meta {
                let from = e.spec.dir.join(&m.info.name);
                let to = dir.join(&m.info.name);
                if from.exists() {
                    std::fs::create_dir_all(&dir)
                        .and_then(|()| std::fs::rename(&from, &to))
                        .map_err(|err| {
                            ManagerError::Io(format!(
                                "moving {} to {}: {err}",
                                from.display(),
                                to.display()
                            ))
                        })
                } else {
                    Ok(())
                }
            } else {
                Ok(())
            };
            if r.is_ok() {
                e.spec.dir = dir;
            }
            r
        };
        if was_running {
            self.start_entry(id, false);
        }
        self.save();
        r
    }

    /// Stops and forgets a torrent; with `delete_data`, its files (and
    /// partial-piece file) go too. Its resume data goes either way.
    pub async fn remove(&self, id: u32, delete_data: bool) -> Result<(), ManagerError> {
        entry(&mut self.lock(), id)?;
        self.halt(id).await;
        let e = {
            let mut inner = self.lock();
            let at = inner
                .entries
                .iter()
                .position(|e| e.id == id)
                .ok_or(ManagerError::NoSuchTorrent(id))?;
            inner.entries.remove(at)
        };
        super::resume::remove(&self.state_dir, e.info_hash);
        self.save();
        if delete_data {
            delete_files(&e)?;
        }
        Ok(())
    }

    /// Stops every torrent (their resume data saved), keeping the list as
    /// it is for the next start.
    pub async fn shutdown(&self) {
        let running: Vec<Running> = {
            let mut inner = self.lock();
            inner
                .entries
                .iter_mut()
                .filter_map(|e| e.run.take())
                .collect()
        };
        for r in &running {
            r.token.cancel();
        }
        for r in running {
            let _ = tokio::time::timeout(STOP_GRACE, r.task).await;
        }
        self.save();
    }

    /// Ends the torrent's actor (if it runs) and waits for its stop.
    async fn halt(&self, id: u32) {
        let run = {
            let mut inner = self.lock();
            let Some(e) = inner.entries.iter_mut().find(|e| e.id == id) else {
                return;
            };
            e.run.take()
        };
        if let Some(r) = run {
            let _ = r.commands.try_send(Command::Stop);
            r.token.cancel();
            let _ = tokio::time::timeout(STOP_GRACE, r.task).await;
            let mut inner = self.lock();
            if let Some(e) = inner.entries.iter_mut().find(|e| e.id == id) {
                let status = r.status.borrow().clone();
                e.ended(&status);
            }
        }
    }

    /// Starts the torrent's actor if it is not running.
    fn start_entry(&self, id: u32, check: bool) {
        let mut inner = self.lock();
        inner.next_generation += 1;
        let generation = inner.next_generation;
        let Some(e) = inner.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        if e.run.is_some() {
            return;
        }
        let source = match &e.meta {
            Some(m) => Source::Torrent(Box::new((**m).clone())),
            None => match Magnet::parse(&e.spec.magnet) {
                Ok(m) => Source::Magnet(m),
                Err(err) => {
                    e.error = Some(format!("invalid magnet link: {err}"));
                    return;
                }
            },
        };
        let mut config = (*self.base).clone();
        config.output = e.spec.dir.clone();
        config.check = check;
        config.no_seed = false;
        config.stream = None;
        config.sequential = false;
        config.json = false;
        config.seed_ratio = e.spec.seed_ratio.or(self.base.seed_ratio);
        config.selection = (!e.spec.unwanted.is_empty()).then(|| {
            crate::select::Selection::AllBut(e.spec.unwanted.iter().map(|&n| n..=n).collect())
        });
        let token = self.session.shutdown.child_token();
        let (commands_tx, commands_rx) = mpsc::channel(8);
        let (status_tx, status_rx) = watch::channel(e.last.clone());
        let opts = Options {
            config: Arc::new(config),
            state_dir: Some(self.state_dir.clone()),
            events: None,
            ticket: None,
            commands: Some(commands_rx),
            limits: Some(e.limits.clone()),
        };
        if let Err(err) = std::fs::create_dir_all(&e.spec.dir) {
            e.error = Some(format!("creating {}: {err}", e.spec.dir.display()));
            return;
        }
        e.error = None;
        e.generation = generation;
        let (session, me, t) = (self.session.clone(), self.me.clone(), token.clone());
        let task = tokio::spawn(async move {
            let r = torrent::run(session, source, opts, status_tx, t).await;
            if let Some(m) = me.upgrade() {
                m.finished(id, generation, r);
            }
        });
        e.run = Some(Running {
            token,
            commands: commands_tx,
            status: status_rx,
            task,
        });
    }

    /// A torrent's actor ended on its own (an error, a seed limit).
    fn finished(&self, id: u32, generation: u64, r: anyhow::Result<Report>) {
        let mut inner = self.lock();
        let Some(e) = inner.entries.iter_mut().find(|e| e.id == id) else {
            return;
        };
        if e.generation != generation {
            return;
        }
        if let Some(run) = e.run.take() {
            let status = run.status.borrow().clone();
            e.ended(&status);
        }
        match r {
            Ok(_) => {}
            Err(err) => {
                let why = format!("{err:#}").replace('\n', " ");
                tracing::warn!("{}: {why}", e.last.name);
                e.error = Some(why);
            }
        }
    }

    /// Writes the list (temporary file, then rename).
    fn save(&self) {
        let specs: Vec<Spec> = self.lock().entries.iter().map(|e| e.spec.clone()).collect();
        let path = self.state_dir.join(LIST_FILE);
        let tmp = path.with_extension("json.tmp");
        let r = serde_json::to_vec_pretty(&specs)
            .map_err(std::io::Error::other)
            .and_then(|bytes| std::fs::write(&tmp, bytes))
            .and_then(|()| std::fs::rename(&tmp, &path));
        if let Err(e) = r {
            tracing::warn!("saving the torrent list to {}: {e}", path.display());
        }
    }
}

fn entry(inner: &mut Inner, id: u32) -> Result<&mut Entry, ManagerError> {
    inner
        .entries
        .iter_mut()
        .find(|e| e.id == id)
        .ok_or(ManagerError::NoSuchTorrent(id))
}

fn load_meta(state_dir: &Path, ih: InfoHash, magnet: &str) -> Option<Arc<Metainfo>> {
    let info = torrent::load_cached_info(state_dir, ih)?;
    let tiers = Magnet::parse(magnet)
        .map(|m| m.trackers.into_iter().map(|t| vec![t]).collect())
        .unwrap_or_default();
    Metainfo::from_info_bytes(&info, tiers).ok().map(Arc::new)
}

/// Deletes a removed torrent's files: its file or folder under its
/// download folder (names in a torrent are single safe components, see
/// `Metainfo`), and the file of partial pieces of unselected files.
fn delete_files(e: &Entry) -> Result<(), ManagerError> {
    let parts = e
        .spec
        .dir
        .join(format!(".btc-parts-{}", e.info_hash.to_hex()));
    let _ = std::fs::remove_file(parts);
    let Some(m) = &e.meta else { return Ok(()) };
    let top = e.spec.dir.join(&m.info.name);
    let r = if m.info.multi_file {
        std::fs::remove_dir_all(&top)
    } else {
        std::fs::remove_file(&top)
    };
    match r {
        Ok(()) => Ok(()),
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(err) => Err(ManagerError::Io(format!(
            "deleting {}: {err}",
            top.display()
        ))),
    }
}
