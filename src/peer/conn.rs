//! One task per peer connection: the only code that touches a peer's socket.
//!
//! The task owns the socket halves, a write buffer and the per-peer protocol
//! state. It asks the shared [`Picker`](crate::picker::Picker) what to request,
//! hands completed pieces to the verifier, serves requests from disk through
//! the blocking pool, and reports rates to the session. It never blocks on a
//! write: outgoing messages are encoded into `out` and drained by a `select!`
//! branch, so two peers uploading to each other cannot deadlock.

use super::codec::{CodecError, PeerCodec};
use super::extension::{ExtendedHandshake, HANDSHAKE_ID, LOCAL_UT_METADATA};
use super::handshake::{HANDSHAKE_LEN, Handshake, HandshakeError};
use super::message::{BlockRef, MAX_REQUEST_LEN, Message};
use super::metadata::{MetadataError, MetadataMessage, serve_piece};
use crate::bitfield::Bitfield;
use crate::id::{InfoHash, PeerId};
use crate::picker::PeerKey;
use crate::session::shared::{PeerCommand, PeerEntry, Shared, keep_new_connection};
use crate::session::verify::deliver_block;
use bytes::{Bytes, BytesMut};
use futures::StreamExt;
use std::collections::VecDeque;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::codec::FramedRead;

