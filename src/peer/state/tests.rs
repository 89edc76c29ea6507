//! `PeerState` against a fake swarm with synthetic instants: every attack a
//! peer can mount on one connection, without sockets or a runtime.

use super::*;
use crate::geometry::Geometry;
use crate::peer::extension::ExtendedHandshake;
use crate::peer::message::BLOCK_LEN;
use crate::peer::swarm::TorrentInfo;
use std::net::SocketAddr;
use std::sync::Mutex;

mod fast;
mod hashx;
mod pex;

/// A torrent of `pieces` pieces of 4 blocks, of which we have `have`.
struct FakeSwarm {
    info: Option<TorrentInfo>,
    inner: Mutex<Fake>,
    /// The metadata of a magnet, once it "arrives".
    late_info: Mutex<Option<TorrentInfo>>,
}

#[derive(Default)]
struct Fake {
    have: Vec<bool>,
    next_block: u32,
    delivered: Vec<(u32, u32)>,
    released: usize,
    peer_haves: usize,
    interesting_calls: usize,
    metadata_sizes: Vec<u32>,
    junk: usize,
    gone: bool,
    /// The pieces the last pick was allowed to choose from.
    pick_from: Vec<usize>,
    listen_port: Option<u16>,
    private: bool,
    pex_peers: Vec<(SocketAddr, u8)>,
    pex_learned: Vec<(SocketAddr, u8)>,
    /// The tree hash requests are answered from.
    hash_tree: Option<crate::peer::hashes::LayerTree>,
    /// The piece layers being fetched.
    hash_picker: Option<crate::peer::hash_picker::HashPicker>,
    /// Whether hash requests the tree refuses are taken to answer later.
    answer_later: bool,
    /// Those taken.
    answered_later: Vec<(PeerKey, HashRequest)>,
}

impl FakeSwarm {
    fn new(pieces: u32, have: &[u32]) -> Self {
        let geometry = Geometry::new(pieces as u64 * 4 * BLOCK_LEN as u64, 4 * BLOCK_LEN);
        let mut f = Fake {
            have: vec![false; pieces as usize],
            ..Fake::default()
        };
        for &i in have {
            f.have[i as usize] = true;
        }
        FakeSwarm {
            info: Some(TorrentInfo {
                geometry,
                metadata_size: 1000,
            }),
            inner: Mutex::new(f),
            late_info: Mutex::new(None),
        }
    }

    fn magnet() -> Self {
        FakeSwarm {
            info: None,
            inner: Mutex::new(Fake::default()),
            late_info: Mutex::new(None),
        }
    }

    fn f(&self) -> std::sync::MutexGuard<'_, Fake> {
        self.inner.lock().unwrap()
    }
}

