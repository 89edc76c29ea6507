//! The simulated network and the event loop: a virtual clock, access links
//! with a rate, a delay, loss and reordering, a tracker, and one driver per
//! connection doing what `peer::conn`'s loop does, in the same order.

use crate::node::{Behaviour, PORT, SimSwarm, Torrent};
use crate::rng::Rng;
use btc::bitfield::Bitfield;
use btc::choker::{Candidate, Choker};
use btc::id::PeerId;
use btc::peer::codec::PeerCodec;
use btc::peer::handshake::Handshake;
use btc::peer::state::{LocalInfo, Outbox, PeerCommand, PeerState};
use btc::peer::swarm::Swarm;
use btc::picker::PeerKey;
use bytes::{Bytes, BytesMut};
use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap, HashMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio_util::codec::Decoder;

/// Simulated microseconds since the run began.
pub type Time = u64;

pub const MS: Time = 1_000;
pub const SEC: Time = 1_000_000;

/// The session's choke rounds (`session/torrent.rs`).
const UPLOAD_SLOTS: usize = 4;
const CHOKE_INTERVAL: Time = 10 * SEC;
const MIN_CHOKE_GAP: Time = SEC;
/// The torrent actor's tick.
const NODE_TICK: Time = 250 * MS;
/// Largest piece of an outbox one uplink turn sends.
const SEGMENT: usize = 16 * 1024;
/// Per-1460-byte-segment TCP/IP header bytes, counted on the wire.
const HEADER: usize = 40;
/// Back-off before an address is dialled again after a failure or a parting.
const REDIAL: Time = 30 * SEC;
/// Dials a node starts per second at most.
const DIALS_PER_SEC: usize = 4;

/// One node's access link to the simulated internet.
#[derive(Debug, Clone, Copy)]
pub struct Link {
    /// Upload and download capacity, bits per second.
    pub up_bps: u64,
    pub down_bps: u64,
    /// One-way delay between the node and the core (a path between two
    /// nodes takes the sum of theirs).
    pub delay: Time,
    /// Probability that a segment is lost (resent one round trip later;
    /// the stream behind it waits, as TCP's in-order delivery makes it).
    pub loss: f64,
    /// Probability that a segment is held back up to `jitter` (again the
    /// stream behind it waits).
    pub reorder: f64,
    pub jitter: Time,
}

/// The parameters of a run.
#[derive(Debug, Clone)]
pub struct Config {
    pub seed: u64,
    pub link: Link,
    /// Connections a node keeps at most (incoming ones are refused beyond).
    pub max_conns: usize,
    /// Addresses a tracker announce returns.
    pub tracker_peers: usize,
    /// Give up (the test fails) after this much simulated time.
    pub limit: Time,
}

#[derive(Debug)]
enum Ev {
    Tick {
        node: usize,
        epoch: u64,
    },
    UplinkDone {
        node: usize,
        conn: usize,
        side: usize,
        data: Bytes,
    },
    Arrive {
        conn: usize,
        side: usize,
        data: Bytes,
    },
    DownlinkDone {
        node: usize,
    },
    Connect {
        from: usize,
        to: usize,
        epoch: u64,
    },
    Leave {
        node: usize,
    },
    Rejoin {
        node: usize,
    },
}

struct Item {
    t: Time,
    seq: u64,
    ev: Ev,
}
impl PartialEq for Item {
    fn eq(&self, o: &Self) -> bool {
        (self.t, self.seq) == (o.t, o.seq)
    }
}
impl Eq for Item {}
impl PartialOrd for Item {
    fn partial_cmp(&self, o: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(o))
    }
}
impl Ord for Item {
    fn cmp(&self, o: &Self) -> std::cmp::Ordering {
        (self.t, self.seq).cmp(&(o.t, o.seq))
    }
}

/// One side of a connection: the real `PeerState` and its buffers.
struct End {
    node: usize,
    key: PeerKey,
    st: PeerState,
    out: Outbox,
    /// Bytes received and not decoded yet (the codec's read buffer).
    rx: BytesMut,
    in_ring: bool,
}

