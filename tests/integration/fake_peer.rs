//! A scriptable fake BitTorrent peer for the hostile-peer tests: plain
//! blocking sockets (std::net + socket2), one thread per peer, no tokio.
//!
//! It dials btc (from a chosen 127.0.0.x) or accepts btc's dial, does the
//! BEP 3 handshake with the extension bit set, sends typed messages (the
//! library's own [`Message`] encoder) or raw bytes, reads and decodes btc's
//! messages with a timeout, and tells whether (and when) btc closed the
//! connection (EOF or RST). Every socket call is bounded by a timeout, so a
//! misbehaving btc can fail a test but never hang it.

#![allow(dead_code)]

use btc::id::{InfoHash, PeerId};
use btc::peer::extension::ExtendedHandshake;
use btc::peer::handshake::{HANDSHAKE_LEN, Handshake};
use btc::peer::message::Message;
use bytes::{Bytes, BytesMut};
use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use std::io::{self, ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

/// Default bound on a blocking connect, read or write.
pub const IO_TIMEOUT: Duration = Duration::from_secs(10);

/// Frames from btc larger than this are a btc bug (it sends 16 KiB blocks
/// and at most a bitfield or a metadata piece).
const MAX_INCOMING_FRAME: usize = 2 << 20;

/// A loopback address 127.0.0.`n`, to give each role its own IP.
pub fn lo(n: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 0, 0, n))
}

/// A peer id: `tag` (at most 20 bytes) padded with `-`.
pub fn peer_id(tag: &[u8]) -> PeerId {
    let mut id = [b'-'; 20];
    let n = tag.len().min(20);
    id[..n].copy_from_slice(&tag[..n]);
    PeerId(id)
}

/// How a fake peer's socket is made.
#[derive(Clone, Copy, Debug)]
pub struct SockOpts {
    /// Local address to bind before connecting (port 0).
    pub local: IpAddr,
    /// SO_RCVBUF, to make a peer that never reads fill btc's send side fast.
    pub rcvbuf: Option<usize>,
    /// Bound on connecting.
    pub connect_timeout: Duration,
    /// Bound on each later read or write (the handshake included).
    pub io_timeout: Duration,
}

impl SockOpts {
    pub fn from(local: IpAddr) -> SockOpts {
        SockOpts {
            local,
            rcvbuf: None,
            connect_timeout: IO_TIMEOUT,
            io_timeout: IO_TIMEOUT,
        }
    }

    /// A tiny receive buffer (the kernel rounds it up to its minimum).
    pub fn small_rcvbuf(mut self) -> SockOpts {
        self.rcvbuf = Some(4096);
        self
    }
}

/// A TCP connection to `remote` from `opts.local` (bind before connect).
pub fn tcp_connect(opts: &SockOpts, remote: SocketAddr) -> io::Result<TcpStream> {
    let domain = if remote.is_ipv4() {
        Domain::IPV4
    } else {
        Domain::IPV6
    };
    let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    if let Some(n) = opts.rcvbuf {
        s.set_recv_buffer_size(n)?;
    }
    s.bind(&SockAddr::from(SocketAddr::new(opts.local, 0)))?;
    s.connect_timeout(&SockAddr::from(remote), opts.connect_timeout)?;
    let stream: TcpStream = s.into();
    stream.set_nodelay(true)?;
    Ok(stream)
}

/// What one read attempt gave.
#[derive(Debug)]
pub enum Recv {
    /// A whole message.
    Msg(Message),
    /// Nothing complete before the timeout.
    Timeout,
    /// btc closed the connection (EOF or reset).
    Closed,
}

/// One connection to btc, handshake done.
pub struct FakePeer {
    stream: TcpStream,
    rbuf: Vec<u8>,
    /// Our address.
    pub local: SocketAddr,
    /// btc's address.
    pub remote: SocketAddr,
    /// btc's BEP 3 handshake.
    pub theirs: Handshake,
    /// btc's extended handshake, once seen by a `recv*`.
    pub their_ext: Option<ExtendedHandshake>,
    closed_at: Option<Instant>,
    no_reads: bool,
    /// Messages received so far (all kinds), for assertions.
    pub received: usize,
}

