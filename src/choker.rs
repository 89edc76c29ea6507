//! Who we upload to: BEP 3's tit-for-tat with an optimistic unchoke.
//!
//! Every round (10 s, or sooner when a peer's interest changes) the
//! `slots` interested peers with the best rate are unchoked: while leeching,
//! the rate at which they send *to us* (reward those who give); while
//! seeding, the rate at which they take from us (serve the fastest, so the
//! data spreads). One more interested peer is unchoked optimistically and
//! rotated every 30 s, so newcomers get a chance to prove themselves.
//!
//! Against peers that hog slots: equal rates favour the newest peer, the
//! optimistic slot goes to the newest
//! peer that has not had it yet (an honest newcomer is not stuck behind a
//! crowd of earlier idlers), and a holder that has taken nothing from us
//! for [`WASTED_AFTER`] loses it at the next round instead of after 30 s.
//!
//! Pure: rates and `now` come in, a set of peers to unchoke comes out.

use crate::picker::PeerKey;
use rand::rngs::SmallRng;
use rand::{Rng, SeedableRng};
use std::collections::HashSet;
use std::time::{Duration, Instant};

/// How often the optimistic slot moves to another peer.
pub const OPTIMISTIC_ROTATION: Duration = Duration::from_secs(30);

/// An optimistic holder taking nothing from us for this long is replaced.
pub const WASTED_AFTER: Duration = Duration::from_secs(10);

/// What the choker needs to know about one connected peer.
#[derive(Debug, Clone, Copy)]
pub struct Candidate {
    /// The peer.
    pub key: PeerKey,
    /// Whether it wants data from us.
    pub interested: bool,
    /// Bytes/s that count for this peer (see module doc).
    pub rate: u64,
    /// Bytes/s it takes from us, to spot a slot it wastes.
    pub up_rate: u64,
}

/// Unchoke decisions for one torrent.
pub struct Choker {
    slots: usize,
    optimistic: Option<PeerKey>,
    rotated_at: Option<Instant>,
    /// Peers that have had the optimistic slot in this cycle.
    tried: HashSet<PeerKey>,
    rng: SmallRng,
}

impl Choker {
    /// A choker with `slots` regular upload slots (plus one optimistic).
    pub fn new(slots: usize, seed: u64) -> Self {
        Choker {
            slots,
            optimistic: None,
            rotated_at: None,
            tried: HashSet::new(),
            rng: SmallRng::seed_from_u64(seed),
        }
    }

    /// The peers to unchoke now; everyone else is choked.
    pub fn decide(&mut self, peers: &[Candidate], now: Instant) -> HashSet<PeerKey> {
        let mut interested: Vec<&Candidate> = peers.iter().filter(|p| p.interested).collect();
        // Equal rates (typically zero: nobody has proved anything yet) go
        // to the newest connection, keys growing with connection order: a
        // crowd of early peers that take nothing cannot hold every slot
        // against a newcomer. The order is stable, so unchokes do not flap.
        interested.sort_by(|a, b| b.rate.cmp(&a.rate).then(b.key.cmp(&a.key)));
        let mut unchoke: HashSet<PeerKey> =
            interested.iter().take(self.slots).map(|p| p.key).collect();
        let others: Vec<PeerKey> = interested
            .iter()
            .map(|p| p.key)
            .filter(|k| !unchoke.contains(k))
            .collect();
        let held = self
            .rotated_at
            .map(|t| now.saturating_duration_since(t))
            .unwrap_or(Duration::MAX);
        let wasted = held >= WASTED_AFTER
            && self
                .optimistic
                .and_then(|k| peers.iter().find(|p| p.key == k))
                .is_some_and(|p| p.up_rate == 0);
        let due = held >= OPTIMISTIC_ROTATION || wasted;
        let current_ok = self.optimistic.is_some_and(|k| others.contains(&k));
        if (due || !current_ok) && !others.is_empty() {
            self.tried.retain(|k| others.contains(k));
            // The newest peer that has not had the slot yet; when all have,
            // a new cycle, at random, avoiding the current holder.
            let untried = others
                .iter()
                .copied()
                .filter(|k| !self.tried.contains(k))
                .max();
            let pick = match untried {
                Some(k) => k,
                None => {
                    self.tried.clear();
                    let pool: Vec<PeerKey> = others
                        .iter()
                        .copied()
                        .filter(|&k| others.len() == 1 || Some(k) != self.optimistic)
                        .collect();
                    pool.get(self.rng.random_range(0..pool.len().max(1)))
                        .copied()
                        .unwrap_or(others[0])
                }
            };
            self.tried.insert(pick);
            self.optimistic = Some(pick);
            self.rotated_at = Some(now);
        } else if others.is_empty() {
            self.optimistic = None;
        }
        if let Some(k) = self.optimistic {
            unchoke.insert(k);
        }
        unchoke
    }

