use super::*;

fn req(event: Event) -> AnnounceRequest {
    let mut ih = [0u8; 20];
    for (i, b) in ih.iter_mut().enumerate() {
        *b = i as u8 * 13;
    }
    AnnounceRequest {
        info_hash: InfoHash(ih),
        peer_id: PeerId(*b"-BT0100-abcdefghijkl"),
        port: 6881,
        uploaded: 10,
        downloaded: 20,
        left: 30,
        event,
        numwant: Some(50),
        key: 0xdead_beef,
        tracker_id: None,
        also_at: Vec::new(),
    }
}

#[test]
fn http_url_encodes_bytes_and_fields() {
    let mut r = req(Event::Started);
    r.info_hash = InfoHash(*b"\x00\x01~ az.-_\xff\x80ABCDEFGHI");
    r.tracker_id = Some("a b&c".into());
    let url = http_url("http://t.example/announce", &r);
    assert_eq!(
        url,
        "http://t.example/announce?info_hash=%00%01~%20az.-_%FF%80ABCDEFGHI\
         &peer_id=-BT0100-abcdefghijkl&port=6881&uploaded=10&downloaded=20&left=30\
         &compact=1&no_peer_id=1&event=started&numwant=50&key=deadbeef&trackerid=a%20b%26c"
    );
}

#[test]
fn http_url_appends_to_existing_query_and_omits_none() {
    let mut r = req(Event::None);
    r.numwant = None;
    let url = http_url("http://t/a?passkey=xyz", &r);
    assert!(
        url.starts_with("http://t/a?passkey=xyz&info_hash="),
        "{url}"
    );
    assert!(!url.contains("event="));
    assert!(!url.contains("numwant="));
    let url = http_url("http://t/a?", &r);
    assert!(url.starts_with("http://t/a?info_hash="), "{url}");
    for (e, name) in [(Event::Completed, "completed"), (Event::Stopped, "stopped")] {
        assert!(http_url("http://t/a", &req(e)).contains(&format!("&event={name}&")));
    }
}

#[test]
fn parses_compact_response() {
    let body = b"d8:completei5e10:incompletei3e8:intervali1800e12:min intervali60e\
        5:peers12:\x7f\x00\x00\x01\x1a\xe1\x0a\x00\x00\x02\x00\x50\
        10:tracker id3:abc15:warning message4:slowe";
    let r = parse_http_response(body).unwrap();
    assert_eq!(r.complete, Some(5));
    assert_eq!(r.incomplete, Some(3));
    assert_eq!(r.interval, Some(Duration::from_secs(1800)));
    assert_eq!(r.min_interval, Some(Duration::from_secs(60)));
    assert_eq!(r.tracker_id.as_deref(), Some("abc"));
    assert_eq!(r.warning.as_deref(), Some("slow"));
    assert_eq!(
        r.peers,
        vec![
            "127.0.0.1:6881".parse::<SocketAddr>().unwrap(),
            "10.0.0.2:80".parse().unwrap()
        ]
    );
}

#[test]
fn parses_dict_model_and_peers6() {
    let mut body = b"d8:intervali60e5:peersl\
        d2:ip9:127.0.0.27:peer id20:aaaaaaaaaaaaaaaaaaaa4:porti1000ee\
        d2:ip3:::14:porti2000ee\
        d2:ip11:example.com4:porti3000ee\
        d2:ip8:10.0.0.14:porti0ee\
        d2:ip8:10.0.0.14:porti70000ee\
        i5e\
        e6:peers618:"
        .to_vec();
    let mut v6 = [0u8; 18];
    v6[0] = 0x20;
    v6[1] = 0x01;
    v6[15] = 7;
    v6[16] = 0x1f;
    v6[17] = 0x90;
    body.extend_from_slice(&v6);
    body.push(b'e');
    let r = parse_http_response(&body).unwrap();
    assert_eq!(
        r.peers,
        vec![
            "127.0.0.2:1000".parse::<SocketAddr>().unwrap(),
            "[::1]:2000".parse().unwrap(),
            "[2001::7]:8080".parse().unwrap(),
        ]
    );
}

