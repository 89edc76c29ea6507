use super::*;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

// Fixed vectors, computed independently of this crate by a Python 3
// script (Python's built-in `pow` for the modexp, `hashlib.sha1`, and an
// RC4 written out in ten lines; the script is in the commit message of
// the commit that added these). Keys: Xa = 01 02 .. 14, Xb = 65 66 .. 78,
// SKEY = 20 bytes of 0xAB, no PadA/PadB/PadC/PadD, crypto_provide = 3,
// IA = "\x13BitTorrent protocol", crypto_select = 2 (RC4); A_PING is
// "ping" and B_PONG "pong" sent after the handshake. YA also matches the
// 2^Xa published in another project's MSE tests.
const YA: &str = "96e112dab29e8c5272accb9b17b26887ce54a144a4e3b697c7d159b7a817e556b0918db2b4c658e02a87f7e5fb14b18a553e084cbf3dad2d30f16596ccb982d406258c61b30c5c1dae2ddc60bdbd48d79896312aad63238c39e1a633821eb693";
const YB: &str = "d32ae8cedd0de9ca4fe67e35626bb8c7cdb0966727d899f6a62fdb2b68817f9ddc4b684e3eb34030b8dba4e028b7cff3264020340cb4eab61923cdc4e4216ba873368d83f0a38e497f1f6b4e3d2012eb91a3ee6056f966f9eae732089b6fa46e";
const S: &str = "d05ed96a95215a89b44073afe5d0b1626289ac01cff7849392948b2470b346547e944d7562a897ae86976bc389999083ec09572dbdc8ed7f6a0a86a1aa42a3ca04209b72d8239890360435640643b76479ed7836f1857963fcc7cb72084c3ab4";
const STEP3: &str = "78fffb0f23055a793ff7609f359e04e383ec3505e5fbae2f45ff1faeeb3b4df70d17236225f91856797d6a1321ba40078573efd74dd10e38bca1ea8e96b4d11e8e8d60e7bb8080041b38a562";
const STEP4: &str = "7e728a8530bb77a2a6ca8d36f524";
const A_PING: &str = "be3b3702";
const B_PONG: &str = "c15cab7b";

const IH: InfoHash = InfoHash([0xAB; 20]);
const IA: &[u8] = b"\x13BitTorrent protocol";

fn hex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

fn xa() -> Secrets {
    Secrets {
        private_key: std::array::from_fn(|i| i as u8 + 1),
        pad: vec![],
    }
}

fn xb() -> Secrets {
    Secrets {
        private_key: std::array::from_fn(|i| i as u8 + 101),
        pad: vec![],
    }
}

fn served() -> impl Fn(&[u8; 20]) -> Option<InfoHash> + Sync {
    |h: &[u8; 20]| (req2_hash(&IH) == *h).then_some(IH)
}

#[test]
fn dh_matches_the_vectors() {
    let a = xa().private_key;
    let b = xb().private_key;
    assert_eq!(public_key(&a).to_vec(), hex(YA));
    assert_eq!(public_key(&b).to_vec(), hex(YB));
    let yb: [u8; KEY_LEN] = hex(YB).try_into().unwrap();
    let ya: [u8; KEY_LEN] = hex(YA).try_into().unwrap();
    assert_eq!(shared_secret(&a, &yb).unwrap().to_vec(), hex(S));
    assert_eq!(shared_secret(&b, &ya).unwrap().to_vec(), hex(S));
}

#[test]
fn initiator_matches_the_vectors() {
    let mut i = Initiator::new(IH, CRYPTO_RC4 | CRYPTO_PLAINTEXT, IA.to_vec(), xa());
    assert_eq!(i.take_output(), hex(YA), "step 1");
    assert_eq!(i.handle_input(&hex(YB)), Ok(KEY_LEN));
    assert_eq!(i.take_output(), hex(STEP3), "step 3");
    // Step 4 and the peer's first payload in one segment: only step 4 is
    // taken, the rest is left for the stream.
    let mut wire = hex(STEP4);
    wire.extend(hex(B_PONG));
    assert_eq!(i.handle_input(&wire), Ok(hex(STEP4).len()));
    assert!(i.is_done());
    assert_eq!(i.handle_input(b"x"), Err(MseError::Finished));
    let est = i.finish().unwrap();
    assert_eq!(est.info_hash, IH);
    let mut c = est.cipher.expect("RC4 selected");
    let mut pong = hex(B_PONG);
    c.decrypt.apply_keystream(&mut pong);
    assert_eq!(pong, b"pong");
    let mut ping = b"ping".to_vec();
    c.encrypt.apply_keystream(&mut ping);
    assert_eq!(ping, hex(A_PING));
}

