//! BEP 11 peer exchange (`ut_pex`): the message, without sockets or clocks.
//!
//! A PEX message is a bencoded dictionary of compact address lists: peers
//! the sender connected to since its last message (`added`, with one flag
//! byte each in `added.f`) and peers it lost (`dropped`), for IPv4 (6 bytes
//! an entry) and IPv6 (`added6`, `added6.f`, `dropped6`, 18 bytes an entry).
//!
//! Everything in it is a claim by a stranger, so decoding is bounded and
//! forgiving: a payload over [`MAX_PEX_LEN`] or not a dictionary is an
//! error; a list whose length is not a multiple of its entry size is
//! ignored (it cannot be parsed safely), flags that are missing count as 0,
//! and at most [`MAX_PEX_PEERS`] added and as many dropped peers per family
//! are taken from one message (the rest are ignored, not an error). When
//! to send, what to put in and what to do with what arrives is
//! [`PeerState`](super::state::PeerState)'s and the torrent's business.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use serde::Serialize;

use super::extension::{dict_bytes, kind};
use crate::bencode::{Limits, Value, decode_limited, encode};

/// The id under which we want to receive `ut_pex` messages (our `m`).
pub const LOCAL_UT_PEX: u8 = 2;

/// Largest PEX payload we read. 50 + 50 peers of each family with flags
/// take under 2.5 KiB; libtorrent caps its own at a few KiB too.
pub const MAX_PEX_LEN: usize = 64 * 1024;

/// Most peers taken from (or put in) one message, per list and family:
/// the limit BEP 11 suggests, and the one libtorrent enforces.
pub const MAX_PEX_PEERS: usize = 50;

/// Most bencode values in a PEX message (six strings in a dictionary).
const MAX_PEX_ITEMS: usize = 64;

/// BEP 11 flag: the peer prefers encrypted connections.
pub const FLAG_ENCRYPTION: u8 = 0x01;
/// BEP 11 flag: the peer is a seed (has every piece).
pub const FLAG_SEED: u8 = 0x02;
/// BEP 11 flag: the peer supports uTP.
pub const FLAG_UTP: u8 = 0x04;
/// BEP 11 flag: the peer supports the holepunch extension.
pub const FLAG_HOLEPUNCH: u8 = 0x08;
/// BEP 11 flag: the peer is reachable (the sender connected to it).
pub const FLAG_REACHABLE: u8 = 0x10;

const V4_LEN: usize = 6;
const V6_LEN: usize = 18;

/// Why a PEX payload was refused as a whole.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PexError {
    /// Longer than [`MAX_PEX_LEN`].
    #[error("pex message of {0} bytes exceeds the {MAX_PEX_LEN}-byte limit")]
    TooLarge(usize),
    /// Not bencode, or over the value budget.
    #[error("pex message is not bencode: {0}")]
    Bencode(String),
    /// Valid bencode, but not a dictionary.
    #[error("pex message is a bencode {0}, expected a dictionary")]
    NotADict(&'static str),
}

/// One PEX message: peers added (with their BEP 11 flags) and dropped.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PexMessage {
    /// Peers the sender is connected to now, with flags.
    pub added: Vec<(SocketAddr, u8)>,
    /// Peers the sender is no longer connected to.
    pub dropped: Vec<SocketAddr>,
}

/// Wire shape for encoding, fields in bencode key order.
#[derive(Serialize)]
struct Wire {
    #[serde(with = "serde_bytes")]
    added: Vec<u8>,
    #[serde(rename = "added.f", with = "serde_bytes")]
    added_f: Vec<u8>,
    #[serde(with = "serde_bytes")]
    added6: Vec<u8>,
    #[serde(rename = "added6.f", with = "serde_bytes")]
    added6_f: Vec<u8>,
    #[serde(with = "serde_bytes")]
    dropped: Vec<u8>,
    #[serde(with = "serde_bytes")]
    dropped6: Vec<u8>,
}

