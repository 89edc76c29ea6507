//! `--json`: one JSON object per line on stdout for every event, so scripts
//! follow a download without scraping text. The schema (documented in the
//! README) is stable: fields are only ever added.
//!
//! Every line has `event`, `ts` (Unix time in seconds, millisecond
//! precision) and `info_hash` (40 hex digits). The session sends discrete
//! facts ([`SessionEvent`]) through a bounded channel; progress and peer
//! counts are sampled from the status snapshot once a second.

use crate::id::InfoHash;
use crate::session::status::{Phase, SessionEvent, Status};
use serde_json::{Value, json};
use std::time::{Duration, SystemTime, UNIX_EPOCH};
use tokio::sync::{mpsc, watch};

/// Capacity of the session's event channel. Progress keeps flowing even if
/// a burst of file events overflows it; overflow is counted, not buffered.
pub const EVENT_QUEUE: usize = 4096;

fn now_ts() -> f64 {
    let d = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    (d.as_millis() as f64) / 1000.0
}

/// One line: `{"event": NAME, "ts": …, "info_hash": …, ...fields}`.
pub fn line(name: &str, info_hash: InfoHash, fields: Value) -> String {
    line_v2(name, info_hash, None, fields)
}

/// [`line()`] with `info_hash_v2` (64 hex digits) too, once a torrent is
/// known to be v2 or hybrid.
fn line_v2(name: &str, info_hash: InfoHash, v2: Option<&str>, fields: Value) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), json!(name));
    obj.insert("ts".into(), json!(now_ts()));
    obj.insert("info_hash".into(), json!(info_hash.to_hex()));
    if let Some(v2) = v2 {
        obj.insert("info_hash_v2".into(), json!(v2));
    }
    if let Value::Object(extra) = fields {
        obj.extend(extra);
    }
    Value::Object(obj).to_string()
}

/// The line for a session event (with `info_hash_v2` when `v2` is known).
pub fn session_line(info_hash: InfoHash, v2: Option<&str>, e: &SessionEvent) -> String {
    match e {
        SessionEvent::Metadata {
            name,
            size,
            pieces,
            piece_length,
            files,
            info_hash_v2,
        } => {
            let files: Vec<Value> = files
                .iter()
                .enumerate()
                .map(|(i, (path, len))| json!({"index": i + 1, "path": path, "size": len}))
                .collect();
            let mut fields = json!({"name": name, "size": size, "pieces": pieces,
                                    "piece_length": piece_length, "files": files});
            if let (Some(v2), Some(obj)) = (info_hash_v2, fields.as_object_mut()) {
                obj.insert("info_hash_v2".into(), json!(v2));
            }
            line_v2("metadata", info_hash, v2, fields)
        }
        SessionEvent::PieceFailed { piece } => {
            line_v2("piece_failed", info_hash, v2, json!({"piece": piece}))
        }
        SessionEvent::FileDone { index, path } => line_v2(
            "file_done",
            info_hash,
            v2,
            json!({"index": index, "path": path}),
        ),
        SessionEvent::Complete {
            elapsed,
            downloaded,
        } => line_v2(
            "complete",
            info_hash,
            v2,
            json!({"elapsed": elapsed.as_secs_f64(), "downloaded": downloaded}),
        ),
        SessionEvent::DiskError { message } | SessionEvent::Warning { message } => line_v2(
            "error",
            info_hash,
            v2,
            json!({"message": message, "fatal": false}),
        ),
        SessionEvent::PeerConnected {
            addr,
            link,
            outgoing,
        } => line_v2(
            "peer_connected",
            info_hash,
            v2,
            json!({"addr": addr.to_string(), "transport": link.transport.to_string(),
                   "encrypted": link.encrypted, "source": link.source,
                   "outgoing": outgoing}),
        ),
        SessionEvent::PeerDisconnected { addr } => line_v2(
            "peer_disconnected",
            info_hash,
            v2,
            json!({"addr": addr.to_string()}),
        ),
    }
}