impl Swarm for FakeSwarm {
    fn torrent(&self) -> Option<TorrentInfo> {
        self.info.or(*self.late_info.lock().unwrap())
    }
    fn our_bitfield(&self) -> (Option<Bytes>, usize) {
        let f = self.f();
        let mut bf = Bitfield::new(f.have.len());
        for (i, h) in f.have.iter().enumerate() {
            if *h {
                bf.set(i);
            }
        }
        let bytes = (bf.count() > 0).then(|| Bytes::copy_from_slice(bf.as_bytes()));
        (bytes, 0)
    }
    fn new_haves(&self, _cursor: &mut usize, _out: &mut Vec<u32>) {}
    fn we_have(&self, piece: u32) -> bool {
        self.f().have.get(piece as usize).copied().unwrap_or(false)
    }
    fn is_interesting(&self, bf: &Bitfield) -> bool {
        let mut f = self.f();
        f.interesting_calls += 1;
        bf.iter_ones().any(|i| !f.have[i])
    }
    fn is_complete(&self) -> bool {
        self.f().have.iter().all(|h| *h)
    }
    fn peer_bitfield(&self, _key: PeerKey, _bf: &Bitfield) {}
    fn peer_have(&self, _key: PeerKey, _piece: u32, _seed: bool) {
        self.f().peer_haves += 1;
    }
    fn pick(
        &self,
        _key: PeerKey,
        bf: &Bitfield,
        want: usize,
        _in_flight: &[BlockRef],
        _now: Instant,
    ) -> Vec<BlockRef> {
        let g = self.info.unwrap().geometry;
        let mut f = self.f();
        f.pick_from = bf.iter_ones().collect();
        let mut out = Vec::new();
        while out.len() < want && f.next_block < g.piece_count * 4 {
            let b = f.next_block;
            f.next_block += 1;
            out.push(BlockRef {
                piece: b / 4,
                offset: (b % 4) * BLOCK_LEN,
                len: BLOCK_LEN,
            });
        }
        out
    }
    fn release(&self, _key: PeerKey, blocks: &[BlockRef]) {
        self.f().released += blocks.len();
    }
    fn deliver(&self, _key: PeerKey, piece: u32, offset: u32, _data: &[u8]) {
        self.f().delivered.push((piece, offset));
    }
    fn set_interested(&self, _key: PeerKey, _interested: bool) {}
    fn set_rates(&self, _key: PeerKey, _down: u64, _up: u64) {}
    fn count_uploaded(&self, _n: u64) {}
    fn metadata_piece(&self, piece: u32) -> MetadataMessage {
        MetadataMessage::Data {
            piece,
            total_size: 16384 * 4,
            data: Bytes::from(vec![7u8; 16384]),
        }
    }
    fn metadata_size(&self, _key: PeerKey, size: u32) {
        self.f().metadata_sizes.push(size);
    }
    fn next_metadata_request(&self, _key: PeerKey, _now: Instant) -> Option<u32> {
        Some(0)
    }
    fn metadata_data(
        &self,
        _key: PeerKey,
        _piece: u32,
        _total: u32,
        _data: &[u8],
        _now: Instant,
    ) -> Result<(), MetadataError> {
        Ok(())
    }
    fn metadata_reject(&self, _key: PeerKey, _piece: u32) {}
    fn metadata_junk(&self, _key: PeerKey) {
        self.f().junk += 1;
    }
    fn metadata_outstanding(&self, _key: PeerKey) -> usize {
        0
    }
    fn peer_gone(&self, _key: PeerKey, _bf: Option<&Bitfield>) {
        self.f().gone = true;
    }
    fn peer_listen_port(&self, _key: PeerKey, port: u16) {
        self.f().listen_port = Some(port);
    }
    fn pex_allowed(&self) -> bool {
        self.torrent().is_some() && !self.f().private
    }
    fn pex_peers(&self, _key: PeerKey) -> Vec<(SocketAddr, u8)> {
        self.f().pex_peers.clone()
    }
    fn pex_learned(&self, _key: PeerKey, added: &[(SocketAddr, u8)]) {
        self.f().pex_learned.extend_from_slice(added);
    }
    fn hash_answer(&self, req: &HashRequest) -> Option<Vec<crate::merkle::Hash>> {
        self.f().hash_tree.as_ref()?.answer(req)
    }
    fn hash_answer_later(&self, key: PeerKey, req: &HashRequest, budget: u32) -> Option<u32> {
        let mut f = self.f();
        // Each costs a piece of 4096 leaves hashed.
        if !f.answer_later || budget < 4096 {
            return None;
        }
        f.answered_later.push((key, *req));
        Some(4096)
    }
    fn next_hash_request(
        &self,
        key: PeerKey,
        _bf: Option<&Bitfield>,
        now: Instant,
    ) -> Option<HashRequest> {
        self.f().hash_picker.as_mut()?.next_request(key, now)
    }
    fn hash_request_pending(&self, key: PeerKey, req: &HashRequest, now: Instant) -> bool {
        self.f()
            .hash_picker
            .as_mut()
            .is_some_and(|p| p.is_pending(key, req, now))
    }
    fn hashes_received(
        &self,
        key: PeerKey,
        req: &HashRequest,
        hashes: &[crate::merkle::Hash],
        now: Instant,
    ) -> Result<(), String> {
        match self.f().hash_picker.as_mut() {
            Some(p) => p.on_hashes(key, req, hashes, now),
            None => Ok(()),
        }
    }
    fn hash_rejected(&self, key: PeerKey, req: &HashRequest, now: Instant) {
        if let Some(p) = self.f().hash_picker.as_mut() {
            p.on_reject(key, req, now);
        }
    }
}

