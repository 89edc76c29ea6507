//! `--proxy`: the I/O half. Opens TCP tunnels through the proxy (SOCKS5
//! `CONNECT` or HTTP `CONNECT`) and keeps the one SOCKS5 `UDP ASSOCIATE`
//! relay the UDP trackers share, driving the pure codec in the parent
//! module. Every step has a time limit.

use super::{
    Command, Method, ProxyError, ProxyKind, ProxyUrl, TargetAddr, auth_request, greeting,
    http_connect_request, parse_auth_reply, parse_http_connect_reply, parse_method_choice,
    parse_reply, percent_encode, request, unwrap_udp, wrap_udp,
};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Connecting to the proxy and its whole handshake (the proxy's own
/// connection to the target included) get this long.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(20);
/// A relay that failed is not asked again for this long.
const RELAY_RETRY: Duration = Duration::from_secs(30);
/// The largest datagram we take from the relay.
const MAX_DATAGRAM: usize = 64 * 1024;

/// The process's proxy, installed once at start by the download command.
static PROXY: std::sync::OnceLock<Arc<Proxy>> = std::sync::OnceLock::new();

/// Makes `proxy` the one every connection of the process goes through:
/// peer dials, HTTP clients (trackers, web seeds, `.torrent` URLs) and UDP
/// trackers all ask [`current`]. One process-wide setting rather than a
/// value handed down to each client, so no code path can forget it. A
/// second call is ignored (one proxy per process).
pub fn install(proxy: Arc<Proxy>) {
    let _ = PROXY.set(proxy);
}

/// The proxy, when `--proxy` was given.
pub fn current() -> Option<Arc<Proxy>> {
    PROXY.get().cloned()
}

/// Adds the proxy, if any, to an HTTP client being built. With a proxy
/// the client also stops reading `HTTP_PROXY`-style variables (an explicit
/// proxy replaces them).
pub fn apply(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    match current() {
        Some(p) => builder.proxy(p.http.clone()),
        None => builder,
    }
}

/// The proxy every connection of the process goes through: its URL and
/// its address (resolved once, at start), and the UDP relay when one
/// could be had.
pub struct Proxy {
    url: ProxyUrl,
    addr: SocketAddr,
    /// The same proxy for the HTTP client; see `reqwest_proxy`.
    http: reqwest::Proxy,
    /// `--bind`: the local IP to reach the proxy from (when of its family).
    bind: Option<IpAddr>,
    /// The proxy's own failure last warned about (cleared when it answers).
    trouble: Mutex<Option<String>>,
    relay: tokio::sync::Mutex<RelaySlot>,
    udp_warned: AtomicBool,
}

#[derive(Default)]
struct RelaySlot {
    relay: Option<Arc<UdpRelay>>,
    /// When the last attempt failed (no new attempt before `RELAY_RETRY`).
    failed_at: Option<tokio::time::Instant>,
}

impl std::fmt::Debug for Proxy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Proxy({} at {})", self.url, self.addr)
    }
}

impl Proxy {
    /// Resolves the proxy's host (the one name btc looks up itself under
    /// `--proxy`; an IP needs no lookup).
    pub async fn resolve(url: ProxyUrl, bind: Option<IpAddr>) -> Result<Arc<Proxy>, ProxyError> {
        let addr = match url.host.parse::<IpAddr>() {
            Ok(ip) => SocketAddr::new(ip, url.port),
            Err(_) if crate::iface::name().is_some() => {
                let ips = tokio::time::timeout(HANDSHAKE_TIMEOUT, crate::iface::lookup(&url.host))
                    .await
                    .map_err(|_| ProxyError::Timeout("resolving the proxy's name"))?
                    .map_err(|e| ProxyError::BadUrl(format!("{}: {e}", url.host)))?;
                let ip = ips
                    .first()
                    .ok_or_else(|| ProxyError::BadUrl(format!("{} has no address", url.host)))?;
                SocketAddr::new(*ip, url.port)
            }
            Err(_) => tokio::time::timeout(
                HANDSHAKE_TIMEOUT,
                tokio::net::lookup_host((url.host.as_str(), url.port)),
            )
            .await
            .map_err(|_| ProxyError::Timeout("resolving the proxy's name"))??
            .next()
            .ok_or_else(|| ProxyError::BadUrl(format!("{} has no address", url.host)))?,
        };
        let http = reqwest_proxy(&url, addr)?;
        Ok(Arc::new(Proxy {
            url,
            addr,
            http,
            bind,
            trouble: Mutex::new(None),
            relay: tokio::sync::Mutex::new(RelaySlot::default()),
            udp_warned: AtomicBool::new(false),
        }))
    }