/// The `progress` line for a status snapshot (with `info_hash_v2` when
/// `v2` is known).
pub fn progress_line(s: &Status, v2: Option<&str>) -> String {
    let eta = (s.down_rate > 0 && s.total > 0)
        .then(|| s.total.saturating_sub(s.have) as f64 / s.down_rate as f64);
    line_v2(
        "progress",
        s.info_hash,
        v2,
        json!({
            "phase": phase_name(s.phase),
            "have": s.have,
            "total": s.total,
            "downloaded": s.downloaded,
            "uploaded": s.uploaded,
            "down_rate": s.down_rate,
            "up_rate": s.up_rate,
            "peers": s.peers_connected,
            "seeds": s.seeds_connected,
            "eta": eta,
            "paused": s.disk_paused,
            "blocked": s.blocked,
        }),
    )
}

/// A fatal error, for scripts; `info_hash` is null if it was not known yet.
pub fn error_line(info_hash: Option<InfoHash>, message: &str) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), json!("error"));
    obj.insert("ts".into(), json!(now_ts()));
    obj.insert("info_hash".into(), json!(info_hash.map(|h| h.to_hex())));
    obj.insert("message".into(), json!(message));
    obj.insert("fatal".into(), json!(true));
    Value::Object(obj).to_string()
}

/// The `port_mapping` line: what the router granted (`protocol`,
/// `transport`, `internal`, `external`, `external_ip`, `lifetime`) or why
/// not (`error`). A process-wide fact: `info_hash` is null.
pub fn port_mapping_line(e: &crate::portmap::Event) -> String {
    use crate::portmap::Event;
    let fields = match e {
        Event::Mapped {
            protocol,
            transport,
            internal,
            external,
            external_ip,
            lifetime,
        } => json!({"protocol": protocol.name(), "transport": transport.name(),
                    "internal": internal, "external": external,
                    "external_ip": external_ip.map(|ip| ip.to_string()),
                    "lifetime": lifetime}),
        Event::Failed {
            protocol,
            transport,
            internal,
            error,
        } => json!({"protocol": protocol.map(|p| p.name()), "transport": transport.name(),
                    "internal": internal, "error": error}),
    };
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), json!("port_mapping"));
    obj.insert("ts".into(), json!(now_ts()));
    obj.insert("info_hash".into(), Value::Null);
    if let Value::Object(extra) = fields {
        obj.extend(extra);
    }
    Value::Object(obj).to_string()
}

/// The `interface` line (`--interface`): the device's `name` and its
/// `state`, `up` or `blocked` (then `reason` says why). A process-wide
/// fact: `info_hash` is null.
pub fn interface_line(name: &str, state: crate::iface::LinkState) -> String {
    let mut obj = serde_json::Map::new();
    obj.insert("event".into(), json!("interface"));
    obj.insert("ts".into(), json!(now_ts()));
    obj.insert("info_hash".into(), Value::Null);
    obj.insert("name".into(), json!(name));
    obj.insert("state".into(), json!(state.name()));
    if let crate::iface::LinkState::Blocked(why) = state {
        obj.insert("reason".into(), json!(why.reason()));
    }
    Value::Object(obj).to_string()
}

