//! The torrent actor: its state, the events that wake it, and one small
//! handler per event. [`Torrent::start`] gets it ready (metadata installed
//! when known, a download slot, discovery running), [`Torrent::run`] waits
//! for events and hands each to its handler until the torrent is done or
//! told to stop, and [`Torrent::stop`] shuts its part down in order.

use super::choke::ChokeSchedule;
use super::dial::{DialEnded, Dials};
use super::discovery::{Discovery, Plan, SwarmOf, recv_some};
use super::install::{WebSeeds, install, load_cached_info, save_cached_info};
use super::{Command, Options, PeerView, Report, Snapshot, Source, client_name, seed_limit};
use crate::id::InfoHash;
use crate::magnet::Magnet;
use crate::metainfo::Metainfo;
use crate::peer::transport::Transport;
use crate::session::known::{PeerSource, no_flags};
use crate::session::queue::ActiveSlot;
use crate::session::shared::{Limits, PeerCommand, PexBatch, Shared};
use crate::session::status::{self, Phase, Status};
use crate::session::{Expected, Registered, Session, files, resume, stream};
use anyhow::Result;
use bytes::Bytes;
use std::ops::ControlFlow;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, Interval};
use tokio_util::sync::CancellationToken;

/// Time allowed for disk writes to drain and resume data to be saved.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(3);
/// The actor's clock while anything is going on.
const TICK: Duration = Duration::from_millis(250);

/// What wakes the actor.
enum Event {
    /// The torrent's token: the process or its owner stops it.
    Cancelled,
    Command(Command),
    /// `--stream` ended (the player went away, or every byte was sent).
    StreamEnded(std::result::Result<stream::StreamEnd, String>),
    /// An idle seed has something to do: a peer came, or a redial is due.
    Wake,
    Discovered(PexBatch, PeerSource, SwarmOf),
    DialEnded(DialEnded),
    /// The swarm's info dict, checked against the info-hash.
    Metadata(Bytes),
    PieceVerified,
    /// A peer's interest changed.
    InterestChanged,
    Tick,
}

/// One torrent, running.
pub(super) struct Torrent {
    session: Arc<Session>,
    shared: Arc<Shared>,
    opts: Options,
    info_hash: InfoHash,
    started: Instant,
    /// Cancels everything of this torrent (a child of the caller's).
    token: CancellationToken,
    status: Status,
    status_tx: watch::Sender<Status>,
    complete_at_start: bool,
    web_seeds: WebSeeds,
    /// Open only while a magnet's metadata is awaited.
    metadata_rx: Option<mpsc::Receiver<Bytes>>,
    /// Completed files for `--json`, fed from the verified-piece log.
    file_tracker: Option<(files::FileTracker, usize)>,
    /// Held while there is something to download (`--max-active`).
    active_slot: Option<ActiveSlot>,
    /// Reachable by incoming connections until the stop begins.
    registered: Option<Registered>,
    /// A hybrid's other swarm, routed to us too, once joined.
    other_swarm: Option<Registered>,
    /// Incoming peers that ask for it before it is ready wait, not fail.
    _expected: Expected,
    discovery: Discovery,
    dials: Dials,
    choke: ChokeSchedule,
    tick: Interval,
    /// Seeding with nobody connected or being dialled: the loop runs no
    /// timer (a thousand idle torrents must not wake the process 4,000
    /// times a second); only an event, a peer, a redial or the seed time
    /// wakes it. Only a tick sets it.
    idle: bool,
    /// While idle: when the next redial or the end of the seed time is
    /// due, if ever. Boxed and kept here rather than made in every wait:
    /// a timer is a large part of the wait's state, and most idle
    /// torrents have nothing due.
    idle_until: Option<Pin<Box<tokio::time::Sleep>>>,
    completed_at: Option<Instant>,
    download_time: Option<Duration>,
    seeding_since: Option<Instant>,
    rates: status::RateWindow,
    verified_rx: watch::Receiver<u64>,
    stream_task: Option<JoinHandle<std::io::Result<stream::StreamEnd>>>,
    stream_end: Option<std::result::Result<stream::StreamEnd, String>>,
    saver: Option<resume::Saver>,
    commands: Option<mpsc::Receiver<Command>>,
}