#[test]
fn receiver_matches_the_vectors() {
    let lookup = served();
    // Require: the vectors select RC4 from crypto_provide = 3.
    let mut r = Receiver::new(Encryption::Require, &lookup, xb());
    assert_eq!(r.handle_input(&hex(YA)), Ok(KEY_LEN));
    assert_eq!(r.take_output(), hex(YB), "step 2");
    let mut wire = hex(STEP3);
    wire.extend(hex(A_PING));
    assert_eq!(r.handle_input(&wire), Ok(hex(STEP3).len()));
    assert_eq!(r.take_output(), hex(STEP4), "step 4");
    let est = r.finish().unwrap();
    assert_eq!(est.info_hash, IH);
    assert_eq!(est.initial_payload, IA);
    let mut c = est.cipher.expect("RC4 selected");
    let mut ping = hex(A_PING);
    c.decrypt.apply_keystream(&mut ping);
    assert_eq!(ping, b"ping");
}

#[test]
fn vectors_fed_one_byte_at_a_time() {
    let lookup = served();
    let mut r = Receiver::new(Encryption::Require, &lookup, xb());
    let mut wire = hex(YA);
    wire.extend(hex(STEP3));
    for b in &wire {
        assert_eq!(r.handle_input(std::slice::from_ref(b)), Ok(1));
    }
    let mut out = r.take_output();
    assert_eq!(out.split_off(KEY_LEN), hex(STEP4));
    assert!(r.is_done());

    let mut i = Initiator::new(IH, 3, IA.to_vec(), xa());
    let mut wire = hex(YB);
    wire.extend(hex(STEP4));
    for b in &wire {
        assert_eq!(i.handle_input(std::slice::from_ref(b)), Ok(1));
    }
    assert!(i.is_done());
}

/// Where a pair run failed.
#[derive(Debug, PartialEq)]
enum Failed {
    Initiator(MseError),
    Receiver(MseError),
}

/// Runs both roles against each other in memory, delivering at most
/// `chunk` bytes at a time. Returns both outcomes.
fn pair(
    provide: u32,
    policy: Encryption,
    pads: (usize, usize),
    chunk: usize,
) -> Result<(Established, Established), Failed> {
    let lookup = served();
    let mut a_secrets = Secrets::random(0);
    a_secrets.pad = vec![7; pads.0];
    let mut b_secrets = Secrets::random(0);
    b_secrets.pad = vec![9; pads.1];
    let mut i = Initiator::new(IH, provide, IA.to_vec(), a_secrets);
    let mut r = Receiver::new(policy, &lookup, b_secrets);
    let (mut to_r, mut to_i) = (Vec::new(), Vec::new());
    for _ in 0..100_000 {
        to_r.extend(i.take_output());
        to_i.extend(r.take_output());
        if i.is_done() && r.is_done() {
            break;
        }
        if !to_r.is_empty() && !r.is_done() {
            let n = chunk.min(to_r.len());
            let used = r.handle_input(&to_r[..n]).map_err(Failed::Receiver)?;
            assert!(used == n || r.is_done());
            to_r.drain(..used);
        }
        if !to_i.is_empty() && !i.is_done() {
            let n = chunk.min(to_i.len());
            let used = i.handle_input(&to_i[..n]).map_err(Failed::Initiator)?;
            assert!(used == n || i.is_done());
            to_i.drain(..used);
        }
    }
    assert!(to_r.is_empty() && to_i.is_empty(), "no stray bytes");
    Ok((i.finish().unwrap(), r.finish().unwrap()))
}

