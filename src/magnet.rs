//! Magnet URIs (BEP 9) and bare info-hashes.
//!
//! A magnet link names a torrent by its info-hash and may hint at where to
//! find it (trackers, peers, web seeds). Parsing is pure string work so the
//! CLI can show what a link holds before any network I/O starts. No I/O.

use std::net::SocketAddr;

use crate::id::{IdError, InfoHash};
use crate::metainfo::Metainfo;

/// What a magnet link holds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Magnet {
    /// `xt=urn:btih:`.
    pub info_hash: InfoHash,
    /// `xt=urn:btmh:1220…`, the BitTorrent v2 (SHA-256) info-hash of a
    /// hybrid torrent, kept so the link is passed on whole.
    pub info_hash_v2: Option<[u8; 32]>,
    /// `dn`, the display name until the real one arrives with the info dict.
    pub name: Option<String>,
    /// `tr` (and `tr.1`, `tr.2`, …), in link order, duplicates removed.
    pub trackers: Vec<String>,
    /// `x.pe` peer addresses that parsed as IP:port.
    pub peers: Vec<SocketAddr>,
    /// `ws` web seeds.
    pub web_seeds: Vec<String>,
}

/// Why a magnet link was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MagnetError {
    /// The text does not start with `magnet:?`.
    #[error("not a magnet URI (expected it to start with \"magnet:?\")")]
    NotMagnet,
    /// No `xt=urn:btih:` parameter.
    #[error("magnet URI has no `xt=urn:btih:` info-hash")]
    MissingXt,
    /// Only a `urn:btmh:` that is not a SHA-256 multihash (`1220` + 64 hex).
    #[error("the magnet's urn:btmh is not a SHA-256 info-hash (1220 followed by 64 hex digits)")]
    V2NotSupported,
    /// The btih value is not a valid info-hash.
    #[error("bad info-hash in magnet URI")]
    BadHash(#[from] IdError),
    /// Several btih values that disagree.
    #[error("magnet URI has conflicting info-hashes {0} and {1}")]
    ConflictingHashes(InfoHash, InfoHash),
    /// A `%` escape that is not two hex digits, or escapes that are not UTF-8.
    #[error("bad percent-encoding in magnet parameter `{0}`")]
    BadEscape(String),
}

impl Magnet {
    /// The swarm of a v2 info-hash: its first 20 bytes (BEP 52).
    pub fn v2_swarm(v2: &[u8; 32]) -> InfoHash {
        let mut h = [0u8; 20];
        h.copy_from_slice(&v2[..20]);
        InfoHash(h)
    }

    /// A magnet for a bare v2 info-hash (SHA-256), with no hints.
    pub fn from_info_hash_v2(v2: [u8; 32]) -> Magnet {
        Magnet {
            info_hash_v2: Some(v2),
            ..Magnet::from_info_hash(Magnet::v2_swarm(&v2))
        }
    }

    /// A magnet for a bare info-hash, with no hints.
    pub fn from_info_hash(info_hash: InfoHash) -> Magnet {
        Magnet {
            info_hash,
            info_hash_v2: None,
            name: None,
            trackers: Vec::new(),
            peers: Vec::new(),
            web_seeds: Vec::new(),
        }
    }

    /// The magnet link for a torrent we already have: name, every tracker
    /// (tiers flattened) and the web seeds, so the link is useful on its own.
    /// Duplicates are dropped, as [`Magnet::parse`] would drop them.
    pub fn from_metainfo(m: &Metainfo) -> Magnet {
        let mut trackers: Vec<String> = Vec::new();
        for url in m.tracker_tiers().into_iter().flatten() {
            push_unique(&mut trackers, url);
        }
        let mut web_seeds: Vec<String> = Vec::new();
        for url in &m.url_list {
            push_unique(&mut web_seeds, url.clone());
        }
        Magnet {
            info_hash: m.info_hash,
            info_hash_v2: m.v2.as_ref().map(|v| v.info_hash),
            name: Some(m.info.name.clone()),
            trackers,
            peers: Vec::new(),
            web_seeds,
        }
    }

