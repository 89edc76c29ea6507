//! BEP 3 peer-wire messages (plus BEP 5 PORT, the BEP 6 fast extension,
//! BEP 10 EXTENDED and the BEP 52 hash exchange), and their strict, total
//! decoder. No sockets: the codec
//! feeds whole frames in here.
//!
//! Whether the fast messages were negotiated is not the decoder's business:
//! it decodes them always, and [`PeerState`](super::state::PeerState)
//! decides what an un-negotiated one means.

use super::hashes::{self, HashMessageError, HashRequest};
use crate::merkle::Hash;
use bytes::{BufMut, Bytes, BytesMut};

/// Largest block we ask for or serve. Every mainstream client uses 16 KiB;
/// BEP 3 notes that larger requests are commonly refused.
pub const BLOCK_LEN: u32 = 16 * 1024;

/// Largest REQUEST length we will serve. A little slack over BLOCK_LEN for
/// clients that ask for 32 KiB; anything bigger is a protocol violation.
pub const MAX_REQUEST_LEN: u32 = 32 * 1024;

/// One block of one piece.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct BlockRef {
    /// Piece index.
    pub piece: u32,
    /// Byte offset inside the piece.
    pub offset: u32,
    /// Length in bytes.
    pub len: u32,
}

/// A decoded peer-wire message (the frame's length prefix removed).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Message {
    /// Zero-length frame.
    KeepAlive,
    /// id 0.
    Choke,
    /// id 1.
    Unchoke,
    /// id 2.
    Interested,
    /// id 3.
    NotInterested,
    /// id 4: the peer completed a piece.
    Have(u32),
    /// id 5: raw bitfield bytes; its length can only be checked once the piece count is known.
    Bitfield(Bytes),
    /// id 6.
    Request(BlockRef),
    /// id 7: block data; `data` is a zero-copy slice of the read buffer.
    Piece {
        /// Piece index.
        piece: u32,
        /// Offset in the piece.
        offset: u32,
        /// The bytes.
        data: Bytes,
    },
    /// id 8.
    Cancel(BlockRef),
    /// id 9 (BEP 5): the peer's DHT port.
    Port(u16),
    /// id 0x0D (BEP 6): a piece the sender suggests we download.
    SuggestPiece(u32),
    /// id 0x0E (BEP 6): the sender has every piece (instead of a BITFIELD).
    HaveAll,
    /// id 0x0F (BEP 6): the sender has no piece (instead of a BITFIELD).
    HaveNone,
    /// id 0x10 (BEP 6): the sender will not serve this request.
    RejectRequest(BlockRef),
    /// id 0x11 (BEP 6): a piece the sender serves even while choking us.
    AllowedFast(u32),
    /// id 20 (BEP 10): extension message `id` with its payload.
    Extended {
        /// 0 for the extended handshake, else an id from our `m` dictionary.
        id: u8,
        /// Bencoded (and, for ut_metadata data, trailing raw) payload.
        payload: Bytes,
    },
    /// id 21 (BEP 52): the peer asks for hashes of a file's merkle tree.
    HashRequest(HashRequest),
    /// id 22 (BEP 52): the nodes asked for, then their uncles.
    Hashes {
        /// The request answered.
        req: HashRequest,
        /// [`HashRequest::answer_len`] hashes.
        hashes: Vec<Hash>,
    },
    /// id 23 (BEP 52): the sender will not answer this hash request.
    HashReject(HashRequest),
    /// Any other id: ignored, not fatal.
    Unknown {
        /// The message id.
        id: u8,
    },
}

/// A frame that is not a valid message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MessageError {
    /// A fixed-size message with the wrong length.
    #[error("incorrect length for {name}: expected {expected}, got {got}")]
    BadLength {
        /// Message name.
        name: &'static str,
        /// Required payload length.
        expected: usize,
        /// Actual payload length.
        got: usize,
    },
    /// A variable-size message shorter than its fixed header.
    #[error("{name} message too short: {got} bytes")]
    TooShort {
        /// Message name.
        name: &'static str,
        /// Payload length.
        got: usize,
    },
    /// A BEP 52 hash message that breaks its rules.
    #[error(transparent)]
    Hash(#[from] HashMessageError),
}

fn be32(b: &[u8]) -> u32 {
    u32::from_be_bytes([b[0], b[1], b[2], b[3]])
}

