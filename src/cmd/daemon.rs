//! `btc daemon`: the session started once, its torrents managed at run
//! time (`session::manager`), the RPC and the watch folder of
//! [`crate::daemon`] around them, until a signal stops it all with every
//! torrent's resume data saved.

use crate::config::Config;
use crate::daemon::{UNLIMITED, gate, http, notify, rpc, serve, stats, watch};
use crate::session::manager::Manager;
use anyhow::{Context, Result, bail};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use tokio_util::sync::CancellationToken;

/// The daemon's own flags.
#[derive(Debug, Clone)]
pub struct DaemonConfig {
    /// Where the RPC listens.
    pub rpc: SocketAddr,
    /// `user:pass` for basic auth.
    pub rpc_auth: Option<String>,
    /// The watch folder.
    pub watch: Option<PathBuf>,
}

impl DaemonConfig {
    /// Refuses a non-loopback RPC without auth and malformed credentials.
    pub fn check(&self) -> Result<()> {
        if let Some(a) = &self.rpc_auth
            && !a.contains(':')
        {
            bail!("--rpc-auth: expected USER:PASS");
        }
        if !self.rpc.ip().is_loopback() && self.rpc_auth.is_none() {
            bail!(
                "--rpc {}: listening beyond this machine needs --rpc-auth USER:PASS",
                self.rpc
            );
        }
        Ok(())
    }
}

/// Runs the daemon until `shutdown`; every torrent's resume data is saved
/// before it returns.
pub async fn run(mut config: Config, d: DaemonConfig, shutdown: CancellationToken) -> Result<()> {
    d.check()?;
    std::fs::create_dir_all(&config.output)
        .with_context(|| format!("creating the download folder {}", config.output.display()))?;
    config.output = std::fs::canonicalize(&config.output)
        .with_context(|| format!("reading {}", config.output.display()))?;
    if config.stream.is_some() || config.json {
        bail!("--stream and --json are for one-shot downloads, not the daemon");
    }
    // Before anything touches the network, as for a download.
    crate::cmd::download::start_interface(&config, &shutdown)?;
    if let Some(url) = &config.proxy {
        let proxy = crate::proxy::net::Proxy::resolve(url.clone(), config.bind)
            .await
            .with_context(|| format!("--proxy {url}"))?;
        crate::proxy::net::install(proxy);
    }
    let rate_limits = crate::ratelimit::RateLimits {
        down: crate::ratelimit::RateLimiter::new(match config.download_limit {
            0 => UNLIMITED,
            n => n,
        }),
        up: crate::ratelimit::RateLimiter::new(match config.upload_limit {
            0 => UNLIMITED,
            n => n,
        }),
    };
    let listener = tokio::net::TcpListener::bind(d.rpc)
        .await
        .with_context(|| format!("--rpc {}", d.rpc))?;
    let started =
        crate::cmd::download::start_session(&config, false, rate_limits, shutdown.clone()).await?;
    let state_dir = started
        .state_dir
        .clone()
        .context("no state dir: give --state-dir (or set HOME or XDG_STATE_HOME)")?;
    std::fs::create_dir_all(&state_dir)
        .with_context(|| format!("creating the state dir {}", state_dir.display()))?;
    let session = started.session.clone();
    let gate = gate::Gate::new(d.rpc.ip(), d.rpc_auth.as_deref());
    let info = rpc::SessionInfo {
        download_dir: config.output.to_string_lossy().into_owned(),
        config_dir: state_dir.to_string_lossy().into_owned(),
        peer_port: session.listen_port,
        down_limit: config.download_limit,
        up_limit: config.upload_limit,
        seed_ratio: config.seed_ratio,
        dht: session.dht.is_some(),
        lsd: session.lsd_running(),
        utp: !config.no_utp,
        port_mapping: config.port_mapping,
        encryption: match config.encryption {
            crate::mse::Encryption::Require => "required",
            crate::mse::Encryption::Disable => "tolerated",
            crate::mse::Encryption::Prefer => "preferred",
        },
        peer_limit_global: config.max_peers,
        peer_limit_per_torrent: config.max_peers_per_torrent,
        max_active: config.max_active,
        session_id: gate.session_id.clone(),
        add_paused: false,
    };
    let root = config.output.clone();
    let manager = Manager::new(session.clone(), config, state_dir.clone());
    let restored = manager.restore();
    if restored > 0 {
        tracing::info!("{restored} torrents restored from the last run");
    }
    let mut daemon = serve::Daemon::new(manager.clone(), session.clone(), root, info);
    daemon.past = stats::load(&state_dir);
    let daemon = Arc::new(daemon);
    let local = listener.local_addr()?;
    tracing::info!("RPC listening on http://{local}/transmission/rpc");
    eprintln!("btc daemon: RPC on http://{local}/transmission/rpc");
    // The listener is bound and the torrents restored: clients may come.
    notify::notify_or_log(&format!(
        "READY=1\nSTATUS=RPC on http://{local}/transmission/rpc"
    ));
    let stop = shutdown.child_token();
    let http_task = tokio::spawn(http::serve(
        listener,
        Arc::new(gate),
        daemon.clone(),
        stop.clone(),
    ));
    let watch_task = d
        .watch
        .clone()
        .map(|dir| tokio::spawn(watch::run(dir, daemon.clone(), stop.clone())));
    // The cumulative stats, saved every minute (a crash loses at most
    // that) and at the end.
    let stats_task = {
        let (daemon, stop, dir) = (daemon.clone(), stop.clone(), state_dir.clone());
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(STATS_EVERY) => save_stats(&dir, &daemon),
                    _ = stop.cancelled() => break,
                }
            }
        })
    };
    shutdown.cancelled().await;
    tracing::info!("stopping: saving every torrent's resume data");
    notify::notify_or_log("STOPPING=1\nSTATUS=saving resume data");
    stop.cancel();
    manager.shutdown().await;
    let _ = stats_task.await;
    save_stats(&state_dir, &daemon);
    let _ = http_task.await;
    if let Some(t) = watch_task {
        let _ = t.await;
    }
    started.finish().await;
    Ok(())
}

/// How often the cumulative stats are saved while the daemon runs.
const STATS_EVERY: std::time::Duration = std::time::Duration::from_secs(60);

fn save_stats(state_dir: &std::path::Path, daemon: &serve::Daemon) {
    if let Err(e) = stats::save(state_dir, &daemon.totals()) {
        tracing::warn!("saving the session stats in {}: {e}", state_dir.display());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(rpc: &str, auth: Option<&str>) -> DaemonConfig {
        DaemonConfig {
            rpc: rpc.parse().unwrap(),
            rpc_auth: auth.map(str::to_string),
            watch: None,
        }
    }

    #[test]
    fn a_non_loopback_rpc_needs_auth() {
        assert!(cfg("127.0.0.1:9091", None).check().is_ok());
        assert!(cfg("[::1]:9091", None).check().is_ok());
        let e = cfg("0.0.0.0:9091", None).check().unwrap_err();
        assert!(e.to_string().contains("--rpc-auth"), "{e}");
        assert!(cfg("0.0.0.0:9091", Some("u:p")).check().is_ok());
        assert!(cfg("127.0.0.1:9091", Some("nocolon")).check().is_err());
    }
}
