//! One task per peer connection: the only code that touches a peer's socket.
//!
//! The protocol lives in [`PeerState`]; this driver only moves bytes and
//! time: it decodes frames into messages, drains the [`Outbox`] into the
//! socket, reads blocks from disk on the blocking pool when the state asks,
//! and ticks once a second. It never blocks on a write: outgoing messages
//! wait in the outbox and a `select!` branch drains it, so two peers
//! uploading to each other cannot deadlock. While the outbox is over
//! [`PeerState::read_pause`], the peer is not read: a peer that asks faster
//! than it reads only stalls itself.
//!
//! The torrent is reached through [`PeerHost`], which the session
//! implements; the connection's registration is released by a drop guard,
//! so even a panic in this task gives back its slot and its requests.

use super::codec::{CodecError, PeerCodec};
use super::handshake::{HANDSHAKE_LEN, Handshake, HandshakeError};
use super::message::BlockRef;
use super::state::{LocalInfo, Outbox, PeerCommand, PeerError, PeerState};
use super::swarm::Swarm;
pub use super::transport::Link;
use super::transport::{PeerStream, Transport, UtpDialer};
use crate::id::{InfoHash, PeerId};
use crate::mse::{self, Encryption, MseStream, SetupError};
use crate::picker::PeerKey;
use crate::ratelimit::{RateLimits, Throttled};
use bytes::Bytes;
use futures::StreamExt;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, timeout};
use tokio_util::codec::FramedRead;
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

/// Time allowed to open a TCP connection.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// Time allowed to open a uTP connection: shorter, because a peer without
/// uTP never answers at all (no refusal comes back) and TCP is tried next.
pub const UTP_CONNECT_TIMEOUT: Duration = Duration::from_secs(4);
/// Time allowed for the peer's handshake to arrive.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Initial read buffer; it grows to the largest frame actually received.
const READ_BUFFER: usize = 64 * 1024;
/// Commands queued from the session to one connection.
const COMMAND_QUEUE: usize = 256;