    /// Parses a `magnet:?…` URI. Unknown parameters are ignored and peer
    /// addresses that are not IP:port (hostnames) are skipped, since neither
    /// stops us from finding the torrent.
    pub fn parse(s: &str) -> Result<Magnet, MagnetError> {
        let s = s.trim();
        let query = s
            .get(..8)
            .filter(|p| p.eq_ignore_ascii_case("magnet:?"))
            .map(|_| &s[8..])
            .ok_or(MagnetError::NotMagnet)?;
        let mut hash: Option<InfoHash> = None;
        let mut saw_btmh = false;
        let mut m = Magnet::from_info_hash(InfoHash([0; 20]));
        for pair in query.split('&').filter(|p| !p.is_empty()) {
            let (key, raw) = pair.split_once('=').unwrap_or((pair, ""));
            let value = || percent_decode(raw, key == "dn");
            match key {
                "xt" => {
                    let v = value()?;
                    if let Some(h) = strip_prefix_ci(&v, "urn:btih:") {
                        let h = InfoHash::parse(h)?;
                        match hash {
                            Some(prev) if prev != h => {
                                return Err(MagnetError::ConflictingHashes(prev, h));
                            }
                            _ => hash = Some(h),
                        }
                    } else if let Some(mh) = strip_prefix_ci(&v, "urn:btmh:") {
                        saw_btmh = true;
                        // A multihash: 0x12 (SHA-256), 0x20 (32 bytes), digest.
                        if m.info_hash_v2.is_none() {
                            m.info_hash_v2 = strip_prefix_ci(mh, "1220").and_then(parse_hex32);
                        }
                    }
                }
                "dn" => m.name = Some(value()?).filter(|n| !n.is_empty()),
                "ws" => push_unique(&mut m.web_seeds, value()?),
                "x.pe" => {
                    if let Ok(addr) = value()?.parse::<SocketAddr>()
                        && !m.peers.contains(&addr)
                    {
                        m.peers.push(addr);
                    }
                }
                k if k == "tr"
                    || k.strip_prefix("tr.")
                        .is_some_and(|n| n.bytes().all(|b| b.is_ascii_digit())) =>
                {
                    push_unique(&mut m.trackers, value()?)
                }
                _ => {}
            }
        }
        m.info_hash = match hash {
            Some(h) => h,
            // A v2-only link: the swarm is the one of the v2 hash's first
            // 20 bytes (BEP 52).
            None => match &m.info_hash_v2 {
                Some(v2) => Magnet::v2_swarm(v2),
                None if saw_btmh => return Err(MagnetError::V2NotSupported),
                None => return Err(MagnetError::MissingXt),
            },
        };
        Ok(m)
    }

    /// The link as text, every value percent-encoded. Parsing the result
    /// gives back an equal `Magnet`.
    pub fn to_uri(&self) -> String {
        let v2_only = self
            .info_hash_v2
            .is_some_and(|v2| Magnet::v2_swarm(&v2) == self.info_hash);
        let mut s = if v2_only {
            "magnet:?".to_string()
        } else {
            format!("magnet:?xt=urn:btih:{}", self.info_hash.to_hex())
        };
        if let Some(v2) = &self.info_hash_v2 {
            s.push_str(if v2_only {
                "xt=urn:btmh:1220"
            } else {
                "&xt=urn:btmh:1220"
            });
            for b in v2 {
                s.push_str(&format!("{b:02x}"));
            }
        }
        if let Some(name) = &self.name {
            s.push_str("&dn=");
            s.push_str(&percent_encode(name));
        }
        for t in &self.trackers {
            s.push_str("&tr=");
            s.push_str(&percent_encode(t));
        }
        for p in &self.peers {
            s.push_str("&x.pe=");
            s.push_str(&percent_encode(&p.to_string()));
        }
        for w in &self.web_seeds {
            s.push_str("&ws=");
            s.push_str(&percent_encode(w));
        }
        s
    }
}

