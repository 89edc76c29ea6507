//! UDP announce (BEP 15): connect, then announce, each retransmitted on the
//! BEP 15 schedule for a bounded number of attempts. One [`UdpTracker`] per
//! tracker URL keeps the socket and the connection id between announces.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::{Duration, Instant};

use std::sync::Arc;
use tokio::net::UdpSocket;

use crate::proxy::TargetAddr;
use crate::proxy::net::UdpRelay;

use super::announce::{
    AnnounceRequest, AnnounceResponse, TrackerError, UDP_MAX_DATAGRAM, UdpConnection,
    parse_udp_announce, parse_udp_connect, udp_announce_request, udp_connect_request, udp_timeout,
    udp_transaction_matches, udp_url_data,
};
use super::scrape::{ScrapeStats, parse_udp_scrape, udp_scrape_request};

/// DNS lookups get this long; a resolver that hangs must not hang the task.
const RESOLVE_TIMEOUT: Duration = Duration::from_secs(10);

/// Attempts per request (connect or announce): 15 s + 30 s + 60 s. The full
/// BEP 15 schedule runs over an hour; the announcer's own backoff takes over
/// after this.
const UDP_ATTEMPTS: u32 = 3;

/// How datagrams reach the tracker.
enum Path {
    /// Our own socket, connected to the tracker's address.
    Direct(UdpSocket, SocketAddr),
    /// `--proxy`: the SOCKS5 UDP relay, with the tracker's address as
    /// typed (a name goes to the proxy unresolved).
    Relay(Arc<UdpRelay>, TargetAddr),
}

/// State for one `udp://host:port` tracker.
pub(crate) struct UdpTracker {
    url: String,
    host: String,
    port: u16,
    bind: Option<IpAddr>,
    /// Socket connected to the tracker's address, kept between announces so
    /// the tracker sees a stable source port; or the proxy's UDP relay.
    socket: Option<Path>,
    conn: Option<UdpConnection>,
    /// The URL's path and query, sent with each announce (BEP 41).
    url_data: Vec<u8>,
}

impl UdpTracker {
    /// Parses `udp://host:port[/path]`; the path goes with each announce
    /// (BEP 41).
    pub(crate) fn new(url: &str, bind: Option<IpAddr>) -> Result<Self, TrackerError> {
        let bad = |reason: &str| TrackerError::BadUrl {
            url: url.to_string(),
            reason: reason.to_string(),
        };
        let parsed = reqwest::Url::parse(url).map_err(|e| bad(&e.to_string()))?;
        let host = parsed
            .host_str()
            .ok_or_else(|| bad("no host"))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let port = parsed.port().ok_or_else(|| bad("no port"))?;
        Ok(UdpTracker {
            url: url.to_string(),
            host,
            port,
            bind,
            socket: None,
            conn: None,
            url_data: udp_url_data(url),
        })
    }

    /// One announce: reuses the socket and connection id when still valid.
    /// Any failure drops both, so the next try starts clean (a tracker that
    /// restarted forgets our connection id).
    pub(crate) async fn announce(
        &mut self,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let r = self.try_announce(req).await;
        if r.is_err() {
            self.socket = None;
            self.conn = None;
        }
        r
    }

    /// One scrape of `info_hash` (same connection handling as announces).
    pub(crate) async fn scrape(
        &mut self,
        info_hash: &crate::id::InfoHash,
    ) -> Result<ScrapeStats, TrackerError> {
        let r = async {
            let conn_id = self.connection().await?;
            let tid: u32 = rand::random();
            let packet = udp_scrape_request(conn_id, tid, info_hash);
            let buf = self.exchange(&packet, tid, "udp scrape").await?;
            parse_udp_scrape(&buf, tid)
        }
        .await;
        if r.is_err() {
            self.socket = None;
            self.conn = None;
        }
        r
    }

    async fn try_announce(
        &mut self,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        let conn_id = self.connection().await?;
        let tid: u32 = rand::random();
        let packet = udp_announce_request(conn_id, tid, req, &self.url_data);
        let buf = self.exchange(&packet, tid, "udp announce").await?;
        parse_udp_announce(&buf, tid)
    }

