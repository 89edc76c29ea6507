//! Message Stream Encryption (MSE, also "protocol encryption", PE): the
//! obfuscated handshake Vuze introduced and libtorrent, Transmission and
//! most other clients speak, so that traffic shaping cannot match the
//! plaintext `\x13BitTorrent protocol` header.
//!
//! This file is the **sans-IO** handshake, both roles: bytes in
//! ([`Initiator::handle_input`], [`Receiver::handle_input`]) and bytes out
//! ([`Initiator::take_output`]), then an [`Established`] with the RC4 pair
//! (or none when plaintext was selected). No sockets, no clocks: the
//! deadline and the socket belong to the async driver in [`io`], the
//! encrypting stream to [`stream`].
//!
//! The exchange (A dials, B answers; `HASH` is SHA-1, `S` the shared
//! Diffie-Hellman secret, `SKEY` the torrent's info-hash):
//!
//! 1. A→B: `Ya`, `PadA`
//! 2. B→A: `Yb`, `PadB`
//! 3. A→B: `HASH('req1', S)`, `HASH('req2', SKEY) xor HASH('req3', S)`,
//!    `ENCRYPT(VC, crypto_provide, len(PadC), PadC, len(IA))`, `ENCRYPT(IA)`
//! 4. B→A: `ENCRYPT(VC, crypto_select, len(PadD), PadD)`, then the payload
//!
//! The pads have unknown lengths (0 to 512), so each side finds its place
//! again by searching for a marker: B for `HASH('req1', S)` within
//! [`REQ1_SEARCH`] bytes after `Ya`, A for `ENCRYPT(VC)` within
//! [`VC_SEARCH`] bytes after `Yb`. Everything a peer can make us hold is
//! bounded by those limits, [`MAX_PAD`] and the 16-bit `len(IA)`: a peer
//! that sends garbage gets a typed [`MseError`] after at most a few hundred
//! bytes, and one that stalls is the driver's deadline's business.
//!
//! The receiver learns which torrent the initiator wants only from
//! `HASH('req2', SKEY)`; it asks a caller-supplied lookup (see
//! [`req2_hash`]) so one listener can serve many torrents.

pub mod io;
pub mod stream;

use crate::id::InfoHash;
use num_bigint::BigUint;
use rc4::{KeyInit, Rc4, StreamCipher};
use sha1::{Digest, Sha1};

pub use io::{Accepted, SetupError, accept_any, initiate, respond};
pub use stream::MseStream;

/// Bytes of a Diffie-Hellman public key (768 bits, big-endian).
pub const KEY_LEN: usize = 96;
/// Longest PadA, PadB, PadC and PadD the spec allows.
pub const MAX_PAD: usize = 512;
/// B looks for `HASH('req1', S)` within this many bytes after `Ya`:
/// the longest PadA plus the hash.
pub const REQ1_SEARCH: usize = MAX_PAD + 20;
/// A looks for `ENCRYPT(VC)` within this many bytes after `Yb`: the
/// longest PadB plus the 8-byte VC.
pub const VC_SEARCH: usize = MAX_PAD + 8;
/// The RC4 keystream bytes thrown away before use (the start of RC4's
/// keystream is biased, so the spec discards it).
pub const RC4_DISCARD: usize = 1024;
/// `crypto_provide` / `crypto_select` bit: the payload stays plaintext
/// (only the handshake is obfuscated).
pub const CRYPTO_PLAINTEXT: u32 = 0x01;
/// `crypto_provide` / `crypto_select` bit: the payload is RC4-encrypted.
pub const CRYPTO_RC4: u32 = 0x02;

/// The 768-bit prime of the spec (G = 2).
const P_HEX: &[u8] = b"FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1\
29024E088A67CC74020BBEA63B139B22514A08798E3404DD\
EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245\
E485B576625E7EC6F44C42E9A63A36210000000000090563";

/// Verification constant: eight zero bytes, sent encrypted.
const VC: [u8; 8] = [0; 8];

