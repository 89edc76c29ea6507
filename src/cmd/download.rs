//! The main job: download (or seed) one torrent, with progress and a summary.

use super::info::human_bytes;
use super::source::{Resolved, resolve};
use crate::config::Config;
use crate::dht::{DhtConfig, DhtHandle};
use crate::session::status::Status;
use crate::session::{self, Options, Report, Source};
use crate::ui;
use anyhow::{Context, Result};
use std::net::IpAddr;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// Default listen port (also the DHT's UDP port).
pub const DEFAULT_PORT: u16 = 6881;

/// Runs the download; returns the report for the summary line.
pub async fn run(args: Config, shutdown: CancellationToken) -> Result<Report> {
    let source = match resolve(&args.source).await {
        Ok(Resolved::Torrent(m)) => Source::Torrent(m),
        Ok(Resolved::Magnet(m)) => Source::Magnet(m),
        Err(e) => {
            if args.json {
                crate::events::emit(&crate::events::error_line(None, &format!("{e:#}")));
            }
            return Err(e);
        }
    };
    let (info_hash, name_hint) = match &source {
        Source::Torrent(m) => (m.info_hash, Some(m.info.name.clone())),
        Source::Magnet(m) => (m.info_hash, m.name.clone()),
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("creating the output folder {}", args.output.display()))?;
    let state_dir = args
        .state_dir
        .clone()
        .or_else(crate::dht::default_state_dir);
    let private = matches!(&source, Source::Torrent(m) if m.info.private);
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
    let dht = if args.no_dht || private {
        None
    } else {
        let bind = match args.bind {
            Some(IpAddr::V4(v4)) => Some(v4),
            _ => None,
        };
        let cfg = DhtConfig {
            port,
            bind,
            bootstrap: (!args.dht_bootstrap.is_empty()).then(|| args.dht_bootstrap.clone()),
            state_dir: state_dir.clone(),
            server_mode: false,
        };
        match DhtHandle::start(cfg.clone()) {
            Ok(d) => Some(d),
            // The UDP port may be taken by another client; the DHT is a
            // bonus, not a reason to fail.
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
    };
    let rate_limits = crate::ratelimit::RateLimits::new(args.download_limit, args.upload_limit);
    crate::peer::conn::set_process_encryption(args.encryption);
    let (json, quiet) = (args.json, args.quiet);
    let mut opts = Options {
        port,
        port_fallback: args.port.is_none(),
        dht: dht.clone(),
        state_dir,
        rate_limits,
        events: None,
        config: std::sync::Arc::new(args),
    };
    let (status_tx, status_rx) = watch::channel(Status::default());
    let ui_task = if json {
        let (tx, rx) = tokio::sync::mpsc::channel(crate::events::EVENT_QUEUE);
        opts.events = Some(tx);
        tokio::spawn(crate::events::render(info_hash, name_hint, status_rx, rx))
    } else {
        tokio::spawn(ui::render(status_rx, quiet))
    };
    let result = session::run(source, opts, status_tx, shutdown).await;
    let _ = ui_task.await;
    if json {
        match &result {
            Ok(r) => crate::events::emit(&crate::events::stopped_line(
                info_hash,
                r.complete,
                r.downloaded,
                r.uploaded,
            )),
            Err(e) => crate::events::emit(&crate::events::error_line(
                Some(info_hash),
                &format!("{e:#}"),
            )),
        }
    }
    if let Some(d) = dht
        && let Err(e) = d.save_state()
    {
        tracing::debug!("saving DHT state: {}", crate::error_chain(&e));
    }
    result
}

/// The one-line summary printed at the end.
pub fn summary(r: &Report) -> String {
    let mut s = match r.download_time {
        Some(t) => {
            let secs = t.as_secs_f64().max(0.001);
            format!(
                "downloaded {}: {} in {} ({}/s)",
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