fn local() -> LocalInfo {
    LocalInfo {
        listen_port: 6881,
        dht_port: None,
        their_ip: "10.0.0.1".parse().unwrap(),
        info_hash: crate::id::InfoHash([0xaa; 20]),
    }
}

/// A started connection to a peer that has every piece of `swarm`.
fn seeder_peer(swarm: &FakeSwarm, now: Instant) -> (PeerState, Outbox) {
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(swarm, &mut out);
    let n = swarm.info.unwrap().geometry.piece_count as usize;
    let bf = Bitfield::full(n);
    st.on_message(
        Message::Bitfield(Bytes::copy_from_slice(bf.as_bytes())),
        now,
        swarm,
        &mut out,
    )
    .unwrap();
    (st, out)
}

fn ext_handshake(hs: ExtendedHandshake) -> Message {
    Message::Extended {
        id: HANDSHAKE_ID,
        payload: Bytes::from(hs.encode()),
    }
}

fn requests(out: &mut Outbox) -> Vec<BlockRef> {
    out.drain_messages()
        .into_iter()
        .filter_map(|m| match m {
            Message::Request(r) => Some(r),
            _ => None,
        })
        .collect()
}

#[test]
fn regression_reqq_below_the_minimum_depth_does_not_panic() {
    for (reqq, expect) in [(1u32, 1usize), (0, 1), (5, 5), (100_000, MIN_DEPTH)] {
        let swarm = FakeSwarm::new(200, &[]);
        let now = Instant::now();
        let (mut st, mut out) = seeder_peer(&swarm, now);
        let hs = ExtendedHandshake {
            reqq: Some(reqq),
            ..ExtendedHandshake::default()
        };
        st.on_message(ext_handshake(hs), now, &swarm, &mut out)
            .unwrap();
        st.on_message(Message::Unchoke, now, &swarm, &mut out)
            .unwrap();
        out.drain_messages();
        st.fill_requests(now, &swarm, &mut out);
        let n = requests(&mut out).len();
        assert_eq!(n, expect, "reqq {reqq}");
        assert!(n <= st.reqq(), "never more in flight than the peer queues");
    }
}

#[test]
fn regression_unrequested_blocks_are_dropped_then_the_peer_is() {
    let swarm = FakeSwarm::new(4, &[]);
    let now = Instant::now();
    let (mut st, mut out) = seeder_peer(&swarm, now);
    let block = |piece| Message::Piece {
        piece,
        offset: 0,
        data: Bytes::from(vec![0u8; BLOCK_LEN as usize]),
    };
    for _ in 0..MAX_UNREQUESTED {
        st.on_message(block(3), now, &swarm, &mut out).unwrap();
    }
    assert!(swarm.f().delivered.is_empty(), "nothing reached the picker");
    let err = st.on_message(block(3), now, &swarm, &mut out).unwrap_err();
    assert!(matches!(err, PeerError::Unrequested(_)), "{err}");
}

#[test]
fn blocks_in_flight_when_the_peer_choked_still_count() {
    let swarm = FakeSwarm::new(4, &[]);
    let now = Instant::now();
    let (mut st, mut out) = seeder_peer(&swarm, now);
    st.on_message(Message::Unchoke, now, &swarm, &mut out)
        .unwrap();
    st.fill_requests(now, &swarm, &mut out);
    let asked = requests(&mut out);
    assert!(!asked.is_empty());
    st.on_message(Message::Choke, now, &swarm, &mut out)
        .unwrap();
    assert_eq!(swarm.f().released, asked.len());
    // The blocks were already on the wire: they are not "unrequested".
    for r in &asked {
        let m = Message::Piece {
            piece: r.piece,
            offset: r.offset,
            data: Bytes::from(vec![1u8; r.len as usize]),
        };
        st.on_message(m, now, &swarm, &mut out).unwrap();
    }
    assert_eq!(swarm.f().delivered.len(), asked.len());
}

