//! uTP packets (BEP 29): the 20-byte header, its extension chain and the
//! selective-ACK bitmask. Pure: bytes in, fields out, and back.
//!
//! Every datagram on the uTP port is outside data, so the parser refuses
//! anything that is not a whole version-1 header with a well-formed chain
//! and never reads past the datagram; unknown extensions are skipped by
//! their length, as libtorrent and libutp do.

use thiserror::Error;

/// Bytes in the fixed header.
pub const HEADER_LEN: usize = 20;

/// The most selective-ACK bytes kept or sent: 256 packets past `ack + 1`
/// (libtorrent sends at most 32 bytes too).
pub const MAX_SACK_BYTES: usize = 32;

/// Extension number of the selective ACK.
const EXT_SACK: u8 = 1;

/// The most extensions one header may chain (each costs two bytes, so a
/// datagram could otherwise make the parser walk 30,000 of them).
const MAX_EXTENSIONS: usize = 8;

/// The five packet types.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Type {
    /// A data packet.
    Data = 0,
    /// The last packet of the sender's stream.
    Fin = 1,
    /// An ACK without data.
    State = 2,
    /// The connection is gone at the sender.
    Reset = 3,
    /// Opens a connection.
    Syn = 4,
}

impl Type {
    fn from_nibble(n: u8) -> Option<Type> {
        Some(match n {
            0 => Type::Data,
            1 => Type::Fin,
            2 => Type::State,
            3 => Type::Reset,
            4 => Type::Syn,
            _ => return None,
        })
    }
}

/// Which packets past `ack + 1` the receiver holds: bit `i` (byte `i / 8`,
/// bit `i % 8`) stands for `ack + 2 + i`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Sack {
    len: u8,
    bits: [u8; MAX_SACK_BYTES],
}

impl Sack {
    /// A bitmask of `len` bytes (rounded up to a multiple of 4, at most
    /// [`MAX_SACK_BYTES`]) with no bit set.
    pub fn new(len: usize) -> Sack {
        let len = len.div_ceil(4).clamp(1, MAX_SACK_BYTES / 4) * 4;
        Sack {
            len: len as u8,
            bits: [0; MAX_SACK_BYTES],
        }
    }

    /// The bitmask's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bits[..self.len as usize]
    }

    /// How many packets the mask covers.
    pub fn span(&self) -> usize {
        self.len as usize * 8
    }

    /// Whether packet `ack + 2 + i` is held.
    pub fn get(&self, i: usize) -> bool {
        i < self.span() && self.bits[i / 8] & (1 << (i % 8)) != 0
    }

    /// Marks packet `ack + 2 + i` as held (ignored past the span).
    pub fn set(&mut self, i: usize) {
        if i < self.span() {
            self.bits[i / 8] |= 1 << (i % 8);
        }
    }
}

/// A parsed header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Header {
    /// The packet type.
    pub ty: Type,
    /// The connection id (the receiver's id, except in a SYN).
    pub conn_id: u16,
    /// The sender's clock, in microseconds, when it sent this.
    pub ts: u32,
    /// The one-way delay the sender last measured on our packets (its
    /// receive clock minus our send clock), or 0 if none yet.
    pub ts_diff: u32,
    /// Bytes the sender can still take in.
    pub wnd: u32,
    /// This packet's sequence number (for STATE: the next one the sender
    /// will use).
    pub seq: u16,
    /// The last packet the sender received in order.
    pub ack: u16,
    /// The selective ACK, if any.
    pub sack: Option<Sack>,
}

impl Header {
    /// A header of type `ty` with every other field zero.
    pub fn new(ty: Type) -> Header {
        Header {
            ty,
            conn_id: 0,
            ts: 0,
            ts_diff: 0,
            wnd: 0,
            seq: 0,
            ack: 0,
            sack: None,
        }
    }

    /// Bytes this header takes when encoded.
    pub fn encoded_len(&self) -> usize {
        HEADER_LEN + self.sack.map_or(0, |s| 2 + s.len as usize)
    }