    /// The URL (its `Display` hides credentials).
    pub fn url(&self) -> &ProxyUrl {
        &self.url
    }

    /// The proxy's address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// A TCP connection to `target` through the proxy, ready for the
    /// target's protocol.
    pub async fn connect(&self, target: &TargetAddr) -> Result<TcpStream, ProxyError> {
        let r = self.tunnel(target).await;
        self.note(&r);
        r
    }

    /// The local IP to talk to `to` from: `--bind` when of its family.
    fn local_ip(&self, to: SocketAddr) -> IpAddr {
        match self.bind {
            Some(ip) if ip.is_ipv4() == to.is_ipv4() => ip,
            _ if to.is_ipv4() => IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            _ => IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED),
        }
    }

    /// A TCP connection to the proxy, from `--bind` when set.
    async fn dial(&self) -> Result<TcpStream, ProxyError> {
        let socket = if self.addr.is_ipv4() {
            tokio::net::TcpSocket::new_v4()?
        } else {
            tokio::net::TcpSocket::new_v6()?
        };
        crate::iface::bind(&socket)?;
        let ip = self.local_ip(self.addr);
        if !ip.is_unspecified() {
            socket.bind(SocketAddr::new(ip, 0))?;
        }
        Ok(socket.connect(self.addr).await?)
    }

    /// Says once (per distinct cause) that the proxy itself fails, and
    /// once that it answers again; a target the proxy cannot reach is the
    /// peer's failure, not the proxy's, and is not warned about.
    fn note<T>(&self, r: &Result<T, ProxyError>) {
        let mut trouble = self.trouble.lock().unwrap_or_else(|e| e.into_inner());
        match r {
            Ok(_) => {
                if trouble.take().is_some() {
                    tracing::warn!("proxy {}: answering again", self.url);
                }
            }
            Err(e) if e.is_the_proxys() => {
                let text = e.to_string();
                if trouble.as_deref() != Some(text.as_str()) {
                    tracing::warn!(
                        "proxy {}: {text}; nothing connects until it answers (retrying)",
                        self.url
                    );
                    *trouble = Some(text);
                }
            }
            Err(_) => {}
        }
    }

    async fn tunnel(&self, target: &TargetAddr) -> Result<TcpStream, ProxyError> {
        tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let mut s = self.dial().await?;
            s.set_nodelay(true)?;
            match self.url.kind {
                ProxyKind::Http => {
                    s.write_all(&http_connect_request(target, self.url.auth.as_ref()))
                        .await?;
                    // Byte by byte: nothing after the header may be
                    // consumed (the target speaks next, in theory).
                    let mut buf = Vec::with_capacity(256);
                    loop {
                        buf.push(read_byte(&mut s).await?);
                        if parse_http_connect_reply(&buf)?.is_some() {
                            break;
                        }
                    }
                }
                _ => {
                    self.socks_handshake(&mut s, Command::Connect, target)
                        .await?;
                }
            }
            Ok(s)
        })
        .await
        .map_err(|_| ProxyError::Timeout("in the proxy handshake"))?
    }

    /// Method negotiation, authentication and one request on `s`; the
    /// reply's bound address.
    async fn socks_handshake(
        &self,
        s: &mut TcpStream,
        cmd: Command,
        target: &TargetAddr,
    ) -> Result<TargetAddr, ProxyError> {
        let auth = self.url.auth.as_ref();
        s.write_all(&greeting(auth.is_some())).await?;
        let mut buf = Vec::new();
        let method = loop {
            buf.push(read_byte(s).await?);
            if let Some((m, _)) = parse_method_choice(&buf, auth.is_some())? {
                break m;
            }
        };
        if method == Method::UserPass
            && let Some(c) = auth
        {
            s.write_all(&auth_request(c)?).await?;
            buf.clear();
            loop {
                buf.push(read_byte(s).await?);
                if parse_auth_reply(&buf)?.is_some() {
                    break;
                }
            }
        }
        s.write_all(&request(cmd, target)?).await?;
        buf.clear();
        loop {
            buf.push(read_byte(s).await?);
            if let Some((bound, _)) = parse_reply(&buf)? {
                return Ok(bound);
            }
            if buf.len() >= super::MAX_REPLY {
                return Err(ProxyError::Oversized(super::MAX_REPLY));
            }
        }
    }

    /// The UDP relay, set up on first use and again after it is lost;
    /// `None` when the proxy cannot relay UDP (said once, as a warning).
    pub async fn udp_relay(&self) -> Option<Arc<UdpRelay>> {
        if !self.url.kind.is_socks() {
            self.warn_no_udp(&ProxyError::NoUdp(
                "an http:// proxy relays TCP only".into(),
            ));
            return None;
        }
        let mut slot = self.relay.lock().await;
        if let Some(r) = &slot.relay {
            if r.alive() {
                return Some(r.clone());
            }
            tracing::warn!(
                "proxy {}: the UDP relay was lost; asking for a new one",
                self.url
            );
            slot.relay = None;
        }
        if let Some(t) = slot.failed_at
            && t.elapsed() < RELAY_RETRY
        {
            return None;
        }
        match self.associate().await {
            Ok(r) => {
                tracing::info!("proxy {}: UDP relay at {}", self.url, r.relay);
                slot.failed_at = None;
                slot.relay = Some(r.clone());
                Some(r)
            }
            Err(e) => {
                slot.failed_at = Some(tokio::time::Instant::now());
                match e {
                    ProxyError::Refused(_) | ProxyError::NoUdp(_) => self.warn_no_udp(&e),
                    // Down or unreachable: the next try may work.
                    _ => self.note::<()>(&Err(e)),
                }
                None
            }
        }
    }

    fn warn_no_udp(&self, e: &ProxyError) {
        if !self.udp_warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "proxy {}: UDP trackers are off ({e}); nothing is sent around the proxy",
                self.url
            );
        }
    }

    /// `UDP ASSOCIATE`: a control connection (kept open: the relay lives
    /// as long as it does) and a UDP socket that talks to the relay only.
    async fn associate(&self) -> Result<Arc<UdpRelay>, ProxyError> {
        let (control, bound) = tokio::time::timeout(HANDSHAKE_TIMEOUT, async {
            let mut s = self.dial().await?;
            let any = TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::UNSPECIFIED), 0));
            let bound = self
                .socks_handshake(&mut s, Command::UdpAssociate, &any)
                .await?;
            Ok::<_, ProxyError>((s, bound))
        })
        .await
        .map_err(|_| ProxyError::Timeout("asking for a UDP relay"))??;
        let relay = match bound {
            // An unspecified address means "the proxy's own".
            TargetAddr::Ip(a) if a.ip().is_unspecified() => {
                SocketAddr::new(self.addr.ip(), a.port())
            }
            TargetAddr::Ip(a) => a,
            TargetAddr::Domain(..) => {
                return Err(ProxyError::NoUdp("the relay's address is a name".into()));
            }
        };
        let local = SocketAddr::new(self.local_ip(relay), 0);
        let sock = UdpSocket::bind(local).await?;
        crate::iface::bind(&sock)?;
        sock.connect(relay).await?;
        let r = Arc::new(UdpRelay {
            sock,
            relay,
            waiters: Mutex::new(HashMap::new()),
            krpc: Tap::default(),
            utp: Tap::default(),
            alive: CancellationToken::new(),
        });
        // The control connection: its end is the relay's end.
        let gone = r.alive.clone();
        tokio::spawn(async move {
            let mut control = control;
            let mut b = [0u8; 64];
            loop {
                tokio::select! {
                    _ = gone.cancelled() => return,
                    n = control.read(&mut b) => match n {
                        Ok(0) | Err(_) => break,
                        Ok(_) => {}
                    },
                }
            }
            gone.cancel();
        });
        let weak = Arc::downgrade(&r);
        let stop = r.alive.clone();
        tokio::spawn(async move {
            let mut buf = vec![0u8; MAX_DATAGRAM];
            loop {
                let Some(r) = weak.upgrade() else { return };
                let n = tokio::select! {
                    _ = stop.cancelled() => return,
                    n = r.sock.recv(&mut buf) => n,
                };
                match n {
                    Ok(n) => r.dispatch(&buf[..n]),
                    Err(e) => {
                        tracing::debug!("UDP relay: {e}");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                    }
                }
            }
        });
        Ok(r)
    }
}

