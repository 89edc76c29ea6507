//! The `btc` command line: parse, run, print one-line errors.

use anyhow::{Context, Result};
use btc::cmd;
use btc::session::stream::StreamEnd;
use clap::{Args, Parser, Subcommand};
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::time::Duration;
use tokio_util::sync::CancellationToken;

/// A fast BitTorrent client for the terminal.
///
/// SOURCE is a .torrent file, an http(s) URL of one, a magnet link, or a
/// bare info-hash (40 hex or 32 base32 characters). Several run in one
/// process: one port, one peer id, one DHT node, one connection budget.
#[derive(Parser)]
#[command(
    name = "btc",
    version,
    args_conflicts_with_subcommands = true,
    subcommand_negates_reqs = true
)]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    #[command(flatten)]
    download: DownloadFlags,
    /// Print nothing but errors: no progress, no summary, no warnings.
    #[arg(short, long, global = true)]
    quiet: bool,
    /// More logging (-v info, -vv debug); RUST_LOG also works.
    #[arg(short, long, global = true, action = clap::ArgAction::Count)]
    verbose: u8,
}

#[derive(Args)]
struct DownloadFlags {
    /// .torrent paths or URLs, magnet links, or info-hashes; any mix.
    #[arg(required_unless_present = "input_file", value_name = "SOURCE")]
    sources: Vec<String>,
    /// Read more sources from FILE, one per line (`-` = stdin; blank lines
    /// and lines starting with # are skipped).
    #[arg(short, long, value_name = "FILE")]
    input_file: Option<PathBuf>,
    #[command(flatten)]
    session: SessionFlags,
}