struct Conn {
    ends: [End; 2],
    open: bool,
    /// Per direction (from side i), when its last segment arrives: the
    /// stream is delivered in order.
    last_arrival: [Time; 2],
}

pub struct Node {
    pub ip: IpAddr,
    pub swarm: Arc<SimSwarm>,
    pub online: bool,
    epoch: u64,
    link: Link,
    conns: BTreeSet<usize>,
    dialing: usize,
    choker: Choker,
    last_choke: Time,
    rechoke_pending: bool,
    ticks: u64,
    up_busy: bool,
    up_ring: VecDeque<(usize, usize)>,
    down_busy: bool,
    down_q: VecDeque<(usize, usize, Bytes)>,
    /// Addresses known (tracker, PEX) and when they may be dialled.
    known: BTreeMap<usize, Time>,
    next_announce: Time,
    /// Time the uplink spent sending.
    pub up_busy_total: Time,
    pub complete_at: Option<Time>,
    /// When the first bytes of a block reached it.
    pub first_block_at: Option<Time>,
    pub metadata_at: Option<Time>,
    /// Whether the test waits for this node to finish.
    pub must_finish: bool,
    /// Longest stretch online and incomplete without a verified piece.
    pub longest_stall: Time,
    last_progress: Time,
    last_have: usize,
}

/// Why connections ended, counted.
pub type CloseReasons = BTreeMap<String, u64>;

pub struct World {
    pub cfg: Config,
    pub now: Time,
    base: Instant,
    rng: Rng,
    queue: BinaryHeap<Reverse<Item>>,
    seq: u64,
    pub nodes: Vec<Node>,
    conns: Vec<Conn>,
    keys: HashMap<PeerKey, (usize, usize)>,
    next_key: PeerKey,
    pumps: VecDeque<(usize, usize)>,
    dirty: BTreeSet<usize>,
    pub torrent: Arc<Torrent>,
    pub closes: CloseReasons,
    pub events: u64,
    pub connections: u64,
}

impl World {
    pub fn new(cfg: Config, torrent: Arc<Torrent>) -> World {
        let rng = Rng::new(cfg.seed);
        World {
            cfg,
            now: 0,
            base: Instant::now(),
            rng,
            queue: BinaryHeap::new(),
            seq: 0,
            nodes: Vec::new(),
            conns: Vec::new(),
            keys: HashMap::new(),
            next_key: 1,
            pumps: VecDeque::new(),
            dirty: BTreeSet::new(),
            torrent,
            closes: BTreeMap::new(),
            events: 0,
            connections: 0,
        }
    }

    pub fn rng(&mut self) -> &mut Rng {
        &mut self.rng
    }

    fn instant(&self) -> Instant {
        self.base + Duration::from_micros(self.now)
    }

    fn to_time(&self, i: Instant) -> Time {
        i.saturating_duration_since(self.base).as_micros() as Time
    }

    fn at(&mut self, t: Time, ev: Ev) {
        self.seq += 1;
        self.queue.push(Reverse(Item {
            t,
            seq: self.seq,
            ev,
        }));
    }

    /// Adds a node (online at once): a seeder when `seed`, a magnet (no
    /// metadata) when `!known`.
    pub fn add_node(&mut self, seed: bool, known: bool, behaviour: Behaviour) -> usize {
        let id = self.nodes.len();
        let n = self.torrent.geometry.piece_count as usize;
        let have = if seed {
            Bitfield::full(n)
        } else {
            Bitfield::new(n)
        };
        let swarm = Arc::new(SimSwarm::new(
            self.torrent.clone(),
            have,
            known,
            behaviour,
            &mut self.rng,
        ));
        let choker = Choker::new(UPLOAD_SLOTS, self.rng.next_u64());
        // One /24 per node: BEP 6 derives the allowed-fast set from the
        // /24, and a whole swarm in one /24 would all fetch the same pieces.
        let ip = IpAddr::V4(Ipv4Addr::new(10, (id >> 8) as u8, id as u8, 1));
        self.nodes.push(Node {
            ip,
            swarm,
            online: false,
            epoch: 0,
            link: self.cfg.link,
            conns: BTreeSet::new(),
            dialing: 0,
            choker,
            last_choke: 0,
            rechoke_pending: false,
            ticks: 0,
            up_busy: false,
            up_ring: VecDeque::new(),
            down_busy: false,
            down_q: VecDeque::new(),
            known: BTreeMap::new(),
            next_announce: 0,
            up_busy_total: 0,
            complete_at: seed.then_some(0),
            first_block_at: None,
            metadata_at: known.then_some(0),
            must_finish: !seed,
            longest_stall: 0,
            last_progress: 0,
            last_have: 0,
        });
        self.join(id);
        id
    }