impl Torrent {
    /// Gets the torrent ready: the metadata installed (and the data on
    /// disk checked) when it is known, a download slot when there is
    /// something to download, discovery started. An error here leaves
    /// nothing running.
    pub(super) async fn start(
        session: Arc<Session>,
        source: Source,
        mut opts: Options,
        (status_tx, expected, turn): (
            watch::Sender<Status>,
            Expected,
            Option<tokio::sync::OwnedSemaphorePermit>,
        ),
        shutdown: CancellationToken,
    ) -> Result<Torrent> {
        let started = Instant::now();
        let (info_hash, name_hint) = match &source {
            Source::Torrent(m) => (m.info_hash, Some(m.info.name.clone())),
            Source::Magnet(m) => (m.info_hash, m.name.clone()),
        };
        let token = shutdown.child_token();
        let private = matches!(&source, Source::Torrent(m) if m.info.private);
        let shared = make_shared(&session, &opts, info_hash, private, &token);
        let mut status = Status {
            name: name_hint.unwrap_or_else(|| info_hash.to_hex()),
            info_hash,
            phase: Phase::Starting,
            ..Status::default()
        };
        status_tx.send_replace(status.clone());
        let web_seeds = WebSeeds::new(
            match &source {
                Source::Torrent(m) => &m.url_list,
                Source::Magnet(m) => &m.web_seeds,
            },
            session.bind,
        );

        let AtStart {
            mut tiers,
            initial,
            metadata_rx,
            hybrid,
            resume_current,
        } = Box::pin(known_at_start(
            &session,
            &shared,
            source,
            &opts,
            &status_tx,
            &mut status,
        ))
        .await?;
        // Ready (or waiting for its metadata): the next torrent's turn.
        drop(turn);
        let complete_at_start = shared.is_complete();
        for t in &opts.trackers {
            tiers.push(vec![t.clone()]);
        }

        let active_slot = wait_for_slot(
            &session,
            &mut opts,
            complete_at_start,
            &token,
            &status_tx,
            &mut status,
        )
        .await;
        let registered = session.register(shared.clone());
        web_seeds.start(&shared);

        let discovery = Discovery::start(
            &session,
            &shared,
            Plan {
                info_hash,
                tiers,
                private,
                takes_commands: opts.commands.is_some(),
            },
            &token,
        );
        if !complete_at_start
            && discovery.finds_nothing()
            && initial.is_empty()
            && web_seeds.is_empty()
        {
            warn_unfindable(&shared, &status.name);
        }
        let mut dials = Dials::new();
        // Dialled at the first tick, which comes at once.
        dials.learn(
            no_flags(initial),
            PeerSource::Manual,
            SwarmOf::Main,
            session.listen_port,
            session.bind,
        );
        status.peers_known = dials.known();

        let mut tick = tokio::time::interval(TICK);
        // After an idle spell, one tick at once, not a burst of missed ones.
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let completed_at = complete_at_start.then(Instant::now);
        let verified_rx = shared.pieces_verified.subscribe();
        let stream_task = opts.stream.map(|index| {
            let shared = shared.clone();
            tokio::spawn(async move { stream::run(shared, index, tokio::io::stdout()).await })
        });
        let mut saver = opts
            .state_dir
            .as_ref()
            .map(|d| resume::Saver::new(d.clone(), &opts.output));
        if resume_current && let Some(s) = saver.as_mut() {
            s.saved_now(&shared);
        }
        let commands = opts.commands.take();
        let mut torrent = Torrent {
            session,
            shared,
            opts,
            info_hash,
            started,
            token,
            status,
            status_tx,
            complete_at_start,
            web_seeds,
            metadata_rx,
            file_tracker: None,
            active_slot,
            registered: Some(registered),
            other_swarm: None,
            _expected: expected,
            discovery,
            dials,
            choke: ChokeSchedule::new(),
            tick,
            idle: false,
            idle_until: None,
            completed_at,
            download_time: None,
            seeding_since: completed_at,
            rates: status::RateWindow::default(),
            verified_rx,
            stream_task,
            stream_end: None,
            saver,
            commands,
        };
        if let Some((v1, v2)) = hybrid {
            torrent.join_both_swarms(v1, v2);
        }
        Ok(torrent)
    }