/// The flags of a session, for a download run and for `btc daemon`.
#[derive(Args)]
struct SessionFlags {
    /// Download folder; the torrent's file or folder is created inside it.
    #[arg(short, long, default_value = ".")]
    output: PathBuf,
    /// Port for peers, TCP and uTP (default 6881; 0 = any free port); the DHT takes the next UDP port (this one with --no-utp).
    #[arg(short, long)]
    port: Option<u16>,
    /// Local IP to listen on and connect from (default: IPv6 and IPv4 on all interfaces).
    #[arg(long)]
    bind: Option<IpAddr>,
    /// Bind every socket to this network device (a VPN's, say): nothing is
    /// sent through any other interface, and while it is down or has no
    /// address nothing is sent at all (the status says blocked) until it is
    /// back. Needs root or CAP_NET_RAW; names are not looked up (give
    /// trackers and DHT bootstrap nodes by IP address).
    #[arg(long, value_name = "IFACE")]
    interface: Option<String>,
    /// Extra tracker (http, https or udp); repeatable.
    #[arg(long = "tracker", value_name = "URL")]
    trackers: Vec<String>,
    /// Connect to this peer directly; repeatable.
    #[arg(long = "peer", value_name = "IP:PORT")]
    peers: Vec<SocketAddr>,
    /// Exit as soon as the download is complete and verified.
    #[arg(long)]
    no_seed: bool,
    /// Stop seeding once uploaded/size reaches R.
    #[arg(long, value_name = "R")]
    seed_ratio: Option<f64>,
    /// Stop seeding after this many seconds.
    #[arg(long, value_name = "SECS")]
    seed_time: Option<u64>,
    /// DHT bootstrap node replacing the public routers; repeatable.
    /// IPv6 nodes (`[ADDR]:PORT`) bootstrap the IPv6 DHT (BEP 32).
    #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
    dht_bootstrap: Vec<String>,
    /// Do not use the DHT.
    #[arg(long)]
    no_dht: bool,
    /// Do not look for peers on the local network (LSD, BEP 14 multicast).
    #[arg(long)]
    no_lsd: bool,
    /// Do not use uTP (BEP 29): TCP only, in and out.
    #[arg(long)]
    no_utp: bool,
    /// Do not use TCP for peers: uTP only, in and out (to test a uTP path).
    #[arg(long, conflicts_with = "no_utp")]
    no_tcp: bool,
    /// Where DHT nodes, fetched metadata and resume data are kept (default: $XDG_STATE_HOME/btc).
    #[arg(long, value_name = "DIR")]
    state_dir: Option<PathBuf>,
    /// Connected peers at most, all torrents together.
    #[arg(long, default_value_t = 200, value_name = "N")]
    max_peers: usize,
    /// Connected peers at most for any one torrent.
    #[arg(long, default_value_t = 80, value_name = "N")]
    max_peers_per_torrent: usize,
    /// Torrents downloading at once; the others wait, in the order given
    /// (seeding ones do not count; 0 = no limit).
    #[arg(long, default_value_t = 5, value_name = "N")]
    max_active: usize,
    /// Connections from one IP address at most (raise it for peers behind one NAT).
    #[arg(long, default_value_t = 1, value_name = "N")]
    max_peers_per_ip: usize,
    /// Download over existing files whose data is not the torrent's
    /// (otherwise such a file stops the download).
    #[arg(long)]
    overwrite: bool,
    /// Download rate limit in bytes/s, K/M/G suffixes (2M = 2 MiB/s); 0 = none.
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = btc::ratelimit::parse_rate)]
    download_limit: u64,
    /// JSON lines on stdout instead of progress bars: one object per event
    /// (see README for the schema).
    #[arg(long)]
    json: bool,
    /// Upload rate limit in bytes/s, K/M/G suffixes; 0 = none.
    #[arg(long, value_name = "RATE", default_value = "0", value_parser = btc::ratelimit::parse_rate)]
    upload_limit: u64,
    /// Hash every piece already on disk, ignoring the resume data saved by
    /// earlier runs (which otherwise vouches for files left unchanged).
    #[arg(long)]
    check: bool,
    /// Download pieces in order (after the first and last piece of each
    /// file), e.g. to play a file while it downloads.
    #[arg(long)]
    sequential: bool,
    /// Write file N (as `btc info` numbers them; 1 for a single file) to
    /// stdout in order as it is verified, then exit; implies --sequential.
    /// Progress goes to stderr. `btc --stream 1 SOURCE | mpv -`
    #[arg(long, value_name = "N", conflicts_with = "json", value_parser = clap::value_parser!(u32).range(1..))]
    stream: Option<u32>,
    /// Download only these files: numbers and ranges as `btc info` shows
    /// them (1,3-5).
    #[arg(long, value_name = "LIST", conflicts_with = "exclude", value_parser = btc::select::parse_file_list)]
    select: Option<btc::select::FileList>,
    /// Download every file but these (same numbering as --select).
    #[arg(long, value_name = "LIST", value_parser = btc::select::parse_file_list)]
    exclude: Option<btc::select::FileList>,
    /// Message stream encryption (MSE/PE): prefer (obfuscated handshake,
    /// RC4 if the peer insists, plaintext fallback), require (RC4-encrypted
    /// peers only), disable (plaintext only).
    #[arg(long, value_name = "MODE", default_value = "prefer", value_parser = clap::builder::TypedValueParser::map(
        clap::builder::PossibleValuesParser::new(["prefer", "require", "disable"]),
        |s| s.parse::<btc::mse::Encryption>().expect("one of the possible values"),
    ))]
    encryption: btc::mse::Encryption,
    /// Do not ask the router to forward our ports (PCP, NAT-PMP, UPnP IGD;
    /// on by default; mappings are deleted at exit).
    #[arg(long)]
    no_port_mapping: bool,
    /// The router to ask for port mappings, when it is not the default
    /// route's gateway (e.g. a VPN's NAT-PMP server).
    #[arg(long, value_name = "IP", conflicts_with = "no_port_mapping")]
    gateway: Option<std::net::Ipv4Addr>,
    /// Send every connection through this proxy: socks5://[USER:PASS@]HOST:PORT,
    /// socks5h://… (names resolved by the proxy) or http://… (CONNECT, TCP
    /// only). UDP trackers, the DHT and uTP go through SOCKS5 UDP
    /// ASSOCIATE (off behind an http:// proxy), LSD is off, and nothing
    /// listens unless --port is given.
    #[arg(long, value_name = "URL")]
    proxy: Option<String>,
}

impl DownloadFlags {
    /// The one place the command line becomes a [`btc::config::Config`].
    fn into_config(self, quiet: bool, proxy: Option<btc::proxy::ProxyUrl>) -> btc::config::Config {
        let mut c = self.session.into_config(quiet, proxy);
        c.sources = self.sources;
        c.input_file = self.input_file;
        c
    }
}

