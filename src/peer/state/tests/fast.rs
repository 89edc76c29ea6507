//! The fast extension (BEP 6) on one connection: our first message, the
//! peer's HAVE ALL / HAVE NONE, rejects both ways, ALLOWED FAST and
//! SUGGEST PIECE, each with its bound.

use super::*;
use std::net::IpAddr;

fn fast_state(swarm: &FakeSwarm, now: Instant) -> (PeerState, Outbox) {
    let mut st = PeerState::new(1, local(), true, now).with_fast(true);
    let mut out = Outbox::default();
    st.start(swarm, &mut out);
    (st, out)
}

fn block(piece: u32, n: u32) -> BlockRef {
    BlockRef {
        piece,
        offset: n * BLOCK_LEN,
        len: BLOCK_LEN,
    }
}

fn rejects(msgs: &[Message]) -> Vec<BlockRef> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::RejectRequest(r) => Some(*r),
            _ => None,
        })
        .collect()
}

#[test]
fn our_first_message_is_have_all_have_none_or_the_bitfield() {
    let now = Instant::now();
    let first = |swarm: &FakeSwarm, fast: bool| {
        let mut st = PeerState::new(1, local(), true, now).with_fast(fast);
        let mut out = Outbox::default();
        st.start(swarm, &mut out);
        // The extended handshake goes first; the piece set right after.
        let msgs = out.drain_messages();
        assert!(matches!(msgs[0], Message::Extended { id: 0, .. }));
        msgs.into_iter().nth(1)
    };
    let seed = FakeSwarm::new(9, &[0, 1, 2, 3, 4, 5, 6, 7, 8]);
    assert_eq!(first(&seed, true), Some(Message::HaveAll));
    let empty = FakeSwarm::new(9, &[]);
    assert_eq!(first(&empty, true), Some(Message::HaveNone));
    let magnet = FakeSwarm::magnet();
    assert_eq!(first(&magnet, true), Some(Message::HaveNone));
    let some = FakeSwarm::new(9, &[0, 8]);
    assert_eq!(
        first(&some, true),
        Some(Message::Bitfield(Bytes::from_static(&[0x80, 0x80])))
    );
    // Without the extension: a bitfield or nothing, never a fast message.
    assert!(matches!(first(&seed, false), Some(Message::Bitfield(_))));
    assert_eq!(first(&empty, false), None);
}

#[test]
fn have_all_counts_as_a_full_bitfield_only_first() {
    let swarm = FakeSwarm::new(6, &[1]);
    let now = Instant::now();
    let (mut st, mut out) = fast_state(&swarm, now);
    out.drain_messages();
    st.on_message(Message::HaveAll, now, &swarm, &mut out)
        .unwrap();
    assert!(st.bitfield().unwrap().is_full());
    assert_eq!(out.drain_messages(), vec![Message::Interested]);
    // A second piece set, or one after a HAVE, breaks BEP 6.
    for m in [Message::HaveAll, Message::HaveNone] {
        assert!(matches!(
            st.on_message(m, now, &swarm, &mut out),
            Err(PeerError::Protocol(_))
        ));
    }
    let (mut st, mut out) = fast_state(&swarm, now);
    st.on_message(Message::Have(2), now, &swarm, &mut out)
        .unwrap();
    assert!(
        st.on_message(Message::HaveNone, now, &swarm, &mut out)
            .is_err()
    );
    // HAVE NONE first is fine and changes nothing.
    let (mut st, mut out) = fast_state(&swarm, now);
    st.on_message(Message::HaveNone, now, &swarm, &mut out)
        .unwrap();
    assert_eq!(st.bitfield().unwrap().count(), 0);
    st.on_message(Message::Have(2), now, &swarm, &mut out)
        .unwrap();
}

#[test]
fn have_all_to_a_seed_parts_us() {
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let now = Instant::now();
    let (mut st, mut out) = fast_state(&swarm, now);
    assert!(matches!(
        st.on_message(Message::HaveAll, now, &swarm, &mut out),
        Err(PeerError::BothSeeds)
    ));
}

