//! Trackers: the announce loops that keep the swarm informed of us and feed
//! peer addresses to the session.
//!
//! [`announce`] is the pure core (query building, response parsing, BEP 15
//! packets, schedules); `http` and `udp` are thin transports; this module
//! runs one task per tracker URL.
//!
//! # Why every tracker at once
//!
//! BEP 12 says to try tiers in order and stop at the first tracker that
//! answers. That makes a dead first tracker cost a full timeout before any
//! peers arrive, and leaves us in a smaller swarm view. btc instead announces
//! to **every** URL in every tier concurrently from the start: a dead tracker
//! never delays a live one, and peers from all of them are merged by the
//! session. Tier order is kept only as the order tasks are spawned. The cost
//! is a few extra requests per interval, which trackers are built to absorb.
//! Duplicate URLs across tiers are announced once.
//!
//! # Timing
//!
//! Per tracker: `started` first; after a success, the next announce comes
//! after the tracker's `interval` (30 min if absent), never sooner than its
//! `min interval`, clamped to [15 s, 1 h] so neither a hostile nor a broken
//! tracker can make us spin or go silent. After a failure: 5 s doubling to
//! 5 min; each distinct error is logged once at `warn`, repeats at `debug`.
//! When `left` drops to 0 after having been non-zero, `completed` goes out at
//! once to every healthy tracker (a failing one sends it on its next retry).
//! At shutdown, `stopped` goes concurrently to every tracker whose `started`
//! succeeded (an in-flight `started` is abandoned and not followed by
//! `stopped`), the whole round bounded by `stop_timeout`.
//!
//! Passkeys: tracker URLs are logged without their query string.

pub mod announce;
pub mod http;
pub mod scrape;
mod udp;

#[cfg(test)]
mod tests;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};
use tokio_util::sync::CancellationToken;

use crate::id::{InfoHash, PeerId};
pub use announce::{AnnounceRequest, AnnounceResponse, Event, TrackerError};

/// What the announcer needs to know about the torrent and us.
#[derive(Clone, Debug)]
pub struct AnnounceConfig {
    /// Torrent to announce.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our TCP listen port (what peers should dial).
    pub port: u16,
    /// The router's port for it, when port mapping got another one: read
    /// at every announce, so the first after the mapping carries it.
    pub external_port: Arc<crate::portmap::ExternalPort>,
    /// Local IP for tracker traffic, so the tracker records the address our
    /// listener is on (tests use 127.0.0.x).
    pub bind: Option<IpAddr>,
    /// BEP 12 tiers (announce-list), plus user `--tracker` URLs as extra tiers.
    pub tiers: Vec<Vec<String>>,
    /// Peers to ask for per announce.
    pub numwant: u32,
    /// Bound on the whole `stopped` round at shutdown.
    pub stop_timeout: Duration,
    /// The process-wide announce pace shared by every torrent (one token
    /// per announce), so a thousand torrents starting together do not send
    /// a thousand announces in the same second. `stopped` is not paced.
    pub pace: Option<Arc<crate::ratelimit::RateLimiter>>,
    /// Our addresses in the other family, told to HTTP trackers (BEP 7).
    pub also_at: Vec<IpAddr>,
    /// The HTTP client of the process (one TLS configuration and one pool
    /// for every torrent); `None`: the announcer builds its own.
    pub http_client: Option<reqwest::Client>,
    /// Bumped to announce now (the daemon's `torrent-reannounce`): every
    /// healthy tracker announces at once instead of at its interval.
    pub reannounce: Option<watch::Receiver<u64>>,
}

