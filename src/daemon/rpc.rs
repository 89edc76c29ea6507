//! Transmission's RPC, the JSON half: a request body parsed into a typed
//! [`Call`], and replies rendered from plain data. Pure (no I/O, no
//! session): the HTTP shell (`daemon::http`) and the dispatcher
//! (`daemon::serve`) sit around it.
//!
//! The protocol is Transmission 3's (`rpc-version` 15, the one
//! `transmission-remote` 3 and most tools speak): a request is
//! `{"method": M, "arguments": {…}, "tag": T}`, a reply
//! `{"result": "success" | why, "arguments": {…}, "tag": T}`. Every body
//! a client sends is hostile: anything malformed becomes an error result
//! (never a panic), and lists are capped before they are walked.

use crate::id::InfoHash;
use crate::session::manager::View;
use crate::session::status::Phase;
use crate::session::torrent::Snapshot;
use base64::Engine;
use serde_json::{Map, Value, json};

/// The RPC version we speak (Transmission 2.80–3.00's methods and fields).
pub const RPC_VERSION: u32 = 15;
/// Entries of an `ids`, `fields` or file list walked at most.
const MAX_LIST: usize = 1_000_000;
/// Transmission's speed unit in the RPC: kB/s of 1000 bytes.
pub const SPEED_UNIT: u64 = 1000;

/// A parsed request.
#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    /// Echoed in the reply.
    pub tag: Option<Value>,
    /// What to do.
    pub call: Call,
}

/// A request that could not be understood: the reply still echoes its tag.
#[derive(Debug, Clone, PartialEq)]
pub struct Refused {
    /// The tag, if one could be read.
    pub tag: Option<Value>,
    /// Why, as the reply's `result`.
    pub why: String,
}

/// Which torrents a call is about.
#[derive(Debug, Clone, PartialEq)]
pub enum Ids {
    /// No `ids`: all of them.
    All,
    /// `"recently-active"`: those active in the last minute (and those
    /// removed, by id).
    RecentlyActive,
    /// These, by id or info-hash.
    List(Vec<IdRef>),
}

/// One torrent, by id or info-hash.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum IdRef {
    /// The id we gave it.
    Id(u32),
    /// Its info-hash.
    Hash(InfoHash),
}

impl Ids {
    /// Whether `v` is meant.
    pub fn matches(&self, v: &View) -> bool {
        match self {
            Ids::All | Ids::RecentlyActive => true,
            Ids::List(l) => l.iter().any(|r| match r {
                IdRef::Id(id) => *id == v.id,
                IdRef::Hash(h) => *h == v.info_hash,
            }),
        }
    }
}

/// What a torrent action does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    /// torrent-start, torrent-start-now.
    Start,
    /// torrent-stop.
    Stop,
    /// torrent-verify.
    Verify,
    /// torrent-reannounce.
    Reannounce,
}

/// session-set's arguments we act on.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SessionSet {
    /// `speed-limit-down`, kB/s.
    pub down: Option<u64>,
    /// `speed-limit-down-enabled`.
    pub down_enabled: Option<bool>,
    /// `speed-limit-up`, kB/s.
    pub up: Option<u64>,
    /// `speed-limit-up-enabled`.
    pub up_enabled: Option<bool>,
    /// `download-dir`.
    pub download_dir: Option<String>,
    /// `peer-port` (refused unless it is the current one).
    pub peer_port: Option<u64>,
    /// `seedRatioLimit`.
    pub seed_ratio: Option<f64>,
    /// `seedRatioLimited`.
    pub seed_ratio_enabled: Option<bool>,
    /// `start-added-torrents`.
    pub start_added: Option<bool>,
    /// Keys we do not support that ask for a change (alt speeds, …).
    pub refused: Vec<String>,
}

/// torrent-add's arguments.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TorrentAdd {
    /// `filename`: magnet, URL, path or bare hash.
    pub filename: Option<String>,
    /// `metainfo`, decoded from base64.
    pub metainfo: Option<Vec<u8>>,
    /// `download-dir`.
    pub download_dir: Option<String>,
    /// `paused` (`None`: as session-set's `start-added-torrents` says).
    pub paused: Option<bool>,
    /// `files-wanted` (0-based).
    pub wanted: Option<Vec<usize>>,
    /// `files-unwanted` (0-based).
    pub unwanted: Option<Vec<usize>>,
}