#[test]
fn fast_messages_without_the_extension_are_violations() {
    let swarm = FakeSwarm::new(4, &[]);
    let now = Instant::now();
    for m in [
        Message::HaveAll,
        Message::HaveNone,
        Message::AllowedFast(1),
        Message::SuggestPiece(1),
        Message::RejectRequest(block(0, 0)),
    ] {
        let mut st = PeerState::new(1, local(), true, now);
        let mut out = Outbox::default();
        st.start(&swarm, &mut out);
        assert!(
            matches!(
                st.on_message(m.clone(), now, &swarm, &mut out),
                Err(PeerError::Protocol(_))
            ),
            "{m:?}"
        );
    }
}

#[test]
fn choking_rejects_every_queued_request() {
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let now = Instant::now();
    for fast in [true, false] {
        let mut st = PeerState::new(1, local(), true, now).with_fast(fast);
        let mut out = Outbox::default();
        st.start(&swarm, &mut out);
        st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
        for n in 0..3 {
            st.on_message(Message::Request(block(1, n)), now, &swarm, &mut out)
                .unwrap();
        }
        out.drain_messages();
        st.on_command(PeerCommand::SetChoke(true), &swarm, &mut out);
        let msgs = out.drain_messages();
        assert_eq!(msgs[0], Message::Choke);
        let want = if fast {
            vec![block(1, 0), block(1, 1), block(1, 2)]
        } else {
            Vec::new()
        };
        assert_eq!(rejects(&msgs), want, "fast {fast}");
        assert!(st.take_upload_batch(&out).is_none());
    }
}

#[test]
fn requests_we_will_not_serve_are_rejected() {
    let swarm = FakeSwarm::new(4, &[0]);
    let now = Instant::now();
    let (mut st, mut out) = fast_state(&swarm, now);
    out.drain_messages();
    // Choked: rejected at once.
    st.on_message(Message::Request(block(0, 0)), now, &swarm, &mut out)
        .unwrap();
    assert_eq!(rejects(&out.drain_messages()), vec![block(0, 0)]);
    // Unchoked, a piece we lack: rejected; one we have: queued.
    st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
    st.on_message(Message::Request(block(2, 0)), now, &swarm, &mut out)
        .unwrap();
    st.on_message(Message::Request(block(0, 1)), now, &swarm, &mut out)
        .unwrap();
    assert_eq!(rejects(&out.drain_messages()), vec![block(2, 0)]);
    // Cancelled while queued: rejected (BEP 6 wants an answer).
    st.on_message(Message::Cancel(block(0, 1)), now, &swarm, &mut out)
        .unwrap();
    assert_eq!(rejects(&out.drain_messages()), vec![block(0, 1)]);
    assert!(st.take_upload_batch(&out).is_none());
    // Choked while a batch was on the disk: the batch is rejected.
    st.on_message(Message::Request(block(0, 2)), now, &swarm, &mut out)
        .unwrap();
    let batch = st.take_upload_batch(&out).unwrap();
    st.on_command(PeerCommand::SetChoke(true), &swarm, &mut out);
    out.drain_messages();
    let read = batch
        .into_iter()
        .map(|r| (r, Some(Bytes::from(vec![0u8; r.len as usize]))))
        .collect();
    st.on_blocks_read(read, &swarm, &mut out);
    assert_eq!(rejects(&out.drain_messages()), vec![block(0, 2)]);
}

#[test]
fn a_reject_releases_the_block_and_a_stray_one_drops_the_peer() {
    let swarm = FakeSwarm::new(100, &[]);
    let now = Instant::now();
    let (mut st, mut out) = fast_state(&swarm, now);
    st.on_message(Message::HaveAll, now, &swarm, &mut out)
        .unwrap();
    st.on_message(Message::Unchoke, now, &swarm, &mut out)
        .unwrap();
    st.fill_requests(now, &swarm, &mut out);
    let asked = requests(&mut out);
    assert!(asked.len() > 2);
    st.on_message(Message::RejectRequest(asked[0]), now, &swarm, &mut out)
        .unwrap();
    assert_eq!(swarm.f().released, 1);
    assert!(!st.in_flight().contains(&asked[0]));
    // Not asked again within the pause.
    st.fill_requests(now, &swarm, &mut out);
    assert!(requests(&mut out).is_empty());
    // A request we cancelled may be rejected (that is the answer BEP 6 asks for).
    st.on_command(PeerCommand::Cancel(asked[1]), &swarm, &mut out);
    st.on_message(Message::RejectRequest(asked[1]), now, &swarm, &mut out)
        .unwrap();
    // One we never asked for, or rejected twice: violation.
    for r in [block(99, 3), asked[0]] {
        assert!(matches!(
            st.on_message(Message::RejectRequest(r), now, &swarm, &mut out),
            Err(PeerError::Protocol(_))
        ));
    }
}