/// 64 hex digits as 32 bytes.
fn parse_hex32(s: &str) -> Option<[u8; 32]> {
    if s.len() != 64 || !s.is_ascii() {
        return None;
    }
    let mut out = [0u8; 32];
    for (i, b) in out.iter_mut().enumerate() {
        *b = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn strip_prefix_ci<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

fn push_unique(list: &mut Vec<String>, v: String) {
    if !v.is_empty() && !list.contains(&v) {
        list.push(v);
    }
}

/// Decodes `%XX` escapes; `+` becomes a space only where asked (`dn`, which
/// browsers form-encode), because in URLs a `+` is a literal plus.
fn percent_decode(raw: &str, plus_is_space: bool) -> Result<String, MagnetError> {
    let bytes = raw.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).and_then(|c| (*c as char).to_digit(16));
                let lo = bytes.get(i + 2).and_then(|c| (*c as char).to_digit(16));
                match (hi, lo) {
                    (Some(hi), Some(lo)) => out.push((hi * 16 + lo) as u8),
                    _ => return Err(MagnetError::BadEscape(raw.to_owned())),
                }
                i += 3;
            }
            b'+' if plus_is_space => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).map_err(|_| MagnetError::BadEscape(raw.to_owned()))
}

/// Escapes everything but RFC 3986 unreserved characters, so the value
/// survives any query-string parser (including ones that treat `+` as space).
fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HEX: &str = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
    const B32: &str = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";

    fn h() -> InfoHash {
        InfoHash::parse(HEX).unwrap()
    }

    #[test]
    fn hex_hash_and_name() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=My+Linux%20ISO")).unwrap();
        assert_eq!(m.info_hash, h());
        assert_eq!(m.name.as_deref(), Some("My Linux ISO"));
        assert!(m.trackers.is_empty() && m.peers.is_empty() && m.web_seeds.is_empty());
    }

    #[test]
    fn base32_hash() {
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{B32}")).unwrap();
        assert_eq!(m.info_hash, h());
    }

    #[test]
    fn several_trackers_in_order_without_duplicates() {
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&tr=udp%3A%2F%2Fa.example%3A6969&tr.1=http://b.example/ann?x=1%2B2\
             &tr.2=udp%3A%2F%2Fa.example%3A6969&tr=http%3A%2F%2Fc.example%2Fa+b"
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(
            m.trackers,
            vec![
                "udp://a.example:6969".to_string(),
                "http://b.example/ann?x=1+2".to_string(),
                "http://c.example/a+b".to_string(),
            ]
        );
    }

    #[test]
    fn peers_v4_v6_and_hostnames_skipped() {
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&x.pe=1.2.3.4:6881&x.pe=%5B%3A%3A1%5D%3A6882&x.pe=[2001:db8::1]:51413\
             &x.pe=peer.example:6881&x.pe=garbage"
        );
        let m = Magnet::parse(&uri).unwrap();
        let want: Vec<SocketAddr> = vec![
            "1.2.3.4:6881".parse().unwrap(),
            "[::1]:6882".parse().unwrap(),
            "[2001:db8::1]:51413".parse().unwrap(),
        ];
        assert_eq!(m.peers, want);
    }

    #[test]
    fn web_seeds_and_unknown_keys() {
        let uri = format!(
            "magnet:?xt=urn:btih:{HEX}&ws=http%3A%2F%2Fseed.example%2Ff&xl=1234&kt=a+b&so=0-3&ws=http://s2/"
        );
        let m = Magnet::parse(&uri).unwrap();
        assert_eq!(
            m.web_seeds,
            vec![
                "http://seed.example/f".to_string(),
                "http://s2/".to_string()
            ]
        );
    }

    #[test]
    fn repeated_equal_hashes_are_fine_and_v2_alongside_v1_is_ignored() {
        let uri = format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220abcd&xt=urn:btih:{B32}");
        assert_eq!(Magnet::parse(&uri).unwrap().info_hash, h());
    }

    #[test]
    fn a_v2_hash_beside_the_v1_one_is_kept_and_passed_on() {
        let v2 = "d18f1695f4e0b252cf0ab7b4746b8d0d068b29d59b7ac25e0f704a3e424cc843";
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{v2}")).unwrap();
        assert_eq!(m.info_hash_v2.map(|h| h[0]), Some(0xd1));
        assert!(m.to_uri().contains(&format!("&xt=urn:btmh:1220{v2}")));
        // Not SHA-256 (0x12 0x20), or not 32 bytes: not kept.
        let m = Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1120{v2}")).unwrap();
        assert_eq!(m.info_hash_v2, None);
    }

    #[test]
    fn a_v2_only_link_joins_the_truncated_swarm() {
        let v2 = "caf1e1c30e81cb361b9ee167c4aa64228a7fa4fa9f6105232b28ad099f3a302e";
        let m = Magnet::parse(&format!("magnet:?xt=urn:btmh:1220{v2}&dn=x")).unwrap();
        assert_eq!(m.info_hash.to_hex(), v2[..40]);
        assert_eq!(m.info_hash_v2.map(|h| h[31]), Some(0x2e));
        // No made-up btih on the way out, and it parses back the same.
        let uri = m.to_uri();
        assert!(
            uri.starts_with(&format!("magnet:?xt=urn:btmh:1220{v2}&dn=x")),
            "{uri}"
        );
        assert_eq!(Magnet::parse(&uri).unwrap(), m);
        let bare = Magnet::from_info_hash_v2(m.info_hash_v2.unwrap());
        assert_eq!(bare.info_hash, m.info_hash);
    }

    #[test]
    fn bad_inputs() {
        assert_eq!(
            Magnet::parse("http://example.com/x.torrent"),
            Err(MagnetError::NotMagnet)
        );
        assert_eq!(Magnet::parse(""), Err(MagnetError::NotMagnet));
        assert_eq!(
            Magnet::parse("magnet:?dn=x&tr=udp://t"),
            Err(MagnetError::MissingXt)
        );
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btih:abcd"),
            Err(MagnetError::BadHash(IdError::BadLength(4)))
        );
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{}", "z".repeat(40))),
            Err(MagnetError::BadHash(IdError::BadDigit(_)))
        ));
        assert_eq!(
            Magnet::parse("magnet:?xt=urn:btmh:1120caf1e1c30e81cb361b9ee167c4aa64228a7f"),
            Err(MagnetError::V2NotSupported)
        );
        let other = "0000000000000000000000000000000000000000";
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&xt=urn:btih:{other}")),
            Err(MagnetError::ConflictingHashes(_, _))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%zz")),
            Err(MagnetError::BadEscape(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%E2%82")),
            Err(MagnetError::BadEscape(_))
        ));
        assert!(matches!(
            Magnet::parse(&format!("magnet:?xt=urn:btih:{HEX}&dn=%4")),
            Err(MagnetError::BadEscape(_))
        ));
    }

    #[test]
    fn round_trip() {
        let m = Magnet {
            info_hash: h(),
            info_hash_v2: Some([0xab; 32]),
            name: Some("Ünïcödé & friends + more=yes".into()),
            trackers: vec![
                "udp://t.example:6969/announce".into(),
                "http://x/a?b=c&d=e".into(),
            ],
            peers: vec![
                "10.0.0.1:6881".parse().unwrap(),
                "[fe80::1]:1".parse().unwrap(),
            ],
            web_seeds: vec!["https://seed.example/path with space/".into()],
        };
        let uri = m.to_uri();
        let v2 = "ab".repeat(32);
        assert!(uri.starts_with(&format!(
            "magnet:?xt=urn:btih:{HEX}&xt=urn:btmh:1220{v2}&dn="
        )));
        assert!(!uri.contains(' '));
        assert_eq!(Magnet::parse(&uri).unwrap(), m);
        let bare = Magnet::from_info_hash(h());
        assert_eq!(bare.to_uri(), format!("magnet:?xt=urn:btih:{HEX}"));
        assert_eq!(Magnet::parse(&bare.to_uri()).unwrap(), bare);
    }

    /// Found by the `bencode_metainfo` fuzz target: a torrent listing a web
    /// seed twice gave a link that did not parse back to itself.
    #[test]
    fn regression_magnet_from_metainfo_drops_duplicate_web_seeds() {
        let pieces = [0u8; 20];
        let mut t =
            b"d8:url-listl3:ws13:ws13:ws2e4:infod6:lengthi1e4:name1:x12:piece lengthi1e6:pieces20:"
                .to_vec();
        t.extend_from_slice(&pieces);
        t.extend_from_slice(b"ee");
        let m = Metainfo::from_bytes(&t).unwrap();
        let link = Magnet::from_metainfo(&m);
        assert_eq!(link.web_seeds, vec!["ws1".to_string(), "ws2".to_string()]);
        assert_eq!(Magnet::parse(&link.to_uri()), Ok(link));
    }
}