/// torrent-set's arguments we act on.
#[derive(Debug, Clone, PartialEq)]
pub struct TorrentSet {
    /// Which torrents.
    pub ids: Ids,
    /// `files-wanted` (0-based).
    pub wanted: Vec<usize>,
    /// `files-unwanted` (0-based).
    pub unwanted: Vec<usize>,
    /// `downloadLimit`, kB/s.
    pub down_limit: Option<u64>,
    /// `downloadLimited`.
    pub down_limited: Option<bool>,
    /// `uploadLimit`, kB/s.
    pub up_limit: Option<u64>,
    /// `uploadLimited`.
    pub up_limited: Option<bool>,
    /// `seedRatioLimit`.
    pub seed_ratio: Option<f64>,
    /// `seedRatioMode` (0 global, 1 this torrent's, 2 unlimited).
    pub seed_ratio_mode: Option<u64>,
}

/// A parsed method call.
#[derive(Debug, Clone, PartialEq)]
pub enum Call {
    /// session-get (`fields` ignored: all are sent).
    SessionGet,
    /// session-set.
    SessionSet(SessionSet),
    /// session-stats.
    SessionStats,
    /// torrent-add.
    TorrentAdd(TorrentAdd),
    /// torrent-get.
    TorrentGet {
        /// Which torrents.
        ids: Ids,
        /// Which fields (unknown ones are left out of the reply).
        fields: Vec<String>,
        /// `format: "table"` (Transmission 4 clients).
        table: bool,
    },
    /// torrent-start, -start-now, -stop, -verify, -reannounce.
    Action {
        /// Which.
        action: Action,
        /// On which torrents.
        ids: Ids,
    },
    /// torrent-remove.
    TorrentRemove {
        /// Which torrents.
        ids: Ids,
        /// `delete-local-data`.
        delete: bool,
    },
    /// torrent-set.
    TorrentSet(TorrentSet),
    /// torrent-set-location.
    SetLocation {
        /// Which torrents.
        ids: Ids,
        /// The new folder.
        location: String,
        /// `move`: move the data there.
        move_data: bool,
    },
    /// free-space.
    FreeSpace {
        /// The folder asked about.
        path: String,
    },
}

/// Parses a request body.
pub fn parse(body: &[u8]) -> Result<Request, Refused> {
    let value: Value = serde_json::from_slice(body).map_err(|e| Refused {
        tag: None,
        why: format!("malformed JSON: {e}"),
    })?;
    let Value::Object(obj) = value else {
        return Err(Refused {
            tag: None,
            why: "the request is not a JSON object".into(),
        });
    };
    let tag = obj.get("tag").filter(|t| t.is_number()).cloned();
    let fail = |why: String| Refused {
        tag: tag.clone(),
        why,
    };
    let method = match obj.get("method") {
        Some(Value::String(m)) => m.as_str(),
        Some(_) => return Err(fail("`method` must be a string".into())),
        None => return Err(fail("no `method`".into())),
    };
    let empty = Map::new();
    let args = match obj.get("arguments") {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(a)) => a,
        Some(_) => return Err(fail("`arguments` must be an object".into())),
    };
    let call = parse_call(method, args).map_err(fail)?;
    Ok(Request { tag, call })
}

fn parse_call(method: &str, a: &Map<String, Value>) -> Result<Call, String> {
    Ok(match method {
        "session-get" => Call::SessionGet,
        "session-stats" => Call::SessionStats,
        "session-set" => Call::SessionSet(parse_session_set(a)?),
        "torrent-add" => Call::TorrentAdd(parse_add(a)?),
        "torrent-get" => Call::TorrentGet {
            ids: ids(a)?,
            fields: strings(a, "fields")?.unwrap_or_default(),
            table: opt_str(a, "format")? == Some("table"),
        },
        "torrent-start" | "torrent-start-now" => Call::Action {
            action: Action::Start,
            ids: ids(a)?,
        },
        "torrent-stop" => Call::Action {
            action: Action::Stop,
            ids: ids(a)?,
        },
        "torrent-verify" => Call::Action {
            action: Action::Verify,
            ids: ids(a)?,
        },
        "torrent-reannounce" => Call::Action {
            action: Action::Reannounce,
            ids: ids(a)?,
        },
        "torrent-remove" => Call::TorrentRemove {
            ids: ids(a)?,
            delete: opt_bool(a, "delete-local-data")?.unwrap_or(false),
        },
        "torrent-set" => Call::TorrentSet(TorrentSet {
            ids: ids(a)?,
            wanted: indices(a, "files-wanted")?.unwrap_or_default(),
            unwanted: indices(a, "files-unwanted")?.unwrap_or_default(),
            down_limit: opt_u64(a, "downloadLimit")?,
            down_limited: opt_bool(a, "downloadLimited")?,
            up_limit: opt_u64(a, "uploadLimit")?,
            up_limited: opt_bool(a, "uploadLimited")?,
            seed_ratio: opt_f64(a, "seedRatioLimit")?,
            seed_ratio_mode: opt_u64(a, "seedRatioMode")?,
        }),
        "torrent-set-location" => Call::SetLocation {
            ids: ids(a)?,
            location: opt_str(a, "location")?
                .ok_or("torrent-set-location needs `location`")?
                .to_string(),
            move_data: opt_bool(a, "move")?.unwrap_or(false),
        },
        "free-space" => Call::FreeSpace {
            path: opt_str(a, "path")?
                .ok_or("free-space needs `path`")?
                .to_string(),
        },
        other => return Err(format!("method name not recognized: {other}")),
    })
}

