//! BEP 9 (`ut_metadata`): fetching the info dictionary from peers, which is
//! how a magnet link becomes a torrent.
//!
//! Two parts, both pure:
//! - [`MetadataMessage`]: the three wire messages (request, data, reject).
//! - [`MetadataAssembler`]: a sans-IO state machine that spreads the 16 KiB
//!   pieces of the info dictionary over several peers, re-asks slow ones,
//!   and checks the result against the info-hash before handing it out.
//!
//! The shell feeds it events (a peer announced `metadata_size`, a piece
//! arrived, a peer rejected or left) together with the current time, and asks
//! it which piece to request from whom. It never touches sockets or clocks.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::bencode::{Value, decode_prefix, encode};
use crate::id::InfoHash;
use crate::peer::extension::{dict_int, kind};

pub use crate::peer::extension::MAX_METADATA_SIZE;

/// Size of every metadata piece but the last (fixed by BEP 9).
pub const METADATA_PIECE_LEN: usize = 16384;

/// Opaque peer identity chosen by the shell (e.g. a connection counter), so
/// the core does not depend on socket addresses or connection types.
pub type PeerKey = u64;

/// Requests a single peer may have in flight. Metadata is small; two keeps
/// one round trip of pipelining without letting one slow peer hoard pieces.
pub const MAX_OUTSTANDING_PER_PEER: usize = 2;

/// After this long without an answer a piece may also be asked from another
/// peer (the first request stays valid: whoever answers first wins).
pub const REREQUEST_AFTER: Duration = Duration::from_secs(5);

/// After this long a request is considered lost and stops counting against
/// the peer's outstanding limit, so a peer that silently drops one request
/// is not blocked forever.
pub const REQUEST_EXPIRE: Duration = Duration::from_secs(20);

/// At most this many peers may be asking for the same piece at once.
const MAX_REQUESTERS_PER_PIECE: usize = 3;

/// Peers tracked by one assembler; more are refused so a flood of
/// connections cannot grow the table without bound.
pub const MAX_PEERS: usize = 1024;

/// Why a metadata message or event was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MetadataError {
    /// The message is not valid bencode.
    #[error("ut_metadata message is not bencode: {0}")]
    Bencode(String),
    /// Valid bencode but not a dictionary.
    #[error("ut_metadata message is a bencode {0}, expected a dictionary")]
    NotADict(&'static str),
    /// A required key is absent or not an integer in range.
    #[error("ut_metadata message has no valid `{0}`")]
    MissingField(&'static str),
    /// `msg_type` other than 0, 1, 2.
    #[error("unknown ut_metadata msg_type {0}")]
    UnknownMsgType(i64),
    /// A data message carries more than one piece's worth of bytes.
    #[error("ut_metadata data message carries {0} bytes, more than one piece")]
    DataTooLong(usize),
    /// A peer announced `metadata_size` 0.
    #[error("peer {peer} announced metadata_size 0")]
    SizeZero {
        /// The peer that announced it.
        peer: PeerKey,
    },
    /// A peer announced a size we refuse to buffer.
    #[error(
        "peer {peer} announced metadata_size {size}, more than the {MAX_METADATA_SIZE} byte limit"
    )]
    SizeTooLarge {
        /// The peer that announced it.
        peer: PeerKey,
        /// What it announced.
        size: u32,
    },
    /// Too many peers are already registered with this assembler.
    #[error("metadata assembler already tracks {MAX_PEERS} peers")]
    TooManyPeers,
    /// Data arrived before any peer told us the size.
    #[error("metadata piece {piece} arrived before any metadata_size was known")]
    SizeUnknown {
        /// The piece index in the message.
        piece: u32,
    },
    /// `total_size` in a data message disagrees with the size being assembled.
    #[error(
        "peer {peer} sent total_size {got}, but the metadata being assembled is {expected} bytes"
    )]
    TotalSizeMismatch {
        /// The sender.
        peer: PeerKey,
        /// The size fixed for this assembly.
        expected: u32,
        /// The size in the message.
        got: u32,
    },
    /// Piece index past the end.
    #[error("peer {peer} sent metadata piece {piece}, but there are only {pieces}")]
    PieceOutOfRange {
        /// The sender.
        peer: PeerKey,
        /// The index in the message.
        piece: u32,
        /// How many pieces the metadata has.
        pieces: u32,
    },
    /// A piece of the wrong length (every piece but the last is 16 KiB).
    #[error("peer {peer} sent {got} bytes for metadata piece {piece}, expected {expected}")]
    WrongPieceLength {
        /// The sender.
        peer: PeerKey,
        /// The index in the message.
        piece: u32,
        /// The length that piece must have.
        expected: usize,
        /// The length received.
        got: usize,
    },
    /// All pieces arrived but their SHA-1 is not the info-hash. The state
    /// has been reset; the shell should drop (and may ban) the contributors.
    #[error(
        "assembled metadata does not match the info-hash; contributed by peers {contributors:?}"
    )]
    HashMismatch {
        /// Every peer that supplied at least one piece, sorted.
        contributors: Vec<PeerKey>,
    },
}

