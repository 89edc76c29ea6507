//! One torrent's actor: from its start to its stop.
//!
//! [`run`] installs the metadata (at once for a `.torrent`, after the
//! exchange for a magnet), waits for a download slot when there is
//! something to download, starts peer discovery, dials peers, runs the
//! choker, watches for completion and seed limits, and shuts its part down
//! in order: peers, pending disk writes, flush, trackers told `stopped`.
//! What the process shares (listener, peer id, DHT, budgets) is the
//! [`Session`]'s. The per-peer work happens in [`crate::peer::conn`]; this
//! loop only makes decisions that need a view of every peer.

use super::known::{DialPacer, Ended, Known, PeerSource, dial_order, learn, next_wake, no_flags};
use super::queue::ActiveSlot;
use super::shared::{Limits, PeerCommand, PeerEntry, Shared, TorrentData};
use super::{Session, files, host, resume, status, stream};
use crate::bitfield::Bitfield;
use crate::choker::{Candidate, Choker};
use crate::geometry::Geometry;
use crate::id::InfoHash;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::peer::conn::{self, Refused};
use crate::peer::state::PeerError;
use crate::peer::transport::Transport;
use crate::picker::PeerKey;
use crate::storage::disk::Storage;
use crate::tracker::{AnnounceConfig, TrackerStats, TransferTotals};
use anyhow::{Context, Result};
use status::{Phase, Status};
use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::Arc;
use std::sync::atomic::{AtomicU32, AtomicUsize, Ordering};
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How often the unchoke set is recomputed even when nothing changes.
const CHOKE_INTERVAL: Duration = Duration::from_secs(10);
/// Early rounds (a peer's interest changed) are at least this far apart.
const MIN_CHOKE_GAP: Duration = Duration::from_secs(1);
/// Regular upload slots (plus one optimistic).
const UPLOAD_SLOTS: usize = 4;
/// Dial attempts running at once.
const MAX_HALF_OPEN: usize = 16;
/// Time allowed for disk writes to drain and trackers to hear `stopped`.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);

/// What to download.
pub enum Source {
    /// A parsed `.torrent`.
    Torrent(Box<Metainfo>),
    /// A magnet link or bare info-hash: metadata comes from peers.
    Magnet(Magnet),
}

/// One torrent's settings, validated by the CLI.
pub struct Options {
    /// What the user asked for; its fields read through `Options` (Deref).
    pub config: std::sync::Arc<crate::config::Config>,
    /// Where fetched metadata and resume data are kept, as resolved.
    pub state_dir: Option<PathBuf>,
    /// Where discrete events go for `--json` (`None`: nobody listens).
    pub events: Option<mpsc::Sender<status::SessionEvent>>,
    /// Its place in the download queue (taken when it was added, so the
    /// queue keeps the order the sources were given in).
    pub ticket: Option<super::queue::Ticket>,
    /// Commands from whoever manages the torrent at run time (the daemon's
    /// `session::manager`); `None` for the one-shot CLI.
    pub commands: Option<mpsc::Receiver<Command>>,
    /// This torrent's own limiters (under the session's), instead of the
    /// session's alone.
    pub limits: Option<crate::ratelimit::RateLimits>,
}

/// What the owner of a running torrent can ask of its actor. Stopping is
/// the torrent's cancellation token (it must work in every phase, also
/// while the start-up check runs); these are what only the actor knows.
pub enum Command {
    /// Ends the torrent the orderly way (peers, writes, resume data,
    /// trackers told `stopped`), as a process stop does.
    Stop,
    /// What the status does not carry: per-file progress, the peers.
    Snapshot(tokio::sync::oneshot::Sender<Snapshot>),
    /// Announce to every tracker now (Transmission's `torrent-reannounce`).
    Reannounce,
}

/// A running torrent's detail, answered to [`Command::Snapshot`].
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// Verified bytes of each non-pad file, in `btc info`'s order (empty
    /// before the metadata).
    pub file_done: Vec<u64>,
    /// The connected peers.
    pub peers: Vec<PeerView>,
    /// Candidate addresses known.
    pub peers_known: usize,
}

/// One connected peer, as a snapshot shows it.
#[derive(Debug, Clone)]
pub struct PeerView {
    /// Its address.
    pub addr: SocketAddr,
    /// Bytes/s it sends us.
    pub down_rate: u64,
    /// Bytes/s we send it.
    pub up_rate: u64,
    /// Whether it has every piece.
    pub seed: bool,
    /// Over uTP (else TCP).
    pub utp: bool,
    /// RC4-encrypted.
    pub encrypted: bool,
    /// Whether we dialled it.
    pub outgoing: bool,
    /// Whether it is interested in us.
    pub interested: bool,
    /// Whether we choke it.
    pub choked: bool,
    /// Its client, from the peer id (`-TR3000-` style), or empty.
    pub client: String,
}

impl std::ops::Deref for Options {
    type Target = crate::config::Config;

    fn deref(&self) -> &crate::config::Config {
        &self.config
    }
}

/// What happened, for the final summary.
#[derive(Debug, Clone)]
pub struct Report {
    /// Torrent name.
    pub name: String,
    /// Content size.
    pub total: u64,
    /// Payload bytes downloaded this run.
    pub downloaded: u64,
    /// Payload bytes uploaded this run.
    pub uploaded: u64,
    /// Time from start to completion, if the download completed in this run.
    pub download_time: Option<Duration>,
    /// Whether all pieces are verified at exit.
    pub complete: bool,
    /// Peers and web seeds that sent us data this run.
    pub peers_used: usize,
    /// How `--stream` ended, if it did.
    pub stream: Option<std::result::Result<stream::StreamEnd, String>>,
}

