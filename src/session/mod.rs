//! The session: one process, any number of torrents.
//!
//! [`Session`] owns what the whole process shares: the listener and its
//! accept loop (an incoming connection is routed to its torrent by the
//! info-hash of its handshake), the peer id, the DHT node, the rate limits,
//! the connection budget, the queue of downloads allowed to run at once
//! (`--max-active`), the pace of tracker announces and the start-up checks.
//! Each torrent is one actor, [`torrent::run`], from its start to its stop.
//! `STATE.md` beside this file says who owns what.

pub mod accept;
pub mod files;
pub mod host;
pub mod known;
pub mod layers;
pub mod lsd;
pub mod manager;
pub mod queue;
pub mod resume;
pub mod shared;
pub mod status;
pub mod stream;
pub mod torrent;
pub mod utp;
pub mod verify;

pub use torrent::{Options, Report, Source, load_cached_info};

use crate::dht::DhtHandle;
use crate::id::{InfoHash, PeerId};
use crate::peer::conn::Dialer;
use crate::ratelimit::{RateLimiter, RateLimits};
use anyhow::{Context, Result};
use shared::{ConnBudget, Shared};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Tracker announces per second across all torrents, after a burst.
const ANNOUNCE_RATE: f64 = 20.0;
/// Announces sent at once at start-up.
const ANNOUNCE_BURST: f64 = 50.0;

/// Torrents getting ready at once (metadata installed, data or resume
/// data checked). The others wait before they build anything: tens of
/// thousands started together would otherwise all hold their start-up
/// state (about 6 KiB each) while they queue for a check slot.
pub const MAX_STARTING: usize = 64;

/// What the session needs to start.
pub struct SessionConfig {
    /// TCP listen port (0 = any).
    pub port: u16,
    /// Fall back to any free port when `port` is taken.
    pub port_fallback: bool,
    /// Local IP to listen on and dial from.
    pub bind: Option<IpAddr>,
    /// The DHT node, when enabled.
    pub dht: Option<DhtHandle>,
    /// Process-wide rate limits.
    pub rate_limits: RateLimits,
    /// Connected peers at most, all torrents together.
    pub max_peers: usize,
    /// Torrents downloading at once (0 = no limit).
    pub max_active: usize,
    /// `--encryption`, for every connection in and out.
    pub encryption: crate::mse::Encryption,
    /// Local Service Discovery (BEP 14) on the IPv4 and IPv6 multicast groups.
    pub lsd: bool,
    /// uTP (BEP 29) beside TCP, on the UDP port of the listener's number
    /// (under a SOCKS5 proxy, through its UDP relay).
    pub utp: bool,
    /// TCP for peers (off only to test uTP alone: the listener then closes
    /// what it accepts, the way libtorrent does with incoming TCP off).
    pub tcp: bool,
    /// Open the peer listener (off under `--proxy` without `--port`: no
    /// socket at all then, and `port` is only what trackers are told).
    pub listen: bool,
    /// Tell HTTP trackers our globally routable addresses (BEP 7); off
    /// under `--proxy`, where they would unmask us.
    pub tell_addresses: bool,
}