    /// A hybrid torrent (BEP 52) is one torrent in two swarms: announce
    /// and look up both hashes, take peers on either, dial each peer with
    /// the hash of the swarm it was found in.
    fn join_both_swarms(&mut self, v1: InfoHash, v2: InfoHash) {
        if self.shared.hybrid.set((v1, v2)).is_err() {
            return;
        }
        let Some(other) = self.shared.other_swarm() else {
            return;
        };
        match self.session.register_swarm(self.shared.clone(), other) {
            Some(r) => self.other_swarm = Some(r),
            None => {
                tracing::warn!(
                    "{}: another torrent of this process runs its other swarm ({other}); staying in {} only",
                    self.status.name,
                    self.info_hash
                );
                return;
            }
        }
        self.discovery
            .join_other_swarm(&self.session, &self.shared, other, &self.token);
        tracing::info!("hybrid torrent: in the swarms of {v1} (v1) and {v2} (v2)");
    }

    /// Handles events until the torrent is done (per the seed policy) or
    /// told to stop; an error is one the torrent cannot go on after.
    pub(super) async fn run(&mut self) -> Result<()> {
        loop {
            let event = self.next_event().await;
            if self.handle(event).await?.is_break() {
                return Ok(());
            }
        }
    }

    /// Waits for whatever happens first.
    async fn next_event(&mut self) -> Event {
        let Torrent {
            token,
            commands,
            stream_task,
            shared,
            idle,
            idle_until,
            discovery,
            dials,
            metadata_rx,
            verified_rx,
            tick,
            ..
        } = self;
        let idle = *idle;
        let due = idle && idle_until.is_some();
        let awaiting_metadata = shared.data().is_none();
        tokio::select! {
            _ = token.cancelled() => Event::Cancelled,
            Some(cmd) = recv_some(commands) => Event::Command(cmd),
            r = async { stream_task.as_mut().expect("guarded").await }, if stream_task.is_some() => {
                Event::StreamEnded(match r {
                    Ok(Ok(end)) => Ok(end),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(e) => Err(format!("the stream task failed: {e}")),
                })
            }
            _ = shared.peer_joined.notified(), if idle => Event::Wake,
            _ = async { idle_until.as_mut().expect("guarded").await }, if due => Event::Wake,
            Some((addrs, source, swarm)) = discovery.next() => Event::Discovered(addrs, source, swarm),
            Some(ended) = dials.next_ended() => Event::DialEnded(ended),
            Some(info) = recv_some(metadata_rx), if awaiting_metadata => Event::Metadata(info),
            Ok(()) = verified_rx.changed() => Event::PieceVerified,
            _ = shared.rechoke.notified() => Event::InterestChanged,
            _ = tick.tick(), if !idle => Event::Tick,
        }
    }

    async fn handle(&mut self, event: Event) -> Result<ControlFlow<()>> {
        match event {
            Event::Cancelled => return Ok(ControlFlow::Break(())),
            Event::Command(cmd) => return Ok(self.on_command(cmd)),
            Event::StreamEnded(end) => {
                self.stream_task = None;
                self.stream_end = Some(end);
                return Ok(ControlFlow::Break(()));
            }
            Event::Wake => {
                self.idle = false;
                self.tick.reset_immediately();
            }
            Event::Discovered(addrs, source, swarm) => {
                self.idle = false;
                self.dials.learn(
                    addrs,
                    source,
                    swarm,
                    self.session.listen_port,
                    self.session.bind,
                );
                self.status.peers_known = self.dials.known();
                self.dial_some();
            }
            Event::DialEnded(ended) => {
                self.idle = false;
                self.dials.on_ended(ended);
                self.dial_some();
            }
            Event::Metadata(info) => self.on_metadata(info).await?,
            Event::PieceVerified => self.on_piece_verified(),
            Event::InterestChanged => {
                self.idle = false;
                self.choke.on_interest_changed(&self.shared);
            }
            Event::Tick => return Ok(self.on_tick()),
        }
        Ok(ControlFlow::Continue(()))
    }

    /// Handles one [`Command`]; `Break` ends the torrent.
    fn on_command(&mut self, cmd: Command) -> ControlFlow<()> {
        match cmd {
            Command::Stop => return ControlFlow::Break(()),
            Command::Snapshot(reply) => {
                let _ = reply.send(self.snapshot());
            }
            Command::Reannounce => self.discovery.reannounce(),
        }
        ControlFlow::Continue(())
    }

