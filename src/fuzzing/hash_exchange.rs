//! The `hash_exchange` fuzz target: BEP 52 hash messages (21, 22, 23)
//! against a seeder's merkle tree and a leecher's hash picker.

use bytes::BytesMut;
use tokio_util::codec::Decoder;

use crate::merkle::{self, Hash};
use crate::metainfo::v2::V2File;
use crate::peer::blame;
use crate::peer::codec::PeerCodec;
use crate::peer::hash_picker::HashPicker;
use crate::peer::hashes::{self, LayerTree};
use crate::peer::message::Message;

const PL: u32 = 16 * 1024;

/// (n) Hash exchange: the first two bytes choose a file of 2 to 1025
/// pieces (a made-up piece layer: no data is hashed), the rest is a stream
/// of frames. Every frame decodes or is refused without a panic, and what
/// decodes encodes back to the same message. A HASH REQUEST (aimed at the
/// file's root) is answered only within the tree, with exactly the hashes
/// its header implies, and an answer whose proof reaches the root
/// verifies. HASHES go to a hash picker that asked for everything: it
/// never keeps what does not prove out, so whenever it is done its layers
/// are the true ones. Below the piece layer (a second file of 4 pieces of
/// 4 made-up leaves): a request answered from one piece's leaves has
/// exactly the hashes its header implies and verifies when its proof
/// reaches the root; HASHES checked as a piece's leaves are kept only if
/// they hash up to the piece, and block-level blame of the payload bytes
/// never panics.
pub fn hash_exchange(data: &[u8]) {
    let Some((head, rest)) = data.split_first_chunk::<2>() else {
        return;
    };
    let pieces = usize::from(u16::from_le_bytes(*head) % 1024) + 2;
    let layer: Vec<Hash> = (0..pieces)
        .map(|i| merkle::leaf(&(i as u32).to_le_bytes()))
        .collect();
    let length = pieces as u64 * u64::from(PL) - 1;
    let Some(root) = merkle::root_from_layer(&layer, length, PL) else {
        panic!("a layer of the right length has a root");
    };
    let Some(tree) = LayerTree::new(&layer, length, PL, &root) else {
        panic!("the layer's own tree");
    };
    let file = V2File {
        path: vec!["f".into()],
        length,
        pieces_root: Some(root),
        attr: Default::default(),
        layer: None,
    };
    let mut picker = HashPicker::new(&[file], PL);
    let low = LowFile::new();
    let now = std::time::Instant::now();
    let mut asked = Vec::new();
    while let Some(r) = picker.next_request(1, now) {
        asked.push(r);
    }
    let mut buf = BytesMut::from(rest);
    let mut codec = PeerCodec;
    while let Ok(Some(m)) = codec.decode(&mut buf) {
        let mut enc = BytesMut::new();
        m.encode(&mut enc);
        let again = codec.decode(&mut enc).ok().flatten();
        assert_eq!(again.as_ref(), Some(&m), "re-encoding changed {m:?}");
        match m {
            Message::HashRequest(mut r) | Message::HashReject(mut r) => {
                low.answer(r);
                r.pieces_root = root;
                if let Some(a) = tree.answer(&r) {
                    assert!(tree.shape().fits(&r));
                    assert_eq!(a.len(), r.answer_len());
                    if r.base_layer + r.proof_layers + 2 == tree.shape().layers {
                        assert!(hashes::verify(&tree.shape(), &root, &r, &a));
                    }
                }
            }
            Message::Hashes { mut req, hashes } => {
                low.check(&req, &hashes);
                if req.index & 1 == 0 {
                    req.pieces_root = root;
                }
                let _ = picker.on_hashes(1, &req, &hashes, now);
                // Also the true answer to a request we made, now and then.
                if let Some(r) = asked.get(req.proof_layers as usize % asked.len().max(1))
                    && req.base_layer == 0
                    && let Some(a) = tree.answer(r)
                {
                    assert!(picker.on_hashes(1, r, &a, now).is_ok());
                }
            }
            _ => {}
        }
    }
    if picker.is_done() {
        let got = picker.layers();
        assert_eq!(
            got,
            Some(vec![(root, layer)]),
            "a layer that is not the root's"
        );
    }
}

/// Leaves per piece of the file below the piece layer.
const LOW_LEAVES: usize = 4;

/// A file of 4 pieces of [`LOW_LEAVES`] made-up leaves each.
struct LowFile {
    leaves: Vec<Hash>,
    layer: Vec<Hash>,
    root: Hash,
    tree: LayerTree,
}

impl LowFile {
    fn new() -> LowFile {
        let pl = (LOW_LEAVES * merkle::BLOCK) as u32;
        let leaves: Vec<Hash> = (0..4 * LOW_LEAVES as u32)
            .map(|i| merkle::leaf(&(i + 7).to_le_bytes()))
            .collect();
        let layer: Vec<Hash> = leaves
            .chunks(LOW_LEAVES)
            .map(|c| merkle::root_of_row(c, LOW_LEAVES, merkle::ZERO).unwrap_or(merkle::ZERO))
            .collect();
        let length = 4 * u64::from(pl);
        let Some(root) = merkle::root_from_layer(&layer, length, pl) else {
            panic!("a layer of the right length has a root");
        };
        let Some(tree) = LayerTree::new(&layer, length, pl, &root) else {
            panic!("the layer's own tree");
        };
        LowFile {
            leaves,
            layer,
            root,
            tree,
        }
    }

    fn answer(&self, mut r: hashes::HashRequest) {
        r.pieces_root = self.root;
        let shape = self.tree.shape();
        let piece = u64::from(r.index % 4);
        let mine = &self.leaves[piece as usize * LOW_LEAVES..][..LOW_LEAVES];
        let above = |l, i| self.tree.node(l, i);
        if let Some(a) =
            hashes::answer_from_piece(&r, &shape, LOW_LEAVES as u64, piece, mine, above)
        {
            assert!(shape.fits(&r) && r.base_layer < 2);
            assert_eq!(a.len(), r.answer_len());
            if r.base_layer + r.proof_layers + 2 == shape.layers {
                assert!(hashes::verify(&shape, &self.root, &r, &a));
            }
        }
    }

    fn check(&self, req: &hashes::HashRequest, got: &[Hash]) {
        let piece = req.index as usize % 4;
        if let Some(kept) = blame::check_leaves(req, got, &self.layer[piece]) {
            assert_eq!(
                merkle::root_of_row(&kept, kept.len(), merkle::ZERO),
                Some(self.layer[piece])
            );
        }
        // The hashes' bytes as a piece's data, judged against its leaves.
        let data: Vec<u8> = got.iter().flatten().copied().collect();
        let senders: Vec<u64> = (0..data.len().div_ceil(merkle::BLOCK) as u64).collect();
        let len = req.length as usize % (data.len() + 1);
        if let Some(v) = blame::blame(&self.leaves, len, &data, &senders) {
            assert!(v.liars.len() <= v.bad.len());
        }
    }
}