/// What `--encryption` asks of every connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Encryption {
    /// Outgoing: MSE offering RC4 and plaintext, falling back to a
    /// plaintext handshake once if the peer does not answer MSE.
    /// Incoming: plaintext and MSE accepted. Either way the payload is
    /// RC4 only when the peer insists (see [`Encryption::select`]).
    #[default]
    Prefer,
    /// RC4-encrypted MSE connections only, in both directions.
    Require,
    /// Plaintext BitTorrent handshakes only; MSE is neither sent nor
    /// accepted.
    Disable,
}

impl Encryption {
    /// The `crypto_provide` bits an initiator under this policy sends.
    pub fn provide(self) -> u32 {
        match self {
            Encryption::Prefer => CRYPTO_RC4 | CRYPTO_PLAINTEXT,
            Encryption::Require => CRYPTO_RC4,
            Encryption::Disable => CRYPTO_PLAINTEXT,
        }
    }

    /// What a receiver under this policy selects from `provide`. `Prefer`
    /// takes plaintext when the initiator allows it (as libtorrent does
    /// unless `prefer_rc4`): the handshake is still obfuscated, and RC4 on
    /// every byte costs more CPU than the whole transfer otherwise does
    /// (about 240 MiB/s a core); RC4 when that is all the peer offers.
    /// `Require` takes RC4 only, `Disable` plaintext only.
    pub fn select(self, provide: u32) -> Option<u32> {
        let rc4 = (provide & CRYPTO_RC4 != 0).then_some(CRYPTO_RC4);
        let plain = (provide & CRYPTO_PLAINTEXT != 0).then_some(CRYPTO_PLAINTEXT);
        match self {
            Encryption::Prefer => plain.or(rc4),
            Encryption::Require => rc4,
            Encryption::Disable => plain,
        }
    }
}

impl std::str::FromStr for Encryption {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "prefer" => Ok(Encryption::Prefer),
            "require" => Ok(Encryption::Require),
            "disable" => Ok(Encryption::Disable),
            _ => Err(format!("{s}: expected prefer, require or disable")),
        }
    }
}

impl std::fmt::Display for Encryption {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Encryption::Prefer => "prefer",
            Encryption::Require => "require",
            Encryption::Disable => "disable",
        })
    }
}

/// Why an MSE handshake failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MseError {
    /// The peer's public key is 0, 1, P-1 or not below P: no usable secret.
    #[error("degenerate Diffie-Hellman public key")]
    BadPublicKey,
    /// The sync marker did not appear within the pad limit.
    #[error("no {0} sync marker within {1} bytes")]
    SyncNotFound(&'static str, usize),
    /// `HASH('req2', SKEY)` matches no torrent we serve.
    #[error("peer asks for a torrent we do not serve")]
    UnknownTorrent,
    /// The decrypted verification constant is not zero: wrong key.
    #[error("bad verification constant")]
    BadVc,
    /// A pad longer than [`MAX_PAD`].
    #[error("pad of {0} bytes (at most {MAX_PAD})")]
    PadTooLong(usize),
    /// Nothing in `crypto_provide` is allowed by our policy.
    #[error("no common crypto method (peer offers {provide:#x}, we allow {allowed:#x})")]
    NoCommonMethod {
        /// The peer's `crypto_provide`.
        provide: u32,
        /// What our policy allows.
        allowed: u32,
    },
    /// `crypto_select` is not exactly one of the methods we offered.
    #[error("peer selected crypto method {0:#x}, which we did not offer")]
    BadSelect(u32),
    /// Input after the handshake finished (a driver bug, not a peer's).
    #[error("handshake already finished")]
    Finished,
}

/// The RC4 keystreams of an established connection, each already past
/// the handshake bytes it covered.
pub struct Rc4Pair {
    /// Encrypts what we send.
    pub encrypt: Rc4,
    /// Decrypts what we receive.
    pub decrypt: Rc4,
}

impl std::fmt::Debug for Rc4Pair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rc4Pair")
    }
}