impl FakePeer {
    /// Dials btc at `addr` from 127.0.0.1 and handshakes for `info_hash`.
    pub fn connect(addr: SocketAddr, info_hash: InfoHash, id: PeerId) -> io::Result<FakePeer> {
        FakePeer::connect_with(&SockOpts::from(lo(1)), addr, info_hash, id)
    }

    /// Dials btc at `addr` from `local` and handshakes.
    pub fn connect_from(
        local: IpAddr,
        addr: SocketAddr,
        info_hash: InfoHash,
        id: PeerId,
    ) -> io::Result<FakePeer> {
        FakePeer::connect_with(&SockOpts::from(local), addr, info_hash, id)
    }

    /// Dials btc with socket options `opts` and handshakes: ours first (as
    /// the dialling side), then btc's. An error means btc refused us
    /// (closed without answering) or the network failed.
    pub fn connect_with(
        opts: &SockOpts,
        addr: SocketAddr,
        info_hash: InfoHash,
        id: PeerId,
    ) -> io::Result<FakePeer> {
        let mut stream = tcp_connect(opts, addr)?;
        stream.set_read_timeout(Some(opts.io_timeout))?;
        stream.set_write_timeout(Some(opts.io_timeout))?;
        stream.write_all(&Handshake::ours(info_hash, id, false).encode())?;
        let theirs = read_handshake(&mut stream)?;
        if theirs.info_hash != info_hash {
            return Err(io::Error::other("btc answered for another torrent"));
        }
        FakePeer::wrap(stream, theirs)
    }

    /// Accepts one connection from btc on `listener` (within `timeout`),
    /// reads btc's handshake, then answers with ours. Like a client
    /// without encryption, it hangs up on btc's first, MSE-encrypted
    /// attempt (`--encryption prefer`) and takes the plaintext redial.
    pub fn accept(
        listener: &TcpListener,
        info_hash: InfoHash,
        id: PeerId,
        timeout: Duration,
    ) -> io::Result<FakePeer> {
        FakePeer::accept_v2(listener, info_hash, id, timeout, false)
    }

    /// [`FakePeer::accept`], our handshake setting the BitTorrent v2 bit
    /// (reserved byte 7, 0x10) when `v2`.
    pub fn accept_v2(
        listener: &TcpListener,
        info_hash: InfoHash,
        id: PeerId,
        timeout: Duration,
        v2: bool,
    ) -> io::Result<FakePeer> {
        let end = Instant::now() + timeout;
        let mut attempt = 0;
        let (mut stream, theirs) = loop {
            let left = end.saturating_duration_since(Instant::now());
            let mut stream = accept_timeout(listener, left)?;
            stream.set_nodelay(true)?;
            stream.set_read_timeout(Some(IO_TIMEOUT))?;
            stream.set_write_timeout(Some(IO_TIMEOUT))?;
            attempt += 1;
            match read_handshake(&mut stream) {
                Ok(h) => break (stream, h),
                Err(e) if e.kind() == ErrorKind::InvalidData && attempt == 1 => continue,
                Err(e) => return Err(e),
            }
        };
        if theirs.info_hash != info_hash {
            return Err(io::Error::other("btc dialled us for another torrent"));
        }
        stream.write_all(&Handshake::ours(info_hash, id, false).with_v2(v2).encode())?;
        FakePeer::wrap(stream, theirs)
    }

    fn wrap(stream: TcpStream, theirs: Handshake) -> io::Result<FakePeer> {
        Ok(FakePeer {
            local: stream.local_addr()?,
            remote: stream.peer_addr()?,
            stream,
            rbuf: Vec::new(),
            theirs,
            their_ext: None,
            closed_at: None,
            no_reads: false,
            received: 0,
        })
    }

    /// btc's peer id, from its handshake.
    pub fn their_id(&self) -> PeerId {
        self.theirs.peer_id
    }

    /// When btc closed the connection, if it did (as far as we have seen).
    pub fn closed_at(&self) -> Option<Instant> {
        self.closed_at
    }