fn parse_session_set(a: &Map<String, Value>) -> Result<SessionSet, String> {
    let mut s = SessionSet {
        down: opt_u64(a, "speed-limit-down")?,
        down_enabled: opt_bool(a, "speed-limit-down-enabled")?,
        up: opt_u64(a, "speed-limit-up")?,
        up_enabled: opt_bool(a, "speed-limit-up-enabled")?,
        download_dir: opt_str(a, "download-dir")?.map(str::to_string),
        peer_port: opt_u64(a, "peer-port")?,
        seed_ratio: opt_f64(a, "seedRatioLimit")?,
        seed_ratio_enabled: opt_bool(a, "seedRatioLimited")?,
        start_added: opt_bool(a, "start-added-torrents")?,
        refused: Vec::new(),
    };
    for key in a.keys() {
        let known = matches!(
            key.as_str(),
            "speed-limit-down"
                | "speed-limit-down-enabled"
                | "speed-limit-up"
                | "speed-limit-up-enabled"
                | "download-dir"
                | "peer-port"
                | "seedRatioLimit"
                | "seedRatioLimited"
                | "start-added-torrents"
        );
        // Turning an unsupported feature off is no change: accepted.
        if !known && a.get(key) != Some(&Value::Bool(false)) {
            s.refused.push(key.clone());
        }
    }
    Ok(s)
}

fn parse_add(a: &Map<String, Value>) -> Result<TorrentAdd, String> {
    let metainfo = match opt_str(a, "metainfo")? {
        Some(b64) => {
            // Some clients wrap the base64 text; the standard engine
            // does not skip whitespace.
            let clean: String = b64.chars().filter(|c| !c.is_ascii_whitespace()).collect();
            Some(
                base64::engine::general_purpose::STANDARD
                    .decode(clean.as_bytes())
                    .map_err(|e| format!("`metainfo` is not base64: {e}"))?,
            )
        }
        None => None,
    };
    let add = TorrentAdd {
        filename: opt_str(a, "filename")?.map(str::to_string),
        metainfo,
        download_dir: opt_str(a, "download-dir")?.map(str::to_string),
        paused: opt_bool(a, "paused")?,
        wanted: indices(a, "files-wanted")?,
        unwanted: indices(a, "files-unwanted")?,
    };
    if add.filename.is_none() && add.metainfo.is_none() {
        return Err("torrent-add needs `filename` or `metainfo`".into());
    }
    Ok(add)
}

fn ids(a: &Map<String, Value>) -> Result<Ids, String> {
    match a.get("ids") {
        None | Some(Value::Null) => Ok(Ids::All),
        Some(Value::String(s)) if s == "recently-active" => Ok(Ids::RecentlyActive),
        Some(v @ (Value::String(_) | Value::Number(_))) => Ok(Ids::List(vec![id_ref(v)?])),
        Some(Value::Array(l)) => {
            if l.len() > MAX_LIST {
                return Err("`ids` is too long".into());
            }
            l.iter()
                .map(id_ref)
                .collect::<Result<_, _>>()
                .map(Ids::List)
        }
        Some(_) => Err("`ids` must be a number, a hash, a list or \"recently-active\"".into()),
    }
}