enum ConnEvent {
    /// A dial ended; with the transport it connected over, if it did.
    Ended(SocketAddr, Ended, Option<Transport>),
}

/// Runs one torrent until it is done (per the seed policy) or `shutdown` fires.
pub async fn run(
    session: Arc<Session>,
    source: Source,
    mut opts: Options,
    status_tx: watch::Sender<Status>,
    shutdown: CancellationToken,
) -> Result<Report> {
    let started = Instant::now();
    let (info_hash, name_hint, mut magnet_trackers, magnet_peers) = match &source {
        Source::Torrent(m) => (
            m.info_hash,
            Some(m.info.name.clone()),
            Vec::new(),
            Vec::new(),
        ),
        Source::Magnet(m) => (
            m.info_hash,
            m.name.clone(),
            m.trackers.clone(),
            m.peers.clone(),
        ),
    };
    // Incoming peers that ask for it before it is ready wait, not fail.
    let _expected = session.expect(info_hash);
    let listen_port = session.listen_port;
    let peer_id = session.peer_id;
    let torrent_token = shutdown.child_token();
    let private = matches!(&source, Source::Torrent(m) if m.info.private);
    let dht = if private { None } else { session.dht.clone() };
    let shared = Shared::create(
        info_hash,
        peer_id,
        listen_port,
        dht.as_ref().map(|_| listen_port),
        Limits {
            max_peers: opts.max_peers_per_torrent,
            max_per_ip: opts.max_per_ip,
        },
        torrent_token.clone(),
    );
    let _ = shared.rate_limits.set(
        opts.limits
            .clone()
            .unwrap_or_else(|| session.rate_limits.clone()),
    );
    let _ = shared.budget.set(session.budget.clone());
    let _ = shared.encryption.set(session.encryption);
    if let Some(tx) = &opts.events {
        let _ = shared.events.set(tx.clone());
    }
    // Completed files for `--json`, fed from the verified-piece log.
    let mut file_tracker: Option<(files::FileTracker, usize)> = None;

    let mut status = Status {
        name: name_hint.unwrap_or_else(|| info_hash.to_hex()),
        info_hash,
        phase: Phase::Starting,
        ..Status::default()
    };
    status_tx.send_replace(status.clone());

    let web_seeds = web_seed_urls(match &source {
        Source::Torrent(m) => &m.url_list,
        Source::Magnet(m) => &m.web_seeds,
    });
    let web_client = if web_seeds.is_empty() {
        None
    } else {
        crate::webseed::client(session.bind)
            .inspect_err(|e| tracing::warn!("web seeds disabled: {e}"))
            .ok()
    };

    // Made only while the metadata is awaited (a magnet).
    let mut metadata_rx = None;
    // Metadata known up front: check what is already on disk.
    let mut tiers: Vec<Vec<String>> = Vec::new();
    let mut complete_at_start = false;
    // The resume data on disk already says everything (nothing to save).
    let mut resume_current = false;
    match source {
        Source::Torrent(meta) => {
            tiers = meta.tracker_tiers();
            super::layers::installed(&shared, &meta);
            resume_current = Box::pin(install(
                &session,
                &shared,
                *meta,
                &opts,
                &status_tx,
                &mut status,
            ))
            .await?;
            complete_at_start = shared.is_complete();
        }
        Source::Magnet(m) => {
            tiers.extend(magnet_trackers.drain(..).map(|t| vec![t]));
            let cached = opts
                .state_dir
                .as_ref()
                .and_then(|d| load_cached_info(d, info_hash));
            match cached.map(|b| Metainfo::from_info_bytes(&b, tiers.clone())) {
                Some(Ok(meta)) => {
                    tracing::info!("using the metadata remembered from an earlier run");
                    resume_current = Box::pin(install(
                        &session,
                        &shared,
                        meta,
                        &opts,
                        &status_tx,
                        &mut status,
                    ))
                    .await?;
                    complete_at_start = shared.is_complete();
                }
                _ => {
                    metadata_rx = Some(shared.metadata_channel());
                    super::layers::await_metadata(&shared, info_hash, m.info_hash_v2);
                }
            }
        }
    }
    for t in &opts.trackers {
        tiers.push(vec![t.clone()]);
    }
    // Something to download: wait for a slot (`--max-active`), unless the
    // torrent stops first. Seeding needs none.
    let mut active_slot: Option<ActiveSlot> = None;
    let ticket = opts
        .ticket
        .take()
        .unwrap_or_else(|| session.queue.reserve(usize::MAX));
    if complete_at_start {
        drop(ticket);
    } else {
        status.phase = Phase::Queued;
        status_tx.send_replace(status.clone());
        tokio::select! {
            slot = ticket.enter() => active_slot = Some(slot),
            _ = torrent_token.cancelled() => {}
        }
    }
    // Reachable by incoming connections from here until the stop begins.
    let registered = session.register(shared.clone());
    start_web_seeds(&shared, &web_seeds, web_client.as_ref());

    // Discovery: trackers, DHT, explicit peers.
    // Channels and tasks exist only for the sources a torrent uses: each
    // channel costs about a kilobyte before it carries anything, and a
    // seedbox runs tens of thousands of torrents (see `maybe_channel`).
    let (totals_tx, totals_rx) = watch::channel(totals(&shared));
    let tracker_stats = Arc::new(TrackerStats::default());
    let has_trackers = !tiers.is_empty();
    let has_http = tiers.iter().flatten().any(|u| u.starts_with("http"));
    let (peer_tx, mut peer_rx) = maybe_channel::<Vec<SocketAddr>>(has_trackers, 256);
    // Only a torrent that takes commands can be asked to announce now.
    let (reannounce_tx, reannounce_rx) = match opts.commands.is_some() && has_trackers {
        true => {
            let (tx, rx) = watch::channel(0u64);
            (Some(tx), Some(rx))
        }
        false => (None, None),
    };
    let announcer = peer_tx.map(|peer_tx| {
        crate::tracker::spawn_announcer(
            AnnounceConfig {
                info_hash,
                peer_id,
                port: listen_port,
                external_port: session.external_port.clone(),
                bind: session.bind,
                tiers,
                numwant: 200,
                stop_timeout: Duration::from_secs(2),
                pace: Some(session.announce_pace.clone()),
                also_at: session.also_at.clone(),
                http_client: if has_http {
                    session.http_client()
                } else {
                    None
                },
                reannounce: reannounce_rx,
            },
            totals_rx,
            peer_tx,
            tracker_stats.clone(),
            torrent_token.clone(),
        )
    });
    let (dht_tx, mut dht_rx) = maybe_channel::<Vec<SocketAddr>>(dht.is_some(), 256);
    // Taken at a tick once a peer has sent PEX (`Shared::pex_sender`).
    let mut pex_rx: Option<mpsc::Receiver<Vec<(SocketAddr, u8)>>> = None;
    let (lsd_tx, mut lsd_rx) =
        maybe_channel::<Vec<SocketAddr>>(!private && session.lsd_running(), 64);
    if let Some(tx) = lsd_tx {
        let _ = shared.discovered.set(tx);
    }
    let dht_found = Arc::new(AtomicUsize::new(0));
    let connected_count = Arc::new(AtomicUsize::new(0));
    let dht_task = dht.as_ref().zip(dht_tx).map(|(d, dht_tx)| {
        let (c, sh) = (connected_count.clone(), shared.clone());
        let want_more: Arc<dyn Fn() -> bool + Send + Sync> =
            Arc::new(move || !sh.is_complete() && c.load(Ordering::Relaxed) < 10);
        crate::dht::spawn_discovery(
            d.clone(),
            info_hash,
            crate::dht::AnnouncePort {
                local: listen_port,
                external: session.external_port.clone(),
            },
            true,
            want_more,
            dht_tx,
            dht_found.clone(),
            torrent_token.clone(),
        )
    });
    let mut initial: Vec<SocketAddr> = opts.peers.clone();
    initial.extend(magnet_peers);
    if !complete_at_start
        && !has_trackers
        && dht.is_none()
        && (private || !session.lsd_running())
        && initial.is_empty()
        && web_seeds.is_empty()
    {
        // Nothing would ever say so otherwise: `finding peers` forever.
        let message = format!(
            "{}: nothing can find peers for this torrent (no trackers, DHT and LSD off): \
             waiting for incoming connections; use --peer to name one",
            status.name
        );
        tracing::warn!("{message}");
        shared.emit(super::status::SessionEvent::Warning { message });
    }

    // Made at the first dial: a seed nobody dials from has none.
    let mut ev: Option<(mpsc::Sender<ConnEvent>, mpsc::Receiver<ConnEvent>)> = None;

    let mut known: HashMap<SocketAddr, Known> = HashMap::new();
    // Dialled at the first tick, which comes at once.
    learn(
        &mut known,
        no_flags(initial),
        PeerSource::Manual,
        listen_port,
        session.bind,
    );
    status.peers_known = known.len();
    let mut choker = Choker::new(UPLOAD_SLOTS, rand::random());
    let mut last_choke = Instant::now() - CHOKE_INTERVAL;
    let mut rechoke_pending = false;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    // After an idle spell, one tick at once, not a burst of missed ones.
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // Seeding with nobody connected or being dialled: the loop runs no
    // timer (a thousand idle torrents must not wake the process 4,000
    // times a second); only an event, a peer, a redial or the seed time
    // wakes it. Only a tick sets it; every event clears it.
    let mut idle = false;
    // Per-source dial budgets (see `known::dial_order`).
    let mut pacer = DialPacer::default();
    let mut idle_until: Option<Instant> = None;
    let mut completed_at: Option<Instant> = complete_at_start.then(Instant::now);
    let mut download_time = None;
    let mut rates = status::RateWindow::default();
    let dialing = Arc::new(AtomicUsize::new(0));
    let mut seeding_since = completed_at;
    let mut verified_rx = shared.pieces_verified.subscribe();
    let mut stream_task = opts.stream.map(|index| {
        let shared = shared.clone();
        tokio::spawn(async move { stream::run(shared, index, tokio::io::stdout()).await })
    });
    let mut stream_end = None;
    let mut saver = opts
        .state_dir
        .as_ref()
        .map(|d| resume::Saver::new(d.clone(), &opts.output));
    if resume_current && let Some(s) = saver.as_mut() {
        s.saved_now(&shared);
    }
    let mut commands = opts.commands.take();

    loop {
        tokio::select! {
            _ = torrent_token.cancelled() => break,
            Some(cmd) = recv_some(&mut commands) => {
                if on_command(cmd, &shared, known.len(), reannounce_tx.as_ref()).is_break() {
                    break;
                }
            }
            r = async { stream_task.as_mut().expect("guarded").await }, if stream_task.is_some() => {
                stream_end = Some(match r {
                    Ok(Ok(end)) => Ok(end),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the stream task failed: {e}")),
                });
                break;
            }
            _ = shared.peer_joined.notified(), if idle => {
                idle = false;
                tick.reset_immediately();
            }
            _ = sleep_until_some(idle_until), if idle => {
                idle = false;
                tick.reset_immediately();
            }
            Some((addrs, source)) = async {
                tokio::select! {
                    Some(a) = recv_some(&mut peer_rx) => Some((no_flags(a), PeerSource::Tracker)),
                    Some(a) = recv_some(&mut dht_rx) => Some((no_flags(a), PeerSource::Dht)),
                    Some(a) = recv_some(&mut pex_rx) => Some((a, PeerSource::Pex)),
                    Some(a) = recv_some(&mut lsd_rx) => Some((no_flags(a), PeerSource::Lsd)),
                    else => None,
                }
            } => {
                idle = false;
                learn(&mut known, addrs, source, listen_port, session.bind);
                status.peers_known = known.len();
                dial_some(&mut known, &mut pacer, &shared, &session, &opts, &dialing, &mut ev);
            }
            Some(ConnEvent::Ended(addr, how, transport)) = async {
                match ev.as_mut() {
                    Some((_, rx)) => rx.recv().await,
                    None => None,
                }
            } => {
                idle = false;
                if let Some(k) = known.get_mut(&addr) {
                    k.ended(how, transport, Instant::now());
                }
                dial_some(&mut known, &mut pacer, &shared, &session, &opts, &dialing, &mut ev);
            }
            Some(info) = recv_some(&mut metadata_rx), if shared.data().is_none() => {
                let trackers = Vec::new();
                match super::layers::metainfo(&shared, &info, trackers) {
                    Ok(meta) => {
                        tracing::info!("metadata received: {} ({} bytes)", meta.info.name, info.len());
                        if let Some(dir) = &opts.state_dir {
                            save_cached_info(dir, info_hash, &info);
                        }
                        shared.lock().assembler = None;
                        status.name = meta.info.name.clone();
                        if Box::pin(install(&session, &shared, meta, &opts, &status_tx, &mut status)).await?
                            && let Some(s) = saver.as_mut()
                        {
                            s.saved_now(&shared);
                        }
                        start_web_seeds(&shared, &web_seeds, web_client.as_ref());
                        status.metadata_at = Some(started.elapsed());
                        tracing::info!(
                            "metadata complete {:.0} ms after start",
                            started.elapsed().as_secs_f64() * 1000.0
                        );
                    }
                    Err(e) => anyhow::bail!("the swarm's metadata matches the info-hash but is not a usable torrent: {e}"),
                }
            }
            // The first piece and the last one matter at once (timings,
            // `completed` to trackers, --no-seed exit): do not wait for a tick.
            Ok(()) = verified_rx.changed() => {
                let first_pending = status.first_piece_at.is_none() && !complete_at_start;
                if first_pending || (completed_at.is_none() && shared.is_complete()) {
                    tick.reset_immediately();
                }
            }
            _ = shared.rechoke.notified() => {
                idle = false;
                // At most one early round a second, however often peers
                // flip their interest: a round looks at every peer.
                if last_choke.elapsed() >= MIN_CHOKE_GAP {
                    rechoke(&shared, &mut choker);
                    last_choke = Instant::now();
                } else {
                    unchoke_free_slots(&shared, &choker);
                    rechoke_pending = true;
                }
            }
            _ = tick.tick(), if !idle => {
                let now = Instant::now();
                let gap = now.duration_since(last_choke);
                if gap >= CHOKE_INTERVAL || (rechoke_pending && gap >= MIN_CHOKE_GAP) {
                    rechoke(&shared, &mut choker);
                    last_choke = now;
                    rechoke_pending = false;
                }
                // Candidates left for want of their source's dial budget keep
                // the torrent ticking (not idle) until they are dialled.
                let paced = dial_some(&mut known, &mut pacer, &shared, &session, &opts, &dialing, &mut ev);
                totals_tx.send_if_modified(|t| {
                    let n = totals(&shared);
                    let changed = *t != n;
                    *t = n;
                    changed
                });
                // Status for the UI.
                let down = shared.counters.downloaded.load(Ordering::Relaxed);
                let up = shared.counters.uploaded.load(Ordering::Relaxed);
                if let Some((d, u)) = rates.sample(now.into_std(), down, up) {
                    status.down_rate = d;
                    status.up_rate = u;
                }
                count_peers(&shared, &mut status);
                if pex_rx.is_none() {
                    pex_rx = shared.take_pex_rx();
                }
                status.disk_paused = shared.disk_pause_active();
                status.blocked = crate::iface::blocked();
                connected_count.store(status.peers_connected, Ordering::Relaxed);
                status.downloaded = down;
                status.uploaded = up;
                status.trackers_ok = tracker_stats.trackers_ok();
                status.trackers_total = tracker_stats.trackers_total();
                status.dht_peers = dht_found.load(Ordering::Relaxed);
                status.dht_nodes = dht.as_ref().map_or(0, |d| d.routing_table_size());
                if let Some((have, total)) = shared.progress() {
                    status.have = have;
                    status.total = total;
                    if status.first_piece_at.is_none() && !complete_at_start && have > status.resumed_bytes {
                        status.first_piece_at = Some(started.elapsed());
                        tracing::info!(
                            "first piece verified {:.0} ms after start",
                            started.elapsed().as_secs_f64() * 1000.0
                        );
                    }
                }
                if shared.data().is_none() {
                    status.phase = if status.metadata_progress.1 > 0 { Phase::FetchingMetadata } else { Phase::FindingPeers };
                } else if shared.is_complete() {
                    status.phase = Phase::Seeding;
                } else {
                    status.phase = Phase::Downloading;
                }
                status_tx.send_replace(status.clone());
                let just_completed = completed_at.is_none() && shared.is_complete();
                if let Some(s) = saver.as_mut() {
                    s.tick(&shared, just_completed && !opts.no_seed);
                }

                if opts.events.is_some() {
                    emit_files_done(&shared, &mut file_tracker);
                }
                if just_completed {
                    shared.emit(status::SessionEvent::Complete {
                        elapsed: now.duration_since(started),
                        downloaded: down,
                    });
                    completed_at = Some(now);
                    seeding_since = Some(now);
                    download_time = Some(now.duration_since(started));
                    status.download_time = download_time;
                    on_complete(&shared);
                    // Seeding does not hold a download slot.
                    active_slot = None;
                    status.phase = Phase::Seeding;
                    status_tx.send_replace(status.clone());
                    if opts.no_seed {
                        break;
                    }
                }
                if let Some(since) = seeding_since {
                    if opts.no_seed {
                        break;
                    }
                    if let Some(why) = seed_limit((opts.seed_time, opts.seed_ratio), now.duration_since(since), up, status.total) {
                        tracing::info!("{why}");
                        break;
                    }
                    if stream_task.is_none()
                        && !paced
                        && status.peers_connected == 0
                        && status.web_seeds == 0
                        && dialing.load(Ordering::Relaxed) == 0
                    {
                        idle = true;
                        idle_until = next_wake(&known, opts.seed_time.map(|t| since + t), Instant::now());
                        // Nobody to serve: no descriptor held while idle.
                        if let Some(d) = shared.data() {
                            d.storage.close_files();
                        }
                    }
                }
            }
        }
    }

    // Orderly shutdown: peers first, then pending writes, flush, trackers.
    status.phase = Phase::Stopping;
    status_tx.send_replace(status.clone());
    torrent_token.cancel();
    drop(registered);
    drop(active_slot);
    // Peer tasks push out a last message and end within a fraction of a second.
    shared.tasks.close();
    let _ = Box::pin(tokio::time::timeout(
        Duration::from_secs(1),
        shared.tasks.wait(),
    ))
    .await;
    shared.disk_tasks.close();
    let _ = Box::pin(tokio::time::timeout(
        SHUTDOWN_GRACE,
        shared.disk_tasks.wait(),
    ))
    .await;
    if let Some(data) = shared.data().cloned() {
        let flush = tokio::task::spawn_blocking(move || data.storage.sync());
        if let Ok(Ok(Err(e))) = tokio::time::timeout(SHUTDOWN_GRACE, flush).await {
            tracing::warn!("flushing data to disk: {e}");
        }
    }
    if let Some(s) = saver
        && Box::pin(tokio::time::timeout(SHUTDOWN_GRACE, s.finish(&shared)))
            .await
            .is_err()
    {
        tracing::warn!("resume data not saved in time");
    }
    if let Some(announcer) = announcer {
        let _ = tokio::time::timeout(SHUTDOWN_GRACE, announcer).await;
    }
    if let Some(t) = dht_task {
        let _ = tokio::time::timeout(Duration::from_secs(1), t).await;
    }
    if let Some(msg) = shared
        .fatal
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .take()
    {
        anyhow::bail!(msg);
    }
    let complete = shared.is_complete();
    Ok(Report {
        name: status.name.clone(),
        total: status.total,
        downloaded: shared.counters.downloaded.load(Ordering::Relaxed),
        uploaded: shared.counters.uploaded.load(Ordering::Relaxed),
        download_time,
        complete,
        peers_used: status.peers_used,
        stream: stream_end,
    })
}

