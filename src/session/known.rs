//! A torrent's address book: every peer address heard of, who named it,
//! what we learned by dialling it, and when it may be dialled again.
//! Pure: the torrent's loop owns the map and passes the clock in.

use crate::peer::pex::{FLAG_SEED, FLAG_UTP};
use crate::peer::transport::Transport;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::time::Duration;
use tokio::time::Instant;

/// Candidate addresses remembered; more are dropped.
pub const MAX_KNOWN_PEERS: usize = 4000;

/// Wait before redialling an address whose peer turned out to be
/// connected already (through a connection it opened).
pub const DUPLICATE_RETRY: Duration = Duration::from_secs(300);
/// An address that turned out to be our own (the handshake carried our
/// peer id: a tracker or PEX handed us back to ourselves) is not dialled
/// again for this long.
pub const OURSELVES_RETRY: Duration = Duration::from_secs(24 * 3600);
/// A dial that ended because `--interface` went down is tried again this
/// soon (dials wait while it stays down).
pub const BLOCKED_RETRY: Duration = Duration::from_secs(2);

/// The longest back-off after failed dials.
const MAX_BACKOFF: Duration = Duration::from_secs(600);

/// Where a candidate address came from, for the logs ("dialing A (from PEX)").
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum PeerSource {
    /// `--peer` or the magnet's `x.pe`.
    #[default]
    Manual,
    /// A tracker's announce response.
    Tracker,
    /// A DHT lookup.
    Dht,
    /// Another peer's PEX message.
    Pex,
    /// A Local Service Discovery announce.
    Lsd,
}

impl PeerSource {
    /// Dials this source may start per second, and the burst it may save
    /// up; `None`: only the connection budgets limit it. The user's and a
    /// tracker's word are worth a dial each; a PEX message, a DHT node or
    /// an LSD sender may be lying (thousands of unreachable addresses), so
    /// each of those gets a trickle of dials, and the honest sources keep
    /// the half-open slots. libtorrent dials about 5 a second in all.
    fn dial_rate(self) -> Option<(f64, f64)> {
        match self {
            PeerSource::Manual | PeerSource::Tracker => None,
            PeerSource::Dht | PeerSource::Pex => Some((4.0, 8.0)),
            PeerSource::Lsd => Some((2.0, 4.0)),
        }
    }

    /// Which candidates are dialled first: what the user or a tracker
    /// named, then the local network, then the DHT, then hearsay.
    fn rank(self) -> u8 {
        match self {
            PeerSource::Manual => 0,
            PeerSource::Tracker => 1,
            PeerSource::Lsd => 2,
            PeerSource::Dht => 3,
            PeerSource::Pex => 4,
        }
    }

    /// The name logs and `--json` events use.
    pub fn label(self) -> &'static str {
        match self {
            PeerSource::Manual => "--peer",
            PeerSource::Tracker => "tracker",
            PeerSource::Dht => "DHT",
            PeerSource::Pex => "PEX",
            PeerSource::Lsd => "LSD",
        }
    }
}

impl std::fmt::Display for PeerSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// One address in the book.
#[derive(Debug, Default)]
pub struct Known {
    /// Who told us first.
    pub source: PeerSource,
    /// A dial or connection to this address is under way.
    pub dialing: bool,
    /// It had every piece last time (or PEX said it seeds): not worth
    /// dialing while we seed.
    pub seed: bool,
    /// Failed dials in a row.
    pub failures: u32,
    /// Not to be dialled before this.
    pub next_try: Option<Instant>,
    /// Last reached over uTP, or said by PEX to speak it: dial that first.
    pub utp_first: bool,
    /// A dial of ours reached a BitTorrent peer here once: dialled before
    /// addresses never tried or that only failed.
    pub reached: bool,
    /// Heard of only in a hybrid torrent's other swarm: dialled with that
    /// swarm's info-hash (a v2-only client knows no other).
    pub other_swarm: bool,
}