fn id_ref(v: &Value) -> Result<IdRef, String> {
    match v {
        Value::Number(n) => n
            .as_u64()
            .and_then(|n| u32::try_from(n).ok())
            .map(IdRef::Id)
            .ok_or_else(|| format!("invalid torrent id {n}")),
        Value::String(s) if s.len() == 40 => InfoHash::parse(s)
            .map(IdRef::Hash)
            .map_err(|_| format!("invalid hash {s}")),
        Value::String(s) => s
            .parse::<u32>()
            .map(IdRef::Id)
            .map_err(|_| format!("invalid torrent id {s:?}")),
        _ => Err("a torrent id must be a number or a hash".into()),
    }
}

fn opt_str<'a>(a: &'a Map<String, Value>, key: &str) -> Result<Option<&'a str>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(format!("`{key}` must be a string")),
    }
}

fn opt_bool(a: &Map<String, Value>, key: &str) -> Result<Option<bool>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        // Transmission takes 0 and 1 for booleans too.
        Some(Value::Number(n)) if n.as_u64() == Some(0) => Ok(Some(false)),
        Some(Value::Number(n)) if n.as_u64() == Some(1) => Ok(Some(true)),
        Some(_) => Err(format!("`{key}` must be a boolean")),
    }
}

fn opt_u64(a: &Map<String, Value>, key: &str) -> Result<Option<u64>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_u64()
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a whole number ≥ 0")),
        Some(_) => Err(format!("`{key}` must be a number")),
    }
}

fn opt_f64(a: &Map<String, Value>, key: &str) -> Result<Option<f64>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Number(n)) => n
            .as_f64()
            .filter(|f| f.is_finite() && *f >= 0.0)
            .map(Some)
            .ok_or_else(|| format!("`{key}` must be a number ≥ 0")),
        Some(_) => Err(format!("`{key}` must be a number")),
    }
}

fn strings(a: &Map<String, Value>, key: &str) -> Result<Option<Vec<String>>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(l)) if l.len() <= MAX_LIST => l
            .iter()
            .map(|v| match v {
                Value::String(s) => Ok(s.clone()),
                _ => Err(format!("`{key}` must be a list of strings")),
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(format!("`{key}` must be a list of strings")),
    }
}

fn indices(a: &Map<String, Value>, key: &str) -> Result<Option<Vec<usize>>, String> {
    match a.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(Value::Array(l)) if l.len() <= MAX_LIST => l
            .iter()
            .map(|v| {
                v.as_u64()
                    .and_then(|n| usize::try_from(n).ok())
                    .filter(|&n| n < MAX_LIST)
                    .ok_or_else(|| format!("`{key}` must be a list of file numbers"))
            })
            .collect::<Result<_, _>>()
            .map(Some),
        Some(_) => Err(format!("`{key}` must be a list of file numbers")),
    }
}

/// A reply body.
pub fn reply(result: &str, arguments: Value, tag: Option<&Value>) -> Vec<u8> {
    let mut obj = Map::new();
    obj.insert("result".into(), Value::String(result.into()));
    obj.insert("arguments".into(), arguments);
    if let Some(t) = tag {
        obj.insert("tag".into(), t.clone());
    }
    serde_json::to_vec(&Value::Object(obj)).unwrap_or_default()
}

/// The reply to a request that could not be understood.
pub fn refused(r: &Refused) -> Vec<u8> {
    reply(&r.why, json!({}), r.tag.as_ref())
}

/// What session-get reports, gathered by the daemon.
#[derive(Debug, Clone, Default)]
pub struct SessionInfo {
    /// The default download folder.
    pub download_dir: String,
    /// The state dir.
    pub config_dir: String,
    /// The peer port.
    pub peer_port: u16,
    /// Download limit in bytes/s (0 = none).
    pub down_limit: u64,
    /// Upload limit in bytes/s (0 = none).
    pub up_limit: u64,
    /// Seed ratio limit, if any.
    pub seed_ratio: Option<f64>,
    /// DHT on.
    pub dht: bool,
    /// LSD on.
    pub lsd: bool,
    /// uTP on.
    pub utp: bool,
    /// Port mapping on.
    pub port_mapping: bool,
    /// `--encryption` as Transmission names it.
    pub encryption: &'static str,
    /// Connected peers at most.
    pub peer_limit_global: usize,
    /// Per torrent.
    pub peer_limit_per_torrent: usize,
    /// `--max-active`.
    pub max_active: usize,
    /// The session id clients must echo.
    pub session_id: String,
    /// Torrents added without `paused` are stopped (`start-added-torrents`
    /// false).
    pub add_paused: bool,
}