/// Scrapes one tracker for `info_hash` (BEP 48 over HTTP, BEP 15 over
/// UDP), within `limit`.
pub async fn scrape(
    url: &str,
    info_hash: &InfoHash,
    bind: Option<IpAddr>,
    limit: Duration,
) -> Result<scrape::ScrapeStats, TrackerError> {
    let Some(scrape_url) = scrape::scrape_url(url) else {
        return Err(TrackerError::Failure(
            "no scrape address (the URL does not end in /announce)".into(),
        ));
    };
    let work = async {
        if scrape_url.starts_with("udp://") {
            udp::UdpTracker::new(&scrape_url, bind)?
                .scrape(info_hash)
                .await
        } else if scrape_url.starts_with("http://") || scrape_url.starts_with("https://") {
            http::scrape(&http::build_client(bind)?, &scrape_url, info_hash).await
        } else {
            Err(TrackerError::UnsupportedScheme(http::redact(url)))
        }
    };
    tokio::time::timeout(limit, work)
        .await
        .unwrap_or(Err(TrackerError::Timeout {
            what: "scrape",
            after: limit,
        }))
}

/// Transfer counters the trackers report; the session publishes them on a
/// `watch` channel.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct TransferTotals {
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
}

/// Live counters the progress line shows. Atomics so the UI reads them
/// without talking to the announcer.
#[derive(Debug, Default)]
pub struct TrackerStats {
    trackers_total: AtomicUsize,
    trackers_ok: AtomicUsize,
    peers_received: AtomicU64,
}

impl TrackerStats {
    /// Trackers we announce to (supported schemes only).
    pub fn trackers_total(&self) -> usize {
        self.trackers_total.load(Ordering::Relaxed)
    }

    /// Trackers whose last announce succeeded.
    pub fn trackers_ok(&self) -> usize {
        self.trackers_ok.load(Ordering::Relaxed)
    }

    /// Peer addresses received from all trackers, duplicates included.
    pub fn peers_received(&self) -> u64 {
        self.peers_received.load(Ordering::Relaxed)
    }
}

/// Slack on top of `stop_timeout` for the tasks to notice and unwind.
const STOP_SLACK: Duration = Duration::from_millis(200);

/// How long handing peers to the session may take before we drop them; a
/// wedged session must not wedge the announcer.
const PEER_SEND_TIMEOUT: Duration = Duration::from_secs(5);

/// Starts announcing to every tracker; see the module doc for the policy.
/// The handle completes after `shutdown` fires and the `stopped` round has
/// finished or hit `cfg.stop_timeout`.
pub fn spawn_announcer(
    cfg: AnnounceConfig,
    totals: watch::Receiver<TransferTotals>,
    peers: crate::mailbox::Sender<Vec<SocketAddr>>,
    stats: Arc<TrackerStats>,
    shutdown: CancellationToken,
) -> JoinHandle<()> {
    let stop_within = cfg.stop_timeout + STOP_SLACK;
    let mut loops = url_loops(cfg, &totals, peers, &stats, &shutdown);
    if loops.len() == 1 {
        // The common case: the one loop is the task (it ends after
        // `shutdown`, its `stopped` bounded by `stop_timeout`), not a
        // task that runs it or a `JoinSet` of one, for each of tens of
        // thousands of idle torrents.
        let one = loops.pop().expect("one loop").run();
        return tokio::spawn(one);
    }
    tokio::spawn(every_tracker(loops, shutdown, stop_within))
}

