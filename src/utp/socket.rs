//! The uTP socket: one UDP socket, a receive loop that demultiplexes
//! datagrams to connections by (address, connection id), a timer task per
//! connection, and the streams the application reads and writes.
//!
//! Each connection's state machine ([`Conn`]) sits behind its own mutex;
//! whoever changes it (the receive loop on a packet, the application on a
//! read or write, the timer task on a timeout) sends what it now allows
//! before letting go, so no extra hop delays a packet. The receive loop
//! reads datagrams in batches and sends each connection's ACK once per
//! batch, which is the delayed ACK.
//!
//! System calls per byte are what limits uTP's speed, so both directions
//! batch them where the kernel can (Linux): a connection's run of
//! equal-sized datagrams goes out in one `sendmsg` that the kernel cuts up
//! (UDP GSO), and receives take many datagrams per call (`recvmmsg`, and
//! UDP GRO, which hands over a run of one sender's datagrams as one
//! buffer). quinn-udp does the system calls; btc decides what to batch.
//!
//! Budgets: at most `max_conns` connections, at most [`ACCEPT_QUEUE`]
//! accepted and not yet taken, SYNs judged by `admit_syn` before any state
//! is made, and each connection's buffers as [`Opts`] says: with a
//! `memory_budget`, the budget is shared out among the connections open
//! now, so one peer alone gets a window for its full speed and many still
//! fit.

use super::conn::{self, Config, Conn, Failure, MAX_HEADER, Read, Write};
use super::packet::{self, Type};
use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::UdpSocket;
use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;

/// Payload bytes per packet to an IPv4 peer: a 1,400-byte datagram
/// (20-byte header), which fits a 1,500-byte Ethernet MTU behind PPPoE or
/// most tunnels without fragmenting (on a narrower path the kernel learns
/// the path MTU and fragments).
pub const MSS: usize = 1380;

/// Payload bytes per packet to an IPv6 peer: with the largest uTP header
/// and 48 bytes of IPv6 and UDP headers, a packet fits the 1,280 bytes
/// every IPv6 path carries (IPv6 routers never fragment, and without path
/// MTU probing we cannot know more).
pub const MSS_V6: usize = 1280 - 48 - MAX_HEADER;

/// The largest datagram we send.
const MAX_DATAGRAM: usize = MSS + MAX_HEADER;

/// Accepted connections waiting for `accept`.
pub const ACCEPT_QUEUE: usize = 32;

/// Datagrams read per wake-up before the ACKs go out.
const RECV_BATCH: usize = 256;

/// Receive buffers per `recvmmsg` call; each holds up to 64 KiB (one GRO
/// run of datagrams).
const RECV_SLOTS: usize = 8;

/// The most bytes one GSO send carries (a UDP datagram's limit is 65,507).
const GSO_BYTES: usize = 64_000;

/// The least buffer a connection gets, however many share the budget:
/// below this a peer's rate suffers more than memory gains.
pub const MIN_BUFFER: usize = 64 << 10;

/// How long a dropped stream may take to deliver what was written and its
/// FIN before it is forgotten.
const LINGER: Duration = Duration::from_secs(30);

/// The UDP buffers asked for: room for bursts at full speed while the
/// receive loop catches up (the kernel caps them at rmem_max/wmem_max).
pub const UDP_BUFFER: usize = 8 << 20;

/// Decides whether a SYN from this address may make a connection.
pub type AdmitSyn = Arc<dyn Fn(SocketAddr) -> bool + Send + Sync>;

/// Where a socket's datagrams go when it has no UDP socket of its own: a
/// SOCKS5 proxy's UDP relay, which wraps each one with its target. Sends
/// never wait: a datagram the path cannot take now is lost like any other,
/// and the connection's loss recovery sends it again.
pub trait DatagramPath: Send + Sync {
    /// Sends one datagram to `to`; `WouldBlock` when the path is full.
    fn try_send_to(&self, to: SocketAddr, datagram: &[u8]) -> io::Result<()>;

    /// Whether datagrams can still go this way: a new connection over a
    /// closed path fails at once (and the caller can try TCP).
    fn is_open(&self) -> bool;
}

/// Datagrams that reached us through a [`DatagramPath`], with their
/// senders.
pub type Incoming = mpsc::Receiver<(SocketAddr, Vec<u8>)>;