/// session-get's arguments.
pub fn session_get(s: &SessionInfo) -> Value {
    let kb = |bytes: u64| bytes.div_ceil(SPEED_UNIT);
    let mut fixed = json!({
        "alt-speed-down": 0, "alt-speed-enabled": false, "alt-speed-up": 0,
        "alt-speed-time-begin": 540, "alt-speed-time-day": 127,
        "alt-speed-time-enabled": false, "alt-speed-time-end": 1020,
        "blocklist-enabled": false, "blocklist-size": 0, "blocklist-url": "",
        "cache-size-mb": 0,
        "config-dir": s.config_dir,
        "dht-enabled": s.dht,
        "download-dir": s.download_dir,
        "download-queue-enabled": s.max_active > 0,
        "download-queue-size": s.max_active,
        "encryption": s.encryption,
        "idle-seeding-limit": 0, "idle-seeding-limit-enabled": false,
        "incomplete-dir": "", "incomplete-dir-enabled": false,
    });
    let live = json!({
        "lpd-enabled": s.lsd,
        "peer-limit-global": s.peer_limit_global,
        "peer-limit-per-torrent": s.peer_limit_per_torrent,
        "peer-port": s.peer_port,
        "peer-port-random-on-start": false,
        "pex-enabled": true,
        "port-forwarding-enabled": s.port_mapping,
        "queue-stalled-enabled": false, "queue-stalled-minutes": 30,
        "rename-partial-files": false,
        "rpc-version": RPC_VERSION,
        "rpc-version-minimum": 1,
        "script-torrent-done-enabled": false, "script-torrent-done-filename": "",
        "seed-queue-enabled": false, "seed-queue-size": 0,
        "seedRatioLimit": s.seed_ratio.unwrap_or(2.0),
        "seedRatioLimited": s.seed_ratio.is_some(),
        "session-id": s.session_id,
        "speed-limit-down": kb(s.down_limit),
        "speed-limit-down-enabled": s.down_limit > 0,
        "speed-limit-up": kb(s.up_limit),
        "speed-limit-up-enabled": s.up_limit > 0,
        "start-added-torrents": !s.add_paused,
        "trash-original-torrent-files": false,
        "units": {
            "speed-units": ["kB/s", "MB/s", "GB/s", "TB/s"], "speed-bytes": SPEED_UNIT,
            "size-units": ["kB", "MB", "GB", "TB"], "size-bytes": 1000,
            "memory-units": ["KiB", "MiB", "GiB", "TiB"], "memory-bytes": 1024
        },
        "utp-enabled": s.utp,
        "version": format!("btc {}", env!("CARGO_PKG_VERSION")),
    });
    if let (Value::Object(f), Value::Object(l)) = (&mut fixed, live) {
        f.extend(l);
    }
    fixed
}

/// What session-stats reports.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// Torrents running.
    pub active: usize,
    /// Torrents stopped.
    pub paused: usize,
    /// Bytes/s down, all torrents.
    pub down_rate: u64,
    /// Bytes/s up.
    pub up_rate: u64,
    /// Payload bytes down since the daemon started.
    pub downloaded: u64,
    /// Payload bytes up since the daemon started.
    pub uploaded: u64,
    /// Torrents added since the daemon started.
    pub added: u64,
    /// Seconds since the daemon started.
    pub seconds: u64,
    /// The earlier runs' totals (`daemon::stats`).
    pub past: super::stats::Totals,
}

impl Stats {
    /// This run as totals: one run, its bytes, additions and seconds.
    pub fn run(&self) -> super::stats::Totals {
        super::stats::Totals {
            downloaded: self.downloaded,
            uploaded: self.uploaded,
            files_added: self.added,
            session_count: 1,
            seconds_active: self.seconds,
        }
    }
}

/// session-stats's arguments: this run, and this run added to the
/// earlier runs' totals.
pub fn session_stats(s: &Stats) -> Value {
    let numbers = |t: super::stats::Totals| {
        json!({
            "uploadedBytes": t.uploaded, "downloadedBytes": t.downloaded,
            "filesAdded": t.files_added, "sessionCount": t.session_count,
            "secondsActive": t.seconds_active,
        })
    };
    let run = numbers(s.run());
    let total = numbers(s.past.plus(&s.run()));
    json!({
        "activeTorrentCount": s.active,
        "pausedTorrentCount": s.paused,
        "torrentCount": s.active + s.paused,
        "downloadSpeed": s.down_rate,
        "uploadSpeed": s.up_rate,
        "cumulative-stats": total,
        "current-stats": run,
    })
}

