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

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::time::{Duration, Instant};

use bytes::Bytes;
use serde::Serialize;
use sha1::{Digest, Sha1};

use crate::bencode::{Limits, Value, decode_prefix_limited, encode};
use crate::id::InfoHash;
use crate::peer::extension::{dict_int, kind};

pub use crate::peer::extension::MAX_METADATA_SIZE;

/// Size of every metadata piece but the last (fixed by BEP 9).
pub const METADATA_PIECE_LEN: usize = 16384;

/// Largest ut_metadata message: one piece and a generous header.
pub const MAX_MESSAGE_LEN: usize = METADATA_PIECE_LEN + 4096;

/// Most bencode values in a message header (ours has six, keys included).
const MAX_HEADER_ITEMS: usize = 64;

/// Opaque peer identity chosen by the shell (e.g. a connection counter), so
/// the core does not depend on socket addresses or connection types.
pub type PeerKey = u64;

/// Requests a single peer may have in flight. Metadata is small; two keeps
/// one round trip of pipelining without letting one slow peer hoard pieces.
pub const MAX_OUTSTANDING_PER_PEER: usize = 2;

/// After this long without an answer a piece may also be asked from another
/// peer (the first request stays valid: whoever answers first wins).
pub const REREQUEST_AFTER: Duration = Duration::from_secs(5);

/// A peer that rejected a piece is not asked for it again for this long
/// (unless it delivers something meanwhile), so a peer that was only busy,
/// or the only one there is, is asked again later.
pub const REJECT_BACKOFF: Duration = Duration::from_secs(15);

/// After this long a request is considered lost and stops counting against
/// the peer's outstanding limit, so a peer that silently drops one request
/// is not blocked forever.
pub const REQUEST_EXPIRE: Duration = Duration::from_secs(20);

/// At most this many peers may be asking for the same piece at once.
const MAX_REQUESTERS_PER_PIECE: usize = 3;

/// Peers tracked by one assembler; more are refused so a flood of
/// connections cannot grow the table without bound.
pub const MAX_PEERS: usize = 1024;

/// Different sizes tracked at once: every tracked peer's, plus as many
/// sizes whose peers left but whose pieces are kept for a later peer.
pub const MAX_CANDIDATES: usize = 2 * MAX_PEERS;

/// Bytes of received pieces held across all candidate sizes.
pub const MAX_BUFFERED: usize = 2 * MAX_METADATA_SIZE as usize;