fn put_addr(out: &mut Vec<u8>, a: &SocketAddr) {
    match a.ip() {
        IpAddr::V4(ip) => out.extend_from_slice(&ip.octets()),
        IpAddr::V6(ip) => out.extend_from_slice(&ip.octets()),
    }
    out.extend_from_slice(&a.port().to_be_bytes());
}

/// The compact entries of `list` (entry size `len`), at most
/// [`MAX_PEX_PEERS`]; none when the length is not a whole number of them.
fn entries(list: Option<&[u8]>, len: usize) -> impl Iterator<Item = (usize, SocketAddr)> + '_ {
    let list = list.filter(|l| l.len() % len == 0).unwrap_or_default();
    list.chunks_exact(len)
        .take(MAX_PEX_PEERS)
        .enumerate()
        .map(move |(i, c)| {
            let (ip, port) = c.split_at(len - 2);
            let ip = match <[u8; 4]>::try_from(ip) {
                Ok(o) => IpAddr::V4(Ipv4Addr::from(o)),
                Err(_) => {
                    let mut o = [0u8; 16];
                    o.copy_from_slice(ip);
                    IpAddr::V6(Ipv6Addr::from(o))
                }
            };
            (
                i,
                SocketAddr::new(ip, u16::from_be_bytes([port[0], port[1]])),
            )
        })
}

impl PexMessage {
    /// Bencodes the message. The caller keeps each list within
    /// [`MAX_PEX_PEERS`] per family; all six keys are always present.
    pub fn encode(&self) -> Vec<u8> {
        let mut w = Wire {
            added: Vec::new(),
            added_f: Vec::new(),
            added6: Vec::new(),
            added6_f: Vec::new(),
            dropped: Vec::new(),
            dropped6: Vec::new(),
        };
        for (a, f) in &self.added {
            let (list, flags) = if a.is_ipv4() {
                (&mut w.added, &mut w.added_f)
            } else {
                (&mut w.added6, &mut w.added6_f)
            };
            put_addr(list, a);
            flags.push(*f);
        }
        for a in &self.dropped {
            put_addr(
                if a.is_ipv4() {
                    &mut w.dropped
                } else {
                    &mut w.dropped6
                },
                a,
            );
        }
        encode(&w)
    }

