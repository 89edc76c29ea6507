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

use std::collections::HashSet;
use std::io::Write;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak, mpsc};
use std::time::{Duration, Instant};

use crate::mailbox::Sender;
use futures::{Stream, StreamExt};
use mainline::{Dht, Id};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::id::InfoHash;

/// Longest `start` waits for bootstrap host names to resolve.
pub const RESOLVE_DEADLINE: Duration = Duration::from_secs(2);

/// Bootstrap entries considered; more are ignored (each name costs a thread).
const MAX_BOOTSTRAP_ENTRIES: usize = 64;

/// Bootstrap addresses a node is built with at most; names that resolve to
/// ever new addresses (DNS round robin) cannot grow the list past it.
const MAX_BOOTSTRAP_ADDRS: usize = 512;

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "dht.state";

/// Nodes written to / read from the state file; the routing table of a
/// healthy node holds a few hundred, and a few dozen good ones bootstrap.
const MAX_STATE_NODES: usize = 256;

/// The state file is never read past this many bytes.
const MAX_STATE_BYTES: u64 = 64 * 1024;

/// How often the cached routing-table size is refreshed.
const SIZE_REFRESH: Duration = Duration::from_secs(1);

/// Lookup cadence while the torrent wants more peers.
pub const LOOKUP_INTERVAL_SCARCE: Duration = Duration::from_secs(15);

/// Lookup cadence once peers are plentiful (also re-announces that often).
pub const LOOKUP_INTERVAL_PLENTY: Duration = Duration::from_secs(5 * 60);

/// Upper bound on one announce; mainline's put query normally ends on its
/// own within a few request timeouts.
const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Distinct peers remembered per discovery task for the `found` counter.
const MAX_SEEN_PEERS: usize = 10_000;

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

/// `current` plus the addresses of `more` it lacks, or `None` if it lacks
/// none (so there is no reason to rebuild).
fn widened(current: &[SocketAddrV4], more: &[SocketAddrV4]) -> Option<Vec<SocketAddrV4>> {
    let mut out = current.to_vec();
    for a in more {
        if out.len() < MAX_BOOTSTRAP_ADDRS && !out.contains(a) {
            out.push(*a);
        }
    }
    (out.len() > current.len()).then_some(out)
}

/// Wait before re-resolution number `attempt` (0-based) while the routing
/// table stays empty: 1, 2, 4, 8, 16 s, then every [`RETRY_MAX`].
fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(RETRY_MAX)
}

/// Keeps `table_size` fresh and, while the table is empty, re-resolves the
/// bootstrap names and rebuilds the node when they yield new addresses.
/// A plain thread (no runtime needed, and resolution blocks); it holds the
/// node only for moments, and stops once the last handle is gone.
fn spawn_watcher(inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("btc-dht-watch".into())
        .spawn(move || {
            let mut attempt = 0u32;
            let mut next_retry: Option<Instant> = None;
            loop {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let size = strong.good_nodes().len();
                strong.table_size.store(size, Ordering::Relaxed);
                let empty = size == 0 && !strong.names.is_empty();
                let names = strong.names.clone();
                drop(strong);
                if !empty {
                    attempt = 0;
                    next_retry = None;
                } else {
                    let due = *next_retry.get_or_insert_with(|| Instant::now() + retry_delay(0));
                    if Instant::now() >= due {
                        let resolved = resolve_bounded(&names, RESOLVE_DEADLINE);
                        tracing::debug!(
                            attempt,
                            ?resolved,
                            "dht routing table empty; re-resolved bootstrap names"
                        );
                        match inner.upgrade() {
                            Some(strong) => strong.rebuild_with(&resolved),
                            None => return,
                        };
                        attempt += 1;
                        next_retry = Some(Instant::now() + retry_delay(attempt));
                    }
                }
                std::thread::sleep(SIZE_REFRESH);
            }
        })
        .map(|_| ())
}

