//! The mainline DHT (BEP 5) on IPv4 and IPv6 (BEP 32).
//!
//! IPv4 is an I/O shell around the `mainline` crate; IPv6, which mainline
//! does not do, is our own node: the sans-IO [`node::Node`] with its
//! [`krpc`] codec and routing [`table`], run by [`own::OwnNode`] on an
//! IPv6-only socket of the same port number. [`DhtHandle`] drives both:
//! a lookup asks both families at once and merges their peers, an announce
//! goes to both, and both node lists are saved (`dht.state`,
//! `dht6.state`). Bound to one address (`--bind`), only that family runs.
//!
//! This is the only module that imports `mainline`, so the rest of btc sees
//! [`DhtHandle`], [`spawn_discovery`] and our own error type, and a change of
//! DHT library touches one file.
//!
//! # How mainline runs
//!
//! `mainline::Dht` owns a dedicated OS thread (its "actor") that holds the
//! UDP socket and ticks every ≤50 ms; every call is a message to that thread.
//! Its async API (`AsyncDht`) awaits the actor's replies over flume
//! channels, so nothing here blocks the tokio reactor except the short
//! synchronous calls documented on each method (one actor round trip).
//! The actor thread exits when the last handle is dropped.
//!
//! # Loopback and private addresses
//!
//! mainline does **not** drop loopback or private node addresses: there is
//! no address filter in its socket, routing table or server, and BEP 42's
//! "secure id" check (`Id::is_valid_for_ip`) treats private, link-local and
//! loopback IPv4 addresses as always valid. Several nodes on 127.0.0.1 can
//! share a routing table as long as their (random) ids differ in the first
//! 21 bits, which they do with overwhelming probability. No setting is
//! needed; `public_ip` and `ServerSettings`/`RequestFilter` are irrelevant
//! to this. What *does* matter: a node answers queries (and so stores
//! announces) only in server mode; in the default adaptive mode it switches
//! to server mode after ~15 min if it finds it is not firewalled. Tests and
//! `btc dht` nodes therefore use `server_mode: true`.
//!
//! # Bootstrapping
//!
//! mainline fixes its bootstrap list at construction and, while its routing
//! table is empty, re-queries that list on its own (quietly, apart from a
//! tracing `error!` from the `mainline` target each failed round, which the
//! subscriber should filter). It resolves host names synchronously, so we
//! resolve them ourselves with a deadline ([`RESOLVE_DEADLINE`]) and hand it
//! only addresses: `start` never waits on DNS for longer than that. Nodes
//! saved by [`DhtHandle::save_state`] are added to the list, so a restart
//! bootstraps from known-good nodes at once. mainline cannot be given a
//! node id, only a public IP to derive a BEP 42 ("secure") id from, so the
//! state keeps the public IP that other nodes reported: the next run starts
//! with an id that is valid for it, instead of finding out mid-run and
//! resetting its routing table under a new id as mainline then does.
//!
//! # Starting offline
//!
//! A name that did not resolve at start (no network yet, DNS down) would be
//! lost for the whole run, and mainline has no way to add a bootstrap node
//! to a running node. So a watcher thread re-resolves the names while the
//! routing table is empty, backing off from 1 s to [`RETRY_MAX`], and when
//! they yield an address the node was not built with, it replaces the
//! node: a routing table that is empty loses nothing. The new node binds the
//! same port once the old actor thread has let it go; meanwhile lookups
//! come back empty and announces fail, as they would have anyway.

pub mod krpc;
pub mod node;
pub mod own;
pub mod table;

mod bootstrap;
mod discovery;
mod state;

use bootstrap::{MAX_BOOTSTRAP_ENTRIES, resolve_bounded_all, spawn_watcher, widened};
#[cfg(test)]
use bootstrap::{resolve_bounded, retry_delay};
pub use discovery::{
    AnnouncePort, LOOKUP_INTERVAL_PLENTY, LOOKUP_INTERVAL_SCARCE, spawn_discovery,
};
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) use state::parse_state_text;
pub use state::{STATE_FILE, default_state_dir};
use state::{SavedState, is_public, load_state, write_state};