impl Drop for UdpRelay {
    fn drop(&mut self) {
        // Ends the control connection, and with it the association.
        self.alive.cancel();
    }
}

/// The proxy for the HTTP client (trackers, web seeds, `.torrent` URLs):
/// `socks5h://` for both SOCKS5 schemes, so the client never resolves a
/// name itself, and the resolved proxy address so it does not resolve the
/// proxy's either.
fn reqwest_proxy(url: &ProxyUrl, addr: SocketAddr) -> Result<reqwest::Proxy, ProxyError> {
    let scheme = match url.kind {
        ProxyKind::Http => "http",
        _ => "socks5h",
    };
    let auth = match &url.auth {
        Some(c) => format!("{}:{}@", percent_encode(&c.user), percent_encode(&c.pass)),
        None => String::new(),
    };
    let host = match addr.ip() {
        IpAddr::V6(ip) => format!("[{ip}]"),
        IpAddr::V4(ip) => ip.to_string(),
    };
    let u = format!("{scheme}://{auth}{host}:{}", addr.port());
    // reqwest's error would hold the URL, password and all: say only that.
    reqwest::Proxy::all(u).map_err(|_| ProxyError::BadUrl("the HTTP client refused it".into()))
}

async fn read_byte<S: AsyncRead + Unpin>(s: &mut S) -> Result<u8, ProxyError> {
    let mut b = [0u8; 1];
    match s.read(&mut b).await? {
        0 => Err(ProxyError::Closed),
        _ => Ok(b[0]),
    }
}

