//! `tokio_util` codec for length-prefixed peer-wire frames.
//!
//! The length is checked against [`MAX_FRAME`] *before* any buffer grows, so a
//! peer announcing a 4 GiB frame costs us nothing. Sync, no sockets.

use super::message::{Message, MessageError};
use bytes::{Buf, BytesMut};
use tokio_util::codec::{Decoder, Encoder};

/// Largest frame accepted: a bitfield for 8 million pieces, which also
/// covers a 16 KiB block (+13) and a 16 KiB ut_metadata piece with its dict.
/// The bitfield size cannot be known before the metadata on a magnet link.
pub const MAX_FRAME: usize = 1 << 20;

/// Why the frame stream broke.
#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    /// The length prefix exceeds [`MAX_FRAME`].
    #[error("frame of {0} bytes exceeds the {MAX_FRAME}-byte limit")]
    FrameTooLarge(usize),
    /// A frame that is not a valid message.
    #[error(transparent)]
    Message(#[from] MessageError),
    /// The socket failed.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// Peer-wire framing. Stateless: every frame is self-describing.
#[derive(Debug, Default, Clone, Copy)]
pub struct PeerCodec;

impl Decoder for PeerCodec {
    type Item = Message;
    type Error = CodecError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Message>, CodecError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > MAX_FRAME {
            return Err(CodecError::FrameTooLarge(len));
        }
        if src.len() < 4 + len {
            // Reserve only what this (bounded) frame still needs, so the
            // next read can bring it in one go.
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let frame = src.split_to(len).freeze();
        Ok(Some(Message::decode(frame)?))
    }
}

impl Encoder<Message> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

impl Encoder<&Message> for PeerCodec {
    type Error = CodecError;

    fn encode(&mut self, item: &Message, dst: &mut BytesMut) -> Result<(), CodecError> {
        item.encode(dst);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn partial_frames_wait_for_more() {
        let mut wire = BytesMut::new();
        let msgs = [
            Message::Unchoke,
            Message::Piece {
                piece: 9,
                offset: 0,
                data: Bytes::from(vec![7u8; 16384]),
            },
            Message::KeepAlive,
            Message::Have(3),
        ];
        for m in &msgs {
            m.encode(&mut wire);
        }
        // Feed the stream one byte at a time: every message comes out once, in order.
        let mut codec = PeerCodec;
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for b in wire.iter() {
            buf.extend_from_slice(&[*b]);
            while let Some(m) = codec.decode(&mut buf).unwrap() {
                out.push(m);
            }
        }
        assert_eq!(out, msgs);
        assert!(buf.is_empty());
    }

    #[test]
    fn oversized_frame_is_refused_before_allocating() {
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 0][..]);
        let cap = buf.capacity();
        assert!(matches!(
            PeerCodec.decode(&mut buf),
            Err(CodecError::FrameTooLarge(0xffff_ffff))
        ));
        assert_eq!(buf.capacity(), cap);
    }

    #[test]
    fn bad_message_is_an_error() {
        let mut buf = BytesMut::from(&[0, 0, 0, 2, 4, 1][..]);
        assert!(matches!(
            PeerCodec.decode(&mut buf),
            Err(CodecError::Message(_))
        ));
    }
}