/// How a socket is sized.
#[derive(Clone)]
pub struct Opts {
    /// Each connection's receive buffer (its advertised window); the most
    /// it gets under `memory_budget`.
    pub recv_buffer: usize,
    /// Each connection's send buffer; the most it gets under
    /// `memory_budget`.
    pub send_buffer: usize,
    /// Bytes all connections' buffers together may hold, shared equally
    /// among the connections open (each buffer at least [`MIN_BUFFER`]).
    /// A buffer shrinks only as it drains, so when the share falls the
    /// total can pass the budget by what connections then held: at most
    /// the budget again.
    pub memory_budget: Option<usize>,
    /// The most connections at once, in and out.
    pub max_conns: usize,
    /// Judges every new SYN before any state is made for it.
    pub admit_syn: Option<AdmitSyn>,
    /// Stops the receive loop and every connection.
    pub shutdown: CancellationToken,
}

impl Default for Opts {
    fn default() -> Opts {
        Opts {
            recv_buffer: 1 << 20,
            send_buffer: 1 << 20,
            memory_budget: None,
            max_conns: 256,
            admit_syn: None,
            shutdown: CancellationToken::new(),
        }
    }
}

/// A uTP socket.
pub struct Socket {
    shared: Arc<Shared>,
}

struct Shared {
    io: Io,
    local: SocketAddr,
    epoch: std::time::Instant,
    opts: Opts,
    conns: Mutex<HashMap<(SocketAddr, u16), Arc<Cell>>>,
    accept_tx: mpsc::Sender<UtpStream>,
    accept_rx: tokio::sync::Mutex<mpsc::Receiver<UtpStream>>,
}

/// How datagrams leave and arrive.
enum Io {
    /// A UDP socket of our own.
    Udp {
        udp: UdpSocket,
        /// Batched sends and receives on `udp`.
        batch: quinn_udp::UdpSocketState,
    },
    /// Someone else's path (a proxy's relay): one datagram per send, and
    /// what arrives comes through a channel.
    Path(Arc<dyn DatagramPath>),
}

/// One connection's shared state.
struct Cell {
    key: (SocketAddr, u16),
    peer: SocketAddr,
    state: Mutex<CellState>,
    /// Wakes the timer task: an earlier deadline, or the stream dropped.
    timer: Notify,
}

struct CellState {
    conn: Conn,
    reader: Option<Waker>,
    writer: Option<Waker>,
    dropped_at: Option<std::time::Instant>,
    /// The deadline the timer task sleeps until.
    armed: Option<std::time::Instant>,
}

