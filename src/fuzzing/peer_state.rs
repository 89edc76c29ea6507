//! The `peer_state` fuzz target: one connection's protocol state fed any
//! frames a peer can send, with the fast extension on or off.

use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use bytes::{Bytes, BytesMut};
use tokio_util::codec::Decoder;

use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::peer::codec::PeerCodec;
use crate::peer::message::{BLOCK_LEN, BlockRef};
use crate::peer::metadata::{MetadataError, MetadataMessage};
use crate::peer::pex::MAX_PEX_PEERS;
use crate::peer::state::{
    ALLOWED_FAST_SET_SIZE, LocalInfo, MAX_ALLOWED_FAST, MAX_SUGGESTED, Outbox, PeerCommand,
    PeerState,
};
use crate::peer::swarm::{Swarm, TorrentInfo};
use crate::picker::PeerKey;

/// Pieces of the fuzzed torrent (4 blocks each); we have the even ones.
const PIECES: u32 = 8;

/// A torrent of [`PIECES`] pieces behind the [`Swarm`] seam, keeping the
/// books a real one would check: every released or delivered block was
/// handed out.
struct FuzzSwarm {
    info: Option<TorrentInfo>,
    /// Blocks handed out and not yet released or delivered.
    out: Mutex<Vec<BlockRef>>,
}

impl Swarm for FuzzSwarm {
    fn torrent(&self) -> Option<TorrentInfo> {
        self.info
    }
    fn our_bitfield(&self) -> (Option<Bytes>, usize) {
        (Some(Bytes::from_static(&[0b1010_1010])), 0)
    }
    fn new_haves(&self, _cursor: &mut usize, _out: &mut Vec<u32>) {}
    fn we_have(&self, piece: u32) -> bool {
        assert!(piece < PIECES, "we_have({piece}) out of range");
        piece.is_multiple_of(2)
    }
    fn is_interesting(&self, bf: &Bitfield) -> bool {
        bf.iter_ones().any(|i| i % 2 == 1)
    }
    fn is_complete(&self) -> bool {
        false
    }
    fn peer_bitfield(&self, _key: PeerKey, bf: &Bitfield) {
        assert_eq!(bf.len(), PIECES as usize);
    }
    fn peer_have(&self, _key: PeerKey, piece: u32, _now_seed: bool) {
        assert!(piece < PIECES);
    }
    fn pick(
        &self,
        _key: PeerKey,
        bf: &Bitfield,
        want: usize,
        in_flight: &[BlockRef],
        _now: Instant,
    ) -> Vec<BlockRef> {
        let mut out = self.out.lock().unwrap();
        let mut picked = Vec::new();
        for piece in bf.iter_ones().filter(|i| i % 2 == 1) {
            for b in 0..4 {
                let r = BlockRef {
                    piece: piece as u32,
                    offset: b * BLOCK_LEN,
                    len: BLOCK_LEN,
                };
                if picked.len() < want && !out.contains(&r) && !in_flight.contains(&r) {
                    out.push(r);
                    picked.push(r);
                }
            }
        }
        picked
    }
    fn release(&self, _key: PeerKey, blocks: &[BlockRef]) {
        let mut out = self.out.lock().unwrap();
        for r in blocks {
            let i = out.iter().position(|x| x == r);
            assert!(i.is_some(), "released {r:?}, never handed out");
            out.swap_remove(i.unwrap_or_default());
        }
    }
    fn deliver(&self, _key: PeerKey, piece: u32, offset: u32, data: &[u8]) {
        // A block released earlier may still arrive (it was on its way).
        let r = BlockRef {
            piece,
            offset,
            len: data.len() as u32,
        };
        self.out.lock().unwrap().retain(|x| *x != r);
    }
    fn set_interested(&self, _key: PeerKey, _interested: bool) {}
    fn set_rates(&self, _key: PeerKey, _down: u64, _up: u64) {}
    fn count_uploaded(&self, _n: u64) {}
    fn metadata_piece(&self, piece: u32) -> MetadataMessage {
        MetadataMessage::Reject { piece }
    }
    fn metadata_size(&self, _key: PeerKey, _size: u32) {}
    fn next_metadata_request(&self, _key: PeerKey, _now: Instant) -> Option<u32> {
        Some(0)
    }
    fn metadata_data(
        &self,
        _key: PeerKey,
        _piece: u32,
        _total_size: u32,
        _data: &[u8],
        _now: Instant,
    ) -> Result<(), MetadataError> {
        Ok(())
    }
    fn metadata_reject(&self, _key: PeerKey, _piece: u32) {}
    fn metadata_junk(&self, _key: PeerKey) {}
    fn metadata_outstanding(&self, _key: PeerKey) -> usize {
        0
    }
    fn peer_gone(&self, _key: PeerKey, _bf: Option<&Bitfield>) {}
    fn peer_listen_port(&self, _key: PeerKey, _port: u16) {}
    fn pex_allowed(&self) -> bool {
        self.info.is_some()
    }
    fn pex_peers(&self, _key: PeerKey) -> Vec<(SocketAddr, u8)> {
        vec![(SocketAddr::from(([10, 0, 0, 2], 6881)), 0)]
    }
    fn pex_learned(&self, _key: PeerKey, added: &[(SocketAddr, u8)]) {
        assert!(added.len() <= 2 * MAX_PEX_PEERS);
    }
}

