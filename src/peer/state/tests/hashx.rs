//! BEP 52 hash exchange on one connection: serving within the budget,
//! while choked, and fetching layers with proofs checked.

use super::*;
use crate::merkle::{self, Hash};
use crate::metainfo::v2::V2File;
use crate::peer::hash_picker::HashPicker;
use crate::peer::hashes::LayerTree;

const PL: u32 = 16384;

/// A file of `pieces` made-up 16 KiB pieces: its layer, root and tree.
fn file(pieces: usize) -> (Vec<Hash>, Hash, LayerTree, u64) {
    let layer: Vec<Hash> = (0..pieces as u32)
        .map(|i| merkle::leaf(&i.to_le_bytes()))
        .collect();
    let len = pieces as u64 * u64::from(PL);
    let root = merkle::root_from_layer(&layer, len, PL).unwrap();
    let tree = LayerTree::new(&layer, len, PL, &root).unwrap();
    (layer, root, tree, len)
}

fn v2_peer(swarm: &FakeSwarm, now: Instant, v2: bool) -> (PeerState, Outbox) {
    peer_key(swarm, now, v2, 1)
}

fn peer_key(swarm: &FakeSwarm, now: Instant, v2: bool, key: PeerKey) -> (PeerState, Outbox) {
    let mut st = PeerState::new(key, local(), true, now).with_v2(v2);
    let mut out = Outbox::default();
    st.start(swarm, &mut out);
    out.drain_messages();
    (st, out)
}

#[test]
fn hash_requests_are_served_while_choked_within_the_budget() {
    let t0 = Instant::now();
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let (_, root, tree, _) = file(8192);
    let shape = tree.shape();
    swarm.f().hash_tree = Some(tree.clone());
    let (mut st, mut out) = v2_peer(&swarm, t0, true);
    // Choked (we never unchoked it), it still gets its hashes.
    let r = shape.request(root, 0, 0, 512);
    st.on_message(Message::HashRequest(r), t0, &swarm, &mut out)
        .unwrap();
    let msgs = out.drain_messages();
    let [Message::Hashes { req, hashes }] = &msgs[..] else {
        panic!("{msgs:?}");
    };
    assert_eq!(*req, r);
    assert!(crate::peer::hashes::verify(&shape, &root, req, hashes));
    // Out of range, or another file: rejected.
    let past = shape.request(root, 0, 8192, 512);
    let mut other = r;
    other.pieces_root = [9; 32];
    for bad in [past, other] {
        st.on_message(Message::HashRequest(bad), t0, &swarm, &mut out)
            .unwrap();
        assert_eq!(out.drain_messages(), [Message::HashReject(bad)]);
    }
    // The bank: 16384 hashes, 512 already spent; 8192 + 4096 + ... until
    // it runs dry, then rejects until a tick refills it.
    let big = shape.request(root, 0, 0, 8192);
    let mut served = 0;
    for _ in 0..4 {
        st.on_message(Message::HashRequest(big), t0, &swarm, &mut out)
            .unwrap();
        for m in out.drain_messages() {
            if matches!(m, Message::Hashes { .. }) {
                served += 1;
            }
        }
    }
    assert_eq!(served, 1, "the second 8192 goes over the bank");
    st.on_tick(t0 + Duration::from_secs(1), &swarm, &mut out)
        .unwrap();
    out.drain_messages();
    st.on_message(Message::HashRequest(big), t0, &swarm, &mut out)
        .unwrap();
    assert!(matches!(out.drain_messages()[..], [Message::Hashes { .. }]));
}

#[test]
fn a_full_outbox_or_a_v1_peer_gets_rejects() {
    let t0 = Instant::now();
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let (_, root, tree, _) = file(64);
    let shape = tree.shape();
    swarm.f().hash_tree = Some(tree);
    let r = shape.request(root, 0, 0, 64);
    let (mut st, mut out) = v2_peer(&swarm, t0, false);
    st.on_message(Message::HashRequest(r), t0, &swarm, &mut out)
        .unwrap();
    assert_eq!(out.drain_messages(), [Message::HashReject(r)]);
    let (mut st, mut out) = v2_peer(&swarm, t0, true);
    out.push(&Message::Piece {
        piece: 0,
        offset: 0,
        data: Bytes::from(vec![0; HASH_OUTBOX_MAX]),
    });
    st.on_message(Message::HashRequest(r), t0, &swarm, &mut out)
        .unwrap();
    let msgs = out.drain_messages();
    assert_eq!(msgs.last(), Some(&Message::HashReject(r)));
}