impl SessionFlags {
    /// The session's half of a [`btc::config::Config`] (no sources).
    fn into_config(self, quiet: bool, proxy: Option<btc::proxy::ProxyUrl>) -> btc::config::Config {
        btc::config::Config {
            proxy,
            sources: Vec::new(),
            input_file: None,
            output: self.output,
            port: self.port,
            bind: self.bind,
            interface: self.interface,
            trackers: self.trackers,
            peers: self.peers,
            no_seed: self.no_seed,
            seed_ratio: self.seed_ratio,
            seed_time: self.seed_time.map(Duration::from_secs),
            dht_bootstrap: self.dht_bootstrap,
            no_dht: self.no_dht,
            no_lsd: self.no_lsd,
            no_utp: self.no_utp,
            no_tcp: self.no_tcp,
            state_dir: self.state_dir,
            max_peers: self.max_peers,
            max_peers_per_torrent: self.max_peers_per_torrent,
            max_active: self.max_active,
            max_per_ip: self.max_peers_per_ip,
            overwrite: self.overwrite,
            check: self.check,
            sequential: self.sequential,
            stream: self.stream.map(|n| n as usize),
            selection: match (self.select, self.exclude) {
                (Some(r), _) => Some(btc::select::Selection::Only(r.0)),
                (None, Some(r)) => Some(btc::select::Selection::AllBut(r.0)),
                (None, None) => None,
            },
            quiet,
            download_limit: self.download_limit,
            upload_limit: self.upload_limit,
            json: self.json,
            encryption: self.encryption,
            port_mapping: !self.no_port_mapping,
            gateway: self.gateway,
        }
    }
}

#[derive(Subcommand)]
enum Command {
    /// Make a .torrent from a file or folder.
    Create {
        /// File or folder to share.
        path: PathBuf,
        /// Where to write the .torrent.
        #[arg(short, long, value_name = "FILE.torrent")]
        output: PathBuf,
        /// Tracker URL; repeatable (each becomes its own tier).
        #[arg(long = "tracker", value_name = "URL")]
        trackers: Vec<String>,
        /// Piece length in bytes (power of two; default: chosen from the size).
        #[arg(long, value_name = "BYTES")]
        piece_length: Option<u32>,
        /// Mark the torrent private (BEP 27: trackers only, no DHT).
        #[arg(long)]
        private: bool,
        /// Free-text comment.
        #[arg(long)]
        comment: Option<String>,
        /// Web seed URL (BEP 19); repeatable.
        #[arg(long = "web-seed", value_name = "URL")]
        web_seeds: Vec<String>,
        /// BitTorrent versions to write: hybrid (both v1 and v2, files
        /// aligned by pad files, as libtorrent and qBittorrent make them),
        /// v1 (SHA-1 pieces only: for Transmission 3 and other clients
        /// that cannot read v2 or hybrid) or v2 (BEP 52 merkle trees only).
        #[arg(long, value_name = "FORMAT", default_value = "hybrid", value_parser = ["hybrid", "v1", "v2"])]
        format: String,
    },
    /// Show what a .torrent or magnet link holds.
    Info {
        /// .torrent path or URL, magnet link, or info-hash.
        source: String,
        /// Where remembered metadata is looked up for magnets.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
        /// Also ask every tracker how many seeders and leechers it knows.
        #[arg(long)]
        scrape: bool,
    },
    /// Print shell completions (e.g. `btc completions bash > /etc/bash_completion.d/btc`).
    Completions {
        /// The shell.
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff; e.g. `btc man | man -l -`).
    Man,
    /// Run until stopped, taking torrents at run time over Transmission's
    /// RPC (`transmission-remote`, its web client, Sonarr…) and from a
    /// watch folder; the torrent list survives a restart.
    Daemon {
        /// Where the RPC listens (a non-loopback address needs --rpc-auth).
        #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:9091")]
        rpc: SocketAddr,
        /// HTTP basic auth for the RPC.
        #[arg(long, value_name = "USER:PASS")]
        rpc_auth: Option<String>,
        /// Add each .torrent (or .magnet file holding a magnet link) put
        /// here, then rename it NAME.added (or NAME.invalid).
        #[arg(long, value_name = "DIR")]
        watch: Option<PathBuf>,
        #[command(flatten)]
        session: Box<SessionFlags>,
    },
    /// Run a DHT node holding no torrent (a bootstrap node for others).
    Dht {
        /// UDP port.
        #[arg(short, long, default_value_t = 6881)]
        port: u16,
        /// Local address to bind: an IPv4 address runs only the IPv4 node
        /// there, an IPv6 one only the IPv6 node. Default: both, on every
        /// interface.
        #[arg(long)]
        bind: Option<std::net::IpAddr>,
        /// Bootstrap node; repeatable. With none, the public routers are used
        /// unless --no-bootstrap is given.
        #[arg(long = "dht-bootstrap", value_name = "HOST:PORT")]
        dht_bootstrap: Vec<String>,
        /// Start a new DHT: bootstrap from nobody.
        #[arg(long)]
        no_bootstrap: bool,
        /// Where the routing table is kept.
        #[arg(long, value_name = "DIR")]
        state_dir: Option<PathBuf>,
    },
}

