use super::*;

const PL: u32 = 4 * BLOCK as u32;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31) ^ seed)
        .collect()
}

#[test]
fn the_bad_block_is_blamed_on_its_sender_only() {
    let piece = data(PL as usize, 1);
    let leaves = merkle::leaves(&piece);
    let mut got = piece.clone();
    got[2 * BLOCK + 7] ^= 1;
    // Peers 1 and 2 honest, 9 sent block 2.
    let v = blame(&leaves, got.len(), &got, &[1, 2, 9, 1]).unwrap();
    assert_eq!(v.bad, vec![2]);
    assert_eq!(v.liars, vec![9]);
    // A good piece blames nobody.
    let v = blame(&leaves, piece.len(), &piece, &[1, 2, 9, 1]).unwrap();
    assert!(v.bad.is_empty() && v.liars.is_empty());
}

#[test]
fn non_zero_padding_is_a_bad_block_and_short_tails_hash_alone() {
    // A file's last piece: 1.5 blocks of data, then zeros to 4 blocks.
    let file = data(BLOCK + BLOCK / 2, 3);
    let mut piece = file.clone();
    piece.resize(PL as usize, 0);
    let leaves = merkle::leaves(&file);
    let v = blame(&leaves, file.len(), &piece, &[1, 1, 1, 1]).unwrap();
    assert!(v.bad.is_empty(), "the short tail is its own leaf");
    piece[BLOCK + BLOCK / 2 + 1] = 1; // padding inside block 1
    piece[3 * BLOCK] = 1; // padding block 3
    let v = blame(&leaves, file.len(), &piece, &[4, 5, 6, 7]).unwrap();
    assert_eq!(v.bad, vec![1, 3]);
    assert_eq!(v.liars, vec![5, 7]);
    // Leaves that do not cover the data blame nobody.
    assert_eq!(blame(&leaves[..1], file.len(), &piece, &[1; 4]), None);
}

#[test]
fn a_sender_of_several_bad_blocks_is_named_once_and_nobody_is_not_blamed() {
    let piece = data(PL as usize, 5);
    let leaves = merkle::leaves(&piece);
    let bad = vec![0xee; PL as usize];
    let v = blame(&leaves, bad.len(), &bad, &[3, 0, 3, 4]).unwrap();
    assert_eq!(v.bad, vec![0, 1, 2, 3]);
    assert_eq!(v.liars, vec![3, 4]);
}

#[test]
fn leaf_requests_cover_one_piece_and_prove_out_against_its_entry() {
    // A file of 2.5 pieces: 10 leaves padded to 16.
    let file = data(2 * PL as usize + 2 * BLOCK, 7);
    let root = merkle::file_root(&file);
    let spot = |index| PieceSpot {
        root,
        file_len: file.len() as u64,
        index,
    };
    let r = leaf_request(&spot(2), PL).unwrap();
    assert_eq!(
        (r.base_layer, r.index, r.length, r.proof_layers),
        (0, 8, 4, 0)
    );
    assert_eq!(r.answer_len(), 4, "no uncles");
    assert_eq!(leaf_request(&spot(4), PL), None, "past the file's tree");
    // The last piece's leaves: two of data, two zero.
    let last = &file[2 * PL as usize..];
    let mut answer = merkle::leaves(last);
    answer.resize(4, merkle::ZERO);
    let entry = merkle::piece_hash(last, PL);
    assert_eq!(check_leaves(&r, &answer, &entry), Some(answer.clone()));
    let mut forged = answer.clone();
    forged[1][0] ^= 1;
    assert_eq!(check_leaves(&r, &forged, &entry), None);
    assert_eq!(check_leaves(&r, &answer[..3], &entry), None, "too short");
}

#[test]
fn a_file_shorter_than_a_piece_asks_for_its_padded_row() {
    // 3 leaves, padded to 4 (not to the piece's 8): the file's root.
    let pl = 8 * BLOCK as u32;
    let file = data(2 * BLOCK + 10, 9);
    let root = merkle::file_root(&file);
    let spot = PieceSpot {
        root,
        file_len: file.len() as u64,
        index: 0,
    };
    let r = leaf_request(&spot, pl).unwrap();
    assert_eq!((r.index, r.length), (0, 4));
    let mut answer = merkle::leaves(&file);
    answer.resize(4, merkle::ZERO);
    assert!(check_leaves(&r, &answer, &root).is_some());
    // One leaf: nothing to ask.
    let small = PieceSpot {
        root: merkle::leaf(b"x"),
        file_len: 1,
        index: 0,
    };
    assert_eq!(leaf_request(&small, pl), None);
    // 16 KiB pieces: one leaf per piece, nothing to ask either.
    let spot16 = PieceSpot {
        root,
        file_len: file.len() as u64,
        index: 1,
    };
    assert_eq!(leaf_request(&spot16, BLOCK as u32), None);
}

#[test]
fn one_leaf_pieces_are_judged_by_their_own_check() {
    let block = data(1000, 11);
    let whole = merkle::leaf(&block);
    assert_eq!(one_leaf(&whole, true, PL, &block), whole);
    let entry = merkle::piece_hash(&block, PL);
    assert_eq!(one_leaf(&entry, false, PL, &block), whole);
    let bad = data(1000, 12);
    assert_eq!(one_leaf(&entry, false, PL, &bad), merkle::ZERO);
    let v = blame(&[merkle::ZERO], 1000, &bad, &[6]).unwrap();
    assert_eq!((v.bad, v.liars), (vec![0], vec![6]));
}