/// The connection counts of the status, from the peer table.
fn count_peers(shared: &Shared, status: &mut Status) {
    let st = shared.lock();
    status.peers_connected = st.peers.len();
    status.seeds_connected = st.peers.values().filter(|p| p.seed).count();
    status.peers_utp = st
        .peers
        .values()
        .filter(|p| p.link.transport == Transport::Utp)
        .count();
    status.peers_encrypted = st.peers.values().filter(|p| p.link.encrypted).count();
    status.web_seeds = st.web_seed_strikes.len();
    status.peers_used = st.sources.len();
    if let Some(a) = &st.assembler {
        status.metadata_progress = a.progress();
    }
}

/// `--json`'s `file_done` events for the pieces verified since the last
/// call (`tracker` holds the per-file count and the log cursor).
fn emit_files_done(shared: &Shared, tracker: &mut Option<(files::FileTracker, usize)>) {
    let Some(data) = shared.data() else { return };
    let (tracker, cursor) =
        tracker.get_or_insert_with(|| (files::FileTracker::new(&data.meta.info, data.geometry), 0));
    let new: Vec<u32> = {
        let st = shared.lock();
        let new = st.verified_log.get(*cursor..).unwrap_or_default().to_vec();
        *cursor = st.verified_log.len();
        new
    };
    for piece in new {
        for (index, path) in tracker.on_piece(piece) {
            shared.emit(status::SessionEvent::FileDone { index, path });
        }
    }
}

