use super::*;

fn data_for(g: &Geometry, r: &BlockRef) -> Vec<u8> {
    assert!(g.contains(r.piece, r.offset, r.len));
    vec![r.piece as u8; r.len as usize]
}

#[test]
fn downloads_everything_exactly_once_from_one_peer() {
    let g = Geometry::new(10 * 32768 + 100, 32768);
    let mut p = Picker::new(g, Bitfield::new(g.piece_count as usize), 1);
    let all = Bitfield::full(g.piece_count as usize);
    p.add_availability(&all);
    let now = Instant::now();
    let mut seen = std::collections::HashSet::new();
    let mut done = Vec::new();
    loop {
        let reqs = p.pick(1, &all, 7, &[], now);
        if reqs.is_empty() {
            break;
        }
        for r in reqs {
            assert!(seen.insert(r), "duplicate request {r:?}");
            if let BlockOutcome::Complete { piece, data, .. } =
                p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
            {
                assert_eq!(data.len(), g.piece_len(piece) as usize);
                assert!(data.iter().all(|&b| b == piece as u8));
                p.piece_verified(piece);
                p.recycle(data);
                done.push(piece);
            }
        }
    }
    assert!(p.is_complete());
    assert_eq!(done.len(), g.piece_count as usize);
    assert_eq!(p.bytes_have(), g.total_length);
    let blocks: u32 = (0..g.piece_count).map(|i| g.block_count(i)).sum();
    assert_eq!(seen.len() as u32, blocks);
}

#[test]
fn rarest_first_after_random_start() {
    let g = Geometry::new(10 * 16384, 16384);
    let mut have = Bitfield::new(10);
    for i in 0..4 {
        have.set(i);
    }
    let mut p = Picker::new(g, have, 7);
    let all = Bitfield::full(10);
    p.add_availability(&all);
    p.add_availability(&all);
    // Piece 8 is only on one peer: it is the rarest.
    let mut only8 = Bitfield::new(10);
    only8.set(8);
    for i in 0..10 {
        if i != 8 {
            p.add_have(i);
        }
    }
    let r = p.pick(1, &all, 1, &[], Instant::now());
    assert_eq!(r[0].piece, 8);
    let _ = only8;
}

#[test]
fn sequential_takes_file_ends_first_then_index_order() {
    let g = Geometry::new(10 * 16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(10), 7);
    p.set_sequential(vec![0, 9, 0, 4]);
    let mut has = Bitfield::full(10);
    has.clear(1);
    let all = Bitfield::full(10);
    p.add_availability(&all);
    let t = Instant::now();
    // One block per piece: the order pieces are started in.
    let order: Vec<u32> = (0..9)
        .map(|_| p.pick(1, &has, 1, &[], t)[0].piece)
        .collect();
    assert_eq!(order, vec![0, 9, 4, 2, 3, 5, 6, 7, 8]);
    // Piece 1 comes from a peer that has it.
    assert_eq!(p.pick(2, &all, 1, &[], t)[0].piece, 1);
}

#[test]
fn selection_fetches_only_wanted_pieces_and_completes_on_them() {
    let g = Geometry::new(6 * 16384, 16384);
    let mut have = Bitfield::new(6);
    have.set(5);
    let mut p = Picker::new(g, have, 3);
    let mut wanted = Bitfield::new(6);
    for i in [1, 2, 5] {
        wanted.set(i);
    }
    p.set_wanted(wanted);
    assert_eq!(p.bytes_wanted(), 3 * 16384);
    let all = Bitfield::full(6);
    let mut only0 = Bitfield::new(6);
    only0.set(0);
    assert!(p.is_interesting(&all));
    assert!(!p.is_interesting(&only0), "piece 0 is not wanted");
    let t = Instant::now();
    let mut got = Vec::new();
    loop {
        let r = p.pick(1, &all, 1, &[], t);
        let Some(b) = r.first() else { break };
        got.push(b.piece);
        let data = data_for(&g, b);
        if let BlockOutcome::Complete { piece, .. } = p.on_block(1, b.piece, b.offset, &data) {
            p.piece_verified(piece);
        }
    }
    got.sort();
    assert_eq!(got, vec![1, 2]);
    assert!(p.is_complete());
    assert!(!p.is_interesting(&all));
}