/// A finished handshake.
#[derive(Debug)]
pub struct Established {
    /// The torrent: ours as initiator, the one the initiator named as
    /// receiver.
    pub info_hash: InfoHash,
    /// The keystreams when RC4 was selected; `None` for plaintext.
    pub cipher: Option<Rc4Pair>,
    /// Receiver only: the initiator's initial payload (IA), decrypted;
    /// the first bytes of its payload stream (usually its BitTorrent
    /// handshake).
    pub initial_payload: Vec<u8>,
}

impl Established {
    /// The outcome of either side: the keystreams (keyed during the
    /// handshake to read its encrypted part) are kept only when RC4 was
    /// selected for the payload.
    fn new(info_hash: InfoHash, selected: u32, cipher: Option<Rc4Pair>, ia: Vec<u8>) -> Self {
        Established {
            info_hash,
            cipher: cipher.filter(|_| selected == CRYPTO_RC4),
            initial_payload: ia,
        }
    }
}

/// Our side's random choices, passed in so tests can fix them.
#[derive(Clone)]
pub struct Secrets {
    /// The 160-bit Diffie-Hellman private key.
    pub private_key: [u8; 20],
    /// PadA or PadB: random bytes after our public key (at most
    /// [`MAX_PAD`]).
    pub pad: Vec<u8>,
}

impl Secrets {
    /// A random private key and up to `max_pad` random pad bytes. A short
    /// pad keeps the handshake in one segment; any length up to
    /// [`MAX_PAD`] is legal.
    pub fn random(max_pad: usize) -> Self {
        use rand::Rng;
        let mut rng = rand::rng();
        let mut private_key = [0u8; 20];
        rng.fill(&mut private_key);
        let len = rng.random_range(0..=max_pad.min(MAX_PAD));
        let mut pad = vec![0u8; len];
        rng.fill(&mut pad[..]);
        Secrets { private_key, pad }
    }
}

fn prime() -> BigUint {
    BigUint::parse_bytes(P_HEX, 16).expect("the spec's prime is valid hex")
}

/// `2^x mod P` as 96 big-endian bytes.
pub fn public_key(private_key: &[u8; 20]) -> [u8; KEY_LEN] {
    let y = BigUint::from(2u32).modpow(&BigUint::from_bytes_be(private_key), &prime());
    to_key_bytes(&y)
}

/// `their^x mod P` as 96 big-endian bytes: the shared secret `S`.
pub fn shared_secret(
    private_key: &[u8; 20],
    their_public: &[u8; KEY_LEN],
) -> Result<[u8; KEY_LEN], MseError> {
    let p = prime();
    let y = BigUint::from_bytes_be(their_public);
    // 0, 1 and P-1 give secrets anyone can guess; >= P is not a residue.
    if y <= BigUint::from(1u32) || y >= &p - 1u32 {
        return Err(MseError::BadPublicKey);
    }
    Ok(to_key_bytes(
        &y.modpow(&BigUint::from_bytes_be(private_key), &p),
    ))
}

fn to_key_bytes(n: &BigUint) -> [u8; KEY_LEN] {
    let b = n.to_bytes_be();
    let mut out = [0u8; KEY_LEN];
    // Every value is below P < 2^768, so it fits; short values are left-padded.
    out[KEY_LEN - b.len()..].copy_from_slice(&b);
    out
}

/// SHA-1 of the concatenation of `parts`.
pub(crate) fn hash(parts: &[&[u8]]) -> [u8; 20] {
    let mut h = Sha1::new();
    for p in parts {
        h.update(p);
    }
    h.finalize().into()
}

/// A receiver's way to find the torrent an initiator asks for: given
/// `HASH('req2', SKEY)`, the info-hash whose [`req2_hash`] it is.
pub type Lookup<'a> = dyn Fn(&[u8; 20]) -> Option<InfoHash> + Sync + 'a;

/// `HASH('req2', SKEY)`: what a receiver's lookup is asked about. A
/// session serving many torrents keeps a map from this to the info-hash.
pub fn req2_hash(info_hash: &InfoHash) -> [u8; 20] {
    hash(&[b"req2", &info_hash.0])
}

/// A lookup over a list of served torrents, for receivers with few.
pub fn lookup_in(served: &[InfoHash]) -> impl Fn(&[u8; 20]) -> Option<InfoHash> + Sync + '_ {
    move |h| served.iter().find(|ih| req2_hash(ih) == *h).copied()
}

