//! The peer-wire protocol of one connection, without sockets or clocks.
//!
//! [`PeerState`] takes decoded messages, commands from the session and the
//! current instant, talks to the torrent through [`Swarm`], and writes what
//! it wants to send into an [`Outbox`]. The socket driver
//! ([`super::conn`]) only moves bytes and time in and out, so every attack a
//! peer can mount is a unit test here with a fake swarm and synthetic
//! instants.
//!
//! Budgets a peer cannot push past:
//! - the outbox: the driver stops reading the peer while it holds more than
//!   [`PeerState::read_pause`] bytes, so a peer that asks faster than it
//!   reads stalls itself, not our memory;
//! - its upload queue ([`MAX_UPLOAD_QUEUE`] requests), early HAVEs
//!   ([`MAX_EARLY_HAVES`]);
//! - blocks we never asked for ([`MAX_UNREQUESTED`]), then it is dropped;
//! - time: idle, snubbed and stalled-writer timeouts.
//!
//! CPU per message is O(1) except a BITFIELD or HAVE ALL, which is linear
//! in its own size (BEP 3 allows one; aria2c sends one again with every few
//! pieces it gets, so repeats are merged, and only their new bits reach the
//! swarm).
//!
//! The fast extension (BEP 6) is on when both handshakes set its bit. Then
//! our piece set goes out as HAVE ALL / HAVE NONE when it can, a request we
//! will not serve (choked, queue full, piece missing, cancelled) is answered
//! with REJECT instead of dropped silently, a REJECT from the peer hands the
//! block back to the picker, and the peer's ALLOWED FAST pieces may be
//! requested while it chokes us. A choked peer with fewer pieces than
//! [`ALLOWED_FAST_SET_SIZE`] is sent the pieces we have of its canonical
//! allowed-fast set, once, and served those (twice over at most) while
//! choked, so a newcomer has something to trade before an unchoke slot
//! frees. Fast messages on a connection that did not negotiate the
//! extension, a HAVE ALL / HAVE NONE after the peer's pieces were
//! announced, and a REJECT for a block we never asked for are protocol
//! violations (BEP 6 says to close).
//!
//! The BEP 52 hash exchange: a peer that set the v2 handshake bit may ask
//! for hashes of a file's merkle tree; they are answered from the swarm's
//! piece layers even while we choke it, within a budget
//! ([`HASH_BURST`] hashes banked, [`HASH_RATE`] more per second, and no
//! answer while [`HASH_OUTBOX_MAX`] bytes already wait for the socket);
//! anything else is answered with HASH REJECT. While the swarm misses
//! piece layers (a v2 magnet), we ask v2 peers for them, at most
//! [`HASH_REQUESTS_IN_FLIGHT`] requests at a time; an answer whose proof
//! does not reach the file's root ends the connection.

use super::extension::{ExtendedHandshake, HANDSHAKE_ID, LOCAL_UT_METADATA};
use super::hashes::HashRequest;
use super::message::{BlockRef, MAX_REQUEST_LEN, Message};
use super::metadata::{MetadataError, MetadataMessage};
use super::pex::LOCAL_UT_PEX;
use super::swarm::Swarm;
use crate::bitfield::Bitfield;
use crate::id::InfoHash;
use crate::picker::PeerKey;
use bytes::{Bytes, BytesMut};
pub use pipeline::MIN_DEPTH;
use pipeline::Pipeline;
use std::collections::{HashSet, VecDeque};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