/// One BEP 9 message (the payload after the extended message id).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MetadataMessage {
    /// Please send piece `piece`.
    Request {
        /// Piece index.
        piece: u32,
    },
    /// Here is piece `piece` of a `total_size`-byte info dictionary.
    Data {
        /// Piece index.
        piece: u32,
        /// Size of the whole info dictionary.
        total_size: u32,
        /// The piece's bytes (16 KiB, or less for the last piece).
        data: Bytes,
    },
    /// I will not send piece `piece`.
    Reject {
        /// Piece index.
        piece: u32,
    },
}

/// Bencode header of every message; fields in key order.
#[derive(Serialize)]
struct Header {
    msg_type: u8,
    piece: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    total_size: Option<u32>,
}

impl MetadataMessage {
    /// Bencodes the message; for `Data`, the raw piece follows the dictionary.
    pub fn encode(&self) -> Vec<u8> {
        match self {
            MetadataMessage::Request { piece } => encode(&Header {
                msg_type: 0,
                piece: *piece,
                total_size: None,
            }),
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                let mut out = encode(&Header {
                    msg_type: 1,
                    piece: *piece,
                    total_size: Some(*total_size),
                });
                out.extend_from_slice(data);
                out
            }
            MetadataMessage::Reject { piece } => encode(&Header {
                msg_type: 2,
                piece: *piece,
                total_size: None,
            }),
        }
    }

    /// Parses a message. Unknown keys are ignored; trailing bytes after a
    /// request or reject are ignored too (some clients pad), but a data
    /// message may carry at most one piece.
    pub fn decode(payload: &[u8]) -> Result<Self, MetadataError> {
        let (value, used): (Value, usize) =
            decode_prefix(payload).map_err(|e| MetadataError::Bencode(e.0))?;
        if !matches!(value, Value::Dict(_)) {
            return Err(MetadataError::NotADict(kind(&value)));
        }
        let msg_type =
            dict_int(&value, b"msg_type").ok_or(MetadataError::MissingField("msg_type"))?;
        let piece = dict_int(&value, b"piece")
            .and_then(|n| u32::try_from(n).ok())
            .ok_or(MetadataError::MissingField("piece"))?;
        match msg_type {
            0 => Ok(MetadataMessage::Request { piece }),
            1 => {
                let total_size = dict_int(&value, b"total_size")
                    .and_then(|n| u32::try_from(n).ok())
                    .ok_or(MetadataError::MissingField("total_size"))?;
                let data = payload.get(used..).unwrap_or_default();
                if data.len() > METADATA_PIECE_LEN {
                    return Err(MetadataError::DataTooLong(data.len()));
                }
                Ok(MetadataMessage::Data {
                    piece,
                    total_size,
                    data: Bytes::copy_from_slice(data),
                })
            }
            2 => Ok(MetadataMessage::Reject { piece }),
            other => Err(MetadataError::UnknownMsgType(other)),
        }
    }
}

