use super::*;
use crate::peer::message::{Message, MessageError};
use bytes::{Bytes, BytesMut};

fn data(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 31 % 251) as u8).collect()
}

/// A file of `len` bytes in pieces of `pl`: its piece layer and root.
fn file(len: usize, pl: u32) -> (Vec<Hash>, Hash) {
    let d = data(len);
    let layer: Vec<Hash> = d
        .chunks(pl as usize)
        .map(|p| merkle::piece_hash(p, pl))
        .collect();
    (layer, merkle::file_root(&d))
}

fn req(base: u32, index: u32, length: u32, proof: u32) -> HashRequest {
    HashRequest {
        pieces_root: [7; 32],
        base_layer: base,
        index,
        length,
        proof_layers: proof,
    }
}

fn decode(bytes: &[u8]) -> Result<Message, MessageError> {
    Message::decode(Bytes::copy_from_slice(bytes))
}

#[test]
fn messages_round_trip_and_golden_bytes() {
    let r = req(2, 512, 512, 9);
    for m in [
        Message::HashRequest(r),
        Message::HashReject(r),
        Message::Hashes {
            req: req(1, 4, 4, 2),
            hashes: vec![[1; 32], [2; 32], [3; 32], [4; 32], [5; 32]],
        },
    ] {
        let mut buf = BytesMut::new();
        m.encode(&mut buf);
        assert_eq!(buf.len(), m.encoded_len());
        let body = buf.split_off(4).freeze();
        assert_eq!(Message::decode(body).unwrap(), m);
    }
    let mut buf = BytesMut::new();
    Message::HashRequest(req(2, 512, 512, 9)).encode(&mut buf);
    let mut want = vec![0, 0, 0, 49, 21];
    want.extend([7; 32]);
    want.extend([0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 2, 0, 0, 0, 0, 9]);
    assert_eq!(&buf[..], &want[..]);
}

#[test]
fn uncles_leave_out_what_the_nodes_prove() {
    // libtorrent's count: proof_layers + 1 - log2(length).
    assert_eq!(req(0, 0, 512, 8).uncles(), 0);
    assert_eq!(req(0, 0, 512, 9).uncles(), 1);
    assert_eq!(req(0, 0, 512, 12).uncles(), 4);
    assert_eq!(req(0, 0, 1, 0).uncles(), 1);
    assert_eq!(req(0, 0, 1, 5).uncles(), 6);
    assert_eq!(req(0, 0, 4, 0).uncles(), 0);
    assert_eq!(req(3, 8, 8, 6).answer_len(), 12);
}

#[test]
fn headers_are_strict() {
    let header = |r: HashRequest| {
        let mut v = vec![21u8];
        r.encode(&mut v);
        v
    };
    let bad = |r: HashRequest| decode(&header(r)).unwrap_err();
    assert_eq!(
        bad(req(0, 0, 0, 0)),
        MessageError::Hash(HashMessageError::BadCount(0))
    );
    assert_eq!(
        bad(req(0, 0, 3, 0)),
        MessageError::Hash(HashMessageError::BadCount(3))
    );
    assert_eq!(
        bad(req(0, 0, 16384, 0)),
        MessageError::Hash(HashMessageError::BadCount(16384))
    );
    assert_eq!(
        bad(req(0, 4, 8, 0)),
        MessageError::Hash(HashMessageError::Unaligned {
            index: 4,
            length: 8
        })
    );
    assert!(matches!(
        bad(req(64, 0, 1, 0)),
        MessageError::Hash(HashMessageError::BadLayers { .. })
    ));
    assert!(matches!(
        bad(req(40, 0, 1, 30)),
        MessageError::Hash(HashMessageError::BadLayers { .. })
    ));
    assert!(decode(&header(req(0, 8192, 8192, 63))).is_ok());
    // One byte short or long.
    let mut h = header(req(0, 0, 2, 1));
    h.push(0);
    assert_eq!(
        decode(&h).unwrap_err(),
        MessageError::Hash(HashMessageError::BadLength {
            name: "hash request",
            got: 49
        })
    );
    h[0] = 23;
    h.truncate(48);
    assert!(matches!(
        decode(&h).unwrap_err(),
        MessageError::Hash(HashMessageError::BadLength {
            name: "hash reject",
            ..
        })
    ));
}

