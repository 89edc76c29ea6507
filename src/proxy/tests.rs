use super::*;

fn v4(s: &str) -> TargetAddr {
    TargetAddr::Ip(s.parse().unwrap())
}

#[test]
fn proxy_urls_parse_with_credentials_ipv6_and_defaults() {
    let u = parse_proxy_url("socks5://user:pa%40ss@[::1]:1080").unwrap();
    assert_eq!(u.kind, ProxyKind::Socks5);
    assert_eq!(u.host, "::1");
    assert_eq!(u.port, 1080);
    let c = u.auth.clone().unwrap();
    assert_eq!((c.user.as_str(), c.pass.as_str()), ("user", "pa@ss"));
    assert_eq!(
        u.to_string(),
        "socks5://***@[::1]:1080",
        "no password shown"
    );
    assert!(!format!("{u:?}").contains("pa@ss"));
    let u = parse_proxy_url("SOCKS5H://Proxy.Example:9050/").unwrap();
    assert_eq!(
        (u.kind, u.host.as_str(), u.port),
        (ProxyKind::Socks5h, "proxy.example", 9050)
    );
    assert!(u.auth.is_none());
    let u = parse_proxy_url("socks5://10.0.0.1").unwrap();
    assert_eq!(u.port, 1080);
    let u = parse_proxy_url("http://u:@127.0.0.1:3128").unwrap();
    assert_eq!((u.kind, u.port), (ProxyKind::Http, 3128));
    assert_eq!(u.auth.unwrap().pass, "");
    assert_eq!(parse_proxy_url("http://h").unwrap().port, 80);
    // A password holding ':' and '@' (the last '@' ends the credentials).
    let u = parse_proxy_url("socks5://a:b:c@d@h:1").unwrap();
    let c = u.auth.unwrap();
    assert_eq!(
        (c.user.as_str(), c.pass.as_str(), u.host.as_str()),
        ("a", "b:c@d", "h")
    );
}

#[test]
fn bad_proxy_urls_are_errors_that_hide_the_password() {
    for bad in [
        "",
        "localhost:1080",
        "socks4://h:1",
        "https://h:1",
        "ftp://h:1",
        "socks5://",
        "socks5://h:0",
        "socks5://h:99999",
        "socks5://h:x",
        "socks5://h:1/path",
        "socks5://h:1?q",
        "socks5://[::1:1080",
        "socks5://[nothost]:1",
        "socks5://[::1]x",
        "socks5://:secret@h:1",
        "socks5://u:%zz@h:1",
        "socks5://u:%ff@h:1",
        "socks5://ho st:1",
        "socks5://::1:1080",
    ] {
        let e = parse_proxy_url(bad).expect_err(bad);
        assert!(!e.to_string().contains("secret"), "{bad}: {e}");
    }
    let long = format!("socks5://{}:p@h:1", "u".repeat(256));
    assert!(parse_proxy_url(&long).is_err());
}

#[test]
fn greeting_and_method_choice_follow_rfc1928() {
    assert_eq!(greeting(false), [5, 1, 0]);
    assert_eq!(greeting(true), [5, 2, 0, 2]);
    assert_eq!(parse_method_choice(&[], false).unwrap(), None);
    assert_eq!(parse_method_choice(&[5], false).unwrap(), None);
    assert_eq!(
        parse_method_choice(&[5, 0], false).unwrap(),
        Some((Method::NoAuth, 2))
    );
    assert_eq!(
        parse_method_choice(&[5, 2], true).unwrap(),
        Some((Method::UserPass, 2))
    );
    assert!(matches!(
        parse_method_choice(&[5, 2], false),
        Err(ProxyError::AuthRequired)
    ));
    assert!(matches!(
        parse_method_choice(&[5, 0xff], false),
        Err(ProxyError::AuthRequired)
    ));
    assert!(matches!(
        parse_method_choice(&[5, 0xff], true),
        Err(ProxyError::NoAcceptableMethod)
    ));
    assert!(matches!(
        parse_method_choice(&[5, 1], true),
        Err(ProxyError::UnknownMethod(1))
    ));
    assert!(matches!(
        parse_method_choice(&[4, 0], false),
        Err(ProxyError::BadVersion(4))
    ));
    assert!(matches!(
        parse_method_choice(b"HTTP/1.1", false),
        Err(ProxyError::BadVersion(b'H'))
    ));
}