#[test]
fn roles_agree_for_every_policy_pair() {
    use Encryption::*;
    for (provide, policy, rc4) in [
        (Prefer.provide(), Prefer, false),
        (Prefer.provide(), Require, true),
        (Require.provide(), Prefer, true),
        (CRYPTO_PLAINTEXT, Prefer, false),
        (Prefer.provide(), Disable, false),
    ] {
        for (pads, chunk) in [((0, 0), 1 << 20), ((512, 512), 1), ((13, 300), 7)] {
            let (a, b) = pair(provide, policy, pads, chunk).unwrap();
            assert_eq!(a.cipher.is_some(), rc4, "{provide} {policy}");
            assert_eq!(b.cipher.is_some(), rc4);
            assert_eq!(b.info_hash, IH);
            assert_eq!(b.initial_payload, IA);
            if let (Some(mut ca), Some(mut cb)) = (a.cipher, b.cipher) {
                let mut m = b"hello".to_vec();
                ca.encrypt.apply_keystream(&mut m);
                cb.decrypt.apply_keystream(&mut m);
                assert_eq!(m, b"hello");
                cb.encrypt.apply_keystream(&mut m);
                ca.decrypt.apply_keystream(&mut m);
                assert_eq!(m, b"hello");
            }
        }
    }
}

#[test]
fn mismatched_policies_fail_with_no_common_method() {
    let e = pair(CRYPTO_PLAINTEXT, Encryption::Require, (0, 0), 64).unwrap_err();
    assert_eq!(
        e,
        Failed::Receiver(MseError::NoCommonMethod {
            provide: CRYPTO_PLAINTEXT,
            allowed: CRYPTO_RC4
        })
    );
    let e = pair(CRYPTO_RC4, Encryption::Disable, (0, 0), 64).unwrap_err();
    assert!(matches!(
        e,
        Failed::Receiver(MseError::NoCommonMethod { .. })
    ));
}

#[test]
fn receiver_gives_up_on_garbage_within_the_search_limit() {
    let lookup = served();
    let mut r = Receiver::new(Encryption::Prefer, &lookup, xb());
    r.handle_input(&hex(YA)).unwrap();
    let garbage: Vec<u8> = (0..2000u32).map(|i| (i * 7 + 3) as u8).collect();
    let mut fed = 0;
    let err = loop {
        match r.handle_input(&garbage[fed..fed + 1]) {
            Ok(n) => fed += n,
            Err(e) => break e,
        }
        assert!(fed <= REQ1_SEARCH, "bounded");
    };
    assert_eq!(err, MseError::SyncNotFound("req1", REQ1_SEARCH));
    // All at once: same verdict, no more bytes held.
    let mut r = Receiver::new(Encryption::Prefer, &lookup, xb());
    r.handle_input(&hex(YA)).unwrap();
    assert_eq!(
        r.handle_input(&garbage),
        Err(MseError::SyncNotFound("req1", REQ1_SEARCH))
    );
}

#[test]
fn marker_at_the_last_legal_offset_is_found() {
    // PadA of exactly 512: the req1 hash ends at byte 532 after Ya.
    assert!(pair(3, Encryption::Prefer, (MAX_PAD, MAX_PAD), 5).is_ok());
}

#[test]
fn initiator_gives_up_without_vc() {
    let mut i = Initiator::new(IH, 3, IA.to_vec(), xa());
    i.handle_input(&hex(YB)).unwrap();
    assert_eq!(
        i.handle_input(&[0x55; 1000]),
        Err(MseError::SyncNotFound("VC", VC_SEARCH))
    );
}

#[test]
fn truncated_handshakes_wait_and_never_finish() {
    let lookup = served();
    let mut r = Receiver::new(Encryption::Prefer, &lookup, xb());
    let mut wire = hex(YA);
    wire.extend(hex(STEP3));
    for cut in [0, 50, KEY_LEN, KEY_LEN + 20, KEY_LEN + 45, wire.len() - 1] {
        let mut r2 = Receiver::new(Encryption::Prefer, &lookup, xb());
        assert_eq!(r2.handle_input(&wire[..cut]), Ok(cut));
        assert!(!r2.is_done());
        assert!(r2.finish().is_none());
    }
    assert_eq!(r.handle_input(&wire), Ok(wire.len()));
    let mut i = Initiator::new(IH, 3, IA.to_vec(), xa());
    assert_eq!(i.handle_input(&hex(YB)[..95]), Ok(95));
    assert!(i.finish().is_none());
}

