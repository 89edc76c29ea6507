//! The torrent's candidate peers and its outgoing connections: who is
//! known, from which source, who to dial next within which budgets, and
//! what became of each dial. The ranking and pacing rules are
//! `session::known`'s (pure); this owns the table and spawns the dials.

use super::discovery::SwarmOf;
use crate::id::InfoHash;
use crate::peer::conn::{self, Refused};
use crate::peer::state::PeerError;
use crate::peer::transport::Transport;
use crate::session::known::{DialPacer, Ended, Known, PeerSource, dial_order, learn, next_wake};
use crate::session::shared::{PeerEntry, Shared};
use crate::session::{Session, host};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::sync::mpsc;
use tokio::time::Instant;

/// Dial attempts running at once, in the whole process.
const MAX_HALF_OPEN: usize = 16;

/// A dial ended; with the transport it connected over, if it did.
pub(super) struct DialEnded {
    addr: SocketAddr,
    how: Ended,
    transport: Option<Transport>,
}

/// The candidates and the dials under way.
pub(super) struct Dials {
    known: HashMap<SocketAddr, Known>,
    /// Per-source dial budgets (see `known::dial_order`).
    pacer: DialPacer,
    /// Dials of this torrent under way.
    dialing: Arc<AtomicUsize>,
    /// Made at the first dial: a seed nobody dials from has none.
    ended: Option<(mpsc::Sender<DialEnded>, mpsc::Receiver<DialEnded>)>,
}

impl Dials {
    pub(super) fn new() -> Self {
        Dials {
            known: HashMap::new(),
            pacer: DialPacer::default(),
            dialing: Arc::new(AtomicUsize::new(0)),
            ended: None,
        }
    }

    /// Adds what a source told us (our own address left out). An address
    /// heard of only in a hybrid's other swarm is dialled with that
    /// swarm's hash; once the main swarm names it too, with the main one.
    pub(super) fn learn(
        &mut self,
        addrs: Vec<(SocketAddr, u8)>,
        source: PeerSource,
        swarm: SwarmOf,
        listen_port: u16,
        bind: Option<IpAddr>,
    ) {
        let named: Vec<SocketAddr> = addrs.iter().map(|(a, _)| *a).collect();
        let new: HashSet<SocketAddr> = match swarm {
            SwarmOf::Other => named
                .iter()
                .filter(|a| !self.known.contains_key(a))
                .copied()
                .collect(),
            SwarmOf::Main => HashSet::new(),
        };
        learn(&mut self.known, addrs, source, listen_port, bind);
        for a in named {
            if let Some(k) = self.known.get_mut(&a) {
                match swarm {
                    SwarmOf::Main => k.other_swarm = false,
                    SwarmOf::Other => k.other_swarm |= new.contains(&a),
                }
            }
        }
    }

    /// Candidate addresses known.
    pub(super) fn known(&self) -> usize {
        self.known.len()
    }

    /// Whether a dial is under way.
    pub(super) fn dialing(&self) -> bool {
        self.dialing.load(Ordering::Relaxed) > 0
    }

    /// When the next candidate is due for a redial (an idle seed sleeps
    /// until then, or until `also`).
    pub(super) fn next_wake(&self, also: Option<Instant>) -> Option<Instant> {
        next_wake(&self.known, also, Instant::now())
    }

    /// The next dial that ended; pending forever before the first dial.
    pub(super) async fn next_ended(&mut self) -> Option<DialEnded> {
        match self.ended.as_mut() {
            Some((_, rx)) => rx.recv().await,
            None => None,
        }
    }

    /// Records how a dial (and the connection it made) ended.
    pub(super) fn on_ended(&mut self, e: DialEnded) {
        if let Some(k) = self.known.get_mut(&e.addr) {
            k.ended(e.how, e.transport, Instant::now());
        }
    }

    /// Dials the best candidates there is room for (see [`dial_order`]).
    /// Returns whether due candidates were left for want of their source's
    /// dial budget: the torrent must not go idle on them.
    pub(super) fn dial_some(
        &mut self,
        shared: &Arc<Shared>,
        session: &Session,
        max_peers: usize,
        max_per_ip: usize,
    ) -> bool {
        if shared.shutdown.is_cancelled() {
            return false;
        }
        // `--interface` is down: dials wait for it (they would only fail
        // and back off); the torrent keeps ticking to dial when it is back.
        if crate::iface::blocked() {
            return !self.known.is_empty();
        }
        let st = shared.lock();
        let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
        for p in st.peers.values() {
            *per_ip.entry(p.addr.ip()).or_insert(0) += 1;
        }
        // Where connected peers listen: a peer that dialled us is heard of
        // again (LSD, PEX, a tracker) at its listen address, and dialling
        // that would only open a duplicate of a working connection.
        let connected: HashSet<SocketAddr> = st
            .peers
            .values()
            .filter_map(PeerEntry::listen_addr)
            .collect();
        // A seed dials too (behind NAT that is its only way to upload), but
        // not peers that were seeds themselves.
        let seeding = st.picker.as_ref().is_some_and(|p| p.is_complete());
        let now = Instant::now();
        // This torrent's share, the process's room, and the half-open dials
        // of the whole process.
        let in_progress = self.dialing.load(Ordering::Relaxed);
        let process = &session.budget;
        let budget = max_peers
            .saturating_sub(st.peers.len() + in_progress)
            .min(process.room())
            .min(MAX_HALF_OPEN.saturating_sub(process.dialing.load(Ordering::Relaxed)));
        let (chosen, held_back) =
            dial_order(&self.known, &mut self.pacer, now, budget, |addr, k| {
                let ok = !connected.contains(addr)
                    && (!seeding || !k.seed)
                    && !st.banned.contains(&addr.ip())
                    && per_ip.get(&addr.ip()).copied().unwrap_or(0) < max_per_ip;
                if ok {
                    *per_ip.entry(addr.ip()).or_insert(0) += 1;
                }
                ok
            });
        drop(st);
        if chosen.is_empty() {
            return held_back;
        }
        let ended_tx = self
            .ended
            .get_or_insert_with(|| mpsc::channel(256))
            .0
            .clone();
        for addr in chosen {
            let Some(k) = self.known.get_mut(&addr) else {
                continue;
            };
            tracing::info!("dialing {addr} (from {})", k.source);
            k.dialing = true;
            self.dialing.fetch_add(1, Ordering::Relaxed);
            process.dialing.fetch_add(1, Ordering::Relaxed);
            // A hybrid's peer from its other swarm gets that swarm's hash.
            let swarm = match (k.other_swarm, shared.other_swarm()) {
                (true, Some(other)) => other,
                _ => shared.info_hash,
            };
            spawn_dial(
                Dial {
                    addr,
                    swarm,
                    source: k.source,
                    utp_first: k.utp_first,
                },
                shared.clone(),
                session,
                ended_tx.clone(),
                self.dialing.clone(),
            );
        }
        held_back
    }
}