    fn node_of_ip(ip: IpAddr) -> Option<usize> {
        match ip {
            IpAddr::V4(v) => {
                let o = v.octets();
                Some(((o[1] as usize) << 8) | o[2] as usize)
            }
            IpAddr::V6(_) => None,
        }
    }

    fn join(&mut self, id: usize) {
        let node = &mut self.nodes[id];
        node.online = true;
        node.epoch += 1;
        node.next_announce = self.now;
        node.last_progress = self.now;
        let epoch = node.epoch;
        // Spread the nodes' ticks over the tick period.
        let phase = self.rng.below(NODE_TICK);
        self.at(self.now + phase, Ev::Tick { node: id, epoch });
    }

    /// Takes `id` offline at `t` for `away`.
    pub fn leave_at(&mut self, id: usize, t: Time, away: Time) {
        self.at(t, Ev::Leave { node: id });
        self.at(t + away, Ev::Rejoin { node: id });
    }

    fn rtt(&self, a: usize, b: usize) -> Time {
        2 * (self.nodes[a].link.delay + self.nodes[b].link.delay)
    }

    /// Runs until `done` holds (checked once per simulated second) or the
    /// limit passes. Returns whether `done` held.
    pub fn run(
        &mut self,
        mut done: impl FnMut(&World) -> bool,
        mut each_second: impl FnMut(&mut World),
    ) -> bool {
        let mut next_check = 0;
        while let Some(Reverse(item)) = self.queue.pop() {
            self.now = item.t;
            if self.now >= next_check {
                each_second(self);
                if done(self) {
                    return true;
                }
                next_check = self.now + SEC;
            }
            if self.now > self.cfg.limit {
                return false;
            }
            self.events += 1;
            self.handle(item.ev);
            self.settle();
        }
        done(self)
    }

    fn handle(&mut self, ev: Ev) {
        match ev {
            Ev::Tick { node, epoch } => {
                if self.nodes[node].online && self.nodes[node].epoch == epoch {
                    self.tick(node);
                    self.at(self.now + NODE_TICK, Ev::Tick { node, epoch });
                }
            }
            Ev::UplinkDone {
                node,
                conn,
                side,
                data,
            } => {
                self.nodes[node].up_busy = false;
                if self.conns[conn].open {
                    self.propagate(conn, side, data);
                }
                self.start_uplink(node);
            }
            Ev::Arrive { conn, side, data } => {
                if self.conns[conn].open {
                    let node = self.conns[conn].ends[side].node;
                    self.nodes[node].down_q.push_back((conn, side, data));
                    if !self.nodes[node].down_busy {
                        self.start_downlink(node);
                    }
                }
            }
            Ev::DownlinkDone { node } => {
                self.nodes[node].down_busy = false;
                if let Some((conn, side, data)) = self.nodes[node].down_q.pop_front()
                    && self.conns[conn].open
                {
                    self.conns[conn].ends[side].rx.extend_from_slice(&data);
                    self.pumps.push_back((conn, side));
                }
                self.start_downlink(node);
            }
            Ev::Connect { from, to, epoch } => self.connect(from, to, epoch),
            Ev::Leave { node } => self.leave(node),
            Ev::Rejoin { node } => {
                if !self.nodes[node].online {
                    self.join(node);
                }
            }
        }
    }