use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4};
use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use futures::{Stream, StreamExt};
use mainline::{Dht, Id};

use crate::id::InfoHash;

/// Longest `start` waits for bootstrap host names to resolve.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);

/// Bootstrap addresses a node is built with at most; names that resolve to
/// ever new addresses (DNS round robin) cannot grow the list past it.
const MAX_BOOTSTRAP_ADDRS: usize = 512;

/// How often the cached routing-table size is refreshed.
const SIZE_REFRESH: Duration = Duration::from_secs(1);

/// Longest wait between two re-resolutions of the bootstrap names while
/// the routing table is empty.
pub const RETRY_MAX: Duration = Duration::from_secs(30);

/// How long a rebuild waits for the old node's actor thread to free the
/// port. The thread exits within one tick (≤ 50 ms) of its last handle
/// going, but an announce in flight holds a handle until it fails, which
/// takes a few request timeouts when the table is empty.
const REBIND_PATIENCE: Duration = Duration::from_secs(15);

/// What went wrong in the DHT shell.
#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    /// The UDP socket could not be bound or the actor thread not started.
    #[error("cannot start dht on {bind}:{port}")]
    Start {
        /// The configured bind address.
        bind: IpAddr,
        /// The configured port (0 = any).
        port: u16,
        /// The underlying error.
        source: std::io::Error,
    },
    /// Reading or writing the state file failed.
    #[error("dht state file {path}")]
    State {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: std::io::Error,
    },
    /// An announce did not reach any node.
    #[error("dht announce of {info_hash} failed: {reason}")]
    Announce {
        /// The torrent announced.
        info_hash: InfoHash,
        /// mainline's explanation (e.g. no nodes close to the info-hash).
        reason: String,
    },
    /// A blocking helper task panicked or was cancelled.
    #[error("dht background task failed: {0}")]
    Task(String),
}

/// How to run our DHT node.
#[derive(Debug, Clone, Default)]
pub struct DhtConfig {
    /// UDP port, the same number as our TCP listen port; 0 = any free port.
    pub port: u16,
    /// Address to bind; `None` = every interface. An IPv4 address runs
    /// only the IPv4 node there, an IPv6 one only the IPv6 node.
    pub bind: Option<IpAddr>,
    /// Run the IPv6 node (BEP 32) beside the IPv4 one. Without `bind`, a
    /// machine with no IPv6 just runs IPv4 (logged at debug level).
    pub ipv6: bool,
    /// Under `--proxy`: one IPv4 node of our own through the proxy's UDP
    /// relay, and nothing else (no socket, no DNS: bootstrap names are
    /// skipped, literal addresses and saved nodes used).
    pub proxy: Option<Arc<crate::proxy::net::Proxy>>,
    /// `None` = mainline's default public routers; `Some(list)` replaces
    /// them (`HOST:PORT` strings; `Some(vec![])` makes a first node).
    pub bootstrap: Option<Vec<String>>,
    /// Where `dht.state` lives; `None` = no persistence.
    pub state_dir: Option<PathBuf>,
    /// Answer queries from the start instead of mainline's adaptive mode.
    pub server_mode: bool,
}

impl DhtConfig {
    /// The bootstrap list as given, or mainline's public routers.
    pub fn bootstrap_entries(&self) -> Vec<String> {
        match &self.bootstrap {
            Some(list) => list.clone(),
            None => mainline::DEFAULT_BOOTSTRAP_NODES
                .iter()
                .map(|s| s.to_string())
                .collect(),
        }
    }
}