/// Resolves `HOST:PORT` entries to IPv4 addresses. Literal addresses cost
/// nothing; names are resolved on helper threads and whatever has not
/// answered by `deadline` is skipped (the threads finish on their own).
fn resolve_bounded(entries: &[String], deadline: Duration) -> Vec<SocketAddrV4> {
    resolve_bounded_all(entries, deadline)
        .into_iter()
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .collect()
}

/// [`resolve_bounded`] for both families (`[v6addr]:port` literals and
/// AAAA records too), for the IPv6 node.
fn resolve_bounded_all(entries: &[String], deadline: Duration) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let (tx, rx) = mpsc::channel::<Vec<SocketAddr>>();
    let mut pending = 0usize;
    for entry in entries.iter().take(MAX_BOOTSTRAP_ENTRIES) {
        let entry = entry.trim();
        if let Ok(addr) = entry.parse::<SocketAddr>() {
            out.push(addr);
            continue;
        }
        let name = entry.to_string();
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("btc-dht-resolve".into())
            .spawn(move || {
                let addrs = match name.to_socket_addrs() {
                    Ok(it) => it.collect(),
                    Err(e) => {
                        tracing::debug!(%name, error = %e, "dht bootstrap name did not resolve");
                        Vec::new()
                    }
                };
                let _ = tx.send(addrs);
            });
        if spawned.is_ok() {
            pending += 1;
        }
    }
    drop(tx);
    let until = Instant::now() + deadline;
    while pending > 0 {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(addrs) => {
                pending -= 1;
                for a in addrs {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(_) => {
                tracing::debug!(pending, "dht bootstrap resolution deadline passed");
                break;
            }
        }
    }
    out
}

/// What `dht.state` holds.
#[derive(Debug, Default, PartialEq)]
struct SavedState {
    /// Good nodes of the last routing table, to bootstrap from.
    nodes: Vec<SocketAddrV4>,
    /// Our public IP as other nodes reported it.
    public_ip: Option<Ipv4Addr>,
}

/// Whether `ip` can be a public address (mainline treats ids of private,
/// loopback and link-local addresses as always valid, so those are not
/// worth keeping).
fn is_public(ip: &Ipv4Addr) -> bool {
    !(ip.is_private()
        || ip.is_loopback()
        || ip.is_link_local()
        || ip.is_unspecified()
        || ip.is_broadcast()
        || ip.is_multicast()
        || ip.is_documentation())
}

/// Reads the saved state; a missing, unreadable or garbled file just yields
/// less (or nothing), since the state is only a speed-up.
fn load_state(path: &Path) -> SavedState {
    read_state_text(path).map_or_else(SavedState::default, |t| parse_state(&t))
}

/// A state file's text, read up to `MAX_STATE_BYTES`; `None` when it
/// cannot be read (a missing file is not worth a log line).
fn read_state_text(path: &Path) -> Option<String> {
    use std::io::Read;
    let mut text = String::new();
    let read =
        std::fs::File::open(path).and_then(|f| f.take(MAX_STATE_BYTES).read_to_string(&mut text));
    match read {
        Ok(_) => Some(text),
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::debug!(path = %path.display(), error = %e, "cannot read dht state");
            }
            None
        }
    }
}

/// Writes `text` to `path` so that a crash leaves the old file or the new
/// one, never half of it: a synced temporary file, then a rename.
fn write_state_text(path: &Path, text: &str) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("state.tmp");
    {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
    }
    std::fs::rename(&tmp, path)
}

/// [`parse_state`] for callers outside this module (the fuzz target): the
/// nodes and the public IP a state file's text names.
#[cfg(any(test, feature = "fuzzing"))]
pub(crate) fn parse_state_text(text: &str) -> (Vec<SocketAddrV4>, Option<Ipv4Addr>) {
    let s = parse_state(text);
    (s.nodes, s.public_ip)
}

