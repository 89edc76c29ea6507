//! Where a torrent's candidate peers come from: its trackers' announcer,
//! the DHT lookups, PEX and LSD. Channels and tasks exist only for the
//! sources a torrent uses, and trackers, DHT and LSD feed it through a
//! [`crate::mailbox`] (a tokio channel costs about 1.3 KiB before it
//! carries anything, and a seedbox runs tens of thousands of torrents).

use crate::dht::DhtHandle;
use crate::id::InfoHash;
use crate::mailbox::Receiver as Mailbox;
use crate::session::Session;
use crate::session::known::{PeerSource, no_flags};
use crate::session::shared::{PexBatch, Shared};
use crate::session::status::Status;
use crate::tracker::{AnnounceConfig, TrackerStats, TransferTotals};
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Time allowed for trackers to hear `stopped`.
const ANNOUNCER_GRACE: Duration = Duration::from_secs(3);

/// A DHT lookup stops looking once the torrent has this many peers.
const DHT_ENOUGH_PEERS: usize = 10;

/// A hybrid torrent (BEP 52) is one torrent in two swarms: its v1
/// info-hash's and its truncated v2 one's. Each swarm has its own
/// announces and DHT lookups; a peer found in one is dialled with its
/// hash.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum SwarmOf {
    /// The swarm of the info-hash the torrent was started with.
    Main,
    /// A hybrid's other swarm.
    Other,
}

/// The announcer and DHT lookups of one swarm.
struct SwarmSources {
    tracker_rx: Option<Mailbox<Vec<SocketAddr>>>,
    dht_rx: Option<Mailbox<Vec<SocketAddr>>>,
    announcer: Option<JoinHandle<()>>,
    dht_task: Option<JoinHandle<()>>,
    tracker_stats: Arc<TrackerStats>,
}

/// The discovery sources of one torrent, running.
pub(super) struct Discovery {
    main: SwarmSources,
    /// A hybrid's other swarm, once joined.
    other: Option<SwarmSources>,
    /// Taken at a tick once a peer has sent PEX (`Shared::take_pex_rx`).
    pex_rx: Option<mpsc::Receiver<PexBatch>>,
    lsd_rx: Option<Mailbox<Vec<SocketAddr>>>,
    dht: Option<DhtHandle>,
    /// The trackers, kept for the other swarm of a hybrid.
    tiers: Vec<Vec<String>>,
    /// What the trackers are told at their next announce.
    totals_tx: watch::Sender<TransferTotals>,
    /// Peers the DHT found, for the status.
    dht_found: Arc<AtomicUsize>,
    /// Peers connected, for the DHT's "enough" test.
    connected: Arc<AtomicUsize>,
    /// Announce to every tracker now (only a torrent that takes commands).
    reannounce: Option<watch::Sender<u64>>,
    /// The source `next` looks at first, turning.
    turn: usize,
}

/// What discovery needs to know of its torrent.
pub(super) struct Plan {
    pub info_hash: InfoHash,
    pub tiers: Vec<Vec<String>>,
    /// A private torrent: trackers only (no DHT, LSD).
    pub private: bool,
    /// It can be asked to announce now (`Command::Reannounce`).
    pub takes_commands: bool,
}

impl Discovery {
    /// Starts the sources `plan` uses.
    pub(super) fn start(
        session: &Session,
        shared: &Arc<Shared>,
        plan: Plan,
        token: &CancellationToken,
    ) -> Discovery {
        let Plan {
            info_hash,
            tiers,
            private,
            takes_commands,
        } = plan;
        let dht = if private { None } else { session.dht.clone() };
        let (totals_tx, _) = watch::channel(totals(shared));
        let reannounce = (takes_commands && !tiers.is_empty()).then(|| watch::channel(0u64).0);
        let (lsd_tx, lsd_rx) =
            maybe_channel::<Vec<SocketAddr>>(!private && session.lsd_running(), 64);
        if let Some(tx) = lsd_tx {
            let _ = shared.discovered.set(tx);
        }
        let mut d = Discovery {
            main: SwarmSources::idle(),
            other: None,
            pex_rx: None,
            lsd_rx,
            dht,
            tiers,
            totals_tx,
            dht_found: Arc::new(AtomicUsize::new(0)),
            connected: Arc::new(AtomicUsize::new(0)),
            reannounce,
            turn: 0,
        };
        d.main = d.spawn_swarm(session, shared, info_hash, token);
        d
    }