#[test]
fn layers_are_fetched_and_a_bad_proof_drops_the_peer() {
    let t0 = Instant::now();
    let swarm = FakeSwarm::magnet();
    let (layer, root, tree, len) = file(1000);
    let f = V2File {
        path: vec!["x".into()],
        length: len,
        pieces_root: Some(root),
        attr: Default::default(),
        layer: None,
    };
    swarm.f().hash_picker = Some(HashPicker::new(&[f], PL));
    // A v1 peer is never asked.
    let (mut v1, mut out1) = v2_peer(&swarm, t0, false);
    v1.on_tick(t0, &swarm, &mut out1).unwrap();
    assert!(
        out1.drain_messages()
            .iter()
            .all(|m| !matches!(m, Message::HashRequest(_)))
    );
    // A v2 one is asked for two chunks of 512 at the next tick.
    let (mut st, mut out) = v2_peer(&swarm, t0, true);
    st.on_tick(t0, &swarm, &mut out).unwrap();
    let asked: Vec<HashRequest> = out
        .drain_messages()
        .into_iter()
        .filter_map(|m| match m {
            Message::HashRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(asked.len(), 2);
    assert_eq!(st.hash_requests(), &asked[..]);
    // Hashes nobody asked for are ignored, not even checked.
    let mut stray = asked[0];
    stray.pieces_root = [1; 32];
    let junk = vec![[0u8; 32]; stray.answer_len()];
    st.on_message(
        Message::Hashes {
            req: stray,
            hashes: junk,
        },
        t0,
        &swarm,
        &mut out,
    )
    .unwrap();
    // A true answer is kept; a forged one ends the connection.
    let good = tree.answer(&asked[0]).unwrap();
    st.on_message(
        Message::Hashes {
            req: asked[0],
            hashes: good,
        },
        t0,
        &swarm,
        &mut out,
    )
    .unwrap();
    let mut forged = tree.answer(&asked[1]).unwrap();
    forged[300][7] ^= 1;
    let err = st
        .on_message(
            Message::Hashes {
                req: asked[1],
                hashes: forged,
            },
            t0,
            &swarm,
            &mut out,
        )
        .unwrap_err();
    assert!(matches!(err, PeerError::Protocol(_)), "{err}");
    // The liar is not asked again at once; another peer gets the chunk,
    // and then all is in.
    let (mut liar, mut out_l) = v2_peer(&swarm, t0, true);
    liar.on_tick(t0, &swarm, &mut out_l).unwrap();
    assert!(liar.hash_requests().is_empty());
    let (mut st2, mut out2) = peer_key(&swarm, t0, true, 2);
    st2.on_tick(t0, &swarm, &mut out2).unwrap();
    let again: Vec<HashRequest> = out2
        .drain_messages()
        .into_iter()
        .filter_map(|m| match m {
            Message::HashRequest(r) => Some(r),
            _ => None,
        })
        .collect();
    assert_eq!(again, [asked[1]]);
    let hashes = tree.answer(&asked[1]).unwrap();
    st2.on_message(
        Message::Hashes {
            req: asked[1],
            hashes,
        },
        t0,
        &swarm,
        &mut out2,
    )
    .unwrap();
    let p = swarm.f().hash_picker.clone().unwrap();
    assert_eq!(p.layers(), Some(vec![(root, layer)]));
}

#[test]
fn hash_requests_below_the_piece_layer_are_answered_later_within_the_budget() {
    let t0 = Instant::now();
    let swarm = FakeSwarm::new(4, &[0, 1, 2, 3]);
    let (_, root, tree, _) = file(8);
    let shape = tree.shape();
    swarm.f().hash_tree = Some(tree);
    swarm.f().answer_later = true;
    let (mut st, mut out) = v2_peer(&swarm, t0, true);
    // Past the tree's leaves: the tree refuses them.
    let r = |i: u32| crate::peer::hashes::HashRequest {
        pieces_root: root,
        base_layer: 0,
        index: 64 + i,
        length: 1,
        proof_layers: 0,
    };
    // The tree refuses them; the swarm takes two, the third is rejected.
    for i in 0..3 {
        st.on_message(Message::HashRequest(r(i)), t0, &swarm, &mut out)
            .unwrap();
    }
    assert_eq!(out.drain_messages(), [Message::HashReject(r(2))]);
    assert_eq!(swarm.f().answered_later, vec![(1, r(0)), (1, r(1))]);
    // The answers arrive as commands: hashes, or a reject.
    let hashes = vec![[5; 32]; r(0).answer_len()];
    st.on_command(
        PeerCommand::HashAnswer {
            req: r(0),
            hashes: Some(hashes.clone()),
        },
        &swarm,
        &mut out,
    );
    st.on_command(
        PeerCommand::HashAnswer {
            req: r(1),
            hashes: None,
        },
        &swarm,
        &mut out,
    );
    assert_eq!(
        out.drain_messages(),
        [
            Message::Hashes { req: r(0), hashes },
            Message::HashReject(r(1))
        ]
    );
    // Room again for two.
    st.on_message(Message::HashRequest(r(3)), t0, &swarm, &mut out)
        .unwrap();
    assert!(out.drain_messages().is_empty());
    assert_eq!(swarm.f().answered_later.len(), 3);
    // Each cost a piece's hashing (4096 tokens of the 16384 banked):
    // one more fits, then the bank is dry until a tick refills it.
    let done = |st: &mut PeerState, out: &mut Outbox, i| {
        st.on_command(
            PeerCommand::HashAnswer {
                req: r(i),
                hashes: None,
            },
            &swarm,
            out,
        )
    };
    done(&mut st, &mut out, 3);
    st.on_message(Message::HashRequest(r(4)), t0, &swarm, &mut out)
        .unwrap();
    done(&mut st, &mut out, 4);
    out.drain_messages();
    st.on_message(Message::HashRequest(r(5)), t0, &swarm, &mut out)
        .unwrap();
    assert_eq!(out.drain_messages(), [Message::HashReject(r(5))]);
    assert_eq!(swarm.f().answered_later.len(), 4);
    st.on_tick(t0 + Duration::from_secs(1), &swarm, &mut out)
        .unwrap();
    out.drain_messages();
    st.on_message(Message::HashRequest(r(6)), t0, &swarm, &mut out)
        .unwrap();
    assert!(out.drain_messages().is_empty());
    assert_eq!(swarm.f().answered_later.len(), 5);
    // A peer that did not set the v2 bit is never answered.
    let (mut plain, mut out) = peer_key(&swarm, t0, false, 2);
    let req = shape.request(root, 0, 0, 2);
    plain
        .on_message(Message::HashRequest(req), t0, &swarm, &mut out)
        .unwrap();
    assert_eq!(out.drain_messages(), [Message::HashReject(req)]);
}