#[test]
fn allowed_fast_pieces_are_requested_while_choked() {
    let swarm = FakeSwarm::new(300, &[]);
    let now = Instant::now();
    let (mut st, mut out) = fast_state(&swarm, now);
    st.on_message(Message::HaveAll, now, &swarm, &mut out)
        .unwrap();
    st.fill_requests(now, &swarm, &mut out);
    assert!(requests(&mut out).is_empty(), "choked, nothing allowed");
    // Out of range and beyond the cap: ignored.
    st.on_message(Message::AllowedFast(300), now, &swarm, &mut out)
        .unwrap();
    for i in 0..100 {
        st.on_message(Message::AllowedFast(i), now, &swarm, &mut out)
            .unwrap();
    }
    st.on_message(Message::AllowedFast(5), now, &swarm, &mut out)
        .unwrap();
    assert_eq!(
        st.allowed_fast(),
        (0..MAX_ALLOWED_FAST as u32).collect::<Vec<_>>()
    );
    // The picker may choose only among the allowed pieces.
    st.fill_requests(now, &swarm, &mut out);
    assert!(!requests(&mut out).is_empty());
    assert_eq!(
        swarm.f().pick_from,
        (0..MAX_ALLOWED_FAST).collect::<Vec<_>>()
    );
}

#[test]
fn suggestions_are_bounded() {
    let swarm = FakeSwarm::new(4, &[]);
    let now = Instant::now();
    let (mut st, mut out) = fast_state(&swarm, now);
    for i in 0..1000 {
        st.on_message(Message::SuggestPiece(i), now, &swarm, &mut out)
            .unwrap();
    }
    assert_eq!(
        st.suggested().collect::<Vec<_>>(),
        (1000 - MAX_SUGGESTED as u32..1000).collect::<Vec<_>>()
    );
}

/// BEP 6's example peer.
const BEP6_IP: [u8; 4] = [80, 4, 4, 200];

/// A started fast connection to a peer at `ip` (info-hash 0xaa × 20).
fn fast_state_at(swarm: &FakeSwarm, ip: IpAddr, fast: bool, now: Instant) -> (PeerState, Outbox) {
    let local = LocalInfo {
        their_ip: ip,
        ..local()
    };
    let mut st = PeerState::new(1, local, true, now).with_fast(fast);
    let mut out = Outbox::default();
    st.start(swarm, &mut out);
    out.drain_messages();
    (st, out)
}

fn allowed_sent(msgs: &[Message]) -> Vec<u32> {
    msgs.iter()
        .filter_map(|m| match m {
            Message::AllowedFast(i) => Some(*i),
            _ => None,
        })
        .collect()
}

#[test]
fn allowed_fast_set_matches_the_bep_6_vectors() {
    let ih = crate::id::InfoHash([0xaa; 20]);
    let ip = std::net::Ipv4Addr::from(BEP6_IP);
    assert_eq!(
        allowed_fast_set(&ih, ip, 1313, 7),
        vec![1059, 431, 808, 1217, 287, 376, 1188]
    );
    assert_eq!(
        allowed_fast_set(&ih, ip, 1313, 9),
        vec![1059, 431, 808, 1217, 287, 376, 1188, 353, 508]
    );
    // Only the /24 counts.
    let neighbour = std::net::Ipv4Addr::new(80, 4, 4, 1);
    assert_eq!(
        allowed_fast_set(&ih, neighbour, 1313, 9),
        allowed_fast_set(&ih, ip, 1313, 9)
    );
    // Distinct, in range, k of them, even when pieces are barely more than k.
    for n in [11u32, 12, 20, 1313, u32::MAX] {
        let set = allowed_fast_set(&ih, ip, n, ALLOWED_FAST_SET_SIZE);
        assert_eq!(set.len(), ALLOWED_FAST_SET_SIZE, "{n} pieces");
        assert!(set.iter().all(|&i| i < n));
        let mut d = set.clone();
        d.sort_unstable();
        d.dedup();
        assert_eq!(d.len(), set.len());
    }
    // No more pieces than k: all of them; none at all: nothing.
    assert_eq!(allowed_fast_set(&ih, ip, 4, 10), vec![0, 1, 2, 3]);
    assert!(allowed_fast_set(&ih, ip, 0, 10).is_empty());
    assert!(allowed_fast_set(&ih, ip, 1313, 0).is_empty());
}