/// (l) [`PeerState`] fed the frames of a fuzzer-written byte stream.
///
/// The first byte picks the setup: bit 0 the fast extension, bit 1 an
/// early unchoke, bit 2 a magnet (no metadata); each later frame is handed
/// over 100 ms after the previous one, followed by what the socket driver
/// would do (requests, serving, a tick, a choke flip every 8th message).
/// Properties: nothing panics, the per-peer bounds hold after every step,
/// and the swarm's books balance (no block released that was not handed
/// out).
pub fn peer_state(data: &[u8]) {
    let Some((&setup, stream)) = data.split_first() else {
        return;
    };
    let info = (setup & 4 == 0).then(|| TorrentInfo {
        geometry: Geometry::new(u64::from(PIECES * 4 * BLOCK_LEN), 4 * BLOCK_LEN),
        metadata_size: 1000,
    });
    let swarm = FuzzSwarm {
        info,
        out: Mutex::new(Vec::new()),
    };
    let local = LocalInfo {
        listen_port: 6881,
        dht_port: Some(6881),
        their_ip: "10.0.0.1".parse().expect("literal"),
        info_hash: crate::id::InfoHash([0xaa; 20]),
    };
    let mut now = Instant::now();
    let mut st = PeerState::new(1, local, true, now).with_fast(setup & 1 != 0);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    if setup & 2 != 0 {
        st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
    }
    let mut buf = BytesMut::from(stream);
    let mut choked = setup & 2 == 0;
    for n in 0u32.. {
        let Ok(Some(m)) = PeerCodec.decode(&mut buf) else {
            break;
        };
        now += Duration::from_millis(100);
        if st.on_message(m, now, &swarm, &mut out).is_err() {
            break;
        }
        if n % 8 == 7 {
            choked = !choked;
            st.on_command(PeerCommand::SetChoke(choked), &swarm, &mut out);
        }
        st.fill_requests(now, &swarm, &mut out);
        if let Some(batch) = st.take_upload_batch(&out) {
            for r in &batch {
                assert!(
                    r.piece < PIECES && r.piece.is_multiple_of(2),
                    "serving {r:?}"
                );
                // Choked, only the allowed-fast pieces we sent are served.
                assert!(
                    !choked || st.allowed_fast_sent().contains(&r.piece),
                    "serving {r:?} while choked"
                );
            }
            let read = batch
                .into_iter()
                .map(|r| (r, Some(Bytes::from(vec![0u8; r.len as usize]))))
                .collect();
            st.on_blocks_read(read, &swarm, &mut out);
        }
        if st.on_tick(now, &swarm, &mut out).is_err() {
            break;
        }
        assert!(st.allowed_fast().len() <= MAX_ALLOWED_FAST);
        assert!(st.allowed_fast_sent().len() <= ALLOWED_FAST_SET_SIZE);
        assert!(st.suggested().count() <= MAX_SUGGESTED);
        assert!(st.in_flight().len() <= st.reqq());
        // The socket takes everything.
        out.buf_mut().clear();
        st.on_written(now);
    }
    st.close(&swarm);
}
