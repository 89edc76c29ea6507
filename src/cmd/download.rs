//! The main job: download (or seed) every SOURCE in one process, with
//! progress and a summary.

use super::info::human_bytes;
use super::source::{Resolved, resolve};
use crate::config::Config;
use crate::dht::{DhtConfig, DhtHandle};
use crate::id::InfoHash;
use crate::session::status::Status;
use crate::session::{self, Options, Report, Session, SessionConfig, Source};
use crate::ui;
use anyhow::{Context, Result};
use std::net::IpAddr;
use std::path::Path;
use std::sync::Arc;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Default listen port (also the DHT's UDP port).
pub const DEFAULT_PORT: u16 = 6881;

/// Most sources one run takes (command line and input file together).
const MAX_SOURCES: usize = 100_000;

/// How a run of several torrents ended.
#[derive(Debug, Default)]
pub struct Outcome {
    /// One per torrent that ran, in the order given.
    pub reports: Vec<Report>,
    /// Sources that failed (could not be read, or their torrent stopped
    /// on an error), each already reported on its own line.
    pub failed: usize,
}

/// Reads `-i FILE` (`-` = stdin): one source per line; blank lines and
/// lines starting with `#` are skipped.
fn read_input_file(path: &Path) -> Result<Vec<String>> {
    let text = if path == Path::new("-") {
        std::io::read_to_string(std::io::stdin()).context("reading sources from stdin")?
    } else {
        std::fs::read_to_string(path)
            .with_context(|| format!("reading the input file {}", path.display()))?
    };
    Ok(parse_input(&text))
}

/// The sources in an input file's text.
pub fn parse_input(text: &str) -> Vec<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

/// Prints one line above the bars (errors of one torrent among several).
fn report_error(source: &str, e: &anyhow::Error) {
    ui::print_line(&error_line(source, e));
}

/// `error: SOURCE: why` on one line, naming the source once: an error
/// that already holds it (a file's or URL's, as [`resolve`] words them:
/// `reading F: …`, `F: not a valid torrent: …`) is not prefixed again.
fn error_line(source: &str, e: &anyhow::Error) -> String {
    let why = format!("{e:#}").replace('\n', " ");
    if why.contains(source) {
        format!("error: {why}")
    } else {
        format!("error: {source}: {why}")
    }
}

/// Runs every source; returns what happened to each. With one source an
/// error is returned as the error of the run (`error: …`, exit 1), as
/// before; with several, each failure is printed as it happens and counted.
pub async fn run(args: Config, shutdown: CancellationToken) -> Result<Outcome> {
    let mut sources = args.sources.clone();
    if let Some(path) = &args.input_file {
        sources.extend(read_input_file(path)?);
    }
    if sources.len() > MAX_SOURCES {
        anyhow::bail!(
            "{} sources is more than one run takes ({MAX_SOURCES})",
            sources.len()
        );
    }
    args.check_sources(sources.len())?;
    let single = sources.len() == 1;
    // Before anything touches the network: from here on every socket is
    // bound to the device.
    start_interface(&args, &shutdown)?;
    // Before anything touches the network (a .torrent URL is fetched
    // next): from here on every connection goes through the proxy.
    if let Some(url) = &args.proxy {
        let proxy = crate::proxy::net::Proxy::resolve(url.clone(), args.bind)
            .await
            .with_context(|| format!("--proxy {url}"))?;
        tracing::info!(
            "every connection goes through the proxy {url} ({})",
            proxy.addr()
        );
        crate::proxy::net::install(proxy);
        warn_proxy_limits(&args);
    }

    // Resolve them all at once: a slow URL must not hold up the files.
    let mut resolving = tokio::task::JoinSet::new();
    for (i, s) in sources.iter().enumerate() {
        let s = s.clone();
        resolving.spawn(async move { (i, resolve(&s).await) });
    }
    let mut resolved: Vec<Option<Result<Resolved>>> = (0..sources.len()).map(|_| None).collect();
    while let Some(r) = resolving.join_next().await {
        let (i, r) = r.context("resolving a source")?;
        resolved[i] = Some(r);
    }
    let mut outcome = Outcome::default();
    let mut torrents: Vec<(String, Source)> = Vec::new();
    let mut seen: std::collections::HashSet<InfoHash> = std::collections::HashSet::new();
    for (text, r) in sources.iter().zip(resolved) {
        let source = match r.expect("every source resolved") {
            Ok(Resolved::Torrent(m)) => Source::Torrent(m),
            Ok(Resolved::Magnet(m)) => Source::Magnet(m),
            Err(e) => {
                if args.json {
                    crate::events::emit(&crate::events::error_line(None, &format!("{e:#}")));
                }
                if single {
                    return Err(e);
                }
                report_error(text, &e);
                outcome.failed += 1;
                continue;
            }
        };
        let ih = info_hash(&source);
        if !seen.insert(ih) {
            tracing::info!("{text}: the same torrent as an earlier source; running it once");
            continue;
        }
        torrents.push((text.clone(), source));
    }
    if torrents.is_empty() {
        anyhow::bail!("none of the {} sources could be read", sources.len());
    }

    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating the output folder {}", args.output.display()))?;
    let all_private = torrents
        .iter()
        .all(|(_, s)| matches!(s, Source::Torrent(m) if m.info.private));
    let rate_limits = crate::ratelimit::RateLimits::new(args.download_limit, args.upload_limit);
    let started = start_session(&args, all_private, rate_limits, shutdown.clone()).await?;
    let (session, state_dir) = (started.session.clone(), started.state_dir.clone());
    let json = args.json;
    let config = Arc::new(args);

    let mut running = tokio::task::JoinSet::new();
    let mut ui_rxs = Vec::new();
    let mut json_tasks = Vec::new();
    let count = torrents.len();
    for (position, (text, source)) in torrents.into_iter().enumerate() {
        let (status_tx, status_rx) = watch::channel(Status::default());
        let mut opts = Options {
            config: config.clone(),
            state_dir: state_dir.clone(),
            events: None,
            ticket: Some(session.queue.reserve(position)),
            commands: None,
            limits: None,
        };
        let ih = info_hash(&source);
        if json {
            let (tx, rx) = tokio::sync::mpsc::channel(crate::events::EVENT_QUEUE);
            opts.events = Some(tx);
            json_tasks.push(tokio::spawn(crate::events::render(
                ih,
                name_hint(&source),
                status_rx,
                rx,
            )));
        } else {
            ui_rxs.push(status_rx);
        }
        let session = session.clone();
        let shutdown = shutdown.clone();
        running.spawn(async move {
            let r = session::torrent::run(session, source, opts, status_tx, shutdown).await;
            (position, text, ih, r)
        });
    }
    let ui_task = (!json).then(|| tokio::spawn(ui::render_all(ui_rxs, config.quiet)));

    let mut reports: Vec<Option<Report>> = (0..count).map(|_| None).collect();
    let mut single_error = None;
    while let Some(done) = running.join_next().await {
        let (position, text, ih, r) = match done {
            Ok(d) => d,
            Err(e) => {
                // A panic in a torrent's actor ends that torrent only.
                outcome.failed += 1;
                tracing::error!("a torrent stopped on an internal error: {e}");
                continue;
            }
        };
        if json {
            match &r {
                Ok(r) => crate::events::emit(&crate::events::stopped_line(
                    ih,
                    r.complete,
                    r.downloaded,
                    r.uploaded,
                )),
                Err(e) => {
                    crate::events::emit(&crate::events::error_line(Some(ih), &format!("{e:#}")))
                }
            }
        }
        match r {
            Ok(report) => reports[position] = Some(report),
            Err(e) if single => single_error = Some(e),
            Err(e) => {
                report_error(&text, &e);
                outcome.failed += 1;
            }
        }
    }
    if let Some(t) = ui_task {
        let _ = t.await;
    }
    for t in json_tasks {
        let _ = t.await;
    }
    started.finish().await;
    if let Some(e) = single_error {
        return Err(e);
    }
    outcome.reports = reports.into_iter().flatten().collect();
    Ok(outcome)
}

/// `--interface`: binds every socket of the process to the device from
/// now on and starts its watcher, whose changes go to the log and, with
/// `--json`, as `interface` events. Nothing without the flag.
pub fn start_interface(args: &Config, shutdown: &CancellationToken) -> Result<()> {
    let Some(name) = &args.interface else {
        return Ok(());
    };
    crate::iface::install(name).with_context(|| format!("--interface {name}"))?;
    let json = args.json;
    crate::iface::spawn_watcher(
        shutdown.clone(),
        Box::new(move |name, state| {
            match state {
                crate::iface::LinkState::Up => {
                    tracing::warn!("--interface {name} is back: resuming")
                }
                crate::iface::LinkState::Blocked(why) => tracing::warn!(
                    "--interface {name}: {}; blocked, nothing is sent until it is back",
                    why.reason()
                ),
            }
            if json {
                crate::events::emit(&crate::events::interface_line(name, state));
            }
        }),
    );
    let mut off = Vec::new();
    if args.port_mapping {
        off.push("port mapping (the router is asked over the default route)");
    }
    if !off.is_empty() {
        tracing::warn!("--interface {name}: {} is off", off.join(", "));
    }
    Ok(())
}

/// What a run of torrents shares, started: the session (listener, DHT,
/// budgets), port mapping, the state dir. The one-shot CLI and
/// `btc daemon` start it the same way.
pub struct Started {
    /// The session.
    pub session: Arc<Session>,
    /// The DHT node, when on.
    pub dht: Option<DhtHandle>,
    /// `--state-dir` or the default one.
    pub state_dir: Option<std::path::PathBuf>,
    portmap: Option<tokio::task::JoinHandle<()>>,
    portmap_stop: CancellationToken,
}

impl Started {
    /// Deletes the port mappings and saves the DHT's state.
    pub async fn finish(self) {
        if let Some(task) = self.portmap {
            // Deleting the mappings is bounded by the task itself.
            self.portmap_stop.cancel();
            let _ = task.await;
        }
        if let Some(d) = self.dht
            && let Err(e) = d.save_state()
        {
            tracing::debug!("saving DHT state: {}", crate::error_chain(&e));
        }
    }
}

/// Starts the session for `args`: the port (a free one for 0), the DHT
/// unless off (or every torrent is private, or under a proxy), the
/// listener, port mapping.
pub async fn start_session(
    args: &Config,
    all_private: bool,
    rate_limits: crate::ratelimit::RateLimits,
    shutdown: CancellationToken,
) -> Result<Started> {
    let state_dir = args
        .state_dir
        .clone()
        .or_else(crate::dht::default_state_dir);
    let mut port = args.port.unwrap_or(DEFAULT_PORT);
    if port == 0 {
        // One free number for both TCP (peers) and UDP (DHT), as BEP 5 peers
        // expect; found by asking the OS for a TCP port.
        let ip = args
            .bind
            .unwrap_or(IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED));
        port = std::net::TcpListener::bind((ip, 0))
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .context("finding a free port")?;
    }
    // uTP takes the UDP port of our TCP port's number (peers dial uTP
    // where they dial TCP); the DHT then takes the next one. Other nodes
    // learn it from our PORT messages and queries, not from the trackers.
    let dht_port = if args.no_utp {
        port
    } else {
        port.checked_add(1).unwrap_or(0)
    };
    let proxied = args.proxy.is_some();
    // Under --proxy nothing goes anywhere but the proxy: the DHT only
    // through a SOCKS5 proxy's UDP relay, and no port mapping (see below).
    let dht_proxied = args.proxy.as_ref().is_some_and(|p| p.kind.is_socks());
    let dht = if args.no_dht || all_private || (proxied && !dht_proxied) {
        None
    } else {
        start_dht(args, dht_port, state_dir.clone()).await
    };
    let session = Session::start(
        SessionConfig {
            port,
            port_fallback: args.port.is_none(),
            bind: args.bind,
            dht: dht.clone(),
            rate_limits,
            max_peers: args.max_peers,
            max_active: args.max_active,
            encryption: args.encryption,
            lsd: !args.no_lsd && !all_private && !proxied,
            // A SOCKS5 proxy relays uTP's datagrams; an http:// one cannot.
            utp: !args.no_utp && (!proxied || dht_proxied),
            tcp: !args.no_tcp,
            // Under --proxy nothing listens unless --port asked for it.
            listen: !proxied || args.port.is_some(),
            // Our own addresses (BEP 7) would tell the tracker who is
            // behind the proxy.
            // Under --interface, the default route's source address is
            // another interface's.
            tell_addresses: !proxied && args.interface.is_none(),
        },
        shutdown.clone(),
    )
    .await?;
    let portmap_stop = shutdown.child_token();
    // Under --interface the router is not ours to find: it is asked
    // through the default route, which may be another interface.
    let portmap = (args.port_mapping && !proxied && args.interface.is_none())
        .then(|| start_port_mapping(args, &session, dht.as_ref(), portmap_stop.clone()));
    Ok(Started {
        session,
        dht,
        state_dir,
        portmap,
        portmap_stop,
    })
}