#[test]
fn only_picks_what_the_peer_has() {
    let g = Geometry::new(4 * 16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(4), 3);
    let mut two = Bitfield::new(4);
    two.set(2);
    p.add_availability(&two);
    let r = p.pick(1, &two, 10, &[], Instant::now());
    assert_eq!(r.len(), 1);
    assert_eq!(r[0].piece, 2);
    assert!(
        p.pick(1, &Bitfield::new(4), 10, &[], Instant::now())
            .is_empty()
    );
}

#[test]
fn endgame_duplicates_and_cancels() {
    let g = Geometry::new(2 * 16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(2), 5);
    let all = Bitfield::full(2);
    let now = Instant::now();
    let a = p.pick(1, &all, 10, &[], now);
    assert_eq!(a.len(), 2);
    // Peer 2 arrives when everything is requested: endgame duplicates.
    let b = p.pick(2, &all, 10, &[], now);
    assert_eq!(b.len(), 2);
    // Peer 1 delivers piece a[0]: peer 2 must be told to cancel.
    match p.on_block(1, a[0].piece, 0, &data_for(&g, &a[0])) {
        BlockOutcome::Complete {
            cancel,
            contributors,
            ..
        } => {
            assert_eq!(cancel, vec![2]);
            assert_eq!(contributors, vec![1]);
        }
        o => panic!("{o:?}"),
    }
    // Peer 2's copy of the same block is now unwanted.
    assert_eq!(
        p.on_block(2, a[0].piece, 0, &data_for(&g, &a[0])),
        BlockOutcome::Unwanted
    );
}

#[test]
fn released_blocks_go_to_others_and_stale_ones_are_duplicated() {
    let g = Geometry::new(8 * 16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(8), 9);
    let mut one = Bitfield::new(8);
    one.set(0);
    let t0 = Instant::now();
    let a = p.pick(1, &one, 5, &[], t0);
    assert_eq!(a.len(), 1);
    assert!(p.pick(2, &one, 5, &[], t0).is_empty() || p.all_missing_started());
    p.release(1, None);
    let b = p.pick(2, &one, 5, &[], t0);
    assert_eq!(b, a);
    // Peer 3 may duplicate it once the request is stale.
    let c = p.pick(3, &one, 5, &[], t0 + REQUEST_TIMEOUT);
    assert_eq!(c, a);
}

#[test]
fn pieces_awaiting_verification_count_against_the_memory_budget() {
    // 64 pieces of 4 MiB: the budget starts at 2 pieces (may grow to 8).
    let g = Geometry::new(64 * 4 * 1024 * 1024, 4 * 1024 * 1024);
    let mut p = Picker::new(g, Bitfield::new(64), 11);
    let all = Bitfield::full(64);
    let now = Instant::now();
    let mut completed = Vec::new();
    // One peer fetches whole pieces; nothing is ever verified, so the
    // disk is behind and the budget does not grow.
    loop {
        let reqs = p.pick(1, &all, 256, &[], now);
        if reqs.is_empty() {
            break;
        }
        for r in reqs {
            if let BlockOutcome::Complete { piece, .. } =
                p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
            {
                completed.push(piece);
            }
        }
    }
    assert_eq!(completed.len(), 2);
    assert_eq!(p.pending_budget(), 2);
    assert!(p.pick(1, &all, 10, &[], now).is_empty());
    // Verification frees room for one more piece.
    p.piece_verified(completed[0]);
    assert!(!p.pick(1, &all, 10, &[], now).is_empty());
}

#[test]
fn a_piece_awaiting_its_leaf_hashes_does_not_hold_the_budget_nor_get_picked() {
    // As above: two whole pieces wait, nothing more starts.
    let g = Geometry::new(8 * 4 * 1024 * 1024, 4 * 1024 * 1024);
    let mut p = Picker::new(g, Bitfield::new(8), 11);
    let all = Bitfield::full(8);
    let now = Instant::now();
    let mut completed = Vec::new();
    loop {
        let reqs = p.pick(1, &all, 256, &[], now);
        if reqs.is_empty() {
            break;
        }
        for r in reqs {
            if let BlockOutcome::Complete { piece, .. } =
                p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
            {
                completed.push(piece);
            }
        }
    }
    assert_eq!(completed.len(), 2);
    assert!(p.pick(1, &all, 10, &[], now).is_empty());
    // One failed and waits for its leaves: a new piece starts, never it.
    p.piece_awaits_hashes(completed[0]);
    let more = p.pick(1, &all, 10, &[], now);
    assert!(!more.is_empty());
    assert!(more.iter().all(|r| !completed.contains(&r.piece)));
    // A plain failure ends the wait: it is picked again.
    p.piece_failed(completed[0]);
    assert!(p.blaming.is_empty());
}