/// Answers a peer's request from our own info dictionary: `Data` for a valid
/// index, `None` when out of range (the caller then sends `Reject`).
pub fn serve_piece(info_bytes: &[u8], piece: u32) -> Option<MetadataMessage> {
    let total_size = u32::try_from(info_bytes.len()).ok()?;
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN)?;
    if start >= info_bytes.len() {
        return None;
    }
    let end = (start + METADATA_PIECE_LEN).min(info_bytes.len());
    Some(MetadataMessage::Data {
        piece,
        total_size,
        data: Bytes::copy_from_slice(&info_bytes[start..end]),
    })
}

/// Number of pieces in `size` bytes of metadata.
fn piece_count(size: u32) -> usize {
    (size as usize).div_ceil(METADATA_PIECE_LEN)
}

/// What we know about one metadata piece.
#[derive(Debug, Clone)]
enum Piece {
    /// Not received; the peers currently asked for it and when.
    Missing(Vec<(PeerKey, Instant)>),
    /// Received from this peer (remembered for blame on hash mismatch).
    Have(PeerKey),
}

/// What we know about one peer.
#[derive(Debug, Clone, Default)]
struct PeerState {
    /// The `metadata_size` it announced.
    size: u32,
    /// Pieces this peer refused; not asked again from it until it delivers
    /// something, which shows it is serving again.
    rejected: BTreeSet<u32>,
}

/// Fetches one info dictionary from many peers at once and verifies it.
///
/// The first valid `metadata_size` fixes the buffer. A peer announcing a
/// different size is still recorded but never asked for pieces during this
/// assembly: it is either wrong or lying, and the hash check settles who was
/// right. If the hash check fails, the contributors are forgotten, the
/// buffer is dropped, and the size is re-chosen from the remaining peers.
#[derive(Debug)]
pub struct MetadataAssembler {
    info_hash: InfoHash,
    size: Option<u32>,
    buf: Vec<u8>,
    pieces: Vec<Piece>,
    have: usize,
    peers: HashMap<PeerKey, PeerState>,
    done: bool,
}

impl MetadataAssembler {
    /// A fresh assembler for the info dictionary whose SHA-1 is `info_hash`.
    pub fn new(info_hash: InfoHash) -> Self {
        MetadataAssembler {
            info_hash,
            size: None,
            buf: Vec::new(),
            pieces: Vec::new(),
            have: 0,
            peers: HashMap::new(),
            done: false,
        }
    }

    /// Records the `metadata_size` from a peer's extended handshake. Sizes of
    /// 0 or above [`MAX_METADATA_SIZE`] are refused (the shell should not ask
    /// that peer for metadata). The first valid size fixes the buffer.
    pub fn on_peer_size(&mut self, peer: PeerKey, size: u32) -> Result<(), MetadataError> {
        if size == 0 {
            return Err(MetadataError::SizeZero { peer });
        }
        if size > MAX_METADATA_SIZE {
            return Err(MetadataError::SizeTooLarge { peer, size });
        }
        if !self.peers.contains_key(&peer) && self.peers.len() >= MAX_PEERS {
            return Err(MetadataError::TooManyPeers);
        }
        self.peers.entry(peer).or_default().size = size;
        if self.size.is_none() && !self.done {
            self.fix_size(size);
        }
        Ok(())
    }