/// The process-level half of the client; see the module doc.
pub struct Session {
    /// Our peer id, the same for every torrent.
    pub peer_id: PeerId,
    /// The port our listener is on.
    pub listen_port: u16,
    /// The router's port for our listener, once port mapping got one:
    /// what trackers and the DHT are told.
    pub external_port: Arc<crate::portmap::ExternalPort>,
    /// Local IP to dial from.
    pub bind: Option<IpAddr>,
    /// The DHT node, when enabled.
    pub dht: Option<DhtHandle>,
    /// Process-wide rate limits.
    pub rate_limits: RateLimits,
    /// `--encryption`, for every connection in and out.
    pub encryption: crate::mse::Encryption,
    /// How torrents dial peers (`--bind`, the uTP socket unless
    /// `--no-utp` or its UDP port could not be had, `--no-tcp`): made once.
    dialer: Dialer,
    /// Connections open and being dialled, all torrents together.
    pub budget: Arc<ConnBudget>,
    /// Downloads allowed at once; the others wait their turn.
    pub queue: Arc<queue::ActiveQueue>,
    /// Start-up checks run at once (each uses every core).
    pub checks: Semaphore,
    /// Turns to get ready (see [`MAX_STARTING`]).
    pub starting: Arc<Semaphore>,
    /// Cores to hash on (`available_parallelism`, read once: it reads
    /// cgroup files each call).
    pub cores: usize,
    /// Tracker announces, paced for the whole process.
    pub announce_pace: Arc<RateLimiter>,
    /// Our globally routable addresses when listening on every interface,
    /// told to HTTP trackers (BEP 7) so they can give either family out.
    pub also_at: Vec<IpAddr>,
    /// The torrents incoming connections can reach.
    torrents: Mutex<Routes>,
    /// The HTTP client every tracker of every torrent shares (made on
    /// first use: a process with only UDP trackers never builds one).
    http: std::sync::OnceLock<Option<reqwest::Client>>,
    /// Woken when a torrent registers (incoming peers may wait for it).
    registered: tokio::sync::Notify,
    /// Fires when the whole process stops.
    pub shutdown: CancellationToken,
    /// The accept loop and the handshakes it runs.
    pub tasks: TaskTracker,
    /// Whether Local Service Discovery runs (asked for, and its multicast
    /// could be set up).
    lsd: std::sync::atomic::AtomicBool,
}

impl Session {
    /// Opens the listener and starts accepting peers for whichever torrents
    /// get registered.
    pub async fn start(cfg: SessionConfig, shutdown: CancellationToken) -> Result<Arc<Session>> {
        let listener = if cfg.listen {
            Some(bind_listener(cfg.bind, cfg.port, cfg.port_fallback).await?)
        } else {
            None
        };
        let listen_port = match &listener {
            Some(l) => {
                tracing::info!("listening on {}", l.local_addr()?);
                l.local_addr()?.port()
            }
            None => cfg.port,
        };
        let checks = std::thread::available_parallelism().map_or(2, |n| n.get());
        let utp = match crate::proxy::net::current() {
            _ if !cfg.utp => None,
            // Under a SOCKS5 proxy, uTP goes through its UDP relay or not
            // at all (the relay's absence is warned about once).
            Some(proxy) => proxy
                .udp_relay()
                .await
                .map(|r| utp::open_over_relay(r, cfg.listen, cfg.max_peers, &shutdown)),
            None => utp::open(cfg.bind, listen_port, cfg.max_peers, &shutdown).await,
        };
        let session = Arc::new(Session {
            peer_id: PeerId::generate(),
            listen_port,
            external_port: Arc::default(),
            bind: cfg.bind,
            dht: cfg.dht,
            rate_limits: cfg.rate_limits,
            encryption: cfg.encryption,
            dialer: Dialer {
                bind: cfg.bind,
                utp: utp
                    .clone()
                    .map(|u| Arc::new(u) as Arc<dyn crate::peer::transport::UtpDialer>),
                tcp: cfg.tcp,
            },
            budget: Arc::new(ConnBudget::new(cfg.max_peers.max(1))),
            queue: queue::ActiveQueue::new(cfg.max_active),
            checks: Semaphore::new(checks),
            starting: Arc::new(Semaphore::new(MAX_STARTING)),
            cores: checks,
            announce_pace: RateLimiter::pace(ANNOUNCE_RATE, ANNOUNCE_BURST),
            also_at: if cfg.bind.is_none() && cfg.tell_addresses {
                routable_addresses()
            } else {
                Vec::new()
            },
            torrents: Mutex::new(Routes::default()),
            http: std::sync::OnceLock::new(),
            registered: tokio::sync::Notify::new(),
            shutdown,
            tasks: TaskTracker::new(),
            lsd: std::sync::atomic::AtomicBool::new(false),
        });
        let gate = Arc::new(accept::Gate::default());
        if let Some(listener) = listener {
            crate::spawn::named(
                &session.tasks,
                "accept",
                accept::accept_loop(listener, Arc::downgrade(&session), gate.clone()),
            );
        }
        if let Some(utp) = utp {
            let stop = session.shutdown.clone();
            let weak = Arc::downgrade(&session);
            crate::spawn::named(&session.tasks, "accept uTP", async move {
                tokio::select! {
                    _ = stop.cancelled() => {}
                    _ = accept::accept_utp_loop(utp, weak, gate) => {}
                }
            });
        }
        if cfg.lsd && lsd::spawn(&session) {
            session
                .lsd
                .store(true, std::sync::atomic::Ordering::Relaxed);
        }
        Ok(session)
    }

