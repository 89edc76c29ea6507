//! Local Service Discovery (BEP 14): peers on the same network find each
//! other by multicast, with no tracker or DHT.
//!
//! An announce is an HTTP-like datagram sent to 239.192.152.143:6771 (IPv4)
//! or `[ff15::efc0:988f]:6771` (IPv6), its `Host` naming the group:
//!
//! ```text
//! BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n
//! Infohash: <40 hex>\r\n ... cookie: <ours>\r\n\r\n\r\n
//! ```
//!
//! The encoding and parsing here are pure; the service in
//! [`crate::session::lsd`] moves the datagrams. Everything received is
//! hostile: at most [`MAX_DATAGRAM`] bytes, [`MAX_HASHES`] info-hashes taken
//! from one announce, unknown headers skipped.

use crate::id::InfoHash;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// The IPv4 multicast group and port of BEP 14.
pub const GROUP_V4: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(239, 192, 152, 143), 6771);
/// The IPv6 multicast group and port of BEP 14 (site-local scope; the
/// service sends with a hop limit of 1, so announces stay on the link).
pub const GROUP_V6: SocketAddrV6 = SocketAddrV6::new(
    Ipv6Addr::new(0xff15, 0, 0, 0, 0, 0, 0xefc0, 0x988f),
    6771,
    0,
    0,
);
/// Largest datagram read or sent.
pub const MAX_DATAGRAM: usize = 1400;
/// Info-hashes taken from one announce; more are ignored.
pub const MAX_HASHES: usize = 32;
/// Info-hashes we put in one announce (keeps it under [`MAX_DATAGRAM`]).
pub const HASHES_PER_PACKET: usize = 20;

/// What an announce says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announce {
    /// The TCP port the sender takes peers on.
    pub port: u16,
    /// The torrents it has (at most [`MAX_HASHES`]).
    pub info_hashes: Vec<InfoHash>,
    /// Its cookie, so a client can ignore its own announces.
    pub cookie: Option<String>,
}

/// Why a datagram is not an announce.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LsdError {
    /// Not `BT-SEARCH * HTTP/1.1`.
    #[error("not a BT-SEARCH announce")]
    NotAnnounce,
    /// No usable `Port` header.
    #[error("no valid Port header")]
    NoPort,
    /// No valid `Infohash` header.
    #[error("no valid Infohash header")]
    NoInfoHash,
}

/// Announces for `info_hashes` on `port`, [`HASHES_PER_PACKET`] per
/// datagram, to be sent to `group` ([`GROUP_V4`] or [`GROUP_V6`]): its
/// `Host` header names that group, as BEP 14 asks.
pub fn announce_packets(
    group: SocketAddr,
    port: u16,
    info_hashes: &[InfoHash],
    cookie: &str,
) -> Vec<Vec<u8>> {
    info_hashes
        .chunks(HASHES_PER_PACKET)
        .map(|chunk| {
            let mut s = format!("BT-SEARCH * HTTP/1.1\r\nHost: {group}\r\nPort: {port}\r\n");
            for ih in chunk {
                s.push_str(&format!("Infohash: {}\r\n", ih.to_hex()));
            }
            s.push_str(&format!("cookie: {cookie}\r\n\r\n\r\n"));
            s.into_bytes()
        })
        .collect()
}