/// Parses the state text: `node IP:PORT` and `public-ip IP` lines; other
/// lines are ignored so the format can grow.
fn parse_state(text: &str) -> SavedState {
    let mut out = SavedState::default();
    for line in text.lines() {
        let mut words = line.split_whitespace();
        match (words.next(), words.next()) {
            (Some("node"), Some(word)) => {
                if let Ok(addr) = word.parse::<SocketAddrV4>()
                    && addr.port() != 0
                    && out.nodes.len() < MAX_STATE_NODES
                    && !out.nodes.contains(&addr)
                {
                    out.nodes.push(addr);
                }
            }
            (Some("public-ip"), Some(word)) => {
                out.public_ip = word.parse().ok().filter(is_public);
            }
            _ => {}
        }
    }
    out
}

/// Writes the state file via a temporary file and rename, so a crash never
/// leaves a half-written file behind.
fn write_state(path: &Path, state: &SavedState) -> std::io::Result<()> {
    use std::fmt::Write as _;
    let mut text = String::from("# btc dht state: our public IP, then known good nodes\n");
    if let Some(ip) = state.public_ip {
        let _ = writeln!(text, "public-ip {ip}");
    }
    for node in state.nodes.iter().take(MAX_STATE_NODES) {
        let _ = writeln!(text, "node {node}");
    }
    write_state_text(path, &text)
}

/// The peer port a torrent announces: our listen port, or the router's
/// port for it once port mapping got one (read at each announce).
#[derive(Debug, Clone)]
pub struct AnnouncePort {
    /// Our TCP listen port.
    pub local: u16,
    /// The mapped port, when there is one.
    pub external: Arc<crate::portmap::ExternalPort>,
}

/// Background lookups for one torrent: peers stream into `peers` as each
/// get_peers response arrives (not after the whole lookup); repeat every
/// 1 s, backing off to ~15 s, while `want_more()` says peers are scarce,
/// every ~5 min otherwise, and at once when an empty routing table fills;
/// when `announce` is true also `announce_peer` after each lookup. Stops at
/// `shutdown` or when the `peers` receiver is dropped.
///
/// Within one lookup each address is sent at most once; later lookups send
/// it again, so the session may retry a peer it dropped earlier. `found`
/// counts distinct addresses ever seen (up to a bound), for the status line.
#[allow(clippy::too_many_arguments)] // the signature is the session's contract
pub fn spawn_discovery(
    dht: DhtHandle,
    info_hash: InfoHash,
    port: AnnouncePort,
    announce: bool,
    want_more: Arc<dyn Fn() -> bool + Send + Sync>,
    peers: Sender<Vec<SocketAddr>>,
    found: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: HashSet<SocketAddr> = HashSet::new();
        let mut scarce_rounds = 0u32;
        loop {
            // The budget first: a round waiting for it holds no slot.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = Box::pin(dht.round_pace.consume(1)) => {}
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = dht.rounds.acquire() => p,
            };
            let started = Instant::now();
            let mut stream = Box::pin(dht.get_peers(info_hash));
            let mut this_round: HashSet<SocketAddr> = HashSet::new();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = stream.next() => next,
                };
                let Some(batch) = next else { break };
                let fresh: Vec<SocketAddr> = batch
                    .into_iter()
                    .filter(|a| this_round.len() < MAX_SEEN_PEERS && this_round.insert(*a))
                    .collect();
                for a in &fresh {
                    if seen.len() < MAX_SEEN_PEERS && seen.insert(*a) {
                        found.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if fresh.is_empty() {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sent = peers.send(fresh) => if sent.is_err() { return },
                }
            }
            tracing::debug!(
                %info_hash,
                peers = this_round.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "dht lookup done"
            );
            if announce {
                let port = port.external.or(port.local);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(ANNOUNCE_TIMEOUT, dht.announce(info_hash, port)) => {
                        match r {
                            Ok(Ok(())) => tracing::debug!(%info_hash, port, "dht announce done"),
                            Ok(Err(e)) => tracing::debug!(error = %e, "dht announce failed"),
                            Err(_) => tracing::debug!(%info_hash, "dht announce timed out"),
                        }
                    }
                }
            }
            drop(permit);
            // While peers are scarce, look again soon (1, 2, 4, 8 s, then
            // every 15 s): a swarm that is just forming, like a seeder that
            // announced a second after our first lookup, is found at once.
            let wait = if want_more() {
                let w = Duration::from_secs(1 << scarce_rounds.min(4)).min(LOOKUP_INTERVAL_SCARCE);
                scarce_rounds += 1;
                w
            } else {
                scarce_rounds = 0;
                // Jittered, so torrents started together spread out.
                LOOKUP_INTERVAL_PLENTY.mul_f64(0.9 + rand::random::<f64>() / 5.0)
            };
            // A lookup on an empty table only reached the bootstrap nodes;
            // once the node has joined (e.g. the network came up), look
            // again at once rather than at the end of the back-off.
            let was_alone = dht.routing_table_size() == 0;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = dht.joined(), if was_alone => {
                    tracing::debug!(%info_hash, "dht routing table filled; looking up again");
                }
            }
        }
    })
}