/// A running DHT node; cheap to clone, stops when the last clone is dropped.
#[derive(Clone)]
pub struct DhtHandle {
    /// mainline's IPv4 node (`None` when bound to an IPv6 address).
    inner: Option<Arc<Inner>>,
    /// Our IPv6 node, when it runs.
    v6: Option<own::OwnNode>,
    /// Our own IPv4 node in mainline's place, where mainline cannot go (it
    /// binds its own socket): through the proxy under `--proxy` (then
    /// alone), on a device-bound socket under `--interface`.
    own_v4: Option<own::OwnNode>,
    /// Lookup rounds (get_peers + announce) running at once, across every
    /// torrent of the process: a thousand torrents take turns.
    rounds: Arc<tokio::sync::Semaphore>,
    /// And their pace: the DHT announce budget of the process (see
    /// [`ROUNDS_PER_SECOND`]).
    round_pace: Arc<crate::ratelimit::RateLimiter>,
    /// Where both families' node lists are saved.
    state_dir: Option<PathBuf>,
}

struct Inner {
    slot: Mutex<Slot>,
    local_addr: SocketAddrV4,
    table_size: AtomicUsize,
    /// Bootstrap entries that are host names, re-resolved while the table
    /// is empty (literal addresses never change, and mainline retries them).
    names: Vec<String>,
    server_mode: bool,
    /// Saved by an earlier run; the node's BEP 42 id is derived from it.
    public_ip: Option<Ipv4Addr>,
}

/// Lookup rounds the node runs at once for all torrents together.
const MAX_CONCURRENT_ROUNDS: usize = 8;

/// Lookup rounds (each a `get_peers` and at most one announce) the
/// process starts per second, all torrents together, after a first
/// [`ROUNDS_BURST`]: the DHT announce budget. Tens of thousands of
/// seeding torrents re-announce every few minutes each; on a fast network
/// the eight rounds at once alone would let them send hundreds a second.
/// 10 a second is 600 a minute: 50,000 torrents take turns over about 80
/// minutes, jittered.
pub const ROUNDS_PER_SECOND: f64 = 10.0;
/// Rounds started at once before the pace applies (a few torrents, or a
/// process just started, are not held back).
pub const ROUNDS_BURST: f64 = 50.0;

fn round_pace() -> Arc<crate::ratelimit::RateLimiter> {
    crate::ratelimit::RateLimiter::pace(ROUNDS_PER_SECOND, ROUNDS_BURST)
}

/// The mainline node in use and the addresses it was built with.
struct Slot {
    /// `None` only while a rebuild waits for the port.
    dht: Option<Dht>,
    bootstrap: Vec<SocketAddrV4>,
}