#[test]
fn username_password_follows_rfc1929() {
    let c = Credentials {
        user: "bob".into(),
        pass: "pw".into(),
    };
    assert_eq!(
        auth_request(&c).unwrap(),
        [1, 3, b'b', b'o', b'b', 2, b'p', b'w']
    );
    let empty_pass = Credentials {
        user: "u".into(),
        pass: String::new(),
    };
    assert_eq!(auth_request(&empty_pass).unwrap(), [1, 1, b'u', 0]);
    let long = Credentials {
        user: "u".repeat(256),
        pass: String::new(),
    };
    assert!(matches!(auth_request(&long), Err(ProxyError::TooLong(_))));
    assert_eq!(parse_auth_reply(&[1]).unwrap(), None);
    assert_eq!(parse_auth_reply(&[1, 0]).unwrap(), Some(2));
    assert!(matches!(
        parse_auth_reply(&[1, 1]),
        Err(ProxyError::AuthFailed(1))
    ));
    assert!(matches!(
        parse_auth_reply(&[5, 0]),
        Err(ProxyError::BadVersion(5))
    ));
}

#[test]
fn requests_encode_every_address_type() {
    assert_eq!(
        request(Command::Connect, &v4("10.1.2.3:6881")).unwrap(),
        [5, 1, 0, 1, 10, 1, 2, 3, 0x1a, 0xe1]
    );
    let v6 = request(Command::Connect, &v4("[::1]:80")).unwrap();
    assert_eq!(&v6[..4], [5, 1, 0, 4]);
    assert_eq!(v6.len(), 4 + 16 + 2);
    assert_eq!(v6[19], 1);
    assert_eq!(
        request(
            Command::UdpAssociate,
            &TargetAddr::Domain("ab.c".into(), 443)
        )
        .unwrap(),
        [5, 3, 0, 3, 4, b'a', b'b', b'.', b'c', 1, 0xbb]
    );
    assert!(matches!(
        request(Command::Connect, &TargetAddr::Domain("x".repeat(256), 1)),
        Err(ProxyError::TooLong(_))
    ));
    assert!(matches!(
        request(Command::Connect, &TargetAddr::Domain(String::new(), 1)),
        Err(ProxyError::Empty(_))
    ));
}

#[test]
fn replies_decode_incrementally_and_refusals_name_their_code() {
    let ok = [5, 0, 0, 1, 127, 0, 0, 1, 0x04, 0x38];
    for n in 0..ok.len() {
        assert_eq!(parse_reply(&ok[..n]).unwrap(), None, "{n} bytes");
    }
    assert_eq!(parse_reply(&ok).unwrap(), Some((v4("127.0.0.1:1080"), 10)));
    let dom = [5, 0, 0, 3, 3, b'a', b'.', b'b', 0, 80];
    assert_eq!(
        parse_reply(&dom).unwrap(),
        Some((TargetAddr::Domain("a.b".into(), 80), 10))
    );
    let mut v6 = vec![5, 0, 0, 4];
    v6.extend_from_slice(&[0; 15]);
    v6.extend_from_slice(&[1, 0, 1]);
    assert_eq!(parse_reply(&v6).unwrap(), Some((v4("[::1]:1"), 22)));
    for code in 1..=9u8 {
        let e = parse_reply(&[5, code]).unwrap_err();
        assert!(matches!(e, ProxyError::Refused(ReplyCode(c)) if c == code));
        assert!(!e.to_string().is_empty());
    }
    assert!(ReplyCode(5).to_string().contains("connection refused"));
    assert!(ReplyCode(200).to_string().contains("unknown"));
}

#[test]
fn hostile_replies_are_errors_never_panics() {
    assert!(matches!(
        parse_reply(&[4, 0, 0, 1]),
        Err(ProxyError::BadVersion(4))
    ));
    assert!(matches!(
        parse_reply(&[5, 0, 1, 1]),
        Err(ProxyError::Malformed(_))
    ));
    assert!(matches!(
        parse_reply(&[5, 0, 0, 9]),
        Err(ProxyError::BadAddressType(9))
    ));
    assert!(matches!(
        parse_reply(&[5, 0, 0, 3, 0, 0, 80]),
        Err(ProxyError::Malformed(_))
    ));
    // An overlong domain can only claim 255 bytes: the reply stays bounded.
    let mut long = vec![5, 0, 0, 3, 255];
    long.extend_from_slice(&[b'a'; 257]);
    assert_eq!(parse_reply(&long).unwrap().unwrap().1, MAX_REPLY);
    let not_utf8 = [5, 0, 0, 3, 1, 0xff, 0, 1];
    assert!(matches!(
        parse_reply(&not_utf8),
        Err(ProxyError::Malformed(_))
    ));
}

