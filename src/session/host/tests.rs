use super::*;
use crate::peer::pex::{FLAG_ENCRYPTION, FLAG_REACHABLE, FLAG_UTP};
use std::net::SocketAddr;
use std::time::Duration;
use tokio::sync::mpsc;

const LIMITS: Limits = Limits {
    max_peers: 3,
    max_per_ip: 1,
};

fn entry(addr: &str, id: u8, at: Instant) -> PeerEntry {
    PeerEntry {
        addr: addr.parse().unwrap(),
        peer_id: PeerId([id; 20]),
        interested: false,
        choked: true,
        down_rate: 0,
        up_rate: 0,
        seed: false,
        outgoing: false,
        link: Default::default(),
        tx: mpsc::channel(1).0,
        connected_at: at,
        last_useful: at,
        listen_port: None,
    }
}

fn reg(addr: &str, id: u8) -> Registration {
    Registration {
        addr: addr.parse::<SocketAddr>().unwrap(),
        peer_id: PeerId([id; 20]),
        outgoing: false,
        link: Default::default(),
        tx: mpsc::channel(1).0,
    }
}

/// PEX from the host's side: what a peer is told (listen addresses,
/// flags, never itself) and the fellow seeds remembered after parting.
#[test]
fn pex_peers_are_listen_addresses_with_flags_and_parted_seeds() {
    let limits = Limits {
        max_peers: 8,
        max_per_ip: 1,
    };
    let token = CancellationToken::new();
    let shared = Shared::create(InfoHash([1; 20]), PeerId([2; 20]), 1, None, limits, token);
    let geometry = Geometry::new(4 * 16384, 16384);
    shared.lock().picker = Some(crate::picker::Picker::new(geometry, Bitfield::full(4), 1));
    let now = Instant::now();
    {
        let mut st = shared.lock();
        // 1: we dialled it, a seed. 2: it dialled us, said `p`.
        // 3: it dialled us and never said where it listens. 4: the asker.
        let mut e = entry("10.0.0.1:6881", 1, now);
        (e.outgoing, e.seed) = (true, true);
        st.peers.insert(1, e);
        let mut e = entry("10.0.0.2:50000", 2, now);
        e.listen_port = Some(7000);
        // Over uTP, encrypted.
        e.link.transport = crate::peer::transport::Transport::Utp;
        e.link.encrypted = true;
        st.peers.insert(2, e);
        st.peers.insert(3, entry("10.0.0.3:50001", 3, now));
        let mut e = entry("10.0.0.4:50002", 4, now);
        e.listen_port = Some(7001);
        st.peers.insert(4, e);
    }
    let mut got = shared.pex_peers(4);
    got.sort();
    let a = |s: &str| s.parse::<SocketAddr>().unwrap();
    assert_eq!(
        got,
        vec![
            (a("10.0.0.1:6881"), FLAG_SEED | FLAG_REACHABLE),
            (a("10.0.0.2:7000"), FLAG_UTP | FLAG_ENCRYPTION)
        ]
    );
    // The seed leaves while we seed too: still offered, to others.
    shared.unregister(1);
    // A leecher leaving is simply gone.
    shared.unregister(2);
    assert_eq!(
        shared.pex_peers(4),
        vec![(a("10.0.0.1:6881"), FLAG_SEED | FLAG_REACHABLE)]
    );
    // Until the memory runs out (an Instant that far back exists
    // unless the machine booted minutes ago).
    if let Some(then) = now.checked_sub(PEX_REMEMBER_SEEDS) {
        shared.lock().pex_seeds[0].2 = then;
        assert!(shared.pex_peers(4).is_empty());
        assert!(shared.lock().pex_seeds.is_empty());
    }
}

#[test]
fn one_connection_per_ip_by_default() {
    let now = Instant::now();
    let peers = HashMap::from([(1, entry("10.0.0.1:1", 1, now))]);
    let ours = PeerId([0; 20]);
    let r = admit(
        &peers,
        &HashSet::new(),
        LIMITS,
        &ours,
        &reg("10.0.0.1:2", 2),
        now,
    );
    assert_eq!(r, Err(Refused::PerIpLimit));
    let r = admit(
        &peers,
        &HashSet::new(),
        LIMITS,
        &ours,
        &reg("10.0.0.2:2", 2),
        now,
    );
    assert_eq!(r, Ok(Admission::Room));
}

#[test]
fn regression_peer_id_clash_does_not_evict_the_real_peer() {
    let now = Instant::now();
    let peers = HashMap::from([(1, entry("10.0.0.1:1", 7, now))]);
    let ours = PeerId([0; 20]);
    let r = admit(
        &peers,
        &HashSet::new(),
        LIMITS,
        &ours,
        &reg("10.0.0.9:1", 7),
        now,
    );
    assert_eq!(r, Err(Refused::PeerIdTaken));
    let r = admit(
        &peers,
        &HashSet::new(),
        LIMITS,
        &ours,
        &reg("10.0.0.9:1", 0),
        now,
    );
    assert_eq!(r, Err(Refused::SelfConnection));
}