#[test]
fn failure_reason_is_an_error_with_text() {
    let body = b"d14:failure reason17:torrent not founde";
    assert_eq!(
        parse_http_response(body),
        Err(TrackerError::Failure("torrent not found".into()))
    );
}

#[test]
fn partial_compact_entries_are_dropped() {
    let body = b"d5:peers8:\x01\x02\x03\x04\x00\x10\x05\x066:peers65:abcdee";
    let r = parse_http_response(body).unwrap();
    assert_eq!(r.peers, vec!["1.2.3.4:16".parse::<SocketAddr>().unwrap()]);
}

#[test]
fn junk_and_non_dicts_are_refused() {
    assert!(matches!(
        parse_http_response(b"d8:intervali5eeXYZ"),
        Err(TrackerError::Bencode(_))
    ));
    assert!(parse_http_response(b"d8:intervali5ee\r\n").is_ok());
    assert_eq!(parse_http_response(b"i5e"), Err(TrackerError::NotADict));
    assert!(matches!(
        parse_http_response(b"<html>"),
        Err(TrackerError::Bencode(_))
    ));
    assert!(matches!(
        parse_http_response(b"d5:peers"),
        Err(TrackerError::Bencode(_))
    ));
    assert!(matches!(
        parse_http_response(b""),
        Err(TrackerError::Bencode(_))
    ));
    // Negative and oversized numbers are ignored, not wrapped.
    let r = parse_http_response(b"d8:intervali-5e8:completei99999999999ee").unwrap();
    assert_eq!(r.interval, None);
    assert_eq!(r.complete, None);
}

#[test]
fn hostile_peer_counts_are_capped() {
    let n = MAX_PEERS + 500;
    let mut body = format!("d5:peers{}:", n * 6).into_bytes();
    for i in 0..n {
        body.extend_from_slice(&[10, 0, (i >> 8) as u8, i as u8, 0, 1]);
    }
    body.push(b'e');
    let r = parse_http_response(&body).unwrap();
    assert_eq!(r.peers.len(), MAX_PEERS);
    assert_eq!(r.peers_dropped, 500);
    // A length prefix far larger than the body is an error, not an allocation.
    assert!(parse_http_response(b"d5:peers999999999999:abce").is_err());
}

/// Dictionary-model peers are capped like compact ones: past
/// MAX_PEERS entries are skipped unread (even entries that are not
/// peers at all), and counted; peers6 gets no room past the cap.
#[test]
fn hostile_dict_peer_lists_are_capped() {
    let n = MAX_PEERS + 1234;
    let mut body = b"d5:peersl".to_vec();
    for i in 0..n {
        let ip = format!("127.1.{}.{}", (i >> 8) & 255, i & 255);
        body.extend_from_slice(format!("d2:ip{}:{ip}4:porti1ee", ip.len()).as_bytes());
    }
    // Past the cap: junk entries of every kind, skipped unread.
    body.extend_from_slice(b"i5e3:abclleed1:xi1eee6:peers618:");
    body.extend_from_slice(&[1u8; 18]);
    body.push(b'e');
    let r = parse_http_response(&body).unwrap();
    assert_eq!(r.peers.len(), MAX_PEERS);
    assert_eq!(r.peers[0], "127.1.0.0:1".parse::<SocketAddr>().unwrap());
    assert_eq!(r.peers_dropped, 1234 + 4 + 1);
    // Wrong-typed peer lists are ignored, not fatal.
    let r = parse_http_response(b"d5:peersi7e6:peers6d1:ai1eee").unwrap();
    assert!(r.peers.is_empty());
    assert_eq!(r.peers_dropped, 0);
}