/// One announce loop per supported, distinct tracker URL of `cfg`.
fn url_loops(
    cfg: AnnounceConfig,
    totals: &watch::Receiver<TransferTotals>,
    peers: crate::mailbox::Sender<Vec<SocketAddr>>,
    stats: &Arc<TrackerStats>,
    shutdown: &CancellationToken,
) -> Vec<UrlTask> {
    let mut urls: Vec<String> = Vec::new();
    for url in cfg.tiers.iter().flatten() {
        let url = url.trim();
        if !url.is_empty() && !urls.iter().any(|u| u == url) {
            urls.push(url.to_string());
        }
    }
    // Built lazily: a torrent with only UDP trackers never needs TLS setup.
    let mut http_client: Option<reqwest::Client> = None;
    let key: u32 = rand::random();
    let cfg = Arc::new(cfg);
    let mut loops = Vec::new();
    for url in urls {
        let transport = match url.split_once("://").map(|(s, _)| s.to_ascii_lowercase()) {
            Some(s) if s == "http" || s == "https" => {
                if http_client.is_none() {
                    let shared = cfg.http_client.clone().ok_or(());
                    match shared.or_else(|()| http::build_client(cfg.bind)) {
                        Ok(c) => http_client = Some(c),
                        Err(e) => {
                            tracing::warn!(tracker = %http::redact(&url), "skipping tracker: {e}");
                            continue;
                        }
                    }
                }
                match &http_client {
                    Some(c) => Transport::Http(c.clone()),
                    None => continue,
                }
            }
            Some(s) if s == "udp" => match udp::UdpTracker::new(&url, cfg.bind) {
                Ok(t) => Transport::Udp(Box::new(t)),
                Err(e) => {
                    tracing::warn!(tracker = %http::redact(&url), "skipping tracker: {e}");
                    continue;
                }
            },
            _ => {
                let e = TrackerError::UnsupportedScheme(http::redact(&url));
                tracing::warn!("skipping tracker: {e}");
                continue;
            }
        };
        stats.trackers_total.fetch_add(1, Ordering::Relaxed);
        loops.push(UrlTask {
            label: http::redact(&url),
            url,
            transport,
            cfg: cfg.clone(),
            key,
            totals: totals.clone(),
            peers: peers.clone(),
            stats: stats.clone(),
            shutdown: shutdown.clone(),
        });
    }
    loops
}

/// Runs every loop (none, or several trackers) until `shutdown` and the
/// `stopped` round.
async fn every_tracker(loops: Vec<UrlTask>, shutdown: CancellationToken, stop_within: Duration) {
    let mut tasks = JoinSet::new();
    for task in loops {
        tasks.spawn(task.run());
    }
    // Tasks end only after shutdown (then they send `stopped`, each bounded by
    // stop_timeout). The outer bound starts when shutdown fires so a task
    // stuck anywhere still cannot hold the handle open.
    let drain = async { while tasks.join_next().await.is_some() {} };
    tokio::pin!(drain);
    tokio::select! {
        _ = &mut drain => {
            // No usable tracker: still live until shutdown, so the session
            // sees one lifecycle whatever the torrent's tracker list holds.
            shutdown.cancelled().await;
            return;
        }
        _ = shutdown.cancelled() => {}
    }
    if tokio::time::timeout(stop_within, drain).await.is_err() {
        tracing::debug!("stopped round hit its time limit; abandoning the rest");
    }
    // Dropping the JoinSet aborts whatever is left.
}

enum Transport {
    Http(reqwest::Client),
    Udp(Box<udp::UdpTracker>),
}

impl Transport {
    async fn announce(
        &mut self,
        url: &str,
        req: &AnnounceRequest,
    ) -> Result<AnnounceResponse, TrackerError> {
        match self {
            Transport::Http(client) => http::announce(client, url, req).await,
            Transport::Udp(t) => t.announce(req).await,
        }
    }
}

/// The announce loop for one tracker URL.
struct UrlTask {
    url: String,
    /// `url` without its query, for logs.
    label: String,
    transport: Transport,
    cfg: Arc<AnnounceConfig>,
    key: u32,
    totals: watch::Receiver<TransferTotals>,
    peers: crate::mailbox::Sender<Vec<SocketAddr>>,
    stats: Arc<TrackerStats>,
    shutdown: CancellationToken,
}

/// Per-tracker bookkeeping between announces.
#[derive(Default)]
struct LoopState {
    started_ok: bool,
    /// We have seen `left > 0`, so reaching 0 means we finished a download
    /// (a seed that starts complete must never send `completed`).
    saw_incomplete: bool,
    completed_sent: bool,
    tracker_id: Option<String>,
    failures: u32,
    ok: bool,
    last_error: Option<String>,
    /// The "too many peers" warning was printed (once per tracker).
    warned_flood: bool,
}

impl LoopState {
    fn observe(&mut self, t: &TransferTotals) {
        if t.left > 0 {
            self.saw_incomplete = true;
        }
    }