    /// The socket and a valid connection id, made or renewed as needed.
    async fn connection(&mut self) -> Result<u64, TrackerError> {
        if let Some(Path::Relay(r, _)) = &self.socket
            && !r.alive()
        {
            self.socket = None;
        }
        if self.socket.is_none()
            && let Some(proxy) = crate::proxy::net::current()
        {
            let relay = proxy.udp_relay().await.ok_or(TrackerError::NoUdpRelay)?;
            let to = TargetAddr::from_host(&self.host, self.port);
            self.socket = Some(Path::Relay(relay, to));
            self.conn = None;
        }
        if self.socket.is_none() {
            let addr = self.resolve().await?;
            let local = match (self.bind, addr) {
                (Some(ip), a) if ip.is_ipv4() == a.is_ipv4() => SocketAddr::new(ip, 0),
                (_, SocketAddr::V4(_)) => SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0),
                (_, SocketAddr::V6(_)) => SocketAddr::new(IpAddr::V6(Ipv6Addr::UNSPECIFIED), 0),
            };
            let io = |e: std::io::Error| TrackerError::Io {
                addr: addr.to_string(),
                reason: e.to_string(),
            };
            let sock = UdpSocket::bind(local).await.map_err(io)?;
            crate::iface::bind(&sock).map_err(io)?;
            // Connecting filters datagrams from other sources and surfaces
            // ICMP port-unreachable as an error instead of a long timeout.
            sock.connect(addr).await.map_err(io)?;
            self.socket = Some(Path::Direct(sock, addr));
            self.conn = None;
        }
        Ok(match self.conn {
            Some(c) if c.is_valid(Instant::now()) => c.id,
            _ => {
                let tid: u32 = rand::random();
                let packet = udp_connect_request(tid);
                let buf = self.exchange(&packet, tid, "udp connect").await?;
                let id = parse_udp_connect(&buf, tid)?;
                self.conn = Some(UdpConnection {
                    id,
                    obtained: Instant::now(),
                });
                id
            }
        })
    }

    async fn resolve(&self) -> Result<SocketAddr, TrackerError> {
        if let Ok(ip) = self.host.parse::<IpAddr>() {
            return Ok(SocketAddr::new(ip, self.port));
        }
        let err = |reason: String| TrackerError::Resolve {
            host: self.host.clone(),
            reason,
        };
        if crate::iface::name().is_some() {
            // Through the device, not the system resolver.
            let ips = tokio::time::timeout(RESOLVE_TIMEOUT, crate::iface::lookup(&self.host))
                .await
                .map_err(|_| err(format!("timed out after {RESOLVE_TIMEOUT:?}")))?
                .map_err(|e| err(e.to_string()))?;
            let want_v4 = self.bind.is_none_or(|ip| ip.is_ipv4());
            return ips
                .iter()
                .find(|ip| ip.is_ipv4() == want_v4)
                .or_else(|| ips.first())
                .map(|ip| SocketAddr::new(*ip, self.port))
                .ok_or_else(|| err("no addresses".into()));
        }
        let addrs: Vec<SocketAddr> = tokio::time::timeout(
            RESOLVE_TIMEOUT,
            tokio::net::lookup_host((self.host.as_str(), self.port)),
        )
        .await
        .map_err(|_| err(format!("timed out after {RESOLVE_TIMEOUT:?}")))?
        .map_err(|e| err(e.to_string()))?
        .collect();
        // Prefer the family of our bind address, else IPv4 (more trackers
        // listen there).
        let want_v4 = self.bind.is_none_or(|ip| ip.is_ipv4());
        addrs
            .iter()
            .find(|a| a.is_ipv4() == want_v4)
            .or_else(|| addrs.first())
            .copied()
            .ok_or_else(|| err("no addresses".into()))
    }

    /// Sends `packet` and waits for a datagram carrying `tid`, retransmitting
    /// on the BEP 15 schedule. Datagrams with another transaction id are late
    /// answers to earlier attempts and are ignored.
    async fn exchange(
        &self,
        packet: &[u8],
        tid: u32,
        what: &'static str,
    ) -> Result<Vec<u8>, TrackerError> {
        let (sock, addr) = match &self.socket {
            Some(Path::Direct(sock, addr)) => (sock, addr),
            Some(Path::Relay(relay, to)) => {
                return self.relayed(relay, to, packet, tid, what).await;
            }
            None => {
                return Err(TrackerError::Io {
                    addr: self.url.clone(),
                    reason: "socket not open".into(),
                });
            }
        };
        let io = |e: std::io::Error| TrackerError::Io {
            addr: addr.to_string(),
            reason: e.to_string(),
        };
        let mut buf = vec![0u8; UDP_MAX_DATAGRAM];
        let mut waited = Duration::ZERO;
        for attempt in 0..UDP_ATTEMPTS {
            let wait = udp_timeout(attempt);
            waited += wait;
            let deadline = tokio::time::Instant::now() + wait;
            match tokio::time::timeout_at(deadline, sock.send(packet)).await {
                Ok(r) => {
                    r.map_err(io)?;
                }
                Err(_) => continue,
            }
            loop {
                match tokio::time::timeout_at(deadline, sock.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(io(e)),
                    Ok(Ok(n)) => {
                        if udp_transaction_matches(&buf[..n], tid) {
                            buf.truncate(n);
                            return Ok(buf);
                        }
                        tracing::debug!(tracker = %self.url, "ignoring udp datagram with a stale transaction id");
                    }
                }
            }
        }
        Err(TrackerError::Timeout {
            what,
            after: waited,
        })
    }
}

impl UdpTracker {
    /// [`Self::exchange`] through the proxy's UDP relay: the same schedule,
    /// answers picked out by transaction id.
    async fn relayed(
        &self,
        relay: &UdpRelay,
        to: &TargetAddr,
        packet: &[u8],
        tid: u32,
        what: &'static str,
    ) -> Result<Vec<u8>, TrackerError> {
        let io = |e: crate::proxy::ProxyError| TrackerError::Io {
            addr: format!("{to} (through the proxy)"),
            reason: e.to_string(),
        };
        let mut waiter = relay.wait_for(tid);
        let mut waited = Duration::ZERO;
        for attempt in 0..UDP_ATTEMPTS {
            let wait = udp_timeout(attempt);
            waited += wait;
            let deadline = tokio::time::Instant::now() + wait;
            relay.send(to, packet).await.map_err(io)?;
            loop {
                match tokio::time::timeout_at(deadline, waiter.rx.recv()).await {
                    Err(_) => break,
                    Ok(None) => return Err(TrackerError::NoUdpRelay),
                    Ok(Some(buf)) => {
                        if udp_transaction_matches(&buf, tid) {
                            return Ok(buf);
                        }
                    }
                }
            }
            if !relay.alive() {
                return Err(TrackerError::NoUdpRelay);
            }
        }
        Err(TrackerError::Timeout {
            what,
            after: waited,
        })
    }
}

#[cfg(test)]
#[path = "udp_tests.rs"]
mod tests;