#[test]
fn regression_a_grown_budget_holds_no_more_pieces_awaiting_the_disk_than_it_started_with() {
    // 64 pieces of 1 MiB: the budget starts at 4 pieces. A deep
    // pipeline grew it to 12, and the disk stops keeping up: pieces
    // that completed wait for their hash and write. No new piece starts
    // once 4 wait (a 2 GiB download peaked at 8 whole pieces waiting,
    // 24 MiB RSS, where 4 kept its speed).
    let g = Geometry::new(64 << 20, 1 << 20);
    let mut p = Picker::new(g, Bitfield::new(64), 13);
    let all = Bitfield::full(64);
    let now = Instant::now();
    p.max_pending = 12;
    let mut waiting = 0;
    loop {
        let reqs = p.pick(1, &all, 64, &[], now);
        if reqs.is_empty() {
            break;
        }
        for r in reqs {
            if let BlockOutcome::Complete { .. } =
                p.on_block(1, r.piece, r.offset, &data_for(&g, &r))
            {
                waiting += 1;
            }
        }
    }
    assert_eq!(waiting, 4);
    assert_eq!(p.pending_pieces(), 0);
}

#[test]
fn regression_a_requested_piece_holds_no_buffer_until_a_block_arrives() {
    // A deep pipeline starts many pieces; only those with data in them
    // take memory.
    let g = Geometry::new(64 << 20, 1 << 20);
    let mut p = Picker::new(g, Bitfield::new(64), 14);
    let all = Bitfield::full(64);
    let reqs = p.pick(1, &all, 256, &[], Instant::now());
    assert_eq!(p.pending_pieces(), 4);
    assert!(p.pending.values().all(|x| x.buf.capacity() == 0));
    let r = reqs[0];
    p.on_block(1, r.piece, r.offset, &data_for(&g, &r));
    let with_data: Vec<u32> = p
        .pending
        .iter()
        .filter(|(_, x)| x.buf.capacity() > 0)
        .map(|(&i, _)| i)
        .collect();
    assert_eq!(with_data, vec![r.piece]);
}

#[test]
fn budget_grows_when_it_starves_a_peer_and_stops_at_the_cap() {
    // 64 pieces of 4 MiB (256 blocks each): budget 2, cap 8.
    let g = Geometry::new(64 * 4 * 1024 * 1024, 4 * 1024 * 1024);
    let mut p = Picker::new(g, Bitfield::new(64), 12);
    let all = Bitfield::full(64);
    let now = Instant::now();
    let first = p.pick(1, &all, 512, &[], now);
    assert_eq!(first.len(), 512);
    assert_eq!(p.pending_pieces(), 2);
    // A peer that wants more than the started pieces hold is starved:
    // the budget grows by one piece.
    let reqs = p.pick(3, &all, 10, &[], now);
    assert_eq!(p.pending_budget(), 3);
    assert_eq!(p.pending_pieces(), 3);
    assert!(reqs.iter().all(|r| !first.contains(r)));
    // Growth stops at the cap, 32 MiB worth.
    for k in 4..40 {
        p.pick(k, &all, 256, &[], now);
    }
    assert_eq!(p.pending_budget(), 8);
    assert_eq!(p.pending_pieces(), 8);
}

#[test]
fn budget_start_and_cap_by_piece_length() {
    assert_eq!(pending_budget(16 * 1024), (256, 2048));
    assert_eq!(pending_budget(1 << 20), (4, 32));
    assert_eq!(pending_budget(2 << 20), (2, 16));
    assert_eq!(pending_budget(16 << 20), (2, 2));
    assert_eq!(pending_budget(64 << 20), (1, 1));
    // Grows when the pipe is shallow, or wants more than the budget
    // less a piece holds, and the disk keeps up; never past the cap.
    const MB: u64 = 1 << 20;
    assert_eq!(grown_budget(2, 16, 0, MB, MB, 0), 3);
    assert_eq!(grown_budget(2, 16, 31, MB, MB, 1), 3);
    assert_eq!(grown_budget(2, 16, 32, MB, MB, 0), 2);
    assert_eq!(grown_budget(4, 16, 500, 4 * MB + 1, MB, 0), 5);
    assert_eq!(grown_budget(4, 16, 500, 4 * MB, MB, 0), 4);
    assert_eq!(grown_budget(2, 16, 0, MB, MB, 2), 2);
    assert_eq!(grown_budget(16, 16, 0, MB, MB, 0), 16);
}