/// A datagram and the address that sent it.
pub type Datagram = (SocketAddr, Vec<u8>);

/// uTP datagrams from the relay waiting for the uTP socket: a receive
/// buffer's worth of full packets.
const UTP_QUEUE: usize = 4096;

/// DHT datagrams from the relay waiting for the DHT node.
const KRPC_QUEUE: usize = 256;

/// Whether a relayed datagram is uTP's: version 1 and a type of 0-4 in
/// its first byte. A UDP tracker's answer starts with a zero byte (its
/// action) and a DHT message with `d`, so the three never meet.
fn is_utp(payload: &[u8]) -> bool {
    payload.len() >= 20 && payload[0] & 0x0f == 1 && payload[0] >> 4 <= 4
}

/// One SOCKS5 UDP association: datagrams out are wrapped with their
/// target, datagrams in are unwrapped and handed to whoever waits for
/// their transaction id (UDP tracker packets carry it in bytes 4..8).
pub struct UdpRelay {
    sock: UdpSocket,
    relay: SocketAddr,
    waiters: Mutex<HashMap<u32, mpsc::Sender<Vec<u8>>>>,
    /// Where DHT datagrams (bencoded, so starting with `d`; a UDP tracker
    /// answer starts with a zero byte) go, with their sender.
    krpc: Tap,
    /// Where uTP datagrams (version 1 in the low nibble of the first byte,
    /// a type of 0-4 in the high one) go, with their sender.
    utp: Tap,
    alive: CancellationToken,
}

/// One kind of relayed datagram's way to whoever takes it now (the last
/// to subscribe), through a bounded queue: a taker that falls behind
/// loses datagrams, as it would behind a full socket.
#[derive(Default)]
struct Tap(Mutex<Option<mpsc::Sender<Datagram>>>);

impl Tap {
    fn subscribe(&self, queue: usize) -> mpsc::Receiver<Datagram> {
        let (tx, rx) = mpsc::channel(queue);
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(tx);
        rx
    }

    fn forward(&self, from: TargetAddr, payload: &[u8]) {
        if let TargetAddr::Ip(from) = from
            && let Some(tx) = &*self.0.lock().unwrap_or_else(|e| e.into_inner())
        {
            let _ = tx.try_send((from, payload.to_vec()));
        }
    }
}