/// Threads of the blocking pool (hashing, disk reads and writes, resume
/// data), all torrents together.
const MAX_BLOCKING_THREADS: usize = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    init_logging(cli.verbose, cli.quiet);
    install_panic_hook();
    // One reactor thread: sockets and decisions are cheap, while hashing and
    // disk I/O already run on the blocking pool. Measured on a 1 GiB loopback
    // download, a multi-threaded runtime cost 5-35% more CPU (workers waking
    // and stealing from each other) and was slower.
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        // Disk work of any number of torrents shares this many threads
        // (tokio's default is 512: 50,000 torrents saving resume data at
        // exit started them all).
        .max_blocking_threads(MAX_BLOCKING_THREADS)
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: starting the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(cli));
    // Blocking reads/writes still queued are bounded by the session's own
    // grace periods; do not wait for stragglers beyond that.
    runtime.shutdown_timeout(Duration::from_secs(1));
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {}", one_line(&e));
            ExitCode::FAILURE
        }
    }
}

/// `what: why: deeper why` on a single line.
fn one_line(e: &anyhow::Error) -> String {
    format!("{e:#}").replace('\n', " ")
}

/// A panic in a task must not paint a backtrace over the progress bars:
/// tokio ends only that task (its drop guards give back what it held), and
/// this hook logs one line per panic, at most [`MAX_PANIC_LINES`] in all,
/// so a peer that triggers the same bug a thousand times cannot flood the
/// terminal. `RUST_BACKTRACE=1` restores the default report for debugging.
fn install_panic_hook() {
    use std::sync::atomic::AtomicUsize;
    const MAX_PANIC_LINES: usize = 5;
    static PANICS: AtomicUsize = AtomicUsize::new(0);
    if std::env::var_os("RUST_BACKTRACE").is_some_and(|v| v != "0") {
        return;
    }
    std::panic::set_hook(Box::new(|info| {
        let n = PANICS.fetch_add(1, Ordering::Relaxed);
        if n >= MAX_PANIC_LINES {
            return;
        }
        let what = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown cause".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        let task = std::thread::current().name().unwrap_or("?").to_string();
        eprintln!("warning: internal error in thread {task}{at}: {what}; the task was stopped");
    }));
}

