use super::*;
use crate::session::manager::Spec;
use crate::session::status::Status;
use crate::session::torrent::PeerView;
use std::sync::Arc;

fn call(body: &str) -> Call {
    parse(body.as_bytes())
        .unwrap_or_else(|r| panic!("{body}: {}", r.why))
        .call
}

fn refused(body: &str) -> Refused {
    parse(body.as_bytes()).expect_err(body)
}

const HASH: &str = "0123456789abcdef0123456789abcdef01234567";

#[test]
fn every_method_parses_into_its_call() {
    assert_eq!(call(r#"{"method":"session-get"}"#), Call::SessionGet);
    assert_eq!(call(r#"{"method":"session-stats"}"#), Call::SessionStats);
    assert_eq!(
        call(
            r#"{"method":"session-set","arguments":{"speed-limit-down":100,
            "speed-limit-down-enabled":true,"download-dir":"/d","peer-port":51413,
            "seedRatioLimit":1.5,"seedRatioLimited":true,"alt-speed-enabled":false}}"#
        ),
        Call::SessionSet(SessionSet {
            down: Some(100),
            down_enabled: Some(true),
            download_dir: Some("/d".into()),
            peer_port: Some(51413),
            seed_ratio: Some(1.5),
            seed_ratio_enabled: Some(true),
            ..SessionSet::default()
        })
    );
    let Call::SessionSet(s) =
        call(r#"{"method":"session-set","arguments":{"alt-speed-enabled":true}}"#)
    else {
        panic!()
    };
    assert_eq!(s.refused, vec!["alt-speed-enabled".to_string()]);
    assert_eq!(
        call(
            r#"{"method":"torrent-add","arguments":{"metainfo":"ZDQ6aW5mb2Vl",
            "download-dir":"/x","paused":true,"files-unwanted":[1,2]}}"#
        ),
        Call::TorrentAdd(TorrentAdd {
            metainfo: Some(b"d4:infoee".to_vec()),
            download_dir: Some("/x".into()),
            paused: Some(true),
            unwanted: Some(vec![1, 2]),
            ..TorrentAdd::default()
        })
    );
    assert_eq!(
        call(r#"{"method":"torrent-get","arguments":{"ids":[1,"2"],"fields":["id","name"]}}"#),
        Call::TorrentGet {
            ids: Ids::List(vec![IdRef::Id(1), IdRef::Id(2)]),
            fields: vec!["id".into(), "name".into()],
            table: false,
        }
    );
    let ih = InfoHash::parse(HASH).unwrap();
    assert_eq!(
        call(&format!(
            r#"{{"method":"torrent-get","arguments":{{"ids":"{HASH}","fields":[],"format":"table"}}}}"#
        )),
        Call::TorrentGet {
            ids: Ids::List(vec![IdRef::Hash(ih)]),
            fields: vec![],
            table: true,
        }
    );
    assert_eq!(
        call(r#"{"method":"torrent-get","arguments":{"ids":"recently-active","fields":["id"]}}"#),
        Call::TorrentGet {
            ids: Ids::RecentlyActive,
            fields: vec!["id".into()],
            table: false,
        }
    );
    for (m, action) in [
        ("torrent-start", Action::Start),
        ("torrent-start-now", Action::Start),
        ("torrent-stop", Action::Stop),
        ("torrent-verify", Action::Verify),
        ("torrent-reannounce", Action::Reannounce),
    ] {
        assert_eq!(
            call(&format!(r#"{{"method":"{m}","arguments":{{"ids":[3]}}}}"#)),
            Call::Action {
                action,
                ids: Ids::List(vec![IdRef::Id(3)])
            }
        );
    }
    assert_eq!(
        call(r#"{"method":"torrent-stop"}"#),
        Call::Action {
            action: Action::Stop,
            ids: Ids::All
        }
    );
    assert_eq!(
        call(r#"{"method":"torrent-remove","arguments":{"ids":[1],"delete-local-data":true}}"#),
        Call::TorrentRemove {
            ids: Ids::List(vec![IdRef::Id(1)]),
            delete: true
        }
    );
    assert_eq!(
        call(
            r#"{"method":"torrent-set","arguments":{"ids":[1],"files-unwanted":[0],
            "files-wanted":[1],"downloadLimit":50,"downloadLimited":true,"uploadLimited":false,
            "seedRatioLimit":2.5,"seedRatioMode":1}}"#
        ),
        Call::TorrentSet(TorrentSet {
            ids: Ids::List(vec![IdRef::Id(1)]),
            wanted: vec![1],
            unwanted: vec![0],
            down_limit: Some(50),
            down_limited: Some(true),
            up_limit: None,
            up_limited: Some(false),
            seed_ratio: Some(2.5),
            seed_ratio_mode: Some(1),
        })
    );
    assert_eq!(
        call(
            r#"{"method":"torrent-set-location","arguments":{"ids":[1],"location":"/n","move":true}}"#
        ),
        Call::SetLocation {
            ids: Ids::List(vec![IdRef::Id(1)]),
            location: "/n".into(),
            move_data: true
        }
    );
    assert_eq!(
        call(r#"{"method":"free-space","arguments":{"path":"/d"}}"#),
        Call::FreeSpace { path: "/d".into() }
    );
}

#[test]
fn the_tag_is_kept_and_echoed_also_in_an_error() {
    let r = parse(br#"{"method":"session-get","tag":42}"#).unwrap();
    assert_eq!(r.tag, Some(json!(42)));
    let body = reply("success", json!({}), r.tag.as_ref());
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["tag"], 42);
    assert_eq!(v["result"], "success");
    let bad = refused(r#"{"method":"no-such-method","tag":7}"#);
    assert_eq!(bad.tag, Some(json!(7)));
    assert!(bad.why.contains("no-such-method"), "{}", bad.why);
    let v: Value = serde_json::from_slice(&super::refused(&bad)).unwrap();
    assert_eq!(v["tag"], 7);
    assert_ne!(v["result"], "success");
}

#[test]
fn malformed_requests_and_wrong_types_are_error_results() {
    for body in [
        "",
        "{",
        "[]",
        "null",
        r#"{"method":5}"#,
        r#"{"arguments":{}}"#,
        r#"{"method":"torrent-get","arguments":[]}"#,
        r#"{"method":"torrent-get","arguments":{"ids":{}}}"#,
        r#"{"method":"torrent-get","arguments":{"ids":[-1]}}"#,
        r#"{"method":"torrent-get","arguments":{"ids":[1.5]}}"#,
        r#"{"method":"torrent-get","arguments":{"ids":"nope"}}"#,
        r#"{"method":"torrent-get","arguments":{"fields":"id"}}"#,
        r#"{"method":"torrent-get","arguments":{"fields":[1]}}"#,
        r#"{"method":"torrent-add","arguments":{}}"#,
        r#"{"method":"torrent-add","arguments":{"metainfo":"***"}}"#,
        r#"{"method":"torrent-add","arguments":{"filename":5}}"#,
        r#"{"method":"torrent-add","arguments":{"filename":"x","paused":"yes"}}"#,
        r#"{"method":"torrent-set","arguments":{"files-unwanted":[-3]}}"#,
        r#"{"method":"torrent-set","arguments":{"downloadLimit":"fast"}}"#,
        r#"{"method":"torrent-set","arguments":{"seedRatioLimit":-1}}"#,
        r#"{"method":"session-set","arguments":{"speed-limit-down":-5}}"#,
        r#"{"method":"torrent-set-location","arguments":{"ids":[1]}}"#,
        r#"{"method":"free-space","arguments":{}}"#,
    ] {
        let r = refused(body);
        assert!(!r.why.is_empty(), "{body}");
    }
    // Deep nesting is refused by serde_json's recursion limit, not a
    // stack overflow.
    let deep = format!(
        r#"{{"method":"session-get","arguments":{{"x":{}{}}}}}"#,
        "[".repeat(100_000),
        "]".repeat(100_000)
    );
    assert!(parse(deep.as_bytes()).is_err());
}

fn view(running: bool) -> View {
    let info = b"d5:filesld6:lengthi30e4:pathl1:aeed6:lengthi20e4:pathl1:beee4:name1:t12:piece lengthi16e6:pieces80:01234567890123456789012345678901234567890123456789012345678901234567890123456789e";
    let meta = Metainfo::from_info_bytes(info, vec![vec!["http://tr/announce".into()]]).unwrap();
    View {
        id: 4,
        info_hash: meta.info_hash,
        spec: Spec {
            info_hash: meta.info_hash.to_hex(),
            magnet: "magnet:?xt=urn:btih:x".into(),
            private: false,
            dir: "/data".into(),
            paused: !running,
            unwanted: vec![2],
            down_limit: Some(50_000),
            up_limit: None,
            seed_ratio: None,
            added: 1000,
            done: None,
            downloaded: 0,
            uploaded: 0,
        },
        status: Status {
            name: "t".into(),
            phase: Phase::Downloading,
            have: 16,
            total: 32,
            down_rate: 4,
            up_rate: 1,
            downloaded: 16,
            uploaded: 8,
            peers_connected: 1,
            ..Status::default()
        },
        running,
        error: None,
        meta: Some(Arc::new(meta)),
        session_bytes: (16, 8),
        ever_bytes: (16, 8),
    }
}

use crate::metainfo::Metainfo;

#[test]
fn torrent_get_answers_the_fields_asked_and_leaves_out_unknown_ones() {
    let v = view(true);
    let snap = Snapshot {
        file_done: vec![16, 0],
        peers: vec![PeerView {
            addr: "10.0.0.2:6881".parse().unwrap(),
            down_rate: 4,
            up_rate: 0,
            seed: true,
            utp: false,
            encrypted: true,
            outgoing: true,
            interested: false,
            choked: true,
            client: "TR3000".into(),
        }],
        peers_known: 3,
    };
    let fields: Vec<String> = [
        "id",
        "name",
        "hashString",
        "status",
        "percentDone",
        "totalSize",
        "sizeWhenDone",
        "leftUntilDone",
        "eta",
        "downloadDir",
        "files",
        "fileStats",
        "wanted",
        "priorities",
        "peers",
        "peersSendingToUs",
        "peersGettingFromUs",
        "trackers",
        "downloadLimit",
        "downloadLimited",
        "uploadRatio",
        "error",
        "noSuchField",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    let got = Value::Object(torrent_fields(&v, Some(&snap), &fields, 2000));
    assert_eq!(got["id"], 4);
    assert_eq!(got["name"], "t");
    assert_eq!(got["status"], 4);
    assert_eq!(got["percentDone"], 0.5);
    assert_eq!(got["totalSize"], 50);
    assert_eq!(got["sizeWhenDone"], 32);
    assert_eq!(got["leftUntilDone"], 16);
    assert_eq!(got["eta"], 4);
    assert_eq!(got["downloadDir"], "/data");
    assert_eq!(got["files"][0]["name"], "t/a");
    assert_eq!(got["files"][0]["length"], 30);
    assert_eq!(got["files"][0]["bytesCompleted"], 16);
    assert_eq!(got["fileStats"][1]["wanted"], false);
    assert_eq!(got["wanted"], json!([1, 0]));
    assert_eq!(got["priorities"], json!([0, 0]));
    assert_eq!(got["peers"][0]["address"], "10.0.0.2");
    assert_eq!(got["peers"][0]["clientName"], "TR3000");
    assert_eq!(got["peersSendingToUs"], 1);
    assert_eq!(got["peersGettingFromUs"], 0);
    assert_eq!(got["trackers"][0]["announce"], "http://tr/announce");
    assert_eq!(got["downloadLimit"], 50);
    assert_eq!(got["downloadLimited"], true);
    assert_eq!(got["uploadRatio"], 0.5);
    assert_eq!(got["error"], 0);
    assert!(got.get("noSuchField").is_none());
    // Stopped: status 0, no rates, no ETA.
    let stopped = view(false);
    let got = Value::Object(torrent_fields(&stopped, None, &fields, 2000));
    assert_eq!(got["status"], 0);
    assert_eq!(got["eta"], -1);
    assert_eq!(got["peers"], json!([]));
}

#[test]
fn only_a_running_torrent_with_peers_is_asked_for_its_peer_counts() {
    let f = |names: &[&str]| names.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    // transmission-remote -l's fields.
    let list = f(&[
        "id",
        "name",
        "status",
        "peersGettingFromUs",
        "peersSendingToUs",
        "uploadRatio",
    ]);
    let mut v = view(true);
    assert!(needs_snapshot(&list, &v));
    v.status.peers_connected = 0;
    assert!(!needs_snapshot(&list, &v));
    // Nor does it change the answer: both counts are 0 without it.
    let got = Value::Object(torrent_fields(&v, None, &list, 2000));
    assert_eq!(got["peersSendingToUs"], 0);
    assert_eq!(got["peersGettingFromUs"], 0);
    // Files and the peer list always ask a running torrent.
    assert!(needs_snapshot(&f(&["fileStats"]), &v));
    assert!(needs_snapshot(&f(&["peers"]), &v));
    assert!(!needs_snapshot(
        &f(&["id", "name", "rateUpload"]),
        &view(true)
    ));
    assert!(!needs_snapshot(&f(&["files", "peers"]), &view(false)));
}

#[test]
fn torrent_get_written_straight_is_the_reply_built_from_values() {
    let (running, stopped) = (view(true), view(false));
    let snap = Snapshot {
        file_done: vec![16, 0],
        peers: vec![],
        peers_known: 0,
    };
    let views = vec![running.clone(), stopped.clone()];
    let snaps = vec![Some(snap.clone()), None];
    // Every field torrent_fields knows, one twice, one unknown, a name to escape.
    let fields: Vec<String> = [
        "id",
        "name",
        "hashString",
        "status",
        "percentDone",
        "totalSize",
        "sizeWhenDone",
        "leftUntilDone",
        "eta",
        "downloadDir",
        "files",
        "fileStats",
        "wanted",
        "priorities",
        "peers",
        "peersSendingToUs",
        "peersGettingFromUs",
        "peersConnected",
        "trackers",
        "trackerStats",
        "downloadLimit",
        "downloadLimited",
        "uploadLimit",
        "uploadLimited",
        "uploadRatio",
        "error",
        "errorString",
        "isFinished",
        "addedDate",
        "doneDate",
        "magnetLink",
        "rateDownload",
        "rateUpload",
        "haveValid",
        "id",
        "no\"such",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect();
    for (removed, tag) in [(None, None), (Some(&[3u32, 9][..]), Some(json!(17)))] {
        let got = torrent_get_reply(&views, &snaps, &fields, 2000, removed, tag.as_ref());
        let got: Value = serde_json::from_slice(&got).expect("valid JSON");
        let torrents: Vec<Value> = views
            .iter()
            .zip(&snaps)
            .map(|(v, s)| Value::Object(torrent_fields(v, s.as_ref(), &fields, 2000)))
            .collect();
        let mut args = json!({ "torrents": torrents });
        if let Some(r) = removed {
            args["removed"] = json!(r);
        }
        let want: Value = serde_json::from_slice(&reply("success", args, tag.as_ref())).unwrap();
        assert_eq!(got, want);
        assert_eq!(got["arguments"]["torrents"][0]["id"], 4);
    }
    // None at all.
    let got = torrent_get_reply(&[], &[], &fields, 0, None, None);
    assert_eq!(
        serde_json::from_slice::<Value>(&got).unwrap(),
        json!({"arguments": {"torrents": []}, "result": "success"})
    );
}

#[test]
fn status_numbers_follow_transmission() {
    let mut v = view(true);
    for (phase, code) in [
        (Phase::Starting, 1),
        (Phase::Checking { done: 1, total: 2 }, 2),
        (Phase::Queued, 3),
        (Phase::FindingPeers, 4),
        (Phase::Downloading, 4),
        (Phase::Seeding, 6),
    ] {
        v.status.phase = phase;
        assert_eq!(status_code(&v), code, "{phase:?}");
    }
    v.running = false;
    assert_eq!(status_code(&v), 0);
}

#[test]
fn session_get_and_stats_report_what_clients_read() {
    let s = session_get(&SessionInfo {
        download_dir: "/dl".into(),
        peer_port: 51413,
        down_limit: 100_000,
        session_id: "abc".into(),
        ..SessionInfo::default()
    });
    assert_eq!(s["rpc-version"], RPC_VERSION);
    assert_eq!(s["download-dir"], "/dl");
    assert_eq!(s["peer-port"], 51413);
    assert_eq!(s["speed-limit-down"], 100);
    assert_eq!(s["speed-limit-down-enabled"], true);
    assert_eq!(s["speed-limit-up-enabled"], false);
    assert_eq!(s["session-id"], "abc");
    assert_eq!(s["units"]["speed-bytes"], 1000);
    let st = session_stats(&Stats {
        active: 2,
        paused: 1,
        downloaded: 10,
        ..Stats::default()
    });
    assert_eq!(st["torrentCount"], 3);
    assert_eq!(st["pausedTorrentCount"], 1);
    assert_eq!(st["current-stats"]["downloadedBytes"], 10);
    assert_eq!(st["current-stats"]["sessionCount"], 1);
    // Earlier runs add to the cumulative numbers only.
    let st = session_stats(&Stats {
        downloaded: 10,
        added: 1,
        seconds: 5,
        past: crate::daemon::stats::Totals {
            downloaded: 100,
            uploaded: 3,
            files_added: 2,
            session_count: 4,
            seconds_active: 50,
        },
        ..Stats::default()
    });
    assert_eq!(st["current-stats"]["downloadedBytes"], 10);
    assert_eq!(st["current-stats"]["uploadedBytes"], 0);
    assert_eq!(st["cumulative-stats"]["downloadedBytes"], 110);
    assert_eq!(st["cumulative-stats"]["uploadedBytes"], 3);
    assert_eq!(st["cumulative-stats"]["filesAdded"], 3);
    assert_eq!(st["cumulative-stats"]["sessionCount"], 5);
    assert_eq!(st["cumulative-stats"]["secondsActive"], 55);
}

#[test]
fn add_replies_name_the_torrent_added_or_already_there() {
    let ih = InfoHash::parse(HASH).unwrap();
    let a = added(false, 3, "n", ih);
    assert_eq!(a["torrent-added"]["id"], 3);
    assert_eq!(a["torrent-added"]["hashString"], HASH);
    let d = added(true, 3, "n", ih);
    assert_eq!(d["torrent-duplicate"]["name"], "n");
}