/// Which seed limit (`--seed-time`, `--seed-ratio`) is reached after
/// seeding for `seeded` with `up` bytes sent of `total`, if one is.
fn seed_limit(
    (seed_time, seed_ratio): (Option<Duration>, Option<f64>),
    seeded: Duration,
    up: u64,
    total: u64,
) -> Option<&'static str> {
    if seed_time.is_some_and(|t| seeded >= t) {
        return Some("seed time reached");
    }
    match seed_ratio {
        Some(r) if total > 0 && up as f64 / total as f64 >= r => Some("seed ratio reached"),
        _ => None,
    }
}

/// Handles one [`Command`]; `Break` ends the torrent.
fn on_command(
    cmd: Command,
    shared: &Shared,
    peers_known: usize,
    reannounce: Option<&watch::Sender<u64>>,
) -> std::ops::ControlFlow<()> {
    match cmd {
        Command::Stop => return std::ops::ControlFlow::Break(()),
        Command::Snapshot(reply) => {
            let _ = reply.send(snapshot(shared, peers_known));
        }
        Command::Reannounce => {
            if let Some(tx) = reannounce {
                tx.send_modify(|n| *n += 1);
            }
        }
    }
    std::ops::ControlFlow::Continue(())
}

/// What [`Command::Snapshot`] answers.
fn snapshot(shared: &Shared, peers_known: usize) -> Snapshot {
    let st = shared.lock();
    let file_done = match (shared.data(), st.picker.as_ref()) {
        (Some(d), Some(p)) => files::file_done(&d.meta.info, &d.geometry, p.have()),
        _ => Vec::new(),
    };
    let peers = st
        .peers
        .values()
        .map(|p| PeerView {
            addr: p.addr,
            down_rate: p.down_rate,
            up_rate: p.up_rate,
            seed: p.seed,
            utp: p.link.transport == Transport::Utp,
            encrypted: p.link.encrypted,
            outgoing: p.outgoing,
            interested: p.interested,
            choked: p.choked,
            client: client_name(&p.peer_id.0),
        })
        .collect();
    Snapshot {
        file_done,
        peers,
        peers_known,
    }
}