    /// Reads a PEX payload (the bytes after the extended message id),
    /// within the budgets in the module doc.
    pub fn decode(payload: &[u8]) -> Result<Self, PexError> {
        if payload.len() > MAX_PEX_LEN {
            return Err(PexError::TooLarge(payload.len()));
        }
        let limits = Limits {
            max_len: MAX_PEX_LEN,
            max_items: MAX_PEX_ITEMS,
        };
        let value: Value = decode_limited(payload, limits).map_err(|e| PexError::Bencode(e.0))?;
        if !matches!(value, Value::Dict(_)) {
            return Err(PexError::NotADict(kind(&value)));
        }
        let mut m = PexMessage::default();
        for (list, flags, len) in [
            (&b"added"[..], &b"added.f"[..], V4_LEN),
            (b"added6", b"added6.f", V6_LEN),
        ] {
            let flags = dict_bytes(&value, flags).unwrap_or_default();
            m.added.extend(
                entries(dict_bytes(&value, list), len)
                    .map(|(i, a)| (a, flags.get(i).copied().unwrap_or(0))),
            );
        }
        for (list, len) in [(&b"dropped"[..], V4_LEN), (b"dropped6", V6_LEN)] {
            m.dropped
                .extend(entries(dict_bytes(&value, list), len).map(|(_, a)| a));
        }
        Ok(m)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn round_trips_both_families_with_flags() {
        let m = PexMessage {
            added: vec![
                (a("10.0.0.1:6881"), FLAG_SEED | FLAG_REACHABLE),
                (a("[2001:db8::1]:51413"), FLAG_ENCRYPTION),
                (a("10.0.0.2:1"), 0),
            ],
            dropped: vec![a("192.168.1.9:80"), a("[::1]:2")],
        };
        let bytes = m.encode();
        assert_eq!(PexMessage::decode(&bytes).unwrap(), {
            // Decoding groups by family: IPv4 first.
            let mut want = m.clone();
            want.added.swap(1, 2);
            want
        });
    }

    #[test]
    fn golden_bytes() {
        let m = PexMessage {
            added: vec![(a("1.2.3.4:258"), FLAG_SEED)],
            dropped: vec![a("5.6.7.8:1")],
        };
        assert_eq!(
            m.encode(),
            b"d5:added6:\x01\x02\x03\x04\x01\x027:added.f1:\x026:added60:8:added6.f0:7:dropped6:\x05\x06\x07\x08\x00\x018:dropped60:e"
        );
        assert_eq!(PexMessage::default().encode().len(), 67);
    }

    #[test]
    fn truncated_lists_are_ignored_and_missing_flags_are_zero() {
        // added: 7 bytes (not whole entries), added6: one entry without
        // flags, dropped: 2 entries, dropped6: 17 bytes.
        let mut p = b"d5:added7:abcdefg6:added618:".to_vec();
        p.extend([0u8; 15]);
        p.extend([1, 0x1a, 0xe1]);
        p.extend(b"7:dropped12:\x01\x01\x01\x01\x00\x01\x02\x02\x02\x02\x00\x028:dropped617:");
        p.extend([9u8; 17]);
        p.push(b'e');
        let m = PexMessage::decode(&p).unwrap();
        assert_eq!(m.added, vec![(a("[::1]:6881"), 0)]);
        assert_eq!(m.dropped, vec![a("1.1.1.1:1"), a("2.2.2.2:2")]);
        // Wrongly typed values are ignored too.
        let m = PexMessage::decode(b"d5:addedi5e7:droppedle3:fooi1ee").unwrap();
        assert_eq!(m, PexMessage::default());
    }

    #[test]
    fn at_most_fifty_per_list_and_family() {
        let many = |n: usize, v6: bool| -> Vec<SocketAddr> {
            (0..n)
                .map(|i| {
                    let ip: IpAddr = if v6 {
                        IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, i as u16))
                    } else {
                        IpAddr::V4(Ipv4Addr::new(10, 0, (i >> 8) as u8, i as u8))
                    };
                    SocketAddr::new(ip, 1000 + i as u16)
                })
                .collect()
        };
        let mut m = PexMessage::default();
        for v6 in [false, true] {
            m.added
                .extend(many(120, v6).into_iter().map(|a| (a, FLAG_SEED)));
            m.dropped.extend(many(120, v6));
        }
        let got = PexMessage::decode(&m.encode()).unwrap();
        assert_eq!(got.added.len(), 2 * MAX_PEX_PEERS);
        assert_eq!(got.dropped.len(), 2 * MAX_PEX_PEERS);
        assert_eq!(got.added[..MAX_PEX_PEERS], m.added[..MAX_PEX_PEERS]);
        assert_eq!(got.added[MAX_PEX_PEERS], m.added[120]);
    }

    #[test]
    fn oversized_crowded_or_non_dict_payloads_are_refused() {
        let mut big = b"d5:added".to_vec();
        big.extend(format!("{}:", MAX_PEX_LEN).bytes());
        big.extend(vec![0u8; MAX_PEX_LEN]);
        big.push(b'e');
        assert!(matches!(
            PexMessage::decode(&big),
            Err(PexError::TooLarge(_))
        ));
        let mut crowded = b"d1:xl".to_vec();
        crowded.extend(b"le".repeat(MAX_PEX_ITEMS));
        crowded.extend(b"ee");
        assert!(matches!(
            PexMessage::decode(&crowded),
            Err(PexError::Bencode(_))
        ));
        assert_eq!(
            PexMessage::decode(b"li1ee"),
            Err(PexError::NotADict("list"))
        );
        assert!(PexMessage::decode(b"").is_err());
    }
}