fn info_hash(source: &Source) -> InfoHash {
    match source {
        Source::Torrent(m) => m.info_hash,
        Source::Magnet(m) => m.info_hash,
    }
}

fn name_hint(source: &Source) -> Option<String> {
    match source {
        Source::Torrent(m) => Some(m.info.name.clone()),
        Source::Magnet(m) => m.name.clone(),
    }
}

/// Starts port mapping for the listen port (TCP and UDP) and the DHT's
/// port; its events go to `--json` and set the port trackers hear.
fn start_port_mapping(
    args: &Config,
    session: &Session,
    dht: Option<&DhtHandle>,
    stop: CancellationToken,
) -> tokio::task::JoinHandle<()> {
    let cfg = crate::portmap::PortmapConfig {
        gateway: args.gateway,
        bind: args.bind,
        wants: crate::portmap::wanted(
            session.listen_port,
            !args.no_tcp,
            !args.no_utp,
            dht.map(|d| d.local_addr().port()),
        ),
        listen_port: session.listen_port,
    };
    let json = args.json;
    let report: crate::portmap::driver::Report = Box::new(move |e| {
        if json {
            crate::events::emit(&crate::events::port_mapping_line(e));
        }
    });
    crate::portmap::spawn(cfg, session.external_port.clone(), report, stop)
}

