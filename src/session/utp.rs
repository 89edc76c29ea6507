//! The session's uTP socket: `librqbit-utp` over a UDP socket whose SYNs
//! pass a per-IP and a global rate before the crate sees them.
//!
//! Why a gate in front: the crate keeps at most 32 SYNs waiting for an
//! `accept`, and a UDP SYN costs an attacker one datagram (no handshake to
//! complete, unlike TCP). One address sending thousands of SYNs a second
//! kept that queue full, and an honest peer's SYN was dropped with the
//! rest; the accept loop's own gates come too late, after the crate has
//! made the connection. So a SYN is judged on arrival, as an incoming TCP
//! connection is ([`super::accept`]): its IP's bucket first, then
//! everyone's. Other packets go straight through: the crate drops packets
//! for connections it does not have.

use super::accept::AcceptRate;
use crate::peer::transport::UtpSocketUdp;
use librqbit_dualstack_sockets::{BindOpts, PollSendToVectored, UdpSocket};
use librqbit_utp::{SocketOpts, Transport, UtpSocket};
use std::future::Future;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::num::NonZeroUsize;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most uTP connections at once, in and out.
const MAX_UTP_STREAMS: usize = 256;

/// Bytes all uTP connections together may hold in their receive and send
/// buffers. A peer can fill its connection's receive buffer (out-of-order
/// data it never completes) and a slow reader can fill the send buffer, so
/// the worst case is every connection full both ways; the per-connection
/// sizes are chosen so that case fits here.
const UTP_MEMORY_BUDGET: usize = 128 << 20;

/// The crate's default for each buffer, and the most a connection gets:
/// plenty for loopback and LAN speeds.
const UTP_BUFFER_MAX: usize = 1 << 20;

/// The least a connection's buffer gets, whatever the stream count: below
/// this a single peer's rate suffers more than memory gains.
const UTP_BUFFER_MIN: usize = 64 << 10;

/// The receive and send buffer size of each of `streams` uTP connections
/// so that all of them full at once stay within [`UTP_MEMORY_BUDGET`].
fn buffer_per_stream(streams: usize) -> usize {
    (UTP_MEMORY_BUDGET / (2 * streams.max(1))).clamp(UTP_BUFFER_MIN, UTP_BUFFER_MAX)
}

/// The UDP receive buffer asked for.
const UDP_RECV_BUFFER: usize = 8 << 20;

/// The environment type of the crate's default socket (it is not exported
/// by name; this names it through [`UtpSocketUdp`]).
pub trait EnvOf {
    /// The environment type parameter.
    type Env;
}
impl<T, E> EnvOf for UtpSocket<T, E> {
    type Env = E;
}
type DefaultEnv = <UtpSocketUdp as EnvOf>::Env;

/// The session's uTP socket.
pub type Utp = UtpSocket<GatedUdp, DefaultEnv>;

impl crate::peer::transport::UtpDialer for Arc<Utp> {
    fn connect(
        &self,
        addr: SocketAddr,
    ) -> std::pin::Pin<
        Box<dyn Future<Output = std::io::Result<crate::peer::transport::UtpStream>> + Send + '_>,
    > {
        Box::pin(async move {
            Utp::connect(self, addr)
                .await
                .map_err(std::io::Error::other)
        })
    }
}

/// Whether a datagram is a uTP SYN (type 4, version 1, a whole header).
pub fn is_syn(datagram: &[u8]) -> bool {
    datagram.len() >= 20 && datagram[0] == 0x41
}

/// A UDP socket that drops SYNs over their budget on receipt.
pub struct GatedUdp {
    inner: UdpSocket,
    /// SYNs are charged to their own accept rate (the accepted stream is
    /// charged again by the accept loop's gate).
    syns: Mutex<AcceptRate>,
}

impl GatedUdp {
    fn admit_syn(&self, addr: SocketAddr) -> bool {
        let ip = addr.ip().to_canonical();
        self.syns
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(ip, Instant::now())
    }
}