    /// The swarm's info dict arrived (checked against the info-hash by the
    /// assembler): make it the torrent's.
    async fn on_metadata(&mut self, info: Bytes) -> Result<()> {
        let meta =
            crate::session::layers::metainfo(&self.shared, &info, Vec::new()).map_err(|e| {
                anyhow::anyhow!(
                    "the swarm's metadata matches the info-hash but is not a usable torrent: {e}"
                )
            })?;
        tracing::info!(
            "metadata received: {} ({} bytes)",
            meta.info.name,
            info.len()
        );
        if let Some(dir) = &self.opts.state_dir {
            save_cached_info(dir, self.info_hash, &info);
        }
        self.metadata_rx = None;
        self.shared.lock().assembler = None;
        let hybrid = hybrid_of(&meta);
        self.status.name = meta.info.name.clone();
        let current = Box::pin(install(
            &self.session,
            &self.shared,
            meta,
            &self.opts,
            &self.status_tx,
            &mut self.status,
        ))
        .await?;
        if current && let Some(s) = self.saver.as_mut() {
            s.saved_now(&self.shared);
        }
        self.web_seeds.start(&self.shared);
        if let Some((v1, v2)) = hybrid {
            self.join_both_swarms(v1, v2);
        }
        self.status.metadata_at = Some(self.started.elapsed());
        tracing::info!(
            "metadata complete {:.0} ms after start",
            self.started.elapsed().as_secs_f64() * 1000.0
        );
        Ok(())
    }

    /// The first piece and the last one matter at once (timings,
    /// `completed` to trackers, `--no-seed` exit): do not wait for a tick.
    fn on_piece_verified(&mut self) {
        let first_pending = self.status.first_piece_at.is_none() && !self.complete_at_start;
        if first_pending || (self.completed_at.is_none() && self.shared.is_complete()) {
            self.tick.reset_immediately();
        }
    }

    /// Dials what there is room for; whether candidates were held back.
    fn dial_some(&mut self) -> bool {
        self.dials.dial_some(
            &self.shared,
            &self.session,
            self.opts.max_peers_per_torrent,
            self.opts.max_per_ip,
        )
    }

    /// The actor's clock: choking rounds, dials, the status, resume data,
    /// completion and the seed policy.
    fn on_tick(&mut self) -> ControlFlow<()> {
        let now = Instant::now();
        self.choke.on_tick(&self.shared, now);
        crate::session::layers::expire_leaf_asks(&self.shared, now.into_std());
        // Candidates left for want of their source's dial budget keep the
        // torrent ticking (not idle) until they are dialled.
        let paced = self.dial_some();
        self.refresh_status(now);
        let just_completed = self.completed_at.is_none() && self.shared.is_complete();
        if let Some(s) = self.saver.as_mut() {
            s.tick(&self.shared, just_completed && !self.opts.no_seed);
        }
        if self.opts.events.is_some() {
            emit_files_done(&self.shared, &mut self.file_tracker);
        }
        if just_completed {
            self.on_completed(now);
            if self.opts.no_seed {
                return ControlFlow::Break(());
            }
        }
        match self.seeding_since {
            Some(since) => self.seed_policy(since, now, paced),
            None => ControlFlow::Continue(()),
        }
    }

    /// The status for the UI, from the peer table, the counters and the
    /// discovery sources.
    fn refresh_status(&mut self, now: Instant) {
        let shared = &self.shared;
        let status = &mut self.status;
        let down = shared.counters.downloaded.load(Ordering::Relaxed);
        let up = shared.counters.uploaded.load(Ordering::Relaxed);
        if let Some((d, u)) = self.rates.sample(now.into_std(), down, up) {
            status.down_rate = d;
            status.up_rate = u;
        }
        count_peers(shared, status);
        status.disk_paused = shared.disk_pause_active();
        status.blocked = crate::iface::blocked();
        status.downloaded = down;
        status.uploaded = up;
        self.discovery.on_tick(shared, status);
        if let Some((have, total)) = shared.progress() {
            status.have = have;
            status.total = total;
            if status.first_piece_at.is_none()
                && !self.complete_at_start
                && have > status.resumed_bytes
            {
                status.first_piece_at = Some(self.started.elapsed());
                tracing::info!(
                    "first piece verified {:.0} ms after start",
                    self.started.elapsed().as_secs_f64() * 1000.0
                );
            }
        }
        status.phase = if shared.data().is_none() {
            if status.metadata_progress.1 > 0 {
                Phase::FetchingMetadata
            } else {
                Phase::FindingPeers
            }
        } else if shared.is_complete() {
            Phase::Seeding
        } else {
            Phase::Downloading
        };
        self.status_tx.send_replace(status.clone());
    }