fn exact(name: &'static str, payload: &[u8], expected: usize) -> Result<(), MessageError> {
    if payload.len() == expected {
        Ok(())
    } else {
        Err(MessageError::BadLength {
            name,
            expected,
            got: payload.len(),
        })
    }
}

fn block_ref(name: &'static str, p: &[u8]) -> Result<BlockRef, MessageError> {
    exact(name, p, 12)?;
    Ok(BlockRef {
        piece: be32(&p[0..4]),
        offset: be32(&p[4..8]),
        len: be32(&p[8..12]),
    })
}

impl Message {
    /// Decodes one frame body (everything after the 4-byte length). An empty
    /// body is a keep-alive.
    pub fn decode(mut frame: Bytes) -> Result<Message, MessageError> {
        if frame.is_empty() {
            return Ok(Message::KeepAlive);
        }
        let id = frame[0];
        let _ = bytes::Buf::get_u8(&mut frame);
        let p = &frame[..];
        Ok(match id {
            0 => exact("choke", p, 0).map(|_| Message::Choke)?,
            1 => exact("unchoke", p, 0).map(|_| Message::Unchoke)?,
            2 => exact("interested", p, 0).map(|_| Message::Interested)?,
            3 => exact("not interested", p, 0).map(|_| Message::NotInterested)?,
            4 => {
                exact("have", p, 4)?;
                Message::Have(be32(p))
            }
            5 => Message::Bitfield(frame),
            6 => Message::Request(block_ref("request", p)?),
            7 => {
                if p.len() < 8 {
                    return Err(MessageError::TooShort {
                        name: "piece",
                        got: p.len(),
                    });
                }
                let piece = be32(&p[0..4]);
                let offset = be32(&p[4..8]);
                Message::Piece {
                    piece,
                    offset,
                    data: frame.slice(8..),
                }
            }
            8 => Message::Cancel(block_ref("cancel", p)?),
            9 => {
                exact("port", p, 2)?;
                Message::Port(u16::from_be_bytes([p[0], p[1]]))
            }
            0x0D => {
                exact("suggest piece", p, 4)?;
                Message::SuggestPiece(be32(p))
            }
            0x0E => exact("have all", p, 0).map(|_| Message::HaveAll)?,
            0x0F => exact("have none", p, 0).map(|_| Message::HaveNone)?,
            0x10 => Message::RejectRequest(block_ref("reject request", p)?),
            0x11 => {
                exact("allowed fast", p, 4)?;
                Message::AllowedFast(be32(p))
            }
            20 => {
                if p.is_empty() {
                    return Err(MessageError::TooShort {
                        name: "extended",
                        got: 0,
                    });
                }
                Message::Extended {
                    id: p[0],
                    payload: frame.slice(1..),
                }
            }
            21 => Message::HashRequest(HashRequest::decode("hash request", p)?),
            22 => {
                let (req, hashes) = hashes::decode_hashes(p)?;
                Message::Hashes { req, hashes }
            }
            23 => Message::HashReject(HashRequest::decode("hash reject", p)?),
            id => Message::Unknown { id },
        })
    }

    /// Short name for logs.
    pub fn kind(&self) -> String {
        match self {
            Message::KeepAlive => "keep-alive".into(),
            Message::Choke => "choke".into(),
            Message::Unchoke => "unchoke".into(),
            Message::Interested => "interested".into(),
            Message::NotInterested => "not interested".into(),
            Message::Have(i) => format!("have {i}"),
            Message::Bitfield(b) => format!("bitfield ({} bytes)", b.len()),
            Message::Request(r) => format!("request {}:{}+{}", r.piece, r.offset, r.len),
            Message::Piece {
                piece,
                offset,
                data,
            } => format!("piece {piece}:{offset}+{}", data.len()),
            Message::Cancel(r) => format!("cancel {}:{}+{}", r.piece, r.offset, r.len),
            Message::Port(p) => format!("port {p}"),
            Message::SuggestPiece(i) => format!("suggest piece {i}"),
            Message::HaveAll => "have all".into(),
            Message::HaveNone => "have none".into(),
            Message::RejectRequest(r) => format!("reject {}:{}+{}", r.piece, r.offset, r.len),
            Message::AllowedFast(i) => format!("allowed fast {i}"),
            Message::Extended { id, payload } => format!("extended {id} ({} bytes)", payload.len()),
            Message::HashRequest(r) => format!(
                "hash request layer {} {}+{} proof {}",
                r.base_layer, r.index, r.length, r.proof_layers
            ),
            Message::Hashes { req, hashes } => format!(
                "hashes layer {} {}+{} ({} hashes)",
                req.base_layer,
                req.index,
                req.length,
                hashes.len()
            ),
            Message::HashReject(r) => format!(
                "hash reject layer {} {}+{}",
                r.base_layer, r.index, r.length
            ),
            Message::Unknown { id } => format!("unknown id {id}"),
        }
    }