/// The RC4 keystream `HASH(label, S, SKEY)` with the first 1024 bytes
/// discarded.
pub fn keystream(label: &[u8; 4], s: &[u8; KEY_LEN], skey: &InfoHash) -> Rc4 {
    let key = hash(&[label, s, &skey.0]);
    let mut rc4 = Rc4::new_from_slice(&key).expect("a 20-byte key is valid for RC4");
    let mut discard = [0u8; RC4_DISCARD];
    rc4.apply_keystream(&mut discard);
    rc4
}

/// Copies from `data` into `buf` until it holds `need` bytes; returns how
/// many bytes of `data` were taken.
fn fill(buf: &mut Vec<u8>, need: usize, data: &[u8]) -> usize {
    let n = need.saturating_sub(buf.len()).min(data.len());
    buf.extend_from_slice(&data[..n]);
    n
}

/// A search for a marker of unknown offset in a byte stream, taking no
/// byte past the marker's end (those belong to what follows it) and none
/// past its limit.
#[derive(Debug)]
struct Resync {
    buf: Vec<u8>,
    /// The earliest offset where the marker may still start.
    from: usize,
    /// The marker must start at or before this offset.
    max_start: usize,
}

impl Resync {
    fn new(max_start: usize) -> Self {
        Resync {
            buf: Vec::new(),
            from: 0,
            max_start,
        }
    }

    /// Takes bytes from `data`; returns how many, and whether the marker
    /// now ends the buffer.
    fn feed(
        &mut self,
        marker: &[u8],
        data: &[u8],
        what: &'static str,
    ) -> Result<(usize, bool), MseError> {
        let mut taken = 0;
        loop {
            // Skip starts where what we have contradicts the marker.
            while self.from < self.buf.len() {
                let tail = &self.buf[self.from..];
                let n = tail.len().min(marker.len());
                if tail[..n] == marker[..n] {
                    break;
                }
                self.from += 1;
            }
            if self.from > self.max_start {
                return Err(MseError::SyncNotFound(what, self.max_start + marker.len()));
            }
            if self.buf.len() == self.from + marker.len() {
                return Ok((taken, true));
            }
            let n = fill(&mut self.buf, self.from + marker.len(), &data[taken..]);
            if n == 0 {
                return Ok((taken, false));
            }
            taken += n;
        }
    }
}

/// Where the initiator is.
#[derive(Debug)]
enum IState {
    /// Reading `Yb`.
    Yb(Vec<u8>),
    /// Looking for `ENCRYPT(VC)` after PadB.
    SyncVc(Resync),
    /// Reading `crypto_select` and `len(PadD)` (6 encrypted bytes).
    Select(Vec<u8>),
    /// Skipping PadD: bytes left.
    PadD(usize),
    Done,
}

/// The dialling side of the handshake.
pub struct Initiator {
    info_hash: InfoHash,
    provide: u32,
    private_key: [u8; 20],
    /// The initial payload sent with step 3 (our BitTorrent handshake).
    ia: Vec<u8>,
    out: Vec<u8>,
    state: IState,
    /// Set once `S` is known.
    cipher: Option<Rc4Pair>,
    /// The encrypted VC we look for.
    vc_marker: [u8; 8],
    selected: u32,
}

