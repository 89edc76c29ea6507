//! One DHT node of one address family (BEP 5, with BEP 32 for IPv6), as a
//! sans-IO state machine: datagrams and instants in, datagrams and lookup
//! results out. The I/O shell (`super::v6`) only moves bytes and time.
//!
//! What it does: answers `ping`, `find_node`, `get_peers` and
//! `announce_peer` (with write tokens bound to the querier's IP and a
//! secret that rotates every five minutes); runs iterative lookups for
//! peers (α = 3 queries in flight, converging on the K closest nodes that
//! answer) and announces to the closest ones with their tokens; keeps its
//! routing table alive (bootstrap with back-off while empty, a self-lookup
//! now and then, a ping for each node gone quiet).
//!
//! Every budget is fixed: queries in flight, lookups, candidates per
//! lookup, peers per lookup, stored torrents and peers, and incoming
//! queries per IP per second (libtorrent's 5): a flood costs a hash-map
//! probe per datagram, nothing more.

use super::krpc::{self, Body, KrpcError, Message, NodeId, NodeInfo, Query, Response, Want};
use super::table::{K, Table};
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use sha1::{Digest, Sha1};
use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Queries sent and not yet answered or timed out, all lookups together.
const MAX_PENDING: usize = 256;
/// A query not answered in this long has failed.
pub const QUERY_TIMEOUT: Duration = Duration::from_secs(3);
/// Queries in flight per lookup.
const ALPHA: usize = 3;
/// Candidates a lookup keeps (the closest ones).
const MAX_CANDIDATES: usize = 64;
/// Lookups at once; more finish at once, empty.
const MAX_LOOKUPS: usize = 64;
/// A lookup that has not converged by then stops with what it found.
const LOOKUP_DEADLINE: Duration = Duration::from_secs(60);
/// Distinct peers one lookup reports.
const MAX_PEERS_PER_LOOKUP: usize = 2000;
/// Torrents whose announces we store, and peers per torrent.
const MAX_STORED_TORRENTS: usize = 4096;
const MAX_STORED_PEERS: usize = 100;
/// Peers given in one `get_peers` answer (fits a datagram with IPv6).
const MAX_VALUES: usize = 50;
/// An announce is forgotten after this long (BEP 5 leaves it to us;
/// clients re-announce every 15–30 minutes).
const PEER_TTL: Duration = Duration::from_secs(30 * 60);
/// The token secret rotates this often; tokens of the last two are valid.
const TOKEN_ROTATION: Duration = Duration::from_secs(5 * 60);
/// Incoming queries per IP per second, after a burst of twice that.
const QUERIES_PER_IP: f64 = 5.0;
/// IPs whose query rate is tracked; the map is cleared when it fills.
const MAX_RATE_ENTRIES: usize = 4096;
/// Self-lookups keep the table fresh this often, or every
/// [`SPARSE_REFRESH`] while it has fewer than K nodes.
const REFRESH: Duration = Duration::from_secs(5 * 60);
const SPARSE_REFRESH: Duration = Duration::from_secs(15);
/// Back-off of the bootstrap while the table is empty.
const BOOTSTRAP_MIN: Duration = Duration::from_secs(1);
const BOOTSTRAP_MAX: Duration = Duration::from_secs(60);
/// How often the quietest node is pinged.
const PING_EVERY: Duration = Duration::from_secs(10);

/// Which address family this node serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// IPv4: `nodes`.
    V4,
    /// IPv6: `nodes6`.
    V6,
}

impl Family {
    /// Whether `addr` belongs to this family (an IPv4-mapped IPv6 address
    /// does not: it is IPv4 traffic in disguise).
    pub fn holds(self, addr: SocketAddr) -> bool {
        match (self, addr) {
            (Family::V4, SocketAddr::V4(_)) => true,
            (Family::V6, SocketAddr::V6(a)) => a.ip().to_ipv4_mapped().is_none(),
            _ => false,
        }
    }
}