#[test]
fn hashes_must_carry_exactly_what_the_header_implies() {
    let mut v = vec![22u8];
    req(0, 0, 4, 2).encode(&mut v);
    v.extend([1u8; 32 * 4]);
    // 4 nodes + 1 uncle expected.
    assert_eq!(
        decode(&v).unwrap_err(),
        MessageError::Hash(HashMessageError::WrongCount {
            expected: 5,
            got: 4
        })
    );
    v.extend([1u8; 32]);
    assert!(decode(&v).is_ok());
    v.push(0);
    assert!(matches!(
        decode(&v).unwrap_err(),
        MessageError::Hash(HashMessageError::BadLength { .. })
    ));
    assert!(decode(&[22u8; 40]).is_err());
}

#[test]
fn shape_of_a_file() {
    assert_eq!(TreeShape::of_file(0), None);
    let s = TreeShape::of_file(1).unwrap();
    assert_eq!((s.leaves, s.layers), (1, 1));
    // 5 blocks pad to 8 leaves: layers 8, 4, 2, 1.
    let s = TreeShape::of_file(4 * 16384 + 1).unwrap();
    assert_eq!((s.leaves, s.layers), (8, 4));
    assert_eq!(s.width(1), 4);
    assert!(s.fits(&req(1, 0, 4, 1)));
    assert!(!s.fits(&req(1, 0, 4, 2)), "proof above the root");
    assert!(!s.fits(&req(1, 4, 4, 0)), "past the layer");
    assert!(!s.fits(&req(3, 0, 1, 0)), "the root itself");
    assert!(!s.fits(&req(4, 0, 1, 0)), "above the root");
    // The most a request may ask for reaches the root.
    assert_eq!(s.request([0; 32], 1, 0, 1).proof_layers, 1);
    assert_eq!(s.request([0; 32], 1, 0, 1).uncles(), 2);
}

#[test]
fn answers_verify_against_the_root() {
    // 11 pieces of 32 KiB, the last short: piece layer 1, 16 leaves... of
    // blocks: 21 blocks pad to 32 leaves, 6 layers.
    let pl = 32768;
    let len = 10 * pl as usize + 5000;
    let (layer, root) = file(len, pl);
    let tree = LayerTree::new(&layer, len as u64, pl, &root).unwrap();
    let shape = tree.shape();
    assert_eq!(shape.layers, 6);
    // The whole piece layer (padded to 16) in one request, and in chunks
    // of 4 with their uncles.
    for (length, chunks) in [(16u32, 1u32), (4, 4), (1, 16)] {
        let mut got = Vec::new();
        for c in 0..chunks {
            let r = shape.request(root, 1, c * length, length);
            assert_eq!(r.proof_layers, 3);
            let a = tree.answer(&r).unwrap();
            assert_eq!(a.len(), r.answer_len());
            assert!(verify(&shape, &root, &r, &a), "{length} {c}");
            // Any one hash changed fails.
            for k in 0..a.len() {
                let mut bad = a.clone();
                bad[k][0] ^= 1;
                assert!(!verify(&shape, &root, &r, &bad), "{length} {c} {k}");
            }
            // Against another root it fails.
            assert!(!verify(&shape, &[0; 32], &r, &a));
            got.extend_from_slice(&a[..length as usize]);
        }
        assert_eq!(&got[..11], &layer[..]);
        // The padding nodes are roots of zero pieces.
        assert!(got[11..].iter().all(|h| *h == merkle::zero_root(1)));
    }
    // Above the piece layer too.
    let r = shape.request(root, 3, 0, 4);
    let a = tree.answer(&r).unwrap();
    assert!(verify(&shape, &root, &r, &a));
    // Below the piece layer we have nothing to say; outside the tree neither.
    assert_eq!(tree.answer(&shape.request(root, 0, 0, 2)), None);
    let mine = |mut r: HashRequest| {
        r.pieces_root = root;
        r
    };
    assert_eq!(tree.answer(&mine(req(1, 16, 16, 3))), None);
    assert_eq!(tree.answer(&mine(req(1, 0, 16, 4))), None);
    assert!(tree.answer(&mine(req(1, 0, 16, 3))).is_some());
    assert_eq!(tree.answer(&req(1, 0, 16, 3)), None, "another file's root");
    // A proof short of the root cannot be checked.
    let short = mine(req(1, 0, 4, 1));
    let a = tree.answer(&short).unwrap();
    assert!(!verify(&shape, &root, &short, &a));
}