impl std::fmt::Debug for Initiator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Initiator")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl Initiator {
    /// Starts a handshake for `info_hash` offering the `provide` bits
    /// ([`Encryption::provide`]); `ia` (at most 65535 bytes, usually our
    /// BitTorrent handshake) rides along with step 3 and saves a round
    /// trip. Step 1 is ready in [`Initiator::take_output`] at once.
    pub fn new(info_hash: InfoHash, provide: u32, ia: Vec<u8>, secrets: Secrets) -> Self {
        assert!(ia.len() <= usize::from(u16::MAX), "IA fits len(IA)");
        let mut out = public_key(&secrets.private_key).to_vec();
        out.extend_from_slice(&secrets.pad[..secrets.pad.len().min(MAX_PAD)]);
        Initiator {
            info_hash,
            provide,
            private_key: secrets.private_key,
            ia,
            out,
            state: IState::Yb(Vec::with_capacity(KEY_LEN)),
            cipher: None,
            vc_marker: [0; 8],
            selected: 0,
        }
    }

    /// Bytes to send, drained.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the handshake is over (see [`Initiator::finish`]).
    pub fn is_done(&self) -> bool {
        matches!(self.state, IState::Done)
    }

    /// The outcome, once [`Initiator::is_done`].
    pub fn finish(self) -> Option<Established> {
        if !self.is_done() {
            return None;
        }
        Some(Established::new(
            self.info_hash,
            self.selected,
            self.cipher,
            Vec::new(),
        ))
    }

    /// Feeds received bytes; returns how many were handshake. Bytes after
    /// the handshake's end are left untaken: they are payload (RC4 or
    /// plaintext as selected) for the stream.
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, MseError> {
        if self.is_done() && !data.is_empty() {
            return Err(MseError::Finished);
        }
        let mut at = 0;
        loop {
            let rest = &data[at..];
            match &mut self.state {
                IState::Yb(buf) => {
                    at += fill(buf, KEY_LEN, rest);
                    if buf.len() < KEY_LEN {
                        return Ok(at);
                    }
                    let mut yb = [0u8; KEY_LEN];
                    yb.copy_from_slice(buf);
                    self.on_yb(&yb)?;
                }
                IState::SyncVc(sync) => {
                    let (n, found) = sync.feed(&self.vc_marker, rest, "VC")?;
                    at += n;
                    if !found {
                        return Ok(at);
                    }
                    self.state = IState::Select(Vec::with_capacity(6));
                }
                IState::Select(buf) => {
                    let before = buf.len();
                    at += fill(buf, 6, rest);
                    let c = self.cipher.as_mut().expect("keyed after Yb");
                    c.decrypt.apply_keystream(&mut buf[before..]);
                    if buf.len() < 6 {
                        return Ok(at);
                    }
                    let select = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
                    let pad = usize::from(u16::from_be_bytes([buf[4], buf[5]]));
                    if select.count_ones() != 1 || select & self.provide == 0 {
                        return Err(MseError::BadSelect(select));
                    }
                    if pad > MAX_PAD {
                        return Err(MseError::PadTooLong(pad));
                    }
                    self.selected = select;
                    self.state = IState::PadD(pad);
                }
                IState::PadD(left) => {
                    let n = (*left).min(rest.len());
                    *left -= n;
                    at += n;
                    if let Some(c) = &mut self.cipher {
                        // PadD is encrypted: keep the keystream in step.
                        let mut scratch = [0u8; MAX_PAD];
                        c.decrypt.apply_keystream(&mut scratch[..n]);
                    }
                    if *left > 0 {
                        return Ok(at);
                    }
                    self.state = IState::Done;
                }
                IState::Done => {
                    return Ok(at);
                }
            }
        }
    }

    /// `Yb` arrived: derive the keys and send step 3.
    fn on_yb(&mut self, yb: &[u8; KEY_LEN]) -> Result<(), MseError> {
        let s = shared_secret(&self.private_key, yb)?;
        let mut encrypt = keystream(b"keyA", &s, &self.info_hash);
        let mut decrypt = keystream(b"keyB", &s, &self.info_hash);
        decrypt.apply_keystream(&mut self.vc_marker);
        self.out.extend_from_slice(&hash(&[b"req1", &s]));
        let req2 = req2_hash(&self.info_hash);
        let req3 = hash(&[b"req3", &s]);
        self.out
            .extend(req2.iter().zip(req3.iter()).map(|(a, b)| a ^ b));
        let start = self.out.len();
        self.out.extend_from_slice(&VC);
        self.out.extend_from_slice(&self.provide.to_be_bytes());
        // len(PadC) = 0: PadC is reserved and carries nothing.
        self.out.extend_from_slice(&0u16.to_be_bytes());
        let ia_len = u16::try_from(self.ia.len()).expect("checked in new");
        self.out.extend_from_slice(&ia_len.to_be_bytes());
        self.out.append(&mut self.ia);
        encrypt.apply_keystream(&mut self.out[start..]);
        self.cipher = Some(Rc4Pair { encrypt, decrypt });
        self.state = IState::SyncVc(Resync::new(MAX_PAD));
        Ok(())
    }
}

