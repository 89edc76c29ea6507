//! The routing table of one address family: Kademlia buckets indexed by
//! how many leading bits a node's id shares with ours. No I/O.
//!
//! Only nodes that answered one of our queries enter (a node that merely
//! queried us is pinged first by the caller), one entry per IP address
//! (per IP and port on loopback), so a host cannot fill the table with
//! made-up ids; a full bucket takes a new node only in place of one that
//! stopped answering.

use super::krpc::{NodeId, NodeInfo};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// Nodes per bucket (BEP 5's K).
pub const K: usize = 8;

/// A node not heard from for this long is questionable: pinged before it
/// is trusted again (BEP 5: 15 minutes).
pub const QUESTIONABLE_AFTER: Duration = Duration::from_secs(15 * 60);

/// Timeouts in a row after which a node is dropped.
pub const MAX_FAILURES: u8 = 2;

/// One entry.
#[derive(Debug, Clone)]
pub struct Entry {
    /// Its id and address.
    pub node: NodeInfo,
    /// When it last answered us.
    pub last_seen: Instant,
    /// Queries to it that timed out since its last answer.
    pub failures: u8,
}

/// The table: bucket `i` holds the nodes whose ids share exactly `i`
/// leading bits with ours (the last one, 159, also our exact id's
/// neighbours). Buckets far from our id fill up quickly; the near ones
/// stay sparse, which is the Kademlia shape without explicit splits.
pub struct Table {
    own: NodeId,
    buckets: Vec<Vec<Entry>>,
    len: usize,
}

impl Table {
    /// An empty table around `own`.
    pub fn new(own: NodeId) -> Self {
        Table {
            own,
            buckets: vec![Vec::new(); 160],
            len: 0,
        }
    }

    /// Our id.
    pub fn own(&self) -> NodeId {
        self.own
    }