/// A registered transaction id; unregistered on drop.
pub struct Waiter<'a> {
    relay: &'a UdpRelay,
    tid: u32,
    /// Datagrams answering this transaction.
    pub rx: mpsc::Receiver<Vec<u8>>,
}

impl Drop for Waiter<'_> {
    fn drop(&mut self) {
        self.relay.lock().remove(&self.tid);
    }
}

impl UdpRelay {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u32, mpsc::Sender<Vec<u8>>>> {
        self.waiters.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the control connection is still up.
    pub fn alive(&self) -> bool {
        !self.alive.is_cancelled()
    }

    /// Waits for datagrams carrying `tid` until the returned guard drops.
    pub fn wait_for(&self, tid: u32) -> Waiter<'_> {
        let (tx, rx) = mpsc::channel(4);
        self.lock().insert(tid, tx);
        Waiter {
            relay: self,
            tid,
            rx,
        }
    }

    /// Sends `payload` to `to` through the relay.
    pub async fn send(&self, to: &TargetAddr, payload: &[u8]) -> Result<(), ProxyError> {
        if !self.alive() {
            return Err(ProxyError::NoUdp("the UDP relay is gone".into()));
        }
        self.sock.send(&wrap_udp(to, payload)?).await?;
        Ok(())
    }

    /// DHT datagrams that come through the relay from now on (the last
    /// caller gets them), with the address that sent each.
    pub fn krpc_datagrams(&self) -> mpsc::Receiver<Datagram> {
        self.krpc.subscribe(KRPC_QUEUE)
    }

    /// Our end of the relay's UDP socket.
    pub fn local_addr(&self) -> SocketAddr {
        self.sock
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
    }

    /// The proxy's end: where every datagram goes.
    pub fn relay_addr(&self) -> SocketAddr {
        self.relay
    }

    /// uTP datagrams that come through the relay from now on (the last
    /// caller gets them), with the address that sent each.
    pub fn utp_datagrams(&self) -> mpsc::Receiver<Datagram> {
        self.utp.subscribe(UTP_QUEUE)
    }

    /// Sends `payload` to `to` through the relay now, or `WouldBlock`
    /// (the synchronous send uTP needs: it never waits for a socket).
    pub fn try_send_to(&self, to: SocketAddr, payload: &[u8]) -> std::io::Result<()> {
        if !self.alive() {
            return Err(std::io::Error::other("the UDP relay is gone"));
        }
        let wrapped = wrap_udp(&TargetAddr::Ip(to), payload).map_err(std::io::Error::other)?;
        self.sock.try_send(&wrapped).map(|_| ())
    }

    fn dispatch(&self, datagram: &[u8]) {
        let Ok((from, payload)) = unwrap_udp(datagram) else {
            tracing::debug!("UDP relay: dropping a malformed datagram");
            return;
        };
        if is_utp(payload) {
            return self.utp.forward(from, payload);
        }
        if payload.first() == Some(&b'd') {
            return self.krpc.forward(from, payload);
        }
        let Some(tid) = payload.get(4..8) else { return };
        let tid = u32::from_be_bytes(tid.try_into().expect("4 bytes"));
        if let Some(tx) = self.lock().get(&tid) {
            let _ = tx.try_send(payload.to_vec());
        }
    }
}

#[cfg(test)]
mod relay_tests {
    use super::is_utp;

    /// What comes through the relay goes to uTP, the DHT or a UDP
    /// tracker's waiter by its first byte, and the three never meet.
    #[test]
    fn utp_datagrams_are_told_from_dht_and_tracker_ones() {
        let mut syn = [0u8; 20];
        syn[0] = 0x41;
        assert!(is_utp(&syn));
        let mut data = syn;
        data[0] = 0x01;
        assert!(is_utp(&data));
        let mut bad = syn;
        bad[0] = 0x51;
        assert!(!is_utp(&bad), "type 5 does not exist");
        assert!(!is_utp(&syn[..19]), "shorter than a uTP header");
        let mut tracker = [0u8; 20];
        tracker[3] = 1;
        assert!(!is_utp(&tracker), "a UDP tracker's announce answer");
        assert!(!is_utp(
            b"d1:ad2:id20:aaaaaaaaaaaaaaaaaaaae1:q4:ping1:y1:qe"
        ));
    }
}