    /// Between rounds: interested peers to unchoke at once because regular
    /// slots are free, newest first, as libtorrent does. Without this a
    /// peer that turns interested just after a round (or reconnects, when
    /// a duplicate connection replaces a working one) waits for the next
    /// round while slots stand empty. It only ever fills empty slots, so a
    /// peer gains nothing it would not get at the next round, which
    /// re-decides everything. `unchoked` is who is unchoked now.
    pub fn fill_free_slots(
        &self,
        peers: &[Candidate],
        unchoked: &HashSet<PeerKey>,
    ) -> Vec<PeerKey> {
        let held = unchoked
            .iter()
            .filter(|k| Some(**k) != self.optimistic)
            .count();
        let mut waiting: Vec<PeerKey> = peers
            .iter()
            .filter(|p| p.interested && !unchoked.contains(&p.key))
            .map(|p| p.key)
            .collect();
        waiting.sort_unstable_by(|a, b| b.cmp(a));
        waiting.truncate(self.slots.saturating_sub(held));
        waiting
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(key: PeerKey, interested: bool, rate: u64) -> Candidate {
        Candidate {
            key,
            interested,
            rate,
            up_rate: 1,
        }
    }

    #[test]
    fn best_rates_plus_one_optimistic() {
        let mut ch = Choker::new(2, 1);
        let peers = [
            c(1, true, 100),
            c(2, true, 500),
            c(3, true, 300),
            c(4, false, 9999),
            c(5, true, 0),
        ];
        let u = ch.decide(&peers, Instant::now());
        assert!(u.contains(&2) && u.contains(&3));
        assert!(!u.contains(&4), "uninterested peers are never unchoked");
        assert_eq!(u.len(), 3);
        let opt = *u.iter().find(|k| **k != 2 && **k != 3).unwrap();
        assert!(opt == 1 || opt == 5);
    }

    /// A peer interested after a round gets a free slot at once; a full
    /// house (regular slots; the optimistic one does not count) admits
    /// nobody until the next round.
    #[test]
    fn free_slots_are_filled_between_rounds() {
        let mut ch = Choker::new(2, 1);
        let t0 = Instant::now();
        let u = ch.decide(&[c(1, true, 100), c(2, false, 0)], t0);
        assert_eq!(u, HashSet::from([1]));
        // 2 and 3 turn interested; one regular slot is free: the newest.
        let now = [
            c(1, true, 100),
            c(2, true, 0),
            c(3, true, 0),
            c(4, false, 0),
        ];
        assert_eq!(ch.fill_free_slots(&now, &u), vec![3]);
        // Both regular slots held: nobody, whoever else is interested.
        let full = HashSet::from([1, 3]);
        assert!(ch.fill_free_slots(&now, &full).is_empty());
        // The optimistic holder does not take a regular slot.
        let u = ch.decide(&[c(1, true, 100), c(2, true, 50), c(3, true, 0)], t0);
        assert_eq!(u, HashSet::from([1, 2, 3]));
        let mut later = vec![c(1, true, 100), c(3, true, 0), c(5, true, 0)];
        later.push(c(2, false, 0));
        let without_2: HashSet<PeerKey> = HashSet::from([1, 3]);
        assert_eq!(ch.optimistic, Some(3));
        assert_eq!(ch.fill_free_slots(&later, &without_2), vec![5]);
    }

    #[test]
    fn everyone_unchoked_when_slots_suffice() {
        let mut ch = Choker::new(4, 1);
        let u = ch.decide(&[c(1, true, 0), c(2, true, 0)], Instant::now());
        assert_eq!(u.len(), 2);
    }

    #[test]
    fn optimistic_slot_rotates_every_30s() {
        let mut ch = Choker::new(1, 42);
        let peers = [
            c(1, true, 1000),
            c(2, true, 0),
            c(3, true, 0),
            c(4, true, 0),
        ];
        let t0 = Instant::now();
        let first = ch.decide(&peers, t0);
        let opt0 = ch.optimistic.unwrap();
        assert!(first.contains(&1) && first.contains(&opt0));
        // Within the period it stays put.
        ch.decide(&peers, t0 + Duration::from_secs(10));
        assert_eq!(ch.optimistic, Some(opt0));
        // After the period it moves to another peer.
        ch.decide(&peers, t0 + OPTIMISTIC_ROTATION);
        assert_ne!(ch.optimistic, Some(opt0));
    }

    #[test]
    fn optimistic_holder_that_loses_interest_is_replaced() {
        let mut ch = Choker::new(1, 3);
        let t0 = Instant::now();
        ch.decide(&[c(1, true, 9), c(2, true, 0)], t0);
        assert_eq!(ch.optimistic, Some(2));
        let u = ch.decide(&[c(1, true, 9), c(2, false, 0), c(3, true, 0)], t0);
        assert_eq!(ch.optimistic, Some(3));
        assert!(!u.contains(&2));
    }

    #[test]
    fn regression_newcomer_gets_the_slot_from_a_crowd_of_idlers() {
        // 200 early peers take nothing; an honest peer arrives last.
        let mut ch = Choker::new(4, 7);
        let t0 = Instant::now();
        let mut peers: Vec<Candidate> = (1..=200)
            .map(|k| Candidate {
                up_rate: 0,
                ..c(k, true, 0)
            })
            .collect();
        ch.decide(&peers, t0);
        let idler = ch.optimistic.unwrap();
        peers.push(Candidate {
            up_rate: 0,
            ..c(201, true, 0)
        });
        // Its interest triggers a round: the idler has wasted 10 s.
        let u = ch.decide(&peers, t0 + WASTED_AFTER);
        assert_ne!(ch.optimistic, Some(idler));
        assert!(u.contains(&201), "the newest untried peer gets the slot");
    }
}