#[test]
fn udp_connect_golden() {
    let b = udp_connect_request(0x0102_0304);
    assert_eq!(
        b,
        [
            0x00, 0x00, 0x04, 0x17, 0x27, 0x10, 0x19, 0x80, 0, 0, 0, 0, 1, 2, 3, 4
        ]
    );
    let resp = [
        0, 0, 0, 0, 1, 2, 3, 4, 0xaa, 0xbb, 0xcc, 0xdd, 0xee, 0xff, 0x11, 0x22,
    ];
    assert_eq!(
        parse_udp_connect(&resp, 0x0102_0304),
        Ok(0xaabb_ccdd_eeff_1122)
    );
    assert_eq!(
        parse_udp_connect(&resp, 9),
        Err(TrackerError::TransactionMismatch {
            expected: 9,
            got: 0x0102_0304
        })
    );
    assert!(matches!(
        parse_udp_connect(&resp[..12], 0x0102_0304),
        Err(TrackerError::UdpShort { len: 12, .. })
    ));
    assert!(matches!(
        parse_udp_connect(&resp[..3], 0x0102_0304),
        Err(TrackerError::UdpShort { len: 3, .. })
    ));
    assert!(udp_transaction_matches(&resp, 0x0102_0304));
    assert!(!udp_transaction_matches(&resp[..7], 0x0102_0304));
}

#[test]
fn udp_announce_golden() {
    let mut r = req(Event::Completed);
    r.numwant = None;
    let b = udp_announce_request(0x1122_3344_5566_7788, 7, &r, b"");
    let mut want = Vec::new();
    want.extend_from_slice(&[0x11, 0x22, 0x33, 0x44, 0x55, 0x66, 0x77, 0x88]);
    want.extend_from_slice(&[0, 0, 0, 1, 0, 0, 0, 7]);
    want.extend_from_slice(&r.info_hash.0);
    want.extend_from_slice(b"-BT0100-abcdefghijkl");
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 20]); // downloaded
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 30]); // left
    want.extend_from_slice(&[0, 0, 0, 0, 0, 0, 0, 10]); // uploaded
    want.extend_from_slice(&[0, 0, 0, 1]); // completed
    want.extend_from_slice(&[0, 0, 0, 0]); // ip
    want.extend_from_slice(&[0xde, 0xad, 0xbe, 0xef]); // key
    want.extend_from_slice(&[0xff, 0xff, 0xff, 0xff]); // numwant -1
    want.extend_from_slice(&[0x1a, 0xe1]); // 6881
    assert_eq!(b.as_slice(), want.as_slice());
    for (e, code) in [(Event::None, 0u8), (Event::Started, 2), (Event::Stopped, 3)] {
        assert_eq!(udp_announce_request(0, 0, &req(e), b"")[83], code);
    }
    assert_eq!(
        &udp_announce_request(0, 0, &req(Event::None), b"")[92..96],
        &[0, 0, 0, 50]
    );
}

#[test]
fn udp_announce_carries_the_url_path_per_bep_41() {
    assert_eq!(udp_url_data("udp://t.example:6969"), b"");
    assert_eq!(udp_url_data("udp://t.example:6969/"), b"");
    assert_eq!(
        udp_url_data("udp://t.example:6969/announce?passkey=x"),
        b"/announce?passkey=x"
    );
    let r = req(Event::None);
    let path = b"/announce?passkey=x";
    let b = udp_announce_request(0, 0, &r, path);
    assert_eq!(b.len(), 98 + 2 + path.len());
    assert_eq!(&b[98..100], &[2, path.len() as u8]);
    assert_eq!(&b[100..], path);
    // Longer than one option: 255-byte chunks.
    let long = vec![b'a'; 300];
    let b = udp_announce_request(0, 0, &r, &long);
    assert_eq!(&b[98..100], &[2, 255]);
    assert_eq!(&b[98 + 2 + 255..98 + 4 + 255], &[2, 45]);
    assert_eq!(b.len(), 98 + 4 + 300);
    // Capped.
    let huge = vec![b'a'; 10 * MAX_URL_DATA];
    assert!(udp_announce_request(0, 0, &r, &huge).len() < 98 + MAX_URL_DATA + 16);
}

#[test]
fn http_announce_names_our_other_addresses_per_bep_7() {
    let mut r = req(Event::None);
    r.also_at = vec!["2001:db8::1".parse().unwrap(), "192.0.2.7".parse().unwrap()];
    let url = http_url("http://t/announce", &r);
    assert!(url.contains("&ipv6=2001%3Adb8%3A%3A1"), "{url}");
    assert!(url.contains("&ipv4=192.0.2.7"), "{url}");
}