/// We dial a peer at one of its addresses while it is connected to us
/// from another (same host, LSD or a tracker naming its other address):
/// the usual tie-break decides, as on its side, instead of refusing
/// ours while it drops its own (which lost both connections).
#[test]
fn regression_simultaneous_open_across_addresses_keeps_one_connection() {
    let now = Instant::now();
    let peers = HashMap::from([(1, entry("127.0.0.1:5000", 7, now))]);
    let mut r = reg("192.0.2.2:6881", 7);
    r.outgoing = true;
    // Ours is lower: keep the connection we opened.
    let low = PeerId([0; 20]);
    let got = admit(&peers, &HashSet::new(), LIMITS, &low, &r, now);
    assert_eq!(got, Ok(Admission::Replace(1)));
    assert!(keep_new_connection(&low, &PeerId([7; 20]), true, false));
    // Ours is higher: keep theirs.
    let high = PeerId([9; 20]);
    let got = admit(&peers, &HashSet::new(), LIMITS, &high, &r, now);
    assert_eq!(got, Err(Refused::Duplicate));
    // An incoming stranger claiming the id is still refused.
    let stranger = reg("192.0.2.2:6881", 7);
    let got = admit(&peers, &HashSet::new(), LIMITS, &low, &stranger, now);
    assert_eq!(got, Err(Refused::PeerIdTaken));
}

/// A uTP peer SIGKILLed and restarted on the same port dials again
/// (a new peer id) while its dead connection still holds the IP's one
/// slot: the new connection replaces it instead of being refused (it
/// then waited out the stale one and its own 15 s redial back-off).
#[test]
fn regression_a_restarted_utp_peer_replaces_its_dead_connection() {
    let now = Instant::now();
    let mut old = entry("10.0.0.1:6881", 1, now);
    old.link.transport = crate::peer::transport::Transport::Utp;
    let peers = HashMap::from([(1, old)]);
    let ours = PeerId([0; 20]);
    let mut r = reg("10.0.0.1:6881", 2);
    r.link.transport = crate::peer::transport::Transport::Utp;
    let got = admit(&peers, &HashSet::new(), LIMITS, &ours, &r, now);
    assert_eq!(got, Ok(Admission::Replace(1)));
    // Another port of that IP is another socket: still one per IP.
    let mut other = reg("10.0.0.1:6882", 2);
    other.link.transport = crate::peer::transport::Transport::Utp;
    let got = admit(&peers, &HashSet::new(), LIMITS, &ours, &other, now);
    assert_eq!(got, Err(Refused::PerIpLimit));
    // So is the same port over the other transport.
    let tcp = reg("10.0.0.1:6881", 2);
    let got = admit(&peers, &HashSet::new(), LIMITS, &ours, &tcp, now);
    assert_eq!(got, Err(Refused::PerIpLimit));
}

#[test]
fn banned_addresses_are_refused() {
    let now = Instant::now();
    let banned = HashSet::from(["10.0.0.5".parse().unwrap()]);
    let r = admit(
        &HashMap::new(),
        &banned,
        LIMITS,
        &PeerId([0; 20]),
        &reg("10.0.0.5:1", 5),
        now,
    );
    assert_eq!(r, Err(Refused::Banned));
}

#[test]
fn regression_idle_peers_cannot_hold_every_slot() {
    let t0 = Instant::now();
    let peers: HashMap<PeerKey, PeerEntry> = (1..=3)
        .map(|i| (i, entry(&format!("10.0.0.{i}:1"), i as u8, t0)))
        .collect();
    let ours = PeerId([0; 20]);
    let newcomer = reg("10.0.1.1:1", 99);
    // Full, and nobody has been useless for long yet.
    let soon = t0 + Duration::from_secs(5);
    let r = admit(&peers, &HashSet::new(), LIMITS, &ours, &newcomer, soon);
    assert_eq!(r, Err(Refused::Full));
    // A minute later the idlers make room, longest-idle first.
    let mut peers = peers;
    peers.get_mut(&2).unwrap().last_useful = t0 + Duration::from_secs(30);
    peers.get_mut(&3).unwrap().last_useful = t0 + Duration::from_secs(61);
    let later = t0 + Duration::from_secs(100);
    let r = admit(&peers, &HashSet::new(), LIMITS, &ours, &newcomer, later);
    assert_eq!(r, Ok(Admission::Replace(1)));
}