#[test]
fn degenerate_public_keys_are_refused() {
    let p = prime().to_bytes_be();
    let mut p_minus_1 = p.clone();
    *p_minus_1.last_mut().unwrap() -= 1;
    let mut one = [0u8; KEY_LEN];
    one[KEY_LEN - 1] = 1;
    for y in [
        [0u8; KEY_LEN].to_vec(),
        one.to_vec(),
        p_minus_1,
        p,
        vec![0xFF; KEY_LEN],
    ] {
        let lookup = served();
        let mut r = Receiver::new(Encryption::Prefer, &lookup, xb());
        assert_eq!(r.handle_input(&y), Err(MseError::BadPublicKey));
        let mut i = Initiator::new(IH, 3, vec![], xa());
        assert_eq!(i.handle_input(&y), Err(MseError::BadPublicKey));
    }
}

#[test]
fn unknown_torrent_and_bad_vc_are_refused() {
    let nothing = |_: &[u8; 20]| None;
    let mut r = Receiver::new(Encryption::Prefer, &nothing, xb());
    r.handle_input(&hex(YA)).unwrap();
    assert_eq!(r.handle_input(&hex(STEP3)), Err(MseError::UnknownTorrent));

    let lookup = served();
    let mut r = Receiver::new(Encryption::Prefer, &lookup, xb());
    r.handle_input(&hex(YA)).unwrap();
    let mut wire = hex(STEP3);
    wire[40] ^= 1; // first byte of ENCRYPT(VC)
    assert_eq!(r.handle_input(&wire), Err(MseError::BadVc));
}

/// Step 3 as an initiator with key Xa would send it, with chosen fields.
fn step3(provide: u32, pad_c: u16) -> Vec<u8> {
    let s: [u8; KEY_LEN] = hex(S).try_into().unwrap();
    let mut out = hash(&[b"req1", &s]).to_vec();
    let req3 = hash(&[b"req3", &s]);
    out.extend(req2_hash(&IH).iter().zip(req3).map(|(a, b)| a ^ b));
    let mut enc = VC.to_vec();
    enc.extend(provide.to_be_bytes());
    enc.extend(pad_c.to_be_bytes());
    keystream(b"keyA", &s, &IH).apply_keystream(&mut enc);
    out.extend(enc);
    out
}

/// Step 4 as a receiver with key Xb would send it.
fn step4(select: u32, pad_d: u16) -> Vec<u8> {
    let s: [u8; KEY_LEN] = hex(S).try_into().unwrap();
    let mut enc = VC.to_vec();
    enc.extend(select.to_be_bytes());
    enc.extend(pad_d.to_be_bytes());
    keystream(b"keyB", &s, &IH).apply_keystream(&mut enc);
    enc
}

#[test]
fn step3_helper_matches_the_vectors() {
    // The helper below the hostile tests builds the same bytes as the
    // independent vectors (up to len(IA)).
    assert_eq!(step3(3, 0), hex(STEP3)[..54]);
    assert_eq!(step4(2, 0), hex(STEP4));
}

#[test]
fn pads_longer_than_512_are_refused() {
    let lookup = served();
    let mut r = Receiver::new(Encryption::Prefer, &lookup, xb());
    r.handle_input(&hex(YA)).unwrap();
    assert_eq!(
        r.handle_input(&step3(3, 513)),
        Err(MseError::PadTooLong(513))
    );
    let mut i = Initiator::new(IH, 3, IA.to_vec(), xa());
    i.handle_input(&hex(YB)).unwrap();
    assert_eq!(
        i.handle_input(&step4(2, 513)),
        Err(MseError::PadTooLong(513))
    );
}