#[test]
fn regression_have_flood_costs_one_step_per_have() {
    let swarm = FakeSwarm::new(1000, &[]);
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let before = swarm.f().interesting_calls;
    for k in 0..100_000u32 {
        st.on_message(Message::Have(k % 999), now, &swarm, &mut out)
            .unwrap();
    }
    let f = swarm.f();
    assert_eq!(f.peer_haves, 999, "duplicates cost nothing");
    assert_eq!(
        f.interesting_calls, before,
        "no scan of the piece set per HAVE"
    );
    drop(f);
    let err = st
        .on_message(Message::Have(1000), now, &swarm, &mut out)
        .unwrap_err();
    assert!(matches!(err, PeerError::Protocol(_)));
}

#[test]
fn regression_repeated_bitfields_cost_only_their_new_bits() {
    // aria2c sends a BITFIELD again as it gets pieces: merged, not fatal.
    let swarm = FakeSwarm::new(16, &[]);
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let half = Message::Bitfield(Bytes::from(vec![0xff, 0x00]));
    for _ in 0..1000 {
        st.on_message(half.clone(), now, &swarm, &mut out).unwrap();
    }
    assert_eq!(swarm.f().peer_haves, 8, "repeats reach the swarm once");
    let full = Message::Bitfield(Bytes::from(vec![0xff, 0xff]));
    st.on_message(full, now, &swarm, &mut out).unwrap();
    assert_eq!(swarm.f().peer_haves, 16);
    let wrong_len = Message::Bitfield(Bytes::from(vec![0xff; 3]));
    assert!(st.on_message(wrong_len, now, &swarm, &mut out).is_err());
}

#[test]
fn regression_metadata_request_flood_pauses_reading() {
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let hs = ExtendedHandshake {
        ut_metadata: Some(3),
        ..ExtendedHandshake::default()
    };
    st.on_message(ext_handshake(hs), now, &swarm, &mut out)
        .unwrap();
    let req = Message::Extended {
        id: LOCAL_UT_METADATA,
        payload: Bytes::from(MetadataMessage::Request { piece: 0 }.encode()),
    };
    // The driver reads only while the outbox is under the pause line, so a
    // peer that never reads gets at most a few answers queued.
    let mut answered = 0;
    while out.len() < st.read_pause() {
        st.on_message(req.clone(), now, &swarm, &mut out).unwrap();
        answered += 1;
        assert!(answered < 100, "the pause line must be reached");
    }
    assert!(out.len() < st.read_pause() + 20_000);
    assert!(answered <= 5, "{answered} answers queued for a choked peer");
}

#[test]
fn requests_are_validated_and_queued_only_when_unchoked() {
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let ok = BlockRef {
        piece: 0,
        offset: 0,
        len: BLOCK_LEN,
    };
    st.on_message(Message::Request(ok), now, &swarm, &mut out)
        .unwrap();
    assert!(st.take_upload_batch(&out).is_none(), "choked: ignored");
    st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
    for _ in 0..MAX_UPLOAD_QUEUE + 100 {
        st.on_message(Message::Request(ok), now, &swarm, &mut out)
            .unwrap();
    }
    assert_eq!(st.upload_queue.len(), MAX_UPLOAD_QUEUE);
    let batch = st.take_upload_batch(&out).unwrap();
    assert_eq!(batch.len(), SERVE_BATCH);
    assert!(st.take_upload_batch(&out).is_none(), "one batch at a time");
    for bad in [
        BlockRef {
            piece: 4,
            offset: 0,
            len: 1,
        },
        BlockRef {
            piece: 0,
            offset: 4 * BLOCK_LEN - 1,
            len: 2,
        },
        BlockRef {
            piece: 0,
            offset: 0,
            len: 0,
        },
    ] {
        assert!(
            st.on_message(Message::Request(bad), now, &swarm, &mut out)
                .is_err()
        );
    }
}