/// Time allowed to open a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed for the peer's handshake to arrive.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// A peer silent for this long (not even a keep-alive) is dropped.
const IDLE_TIMEOUT: Duration = Duration::from_secs(150);
/// We send a keep-alive when we have said nothing for this long.
const KEEPALIVE_AFTER: Duration = Duration::from_secs(60);
/// A peer holding our requests this long without sending a block is snubbed.
const SNUB_TIMEOUT: Duration = Duration::from_secs(30);
/// Requests we queue for one peer before ignoring more (its reqq).
const MAX_UPLOAD_QUEUE: usize = 500;
/// Requests kept in flight when a peer does not say how many it accepts.
const DEFAULT_REQQ: usize = 250;
/// Never keep more than this many requests in flight to one peer.
const MAX_DEPTH: usize = 512;
/// Blocks read from disk per trip to the blocking pool when serving.
const SERVE_BATCH: usize = 16;
/// Stop reading new blocks from disk while this much is waiting to be sent.
const OUT_HIGH_WATER: usize = 1 << 20;
/// Early HAVEs remembered before the metadata is known.
const MAX_EARLY_HAVES: usize = 1 << 16;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// A network step took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The socket failed.
    #[error("{0}")]
    Io(#[from] std::io::Error),
    /// The frame stream broke.
    #[error(transparent)]
    Codec(#[from] CodecError),
    /// Not a BitTorrent peer.
    #[error(transparent)]
    Handshake(#[from] HandshakeError),
    /// The peer wants another torrent.
    #[error("peer wants another torrent ({0})")]
    WrongTorrent(InfoHash),
    /// We dialled ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// The peer broke the protocol.
    #[error("protocol violation: {0}")]
    Protocol(String),
    /// Sent metadata that does not match the info-hash.
    #[error(transparent)]
    Metadata(#[from] MetadataError),
    /// We and the peer both have every piece: nothing to trade.
    #[error("we are both seeds")]
    BothSeeds,
    /// Another connection to this peer is kept instead.
    #[error("already connected to this peer")]
    Duplicate,
}

/// Blocks being read from disk for upload; `None` data means the read failed.
type ServeJob = tokio::task::JoinHandle<Vec<(BlockRef, Option<Bytes>)>>;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A fresh key for a new connection.
pub fn next_key() -> PeerKey {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// Dials `addr` (from `bind` when set) and exchanges handshakes.
pub async fn connect(
    addr: SocketAddr,
    bind: Option<IpAddr>,
    shared: &Shared,
) -> Result<(TcpStream, Handshake), ConnError> {
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    if let Some(ip) = bind
        && ip.is_ipv4() == addr.is_ipv4()
    {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let mut stream = timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| ConnError::Timeout("connecting"))??;
    stream.set_nodelay(true)?;
    let ours = Handshake::ours(shared.info_hash, shared.peer_id, shared.dht_port.is_some());
    timeout(HANDSHAKE_TIMEOUT, stream.write_all(&ours.encode()))
        .await
        .map_err(|_| ConnError::Timeout("sending handshake"))??;
    let theirs = read_handshake(&mut stream).await?;
    if theirs.info_hash != shared.info_hash {
        return Err(ConnError::WrongTorrent(theirs.info_hash));
    }
    if theirs.peer_id == shared.peer_id {
        return Err(ConnError::SelfConnection);
    }
    Ok((stream, theirs))
}

/// Reads an incoming peer's handshake; the caller checks the info-hash and replies.
pub async fn read_handshake(stream: &mut TcpStream) -> Result<Handshake, ConnError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    timeout(HANDSHAKE_TIMEOUT, stream.read_exact(&mut buf))
        .await
        .map_err(|_| ConnError::Timeout("reading handshake"))??;
    Ok(Handshake::decode(&buf)?)
}

/// Answers an incoming handshake that asked for our torrent.
pub async fn answer_handshake(
    stream: &mut TcpStream,
    shared: &Shared,
    theirs: &Handshake,
) -> Result<(), ConnError> {
    if theirs.peer_id == shared.peer_id {
        return Err(ConnError::SelfConnection);
    }
    stream.set_nodelay(true)?;
    let ours = Handshake::ours(shared.info_hash, shared.peer_id, shared.dht_port.is_some());
    timeout(HANDSHAKE_TIMEOUT, stream.write_all(&ours.encode()))
        .await
        .map_err(|_| ConnError::Timeout("sending handshake"))??;
    Ok(())
}

/// Bytes-per-second meter over a sliding window of one-second buckets.
#[derive(Default)]
struct RateMeter {
    buckets: [u64; 5],
    current: u64,
}

impl RateMeter {
    fn add(&mut self, n: u64) {
        self.current += n;
    }
    /// Closes the current one-second bucket.
    fn roll(&mut self) {
        self.buckets.rotate_left(1);
        self.buckets[4] = self.current;
        self.current = 0;
    }
    fn rate(&self) -> u64 {
        self.buckets.iter().sum::<u64>() / self.buckets.len() as u64
    }
}

/// Per-connection protocol state.
struct Peer {
    key: PeerKey,
    addr: SocketAddr,
    shared: Arc<Shared>,
    out: BytesMut,
    peer_choking: bool,
    peer_interested: bool,
    am_choking: bool,
    am_interested: bool,
    /// Their pieces, once the piece count is known.
    bitfield: Option<Bitfield>,
    /// Their BITFIELD payload received before we knew the piece count.
    raw_bitfield: Option<Bytes>,
    early_haves: Vec<u32>,
    in_flight: Vec<BlockRef>,
    upload_queue: VecDeque<BlockRef>,
    ext: Option<ExtendedHandshake>,
    metadata_in_flight: usize,
    haves_sent: usize,
    down: RateMeter,
    up: RateMeter,
    snubbed: bool,
    reqq: usize,
    last_recv: Instant,
    last_sent: Instant,
    last_block: Instant,
    supports_extensions: bool,
}

/// Runs a connected, handshaken peer until it disconnects, misbehaves or
/// the torrent shuts down. Registers and unregisters itself in the shared state.
pub async fn run(
    stream: TcpStream,
    theirs: Handshake,
    addr: SocketAddr,
    outgoing: bool,
    shared: Arc<Shared>,
) -> Result<(), ConnError> {
    let key = next_key();
    let (tx, mut cmd_rx) = mpsc::channel(256);
    {
        let mut st = shared.lock();
        if st.banned.contains(&addr.ip()) {
            return Err(ConnError::Protocol("banned".into()));
        }
        if let Some(old) = st.peers.values().find(|p| p.peer_id == theirs.peer_id) {
            if !keep_new_connection(&shared.peer_id, &theirs.peer_id, outgoing, old.outgoing) {
                return Err(ConnError::Duplicate);
            }
            // The old task unregisters itself when it ends.
            let _ = old.tx.try_send(PeerCommand::Close);
        }
        st.peers.insert(
            key,
            PeerEntry {
                addr,
                peer_id: theirs.peer_id,
                interested: false,
                choked: true,
                down_rate: 0,
                up_rate: 0,
                seed: false,
                outgoing,
                tx,
            },
        );
    }
    let now = Instant::now();
    let mut peer = Peer {
        key,
        addr,
        shared: shared.clone(),
        out: BytesMut::with_capacity(64 * 1024),
        peer_choking: true,
        peer_interested: false,
        am_choking: true,
        am_interested: false,
        bitfield: None,
        raw_bitfield: None,
        early_haves: Vec::new(),
        in_flight: Vec::new(),
        upload_queue: VecDeque::new(),
        ext: None,
        metadata_in_flight: 0,
        haves_sent: 0,
        down: RateMeter::default(),
        up: RateMeter::default(),
        snubbed: false,
        reqq: DEFAULT_REQQ,
        last_recv: now,
        last_sent: now,
        last_block: now,
        supports_extensions: theirs.supports_extensions(),
    };
    let result = peer.drive(stream, &mut cmd_rx).await;
    peer.unregister();
    result
}

impl Peer {
    async fn drive(
        &mut self,
        stream: TcpStream,
        cmd_rx: &mut mpsc::Receiver<PeerCommand>,
    ) -> Result<(), ConnError> {
        let (rd, mut wr) = stream.into_split();
        let mut reader = FramedRead::with_capacity(rd, PeerCodec, 256 * 1024);
        let mut verified = self.shared.pieces_verified.subscribe();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut serving: Option<ServeJob> = None;
        let shutdown = self.shared.shutdown.clone();

        self.send_intro();
        verified.mark_unchanged();
        loop {
            let now = Instant::now();
            self.fill_requests(now);
            if serving.is_none() {
                serving = self.start_serving();
            }
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Best effort: push out what is queued (e.g. nothing, or a last HAVE).
                    let _ = timeout(Duration::from_millis(200), wr.write_all(&self.out)).await;
                    return Ok(());
                }
                r = wr.write_buf(&mut self.out), if !self.out.is_empty() => {
                    if r? == 0 {
                        return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    self.last_sent = Instant::now();
                }
                msg = reader.next() => match msg {
                    None => return Ok(()),
                    Some(m) => {
                        self.last_recv = Instant::now();
                        self.on_message(m?)?;
                    }
                },
                cmd = cmd_rx.recv() => match cmd {
                    None | Some(PeerCommand::Close) => return Ok(()),
                    Some(PeerCommand::SetChoke(choke)) => self.set_choke(choke),
                    Some(PeerCommand::Cancel(r)) => {
                        if let Some(i) = self.in_flight.iter().position(|x| *x == r) {
                            self.in_flight.swap_remove(i);
                            self.push(&Message::Cancel(r));
                        }
                    }
                },
                res = async { serving.as_mut().expect("guarded").await }, if serving.is_some() => {
                    serving = None;
                    if let Ok(blocks) = res {
                        self.send_blocks(blocks);
                    }
                }
                r = verified.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    self.on_pieces_changed()?;
                }
                _ = tick.tick() => self.on_tick()?,
            }
        }
    }

    fn push(&mut self, m: &Message) {
        m.encode(&mut self.out);
    }

    /// First messages after the handshake: extension handshake, bitfield, DHT port.
    fn send_intro(&mut self) {
        if self.supports_extensions {
            let data = self.shared.data().cloned();
            let hs = ExtendedHandshake {
                ut_metadata: Some(LOCAL_UT_METADATA),
                ut_pex: None,
                metadata_size: data.as_ref().map(|d| d.meta.info_bytes.len() as u32),
                client: Some(concat!("btc ", env!("CARGO_PKG_VERSION")).to_string()),
                listen_port: Some(self.shared.listen_port),
                reqq: Some(MAX_UPLOAD_QUEUE as u32),
                yourip: Some(self.addr.ip()),
            };
            self.push(&Message::Extended {
                id: HANDSHAKE_ID,
                payload: Bytes::from(hs.encode()),
            });
        }
        if self.shared.data().is_some() {
            let bitfield = {
                let st = self.shared.lock();
                self.haves_sent = st.verified_log.len();
                st.picker
                    .as_ref()
                    .filter(|p| p.have().count() > 0)
                    .map(|p| Bytes::copy_from_slice(p.have().as_bytes()))
            };
            if let Some(bf) = bitfield {
                self.push(&Message::Bitfield(bf));
            }
            // Nothing has been received yet, so this cannot fail.
            let _ = self.adopt_metadata();
        }
        if let Some(port) = self.shared.dht_port {
            self.push(&Message::Port(port));
        }
    }

    fn on_message(&mut self, m: Message) -> Result<(), ConnError> {
        if tracing::enabled!(tracing::Level::TRACE) {
            tracing::trace!(peer = %self.addr, "received {}", m.kind());
        }
        match m {
            Message::KeepAlive | Message::Unknown { .. } | Message::Port(_) => {}
            Message::Choke => {
                self.peer_choking = true;
                // Without the fast extension a choke discards our requests.
                let dropped = std::mem::take(&mut self.in_flight);
                if let Some(p) = self.shared.lock().picker.as_mut() {
                    p.release(self.key, Some(&dropped));
                }
            }
            Message::Unchoke => self.peer_choking = false,
            Message::Interested | Message::NotInterested => {
                self.peer_interested = matches!(m, Message::Interested);
                if let Some(e) = self.shared.lock().peers.get_mut(&self.key) {
                    e.interested = self.peer_interested;
                }
                self.shared.rechoke.notify_one();
            }
            Message::Have(i) => self.on_have(i)?,
            Message::Bitfield(b) => {
                // BEP 3 allows one bitfield, first; aria2c sends another
                // later. Merging it (length-checked) is harmless.
                match self.bitfield.as_ref() {
                    Some(known) => {
                        let n = known.len();
                        let bf = Bitfield::from_wire(&b, n).ok_or_else(|| {
                            ConnError::Protocol(format!(
                                "bitfield of {} bytes for {n} pieces",
                                b.len()
                            ))
                        })?;
                        // HAVEs may have come first; count only what is new.
                        for i in bf.iter_ones() {
                            self.on_have(i as u32)?;
                        }
                    }
                    // A later one supersedes an earlier one (pieces are never lost).
                    None => self.raw_bitfield = Some(b),
                }
            }
            Message::Request(r) => self.on_request(r)?,
            Message::Piece {
                piece,
                offset,
                data,
            } => self.on_block(piece, offset, data)?,
            Message::Cancel(r) => self.upload_queue.retain(|x| *x != r),
            Message::Extended { id, payload } => self.on_extended(id, payload)?,
        }
        Ok(())
    }

    /// Called once the piece count is known: parse what the peer sent early.
    fn adopt_metadata(&mut self) -> Result<(), ConnError> {
        let Some(data) = self.shared.data().cloned() else {
            return Ok(());
        };
        let n = data.geometry.piece_count as usize;
        let mut bf = match self.raw_bitfield.take() {
            Some(raw) => Bitfield::from_wire(&raw, n).ok_or_else(|| {
                ConnError::Protocol(format!("bitfield of {} bytes for {n} pieces", raw.len()))
            })?,
            None => self.bitfield.take().unwrap_or_else(|| Bitfield::new(n)),
        };
        for i in std::mem::take(&mut self.early_haves) {
            if i as usize >= n {
                return Err(ConnError::Protocol(format!("have {i} beyond {n} pieces")));
            }
            bf.set(i as usize);
        }
        let both_seeds = {
            let mut st = self.shared.lock();
            if let Some(p) = st.picker.as_mut() {
                p.add_availability(&bf);
            }
            if let Some(e) = st.peers.get_mut(&self.key) {
                e.seed = bf.is_full();
            }
            bf.is_full() && st.picker.as_ref().is_some_and(|p| p.is_complete())
        };
        if both_seeds {
            return Err(ConnError::BothSeeds);
        }
        self.bitfield = Some(bf);
        self.update_interest();
        Ok(())
    }

    fn on_have(&mut self, i: u32) -> Result<(), ConnError> {
        match self.bitfield.as_mut() {
            Some(bf) => {
                if i as usize >= bf.len() {
                    return Err(ConnError::Protocol(format!(
                        "have {i} beyond {} pieces",
                        bf.len()
                    )));
                }
                if bf.set(i as usize) {
                    let seed = bf.is_full();
                    let mut st = self.shared.lock();
                    if let Some(p) = st.picker.as_mut() {
                        p.add_have(i);
                    }
                    if let Some(e) = st.peers.get_mut(&self.key) {
                        e.seed = seed;
                    }
                    if seed && st.picker.as_ref().is_some_and(|p| p.is_complete()) {
                        return Err(ConnError::BothSeeds);
                    }
                }
                if !self.am_interested {
                    self.update_interest();
                }
            }
            None if self.early_haves.len() < MAX_EARLY_HAVES => self.early_haves.push(i),
            None => return Err(ConnError::Protocol("too many haves before metadata".into())),
        }
        Ok(())
    }

    /// Sends INTERESTED / NOT INTERESTED when our need for this peer changes.
    fn update_interest(&mut self) {
        let Some(bf) = &self.bitfield else { return };
        let want = self
            .shared
            .lock()
            .picker
            .as_ref()
            .is_some_and(|p| p.is_interesting(bf));
        if want != self.am_interested {
            self.am_interested = want;
            self.push(if want {
                &Message::Interested
            } else {
                &Message::NotInterested
            });
        }
    }

    fn on_request(&mut self, r: BlockRef) -> Result<(), ConnError> {
        let Some(data) = self.shared.data() else {
            return Ok(());
        };
        if r.len > MAX_REQUEST_LEN || !data.geometry.contains(r.piece, r.offset, r.len) {
            return Err(ConnError::Protocol(format!(
                "bad request: piece {} offset {} length {}",
                r.piece, r.offset, r.len
            )));
        }
        if self.am_choking || self.upload_queue.len() >= MAX_UPLOAD_QUEUE {
            return Ok(());
        }
        let have = self
            .shared
            .lock()
            .picker
            .as_ref()
            .is_some_and(|p| p.have().get(r.piece as usize));
        if have {
            self.upload_queue.push_back(r);
        }
        Ok(())
    }

    fn on_block(&mut self, piece: u32, offset: u32, data: Bytes) -> Result<(), ConnError> {
        let len = data.len() as u64;
        if let Some(i) = self
            .in_flight
            .iter()
            .position(|r| r.piece == piece && r.offset == offset)
        {
            self.in_flight.swap_remove(i);
        }
        self.down.add(len);
        self.last_block = Instant::now();
        self.snubbed = false;
        deliver_block(&self.shared, self.key, piece, offset, &data);
        Ok(())
    }

    fn on_extended(&mut self, id: u8, payload: Bytes) -> Result<(), ConnError> {
        if id == HANDSHAKE_ID {
            let Ok(hs) = ExtendedHandshake::decode(&payload) else {
                return Ok(()); // A garbled handshake only costs us the extensions.
            };
            if let Some(q) = hs.reqq {
                self.reqq = (q as usize).clamp(1, MAX_DEPTH);
            }
            if let (Some(size), Some(_)) = (hs.metadata_size, hs.ut_metadata)
                && self.shared.data().is_none()
                && let Some(a) = self.shared.lock().assembler.as_mut()
            {
                let _ = a.on_peer_size(self.key, size);
            }
            self.ext = Some(hs);
            return Ok(());
        }
        if id != LOCAL_UT_METADATA {
            return Ok(());
        }
        let Ok(msg) = MetadataMessage::decode(&payload) else {
            return Ok(());
        };
        match msg {
            MetadataMessage::Request { piece } => {
                let Some(their_id) = self.ext.as_ref().and_then(|e| e.ut_metadata) else {
                    return Ok(());
                };
                let reply = self
                    .shared
                    .data()
                    .and_then(|d| serve_piece(&d.meta.info_bytes, piece))
                    .unwrap_or(MetadataMessage::Reject { piece });
                self.push(&Message::Extended {
                    id: their_id,
                    payload: Bytes::from(reply.encode()),
                });
            }
            MetadataMessage::Data {
                piece,
                total_size,
                data,
            } => {
                self.metadata_in_flight = self.metadata_in_flight.saturating_sub(1);
                let done = {
                    let mut st = self.shared.lock();
                    match st.assembler.as_mut() {
                        Some(a) => a.on_data(
                            self.key,
                            piece,
                            total_size,
                            &data,
                            std::time::Instant::now(),
                        ),
                        None => Ok(None),
                    }
                };
                match done {
                    Ok(Some(info)) => self.shared.metadata_found(info),
                    Ok(None) => {}
                    Err(MetadataError::HashMismatch { contributors }) => {
                        let mut st = self.shared.lock();
                        self.shared.strike(&mut st, &contributors);
                        if contributors.contains(&self.key) {
                            return Err(MetadataError::HashMismatch { contributors }.into());
                        }
                    }
                    Err(e) => return Err(e.into()),
                }
            }
            MetadataMessage::Reject { piece } => {
                self.metadata_in_flight = self.metadata_in_flight.saturating_sub(1);
                if let Some(a) = self.shared.lock().assembler.as_mut() {
                    a.on_reject(self.key, piece);
                }
            }
        }
        Ok(())
    }

    /// Keeps the request pipeline full: ut_metadata pieces before the
    /// metadata is known, blocks after.
    fn fill_requests(&mut self, now: Instant) {
        if self.shared.data().is_none() {
            self.fill_metadata_requests();
            return;
        }
        if self.peer_choking || !self.am_interested {
            return;
        }
        let Some(bf) = &self.bitfield else {
            return;
        };
        let target = if self.snubbed {
            1
        } else {
            // Enough requests to cover ~2 s at the current rate, so a fast
            // peer never idles waiting for our next request.
            ((self.down.rate() * 2 / 16384) as usize).clamp(32, self.reqq)
        };
        let deficit = target.saturating_sub(self.in_flight.len());
        // Batch small top-ups to spare the lock, but never let the pipe run dry.
        if deficit == 0 || (deficit < 8 && !self.in_flight.is_empty()) {
            return;
        }
        let picked = {
            let mut st = self.shared.lock();
            let Some(p) = st.picker.as_mut() else {
                return;
            };
            p.pick(self.key, bf, deficit, &self.in_flight, now.into_std())
        };
        if picked.is_empty() && self.in_flight.is_empty() {
            self.update_interest();
        }
        for r in picked {
            self.push(&Message::Request(r));
            self.in_flight.push(r);
        }
    }

    fn fill_metadata_requests(&mut self) {
        let Some(their_id) = self.ext.as_ref().and_then(|e| e.ut_metadata) else {
            return;
        };
        while self.metadata_in_flight < 2 {
            let piece = {
                let mut st = self.shared.lock();
                match st.assembler.as_mut() {
                    Some(a) => a.next_request(self.key, std::time::Instant::now()),
                    None => None,
                }
            };
            let Some(piece) = piece else { break };
            self.metadata_in_flight += 1;
            self.push(&Message::Extended {
                id: their_id,
                payload: Bytes::from(MetadataMessage::Request { piece }.encode()),
            });
        }
    }

    fn set_choke(&mut self, choke: bool) {
        if choke == self.am_choking {
            return;
        }
        self.am_choking = choke;
        if choke {
            self.upload_queue.clear();
        }
        self.push(if choke {
            &Message::Choke
        } else {
            &Message::Unchoke
        });
    }

    /// Reads up to [`SERVE_BATCH`] queued blocks on the blocking pool.
    fn start_serving(&mut self) -> Option<ServeJob> {
        if self.upload_queue.is_empty() || self.am_choking || self.out.len() >= OUT_HIGH_WATER {
            return None;
        }
        let data = self.shared.data()?.clone();
        let n = self.upload_queue.len().min(SERVE_BATCH);
        let batch: Vec<BlockRef> = self.upload_queue.drain(..n).collect();
        Some(tokio::task::spawn_blocking(move || {
            batch
                .into_iter()
                .map(|r| {
                    let mut buf = vec![0u8; r.len as usize];
                    let off = data.geometry.piece_offset(r.piece) + r.offset as u64;
                    match data.storage.read(off, &mut buf) {
                        Ok(()) => (r, Some(Bytes::from(buf))),
                        Err(e) => {
                            tracing::warn!("serving a block: {e}");
                            (r, None)
                        }
                    }
                })
                .collect()
        }))
    }

    fn send_blocks(&mut self, blocks: Vec<(BlockRef, Option<Bytes>)>) {
        for (r, data) in blocks {
            let Some(data) = data else { continue };
            if self.am_choking {
                break;
            }
            let n = data.len() as u64;
            self.push(&Message::Piece {
                piece: r.piece,
                offset: r.offset,
                data,
            });
            self.up.add(n);
            Shared::add(&self.shared.counters.uploaded, n);
        }
    }

    /// New pieces were verified (or the metadata arrived): send HAVEs.
    fn on_pieces_changed(&mut self) -> Result<(), ConnError> {
        if self.bitfield.is_none() && self.shared.data().is_some() {
            self.adopt_metadata()?;
        }
        let new: Vec<u32> = {
            let st = self.shared.lock();
            st.verified_log
                .get(self.haves_sent..)
                .unwrap_or(&[])
                .to_vec()
        };
        self.haves_sent += new.len();
        for i in new {
            self.push(&Message::Have(i));
        }
        if self.am_interested {
            self.update_interest();
        }
        Ok(())
    }

    fn on_tick(&mut self) -> Result<(), ConnError> {
        let now = Instant::now();
        if now.duration_since(self.last_recv) > IDLE_TIMEOUT {
            return Err(ConnError::Timeout("waiting for the peer"));
        }
        if now.duration_since(self.last_sent) > KEEPALIVE_AFTER && self.out.is_empty() {
            self.push(&Message::KeepAlive);
        }
        if !self.in_flight.is_empty()
            && !self.snubbed
            && now.duration_since(self.last_block) > SNUB_TIMEOUT
        {
            // Give its blocks to others; keep asking it for one at a time.
            self.snubbed = true;
            let dropped = std::mem::take(&mut self.in_flight);
            if let Some(p) = self.shared.lock().picker.as_mut() {
                p.release(self.key, Some(&dropped));
            }
            for r in dropped {
                self.push(&Message::Cancel(r));
            }
        }
        self.down.roll();
        self.up.roll();
        if let Some(e) = self.shared.lock().peers.get_mut(&self.key) {
            e.down_rate = self.down.rate();
            e.up_rate = self.up.rate();
        }
        Ok(())
    }

    fn unregister(&mut self) {
        let mut st = self.shared.lock();
        st.peers.remove(&self.key);
        let empty = Bitfield::default();
        let bf = self.bitfield.as_ref().unwrap_or(&empty);
        if let Some(p) = st.picker.as_mut() {
            p.peer_gone(self.key, bf);
        }
        if let Some(a) = st.assembler.as_mut() {
            a.on_peer_gone(self.key);
        }
        drop(st);
        self.shared.rechoke.notify_one();
    }
}

/// Remote peer id of a handshake, for logs.
pub fn describe(id: &PeerId) -> String {
    String::from_utf8_lossy(&id.0[..8]).into_owned()
}