/// A lookup's handle.
pub type LookupId = u64;

/// What the node reports to its owner.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// Peers found by a lookup (each address once per lookup).
    Peers {
        /// The lookup.
        lookup: LookupId,
        /// New peers.
        peers: Vec<SocketAddr>,
    },
    /// A lookup finished; `announced` nodes took our announce.
    Done {
        /// The lookup.
        lookup: LookupId,
        /// Nodes that accepted the announce (0 for a plain lookup).
        announced: usize,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Purpose {
    /// Checks a node before it enters the table.
    Ping,
    /// Part of a lookup's search.
    Search(LookupId),
    /// An announce at the end of a lookup.
    Announce(LookupId),
}

struct Pending {
    addr: SocketAddr,
    sent: Instant,
    purpose: Purpose,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum CandState {
    Fresh,
    InFlight,
    Answered,
    Failed,
}

struct Candidate {
    /// `None` for a bootstrap address not yet heard from.
    id: Option<NodeId>,
    addr: SocketAddr,
    state: CandState,
    token: Option<Vec<u8>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Goal {
    FindNode,
    GetPeers,
    /// Then announce on this port (`None`: the port we send from).
    Announce(Option<u16>),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Searching,
    Announcing { in_flight: usize, accepted: usize },
}

struct Lookup {
    target: NodeId,
    goal: Goal,
    candidates: Vec<Candidate>,
    started: Instant,
    seen_peers: HashSet<SocketAddr>,
    phase: Phase,
    /// A bootstrap or refresh lookup: nobody waits for its events.
    internal: bool,
}

impl Lookup {
    fn sort(&mut self) {
        let target = self.target;
        self.candidates
            .sort_by_key(|c| c.id.map_or([0xff; 20], |id| target.distance(&id)));
        if self.candidates.len() > MAX_CANDIDATES {
            // Drop the farthest that are not in flight (an answer to one
            // of those is still welcome, but not needed).
            let mut i = self.candidates.len();
            while self.candidates.len() > MAX_CANDIDATES && i > 0 {
                i -= 1;
                if self.candidates[i].state != CandState::InFlight {
                    self.candidates.remove(i);
                }
            }
        }
    }

    fn add(&mut self, node: NodeInfo) {
        if self
            .candidates
            .iter()
            .any(|c| c.addr == node.addr || c.id == Some(node.id))
        {
            return;
        }
        self.candidates.push(Candidate {
            id: Some(node.id),
            addr: node.addr,
            state: CandState::Fresh,
            token: None,
        });
    }

    /// Converged: the K closest candidates still standing have all
    /// answered, or nothing is left to ask.
    fn converged(&self) -> bool {
        let standing = self
            .candidates
            .iter()
            .filter(|c| c.state != CandState::Failed)
            .take(K);
        let mut any = false;
        for c in standing {
            any = true;
            if c.state != CandState::Answered {
                return false;
            }
        }
        any || !self
            .candidates
            .iter()
            .any(|c| matches!(c.state, CandState::Fresh | CandState::InFlight))
    }
}

struct RateEntry {
    tokens: f64,
    at: Instant,
}

/// The node. See the module doc.
pub struct Node {
    family: Family,
    table: Table,
    bootstrap: Vec<SocketAddr>,
    read_only: bool,
    secret: [u8; 16],
    old_secret: [u8; 16],
    rotated: Instant,
    store: HashMap<NodeId, Vec<(SocketAddr, Instant)>>,
    pending: HashMap<u32, Pending>,
    /// Our transaction ids are 4 bytes: nodes built on the Rust crate
    /// most used for the DHT drop queries with shorter ones (BEP 5 allows
    /// any length).
    next_tid: u32,
    lookups: HashMap<LookupId, Lookup>,
    next_lookup: LookupId,
    out: VecDeque<(SocketAddr, Vec<u8>)>,
    events: VecDeque<Event>,
    rates: HashMap<std::net::IpAddr, RateEntry>,
    rng: SmallRng,
    next_bootstrap: Instant,
    bootstrap_backoff: Duration,
    last_refresh: Option<Instant>,
    last_ping: Instant,
}

impl Node {
    /// A node with id `id` for `family`, which bootstraps from
    /// `bootstrap` while its table is empty. `read_only` (BEP 43) asks
    /// others to keep it out of their tables (a node that cannot be
    /// reached). `seed` drives tids and token secrets.
    pub fn new(
        id: NodeId,
        family: Family,
        bootstrap: Vec<SocketAddr>,
        read_only: bool,
        seed: u64,
        now: Instant,
    ) -> Node {
        let mut rng = SmallRng::seed_from_u64(seed);
        let bootstrap = bootstrap.into_iter().filter(|a| family.holds(*a)).collect();
        Node {
            family,
            table: Table::new(id),
            bootstrap,
            read_only,
            secret: rng.random(),
            old_secret: rng.random(),
            rotated: now,
            store: HashMap::new(),
            pending: HashMap::new(),
            next_tid: rng.random(),
            lookups: HashMap::new(),
            next_lookup: 1,
            out: VecDeque::new(),
            events: VecDeque::new(),
            rates: HashMap::new(),
            rng,
            next_bootstrap: now,
            bootstrap_backoff: BOOTSTRAP_MIN,
            last_refresh: None,
            last_ping: now,
        }
    }

    /// Our id.
    pub fn id(&self) -> NodeId {
        self.table.own()
    }

    /// The routing table.
    pub fn table(&self) -> &Table {
        &self.table
    }

    /// Torrents with stored announces.
    pub fn stored_torrents(&self) -> usize {
        self.store.len()
    }

    /// The next datagram to send.
    pub fn poll_transmit(&mut self) -> Option<(SocketAddr, Vec<u8>)> {
        self.out.pop_front()
    }

    /// The next event.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// Pings `addr` (a saved node, or one named by the user); it enters
    /// the table when it answers.
    pub fn ping(&mut self, addr: SocketAddr, now: Instant) {
        if self.family.holds(addr) {
            self.send_query(addr, Query::Ping, Purpose::Ping, now);
        }
    }

    /// Starts a `get_peers` lookup for `info_hash`; peers arrive as
    /// [`Event::Peers`], the end as [`Event::Done`].
    pub fn get_peers(&mut self, info_hash: NodeId, now: Instant) -> LookupId {
        self.start_lookup(info_hash, Goal::GetPeers, false, now)
    }

    /// A `get_peers` lookup, then `announce_peer` to the closest nodes that
    /// gave a token, on TCP `port` (`None`: the port our datagrams come from).
    pub fn announce(&mut self, info_hash: NodeId, port: Option<u16>, now: Instant) -> LookupId {
        self.start_lookup(info_hash, Goal::Announce(port), false, now)
    }

    /// Stops a lookup; no more events come for it.
    pub fn cancel(&mut self, lookup: LookupId) {
        self.lookups.remove(&lookup);
    }

    fn start_lookup(
        &mut self,
        target: NodeId,
        goal: Goal,
        internal: bool,
        now: Instant,
    ) -> LookupId {
        let id = self.next_lookup;
        self.next_lookup += 1;
        if self.lookups.len() >= MAX_LOOKUPS {
            self.events.push_back(Event::Done {
                lookup: id,
                announced: 0,
            });
            return id;
        }
        let mut lookup = Lookup {
            target,
            goal,
            candidates: Vec::new(),
            started: now,
            seen_peers: HashSet::new(),
            phase: Phase::Searching,
            internal,
        };
        for n in self.table.closest(&target, MAX_CANDIDATES) {
            lookup.add(n);
        }
        if lookup.candidates.is_empty() {
            for &addr in &self.bootstrap {
                lookup.candidates.push(Candidate {
                    id: None,
                    addr,
                    state: CandState::Fresh,
                    token: None,
                });
            }
        }
        lookup.sort();
        self.lookups.insert(id, lookup);
        self.drive(id, now);
        id
    }

    /// Sends what lookup `id` may send now, or finishes it.
    fn drive(&mut self, id: LookupId, now: Instant) {
        let Some(lookup) = self.lookups.get_mut(&id) else {
            return;
        };
        match lookup.phase {
            Phase::Searching => {
                let timed_out = now.saturating_duration_since(lookup.started) >= LOOKUP_DEADLINE;
                if !timed_out && !lookup.converged() {
                    let in_flight = lookup
                        .candidates
                        .iter()
                        .filter(|c| c.state == CandState::InFlight)
                        .count();
                    let mut room = ALPHA.saturating_sub(in_flight);
                    let mut to_send = Vec::new();
                    let mut standing = 0;
                    for c in lookup.candidates.iter_mut() {
                        if room == 0 || standing >= K {
                            break;
                        }
                        if c.state == CandState::Failed {
                            continue;
                        }
                        standing += 1;
                        if c.state == CandState::Fresh {
                            c.state = CandState::InFlight;
                            to_send.push(c.addr);
                            room -= 1;
                        }
                    }
                    let query = match lookup.goal {
                        Goal::FindNode => Query::FindNode {
                            target: lookup.target,
                        },
                        _ => Query::GetPeers {
                            info_hash: lookup.target,
                        },
                    };
                    for addr in to_send {
                        if !self.send_query(addr, query.clone(), Purpose::Search(id), now) {
                            // No room for another query: count it failed
                            // so the lookup moves on instead of waiting.
                            if let Some(l) = self.lookups.get_mut(&id)
                                && let Some(c) = l.candidates.iter_mut().find(|c| c.addr == addr)
                            {
                                c.state = CandState::Failed;
                            }
                        }
                    }
                    return;
                }
                if let Goal::Announce(port) = lookup.goal {
                    let targets: Vec<(SocketAddr, Vec<u8>)> = lookup
                        .candidates
                        .iter()
                        .filter(|c| c.state == CandState::Answered)
                        .filter_map(|c| c.token.clone().map(|t| (c.addr, t)))
                        .take(K)
                        .collect();
                    let info_hash = lookup.target;
                    let mut sent = 0;
                    for (addr, token) in targets {
                        let q = Query::AnnouncePeer {
                            info_hash,
                            port: port.unwrap_or(0),
                            implied_port: port.is_none(),
                            token,
                        };
                        if self.send_query(addr, q, Purpose::Announce(id), now) {
                            sent += 1;
                        }
                    }
                    if sent > 0 {
                        if let Some(l) = self.lookups.get_mut(&id) {
                            l.phase = Phase::Announcing {
                                in_flight: sent,
                                accepted: 0,
                            };
                        }
                        return;
                    }
                }
                self.finish(id, 0);
            }
            Phase::Announcing {
                in_flight,
                accepted,
            } => {
                if in_flight == 0 {
                    self.finish(id, accepted);
                }
            }
        }
    }

    fn finish(&mut self, id: LookupId, announced: usize) {
        if let Some(l) = self.lookups.remove(&id)
            && !l.internal
        {
            self.events.push_back(Event::Done {
                lookup: id,
                announced,
            });
        }
    }

    /// Sends a query; false when the pending budget is full.
    fn send_query(
        &mut self,
        addr: SocketAddr,
        query: Query,
        purpose: Purpose,
        now: Instant,
    ) -> bool {
        if self.pending.len() >= MAX_PENDING {
            return false;
        }
        let mut tid = self.next_tid;
        while self.pending.contains_key(&tid) {
            tid = tid.wrapping_add(1);
        }
        self.next_tid = tid.wrapping_add(1);
        self.pending.insert(
            tid,
            Pending {
                addr,
                sent: now,
                purpose,
            },
        );
        let want = Want {
            v4: self.family == Family::V4,
            v6: self.family == Family::V6,
        };
        let msg = Message {
            tid: tid.to_be_bytes().to_vec(),
            body: Body::Query {
                id: self.table.own(),
                query,
                want,
                read_only: self.read_only,
            },
            ip: None,
        };
        self.out.push_back((addr, krpc::encode(&msg)));
        true
    }

    /// One datagram from `from`.
    pub fn handle(&mut self, from: SocketAddr, datagram: &[u8], now: Instant) {
        if !self.family.holds(from) || from.port() == 0 {
            return;
        }
        let msg = match krpc::decode(datagram) {
            Ok(m) => m,
            Err(KrpcError::UnknownMethod { tid }) => {
                if self.allow_query(from, now) {
                    self.reply_error(from, tid, 204, "method unknown");
                }
                return;
            }
            Err(_) => return,
        };
        match msg.body {
            Body::Query {
                id,
                query,
                read_only,
                ..
            } => {
                if !self.allow_query(from, now) {
                    return;
                }
                self.answer(from, msg.tid, query, now);
                if !read_only
                    && !self.table.contains_addr(from)
                    && self.table.has_room_for(&id)
                    && self.pending.len() < MAX_PENDING / 2
                    && !self.pending.values().any(|p| p.addr == from)
                {
                    self.ping(from, now);
                }
            }
            Body::Response(r) => self.on_response(from, &msg.tid, r, now),
            Body::Error { .. } => self.on_error(from, &msg.tid, now),
        }
    }

    fn allow_query(&mut self, from: SocketAddr, now: Instant) -> bool {
        if self.rates.len() >= MAX_RATE_ENTRIES && !self.rates.contains_key(&from.ip()) {
            self.rates.clear();
        }
        let e = self.rates.entry(from.ip()).or_insert(RateEntry {
            tokens: QUERIES_PER_IP * 2.0,
            at: now,
        });
        let dt = now.saturating_duration_since(e.at).as_secs_f64();
        e.tokens = (e.tokens + dt * QUERIES_PER_IP).min(QUERIES_PER_IP * 2.0);
        e.at = now;
        if e.tokens >= 1.0 {
            e.tokens -= 1.0;
            true
        } else {
            false
        }
    }

    fn token_for(&self, secret: &[u8; 16], addr: SocketAddr) -> Vec<u8> {
        let mut h = Sha1::new();
        h.update(secret);
        match addr.ip() {
            std::net::IpAddr::V4(ip) => h.update(ip.octets()),
            std::net::IpAddr::V6(ip) => h.update(ip.octets()),
        }
        h.finalize()[..8].to_vec()
    }

    fn answer(&mut self, from: SocketAddr, tid: Vec<u8>, query: Query, now: Instant) {
        let mut r = Response {
            id: self.table.own(),
            ..Response::default()
        };
        let nodes_for = |t: &Table, target: &NodeId| t.closest(target, K);
        match query {
            Query::Ping => {}
            Query::FindNode { target } => self.put_nodes(&mut r, nodes_for(&self.table, &target)),
            Query::GetPeers { info_hash } => {
                r.token = Some(self.token_for(&self.secret, from));
                match self.store.get(&info_hash) {
                    Some(peers) if !peers.is_empty() => {
                        let mut values: Vec<SocketAddr> = peers.iter().map(|p| p.0).collect();
                        if values.len() > MAX_VALUES {
                            for i in 0..MAX_VALUES {
                                let j = self.rng.random_range(i..values.len());
                                values.swap(i, j);
                            }
                            values.truncate(MAX_VALUES);
                        }
                        r.values = values;
                    }
                    _ => self.put_nodes(&mut r, nodes_for(&self.table, &info_hash)),
                }
            }
            Query::AnnouncePeer {
                info_hash,
                port,
                implied_port,
                token,
            } => {
                let valid = token == self.token_for(&self.secret, from)
                    || token == self.token_for(&self.old_secret, from);
                if !valid {
                    self.reply_error(from, tid, 203, "bad token");
                    return;
                }
                let port = if implied_port { from.port() } else { port };
                if port == 0 {
                    self.reply_error(from, tid, 203, "port 0");
                    return;
                }
                let mut peer = from;
                peer.set_port(port);
                self.store_peer(info_hash, peer, now);
            }
        }
        let msg = Message {
            tid,
            body: Body::Response(r),
            ip: Some(from),
        };
        self.out.push_back((from, krpc::encode(&msg)));
    }

    fn put_nodes(&self, r: &mut Response, nodes: Vec<NodeInfo>) {
        match self.family {
            Family::V4 => r.nodes = nodes,
            Family::V6 => r.nodes6 = nodes,
        }
    }

    fn store_peer(&mut self, info_hash: NodeId, peer: SocketAddr, now: Instant) {
        if !self.store.contains_key(&info_hash) && self.store.len() >= MAX_STORED_TORRENTS {
            return;
        }
        let peers = self.store.entry(info_hash).or_default();
        // Keyed by address and port: two clients behind one NAT (or two
        // processes on one host) are two peers.
        if let Some(p) = peers.iter_mut().find(|p| p.0 == peer) {
            *p = (peer, now);
        } else if peers.len() < MAX_STORED_PEERS {
            peers.push((peer, now));
        } else if let Some(oldest) = peers.iter_mut().min_by_key(|p| p.1) {
            *oldest = (peer, now);
        }
    }

    fn reply_error(&mut self, to: SocketAddr, tid: Vec<u8>, code: i64, message: &str) {
        let msg = Message {
            tid,
            body: Body::Error {
                code,
                message: message.into(),
            },
            ip: None,
        };
        self.out.push_back((to, krpc::encode(&msg)));
    }

    fn take_pending(&mut self, from: SocketAddr, tid: &[u8]) -> Option<Pending> {
        let tid = u32::from_be_bytes(tid.try_into().ok()?);
        // An answer must come from the address we asked: a tid alone is
        // easy to guess.
        if self.pending.get(&tid)?.addr != from {
            return None;
        }
        self.pending.remove(&tid)
    }

    fn on_response(&mut self, from: SocketAddr, tid: &[u8], r: Response, now: Instant) {
        let Some(p) = self.take_pending(from, tid) else {
            return;
        };
        self.table.heard_from(
            NodeInfo {
                id: r.id,
                addr: from,
            },
            now,
        );
        if !self.table.is_empty() {
            self.bootstrap_backoff = BOOTSTRAP_MIN;
        }
        match p.purpose {
            Purpose::Ping => {}
            Purpose::Search(id) => {
                let family = self.family;
                let Some(lookup) = self.lookups.get_mut(&id) else {
                    return;
                };
                if let Some(c) = lookup.candidates.iter_mut().find(|c| c.addr == from) {
                    c.state = CandState::Answered;
                    c.id = Some(r.id);
                    c.token = r.token;
                }
                let nodes = match family {
                    Family::V4 => r.nodes,
                    Family::V6 => r.nodes6,
                };
                for n in nodes {
                    if family.holds(n.addr) && n.addr.port() != 0 && n.id != self.table.own() {
                        lookup.add(n);
                    }
                }
                lookup.sort();
                if lookup.goal != Goal::FindNode && !r.values.is_empty() && !lookup.internal {
                    let mut fresh = Vec::new();
                    for v in r.values {
                        if v.port() != 0
                            && lookup.seen_peers.len() < MAX_PEERS_PER_LOOKUP
                            && lookup.seen_peers.insert(v)
                        {
                            fresh.push(v);
                        }
                    }
                    if !fresh.is_empty() {
                        self.events.push_back(Event::Peers {
                            lookup: id,
                            peers: fresh,
                        });
                    }
                }
                self.drive(id, now);
            }
            Purpose::Announce(id) => self.announce_answered(id, true, now),
        }
    }

    fn on_error(&mut self, from: SocketAddr, tid: &[u8], now: Instant) {
        let Some(p) = self.take_pending(from, tid) else {
            return;
        };
        self.fail_purpose(p, now);
    }

    fn fail_purpose(&mut self, p: Pending, now: Instant) {
        match p.purpose {
            Purpose::Ping => {}
            Purpose::Search(id) => {
                if let Some(l) = self.lookups.get_mut(&id)
                    && let Some(c) = l.candidates.iter_mut().find(|c| c.addr == p.addr)
                {
                    c.state = CandState::Failed;
                }
                self.drive(id, now);
            }
            Purpose::Announce(id) => self.announce_answered(id, false, now),
        }
    }

    fn announce_answered(&mut self, id: LookupId, ok: bool, now: Instant) {
        if let Some(l) = self.lookups.get_mut(&id)
            && let Phase::Announcing {
                in_flight,
                accepted,
            } = &mut l.phase
        {
            *in_flight = in_flight.saturating_sub(1);
            if ok {
                *accepted += 1;
            }
        }
        self.drive(id, now);
    }

    /// Timeouts and upkeep; call at least once a second.
    pub fn tick(&mut self, now: Instant) {
        let expired: Vec<u32> = self
            .pending
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.sent) >= QUERY_TIMEOUT)
            .map(|(&t, _)| t)
            .collect();
        for tid in expired {
            if let Some(p) = self.pending.remove(&tid) {
                self.table.failed(p.addr);
                self.fail_purpose(p, now);
            }
        }
        let overdue: Vec<LookupId> = self
            .lookups
            .iter()
            .filter(|(_, l)| now.saturating_duration_since(l.started) >= LOOKUP_DEADLINE)
            .map(|(&id, _)| id)
            .collect();
        for id in overdue {
            let accepted = match self.lookups.get(&id).map(|l| l.phase) {
                Some(Phase::Announcing { accepted, .. }) => accepted,
                _ => 0,
            };
            self.finish(id, accepted);
        }
        if now.saturating_duration_since(self.rotated) >= TOKEN_ROTATION {
            self.old_secret = self.secret;
            self.secret = self.rng.random();
            self.rotated = now;
            self.store.retain(|_, peers| {
                peers.retain(|p| now.saturating_duration_since(p.1) < PEER_TTL);
                !peers.is_empty()
            });
        }
        self.maintain(now);
    }

    fn maintain(&mut self, now: Instant) {
        let own = self.table.own();
        let refreshing = self.lookups.values().any(|l| l.internal);
        if self.table.is_empty() {
            if !refreshing && !self.bootstrap.is_empty() && now >= self.next_bootstrap {
                self.start_lookup(own, Goal::FindNode, true, now);
                self.next_bootstrap = now + self.bootstrap_backoff;
                self.bootstrap_backoff = (self.bootstrap_backoff * 2).min(BOOTSTRAP_MAX);
            }
            return;
        }
        let every = if self.table.len() < K {
            SPARSE_REFRESH
        } else {
            REFRESH
        };
        if !refreshing
            && self
                .last_refresh
                .is_none_or(|t| now.saturating_duration_since(t) >= every)
        {
            self.last_refresh = Some(now);
            self.start_lookup(own, Goal::FindNode, true, now);
        }
        if now.saturating_duration_since(self.last_ping) >= PING_EVERY {
            self.last_ping = now;
            if let Some(n) = self.table.most_questionable(now) {
                self.send_query(n.addr, Query::Ping, Purpose::Ping, now);
            }
        }
    }
}

#[cfg(test)]
mod tests;
