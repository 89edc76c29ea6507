//! One torrent's DHT lookups and announces, repeated on a schedule that
//! follows how many peers the torrent still wants.

use super::DhtHandle;
use crate::id::InfoHash;
use crate::mailbox::Sender;
use futures::StreamExt;
use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Lookup cadence while the torrent wants more peers.
pub const LOOKUP_INTERVAL_SCARCE: Duration = Duration::from_secs(15);

/// Lookup cadence once peers are plentiful (also re-announces that often).
pub const LOOKUP_INTERVAL_PLENTY: Duration = Duration::from_secs(5 * 60);

/// Upper bound on one announce; mainline's put query normally ends on its
/// own within a few request timeouts.
pub(crate) const ANNOUNCE_TIMEOUT: Duration = Duration::from_secs(60);

/// Distinct peers remembered per discovery task for the `found` counter.
pub(crate) const MAX_SEEN_PEERS: usize = 10_000;

/// The peer port a torrent announces: our listen port, or the router's
/// port for it once port mapping got one (read at each announce).
#[derive(Debug, Clone)]
pub struct AnnouncePort {
    /// Our TCP listen port.
    pub local: u16,
    /// The mapped port, when there is one.
    pub external: Arc<crate::portmap::ExternalPort>,
}

/// Background lookups for one torrent: peers stream into `peers` as each
/// get_peers response arrives (not after the whole lookup); repeat every
/// 1 s, backing off to ~15 s, while `want_more()` says peers are scarce,
/// every ~5 min otherwise, and at once when an empty routing table fills;
/// when `announce` is true also `announce_peer` after each lookup. Stops at
/// `shutdown` or when the `peers` receiver is dropped.
///
/// Within one lookup each address is sent at most once; later lookups send
/// it again, so the session may retry a peer it dropped earlier. `found`
/// counts distinct addresses ever seen (up to a bound), for the status line.
#[allow(clippy::too_many_arguments)] // the signature is the session's contract
pub fn spawn_discovery(
    dht: DhtHandle,
    info_hash: InfoHash,
    port: AnnouncePort,
    announce: bool,
    want_more: Arc<dyn Fn() -> bool + Send + Sync>,
    peers: Sender<Vec<SocketAddr>>,
    found: Arc<AtomicUsize>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut seen: HashSet<SocketAddr> = HashSet::new();
        let mut scarce_rounds = 0u32;
        loop {
            // The budget first: a round waiting for it holds no slot.
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = Box::pin(dht.round_pace.consume(1)) => {}
            }
            let permit = tokio::select! {
                _ = shutdown.cancelled() => return,
                p = dht.rounds.acquire() => p,
            };
            let started = Instant::now();
            let mut stream = Box::pin(dht.get_peers(info_hash));
            let mut this_round: HashSet<SocketAddr> = HashSet::new();
            loop {
                let next = tokio::select! {
                    _ = shutdown.cancelled() => return,
                    next = stream.next() => next,
                };
                let Some(batch) = next else { break };
                let fresh: Vec<SocketAddr> = batch
                    .into_iter()
                    .filter(|a| this_round.len() < MAX_SEEN_PEERS && this_round.insert(*a))
                    .collect();
                for a in &fresh {
                    if seen.len() < MAX_SEEN_PEERS && seen.insert(*a) {
                        found.fetch_add(1, Ordering::Relaxed);
                    }
                }
                if fresh.is_empty() {
                    continue;
                }
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    sent = peers.send(fresh) => if sent.is_err() { return },
                }
            }
            tracing::debug!(
                %info_hash,
                peers = this_round.len(),
                took_ms = started.elapsed().as_millis() as u64,
                "dht lookup done"
            );
            if announce {
                let port = port.external.or(port.local);
                tokio::select! {
                    _ = shutdown.cancelled() => return,
                    r = tokio::time::timeout(ANNOUNCE_TIMEOUT, dht.announce(info_hash, port)) => {
                        match r {
                            Ok(Ok(())) => tracing::debug!(%info_hash, port, "dht announce done"),
                            Ok(Err(e)) => tracing::debug!(error = %e, "dht announce failed"),
                            Err(_) => tracing::debug!(%info_hash, "dht announce timed out"),
                        }
                    }
                }
            }
            drop(permit);
            // While peers are scarce, look again soon (1, 2, 4, 8 s, then
            // every 15 s): a swarm that is just forming, like a seeder that
            // announced a second after our first lookup, is found at once.
            let wait = if want_more() {
                let w = Duration::from_secs(1 << scarce_rounds.min(4)).min(LOOKUP_INTERVAL_SCARCE);
                scarce_rounds += 1;
                w
            } else {
                scarce_rounds = 0;
                // Jittered, so torrents started together spread out.
                LOOKUP_INTERVAL_PLENTY.mul_f64(0.9 + rand::random::<f64>() / 5.0)
            };
            // A lookup on an empty table only reached the bootstrap nodes;
            // once the node has joined (e.g. the network came up), look
            // again at once rather than at the end of the back-off.
            let was_alone = dht.routing_table_size() == 0;
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(wait) => {}
                _ = dht.joined(), if was_alone => {
                    tracing::debug!(%info_hash, "dht routing table filled; looking up again");
                }
            }
        }
    })
}