#[test]
fn timers_keepalive_snub_idle_and_stalled_writer() {
    let swarm = FakeSwarm::new(8, &[]);
    let t0 = Instant::now();
    let (mut st, mut out) = seeder_peer(&swarm, t0);
    st.on_message(Message::Unchoke, t0, &swarm, &mut out)
        .unwrap();
    st.fill_requests(t0, &swarm, &mut out);
    let asked = requests(&mut out).len();
    st.on_written(t0);
    let at = |s| t0 + Duration::from_secs(s);
    // 31 s without a block: snubbed, its requests go back to the picker.
    st.on_message(Message::KeepAlive, at(31), &swarm, &mut out)
        .unwrap();
    st.on_tick(at(31), &swarm, &mut out).unwrap();
    assert!(st.is_snubbed());
    assert_eq!(swarm.f().released, asked);
    // 61 s since we last wrote: a keep-alive.
    out.drain_messages();
    st.on_written(at(31));
    st.on_tick(at(92), &swarm, &mut out).unwrap();
    assert!(out.drain_messages().contains(&Message::KeepAlive));
    st.on_written(at(92));
    // Silent for more than two minutes after its last message: dropped.
    let err = st.on_tick(at(31 + 121), &swarm, &mut out).unwrap_err();
    assert!(matches!(err, PeerError::Idle));

    // A peer that talks but never reads what we queue is dropped too.
    let (mut st, mut out) = seeder_peer(&swarm, t0);
    st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
    for s in (1..=60).step_by(10) {
        st.on_message(Message::KeepAlive, at(s), &swarm, &mut out)
            .unwrap();
        st.on_tick(at(s), &swarm, &mut out).unwrap();
    }
    st.on_message(Message::KeepAlive, at(62), &swarm, &mut out)
        .unwrap();
    let err = st.on_tick(at(62), &swarm, &mut out).unwrap_err();
    assert!(matches!(err, PeerError::WriteStalled));
}

#[test]
fn both_seeds_part() {
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let err = st
        .on_message(
            Message::Bitfield(Bytes::from(vec![0xf0])),
            now,
            &swarm,
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(err, PeerError::BothSeeds));
}

#[test]
fn early_bitfield_and_haves_are_adopted_with_the_metadata() {
    let swarm = FakeSwarm::magnet();
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let hs = ExtendedHandshake {
        ut_metadata: Some(2),
        metadata_size: Some(5000),
        ..ExtendedHandshake::default()
    };
    st.on_message(ext_handshake(hs), now, &swarm, &mut out)
        .unwrap();
    assert_eq!(swarm.f().metadata_sizes, vec![5000]);
    st.on_message(Message::Have(3), now, &swarm, &mut out)
        .unwrap();
    for _ in 0..MAX_EARLY_HAVES - 1 {
        st.on_message(Message::Have(1), now, &swarm, &mut out)
            .unwrap();
    }
    assert!(
        st.on_message(Message::Have(1), now, &swarm, &mut out)
            .is_err(),
        "early HAVEs are capped"
    );
}

#[test]
fn close_gives_everything_back() {
    let swarm = FakeSwarm::new(4, &[]);
    let now = Instant::now();
    let (mut st, _out) = seeder_peer(&swarm, now);
    st.close(&swarm);
    assert!(swarm.f().gone);
}

#[test]
fn undecodable_metadata_message_drops_a_magnet_peer() {
    let swarm = FakeSwarm::magnet();
    let now = Instant::now();
    let mut st = PeerState::new(1, local(), true, now);
    let mut out = Outbox::default();
    st.start(&swarm, &mut out);
    let junk = Message::Extended {
        id: LOCAL_UT_METADATA,
        payload: Bytes::from_static(b"not bencode at all"),
    };
    assert!(st.on_message(junk, now, &swarm, &mut out).is_err());
    assert_eq!(swarm.f().junk, 1);
}
