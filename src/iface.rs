//! `--interface IFACE`: the kill-switch. Every socket the process makes
//! (peer listener and dials, uTP, the DHT, UDP trackers, HTTP clients for
//! trackers, web seeds and `.torrent` URLs, LSD) is bound to the device
//! with `SO_BINDTODEVICE`, so while the device is down or has no address
//! nothing goes out at all, and never through another interface.
//!
//! Like `--proxy` (see `proxy::net::install`) it is one process-wide
//! setting, installed once at start, that every socket-making path asks
//! ([`bind`], [`http`]): no code path can be handed the wrong value.
//!
//! A watcher task polls the device (its `operstate`, `/proc/net/route`,
//! `/proc/net/if_inet6`; the decision is [`link::assess`]) and publishes
//! [`LinkState`]: while blocked, dials and tracker announces wait instead
//! of failing into long back-offs, the status says `blocked`, and `--json`
//! has an `interface` event at each change. When the device comes back the
//! run goes on by itself. The watcher is for the status and for not
//! burning retries; the binding alone is what keeps packets in.
//!
//! Names are looked up by btc itself under `--interface` ([`lookup`]): the
//! system resolver sends its queries from whichever interface routes to
//! the nameserver, so the queries go to `/etc/resolv.conf`'s nameservers
//! from a socket bound to the device (the codec is [`crate::dns`]), for
//! HTTP clients, UDP trackers, a proxy's name and DHT bootstrap nodes.

pub mod link;

pub use link::{Blocked, LinkState};

use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// How often the watcher looks at the device.
const POLL: Duration = Duration::from_millis(500);

/// Why `--interface` cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum IfaceError {
    /// No device of that name (or not a possible device name).
    #[error("no such network interface")]
    Missing,
    /// `SO_BINDTODEVICE` was refused.
    #[error("binding sockets to a device needs root or the CAP_NET_RAW capability ({0})")]
    Permission(std::io::Error),
    /// Any other failure of the test socket.
    #[error("binding a socket to it: {0}")]
    Io(std::io::Error),
}

/// One query's wait for its answer, per attempt.
const QUERY_TIMEOUT: Duration = Duration::from_secs(2);
/// Attempts per nameserver.
const QUERY_ATTEMPTS: usize = 2;

struct Installed {
    name: String,
    /// The device's index at start (multicast groups are joined by it).
    index: Option<u32>,
    state: watch::Sender<LinkState>,
}

static IFACE: OnceLock<Installed> = OnceLock::new();

/// Makes `name` the device every socket of the process is bound to, after
/// checking it exists and that binding to it is allowed. A second call is
/// ignored (one device per process).
pub fn install(name: &str) -> Result<(), IfaceError> {
    if !link::valid_name(name) {
        return Err(IfaceError::Missing);
    }
    let state = read_state(name);
    if state == LinkState::Blocked(Blocked::Missing) {
        return Err(IfaceError::Missing);
    }
    let probe = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::DGRAM, None)
        .map_err(IfaceError::Io)?;
    match probe.bind_device(Some(name.as_bytes())) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => {
            return Err(IfaceError::Permission(e));
        }
        Err(e) if e.raw_os_error() == Some(19) => return Err(IfaceError::Missing), // ENODEV
        Err(e) => return Err(IfaceError::Io(e)),
    }
    let index = std::fs::read_to_string(format!("/sys/class/net/{name}/ifindex"))
        .ok()
        .and_then(|s| s.trim().parse().ok());
    let _ = IFACE.set(Installed {
        name: name.to_string(),
        index,
        state: watch::Sender::new(state),
    });
    Ok(())
}

/// The device, when `--interface` was given.
pub fn name() -> Option<&'static str> {
    IFACE.get().map(|i| i.name.as_str())
}

/// The device's index, when `--interface` was given (and it could be
/// read at start).
pub fn index() -> Option<u32> {
    IFACE.get().and_then(|i| i.index)
}

/// Whether `--interface` was given and its device cannot carry traffic now.
pub fn blocked() -> bool {
    IFACE.get().is_some_and(|i| i.state.borrow().is_blocked())
}

/// Returns once the device can carry traffic (at once without
/// `--interface`).
pub async fn wait_up() {
    let Some(i) = IFACE.get() else { return };
    let mut rx = i.state.subscribe();
    // The sender lives in a static: it is never dropped.
    let _ = rx.wait_for(|s| !s.is_blocked()).await;
}

/// Binds a socket (TCP or UDP, before it connects or binds an address)
/// to the device; nothing without `--interface`.
pub fn bind<S: std::os::fd::AsFd>(socket: &S) -> std::io::Result<()> {
    match name() {
        Some(n) => socket2::SockRef::from(socket).bind_device(Some(n.as_bytes())),
        None => Ok(()),
    }
}

/// Binds an HTTP client's connections to the device and makes it look
/// names up through it ([`lookup`]); nothing without `--interface`.
pub fn http(builder: reqwest::ClientBuilder) -> reqwest::ClientBuilder {
    match name() {
        Some(n) => builder
            .interface(n)
            .dns_resolver(std::sync::Arc::new(DeviceResolver)),
        None => builder,
    }
}

/// reqwest's resolver under `--interface`: [`lookup`].
struct DeviceResolver;