/// Where the receiver is.
#[derive(Debug)]
enum RState {
    /// Reading `Ya`.
    Ya(Vec<u8>),
    /// Looking for `HASH('req1', S)` after PadA.
    SyncReq1(Resync),
    /// Reading `HASH('req2', SKEY) xor HASH('req3', S)`.
    Req2(Vec<u8>),
    /// Reading `VC`, `crypto_provide`, `len(PadC)` (14 encrypted bytes).
    Provide(Vec<u8>),
    /// Skipping PadC: bytes left.
    PadC(usize),
    /// Reading `len(IA)`.
    IaLen(Vec<u8>),
    /// Reading IA: the bytes so far and the length.
    Ia(Vec<u8>, usize),
    Done,
}

/// The answering side of the handshake.
pub struct Receiver<'a> {
    policy: Encryption,
    private_key: [u8; 20],
    lookup: &'a Lookup<'a>,
    out: Vec<u8>,
    state: RState,
    s: [u8; KEY_LEN],
    req1: [u8; 20],
    pad: Vec<u8>,
    info_hash: Option<InfoHash>,
    cipher: Option<Rc4Pair>,
    provide: u32,
    selected: u32,
    ia: Vec<u8>,
}

impl std::fmt::Debug for Receiver<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Receiver")
            .field("state", &self.state)
            .finish_non_exhaustive()
    }
}

impl<'a> Receiver<'a> {
    /// Waits for an initiator's `Ya`. `lookup` maps `HASH('req2', SKEY)`
    /// to a torrent we serve ([`req2_hash`], [`lookup_in`]); `policy`
    /// decides `crypto_select`.
    pub fn new(policy: Encryption, lookup: &'a Lookup<'a>, secrets: Secrets) -> Self {
        let mut pad = secrets.pad;
        pad.truncate(MAX_PAD);
        Receiver {
            policy,
            private_key: secrets.private_key,
            lookup,
            out: Vec::new(),
            state: RState::Ya(Vec::with_capacity(KEY_LEN)),
            s: [0; KEY_LEN],
            req1: [0; 20],
            pad,
            info_hash: None,
            cipher: None,
            provide: 0,
            selected: 0,
            ia: Vec::new(),
        }
    }