/// One warning naming what `--proxy` turns off (what the user did not
/// already turn off): the DHT and uTP behind an `http://` proxy (a SOCKS5
/// one relays their datagrams over UDP), and local discovery (multicast on
/// the LAN).
fn warn_proxy_limits(args: &Config) {
    let mut off = Vec::new();
    let socks = args.proxy.as_ref().is_some_and(|p| p.kind.is_socks());
    if !args.no_dht && !socks {
        off.push("the DHT");
    }
    if !args.no_lsd {
        off.push("local peer discovery (LSD)");
    }
    if !args.no_utp && !socks {
        off.push("uTP");
    }
    let mut said = Vec::new();
    if let Some(last) = off.pop() {
        let list = if off.is_empty() {
            last.to_string()
        } else {
            format!("{} and {last}", off.join(", "))
        };
        let verb = if off.is_empty() { "is" } else { "are" };
        said.push(format!("{list} cannot go through the proxy and {verb} off"));
    }
    if args.port.is_none() {
        said.push("nothing listens for incoming peers (give --port to listen)".into());
    }
    if !said.is_empty() {
        tracing::warn!("--proxy: {}", said.join("; "));
    }
}

/// The process's one DHT node, on the peer port; the DHT is a bonus, so a
/// taken port falls back to any port and a failure only warns.
async fn start_dht(
    args: &Config,
    port: u16,
    state_dir: Option<std::path::PathBuf>,
) -> Option<DhtHandle> {
    let mut cfg = DhtConfig {
        port,
        bind: args.bind,
        ipv6: true,
        proxy: crate::proxy::net::current(),
        bootstrap: (!args.dht_bootstrap.is_empty()).then(|| args.dht_bootstrap.clone()),
        state_dir,
        server_mode: false,
    };
    if crate::iface::name().is_some() {
        // The node cannot ask the system resolver: names are looked up
        // through the device first.
        cfg.bootstrap = Some(DhtHandle::resolve_on_device(cfg.bootstrap_entries()).await);
    }
    match DhtHandle::start(cfg.clone()) {
        Ok(d) => Some(d),
        Err(e) => match DhtHandle::start(DhtConfig { port: 0, ..cfg }) {
            Ok(d) => {
                tracing::warn!(
                    "DHT: {}; using a free UDP port instead",
                    crate::error_chain(&e)
                );
                Some(d)
            }
            Err(e) => {
                tracing::warn!("DHT disabled: {}", crate::error_chain(&e));
                None
            }
        },
    }
}