    /// Whether Local Service Discovery finds peers for public torrents.
    pub fn lsd_running(&self) -> bool {
        self.lsd.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Routes> {
        self.torrents.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Makes a torrent reachable by incoming connections; they reach it
    /// until the returned guard is dropped.
    pub fn register(self: &Arc<Self>, shared: Arc<Shared>) -> Registered {
        let info_hash = shared.info_hash;
        let _ = shared.budget.set(self.budget.clone());
        self.lock().by_hash.insert(info_hash, shared);
        self.registered.notify_waiters();
        Registered {
            session: self.clone(),
            info_hash,
            alias: false,
        }
    }

    /// Makes a hybrid torrent reachable by its other swarm's info-hash as
    /// well (plaintext and MSE), until the guard drops. `None` when another
    /// torrent of this process already runs that swarm.
    pub fn register_swarm(
        self: &Arc<Self>,
        shared: Arc<Shared>,
        swarm: InfoHash,
    ) -> Option<Registered> {
        let mut routes = self.lock();
        if routes.by_hash.contains_key(&swarm) || routes.expected.contains(&swarm) {
            return None;
        }
        routes.by_hash.insert(swarm, shared);
        routes.by_req2.insert(crate::mse::req2_hash(&swarm), swarm);
        drop(routes);
        self.registered.notify_waiters();
        Some(Registered {
            session: self.clone(),
            info_hash: swarm,
            alias: true,
        })
    }

    /// Says a torrent has been added: an incoming connection for it that
    /// arrives while it still checks its data waits for it (see
    /// [`Session::torrent_when_ready`]) instead of being dropped. Until the
    /// guard drops.
    pub fn expect(self: &Arc<Self>, info_hash: InfoHash) -> Expected {
        let mut routes = self.lock();
        routes.expected.insert(info_hash);
        routes
            .by_req2
            .insert(crate::mse::req2_hash(&info_hash), info_hash);
        Expected {
            session: self.clone(),
            info_hash,
        }
    }

    /// How torrents dial peers: from `--bind`, over TCP and uTP.
    pub fn dialer(&self) -> Dialer {
        self.dialer.clone()
    }

    /// Whether peers are dialled and accepted over TCP (`--no-tcp` turns
    /// both off; the dialer holds the one copy).
    pub fn tcp(&self) -> bool {
        self.dialer.tcp
    }

    /// The running torrent with this info-hash, if any.
    pub fn torrent(&self, info_hash: &InfoHash) -> Option<Arc<Shared>> {
        self.lock().by_hash.get(info_hash).cloned()
    }

    /// The torrent with this info-hash once it takes peers: at once if it
    /// does, after waiting (until `deadline`) if it was added and is still
    /// getting ready, `None` if we do not run it or it is not ready in time.
    pub async fn torrent_when_ready(
        &self,
        info_hash: &InfoHash,
        deadline: tokio::time::Instant,
    ) -> Option<Arc<Shared>> {
        loop {
            let registered = self.registered.notified();
            tokio::pin!(registered);
            registered.as_mut().enable();
            {
                let routes = self.lock();
                if let Some(s) = routes.by_hash.get(info_hash) {
                    return Some(s.clone());
                }
                if !routes.expected.contains(info_hash) {
                    return None;
                }
            }
            tokio::time::timeout_at(deadline, registered).await.ok()?;
        }
    }

    /// The running torrent whose `HASH('req2', info-hash)` this is: how an
    /// encrypted incoming connection names its torrent (MSE).
    pub fn torrent_by_req2(&self, req2: &[u8; 20]) -> Option<InfoHash> {
        self.lock().by_req2.get(req2).copied()
    }

    /// The shared HTTP client for trackers, if it could be built.
    pub fn http_client(&self) -> Option<reqwest::Client> {
        self.http
            .get_or_init(|| {
                crate::tracker::http::build_client(self.bind)
                    .inspect_err(|e| tracing::warn!("HTTP trackers: {e}"))
                    .ok()
            })
            .clone()
    }

    /// Registered torrents that are not private (LSD announces those).
    pub fn public_torrents(&self) -> Vec<InfoHash> {
        self.lock()
            .by_hash
            .iter()
            .filter(|(_, s)| !s.data().is_some_and(|d| d.meta.info.private))
            .map(|(ih, _)| *ih)
            .collect()
    }

    /// Torrents registered now.
    pub fn torrent_count(&self) -> usize {
        self.lock().by_hash.len()
    }
}

/// The routing table of incoming connections.
#[derive(Default)]
struct Routes {
    /// By info-hash (the plaintext BitTorrent handshake names it).
    by_hash: HashMap<InfoHash, Arc<Shared>>,
    /// By `HASH('req2', info-hash)` (an MSE handshake names that), for
    /// every torrent added.
    by_req2: HashMap<[u8; 20], InfoHash>,
    /// Every torrent added and not stopped, registered or not yet.
    expected: std::collections::HashSet<InfoHash>,
}

/// A torrent the session runs, registered or not yet; see
/// [`Session::expect`].
pub struct Expected {
    session: Arc<Session>,
    info_hash: InfoHash,
}

impl Drop for Expected {
    fn drop(&mut self) {
        let mut routes = self.session.lock();
        routes.expected.remove(&self.info_hash);
        routes
            .by_req2
            .remove(&crate::mse::req2_hash(&self.info_hash));
        drop(routes);
        // Anyone waiting for it gives up now.
        self.session.registered.notify_waiters();
    }
}

/// A torrent's place in the routing table; removed on drop.
pub struct Registered {
    session: Arc<Session>,
    info_hash: InfoHash,
    /// A hybrid's other swarm, routed for MSE too (see
    /// [`Session::register_swarm`]).
    alias: bool,
}

impl Drop for Registered {
    fn drop(&mut self) {
        let mut routes = self.session.lock();
        routes.by_hash.remove(&self.info_hash);
        if self.alias {
            routes
                .by_req2
                .remove(&crate::mse::req2_hash(&self.info_hash));
        }
    }
}

/// Our addresses the internet could reach us at, one per family: the local
/// address the system would send from (a UDP "connect" sends nothing),
/// kept only if globally routable (a NAT's private address is no use to a
/// tracker).
fn routable_addresses() -> Vec<IpAddr> {
    let probe = |bind: &str, to: &str| -> Option<IpAddr> {
        let s = std::net::UdpSocket::bind(bind).ok()?;
        s.connect(to).ok()?;
        let ip = s.local_addr().ok()?.ip();
        is_global(ip).then_some(ip)
    };
    [
        probe("0.0.0.0:0", "192.0.2.1:6881"),
        probe("[::]:0", "[2001:db8::1]:6881"),
    ]
    .into_iter()
    .flatten()
    .collect()
}

/// Whether `ip` is globally routable (not private, loopback, link-local,
/// shared, documentation or unique-local).
pub fn is_global(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            let o = v4.octets();
            !(v4.is_private()
                || v4.is_loopback()
                || v4.is_link_local()
                || v4.is_unspecified()
                || v4.is_broadcast()
                || v4.is_documentation()
                || (o[0] == 100 && (o[1] & 0xc0) == 64))
        }
        // Global unicast is 2000::/3, less the documentation prefix.
        IpAddr::V6(v6) => {
            let s = v6.segments();
            (s[0] & 0xe000) == 0x2000 && !(s[0] == 0x2001 && s[1] == 0x0db8)
        }
    }
}

