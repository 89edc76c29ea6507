use super::*;
use crate::peer::hashes::LayerTree;

const PL: u32 = 16384;

fn data(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

/// A file of `pieces` 16 KiB pieces (the last `short` bytes short): its
/// V2File without a layer, its true layer and the tree a seeder serves.
fn file(pieces: usize, short: usize, seed: u8) -> (V2File, Vec<Hash>, LayerTree) {
    let d = data(pieces * PL as usize - short, seed);
    let layer: Vec<Hash> = d
        .chunks(PL as usize)
        .map(|p| merkle::piece_hash(p, PL))
        .collect();
    let root = merkle::file_root(&d);
    let tree = LayerTree::new(&layer, d.len() as u64, PL, &root).unwrap();
    let f = V2File {
        path: vec!["t".into(), format!("f{seed}")],
        length: d.len() as u64,
        pieces_root: Some(root),
        attr: Default::default(),
        layer: None,
    };
    (f, layer, tree)
}

fn serve(trees: &[&LayerTree], r: &HashRequest) -> Vec<Hash> {
    trees.iter().find_map(|t| t.answer(r)).unwrap()
}

#[test]
fn fetches_every_layer_in_chunks_and_checks_them() {
    // 1300 pieces: three chunks of 512 (the last one mostly padding); a
    // 3-piece file: one chunk of 4; a one-piece file needs nothing.
    let (a, la, ta) = file(1300, 100, 1);
    let (b, lb, tb) = file(3, 0, 2);
    let (c, _, _) = file(1, 5, 3);
    let mut p = HashPicker::new(&[a.clone(), b.clone(), c], PL);
    assert_eq!(p.progress(), (0, 4));
    let t0 = Instant::now();
    let mut asked = Vec::new();
    while let Some(r) = p.next_request(1, t0) {
        asked.push(r);
    }
    assert_eq!(asked.len(), 4);
    assert_eq!(
        asked
            .iter()
            .map(|r| (r.index, r.length))
            .collect::<Vec<_>>(),
        [(0, 512), (512, 512), (1024, 512), (0, 4)]
    );
    // 1300 pieces: 2048 leaves, 12 layers; the piece layer is the leaves.
    // libtorrent's largest proof: 10 layers, 2 uncles past the 512 nodes.
    assert_eq!(asked[0].proof_layers, 10);
    assert_eq!(asked[0].uncles(), 2);
    for r in &asked {
        assert!(p.is_pending(1, r, t0));
        assert!(!p.is_done());
        p.on_hashes(1, r, &serve(&[&ta, &tb], r), t0)
            .unwrap_or_else(|e| panic!("{r:?}: {e}"));
    }
    assert!(p.is_done());
    let layers = p.layers().unwrap();
    assert_eq!(
        layers,
        vec![(a.pieces_root.unwrap(), la), (b.pieces_root.unwrap(), lb)]
    );
}

#[test]
fn a_lie_is_caught_and_the_chunk_goes_to_another_peer() {
    let (a, la, ta) = file(40, 0, 7);
    let mut p = HashPicker::new(std::slice::from_ref(&a), PL);
    let t0 = Instant::now();
    let r = p.next_request(1, t0).unwrap();
    assert_eq!(p.next_request(2, t0), None, "one chunk, already asked");
    let mut lie = serve(&[&ta], &r);
    lie[3][0] ^= 0x80;
    assert!(p.on_hashes(1, &r, &lie, t0).is_err());
    // The liar is not asked again soon; another peer is, at once.
    assert_eq!(p.next_request(1, t0), None);
    let r2 = p.next_request(2, t0).unwrap();
    assert_eq!(r2, r);
    // Hashes for a request not made to that peer's chunk state change nothing
    // once verified.
    p.on_hashes(2, &r2, &serve(&[&ta], &r2), t0).unwrap();
    assert!(p.on_hashes(1, &r, &lie, t0).is_ok(), "late junk is ignored");
    assert_eq!(p.layers().unwrap(), vec![(a.pieces_root.unwrap(), la)]);
}

#[test]
fn rejects_timeouts_and_departures_free_the_chunk() {
    let (a, _, ta) = file(40, 0, 9);
    let mut p = HashPicker::new(&[a], PL);
    let t0 = Instant::now();
    let r = p.next_request(1, t0).unwrap();
    p.on_reject(2, &r, t0); // Not its request: nothing happens.
    assert_eq!(p.next_request(2, t0), None);
    p.on_reject(1, &r, t0);
    assert_eq!(p.next_request(1, t0), None, "the rejecting peer waits");
    assert_eq!(p.next_request(1, t0 + RETRY_AFTER), Some(r));
    // Timed out: another peer.
    let later = t0 + RETRY_AFTER + TIMEOUT;
    assert!(!p.is_pending(1, &r, later));
    assert_eq!(p.next_request(3, later), Some(r));
    p.on_peer_gone(3);
    assert_eq!(p.next_request(4, later), Some(r));
    // An answer with the wrong proof depth is refused even if true.
    let mut short = r;
    short.proof_layers -= 1;
    let hashes = ta.answer(&short).unwrap();
    assert!(p.on_hashes(4, &short, &hashes, later).is_err());
    assert!(!p.is_done());
}

#[test]
fn nothing_to_fetch_is_done_at_once() {
    let (mut a, la, _) = file(4, 0, 1);
    a.layer = Some(la);
    let p = HashPicker::new(&[a], PL);
    assert!(p.is_done());
    assert_eq!(p.layers(), Some(Vec::new()));
}