    fn needs_completed(&self, t: &TransferTotals) -> bool {
        self.saw_incomplete && t.left == 0 && !self.completed_sent
    }

    /// Next event: `started` until one succeeds, then `completed` once the
    /// download finishes, else a plain re-announce.
    fn next_event(&self, t: &TransferTotals) -> Event {
        if !self.started_ok {
            Event::Started
        } else if self.needs_completed(t) {
            Event::Completed
        } else {
            Event::None
        }
    }
}

impl UrlTask {
    fn request(&self, event: Event, t: &TransferTotals, st: &LoopState) -> AnnounceRequest {
        AnnounceRequest {
            info_hash: self.cfg.info_hash,
            peer_id: self.cfg.peer_id,
            port: self.cfg.external_port.or(self.cfg.port),
            uploaded: t.uploaded,
            downloaded: t.downloaded,
            left: t.left,
            event,
            numwant: Some(if event == Event::Stopped {
                0
            } else {
                self.cfg.numwant
            }),
            key: self.key,
            tracker_id: st.tracker_id.clone(),
            also_at: self.cfg.also_at.clone(),
        }
    }

    fn set_ok(&self, st: &mut LoopState, ok: bool) {
        if ok != st.ok {
            st.ok = ok;
            if ok {
                self.stats.trackers_ok.fetch_add(1, Ordering::Relaxed);
            } else {
                self.stats.trackers_ok.fetch_sub(1, Ordering::Relaxed);
            }
        }
    }