    /// A segment leaves `side`'s node: it reaches the other node's
    /// downlink after the path's delay, in stream order.
    fn propagate(&mut self, conn: usize, side: usize, data: Bytes) {
        let a = self.conns[conn].ends[side].node;
        let b = self.conns[conn].ends[1 - side].node;
        let link = self.nodes[a].link;
        let one_way = self.nodes[a].link.delay + self.nodes[b].link.delay;
        let mut t = self.now + one_way;
        if self.rng.chance(link.loss) {
            t += 2 * one_way + 10 * MS;
        }
        if self.rng.chance(link.reorder) {
            t += self.rng.below(link.jitter + 1);
        }
        let t = t.max(self.conns[conn].last_arrival[side]);
        self.conns[conn].last_arrival[side] = t;
        self.at(
            t,
            Ev::Arrive {
                conn,
                side: 1 - side,
                data,
            },
        );
    }

    fn wire_time(bytes: usize, bps: u64) -> Time {
        let wire = bytes + HEADER * bytes.div_ceil(1460).max(1);
        (wire as u64 * 8 * SEC).div_ceil(bps)
    }

    fn start_downlink(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        if n.down_busy {
            return;
        }
        // Drop what arrived for connections closed since.
        while n
            .down_q
            .front()
            .is_some_and(|(c, _, _)| !self.conns[*c].open)
        {
            n.down_q.pop_front();
        }
        if let Some((_, _, data)) = n.down_q.front() {
            n.down_busy = true;
            let t = self.now + Self::wire_time(data.len(), n.link.down_bps);
            self.at(t, Ev::DownlinkDone { node });
        }
    }

    /// Queues an end with bytes to send on its node's uplink (round-robin
    /// between connections, a segment per turn).
    fn want_uplink(&mut self, conn: usize, side: usize) {
        let end = &mut self.conns[conn].ends[side];
        if end.in_ring || end.out.is_empty() {
            return;
        }
        end.in_ring = true;
        let node = end.node;
        self.nodes[node].up_ring.push_back((conn, side));
        self.start_uplink(node);
    }

    fn start_uplink(&mut self, node: usize) {
        if self.nodes[node].up_busy {
            return;
        }
        let now = self.instant();
        while let Some((conn, side)) = self.nodes[node].up_ring.pop_front() {
            let c = &mut self.conns[conn];
            let open = c.open;
            let end = &mut c.ends[side];
            end.in_ring = false;
            if !open || end.out.is_empty() {
                continue;
            }
            let n = end.out.len().min(SEGMENT);
            let data = end.out.buf_mut().split_to(n).freeze();
            end.st.on_written(now);
            if !end.out.is_empty() {
                end.in_ring = true;
                self.nodes[node].up_ring.push_back((conn, side));
            }
            self.nodes[node].up_busy = true;
            let wire = Self::wire_time(n, self.nodes[node].link.up_bps);
            self.nodes[node].up_busy_total += wire;
            let t = self.now + wire;
            self.at(
                t,
                Ev::UplinkDone {
                    node,
                    conn,
                    side,
                    data,
                },
            );
            // Room in the outbox: the driver may read and serve again.
            self.pumps.push_back((conn, side));
            return;
        }
    }