fn req(index: u32) -> HashRequest {
    HashRequest {
        pieces_root: [1; 32],
        base_layer: 0,
        index,
        length: 4,
        proof_layers: 0,
    }
}

#[test]
fn a_peer_that_did_not_contribute_is_asked_first_then_anyone() {
    let t0 = Instant::now();
    let mut asks: LeafAsks<&str> = LeafAsks::default();
    asks.add(5, req(20), [0; 32], vec![1, 2], t0, "p5").unwrap();
    assert!(asks.add(5, req(20), [0; 32], vec![], t0, "again").is_err());
    // Contributors wait; a peer without the piece is never asked.
    assert_eq!(asks.next_request(1, |_| true, t0), None);
    assert_eq!(asks.next_request(3, |_| false, t0), None);
    assert_eq!(asks.next_request(3, |p| p == 5, t0), Some(req(20)));
    assert!(asks.is_pending(3, &req(20), t0));
    assert!(!asks.is_pending(1, &req(20), t0));
    // Peer 3 rejects: a contributor is asked once the preference ran out.
    asks.on_reject(3, &req(20));
    assert_eq!(
        asks.next_request(3, |_| true, t0),
        None,
        "3 is not asked again"
    );
    assert_eq!(asks.next_request(1, |_| true, t0), None);
    let later = t0 + PREFER_OTHERS;
    assert_eq!(asks.next_request(1, |_| true, later), Some(req(20)));
    // It times out; 2 is asked.
    let later = later + ASK_TIMEOUT;
    assert!(!asks.is_pending(1, &req(20), later));
    assert_eq!(asks.next_request(2, |_| true, later), Some(req(20)));
    assert_eq!(asks.len(), 1);
}

#[test]
fn proven_leaves_end_the_wait_and_lies_move_on() {
    let t0 = Instant::now();
    let leaves: Vec<Hash> = (0..4u8).map(|i| merkle::leaf(&[i])).collect();
    let entry = merkle::root_of_row(&leaves, 4, merkle::ZERO).unwrap();
    let mut asks: LeafAsks<u8> = LeafAsks::default();
    asks.add(1, req(4), entry, vec![], t0, 42).unwrap();
    assert_eq!(asks.next_request(7, |_| true, t0), Some(req(4)));
    // An answer from a peer not asked is not ours.
    assert!(matches!(
        asks.on_hashes(8, &req(4), &leaves),
        LeafAnswer::NotOurs
    ));
    let mut lie = leaves.clone();
    lie[3] = merkle::ZERO;
    assert!(matches!(asks.on_hashes(7, &req(4), &lie), LeafAnswer::Bad));
    assert_eq!(
        asks.next_request(7, |_| true, t0),
        None,
        "the liar is not asked again"
    );
    assert_eq!(asks.next_request(8, |_| true, t0), Some(req(4)));
    match asks.on_hashes(8, &req(4), &leaves) {
        LeafAnswer::Proven {
            piece,
            leaves: got,
            payload,
        } => assert_eq!((piece, got, payload), (1, leaves, 42)),
        other => panic!("{other:?}"),
    }
    assert!(asks.is_empty());
}

#[test]
fn pieces_nobody_answers_are_given_up_on() {
    let t0 = Instant::now();
    let mut asks: LeafAsks<u8> = LeafAsks::default();
    asks.add(1, req(0), [0; 32], vec![], t0, 1).unwrap();
    asks.add(2, req(4), [0; 32], vec![], t0, 2).unwrap();
    assert_eq!(asks.next_request(5, |p| p == 2, t0), Some(req(4)));
    // Nobody could be asked for piece 1: given up on early.
    assert!(asks.expire(t0 + GIVE_UP_UNASKED / 2).is_empty());
    assert_eq!(asks.expire(t0 + GIVE_UP_UNASKED), vec![(1, 1)]);
    // Piece 2 was asked; its asker leaves, another is asked: it waits
    // while someone is asked, and is given up on once nobody is.
    asks.peer_gone(5);
    let t1 = t0 + Duration::from_secs(1);
    assert_eq!(asks.next_request(6, |_| true, t1), Some(req(4)));
    assert!(asks.expire(t1 + ASK_TIMEOUT / 2).is_empty());
    assert_eq!(asks.expire(t1 + ASK_TIMEOUT), vec![(2, 2)]);
    // Asked again and again, it is given up on at GIVE_UP all the same.
    asks.add(3, req(8), [0; 32], vec![], t0, 3).unwrap();
    let late = t0 + GIVE_UP - Duration::from_secs(1);
    assert_eq!(asks.next_request(7, |_| true, late), Some(req(8)));
    assert!(asks.expire(late).is_empty());
    assert_eq!(asks.expire(t0 + GIVE_UP), vec![(3, 3)]);
    for p in 0..MAX_WAITING as u32 {
        asks.add(p, req(4 * p), [0; 32], vec![], t0, 0).unwrap();
    }
    assert!(asks.add(99, req(400), [0; 32], vec![], t0, 9).is_err());
    assert_eq!(asks.drain().len(), MAX_WAITING);
}