    /// Writes the header into `out` (at least [`Self::encoded_len`] long)
    /// and returns how many bytes it took.
    pub fn encode(&self, out: &mut [u8]) -> usize {
        out[0] = (self.ty as u8) << 4 | 1;
        out[1] = if self.sack.is_some() { EXT_SACK } else { 0 };
        out[2..4].copy_from_slice(&self.conn_id.to_be_bytes());
        out[4..8].copy_from_slice(&self.ts.to_be_bytes());
        out[8..12].copy_from_slice(&self.ts_diff.to_be_bytes());
        out[12..16].copy_from_slice(&self.wnd.to_be_bytes());
        out[16..18].copy_from_slice(&self.seq.to_be_bytes());
        out[18..20].copy_from_slice(&self.ack.to_be_bytes());
        match &self.sack {
            None => HEADER_LEN,
            Some(s) => {
                let b = s.bytes();
                out[20] = 0;
                out[21] = b.len() as u8;
                out[22..22 + b.len()].copy_from_slice(b);
                22 + b.len()
            }
        }
    }
}

/// Why a datagram is not a uTP packet.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum PacketError {
    /// Shorter than the fixed header.
    #[error("{0} bytes is shorter than a uTP header")]
    Short(usize),
    /// Not version 1.
    #[error("uTP version {0}")]
    Version(u8),
    /// A type above 4.
    #[error("uTP packet type {0}")]
    Type(u8),
    /// An extension runs past the datagram, or too many are chained.
    #[error("malformed uTP extension chain")]
    Extensions,
}