    /// Joins a hybrid's other swarm: its own announces (same trackers) and
    /// DHT lookups.
    pub(super) fn join_other_swarm(
        &mut self,
        session: &Session,
        shared: &Arc<Shared>,
        swarm: InfoHash,
        token: &CancellationToken,
    ) {
        if self.other.is_none() {
            self.other = Some(self.spawn_swarm(session, shared, swarm, token));
        }
    }

    /// The announcer and DHT lookups of the swarm of `info_hash`.
    fn spawn_swarm(
        &self,
        session: &Session,
        shared: &Arc<Shared>,
        info_hash: InfoHash,
        token: &CancellationToken,
    ) -> SwarmSources {
        let tracker_stats = Arc::new(TrackerStats::default());
        let has_http = self.tiers.iter().flatten().any(|u| u.starts_with("http"));
        let (tracker_tx, tracker_rx) =
            maybe_channel::<Vec<SocketAddr>>(!self.tiers.is_empty(), 256);
        let announcer = tracker_tx.map(|tracker_tx| {
            crate::tracker::spawn_announcer(
                AnnounceConfig {
                    info_hash,
                    peer_id: session.peer_id,
                    port: session.listen_port,
                    external_port: session.external_port.clone(),
                    bind: session.bind,
                    tiers: self.tiers.clone(),
                    numwant: 200,
                    stop_timeout: Duration::from_secs(2),
                    pace: Some(session.announce_pace.clone()),
                    also_at: session.also_at.clone(),
                    http_client: if has_http {
                        session.http_client()
                    } else {
                        None
                    },
                    reannounce: self.reannounce.as_ref().map(watch::Sender::subscribe),
                },
                self.totals_tx.subscribe(),
                tracker_tx,
                tracker_stats.clone(),
                token.clone(),
            )
        });
        let (dht_tx, dht_rx) = maybe_channel::<Vec<SocketAddr>>(self.dht.is_some(), 256);
        let dht_task = self.dht.as_ref().zip(dht_tx).map(|(d, dht_tx)| {
            let (c, sh) = (self.connected.clone(), shared.clone());
            let want_more: Arc<dyn Fn() -> bool + Send + Sync> =
                Arc::new(move || !sh.is_complete() && c.load(Ordering::Relaxed) < DHT_ENOUGH_PEERS);
            crate::dht::spawn_discovery(
                d.clone(),
                info_hash,
                crate::dht::AnnouncePort {
                    local: session.listen_port,
                    external: session.external_port.clone(),
                },
                true,
                want_more,
                dht_tx,
                self.dht_found.clone(),
                token.clone(),
            )
        });
        SwarmSources {
            tracker_rx,
            dht_rx,
            announcer,
            dht_task,
            tracker_stats,
        }
    }

    /// Whether no source can ever name a peer (no trackers, no DHT, no
    /// LSD): only incoming connections and `--peer` can.
    pub(super) fn finds_nothing(&self) -> bool {
        self.main.tracker_rx.is_none() && self.dht.is_none() && self.lsd_rx.is_none()
    }

    /// The next batch of addresses from any source, with the swarm it is
    /// of; `None` when none is left open. Polled in place (no future per
    /// source: every torrent's loop waits on this all the time), starting
    /// at a rotating source so a busy one cannot starve the others.
    pub(super) async fn next(&mut self) -> Option<(PexBatch, PeerSource, SwarmOf)> {
        std::future::poll_fn(|cx| self.poll_next(cx)).await
    }

