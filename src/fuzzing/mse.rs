//! The `mse` fuzz target: both sides of the MSE/PE handshake fed any bytes.

use crate::id::InfoHash;

/// Fixed keys for the `mse` target: (Xa, Xb, S), computed once (two
/// modexps per input would slow the fuzzer tenfold).
fn mse_keys() -> &'static ([u8; 20], [u8; 20], [u8; crate::mse::KEY_LEN]) {
    static KEYS: std::sync::OnceLock<([u8; 20], [u8; 20], [u8; crate::mse::KEY_LEN])> =
        std::sync::OnceLock::new();
    KEYS.get_or_init(|| {
        let (xa, xb) = ([1u8; 20], [2u8; 20]);
        let s = crate::mse::shared_secret(&xa, &crate::mse::public_key(&xb)).expect("valid key");
        (xa, xb, s)
    })
}

/// (k) the MSE handshake, either role, fed hostile bytes in fuzzer-cut
/// chunks. Modes 0/1 are raw bytes from the first byte on; modes 2/3
/// build a valid start (public key, pad, and for the receiver the req1
/// and req2 hashes) and RC4-encrypt the fuzzer's bytes with the right key,
/// so the deep states (VC, provide/select, pads, IA) are reached too.
/// Properties: no panic, consumption never exceeds what was fed, a role
/// that is not done takes everything, and the bytes taken stay within the
/// spec's bounds.
pub fn mse(data: &[u8]) {
    use crate::mse::{
        Encryption, Initiator, KEY_LEN, MAX_PAD, REQ1_SEARCH, Receiver, Secrets, VC_SEARCH, hash,
        keystream, public_key, req2_hash,
    };
    use rc4::StreamCipher;
    let [mode, chunk, pad, policy, rest @ ..] = data else {
        return;
    };
    let (xa, xb, s) = mse_keys();
    let ih = InfoHash([0xAB; 20]);
    let chunk = usize::from(*chunk) + 1;
    let policy =
        [Encryption::Prefer, Encryption::Require, Encryption::Disable][usize::from(*policy % 3)];
    let receiver = mode % 2 == 0;
    let mut wire = Vec::new();
    if mode % 4 >= 2 {
        let peer_key = if receiver { xa } else { xb };
        wire.extend(public_key(peer_key));
        wire.extend(std::iter::repeat_n(
            0x5A,
            usize::from(*pad) * 2 % (MAX_PAD + 40),
        ));
        if receiver {
            wire.extend(hash(&[b"req1", s]));
            let req3 = hash(&[b"req3", s]);
            wire.extend(req2_hash(&ih).iter().zip(req3).map(|(a, b)| a ^ b));
        }
        let mut tail = rest.to_vec();
        keystream(if receiver { b"keyA" } else { b"keyB" }, s, &ih).apply_keystream(&mut tail);
        wire.extend(tail);
    } else {
        wire.extend_from_slice(rest);
    }
    let lookup = move |h: &[u8; 20]| (req2_hash(&ih) == *h).then_some(ih);
    let secrets = |k: &[u8; 20]| Secrets {
        private_key: *k,
        pad: vec![],
    };
    // Most a role may take: key, pad + marker, fixed fields, pads, IA.
    let bound = if receiver {
        KEY_LEN + REQ1_SEARCH + 20 + 14 + MAX_PAD + 2 + usize::from(u16::MAX)
    } else {
        KEY_LEN + VC_SEARCH + 6 + MAX_PAD
    };
    let mut r = Receiver::new(policy, &lookup, secrets(xb));
    let mut i = Initiator::new(ih, policy.provide(), vec![19; 68], secrets(xa));
    let mut taken = 0;
    for piece in wire.chunks(chunk) {
        let res = if receiver {
            r.handle_input(piece)
        } else {
            i.handle_input(piece)
        };
        let done = if receiver { r.is_done() } else { i.is_done() };
        match res {
            Ok(n) => {
                assert!(n <= piece.len());
                assert!(done || n == piece.len(), "a role not done takes all");
                taken += n;
                assert!(taken <= bound, "{taken} > {bound}");
            }
            Err(_) => return,
        }
        let _ = (r.take_output(), i.take_output());
        if done {
            break;
        }
    }
    if receiver {
        if let Some(est) = r.finish() {
            assert_eq!(est.info_hash, ih);
            assert!(est.initial_payload.len() <= usize::from(u16::MAX));
        }
    } else if let Some(est) = i.finish() {
        assert_eq!(est.info_hash, ih);
        assert!(est.initial_payload.is_empty());
    }
}