/// Parses a datagram into its header and payload.
pub fn parse(datagram: &[u8]) -> Result<(Header, &[u8]), PacketError> {
    if datagram.len() < HEADER_LEN {
        return Err(PacketError::Short(datagram.len()));
    }
    let version = datagram[0] & 0x0f;
    if version != 1 {
        return Err(PacketError::Version(version));
    }
    let ty = Type::from_nibble(datagram[0] >> 4).ok_or(PacketError::Type(datagram[0] >> 4))?;
    let u16_at = |i: usize| u16::from_be_bytes([datagram[i], datagram[i + 1]]);
    let u32_at = |i: usize| {
        u32::from_be_bytes([
            datagram[i],
            datagram[i + 1],
            datagram[i + 2],
            datagram[i + 3],
        ])
    };
    let mut header = Header {
        ty,
        conn_id: u16_at(2),
        ts: u32_at(4),
        ts_diff: u32_at(8),
        wnd: u32_at(12),
        seq: u16_at(16),
        ack: u16_at(18),
        sack: None,
    };
    let mut ext = datagram[1];
    let mut at = HEADER_LEN;
    let mut seen = 0;
    while ext != 0 {
        seen += 1;
        if seen > MAX_EXTENSIONS || at + 2 > datagram.len() {
            return Err(PacketError::Extensions);
        }
        let next = datagram[at];
        let len = datagram[at + 1] as usize;
        let body = datagram
            .get(at + 2..at + 2 + len)
            .ok_or(PacketError::Extensions)?;
        if ext == EXT_SACK && header.sack.is_none() {
            if len == 0 {
                return Err(PacketError::Extensions);
            }
            // Bits past what we keep stand for packets we never have that
            // far in flight; the prefix is what matters.
            let keep = len.min(MAX_SACK_BYTES);
            let mut sack = Sack::new(keep);
            sack.bits[..keep].copy_from_slice(&body[..keep]);
            header.sack = Some(sack);
        }
        ext = next;
        at += 2 + len;
    }
    Ok((header, &datagram[at..]))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Header {
        Header {
            ty: Type::Data,
            conn_id: 0xbeef,
            ts: 0x0102_0304,
            ts_diff: 0x0a0b_0c0d,
            wnd: 1 << 20,
            seq: 65535,
            ack: 7,
            sack: None,
        }
    }

    #[test]
    fn a_header_round_trips_with_and_without_a_sack() {
        let mut h = sample();
        let mut buf = [0u8; 64];
        let n = h.encode(&mut buf);
        assert_eq!(n, HEADER_LEN);
        let mut datagram = buf[..n].to_vec();
        datagram.extend_from_slice(b"payload");
        assert_eq!(parse(&datagram).unwrap(), (h, &b"payload"[..]));

        let mut sack = Sack::new(4);
        sack.set(0);
        sack.set(9);
        sack.set(31);
        sack.set(32); // past the span: ignored
        h.sack = Some(sack);
        let n = h.encode(&mut buf);
        assert_eq!(n, h.encoded_len());
        assert_eq!(n, 26);
        let (back, payload) = parse(&buf[..n]).unwrap();
        assert!(payload.is_empty());
        assert_eq!(back, h);
        let s = back.sack.unwrap();
        assert!(s.get(0) && s.get(9) && s.get(31) && !s.get(1) && !s.get(32));
    }

    /// The byte layout BEP 29 gives: type and version in one byte, then
    /// the extension, big-endian fields, and the SACK chained after.
    #[test]
    fn the_wire_layout_is_bep_29s() {
        let mut h = Header::new(Type::Syn);
        h.conn_id = 0x1234;
        h.seq = 1;
        let mut buf = [0u8; 64];
        h.encode(&mut buf);
        assert_eq!(buf[0], 0x41);
        assert_eq!(&buf[2..4], &[0x12, 0x34]);
        assert_eq!(&buf[16..18], &[0, 1]);
        let mut s = Sack::new(4);
        s.set(0);
        h.ty = Type::State;
        h.sack = Some(s);
        h.encode(&mut buf);
        assert_eq!(&buf[..2], &[0x21, 1]);
        assert_eq!(&buf[20..26], &[0, 4, 1, 0, 0, 0]);
    }

    #[test]
    fn broken_datagrams_are_refused() {
        let mut buf = [0u8; 64];
        sample().encode(&mut buf);
        assert_eq!(parse(&buf[..19]), Err(PacketError::Short(19)));
        let mut v2 = buf;
        v2[0] = 0x02;
        assert_eq!(parse(&v2[..20]), Err(PacketError::Version(2)));
        let mut t5 = buf;
        t5[0] = 0x51;
        assert_eq!(parse(&t5[..20]), Err(PacketError::Type(5)));
        // An extension whose length runs past the end.
        let mut ext = buf;
        ext[1] = 1;
        ext[20] = 0;
        ext[21] = 40;
        assert_eq!(parse(&ext[..30]), Err(PacketError::Extensions));
        // An extension header cut in half.
        assert_eq!(parse(&ext[..21]), Err(PacketError::Extensions));
        // A zero-length SACK.
        ext[21] = 0;
        assert_eq!(parse(&ext[..22]), Err(PacketError::Extensions));
    }

    /// Unknown extensions are skipped by their length, and a chain longer
    /// than a handful is refused rather than walked.
    #[test]
    fn unknown_extensions_are_skipped_and_chains_are_bounded() {
        let mut d = vec![0u8; 20];
        d[0] = 0x01;
        d[1] = 2; // close-reason style, unknown to us
        d.extend_from_slice(&[1, 4, 9, 9, 9, 9]); // next: SACK
        d.extend_from_slice(&[0, 4, 0b101, 0, 0, 0]);
        d.extend_from_slice(b"x");
        let (h, payload) = parse(&d).unwrap();
        assert_eq!(payload, b"x");
        let s = h.sack.unwrap();
        assert!(s.get(0) && !s.get(1) && s.get(2));

        let mut long = vec![0u8; 20];
        long[0] = 0x01;
        long[1] = 7;
        for _ in 0..20 {
            long.extend_from_slice(&[7, 0]);
        }
        assert_eq!(parse(&long), Err(PacketError::Extensions));
    }

    /// A SACK longer than we keep is cut to its prefix.
    #[test]
    fn a_long_sack_keeps_its_prefix() {
        let mut d = vec![0u8; 20];
        d[0] = 0x21;
        d[1] = 1;
        d.extend_from_slice(&[0, 64]);
        let mut bits = vec![0u8; 64];
        bits[0] = 1;
        bits[40] = 1;
        d.extend_from_slice(&bits);
        let (h, payload) = parse(&d).unwrap();
        assert!(payload.is_empty());
        let s = h.sack.unwrap();
        assert_eq!(s.span(), MAX_SACK_BYTES * 8);
        assert!(s.get(0));
    }
}