/// A peer silent for this long (not even a keep-alive) is dropped.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(120);
/// We send a keep-alive when we have said nothing for this long.
pub const KEEPALIVE_AFTER: Duration = Duration::from_secs(60);
/// A peer holding our requests this long without sending a block is snubbed.
pub const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
/// A peer that reads none of what we queued for this long is dropped: it
/// holds memory and an upload slot and gives nothing back.
pub const WRITE_STALL_TIMEOUT: Duration = Duration::from_secs(60);
/// Requests we queue for one peer before ignoring more (our `reqq`): as
/// deep as our own pipeline may be, so a btc leecher far away can fill
/// its link from us too. A queued request is a few bytes; the data is
/// read from disk only as the socket drains.
pub const MAX_UPLOAD_QUEUE: usize = MAX_DEPTH;
/// Requests kept in flight when a peer does not say how many it accepts.
const DEFAULT_REQQ: usize = 250;
/// Never keep more than this many requests in flight to one peer: 32 MiB,
/// a 1 Gbit/s link 250 ms long (the picker's memory budget caps the whole
/// torrent's in-flight pieces at the same figure).
const MAX_DEPTH: usize = 2048;
/// Blocks read from disk per trip to the blocking pool when serving.
const SERVE_BATCH: usize = 16;
/// Stop reading blocks from disk for a peer while this much waits to be sent.
const SERVE_HIGH_WATER: usize = 1 << 20;
/// Stop reading from a choked peer while this much waits to be sent to it:
/// a choked peer can only make us queue small answers (metadata pieces,
/// rejects), and it must read them before it may ask for more.
const CHOKED_READ_PAUSE: usize = 64 * 1024;
/// The same for an unchoked peer: a serve batch on top of the high water.
const UNCHOKED_READ_PAUSE: usize = SERVE_HIGH_WATER + SERVE_BATCH * MAX_REQUEST_LEN as usize;
/// Early HAVEs remembered before the metadata is known.
pub const MAX_EARLY_HAVES: usize = 1 << 16;
/// Blocks we did not ask for (and did not recently cancel) before the peer
/// is dropped.
pub const MAX_UNREQUESTED: u32 = 16;
/// Requests remembered after we cancelled or released them, so that a block
/// already on its way when we cancelled is not counted as unrequested.
const RECENTLY_RELEASED: usize = 2 * MAX_DEPTH;
/// How long a peer with nothing to pick waits before the picker is asked
/// again, unless its HAVEs, an unchoke or a verified piece change things.
const PICK_IDLE: Duration = Duration::from_millis(500);
/// ut_metadata requests in flight to one peer.
const METADATA_IN_FLIGHT: usize = 2;
/// ALLOWED FAST pieces remembered per peer; more are ignored (libtorrent
/// sends 10, BEP 6 suggests a handful).
pub const MAX_ALLOWED_FAST: usize = 32;
/// SUGGEST PIECE hints remembered per peer, newest kept.
pub const MAX_SUGGESTED: usize = 8;
/// We send a peer at most one PEX message this often (BEP 11).
pub const PEX_INTERVAL: Duration = Duration::from_secs(60);
/// PEX messages from a peer closer together than this are ignored: an
/// honest one sends one a minute, and each costs us a decode and a trip
/// to the address book.
pub const PEX_MIN_GAP: Duration = Duration::from_secs(20);
/// Addresses we remember having told one peer about; the connected peers
/// of a torrent stay far below it.
const MAX_PEX_SENT: usize = 4096;

/// Hashes a peer may have banked for its hash requests (two requests for
/// 8192 hashes, libtorrent's largest).
pub const HASH_BURST: u32 = 16_384;
/// Hashes a peer's bank gains per second (8192: 256 KiB/s of answers).
pub const HASH_RATE: u32 = 8192;
/// A hash request is rejected while this much waits in the outbox.
pub const HASH_OUTBOX_MAX: usize = 512 * 1024;
/// Our hash requests in flight to one peer.
pub const HASH_REQUESTS_IN_FLIGHT: usize = 2;
/// A peer's hash requests being answered off the reactor at once (below
/// the piece layer: a piece read from disk and hashed); more are rejected.
pub const HASH_ANSWERS_LATER: u32 = 2;

/// Why the protocol ends a connection.
#[derive(Debug, thiserror::Error)]
pub enum PeerError {
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Sent metadata that does not match the info-hash.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// We and the peer both have every piece: nothing to trade.
    #[error("we are both seeds")]
    BothSeeds,
    /// The peer sent nothing for [`IDLE_TIMEOUT`].
    #[error("the peer went silent")]
    Idle,
    /// The peer read nothing we sent for [`WRITE_STALL_TIMEOUT`].
    #[error("the peer stopped reading")]
    WriteStalled,
    /// The peer kept sending blocks we never asked for.
    #[error("the peer sent {0} blocks we did not ask for")]
    Unrequested(u32),
}

/// Encoded messages waiting for the socket.
#[derive(Debug, Default)]
pub struct Outbox {
    buf: BytesMut,
}

impl Outbox {
    /// Appends one message.
    pub fn push(&mut self, m: &Message) {
        m.encode(&mut self.buf);
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.buf.is_empty()
    }

    /// The buffer, for the socket writer to drain.
    pub fn buf_mut(&mut self) -> &mut BytesMut {
        &mut self.buf
    }