    /// From now on this peer never reads: btc's data piles up in the
    /// socket buffers and then in btc. `recv*` calls panic.
    pub fn never_read(&mut self) {
        self.no_reads = true;
        let _ = socket2::SockRef::from(&self.stream).set_recv_buffer_size(4096);
    }

    /// Bounds every later write (a flood must not block the test forever).
    pub fn set_write_timeout(&self, t: Duration) {
        let _ = self.stream.set_write_timeout(Some(t));
    }

    fn note_write(&mut self, r: io::Result<()>) -> io::Result<()> {
        if let Err(e) = &r
            && is_close(e)
            && self.closed_at.is_none()
        {
            self.closed_at = Some(Instant::now());
        }
        r
    }

    /// Sends one message.
    pub fn send(&mut self, m: &Message) -> io::Result<()> {
        let mut b = BytesMut::new();
        m.encode(&mut b);
        self.send_raw(&b)
    }

    /// Sends many messages in one write (a flood).
    pub fn send_all<'a>(&mut self, ms: impl IntoIterator<Item = &'a Message>) -> io::Result<()> {
        let mut b = BytesMut::new();
        for m in ms {
            m.encode(&mut b);
        }
        self.send_raw(&b)
    }

    /// Sends bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        let r = self.stream.write_all(bytes);
        self.note_write(r)
    }

    /// Sends BEP 10 extended message `id` with `payload`.
    pub fn send_extended(&mut self, id: u8, payload: &[u8]) -> io::Result<()> {
        self.send(&Message::Extended {
            id,
            payload: Bytes::copy_from_slice(payload),
        })
    }

    /// Sends our extended handshake.
    pub fn send_ext_handshake(&mut self, hs: &ExtendedHandshake) -> io::Result<()> {
        self.send_extended(0, &hs.encode())
    }

    /// Reads one message, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Recv {
        assert!(!self.no_reads, "recv on a never_read() peer");
        let end = Instant::now() + timeout;
        loop {
            if let Some(m) = self.take_frame() {
                return Recv::Msg(m);
            }
            if self.closed_at.is_some() {
                return Recv::Closed;
            }
            let left = end.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Recv::Timeout;
            }
            let _ = self
                .stream
                .set_read_timeout(Some(left.max(Duration::from_millis(1))));
            let mut chunk = [0u8; 64 * 1024];
            match self.stream.read(&mut chunk) {
                Ok(0) => self.closed_at = Some(Instant::now()),
                Ok(n) => self.rbuf.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::TimedOut => {}
                Err(e) if e.kind() == ErrorKind::Interrupted => {}
                Err(_) => self.closed_at = Some(Instant::now()),
            }
        }
    }

    /// Reads until a message for which `pred` holds (returned), the
    /// timeout, or the close (both `None`). Other messages are dropped,
    /// except btc's extended handshake, which is kept in `their_ext`.
    pub fn recv_until(
        &mut self,
        timeout: Duration,
        mut pred: impl FnMut(&Message) -> bool,
    ) -> Option<Message> {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Msg(m) if pred(&m) => return Some(m),
                Recv::Msg(_) => {}
                Recv::Timeout | Recv::Closed => return None,
            }
        }
    }

    /// Reads (and drops) whatever btc sends until it closes the connection
    /// (true) or `timeout` passes with the connection still open (false).
    pub fn is_closed_by_remote(&mut self, timeout: Duration) -> bool {
        let end = Instant::now() + timeout;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.recv(left) {
                Recv::Closed => return true,
                Recv::Timeout => return false,
                Recv::Msg(_) => {}
            }
        }
    }

    /// Without reading any data: whether btc has closed (EOF or RST seen by
    /// a zero-timeout peek, or a failed write seen earlier). Data waiting
    /// to be read hides a FIN behind it, so this can say "open" for a
    /// closed connection that still has unread data.
    pub fn peek_closed(&mut self) -> bool {
        if self.closed_at.is_some() {
            return true;
        }
        let _ = self.stream.set_nonblocking(true);
        let mut b = [0u8; 1];
        let closed = match self.stream.peek(&mut b) {
            Ok(0) => true,
            Ok(_) => false,
            Err(e) => !(e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted),
        };
        let _ = self.stream.set_nonblocking(false);
        if closed {
            self.closed_at = Some(Instant::now());
        }
        closed
    }

    /// Takes one decoded frame off the read buffer.
    fn take_frame(&mut self) -> Option<Message> {
        if self.rbuf.len() < 4 {
            return None;
        }
        let len = u32::from_be_bytes(self.rbuf[..4].try_into().unwrap()) as usize;
        assert!(len <= MAX_INCOMING_FRAME, "btc sent a frame of {len} bytes");
        if self.rbuf.len() < 4 + len {
            return None;
        }
        let body = Bytes::copy_from_slice(&self.rbuf[4..4 + len]);
        self.rbuf.drain(..4 + len);
        let m = Message::decode(body).unwrap_or_else(|e| panic!("btc sent a bad frame: {e}"));
        self.received += 1;
        if let Message::Extended { id: 0, payload } = &m
            && let Ok(hs) = ExtendedHandshake::decode(payload)
        {
            self.their_ext = Some(hs);
        }
        Some(m)
    }

    /// The raw socket, for what the helpers do not cover.
    pub fn stream(&self) -> &TcpStream {
        &self.stream
    }
}