    /// Nodes in the table.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when no node is known.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn bucket_of(&self, id: &NodeId) -> usize {
        self.own.common_prefix(id).min(159)
    }

    /// `node` answered us at `now`: refresh it, or add it if its bucket
    /// has room or holds a failing node. Returns whether it is in the table.
    pub fn heard_from(&mut self, node: NodeInfo, now: Instant) -> bool {
        if node.id == self.own {
            return false;
        }
        // One entry per IP: a known address with a new id replaces its
        // old entry only if that one is failing (ids of honest nodes do
        // not change while they run).
        if let Some((b, i)) = self.find_addr(node.addr) {
            let e = &mut self.buckets[b][i];
            if e.node.id == node.id {
                e.last_seen = now;
                e.failures = 0;
                e.node.addr = node.addr;
                return true;
            }
            if e.failures == 0 {
                return false;
            }
            self.buckets[b].remove(i);
            self.len -= 1;
        }
        let b = self.bucket_of(&node.id);
        let bucket = &mut self.buckets[b];
        if let Some(e) = bucket.iter_mut().find(|e| e.node.id == node.id) {
            // Same id from another IP: keep the address that answers.
            e.node.addr = node.addr;
            e.last_seen = now;
            e.failures = 0;
            return true;
        }
        let entry = Entry {
            node,
            last_seen: now,
            failures: 0,
        };
        if bucket.len() < K {
            bucket.push(entry);
            self.len += 1;
            return true;
        }
        if let Some(worst) = bucket
            .iter_mut()
            .filter(|e| e.failures > 0)
            .max_by_key(|e| e.failures)
        {
            *worst = entry;
            return true;
        }
        false
    }

    /// Whether a new node with `id` would find room (so pinging it is
    /// worth a datagram).
    pub fn has_room_for(&self, id: &NodeId) -> bool {
        if *id == self.own {
            return false;
        }
        let bucket = &self.buckets[self.bucket_of(id)];
        bucket.len() < K || bucket.iter().any(|e| e.failures > 0)
    }

    /// Whether `addr` is in the table.
    pub fn contains_addr(&self, addr: SocketAddr) -> bool {
        self.find_addr(addr).is_some()
    }

    /// The entry of `addr`'s host: same IP (same IP and port on loopback,
    /// where every node of a test or a local swarm shares one address and
    /// nobody from outside can reach us).
    fn find_addr(&self, addr: SocketAddr) -> Option<(usize, usize)> {
        let same = |a: SocketAddr| {
            if addr.ip().is_loopback() {
                a == addr
            } else {
                a.ip() == addr.ip()
            }
        };
        self.buckets.iter().enumerate().find_map(|(b, bucket)| {
            bucket
                .iter()
                .position(|e| same(e.node.addr))
                .map(|i| (b, i))
        })
    }

    /// A query to `addr` timed out: count it, and drop the node after
    /// [`MAX_FAILURES`] in a row.
    pub fn failed(&mut self, addr: SocketAddr) {
        if let Some((b, i)) = self.find_addr(addr)
            && self.buckets[b][i].node.addr == addr
        {
            let e = &mut self.buckets[b][i];
            e.failures = e.failures.saturating_add(1);
            if e.failures >= MAX_FAILURES {
                self.buckets[b].remove(i);
                self.len -= 1;
            }
        }
    }

    /// Up to `n` known nodes closest to `target`, closest first (failing
    /// ones last).
    pub fn closest(&self, target: &NodeId, n: usize) -> Vec<NodeInfo> {
        let mut all: Vec<&Entry> = self.buckets.iter().flatten().collect();
        all.sort_unstable_by_key(|e| (e.failures > 0, target.distance(&e.node.id)));
        all.into_iter().take(n).map(|e| e.node).collect()
    }

    /// The node heard from longest ago that is questionable at `now`
    /// (to be pinged), if any.
    pub fn most_questionable(&self, now: Instant) -> Option<NodeInfo> {
        self.buckets
            .iter()
            .flatten()
            .filter(|e| now.saturating_duration_since(e.last_seen) >= QUESTIONABLE_AFTER)
            .min_by_key(|e| e.last_seen)
            .map(|e| e.node)
    }

    /// Every node, for saving: the ones that answer, most recent first.
    pub fn good_nodes(&self) -> Vec<NodeInfo> {
        let mut all: Vec<&Entry> = self
            .buckets
            .iter()
            .flatten()
            .filter(|e| e.failures == 0)
            .collect();
        all.sort_unstable_by_key(|e| std::cmp::Reverse(e.last_seen));
        all.into_iter().map(|e| e.node).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(first: u8, ip: u8) -> NodeInfo {
        let mut id = [0x55u8; 20];
        id[0] = first;
        NodeInfo {
            id: NodeId(id),
            addr: format!("[2001:db8::{ip}]:6881").parse().unwrap(),
        }
    }

    #[test]
    fn a_full_bucket_takes_a_node_only_in_place_of_a_failing_one() {
        let now = Instant::now();
        let mut t = Table::new(NodeId([0; 20]));
        // First bit set: all share 0 bits with our id, one bucket.
        for i in 0..K as u8 {
            assert!(t.heard_from(node(0x80 | i, i + 1), now));
        }
        assert!(!t.heard_from(node(0x90, 100), now));
        assert!(!t.has_room_for(&node(0x90, 100).id));
        t.failed(node(0x80, 1).addr);
        assert!(t.has_room_for(&node(0x90, 100).id));
        assert!(t.heard_from(node(0x90, 100), now));
        assert_eq!(t.len(), K);
        assert!(!t.contains_addr(node(0x80, 1).addr));
    }

    #[test]
    fn one_entry_per_ip_and_failures_drop_a_node() {
        let now = Instant::now();
        let mut t = Table::new(NodeId([0; 20]));
        assert!(t.heard_from(node(0x80, 1), now));
        // Another id from the same IP is refused while the first answers.
        assert!(!t.heard_from(node(0x40, 1), now));
        assert_eq!(t.len(), 1);
        t.failed(node(0x80, 1).addr);
        assert_eq!(t.len(), 1);
        t.failed(node(0x80, 1).addr);
        assert!(t.is_empty());
    }

    #[test]
    fn closest_orders_by_xor_distance() {
        let now = Instant::now();
        let mut t = Table::new(NodeId([0; 20]));
        for (i, first) in [0x80u8, 0x40, 0x20, 0x10].iter().enumerate() {
            t.heard_from(node(*first, i as u8 + 1), now);
        }
        let mut target = [0u8; 20];
        target[0] = 0x41;
        let got: Vec<u8> = t
            .closest(&NodeId(target), 2)
            .iter()
            .map(|n| n.id.0[0])
            .collect();
        assert_eq!(got, vec![0x40, 0x10]);
    }

    #[test]
    fn questionable_after_fifteen_minutes() {
        let now = Instant::now();
        let mut t = Table::new(NodeId([0; 20]));
        t.heard_from(node(0x80, 1), now);
        assert_eq!(t.most_questionable(now + Duration::from_secs(60)), None);
        assert!(t.most_questionable(now + QUESTIONABLE_AFTER).is_some());
    }

    #[test]
    fn loopback_nodes_are_one_entry_per_port() {
        let now = Instant::now();
        let mut t = Table::new(NodeId([0; 20]));
        let at = |first: u8, port: u16| NodeInfo {
            id: NodeId([first; 20]),
            addr: format!("[::1]:{port}").parse().unwrap(),
        };
        assert!(t.heard_from(at(0x80, 1000), now));
        assert!(t.heard_from(at(0x40, 2000), now));
        assert!(!t.heard_from(at(0x20, 2000), now));
        assert_eq!(t.len(), 2);
    }
}
