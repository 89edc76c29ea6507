//! The 68-byte BitTorrent handshake and its reserved bits. Pure.

use crate::id::{InfoHash, PeerId};

/// Handshake length: 1 + 19 + 8 + 20 + 20.
pub const HANDSHAKE_LEN: usize = 68;
const PSTR: &[u8; 19] = b"BitTorrent protocol";

/// A parsed handshake.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Handshake {
    /// The 8 reserved bytes (feature bits).
    pub reserved: [u8; 8],
    /// The torrent both sides want.
    pub info_hash: InfoHash,
    /// The sender's peer id.
    pub peer_id: PeerId,
}

/// A handshake we cannot accept.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HandshakeError {
    /// Not the BitTorrent protocol string (e.g. an encrypted or HTTP client).
    #[error("not a BitTorrent handshake")]
    BadProtocol,
}

impl Handshake {
    /// Our handshake: extension protocol (BEP 10), fast extension (BEP 6)
    /// and DHT (BEP 5) bits set.
    pub fn ours(info_hash: InfoHash, peer_id: PeerId, dht: bool) -> Self {
        let mut reserved = [0u8; 8];
        reserved[5] |= 0x10;
        reserved[7] |= 0x04;
        if dht {
            reserved[7] |= 0x01;
        }
        Handshake {
            reserved,
            info_hash,
            peer_id,
        }
    }

    /// Sets the BitTorrent v2 bit (BEP 52: reserved byte 7, `0x10`).
    pub fn with_v2(mut self, on: bool) -> Self {
        if on {
            self.reserved[7] |= 0x10;
        }
        self
    }

    /// Whether the sender speaks BitTorrent v2 (BEP 52).
    pub fn supports_v2(&self) -> bool {
        self.reserved[7] & 0x10 != 0
    }

    /// Whether the sender speaks the extension protocol (BEP 10).
    pub fn supports_extensions(&self) -> bool {
        self.reserved[5] & 0x10 != 0
    }

    /// Whether the sender speaks the fast extension (BEP 6). It is on for a
    /// connection only when both handshakes set it.
    pub fn supports_fast(&self) -> bool {
        self.reserved[7] & 0x04 != 0
    }

    /// Whether the sender runs a DHT node (BEP 5).
    pub fn supports_dht(&self) -> bool {
        self.reserved[7] & 0x01 != 0
    }

    /// The 68 wire bytes.
    pub fn encode(&self) -> [u8; HANDSHAKE_LEN] {
        let mut b = [0u8; HANDSHAKE_LEN];
        b[0] = 19;
        b[1..20].copy_from_slice(PSTR);
        b[20..28].copy_from_slice(&self.reserved);
        b[28..48].copy_from_slice(&self.info_hash.0);
        b[48..68].copy_from_slice(&self.peer_id.0);
        b
    }

    /// Parses the 68 wire bytes.
    pub fn decode(b: &[u8; HANDSHAKE_LEN]) -> Result<Self, HandshakeError> {
        if b[0] != 19 || &b[1..20] != PSTR {
            return Err(HandshakeError::BadProtocol);
        }
        let mut reserved = [0u8; 8];
        reserved.copy_from_slice(&b[20..28]);
        let mut ih = [0u8; 20];
        ih.copy_from_slice(&b[28..48]);
        let mut pid = [0u8; 20];
        pid.copy_from_slice(&b[48..68]);
        Ok(Handshake {
            reserved,
            info_hash: InfoHash(ih),
            peer_id: PeerId(pid),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_bits() {
        let h = Handshake::ours(InfoHash([1; 20]), PeerId([2; 20]), true);
        let b = h.encode();
        assert_eq!(&b[..20], b"\x13BitTorrent protocol");
        assert_eq!(&b[20..28], &[0, 0, 0, 0, 0, 0x10, 0, 0x05]);
        let back = Handshake::decode(&b).unwrap();
        assert_eq!(back, h);
        assert!(back.supports_extensions() && back.supports_dht() && back.supports_fast());
        let mut plain = back;
        plain.reserved = [0; 8];
        assert!(!plain.supports_fast());
    }

    #[test]
    fn foreign_protocol_is_refused() {
        let mut b = Handshake::ours(InfoHash([1; 20]), PeerId([2; 20]), false).encode();
        b[3] = b'x';
        assert_eq!(Handshake::decode(&b), Err(HandshakeError::BadProtocol));
    }
}