/// Parses one datagram. `Host` is not checked: the socket it came in on
/// already says which group it was sent to, and clients differ in what
/// they write there, so either group's Host (or another) is accepted.
pub fn parse_announce(data: &[u8]) -> Result<Announce, LsdError> {
    let data = &data[..data.len().min(MAX_DATAGRAM)];
    let text = std::str::from_utf8(data).map_err(|_| LsdError::NotAnnounce)?;
    let mut lines = text.split("\r\n");
    if lines.next().map(str::trim) != Some("BT-SEARCH * HTTP/1.1") {
        return Err(LsdError::NotAnnounce);
    }
    let mut port = None;
    let mut info_hashes = Vec::new();
    let mut cookie = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        match name.trim().to_ascii_lowercase().as_str() {
            "port" => port = value.parse::<u16>().ok().filter(|&p| p != 0),
            "infohash" if info_hashes.len() < MAX_HASHES => {
                if value.len() == 40
                    && let Ok(ih) = InfoHash::parse(value)
                    && !info_hashes.contains(&ih)
                {
                    info_hashes.push(ih);
                }
            }
            "cookie" => cookie = Some(value.chars().take(64).collect()),
            _ => {}
        }
    }
    let port = port.ok_or(LsdError::NoPort)?;
    if info_hashes.is_empty() {
        return Err(LsdError::NoInfoHash);
    }
    Ok(Announce {
        port,
        info_hashes,
        cookie,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn announces_round_trip_and_split_into_packets() {
        let hashes: Vec<InfoHash> = (0..45u8).map(|i| InfoHash([i; 20])).collect();
        let packets = announce_packets(GROUP_V4.into(), 6881, &hashes, "c00kie");
        assert_eq!(packets.len(), 3);
        let mut seen = Vec::new();
        for p in &packets {
            assert!(p.len() <= MAX_DATAGRAM, "{}", p.len());
            let a = parse_announce(p).unwrap();
            assert_eq!(a.port, 6881);
            assert_eq!(a.cookie.as_deref(), Some("c00kie"));
            seen.extend(a.info_hashes);
        }
        assert_eq!(seen, hashes);
        let text = String::from_utf8(packets[2].clone()).unwrap();
        assert!(
            text.starts_with(
                "BT-SEARCH * HTTP/1.1\r\nHost: 239.192.152.143:6771\r\nPort: 6881\r\n"
            )
        );
        assert!(text.ends_with("\r\n\r\n\r\n"));
    }

    #[test]
    fn ipv6_announces_name_the_ipv6_group_and_round_trip() {
        assert_eq!(GROUP_V6.to_string(), "[ff15::efc0:988f]:6771");
        assert!(GROUP_V6.ip().is_multicast());
        let hashes: Vec<InfoHash> = (0..25u8).map(|i| InfoHash([i; 20])).collect();
        let packets = announce_packets(GROUP_V6.into(), 51413, &hashes, "c6");
        assert_eq!(packets.len(), 2);
        let mut seen = Vec::new();
        for p in &packets {
            assert!(p.len() <= MAX_DATAGRAM, "{}", p.len());
            let text = std::str::from_utf8(p).unwrap();
            assert!(
                text.starts_with(
                    "BT-SEARCH * HTTP/1.1\r\nHost: [ff15::efc0:988f]:6771\r\nPort: 51413\r\n"
                ),
                "{text:?}"
            );
            assert!(!text.contains("239.192.152.143"));
            let a = parse_announce(p).unwrap();
            assert_eq!((a.port, a.cookie.as_deref()), (51413, Some("c6")));
            seen.extend(a.info_hashes);
        }
        assert_eq!(seen, hashes);
    }

    #[test]
    fn either_groups_host_is_accepted() {
        let ih = InfoHash([7; 20]);
        for host in [
            "239.192.152.143:6771",
            "[ff15::efc0:988f]:6771",
            "[ff15::efc0:988f]",
        ] {
            let d = format!(
                "BT-SEARCH * HTTP/1.1\r\nHost: {host}\r\nPort: 6881\r\nInfohash: {}\r\n\r\n\r\n",
                ih.to_hex()
            );
            let a = parse_announce(d.as_bytes()).unwrap();
            assert_eq!((a.port, a.info_hashes), (6881, vec![ih]), "{host}");
        }
        // Both families' announces of the same torrents parse the same.
        let v4 = announce_packets(GROUP_V4.into(), 1, &[ih], "c");
        let v6 = announce_packets(GROUP_V6.into(), 1, &[ih], "c");
        assert_eq!(parse_announce(&v4[0]), parse_announce(&v6[0]));
    }

    #[test]
    fn hostile_announces_are_bounded_or_refused() {
        let ok = "BT-SEARCH * HTTP/1.1\r\nhost: x\r\nPORT: 7000\r\ninfohash: 0101010101010101010101010101010101010101\r\n\r\n";
        let a = parse_announce(ok.as_bytes()).unwrap();
        assert_eq!((a.port, a.info_hashes.len(), a.cookie), (7000, 1, None));
        for bad in [
            "",
            "GET / HTTP/1.1\r\nPort: 1\r\n",
            "BT-SEARCH * HTTP/1.1\r\nInfohash: 0101010101010101010101010101010101010101\r\n",
            "BT-SEARCH * HTTP/1.1\r\nPort: 0\r\nInfohash: 0101010101010101010101010101010101010101\r\n",
            "BT-SEARCH * HTTP/1.1\r\nPort: 99999\r\nInfohash: 0101010101010101010101010101010101010101\r\n",
            "BT-SEARCH * HTTP/1.1\r\nPort: 1\r\nInfohash: zz\r\n",
        ] {
            assert!(parse_announce(bad.as_bytes()).is_err(), "{bad:?}");
        }
        assert!(parse_announce(&[0xff, 0xfe, 0x00]).is_err());
        // Many hashes: capped, repeats dropped.
        let mut many = String::from("BT-SEARCH * HTTP/1.1\r\nPort: 1\r\n");
        for i in 0..100u8 {
            many.push_str(&format!(
                "Infohash: {}\r\n",
                InfoHash([i % 50; 20]).to_hex()
            ));
        }
        let a = parse_announce(many.as_bytes()).unwrap();
        assert!(a.info_hashes.len() <= MAX_HASHES);
        // A huge cookie is cut.
        let long = format!("{ok}cookie: {}\r\n", "x".repeat(5000));
        let a = parse_announce(&long.as_bytes()[..long.len().min(MAX_DATAGRAM)]);
        assert!(a.is_ok_and(|a| a.cookie.is_none_or(|c| c.len() <= 64)));
    }
}
