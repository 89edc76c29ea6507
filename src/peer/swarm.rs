//! What one peer connection needs from its torrent, as a trait.
//!
//! [`PeerState`](super::state::PeerState) talks to the rest of the torrent
//! only through [`Swarm`]: the session implements it over its shared state
//! (picker, metadata assembler, peer table), and unit tests implement it with
//! a fake swarm. Keeping the seam this narrow is what lets the protocol
//! logic be tested without sockets, locks or a runtime, and keeps `peer/`
//! from importing `session/`.

use super::hashes::HashRequest;
use super::message::BlockRef;
use super::metadata::{MetadataError, MetadataMessage};
use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::merkle::Hash;
use crate::picker::PeerKey;
use bytes::Bytes;
use std::net::SocketAddr;
use std::time::Instant;

/// The torrent's shape, once its metadata is known.
#[derive(Debug, Clone, Copy)]
pub struct TorrentInfo {
    /// Piece and block lengths.
    pub geometry: Geometry,
    /// Size of the info dictionary, for the extension handshake.
    pub metadata_size: u32,
}

/// The torrent as seen from one peer connection. Every method is short and
/// non-blocking (the session takes its lock once per call); none of them
/// may be called with outside data that has not been range-checked by the
/// caller where the doc says so.
pub trait Swarm: Send + Sync {
    /// The torrent's shape, or `None` while only the info-hash is known.
    fn torrent(&self) -> Option<TorrentInfo>;

    /// Our verified pieces as a BITFIELD payload (`None` when we have none),
    /// and the cursor to pass to [`Swarm::new_haves`] afterwards.
    fn our_bitfield(&self) -> (Option<Bytes>, usize);

    /// Appends the pieces verified since `*cursor` to `out`, advancing it.
    fn new_haves(&self, cursor: &mut usize, out: &mut Vec<u32>);

    /// Whether we have verified `piece` (in range: checked by the caller).
    fn we_have(&self, piece: u32) -> bool;

    /// Whether a peer with `bf` has anything we still need.
    fn is_interesting(&self, bf: &Bitfield) -> bool;

    /// Whether we have every piece.
    fn is_complete(&self) -> bool;

    /// The peer's whole piece set became known: count its availability.
    fn peer_bitfield(&self, key: PeerKey, bf: &Bitfield);

    /// The peer announced one new piece (in range, not seen before).
    fn peer_have(&self, key: PeerKey, piece: u32, now_seed: bool);

    /// Up to `want` new block requests for the peer.
    fn pick(
        &self,
        key: PeerKey,
        bf: &Bitfield,
        want: usize,
        in_flight: &[BlockRef],
        now: Instant,
    ) -> Vec<BlockRef>;

    /// The peer will not send these blocks (choke, snub, cancel).
    fn release(&self, key: PeerKey, blocks: &[BlockRef]);

    /// A block we asked this peer for arrived.
    fn deliver(&self, key: PeerKey, piece: u32, offset: u32, data: &[u8]);

    /// The peer became (un)interested in our pieces.
    fn set_interested(&self, key: PeerKey, interested: bool);

    /// The peer's payload rates, for the choker and the status line.
    fn set_rates(&self, key: PeerKey, down: u64, up: u64);

    /// Payload bytes we sent.
    fn count_uploaded(&self, n: u64);

    /// A ut_metadata answer for `piece`: the data, or a reject.
    fn metadata_piece(&self, piece: u32) -> MetadataMessage;

    /// The peer says the info dictionary has `size` bytes.
    fn metadata_size(&self, key: PeerKey, size: u32);

    /// The next metadata piece to ask this peer for, if any.
    fn next_metadata_request(&self, key: PeerKey, now: Instant) -> Option<u32>;

    /// A metadata piece arrived. An error means this peer's data was bad.
    fn metadata_data(
        &self,
        key: PeerKey,
        piece: u32,
        total_size: u32,
        data: &[u8],
        now: Instant,
    ) -> Result<(), MetadataError>;

    /// The peer rejected a metadata request.
    fn metadata_reject(&self, key: PeerKey, piece: u32);

    /// The peer sent a ut_metadata message we could not decode: it is not
    /// asked again, and its requests go to others at once.
    fn metadata_junk(&self, key: PeerKey);

    /// Metadata requests to the peer still awaited (expired ones are not).
    fn metadata_outstanding(&self, key: PeerKey) -> usize;

    /// The connection is over: forget its pieces and requests.
    fn peer_gone(&self, key: PeerKey, bf: Option<&Bitfield>);

    /// The peer says it listens on `port` (BEP 10 `p`): where others can
    /// reach it, for PEX.
    fn peer_listen_port(&self, key: PeerKey, port: u16);

    /// Whether peer exchange is allowed: the metadata is known and the
    /// torrent is not private (BEP 27).
    fn pex_allowed(&self) -> bool;

    /// The peers to tell `key` about now: listen addresses with their BEP
    /// 11 flags, never `key`'s own.
    fn pex_peers(&self, key: PeerKey) -> Vec<(SocketAddr, u8)>;

    /// Peers `key` told us about (at most a message's worth), for the
    /// address book. Must not block.
    fn pex_learned(&self, key: PeerKey, added: &[(SocketAddr, u8)]);

    /// The answer to a BEP 52 hash request (the nodes, then the uncles),
    /// or `None` to reject it: unknown root, out of range, or below the
    /// piece layer.
    fn hash_answer(&self, _req: &HashRequest) -> Option<Vec<Hash>> {
        None
    }

    /// A hash request [`Swarm::hash_answer`] refused that the swarm can
    /// answer off the reactor (below the piece layer, for a piece we
    /// have) for at most `budget` hash tokens: `Some(cost)` when it took
    /// it (the leaves it will hash, one token each, at least the hashes
    /// sent), and will send the answer (or a reject) to `key` as a
    /// [`PeerCommand::HashAnswer`](super::state::PeerCommand::HashAnswer).
    fn hash_answer_later(&self, _key: PeerKey, _req: &HashRequest, _budget: u32) -> Option<u32> {
        None
    }

    /// The next hash request to send `key`, which has the pieces in `bf`
    /// (`None` while unknown): piece layers still missing, or the leaves
    /// of a piece that failed its hash check.
    fn next_hash_request(
        &self,
        _key: PeerKey,
        _bf: Option<&Bitfield>,
        _now: Instant,
    ) -> Option<HashRequest> {
        None
    }

    /// Whether our request `req` to `key` is still awaited (not timed out).
    fn hash_request_pending(&self, _key: PeerKey, _req: &HashRequest, _now: Instant) -> bool {
        false
    }

    /// Hashes `key` sent for our request `req`. An error (a proof that does
    /// not reach the file's root) says why the peer is dropped.
    fn hashes_received(
        &self,
        _key: PeerKey,
        _req: &HashRequest,
        _hashes: &[Hash],
        _now: Instant,
    ) -> Result<(), String> {
        Ok(())
    }

    /// `key` rejected our request `req`.
    fn hash_rejected(&self, _key: PeerKey, _req: &HashRequest, _now: Instant) {}
}