    /// The next piece to request from `peer`, or `None` if it should not be
    /// asked now (unknown peer, size disagreement, limit reached, nothing
    /// left). Prefers pieces nobody is fetching; otherwise re-hands a piece
    /// whose requests are all older than [`REREQUEST_AFTER`].
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<u32> {
        if self.done {
            return None;
        }
        self.expire(now);
        let size = self.size?;
        let state = self.peers.get(&peer)?;
        if state.size != size {
            return None;
        }
        // A peer that rejected something gets one request at a time.
        let limit = if state.rejected.is_empty() {
            MAX_OUTSTANDING_PER_PEER
        } else {
            1
        };
        let outstanding = self
            .pieces
            .iter()
            .filter(|p| matches!(p, Piece::Missing(reqs) if reqs.iter().any(|(q, _)| *q == peer)))
            .count();
        if outstanding >= limit {
            return None;
        }
        let allowed = |i: usize| !state.rejected.contains(&(i as u32));
        let fresh = self
            .pieces
            .iter()
            .enumerate()
            .find(|(i, p)| allowed(*i) && matches!(p, Piece::Missing(reqs) if reqs.is_empty()))
            .map(|(i, _)| i);
        let chosen = fresh.or_else(|| {
            // Re-hand the piece whose newest request is oldest.
            self.pieces
                .iter()
                .enumerate()
                .filter_map(|(i, p)| match p {
                    Piece::Missing(reqs)
                        if allowed(i)
                            && reqs.len() < MAX_REQUESTERS_PER_PIECE
                            && reqs.iter().all(|(q, _)| *q != peer) =>
                    {
                        let newest = reqs.iter().map(|(_, t)| *t).max()?;
                        (now.saturating_duration_since(newest) >= REREQUEST_AFTER)
                            .then_some((newest, i))
                    }
                    _ => None,
                })
                .min()
                .map(|(_, i)| i)
        })?;
        if let Some(Piece::Missing(reqs)) = self.pieces.get_mut(chosen) {
            reqs.push((peer, now));
        }
        Some(chosen as u32)
    }

    /// Stores a received piece. Returns `Ok(Some(info_bytes))` once every
    /// piece is in and the SHA-1 matches the info-hash, `Ok(None)` while
    /// pieces are still missing (or for a duplicate), and
    /// `Err(HashMismatch)` — after resetting — if the assembled bytes are
    /// wrong.
    pub fn on_data(
        &mut self,
        peer: PeerKey,
        piece: u32,
        total_size: u32,
        data: &[u8],
        now: Instant,
    ) -> Result<Option<Bytes>, MetadataError> {
        if self.done {
            return Ok(None);
        }
        self.expire(now);
        let size = self.size.ok_or(MetadataError::SizeUnknown { piece })?;
        if total_size != size {
            return Err(MetadataError::TotalSizeMismatch {
                peer,
                expected: size,
                got: total_size,
            });
        }
        let pieces = self.pieces.len() as u32;
        let idx = piece as usize;
        let Some(slot) = self.pieces.get_mut(idx) else {
            return Err(MetadataError::PieceOutOfRange {
                peer,
                piece,
                pieces,
            });
        };
        let start = idx * METADATA_PIECE_LEN;
        let expected = (size as usize - start).min(METADATA_PIECE_LEN);
        if data.len() != expected {
            return Err(MetadataError::WrongPieceLength {
                peer,
                piece,
                expected,
                got: data.len(),
            });
        }
        if let Some(state) = self.peers.get_mut(&peer) {
            state.rejected.clear();
        }
        if matches!(slot, Piece::Have(_)) {
            return Ok(None);
        }
        *slot = Piece::Have(peer);
        self.have += 1;
        self.buf[start..start + expected].copy_from_slice(data);
        if self.have < self.pieces.len() {
            return Ok(None);
        }
        let digest = Sha1::digest(&self.buf);
        if digest[..] == self.info_hash.0[..] {
            self.done = true;
            self.pieces.clear();
            return Ok(Some(Bytes::from(std::mem::take(&mut self.buf))));
        }
        let contributors: Vec<PeerKey> = self
            .pieces
            .iter()
            .filter_map(|p| match p {
                Piece::Have(from) => Some(*from),
                Piece::Missing(_) => None,
            })
            .collect::<BTreeSet<_>>()
            .into_iter()
            .collect();
        self.reset(&contributors);
        Err(MetadataError::HashMismatch { contributors })
    }