/// Transmission's status number: 0 stopped, 1 check queued, 2 checking,
/// 3 download queued, 4 downloading, 5 seed queued, 6 seeding.
pub fn status_code(v: &View) -> u8 {
    if !v.running {
        return 0;
    }
    match v.status.phase {
        Phase::Starting => 1,
        Phase::Checking { .. } => 2,
        Phase::Queued => 3,
        Phase::FindingPeers | Phase::FetchingMetadata | Phase::Downloading => 4,
        Phase::Seeding => 6,
        Phase::Stopping => 0,
    }
}

/// Whether a torrent counts as recently active.
pub fn is_active(v: &View) -> bool {
    v.running
        && (v.status.down_rate > 0
            || v.status.up_rate > 0
            || !matches!(v.status.phase, Phase::Seeding))
}

/// One torrent's object for torrent-get: the `fields` asked for that we
/// know (others are left out). `snap` is the running torrent's detail.
pub fn torrent_fields(
    v: &View,
    snap: Option<&Snapshot>,
    fields: &[String],
    now: u64,
) -> Map<String, Value> {
    let mut out = Map::new();
    let d = Derived::of(v);
    for f in fields {
        if let Some(value) = field(v, snap, &d, f, now) {
            out.insert(f.clone(), value);
        }
    }
    out
}

/// torrent-get's whole reply in object form, written straight to JSON:
/// what `reply("success", {"torrents": [torrent_fields(…), …], "removed":
/// removed}, tag)` gives, without building a `Value` tree of 1,000
/// torrents (that, its map keys and its drop were most of a
/// `transmission-remote -l`'s cost). A field asked for twice is written
/// once, as a map keeps it. `snaps` goes with `views`, one for one.
pub fn torrent_get_reply(
    views: &[View],
    snaps: &[Option<Snapshot>],
    fields: &[String],
    now: u64,
    removed: Option<&[u32]>,
    tag: Option<&Value>,
) -> Vec<u8> {
    let mut unique: Vec<&String> = Vec::with_capacity(fields.len());
    for f in fields {
        if !unique.contains(&f) {
            unique.push(f);
        }
    }
    let mut out = Vec::with_capacity(64 + views.len() * (2 + unique.len() * 32));
    out.extend_from_slice(b"{\"arguments\":{");
    if let Some(r) = removed {
        out.extend_from_slice(b"\"removed\":");
        put(&mut out, r);
        out.push(b',');
    }
    out.extend_from_slice(b"\"torrents\":[");
    for (i, v) in views.iter().enumerate() {
        if i > 0 {
            out.push(b',');
        }
        out.push(b'{');
        let d = Derived::of(v);
        let snap = snaps.get(i).and_then(Option::as_ref);
        let mut first = true;
        for f in &unique {
            if let Some(value) = field(v, snap, &d, f, now) {
                if !first {
                    out.push(b',');
                }
                first = false;
                put(&mut out, f.as_str());
                out.push(b':');
                put(&mut out, &value);
            }
        }
        out.push(b'}');
    }
    out.extend_from_slice(b"]},\"result\":\"success\"");
    if let Some(t) = tag {
        out.extend_from_slice(b",\"tag\":");
        put(&mut out, t);
    }
    out.push(b'}');
    out
}

/// `v` as JSON at the end of `out`. Writing to a Vec cannot fail, nor
/// can serializing a `Value`, a str or numbers.
fn put<T: serde::Serialize + ?Sized>(out: &mut Vec<u8>, v: &T) {
    let _ = serde_json::to_writer(&mut *out, v);
}

/// What several fields of one torrent are computed from, worked out once
/// per torrent rather than once per field (1,000 torrents in a reply).
struct Derived<'a> {
    size_when_done: u64,
    total_size: u64,
    left: u64,
    complete: bool,
    /// The files, pad files left out.
    files: Vec<&'a crate::metainfo::FileEntry>,
}