impl DhtHandle {
    /// Starts the node. Binds the socket and returns; bootstrapping happens
    /// in the background. The only waiting is name resolution of the
    /// bootstrap list, capped at [`RESOLVE_DEADLINE`], and one round trip to
    /// mainline's actor thread. An unreachable or unresolvable bootstrap is
    /// not an error: mainline keeps retrying the addresses it was given, and
    /// the watcher thread the names (see the module docs).
    pub fn start(cfg: DhtConfig) -> Result<DhtHandle, DhtError> {
        if let Some(proxy) = &cfg.proxy {
            return Ok(Self::start_proxied(&cfg, proxy.clone()));
        }
        if crate::iface::name().is_some() {
            return Self::start_on_device(&cfg);
        }
        let entries = cfg.bootstrap_entries();
        let resolved = resolve_bounded_all(&entries, RESOLVE_DEADLINE);
        let (want_v4, want_v6) = match cfg.bind {
            Some(IpAddr::V4(_)) => (true, false),
            Some(IpAddr::V6(_)) => (false, true),
            None => (true, cfg.ipv6),
        };
        let inner = if want_v4 {
            let bind = match cfg.bind {
                Some(IpAddr::V4(ip)) => ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            Some(Self::start_v4(&cfg, bind, &entries, &resolved)?)
        } else {
            None
        };
        let v6 = if want_v6 {
            let bind = match cfg.bind {
                Some(IpAddr::V6(ip)) => ip,
                _ => std::net::Ipv6Addr::UNSPECIFIED,
            };
            let boot6: Vec<SocketAddr> = resolved.iter().copied().filter(|a| a.is_ipv6()).collect();
            let saved = cfg
                .state_dir
                .as_ref()
                .map(|dir| own::load_state(&dir.join(own::STATE_FILE)))
                .unwrap_or_default();
            // The IPv6 node takes the IPv4 node's port number when it is
            // free on IPv6 (the sockets are IPv6-only), so one forwarded
            // port number serves both.
            let port = inner.as_ref().map_or(cfg.port, |i| i.local_addr.port());
            let bind6 = SocketAddr::V6(std::net::SocketAddrV6::new(bind, port, 0, 0));
            let started = own::OwnNode::start(bind6, boot6.clone(), saved.clone()).or_else(|e| {
                if port != 0 && inner.is_some() {
                    own::OwnNode::start(SocketAddr::from((bind, 0)), boot6, saved)
                } else {
                    Err(e)
                }
            });
            match started {
                Ok(n) => {
                    tracing::debug!(addr = %n.local_addr(), "ipv6 dht started");
                    Some(n)
                }
                Err(e) if inner.is_some() => {
                    tracing::debug!(error = %e, "no ipv6 dht on this machine");
                    None
                }
                Err(source) => {
                    return Err(DhtError::Start {
                        bind: IpAddr::V6(bind),
                        port: cfg.port,
                        source,
                    });
                }
            }
        } else {
            None
        };
        Ok(DhtHandle {
            inner,
            v6,
            own_v4: None,
            rounds: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ROUNDS)),
            round_pace: round_pace(),
            state_dir: cfg.state_dir,
        })
    }

    /// Under `--proxy`: our IPv4 node through the relay (see
    /// [`DhtConfig::proxy`]). Must be called within the tokio runtime.
    fn start_proxied(cfg: &DhtConfig, proxy: Arc<crate::proxy::net::Proxy>) -> DhtHandle {
        let entries = cfg.bootstrap_entries();
        let mut bootstrap: Vec<SocketAddr> = entries
            .iter()
            .take(MAX_BOOTSTRAP_ENTRIES)
            .filter_map(|e| e.trim().parse::<SocketAddr>().ok())
            .filter(SocketAddr::is_ipv4)
            .collect();
        if let Some(dir) = &cfg.state_dir {
            for n in load_state(&dir.join(STATE_FILE)).nodes {
                let n = SocketAddr::V4(n);
                if !bootstrap.contains(&n) {
                    bootstrap.push(n);
                }
            }
        }
        if bootstrap.is_empty() {
            tracing::warn!(
                "DHT through the proxy: no bootstrap node given by address (names are not resolved around the proxy); use --dht-bootstrap IP:PORT"
            );
        }
        DhtHandle {
            inner: None,
            v6: None,
            own_v4: Some(own::OwnNode::start_proxied(proxy, bootstrap)),
            rounds: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ROUNDS)),
            round_pace: round_pace(),
            // The relay's node is read-only and short-lived: nothing saved.
            state_dir: None,
        }
    }

    /// Under `--interface`: our own nodes for both families, on sockets
    /// bound to the device (see [`crate::iface`]). Bootstrap names are
    /// not looked up; literal addresses and saved nodes are used.
    fn start_on_device(cfg: &DhtConfig) -> Result<DhtHandle, DhtError> {
        let entries = cfg.bootstrap_entries();
        let bootstrap: Vec<SocketAddr> = entries
            .iter()
            .take(MAX_BOOTSTRAP_ENTRIES)
            .filter_map(|e| e.trim().parse::<SocketAddr>().ok())
            .collect();
        if bootstrap.len() < entries.len().min(MAX_BOOTSTRAP_ENTRIES) {
            tracing::warn!(
                "DHT: bootstrap names left unresolved through --interface (see resolve_on_device) are skipped; use --dht-bootstrap IP:PORT"
            );
        }
        let (want_v4, want_v6) = match cfg.bind {
            Some(IpAddr::V4(_)) => (true, false),
            Some(IpAddr::V6(_)) => (false, true),
            None => (true, cfg.ipv6),
        };
        let saved = |file: &str| -> Vec<SocketAddr> {
            cfg.state_dir
                .as_ref()
                .map(|dir| {
                    if file == STATE_FILE {
                        let s = load_state(&dir.join(file));
                        s.nodes.into_iter().map(SocketAddr::V4).collect()
                    } else {
                        own::load_state(&dir.join(file))
                    }
                })
                .unwrap_or_default()
        };
        let start_error = |bind: IpAddr, source| DhtError::Start {
            bind,
            port: cfg.port,
            source,
        };
        let own_v4 = if want_v4 {
            let ip = match cfg.bind {
                Some(IpAddr::V4(ip)) => ip,
                _ => Ipv4Addr::UNSPECIFIED,
            };
            let boot: Vec<SocketAddr> = bootstrap
                .iter()
                .copied()
                .filter(SocketAddr::is_ipv4)
                .collect();
            let n = own::OwnNode::start(SocketAddr::from((ip, cfg.port)), boot, saved(STATE_FILE))
                .map_err(|e| start_error(IpAddr::V4(ip), e))?;
            tracing::debug!(addr = %n.local_addr(), "ipv4 dht (our own node) started");
            Some(n)
        } else {
            None
        };
        let v6 = if want_v6 {
            let ip = match cfg.bind {
                Some(IpAddr::V6(ip)) => ip,
                _ => std::net::Ipv6Addr::UNSPECIFIED,
            };
            let boot: Vec<SocketAddr> = bootstrap
                .iter()
                .copied()
                .filter(SocketAddr::is_ipv6)
                .collect();
            let port = own_v4.as_ref().map_or(cfg.port, |n| n.local_addr().port());
            match own::OwnNode::start(SocketAddr::from((ip, port)), boot, saved(own::STATE_FILE)) {
                Ok(n) => Some(n),
                Err(e) if own_v4.is_some() => {
                    tracing::debug!(error = %e, "no ipv6 dht on this interface");
                    None
                }
                Err(e) => return Err(start_error(IpAddr::V6(ip), e)),
            }
        } else {
            None
        };
        Ok(DhtHandle {
            inner: None,
            v6,
            own_v4,
            rounds: Arc::new(tokio::sync::Semaphore::new(MAX_CONCURRENT_ROUNDS)),
            round_pace: round_pace(),
            state_dir: cfg.state_dir.clone(),
        })
    }

    /// Under `--interface`, the bootstrap entries with their names looked
    /// up through the device ([`crate::iface::lookup`]), all within
    /// [`RESOLVE_DEADLINE`]: `HOST:PORT` becomes one `IP:PORT` entry per
    /// address; a name that fails stays as it is (and is skipped at start).
    pub async fn resolve_on_device(entries: Vec<String>) -> Vec<String> {
        let one = |entry: String| async move {
            let e = entry.trim();
            if e.parse::<SocketAddr>().is_ok() {
                return vec![entry];
            }
            let Some((host, port)) = e.rsplit_once(':') else {
                return vec![entry];
            };
            let Ok(port) = port.parse::<u16>() else {
                return vec![entry];
            };
            match tokio::time::timeout(RESOLVE_DEADLINE, crate::iface::lookup(host)).await {
                Ok(Ok(ips)) if !ips.is_empty() => ips
                    .into_iter()
                    .map(|ip| SocketAddr::new(ip, port).to_string())
                    .collect(),
                Ok(Err(e)) => {
                    tracing::debug!(%host, error = %e, "dht bootstrap name did not resolve");
                    vec![entry]
                }
                _ => vec![entry],
            }
        };
        let lists =
            futures::future::join_all(entries.into_iter().take(MAX_BOOTSTRAP_ENTRIES).map(one))
                .await;
        lists
            .into_iter()
            .flatten()
            .take(MAX_BOOTSTRAP_ENTRIES)
            .collect()
    }

    /// mainline's IPv4 node and the thread that watches it.
    fn start_v4(
        cfg: &DhtConfig,
        bind: Ipv4Addr,
        entries: &[String],
        resolved: &[SocketAddr],
    ) -> Result<Arc<Inner>, DhtError> {
        let mut bootstrap: Vec<SocketAddrV4> = resolved
            .iter()
            .filter_map(|a| match a {
                SocketAddr::V4(v4) => Some(*v4),
                SocketAddr::V6(_) => None,
            })
            .collect();
        let saved = cfg
            .state_dir
            .as_ref()
            .map(|dir| load_state(&dir.join(STATE_FILE)))
            .unwrap_or_default();
        bootstrap = widened(&bootstrap, &saved.nodes).unwrap_or(bootstrap);
        let public_ip = saved.public_ip;
        tracing::debug!(?bootstrap, ?public_ip, port = cfg.port, %bind, "starting dht");
        let start_error = |source| DhtError::Start {
            bind: IpAddr::V4(bind),
            port: cfg.port,
            source,
        };
        let dht = build_node(
            SocketAddrV4::new(bind, cfg.port),
            &bootstrap,
            cfg.server_mode,
            public_ip,
        )
        .map_err(start_error)?;
        #[allow(deprecated)] // one actor round trip at start-up is fine
        let local_addr = dht.info().local_addr();
        let names = entries
            .iter()
            .take(MAX_BOOTSTRAP_ENTRIES)
            .map(|e| e.trim().to_string())
            .filter(|e| e.parse::<SocketAddr>().is_err())
            .collect();
        let inner = Arc::new(Inner {
            slot: Mutex::new(Slot {
                dht: Some(dht),
                bootstrap,
            }),
            local_addr,
            table_size: AtomicUsize::new(0),
            names,
            server_mode: cfg.server_mode,
            public_ip,
        });
        spawn_watcher(Arc::downgrade(&inner)).map_err(start_error)?;
        Ok(inner)
    }

    /// The bound UDP address of the IPv4 node (0.0.0.0:port when bound to
    /// all interfaces), or of the IPv6 node when only it runs.
    pub fn local_addr(&self) -> SocketAddr {
        if let Some(n) = &self.own_v4 {
            return n.local_addr();
        }
        match (&self.inner, &self.v6) {
            (Some(i), _) => SocketAddr::V4(i.local_addr),
            (None, Some(v6)) => v6.local_addr(),
            (None, None) => SocketAddr::from(([0, 0, 0, 0], 0)),
        }
    }

    /// The IPv6 node's address, when it runs.
    pub fn local_addr_v6(&self) -> Option<SocketAddr> {
        self.v6.as_ref().map(|n| n.local_addr())
    }

    /// Good (non-stale) nodes in the routing tables of both families,
    /// refreshed by the nodes' threads, so this is two atomic loads.
    pub fn routing_table_size(&self) -> usize {
        self.inner
            .as_ref()
            .map_or(0, |i| i.table_size.load(Ordering::Relaxed))
            + self.v6.as_ref().map_or(0, |n| n.routing_table_size())
            + self.own_v4.as_ref().map_or(0, |n| n.routing_table_size())
    }

    /// Nodes in the IPv6 table (0 when it does not run).
    pub fn routing_table_size_v6(&self) -> usize {
        self.v6.as_ref().map_or(0, |n| n.routing_table_size())
    }

    /// Resolves once the routing table holds a node (polled at the pace
    /// the watcher refreshes the count).
    async fn joined(&self) {
        while self.routing_table_size() == 0 {
            tokio::time::sleep(SIZE_REFRESH / 4).await;
        }
    }

    /// One `get_peers` lookup on each family's node at once. Each node's
    /// answer is yielded as it arrives; the stream ends when both lookups
    /// have converged (the IPv4 one at once while that node is rebuilt).
    pub fn get_peers(
        &self,
        info_hash: InfoHash,
    ) -> impl Stream<Item = Vec<SocketAddr>> + Send + 'static {
        let v4 = match self.inner.as_ref().and_then(|i| i.current()) {
            Some(dht) => dht
                .as_async()
                .get_peers(Id::from(info_hash.0))
                .map(|batch| batch.into_iter().map(SocketAddr::V4).collect())
                .left_stream(),
            None => futures::stream::empty().right_stream(),
        };
        fn own(
            n: Option<&own::OwnNode>,
            info_hash: InfoHash,
        ) -> impl Stream<Item = Vec<SocketAddr>> + Send + 'static {
            match n {
                Some(n) => n.get_peers(own_id(info_hash)).left_stream(),
                None => futures::stream::empty().right_stream(),
            }
        }
        let v6 = own(self.v6.as_ref(), info_hash);
        let own_v4 = own(self.own_v4.as_ref(), info_hash);
        futures::stream::select(v4, futures::stream::select(v6, own_v4))
    }

    /// Announces that we serve `info_hash` on TCP `port` to the nodes
    /// closest to it, on both families at once (each runs the lookup for
    /// tokens first). Succeeds when either family's announce did.
    pub async fn announce(&self, info_hash: InfoHash, port: u16) -> Result<(), DhtError> {
        let fail = |reason: String| DhtError::Announce { info_hash, reason };
        let v4 = async {
            let Some(inner) = &self.inner else {
                return Err(fail("no IPv4 node".into()));
            };
            let dht = inner
                .current()
                .ok_or_else(|| fail("the node is restarting".into()))?;
            dht.as_async()
                .announce_peer(Id::from(info_hash.0), Some(port))
                .await
                .map(|_| ())
                .map_err(|e| fail(e.to_string()))
        };
        let own = |n: Option<own::OwnNode>| async move {
            match n {
                Some(n) => match n.announce(own_id(info_hash), port).await {
                    0 => Err(fail("no node took it".into())),
                    _ => Ok(()),
                },
                None => Err(fail("no node".into())),
            }
        };
        if let Some(p) = &self.own_v4 {
            let (r4, r6) = futures::join!(own(Some(p.clone())), own(self.v6.clone()));
            return match &self.v6 {
                Some(_) => r4.or_else(|e| r6.map_err(|_| e)),
                None => r4,
            };
        }
        let (r4, r6) = futures::join!(v4, own(self.v6.clone()));
        if self.inner.is_none() {
            return r6;
        }
        r4.or_else(|e| {
            if self.v6.is_some() {
                r6.map_err(|_| e)
            } else {
                Err(e)
            }
        })
    }

    /// Writes the routing table's good nodes and our public IP (as other
    /// nodes see it, if it is a public one) to `state_dir/dht.state`
    /// (atomically, via a temporary file). A no-op without a state dir, and
    /// also while the table is empty, so a short offline run does not wipe
    /// the nodes a previous run learned. Blocks for two actor round trips
    /// (≤ ~50 ms each) plus the file write.
    pub fn save_state(&self) -> Result<(), DhtError> {
        let Some(dir) = &self.state_dir else {
            return Ok(());
        };
        if let Some(n) = &self.v6 {
            let path = dir.join(own::STATE_FILE);
            own::save_state(&path, &n.good_nodes())
                .map_err(|source| DhtError::State { path, source })?;
        }
        if let Some(n) = &self.own_v4 {
            let nodes: Vec<SocketAddrV4> = n
                .good_nodes()
                .into_iter()
                .filter_map(|a| match a {
                    SocketAddr::V4(a) => Some(a),
                    SocketAddr::V6(_) => None,
                })
                .collect();
            if nodes.is_empty() {
                return Ok(());
            }
            let state = SavedState {
                nodes,
                public_ip: None,
            };
            let path = dir.join(STATE_FILE);
            return write_state(&path, &state).map_err(|source| DhtError::State { path, source });
        }
        let Some(inner) = &self.inner else {
            return Ok(());
        };
        let nodes: Vec<SocketAddrV4> = inner
            .good_nodes()
            .iter()
            .filter_map(|n| n.parse().ok())
            .collect();
        if nodes.is_empty() {
            return Ok(());
        }
        #[allow(deprecated)] // the sync call suits the threads that use it
        let reported = inner
            .current()
            .and_then(|d| d.info().public_address())
            .map(|a| *a.ip());
        let state = SavedState {
            nodes,
            public_ip: reported.filter(is_public).or(inner.public_ip),
        };
        let path = dir.join(STATE_FILE);
        write_state(&path, &state).map_err(|source| DhtError::State { path, source })
    }
}