#[test]
fn rarest_first_takes_the_rarest_piece_the_peer_has_whatever_the_scan_start() {
    // Availabilities from 1 to 5 at random; the scan may stop early at
    // the rarest bound, but must still find a piece as rare as any.
    let n = 500;
    let g = Geometry::new(n as u64 * 16384, 16384);
    let mut rng = SmallRng::seed_from_u64(99);
    let mut have = Bitfield::new(n);
    for i in 0..n {
        if rng.random_range(0..4) == 0 {
            have.set(i);
        }
    }
    let mut p = Picker::new(g, have.clone(), 5);
    for _ in 0..5 {
        let mut bf = Bitfield::new(n);
        for i in 0..n {
            if rng.random_range(0..3) > 0 {
                bf.set(i);
            }
        }
        p.add_availability(&bf);
    }
    let mut peer = Bitfield::new(n);
    for i in 0..n {
        if rng.random_range(0..2) == 0 {
            peer.set(i);
        }
    }
    p.add_availability(&peer);
    let now = Instant::now();
    for _ in 0..40 {
        let eligible: Vec<usize> = (0..n)
            .filter(|&i| peer.get(i) && !p.have.get(i) && !p.pending.contains_key(&(i as u32)))
            .collect();
        let rarest = eligible.iter().map(|&i| p.availability[i]).min().unwrap();
        let r = p.pick(1, &peer, 1, &[], now);
        assert_eq!(p.availability[r[0].piece as usize], rarest);
        let BlockOutcome::Complete { piece, .. } =
            p.on_block(1, r[0].piece, 0, &data_for(&g, &r[0]))
        else {
            panic!("one-block pieces complete at once")
        };
        p.piece_verified(piece);
    }
}

#[test]
fn among_equally_rare_pieces_the_next_one_follows_the_last() {
    // Two seeds: every piece equally rare. After the random start,
    // pieces come in index order (runs on disk), wrapping at the end.
    let n = 64;
    let g = Geometry::new(n as u64 * 16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(n), 21);
    let all = Bitfield::full(n);
    p.add_availability(&all);
    p.add_availability(&all);
    let now = Instant::now();
    let mut order = Vec::new();
    while let Some(r) = p.pick(1, &all, 1, &[], now).first().copied() {
        if let BlockOutcome::Complete { piece, .. } = p.on_block(1, r.piece, 0, &data_for(&g, &r)) {
            p.piece_verified(piece);
            order.push(piece);
        }
    }
    assert_eq!(order.len(), n);
    let next = |a: u32, b: u32| b == (a + 1) % n as u32;
    let follows = order.windows(2).filter(|w| next(w[0], w[1])).count();
    // Only the random first pieces (and the jumps past them) break runs.
    assert!(follows >= n - 2 * RANDOM_FIRST_PIECES - 2, "{order:?}");
    // A rarer piece still comes first.
    let mut p = Picker::new(g, Bitfield::new(n), 21);
    p.add_availability(&all);
    p.add_availability(&all);
    for i in 0..n {
        if i != 40 {
            p.add_have(i as u32);
        }
    }
    for _ in 0..RANDOM_FIRST_PIECES {
        let r = p.pick(1, &all, 1, &[], now)[0];
        p.on_block(1, r.piece, 0, &data_for(&g, &r));
        p.piece_verified(r.piece);
    }
    if !p.have.get(40) {
        assert_eq!(p.pick(1, &all, 1, &[], now)[0].piece, 40);
    }
}

#[test]
fn a_stale_request_is_duplicated_while_newer_ones_are_not() {
    let g = Geometry::new(8 * 16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(8), 9);
    let all = Bitfield::full(8);
    let t0 = Instant::now();
    let sec = Duration::from_secs(1);
    let x = p.pick(1, &all, 1, &[], t0)[0];
    let y = p.pick(1, &all, 1, &[], t0 + 10 * sec)[0];
    // Budget full of requested pieces: nothing new for peer 2.
    p.max_pending = 2;
    p.cap_pending = 2;
    assert!(p.pick(2, &all, 4, &[], t0 + 20 * sec).is_empty());
    assert_eq!(p.pick(2, &all, 4, &[], t0 + 31 * sec), vec![x]);
    // Peer 3 at 41 s: both are stale now.
    let mut got = p.pick(3, &all, 4, &[], t0 + 41 * sec);
    got.sort_unstable_by_key(|r| r.piece);
    let mut want = vec![x, y];
    want.sort_unstable_by_key(|r| r.piece);
    assert_eq!(got, want);
    // A block released by all its requesters is free again, at once.
    p.on_block(1, x.piece, 0, &data_for(&g, &x));
    p.release(1, None);
    p.release(3, None);
    assert_eq!(p.pick(4, &all, 4, &[], t0 + 42 * sec), vec![y]);
    assert!(p.open.is_empty());
}

