//! Our own DHT [`Node`] at work, in one of two shells behind one handle,
//! [`OwnNode`]:
//!
//! - **A socket** ([`OwnNode::start`]): the IPv6 DHT (BEP 32) on an
//!   IPv6-only UDP socket, beside mainline's IPv4 node (mainline has no
//!   IPv6). One OS thread, like mainline's actor: it reads a datagram
//!   (waiting at most `POLL`), applies commands from the handles, ticks the
//!   node every `TICK`, sends what the node queued and hands lookup results
//!   to their callers over tokio channels, so callers never block and the
//!   node needs no runtime. The thread ends when the last handle is dropped.
//! - **A SOCKS5 UDP relay** ([`OwnNode::start_proxied`]): under `--proxy`,
//!   where mainline cannot go (it binds its own socket), an IPv4 node whose
//!   every datagram goes through the proxy's `UDP ASSOCIATE` (a tokio task).
//!   It runs read-only (BEP 43): others cannot reach us except through the
//!   relay, so they should not keep us in their tables.

use super::krpc::{MAX_DATAGRAM, NodeId};
use super::node::{Event, Family, LookupId, Node};
use crate::proxy::TargetAddr;
use crate::proxy::net::Proxy;
use futures::Stream;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use tokio::sync::{mpsc as tmpsc, oneshot};

/// Longest wait for a datagram before commands and timers are looked at.
const POLL: Duration = Duration::from_millis(20);
/// How often the node's timers run.
const TICK: Duration = Duration::from_millis(250);
/// Saved nodes pinged at start.
const MAX_SAVED: usize = 256;
/// Commands waiting for the node (callers take turns through the
/// session's lookup slots, so this is never reached in practice).
const MAX_CMDS: usize = 64;
/// While the proxy cannot relay UDP, how long before asking again.
const RELAY_RETRY: Duration = Duration::from_secs(30);
/// Name of the IPv6 state file beside `dht.state`.
pub const STATE_FILE: &str = "dht6.state";

enum Cmd {
    GetPeers {
        info_hash: NodeId,
        peers: tmpsc::Sender<Vec<SocketAddr>>,
    },
    Announce {
        info_hash: NodeId,
        port: u16,
        done: oneshot::Sender<usize>,
    },
}

/// A running node; cheap to clone.
#[derive(Clone)]
pub struct OwnNode {
    cmds: tmpsc::Sender<Cmd>,
    local: SocketAddr,
    shared: Arc<Shared>,
}

/// What the thread publishes for the handles.
struct Shared {
    table_size: AtomicUsize,
    good: Mutex<Vec<SocketAddr>>,
}

impl OwnNode {
    /// Binds `bind` (an IPv6 one IPv6 only, so the IPv4 node may take the
    /// same port number; bound to `--interface`'s device, if any) and
    /// starts the thread; the node serves `bind`'s family. `bootstrap` is
    /// used while the table is empty; `saved` nodes (from [`load_state`])
    /// are pinged at once.
    pub fn start(
        bind: SocketAddr,
        bootstrap: Vec<SocketAddr>,
        saved: Vec<SocketAddr>,
    ) -> std::io::Result<OwnNode> {
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(bind),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        if bind.is_ipv6() {
            socket.set_only_v6(true)?;
        }
        crate::iface::bind(&socket)?;
        socket.bind(&bind.into())?;
        let socket: std::net::UdpSocket = socket.into();
        socket.set_read_timeout(Some(POLL))?;
        let local = socket.local_addr()?;
        let (tx, rx) = tmpsc::channel(MAX_CMDS);
        let shared = Arc::new(Shared {
            table_size: AtomicUsize::new(0),
            good: Mutex::new(Vec::new()),
        });
        let family = if bind.is_ipv6() {
            Family::V6
        } else {
            Family::V4
        };
        let node = new_node(family, bootstrap, false);
        let driver = Driver::new(node, shared.clone());
        std::thread::Builder::new()
            .name(
                if bind.is_ipv6() {
                    "btc-dht6"
                } else {
                    "btc-dht4"
                }
                .into(),
            )
            .spawn(move || run(driver, socket, rx, saved))?;
        Ok(OwnNode {
            cmds: tx,
            local,
            shared,
        })
    }

    /// An IPv4 node whose datagrams all go through `proxy`'s UDP relay
    /// (see the module doc). Must be called within the tokio runtime.
    pub fn start_proxied(proxy: Arc<Proxy>, bootstrap: Vec<SocketAddr>) -> OwnNode {
        let (tx, rx) = tmpsc::channel(MAX_CMDS);
        let shared = Arc::new(Shared {
            table_size: AtomicUsize::new(0),
            good: Mutex::new(Vec::new()),
        });
        let node = new_node(Family::V4, bootstrap, true);
        let driver = Driver::new(node, shared.clone());
        tokio::spawn(run_proxied(driver, proxy, rx));
        OwnNode {
            cmds: tx,
            local: SocketAddr::from(([0, 0, 0, 0], 0)),
            shared,
        }
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }

    /// Nodes in the routing table (as of the last tick).
    pub fn routing_table_size(&self) -> usize {
        self.shared.table_size.load(Ordering::Relaxed)
    }