    /// The peer refused `piece`: free it for others and ask this peer less.
    pub fn on_reject(&mut self, peer: PeerKey, piece: u32) {
        if let Some(Piece::Missing(reqs)) = self.pieces.get_mut(piece as usize) {
            reqs.retain(|(q, _)| *q != peer);
            if let Some(state) = self.peers.get_mut(&peer) {
                state.rejected.insert(piece);
            }
        }
    }

    /// The peer disconnected: its requests are freed. Pieces it already
    /// delivered are kept (and still blamed on it if the hash fails).
    pub fn on_peer_gone(&mut self, peer: PeerKey) {
        self.peers.remove(&peer);
        for p in &mut self.pieces {
            if let Piece::Missing(reqs) = p {
                reqs.retain(|(q, _)| *q != peer);
            }
        }
    }

    /// Pieces received and pieces in total (0 total while the size is unknown).
    pub fn progress(&self) -> (usize, usize) {
        (self.have, self.pieces.len())
    }

    /// Allocates the buffer for a `size`-byte dictionary.
    fn fix_size(&mut self, size: u32) {
        self.size = Some(size);
        self.buf = vec![0; size as usize];
        self.pieces = vec![Piece::Missing(Vec::new()); piece_count(size)];
        self.have = 0;
    }

    /// Forgets requests older than [`REQUEST_EXPIRE`].
    fn expire(&mut self, now: Instant) {
        for p in &mut self.pieces {
            if let Piece::Missing(reqs) = p {
                reqs.retain(|(_, t)| now.saturating_duration_since(*t) < REQUEST_EXPIRE);
            }
        }
    }

    /// After a hash mismatch: forget `blamed` peers and all pieces, then
    /// re-fix the size from the most common size among the remaining peers
    /// (ties go to the smaller size, for determinism).
    fn reset(&mut self, blamed: &[PeerKey]) {
        for p in blamed {
            self.peers.remove(p);
        }
        self.size = None;
        self.buf = Vec::new();
        self.pieces = Vec::new();
        self.have = 0;
        let mut votes: HashMap<u32, usize> = HashMap::new();
        for state in self.peers.values() {
            *votes.entry(state.size).or_default() += 1;
        }
        let best = votes
            .into_iter()
            .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
            .map(|(size, _)| size);
        if let Some(size) = best {
            self.fix_size(size);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A bencoded info dict of `len` bytes (content irrelevant to BEP 9).
    fn info_of_len(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 251) as u8).collect()
    }

    fn hash_of(bytes: &[u8]) -> InfoHash {
        let d = Sha1::digest(bytes);
        let mut h = [0u8; 20];
        h.copy_from_slice(&d[..]);
        InfoHash(h)
    }

    fn data_of(info: &[u8], piece: u32) -> Bytes {
        match serve_piece(info, piece) {
            Some(MetadataMessage::Data { data, .. }) => data,
            other => panic!("expected data, got {other:?}"),
        }
    }

    #[test]
    fn message_wire_format() {
        let req = MetadataMessage::Request { piece: 0 };
        assert_eq!(req.encode(), b"d8:msg_typei0e5:piecei0ee");
        let rej = MetadataMessage::Reject { piece: 3 };
        assert_eq!(rej.encode(), b"d8:msg_typei2e5:piecei3ee");
        let data = MetadataMessage::Data {
            piece: 1,
            total_size: 16390,
            data: Bytes::from_static(b"xyz"),
        };
        assert_eq!(
            data.encode(),
            b"d8:msg_typei1e5:piecei1e10:total_sizei16390eexyz"
        );
        for m in [req, rej, data] {
            assert_eq!(MetadataMessage::decode(&m.encode()).unwrap(), m);
        }
    }