    /// Bytes to send, drained.
    pub fn take_output(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.out)
    }

    /// Whether the handshake is over (see [`Receiver::finish`]).
    pub fn is_done(&self) -> bool {
        matches!(self.state, RState::Done)
    }

    /// The outcome, once [`Receiver::is_done`].
    pub fn finish(self) -> Option<Established> {
        if !self.is_done() {
            return None;
        }
        Some(Established::new(
            self.info_hash?,
            self.selected,
            self.cipher,
            self.ia,
        ))
    }

    /// Feeds received bytes; returns how many were handshake (the rest is
    /// payload after IA, for the stream).
    pub fn handle_input(&mut self, data: &[u8]) -> Result<usize, MseError> {
        if self.is_done() && !data.is_empty() {
            return Err(MseError::Finished);
        }
        let mut at = 0;
        loop {
            let rest = &data[at..];
            match &mut self.state {
                RState::Ya(buf) => {
                    at += fill(buf, KEY_LEN, rest);
                    if buf.len() < KEY_LEN {
                        return Ok(at);
                    }
                    let mut ya = [0u8; KEY_LEN];
                    ya.copy_from_slice(buf);
                    self.s = shared_secret(&self.private_key, &ya)?;
                    self.req1 = hash(&[b"req1", &self.s]);
                    self.out.extend_from_slice(&public_key(&self.private_key));
                    self.out.append(&mut self.pad);
                    self.state = RState::SyncReq1(Resync::new(MAX_PAD));
                }
                RState::SyncReq1(sync) => {
                    let (n, found) = sync.feed(&self.req1, rest, "req1")?;
                    at += n;
                    if !found {
                        return Ok(at);
                    }
                    self.state = RState::Req2(Vec::with_capacity(20));
                }
                RState::Req2(buf) => {
                    at += fill(buf, 20, rest);
                    if buf.len() < 20 {
                        return Ok(at);
                    }
                    let req3 = hash(&[b"req3", &self.s]);
                    let mut req2 = [0u8; 20];
                    for (i, b) in req2.iter_mut().enumerate() {
                        *b = buf[i] ^ req3[i];
                    }
                    let info_hash = (self.lookup)(&req2).ok_or(MseError::UnknownTorrent)?;
                    self.info_hash = Some(info_hash);
                    self.cipher = Some(Rc4Pair {
                        encrypt: keystream(b"keyB", &self.s, &info_hash),
                        decrypt: keystream(b"keyA", &self.s, &info_hash),
                    });
                    self.state = RState::Provide(Vec::with_capacity(14));
                }
                RState::Provide(buf) => {
                    let before = buf.len();
                    at += fill(buf, 14, rest);
                    let c = self.cipher.as_mut().expect("keyed after req2");
                    c.decrypt.apply_keystream(&mut buf[before..]);
                    if buf.len() < 14 {
                        return Ok(at);
                    }
                    if buf[..8] != VC {
                        return Err(MseError::BadVc);
                    }
                    self.provide = u32::from_be_bytes([buf[8], buf[9], buf[10], buf[11]]);
                    let pad = usize::from(u16::from_be_bytes([buf[12], buf[13]]));
                    if pad > MAX_PAD {
                        return Err(MseError::PadTooLong(pad));
                    }
                    self.state = RState::PadC(pad);
                }
                RState::PadC(left) => {
                    let n = (*left).min(rest.len());
                    *left -= n;
                    at += n;
                    let c = self.cipher.as_mut().expect("keyed after req2");
                    let mut scratch = [0u8; MAX_PAD];
                    c.decrypt.apply_keystream(&mut scratch[..n]);
                    if *left > 0 {
                        return Ok(at);
                    }
                    self.state = RState::IaLen(Vec::with_capacity(2));
                }
                RState::IaLen(buf) => {
                    let before = buf.len();
                    at += fill(buf, 2, rest);
                    let c = self.cipher.as_mut().expect("keyed after req2");
                    c.decrypt.apply_keystream(&mut buf[before..]);
                    if buf.len() < 2 {
                        return Ok(at);
                    }
                    let len = usize::from(u16::from_be_bytes([buf[0], buf[1]]));
                    self.state = RState::Ia(Vec::with_capacity(len), len);
                }
                RState::Ia(buf, len) => {
                    let before = buf.len();
                    at += fill(buf, *len, rest);
                    let c = self.cipher.as_mut().expect("keyed after req2");
                    // IA is always RC4: the initiator sent it before knowing
                    // crypto_select.
                    c.decrypt.apply_keystream(&mut buf[before..]);
                    if buf.len() < *len {
                        return Ok(at);
                    }
                    self.ia = std::mem::take(buf);
                    self.answer()?;
                }
                RState::Done => {
                    return Ok(at);
                }
            }
        }
    }

    /// Step 4: `ENCRYPT(VC, crypto_select, len(PadD), PadD)` with no PadD.
    fn answer(&mut self) -> Result<(), MseError> {
        let select = self
            .policy
            .select(self.provide)
            .ok_or(MseError::NoCommonMethod {
                provide: self.provide,
                allowed: self.policy.provide(),
            })?;
        self.selected = select;
        let start = self.out.len();
        self.out.extend_from_slice(&VC);
        self.out.extend_from_slice(&select.to_be_bytes());
        self.out.extend_from_slice(&0u16.to_be_bytes());
        let c = self.cipher.as_mut().expect("keyed after req2");
        c.encrypt.apply_keystream(&mut self.out[start..]);
        self.state = RState::Done;
        Ok(())
    }
}

#[cfg(test)]
mod tests;