#[test]
fn initiator_refuses_a_selection_it_did_not_offer() {
    for (provide, select) in [(CRYPTO_RC4, CRYPTO_PLAINTEXT), (3, 3), (3, 0), (3, 4)] {
        let mut i = Initiator::new(IH, provide, vec![], xa());
        i.handle_input(&hex(YB)).unwrap();
        assert_eq!(
            i.handle_input(&step4(select, 0)),
            Err(MseError::BadSelect(select))
        );
    }
}

#[test]
fn policy_selection() {
    use Encryption::*;
    assert_eq!(Prefer.select(3), Some(CRYPTO_PLAINTEXT));
    assert_eq!(Prefer.select(2), Some(CRYPTO_RC4));
    assert_eq!(Require.select(3), Some(CRYPTO_RC4));
    assert_eq!(Prefer.select(1), Some(CRYPTO_PLAINTEXT));
    assert_eq!(Require.select(1), None);
    assert_eq!(Disable.select(2), None);
    assert_eq!(Disable.select(3), Some(CRYPTO_PLAINTEXT));
    assert_eq!(Prefer.select(0), None);
    for p in [Prefer, Require, Disable] {
        assert_eq!(p.to_string().parse::<Encryption>(), Ok(p));
    }
    assert!("rc4".parse::<Encryption>().is_err());
}

// --- The async driver and the stream, over in-memory pipes. ---

const LIMIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Dials with `out` and accepts with `inn`; exchanges a megabyte each way.
async fn talk(out: Encryption, inn: Encryption) -> Result<bool, SetupError> {
    let (a, b) = tokio::io::duplex(16 * 1024);
    let lookup = served();
    let dial = initiate(a, IH, out, IA.to_vec(), LIMIT);
    let answer = accept_any(b, &lookup, inn, LIMIT);
    let (a, b) = tokio::join!(dial, answer);
    let (mut a, b) = (a?, b?);
    assert_eq!(b.info_hash, Some(IH));
    let mut b = b.stream;
    assert_eq!(a.is_encrypted(), b.is_encrypted());
    let mut first = [0u8; 20];
    b.read_exact(&mut first).await.unwrap();
    assert_eq!(first, IA, "IA comes out of the stream first");
    let data: Vec<u8> = (0..1 << 20).map(|i: u32| (i % 251) as u8).collect();
    let (d1, d2) = (data.clone(), data.clone());
    let w = async {
        a.write_all(&d1).await.unwrap();
        a.flush().await.unwrap();
        let mut back = vec![0u8; d1.len()];
        a.read_exact(&mut back).await.unwrap();
        back
    };
    let r = async {
        let mut got = vec![0u8; d2.len()];
        b.read_exact(&mut got).await.unwrap();
        b.write_all(&got).await.unwrap();
        b.flush().await.unwrap();
        got
    };
    let (back, got) = tokio::join!(w, r);
    assert_eq!(got, data);
    assert_eq!(back, data);
    Ok(a.is_encrypted())
}

#[tokio::test]
async fn streams_carry_data_both_ways_for_each_policy() {
    use Encryption::*;
    // Both allow plaintext: obfuscated handshake, plaintext payload.
    assert!(!talk(Prefer, Prefer).await.unwrap());
    assert!(talk(Require, Require).await.unwrap());
    assert!(talk(Require, Prefer).await.unwrap());
    assert!(talk(Prefer, Require).await.unwrap());
    // An initiator that only offers plaintext gets an obfuscated header
    // and a plaintext stream.
    assert!(!talk(Disable, Prefer).await.unwrap());
}

#[tokio::test]
async fn require_refuses_plaintext_only_offers_and_handshakes() {
    let r = talk(Encryption::Disable, Encryption::Require).await;
    assert!(matches!(
        r,
        Err(SetupError::Protocol(MseError::NoCommonMethod { .. })) | Err(SetupError::Closed)
    ));
    // A plaintext BitTorrent handshake under require.
    let (mut a, b) = tokio::io::duplex(1024);
    a.write_all(IA).await.unwrap();
    let lookup = served();
    let r = accept_any(b, &lookup, Encryption::Require, LIMIT).await;
    assert!(matches!(r, Err(SetupError::PlaintextRefused)), "{r:?}");
}