/// Torrents summed up one line each at the end; more than this get one
/// line in all.
const MAX_SUMMARY_LINES: usize = 20;

/// The summary printed at the end: a line per torrent, or one line for a
/// large run.
pub fn summaries(o: &Outcome) -> Vec<String> {
    if o.reports.len() <= MAX_SUMMARY_LINES {
        return o.reports.iter().map(summary).collect();
    }
    let complete = o.reports.iter().filter(|r| r.complete).count();
    let down: u64 = o.reports.iter().map(|r| r.downloaded).sum();
    let up: u64 = o.reports.iter().map(|r| r.uploaded).sum();
    vec![format!(
        "{} torrents: {complete} complete, {} not; downloaded {}, uploaded {}",
        o.reports.len(),
        o.reports.len() - complete,
        human_bytes(down),
        human_bytes(up)
    )]
}

/// The one-line summary of one torrent: for a download completed in this
/// run, what, how much, how fast, from how many peers (the only line that
/// says so: there is no other at completion), and what went up.
pub fn summary(r: &Report) -> String {
    let mut s = match r.download_time {
        Some(t) => {
            let secs = t.as_secs_f64().max(0.001);
            let from = match r.peers_used {
                1 => "1 peer".to_string(),
                n => format!("{n} peers"),
            };
            format!(
                "downloaded {}: {} in {}, {}/s average, from {from}",
                r.name,
                human_bytes(r.downloaded),
                ui::human_duration(t),
                human_bytes((r.downloaded as f64 / secs) as u64)
            )
        }
        None if r.complete => format!("{}: complete ({})", r.name, human_bytes(r.total)),
        None => format!(
            "{}: stopped before completion ({} downloaded)",
            r.name,
            human_bytes(r.downloaded)
        ),
    };
    s.push_str(&format!(", uploaded {}", human_bytes(r.uploaded)));
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_summary_line_says_all_of_a_download() {
        let mut r = Report {
            name: "ubuntu.iso".into(),
            total: 20 << 20,
            downloaded: 16 << 20,
            uploaded: 1 << 20,
            download_time: Some(std::time::Duration::from_secs(4)),
            complete: true,
            peers_used: 3,
            stream: None,
        };
        assert_eq!(
            summary(&r),
            "downloaded ubuntu.iso: 16.00 MiB in 4.0s, 4.00 MiB/s average, from 3 peers, uploaded 1.00 MiB"
        );
        r.peers_used = 1;
        assert!(summary(&r).contains(", from 1 peer, "), "{}", summary(&r));
        r.download_time = None;
        assert_eq!(
            summary(&r),
            "ubuntu.iso: complete (20.00 MiB), uploaded 1.00 MiB"
        );
        r.complete = false;
        assert_eq!(
            summary(&r),
            "ubuntu.iso: stopped before completion (16.00 MiB downloaded), uploaded 1.00 MiB"
        );
    }

    #[test]
    fn an_error_line_names_its_source_once() {
        let bad = anyhow::anyhow!("bencode: unexpected end")
            .context("/tmp/x.torrent: not a valid torrent");
        assert_eq!(
            error_line("/tmp/x.torrent", &bad),
            "error: /tmp/x.torrent: not a valid torrent: bencode: unexpected end"
        );
        let missing = anyhow::anyhow!("No such file or directory (os error 2)")
            .context("reading /tmp/y.torrent");
        assert_eq!(
            error_line("/tmp/y.torrent", &missing),
            "error: reading /tmp/y.torrent: No such file or directory (os error 2)"
        );
        let magnet = anyhow::anyhow!("no xt").context("invalid magnet link");
        assert_eq!(
            error_line("magnet:?dn=x", &magnet),
            "error: magnet:?dn=x: invalid magnet link: no xt"
        );
    }

    #[test]
    fn input_files_skip_blank_lines_and_comments() {
        let text = "a.torrent\n\n  # a comment\n magnet:?xt=urn:btih:x \r\nhash\n";
        assert_eq!(
            parse_input(text),
            vec!["a.torrent", "magnet:?xt=urn:btih:x", "hash"]
        );
    }
}