    /// The last wanted piece was verified.
    fn on_completed(&mut self, now: Instant) {
        self.shared.emit(status::SessionEvent::Complete {
            elapsed: now.duration_since(self.started),
            downloaded: self.status.downloaded,
        });
        self.completed_at = Some(now);
        self.seeding_since = Some(now);
        self.download_time = Some(now.duration_since(self.started));
        self.status.download_time = self.download_time;
        // Seeds are of no more use to us.
        for p in self.shared.lock().peers.values().filter(|p| p.seed) {
            let _ = p.tx.try_send(PeerCommand::Close);
        }
        // Seeding does not hold a download slot.
        self.active_slot = None;
        self.status.phase = Phase::Seeding;
        self.status_tx.send_replace(self.status.clone());
    }

    /// Seeding: stop at a seed limit, or go idle while there is nobody to
    /// serve.
    fn seed_policy(&mut self, since: Instant, now: Instant, paced: bool) -> ControlFlow<()> {
        if self.opts.no_seed {
            return ControlFlow::Break(());
        }
        let limits = (self.opts.seed_time, self.opts.seed_ratio);
        if let Some(why) = seed_limit(
            limits,
            now.duration_since(since),
            self.status.uploaded,
            self.status.total,
        ) {
            tracing::info!("{why}");
            return ControlFlow::Break(());
        }
        if self.stream_task.is_none()
            && !paced
            && self.status.peers_connected == 0
            && self.status.web_seeds == 0
            && !self.dials.dialing()
        {
            self.idle = true;
            self.idle_until = self
                .dials
                .next_wake(self.opts.seed_time.map(|t| since + t))
                .map(|at| Box::pin(tokio::time::sleep_until(at)));
            // Nobody to serve: no descriptor held while idle.
            if let Some(d) = self.shared.data() {
                d.storage.close_files();
            }
        }
        ControlFlow::Continue(())
    }

    /// What [`Command::Snapshot`] answers.
    fn snapshot(&self) -> Snapshot {
        let shared = &self.shared;
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
            peers_known: self.dials.known(),
        }
    }

    /// Orderly shutdown: peers first, then pending writes, flush, resume
    /// data, trackers. `ended` is how the run ended: an error is returned
    /// once everything is stopped.
    pub(super) async fn stop(mut self, ended: Result<()>) -> Result<Report> {
        self.status.phase = Phase::Stopping;
        self.status_tx.send_replace(self.status.clone());
        self.token.cancel();
        drop(self.registered.take());
        drop(self.other_swarm.take());
        drop(self.active_slot.take());
        let shared = self.shared.clone();
        // Peer tasks push out a last message and end within a fraction of a
        // second.
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
        if let Some(s) = self.saver.take()
            && Box::pin(tokio::time::timeout(SHUTDOWN_GRACE, s.finish(&shared)))
                .await
                .is_err()
        {
            tracing::warn!("resume data not saved in time");
        }
        self.discovery.stop().await;
        ended?;
        if let Some(msg) = shared
            .fatal
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take()
        {
            anyhow::bail!(msg);
        }
        Ok(Report {
            name: self.status.name.clone(),
            total: self.status.total,
            downloaded: shared.counters.downloaded.load(Ordering::Relaxed),
            uploaded: shared.counters.uploaded.load(Ordering::Relaxed),
            download_time: self.download_time,
            complete: shared.is_complete(),
            peers_used: self.status.peers_used,
            stream: self.stream_end,
        })
    }
}

/// What is known of a torrent before any peer: its trackers, the peers
/// named up front, and its metadata (installed, its data checked) or the
/// channel the metadata exchange will deliver it on.
struct AtStart {
    tiers: Vec<Vec<String>>,
    initial: Vec<std::net::SocketAddr>,
    metadata_rx: Option<mpsc::Receiver<Bytes>>,
    /// A hybrid's two swarms, when known before the metadata exchange.
    hybrid: Option<(InfoHash, InfoHash)>,
    /// The resume data on disk already says everything (nothing to save).
    resume_current: bool,
}