    fn poll_next(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<(PexBatch, PeerSource, SwarmOf)>> {
        use std::task::Poll;
        const SOURCES: usize = 6;
        self.turn = (self.turn + 1) % SOURCES;
        let mut open = false;
        for i in 0..SOURCES {
            let (rx, source, swarm) = match (self.turn + i) % SOURCES {
                0 => (
                    &mut self.main.tracker_rx,
                    PeerSource::Tracker,
                    SwarmOf::Main,
                ),
                1 => (&mut self.main.dht_rx, PeerSource::Dht, SwarmOf::Main),
                2 => {
                    match self.pex_rx.as_mut().map(|rx| rx.poll_recv(cx)) {
                        Some(Poll::Ready(Some(a))) => {
                            return Poll::Ready(Some((a, PeerSource::Pex, SwarmOf::Main)));
                        }
                        Some(Poll::Pending) => open = true,
                        Some(Poll::Ready(None)) | None => {}
                    }
                    continue;
                }
                3 => (&mut self.lsd_rx, PeerSource::Lsd, SwarmOf::Main),
                4 => match &mut self.other {
                    Some(o) => (&mut o.tracker_rx, PeerSource::Tracker, SwarmOf::Other),
                    None => continue,
                },
                _ => match &mut self.other {
                    Some(o) => (&mut o.dht_rx, PeerSource::Dht, SwarmOf::Other),
                    None => continue,
                },
            };
            match rx.as_mut().map(|rx| rx.poll_recv(cx)) {
                Some(Poll::Ready(Some(a))) => {
                    return Poll::Ready(Some((no_flags(a), source, swarm)));
                }
                Some(Poll::Pending) => open = true,
                Some(Poll::Ready(None)) | None => {}
            }
        }
        if open {
            Poll::Pending
        } else {
            Poll::Ready(None)
        }
    }

    /// Asks every tracker for an announce now (in both swarms of a hybrid).
    pub(super) fn reannounce(&self) {
        if let Some(tx) = &self.reannounce {
            tx.send_modify(|n| *n += 1);
        }
    }

    /// Once a tick: the totals the trackers will hear, PEX once a peer
    /// sent some, and the sources' part of the status.
    pub(super) fn on_tick(&mut self, shared: &Shared, status: &mut Status) {
        self.totals_tx.send_if_modified(|t| {
            let n = totals(shared);
            let changed = *t != n;
            *t = n;
            changed
        });
        if self.pex_rx.is_none() {
            self.pex_rx = shared.take_pex_rx();
        }
        self.connected
            .store(status.peers_connected, Ordering::Relaxed);
        // A tracker counts as working when it answers in either swarm.
        let stats = &self.main.tracker_stats;
        let other_ok = self
            .other
            .as_ref()
            .map_or(0, |o| o.tracker_stats.trackers_ok());
        status.trackers_ok = stats.trackers_ok().max(other_ok);
        status.trackers_total = stats.trackers_total();
        status.dht_peers = self.dht_found.load(Ordering::Relaxed);
        status.dht_nodes = self.dht.as_ref().map_or(0, |d| d.routing_table_size());
    }

    /// Waits (boundedly) for the trackers to hear `stopped` and the DHT
    /// tasks to end; the torrent's token is cancelled already.
    pub(super) async fn stop(self) {
        let swarms = [Some(self.main), self.other];
        for s in swarms.into_iter().flatten() {
            if let Some(announcer) = s.announcer {
                let _ = tokio::time::timeout(ANNOUNCER_GRACE, announcer).await;
            }
            if let Some(t) = s.dht_task {
                let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
            }
        }
    }
}

impl SwarmSources {
    /// Nothing running (replaced at once by `Discovery::start`).
    fn idle() -> Self {
        SwarmSources {
            tracker_rx: None,
            dht_rx: None,
            announcer: None,
            dht_task: None,
            tracker_stats: Arc::default(),
        }
    }
}

/// Transfer totals for the trackers; `left` is 1 until the size is known so
/// trackers count us as a leecher.
fn totals(shared: &Shared) -> TransferTotals {
    let (have, total) = shared.progress().unwrap_or((0, 1));
    TransferTotals {
        uploaded: shared.counters.uploaded.load(Ordering::Relaxed),
        downloaded: shared.counters.downloaded.load(Ordering::Relaxed),
        left: total - have,
    }
}

/// A mailbox when `wanted`, else neither end: an idle torrent pays for
/// the mailboxes of the sources it uses only.
fn maybe_channel<T>(
    wanted: bool,
    cap: usize,
) -> (Option<crate::mailbox::Sender<T>>, Option<Mailbox<T>>) {
    if wanted {
        let (tx, rx) = crate::mailbox::channel(cap);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// The next message of `rx`; `None` at once when there is no channel
/// (a `select!` branch then stays disabled, as for a closed one).
pub(super) async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}