    #[test]
    fn decode_tolerates_unknown_keys_and_refuses_bad_messages() {
        assert_eq!(
            MetadataMessage::decode(b"d1:xi9e8:msg_typei0e5:piecei7ee").unwrap(),
            MetadataMessage::Request { piece: 7 }
        );
        assert_eq!(
            MetadataMessage::decode(b"d8:msg_typei7e5:piecei0ee"),
            Err(MetadataError::UnknownMsgType(7))
        );
        assert_eq!(
            MetadataMessage::decode(b"d8:msg_typei0ee"),
            Err(MetadataError::MissingField("piece"))
        );
        assert_eq!(
            MetadataMessage::decode(b"d8:msg_typei0e5:piecei-1ee"),
            Err(MetadataError::MissingField("piece"))
        );
        assert_eq!(
            MetadataMessage::decode(b"d8:msg_typei1e5:piecei0ee"),
            Err(MetadataError::MissingField("total_size"))
        );
        assert_eq!(
            MetadataMessage::decode(b"i5e"),
            Err(MetadataError::NotADict("integer"))
        );
        assert!(matches!(
            MetadataMessage::decode(b"d8:msg_type"),
            Err(MetadataError::Bencode(_))
        ));
        let mut big = b"d8:msg_typei1e5:piecei0e10:total_sizei99999ee".to_vec();
        big.extend(vec![0u8; METADATA_PIECE_LEN + 1]);
        assert_eq!(
            MetadataMessage::decode(&big),
            Err(MetadataError::DataTooLong(METADATA_PIECE_LEN + 1))
        );
    }

