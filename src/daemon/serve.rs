//! One RPC call carried out: a parsed [`Call`] applied to the session's
//! torrents (`session::manager`) and its reply rendered (`daemon::rpc`).

use super::rpc::{self, Action, Call, Ids};
use crate::cmd::source::{Resolved, resolve};
use crate::metainfo::Metainfo;
use crate::session::Session;
use crate::session::manager::{AddRequest, Manager, ManagerError, View};
use crate::session::torrent::Snapshot;
use crate::session::torrent::Source;
use serde_json::{Value, json};
use std::path::{Component, Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// How long a removed torrent's id is reported to `recently-active`.
const REMOVED_MEMORY: Duration = Duration::from_secs(60);

/// What the RPC calls act on.
pub struct Daemon {
    /// The torrents.
    pub manager: Arc<Manager>,
    /// The session (limits, port).
    pub session: Arc<Session>,
    /// The folder downloads must stay under (`-o`).
    pub root: PathBuf,
    /// session-get's static part.
    pub info: Mutex<rpc::SessionInfo>,
    /// When the daemon started.
    pub started: Instant,
    /// Torrents added since the start.
    pub added: std::sync::atomic::AtomicU64,
    /// The earlier runs' totals for session-stats (`daemon::stats`),
    /// zero until `cmd::daemon` loads them.
    pub past: super::stats::Totals,
    /// Ids removed lately, for `recently-active`.
    removed: Mutex<Vec<(u32, Instant)>>,
    /// The last speed limits set (bytes/s, down and up), kept while a
    /// limit is off so turning it on again restores it.
    limits: Mutex<(u64, u64)>,
}

impl Daemon {
    /// The daemon's state for the RPC.
    pub fn new(
        manager: Arc<Manager>,
        session: Arc<Session>,
        root: PathBuf,
        info: rpc::SessionInfo,
    ) -> Daemon {
        Daemon {
            manager,
            session,
            root,
            info: Mutex::new(info),
            started: Instant::now(),
            added: Default::default(),
            past: Default::default(),
            removed: Mutex::new(Vec::new()),
            limits: Mutex::new((0, 0)),
        }
    }

    /// Carries out one call; returns the reply's result and arguments.
    pub async fn call(&self, call: Call) -> (String, Value) {
        match self.dispatch(call).await {
            Ok(args) => ("success".into(), args),
            Err(why) => (why, json!({})),
        }
    }

    async fn dispatch(&self, call: Call) -> Result<Value, String> {
        match call {
            Call::SessionGet => {
                let info = self.info.lock().unwrap_or_else(|e| e.into_inner()).clone();
                Ok(rpc::session_get(&info))
            }
            Call::SessionStats => Ok(rpc::session_stats(&self.stats())),
            Call::SessionSet(s) => self.session_set(s),
            Call::TorrentAdd(a) => self.add(a).await,
            Call::TorrentGet { ids, fields, table } => Ok(self.get(ids, fields, table).await),
            Call::Action { action, ids } => {
                for v in self.select(&ids) {
                    match action {
                        Action::Start => self.manager.start(v.id),
                        Action::Stop => self.manager.stop(v.id).await,
                        Action::Verify => self.manager.verify(v.id).await,
                        Action::Reannounce => self.manager.reannounce(v.id).await,
                    }
                    .map_err(|e| e.to_string())?;
                }
                Ok(json!({}))
            }
            Call::TorrentRemove { ids, delete } => {
                for v in self.select(&ids) {
                    self.manager
                        .remove(v.id, delete)
                        .await
                        .map_err(|e| e.to_string())?;
                    self.removed
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .push((v.id, Instant::now()));
                }
                Ok(json!({}))
            }
            Call::TorrentSet(t) => {
                let kb = |limit: Option<u64>, on: Option<bool>, old: Option<u64>| match (limit, on)
                {
                    (None, None) => None,
                    (_, Some(false)) => Some(None),
                    (Some(l), _) => Some(Some(l * rpc::SPEED_UNIT)),
                    (None, Some(true)) => Some(old.or(Some(100 * rpc::SPEED_UNIT))),
                };
                for v in self.select(&t.ids) {
                    let ratio = match (t.seed_ratio_mode, t.seed_ratio) {
                        (Some(0 | 2), _) => Some(None),
                        (_, Some(r)) => Some(Some(r)),
                        _ => None,
                    };
                    self.manager
                        .set_limits(
                            v.id,
                            kb(t.down_limit, t.down_limited, v.spec.down_limit),
                            kb(t.up_limit, t.up_limited, v.spec.up_limit),
                            ratio,
                        )
                        .map_err(|e| e.to_string())?;
                    if !t.wanted.is_empty() || !t.unwanted.is_empty() {
                        let mut unwanted = v.spec.unwanted.clone();
                        unwanted.retain(|n| !t.wanted.contains(&(n - 1)));
                        for i in &t.unwanted {
                            if !unwanted.contains(&(i + 1)) {
                                unwanted.push(i + 1);
                            }
                        }
                        unwanted.sort_unstable();
                        self.manager
                            .set_unwanted(v.id, unwanted)
                            .await
                            .map_err(|e| e.to_string())?;
                    }
                }
                Ok(json!({}))
            }
            Call::SetLocation {
                ids,
                location,
                move_data,
            } => {
                let dir = self.allowed_dir(&location)?;
                for v in self.select(&ids) {
                    self.manager
                        .set_location(v.id, dir.clone(), move_data)
                        .await
                        .map_err(|e| e.to_string())?;
                }
                Ok(json!({}))
            }
            Call::FreeSpace { path } => {
                let dir = self.allowed_dir(&path)?;
                let st = rustix::fs::statvfs(&dir).map_err(|e| format!("{path}: {e}"))?;
                Ok(json!({
                    "path": path,
                    "size-bytes": st.f_bavail.saturating_mul(st.f_frsize),
                    "total_size": st.f_blocks.saturating_mul(st.f_frsize),
                }))
            }
        }
    }

    fn select(&self, ids: &Ids) -> Vec<View> {
        self.manager
            .list()
            .into_iter()
            .filter(|v| ids.matches(v) && (*ids != Ids::RecentlyActive || rpc::is_active(v)))
            .collect()
    }

    fn stats(&self) -> rpc::Stats {
        let list = self.manager.list();
        let active = list.iter().filter(|v| v.running).count();
        rpc::Stats {
            active,
            paused: list.len() - active,
            down_rate: list.iter().map(|v| v.status.down_rate).sum(),
            up_rate: list.iter().map(|v| v.status.up_rate).sum(),
            downloaded: list.iter().map(|v| v.session_bytes.0).sum(),
            uploaded: list.iter().map(|v| v.session_bytes.1).sum(),
            added: self.added.load(std::sync::atomic::Ordering::Relaxed),
            seconds: self.started.elapsed().as_secs(),
            past: self.past,
        }
    }

    /// The earlier runs' totals with this run's, as saved in the state dir.
    pub fn totals(&self) -> super::stats::Totals {
        let s = self.stats();
        s.past.plus(&s.run())
    }

    fn session_set(&self, s: rpc::SessionSet) -> Result<Value, String> {
        if !s.refused.is_empty() {
            return Err(format!("not supported: {}", s.refused.join(", ")));
        }
        if let Some(p) = s.peer_port
            && p != u64::from(self.session.listen_port)
        {
            return Err(format!(
                "peer-port cannot change while running (it is {}; restart with --port)",
                self.session.listen_port
            ));
        }
        let dir = match &s.download_dir {
            Some(d) => Some(self.allowed_dir(d)?),
            None => None,
        };
        let mut info = self.info.lock().unwrap_or_else(|e| e.into_inner());
        let apply = |limit: Option<u64>, on: Option<bool>, cur: &mut u64, last: &mut u64| {
            if let Some(l) = limit {
                *last = l * rpc::SPEED_UNIT;
                if *cur > 0 || on == Some(true) {
                    *cur = *last;
                }
            }
            match on {
                Some(true) if *cur == 0 => *cur = (*last).max(rpc::SPEED_UNIT),
                Some(false) => *cur = 0,
                _ => {}
            }
        };
        let mut limits = self.limits.lock().unwrap_or_else(|e| e.into_inner());
        apply(s.down, s.down_enabled, &mut info.down_limit, &mut limits.0);
        apply(s.up, s.up_enabled, &mut info.up_limit, &mut limits.1);
        let rl = &self.session.rate_limits;
        if let Some(d) = &rl.down {
            d.set_rate(if info.down_limit == 0 {
                super::UNLIMITED
            } else {
                info.down_limit
            });
        }
        if let Some(u) = &rl.up {
            u.set_rate(if info.up_limit == 0 {
                super::UNLIMITED
            } else {
                info.up_limit
            });
        }
        match (s.seed_ratio, s.seed_ratio_enabled) {
            (_, Some(false)) => info.seed_ratio = None,
            (Some(r), _) => info.seed_ratio = Some(r),
            (None, Some(true)) => info.seed_ratio = info.seed_ratio.or(Some(2.0)),
            (None, None) => {}
        }
        if let Some(on) = s.start_added {
            info.add_paused = !on;
        }
        if let Some(d) = dir {
            info.download_dir = d.to_string_lossy().into_owned();
            self.manager.set_default_dir(d);
        }
        Ok(json!({}))
    }

    async fn add(&self, a: rpc::TorrentAdd) -> Result<Value, String> {
        let source = match (&a.metainfo, &a.filename) {
            (Some(bytes), _) => Source::Torrent(Box::new(
                Metainfo::from_bytes(bytes)
                    .map_err(|e| format!("invalid or corrupt torrent file: {e}"))?,
            )),
            (None, Some(f)) => match resolve(f).await.map_err(|e| format!("{e:#}"))? {
                Resolved::Torrent(m) => Source::Torrent(m),
                Resolved::Magnet(m) => Source::Magnet(m),
            },
            (None, None) => return Err("torrent-add needs `filename` or `metainfo`".into()),
        };
        let dir = match &a.download_dir {
            Some(d) => Some(self.allowed_dir(d)?),
            None => None,
        };
        let (ih, name) = match &source {
            Source::Torrent(m) => (m.info_hash, m.info.name.clone()),
            Source::Magnet(m) => (
                m.info_hash,
                m.name.clone().unwrap_or_else(|| m.info_hash.to_hex()),
            ),
        };
        // files-wanted alone means only those; files-unwanted, all but.
        let unwanted = match (&source, &a.wanted, &a.unwanted) {
            (Source::Torrent(m), Some(w), _) => {
                let count = m.info.files.iter().filter(|f| !f.pad).count();
                (1..=count).filter(|n| !w.contains(&(n - 1))).collect()
            }
            (_, _, Some(u)) => {
                let mut u: Vec<usize> = u.iter().map(|i| i + 1).collect();
                u.sort_unstable();
                u.dedup();
                u
            }
            _ => Vec::new(),
        };
        let add_paused = self
            .info
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .add_paused;
        let req = AddRequest {
            source,
            dir,
            paused: a.paused.unwrap_or(add_paused),
            unwanted,
        };
        match self.manager.add(req) {
            Ok(id) => {
                self.added
                    .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                tracing::info!("added {name} ({ih}) as {id}");
                Ok(rpc::added(false, id, &name, ih))
            }
            Err(ManagerError::Duplicate(id)) => {
                let name = self
                    .manager
                    .list()
                    .into_iter()
                    .find(|v| v.id == id)
                    .map_or(name, |v| v.status.name);
                Ok(rpc::added(true, id, &name, ih))
            }
            Err(e) => Err(e.to_string()),
        }
    }

    /// The torrents `ids` names, each with its actor's snapshot when
    /// `fields` needs one, and the time now (seconds since the epoch).
    async fn gather(
        &self,
        ids: &Ids,
        fields: &[String],
    ) -> (Vec<View>, Vec<Option<Snapshot>>, u64) {
        let views = self.select(ids);
        let now = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_secs());
        // The actors asked all at once, not one after the other: with
        // 1,000 torrents, one round trip each in turn took 20-50 ms.
        let snaps = if views.iter().any(|v| rpc::needs_snapshot(fields, v)) {
            futures::future::join_all(views.iter().map(|v| async {
                if rpc::needs_snapshot(fields, v) {
                    self.manager.snapshot(v.id).await
                } else {
                    None
                }
            }))
            .await
        } else {
            views.iter().map(|_| None).collect()
        };
        (views, snaps, now)
    }

    /// The ids removed lately (for `recently-active`).
    fn removed_lately(&self) -> Vec<u32> {
        let mut removed = self.removed.lock().unwrap_or_else(|e| e.into_inner());
        removed.retain(|(_, at)| at.elapsed() < REMOVED_MEMORY);
        removed.iter().map(|(id, _)| *id).collect()
    }

    async fn get(&self, ids: Ids, fields: Vec<String>, table: bool) -> Value {
        let (views, snaps, now) = self.gather(&ids, &fields).await;
        let torrents: Vec<_> = views
            .iter()
            .zip(&snaps)
            .map(|(v, s)| rpc::torrent_fields(v, s.as_ref(), &fields, now))
            .collect();
        let torrents = if table {
            let mut rows = vec![Value::Array(
                fields.iter().map(|f| Value::String(f.clone())).collect(),
            )];
            for t in torrents {
                rows.push(Value::Array(
                    fields
                        .iter()
                        .map(|f| t.get(f).cloned().unwrap_or(Value::Null))
                        .collect(),
                ));
            }
            Value::Array(rows)
        } else {
            Value::Array(torrents.into_iter().map(Value::Object).collect())
        };
        let mut out = json!({ "torrents": torrents });
        if ids == Ids::RecentlyActive {
            out["removed"] = self
                .removed_lately()
                .into_iter()
                .map(|id| json!(id))
                .collect();
        }
        out
    }

    /// Carries out one request and renders its reply. A torrent-get in
    /// object form (what `transmission-remote -l` and the web page ask)
    /// is written straight to JSON (`rpc::torrent_get_reply`): the same
    /// reply without a `Value` tree of every torrent's fields.
    pub async fn reply(&self, request: rpc::Request) -> Vec<u8> {
        if let Call::TorrentGet {
            ids,
            fields,
            table: false,
        } = &request.call
        {
            let (views, snaps, now) = self.gather(ids, fields).await;
            let removed = (*ids == Ids::RecentlyActive).then(|| self.removed_lately());
            return rpc::torrent_get_reply(
                &views,
                &snaps,
                fields,
                now,
                removed.as_deref(),
                request.tag.as_ref(),
            );
        }
        let (result, args) = self.call(request.call).await;
        rpc::reply(&result, args, request.tag.as_ref())
    }

    /// A download folder a client named, if it is under the root: an
    /// absolute path without `..`, or a relative one taken from the root.
    pub fn allowed_dir(&self, dir: &str) -> Result<PathBuf, String> {
        allowed_dir(&self.root, dir)
    }
}