#[test]
fn failed_piece_is_fetched_again() {
    let g = Geometry::new(16384, 16384);
    let mut p = Picker::new(g, Bitfield::new(1), 2);
    let all = Bitfield::full(1);
    let r = p.pick(1, &all, 5, &[], Instant::now());
    let BlockOutcome::Complete { piece, .. } = p.on_block(1, 0, 0, &data_for(&g, &r[0])) else {
        panic!()
    };
    assert!(p.pick(2, &all, 5, &[], Instant::now()).is_empty());
    p.piece_failed(piece);
    assert_eq!(p.pick(2, &all, 5, &[], Instant::now()), r);
}

#[test]
fn rejects_wrong_sizes_and_offsets() {
    let g = Geometry::new(2 * 16384, 32768);
    let mut p = Picker::new(g, Bitfield::new(1), 2);
    let all = Bitfield::full(1);
    p.pick(1, &all, 1, &[], Instant::now());
    assert_eq!(p.on_block(1, 0, 1, &[0; 16384]), BlockOutcome::Unwanted);
    assert_eq!(p.on_block(1, 0, 0, &[0; 100]), BlockOutcome::Unwanted);
    assert_eq!(p.on_block(1, 5, 0, &[0; 16384]), BlockOutcome::Unwanted);
    assert!(matches!(
        p.on_block(1, 0, 16384, &[0; 16384]),
        BlockOutcome::Stored { .. }
    ));
}

#[test]
fn a_blamed_piece_is_fetched_again_only_in_its_bad_blocks() {
    let g = Geometry::new(2 * 4 * 16384, 4 * 16384);
    let mut p = Picker::new(g, Bitfield::new(2), 1);
    let all = Bitfield::full(2);
    p.add_availability(&all);
    let now = Instant::now();
    let reqs = p.pick(1, &all, 4, &[], now);
    assert!(reqs.iter().all(|r| r.piece == reqs[0].piece) && reqs.len() == 4);
    let piece = reqs[0].piece;
    let mut complete = None;
    for (i, r) in reqs.iter().enumerate() {
        // Peer 1 sends blocks 0 and 1, peer 2 (the liar) 2, peer 3 block 3.
        let from = [1, 1, 2, 3][i];
        let data = vec![i as u8 + 1; 16384];
        if let BlockOutcome::Complete { data, senders, .. } =
            p.on_block(from, r.piece, r.offset, &data)
        {
            complete = Some((data, senders));
        }
    }
    let (buf, senders) = complete.unwrap();
    assert_eq!(senders, vec![1, 1, 2, 3]);
    p.refetch_blocks(piece, buf, &senders, &[2]);
    assert_eq!(p.pending_pieces(), 1);
    // Only block 2 is asked again, before any new piece.
    let again = p.pick(4, &all, 1, &[], now);
    assert_eq!(
        again,
        vec![BlockRef {
            piece,
            offset: 2 * 16384,
            len: 16384
        }]
    );
    match p.on_block(4, piece, 2 * 16384, &[9; 16384]) {
        BlockOutcome::Complete {
            data,
            contributors,
            senders,
            ..
        } => {
            assert_eq!(&data[..16384], &[1; 16384][..], "kept");
            assert_eq!(&data[2 * 16384..3 * 16384], &[9; 16384][..]);
            assert_eq!(&data[3 * 16384..], &[4; 16384][..]);
            assert_eq!(senders, vec![1, 1, 4, 3]);
            assert_eq!(contributors, vec![1, 3, 4]);
        }
        other => panic!("{other:?}"),
    }
    // Not being verified (or no bad block): a plain failure.
    p.piece_verified(piece);
    p.refetch_blocks(piece, vec![0; 4 * 16384], &[1; 4], &[1]);
    p.refetch_blocks(1 - piece, vec![0; 4 * 16384], &[1; 4], &[]);
    assert_eq!(p.pending_pieces(), 0);
}