/// Writes one line to stdout and flushes it (a closed pipe is ignored:
/// the download goes on).
pub fn emit(line: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

/// Prints `started`, then every session event as it comes, and `progress`
/// (plus `peer` when the counts change, and `seeding` once) every second,
/// until the session drops its status sender.
pub async fn render(
    info_hash: InfoHash,
    name: Option<String>,
    mut status: watch::Receiver<Status>,
    mut events: mpsc::Receiver<SessionEvent>,
) {
    emit(&line("started", info_hash, json!({ "name": name })));
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut peers = None;
    let mut seeding = false;
    let mut events_open = true;
    // A v2 or hybrid torrent's v2 hash, from its metadata on: every line
    // after that carries it too.
    let mut v2: Option<String> = None;
    loop {
        tokio::select! {
            e = events.recv(), if events_open => match e {
                Some(e) => emit(&session_line_tracking(info_hash, &mut v2, &e)),
                None => events_open = false,
            },
            r = status.changed() => {
                if r.is_err() {
                    break;
                }
                let s = status.borrow_and_update().clone();
                if s.phase == Phase::Seeding && !seeding {
                    // Everything the session said before this goes first.
                    while let Ok(e) = events.try_recv() {
                        emit(&session_line_tracking(info_hash, &mut v2, &e));
                    }
                    seeding = true;
                    emit(&progress_line(&s, v2.as_deref()));
                    emit(&line_v2("seeding", info_hash, v2.as_deref(), json!({"uploaded": s.uploaded})));
                }
            }
            _ = tick.tick() => {
                let s = status.borrow().clone();
                let counts = (
                    s.peers_connected,
                    s.seeds_connected,
                    s.peers_utp,
                    s.peers_encrypted,
                    s.peers_known,
                );
                if peers != Some(counts) {
                    peers = Some(counts);
                    emit(&peers_line(&s, v2.as_deref()));
                }
                emit(&progress_line(&s, v2.as_deref()));
            }
        }
    }
    while let Ok(e) = events.try_recv() {
        emit(&session_line_tracking(info_hash, &mut v2, &e));
    }
}

/// The line for `e`, remembering the v2 hash a metadata event names.
fn session_line_tracking(info_hash: InfoHash, v2: &mut Option<String>, e: &SessionEvent) -> String {
    if let SessionEvent::Metadata {
        info_hash_v2: Some(h),
        ..
    } = e
    {
        *v2 = Some(h.clone());
    }
    session_line(info_hash, v2.as_deref(), e)
}

/// The `stopped` line: the run is over.
pub fn stopped_line(info_hash: InfoHash, complete: bool, downloaded: u64, uploaded: u64) -> String {
    line(
        "stopped",
        info_hash,
        json!({"complete": complete, "downloaded": downloaded, "uploaded": uploaded}),
    )
}

/// The `peer` line: connection counts, sent when they change.
pub fn peers_line(s: &Status, v2: Option<&str>) -> String {
    line_v2(
        "peer",
        s.info_hash,
        v2,
        json!({"connected": s.peers_connected, "seeds": s.seeds_connected,
               "utp": s.peers_utp, "encrypted": s.peers_encrypted,
               "known": s.peers_known}),
    )
}

/// Stable lower-case names of the phases.
pub fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Checking { .. } => "checking",
        Phase::Queued => "queued",
        Phase::FindingPeers => "finding_peers",
        Phase::FetchingMetadata => "fetching_metadata",
        Phase::Downloading => "downloading",
        Phase::Seeding => "seeding",
        Phase::Stopping => "stopping",
    }
}

#[cfg(test)]
mod tests {
    /// Once a metadata event names a v2 hash, the lines after it (session
    /// events and progress) carry it beside the v1 one; before, none does.
    #[test]
    fn lines_after_a_hybrids_metadata_carry_its_v2_hash() {
        use super::*;
        let ih = InfoHash([0xab; 20]);
        let mut v2 = None;
        let before = session_line_tracking(ih, &mut v2, &SessionEvent::PieceFailed { piece: 1 });
        let before: Value = serde_json::from_str(&before).unwrap();
        assert!(before.get("info_hash_v2").is_none());
        let meta = SessionEvent::Metadata {
            name: "x".into(),
            size: 1,
            pieces: 1,
            piece_length: 16384,
            files: vec![],
            info_hash_v2: Some("cd".repeat(32)),
        };
        let m: Value = serde_json::from_str(&session_line_tracking(ih, &mut v2, &meta)).unwrap();
        assert_eq!(m["info_hash_v2"], "cd".repeat(32));
        let after = session_line_tracking(ih, &mut v2, &SessionEvent::PieceFailed { piece: 2 });
        let after: Value = serde_json::from_str(&after).unwrap();
        assert_eq!(after["info_hash_v2"], "cd".repeat(32));
        assert_eq!(after["info_hash"], "ab".repeat(20));
        let s = Status {
            info_hash: ih,
            ..Status::default()
        };
        let p: Value = serde_json::from_str(&progress_line(&s, v2.as_deref())).unwrap();
        assert_eq!(p["info_hash_v2"], "cd".repeat(32));
    }

    #[test]
    fn interface_lines_say_the_state_and_why() {
        use crate::iface::{Blocked, LinkState};
        let b: Value =
            serde_json::from_str(&interface_line("wg0", LinkState::Blocked(Blocked::Down)))
                .unwrap();
        assert_eq!(b["event"], "interface");
        assert_eq!(b["name"], "wg0");
        assert_eq!(b["state"], "blocked");
        assert_eq!(b["reason"], "the interface is down");
        assert!(b["info_hash"].is_null());
        let u: Value = serde_json::from_str(&interface_line("wg0", LinkState::Up)).unwrap();
        assert_eq!(u["state"], "up");
        assert!(u.get("reason").is_none());
    }

    use super::*;

