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
        if known.len() >= MAX_KNOWN_PEERS {
            break;
        }
        if a.port() == 0 || (a.port() == listen_port && is_local(a.ip(), bind)) {
            continue;
        }
        known.entry(a).or_insert_with(|| Known {
            source,
            utp_first: flags & FLAG_UTP != 0,
            seed: flags & FLAG_SEED != 0,
            ..Known::default()
        });
    }
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
}