    /// What `peer::conn`'s loop does between two wake-ups: keep the
    /// request pipeline full, serve a batch, then read frames while the
    /// outbox is under the read pause.
    fn pump(&mut self, conn: usize, side: usize) {
        if !self.conns[conn].open {
            return;
        }
        let now = self.instant();
        let end = &mut self.conns[conn].ends[side];
        let node = end.node;
        let swarm = self.nodes[node].swarm.clone();
        let result: Result<(), String> = (|| {
            loop {
                end.st.fill_requests(now, &*swarm, &mut end.out);
                if let Some(batch) = end.st.take_upload_batch(&end.out) {
                    {
                        // Served while we choke it: its allowed-fast set.
                        let mut st = swarm.lock();
                        if st.peers.get(&end.key).is_some_and(|e| e.choked) {
                            st.served_choked += batch.iter().map(|r| r.len as u64).sum::<u64>();
                        }
                    }
                    let blocks = swarm.read_blocks(batch);
                    end.st.on_blocks_read(blocks, &*swarm, &mut end.out);
                }
                if end.out.len() >= end.st.read_pause() {
                    return Ok(());
                }
                match PeerCodec.decode(&mut end.rx) {
                    Ok(Some(m)) => end
                        .st
                        .on_message(m, now, &*swarm, &mut end.out)
                        .map_err(|e| e.to_string())?,
                    Ok(None) => return Ok(()),
                    Err(e) => return Err(format!("codec: {e}")),
                }
            }
        })();
        match result {
            Ok(()) => self.want_uplink(conn, side),
            Err(e) => self.close(conn, &e),
        }
        self.dirty.insert(node);
    }

    /// Runs queued pumps and node work until nothing is left at this instant.
    fn settle(&mut self) {
        loop {
            if let Some((c, s)) = self.pumps.pop_front() {
                self.pump(c, s);
                continue;
            }
            let Some(node) = self.dirty.pop_first() else {
                break;
            };
            self.node_work(node);
        }
    }

    fn end_of(&self, key: PeerKey) -> Option<(usize, usize)> {
        self.keys.get(&key).copied()
    }

    /// Commands the node queued (cancels, closes of banned peers), the
    /// pieces-changed broadcast, the choker when interest changed, and
    /// PEX-learned addresses.
    fn node_work(&mut self, node: usize) {
        let swarm = self.nodes[node].swarm.clone();
        if self.nodes[node].first_block_at.is_none() && swarm.lock().downloaded > 0 {
            self.nodes[node].first_block_at = Some(self.now);
        }
        loop {
            let cmd = swarm.lock().cmds.pop_front();
            let Some((key, cmd)) = cmd else { break };
            let Some((c, s)) = self.end_of(key) else {
                continue;
            };
            if cmd == PeerCommand::Close {
                self.close(c, "banned");
                continue;
            }
            let end = &mut self.conns[c].ends[s];
            end.st.on_command(cmd, &*swarm, &mut end.out);
            self.pumps.push_back((c, s));
        }
        let changed = std::mem::take(&mut swarm.lock().changed);
        if changed {
            let conns: Vec<usize> = self.nodes[node].conns.iter().copied().collect();
            for c in conns {
                let s = self.side_of(c, node);
                let end = &mut self.conns[c].ends[s];
                if let Err(e) = end.st.on_pieces_changed(&*swarm, &mut end.out) {
                    self.close(c, &e.to_string());
                } else {
                    self.pumps.push_back((c, s));
                }
            }
            let st = swarm.lock();
            if self.nodes[node].metadata_at.is_none() && st.known {
                self.nodes[node].metadata_at =
                    Some(self.to_time(st.metadata_at.expect("set with known")));
            }
            let have = st.picker.as_ref().map_or(0, |p| p.have().count());
            let complete = st.picker.as_ref().is_some_and(|p| p.is_complete());
            drop(st);
            let n = &mut self.nodes[node];
            if have > n.last_have {
                n.last_have = have;
                n.last_progress = self.now;
            }
            if complete && n.complete_at.is_none() {
                n.complete_at = Some(self.now);
            }
        }
        let learned = std::mem::take(&mut swarm.lock().learned);
        for a in learned {
            if let Some(id) =
                Self::node_of_ip(a.ip()).filter(|&i| i < self.nodes.len() && i != node)
            {
                self.nodes[node].known.entry(id).or_insert(self.now);
            }
        }
        if !swarm.lock().cmds.is_empty() {
            self.dirty.insert(node);
        }
    }

    fn side_of(&self, conn: usize, node: usize) -> usize {
        if self.conns[conn].ends[0].node == node {
            0
        } else {
            1
        }
    }