impl reqwest::dns::Resolve for DeviceResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        let host = name.as_str().to_string();
        Box::pin(async move {
            let ips = lookup(&host).await?;
            let addrs: reqwest::dns::Addrs = Box::new(
                ips.into_iter()
                    .map(|ip| std::net::SocketAddr::new(ip, 0))
                    .collect::<Vec<_>>()
                    .into_iter(),
            );
            Ok(addrs)
        })
    }
}

/// Why a name could not be looked up through the device.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    /// `/etc/resolv.conf` names no nameserver the device can reach (a
    /// loopback one, such as systemd-resolved's stub, cannot be).
    #[error(
        "no nameserver in /etc/resolv.conf can be reached through --interface (a loopback one cannot)"
    )]
    NoServer,
    /// No nameserver answered in time.
    #[error("no nameserver answered through --interface")]
    Timeout,
    /// The answer says why.
    #[error(transparent)]
    Dns(#[from] crate::dns::DnsError),
    /// The name has no address.
    #[error("no address")]
    NoAddress,
    /// The socket failed (the device is down, say).
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

/// `host`'s addresses (IPv4 first, then IPv6), asked of `/etc/resolv.conf`'s
/// nameservers from sockets bound to the device. An IP literal is
/// returned as it is. Without `--interface`, the system resolver.
pub async fn lookup(host: &str) -> Result<Vec<std::net::IpAddr>, LookupError> {
    use crate::dns::Kind;
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    if let Ok(ip) = bare.parse::<std::net::IpAddr>() {
        return Ok(vec![ip]);
    }
    if name().is_none() {
        let addrs = tokio::net::lookup_host((host, 0)).await?;
        return Ok(addrs.map(|a| a.ip()).collect());
    }
    let conf = tokio::fs::read_to_string("/etc/resolv.conf")
        .await
        .unwrap_or_default();
    let servers: Vec<std::net::IpAddr> = crate::dns::nameservers(&conf)
        .into_iter()
        .filter(|ip| !ip.is_loopback())
        .collect();
    if servers.is_empty() {
        return Err(LookupError::NoServer);
    }
    let mut last = LookupError::Timeout;
    for server in servers {
        let mut found = Vec::new();
        for kind in [Kind::A, Kind::Aaaa] {
            match ask(server, host, kind).await {
                Ok(ips) => found.extend(ips),
                Err(LookupError::Dns(crate::dns::DnsError::NoSuchName)) => {
                    return Err(crate::dns::DnsError::NoSuchName.into());
                }
                Err(e) => last = e,
            }
            if !found.is_empty() {
                return Ok(found);
            }
        }
        if !matches!(last, LookupError::Timeout | LookupError::Io(_)) {
            last = LookupError::NoAddress;
        }
    }
    Err(last)
}

/// One question to one nameserver, from a device-bound socket, with
/// [`QUERY_ATTEMPTS`] tries of [`QUERY_TIMEOUT`].
async fn ask(
    server: std::net::IpAddr,
    host: &str,
    kind: crate::dns::Kind,
) -> Result<Vec<std::net::IpAddr>, LookupError> {
    let to = match server {
        std::net::IpAddr::V6(v6) if v6.segments()[0] & 0xffc0 == 0xfe80 => {
            std::net::SocketAddr::V6(std::net::SocketAddrV6::new(v6, 53, 0, index().unwrap_or(0)))
        }
        ip => std::net::SocketAddr::new(ip, 53),
    };
    let local: std::net::SocketAddr = if to.is_ipv4() {
        (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let sock = tokio::net::UdpSocket::bind(local).await?;
    bind(&sock)?;
    sock.connect(to).await?;
    let mut buf = vec![0u8; 1500];
    for _ in 0..QUERY_ATTEMPTS {
        let q = crate::dns::query(rand::random(), host, kind)?;
        sock.send(&q).await?;
        let answer = tokio::time::timeout(QUERY_TIMEOUT, async {
            loop {
                let n = sock.recv(&mut buf).await?;
                match crate::dns::parse_answer(&buf[..n], &q, kind) {
                    // A stray or late datagram: keep waiting for ours.
                    Err(crate::dns::DnsError::NotOurs) => continue,
                    r => return Ok::<_, LookupError>(r?),
                }
            }
        })
        .await;
        if let Ok(r) = answer {
            return r;
        }
    }
    Err(LookupError::Timeout)
}

/// The device's state now, read from the kernel.
fn read_state(name: &str) -> LinkState {
    let op = std::fs::read_to_string(format!("/sys/class/net/{name}/operstate")).ok();
    let routes = std::fs::read_to_string("/proc/net/route").unwrap_or_default();
    let inet6 = std::fs::read_to_string("/proc/net/if_inet6").unwrap_or_default();
    link::assess(
        op.as_deref(),
        link::has_v4_route(&routes, name),
        link::has_v6_address(&inet6, name),
    )
}

/// A change of the device's state, for the log and `--json`.
pub type Report = Box<dyn Fn(&str, LinkState) + Send>;

/// Starts the watcher (see the module doc) when `--interface` was given;
/// `report` hears the state at start when blocked, then every change.
pub fn spawn_watcher(stop: CancellationToken, report: Report) {
    let Some(i) = IFACE.get() else { return };
    let mut last = *i.state.borrow();
    if last.is_blocked() {
        report(&i.name, last);
    }
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(POLL);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tick.tick() => {}
            }
            let name = i.name.clone();
            let Ok(now) = tokio::task::spawn_blocking(move || read_state(&name)).await else {
                continue;
            };
            if now != last {
                last = now;
                i.state.send_replace(now);
                report(&i.name, now);
            }
        }
    });
}
