//! Tracker scrape (BEP 48 for HTTP, BEP 15 for UDP): how many seeders and
//! leechers a tracker knows for a torrent. Pure encoding and decoding; the
//! shells in [`super::http`] and `super::udp` move the bytes.

use super::announce::{TrackerError, percent_encode_into};
use crate::bencode::{Limits, Value, decode_limited};
use crate::id::InfoHash;

/// UDP action number of a scrape.
pub const ACTION_SCRAPE: u32 = 2;

/// What a tracker says about one torrent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ScrapeStats {
    /// Peers with the whole torrent.
    pub seeders: u32,
    /// Peers still downloading.
    pub leechers: u32,
    /// Completed downloads the tracker has seen.
    pub downloaded: u32,
}

/// The scrape URL of an HTTP announce URL: the last path segment must start
/// with `announce`, which becomes `scrape` (BEP 48); `None` when the tracker
/// cannot be scraped. UDP trackers scrape at their announce address.
pub fn scrape_url(announce: &str) -> Option<String> {
    if announce.starts_with("udp://") {
        return Some(announce.to_string());
    }
    let (path_end, query) = match announce.find('?') {
        Some(i) => (i, &announce[i..]),
        None => (announce.len(), ""),
    };
    let path = &announce[..path_end];
    let slash = path.rfind('/')?;
    let last = &path[slash + 1..];
    let rest = last.strip_prefix("announce")?;
    Some(format!("{}scrape{rest}{query}", &path[..=slash]))
}

/// The full HTTP scrape URL for one info-hash.
pub fn http_scrape_request(scrape: &str, info_hash: &InfoHash) -> String {
    let mut url = scrape.to_string();
    url.push(if scrape.contains('?') { '&' } else { '?' });
    url.push_str("info_hash=");
    percent_encode_into(&mut url, &info_hash.0);
    url
}

fn stat(d: &std::collections::HashMap<crate::bencode::ByteBuf<'_>, Value<'_>>, key: &str) -> u32 {
    match d.get(key.as_bytes()) {
        Some(Value::Integer(i)) => u32::try_from(*i).unwrap_or(0),
        _ => 0,
    }
}

/// Parses an HTTP scrape body for `info_hash`.
pub fn parse_http_scrape(body: &[u8], info_hash: &InfoHash) -> Result<ScrapeStats, TrackerError> {
    let limits = Limits {
        max_len: super::http::MAX_BODY,
        max_items: 4096,
    };
    let v: Value<'_> = decode_limited(body, limits).map_err(|e| TrackerError::Bencode(e.0))?;
    let Value::Dict(top) = v else {
        return Err(TrackerError::NotADict);
    };
    if let Some(Value::Bytes(reason)) = top.get(&b"failure reason"[..]) {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(reason.0).into_owned(),
        ));
    }
    let Some(Value::Dict(files)) = top.get(&b"files"[..]) else {
        return Err(TrackerError::Bencode("no files dictionary".into()));
    };
    let Some(Value::Dict(f)) = files.get(&info_hash.0[..]) else {
        return Err(TrackerError::Failure(
            "the tracker does not know this torrent".into(),
        ));
    };
    Ok(ScrapeStats {
        seeders: stat(f, "complete"),
        leechers: stat(f, "incomplete"),
        downloaded: stat(f, "downloaded"),
    })
}

/// The UDP scrape request for one info-hash: connection id, action 2,
/// transaction id, the hash.
pub fn udp_scrape_request(
    connection_id: u64,
    transaction_id: u32,
    info_hash: &InfoHash,
) -> [u8; 36] {
    let mut b = [0u8; 36];
    b[0..8].copy_from_slice(&connection_id.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_SCRAPE.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b[16..36].copy_from_slice(&info_hash.0);
    b
}

/// Parses a UDP scrape response for one hash (seeders, completed, leechers).
pub fn parse_udp_scrape(buf: &[u8], transaction_id: u32) -> Result<ScrapeStats, TrackerError> {
    super::announce::udp_header(buf, transaction_id, ACTION_SCRAPE, 20, "udp scrape")?;
    let be = |at: usize| u32::from_be_bytes([buf[at], buf[at + 1], buf[at + 2], buf[at + 3]]);
    Ok(ScrapeStats {
        seeders: be(8),
        downloaded: be(12),
        leechers: be(16),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scrape_urls_follow_bep_48() {
        assert_eq!(
            scrape_url("http://t.example/announce").as_deref(),
            Some("http://t.example/scrape")
        );
        assert_eq!(
            scrape_url("http://t.example/x/announce.php?passkey=a/b").as_deref(),
            Some("http://t.example/x/scrape.php?passkey=a/b")
        );
        assert_eq!(scrape_url("http://t.example/a"), None);
        assert_eq!(scrape_url("http://t.example/announce/x"), None);
        assert_eq!(
            scrape_url("udp://t.example:6969/announce").as_deref(),
            Some("udp://t.example:6969/announce")
        );
        assert_eq!(
            http_scrape_request("http://t/scrape?k=1", &InfoHash([0x41; 20])),
            format!("http://t/scrape?k=1&info_hash={}", "A".repeat(20))
        );
    }

    #[test]
    fn http_scrape_bodies_are_read_for_our_hash_only() {
        let ih = InfoHash([7; 20]);
        let mut body = b"d5:filesd20:".to_vec();
        body.extend_from_slice(&ih.0);
        body.extend_from_slice(b"d8:completei5e10:downloadedi50e10:incompletei10eeee");
        assert_eq!(
            parse_http_scrape(&body, &ih),
            Ok(ScrapeStats {
                seeders: 5,
                leechers: 10,
                downloaded: 50
            })
        );
        assert!(parse_http_scrape(&body, &InfoHash([8; 20])).is_err());
        assert_eq!(
            parse_http_scrape(b"d14:failure reason4:nopee", &ih),
            Err(TrackerError::Failure("nope".into()))
        );
        for bad in [&b"le"[..], b"d5:filesi1ee", b"d5:files", b"", b"i-1e"] {
            assert!(parse_http_scrape(bad, &ih).is_err(), "{bad:?}");
        }
        // Negative or huge counts read as 0, not as a wrapped number.
        let mut odd = b"d5:filesd20:".to_vec();
        odd.extend_from_slice(&ih.0);
        odd.extend_from_slice(b"d8:completei-5e10:incompletei99999999999eeee");
        assert_eq!(parse_http_scrape(&odd, &ih), Ok(ScrapeStats::default()));
    }

    #[test]
    fn udp_scrape_round_trip_and_short_answers() {
        let ih = InfoHash([9; 20]);
        let req = udp_scrape_request(0x0102_0304_0506_0708, 77, &ih);
        assert_eq!(&req[8..12], &2u32.to_be_bytes());
        assert_eq!(&req[16..], &ih.0);
        let mut resp = Vec::new();
        for v in [2u32, 77, 3, 40, 6] {
            resp.extend_from_slice(&v.to_be_bytes());
        }
        assert_eq!(
            parse_udp_scrape(&resp, 77),
            Ok(ScrapeStats {
                seeders: 3,
                downloaded: 40,
                leechers: 6
            })
        );
        assert!(parse_udp_scrape(&resp[..19], 77).is_err());
        assert!(parse_udp_scrape(&resp, 78).is_err());
    }
}