    /// The torrent actor's 250 ms tick: choke rounds, the one-second peer
    /// ticks, announces and dials.
    fn tick(&mut self, node: usize) {
        let now_i = self.instant();
        let swarm = self.nodes[node].swarm.clone();
        self.nodes[node].ticks += 1;
        // Stall bookkeeping.
        {
            let n = &mut self.nodes[node];
            if n.complete_at.is_none() {
                n.longest_stall = n.longest_stall.max(self.now - n.last_progress);
            }
        }
        let rechoke = std::mem::take(&mut swarm.lock().rechoke);
        let gap = self.now - self.nodes[node].last_choke;
        if rechoke {
            if gap >= MIN_CHOKE_GAP {
                self.rechoke(node, now_i);
            } else {
                self.unchoke_free_slots(node);
                self.nodes[node].rechoke_pending = true;
            }
        }
        let gap = self.now - self.nodes[node].last_choke;
        if gap >= CHOKE_INTERVAL || (self.nodes[node].rechoke_pending && gap >= MIN_CHOKE_GAP) {
            self.rechoke(node, now_i);
        }
        if self.nodes[node].ticks.is_multiple_of(4) {
            let conns: Vec<usize> = self.nodes[node].conns.iter().copied().collect();
            for c in conns {
                let s = self.side_of(c, node);
                let end = &mut self.conns[c].ends[s];
                match end.st.on_tick(now_i, &*swarm, &mut end.out) {
                    Ok(()) => self.pumps.push_back((c, s)),
                    Err(e) => self.close(c, &e.to_string()),
                }
            }
            self.announce_and_dial(node);
        }
        self.dirty.insert(node);
    }

    fn rechoke(&mut self, node: usize, now: Instant) {
        let n = &mut self.nodes[node];
        n.last_choke = self.now;
        n.rechoke_pending = false;
        let swarm = n.swarm.clone();
        let seeding = swarm.is_complete();
        let mut st = swarm.lock();
        let cands: Vec<Candidate> = st
            .peers
            .iter()
            .map(|(k, e)| Candidate {
                key: *k,
                interested: e.interested,
                rate: if seeding { e.up_rate } else { e.down_rate },
                up_rate: e.up_rate,
            })
            .collect();
        let unchoke = n.choker.decide(&cands, now);
        let mut cmds = Vec::new();
        for (k, e) in st.peers.iter_mut() {
            let choke = !unchoke.contains(k);
            if choke != e.choked {
                e.choked = choke;
                cmds.push((*k, PeerCommand::SetChoke(choke)));
            }
        }
        st.cmds.extend(cmds);
    }

    fn unchoke_free_slots(&mut self, node: usize) {
        let n = &mut self.nodes[node];
        let swarm = n.swarm.clone();
        let seeding = swarm.is_complete();
        let mut st = swarm.lock();
        let cands: Vec<Candidate> = st
            .peers
            .iter()
            .map(|(k, e)| Candidate {
                key: *k,
                interested: e.interested,
                rate: if seeding { e.up_rate } else { e.down_rate },
                up_rate: e.up_rate,
            })
            .collect();
        let unchoked = st
            .peers
            .iter()
            .filter(|(_, e)| !e.choked)
            .map(|(k, _)| *k)
            .collect();
        for k in n.choker.fill_free_slots(&cands, &unchoked) {
            if let Some(e) = st.peers.get_mut(&k) {
                e.choked = false;
                st.cmds.push_back((k, PeerCommand::SetChoke(false)));
            }
        }
    }