/// Piece hashes kept from failed rounds, to convict their senders later.
const MAX_FINGERPRINTS: usize = 4096;

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
    /// All pieces of one candidate size arrived but their SHA-1 is not the
    /// info-hash. That round's pieces are dropped. A sole contributor is
    /// proven bad ([`MetadataAssembler::is_bad`]); several become suspects,
    /// asked again only one at a time, so the shell should disconnect the
    /// bad ones and keep the suspects.
    #[error(
        "assembled metadata does not match the info-hash; contributed by peers {contributors:?}"
    )]
    HashMismatch {
        /// Every peer that supplied at least one piece of the round, sorted.
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
        let limits = Limits {
            max_len: MAX_MESSAGE_LEN,
            max_items: MAX_HEADER_ITEMS,
        };
        let (value, used): (Value, usize) =
            decode_prefix_limited(payload, limits).map_err(|e| MetadataError::Bencode(e.0))?;
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

/// Length of piece `piece` of `size` bytes of metadata, `None` past the end.
fn piece_len(size: u32, piece: u32) -> Option<usize> {
    let start = (piece as usize).checked_mul(METADATA_PIECE_LEN)?;
    let left = (size as usize).checked_sub(start).filter(|l| *l > 0)?;
    Some(left.min(METADATA_PIECE_LEN))
}

fn sha1_of(bytes: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(&Sha1::digest(bytes));
    out
}

/// A metadata piece somebody asked for or sent. Pieces nobody touched have
/// no slot, so an idle candidate costs a few bytes however large its size.
#[derive(Debug)]
enum Slot {
    /// Not received; the peers currently asked for it and when (never empty).
    Asked(Vec<(PeerKey, Instant)>),
    /// Received from `from` (remembered for blame if the hash fails).
    Have {
        /// The sender.
        from: PeerKey,
        /// The piece.
        data: Box<[u8]>,
    },
}

/// One size some peer announced, and the pieces received for it so far
/// (the current "round"; a failed hash check starts a new one).
#[derive(Debug, Default)]
struct Candidate {
    slots: BTreeMap<usize, Slot>,
    /// Slots that are `Have`.
    have: usize,
    /// Bytes held in `Have` slots.
    bytes: usize,
    /// Set while the round is fed by this one suspect alone.
    solo: Option<PeerKey>,
    /// When the round last changed hands or received a piece. A round
    /// without progress for [`REQUEST_EXPIRE`] is *stalled*: the peers
    /// waiting for their turn may take it over.
    active_at: Option<Instant>,
}

impl Candidate {
    /// Whether the round made no progress for [`REQUEST_EXPIRE`].
    fn stalled(&self, now: Instant) -> bool {
        self.active_at
            .is_none_or(|t| now.saturating_duration_since(t) >= REQUEST_EXPIRE)
    }

    /// Requests `peer` has in flight for this candidate.
    fn outstanding(&self, peer: PeerKey) -> usize {
        self.slots
            .values()
            .filter(|s| matches!(s, Slot::Asked(reqs) if reqs.iter().any(|(q, _)| *q == peer)))
            .count()
    }

    /// Keeps the requests `keep` selects, then drops slots left without any.
    fn retain_requests(&mut self, mut keep: impl FnMut(PeerKey, Instant) -> bool) {
        self.slots.retain(|_, s| match s {
            Slot::Asked(reqs) => {
                reqs.retain(|(q, t)| keep(*q, *t));
                !reqs.is_empty()
            }
            Slot::Have { .. } => true,
        });
    }

    /// Starts a new round, keeping only what `keep` sent and asked for.
    /// Returns the bytes freed.
    fn restart(&mut self, keep: Option<PeerKey>) -> usize {
        let mut freed = 0;
        self.slots.retain(|_, s| match s {
            Slot::Have { from, data } => {
                let kept = Some(*from) == keep;
                if !kept {
                    freed += data.len();
                }
                kept
            }
            Slot::Asked(reqs) => {
                reqs.retain(|(q, _)| Some(*q) == keep);
                !reqs.is_empty()
            }
        });
        self.bytes = self.bytes.saturating_sub(freed);
        self.have = self
            .slots
            .values()
            .filter(|s| matches!(s, Slot::Have { .. }))
            .count();
        self.solo = None;
        freed
    }
}

/// A piece hash from a round that failed the info-hash check, kept so the
/// sender can be convicted once the right bytes are known.
#[derive(Debug, Clone, Copy)]
struct Fingerprint {
    size: u32,
    piece: usize,
    from: PeerKey,
    sha1: [u8; 20],
}

/// What we know about one peer.
#[derive(Debug, Clone, Default)]
struct PeerState {
    /// The `metadata_size` it announced.
    size: u32,
    /// Pieces this peer refused, and when: not asked again from it for
    /// [`REJECT_BACKOFF`], or until it delivers something, which shows it
    /// is serving again.
    rejected: BTreeMap<u32, Instant>,
    /// Rejects and unanswered requests since its last useful piece. A peer
    /// with strikes is deprioritised: one request at a time, and only for
    /// pieces the peers without strikes cannot take right now.
    strikes: u32,
    /// It sent pieces of a round that failed the hash check alongside other
    /// peers, so it may be the liar. Suspects are asked only when no other
    /// peer of their size is left, and then one at a time.
    suspect: bool,
    /// Proven to send wrong or malformed data: never asked again.
    bad: bool,
    /// Solo rounds this suspect was given: the suspect with the fewest goes
    /// next, so liars cannot keep an honest suspect from its turn.
    turns: u32,
}

impl PeerState {
    /// Still expected to deliver: neither bad nor deprioritised.
    fn hopeful(&self) -> bool {
        !self.bad && self.strikes == 0
    }

    /// Neither bad nor suspect.
    fn clean(&self) -> bool {
        !self.bad && !self.suspect
    }

    /// Asked first.
    fn eager(&self) -> bool {
        self.clean() && self.strikes == 0
    }

    /// Requests it may have in flight.
    fn limit(&self) -> usize {
        if self.strikes > 0 || !self.rejected.is_empty() {
            1
        } else {
            MAX_OUTSTANDING_PER_PEER
        }
    }
}

/// How much a candidate deserves memory, higher first: whether any peer is
/// still hopeful about it, then fewest bytes still missing (a liar can
/// only hold memory by getting close to the end, where it must deliver a
/// wrong dictionary or stall, and either ends its claim), then how many
/// hopeful peers, then the size itself, so the order is total and the
/// first candidate can always take memory from the others.
type Priority = (bool, std::cmp::Reverse<usize>, usize, u32);

/// Fetches one info dictionary from many peers at once and verifies it.
///
/// Every size a peer announces is a *candidate*, assembled separately from
/// the peers that announced it, all in parallel; the first candidate whose
/// bytes hash to the info-hash wins. So a peer that lies about the size
/// only wastes its own requests.
///
/// Blame:
/// - A peer that sends a malformed piece (wrong length, index or
///   `total_size`), or that the shell reports with
///   [`on_peer_junk`](Self::on_peer_junk), is *bad*: never asked again.
/// - A round that fails the hash check and came from one peer proves that
///   peer bad. A round from several peers makes them all *suspects*:
///   they are asked only when no other peer of that size is left, and then
///   one suspect alone per round, so the next failure proves who lied.
///   Once the right bytes are known, every peer whose earlier piece differs
///   from them is marked bad as well.
/// - A peer that rejects a piece, or leaves a request unanswered for
///   [`REQUEST_EXPIRE`], is deprioritised at once (not banned): it gets one
///   request at a time, and only what the others cannot take.
///
/// Memory: at most [`MAX_PEERS`] peers, [`MAX_CANDIDATES`] sizes (each
/// costing only the pieces asked for or held) and [`MAX_BUFFERED`] bytes
/// of pieces across all sizes; when a piece would go over, the pieces of a
/// less promising candidate are dropped (or, if none is less promising,
/// the new piece is).
#[derive(Debug)]
pub struct MetadataAssembler {
    info_hash: InfoHash,
    /// The full v2 info-hash (SHA-256) when the torrent was named by it
    /// (a `urn:btmh` magnet): the dictionary is checked against it instead.
    info_hash_v2: Option<[u8; 32]>,
    peers: BTreeMap<PeerKey, PeerState>,
    candidates: BTreeMap<u32, Candidate>,
    /// Sum of `bytes` over all candidates.
    buffered: usize,
    fingerprints: VecDeque<Fingerprint>,
    /// Piece count of the verified dictionary, once there is one.
    done: Option<usize>,
    /// The latest time the shell told us (for events that carry none).
    clock: Option<Instant>,
}

impl MetadataAssembler {
    /// A fresh assembler for the info dictionary whose SHA-1 is `info_hash`.
    pub fn new(info_hash: InfoHash) -> Self {
        MetadataAssembler {
            info_hash,
            info_hash_v2: None,
            peers: BTreeMap::new(),
            candidates: BTreeMap::new(),
            buffered: 0,
            fingerprints: VecDeque::new(),
            done: None,
            clock: None,
        }
    }

    /// Checks the dictionary against the SHA-256 `v2` hash (BEP 52) instead
    /// of the SHA-1 one, when given.
    pub fn with_v2(mut self, v2: Option<[u8; 32]>) -> Self {
        self.info_hash_v2 = v2;
        self
    }

    /// Records the `metadata_size` from a peer's extended handshake. Sizes of
    /// 0 or above [`MAX_METADATA_SIZE`] are refused (the shell should not ask
    /// that peer for metadata). A peer that announces again with another
    /// size loses its pending requests and is deprioritised.
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
        let state = self.peers.entry(peer).or_default();
        let old = state.size;
        if old != 0 && old != size {
            state.strikes = state.strikes.saturating_add(1);
            state.rejected.clear();
        }
        state.size = size;
        if old != 0 && old != size {
            if let Some(c) = self.candidates.get_mut(&old) {
                c.retain_requests(|q, _| q != peer);
                if c.solo == Some(peer) {
                    c.solo = None;
                }
            }
            self.forget_if_orphan(old);
        }
        if self.done.is_none() {
            self.candidate_for(size);
        }
        Ok(())
    }

    /// The next piece to request from `peer`, or `None` if it should not be
    /// asked now (unknown or bad peer, its limit reached, nothing left for
    /// it, or other peers go first). Prefers pieces nobody is fetching;
    /// otherwise re-hands a piece whose requests are all older than
    /// [`REREQUEST_AFTER`].
    pub fn next_request(&mut self, peer: PeerKey, now: Instant) -> Option<u32> {
        if self.done.is_some() {
            return None;
        }
        self.expire(now);
        let state = self.peers.get(&peer)?;
        if state.bad {
            return None;
        }
        let (size, suspect) = (state.size, state.suspect);
        if !self.candidate_for(size) {
            return None;
        }
        let eager_claimant = self.peers.values().any(|s| s.size == size && s.eager());
        let c = self.candidates.get(&size)?;
        let solo = c.solo;
        let stalled = c.stalled(now);
        if suspect {
            // Suspects never share a round. One of them may own it when no
            // clean peer is expected to deliver and the clean peers' round
            // (or the last suspect's) stalled, in turn: fewest turns first.
            if solo != Some(peer) {
                // A round that made no progress for REQUEST_EXPIRE is
                // free whoever holds it: a silent peer that is never asked
                // (so never struck) must not keep suspects waiting forever.
                let busy = !stalled
                    && match solo {
                        None => {
                            eager_claimant || c.slots.values().any(|s| matches!(s, Slot::Asked(_)))
                        }
                        Some(q) => self
                            .peers
                            .get(&q)
                            .is_some_and(|qs| !qs.bad && (qs.strikes == 0 || c.outstanding(q) > 0)),
                    };
                let turns = self.peers.get(&peer)?.turns;
                let behind = self.peers.iter().any(|(q, s)| {
                    *q != peer && s.size == size && s.suspect && !s.bad && s.turns < turns
                });
                if busy || behind {
                    return None;
                }
                self.restart(size, Some(peer));
                self.candidates.get_mut(&size)?.solo = Some(peer);
                if let Some(s) = self.peers.get_mut(&peer) {
                    s.turns = s.turns.saturating_add(1);
                }
            }
        } else if let Some(owner) = solo {
            // A clean peer takes a suspect's solo round back once the
            // suspect failed (a reject or an expired request) or the round
            // stalled, not before: an honest suspect making progress is
            // not interrupted by every newcomer, and a silent one cannot
            // keep the others waiting (regression_metadata_solo_suspect_stall).
            let owner_failed = self
                .peers
                .get(&owner)
                .is_none_or(|s| s.bad || s.strikes > 0);
            if !owner_failed && !stalled {
                return None;
            }
            self.restart(size, None);
        }
        let peers = &self.peers;
        let state = peers.get(&peer)?;
        let c = self.candidates.get(&size)?;
        if c.outstanding(peer) >= state.limit() {
            return None;
        }
        let pieces = piece_count(size);
        let first_class = state.eager() || c.solo == Some(peer);
        let blocking = |q: PeerKey| c.solo == Some(q) || peers.get(&q).is_some_and(|s| s.eager());
        let allowed = |i: usize| {
            state
                .rejected
                .get(&(i as u32))
                .is_none_or(|t| now.saturating_duration_since(*t) >= REJECT_BACKOFF)
        };
        // A piece is fresh if nobody who goes first is fetching it. Only
        // touched pieces can be otherwise, so the scans below stop after
        // at most (touched + rejected + 1) steps whatever the size.
        let touched: Vec<(usize, bool)> = c
            .slots
            .iter()
            .map(|(i, s)| {
                let fresh = match s {
                    Slot::Have { .. } => false,
                    Slot::Asked(reqs) => {
                        reqs.len() < MAX_REQUESTERS_PER_PIECE
                            && reqs.iter().all(|(q, _)| *q != peer && !blocking(*q))
                    }
                };
                (*i, fresh)
            })
            .collect();
        let fresh = |i: usize| match touched.binary_search_by_key(&i, |(k, _)| *k) {
            Ok(j) => touched.get(j).is_some_and(|(_, f)| *f),
            Err(_) => true,
        };
        let fresh_count = pieces - touched.len() + touched.iter().filter(|(_, f)| *f).count();
        let first_fresh = || (0..pieces).find(|i| allowed(*i) && fresh(*i));
        // The piece whose newest request is oldest, once that request is
        // older than REREQUEST_AFTER: whoever answers first wins.
        let stale = || {
            c.slots
                .iter()
                .filter_map(|(i, s)| match s {
                    Slot::Asked(reqs)
                        if allowed(*i)
                            && reqs.len() < MAX_REQUESTERS_PER_PIECE
                            && reqs.iter().all(|(q, _)| *q != peer) =>
                    {
                        let newest = reqs.iter().map(|(_, t)| *t).max()?;
                        (now.saturating_duration_since(newest) >= REREQUEST_AFTER)
                            .then_some((newest, *i))
                    }
                    _ => None,
                })
                .min()
                .map(|(_, i)| i)
        };
        let chosen = if first_class {
            first_fresh().or_else(stale)
        } else {
            // Deprioritised: of the fresh pieces, only what the first-class
            // peers of this size cannot take right now (from the back, so
            // they keep the front); stale ones like anybody else, so a peer
            // that once failed still races the others.
            let spare: usize = peers
                .iter()
                .filter(|(q, s)| **q != peer && s.size == size && s.eager())
                .map(|(q, s)| s.limit().saturating_sub(c.outstanding(*q)))
                .sum();
            let fresh_piece = if spare == 0 {
                first_fresh()
            } else if fresh_count > spare {
                (0..pieces).rev().find(|i| allowed(*i) && fresh(*i))
            } else {
                None
            };
            fresh_piece.or_else(stale)
        }?;
        // No memory for it now (a completing piece always fits: the
        // candidate is settled, and its memory freed, as it arrives).
        let len = piece_len(size, chosen as u32).unwrap_or(0);
        let completes = c.have + 1 == pieces;
        if !completes && self.victim_for(size, len) == Some(None) {
            return None;
        }
        let slot = self
            .candidates
            .get_mut(&size)?
            .slots
            .entry(chosen)
            .or_insert_with(|| Slot::Asked(Vec::new()));
        if let Slot::Asked(reqs) = slot {
            reqs.push((peer, now));
        }
        u32::try_from(chosen).ok()
    }

    /// Stores a received piece. Returns `Ok(Some(info_bytes))` once every
    /// piece of a candidate is in and its SHA-1 matches the info-hash,
    /// `Ok(None)` while pieces are still missing (or when the piece is not
    /// wanted: a duplicate, a late answer, from a bad peer, or no memory
    /// for it now), and `Err(HashMismatch)` when a candidate's bytes are
    /// wrong (that round's pieces are dropped). A malformed piece is an
    /// error and makes the peer bad; data from a peer that never announced
    /// a size is `SizeUnknown`.
    pub fn on_data(
        &mut self,
        peer: PeerKey,
        piece: u32,
        total_size: u32,
        data: &[u8],
        now: Instant,
    ) -> Result<Option<Bytes>, MetadataError> {
        if self.done.is_some() {
            return Ok(None);
        }
        self.expire(now);
        let Some(state) = self.peers.get(&peer) else {
            return Err(MetadataError::SizeUnknown { piece });
        };
        let size = state.size;
        let malformed = if total_size != size {
            Some(MetadataError::TotalSizeMismatch {
                peer,
                expected: size,
                got: total_size,
            })
        } else {
            match piece_len(size, piece) {
                None => Some(MetadataError::PieceOutOfRange {
                    peer,
                    piece,
                    pieces: u32::try_from(piece_count(size)).unwrap_or(u32::MAX),
                }),
                Some(expected) if expected != data.len() => Some(MetadataError::WrongPieceLength {
                    peer,
                    piece,
                    expected,
                    got: data.len(),
                }),
                Some(_) => None,
            }
        };
        if let Some(e) = malformed {
            self.mark_bad(peer);
            return Err(e);
        }
        if state.bad {
            return Ok(None);
        }
        let suspect = state.suspect;
        let idx = piece as usize;
        let Some(c) = self.candidates.get_mut(&size) else {
            return Ok(None); // This size is not being assembled right now.
        };
        if let Some(Slot::Asked(reqs)) = c.slots.get_mut(&idx) {
            reqs.retain(|(q, _)| *q != peer);
            if reqs.is_empty() {
                c.slots.remove(&idx);
            }
        }
        // Keep rounds unmixed: a suspect feeds only its own solo round, a
        // clean peer only a shared one.
        let welcome = if suspect {
            c.solo == Some(peer)
        } else {
            c.solo.is_none()
        };
        if !welcome || matches!(c.slots.get(&idx), Some(Slot::Have { .. })) {
            return Ok(None);
        }
        let completes = c.have + 1 == piece_count(size);
        if !completes && !self.make_room(size, data.len()) {
            return Ok(None);
        }
        let Some(c) = self.candidates.get_mut(&size) else {
            return Ok(None);
        };
        c.slots.insert(
            idx,
            Slot::Have {
                from: peer,
                data: data.into(),
            },
        );
        c.have += 1;
        c.bytes += data.len();
        c.active_at = Some(now);
        self.buffered += data.len();
        let complete = c.have == piece_count(size);
        if let Some(state) = self.peers.get_mut(&peer) {
            state.strikes = 0;
            state.rejected.clear();
        }
        if complete {
            self.finish(size)
        } else {
            Ok(None)
        }
    }

    /// The peer refused `piece`: free it for others and deprioritise the peer.
    pub fn on_reject(&mut self, peer: PeerKey, piece: u32) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.strikes = state.strikes.saturating_add(1);
        if (piece as usize) < piece_count(state.size)
            && let Some(now) = self.clock
        {
            state.rejected.insert(piece, now);
        }
        let size = state.size;
        if let Some(c) = self.candidates.get_mut(&size)
            && let Some(Slot::Asked(reqs)) = c.slots.get_mut(&(piece as usize))
        {
            reqs.retain(|(q, _)| *q != peer);
            if reqs.is_empty() {
                c.slots.remove(&(piece as usize));
            }
        }
    }

    /// The shell could not decode a ut_metadata message from `peer` (or it
    /// broke the protocol otherwise): the peer is bad, and its requests go
    /// to others at once.
    pub fn on_peer_junk(&mut self, peer: PeerKey) {
        self.mark_bad(peer);
    }

    /// The peer disconnected: its requests are freed. Pieces it already
    /// delivered are kept (and still blamed on it if the hash fails).
    pub fn on_peer_gone(&mut self, peer: PeerKey) {
        let Some(state) = self.peers.remove(&peer) else {
            return;
        };
        if let Some(c) = self.candidates.get_mut(&state.size) {
            c.retain_requests(|q, _| q != peer);
            if c.solo == Some(peer) {
                c.solo = None;
            }
        }
        self.forget_if_orphan(state.size);
    }

    /// Whether `peer` is known to have sent wrong or malformed metadata:
    /// the shell should disconnect it. Forgotten after
    /// [`on_peer_gone`](Self::on_peer_gone).
    pub fn is_bad(&self, peer: PeerKey) -> bool {
        self.peers.get(&peer).is_some_and(|s| s.bad)
    }

    /// Every tracked peer for which [`is_bad`](Self::is_bad) holds, sorted.
    /// After the metadata is complete this includes the peers whose pieces
    /// in an earlier, failed round turned out wrong.
    pub fn bad_peers(&self) -> Vec<PeerKey> {
        self.peers
            .iter()
            .filter(|(_, s)| s.bad)
            .map(|(k, _)| *k)
            .collect()
    }

    /// Requests to `peer` that are still awaited (not answered, rejected
    /// or expired). A shell that counts its own requests in flight can use
    /// this instead, so an expired request does not block the peer forever.
    pub fn in_flight(&self, peer: PeerKey) -> usize {
        self.peers
            .get(&peer)
            .and_then(|s| self.candidates.get(&s.size))
            .map_or(0, |c| c.outstanding(peer))
    }

    /// Bytes of pieces held, over all candidate sizes (at most [`MAX_BUFFERED`]).
    pub fn buffered(&self) -> usize {
        self.buffered
    }

    /// Pieces received and pieces in total of the most advanced candidate
    /// (0 total while no size is known).
    pub fn progress(&self) -> (usize, usize) {
        if let Some(n) = self.done {
            return (n, n);
        }
        self.candidates
            .iter()
            .map(|(size, c)| (c.have, piece_count(*size)))
            .max_by_key(|(have, total)| (*have, std::cmp::Reverse(*total)))
            .unwrap_or((0, 0))
    }

    /// Checks the bookkeeping (for tests and fuzzing): byte and piece
    /// counts add up, every bound holds, no request is left empty.
    #[cfg(any(test, feature = "fuzzing"))]
    #[doc(hidden)]
    pub fn check_invariants(&self) {
        assert!(self.peers.len() <= MAX_PEERS);
        assert!(self.candidates.len() <= MAX_CANDIDATES);
        assert!(self.buffered <= MAX_BUFFERED, "{} buffered", self.buffered);
        assert!(self.fingerprints.len() <= MAX_FINGERPRINTS);
        let mut total = 0;
        for (size, c) in &self.candidates {
            let mut bytes = 0;
            let mut have = 0;
            for (i, s) in &c.slots {
                assert!(*i < piece_count(*size));
                match s {
                    Slot::Asked(reqs) => {
                        assert!(!reqs.is_empty() && reqs.len() <= MAX_REQUESTERS_PER_PIECE)
                    }
                    Slot::Have { data, .. } => {
                        assert_eq!(Some(data.len()), piece_len(*size, *i as u32));
                        bytes += data.len();
                        have += 1;
                    }
                }
            }
            assert_eq!((bytes, have), (c.bytes, c.have));
            assert!(have < piece_count(*size));
            total += bytes;
        }
        assert_eq!(total, self.buffered);
        for p in self.peers.values() {
            assert!(p.size > 0 && p.size <= MAX_METADATA_SIZE);
            assert!(p.rejected.len() <= piece_count(p.size));
        }
    }

    /// Makes sure `size` has a candidate; `false` if there is no room (only
    /// when [`MAX_CANDIDATES`] sizes hold data and none lost its peers).
    fn candidate_for(&mut self, size: u32) -> bool {
        if self.candidates.contains_key(&size) {
            return true;
        }
        if self.candidates.len() >= MAX_CANDIDATES {
            let orphan = self
                .candidates
                .keys()
                .copied()
                .find(|s| !self.peers.values().any(|p| p.size == *s));
            let Some(orphan) = orphan else {
                return false;
            };
            self.drop_candidate(orphan);
        }
        self.candidates.insert(size, Candidate::default());
        true
    }

    /// Drops the candidate for `size` if no peer claims it and it holds
    /// nothing worth keeping for a later peer of that size.
    fn forget_if_orphan(&mut self, size: u32) {
        let claimed = self.peers.values().any(|p| p.size == size);
        if !claimed && self.candidates.get(&size).is_some_and(|c| c.bytes == 0) {
            self.drop_candidate(size);
        }
    }

    fn drop_candidate(&mut self, size: u32) {
        if let Some(c) = self.candidates.remove(&size) {
            self.buffered = self.buffered.saturating_sub(c.bytes);
        }
    }

    /// See [`Priority`].
    fn priority(&self, size: u32, hopeful: &BTreeMap<u32, usize>) -> Priority {
        let n = hopeful.get(&size).copied().unwrap_or(0);
        let held = self.candidates.get(&size).map_or(0, |c| c.bytes);
        (
            n > 0,
            std::cmp::Reverse((size as usize).saturating_sub(held)),
            n,
            size,
        )
    }

    /// Where `len` more bytes for `size` come from: `Some(None)` if they
    /// cannot fit, `Some(Some(victim))` if the victim's pieces must go
    /// first, `None` if they fit as things are.
    fn victim_for(&self, size: u32, len: usize) -> Option<Option<u32>> {
        if self.buffered + len <= MAX_BUFFERED {
            return None;
        }
        let mut hopeful: BTreeMap<u32, usize> = BTreeMap::new();
        for p in self.peers.values().filter(|p| p.hopeful()) {
            *hopeful.entry(p.size).or_default() += 1;
        }
        // A peer is asking or delivering for `size` right now, so it counts
        // as hopeful even if it has strikes: otherwise a deprioritised but
        // honest peer could never get memory back from stalled candidates.
        let (_, remaining, n, _) = self.priority(size, &hopeful);
        let mine = (true, remaining, n, size);
        Some(
            self.candidates
                .iter()
                .filter(|(s, c)| **s != size && c.bytes > 0)
                .map(|(s, _)| (self.priority(*s, &hopeful), *s))
                .filter(|(p, _)| *p < mine)
                .min()
                .map(|(_, s)| s),
        )
    }

    /// Drops other candidates' pieces until `len` more bytes for `size` fit.
    fn make_room(&mut self, size: u32, len: usize) -> bool {
        loop {
            match self.victim_for(size, len) {
                None => return true,
                Some(None) => return false,
                Some(Some(victim)) => self.restart(victim, None),
            }
        }
    }

    /// Starts a new round for `size`, keeping `keep`'s pieces.
    fn restart(&mut self, size: u32, keep: Option<PeerKey>) {
        if let Some(c) = self.candidates.get_mut(&size) {
            self.buffered = self.buffered.saturating_sub(c.restart(keep));
            c.active_at = self.clock;
        }
    }

    /// Marks `peer` bad and frees its requests.
    fn mark_bad(&mut self, peer: PeerKey) {
        let Some(state) = self.peers.get_mut(&peer) else {
            return;
        };
        state.bad = true;
        if let Some(c) = self.candidates.get_mut(&state.size) {
            c.retain_requests(|q, _| q != peer);
        }
    }

    /// Checks the complete candidate for `size` against the info-hash.
    fn finish(&mut self, size: u32) -> Result<Option<Bytes>, MetadataError> {
        let Some(c) = self.candidates.get(&size) else {
            return Ok(None);
        };
        let parts = || {
            c.slots.values().filter_map(|s| match s {
                Slot::Have { data, .. } => Some(data),
                _ => None,
            })
        };
        let matches = match &self.info_hash_v2 {
            Some(v2) => {
                let mut hasher = sha2::Sha256::new();
                parts().for_each(|d| hasher.update(d));
                hasher.finalize()[..] == v2[..]
            }
            None => {
                let mut hasher = Sha1::new();
                parts().for_each(|d| hasher.update(d));
                hasher.finalize()[..] == self.info_hash.0[..]
            }
        };
        if matches {
            let mut out = Vec::with_capacity(c.bytes);
            let mut good = BTreeMap::new();
            for (i, s) in &c.slots {
                if let Slot::Have { data, .. } = s {
                    out.extend_from_slice(data);
                    good.insert(*i, sha1_of(data));
                }
            }
            // Convict the senders of pieces that differ from the right ones.
            for fp in std::mem::take(&mut self.fingerprints) {
                if fp.size == size
                    && good.get(&fp.piece).is_some_and(|g| *g != fp.sha1)
                    && let Some(s) = self.peers.get_mut(&fp.from)
                {
                    s.bad = true;
                }
            }
            self.done = Some(c.have);
            self.candidates.clear();
            self.buffered = 0;
            return Ok(Some(Bytes::from(out)));
        }
        let mut contributors = BTreeSet::new();
        for (piece, s) in &c.slots {
            if let Slot::Have { from, data } = s {
                contributors.insert(*from);
                if self.fingerprints.len() >= MAX_FINGERPRINTS {
                    self.fingerprints.pop_front();
                }
                self.fingerprints.push_back(Fingerprint {
                    size,
                    piece: *piece,
                    from: *from,
                    sha1: sha1_of(data),
                });
            }
        }
        let contributors: Vec<PeerKey> = contributors.into_iter().collect();
        if let [liar] = contributors[..] {
            self.mark_bad(liar);
        } else {
            for p in &contributors {
                if let Some(s) = self.peers.get_mut(p) {
                    s.suspect = true;
                }
            }
        }
        self.restart(size, None);
        if !self.peers.values().any(|s| s.size == size && !s.bad) {
            self.drop_candidate(size);
        }
        Err(MetadataError::HashMismatch { contributors })
    }

    /// Forgets requests older than [`REQUEST_EXPIRE`]; each one is a strike
    /// against the peer that left it unanswered.
    fn expire(&mut self, now: Instant) {
        self.clock = Some(self.clock.map_or(now, |c| c.max(now)));
        let mut late = Vec::new();
        for c in self.candidates.values_mut() {
            c.retain_requests(|q, t| {
                let alive = now.saturating_duration_since(t) < REQUEST_EXPIRE;
                if !alive {
                    late.push(q);
                }
                alive
            });
        }
        for q in late {
            if let Some(s) = self.peers.get_mut(&q) {
                s.strikes = s.strikes.saturating_add(1);
            }
        }
    }
}

#[cfg(test)]
mod tests;