/// Whether an I/O error means the other side closed the connection.
pub fn is_close(e: &io::Error) -> bool {
    matches!(
        e.kind(),
        ErrorKind::BrokenPipe
            | ErrorKind::ConnectionReset
            | ErrorKind::ConnectionAborted
            | ErrorKind::UnexpectedEof
            | ErrorKind::NotConnected
    )
}

/// Reads the 68-byte handshake (bounded by the stream's read timeout).
fn read_handshake(stream: &mut TcpStream) -> io::Result<Handshake> {
    let mut b = [0u8; HANDSHAKE_LEN];
    stream.read_exact(&mut b)?;
    Handshake::decode(&b).map_err(|e| io::Error::new(ErrorKind::InvalidData, e.to_string()))
}

/// `listener.accept()` bounded by `timeout`.
pub fn accept_timeout(listener: &TcpListener, timeout: Duration) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let end = Instant::now() + timeout;
    loop {
        match listener.accept() {
            Ok((s, _)) => {
                s.set_nonblocking(false)?;
                return Ok(s);
            }
            Err(e) if e.kind() == ErrorKind::WouldBlock => {
                if Instant::now() >= end {
                    return Err(io::Error::new(
                        ErrorKind::TimedOut,
                        "btc did not connect in time",
                    ));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// A listener on `ip`, any free port: where btc is told (`--peer`) to dial
/// a fake peer.
pub fn listen_on(ip: IpAddr) -> TcpListener {
    TcpListener::bind(SocketAddr::new(ip, 0)).expect("binding a fake peer's listener")
}

/// Whether btc at `addr` refuses a connection from `local`: it closes the
/// connection (or never answers) instead of replying with a handshake
/// within `timeout`.
pub fn handshake_refused(
    local: IpAddr,
    addr: SocketAddr,
    info_hash: InfoHash,
    id: PeerId,
    timeout: Duration,
) -> bool {
    let mut opts = SockOpts::from(local);
    opts.connect_timeout = timeout;
    let Ok(mut stream) = tcp_connect(&opts, addr) else {
        return true;
    };
    let _ = stream.set_read_timeout(Some(timeout));
    let _ = stream.set_write_timeout(Some(timeout));
    if stream
        .write_all(&Handshake::ours(info_hash, id, false).encode())
        .is_err()
    {
        return true;
    }
    read_handshake(&mut stream).is_err()
}

/// An extended handshake that offers ut_metadata under `ut_metadata`.
pub fn ext_handshake(ut_metadata: Option<u8>) -> ExtendedHandshake {
    ExtendedHandshake {
        ut_metadata,
        client: Some("fake-peer".into()),
        ..ExtendedHandshake::default()
    }
}