/// The Azureus-style client tag of a peer id (`-TR3000-` → `TR3000`), or
/// an empty string.
fn client_name(id: &[u8; 20]) -> String {
    match id {
        [b'-', tag @ .., b'-', _, _, _, _, _, _, _, _, _, _, _, _]
            if tag.iter().all(u8::is_ascii_alphanumeric) =>
        {
            String::from_utf8_lossy(tag).into_owned()
        }
        _ => String::new(),
    }
}

/// The usable web seed URLs among `urls`, without repeats, at most
/// [`MAX_WEB_SEEDS`](crate::webseed::MAX_WEB_SEEDS).
fn web_seed_urls(urls: &[String]) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for u in urls {
        if !crate::webseed::is_usable(u) {
            tracing::info!("ignoring web seed {u}: only http and https are supported");
        } else if !out.contains(u) && out.len() < crate::webseed::MAX_WEB_SEEDS {
            out.push(u.clone());
        }
    }
    out
}

/// Starts the web seed tasks once the metadata is installed, unless there
/// is nothing left to fetch. They end on their own (complete, given up) or
/// with the torrent.
fn start_web_seeds(shared: &Arc<Shared>, urls: &[String], client: Option<&reqwest::Client>) {
    let Some(client) = client else { return };
    if shared.data().is_none() || shared.is_complete() {
        return;
    }
    for url in urls {
        crate::webseed::spawn(
            shared.clone(),
            client.clone(),
            url.clone(),
            &shared.tasks,
            shared.shutdown.clone(),
        );
    }
}