    /// Decodes everything queued (tests only).
    #[cfg(test)]
    pub fn drain_messages(&mut self) -> Vec<Message> {
        use tokio_util::codec::Decoder;
        let mut codec = super::codec::PeerCodec;
        let mut out = Vec::new();
        while let Ok(Some(m)) = codec.decode(&mut self.buf) {
            out.push(m);
        }
        out
    }
}

/// What we tell a peer about ourselves after the handshake.
#[derive(Debug, Clone)]
pub struct LocalInfo {
    /// Our TCP listen port.
    pub listen_port: u16,
    /// Our DHT port, when we run a node.
    pub dht_port: Option<u16>,
    /// The peer's address as we see it (BEP 10 `yourip`); also seeds its
    /// allowed-fast set (BEP 6).
    pub their_ip: IpAddr,
    /// The torrent's info-hash, known from the handshake: the other seed
    /// of the allowed-fast set.
    pub info_hash: InfoHash,
}

/// Bytes-per-second meter over a sliding window of one-second buckets.
#[derive(Debug, Default)]
struct RateMeter {
    buckets: [u64; 5],
    current: u64,
}

impl RateMeter {
    fn add(&mut self, n: u64) {
        self.current = self.current.saturating_add(n);
    }
    /// Closes the current one-second bucket.
    fn roll(&mut self) {
        self.buckets.rotate_left(1);
        self.buckets[4] = self.current;
        self.current = 0;
    }
    fn rate(&self) -> u64 {
        self.buckets.iter().fold(0u64, |a, b| a.saturating_add(*b)) / self.buckets.len() as u64
    }
}

/// Commands the session sends to a connection.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PeerCommand {
    /// Choke or unchoke the peer.
    SetChoke(bool),
    /// Another peer delivered this block first; cancel our request.
    Cancel(BlockRef),
    /// Disconnect (banned, replaced, evicted, or useless).
    Close,
    /// The answer to a hash request the swarm took to answer later
    /// ([`Swarm::hash_answer_later`]): the hashes, or `None` to reject it.
    HashAnswer {
        /// The peer's request.
        req: HashRequest,
        /// The nodes then the uncles, or `None`.
        hashes: Option<Vec<crate::merkle::Hash>>,
    },
}

/// Per-connection protocol state.
#[derive(Debug)]
pub struct PeerState {
    key: PeerKey,
    local: LocalInfo,
    supports_extensions: bool,
    /// Both sides set the BEP 6 bit.
    fast: bool,
    /// The peer announced its pieces (BITFIELD, HAVE, HAVE ALL or HAVE
    /// NONE): a HAVE ALL / HAVE NONE after this is a violation.
    piece_set_seen: bool,
    /// HAVE ALL arrived before we knew the piece count.
    has_all_early: bool,
    /// Pieces the peer lets us request while it chokes us (BEP 6), at most
    /// [`MAX_ALLOWED_FAST`]; range-checked when used.
    allowed_fast: Vec<u32>,
    /// Whether we decided on the allowed-fast set we give the peer (sent
    /// or not): it is done once per connection.
    fast_set_decided: bool,
    /// The ALLOWED FAST pieces we sent, at most [`ALLOWED_FAST_SET_SIZE`],
    /// all of them pieces we have: served while we choke the peer.
    fast_set_sent: Vec<u32>,
    /// Bytes of the set the peer may still request while choked.
    fast_bytes_left: u64,
    /// The peer's latest SUGGEST PIECE hints, at most [`MAX_SUGGESTED`].
    suggested: VecDeque<u32>,
    /// The peer's id for `ut_pex`, if it speaks it.
    their_ut_pex: Option<u8>,
    /// Our extended handshake offered `ut_pex` (the torrent allows PEX).
    pex_offered: bool,
    /// The addresses the peer last heard from us as connected.
    pex_sent: HashSet<SocketAddr>,
    /// When our next PEX message to the peer is due.
    next_pex: Option<Instant>,
    /// When we last took a PEX message from the peer.
    last_pex_in: Option<Instant>,
    peer_choking: bool,
    peer_interested: bool,
    am_choking: bool,
    am_interested: bool,
    /// Their pieces, once the piece count is known.
    bitfield: Option<Bitfield>,
    /// Their BITFIELD payload received before we knew the piece count.
    raw_bitfield: Option<Bytes>,
    early_haves: Vec<u32>,
    /// Our requests in flight and the depth to keep, from their delay.
    in_flight: Pipeline,
    recently_released: VecDeque<BlockRef>,
    unrequested: u32,
    upload_queue: VecDeque<BlockRef>,
    their_ut_metadata: Option<u8>,
    metadata_in_flight: usize,
    haves_cursor: usize,
    down: RateMeter,
    up: RateMeter,
    snubbed: bool,
    reqq: usize,
    last_recv: Instant,
    last_sent: Instant,
    last_block: Instant,
    /// When the outbox last shrank, or was last empty.
    last_drain: Instant,
    /// A serve batch is being read from disk.
    serving: bool,
    /// The peer set the v2 bit (BEP 52) in its handshake.
    v2: bool,
    /// Hashes the peer may still have answered (see [`HASH_BURST`]).
    hash_tokens: u32,
    /// Our hash requests to the peer not yet answered.
    hash_requests: Vec<HashRequest>,
    /// Its hash requests the swarm is answering off the reactor.
    hash_answers_later: u32,
    /// The last pick found nothing to ask this peer for: do not ask the
    /// picker again (a lock and a scan) on every message until something
    /// changes or this instant passes.
    pick_idle_until: Option<Instant>,
}