/// How a connection we dialled ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// Closed after working.
    Ok,
    /// Failed: back off.
    Failed,
    /// Closed because we both have everything.
    BothSeeds,
    /// Closed because we are connected to the peer another way (it dialled
    /// us from another port).
    Duplicate,
    /// Failed while `--interface` was down: not the peer's failure, so
    /// nothing is counted against it; tried again soon after.
    Blocked,
    /// The address is our own: we reached ourselves.
    Ourselves,
}

impl Known {
    /// Records how a dial ended (`transport`: what it connected over, if
    /// it did) and when to try again: 15 s, 30 s, 1 min … up to 10 min
    /// after failures; long for a peer we already have through its own
    /// connection.
    pub fn ended(&mut self, how: Ended, transport: Option<Transport>, now: Instant) {
        self.dialing = false;
        if let Some(t) = transport {
            self.utp_first = t == Transport::Utp;
        }
        self.seed = how == Ended::BothSeeds;
        if how == Ended::Blocked {
            self.next_try = Some(now + BLOCKED_RETRY);
            return;
        }
        if how == Ended::Ourselves {
            self.next_try = Some(now + OURSELVES_RETRY);
            return;
        }
        self.reached |= how != Ended::Failed;
        self.failures = if how == Ended::Failed {
            self.failures + 1
        } else {
            0
        };
        let wait = match how {
            Ended::Duplicate => DUPLICATE_RETRY,
            _ => Duration::from_secs(15u64 << self.failures.min(6)).min(MAX_BACKOFF),
        };
        self.next_try = Some(now + wait);
    }
}

/// Addresses from a source that says nothing more about them.
pub fn no_flags(addrs: Vec<SocketAddr>) -> Vec<(SocketAddr, u8)> {
    addrs.into_iter().map(|a| (a, 0)).collect()
}

/// Adds new addresses (up to [`MAX_KNOWN_PEERS`]) with their BEP 11 flags
/// (0 from sources other than PEX), remembering who named each first;
/// never our own. One the sender says speaks uTP is dialled over uTP first,
/// as libtorrent does (TCP stays the fallback); one it says is a seed is
/// not dialled while we seed. What we learned by dialling ourselves is
/// never overwritten by hearsay.
pub fn learn(
    known: &mut HashMap<SocketAddr, Known>,
    addrs: Vec<(SocketAddr, u8)>,
    source: PeerSource,
    listen_port: u16,
    bind: Option<IpAddr>,
) {
    for (a, flags) in addrs {
        if known.len() >= MAX_KNOWN_PEERS && !known.contains_key(&a) && !evict_for(known, source) {
            break;
        }
        if a.port() == 0 || (a.port() == listen_port && is_local(a.ip(), bind)) {
            continue;
        }
        // An LSD host's new port takes over its old entry's back-off.
        let mut backoff = (0, None);
        if source == PeerSource::Lsd && !known.contains_key(&a) {
            match lsd_replaces(known, a) {
                Some(b) => backoff = b,
                None => continue,
            }
        }
        known.entry(a).or_insert_with(|| Known {
            source,
            utp_first: flags & FLAG_UTP != 0,
            seed: flags & FLAG_SEED != 0,
            failures: backoff.0,
            next_try: backoff.1,
            ..Known::default()
        });
    }
}

/// Makes room in a full book for an address from `source` by dropping one
/// from a less trusted source (PEX before the DHT before LSD) that no dial
/// of ours ever reached and that is not being dialled, so a DHT or PEX
/// flood that filled the book first cannot keep out what a tracker or the
/// user names. Returns whether there is room now.
fn evict_for(known: &mut HashMap<SocketAddr, Known>, source: PeerSource) -> bool {
    let victim = known
        .iter()
        .filter(|(_, k)| !k.reached && !k.dialing && k.source.rank() > source.rank())
        .max_by_key(|(a, k)| (k.source.rank(), k.failures, **a))
        .map(|(a, _)| *a);
    match victim {
        Some(a) => {
            known.remove(&a);
            true
        }
        None => false,
    }
}