    /// Length of the encoded frame including its 4-byte prefix.
    pub fn encoded_len(&self) -> usize {
        4 + match self {
            Message::KeepAlive => 0,
            Message::Choke
            | Message::Unchoke
            | Message::Interested
            | Message::NotInterested
            | Message::HaveAll
            | Message::HaveNone => 1,
            Message::Have(_) | Message::SuggestPiece(_) | Message::AllowedFast(_) => 5,
            Message::Bitfield(b) => 1 + b.len(),
            Message::Request(_) | Message::Cancel(_) | Message::RejectRequest(_) => 13,
            Message::Piece { data, .. } => 9 + data.len(),
            Message::Port(_) => 3,
            Message::Extended { payload, .. } => 2 + payload.len(),
            Message::HashRequest(_) | Message::HashReject(_) => 1 + hashes::HEADER_LEN,
            Message::Hashes { hashes, .. } => 1 + hashes::HEADER_LEN + 32 * hashes.len(),
            Message::Unknown { .. } => 1,
        }
    }

    /// Appends the framed message (length prefix included) to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        dst.reserve(self.encoded_len());
        dst.put_u32((self.encoded_len() - 4) as u32);
        match self {
            Message::KeepAlive => {}
            Message::Choke => dst.put_u8(0),
            Message::Unchoke => dst.put_u8(1),
            Message::Interested => dst.put_u8(2),
            Message::NotInterested => dst.put_u8(3),
            Message::Have(i) => {
                dst.put_u8(4);
                dst.put_u32(*i);
            }
            Message::SuggestPiece(i) => {
                dst.put_u8(0x0D);
                dst.put_u32(*i);
            }
            Message::HaveAll => dst.put_u8(0x0E),
            Message::HaveNone => dst.put_u8(0x0F),
            Message::AllowedFast(i) => {
                dst.put_u8(0x11);
                dst.put_u32(*i);
            }
            Message::Bitfield(b) => {
                dst.put_u8(5);
                dst.put_slice(b);
            }
            Message::Request(r) | Message::Cancel(r) | Message::RejectRequest(r) => {
                dst.put_u8(match self {
                    Message::Request(_) => 6,
                    Message::Cancel(_) => 8,
                    _ => 0x10,
                });
                dst.put_u32(r.piece);
                dst.put_u32(r.offset);
                dst.put_u32(r.len);
            }
            Message::Piece {
                piece,
                offset,
                data,
            } => {
                dst.put_u8(7);
                dst.put_u32(*piece);
                dst.put_u32(*offset);
                dst.put_slice(data);
            }
            Message::Port(p) => {
                dst.put_u8(9);
                dst.put_u16(*p);
            }
            Message::Extended { id, payload } => {
                dst.put_u8(20);
                dst.put_u8(*id);
                dst.put_slice(payload);
            }
            Message::HashRequest(r) => {
                dst.put_u8(21);
                r.encode(dst);
            }
            Message::Hashes { req, hashes } => {
                dst.put_u8(22);
                req.encode(dst);
                for h in hashes {
                    dst.put_slice(h);
                }
            }
            Message::HashReject(r) => {
                dst.put_u8(23);
                r.encode(dst);
            }
            Message::Unknown { id } => dst.put_u8(*id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(m: Message) {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        assert_eq!(buf.len(), m.encoded_len());
        let len = u32::from_be_bytes(buf[..4].try_into().unwrap()) as usize;
        assert_eq!(len + 4, buf.len());
        let body = buf.split_off(4).freeze();
        assert_eq!(Message::decode(body).unwrap(), m);
    }

    #[test]
    fn every_message_round_trips() {
        let r = BlockRef {
            piece: 3,
            offset: 16384,
            len: 16384,
        };
        for m in [
            Message::KeepAlive,
            Message::Choke,
            Message::Unchoke,
            Message::Interested,
            Message::NotInterested,
            Message::Have(0xdead_beef),
            Message::Bitfield(Bytes::from_static(&[0xff, 0x80])),
            Message::Request(r),
            Message::Cancel(r),
            Message::Piece {
                piece: 1,
                offset: 2,
                data: Bytes::from_static(b"hello"),
            },
            Message::Port(6881),
            Message::SuggestPiece(12),
            Message::HaveAll,
            Message::HaveNone,
            Message::RejectRequest(r),
            Message::AllowedFast(0xffff_ffff),
            Message::Extended {
                id: 0,
                payload: Bytes::from_static(b"de"),
            },
            Message::Unknown { id: 0x30 },
        ] {
            round_trip(m);
        }
    }

    #[test]
    fn golden_bytes() {
        let mut buf = BytesMut::new();
        Message::Have(7).encode(&mut buf);
        assert_eq!(&buf[..], &[0, 0, 0, 5, 4, 0, 0, 0, 7]);
        buf.clear();
        Message::Request(BlockRef {
            piece: 1,
            offset: 0x4000,
            len: 0x4000,
        })
        .encode(&mut buf);
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 13, 6, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0]
        );
    }