impl PeerState {
    /// The state of a freshly handshaken connection.
    pub fn new(key: PeerKey, local: LocalInfo, supports_extensions: bool, now: Instant) -> Self {
        PeerState {
            key,
            local,
            supports_extensions,
            fast: false,
            piece_set_seen: false,
            has_all_early: false,
            allowed_fast: Vec::new(),
            fast_set_decided: false,
            fast_set_sent: Vec::new(),
            fast_bytes_left: 0,
            suggested: VecDeque::new(),
            their_ut_pex: None,
            pex_offered: false,
            pex_sent: HashSet::new(),
            next_pex: None,
            last_pex_in: None,
            peer_choking: true,
            peer_interested: false,
            am_choking: true,
            am_interested: false,
            bitfield: None,
            raw_bitfield: None,
            early_haves: Vec::new(),
            in_flight: Pipeline::default(),
            recently_released: VecDeque::new(),
            unrequested: 0,
            upload_queue: VecDeque::new(),
            their_ut_metadata: None,
            metadata_in_flight: 0,
            haves_cursor: 0,
            down: RateMeter::default(),
            up: RateMeter::default(),
            snubbed: false,
            reqq: DEFAULT_REQQ,
            last_recv: now,
            last_sent: now,
            last_block: now,
            last_drain: now,
            serving: false,
            v2: false,
            hash_tokens: HASH_BURST,
            hash_requests: Vec::new(),
            hash_answers_later: 0,
            pick_idle_until: None,
        }
    }

    /// Turns the fast extension (BEP 6) on: both handshakes set its bit.
    pub fn with_fast(mut self, on: bool) -> Self {
        self.fast = on;
        self
    }

    /// Marks the peer as speaking BitTorrent v2: it set the v2 bit.
    pub fn with_v2(mut self, on: bool) -> Self {
        self.v2 = on;
        self
    }

    /// Whether the fast extension is on for this connection.
    pub fn is_fast(&self) -> bool {
        self.fast
    }

    /// The peer's ALLOWED FAST pieces.
    pub fn allowed_fast(&self) -> &[u32] {
        &self.allowed_fast
    }

    /// The ALLOWED FAST pieces we sent the peer.
    pub fn allowed_fast_sent(&self) -> &[u32] {
        &self.fast_set_sent
    }