impl PollSendToVectored for GatedUdp {
    fn poll_send_to_vectored(
        &self,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
        target: SocketAddr,
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_send_to_vectored(cx, bufs, target)
    }
}

impl Transport for GatedUdp {
    async fn recv_from(&self, buf: &mut [u8]) -> std::io::Result<(usize, SocketAddr)> {
        loop {
            let (n, addr) = self.inner.recv_from(buf).await?;
            if is_syn(&buf[..n]) && !self.admit_syn(addr) {
                continue;
            }
            return Ok((n, addr));
        }
    }

    fn send_to<'a>(
        &'a self,
        buf: &'a [u8],
        target: SocketAddr,
    ) -> impl Future<Output = std::io::Result<usize>> + Send + Sync + 'a {
        self.inner.send_to(buf, target)
    }

    fn poll_send_to(
        &self,
        cx: &mut Context<'_>,
        buf: &[u8],
        target: SocketAddr,
    ) -> Poll<std::io::Result<usize>> {
        self.inner.poll_send_to(cx, buf, target)
    }

    fn bind_addr(&self) -> SocketAddr {
        self.inner.bind_addr()
    }
}

/// Binds the gated UDP socket: dual-stack when `addr` is `[::]`, with
/// don't-fragment set (the crate probes the path MTU with it) and a receive
/// buffer for a burst at full speed.
fn bind_gated(addr: SocketAddr) -> std::io::Result<GatedUdp> {
    use dontfrag::UdpSocketExt;
    let opts = BindOpts {
        request_dualstack: true,
        reuseport: false,
        device: None,
    };
    let inner = UdpSocket::bind_udp(addr, opts).map_err(std::io::Error::other)?;
    let df = if addr.is_ipv4() {
        inner.socket().set_dontfrag_v4(true)
    } else {
        inner.socket().set_dontfrag_v6(true)
    };
    if let Err(e) = df {
        tracing::debug!("uTP: don't-fragment not set: {e}");
    }
    // Room for bursts while the dispatcher catches up: a default-sized
    // buffer (~200 KiB) overflows at full speed, and every drop halves the
    // sender's window (the kernel caps this at net.core.rmem_max).
    if let Err(e) = socket2::SockRef::from(inner.socket()).set_recv_buffer_size(UDP_RECV_BUFFER) {
        tracing::debug!("uTP: receive buffer not enlarged: {e}");
    }
    Ok(GatedUdp {
        inner,
        syns: Mutex::new(AcceptRate::new(Instant::now())),
    })
}