    /// The table's good nodes, most recently heard first.
    pub fn good_nodes(&self) -> Vec<SocketAddr> {
        self.shared
            .good
            .lock()
            .map(|g| g.clone())
            .unwrap_or_default()
    }

    /// One `get_peers` lookup; the stream ends when it converges.
    pub fn get_peers(
        &self,
        info_hash: NodeId,
    ) -> impl Stream<Item = Vec<SocketAddr>> + Send + 'static {
        let (tx, rx) = tmpsc::channel(64);
        // A full command queue ends the stream at once: no peers this round.
        let _ = self.cmds.try_send(Cmd::GetPeers {
            info_hash,
            peers: tx,
        });
        tokio_stream_from(rx)
    }

    /// A lookup then `announce_peer` on TCP `port` to the closest nodes;
    /// how many took it.
    pub async fn announce(&self, info_hash: NodeId, port: u16) -> usize {
        let (tx, rx) = oneshot::channel();
        if self
            .cmds
            .send(Cmd::Announce {
                info_hash,
                port,
                done: tx,
            })
            .await
            .is_err()
        {
            return 0;
        }
        rx.await.unwrap_or(0)
    }
}

fn tokio_stream_from<T: Send + 'static>(
    rx: tmpsc::Receiver<T>,
) -> impl Stream<Item = T> + Send + 'static {
    futures::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|v| (v, rx)) })
}

fn new_node(family: Family, bootstrap: Vec<SocketAddr>, read_only: bool) -> Node {
    let mut id = [0u8; 20];
    rand::fill(&mut id);
    Node::new(
        NodeId(id),
        family,
        bootstrap,
        read_only,
        rand::random(),
        Instant::now(),
    )
}

enum Waiter {
    Peers(tmpsc::Sender<Vec<SocketAddr>>),
    Announce(oneshot::Sender<usize>),
}

/// The node with its callers: what both shells share.
struct Driver {
    node: Node,
    waiters: HashMap<LookupId, Waiter>,
    shared: Arc<Shared>,
}

impl Driver {
    fn new(node: Node, shared: Arc<Shared>) -> Driver {
        Driver {
            node,
            waiters: HashMap::new(),
            shared,
        }
    }

    fn apply(&mut self, cmd: Cmd, now: Instant) {
        match cmd {
            Cmd::GetPeers { info_hash, peers } => {
                let id = self.node.get_peers(info_hash, now);
                self.waiters.insert(id, Waiter::Peers(peers));
            }
            Cmd::Announce {
                info_hash,
                port,
                done,
            } => {
                let id = self.node.announce(info_hash, Some(port), now);
                self.waiters.insert(id, Waiter::Announce(done));
            }
        }
        self.deliver();
    }

    /// Timers, and lookups whose caller dropped its end.
    fn tick(&mut self, now: Instant) {
        self.node.tick(now);
        let node = &mut self.node;
        self.waiters.retain(|id, w| {
            let gone = match w {
                Waiter::Peers(tx) => tx.is_closed(),
                Waiter::Announce(tx) => tx.is_closed(),
            };
            if gone {
                node.cancel(*id);
            }
            !gone
        });
        self.publish(true);
        self.deliver();
    }

    /// The table's size and nodes for the handles: at once when it
    /// changed size (a short run saves what it learned), and each tick.
    fn publish(&self, force: bool) {
        let len = self.node.table().len();
        if force || self.shared.table_size.load(Ordering::Relaxed) != len {
            self.shared.table_size.store(len, Ordering::Relaxed);
            if let Ok(mut g) = self.shared.good.lock() {
                *g = self
                    .node
                    .table()
                    .good_nodes()
                    .iter()
                    .map(|n| n.addr)
                    .collect();
            }
        }
    }

    /// Lookup results to their callers.
    fn deliver(&mut self) {
        while let Some(event) = self.node.poll_event() {
            match event {
                Event::Peers { lookup, peers } => {
                    if let Some(Waiter::Peers(tx)) = self.waiters.get(&lookup) {
                        // A caller this far behind loses a batch rather
                        // than stalling the node.
                        let _ = tx.try_send(peers);
                    }
                }
                Event::Done { lookup, announced } => {
                    if let Some(Waiter::Announce(tx)) = self.waiters.remove(&lookup) {
                        let _ = tx.send(announced);
                    }
                }
            }
        }
    }
}

fn run(
    mut d: Driver,
    socket: std::net::UdpSocket,
    mut cmds: tmpsc::Receiver<Cmd>,
    saved: Vec<SocketAddr>,
) {
    let start = Instant::now();
    for addr in saved.into_iter().take(MAX_SAVED) {
        d.node.ping(addr, start);
    }
    let mut next_tick = start;
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        loop {
            match cmds.try_recv() {
                Ok(cmd) => d.apply(cmd, Instant::now()),
                Err(tmpsc::error::TryRecvError::Empty) => break,
                Err(tmpsc::error::TryRecvError::Disconnected) => return,
            }
        }
        // A datagram longer than MAX_DATAGRAM is cut to it and then
        // refused by the decoder; errors (ICMP unreachable) are ignored.
        if let Ok((n, from)) = socket.recv_from(&mut buf) {
            d.node.handle(from, &buf[..n], Instant::now());
            d.publish(false);
            d.deliver();
        }
        let now = Instant::now();
        if now >= next_tick {
            d.tick(now);
            next_tick = now + TICK;
        }
        while let Some((to, bytes)) = d.node.poll_transmit() {
            let _ = socket.send_to(&bytes, to);
        }
    }
}