#[test]
fn a_choked_newcomer_is_sent_the_allowed_fast_pieces_we_have() {
    let ih = crate::id::InfoHash([0xaa; 20]);
    let set = allowed_fast_set(&ih, BEP6_IP.into(), 1313, ALLOWED_FAST_SET_SIZE);
    let now = Instant::now();
    // We have three pieces of its set and one outside it.
    let swarm = FakeSwarm::new(1313, &[1059, 808, 1188, 5]);
    let (mut st, mut out) = fast_state_at(&swarm, IpAddr::from(BEP6_IP), true, now);
    st.on_message(Message::HaveNone, now, &swarm, &mut out)
        .unwrap();
    assert_eq!(allowed_sent(&out.drain_messages()), vec![1059, 808, 1188]);
    assert_eq!(st.allowed_fast_sent(), &[1059, 808, 1188]);
    // Once per connection: more HAVEs do not send it again.
    st.on_message(Message::Have(3), now, &swarm, &mut out)
        .unwrap();
    assert!(allowed_sent(&out.drain_messages()).is_empty());

    // A seed sends the whole set, k pieces, to a peer with a few pieces.
    let seed = FakeSwarm::new(1313, &(0..1313).collect::<Vec<_>>());
    let (mut st, mut out) = fast_state_at(&seed, IpAddr::from(BEP6_IP), true, now);
    let mut bf = Bitfield::new(1313);
    for i in 0..ALLOWED_FAST_SET_SIZE - 1 {
        bf.set(i * 7);
    }
    st.on_message(
        Message::Bitfield(Bytes::copy_from_slice(bf.as_bytes())),
        now,
        &seed,
        &mut out,
    )
    .unwrap();
    assert_eq!(allowed_sent(&out.drain_messages()), set);
    // The same peer on a v4-mapped address of a dual-stack socket.
    let mapped = IpAddr::V6(std::net::Ipv4Addr::from(BEP6_IP).to_ipv6_mapped());
    let (mut st, mut out) = fast_state_at(&seed, mapped, true, now);
    st.on_message(Message::HaveNone, now, &seed, &mut out)
        .unwrap();
    assert_eq!(allowed_sent(&out.drain_messages()), set);
}

#[test]
fn allowed_fast_requests_are_served_while_choked_and_others_rejected() {
    let now = Instant::now();
    let swarm = FakeSwarm::new(1313, &[1059, 808, 5]);
    let (mut st, mut out) = fast_state_at(&swarm, IpAddr::from(BEP6_IP), true, now);
    st.on_message(Message::HaveNone, now, &swarm, &mut out)
        .unwrap();
    out.drain_messages();
    // In the set: queued and served although choked.
    st.on_message(Message::Request(block(1059, 1)), now, &swarm, &mut out)
        .unwrap();
    // Outside it (a piece we have), or in its range but missing: rejected.
    for r in [block(5, 0), block(431, 0)] {
        st.on_message(Message::Request(r), now, &swarm, &mut out)
            .unwrap();
    }
    assert_eq!(
        rejects(&out.drain_messages()),
        vec![block(5, 0), block(431, 0)]
    );
    assert!(
        st.read_pause() > CHOKED_READ_PAUSE,
        "served like an unchoked peer"
    );
    let batch = st.take_upload_batch(&out).unwrap();
    assert_eq!(batch, vec![block(1059, 1)]);
    let read = batch
        .into_iter()
        .map(|r| (r, Some(Bytes::from(vec![0u8; r.len as usize]))))
        .collect();
    st.on_blocks_read(read, &swarm, &mut out);
    let msgs = out.drain_messages();
    assert!(
        matches!(msgs[..], [Message::Piece { piece: 1059, offset, .. }] if offset == BLOCK_LEN),
        "{msgs:?}"
    );
    // A choke after an unchoke rejects only what the set does not cover.
    st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
    for r in [block(5, 0), block(808, 2)] {
        st.on_message(Message::Request(r), now, &swarm, &mut out)
            .unwrap();
    }
    st.on_command(PeerCommand::SetChoke(true), &swarm, &mut out);
    assert_eq!(rejects(&out.drain_messages()), vec![block(5, 0)]);
    assert_eq!(st.take_upload_batch(&out).unwrap(), vec![block(808, 2)]);
    st.on_blocks_read(Vec::new(), &swarm, &mut out);
    // Asked for again and again, the set is served twice, then rejected:
    // two pieces of 4 blocks, of which 2 blocks were already charged.
    let mut queued = 0;
    for n in 0..100 {
        st.on_message(Message::Request(block(808, n % 4)), now, &swarm, &mut out)
            .unwrap();
        if rejects(&out.drain_messages()).is_empty() {
            queued += 1;
        }
    }
    assert_eq!(queued, 2 * 2 * 4 - 2);
    assert_eq!(st.upload_queue.len(), queued);
}

