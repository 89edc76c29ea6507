//! Identities that cross every layer: the torrent's info-hash and a peer's id.
//!
//! Parsed once (hex or base32), then passed around as fixed-size newtypes so no
//! other module re-validates lengths. No I/O.

use std::fmt;
use std::str::FromStr;

/// Why a textual info-hash was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IdError {
    /// Neither 40 hex digits nor 32 base32 characters.
    #[error("info-hash must be 40 hex digits or 32 base32 characters, got {0} characters")]
    BadLength(usize),
    /// Right length, wrong alphabet.
    #[error("info-hash contains a character that is not {0}")]
    BadDigit(&'static str),
}

/// SHA-1 of a torrent's bencoded info dictionary (BitTorrent v1).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct InfoHash(pub [u8; 20]);

/// The 20-byte id a peer announces in its handshake.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct PeerId(pub [u8; 20]);

impl InfoHash {
    /// Lower-case 40-digit hex, the form users paste and trackers log.
    pub fn to_hex(&self) -> String {
        hex(&self.0)
    }

    /// Parses 40 hex digits or 32 RFC 4648 base32 characters (case-insensitive).
    pub fn parse(s: &str) -> Result<Self, IdError> {
        let s = s.trim();
        match s.len() {
            40 => {
                let mut out = [0u8; 20];
                for (i, pair) in s.as_bytes().chunks(2).enumerate() {
                    let hi = hex_val(pair[0]).ok_or(IdError::BadDigit("hex"))?;
                    let lo = hex_val(pair[1]).ok_or(IdError::BadDigit("hex"))?;
                    out[i] = (hi << 4) | lo;
                }
                Ok(InfoHash(out))
            }
            32 => {
                let mut out = [0u8; 20];
                let mut acc: u64 = 0;
                let mut bits = 0;
                let mut pos = 0;
                for c in s.bytes() {
                    let v = base32_val(c).ok_or(IdError::BadDigit("base32"))?;
                    acc = (acc << 5) | v as u64;
                    bits += 5;
                    if bits >= 8 {
                        bits -= 8;
                        out[pos] = (acc >> bits) as u8;
                        pos += 1;
                    }
                }
                Ok(InfoHash(out))
            }
            n => Err(IdError::BadLength(n)),
        }
    }
}

impl FromStr for InfoHash {
    type Err = IdError;
    fn from_str(s: &str) -> Result<Self, IdError> {
        InfoHash::parse(s)
    }
}

impl fmt::Display for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for InfoHash {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "InfoHash({})", self.to_hex())
    }
}

impl PeerId {
    /// Azureus-style id: `-BT0100-` then 12 random alphanumerics, so other
    /// clients can tell what we are and two of our runs never collide.
    pub fn generate() -> Self {
        use rand::Rng;
        const ALNUM: &[u8] = b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ";
        let mut id = [0u8; 20];
        id[..8].copy_from_slice(PEER_ID_PREFIX);
        let mut rng = rand::rng();
        for b in &mut id[8..] {
            *b = ALNUM[rng.random_range(0..ALNUM.len())];
        }
        PeerId(id)
    }
}

/// Client tag in our peer ids: "BT" + version 0.1.0.
pub const PEER_ID_PREFIX: &[u8; 8] = b"-BT0100-";

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", String::from_utf8_lossy(&self.0))
    }
}

/// Lower-case hex of any byte string.
pub fn hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for b in bytes {
        s.push(DIGITS[(b >> 4) as usize] as char);
        s.push(DIGITS[(b & 15) as usize] as char);
    }
    s
}

fn hex_val(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

fn base32_val(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a'),
        b'2'..=b'7' => Some(c - b'2' + 26),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_and_base32_agree() {
        let hex = "c12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        let b32 = "YEX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
        let a = InfoHash::parse(hex).unwrap();
        let b = InfoHash::parse(b32).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.to_hex(), hex);
        assert_eq!(InfoHash::parse(&b32.to_lowercase()).unwrap(), a);
        assert_eq!(InfoHash::parse(&hex.to_uppercase()).unwrap(), a);
    }

    #[test]
    fn rejects_bad_input() {
        assert_eq!(InfoHash::parse("abc"), Err(IdError::BadLength(3)));
        let bad_hex = "z12fe1c06bba254a9dc9f519b335aa7c1367a88a";
        assert_eq!(InfoHash::parse(bad_hex), Err(IdError::BadDigit("hex")));
        let bad_b32 = "1EX6DQDLXISUVHOJ6UM3GNNKPQJWPKEK";
        assert_eq!(InfoHash::parse(bad_b32), Err(IdError::BadDigit("base32")));
    }

    #[test]
    fn peer_id_has_prefix_and_is_random() {
        let a = PeerId::generate();
        let b = PeerId::generate();
        assert_eq!(&a.0[..8], PEER_ID_PREFIX);
        assert_ne!(a, b);
        assert!(a.0.iter().all(|c| c.is_ascii_graphic()));
    }
}