    async fn run(mut self) {
        let mut st = LoopState::default();
        let mut totals_open = true;
        // A new external port (port mapping) is announced at once.
        let mut port = self.cfg.external_port.watch();
        let mut port_open = true;
        let mut again = self.cfg.reannounce.clone();
        let mut again_open = again.is_some();
        'outer: loop {
            port.borrow_and_update();
            let t = *self.totals.borrow_and_update();
            st.observe(&t);
            let event = st.next_event(&t);
            // Boxed: it is not needed while the loop waits for the next
            // announce (every idle torrent's loop), yet lives until then.
            let req = Box::new(self.request(event, &t, &st));
            let shutdown = self.shutdown.clone();
            // `--interface` is down: the announce waits for it.
            // Boxed, as the announce below: these waits exist once per
            // announce, not in every idle announcer.
            tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                _ = Box::pin(crate::iface::wait_up()) => {}
            }
            if let Some(pace) = &self.cfg.pace {
                tokio::select! {
                    _ = shutdown.cancelled() => break 'outer,
                    _ = Box::pin(pace.consume(1)) => {}
                }
            }
            let result = tokio::select! {
                _ = shutdown.cancelled() => break 'outer,
                // Boxed: the request's state exists only while it is under
                // way, not in every idle announcer of every torrent.
                r = Box::pin(self.transport.announce(&self.url, &req)) => r,
            };
            let wait = match result {
                Ok(resp) => {
                    match event {
                        Event::Started => st.started_ok = true,
                        Event::Completed => st.completed_sent = true,
                        _ => {}
                    }
                    if st.last_error.take().is_some() {
                        tracing::info!(tracker = %self.label, "tracker is answering again");
                    }
                    if let Some(w) = &resp.warning {
                        tracing::debug!(tracker = %self.label, "tracker warning: {w}");
                    }
                    if resp.tracker_id.is_some() {
                        st.tracker_id = resp.tracker_id.clone();
                    }
                    st.failures = 0;
                    self.set_ok(&mut st, true);
                    if resp.peers_dropped > 0 && !st.warned_flood {
                        st.warned_flood = true;
                        tracing::warn!(
                            tracker = %self.label,
                            "tracker sent more than {} peers; ignoring {} of them",
                            announce::MAX_PEERS,
                            resp.peers_dropped
                        );
                    }
                    // Up to a tenth later than asked, so torrents that
                    // started together drift apart instead of announcing
                    // in step forever.
                    let wait = announce::reannounce_after(&resp);
                    let wait = wait + wait.mul_f64(rand::random::<f64>() / 10.0);
                    tracing::debug!(tracker = %self.label, ?event, port = req.port, peers = resp.peers.len(), "announced");
                    if !resp.peers.is_empty() {
                        Box::pin(self.deliver(resp.peers)).await;
                    }
                    wait
                }
                Err(e) if crate::iface::blocked() => {
                    // Not the tracker's failure: no back-off, sent again
                    // once `--interface` is back (the wait above).
                    tracing::debug!(tracker = %self.label, ?event, "announce failed while --interface is down: {e}");
                    Duration::ZERO
                }
                Err(e) => {
                    let text = e.to_string();
                    if matches!(e, TrackerError::NoUdpRelay) {
                        // The proxy warned once for every UDP tracker.
                        tracing::debug!(tracker = %self.label, ?event, "announce failed: {text}");
                    } else if st.last_error.as_deref() != Some(text.as_str()) {
                        tracing::warn!(tracker = %self.label, ?event, "announce failed: {text}");
                        st.last_error = Some(text);
                    } else {
                        tracing::debug!(tracker = %self.label, ?event, "announce failed again: {text}");
                    }
                    self.set_ok(&mut st, false);
                    let wait = announce::retry_after(st.failures);
                    st.failures = st.failures.saturating_add(1);
                    wait
                }
            };
            let deadline = tokio::time::Instant::now() + wait;
            loop {
                let t = *self.totals.borrow_and_update();
                st.observe(&t);
                // Completion is announced at once, not at the next interval,
                // but only on a healthy tracker (an erroring one keeps its
                // backoff, and the pending `completed` goes out on retry).
                if st.started_ok && st.failures == 0 && st.needs_completed(&t) {
                    break;
                }
                tokio::select! {
                    _ = self.shutdown.cancelled() => break 'outer,
                    _ = tokio::time::sleep_until(deadline) => break,
                    r = self.totals.changed(), if totals_open => {
                        if r.is_err() {
                            totals_open = false;
                        }
                    }
                    r = port.changed(), if port_open => match r {
                        // Only a healthy tracker: an erroring one keeps its
                        // backoff and sends the new port on retry.
                        Ok(()) if st.started_ok && st.failures == 0 => break,
                        Ok(()) => {}
                        Err(_) => port_open = false,
                    },
                    r = async { again.as_mut().expect("open").changed().await }, if again_open => match r {
                        // Asked for: a tracker in backoff retries now too.
                        Ok(()) => break,
                        Err(_) => again_open = false,
                    },
                }
            }
        }
        Box::pin(self.stop(&mut st)).await;
    }

    /// Hands peers to the session without ever blocking past shutdown or
    /// [`PEER_SEND_TIMEOUT`].
    async fn deliver(&self, peers: Vec<SocketAddr>) {
        let n = peers.len();
        self.stats
            .peers_received
            .fetch_add(n as u64, Ordering::Relaxed);
        tokio::select! {
            _ = self.shutdown.cancelled() => {}
            r = tokio::time::timeout(PEER_SEND_TIMEOUT, self.peers.send(peers)) => {
                if !matches!(r, Ok(Ok(()))) {
                    tracing::debug!(tracker = %self.label, "session did not take {n} peers; dropped");
                }
            }
        }
    }

    /// The `stopped` announce, only to trackers that know we started.
    async fn stop(&mut self, st: &mut LoopState) {
        if !st.started_ok {
            return;
        }
        let t = *self.totals.borrow();
        let req = self.request(Event::Stopped, &t, st);
        match tokio::time::timeout(
            self.cfg.stop_timeout,
            Box::pin(self.transport.announce(&self.url, &req)),
        )
        .await
        {
            Ok(Ok(_)) => tracing::debug!(tracker = %self.label, "sent stopped"),
            Ok(Err(e)) => tracing::debug!(tracker = %self.label, "stopped announce failed: {e}"),
            Err(_) => tracing::debug!(tracker = %self.label, "stopped announce timed out"),
        }
        self.set_ok(st, false);
    }
}