    /// The peer's latest SUGGEST PIECE hints, oldest first.
    pub fn suggested(&self) -> impl Iterator<Item = u32> + '_ {
        self.suggested.iter().copied()
    }

    /// The peer's key in the swarm.
    pub fn key(&self) -> PeerKey {
        self.key
    }

    /// The peer's pieces, once known.
    pub fn bitfield(&self) -> Option<&Bitfield> {
        self.bitfield.as_ref()
    }

    /// Requests we have in flight to the peer.
    pub fn in_flight(&self) -> &[BlockRef] {
        self.in_flight.as_slice()
    }

    /// The fastest round trip of a request to this peer lately.
    pub fn base_rtt(&self) -> Option<Duration> {
        self.in_flight.base_rtt()
    }

    /// The requests the pipeline aims to keep in flight to the peer now.
    pub fn pipeline_target(&self) -> usize {
        if self.snubbed {
            1
        } else {
            self.in_flight.target(self.reqq)
        }
    }

    /// How many requests we keep in flight to the peer at most.
    pub fn reqq(&self) -> usize {
        self.reqq
    }

    /// Whether the peer is snubbed (sent nothing for our requests).
    pub fn is_snubbed(&self) -> bool {
        self.snubbed
    }

    /// Stop reading the socket while the outbox holds more than this: the
    /// peer must read what it asked for before it may ask again.
    pub fn read_pause(&self) -> usize {
        // A peer with an allowed-fast set is served blocks while choked.
        if self.am_choking && self.fast_set_sent.is_empty() {
            CHOKED_READ_PAUSE
        } else {
            UNCHOKED_READ_PAUSE
        }
    }

    /// First messages after the handshake: extension handshake (BEP 10 wants
    /// it at once; a peer that parts with us as a fellow seed on our piece
    /// set has still learnt our listen port for PEX), our piece set, DHT
    /// port.
    pub fn start(&mut self, swarm: &dyn Swarm, out: &mut Outbox) {
        let info = swarm.torrent();
        if self.supports_extensions {
            self.push_ext_handshake(swarm, out);
        }
        match info {
            Some(info) => {
                let (bf, cursor) = swarm.our_bitfield();
                self.haves_cursor = cursor;
                let n = info.geometry.piece_count as usize;
                match bf {
                    // `is_complete` is about the wanted pieces; HAVE ALL
                    // must mean every piece.
                    Some(bf)
                        if self.fast
                            && Bitfield::from_wire(&bf, n).is_some_and(|b| b.is_full()) =>
                    {
                        out.push(&Message::HaveAll)
                    }
                    Some(bf) => out.push(&Message::Bitfield(bf)),
                    None if self.fast => out.push(&Message::HaveNone),
                    None => {}
                }
            }
            // A magnet before its metadata: nothing verified yet.
            None if self.fast => out.push(&Message::HaveNone),
            None => {}
        }
        if info.is_some() {
            // Nothing has been received yet, so this cannot fail.
            let _ = self.adopt_metadata(swarm, out);
        }
        if let Some(port) = self.local.dht_port {
            out.push(&Message::Port(port));
        }
    }

    /// One message from the peer.
    pub fn on_message(
        &mut self,
        m: Message,
        now: Instant,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        self.last_recv = now;
        match m {
            Message::KeepAlive | Message::Unknown { .. } | Message::Port(_) => {}
            Message::Choke => {
                if !self.peer_choking {
                    self.peer_choking = true;
                    // Without the fast extension a choke discards our requests.
                    let dropped = self.in_flight.take();
                    self.forget(&dropped, swarm);
                }
            }
            Message::Unchoke => {
                self.peer_choking = false;
                self.pick_idle_until = None;
            }
            Message::Interested | Message::NotInterested => {
                let interested = matches!(m, Message::Interested);
                if interested != self.peer_interested {
                    self.peer_interested = interested;
                    swarm.set_interested(self.key, interested);
                }
            }
            Message::Have(i) => {
                self.piece_set_seen = true;
                self.on_have(i, swarm, out)?;
                self.offer_allowed_fast(swarm, out);
            }
            Message::Bitfield(b) => {
                self.piece_set_seen = true;
                self.on_bitfield(b, swarm, out)?;
                self.offer_allowed_fast(swarm, out);
            }
            Message::HaveAll | Message::HaveNone => {
                self.on_have_all_or_none(matches!(m, Message::HaveAll), swarm, out)?;
                self.offer_allowed_fast(swarm, out);
            }
            Message::RejectRequest(r) => self.on_reject(r, now, swarm)?,
            Message::AllowedFast(i) => {
                self.require_fast("allowed fast")?;
                let in_range = swarm.torrent().is_none_or(|t| i < t.geometry.piece_count);
                if in_range
                    && self.allowed_fast.len() < MAX_ALLOWED_FAST
                    && !self.allowed_fast.contains(&i)
                {
                    self.allowed_fast.push(i);
                    self.pick_idle_until = None;
                }
            }
            Message::SuggestPiece(i) => {
                self.require_fast("suggest piece")?;
                if self.suggested.len() >= MAX_SUGGESTED {
                    self.suggested.pop_front();
                }
                self.suggested.push_back(i);
            }
            Message::Request(r) => self.on_request(r, swarm, out)?,
            Message::Piece {
                piece,
                offset,
                data,
            } => self.on_block(piece, offset, data, now, swarm)?,
            Message::Cancel(r) => {
                if let Some(i) = self.upload_queue.iter().position(|x| *x == r) {
                    self.upload_queue.remove(i);
                    // BEP 6: a cancelled request gets its block or a reject.
                    if self.fast {
                        out.push(&Message::RejectRequest(r));
                    }
                }
            }
            Message::Extended { id, payload } => self.on_extended(id, payload, now, swarm, out)?,
            Message::HashRequest(r) => self.on_hash_request(r, swarm, out),
            Message::Hashes { req, hashes } => {
                let Some(i) = self.hash_requests.iter().position(|q| *q == req) else {
                    // Not asked for (or given up on): not even looked at.
                    return Ok(());
                };
                self.hash_requests.swap_remove(i);
                swarm
                    .hashes_received(self.key, &req, &hashes, now)
                    .map_err(PeerError::Protocol)?;
                self.ask_hashes(now, swarm, out);
            }
            Message::HashReject(r) => {
                if let Some(i) = self.hash_requests.iter().position(|q| *q == r) {
                    self.hash_requests.swap_remove(i);
                    swarm.hash_rejected(self.key, &r, now);
                }
            }
        }
        Ok(())
    }

    fn on_bitfield(
        &mut self,
        b: Bytes,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        let Some(known) = self.bitfield.as_ref() else {
            // A later one supersedes an earlier one (pieces are never lost).
            self.raw_bitfield = Some(b);
            return Ok(());
        };
        let n = known.len();
        let bf = Bitfield::from_wire(&b, n).ok_or_else(|| {
            PeerError::Protocol(format!("bitfield of {} bytes for {n} pieces", b.len()))
        })?;
        // HAVEs may have come first; count only what is new.
        for i in bf.iter_ones() {
            self.on_have(i as u32, swarm, out)?;
        }
        Ok(())
    }

    /// Called once the piece count is known: parse what the peer sent early.
    fn adopt_metadata(&mut self, swarm: &dyn Swarm, out: &mut Outbox) -> Result<(), PeerError> {
        let Some(info) = swarm.torrent() else {
            return Ok(());
        };
        let n = info.geometry.piece_count as usize;
        let mut bf = match self.raw_bitfield.take() {
            // A bitfield after HAVE ALL adds nothing (pieces are never lost).
            _ if self.has_all_early => Bitfield::full(n),
            Some(raw) => Bitfield::from_wire(&raw, n).ok_or_else(|| {
                PeerError::Protocol(format!("bitfield of {} bytes for {n} pieces", raw.len()))
            })?,
            None => Bitfield::new(n),
        };
        for i in std::mem::take(&mut self.early_haves) {
            if i as usize >= n {
                return Err(PeerError::Protocol(format!("have {i} beyond {n} pieces")));
            }
            bf.set(i as usize);
        }
        swarm.peer_bitfield(self.key, &bf);
        let both_seeds = bf.is_full() && swarm.is_complete();
        let want = swarm.is_interesting(&bf);
        self.bitfield = Some(bf);
        if both_seeds {
            return Err(PeerError::BothSeeds);
        }
        self.set_interest(want, out);
        Ok(())
    }

    fn on_have(&mut self, i: u32, swarm: &dyn Swarm, out: &mut Outbox) -> Result<(), PeerError> {
        let Some(bf) = self.bitfield.as_mut() else {
            if self.early_haves.len() >= MAX_EARLY_HAVES {
                return Err(PeerError::Protocol("too many haves before metadata".into()));
            }
            self.early_haves.push(i);
            return Ok(());
        };
        if i as usize >= bf.len() {
            return Err(PeerError::Protocol(format!(
                "have {i} beyond {} pieces",
                bf.len()
            )));
        }
        if !bf.set(i as usize) {
            return Ok(()); // Already known: costs nothing.
        }
        let seed = bf.is_full();
        swarm.peer_have(self.key, i, seed);
        if seed && swarm.is_complete() {
            return Err(PeerError::BothSeeds);
        }
        // O(1): only this piece can have made the peer interesting.
        if !swarm.we_have(i) {
            self.pick_idle_until = None;
            if !self.am_interested {
                self.set_interest(true, out);
            }
        }
        Ok(())
    }

    /// Sends INTERESTED / NOT INTERESTED when our need for this peer changes.
    fn set_interest(&mut self, want: bool, out: &mut Outbox) {
        if want != self.am_interested {
            self.am_interested = want;
            out.push(if want {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
    }

    fn on_extended(
        &mut self,
        id: u8,
        payload: Bytes,
        now: Instant,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        if id == HANDSHAKE_ID {
            let Ok(hs) = ExtendedHandshake::decode(&payload) else {
                return Ok(()); // A garbled handshake only costs us the extensions.
            };
            if let Some(q) = hs.reqq {
                // reqq 0 would stall us forever; one request at a time is the floor.
                self.reqq = (q as usize).clamp(1, MAX_DEPTH);
            }
            self.their_ut_metadata = hs.ut_metadata;
            self.their_ut_pex = hs.ut_pex;
            if hs.ut_pex.is_some() && self.next_pex.is_none() {
                // The first one at the next tick, then once a minute.
                self.next_pex = Some(now);
            }
            if let Some(port) = hs.listen_port {
                swarm.peer_listen_port(self.key, port);
            }
            if let (Some(size), Some(_)) = (hs.metadata_size, hs.ut_metadata)
                && swarm.torrent().is_none()
            {
                swarm.metadata_size(self.key, size);
            }
            return Ok(());
        }
        if id == LOCAL_UT_PEX {
            self.on_pex(&payload, now, swarm);
            return Ok(());
        }
        if id != LOCAL_UT_METADATA {
            return Ok(());
        }
        let Ok(msg) = MetadataMessage::decode(&payload) else {
            if swarm.torrent().is_none() {
                swarm.metadata_junk(self.key);
                return Err(PeerError::Protocol(
                    "undecodable ut_metadata message".into(),
                ));
            }
            return Ok(());
        };
        match msg {
            MetadataMessage::Request { piece } => {
                let Some(their_id) = self.their_ut_metadata else {
                    return Ok(());
                };
                let reply = swarm.metadata_piece(piece);
                out.push(&Message::Extended {
                    id: their_id,
                    payload: Bytes::from(reply.encode()),
                });
            }
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                self.metadata_in_flight = self.metadata_in_flight.saturating_sub(1);
                if swarm.torrent().is_none() {
                    swarm.metadata_data(self.key, piece, total_size, &data, now)?;
                }
            }
            MetadataMessage::Reject { piece } => {
                self.metadata_in_flight = self.metadata_in_flight.saturating_sub(1);
                swarm.metadata_reject(self.key, piece);
            }
        }
        Ok(())
    }

    /// A HASH REQUEST: answered from the swarm's piece layers within the
    /// peer's budget, or (below the piece layer) by the swarm later, at
    /// most [`HASH_ANSWERS_LATER`] at once, or rejected.
    fn on_hash_request(&mut self, r: HashRequest, swarm: &dyn Swarm, out: &mut Outbox) {
        let cost = r.answer_len() as u32;
        if !(self.v2 && cost <= self.hash_tokens && out.len() < HASH_OUTBOX_MAX) {
            out.push(&Message::HashReject(r));
            return;
        }
        if let Some(hashes) = swarm.hash_answer(&r) {
            self.hash_tokens -= cost;
            out.push(&Message::Hashes { req: r, hashes });
        } else if let Some(work) = (self.hash_answers_later < HASH_ANSWERS_LATER)
            .then(|| swarm.hash_answer_later(self.key, &r, self.hash_tokens))
            .flatten()
        {
            // Charged for the hashing (a whole piece read and hashed for
            // a few hashes), not only for what is sent.
            self.hash_tokens = self.hash_tokens.saturating_sub(work.max(cost));
            self.hash_answers_later += 1;
        } else {
            out.push(&Message::HashReject(r));
        }
    }

    /// Asks the peer for the piece layers the swarm still misses.
    fn ask_hashes(&mut self, now: Instant, swarm: &dyn Swarm, out: &mut Outbox) {
        if !self.v2 {
            return;
        }
        while self.hash_requests.len() < HASH_REQUESTS_IN_FLIGHT {
            let Some(r) = swarm.next_hash_request(self.key, self.bitfield.as_ref(), now) else {
                break;
            };
            out.push(&Message::HashRequest(r));
            self.hash_requests.push(r);
        }
    }

    /// Our hash requests to the peer not yet answered.
    pub fn hash_requests(&self) -> &[HashRequest] {
        &self.hash_requests
    }

    /// A command from the session.
    pub fn on_command(&mut self, cmd: PeerCommand, swarm: &dyn Swarm, out: &mut Outbox) {
        match cmd {
            PeerCommand::Close => {}
            PeerCommand::SetChoke(choke) => {
                self.set_choke(choke, out);
                // Unchoked when its piece set arrived: decide at the choke.
                self.offer_allowed_fast(swarm, out);
            }
            PeerCommand::Cancel(r) => {
                if self.in_flight.remove(&r) {
                    out.push(&Message::Cancel(r));
                    self.forget(&[r], swarm);
                }
            }
            PeerCommand::HashAnswer { req, hashes } => {
                self.hash_answers_later = self.hash_answers_later.saturating_sub(1);
                match hashes {
                    Some(hashes) if hashes.len() == req.answer_len() => {
                        out.push(&Message::Hashes { req, hashes })
                    }
                    _ => out.push(&Message::HashReject(req)),
                }
            }
        }
    }

    /// New pieces were verified (or the metadata arrived): send HAVEs.
    pub fn on_pieces_changed(
        &mut self,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        if self.bitfield.is_none() && swarm.torrent().is_some() {
            // Pieces verified before this point are in the log too.
            self.adopt_metadata(swarm, out)?;
            self.offer_allowed_fast(swarm, out);
            if self.supports_extensions && !self.pex_offered && swarm.pex_allowed() {
                // The metadata says the torrent is public: offer PEX now.
                self.push_ext_handshake(swarm, out);
            }
        }
        // Verified or failed pieces change what there is to pick.
        self.pick_idle_until = None;
        let mut new = Vec::new();
        swarm.new_haves(&mut self.haves_cursor, &mut new);
        for i in new {
            out.push(&Message::Have(i));
        }
        if self.am_interested
            && let Some(bf) = &self.bitfield
        {
            let want = swarm.is_interesting(bf);
            self.set_interest(want, out);
        }
        Ok(())
    }

    /// Once a second: timeouts, keep-alives, snubbing, rates.
    pub fn on_tick(
        &mut self,
        now: Instant,
        swarm: &dyn Swarm,
        out: &mut Outbox,
    ) -> Result<(), PeerError> {
        if now.saturating_duration_since(self.last_recv) > IDLE_TIMEOUT {
            return Err(PeerError::Idle);
        }
        if out.is_empty() {
            self.last_drain = now;
        } else if now.saturating_duration_since(self.last_drain) > WRITE_STALL_TIMEOUT {
            return Err(PeerError::WriteStalled);
        }
        if now.saturating_duration_since(self.last_sent) > KEEPALIVE_AFTER && out.is_empty() {
            out.push(&Message::KeepAlive);
            self.last_sent = now;
        }
        if !self.in_flight.is_empty()
            && !self.snubbed
            && now.saturating_duration_since(self.last_block) > SNUB_TIMEOUT
        {
            // Give its blocks to others; keep asking it for one at a time.
            self.snubbed = true;
            let dropped = self.in_flight.take();
            for r in &dropped {
                out.push(&Message::Cancel(*r));
            }
            self.forget(&dropped, swarm);
        }
        self.send_pex(now, swarm, out);
        self.hash_tokens = self.hash_tokens.saturating_add(HASH_RATE).min(HASH_BURST);
        // Requests the swarm gave up on (timed out) are forgotten here.
        self.hash_requests
            .retain(|r| swarm.hash_request_pending(self.key, r, now));
        self.ask_hashes(now, swarm, out);
        if self.metadata_in_flight > 0 && swarm.torrent().is_none() {
            // Requests the peer never answered expire in the assembler.
            self.metadata_in_flight = swarm.metadata_outstanding(self.key);
        }
        self.down.roll();
        self.up.roll();
        swarm.set_rates(self.key, self.down.rate(), self.up.rate());
        Ok(())
    }

    /// The connection ended: give back its requests and availability.
    pub fn close(&mut self, swarm: &dyn Swarm) {
        swarm.peer_gone(self.key, self.bitfield.as_ref());
        self.in_flight.clear();
    }
}

mod download;
mod fast;
mod pex;
mod pipeline;
mod upload;

pub use fast::{ALLOWED_FAST_SET_SIZE, allowed_fast_set};
#[cfg(test)]
mod tests;