/// Opens the uTP socket on the UDP port of the TCP listener's number (so
/// a peer that knows our port reaches us either way), on `bind`'s address
/// or on every interface of both families. A port someone else holds
/// costs uTP, not the session: a warning, and TCP alone.
pub async fn open(
    bind: Option<IpAddr>,
    port: u16,
    max_peers: usize,
    shutdown: &CancellationToken,
) -> Option<Arc<Utp>> {
    let streams = max_peers.clamp(16, MAX_UTP_STREAMS);
    let buffer = NonZeroUsize::new(buffer_per_stream(streams));
    let opts = || SocketOpts {
        vsock_rx_bufsize_bytes: buffer,
        vsock_tx_bufsize_bytes_max: buffer,
        // Peer messages are written whole and at once: no need to wait for
        // more (the TCP side sets TCP_NODELAY for the same reason).
        disable_nagle: true,
        max_live_vsocks: NonZeroUsize::new(streams),
        cancellation_token: shutdown.child_token(),
        ..Default::default()
    };
    let addrs = match bind {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ],
    };
    let mut last = None;
    for addr in addrs {
        let made = bind_gated(addr).and_then(|udp| {
            Utp::new_with_opts(udp, DefaultEnv::default(), opts()).map_err(std::io::Error::other)
        });
        match made {
            Ok(s) => {
                tracing::info!("uTP on {}", s.bind_addr());
                return Some(s);
            }
            Err(e) => last = Some(e),
        }
    }
    if let Some(e) = last {
        tracing::warn!("uTP is off: could not open UDP port {port}: {e}");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::super::accept::{PER_IP_BURST, PER_IP_RATE};
    use super::*;
    use std::time::Duration;

    /// Every connection full both ways stays within the budget, and a
    /// process with few peers keeps the crate's full-speed buffers.
    #[test]
    fn utp_buffers_fit_the_memory_budget() {
        for streams in [1, 16, 64, 200, MAX_UTP_STREAMS] {
            let each = buffer_per_stream(streams);
            assert!(2 * each * streams <= UTP_MEMORY_BUDGET, "{streams} streams");
            assert!((UTP_BUFFER_MIN..=UTP_BUFFER_MAX).contains(&each));
        }
        assert_eq!(buffer_per_stream(16), UTP_BUFFER_MAX);
        assert_eq!(buffer_per_stream(MAX_UTP_STREAMS), 256 << 10);
    }

    #[test]
    fn only_whole_v1_syns_are_syns() {
        let mut syn = vec![0x41, 0];
        syn.resize(20, 0);
        assert!(is_syn(&syn));
        assert!(!is_syn(&syn[..19]), "truncated");
        let mut state = syn.clone();
        state[0] = 0x21;
        assert!(!is_syn(&state));
        let mut v2 = syn.clone();
        v2[0] = 0x42;
        assert!(!is_syn(&v2));
    }

    /// One address's SYN flood uses up its own budget, not another's.
    #[test]
    fn a_syn_flood_from_one_address_leaves_room_for_others() {
        let now = Instant::now();
        let mut g = AcceptRate::new(now);
        let bad: IpAddr = "10.0.0.2".parse().unwrap();
        let passed = (0..10_000).filter(|_| g.admit(bad, now)).count();
        assert_eq!(passed, PER_IP_BURST as usize);
        assert!(g.admit("10.0.0.3".parse().unwrap(), now), "an honest SYN");
        let later = now + Duration::from_secs(1);
        let passed = (0..10_000).filter(|_| g.admit(bad, later)).count();
        assert_eq!(passed, PER_IP_RATE as usize);
    }

    /// Regression (uTP ran at a third of its speed: the gated socket kept
    /// the default ~200 KiB receive buffer, which overflowed at full speed
    /// and every drop halved the sender's window): the buffer is enlarged
    /// as far as the kernel allows.
    #[tokio::test]
    async fn utp_receive_buffer_is_enlarged() {
        let g = bind_gated(SocketAddr::from((Ipv4Addr::LOCALHOST, 0))).unwrap();
        let got = socket2::SockRef::from(g.inner.socket())
            .recv_buffer_size()
            .unwrap();
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        // Linux reports twice what was granted, and grants at most rmem_max.
        assert!(
            got >= UDP_RECV_BUFFER.min(max),
            "{got} bytes (rmem_max {max})"
        );
    }

    /// The gated socket carries a real uTP connection.
    #[tokio::test]
    async fn a_gated_socket_connects_and_carries_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let token = CancellationToken::new();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let a = open(lo, 0, 8, &token).await.expect("socket a");
        let b = open(lo, 0, 8, &token).await.expect("socket b");
        let to = b.bind_addr();
        let server = tokio::spawn(async move {
            let mut s = b.accept().await.unwrap();
            let mut got = [0u8; 5];
            s.read_exact(&mut got).await.unwrap();
            s.write_all(&got).await.unwrap();
            s.flush().await.unwrap();
        });
        let mut c = a.connect(to).await.unwrap();
        c.write_all(b"hello").await.unwrap();
        let mut back = [0u8; 5];
        c.read_exact(&mut back).await.unwrap();
        assert_eq!(&back, b"hello");
        server.await.unwrap();
        token.cancel();
    }
}