/// Opens the peer listener: on `bind`'s address, else on one socket for
/// both IPv6 and IPv4 (`[::]` with mapped v4 addresses), else on 0.0.0.0
/// where the system has no IPv6.
async fn bind_listener(bind: Option<IpAddr>, port: u16, fallback: bool) -> Result<TcpListener> {
    let shown = bind.map_or("*".to_string(), |ip| ip.to_string());
    match open_listener(bind, port).await {
        Ok(l) => Ok(l),
        Err(e) if fallback && e.kind() == std::io::ErrorKind::AddrInUse => {
            tracing::warn!("port {port} is in use; listening on a free port instead");
            open_listener(bind, 0)
                .await
                .context("opening the peer listener")
        }
        Err(e) => Err(e).with_context(|| format!("listening on {shown}:{port}")),
    }
}

async fn open_listener(bind: Option<IpAddr>, port: u16) -> std::io::Result<TcpListener> {
    match bind {
        Some(ip) => listener_on(SocketAddr::new(ip, port)),
        None => match listener_on(SocketAddr::from((std::net::Ipv6Addr::UNSPECIFIED, port))) {
            Ok(l) => Ok(l),
            Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(e),
            Err(e) => {
                tracing::debug!("no IPv6 listener ({e}); listening on IPv4 only");
                listener_on(SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)))
            }
        },
    }
}