/// The torrent's shared state, with the session's budgets and limits.
fn make_shared(
    session: &Session,
    opts: &Options,
    info_hash: InfoHash,
    private: bool,
    token: &CancellationToken,
) -> Arc<Shared> {
    let dht_port = (!private && session.dht.is_some()).then_some(session.listen_port);
    let shared = Shared::create(
        info_hash,
        session.peer_id,
        session.listen_port,
        dht_port,
        Limits {
            max_peers: opts.max_peers_per_torrent,
            max_per_ip: opts.max_per_ip,
        },
        token.clone(),
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
    shared
}

/// The metadata, when known (a `.torrent`, or a magnet's remembered from
/// an earlier run): installed, what is on disk checked. Else the
/// metadata exchange is set up.
async fn known_at_start(
    session: &Session,
    shared: &Arc<Shared>,
    source: Source,
    opts: &Options,
    status_tx: &watch::Sender<Status>,
    status: &mut Status,
) -> Result<AtStart> {
    let info_hash = shared.info_hash;
    let mut metadata_rx = None;
    let mut tiers: Vec<Vec<String>> = Vec::new();
    let mut initial = opts.peers.clone();
    // The resume data on disk already says everything (nothing to save).
    let mut resume_current = false;
    // A hybrid's two swarms, when known before the metadata exchange.
    let hybrid;
    match source {
        Source::Torrent(meta) => {
            hybrid = hybrid_of(&meta);
            tiers = meta.tracker_tiers();
            crate::session::layers::installed(shared, &meta);
            resume_current =
                Box::pin(install(session, shared, *meta, opts, status_tx, status)).await?;
        }
        Source::Magnet(m) => {
            tiers.extend(m.trackers.iter().map(|t| vec![t.clone()]));
            initial.extend(m.peers.iter().copied());
            let cached = opts
                .state_dir
                .as_ref()
                .and_then(|d| load_cached_info(d, info_hash));
            match cached.map(|b| Metainfo::from_info_bytes(&b, tiers.clone())) {
                Some(Ok(meta)) => {
                    hybrid = hybrid_of(&meta);
                    tracing::info!("using the metadata remembered from an earlier run");
                    resume_current =
                        Box::pin(install(session, shared, meta, opts, status_tx, status)).await?;
                }
                _ => {
                    // A magnet naming both hashes of a hybrid.
                    hybrid = m
                        .info_hash_v2
                        .map(|v2| (m.info_hash, Magnet::v2_swarm(&v2)))
                        .filter(|(v1, v2)| v1 != v2);
                    metadata_rx = Some(shared.metadata_channel());
                    crate::session::layers::await_metadata(shared, info_hash, m.info_hash_v2);
                }
            }
        }
    }
    Ok(AtStart {
        tiers,
        initial,
        metadata_rx,
        hybrid,
        resume_current,
    })
}

/// Something to download: waits for a download slot (`--max-active`),
/// unless the torrent stops first. Seeding needs none.
async fn wait_for_slot(
    session: &Session,
    opts: &mut Options,
    complete_at_start: bool,
    token: &CancellationToken,
    status_tx: &watch::Sender<Status>,
    status: &mut Status,
) -> Option<ActiveSlot> {
    let ticket = opts
        .ticket
        .take()
        .unwrap_or_else(|| session.queue.reserve(usize::MAX));
    if complete_at_start {
        return None;
    }
    status.phase = Phase::Queued;
    status_tx.send_replace(status.clone());
    tokio::select! {
        slot = ticket.enter() => Some(slot),
        _ = token.cancelled() => None,
    }
}

/// Nothing would ever say so otherwise (`finding peers` forever): no
/// source can name a peer for this torrent.
fn warn_unfindable(shared: &Shared, name: &str) {
    let message = format!(
        "{name}: nothing can find peers for this torrent (no trackers, DHT and LSD off): \
         waiting for incoming connections; use --peer to name one"
    );
    tracing::warn!("{message}");
    shared.emit(status::SessionEvent::Warning { message });
}

/// A hybrid torrent's two swarms: its v1 info-hash and the first 20
/// bytes of its v2 one.
fn hybrid_of(meta: &Metainfo) -> Option<(InfoHash, InfoHash)> {
    let v2 = meta.v2.as_ref()?;
    (!meta.info.is_v2_only()).then(|| (meta.info_hash, Magnet::v2_swarm(&v2.info_hash)))
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