/// Checks the disk for existing data (hashing only what resume data does
/// not vouch for), then makes the torrent live. Returns whether the resume
/// data on disk already says all of it (complete, every piece trusted):
/// then there is nothing to save.
async fn install(
    session: &Session,
    shared: &Arc<Shared>,
    meta: Metainfo,
    opts: &Options,
    status_tx: &watch::Sender<Status>,
    status: &mut Status,
) -> Result<bool> {
    let geometry = Geometry::new(meta.info.total_length, meta.info.piece_length);
    let mut storage = Storage::new(&opts.output, &meta.info).context("laying out the files")?;
    let selected = match &opts.selection {
        Some(sel) => Some(
            crate::select::selected_files(&meta.info, sel)
                .map_err(anyhow::Error::msg)
                .context("selecting files")?,
        ),
        None => None,
    };
    let wanted = selected.as_ref().map(|s| {
        storage.select(s, &format!(".btc-parts-{}", meta.info_hash.to_hex()));
        crate::select::wanted_pieces(&meta.info, &geometry, s)
    });
    status.total = match &wanted {
        Some(w) => w
            .iter_ones()
            .map(|i| u64::from(geometry.piece_len(i as u32)))
            .sum(),
        None => geometry.total_length,
    };
    status.name = meta.info.name.clone();
    let data = Arc::new(TorrentData {
        meta,
        geometry,
        storage,
    });
    let progress = Arc::new(AtomicU32::new(0));
    // One check per core at a time, however many torrents start together.
    // The slot is taken before the blocking job is spawned: 50,000 torrents
    // starting at once must not start a blocking thread each (the pool
    // grows to 512 threads while they wait).
    let _turn = session.checks.acquire().await;
    let check = {
        let data = data.clone();
        let progress = progress.clone();
        let threads = session.cores;
        let overwrite = opts.overwrite;
        let (state_dir, recheck) = (opts.state_dir.clone(), opts.check);
        let output = resume::output_key(&opts.output);
        tokio::task::spawn_blocking(move || {
            let (trusted, on_disk) = resume::plan(state_dir.as_deref(), &data, &output, recheck);
            let current = trusted.is_full() && on_disk.is_full();
            let mut to_check = Bitfield::new(trusted.len());
            for i in (0..trusted.len()).filter(|&i| !trusted.get(i)) {
                to_check.set(i);
            }
            let mut have = data.storage.check_existing(
                &data.geometry,
                &data.meta.info,
                &to_check,
                threads,
                &progress,
            );
            for i in on_disk.iter_ones() {
                have.set(i);
            }
            let prepared = data
                .storage
                .prepare(&have, overwrite)
                .map(|()| (have, current));
            // Checked and sized: whatever reads or writes next reopens
            // its files (no descriptor per torrent waiting or seeding).
            data.storage.close_files();
            prepared
        })
    };
    tokio::pin!(check);
    let (have, resume_current): (Bitfield, bool) = loop {
        tokio::select! {
            r = &mut check => break r.context("checking existing data")?.context("preparing the output files")?,
            _ = tokio::time::sleep(Duration::from_millis(100)) => {
                status.phase = Phase::Checking {
                    done: progress.load(Ordering::Relaxed),
                    total: geometry.piece_count,
                };
                status_tx.send_replace(status.clone());
            }
        }
    };
    if have.count() > 0 {
        tracing::info!(
            "{} of {} pieces already on disk",
            have.count(),
            geometry.piece_count
        );
    }
    status.resumed_pieces = have.count();
    status.resumed_bytes = have
        .iter_ones()
        .map(|i| geometry.piece_len(i as u32) as u64)
        .sum();
    shared.emit(status::SessionEvent::Metadata {
        name: data.meta.info.name.clone(),
        size: geometry.total_length,
        pieces: geometry.piece_count,
        piece_length: geometry.piece_length,
        files: data
            .meta
            .info
            .files
            .iter()
            .filter(|f| !f.pad)
            .map(|f| (f.path.join("/"), f.length))
            .collect(),
        info_hash_v2: data.meta.v2.as_ref().map(|v| v.hash_hex()),
    });
    let sequential = match opts.stream {
        Some(index) => Some(crate::select::file_pieces(
            &data.meta.info,
            &geometry,
            index,
        )),
        None => opts
            .sequential
            .then(|| crate::select::file_end_pieces(&data.meta.info, &geometry)),
    };
    shared.install(data, have, sequential, wanted);
    Ok(resume_current)
}