/// A listener on `addr` (bound to `--interface`'s device, if any); on
/// `[::]` it accepts IPv4 too, whatever the system's `bindv6only` default
/// says.
fn listener_on(addr: SocketAddr) -> std::io::Result<TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let socket = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    if addr.ip() == IpAddr::V6(std::net::Ipv6Addr::UNSPECIFIED) {
        socket.set_only_v6(false)?;
    }
    socket.set_reuse_address(true)?;
    crate::iface::bind(&socket)?;
    socket.bind(&addr.into())?;
    socket.listen(1024)?;
    socket.set_nonblocking(true)?;
    TcpListener::from_std(socket.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn session() -> Arc<Session> {
        let cfg = SessionConfig {
            port: 0,
            port_fallback: false,
            bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            dht: None,
            rate_limits: RateLimits::default(),
            max_peers: 10,
            max_active: 0,
            encryption: crate::mse::Encryption::default(),
            lsd: false,
            utp: false,
            tcp: true,
            listen: true,
            tell_addresses: false,
        };
        Session::start(cfg, CancellationToken::new()).await.unwrap()
    }

    fn shared(ih: InfoHash) -> Arc<Shared> {
        let limits = shared::Limits {
            max_peers: 4,
            max_per_ip: 1,
        };
        Shared::create(
            ih,
            PeerId([1; 20]),
            1,
            None,
            limits,
            CancellationToken::new(),
        )
    }

    /// A peer that asks for a torrent still checking its data waits for it;
    /// one that asks for a torrent we do not run, or one that stops, does
    /// not wait.
    #[tokio::test]
    async fn incoming_peers_wait_for_a_torrent_getting_ready() {
        let s = session().await;
        let ih = InfoHash([5; 20]);
        let soon = tokio::time::Instant::now() + std::time::Duration::from_secs(5);
        assert!(s.torrent_when_ready(&ih, soon).await.is_none(), "not ours");
        let expected = s.expect(ih);
        assert_eq!(s.torrent_by_req2(&crate::mse::req2_hash(&ih)), Some(ih));
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.torrent_when_ready(&ih, soon).await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        let registered = s.register(shared(ih));
        assert!(waiter.await.unwrap(), "the waiting peer got the torrent");
        drop(registered);
        let waiter = {
            let s = s.clone();
            tokio::spawn(async move { s.torrent_when_ready(&ih, soon).await.is_some() })
        };
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        drop(expected);
        let t0 = tokio::time::Instant::now();
        assert!(
            !waiter.await.unwrap(),
            "a stopped torrent is not waited for"
        );
        assert!(t0.elapsed() < std::time::Duration::from_secs(1));
        assert_eq!(s.torrent_by_req2(&crate::mse::req2_hash(&ih)), None);
    }

    #[test]
    fn only_global_addresses_go_to_trackers() {
        for ip in [
            "10.1.2.3",
            "192.168.1.1",
            "127.0.0.1",
            "100.64.0.1",
            "169.254.0.1",
            "::1",
            "fd00::1",
            "fe80::1",
            "2001:db8::5",
        ] {
            assert!(!is_global(ip.parse().unwrap()), "{ip}");
        }
        for ip in ["8.8.8.8", "2a01:4f8::1"] {
            assert!(is_global(ip.parse().unwrap()), "{ip}");
        }
    }
}