/// Why a connection ended.
#[derive(Debug, thiserror::Error)]
pub enum ConnError {
    /// A network step took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// The socket failed.
    #[error("connection failed")]
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
    /// The torrent would not take this connection.
    #[error("refused")]
    Refused(#[from] Refused),
    /// The protocol ended the connection.
    #[error(transparent)]
    Peer(#[from] PeerError),
    /// The encryption handshake failed or the policy refused the peer.
    #[error(transparent)]
    Encryption(#[from] SetupError),
}

/// Why the torrent refused a handshaken connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    /// The address is banned.
    #[error("banned")]
    Banned,
    /// We dialled ourselves.
    #[error("connected to ourselves")]
    SelfConnection,
    /// Another connection to this peer is kept instead.
    #[error("already connected to this peer")]
    Duplicate,
    /// A peer on another address already uses this peer id.
    #[error("peer id already in use by another address")]
    PeerIdTaken,
    /// Too many connections from this IP.
    #[error("too many connections from this address")]
    PerIpLimit,
    /// Every slot is taken by a peer worth keeping.
    #[error("connection limit reached")]
    Full,
}

/// What the torrent records about a new connection.
#[derive(Debug, Clone)]
pub struct Registration {
    /// Remote address.
    pub addr: SocketAddr,
    /// Remote peer id.
    pub peer_id: PeerId,
    /// Whether we dialled it.
    pub outgoing: bool,
    /// TCP or uTP, encrypted or not.
    pub link: Link,
    /// Command channel to the connection's task.
    pub tx: mpsc::Sender<PeerCommand>,
}

/// The torrent as the socket driver needs it, on top of [`Swarm`].
pub trait PeerHost: Swarm {
    /// The torrent's info-hash.
    fn info_hash(&self) -> InfoHash;
    /// Whether the swarm is a BitTorrent v2 one: our handshake sets the v2
    /// bit (BEP 52), and peers that set it may exchange hashes.
    fn speaks_v2(&self) -> bool {
        false
    }
    /// A hybrid torrent's two swarms (BEP 52): its v1 info-hash and the
    /// first 20 bytes of its v2 one. Peers may handshake with either; a
    /// connection on the v2 one, or one whose peer sets the v2 bit, speaks
    /// v2 (the upgrade). `None` for a torrent of one swarm.
    fn hybrid(&self) -> Option<(InfoHash, InfoHash)> {
        None
    }
    /// Our peer id.
    fn peer_id(&self) -> PeerId;
    /// Our TCP listen port and DHT port, for the first messages.
    fn ports(&self) -> (u16, Option<u16>);
    /// Admits a handshaken connection, or says why not.
    fn register(&self, key: PeerKey, reg: Registration) -> Result<(), Refused>;
    /// Removes a connection admitted by [`PeerHost::register`].
    fn unregister(&self, key: PeerKey);
    /// Reads blocks we have (blocking: call on the blocking pool).
    fn read_blocks(&self, blocks: Vec<BlockRef>) -> Vec<(BlockRef, Option<Bytes>)>;
    /// Changes whenever pieces are verified or the metadata arrives.
    fn verified(&self) -> watch::Receiver<u64>;
    /// Cancelled when the torrent stops.
    fn shutdown(&self) -> CancellationToken;
    /// The process-wide rate limits every connection obeys.
    fn rate_limits(&self) -> RateLimits {
        RateLimits::default()
    }
    /// The `--encryption` policy of the process (the session's).
    fn encryption(&self) -> Encryption {
        Encryption::default()
    }
}

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// A fresh key for a new connection.
pub fn next_key() -> PeerKey {
    NEXT_KEY.fetch_add(1, Ordering::Relaxed)
}

/// How to reach peers: the local address to dial from, and the uTP
/// socket when uTP is on.
#[derive(Clone)]
pub struct Dialer {
    /// Local IP to dial TCP from (when of the peer's family).
    pub bind: Option<IpAddr>,
    /// The session's uTP socket; `None` with `--no-utp`.
    pub utp: Option<Arc<dyn UtpDialer>>,
    /// Whether TCP may be dialled (`--no-tcp` turns it off).
    pub tcp: bool,
}

impl Dialer {
    /// The transports to try, in order: TCP first (faster, and every
    /// client has it), uTP first when the peer was last reached over uTP
    /// or says it supports it and nothing says TCP works.
    fn order(&self, utp_first: bool) -> Vec<Transport> {
        let mut order = match (&self.utp, utp_first) {
            (None, _) => vec![Transport::Tcp],
            (Some(_), false) => vec![Transport::Tcp, Transport::Utp],
            (Some(_), true) => vec![Transport::Utp, Transport::Tcp],
        };
        order.retain(|t| self.tcp || *t != Transport::Tcp);
        order
    }
}

/// Dials `addr` and exchanges handshakes under the host's `--encryption`
/// policy, over each transport in turn until one works (see
/// `Dialer::order`): a peer with TCP turned off (it closes TCP
/// connections unread) or a closed TCP port is reached over uTP. On each
/// transport, `prefer` tries MSE (offering RC4 and plaintext, our
/// handshake riding as its initial payload) and redials in plaintext once
/// if the peer does not answer it; `require` dials MSE with RC4 only;
/// `disable` dials plaintext only.
///
/// `swarm` is the info-hash to handshake with: the torrent's, or a
/// hybrid's other one for a peer found in that swarm.
pub async fn connect(
    addr: SocketAddr,
    dialer: &Dialer,
    utp_first: bool,
    host: &dyn PeerHost,
    swarm: InfoHash,
) -> Result<(MseStream<PeerStream>, Handshake), ConnError> {
    let mut last = None;
    for t in dialer.order(utp_first) {
        if let Some(e) = &last {
            tracing::debug!("peer {addr}: {}; trying {t}", crate::error_chain(e));
        }
        match connect_over(t, addr, dialer, host, swarm, host.encryption()).await {
            Ok(c) => return Ok(c),
            Err(e) if e.worth_another_transport(t) => last = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last.unwrap_or(ConnError::Timeout("connecting")))
}

impl ConnError {
    /// Whether a failure over `t` says nothing of the other transport: the
    /// connection broke or was refused before the peer's handshake. A TCP
    /// connect that timed out is not retried over uTP (the host is most
    /// likely gone, and the dial slot would be held twice as long); a uTP
    /// one is retried over TCP (many peers have no uTP).
    fn worth_another_transport(&self, t: Transport) -> bool {
        match self {
            ConnError::Timeout("connecting") => t == Transport::Utp,
            ConnError::Timeout(_) | ConnError::Io(_) | ConnError::Encryption(_) => true,
            _ => false,
        }
    }
}

/// [`connect`] over one transport under `policy`.
async fn connect_over(
    t: Transport,
    addr: SocketAddr,
    dialer: &Dialer,
    host: &dyn PeerHost,
    swarm: InfoHash,
    policy: Encryption,
) -> Result<(MseStream<PeerStream>, Handshake), ConnError> {
    let ours =
        Handshake::ours(swarm, host.peer_id(), host.ports().1.is_some()).with_v2(sets_v2_bit(host));
    if policy != Encryption::Disable {
        let stream = dial(t, addr, dialer).await?;
        let ia = ours.encode().to_vec();
        match mse::initiate(stream, swarm, policy, ia, HANDSHAKE_TIMEOUT).await {
            Ok(mut stream) => {
                let theirs = read_handshake(&mut stream, HANDSHAKE_TIMEOUT).await?;
                check_theirs(&theirs, host, swarm)?;
                return Ok((stream, theirs));
            }
            Err(e) if policy == Encryption::Require => {
                // Said at info level: with `require` this is the one reason
                // a reachable peer is never used, and the user asked for it.
                tracing::info!(
                    "peer {addr}: refused over {t}: no RC4 encryption handshake ({}), and --encryption require",
                    crate::error_chain(&e)
                );
                return Err(e.into());
            }
            Err(e) => tracing::debug!(
                "peer {addr}: no encryption handshake over {t} ({}); retrying in plaintext",
                crate::error_chain(&e)
            ),
        }
    }
    let mut stream = dial(t, addr, dialer).await?;
    timeout(HANDSHAKE_TIMEOUT, stream.write_all(&ours.encode()))
        .await
        .map_err(|_| ConnError::Timeout("sending handshake"))??;
    let theirs = read_handshake(&mut stream, HANDSHAKE_TIMEOUT).await?;
    check_theirs(&theirs, host, swarm)?;
    Ok((MseStream::replay(stream, Vec::new()), theirs))
}

/// Opens a connection to `addr` over `t`.
async fn dial(t: Transport, addr: SocketAddr, dialer: &Dialer) -> Result<PeerStream, ConnError> {
    match (t, &dialer.utp) {
        (Transport::Utp, Some(utp)) => {
            let stream = timeout(UTP_CONNECT_TIMEOUT, utp.connect(addr))
                .await
                .map_err(|_| ConnError::Timeout("connecting"))??;
            Ok(PeerStream::Utp(stream))
        }
        _ => Ok(PeerStream::Tcp(dial_tcp(addr, dialer.bind).await?)),
    }
}

/// Opens a TCP connection to `addr`, from `bind` when it is set and of the
/// same family; under `--proxy`, through the proxy and nowhere else.
async fn dial_tcp(addr: SocketAddr, bind: Option<IpAddr>) -> Result<TcpStream, ConnError> {
    if let Some(proxy) = crate::proxy::net::current() {
        return proxy
            .connect(&crate::proxy::TargetAddr::Ip(addr))
            .await
            .map_err(|e| match e {
                crate::proxy::ProxyError::Io(e) => ConnError::Io(e),
                crate::proxy::ProxyError::Timeout(_) => {
                    ConnError::Timeout("connecting through the proxy")
                }
                other => ConnError::Io(std::io::Error::other(other)),
            });
    }
    let socket = if addr.is_ipv4() {
        TcpSocket::new_v4()?
    } else {
        TcpSocket::new_v6()?
    };
    crate::iface::bind(&socket)?;
    if let Some(ip) = bind
        && ip.is_ipv4() == addr.is_ipv4()
    {
        socket.bind(SocketAddr::new(ip, 0))?;
    }
    let stream = timeout(CONNECT_TIMEOUT, socket.connect(addr))
        .await
        .map_err(|_| ConnError::Timeout("connecting"))??;
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// The dialled peer's handshake must name our torrent and not be us.
fn check_theirs(theirs: &Handshake, host: &dyn PeerHost, swarm: InfoHash) -> Result<(), ConnError> {
    if theirs.info_hash != swarm {
        return Err(ConnError::WrongTorrent(theirs.info_hash));
    }
    if theirs.peer_id == host.peer_id() {
        return Err(Refused::SelfConnection.into());
    }
    Ok(())
}

/// Whether `ih` names the host's torrent: its info-hash, or either swarm
/// of a hybrid.
fn is_our_swarm(host: &dyn PeerHost, ih: InfoHash) -> bool {
    ih == host.info_hash() || host.hybrid().is_some_and(|(v1, v2)| ih == v1 || ih == v2)
}

/// Whether our handshake sets the v2 bit: on a v2 swarm, and on both
/// swarms of a hybrid (on the v1 one it offers the upgrade).
fn sets_v2_bit(host: &dyn PeerHost) -> bool {
    host.speaks_v2() || host.hybrid().is_some()
}

/// Whether a connection speaks v2 (may exchange hashes): on a v2 swarm
/// every peer does (libtorrent sets the v2 bit only on a hybrid's v1
/// swarm); on a hybrid's v1 swarm, a peer that set the v2 bit upgrades.
fn speaks_v2_with(host: &dyn PeerHost, theirs: &Handshake) -> bool {
    host.speaks_v2()
        || host
            .hybrid()
            .is_some_and(|(_, v2)| theirs.info_hash == v2 || theirs.supports_v2())
}

/// Reads a peer's handshake within `limit`; the caller checks the info-hash.
pub async fn read_handshake<S: AsyncRead + Unpin>(
    stream: &mut S,
    limit: Duration,
) -> Result<Handshake, ConnError> {
    let mut buf = [0u8; HANDSHAKE_LEN];
    timeout(limit, stream.read_exact(&mut buf))
        .await
        .map_err(|_| ConnError::Timeout("reading handshake"))??;
    Ok(Handshake::decode(&buf)?)
}

/// Answers an incoming handshake that asked for our torrent, on any
/// stream (an [`MseStream`] from [`mse::accept_any`]).
pub async fn send_answer<S: AsyncWrite + Unpin>(
    stream: &mut S,
    host: &dyn PeerHost,
    theirs: &Handshake,
) -> Result<(), ConnError> {
    if theirs.peer_id == host.peer_id() {
        return Err(Refused::SelfConnection.into());
    }
    if !is_our_swarm(host, theirs.info_hash) {
        return Err(ConnError::WrongTorrent(theirs.info_hash));
    }
    // In the swarm the peer asked for (a hybrid has two).
    let ours = Handshake::ours(theirs.info_hash, host.peer_id(), host.ports().1.is_some())
        .with_v2(sets_v2_bit(host));
    timeout(HANDSHAKE_TIMEOUT, async {
        stream.write_all(&ours.encode()).await?;
        stream.flush().await
    })
    .await
    .map_err(|_| ConnError::Timeout("sending handshake"))??;
    Ok(())
}

/// A registered connection. Dropping it (at the end of [`run`], or while
/// unwinding from a panic) gives the peer's requests, availability and
/// slot back to the torrent.
struct Conn {
    host: Arc<dyn PeerHost>,
    state: PeerState,
    out: Outbox,
}

impl Drop for Conn {
    fn drop(&mut self) {
        self.state.close(&*self.host);
        self.host.unregister(self.state.key());
    }
}

/// Runs a connected, handshaken peer until it disconnects, misbehaves or
/// the torrent shuts down. Any byte stream will do (TCP or uTP, RC4 or
/// not: `link` says which, for the torrent's records).
pub async fn run<S>(
    stream: S,
    theirs: Handshake,
    addr: SocketAddr,
    outgoing: bool,
    link: Link,
    host: Arc<dyn PeerHost>,
) -> Result<(), ConnError>
where
    S: AsyncRead + AsyncWrite + Send + 'static,
{
    let key = next_key();
    let (tx, mut cmd_rx) = mpsc::channel(COMMAND_QUEUE);
    host.register(
        key,
        Registration {
            addr,
            peer_id: theirs.peer_id,
            outgoing,
            link,
            tx,
        },
    )?;
    let (listen_port, dht_port) = host.ports();
    tracing::debug!(
        "peer {addr}: handshake reserved bytes {:02x?} (v2: {})",
        theirs.reserved,
        theirs.supports_v2()
    );
    let local = LocalInfo {
        listen_port,
        dht_port,
        their_ip: addr.ip(),
        info_hash: theirs.info_hash,
    };
    let v2 = speaks_v2_with(&*host, &theirs);
    let now = Instant::now().into_std();
    let mut conn = Conn {
        // We always set the fast bit, so it is on when the peer sets it.
        state: PeerState::new(key, local, theirs.supports_extensions(), now)
            .with_fast(theirs.supports_fast())
            .with_v2(v2),
        host,
        out: Outbox::default(),
    };
    // Every log line of this connection says which peer and torrent it is about.
    let hex = conn.host.info_hash().to_hex();
    let span = tracing::debug_span!("peer", %addr, torrent = hex.get(..8).unwrap_or(&hex));
    let stream = Throttled::new(stream, conn.host.rate_limits());
    let res = conn.drive(stream, &mut cmd_rx).instrument(span).await;
    if let Some(rtt) = conn.state.base_rtt() {
        // How deep the request pipeline grew (see peer::state::pipeline):
        // what a slow transfer from a far peer is first checked against.
        tracing::debug!(
            "peer {addr}: request pipeline {} deep at the end, base round trip {:.1} ms",
            conn.state.pipeline_target(),
            rtt.as_secs_f64() * 1e3
        );
    }
    res
}

/// Blocks being read from disk for upload.
type ServeJob = tokio::task::JoinHandle<Vec<(BlockRef, Option<Bytes>)>>;

impl Conn {
    async fn drive<S>(
        &mut self,
        stream: S,
        cmd_rx: &mut mpsc::Receiver<PeerCommand>,
    ) -> Result<(), ConnError>
    where
        S: AsyncRead + AsyncWrite + Send + 'static,
    {
        let (rd, mut wr) = tokio::io::split(stream);
        let mut reader = FramedRead::with_capacity(rd, PeerCodec, READ_BUFFER);
        let mut verified = self.host.verified();
        let mut tick = tokio::time::interval(Duration::from_secs(1));
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut serving: Option<ServeJob> = None;
        let shutdown = self.host.shutdown();

        verified.mark_unchanged();
        self.state.start(&*self.host, &mut self.out);
        loop {
            let now = Instant::now().into_std();
            self.state.fill_requests(now, &*self.host, &mut self.out);
            if serving.is_none()
                && let Some(batch) = self.state.take_upload_batch(&self.out)
            {
                let host = self.host.clone();
                serving = Some(tokio::task::spawn_blocking(move || host.read_blocks(batch)));
            }
            let can_read = self.out.len() < self.state.read_pause();
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Best effort: push out what is queued (e.g. a last HAVE).
                    let _ = timeout(Duration::from_millis(200), wr.write_all(self.out.buf_mut())).await;
                    return Ok(());
                }
                r = wr.write_buf(self.out.buf_mut()), if !self.out.is_empty() => {
                    if r? == 0 {
                        return Err(ConnError::Io(std::io::ErrorKind::WriteZero.into()));
                    }
                    self.state.on_written(Instant::now().into_std());
                }
                msg = reader.next(), if can_read => match msg {
                    None => return Ok(()),
                    Some(m) => {
                        let m = m?;
                        if tracing::enabled!(tracing::Level::TRACE) {
                            tracing::trace!("received {}", m.kind());
                        }
                        self.state.on_message(m, Instant::now().into_std(), &*self.host, &mut self.out)?;
                    }
                },
                cmd = cmd_rx.recv() => match cmd {
                    None | Some(PeerCommand::Close) => return Ok(()),
                    Some(c) => self.state.on_command(c, &*self.host, &mut self.out),
                },
                res = poll_job(&mut serving), if serving.is_some() => {
                    serving = None;
                    self.state.on_blocks_read(res.unwrap_or_default(), &*self.host, &mut self.out);
                }
                r = verified.changed() => {
                    if r.is_err() {
                        return Ok(());
                    }
                    self.state.on_pieces_changed(&*self.host, &mut self.out)?;
                }
                _ = tick.tick() => self.state.on_tick(Instant::now().into_std(), &*self.host, &mut self.out)?,
            }
        }
    }
}

/// Awaits the serve job in `slot` (which the caller guards as present).
async fn poll_job(slot: &mut Option<ServeJob>) -> Option<Vec<(BlockRef, Option<Bytes>)>> {
    match slot {
        Some(j) => j.await.ok(),
        None => std::future::pending().await,
    }
}

/// Remote peer id of a handshake, for logs.
pub fn describe(id: &PeerId) -> String {
    String::from_utf8_lossy(id.0.get(..8).unwrap_or(&id.0)).into_owned()
}

#[cfg(test)]
mod tests;