#[test]
fn udp_announce_response_parses() {
    let mut b = vec![
        0, 0, 0, 1, 0, 0, 0, 9, 0, 0, 0x07, 0x08, 0, 0, 0, 4, 0, 0, 0, 2,
    ];
    b.extend_from_slice(&[192, 168, 1, 2, 0x1a, 0xe1, 8, 8, 8, 8, 0, 53, 1, 2, 3]);
    let r = parse_udp_announce(&b, 9).unwrap();
    assert_eq!(r.interval, Some(Duration::from_secs(1800)));
    assert_eq!(r.incomplete, Some(4));
    assert_eq!(r.complete, Some(2));
    assert_eq!(
        r.peers,
        vec![
            "192.168.1.2:6881".parse::<SocketAddr>().unwrap(),
            "8.8.8.8:53".parse().unwrap()
        ]
    );
    assert!(matches!(
        parse_udp_announce(&b[..19], 9),
        Err(TrackerError::UdpShort { len: 19, .. })
    ));
    // A connect response where an announce was expected.
    let mut c = b.clone();
    c[3] = 0;
    assert_eq!(
        parse_udp_announce(&c, 9),
        Err(TrackerError::UdpAction {
            expected: 1,
            got: 0
        })
    );
}

#[test]
fn udp_error_packet_carries_message() {
    let mut b = vec![0, 0, 0, 3, 0, 0, 0, 5];
    b.extend_from_slice(b"unregistered torrent\0");
    assert_eq!(
        parse_udp_announce(&b, 5),
        Err(TrackerError::Failure("unregistered torrent".into()))
    );
    assert_eq!(
        parse_udp_connect(&b, 5),
        Err(TrackerError::Failure("unregistered torrent".into()))
    );
    // An error for someone else's transaction is a mismatch, not a failure.
    assert!(matches!(
        parse_udp_connect(&b, 6),
        Err(TrackerError::TransactionMismatch { .. })
    ));
}

#[test]
fn schedules() {
    assert_eq!(udp_timeout(0), Duration::from_secs(15));
    assert_eq!(udp_timeout(1), Duration::from_secs(30));
    assert_eq!(udp_timeout(8), Duration::from_secs(3840));
    assert_eq!(udp_timeout(50), Duration::from_secs(3840));
    assert_eq!(retry_after(0), Duration::from_secs(5));
    assert_eq!(retry_after(1), Duration::from_secs(10));
    assert_eq!(retry_after(6), Duration::from_secs(300));
    assert_eq!(retry_after(u32::MAX), Duration::from_secs(300));
    let mut r = AnnounceResponse::default();
    assert_eq!(reannounce_after(&r), DEFAULT_INTERVAL);
    r.interval = Some(Duration::from_secs(1));
    assert_eq!(reannounce_after(&r), MIN_REANNOUNCE);
    r.min_interval = Some(Duration::from_secs(120));
    assert_eq!(reannounce_after(&r), Duration::from_secs(120));
    r.interval = Some(Duration::from_secs(86_400));
    assert_eq!(reannounce_after(&r), MAX_REANNOUNCE);
}

#[test]
fn crowded_http_response_is_refused_before_decoding() {
    // 20 bytes of header and then a list of ~100,000 empty lists: small
    // on the wire, ~6 MB once decoded, so refused by the value count.
    let mut body = b"d5:peersl".to_vec();
    body.extend(b"le".repeat(MAX_RESPONSE_ITEMS));
    body.extend(b"ee");
    assert!(body.len() < super::super::http::MAX_BODY);
    assert!(matches!(
        parse_http_response(&body),
        Err(TrackerError::Bencode(e)) if e.contains("values")
    ));
}

#[test]
fn connection_id_expires_after_a_minute() {
    let t0 = Instant::now();
    let c = UdpConnection {
        id: 1,
        obtained: t0,
    };
    assert!(c.is_valid(t0 + Duration::from_secs(59)));
    assert!(!c.is_valid(t0 + Duration::from_secs(60)));
}