    #[test]
    fn strict_lengths() {
        let err = Message::decode(Bytes::from_static(&[4, 0, 0, 0, 7, 9])).unwrap_err();
        assert_eq!(
            err,
            MessageError::BadLength {
                name: "have",
                expected: 4,
                got: 5
            }
        );
        assert!(Message::decode(Bytes::from_static(&[0, 1])).is_err());
        assert!(Message::decode(Bytes::from_static(&[6, 0, 0])).is_err());
        assert!(matches!(
            Message::decode(Bytes::from_static(&[7, 0, 0, 0])),
            Err(MessageError::TooShort { name: "piece", .. })
        ));
        assert!(Message::decode(Bytes::from_static(&[20])).is_err());
    }

    #[test]
    fn unknown_ids_are_not_fatal() {
        assert_eq!(
            Message::decode(Bytes::from_static(&[0x30, 1, 2])).unwrap(),
            Message::Unknown { id: 0x30 }
        );
    }

    #[test]
    fn fast_extension_golden_bytes() {
        let enc = |m: Message| {
            let mut buf = BytesMut::new();
            m.encode(&mut buf);
            buf.to_vec()
        };
        assert_eq!(enc(Message::HaveAll), [0, 0, 0, 1, 0x0E]);
        assert_eq!(enc(Message::HaveNone), [0, 0, 0, 1, 0x0F]);
        assert_eq!(
            enc(Message::SuggestPiece(7)),
            [0, 0, 0, 5, 0x0D, 0, 0, 0, 7]
        );
        assert_eq!(
            enc(Message::AllowedFast(0x0102_0304)),
            [0, 0, 0, 5, 0x11, 1, 2, 3, 4]
        );
        let r = BlockRef {
            piece: 1,
            offset: 0x4000,
            len: 0x4000,
        };
        assert_eq!(
            enc(Message::RejectRequest(r)),
            [0, 0, 0, 13, 0x10, 0, 0, 0, 1, 0, 0, 0x40, 0, 0, 0, 0x40, 0]
        );
    }

    #[test]
    fn fast_extension_strict_lengths() {
        let bad = |b: &'static [u8], name, expected, got| {
            assert_eq!(
                Message::decode(Bytes::from_static(b)).unwrap_err(),
                MessageError::BadLength {
                    name,
                    expected,
                    got
                },
                "{b:?}"
            );
        };
        bad(&[0x0E, 0], "have all", 0, 1);
        bad(&[0x0F, 0, 0], "have none", 0, 2);
        bad(&[0x0D, 0, 0, 7], "suggest piece", 4, 3);
        bad(&[0x0D, 0, 0, 0, 7, 0], "suggest piece", 4, 5);
        bad(&[0x11, 1], "allowed fast", 4, 1);
        bad(&[0x10, 0, 0, 0, 1, 0, 0, 0, 0], "reject request", 12, 8);
        bad(
            &[0x10, 0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0x40, 0, 9],
            "reject request",
            12,
            13,
        );
    }
}