    #[test]
    fn lines_are_json_objects_with_the_common_fields() {
        let ih = InfoHash([0xab; 20]);
        let l = session_line(
            ih,
            None,
            &SessionEvent::Metadata {
                name: "a \"quoted\"\nname".into(),
                size: 10,
                pieces: 1,
                piece_length: 16384,
                files: vec![("d/f".into(), 10)],
                info_hash_v2: Some("cd".repeat(32)),
            },
        );
        assert!(!l.contains('\n'));
        let v: Value = serde_json::from_str(&l).unwrap();
        assert_eq!(v["event"], "metadata");
        assert_eq!(v["info_hash"], "ab".repeat(20));
        assert!(v["ts"].as_f64().unwrap() > 1.7e9);
        assert_eq!(v["name"], "a \"quoted\"\nname");
        assert_eq!(v["files"][0]["index"], 1);
        assert_eq!(v["info_hash_v2"], "cd".repeat(32));
        let p: Value = serde_json::from_str(&progress_line(
            &Status {
                info_hash: ih,
                total: 100,
                have: 50,
                down_rate: 10,
                phase: Phase::Downloading,
                ..Status::default()
            },
            None,
        ))
        .unwrap();
        assert_eq!(p["event"], "progress");
        assert_eq!(p["phase"], "downloading");
        assert_eq!(p["eta"], 5.0);
    }

    #[test]
    fn port_mapping_lines() {
        use crate::portmap::{Event, Protocol, Transport};
        let m: Value = serde_json::from_str(&port_mapping_line(&Event::Mapped {
            protocol: Protocol::Pcp,
            transport: Transport::Udp,
            internal: 6881,
            external: 40000,
            external_ip: Some("203.0.113.1".parse().unwrap()),
            lifetime: 7200,
        }))
        .unwrap();
        assert_eq!(m["event"], "port_mapping");
        assert_eq!(m["info_hash"], Value::Null);
        assert_eq!(
            (m["protocol"].as_str(), m["transport"].as_str()),
            (Some("pcp"), Some("udp"))
        );
        assert_eq!(
            (m["internal"].as_u64(), m["external"].as_u64()),
            (Some(6881), Some(40000))
        );
        assert_eq!(
            (m["lifetime"].as_u64(), m["external_ip"].as_str()),
            (Some(7200), Some("203.0.113.1"))
        );
        let f: Value = serde_json::from_str(&port_mapping_line(&Event::Failed {
            protocol: Some(Protocol::Upnp),
            transport: Transport::Tcp,
            internal: 6881,
            error: "refused".into(),
        }))
        .unwrap();
        assert_eq!(
            (f["protocol"].as_str(), f["error"].as_str()),
            (Some("upnp"), Some("refused"))
        );
        assert!(f.get("external").is_none());
    }

    #[test]
    fn peer_events_say_how_and_whence() {
        use crate::peer::transport::{Link, Transport};
        let ih = InfoHash([1; 20]);
        let addr: std::net::SocketAddr = "10.0.0.1:6881".parse().unwrap();
        let c: Value = serde_json::from_str(&session_line(
            ih,
            None,
            &SessionEvent::PeerConnected {
                addr,
                link: Link {
                    transport: Transport::Utp,
                    encrypted: true,
                    source: "PEX",
                },
                outgoing: true,
            },
        ))
        .unwrap();
        assert_eq!(c["event"], "peer_connected");
        assert_eq!(c["addr"], "10.0.0.1:6881");
        assert_eq!(c["transport"], "uTP");
        assert_eq!(c["encrypted"], true);
        assert_eq!(c["source"], "PEX");
        assert_eq!(c["outgoing"], true);
        let d: Value = serde_json::from_str(&session_line(
            ih,
            None,
            &SessionEvent::PeerDisconnected { addr },
        ))
        .unwrap();
        assert_eq!(d["event"], "peer_disconnected");
        assert_eq!(d["addr"], "10.0.0.1:6881");
        let p: Value = serde_json::from_str(&peers_line(
            &Status {
                peers_connected: 3,
                peers_utp: 1,
                peers_encrypted: 2,
                ..Status::default()
            },
            None,
        ))
        .unwrap();
        assert_eq!(
            (p["connected"].as_u64(), p["utp"].as_u64()),
            (Some(3), Some(1))
        );
        assert_eq!(p["encrypted"], 2);
    }
}