/// What one dial is to do.
struct Dial {
    addr: SocketAddr,
    /// The info-hash to handshake with.
    swarm: InfoHash,
    source: PeerSource,
    utp_first: bool,
}

/// One dial, then the connection it made, as a task of the torrent.
fn spawn_dial(
    dial: Dial,
    shared: Arc<Shared>,
    session: &Session,
    ended_tx: mpsc::Sender<DialEnded>,
    dialing: Arc<AtomicUsize>,
) {
    let Dial {
        addr,
        swarm,
        source,
        utp_first,
    } = dial;
    let (dialer, process) = (session.dialer(), session.budget.clone());
    let tasks = shared.tasks.clone();
    crate::spawn::named(&tasks, "dial", async move {
        let host = host::as_host(&shared);
        // A dial still trying (a uTP SYN to a dead port waits seconds)
        // must not hold up the torrent's shutdown.
        let res = tokio::select! {
            r = conn::connect(addr, &dialer, utp_first, &*host, swarm) => Some(r),
            _ = shared.shutdown.cancelled() => None,
        };
        dialing.fetch_sub(1, Ordering::Relaxed);
        process.dialing.fetch_sub(1, Ordering::Relaxed);
        let Some(res) = res else { return };
        let mut transport = None;
        let how = match res {
            Ok((stream, theirs)) => {
                let link = stream.link(source.label());
                transport = Some(link.transport);
                tracing::info!("connected to {addr}: {link} (from {source})");
                match conn::run(stream, theirs, addr, true, link, host).await {
                    Ok(()) => Ended::Ok,
                    Err(conn::ConnError::Peer(PeerError::BothSeeds)) => Ended::BothSeeds,
                    Err(conn::ConnError::Refused(Refused::Duplicate | Refused::PerIpLimit)) => {
                        Ended::Duplicate
                    }
                    Err(conn::ConnError::Refused(Refused::SelfConnection)) => Ended::Ourselves,
                    Err(e) => {
                        tracing::debug!("peer {addr}: {}", crate::error_chain(&e));
                        blocked_or(Ended::Failed)
                    }
                }
            }
            Err(conn::ConnError::Refused(Refused::SelfConnection)) => {
                tracing::debug!("dialing {addr}: it is ourselves; not dialled again");
                Ended::Ourselves
            }
            Err(e) => {
                tracing::debug!("dialing {addr}: {}", crate::error_chain(&e));
                blocked_or(Ended::Failed)
            }
        };
        let _ = ended_tx
            .send(DialEnded {
                addr,
                how,
                transport,
            })
            .await;
    });
}

/// `how`, unless `--interface` is down: then the failure is not the peer's.
fn blocked_or(how: Ended) -> Ended {
    if crate::iface::blocked() {
        Ended::Blocked
    } else {
        how
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(last: u8) -> SocketAddr {
        SocketAddr::from(([10, 0, 0, last], 6881))
    }

    fn other_swarm(d: &Dials, a: SocketAddr) -> bool {
        d.known[&a].other_swarm
    }

    #[test]
    fn a_peer_of_a_hybrids_other_swarm_is_dialled_in_it_until_the_main_swarm_names_it() {
        let mut d = Dials::new();
        d.learn(
            vec![(addr(1), 0)],
            PeerSource::Tracker,
            SwarmOf::Main,
            1,
            None,
        );
        d.learn(
            vec![(addr(1), 0), (addr(2), 0)],
            PeerSource::Dht,
            SwarmOf::Other,
            1,
            None,
        );
        // Known in the main swarm first: stays there.
        assert!(!other_swarm(&d, addr(1)));
        // Heard of only in the other swarm.
        assert!(other_swarm(&d, addr(2)));
        // The main swarm names it too: dialled with the main hash.
        d.learn(
            vec![(addr(2), 0)],
            PeerSource::Tracker,
            SwarmOf::Main,
            1,
            None,
        );
        assert!(!other_swarm(&d, addr(2)));
        // The other swarm naming it again changes nothing.
        d.learn(
            vec![(addr(2), 0)],
            PeerSource::Tracker,
            SwarmOf::Other,
            1,
            None,
        );
        assert!(!other_swarm(&d, addr(2)));
    }
}