#[test]
fn udp_header_wraps_and_unwraps() {
    let to = v4("192.0.2.7:6969");
    let w = wrap_udp(&to, b"hello").unwrap();
    assert_eq!(&w[..10], [0, 0, 0, 1, 192, 0, 2, 7, 0x1b, 0x39]);
    assert_eq!(unwrap_udp(&w).unwrap(), (to, &b"hello"[..]));
    let d = TargetAddr::Domain("tracker.example".into(), 1337);
    let w = wrap_udp(&d, b"").unwrap();
    assert_eq!(unwrap_udp(&w).unwrap(), (d, &b""[..]));
    for bad in [
        &[][..],
        &[0, 0, 0],
        &[0, 1, 0, 1, 1, 2, 3, 4, 0, 1],
        &[0, 0, 1, 1, 1, 2, 3, 4, 0, 1],
        &[0, 0, 0, 7, 1, 2, 3, 4, 0, 1],
        &[0, 0, 0, 1, 1, 2, 3],
        &[0, 0, 0, 3, 200, b'a'],
    ] {
        assert!(unwrap_udp(bad).is_err(), "{bad:?}");
    }
}

#[test]
fn http_connect_asks_for_the_authority_and_reads_the_status() {
    let c = Credentials {
        user: "Aladdin".into(),
        pass: "open sesame".into(),
    };
    let r = String::from_utf8(http_connect_request(&v4("[::1]:6881"), Some(&c))).unwrap();
    assert!(r.starts_with("CONNECT [::1]:6881 HTTP/1.1\r\nHost: [::1]:6881\r\n"));
    // RFC 7617's example.
    assert!(r.contains("Proxy-Authorization: Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==\r\n"));
    assert!(r.ends_with("\r\n\r\n"));
    assert_eq!(base64(b"a"), "YQ==");
    assert_eq!(base64(b"ab"), "YWI=");
    assert_eq!(base64(b""), "");
    let ok = b"HTTP/1.1 200 Connection established\r\nVia: x\r\n\r\n";
    assert_eq!(parse_http_connect_reply(&ok[..ok.len() - 1]).unwrap(), None);
    assert_eq!(parse_http_connect_reply(ok).unwrap(), Some(ok.len()));
    let e = parse_http_connect_reply(b"HTTP/1.0 403 Forbidden\r\n\r\n").unwrap_err();
    assert!(e.to_string().contains("403 Forbidden"), "{e}");
    assert!(parse_http_connect_reply(b"SSH-2.0\r\n\r\n").is_err());
    assert!(matches!(
        parse_http_connect_reply(&vec![b'a'; MAX_HTTP_REPLY]),
        Err(ProxyError::Oversized(_))
    ));
}

/// The fuzz target's properties over deterministic mutations of the seed
/// corpus (a few milliseconds; `scripts/fuzz.sh` goes further).
#[test]
fn mutated_replies_keep_the_fuzz_properties() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/proxy");
    let seeds: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    assert!(!seeds.is_empty());
    let mut x: u64 = 0x9e37_79b9_7f4a_7c15;
    let mut next = move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    };
    for i in 0..20_000 {
        let mut d = seeds[i % seeds.len()].clone();
        for _ in 0..(next() % 4 + 1) {
            let r = next() as usize;
            match r % 4 {
                0 if !d.is_empty() => {
                    let at = r / 4 % d.len();
                    d[at] = (r >> 20) as u8;
                }
                1 if !d.is_empty() => d.truncate(r / 4 % d.len()),
                2 => d.push((r >> 8) as u8),
                _ => d.insert(r / 4 % (d.len() + 1), (r >> 12) as u8),
            }
        }
        crate::fuzzing::proxy(&d);
    }
}