async fn run(cli: Cli) -> Result<ExitCode> {
    let shutdown = CancellationToken::new();
    spawn_signal_handler(shutdown.clone());
    match cli.command {
        Some(Command::Create {
            path,
            output,
            trackers,
            piece_length,
            private,
            comment,
            web_seeds,
            format,
        }) => {
            let quiet = cli.quiet;
            let format = match format.as_str() {
                "v1" => btc::create::Format::V1,
                "v2" => btc::create::Format::V2,
                _ => btc::create::Format::Hybrid,
            };
            let meta = tokio::task::spawn_blocking(move || {
                cmd::create::run(cmd::create::CreateArgs {
                    path,
                    output: output.clone(),
                    trackers,
                    piece_length,
                    private,
                    comment,
                    web_seeds,
                    format,
                    quiet,
                })
                .map(|m| (m, output))
            })
            .await??;
            if !cli.quiet {
                println!("created {} ({})", meta.1.display(), meta.0.info_hash);
            }
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Completions { shell }) => {
            let mut cmd = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut cmd, "btc", &mut std::io::stdout());
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Man) => {
            let cmd = <Cli as clap::CommandFactory>::command();
            clap_mangen::Man::new(cmd)
                .render(&mut std::io::stdout())
                .context("writing the man page")?;
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Daemon {
            rpc,
            rpc_auth,
            watch,
            session,
        }) => {
            let proxy = match session.proxy.as_deref().map(str::parse) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    eprintln!("error: --proxy: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let config = session.into_config(cli.quiet, proxy).check()?;
            let daemon = cmd::daemon::DaemonConfig {
                rpc,
                rpc_auth,
                watch,
            };
            cmd::daemon::run(config, daemon, shutdown.clone()).await?;
            Ok(ExitCode::from(128 + STOP_SIGNAL.load(Ordering::Relaxed)))
        }
        Some(Command::Info {
            source,
            state_dir,
            scrape,
        }) => {
            let text = cmd::info::describe_source(&source, state_dir, scrape).await?;
            print!("{text}");
            Ok(ExitCode::SUCCESS)
        }
        Some(Command::Dht {
            port,
            bind,
            dht_bootstrap,
            no_bootstrap,
            state_dir,
        }) => {
            let bootstrap = if no_bootstrap {
                Some(Vec::new())
            } else if dht_bootstrap.is_empty() {
                None
            } else {
                Some(dht_bootstrap)
            };
            let cfg = btc::dht::DhtConfig {
                port,
                bind,
                bootstrap,
                state_dir: state_dir.or_else(btc::dht::default_state_dir),
                server_mode: true,
                ipv6: true,
                proxy: None,
            };
            cmd::dht::run(cfg, shutdown).await?;
            Ok(ExitCode::SUCCESS)
        }
        None => {
            let json = cli.download.session.json;
            let stream = cli.download.session.stream;
            // Checked here rather than by clap, whose message would echo
            // the URL, password included; exit 2 as for clap's own errors.
            let proxy = match cli.download.session.proxy.as_deref().map(str::parse) {
                None => None,
                Some(Ok(p)) => Some(p),
                Some(Err(e)) => {
                    eprintln!("error: --proxy: {e}");
                    return Ok(ExitCode::from(2));
                }
            };
            let config = cli.download.into_config(cli.quiet, proxy).check()?;
            let outcome = cmd::download::run(config, shutdown.clone()).await?;
            if let Some(report) = outcome.reports.first()
                && let (Some(n), Some(Err(e))) = (stream, &report.stream)
            {
                anyhow::bail!("--stream {n}: {e}");
            }
            if !cli.quiet && !json {
                for line in cmd::download::summaries(&outcome) {
                    // With --stream, stdout carries the file.
                    if stream.is_some() {
                        eprintln!("{line}");
                    } else {
                        println!("{line}");
                    }
                }
            }
            if stream.is_some()
                && outcome.reports.first().is_some_and(|r| {
                    matches!(r.stream, Some(Ok(StreamEnd::Done | StreamEnd::Closed)))
                })
            {
                // The file is out (or the reader is gone): done.
                return Ok(ExitCode::SUCCESS);
            }
            if outcome.failed > 0 {
                // Each failure was reported on its own line as it happened.
                return Ok(ExitCode::FAILURE);
            }
            // Stopped by a signal, downloading or seeding: 128 + the signal,
            // as shells report it, so scripts can tell it from a run that
            // ended on its own (complete with --no-seed, or a seed limit).
            if shutdown.is_cancelled() {
                return Ok(ExitCode::from(128 + STOP_SIGNAL.load(Ordering::Relaxed)));
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// The signal that stopped us (2 = SIGINT, 15 = SIGTERM), for the exit status.
static STOP_SIGNAL: AtomicU8 = AtomicU8::new(SIGINT);
const SIGINT: u8 = 2;
const SIGTERM: u8 = 15;

/// First Ctrl-C (or SIGTERM) stops gracefully; a second one exits at once.
fn spawn_signal_handler(shutdown: CancellationToken) {
    tokio::spawn(async move {
        let mut term =
            tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).ok();
        let first = next_signal(&mut term).await;
        STOP_SIGNAL.store(first, Ordering::Relaxed);
        shutdown.cancel();
        let second = next_signal(&mut term).await;
        eprintln!("error: interrupted twice; exiting without cleanup");
        std::process::exit(128 + i32::from(second));
    });
}

/// Waits for Ctrl-C or, when it could be registered, SIGTERM; returns which.
async fn next_signal(term: &mut Option<tokio::signal::unix::Signal>) -> u8 {
    match term.as_mut() {
        Some(t) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => SIGINT,
                _ = t.recv() => SIGTERM,
            }
        }
        None => {
            let _ = tokio::signal::ctrl_c().await;
            SIGINT
        }
    }
}

/// `-q` leaves only errors; each `-v` adds a level.
fn init_logging(verbose: u8, quiet: bool) {
    use tracing_subscriber::EnvFilter;
    let default = match verbose {
        0 if quiet => "btc=error,mainline=off",
        0 => "btc=warn,mainline=off",
        1 => "btc=info,mainline=off",
        2 => "btc=debug,mainline=warn",
        _ => "debug",
    };
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(|| btc::ui::LogWriter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .event_format(btc::ui::LogFormat)
        .init();
}