/// One LSD entry per sending host, as libtorrent keeps: a host announces
/// the one port it listens on, so a new port from the same address
/// replaces the entry it had (unless that one is being dialled or is
/// connected: then the new port waits for the next announce). Without
/// this, a flood of announces with a new port each made hundreds of
/// entries, and dials, for one address. The host's back-off goes with it:
/// a replaced entry whose dials failed hands its failures and its next
/// try to the new port, or a host naming a new port every second (as
/// fast as the LSD service takes its announces) was dialled every second.
/// Returns `None` if `a` may not go in, else the (failures, next try) it
/// starts with.
fn lsd_replaces(
    known: &mut HashMap<SocketAddr, Known>,
    a: SocketAddr,
) -> Option<(u32, Option<Instant>)> {
    let old = known
        .iter()
        .find(|(k, v)| k.ip() == a.ip() && v.source == PeerSource::Lsd)
        .map(|(k, v)| (*k, v.dialing, v.failures, v.next_try));
    match old {
        None => Some((0, None)),
        Some((_, true, ..)) => None,
        Some((k, false, failures, next_try)) => {
            known.remove(&k);
            Some(if failures > 0 {
                (failures, next_try)
            } else {
                (0, None)
            })
        }
    }
}

/// Per-source dial budgets (see `PeerSource::dial_rate`): token buckets
/// refilled by the clock the torrent's loop passes in.
#[derive(Debug, Default)]
pub struct DialPacer {
    /// Tokens per source, indexed by [`PeerSource::rank`].
    tokens: [f64; 5],
    last: Option<Instant>,
}

impl DialPacer {
    fn refill(&mut self, now: Instant) {
        let elapsed = match self.last {
            Some(t) => now.saturating_duration_since(t).as_secs_f64(),
            // A new torrent starts with every burst full.
            None => f64::INFINITY,
        };
        self.last = Some(now);
        for source in [PeerSource::Dht, PeerSource::Pex, PeerSource::Lsd] {
            if let Some((rate, burst)) = source.dial_rate() {
                let t = &mut self.tokens[source.rank() as usize];
                *t = (*t + rate * elapsed).min(burst);
            }
        }
    }

    /// Whether `source` may start a dial now.
    fn has(&self, source: PeerSource) -> bool {
        source.dial_rate().is_none() || self.tokens[source.rank() as usize] >= 1.0
    }

    /// Spends one dial of `source`'s budget.
    fn take(&mut self, source: PeerSource) {
        if source.dial_rate().is_some() {
            self.tokens[source.rank() as usize] -= 1.0;
        }
    }
}

/// The addresses to dial now, best first, at most `room`: among those
/// `eligible` lets through (connection rules the caller knows; it is asked
/// only about addresses whose source has budget left, and each it lets
/// through is dialled), ones a dial
/// of ours reached before, then by fewest failures, then by source (the
/// user's and trackers' first, PEX last), each source within its dial
/// budget. Returns them and whether due candidates were left for want of
/// a source's budget (the caller looks again shortly, not only at the
/// next event).
pub fn dial_order(
    known: &HashMap<SocketAddr, Known>,
    pacer: &mut DialPacer,
    now: Instant,
    room: usize,
    mut eligible: impl FnMut(&SocketAddr, &Known) -> bool,
) -> (Vec<SocketAddr>, bool) {
    let mut due: Vec<(&SocketAddr, &Known)> = known
        .iter()
        .filter(|(_, k)| !k.dialing && k.next_try.is_none_or(|t| t <= now))
        .collect();
    due.sort_unstable_by_key(|(a, k)| (!k.reached, k.failures, k.source.rank(), **a));
    pacer.refill(now);
    let mut out = Vec::new();
    let mut held_back = false;
    for (a, k) in due {
        if out.len() >= room {
            break;
        }
        if !pacer.has(k.source) {
            held_back = true;
            continue;
        }
        if !eligible(a, k) {
            continue;
        }
        pacer.take(k.source);
        out.push(*a);
    }
    (out, held_back)
}