impl Inner {
    fn slot(&self) -> MutexGuard<'_, Slot> {
        // The slot is only ever assigned whole, so a poisoned lock still
        // holds a consistent value.
        self.slot.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A handle to the node in use; cloning one is a channel-sender clone.
    fn current(&self) -> Option<Dht> {
        self.slot().dht.clone()
    }

    /// The routing table's good nodes (one actor round trip).
    fn good_nodes(&self) -> Vec<String> {
        #[allow(deprecated)] // the sync call suits the threads that use it
        self.current().map_or_else(Vec::new, |d| d.to_bootstrap())
    }

    /// Replaces the node if `resolved` holds an address it was not built
    /// with, or if an earlier rebuild could not bind. Only called while the
    /// routing table is empty, so nothing is lost. Blocks (on the watcher
    /// thread) until the port is free, at most [`REBIND_PATIENCE`]. Says
    /// whether a new node is running.
    fn rebuild_with(&self, resolved: &[SocketAddrV4]) -> bool {
        let bootstrap = {
            let mut slot = self.slot();
            let bootstrap = match (&slot.dht, widened(&slot.bootstrap, resolved)) {
                (_, Some(wider)) => wider,
                (None, None) => slot.bootstrap.clone(),
                (Some(_), None) => return false,
            };
            // Our handle goes now; the old actor thread exits (and frees the
            // port) once the handles of lookups in flight are gone too.
            slot.dht = None;
            slot.bootstrap = bootstrap.clone();
            bootstrap
        };
        let until = Instant::now() + REBIND_PATIENCE;
        loop {
            match build_node(
                self.local_addr,
                &bootstrap,
                self.server_mode,
                self.public_ip,
            ) {
                Ok(dht) => {
                    tracing::info!(
                        nodes = bootstrap.len(),
                        "DHT: bootstrap nodes now resolve; restarted the DHT node with them"
                    );
                    self.slot().dht = Some(dht);
                    return true;
                }
                Err(e) if e.kind() == std::io::ErrorKind::AddrInUse && Instant::now() < until => {
                    std::thread::sleep(Duration::from_millis(50));
                }
                Err(e) => {
                    tracing::warn!(
                        "DHT: cannot restart on {}: {e}; will try again",
                        self.local_addr
                    );
                    return false;
                }
            }
        }
    }
}