/// The key of `info_hash` in our own nodes: the same 20 bytes.
fn own_id(info_hash: InfoHash) -> krpc::NodeId {
    krpc::NodeId(info_hash.0)
}

/// The default state dir: `$XDG_STATE_HOME/btc` or `~/.local/state/btc`.
pub fn default_state_dir() -> Option<PathBuf> {
    state_dir_from(std::env::var_os("XDG_STATE_HOME"), std::env::var_os("HOME"))
}

/// [`default_state_dir`] without the environment, for tests. Relative XDG
/// paths are ignored, as the XDG spec requires.
fn state_dir_from(
    xdg: Option<std::ffi::OsString>,
    home: Option<std::ffi::OsString>,
) -> Option<PathBuf> {
    if let Some(x) = xdg.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Some(x.join("btc"));
    }
    home.map(PathBuf::from)
        .filter(|p| p.is_absolute())
        .map(|h| h.join(".local").join("state").join("btc"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn loopback(bootstrap: Vec<String>, state_dir: Option<PathBuf>) -> DhtConfig {
        DhtConfig {
            port: 0,
            bind: Some(IpAddr::V4(Ipv4Addr::LOCALHOST)),
            bootstrap: Some(bootstrap),
            state_dir,
            server_mode: true,
            ipv6: false,
            proxy: None,
        }
    }

    /// A first node plus `n` nodes bootstrapped from it, all on loopback.
    fn swarm(n: usize) -> (DhtHandle, Vec<DhtHandle>, String) {
        let first = DhtHandle::start(loopback(vec![], None)).unwrap();
        let boot = first.local_addr().to_string();
        let rest = (0..n)
            .map(|_| DhtHandle::start(loopback(vec![boot.clone()], None)).unwrap())
            .collect();
        (first, rest, boot)
    }

    fn hash(byte: u8) -> InfoHash {
        InfoHash([byte; 20])
    }

    /// Runs one whole lookup and checks that `peer` was among the answers.
    async fn assert_finds(node: &DhtHandle, ih: InfoHash, peer: &str) {
        let mut stream = Box::pin(node.get_peers(ih));
        let mut got = Vec::new();
        while let Some(batch) = stream.next().await {
            got.extend(batch);
        }
        assert!(got.contains(&peer.parse().unwrap()), "{got:?}");
    }

    #[test]
    fn state_text_round_trip_and_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(STATE_FILE);
        let state = SavedState {
            nodes: vec![
                "1.2.3.4:6881".parse().unwrap(),
                "5.6.7.8:1".parse().unwrap(),
            ],
            public_ip: Some(Ipv4Addr::new(93, 184, 216, 34)),
        };
        write_state(&path, &state).unwrap();
        assert_eq!(load_state(&path), state);
        let parsed = parse_state(
            "junk\nnode\nnode 1.1.1.1:0\nnode 9.9.9.9:9 extra\nnode [::1]:5\nfuture x\npublic-ip nope\n",
        );
        assert_eq!(
            parsed,
            SavedState {
                nodes: vec!["9.9.9.9:9".parse().unwrap()],
                public_ip: None
            }
        );
        // Private addresses say nothing about our BEP 42 id.
        assert_eq!(parse_state("public-ip 192.168.1.2\n").public_ip, None);
        assert_eq!(
            load_state(&dir.path().join("missing")),
            SavedState::default()
        );
    }

    /// A saved public IP gives the node a BEP 42 id valid for it at once.
    #[test]
    fn saved_public_ip_sets_a_secure_id() {
        let dir = tempfile::tempdir().unwrap();
        let ip = Ipv4Addr::new(93, 184, 216, 34);
        let state = SavedState {
            nodes: vec!["127.0.0.1:1".parse().unwrap()],
            public_ip: Some(ip),
        };
        write_state(&dir.path().join(STATE_FILE), &state).unwrap();
        for _ in 0..3 {
            let node = DhtHandle::start(loopback(vec![], Some(dir.path().into()))).unwrap();
            #[allow(deprecated)]
            let id = *node.inner.as_ref().unwrap().current().unwrap().info().id();
            assert!(id.is_valid_for_ip(ip), "{id} is not a BEP 42 id for {ip}");
        }
        // Without it the id is random: valid for a given IP 1 time in 2^21.
        let node = DhtHandle::start(loopback(vec![], None)).unwrap();
        #[allow(deprecated)]
        let id = *node.inner.as_ref().unwrap().current().unwrap().info().id();
        assert!(!id.is_valid_for_ip(ip));
    }

    #[test]
    fn default_state_dir_rules() {
        assert_eq!(
            state_dir_from(Some("/x/state".into()), Some("/home/u".into())),
            Some(PathBuf::from("/x/state/btc"))
        );
        assert_eq!(
            state_dir_from(Some("rel".into()), Some("/home/u".into())),
            Some(PathBuf::from("/home/u/.local/state/btc"))
        );
        assert_eq!(state_dir_from(None, None), None);
    }

    #[test]
    fn resolve_keeps_literals_and_skips_bad_names() {
        let t = Instant::now();
        let out = resolve_bounded(
            &[
                "127.0.0.1:1".to_string(),
                "nonexistent.invalid:6881".to_string(),
                "no port".to_string(),
            ],
            Duration::from_secs(2),
        );
        assert_eq!(out, vec!["127.0.0.1:1".parse::<SocketAddrV4>().unwrap()]);
        assert!(t.elapsed() < Duration::from_secs(3));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn loopback_announce_then_get_peers() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let (_first, rest, _) = swarm(3);
            let (a, b) = (&rest[0], &rest[1]);
            let ih = hash(0x42);
            let t = Instant::now();
            a.announce(ih, 7777).await.unwrap();
            let announced = t.elapsed();
            let t = Instant::now();
            let mut stream = Box::pin(b.get_peers(ih));
            let mut first_hit = None;
            let mut got = Vec::new();
            while let Some(batch) = stream.next().await {
                if first_hit.is_none() && !batch.is_empty() {
                    first_hit = Some(t.elapsed());
                }
                got.extend(batch);
            }
            let done = t.elapsed();
            eprintln!(
                "loopback: announce {announced:?}, first peers after {first_hit:?}, lookup done after {done:?}"
            );
            assert!(got.contains(&"127.0.0.1:7777".parse().unwrap()), "{got:?}");
            assert!(b.routing_table_size() <= 10);
        })
        .await
        .expect("loopback dht test timed out");
    }

    #[tokio::test(start_paused = true)]
    async fn dht_rounds_of_many_torrents_are_held_to_the_announce_budget() {
        // 300 torrents asking for a round at once: the first burst goes
        // at once, the rest at ROUNDS_PER_SECOND, whatever the slots.
        let pace = round_pace();
        let t0 = tokio::time::Instant::now();
        let mut started = Vec::new();
        let rounds: Vec<_> = (0..300)
            .map(|_| {
                let pace = pace.clone();
                tokio::spawn(async move {
                    pace.consume(1).await;
                    tokio::time::Instant::now()
                })
            })
            .collect();
        for r in rounds {
            started.push(r.await.unwrap().duration_since(t0));
        }
        started.sort();
        let at_once = started.iter().filter(|d| d.is_zero()).count();
        assert!(
            at_once >= ROUNDS_BURST as usize - 1 && at_once <= ROUNDS_BURST as usize + 1,
            "{at_once}"
        );
        let last = started.last().unwrap().as_secs_f64();
        let expect = (300.0 - ROUNDS_BURST) / ROUNDS_PER_SECOND;
        assert!(
            (last - expect).abs() < 1.0,
            "last round at {last} s, expected {expect} s"
        );
        // In any one second after the burst, at most the budget.
        for s in 1..(last as u64) {
            let n = started.iter().filter(|d| d.as_secs() == s).count();
            assert!(
                n as f64 <= ROUNDS_PER_SECOND + 1.0,
                "{n} rounds in second {s}"
            );
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn discovery_delivers_through_channel() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let (_first, rest, _) = swarm(2);
            let ih = hash(0x17);
            rest[0].announce(ih, 7777).await.unwrap();
            let (tx, mut rx) = crate::mailbox::channel(16);
            let found = Arc::new(AtomicUsize::new(0));
            let shutdown = CancellationToken::new();
            let t = Instant::now();
            let task = spawn_discovery(
                rest[1].clone(),
                ih,
                AnnouncePort {
                    local: 6000,
                    external: Default::default(),
                },
                true,
                Arc::new(|| true),
                tx,
                found.clone(),
                shutdown.clone(),
            );
            let batch = rx.recv().await.unwrap();
            eprintln!("discovery: first batch after {:?}", t.elapsed());
            assert!(batch.contains(&"127.0.0.1:7777".parse().unwrap()));
            assert!(found.load(Ordering::Relaxed) >= 1);
            shutdown.cancel();
            task.await.unwrap();
        })
        .await
        .expect("discovery test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn state_is_saved_and_used_on_restart() {
        tokio::time::timeout(Duration::from_secs(30), async {
            let dir = tempfile::tempdir().unwrap();
            let (_first, rest, boot) = swarm(2);
            let node =
                DhtHandle::start(loopback(vec![boot.clone()], Some(dir.path().into()))).unwrap();
            // Wait until the node knows its neighbours.
            while node.routing_table_size() < 2 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            node.save_state().unwrap();
            let text = std::fs::read_to_string(dir.path().join(STATE_FILE)).unwrap();
            assert!(text.contains(&format!("node {boot}")), "{text}");
            drop(node);
            // Restart with no bootstrap at all: only the state file helps.
            let again = DhtHandle::start(loopback(vec![], Some(dir.path().into()))).unwrap();
            let t = Instant::now();
            while again.routing_table_size() == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            eprintln!("restart: routing table non-empty after {:?}", t.elapsed());
            // And it is useful: it finds what another node announced.
            let ih = hash(0x99);
            rest[0].announce(ih, 7777).await.unwrap();
            assert_finds(&again, ih, "127.0.0.1:7777").await;
        })
        .await
        .expect("state test timed out");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn unreachable_bootstrap_returns_promptly() {
        tokio::time::timeout(Duration::from_secs(20), async {
            let t = Instant::now();
            let cfg = loopback(
                vec![
                    "127.0.0.1:1".to_string(),
                    "nonexistent.invalid:6881".to_string(),
                ],
                None,
            );
            let dht = tokio::task::spawn_blocking(move || DhtHandle::start(cfg))
                .await
                .unwrap()
                .unwrap();
            let took = t.elapsed();
            eprintln!("start with dead bootstrap took {took:?}");
            assert!(took < RESOLVE_DEADLINE + Duration::from_secs(1));
            // Lookups and announces fail softly, without panicking.
            let mut stream = Box::pin(dht.get_peers(hash(1)));
            while let Some(batch) = stream.next().await {
                assert!(batch.is_empty());
            }
            assert!(dht.announce(hash(1), 1).await.is_err());
            assert_eq!(dht.routing_table_size(), 0);
        })
        .await
        .expect("dead bootstrap test timed out");
    }

    #[test]
    fn empty_table_does_not_clobber_saved_state() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(STATE_FILE);
        let state = SavedState {
            nodes: vec!["127.0.0.1:1".parse().unwrap()],
            public_ip: None,
        };
        write_state(&path, &state).unwrap();
        // It bootstraps from the saved node, which never answers.
        let lonely = DhtHandle::start(loopback(vec![], Some(dir.path().into()))).unwrap();
        lonely.save_state().unwrap();
        assert_eq!(load_state(&path), state);
    }

    #[test]
    fn widened_adds_only_new_addresses() {
        let a: SocketAddrV4 = "1.1.1.1:1".parse().unwrap();
        let b: SocketAddrV4 = "2.2.2.2:2".parse().unwrap();
        assert_eq!(widened(&[a], &[a]), None);
        assert_eq!(widened(&[a], &[]), None);
        assert_eq!(widened(&[a], &[b, a, b]), Some(vec![a, b]));
        assert_eq!(widened(&[], &[b]), Some(vec![b]));
    }

    #[test]
    fn retry_backs_off_to_a_cap() {
        let delays: Vec<u64> = (0..8).map(|n| retry_delay(n).as_secs()).collect();
        assert_eq!(delays, vec![1, 2, 4, 8, 16, 30, 30, 30]);
        assert_eq!(retry_delay(u32::MAX), RETRY_MAX);
    }

    /// The rebuild that follows an offline start: same port, and the new
    /// node joins the DHT through the address it was given.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn rebuild_rebinds_the_port_and_joins() {
        tokio::time::timeout(Duration::from_secs(40), async {
            let (_first, rest, boot) = swarm(2);
            let cfg = loopback(vec!["nonexistent.invalid:6881".to_string()], None);
            let node = tokio::task::spawn_blocking(move || DhtHandle::start(cfg))
                .await
                .unwrap()
                .unwrap();
            assert_eq!(
                node.inner.as_ref().unwrap().names,
                vec!["nonexistent.invalid:6881".to_string()]
            );
            let port = node.local_addr().port();
            let ih = hash(0x55);
            rest[0].announce(ih, 7777).await.unwrap();
            // An announce in flight on the old node holds it for a while.
            let pending = tokio::spawn({
                let node = node.clone();
                async move { node.announce(ih, 1).await }
            });
            let t = Instant::now();
            let n = node.clone();
            let boot_addr: SocketAddrV4 = boot.parse().unwrap();
            let rebuilt = tokio::task::spawn_blocking(move || {
                n.inner.as_ref().unwrap().rebuild_with(&[boot_addr])
            })
            .await
            .unwrap();
            assert!(rebuilt);
            eprintln!("rebuild took {:?}", t.elapsed());
            assert!(pending.await.unwrap().is_err());
            #[allow(deprecated)]
            let bound = node
                .inner
                .as_ref()
                .unwrap()
                .current()
                .expect("rebuilt")
                .info()
                .local_addr();
            assert_eq!(bound.port(), port);
            // Nothing new resolved and the node is up: no second rebuild.
            assert!(!node.inner.as_ref().unwrap().rebuild_with(&[boot_addr]));
            while node.routing_table_size() == 0 {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            assert_finds(&node, ih, "127.0.0.1:7777").await;
        })
        .await
        .expect("rebuild test timed out");
    }

    #[test]
    fn bind_conflict_is_an_error() {
        let a = DhtHandle::start(loopback(vec![], None)).unwrap();
        let port = a.local_addr().port();
        let mut cfg = loopback(vec![], None);
        cfg.port = port;
        let err = DhtHandle::start(cfg).err().expect("second bind must fail");
        assert!(err.to_string().contains(&format!("127.0.0.1:{port}")));
    }
}