async fn run_proxied(mut d: Driver, proxy: Arc<Proxy>, mut cmds: tmpsc::Receiver<Cmd>) {
    loop {
        let Some(relay) = proxy.udp_relay().await else {
            // No relay (said once by the proxy module): lookups end empty
            // until it can be had.
            let retry = tokio::time::sleep(RELAY_RETRY);
            tokio::pin!(retry);
            loop {
                tokio::select! {
                    _ = &mut retry => break,
                    // Dropping a command ends its caller's wait.
                    cmd = cmds.recv() => if cmd.is_none() {
                        return;
                    },
                }
            }
            continue;
        };
        let mut datagrams = relay.krpc_datagrams();
        let mut tick = tokio::time::interval(TICK);
        loop {
            tokio::select! {
                cmd = cmds.recv() => match cmd {
                    None => return,
                    Some(cmd) => d.apply(cmd, Instant::now()),
                },
                got = datagrams.recv() => match got {
                    Some((from, bytes)) => {
                        d.node.handle(from, &bytes, Instant::now());
                        d.publish(false);
                        d.deliver();
                    }
                    None => break,
                },
                _ = tick.tick() => {
                    d.tick(Instant::now());
                    if !relay.alive() {
                        break;
                    }
                }
            }
            while let Some((to, bytes)) = d.node.poll_transmit() {
                let _ = relay.send(&TargetAddr::Ip(to), &bytes).await;
            }
        }
    }
}

/// Reads saved IPv6 nodes (one `[addr]:port` a line; others skipped).
pub fn load_state(path: &Path) -> Vec<SocketAddr> {
    super::state::read_state_text(path).map_or_else(Vec::new, |t| parse_state(&t))
}

fn parse_state(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|l| l.trim().parse::<SocketAddr>().ok())
        .filter(|a| Family::V6.holds(*a) && a.port() != 0)
        .take(MAX_SAVED)
        .collect()
}

/// Writes `nodes` to `path` atomically (a synced temporary file, then a
/// rename).
/// An empty list leaves the file alone, so a short offline run does not
/// wipe what an earlier one learned.
pub fn save_state(path: &Path, nodes: &[SocketAddr]) -> std::io::Result<()> {
    if nodes.is_empty() {
        return Ok(());
    }
    let mut text = String::new();
    for n in nodes.iter().take(MAX_SAVED) {
        text.push_str(&n.to_string());
        text.push('\n');
    }
    super::state::write_state_text(path, &text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    #[test]
    fn state_round_trips_and_skips_garbage() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub").join(STATE_FILE);
        let nodes: Vec<SocketAddr> = vec![
            "[::1]:6881".parse().unwrap(),
            "[2001:db8::2]:1".parse().unwrap(),
        ];
        save_state(&path, &nodes).unwrap();
        assert_eq!(load_state(&path), nodes);
        save_state(&path, &[]).unwrap();
        assert_eq!(
            load_state(&path),
            nodes,
            "an empty table keeps the old file"
        );
        assert_eq!(
            parse_state("garbage\n1.2.3.4:5\n[::ffff:1.2.3.4]:5\n[::1]:0\n[::1]:9\n"),
            vec!["[::1]:9".parse::<SocketAddr>().unwrap()]
        );
    }

    /// Three real nodes on ::1: one bootstrap, one announces, one finds it.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_nodes_on_loopback_announce_and_find() {
        let any = SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, 0));
        let Ok(boot) = OwnNode::start(any, vec![], vec![]) else {
            // No IPv6 on this machine's loopback: the integration tests,
            // which run in a namespace of their own, cover it.
            return;
        };
        three_nodes(any, boot).await;
    }

    /// The same on 127.0.0.1: the IPv4 node `--interface` runs in
    /// mainline's place.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn three_ipv4_nodes_on_loopback_announce_and_find() {
        let any = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, 0));
        let boot = OwnNode::start(any, vec![], vec![]).unwrap();
        three_nodes(any, boot).await;
    }

    async fn three_nodes(any: SocketAddr, boot: OwnNode) {
        let a = OwnNode::start(any, vec![boot.local_addr()], vec![]).unwrap();
        let b = OwnNode::start(any, vec![boot.local_addr()], vec![]).unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while (a.routing_table_size() == 0 || b.routing_table_size() == 0)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let ih = NodeId([0x5a; 20]);
        assert!(a.announce(ih, 4242).await >= 1);
        let found: Vec<SocketAddr> = b.get_peers(ih).concat().await;
        let mut want = a.local_addr();
        want.set_port(4242);
        assert_eq!(found, vec![want]);
    }
}