impl<'a> Derived<'a> {
    fn of(v: &'a View) -> Derived<'a> {
        let s = &v.status;
        let meta = v.meta.as_deref();
        // Not started yet in this run: the wanted files' sizes.
        let size_when_done = match meta {
            Some(m) if s.total == 0 => m
                .info
                .files
                .iter()
                .filter(|f| !f.pad)
                .enumerate()
                .filter(|(i, _)| !v.spec.unwanted.contains(&(i + 1)))
                .map(|(_, f)| f.length)
                .sum(),
            _ => s.total,
        };
        let left = size_when_done.saturating_sub(s.have);
        Derived {
            size_when_done,
            total_size: meta.map_or(s.total, |m| m.info.total_length),
            left,
            complete: size_when_done > 0 && left == 0,
            files: meta
                .map(|m| m.info.files.iter().filter(|f| !f.pad).collect())
                .unwrap_or_default(),
        }
    }
}

/// Whether answering `fields` for `v` needs a snapshot of its actor (a
/// round trip to it). Only a running torrent has one; and the counts of
/// peers sending to us and getting from us are 0 without asking when its
/// status shows no peer connected, which spares the round trip for every
/// idle seed in a `transmission-remote -l` (it asks for both counts).
pub fn needs_snapshot(fields: &[String], v: &View) -> bool {
    v.running
        && fields.iter().any(|f| match f.as_str() {
            "files" | "fileStats" | "peers" => true,
            "peersSendingToUs" | "peersGettingFromUs" => v.status.peers_connected > 0,
            _ => false,
        })
}

fn field(v: &View, snap: Option<&Snapshot>, d: &Derived, name: &str, now: u64) -> Option<Value> {
    let s = &v.status;
    let meta = v.meta.as_deref();
    let (size_when_done, total_size, left, complete) =
        (d.size_when_done, d.total_size, d.left, d.complete);
    let files = &d.files;
    let wanted = |i: usize| !v.spec.unwanted.contains(&(i + 1));
    let done = |i: usize| -> u64 {
        match snap {
            Some(sn) if !sn.file_done.is_empty() => sn.file_done.get(i).copied().unwrap_or(0),
            // Stopped: complete is all we know without reading the disk.
            _ if complete && wanted(i) => files.get(i).map_or(0, |f| f.length),
            _ => 0,
        }
    };
    let kb = |b: Option<u64>| b.map_or(0, |b| b / SPEED_UNIT);
    Some(match name {
        "id" => json!(v.id),
        "hashString" => json!(v.info_hash.to_hex()),
        "name" => json!(s.name),
        "status" => json!(status_code(v)),
        "totalSize" => json!(total_size),
        "sizeWhenDone" => json!(size_when_done),
        "leftUntilDone" => json!(left),
        "haveValid" => json!(s.have),
        "haveUnchecked" | "corruptEver" | "desiredAvailable" | "bandwidthPriority"
        | "queuePosition" | "webseedsSendingToUs" | "editDate" | "manualAnnounceTime" => {
            json!(0)
        }
        "percentDone" => json!(if size_when_done == 0 {
            0.0
        } else {
            s.have as f64 / size_when_done as f64
        }),
        "metadataPercentComplete" => json!(if meta.is_some() { 1.0 } else { 0.0 }),
        "recheckProgress" => json!(match s.phase {
            Phase::Checking { done, total } if total > 0 => f64::from(done) / f64::from(total),
            _ => 0.0,
        }),
        "rateDownload" => json!(if v.running { s.down_rate } else { 0 }),
        "rateUpload" => json!(if v.running { s.up_rate } else { 0 }),
        "downloadedEver" => json!(v.ever_bytes.0),
        "uploadedEver" => json!(v.ever_bytes.1),
        "uploadRatio" => {
            let base = v.ever_bytes.0.max(s.have);
            json!(if base == 0 {
                -1.0
            } else {
                v.ever_bytes.1 as f64 / base as f64
            })
        }
        "eta" => json!(if complete || s.down_rate == 0 || !v.running {
            -1
        } else {
            (left / s.down_rate) as i64
        }),
        "peersConnected" => json!(if v.running { s.peers_connected } else { 0 }),
        "peersSendingToUs" => json!(
            snap.map_or(0, |sn| sn.peers.iter().filter(|p| p.down_rate > 0).count())
        ),
        "peersGettingFromUs" => json!(
            snap.map_or(0, |sn| sn.peers.iter().filter(|p| p.up_rate > 0).count())
        ),
        "peersFrom" => json!({"fromTracker": 0, "fromDht": 0, "fromPex": 0, "fromLpd": 0,
            "fromIncoming": 0, "fromCache": 0, "fromLtep": 0}),
        "error" => json!(if v.error.is_some() { 3 } else { 0 }),
        "errorString" => json!(v.error.clone().unwrap_or_default()),
        "isFinished" => json!(!v.running && complete && !v.spec.paused),
        "isStalled" => json!(false),
        "isPrivate" => json!(v.spec.private),
        "addedDate" => json!(v.spec.added),
        "startDate" => json!(v.spec.added),
        "activityDate" => json!(if is_active(v) { now } else { v.spec.added }),
        "doneDate" => json!(v.spec.done.unwrap_or(0)),
        "dateCreated" => json!(meta.and_then(|m| m.creation_date).unwrap_or(0)),
        "secondsDownloading" | "secondsSeeding" => json!(0),
        "downloadDir" => json!(v.spec.dir.to_string_lossy()),
        "comment" => json!(meta.and_then(|m| m.comment.clone()).unwrap_or_default()),
        "creator" => json!(meta.and_then(|m| m.created_by.clone()).unwrap_or_default()),
        "pieceCount" => json!(meta.map_or(0, |m| m.info.piece_count())),
        "pieceSize" => json!(meta.map_or(0, |m| m.info.piece_length)),
        "magnetLink" => json!(v.spec.magnet),
        "torrentFile" => json!(""),
        "labels" => json!([]),
        "honorsSessionLimits" => json!(true),
        "peer-limit" => json!(0),
        "downloadLimit" => json!(kb(v.spec.down_limit)),
        "downloadLimited" => json!(v.spec.down_limit.is_some()),
        "uploadLimit" => json!(kb(v.spec.up_limit)),
        "uploadLimited" => json!(v.spec.up_limit.is_some()),
        "seedRatioLimit" => json!(v.spec.seed_ratio.unwrap_or(2.0)),
        "seedRatioMode" => json!(if v.spec.seed_ratio.is_some() { 1 } else { 0 }),
        "file-count" => json!(files.len()),
        "files" => Value::Array(
            files
                .iter()
                .enumerate()
                .map(|(i, f)| {
                    json!({"name": f.path.join("/"), "length": f.length, "bytesCompleted": done(i)})
                })
                .collect(),
        ),
        "fileStats" => Value::Array(
            (0..files.len())
                .map(|i| json!({"bytesCompleted": done(i), "wanted": wanted(i), "priority": 0}))
                .collect(),
        ),
        "priorities" => Value::Array(files.iter().map(|_| json!(0)).collect()),
        "wanted" => Value::Array(
            (0..files.len())
                .map(|i| json!(u8::from(wanted(i))))
                .collect(),
        ),
        "trackers" | "trackerStats" => {
            let tiers = meta.map(|m| m.tracker_tiers()).unwrap_or_default();
            let mut list = Vec::new();
            for (tier, urls) in tiers.iter().enumerate() {
                for url in urls {
                    let id = list.len();
                    let host = url.split('/').take(3).collect::<Vec<_>>().join("/");
                    list.push(if name == "trackers" {
                        json!({"announce": url, "id": id, "scrape": "", "tier": tier})
                    } else {
                        json!({"announce": url, "id": id, "scrape": "", "tier": tier,
                            "host": host, "lastAnnounceSucceeded": false,
                            "hasAnnounced": false, "hasScraped": false,
                            "announceState": 0, "scrapeState": 0,
                            "seederCount": -1, "leecherCount": -1, "downloadCount": -1,
                            "lastAnnounceResult": "", "lastAnnouncePeerCount": 0,
                            "isBackup": false})
                    });
                }
            }
            Value::Array(list)
        }
        "peers" => Value::Array(
            snap.map(|sn| {
                sn.peers
                    .iter()
                    .map(|p| {
                        json!({
                            "address": p.addr.ip().to_string(), "port": p.addr.port(),
                            "clientName": p.client,
                            "rateToClient": p.down_rate, "rateToPeer": p.up_rate,
                            "isEncrypted": p.encrypted, "isUTP": p.utp,
                            "isIncoming": !p.outgoing,
                            "isDownloadingFrom": p.down_rate > 0,
                            "isUploadingTo": p.up_rate > 0,
                            "peerIsChoked": p.choked, "peerIsInterested": p.interested,
                            "clientIsChoked": false, "clientIsInterested": true,
                            "progress": if p.seed { 1.0 } else { 0.0 },
                            "flagStr": format!("{}{}", if p.encrypted { "E" } else { "" }, if p.utp { "T" } else { "" }),
                        })
                    })
                    .collect()
            })
            .unwrap_or_default(),
        ),
        _ => return None,
    })
}

/// torrent-add's reply arguments for an added or a duplicate torrent.
pub fn added(duplicate: bool, id: u32, name: &str, ih: InfoHash) -> Value {
    let key = if duplicate {
        "torrent-duplicate"
    } else {
        "torrent-added"
    };
    json!({ key: {"id": id, "name": name, "hashString": ih.to_hex()} })
}

#[cfg(test)]
mod tests;