    #[test]
    fn serve_piece_covers_range() {
        let info = info_of_len(METADATA_PIECE_LEN + 10);
        assert_eq!(data_of(&info, 0).len(), METADATA_PIECE_LEN);
        assert_eq!(data_of(&info, 1).len(), 10);
        assert_eq!(serve_piece(&info, 2), None);
        assert_eq!(serve_piece(&info, u32::MAX), None);
        assert_eq!(serve_piece(&[], 0), None);
        match serve_piece(&info, 1).unwrap() {
            MetadataMessage::Data { total_size, .. } => {
                assert_eq!(total_size as usize, info.len())
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn assembles_from_two_peers() {
        let info = info_of_len(3 * METADATA_PIECE_LEN + 100);
        let size = info.len() as u32;
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        a.on_peer_size(1, size).unwrap();
        a.on_peer_size(2, size).unwrap();
        assert_eq!(a.progress(), (0, 4));
        // Peer 1 gets two pieces, then hits its limit; peer 2 gets the rest.
        assert_eq!(a.next_request(1, t), Some(0));
        assert_eq!(a.next_request(1, t), Some(1));
        assert_eq!(a.next_request(1, t), None);
        assert_eq!(a.next_request(2, t), Some(2));
        assert_eq!(a.next_request(2, t), Some(3));
        assert_eq!(a.next_request(2, t), None);
        for (peer, piece) in [(2, 3), (1, 0), (2, 2)] {
            let d = data_of(&info, piece);
            assert_eq!(a.on_data(peer, piece, size, &d, t).unwrap(), None);
        }
        assert_eq!(a.progress(), (3, 4));
        // Duplicate delivery is harmless.
        let d0 = data_of(&info, 0);
        assert_eq!(a.on_data(2, 0, size, &d0, t).unwrap(), None);
        let d1 = data_of(&info, 1);
        let out = a.on_data(1, 1, size, &d1, t).unwrap().unwrap();
        assert_eq!(&out[..], &info[..]);
        assert_eq!(a.next_request(1, t), None);
    }

    #[test]
    fn single_short_piece() {
        let info = b"d4:name1:xe".to_vec();
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        a.on_peer_size(9, info.len() as u32).unwrap();
        assert_eq!(a.next_request(9, t), Some(0));
        let out = a.on_data(9, 0, info.len() as u32, &info, t).unwrap();
        assert_eq!(out.as_deref(), Some(&info[..]));
    }

    #[test]
    fn reject_frees_piece_and_throttles_peer() {
        let info = info_of_len(3 * METADATA_PIECE_LEN);
        let size = info.len() as u32;
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        a.on_peer_size(1, size).unwrap();
        a.on_peer_size(2, size).unwrap();
        assert_eq!(a.next_request(1, t), Some(0));
        assert_eq!(a.next_request(1, t), Some(1));
        a.on_reject(1, 0);
        // Peer 1 now has one outstanding (piece 1) and a limit of one.
        assert_eq!(a.next_request(1, t), None);
        // Piece 0 is free again and goes to peer 2 at once.
        assert_eq!(a.next_request(2, t), Some(0));
        a.on_reject(1, 1);
        // Peer 1 rejected 0 and 1; it may still be asked for piece 2.
        assert_eq!(a.next_request(1, t), Some(2));
        assert_eq!(a.next_request(2, t), Some(1));
        // Delivering clears peer 1's rejection record.
        a.on_data(1, 2, size, &data_of(&info, 2), t).unwrap();
        a.on_data(2, 0, size, &data_of(&info, 0), t).unwrap();
        let out = a.on_data(2, 1, size, &data_of(&info, 1), t).unwrap();
        assert!(out.is_some());
    }

    #[test]
    fn hash_mismatch_blames_contributors_and_resets() {
        let info = info_of_len(2 * METADATA_PIECE_LEN);
        let size = info.len() as u32;
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        for p in [1, 2, 3] {
            a.on_peer_size(p, size).unwrap();
        }
        assert_eq!(a.next_request(1, t), Some(0));
        assert_eq!(a.next_request(2, t), Some(1));
        let bad = vec![0xAA; METADATA_PIECE_LEN];
        assert_eq!(a.on_data(2, 1, size, &bad, t).unwrap(), None);
        let err = a.on_data(1, 0, size, &data_of(&info, 0), t).unwrap_err();
        assert_eq!(
            err,
            MetadataError::HashMismatch {
                contributors: vec![1, 2]
            }
        );
        assert!(err.to_string().contains("[1, 2]"));
        // Fresh start with the remaining peer 3; blamed peers get nothing.
        assert_eq!(a.progress(), (0, 2));
        assert_eq!(a.next_request(1, t), None);
        assert_eq!(a.next_request(3, t), Some(0));
        assert_eq!(a.next_request(3, t), Some(1));
        a.on_data(3, 0, size, &data_of(&info, 0), t).unwrap();
        let out = a.on_data(3, 1, size, &data_of(&info, 1), t).unwrap();
        assert_eq!(out.as_deref(), Some(&info[..]));
    }

    #[test]
    fn reset_without_remaining_peers_waits_for_a_size() {
        let info = info_of_len(10);
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        a.on_peer_size(1, 10).unwrap();
        assert!(matches!(
            a.on_data(1, 0, 10, &[0; 10], t),
            Err(MetadataError::HashMismatch { .. })
        ));
        assert_eq!(a.progress(), (0, 0));
        assert_eq!(
            a.on_data(4, 0, 10, &info, t),
            Err(MetadataError::SizeUnknown { piece: 0 })
        );
        a.on_peer_size(4, 10).unwrap();
        assert!(a.on_data(4, 0, 10, &info, t).unwrap().is_some());
    }

    #[test]
    fn bad_sizes_are_refused() {
        let mut a = MetadataAssembler::new(InfoHash([0; 20]));
        assert_eq!(
            a.on_peer_size(1, 0),
            Err(MetadataError::SizeZero { peer: 1 })
        );
        let err = a.on_peer_size(2, MAX_METADATA_SIZE + 1).unwrap_err();
        assert_eq!(
            err,
            MetadataError::SizeTooLarge {
                peer: 2,
                size: MAX_METADATA_SIZE + 1
            }
        );
        assert!(err.to_string().contains("16777217"));
        assert_eq!(a.progress(), (0, 0));
        assert_eq!(a.next_request(1, Instant::now()), None);
        a.on_peer_size(3, MAX_METADATA_SIZE).unwrap();
        assert_eq!(a.progress(), (0, 1024));
    }

    #[test]
    fn peer_with_different_size_is_not_asked() {
        let mut a = MetadataAssembler::new(InfoHash([0; 20]));
        let t = Instant::now();
        a.on_peer_size(1, 20_000).unwrap();
        a.on_peer_size(2, 30_000).unwrap();
        assert_eq!(a.progress(), (0, 2));
        assert_eq!(a.next_request(2, t), None);
        assert_eq!(a.next_request(1, t), Some(0));
        // Unknown peers are not asked either.
        assert_eq!(a.next_request(77, t), None);
    }

    #[test]
    fn wrong_length_total_size_and_range_are_refused() {
        let info = info_of_len(METADATA_PIECE_LEN + 5);
        let size = info.len() as u32;
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        a.on_peer_size(1, size).unwrap();
        assert_eq!(
            a.on_data(1, 0, size, &info[..100], t),
            Err(MetadataError::WrongPieceLength {
                peer: 1,
                piece: 0,
                expected: METADATA_PIECE_LEN,
                got: 100
            })
        );
        // The short last piece must be exactly 5 bytes, not padded.
        assert_eq!(
            a.on_data(1, 1, size, &[0; METADATA_PIECE_LEN], t),
            Err(MetadataError::WrongPieceLength {
                peer: 1,
                piece: 1,
                expected: 5,
                got: METADATA_PIECE_LEN
            })
        );
        assert_eq!(
            a.on_data(1, 2, size, &[0; 5], t),
            Err(MetadataError::PieceOutOfRange {
                peer: 1,
                piece: 2,
                pieces: 2
            })
        );
        assert_eq!(
            a.on_data(1, 0, size + 1, &info[..METADATA_PIECE_LEN], t),
            Err(MetadataError::TotalSizeMismatch {
                peer: 1,
                expected: size,
                got: size + 1
            })
        );
        assert_eq!(a.progress(), (0, 2));
    }

    #[test]
    fn slow_pieces_are_handed_out_again() {
        let info = info_of_len(2 * METADATA_PIECE_LEN);
        let size = info.len() as u32;
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t0 = Instant::now();
        a.on_peer_size(1, size).unwrap();
        a.on_peer_size(2, size).unwrap();
        assert_eq!(a.next_request(1, t0), Some(0));
        assert_eq!(a.next_request(1, t0), Some(1));
        // Too early: everything is being fetched.
        assert_eq!(a.next_request(2, t0 + Duration::from_secs(4)), None);
        // After the re-request delay, peer 2 may race peer 1 for both.
        let t1 = t0 + REREQUEST_AFTER;
        assert_eq!(a.next_request(2, t1), Some(0));
        assert_eq!(a.next_request(2, t1), Some(1));
        assert_eq!(a.next_request(2, t1), None);
        // Peer 1 answers piece 0 late; peer 2 answers piece 1. Both count.
        a.on_data(1, 0, size, &data_of(&info, 0), t1).unwrap();
        assert!(
            a.on_data(2, 1, size, &data_of(&info, 1), t1)
                .unwrap()
                .is_some()
        );
    }

    #[test]
    fn silent_requests_expire_and_gone_peers_free_pieces() {
        let info = info_of_len(3 * METADATA_PIECE_LEN);
        let size = info.len() as u32;
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t0 = Instant::now();
        a.on_peer_size(1, size).unwrap();
        assert_eq!(a.next_request(1, t0), Some(0));
        assert_eq!(a.next_request(1, t0), Some(1));
        assert_eq!(a.next_request(1, t0 + Duration::from_secs(10)), None);
        // Both requests expire, so peer 1 is unblocked (and gets piece 0 again).
        let t1 = t0 + REQUEST_EXPIRE;
        assert_eq!(a.next_request(1, t1), Some(0));
        a.on_peer_size(2, size).unwrap();
        a.on_peer_gone(1);
        assert_eq!(a.next_request(1, t1), None);
        assert_eq!(a.next_request(2, t1), Some(0));
        assert_eq!(a.next_request(2, t1), Some(1));
    }
}