    /// A tracker announce once a minute (random online nodes), then dials
    /// of known addresses while there is room.
    fn announce_and_dial(&mut self, node: usize) {
        if self.now >= self.nodes[node].next_announce {
            self.nodes[node].next_announce = self.now + 60 * SEC;
            let mut online: Vec<usize> = (0..self.nodes.len())
                .filter(|&i| i != node && self.nodes[i].online)
                .collect();
            self.rng.shuffle(&mut online);
            online.truncate(self.cfg.tracker_peers);
            for i in online {
                self.nodes[node].known.entry(i).or_insert(self.now);
            }
        }
        let connected: BTreeSet<usize> = self.nodes[node]
            .conns
            .iter()
            .map(|&c| self.conns[c].ends[1 - self.side_of(c, node)].node)
            .collect();
        let swarm = self.nodes[node].swarm.clone();
        let mut started = 0;
        let due: Vec<usize> = self.nodes[node]
            .known
            .iter()
            .filter(|(i, t)| **t <= self.now && !connected.contains(i))
            .map(|(i, _)| *i)
            .collect();
        for i in due {
            let n = &self.nodes[node];
            if started >= DIALS_PER_SEC || n.conns.len() + n.dialing >= self.cfg.max_conns {
                break;
            }
            if swarm.is_banned(self.nodes[i].ip) {
                continue;
            }
            started += 1;
            self.nodes[node].dialing += 1;
            self.nodes[node].known.insert(i, self.now + REDIAL);
            // TCP's three-way handshake, then the BitTorrent handshakes.
            let t = self.now + self.rtt(node, i) * 3 / 2;
            let epoch = self.nodes[node].epoch;
            self.at(
                t,
                Ev::Connect {
                    from: node,
                    to: i,
                    epoch,
                },
            );
        }
    }

    fn connect(&mut self, a: usize, b: usize, epoch: u64) {
        if self.nodes[a].epoch != epoch || !self.nodes[a].online {
            return;
        }
        self.nodes[a].dialing -= 1;
        let already = self.nodes[a]
            .conns
            .iter()
            .any(|&c| self.conns[c].ends[1 - self.side_of(c, a)].node == b);
        let (ia, ib) = (self.nodes[a].ip, self.nodes[b].ip);
        if !self.nodes[b].online
            || already
            || self.nodes[b].conns.len() >= self.cfg.max_conns
            || self.nodes[b].swarm.is_banned(ia)
            || self.nodes[a].swarm.is_banned(ib)
            // Two seeds would part at once ("we are both seeds").
            || (self.nodes[a].swarm.is_complete() && self.nodes[b].swarm.is_complete())
        {
            return;
        }
        let now = self.instant();
        let ih = self.torrent.info_hash;
        // The real handshakes, through their codec: they decide the
        // extension and fast bits.
        let hs = |id: usize| {
            let mut pid = [b'S'; 20];
            pid[12..20].copy_from_slice(&(id as u64).to_be_bytes());
            let bytes = Handshake::ours(ih, PeerId(pid), false).encode();
            Handshake::decode(&bytes).expect("our handshake decodes")
        };
        let (ha, hb) = (hs(a), hs(b));
        let ext = ha.supports_extensions() && hb.supports_extensions();
        // `SIM_NO_FAST`: an experiment knob (see main.rs).
        let fast =
            ha.supports_fast() && hb.supports_fast() && std::env::var_os("SIM_NO_FAST").is_none();
        let c = self.conns.len();
        let mut ends = Vec::new();
        for (me, them) in [(a, b), (b, a)] {
            let key = self.next_key;
            self.next_key += 1;
            let local = LocalInfo {
                listen_port: PORT,
                dht_port: None,
                their_ip: self.nodes[them].ip,
                info_hash: ih,
            };
            self.nodes[me].swarm.register(key, self.nodes[them].ip);
            self.nodes[me].conns.insert(c);
            self.keys.insert(key, (c, ends.len()));
            ends.push(End {
                node: me,
                key,
                st: PeerState::new(key, local, ext, now).with_fast(fast),
                out: Outbox::default(),
                rx: BytesMut::new(),
                in_ring: false,
            });
        }
        let [e0, e1]: [End; 2] = ends.try_into().ok().expect("two ends");
        self.conns.push(Conn {
            ends: [e0, e1],
            open: true,
            last_arrival: [0, 0],
        });
        self.connections += 1;
        for s in 0..2 {
            let node = self.conns[c].ends[s].node;
            let swarm = self.nodes[node].swarm.clone();
            let end = &mut self.conns[c].ends[s];
            end.st.start(&*swarm, &mut end.out);
            self.pumps.push_back((c, s));
        }
    }

