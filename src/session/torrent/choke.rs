//! When the torrent's unchoke set is recomputed: every
//! [`CHOKE_INTERVAL`], and early (at most once per [`MIN_CHOKE_GAP`]) when
//! a peer's interest changes. The decision itself is the pure
//! [`Choker`]'s; this only feeds it the peer table and applies its answer.

use crate::choker::{Candidate, Choker};
use crate::picker::PeerKey;
use crate::session::shared::{PeerCommand, PeerEntry, Shared};
use std::collections::{HashMap, HashSet};
use std::time::Duration;
use tokio::time::Instant;

/// How often the unchoke set is recomputed even when nothing changes.
const CHOKE_INTERVAL: Duration = Duration::from_secs(10);
/// Early rounds (a peer's interest changed) are at least this far apart.
const MIN_CHOKE_GAP: Duration = Duration::from_secs(1);
/// Regular upload slots (plus one optimistic).
const UPLOAD_SLOTS: usize = 4;

/// The choker and the times of its rounds.
pub(super) struct ChokeSchedule {
    choker: Choker,
    last_round: Instant,
    /// An early round was asked for within the gap: run it at a tick.
    round_pending: bool,
}

impl ChokeSchedule {
    pub(super) fn new() -> Self {
        ChokeSchedule {
            choker: Choker::new(UPLOAD_SLOTS, rand::random()),
            last_round: Instant::now() - CHOKE_INTERVAL,
            round_pending: false,
        }
    }

    /// A peer's interest changed: a round now, or (within the gap) free
    /// slots filled now and a round at a later tick. A round looks at
    /// every peer, so peers flipping their interest must not run one each.
    pub(super) fn on_interest_changed(&mut self, shared: &Shared) {
        if self.last_round.elapsed() >= MIN_CHOKE_GAP {
            rechoke(shared, &mut self.choker);
            self.last_round = Instant::now();
        } else {
            unchoke_free_slots(shared, &self.choker);
            self.round_pending = true;
        }
    }

    /// The regular round, or a pending early one, when due.
    pub(super) fn on_tick(&mut self, shared: &Shared, now: Instant) {
        let gap = now.duration_since(self.last_round);
        if gap >= CHOKE_INTERVAL || (self.round_pending && gap >= MIN_CHOKE_GAP) {
            rechoke(shared, &mut self.choker);
            self.last_round = now;
            self.round_pending = false;
        }
    }
}

/// What the choker sees of every connected peer.
fn choke_candidates(peers: &HashMap<PeerKey, PeerEntry>, seeding: bool) -> Vec<Candidate> {
    peers
        .iter()
        .map(|(k, p)| Candidate {
            key: *k,
            interested: p.interested,
            rate: if seeding { p.up_rate } else { p.down_rate },
            up_rate: p.up_rate,
        })
        .collect()
}

fn rechoke(shared: &Shared, choker: &mut Choker) {
    let seeding = shared.is_complete();
    let mut st = shared.lock();
    let candidates = choke_candidates(&st.peers, seeding);
    let unchoke = choker.decide(&candidates, std::time::Instant::now());
    for (k, p) in st.peers.iter_mut() {
        let choke = !unchoke.contains(k);
        if choke != p.choked && p.tx.try_send(PeerCommand::SetChoke(choke)).is_ok() {
            p.choked = choke;
        }
    }
}

/// Between rounds: unchokes interested peers into free slots at once.
fn unchoke_free_slots(shared: &Shared, choker: &Choker) {
    let seeding = shared.is_complete();
    let mut st = shared.lock();
    let candidates = choke_candidates(&st.peers, seeding);
    let unchoked: HashSet<PeerKey> = st
        .peers
        .iter()
        .filter(|(_, p)| !p.choked)
        .map(|(k, _)| *k)
        .collect();
    for k in choker.fill_free_slots(&candidates, &unchoked) {
        if let Some(p) = st.peers.get_mut(&k)
            && p.tx.try_send(PeerCommand::SetChoke(false)).is_ok()
        {
            p.choked = false;
        }
    }
}