#[test]
fn no_allowed_fast_set_for_rich_non_fast_or_ipv6_peers() {
    let now = Instant::now();
    let seed = FakeSwarm::new(1313, &(0..1313).collect::<Vec<_>>());
    let ip = IpAddr::from(BEP6_IP);
    // A peer with as many pieces as the set can trade for an unchoke.
    let (mut st, mut out) = fast_state_at(&seed, ip, true, now);
    let mut bf = Bitfield::new(1313);
    for i in 0..ALLOWED_FAST_SET_SIZE {
        bf.set(i * 7);
    }
    st.on_message(
        Message::Bitfield(Bytes::copy_from_slice(bf.as_bytes())),
        now,
        &seed,
        &mut out,
    )
    .unwrap();
    assert!(allowed_sent(&out.drain_messages()).is_empty());
    // It stays without one as it loses nothing and gains pieces.
    st.on_message(Message::Request(block(1059, 0)), now, &seed, &mut out)
        .unwrap();
    assert_eq!(rejects(&out.drain_messages()), vec![block(1059, 0)]);
    // Without the extension: nothing, and requests while choked are dropped.
    let (mut st, mut out) = fast_state_at(&seed, ip, false, now);
    st.on_message(
        Message::Bitfield(Bytes::from(vec![0u8; 165])),
        now,
        &seed,
        &mut out,
    )
    .unwrap();
    st.on_message(Message::Request(block(1059, 0)), now, &seed, &mut out)
        .unwrap();
    assert!(out.drain_messages().is_empty());
    assert!(st.take_upload_batch(&out).is_none());
    // IPv6: BEP 6 defines no set.
    let (mut st, mut out) = fast_state_at(&seed, "2001:db8::1".parse().unwrap(), true, now);
    st.on_message(Message::HaveNone, now, &seed, &mut out)
        .unwrap();
    assert!(allowed_sent(&out.drain_messages()).is_empty());
}

#[test]
fn the_allowed_fast_set_waits_for_metadata_and_for_a_choke() {
    let now = Instant::now();
    let ip = IpAddr::from(BEP6_IP);
    let ih = crate::id::InfoHash([0xaa; 20]);
    // A magnet: the peer's HAVE NONE comes before the piece count.
    let magnet = FakeSwarm::magnet();
    let (mut st, mut out) = fast_state_at(&magnet, ip, true, now);
    st.on_message(Message::HaveNone, now, &magnet, &mut out)
        .unwrap();
    assert!(allowed_sent(&out.drain_messages()).is_empty());
    let geometry = crate::geometry::Geometry::new(40 * 4 * BLOCK_LEN as u64, 4 * BLOCK_LEN);
    *magnet.late_info.lock().unwrap() = Some(TorrentInfo {
        geometry,
        metadata_size: 1000,
    });
    magnet.f().have = vec![true; 40];
    st.on_pieces_changed(&magnet, &mut out).unwrap();
    let want = allowed_fast_set(&ih, BEP6_IP.into(), 40, ALLOWED_FAST_SET_SIZE);
    assert_eq!(allowed_sent(&out.drain_messages()), want);
    // Unchoked when its pieces arrive: the set goes out with the choke.
    let swarm = FakeSwarm::new(40, &(0..40).collect::<Vec<_>>());
    let (mut st, mut out) = fast_state_at(&swarm, ip, true, now);
    st.on_command(PeerCommand::SetChoke(false), &swarm, &mut out);
    st.on_message(Message::HaveNone, now, &swarm, &mut out)
        .unwrap();
    assert!(allowed_sent(&out.drain_messages()).is_empty());
    st.on_command(PeerCommand::SetChoke(true), &swarm, &mut out);
    let msgs = out.drain_messages();
    assert_eq!(msgs[0], Message::Choke);
    assert_eq!(allowed_sent(&msgs), want);
}
