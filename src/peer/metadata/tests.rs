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
fn oversized_or_crowded_message_is_refused() {
    // A request padded past the message cap.
    let mut long = MetadataMessage::Request { piece: 0 }.encode();
    long.resize(MAX_MESSAGE_LEN + 1, b' ');
    assert!(matches!(
        MetadataMessage::decode(&long),
        Err(MetadataError::Bencode(e)) if e.contains("byte limit")
    ));
    // A short header holding many values.
    let mut crowded = b"d1:xl".to_vec();
    crowded.extend(b"i0e".repeat(MAX_HEADER_ITEMS));
    crowded.extend(b"e8:msg_typei0e5:piecei0ee");
    assert!(matches!(
        MetadataMessage::decode(&crowded),
        Err(MetadataError::Bencode(e)) if e.contains("values")
    ));
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
fn peers_with_different_sizes_are_asked_for_their_own() {
    let mut a = MetadataAssembler::new(InfoHash([0; 20]));
    let t = Instant::now();
    a.on_peer_size(1, 20_000).unwrap();
    a.on_peer_size(2, 30_000).unwrap();
    assert_eq!(a.progress(), (0, 2));
    // Each is asked for pieces of the size it announced, in parallel.
    assert_eq!(a.next_request(2, t), Some(0));
    assert_eq!(a.next_request(1, t), Some(0));
    assert_eq!(a.in_flight(1), 1);
    // Unknown peers are not asked.
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

/// Requests and serves every piece `peer` may have now from `info`.
fn serve_round(
    a: &mut MetadataAssembler,
    peer: PeerKey,
    info: &[u8],
    t: Instant,
) -> Result<Option<Bytes>, MetadataError> {
    let size = info.len() as u32;
    while let Some(piece) = a.next_request(peer, t) {
        let out = a.on_data(peer, piece, size, &data_of(info, piece), t)?;
        a.check_invariants();
        if out.is_some() {
            return Ok(out);
        }
    }
    Ok(None)
}

#[test]
fn liar_announcing_a_wrong_size_first_does_not_stall_the_honest_peer() {
    let info = info_of_len(2 * METADATA_PIECE_LEN + 7);
    let size = info.len() as u32;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t = Instant::now();
    // The liar arrives first with a bigger size and never answers.
    a.on_peer_size(66, 5 * METADATA_PIECE_LEN as u32).unwrap();
    assert_eq!(a.next_request(66, t), Some(0));
    assert_eq!(a.next_request(66, t), Some(1));
    // The honest peer, arriving later, is asked at once for its own size.
    a.on_peer_size(7, size).unwrap();
    let out = serve_round(&mut a, 7, &info, t).unwrap();
    assert_eq!(out.as_deref(), Some(&info[..]));
    assert_eq!(a.progress(), (3, 3));
    assert_eq!(a.next_request(66, t), None);
}

#[test]
fn liar_serving_its_wrong_size_is_proven_bad() {
    let info = info_of_len(METADATA_PIECE_LEN + 1);
    let fake = info_of_len(METADATA_PIECE_LEN + 2);
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t = Instant::now();
    a.on_peer_size(66, fake.len() as u32).unwrap();
    a.on_peer_size(7, info.len() as u32).unwrap();
    let err = serve_round(&mut a, 66, &fake, t).unwrap_err();
    assert_eq!(
        err,
        MetadataError::HashMismatch {
            contributors: vec![66]
        }
    );
    assert!(a.is_bad(66) && !a.is_bad(7));
    assert_eq!(a.bad_peers(), vec![66]);
    assert_eq!(a.buffered(), 0);
    assert!(serve_round(&mut a, 7, &info, t).unwrap().is_some());
}

#[test]
fn junk_peer_and_honest_peer_complete_and_junk_is_reported() {
    let info = info_of_len(3 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t = Instant::now();
    a.on_peer_size(1, size).unwrap();
    a.on_peer_size(2, size).unwrap();
    a.on_peer_size(3, size).unwrap();
    assert_eq!(a.next_request(1, t), Some(0));
    assert_eq!(a.next_request(1, t), Some(1));
    assert_eq!(a.next_request(3, t), Some(2));
    // Peer 1 sends a short piece: an error, and it is bad at once.
    assert!(matches!(
        a.on_data(1, 0, size, &[1, 2, 3], t),
        Err(MetadataError::WrongPieceLength { .. })
    ));
    assert!(a.is_bad(1));
    // Peer 3's message does not even decode: the shell reports it.
    a.on_peer_junk(3);
    assert!(a.is_bad(3));
    assert_eq!(a.in_flight(3), 0);
    // Their pieces go to the honest peer at once, with no re-request delay.
    let out = serve_round(&mut a, 2, &info, t).unwrap();
    assert_eq!(out.as_deref(), Some(&info[..]));
    assert_eq!(a.bad_peers(), vec![1, 3]);
    // Anything a bad peer sends later is ignored.
    assert_eq!(a.on_data(1, 0, size, &data_of(&info, 0), t), Ok(None));
}

#[test]
fn poisoned_shared_round_is_resolved_one_suspect_at_a_time() {
    let info = info_of_len(2 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut poison = info.clone();
    poison[METADATA_PIECE_LEN + 5] ^= 0xff;
    for liar_first in [true, false] {
        let mut a = MetadataAssembler::new(hash_of(&info));
        let t = Instant::now();
        let (honest, liar) = (10, 20);
        a.on_peer_size(honest, size).unwrap();
        a.on_peer_size(liar, size).unwrap();
        assert_eq!(a.next_request(honest, t), Some(0));
        assert_eq!(a.next_request(liar, t), Some(1));
        a.on_data(honest, 0, size, &data_of(&info, 0), t).unwrap();
        let err = a.on_data(liar, 1, size, &data_of(&poison, 1), t);
        assert_eq!(
            err,
            Err(MetadataError::HashMismatch {
                contributors: vec![honest, liar]
            })
        );
        // Both are suspects, neither proven bad; one at a time now.
        assert!(!a.is_bad(honest) && !a.is_bad(liar));
        let (first, second) = if liar_first {
            (liar, honest)
        } else {
            (honest, liar)
        };
        let source = |p| if p == liar { &poison } else { &info };
        assert!(a.next_request(first, t).is_some());
        assert_eq!(a.next_request(second, t), None, "solo round is not shared");
        // Whoever goes first finishes its round alone.
        let mut done = a.on_data(first, 0, size, &data_of(source(first), 0), t);
        if done == Ok(None) {
            assert_eq!(a.next_request(first, t), Some(1));
            done = a.on_data(first, 1, size, &data_of(source(first), 1), t);
        }
        if liar_first {
            assert_eq!(
                done,
                Err(MetadataError::HashMismatch {
                    contributors: vec![liar]
                })
            );
            assert!(a.is_bad(liar));
            let out = serve_round(&mut a, honest, &info, t).unwrap();
            assert_eq!(out.as_deref(), Some(&info[..]));
        } else {
            assert_eq!(done.unwrap().as_deref(), Some(&info[..]));
            // The liar's earlier piece 1 differs from the right one.
            assert!(a.is_bad(liar));
        }
        assert!(!a.is_bad(honest));
    }
}

#[test]
fn two_peers_racing_with_different_sizes() {
    let info = info_of_len(2 * METADATA_PIECE_LEN + 100);
    let other = info_of_len(3 * METADATA_PIECE_LEN);
    let (size, other_size) = (info.len() as u32, other.len() as u32);
    let t = Instant::now();
    // Interleaved: the wrong size completes first and fails, then the
    // right one completes.
    let mut a = MetadataAssembler::new(hash_of(&info));
    a.on_peer_size(1, size).unwrap();
    a.on_peer_size(2, other_size).unwrap();
    let mut results = Vec::new();
    for _ in 0..4 {
        for (peer, bytes) in [(2, &other), (1, &info)] {
            if let Some(p) = a.next_request(peer, t) {
                let r = a.on_data(peer, p, bytes.len() as u32, &data_of(bytes, p), t);
                a.check_invariants();
                results.push((peer, r));
            }
        }
    }
    assert!(results.contains(&(
        2,
        Err(MetadataError::HashMismatch {
            contributors: vec![2]
        })
    )));
    assert!(
        results
            .iter()
            .any(|(p, r)| *p == 1 && matches!(r, Ok(Some(_))))
    );
    // The other way round: the right size wins first, the rest is moot.
    let mut a = MetadataAssembler::new(hash_of(&info));
    a.on_peer_size(1, size).unwrap();
    a.on_peer_size(2, other_size).unwrap();
    assert_eq!(a.next_request(2, t), Some(0));
    assert!(serve_round(&mut a, 1, &info, t).unwrap().is_some());
    assert_eq!(
        a.on_data(2, 0, other_size, &data_of(&other, 0), t),
        Ok(None)
    );
    assert_eq!(a.next_request(2, t), None);
}

#[test]
fn memory_cap_holds_with_a_thousand_peers_claiming_different_sizes() {
    let info = info_of_len(3 * METADATA_PIECE_LEN + 1);
    let size = info.len() as u32;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let mut t = Instant::now();
    // 1,000 liars announce sizes near the maximum and answer requests
    // with well-formed junk as fast as they come; the honest peer
    // comes last.
    let liars: Vec<(PeerKey, u32)> = (0..1000u64)
        .map(|k| (k + 100, MAX_METADATA_SIZE - k as u32 * 7))
        .collect();
    for (k, s) in &liars {
        a.on_peer_size(*k, *s).unwrap();
    }
    a.on_peer_size(1, size).unwrap();
    a.check_invariants();
    let junk = vec![0x5a; METADATA_PIECE_LEN];
    let mut max_seen = 0;
    for _round in 0..4 {
        for (k, s) in &liars {
            let asked: Vec<u32> = std::iter::from_fn(|| a.next_request(*k, t)).collect();
            assert!(asked.len() <= MAX_OUTSTANDING_PER_PEER);
            for p in asked {
                // Never the last piece: a complete round would fail and
                // prove the liar bad, which is not what this test is about.
                if p as usize + 1 == piece_count(*s) {
                    a.on_reject(*k, p);
                    continue;
                }
                let len = piece_len(*s, p).unwrap();
                assert_eq!(a.on_data(*k, p, *s, &junk[..len], t), Ok(None));
                max_seen = max_seen.max(a.buffered());
            }
        }
        a.check_invariants();
        t += Duration::from_secs(1);
    }
    assert!(max_seen > MAX_BUFFERED - METADATA_PIECE_LEN, "{max_seen}");
    assert!(max_seen <= MAX_BUFFERED);
    // The honest, almost finished candidate still gets its memory.
    let out = serve_round(&mut a, 1, &info, t).unwrap();
    assert_eq!(out.as_deref(), Some(&info[..]));
}

#[test]
fn rejecting_peer_is_deprioritised_at_once() {
    let info = info_of_len(4 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t = Instant::now();
    a.on_peer_size(1, size).unwrap();
    assert_eq!(a.next_request(1, t), Some(0));
    a.on_peer_size(2, size).unwrap();
    a.on_reject(1, 0);
    // The eager peer takes the front pieces; the rejecter gets only
    // what the eager one cannot take right now, one at a time.
    assert_eq!(a.next_request(2, t), Some(0));
    assert_eq!(a.next_request(1, t), Some(3));
    assert_eq!(a.next_request(1, t), None);
    assert_eq!(a.next_request(2, t), Some(1));
    assert_eq!(a.next_request(2, t), None);
    // Piece 2 is free: the eager peer is full, so the rejecter may not
    // take more than its one.
    assert_eq!(a.in_flight(1), 1);
}

#[test]
fn request_expiry_deprioritises_the_silent_peer() {
    let info = info_of_len(2 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t0 = Instant::now();
    a.on_peer_size(1, size).unwrap();
    a.on_peer_size(2, size).unwrap();
    assert_eq!(a.next_request(1, t0), Some(0));
    assert_eq!(a.next_request(1, t0), Some(1));
    let t1 = t0 + REQUEST_EXPIRE;
    // Both requests expired: peer 2 gets both pieces, the silent one none.
    assert_eq!(a.next_request(2, t1), Some(0));
    assert_eq!(a.next_request(2, t1), Some(1));
    assert_eq!(a.next_request(1, t1), None);
    assert_eq!(a.in_flight(1), 0);
}

#[test]
fn gone_peers_leave_no_empty_candidates() {
    let mut a = MetadataAssembler::new(InfoHash([0; 20]));
    for k in 0..MAX_PEERS as u64 {
        a.on_peer_size(k, 1000 + k as u32).unwrap();
    }
    assert_eq!(a.on_peer_size(9999, 5), Err(MetadataError::TooManyPeers));
    for k in 0..MAX_PEERS as u64 {
        a.on_peer_gone(k);
    }
    assert!(a.candidates.is_empty());
    a.check_invariants();
}

#[test]
fn suspects_are_not_blocked_by_a_silent_clean_peer() {
    let info = info_of_len(2 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut poison = info.clone();
    poison[0] ^= 1;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t0 = Instant::now();
    for p in [1, 2] {
        a.on_peer_size(p, size).unwrap();
    }
    assert_eq!(a.next_request(1, t0), Some(0));
    assert_eq!(a.next_request(2, t0), Some(1));
    a.on_data(1, 0, size, &data_of(&poison, 0), t0).unwrap();
    assert!(a.on_data(2, 1, size, &data_of(&info, 1), t0).is_err());
    // A clean peer arrives and goes silent.
    a.on_peer_size(3, size).unwrap();
    assert_eq!(a.next_request(3, t0), Some(0));
    assert_eq!(
        a.next_request(2, t0),
        None,
        "suspects wait for the clean peer"
    );
    let t1 = t0 + REQUEST_EXPIRE;
    // Once its request expired, the honest suspect runs a solo round
    // and the deprioritised clean peer does not break into it.
    assert_eq!(a.next_request(2, t1), Some(0));
    assert_eq!(a.next_request(3, t1), None);
    assert_eq!(a.next_request(2, t1), Some(1));
    a.on_data(2, 0, size, &data_of(&info, 0), t1).unwrap();
    let out = a.on_data(2, 1, size, &data_of(&info, 1), t1).unwrap();
    assert_eq!(out.as_deref(), Some(&info[..]));
    assert!(a.is_bad(1));
}

/// Found by the `metadata` fuzz target: an honest peer with one strike
/// waited behind every silent liar of its size in turn, 20 s each.
#[test]
fn regression_metadata_deprioritised_honest_peer_races_stale_requests() {
    let info = info_of_len(5274);
    let size = info.len() as u32;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t0 = Instant::now();
    a.on_peer_size(0, size).unwrap();
    // The honest peer was slow once: one strike.
    assert_eq!(a.next_request(0, t0), Some(0));
    let mut t = t0 + REQUEST_EXPIRE;
    for liar in 10..16 {
        a.on_peer_size(liar, size).unwrap();
    }
    // Each round the eager liars take the piece and stay silent; the
    // honest peer may race them once their request is stale.
    let mut done = None;
    for _round in 0..3 {
        if let Some(p) = a.next_request(0, t) {
            done = a.on_data(0, p, size, &data_of(&info, p), t).unwrap();
            break;
        }
        for liar in 10..16 {
            let _ = a.next_request(liar, t);
        }
        t += REREQUEST_AFTER;
    }
    assert_eq!(done.as_deref(), Some(&info[..]));
    assert!(t <= t0 + REQUEST_EXPIRE + REREQUEST_AFTER);
}

/// Found by the `metadata` fuzz target (`fuzz/artifacts/metadata/
/// crash-78d72c4d…`): a silent suspect owned the solo round forever, and
/// an honest peer with a strike never got to replace it.
#[test]
fn regression_metadata_solo_suspect_stall() {
    let info = info_of_len(2 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut poison = info.clone();
    poison[0] ^= 1;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t0 = Instant::now();
    // Two liars share a round that fails: both become suspects.
    for p in [1, 2] {
        a.on_peer_size(p, size).unwrap();
    }
    assert_eq!(a.next_request(1, t0), Some(0));
    assert_eq!(a.next_request(2, t0), Some(1));
    a.on_data(1, 0, size, &data_of(&poison, 0), t0).unwrap();
    assert!(a.on_data(2, 1, size, &data_of(&poison, 1), t0).is_err());
    // The honest peer was slow once: one strike.
    a.on_peer_size(0, size).unwrap();
    assert!(a.next_request(0, t0).is_some());
    let t1 = t0 + REQUEST_EXPIRE;
    // A suspect gets its solo round and goes silent; it has not failed
    // yet, so the struck honest peer waits.
    assert!(a.next_request(1, t1).is_some());
    assert_eq!(a.next_request(0, t1), None);
    // Once the suspect's request expired, the honest peer takes over, and
    // no suspect takes the round back while it has a request out.
    let t2 = t1 + REQUEST_EXPIRE;
    let p = a
        .next_request(0, t2)
        .expect("honest peer replaces the stalled suspect");
    assert_eq!(a.next_request(1, t2), None);
    assert_eq!(a.next_request(2, t2), None);
    let mut out = a.on_data(0, p, size, &data_of(&info, p), t2).unwrap();
    while out.is_none() {
        let p = a.next_request(0, t2).expect("next piece");
        out = a.on_data(0, p, size, &data_of(&info, p), t2).unwrap();
    }
    assert_eq!(out.as_deref(), Some(&info[..]));
    assert!(!a.is_bad(0));
    a.check_invariants();
}

/// Found by the `metadata` fuzz target (`fuzz/artifacts/metadata/
/// crash-5fc826f7…`): an eager liar that was never asked (every piece
/// already had its requesters) was never struck, and as long as it stayed
/// eager the honest suspect never got its solo round. Silent liars of
/// every kind may delay the magnet, by a bounded time each.
#[test]
fn regression_metadata_unasked_eager_liar_does_not_block_suspects() {
    let info = info_of_len(2 * METADATA_PIECE_LEN);
    let size = info.len() as u32;
    let mut poison = info.clone();
    poison[METADATA_PIECE_LEN] ^= 1;
    let mut a = MetadataAssembler::new(hash_of(&info));
    let t0 = Instant::now();
    // The honest peer 0 and the liar 9 share a round that fails.
    a.on_peer_size(0, size).unwrap();
    a.on_peer_size(9, size).unwrap();
    assert_eq!(a.next_request(0, t0), Some(0));
    assert_eq!(a.next_request(9, t0), Some(1));
    a.on_data(0, 0, size, &data_of(&info, 0), t0).unwrap();
    assert!(a.on_data(9, 1, size, &data_of(&poison, 1), t0).is_err());
    // A clean liar sends the true piece 0 unasked; three more take turns
    // asking for piece 1 and stay silent, so it always has its three
    // requesters; the last liar is eager but never gets a request.
    for liar in 4..9 {
        a.on_peer_size(liar, size).unwrap();
    }
    assert_eq!(a.on_data(4, 0, size, &data_of(&info, 0), t0), Ok(None));
    let mut t = t0;
    let mut done = None;
    'rounds: for _ in 0..36 {
        for liar in 5..9 {
            while a.next_request(liar, t).is_some() {}
        }
        while let Some(p) = a.next_request(0, t) {
            if let Some(out) = a.on_data(0, p, size, &data_of(&info, p), t).unwrap() {
                done = Some(out);
                break 'rounds;
            }
        }
        a.check_invariants();
        t += REREQUEST_AFTER;
    }
    assert_eq!(done.as_deref(), Some(&info[..]));
    assert!(t <= t0 + Duration::from_secs(120), "took {:?}", t - t0);
    assert!(!a.is_bad(0));
}

/// A v2 swarm (joined by `urn:btmh`): the dictionary is checked against
/// the full SHA-256 hash, whose first 20 bytes name the swarm; one that
/// only matches a SHA-1 is refused.
#[test]
fn a_v2_swarm_checks_the_sha256_hash() {
    use sha2::Digest as _;
    let info = info_of_len(METADATA_PIECE_LEN + 10);
    let size = info.len() as u32;
    let v2: [u8; 32] = sha2::Sha256::digest(&info).into();
    let mut truncated = [0u8; 20];
    truncated.copy_from_slice(&v2[..20]);
    let t = Instant::now();
    let run = |a: &mut MetadataAssembler| {
        a.on_peer_size(1, size).unwrap();
        let mut last = Ok(None);
        for piece in 0..2 {
            assert_eq!(a.next_request(1, t), Some(piece));
            last = a.on_data(1, piece, size, &data_of(&info, piece), t);
        }
        last
    };
    let mut a = MetadataAssembler::new(InfoHash(truncated)).with_v2(Some(v2));
    assert_eq!(&run(&mut a).unwrap().unwrap()[..], &info[..]);
    // The SHA-1 of the same bytes does not pass for a v2 hash.
    let mut wrong = v2;
    wrong[31] ^= 1;
    let mut a = MetadataAssembler::new(hash_of(&info)).with_v2(Some(wrong));
    assert!(!matches!(run(&mut a), Ok(Some(_))));
}