/// Whether `ip` is this host as far as our own listen address goes.
fn is_local(ip: IpAddr, bind: Option<IpAddr>) -> bool {
    match bind {
        Some(b) => ip == b,
        None => ip.is_loopback() || ip.is_unspecified(),
    }
}

/// When an idle seeding torrent must look again: the first redial of a
/// peer that was not a seed, or the end of the seed time.
pub fn next_wake(
    known: &HashMap<SocketAddr, Known>,
    seed_deadline: Option<Instant>,
    now: Instant,
) -> Option<Instant> {
    known
        .values()
        .filter(|k| !k.seed && !k.dialing)
        .filter_map(|k| k.next_try)
        // One already due was not dialled for want of room: an event
        // (a connection ending) frees room, not a timer.
        .filter(|&t| t > now)
        .chain(seed_deadline)
        .min()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::peer::pex::FLAG_REACHABLE;

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    /// PEX flags decide the first transport and mark seeds; other sources
    /// say nothing, and a second mention changes nothing.
    #[test]
    fn pex_flags_set_utp_first_and_seed() {
        let mut book = HashMap::new();
        let (utp, seed, plain) = (addr("10.0.0.1:1"), addr("10.0.0.2:1"), addr("10.0.0.3:1"));
        learn(
            &mut book,
            vec![
                (utp, FLAG_UTP | FLAG_REACHABLE),
                (seed, FLAG_SEED),
                (plain, 0),
            ],
            PeerSource::Pex,
            6881,
            None,
        );
        assert!(book[&utp].utp_first && !book[&utp].seed);
        assert!(book[&seed].seed && !book[&seed].utp_first);
        assert!(!book[&plain].utp_first && !book[&plain].seed);
        learn(
            &mut book,
            no_flags(vec![utp]),
            PeerSource::Tracker,
            6881,
            None,
        );
        assert_eq!(book[&utp].source, PeerSource::Pex, "first source kept");
        assert!(book[&utp].utp_first, "hearsay kept");
    }

    /// What a dial taught us overrides what PEX said.
    #[test]
    fn a_dial_overrides_the_pex_hint() {
        let now = Instant::now();
        let mut k = Known {
            utp_first: true,
            dialing: true,
            ..Known::default()
        };
        k.ended(Ended::Ok, Some(Transport::Tcp), now);
        assert!(!k.utp_first && !k.dialing);
        k.ended(Ended::Failed, None, now);
        assert!(!k.utp_first, "a failed dial says nothing of transports");
    }

    #[test]
    fn failures_back_off_up_to_ten_minutes() {
        let now = Instant::now();
        let mut k = Known::default();
        let mut waits = Vec::new();
        for _ in 0..8 {
            k.ended(Ended::Failed, None, now);
            waits.push(k.next_try.unwrap() - now);
        }
        let secs: Vec<u64> = waits.iter().map(|d| d.as_secs()).collect();
        assert_eq!(secs, [30, 60, 120, 240, 480, 600, 600, 600]);
        k.ended(Ended::Ok, None, now);
        assert_eq!(
            (k.failures, k.next_try),
            (0, Some(now + Duration::from_secs(15)))
        );
        k.ended(Ended::Duplicate, None, now);
        assert_eq!(k.next_try, Some(now + DUPLICATE_RETRY));
    }

    #[test]
    fn regression_our_own_address_from_a_tracker_is_not_redialled() {
        let now = Instant::now();
        let mut k = Known {
            dialing: true,
            ..Known::default()
        };
        k.ended(Ended::Ourselves, None, now);
        assert!(!k.dialing);
        assert_eq!(k.next_try, Some(now + OURSELVES_RETRY));
        assert!(!k.reached, "reaching ourselves is not reaching a peer");
    }

    #[test]
    fn a_dial_cut_by_a_blocked_interface_counts_nothing_against_the_peer() {
        let now = Instant::now();
        let mut k = Known::default();
        k.ended(Ended::Failed, None, now);
        let before = (k.failures, k.reached);
        k.dialing = true;
        k.ended(Ended::Blocked, None, now);
        assert_eq!(
            (k.failures, k.reached, k.dialing),
            (before.0, before.1, false)
        );
        assert_eq!(k.next_try, Some(now + BLOCKED_RETRY));
    }

    #[test]
    fn our_own_address_and_port_zero_are_never_learned() {
        let mut book = HashMap::new();
        let ours = addr("127.0.0.1:6881");
        let other_port = addr("127.0.0.1:6882");
        learn(
            &mut book,
            no_flags(vec![ours, addr("10.0.0.1:0"), other_port]),
            PeerSource::Dht,
            6881,
            None,
        );
        assert_eq!(book.keys().collect::<Vec<_>>(), [&other_port]);
        let bound: IpAddr = "10.0.0.9".parse().unwrap();
        learn(
            &mut book,
            no_flags(vec![ours]),
            PeerSource::Dht,
            6881,
            Some(bound),
        );
        assert!(
            book.contains_key(&ours),
            "bound elsewhere, loopback is another host"
        );
    }

    #[test]
    fn the_book_is_bounded() {
        let mut book = HashMap::new();
        let many: Vec<SocketAddr> = (0..MAX_KNOWN_PEERS as u32 + 500)
            .map(|i| SocketAddr::from((std::net::Ipv4Addr::from(0x0a00_0000 + i), 1)))
            .collect();
        learn(&mut book, no_flags(many), PeerSource::Tracker, 6881, None);
        assert_eq!(book.len(), MAX_KNOWN_PEERS);
    }

    /// Seeds and dials under way never wake an idle seeder; a due time
    /// already past does not either.
    #[test]
    fn next_wake_is_the_first_future_redial_or_the_seed_deadline() {
        let now = Instant::now();
        let mut book = HashMap::new();
        let at = |s| Some(now + Duration::from_secs(s));
        book.insert(
            addr("10.0.0.1:1"),
            Known {
                next_try: at(30),
                seed: true,
                ..Known::default()
            },
        );
        book.insert(
            addr("10.0.0.2:1"),
            Known {
                next_try: at(40),
                dialing: true,
                ..Known::default()
            },
        );
        book.insert(
            addr("10.0.0.3:1"),
            Known {
                next_try: Some(now),
                ..Known::default()
            },
        );
        assert_eq!(next_wake(&book, None, now), None);
        book.insert(
            addr("10.0.0.4:1"),
            Known {
                next_try: at(50),
                ..Known::default()
            },
        );
        assert_eq!(next_wake(&book, None, now), at(50));
        assert_eq!(next_wake(&book, at(20), now), at(20));
    }

    /// Candidates the user or a tracker named are dialled before hearsay,
    /// and one a dial of ours reached before goes ahead of all of them.
    #[test]
    fn dial_order_puts_reached_then_trusted_sources_first() {
        let now = Instant::now();
        let mut book = HashMap::new();
        learn(
            &mut book,
            no_flags(vec![addr("10.0.0.5:1")]),
            PeerSource::Pex,
            6881,
            None,
        );
        learn(
            &mut book,
            no_flags(vec![addr("10.0.0.4:1")]),
            PeerSource::Dht,
            6881,
            None,
        );
        learn(
            &mut book,
            no_flags(vec![addr("10.0.0.3:1")]),
            PeerSource::Tracker,
            6881,
            None,
        );
        learn(
            &mut book,
            no_flags(vec![addr("10.0.0.2:1")]),
            PeerSource::Manual,
            6881,
            None,
        );
        learn(
            &mut book,
            no_flags(vec![addr("10.0.0.9:1")]),
            PeerSource::Pex,
            6881,
            None,
        );
        let back = book.get_mut(&addr("10.0.0.9:1")).unwrap();
        back.ended(Ended::Ok, None, now - Duration::from_secs(60));
        let failed = book.get_mut(&addr("10.0.0.2:1")).unwrap();
        failed.ended(Ended::Failed, None, now - Duration::from_secs(60));
        let (order, held) = dial_order(&book, &mut DialPacer::default(), now, 10, |_, _| true);
        let want: Vec<SocketAddr> = [
            "10.0.0.9:1",
            "10.0.0.3:1",
            "10.0.0.4:1",
            "10.0.0.5:1",
            "10.0.0.2:1",
        ]
        .iter()
        .map(|a| addr(a))
        .collect();
        assert_eq!(order, want);
        assert!(!held);
        // `room` and `eligible` bound the list.
        let (two, _) = dial_order(&book, &mut DialPacer::default(), now, 2, |a, _| {
            *a != addr("10.0.0.3:1")
        });
        assert_eq!(two, vec![addr("10.0.0.9:1"), addr("10.0.0.4:1")]);
    }

    /// Regression: thousands of unreachable addresses from PEX (or a DHT
    /// node) were dialled as fast as the half-open budget freed up (14 a
    /// second), ahead of or beside the tracker's real seeder. Now each
    /// such source gets a burst and then a trickle of dials, and a
    /// tracker's address still goes at once.
    #[test]
    fn regression_a_flooding_source_gets_a_trickle_of_dials() {
        let t0 = Instant::now();
        let mut book = HashMap::new();
        let flood: Vec<SocketAddr> = (0..1000u32)
            .map(|i| SocketAddr::from(([10, 1, (i >> 8) as u8, i as u8], 6881)))
            .collect();
        learn(&mut book, no_flags(flood), PeerSource::Pex, 6881, None);
        let mut pacer = DialPacer::default();
        let (first, held) = dial_order(&book, &mut pacer, t0, 100, |_, _| true);
        assert_eq!(first.len(), 8, "the burst");
        assert!(held, "the rest wait for the budget");
        for a in &first {
            book.get_mut(a).unwrap().dialing = true;
        }
        // The tracker's seeder arrives: dialled at once, PEX still paced.
        learn(
            &mut book,
            no_flags(vec![addr("10.9.9.9:1")]),
            PeerSource::Tracker,
            6881,
            None,
        );
        let (next, _) = dial_order(&book, &mut pacer, t0, 100, |_, _| true);
        assert_eq!(next, vec![addr("10.9.9.9:1")]);
        // Ten seconds on, PEX has had four more a second, not hundreds.
        let mut dialled = first.len();
        for s in 1..=10 {
            let (more, _) = dial_order(
                &book,
                &mut pacer,
                t0 + Duration::from_secs(s),
                100,
                |a, _| a.port() == 6881,
            );
            for a in &more {
                book.get_mut(a).unwrap().dialing = true;
            }
            dialled += more.len();
        }
        assert_eq!(dialled, 8 + 40);
    }

    /// Regression: an LSD flood from one host, each announce with another
    /// port, made an address-book entry (and a dial) per port: 500-960
    /// dials in under a minute where libtorrent made 80. Now a host has
    /// one LSD entry, its latest port, and the one being dialled is kept.
    #[test]
    fn regression_an_lsd_flood_from_one_host_is_one_entry() {
        let mut book = HashMap::new();
        for port in 1000..1500u16 {
            let a = SocketAddr::from(([192, 168, 1, 7], port));
            learn(&mut book, no_flags(vec![a]), PeerSource::Lsd, 6881, None);
        }
        assert_eq!(book.len(), 1);
        assert!(book.contains_key(&addr("192.168.1.7:1499")));
        book.get_mut(&addr("192.168.1.7:1499")).unwrap().dialing = true;
        learn(
            &mut book,
            no_flags(vec![addr("192.168.1.7:2000")]),
            PeerSource::Lsd,
            6881,
            None,
        );
        assert_eq!(
            book.keys().collect::<Vec<_>>(),
            vec![&addr("192.168.1.7:1499")]
        );
        // Another host, and the same host named by a tracker, are their own.
        learn(
            &mut book,
            no_flags(vec![addr("192.168.1.8:1")]),
            PeerSource::Lsd,
            6881,
            None,
        );
        learn(
            &mut book,
            no_flags(vec![addr("192.168.1.7:3000")]),
            PeerSource::Tracker,
            6881,
            None,
        );
        assert_eq!(book.len(), 3);
    }

    /// Regression: a new port replaced its host's LSD entry with a fresh
    /// one, so a host whose ports refused every dial and that named a new
    /// one each second was dialled each second. Now the new port keeps the
    /// host's back-off; a host whose last dial worked is not held back.
    #[test]
    fn regression_a_new_lsd_port_keeps_the_host_s_back_off() {
        let now = Instant::now();
        let mut book = HashMap::new();
        let lsd = |book: &mut HashMap<SocketAddr, Known>, a: &str| {
            learn(book, no_flags(vec![addr(a)]), PeerSource::Lsd, 6881, None);
        };
        lsd(&mut book, "192.168.1.7:1000");
        let k = book.get_mut(&addr("192.168.1.7:1000")).unwrap();
        k.dialing = true;
        k.ended(Ended::Failed, None, now);
        lsd(&mut book, "192.168.1.7:1001");
        let k = &book[&addr("192.168.1.7:1001")];
        assert_eq!(
            (k.failures, k.next_try),
            (1, Some(now + Duration::from_secs(30)))
        );
        let mut pacer = DialPacer::default();
        let (due, _) = dial_order(
            &book,
            &mut pacer,
            now + Duration::from_secs(1),
            10,
            |_, _| true,
        );
        assert!(
            due.is_empty(),
            "the new port is not due before the host's back-off ends"
        );
        // Failing again doubles it, whatever the port.
        let k = book.get_mut(&addr("192.168.1.7:1001")).unwrap();
        k.ended(Ended::Failed, None, now);
        lsd(&mut book, "192.168.1.7:1002");
        assert_eq!(book[&addr("192.168.1.7:1002")].failures, 2);
        // A host last reached fine starts its new port afresh.
        lsd(&mut book, "192.168.1.9:1000");
        let k = book.get_mut(&addr("192.168.1.9:1000")).unwrap();
        k.ended(Ended::Ok, None, now);
        lsd(&mut book, "192.168.1.9:1001");
        let k = &book[&addr("192.168.1.9:1001")];
        assert_eq!((k.failures, k.next_try), (0, None));
    }

    /// Regression: DHT nodes answering with thousands of unreachable
    /// peers filled the address book first come, first kept, and the
    /// tracker's seeder that came later was dropped. Now a full book makes
    /// room for a better source by dropping its least trusted untried entry.
    #[test]
    fn regression_a_full_book_makes_room_for_a_tracker_s_peer() {
        let mut book = HashMap::new();
        let flood: Vec<SocketAddr> = (0..MAX_KNOWN_PEERS as u32 + 500)
            .map(|i| SocketAddr::from(([10, 2, (i >> 8) as u8, i as u8], 6881)))
            .collect();
        learn(&mut book, no_flags(flood), PeerSource::Dht, 6881, None);
        assert_eq!(book.len(), MAX_KNOWN_PEERS);
        let more_pex = vec![addr("10.3.0.1:1")];
        learn(&mut book, no_flags(more_pex), PeerSource::Pex, 6881, None);
        assert!(
            !book.contains_key(&addr("10.3.0.1:1")),
            "PEX ranks below the DHT"
        );
        learn(
            &mut book,
            no_flags(vec![addr("10.9.9.9:1")]),
            PeerSource::Tracker,
            6881,
            None,
        );
        assert!(book.contains_key(&addr("10.9.9.9:1")));
        assert_eq!(book.len(), MAX_KNOWN_PEERS);
    }
}