#[tokio::test]
async fn plaintext_handshake_is_replayed_whole() {
    let (mut a, b) = tokio::io::duplex(1024);
    let mut hs = IA.to_vec();
    hs.extend([0u8; 48]);
    a.write_all(&hs).await.unwrap();
    let lookup = served();
    let acc = accept_any(b, &lookup, Encryption::Prefer, LIMIT)
        .await
        .unwrap();
    assert_eq!(acc.info_hash, None);
    let mut s = acc.stream;
    assert!(!s.is_encrypted());
    let mut got = vec![0u8; 68];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(got, hs);
}

#[tokio::test]
async fn disable_refuses_mse() {
    let (a, b) = tokio::io::duplex(4096);
    let lookup = served();
    let dial = initiate(a, IH, Encryption::Prefer, vec![], LIMIT);
    let answer = accept_any(b, &lookup, Encryption::Disable, LIMIT);
    let (_, r) = tokio::join!(dial, answer);
    assert!(matches!(r, Err(SetupError::EncryptedRefused)), "{r:?}");
}

#[tokio::test(start_paused = true)]
async fn a_silent_peer_times_out() {
    let (a, _b) = tokio::io::duplex(4096);
    let t0 = tokio::time::Instant::now();
    let r = initiate(a, IH, Encryption::Prefer, vec![], LIMIT).await;
    assert!(matches!(r, Err(SetupError::Timeout)), "{r:?}");
    assert!(t0.elapsed() >= LIMIT);
    let (_a, b) = tokio::io::duplex(4096);
    let lookup = served();
    let r = accept_any(b, &lookup, Encryption::Prefer, LIMIT).await;
    assert!(matches!(r, Err(SetupError::Timeout)), "{r:?}");
}

#[tokio::test]
async fn garbage_and_hangups_are_errors() {
    let lookup = served();
    let (mut a, b) = tokio::io::duplex(8192);
    a.write_all(&[0x42; 4000]).await.unwrap();
    let r = accept_any(b, &lookup, Encryption::Prefer, LIMIT).await;
    assert!(
        matches!(r, Err(SetupError::Protocol(MseError::SyncNotFound(..)))),
        "{r:?}"
    );
    // A plaintext-only peer reads our Ya and hangs up.
    let (a, mut b) = tokio::io::duplex(8192);
    let peer = tokio::spawn(async move {
        let mut buf = [0u8; 68];
        let _ = b.read_exact(&mut buf).await;
    });
    let r = initiate(a, IH, Encryption::Prefer, vec![], LIMIT).await;
    assert!(matches!(r, Err(SetupError::Closed)), "{r:?}");
    peer.await.unwrap();
    // Truncated: a few bytes, then EOF.
    let (mut a, b) = tokio::io::duplex(8192);
    a.write_all(&[1, 2, 3]).await.unwrap();
    drop(a);
    let r = accept_any(b, &lookup, Encryption::Prefer, LIMIT).await;
    assert!(matches!(r, Err(SetupError::Closed)), "{r:?}");
}

/// RC4 throughput, the cost of `--encryption` on every byte. Run with
/// `cargo test --release --lib rc4_throughput -- --ignored --nocapture`.
#[test]
#[ignore = "benchmark"]
fn rc4_throughput() {
    let s: [u8; KEY_LEN] = hex(S).try_into().unwrap();
    let mut rc4 = keystream(b"keyA", &s, &IH);
    let mut buf = vec![0u8; 64 * 1024];
    let total = 1usize << 30;
    let t0 = std::time::Instant::now();
    for _ in 0..total / buf.len() {
        rc4.apply_keystream(&mut buf);
    }
    let secs = t0.elapsed().as_secs_f64();
    std::hint::black_box(&buf);
    println!(
        "rc4: {:.0} MiB/s on one core",
        total as f64 / secs / (1 << 20) as f64
    );
    let t0 = std::time::Instant::now();
    for _ in 0..100 {
        std::hint::black_box(public_key(&xa().private_key));
    }
    println!("dh: {:.2} ms per modexp", t0.elapsed().as_secs_f64() * 10.0);
}
