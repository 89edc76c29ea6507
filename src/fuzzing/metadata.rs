//! The `metadata` fuzz target: the ut_metadata (BEP 9) messages and the
//! assembler that fetches the info dictionary from several peers.

use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use bytes::Bytes;

use super::sha1;
use crate::id::InfoHash;
use crate::peer::metadata::{
    METADATA_PIECE_LEN, MetadataAssembler, MetadataError, MetadataMessage, PeerKey,
    REREQUEST_AFTER, serve_piece,
};

/// One step of the ut_metadata scenario the fuzzer writes.
#[derive(Debug, Arbitrary)]
enum Event {
    /// The peer's extended handshake announces a size.
    Size { peer: u8, size: SizeChoice },
    /// The peer's connection asks what to request and the peer answers
    /// (or not) as its role dictates.
    Ask { peer: u8, answer: Answer },
    /// Unsolicited data.
    Data {
        peer: u8,
        piece: u16,
        total: SizeChoice,
        body: Body,
    },
    /// The peer rejects a piece.
    Reject { peer: u8, piece: u16 },
    /// The peer's ut_metadata message did not decode.
    Junk { peer: u8 },
    /// The peer disconnects.
    Gone { peer: u8 },
    /// Time passes.
    Wait { millis: u16 },
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum SizeChoice {
    True,
    Near(i8),
    Any(u32),
}

#[derive(Debug, Arbitrary, Clone, Copy)]
enum Answer {
    Serve,
    Silent,
    Reject,
}

#[derive(Debug, Arbitrary)]
enum Body {
    True,
    Flipped(u16),
    Bytes(Vec<u8>),
}

/// Peers below this key are honest: they announce the true size and only
/// ever send the right bytes, whatever the scenario says.
const HONEST: u8 = 3;

/// What liars send.
static JUNK: [u8; METADATA_PIECE_LEN] = [0xEE; METADATA_PIECE_LEN];

/// Peer keys are taken modulo this, so scenarios keep meeting the same peers.
const PEERS: u8 = 24;

/// (f) ut_metadata messages, and the assembler driven by a fuzzer-chosen
/// sequence of events from honest and lying peers.
///
/// Properties: the bookkeeping holds after every event; only the true
/// dictionary is ever returned; an honest peer is never marked bad; and if
/// an honest peer is still connected at the end, the metadata completes
/// within a minute per connected peer of everyone asking (liars silent).
pub fn metadata(data: &[u8]) {
    if let Ok(m) = MetadataMessage::decode(data) {
        assert_eq!(MetadataMessage::decode(&m.encode()), Ok(m));
    }
    let mut u = Unstructured::new(data);
    let Ok(len) = u.int_in_range(1..=4 * METADATA_PIECE_LEN as u32) else {
        return;
    };
    let (info, hash) = metadata_info(len);
    let info = &info[..];
    let true_size = len;
    let mut a = MetadataAssembler::new(hash);
    let base = Instant::now();
    let mut now = base;
    let mut live = std::collections::BTreeSet::new();
    let mut sizes = std::collections::BTreeMap::new();
    let mut done = false;
    let size_of = |c: SizeChoice| match c {
        SizeChoice::True => true_size,
        SizeChoice::Near(d) => true_size.saturating_add_signed(i32::from(d)),
        SizeChoice::Any(s) => s,
    };
    let piece_of = |p: u32| match serve_piece(info, p) {
        Some(MetadataMessage::Data { data, .. }) => data,
        _ => Bytes::new(),
    };
    let check = |r: Result<Option<Bytes>, MetadataError>, done: &mut bool| {
        if let Ok(Some(bytes)) = r {
            assert_eq!(&bytes[..], info);
            *done = true;
        }
    };
    let mut events = 0;
    while let Ok(mut ev) = Event::arbitrary(&mut u) {
        if let Event::Size { peer, .. }
        | Event::Ask { peer, .. }
        | Event::Data { peer, .. }
        | Event::Reject { peer, .. }
        | Event::Junk { peer }
        | Event::Gone { peer } = &mut ev
        {
            *peer %= PEERS;
        }
        events += 1;
        if events > 160 {
            break;
        }
        match ev {
            Event::Size { peer, size } => {
                let size = if peer < HONEST {
                    true_size
                } else {
                    size_of(size)
                };
                if a.on_peer_size(PeerKey::from(peer), size).is_ok() {
                    live.insert(peer);
                    sizes.insert(peer, size);
                }
            }
            Event::Ask { peer, answer } => {
                let key = PeerKey::from(peer);
                // A connection asks a few times per message it gets.
                for _ in 0..8 {
                    let Some(p) = a.next_request(key, now) else {
                        break;
                    };
                    match (peer < HONEST, answer) {
                        (true, Answer::Serve) => {
                            check(a.on_data(key, p, true_size, &piece_of(p), now), &mut done)
                        }
                        (_, Answer::Reject) => a.on_reject(key, p),
                        (false, Answer::Serve) => {
                            // A liar serves right-sized junk for its size.
                            let size = sizes.get(&peer).copied().unwrap_or(true_size);
                            let n = piece_len(size, p);
                            let junk = JUNK.get(..n).unwrap_or_default();
                            check(a.on_data(key, p, size, junk, now), &mut done)
                        }
                        (_, Answer::Silent) => break,
                    }
                    if done {
                        break;
                    }
                }
            }
            Event::Data {
                peer,
                piece,
                total,
                body,
            } => {
                let key = PeerKey::from(peer);
                let piece = u32::from(piece);
                let (total, bytes) = if peer < HONEST {
                    (true_size, piece_of(piece).to_vec())
                } else {
                    let bytes = match body {
                        Body::True => piece_of(piece).to_vec(),
                        Body::Flipped(at) => {
                            let mut b = piece_of(piece).to_vec();
                            let n = b.len();
                            if let Some(x) = b.get_mut(usize::from(at) % n.max(1)) {
                                *x ^= 1;
                            }
                            b
                        }
                        Body::Bytes(b) => b,
                    };
                    (size_of(total), bytes)
                };
                if peer < HONEST && bytes.is_empty() {
                    continue; // Honest peers do not send pieces that do not exist.
                }
                let r = a.on_data(key, piece, total, &bytes, now);
                if peer < HONEST {
                    assert!(
                        !matches!(
                            r,
                            Err(MetadataError::WrongPieceLength { .. }
                                | MetadataError::PieceOutOfRange { .. }
                                | MetadataError::TotalSizeMismatch { .. })
                        ),
                        "{r:?}"
                    );
                }
                check(r, &mut done);
            }
            Event::Reject { peer, piece } => a.on_reject(PeerKey::from(peer), u32::from(piece)),
            Event::Junk { peer } => {
                if peer >= HONEST {
                    a.on_peer_junk(PeerKey::from(peer));
                }
            }
            Event::Gone { peer } => {
                a.on_peer_gone(PeerKey::from(peer));
                live.remove(&peer);
                sizes.remove(&peer);
            }
            Event::Wait { millis } => now += Duration::from_millis(u64::from(millis)),
        }
        a.check_invariants();
        for p in 0..HONEST {
            assert!(!a.is_bad(PeerKey::from(p)), "honest peer {p} marked bad");
        }
        if done {
            return;
        }
    }
    // Liveness: with an honest peer connected, rounds of everyone asking
    // (liars silent), 5 s apart, finish the job; each liar may cost about
    // two request timeouts (its own turn and a stalled round after it), so
    // the bound is a minute per connected peer.
    if !live.iter().any(|p| *p < HONEST) {
        return;
    }
    for _round in 0..12 * (live.len() + 2) {
        for &peer in &live {
            let key = PeerKey::from(peer);
            while let Some(p) = a.next_request(key, now) {
                if peer >= HONEST {
                    continue; // Silent: the request just stays pending.
                }
                check(a.on_data(key, p, true_size, &piece_of(p), now), &mut done);
                if done {
                    return;
                }
            }
        }
        a.check_invariants();
        now += REREQUEST_AFTER;
    }
    panic!("an honest peer is connected but the metadata did not complete");
}

/// The true dictionary of `len` bytes and its hash. Mutations mostly keep
/// the length, so the last few are cached: hashing up to 64 KiB on every
/// run was most of this target's time.
fn metadata_info(len: u32) -> (std::rc::Rc<[u8]>, InfoHash) {
    use std::cell::RefCell;
    use std::collections::HashMap;
    type Cache = HashMap<u32, (std::rc::Rc<[u8]>, InfoHash)>;
    thread_local!(static CACHE: RefCell<Cache> = RefCell::new(HashMap::new()));
    CACHE.with(|c| {
        let mut c = c.borrow_mut();
        if let Some(hit) = c.get(&len) {
            return hit.clone();
        }
        if c.len() >= 64 {
            c.clear();
        }
        let info: std::rc::Rc<[u8]> = (0..len).map(|i| (i % 251) as u8 ^ 0x55).collect();
        let hash = InfoHash(sha1(&info));
        c.insert(len, (info.clone(), hash));
        (info, hash)
    })
}

/// Length of `piece` for `size` bytes (0 past the end).
fn piece_len(size: u32, piece: u32) -> usize {
    let start = (piece as usize).saturating_mul(METADATA_PIECE_LEN);
    (size as usize)
        .saturating_sub(start)
        .min(METADATA_PIECE_LEN)
}
