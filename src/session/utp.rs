//! The session's uTP socket ([`crate::utp`]) with its budgets: how many
//! connections, how much buffer each, and a per-IP and global rate on
//! SYNs judged as they arrive.
//!
//! Why a SYN gate: a UDP SYN costs an attacker one datagram (no handshake
//! to complete, unlike TCP), and the accept queue holds only
//! [`crate::utp::socket::ACCEPT_QUEUE`]. One address sending thousands of
//! SYNs a second would keep it full and an honest peer's SYN would be
//! dropped with the rest; the accept loop's own gates come too late, after
//! the connection exists. So a SYN is judged before any state is made for
//! it, as an incoming TCP connection is ([`super::accept`]): its IP's
//! bucket first, then everyone's. Packets for connections that do not
//! exist are dropped unread.

use super::accept::AcceptRate;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Most uTP connections at once, in and out.
const MAX_UTP_STREAMS: usize = 256;

/// Bytes all uTP connections' buffers together may hold, shared among
/// the connections open (see [`crate::utp::Opts::memory_budget`]). A peer
/// can fill its connection's receive buffer (out-of-order data it never
/// completes) and a slow reader can fill the send buffer, so the worst
/// case is every connection full both ways.
const UTP_MEMORY_BUDGET: usize = 128 << 20;

/// The most each buffer of one connection gets: a window for about
/// 160 MB/s at a 100 ms round trip, when few connections share the
/// budget (4 or fewer connections each get this, 16 get 4 MiB).
const UTP_BUFFER_MAX: usize = 16 << 20;

// With every connection open, each buffer's share is still above the
// socket's floor, so the budget holds (checked when compiling).
const _: () = assert!(UTP_MEMORY_BUDGET / (2 * MAX_UTP_STREAMS) >= crate::utp::socket::MIN_BUFFER);

/// The session's uTP socket.
pub type Utp = crate::utp::Socket;

/// The gate every SYN passes before it makes a connection.
fn syn_gate() -> crate::utp::socket::AdmitSyn {
    let rate = Mutex::new(AcceptRate::new(Instant::now()));
    Arc::new(move |addr: SocketAddr| {
        let ip = addr.ip().to_canonical();
        rate.lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(ip, Instant::now())
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
    let opts = opts(max_peers, syn_gate(), shutdown);
    let addrs = match bind {
        Some(ip) => vec![SocketAddr::new(ip, port)],
        None => vec![
            SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port)),
            SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)),
        ],
    };
    let mut last = None;
    for addr in addrs {
        match Utp::bind(addr, opts.clone()) {
            Ok(s) => {
                tracing::info!("uTP on {}", s.local_addr());
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

/// The budgets of the session's socket, direct or relayed.
fn opts(
    max_peers: usize,
    admit_syn: crate::utp::socket::AdmitSyn,
    shutdown: &CancellationToken,
) -> crate::utp::Opts {
    crate::utp::Opts {
        recv_buffer: UTP_BUFFER_MAX,
        send_buffer: UTP_BUFFER_MAX,
        memory_budget: Some(UTP_MEMORY_BUDGET),
        max_conns: max_peers.clamp(16, MAX_UTP_STREAMS),
        admit_syn: Some(admit_syn),
        shutdown: shutdown.child_token(),
    }
}

/// A SOCKS5 UDP relay as the path of uTP's datagrams.
struct RelayPath(Arc<crate::proxy::net::UdpRelay>);

impl crate::utp::DatagramPath for RelayPath {
    fn try_send_to(&self, to: SocketAddr, datagram: &[u8]) -> std::io::Result<()> {
        self.0.try_send_to(to, datagram)
    }

    fn is_open(&self) -> bool {
        self.0.alive()
    }
}

/// uTP through the proxy's UDP relay (`--proxy socks5://…`): every
/// datagram goes to the relay, wrapped with its target, so uTP peers are
/// reached without a packet around the proxy. Incoming connections are
/// taken only when `listen` (`--port` given under the proxy); otherwise
/// only the peers we dial answer.
pub fn open_over_relay(
    relay: Arc<crate::proxy::net::UdpRelay>,
    listen: bool,
    max_peers: usize,
    shutdown: &CancellationToken,
) -> Arc<Utp> {
    let admit = if listen {
        syn_gate()
    } else {
        Arc::new(|_: SocketAddr| false)
    };
    let incoming = relay.utp_datagrams();
    let local = relay.local_addr();
    tracing::info!("uTP through the proxy's UDP relay {}", relay.relay_addr());
    Utp::over(
        Arc::new(RelayPath(relay)),
        incoming,
        local,
        opts(max_peers, admit, shutdown),
    )
}

#[cfg(test)]
mod tests {
    use super::super::accept::{PER_IP_BURST, PER_IP_RATE};
    use super::*;
    use std::time::Duration;

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
        let token = CancellationToken::new();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let s = open(lo, 0, 8, &token).await.expect("socket");
        let got = s.recv_buffer_size().unwrap();
        token.cancel();
        let max = std::fs::read_to_string("/proc/sys/net/core/rmem_max")
            .ok()
            .and_then(|s| s.trim().parse::<usize>().ok())
            .unwrap_or(0);
        // Linux reports twice what was granted, and grants at most rmem_max.
        assert!(
            got >= crate::utp::socket::UDP_BUFFER.min(max),
            "{got} bytes (rmem_max {max})"
        );
    }

    /// The session's socket carries a real uTP connection.
    #[tokio::test]
    async fn a_gated_socket_connects_and_carries_bytes() {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let token = CancellationToken::new();
        let lo = Some(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let a = open(lo, 0, 8, &token).await.expect("socket a");
        let b = open(lo, 0, 8, &token).await.expect("socket b");
        let to = b.local_addr();
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