/// A bounded channel when `wanted`, else neither end: an idle torrent
/// pays for the channels of the sources it uses only.
fn maybe_channel<T>(
    wanted: bool,
    cap: usize,
) -> (Option<mpsc::Sender<T>>, Option<mpsc::Receiver<T>>) {
    if wanted {
        let (tx, rx) = mpsc::channel(cap);
        (Some(tx), Some(rx))
    } else {
        (None, None)
    }
}

/// The next message of `rx`; `None` at once when there is no channel
/// (a `select!` branch then stays disabled, as for a closed one).
async fn recv_some<T>(rx: &mut Option<mpsc::Receiver<T>>) -> Option<T> {
    match rx {
        Some(rx) => rx.recv().await,
        None => None,
    }
}

/// Sleeps until `at`, or forever when there is nothing to wait for.
async fn sleep_until_some(at: Option<Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
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

/// Download finished: seeds are of no more use to us, drop them.
fn on_complete(shared: &Shared) {
    let st = shared.lock();
    for p in st.peers.values().filter(|p| p.seed) {
        let _ = p.tx.try_send(PeerCommand::Close);
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

/// Dials the best candidates there is room for (see [`dial_order`]).
/// Returns whether due candidates were left for want of their source's
/// dial budget: the torrent must not go idle on them.
fn dial_some(
    known: &mut HashMap<SocketAddr, Known>,
    pacer: &mut DialPacer,
    shared: &Arc<Shared>,
    session: &Session,
    opts: &Options,
    dialing: &Arc<AtomicUsize>,
    ev: &mut Option<(mpsc::Sender<ConnEvent>, mpsc::Receiver<ConnEvent>)>,
) -> bool {
    if shared.shutdown.is_cancelled() {
        return false;
    }
    // `--interface` is down: dials wait for it (they would only fail and
    // back off); the torrent keeps ticking to dial when it is back.
    if crate::iface::blocked() {
        return !known.is_empty();
    }
    let st = shared.lock();
    let mut per_ip: HashMap<IpAddr, usize> = HashMap::new();
    for p in st.peers.values() {
        *per_ip.entry(p.addr.ip()).or_insert(0) += 1;
    }
    // Where connected peers listen: a peer that dialled us is heard of
    // again (LSD, PEX, a tracker) at its listen address, and dialling that
    // would only open a duplicate of a working connection.
    let connected: HashSet<SocketAddr> = st
        .peers
        .values()
        .filter_map(PeerEntry::listen_addr)
        .collect();
    // A seed dials too (behind NAT that is its only way to upload), but not
    // peers that were seeds themselves.
    let seeding = st.picker.as_ref().is_some_and(|p| p.is_complete());
    let now = Instant::now();
    // This torrent's share, the process's room, and the half-open dials
    // of the whole process.
    let in_progress = dialing.load(Ordering::Relaxed);
    let process = &session.budget;
    let budget = opts
        .max_peers_per_torrent
        .saturating_sub(st.peers.len() + in_progress)
        .min(process.room())
        .min(MAX_HALF_OPEN.saturating_sub(process.dialing.load(Ordering::Relaxed)));
    let (chosen, held_back) = dial_order(known, pacer, now, budget, |addr, k| {
        let ok = !connected.contains(addr)
            && (!seeding || !k.seed)
            && !st.banned.contains(&addr.ip())
            && per_ip.get(&addr.ip()).copied().unwrap_or(0) < opts.max_per_ip;
        if ok {
            *per_ip.entry(addr.ip()).or_insert(0) += 1;
        }
        ok
    });
    let ev_tx = if chosen.is_empty() {
        return held_back;
    } else {
        ev.get_or_insert_with(|| mpsc::channel(256)).0.clone()
    };
    for addr in chosen {
        let Some(k) = known.get_mut(&addr) else {
            continue;
        };
        tracing::info!("dialing {addr} (from {})", k.source);
        k.dialing = true;
        dialing.fetch_add(1, Ordering::Relaxed);
        process.dialing.fetch_add(1, Ordering::Relaxed);
        let (source, utp_first) = (k.source, k.utp_first);
        let (addr, shared, dialer, ev_tx, dialing, process) = (
            addr,
            shared.clone(),
            session.dialer(),
            ev_tx.clone(),
            dialing.clone(),
            process.clone(),
        );
        let tasks = shared.tasks.clone();
        crate::spawn::named(&tasks, "dial", async move {
            let host = host::as_host(&shared);
            // A dial still trying (a uTP SYN to a dead port waits seconds)
            // must not hold up the torrent's shutdown.
            let res = tokio::select! {
                r = conn::connect(addr, &dialer, utp_first, &*host) => Some(r),
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
                        Err(e) => {
                            tracing::debug!("peer {addr}: {}", crate::error_chain(&e));
                            blocked_or(Ended::Failed)
                        }
                    }
                }
                Err(e) => {
                    tracing::debug!("dialing {addr}: {}", crate::error_chain(&e));
                    blocked_or(Ended::Failed)
                }
            };
            let _ = ev_tx.send(ConnEvent::Ended(addr, how, transport)).await;
        });
    }
    held_back
}

/// `how`, unless `--interface` is down: then the failure is not the peer's.
fn blocked_or(how: Ended) -> Ended {
    if crate::iface::blocked() {
        Ended::Blocked
    } else {
        how
    }
}

fn cached_info_path(dir: &std::path::Path, ih: InfoHash) -> PathBuf {
    dir.join("metadata").join(format!("{}.info", ih.to_hex()))
}

/// Reads an info dict remembered from an earlier run, if it still matches.
pub fn load_cached_info(dir: &std::path::Path, ih: InfoHash) -> Option<Vec<u8>> {
    use sha1::{Digest, Sha1};
    let bytes = std::fs::read(cached_info_path(dir, ih)).ok()?;
    (Sha1::digest(&bytes).as_slice() == ih.0).then_some(bytes)
}

/// Remembers a fetched info dict so the same magnet starts at once next time.
pub fn save_cached_info(dir: &std::path::Path, ih: InfoHash, info: &[u8]) {
    let path = cached_info_path(dir, ih);
    let tmp = path.with_extension("tmp");
    let r = path
        .parent()
        .map_or(Ok(()), std::fs::create_dir_all)
        .and_then(|()| std::fs::write(&tmp, info))
        .and_then(|()| std::fs::rename(&tmp, &path));
    if let Err(e) = r {
        tracing::warn!("could not remember the metadata in {}: {e}", path.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeding_stops_at_the_first_limit_reached() {
        let s = Duration::from_secs;
        assert_eq!(seed_limit((None, None), s(1_000_000), 1 << 40, 1), None);
        assert_eq!(
            seed_limit((Some(s(60)), None), s(60), 0, 100),
            Some("seed time reached")
        );
        assert_eq!(seed_limit((Some(s(60)), None), s(59), 0, 100), None);
        assert_eq!(
            seed_limit((None, Some(2.0)), s(1), 200, 100),
            Some("seed ratio reached")
        );
        assert_eq!(seed_limit((None, Some(2.0)), s(1), 199, 100), None);
        // The size is not known yet (a magnet): no ratio.
        assert_eq!(seed_limit((None, Some(0.0)), s(1), 0, 0), None);
    }

    #[test]
    fn a_client_name_is_read_from_an_azureus_style_peer_id() {
        assert_eq!(client_name(b"-TR3000-abcdefghijkl"), "TR3000");
        assert_eq!(client_name(b"-bt0100-abcdefghijkl"), "bt0100");
        assert_eq!(client_name(b"M7-2-0--abcdefghijkl"), "");
        assert_eq!(client_name(&[0xff; 20]), "");
    }
}