/// See [`Daemon::allowed_dir`].
pub fn allowed_dir(root: &Path, dir: &str) -> Result<PathBuf, String> {
    let p = Path::new(dir);
    if p.components().any(|c| matches!(c, Component::ParentDir)) {
        return Err(format!("{dir}: `..` is not allowed in a download folder"));
    }
    let full = if p.is_absolute() {
        p.to_path_buf()
    } else {
        root.join(p)
    };
    if !full.starts_with(root) {
        return Err(format!(
            "{dir}: outside the download folder {} (given with -o)",
            root.display()
        ));
    }
    Ok(full)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_download_folder_must_stay_under_the_root() {
        let root = Path::new("/srv/dl");
        assert_eq!(allowed_dir(root, "/srv/dl"), Ok(PathBuf::from("/srv/dl")));
        assert_eq!(
            allowed_dir(root, "/srv/dl/tv"),
            Ok(PathBuf::from("/srv/dl/tv"))
        );
        assert_eq!(allowed_dir(root, "tv"), Ok(PathBuf::from("/srv/dl/tv")));
        for bad in ["/etc", "/srv/dl2", "/srv/dl/../x", "../x", "tv/../../x"] {
            assert!(allowed_dir(root, bad).is_err(), "{bad}");
        }
    }
}