/// Builds a mainline node on `addr` that bootstraps from `bootstrap`, with
/// a BEP 42 id for `public_ip` if known (a random id otherwise).
fn build_node(
    addr: SocketAddrV4,
    bootstrap: &[SocketAddrV4],
    server_mode: bool,
    public_ip: Option<Ipv4Addr>,
) -> std::io::Result<Dht> {
    let mut builder = Dht::builder();
    builder.port(addr.port()).bind_address(*addr.ip());
    if let Some(ip) = public_ip {
        builder.public_ip(ip);
    }
    if bootstrap.is_empty() {
        builder.no_bootstrap();
    } else {
        builder.bootstrap(bootstrap);
    }
    if server_mode {
        builder.server_mode();
    }
    // mainline 8 panics ("actor thread unexpectedly shutdown") instead of
    // returning an error when its actor thread dies while starting, which
    // is what happens when the port is still held by a node being replaced.
    // A failed start must be an error we can report or retry, not a crash;
    // it counts as "address in use" so a rebind waits and retries
    // (regression: `rebuild_rebinds_the_port_and_joins` failed under load).
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| builder.build())).unwrap_or_else(
        |_| {
            Err(std::io::Error::new(
                std::io::ErrorKind::AddrInUse,
                format!("the DHT node on {addr} stopped while starting (port still in use?)"),
            ))
        },
    )
}

/// The key of `info_hash` in our own nodes: the same 20 bytes.
fn own_id(info_hash: InfoHash) -> krpc::NodeId {
    krpc::NodeId(info_hash.0)
}

#[cfg(test)]
mod tests;