    /// Ends a connection on both sides at once (what FIN or RST does a
    /// path delay later is not modelled).
    fn close(&mut self, conn: usize, why: &str) {
        if !self.conns[conn].open {
            return;
        }
        let reason = why.split(':').next().unwrap_or(why).to_string();
        *self.closes.entry(reason).or_default() += 1;
        self.conns[conn].open = false;
        for s in 0..2 {
            let node = self.conns[conn].ends[s].node;
            let other = self.conns[conn].ends[1 - s].node;
            let swarm = self.nodes[node].swarm.clone();
            let end = &mut self.conns[conn].ends[s];
            end.st.close(&*swarm);
            end.out = Outbox::default();
            end.rx = BytesMut::new();
            swarm.unregister(end.key);
            self.keys.remove(&end.key);
            let n = &mut self.nodes[node];
            n.conns.remove(&conn);
            n.known.insert(other, self.now + REDIAL);
            self.dirty.insert(node);
        }
    }

    fn leave(&mut self, node: usize) {
        if !self.nodes[node].online {
            return;
        }
        let conns: Vec<usize> = self.nodes[node].conns.iter().copied().collect();
        for c in conns {
            self.close(c, "left");
        }
        let n = &mut self.nodes[node];
        n.online = false;
        n.epoch += 1;
        n.dialing = 0;
        n.up_ring.clear();
        n.down_q.clear();
        n.known.clear();
        n.swarm.restart();
        n.choker = Choker::new(UPLOAD_SLOTS, self.rng.next_u64());
        n.last_have = n
            .swarm
            .lock()
            .picker
            .as_ref()
            .map_or(0, |p| p.have().count());
    }

    /// How the pieces spread (a debugging aid, `SIM_DEBUG=1`): pieces the
    /// leechers hold in all, the fewest one holds, how many distinct, and
    /// the unchoked links, how many of them the downloader wants, and how
    /// many carry requests.
    pub fn progress(&self) -> String {
        let n = self.torrent.geometry.piece_count as usize;
        let mut union = Bitfield::new(n);
        let (mut total, mut min, mut pend) = (0, usize::MAX, 0);
        let (mut unchoked, mut useful, mut requesting) = (0, 0, 0);
        for node in self.nodes.iter().filter(|x| x.must_finish) {
            let st = node.swarm.lock();
            let Some(p) = st.picker.as_ref() else {
                continue;
            };
            total += p.have().count();
            min = min.min(p.have().count());
            pend += p.pending_pieces();
            for i in p.have().iter_ones() {
                union.set(i);
            }
        }
        for c in self.conns.iter().filter(|c| c.open) {
            for s in 0..2 {
                let up = &c.ends[s];
                let down = &c.ends[1 - s];
                let e = self.nodes[up.node].swarm.lock().peers.get(&up.key).cloned();
                if let Some(e) = e.filter(|e| !e.choked) {
                    unchoked += 1;
                    if e.interested {
                        useful += 1;
                    }
                    if !down.st.in_flight().is_empty() {
                        requesting += 1;
                    }
                }
            }
        }
        format!(
            "{:.0} s: leechers hold {total} pieces (fewest {min}, union {}), pending {pend}; unchoked {unchoked}, interested {useful}, requesting {requesting}",
            self.now as f64 / SEC as f64,
            union.count()
        )
    }

    /// Whether the nodes the test waits for hold every piece between them.
    pub fn leechers_hold_everything(&self) -> bool {
        let n = self.torrent.geometry.piece_count as usize;
        let mut union = Bitfield::new(n);
        for node in self.nodes.iter().filter(|x| x.must_finish) {
            if let Some(p) = node.swarm.lock().picker.as_ref() {
                for i in p.have().iter_ones() {
                    union.set(i);
                }
            }
        }
        union.is_full()
    }

    /// Payload bytes `node` uploaded so far.
    pub fn uploaded(&self, node: usize) -> u64 {
        self.nodes[node].swarm.lock().uploaded
    }
}