/// The clock: tokio's, so tests with a paused clock drive the timers.
fn now() -> std::time::Instant {
    tokio::time::Instant::now().into_std()
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

fn io_error(f: Failure) -> io::Error {
    match f {
        Failure::Refused => {
            io::Error::new(io::ErrorKind::ConnectionRefused, "uTP connection refused")
        }
        Failure::Reset => io::Error::new(io::ErrorKind::ConnectionReset, "uTP connection reset"),
        Failure::TimedOut => io::Error::new(io::ErrorKind::TimedOut, "uTP peer stopped answering"),
    }
}

impl Socket {
    /// Binds `addr` (dual-stack when it is `[::]`) and starts the receive
    /// loop. Must run inside a tokio runtime.
    pub fn bind(addr: SocketAddr, opts: Opts) -> io::Result<Arc<Socket>> {
        use socket2::{Domain, Protocol, Type as SockType};
        let domain = if addr.is_ipv4() {
            Domain::IPV4
        } else {
            Domain::IPV6
        };
        let s = socket2::Socket::new(domain, SockType::DGRAM, Some(Protocol::UDP))?;
        crate::iface::bind(&s)?;
        if addr.is_ipv6() && addr.ip().is_unspecified() {
            s.set_only_v6(false)?;
        }
        if let Err(e) = s.set_recv_buffer_size(UDP_BUFFER) {
            tracing::debug!("uTP: receive buffer not enlarged: {e}");
        }
        if let Err(e) = s.set_send_buffer_size(UDP_BUFFER) {
            tracing::debug!("uTP: send buffer not enlarged: {e}");
        }
        s.set_nonblocking(true)?;
        s.bind(&addr.into())?;
        let batch = quinn_udp::UdpSocketState::new((&s).into())?;
        keep_path_mtu_discovery(&s, addr);
        let udp = UdpSocket::from_std(s.into())?;
        let local = udp.local_addr()?;
        let shared = Shared::new(Io::Udp { udp, batch }, local, opts);
        tokio::spawn(receive_loop(shared.clone()));
        Ok(Arc::new(Socket { shared }))
    }

    /// A socket whose datagrams go out by `path` and come in by
    /// `incoming`: uTP through a proxy's UDP relay. `local` is only what
    /// [`Socket::local_addr`] reports. Must run inside a tokio runtime.
    pub fn over(
        path: Arc<dyn DatagramPath>,
        incoming: Incoming,
        local: SocketAddr,
        opts: Opts,
    ) -> Arc<Socket> {
        let shared = Shared::new(Io::Path(path), local, opts);
        tokio::spawn(path_receive_loop(shared.clone(), incoming));
        Arc::new(Socket { shared })
    }

    /// The address bound.
    pub fn local_addr(&self) -> SocketAddr {
        self.shared.local
    }

    /// The kernel's receive buffer size for the UDP socket (an error
    /// over a [`DatagramPath`], which has none of its own).
    pub fn recv_buffer_size(&self) -> io::Result<usize> {
        match &self.shared.io {
            Io::Udp { udp, .. } => socket2::SockRef::from(udp).recv_buffer_size(),
            Io::Path(_) => Err(io::Error::other("no UDP socket of its own")),
        }
    }

    /// Connections open now.
    pub fn connections(&self) -> usize {
        lock(&self.shared.conns).len()
    }

    /// Opens a connection to `addr` and waits for the handshake.
    pub async fn connect(&self, addr: SocketAddr) -> io::Result<UtpStream> {
        let shared = &self.shared;
        if let Io::Path(path) = &shared.io
            && !path.is_open()
        {
            return Err(io::Error::new(
                io::ErrorKind::NotConnected,
                "uTP's path (the proxy's UDP relay) is closed",
            ));
        }
        let peer = shared.sendable(addr);
        let cell = {
            let mut conns = lock(&shared.conns);
            if conns.len() >= shared.opts.max_conns {
                return Err(io::Error::other("too many uTP connections"));
            }
            let recv_id = loop {
                let id = rand::random::<u16>();
                if !conns.contains_key(&(peer, id)) {
                    break id;
                }
            };
            let conn = Conn::connect(
                shared.config(peer, conns.len() + 1),
                shared.epoch,
                now(),
                recv_id,
                rand::random(),
            );
            let cell = Cell::new((peer, recv_id), peer, conn);
            conns.insert(cell.key, cell.clone());
            cell
        };
        let stream = shared.adopt(&cell);
        shared.flush(&cell, &mut lock(&cell.state));
        std::future::poll_fn(|cx| {
            let mut st = lock(&cell.state);
            if st.conn.is_connected() {
                return Poll::Ready(Ok(()));
            }
            if let Some(f) = st.conn.failure() {
                return Poll::Ready(Err(io_error(f)));
            }
            if shared.opts.shutdown.is_cancelled() {
                return Poll::Ready(Err(io::Error::other("shutting down")));
            }
            st.writer = Some(cx.waker().clone());
            Poll::Pending
        })
        .await?;
        Ok(stream)
    }

    /// Waits for the next incoming connection.
    pub async fn accept(&self) -> io::Result<UtpStream> {
        let mut rx = self.shared.accept_rx.lock().await;
        tokio::select! {
            s = rx.recv() => s.ok_or_else(|| io::Error::other("uTP socket closed")),
            _ = self.shared.opts.shutdown.cancelled() => Err(io::Error::other("shutting down")),
        }
    }
}

/// quinn-udp forbids fragmentation, as QUIC wants; uTP here sends
/// fixed-size datagrams without probing the path, so it keeps the kernel's
/// default: set DF, learn the path MTU from ICMP, and fragment locally
/// below it rather than lose every full-size packet on a narrow path.
fn keep_path_mtu_discovery(s: &socket2::Socket, addr: SocketAddr) {
    #[cfg(any(target_os = "linux", target_os = "android"))]
    {
        use rustix::net::sockopt::{self, Ipv4PathMtuDiscovery, Ipv6PathMtuDiscovery};
        // IPv4 peers on a dual-stack socket follow the IPv4 option too.
        if let Err(e) = sockopt::set_ip_mtu_discover(s, Ipv4PathMtuDiscovery::WANT) {
            tracing::debug!("uTP: IPv4 path MTU discovery not restored: {e}");
        }
        if addr.is_ipv6()
            && let Err(e) = sockopt::set_ipv6_mtu_discover(s, Ipv6PathMtuDiscovery::WANT)
        {
            tracing::debug!("uTP: IPv6 path MTU discovery not restored: {e}");
        }
    }
    #[cfg(not(any(target_os = "linux", target_os = "android")))]
    let _ = (s, addr);
}

impl Cell {
    fn new(key: (SocketAddr, u16), peer: SocketAddr, conn: Conn) -> Arc<Cell> {
        Arc::new(Cell {
            key,
            peer,
            state: Mutex::new(CellState {
                conn,
                reader: None,
                writer: None,
                dropped_at: None,
                armed: None,
            }),
            timer: Notify::new(),
        })
    }
}

impl CellState {
    /// Wakes whoever waits on what the connection now allows.
    fn wake(&mut self) {
        if self.conn.is_readable()
            && let Some(w) = self.reader.take()
        {
            w.wake();
        }
        // Space to write, or (for a connect waiting here, whose buffer is
        // empty) a change of phase.
        if (self.conn.send_space() > 0 || self.conn.is_closed())
            && let Some(w) = self.writer.take()
        {
            w.wake();
        }
    }
}

impl Shared {
    /// A new connection's configuration, when it makes `conns` in all.
    fn new(io: Io, local: SocketAddr, opts: Opts) -> Arc<Shared> {
        let (accept_tx, accept_rx) = mpsc::channel(ACCEPT_QUEUE);
        Arc::new(Shared {
            io,
            local,
            epoch: now(),
            opts,
            conns: Mutex::new(HashMap::new()),
            accept_tx,
            accept_rx: tokio::sync::Mutex::new(accept_rx),
        })
    }

    /// Sends what the connections a batch of datagrams changed now allow
    /// (their ACKs among it: the delayed ACK).
    fn flush_dirty(&self, dirty: &mut Vec<Arc<Cell>>) {
        for cell in dirty.drain(..) {
            let mut st = lock(&cell.state);
            self.flush(&cell, &mut st);
        }
    }

    /// The receive loop ended: streams waiting on the socket learn it now.
    fn closed(&self) {
        let cells: Vec<_> = lock(&self.conns).values().cloned().collect();
        for cell in cells {
            cell.timer.notify_one();
        }
    }

    fn config(&self, peer: SocketAddr, conns: usize) -> Config {
        let native_v6 = matches!(peer.ip(), IpAddr::V6(ip) if ip.to_ipv4_mapped().is_none());
        let (recv_buffer, send_buffer) = self.buffers_for(conns);
        Config {
            recv_buffer,
            send_buffer,
            mss: if native_v6 { MSS_V6 } else { MSS },
        }
    }

    /// Each connection's (receive, send) buffer when `conns` share the
    /// memory budget.
    fn buffers_for(&self, conns: usize) -> (usize, usize) {
        let o = &self.opts;
        match o.memory_budget {
            None => (o.recv_buffer, o.send_buffer),
            Some(budget) => {
                let share = (budget / (2 * conns.max(1))).max(MIN_BUFFER);
                (o.recv_buffer.min(share), o.send_buffer.min(share))
            }
        }
    }

    /// Shares the budget out again after a connection came or went.
    fn rebalance(&self) {
        if self.opts.memory_budget.is_none() {
            return;
        }
        let cells: Vec<Arc<Cell>> = lock(&self.conns).values().cloned().collect();
        let (recv, send) = self.buffers_for(cells.len());
        for cell in cells {
            let mut st = lock(&cell.state);
            if st.conn.buffers() != (recv, send) {
                st.conn.set_buffers(recv, send);
                st.wake();
                self.flush(&cell, &mut st);
            }
        }
    }

    /// The form of `addr` this socket can send to (IPv4 as ::ffff:a.b.c.d
    /// on a dual-stack socket; a path takes any address as it is).
    fn sendable(&self, addr: SocketAddr) -> SocketAddr {
        match (self.local, addr.ip()) {
            _ if matches!(self.io, Io::Path(_)) => addr,
            (SocketAddr::V6(_), IpAddr::V4(v4)) => {
                SocketAddr::new(IpAddr::V6(v4.to_ipv6_mapped()), addr.port())
            }
            _ => addr,
        }
    }

    /// Sends everything the connection allows now, and re-arms its timer
    /// if its next deadline moved earlier.
    ///
    /// Datagrams are gathered into runs of one size (the last of a run may
    /// be shorter), each sent with one system call.
    fn flush(&self, cell: &Cell, st: &mut CellState) {
        let now = now();
        let max_run = match &self.io {
            Io::Udp { batch, .. } => batch.max_gso_segments().max(1),
            Io::Path(_) => 1,
        };
        SEND_BUF.with_borrow_mut(|buf| {
            if buf.is_empty() {
                buf.resize(GSO_BYTES.max(MAX_DATAGRAM), 0);
            }
            let (mut len, mut run, mut size) = (0, 0, 0);
            while let Some(n) = st
                .conn
                .poll_transmit(now, &mut buf[len..len + MAX_DATAGRAM])
            {
                if run > 0 && n > size {
                    // Longer than the run's datagrams: the run ends before it.
                    if !self.send_run(&buf[..len], size, cell.peer) {
                        return;
                    }
                    buf.copy_within(len..len + n, 0);
                    (len, run) = (0, 0);
                }
                if run == 0 {
                    size = n;
                }
                len += n;
                run += 1;
                // A shorter datagram ends the run; so does a full buffer.
                if n < size || run == max_run || len + MAX_DATAGRAM > buf.len() {
                    let sent = self.send_run(&buf[..len], size, cell.peer);
                    (len, run) = (0, 0);
                    if !sent {
                        return;
                    }
                }
            }
            if run > 0 {
                self.send_run(&buf[..len], size, cell.peer);
            }
        });
        let next = st.conn.poll_timeout();
        if next != st.armed && (st.armed.is_none() || next.is_some_and(|n| Some(n) < st.armed)) {
            cell.timer.notify_one();
        }
    }

    /// Sends `data`, datagrams of `size` bytes each (the last may be
    /// shorter), in one system call. False when the kernel's buffer is
    /// full: the caller stops sending until the next wake-up.
    ///
    /// A datagram the kernel will not take is lost like any other: the
    /// connection's loss recovery sends it again.
    fn send_run(&self, data: &[u8], size: usize, to: SocketAddr) -> bool {
        let (udp, batch) = match &self.io {
            Io::Udp { udp, batch } => (udp, batch),
            Io::Path(path) => {
                return data
                    .chunks(size.max(1))
                    .all(|d| match path.try_send_to(to, d) {
                        Ok(()) => true,
                        Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
                        Err(e) => {
                            tracing::debug!("uTP send to {to} by its path: {e}");
                            true
                        }
                    });
            }
        };
        let t = quinn_udp::Transmit {
            destination: to,
            ecn: None,
            contents: data,
            segment_size: (data.len() > size).then_some(size),
            src_ip: None,
        };
        let sent = udp.try_io(tokio::io::Interest::WRITABLE, || {
            batch.try_send(udp.into(), &t)
        });
        match sent {
            Ok(()) => true,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => false,
            Err(e) if t.segment_size.is_some() => {
                // The route may not take GSO (no offload, or a path MTU
                // below our datagrams; quinn-udp then stops offering it):
                // one by one, the kernel fragments where it must.
                tracing::debug!("uTP batched send to {to}: {e}; sending one by one");
                data.chunks(size).all(|d| self.send_run(d, size, to))
            }
            Err(e) => {
                tracing::debug!("uTP send to {to}: {e}");
                true
            }
        }
    }

    /// Takes one datagram; a connection that changed is added to `dirty`.
    fn on_datagram(self: &Arc<Self>, d: &[u8], from: SocketAddr, dirty: &mut Vec<Arc<Cell>>) {
        let Ok((h, payload)) = packet::parse(d) else {
            return;
        };
        let key = if h.ty == Type::Syn {
            (from, h.conn_id.wrapping_add(1))
        } else {
            (from, h.conn_id)
        };
        let found = lock(&self.conns).get(&key).cloned();
        let cell = match found {
            Some(c) => c,
            None if h.ty == Type::Syn => match self.on_new_syn(&h, from) {
                Some(c) => c,
                None => return,
            },
            None => return,
        };
        {
            let mut st = lock(&cell.state);
            st.conn.on_packet(&h, payload, now());
            st.wake();
        }
        if !dirty.iter().any(|c| Arc::ptr_eq(c, &cell)) {
            dirty.push(cell);
        }
    }

    /// A SYN for a connection we do not have: admitted, within the caps
    /// and with room in the accept queue, it becomes a connection.
    fn on_new_syn(self: &Arc<Self>, syn: &packet::Header, from: SocketAddr) -> Option<Arc<Cell>> {
        if let Some(admit) = &self.opts.admit_syn
            && !admit(from)
        {
            return None;
        }
        let permit = self.accept_tx.clone().try_reserve_owned().ok()?;
        let cell = {
            let mut conns = lock(&self.conns);
            if conns.len() >= self.opts.max_conns {
                return None;
            }
            let conn = Conn::accept(
                self.config(from, conns.len() + 1),
                self.epoch,
                now(),
                syn,
                rand::random(),
            );
            let cell = Cell::new((from, conn.recv_id()), from, conn);
            conns.insert(cell.key, cell.clone());
            cell
        };
        permit.send(self.adopt(&cell));
        Some(cell)
    }

    /// Starts a connection just added to `conns`: the budget is shared
    /// out again, its timer runs, and its stream is made.
    fn adopt(self: &Arc<Self>, cell: &Arc<Cell>) -> UtpStream {
        self.rebalance();
        tokio::spawn(timer_loop(self.clone(), cell.clone()));
        UtpStream {
            cell: cell.clone(),
            shared: self.clone(),
        }
    }

    fn forget(&self, cell: &Cell) {
        let removed = {
            let mut conns = lock(&self.conns);
            let ours = conns
                .get(&cell.key)
                .is_some_and(|c| std::ptr::eq(&**c, cell));
            ours && conns.remove(&cell.key).is_some()
        };
        if removed {
            if tracing::enabled!(tracing::Level::DEBUG) {
                let st = lock(&cell.state);
                tracing::debug!("uTP {}: closed: {}", cell.key.0, st.conn.summary());
            }
            self.rebalance();
        }
    }
}

thread_local! {
    /// Where `flush` gathers a run of datagrams (one per sending thread).
    static SEND_BUF: std::cell::RefCell<Vec<u8>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// Reads datagrams until shutdown.
async fn receive_loop(shared: Arc<Shared>) {
    let Io::Udp { udp, batch } = &shared.io else {
        return;
    };
    let slots = RECV_SLOTS.min(quinn_udp::BATCH_SIZE);
    let mut bufs: Vec<Vec<u8>> = (0..slots).map(|_| vec![0u8; 64 * 1024]).collect();
    let mut slices: Vec<io::IoSliceMut<'_>> =
        bufs.iter_mut().map(|b| io::IoSliceMut::new(b)).collect();
    let mut meta = vec![quinn_udp::RecvMeta::default(); slots];
    let mut dirty = Vec::new();
    loop {
        tokio::select! {
            r = udp.readable() => if let Err(e) = r {
                tracing::debug!("uTP socket: {e}");
                break;
            },
            _ = shared.opts.shutdown.cancelled() => break,
        }
        let mut taken = 0;
        while taken < RECV_BATCH {
            let got = udp.try_io(tokio::io::Interest::READABLE, || {
                batch.recv(udp.into(), &mut slices, &mut meta)
            });
            let n = match got {
                Ok(n) => n,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                // ICMP errors for earlier sends surface here; they are not
                // ours to act on.
                Err(e) => {
                    tracing::trace!("uTP receive: {e}");
                    taken += 1;
                    continue;
                }
            };
            for (m, slice) in meta.iter().zip(&slices).take(n) {
                let data = &slice[..m.len.min(slice.len())];
                // One buffer may hold a GRO run: datagrams `stride` apart.
                // An empty datagram has a stride of 0, and is nothing.
                for d in data.chunks(m.stride.max(1)) {
                    shared.on_datagram(d, m.addr, &mut dirty);
                    taken += 1;
                }
            }
        }
        shared.flush_dirty(&mut dirty);
    }
    shared.closed();
}

/// Takes the datagrams a [`DatagramPath`] delivers until shutdown or the
/// path's end, in batches as [`receive_loop`] does.
async fn path_receive_loop(shared: Arc<Shared>, mut incoming: Incoming) {
    let mut dirty = Vec::new();
    loop {
        let first = tokio::select! {
            d = incoming.recv() => d,
            _ = shared.opts.shutdown.cancelled() => None,
        };
        let Some((from, d)) = first else { break };
        shared.on_datagram(&d, from, &mut dirty);
        for _ in 1..RECV_BATCH {
            let Ok((from, d)) = incoming.try_recv() else {
                break;
            };
            shared.on_datagram(&d, from, &mut dirty);
        }
        shared.flush_dirty(&mut dirty);
    }
    shared.closed();
}

/// Runs one connection's timers until it is over and its stream dropped.
async fn timer_loop(shared: Arc<Shared>, cell: Arc<Cell>) {
    loop {
        let deadline = {
            let mut st = lock(&cell.state);
            let now = now();
            if st.conn.poll_timeout().is_some_and(|t| t <= now) {
                st.conn.on_timeout(now);
                st.wake();
            }
            shared.flush(&cell, &mut st);
            let done = match st.dropped_at {
                Some(at) => {
                    st.conn.is_closed()
                        || st.conn.is_finished_sending()
                        || now.saturating_duration_since(at) >= LINGER
                }
                None => false,
            };
            if done || shared.opts.shutdown.is_cancelled() {
                drop(st);
                shared.forget(&cell);
                let mut st = lock(&cell.state);
                if let Some(w) = st.reader.take() {
                    w.wake();
                }
                if let Some(w) = st.writer.take() {
                    w.wake();
                }
                return;
            }
            let mut d = st.conn.poll_timeout();
            if let Some(at) = st.dropped_at {
                let linger = at + LINGER;
                d = Some(d.map_or(linger, |d| d.min(linger)));
            }
            st.armed = d;
            d
        };
        let sleep = async {
            match deadline {
                Some(d) => tokio::time::sleep_until(d.into()).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = cell.timer.notified() => {}
            _ = sleep => {}
            _ = shared.opts.shutdown.cancelled() => {}
        }
    }
}

/// One uTP connection as a byte stream.
pub struct UtpStream {
    cell: Arc<Cell>,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for UtpStream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "UtpStream({})", self.cell.peer)
    }
}

impl UtpStream {
    /// The peer's address (IPv4 peers as IPv4, not mapped).
    pub fn remote_addr(&self) -> SocketAddr {
        SocketAddr::new(self.cell.peer.ip().to_canonical(), self.cell.peer.port())
    }

    /// The connection's receive and send buffer sizes now.
    pub fn buffers(&self) -> (usize, usize) {
        lock(&self.cell.state).conn.buffers()
    }

    /// The connection's congestion window now, in bytes.
    pub fn congestion_window(&self) -> usize {
        lock(&self.cell.state).conn.congestion_window()
    }

    fn gone(&self) -> bool {
        self.shared.opts.shutdown.is_cancelled()
    }
}

impl AsyncRead for UtpStream {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let mut st = lock(&self.cell.state);
        match st.conn.read(buf.initialize_unfilled()) {
            Read::Data(n) => {
                buf.advance(n);
                // Reading may have reopened a closed window: say so now.
                self.shared.flush(&self.cell, &mut st);
                Poll::Ready(Ok(()))
            }
            Read::Eof => Poll::Ready(Ok(())),
            Read::Failed(f) => Poll::Ready(Err(io_error(f))),
            Read::WouldBlock if self.gone() => Poll::Ready(Err(io::Error::other("shutting down"))),
            Read::WouldBlock => {
                st.reader = Some(cx.waker().clone());
                Poll::Pending
            }
        }
    }
}

impl AsyncWrite for UtpStream {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        let mut st = lock(&self.cell.state);
        match st.conn.write(data) {
            Write::Took(0) if !data.is_empty() => {
                if self.gone() {
                    return Poll::Ready(Err(io::Error::other("shutting down")));
                }
                st.writer = Some(cx.waker().clone());
                Poll::Pending
            }
            Write::Took(n) => {
                self.shared.flush(&self.cell, &mut st);
                Poll::Ready(Ok(n))
            }
            Write::Shut => Poll::Ready(Err(io::ErrorKind::BrokenPipe.into())),
            Write::Failed(f) => Poll::Ready(Err(io_error(f))),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let mut st = lock(&self.cell.state);
        st.conn.shutdown();
        self.shared.flush(&self.cell, &mut st);
        Poll::Ready(Ok(()))
    }
}

impl Drop for UtpStream {
    fn drop(&mut self) {
        let mut st = lock(&self.cell.state);
        st.dropped_at = Some(now());
        st.conn.shutdown();
        self.shared.flush(&self.cell, &mut st);
        drop(st);
        self.cell.timer.notify_one();
    }
}

/// Re-exported for the fuzz target and tests: the state machine's limits.
pub use conn::MAX_REORDER;

#[cfg(test)]
mod tests;
