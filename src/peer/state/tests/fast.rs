//! The fast extension (BEP 6) on one connection: our first message, the
//! peer's HAVE ALL / HAVE NONE, rejects both ways, ALLOWED FAST and
//! SUGGEST PIECE, each with its bound.

use super::*;

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