#[test]
fn a_layer_that_is_not_the_roots_builds_no_tree() {
    let pl = 16384;
    let (mut layer, root) = file(3 * 16384, pl);
    assert!(LayerTree::new(&layer, 3 * 16384, pl, &root).is_some());
    layer[2][5] ^= 1;
    assert!(LayerTree::new(&layer, 3 * 16384, pl, &root).is_none());
    assert!(LayerTree::new(&[], 3 * 16384, pl, &root).is_none());
}

#[test]
fn leaf_answers_from_a_piece_verify_to_the_root_and_to_the_piece() {
    // 10 pieces of 4 blocks, the last short: 37 blocks pad to 64 leaves.
    let pl = 4 * 16384;
    let len = 9 * pl as usize + 16384 + 100;
    let data: Vec<u8> = (0..len).map(|i| (i * 13 % 251) as u8).collect();
    let layer: Vec<Hash> = data
        .chunks(pl as usize)
        .map(|p| merkle::piece_hash(p, pl))
        .collect();
    let root = merkle::file_root(&data);
    let tree = LayerTree::new(&layer, len as u64, pl, &root).unwrap();
    let shape = tree.shape();
    let above = |l, i| tree.node(l, i);
    for piece in [0u64, 3, 9] {
        let start = piece as usize * pl as usize;
        let bytes = &data[start..(start + pl as usize).min(len)];
        let leaves = merkle::leaves(bytes);
        // The piece's leaves with uncles up to the root.
        let r = shape.request(root, 0, (piece * 4) as u32, 4);
        let a = answer_from_piece(&r, &shape, 4, piece, &leaves, above).unwrap();
        assert!(verify(&shape, &root, &r, &a), "piece {piece}");
        // Two leaves, and the layer above the leaves.
        let r = shape.request(root, 0, (piece * 4 + 2) as u32, 2);
        let a = answer_from_piece(&r, &shape, 4, piece, &leaves, above).unwrap();
        assert!(verify(&shape, &root, &r, &a));
        let r = shape.request(root, 1, (piece * 2) as u32, 2);
        let a = answer_from_piece(&r, &shape, 4, piece, &leaves, above).unwrap();
        assert!(verify(&shape, &root, &r, &a));
        // The leaf request of block-level blame: no uncles.
        let r = HashRequest {
            pieces_root: root,
            base_layer: 0,
            index: (piece * 4) as u32,
            length: 4,
            proof_layers: 0,
        };
        let a = answer_from_piece(&r, &shape, 4, piece, &leaves, above).unwrap();
        assert_eq!(a.len(), 4);
        assert_eq!(
            merkle::root_of_row(&a, 4, merkle::ZERO),
            Some(layer[piece as usize])
        );
    }
    let leaves0 = merkle::leaves(&data[..pl as usize]);
    // Another piece's leaves, data that changed, a request spanning two
    // pieces or at the piece layer: refused.
    let r = shape.request(root, 0, 4, 4);
    assert_eq!(answer_from_piece(&r, &shape, 4, 1, &leaves0, above), None);
    assert_eq!(answer_from_piece(&r, &shape, 4, 0, &leaves0, above), None);
    let r = shape.request(root, 0, 0, 8);
    assert_eq!(answer_from_piece(&r, &shape, 4, 0, &leaves0, above), None);
    let r = shape.request(root, 2, 0, 1);
    assert_eq!(answer_from_piece(&r, &shape, 4, 0, &leaves0, above), None);
    let mut changed = leaves0.clone();
    changed[1][0] ^= 1;
    let r = shape.request(root, 0, 0, 4);
    assert_eq!(answer_from_piece(&r, &shape, 4, 0, &changed, above), None);
    // A file shorter than a piece: its padded row under its root.
    let small = &data[..3 * 16384];
    let sroot = merkle::file_root(small);
    let sshape = TreeShape::of_file(small.len() as u64).unwrap();
    let top = sshape.layers - 1;
    let sabove = |l: u32, i: u64| (l == top && i == 0).then_some(sroot);
    let r = sshape.request(sroot, 0, 0, 4);
    let a = answer_from_piece(&r, &sshape, 4, 0, &merkle::leaves(small), sabove).unwrap();
    assert!(verify(&sshape, &sroot, &r, &a));
}
