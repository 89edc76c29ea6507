//! Progress display: indicatif bars fed from the session's [`Status`].
//!
//! Protocol code never calls into here; it publishes a `watch` of `Status`
//! and this module renders it. Bars go to stderr and are hidden with `-q` or
//! when stderr is not a terminal; then a plain line is printed at each phase
//! change instead, so logs of headless runs still tell the story.
//! Log lines go through [`LogWriter`] so they never tear a bar.

use crate::cmd::info::human_bytes;
use crate::session::status::{Phase, Status};
use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::{IsTerminal, Write};
use std::sync::OnceLock;
use std::time::Duration;
use tokio::sync::watch;

mod multi;
pub use multi::{print_line, render_all};

static MULTI: OnceLock<MultiProgress> = OnceLock::new();

fn multi() -> &'static MultiProgress {
    MULTI.get_or_init(MultiProgress::new)
}

/// A `tracing` writer that suspends the progress bars while it prints.
pub struct LogWriter;

impl Write for LogWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        multi().suspend(|| std::io::stderr().write_all(buf))?;
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Log lines as `warning: message` (plus `key=value` fields), the way
/// command-line tools speak, instead of tracing's timestamped default.
pub struct LogFormat;

impl<S, N> tracing_subscriber::fmt::FormatEvent<S, N> for LogFormat
where
    S: tracing::Subscriber + for<'a> tracing_subscriber::registry::LookupSpan<'a>,
    N: for<'a> tracing_subscriber::fmt::FormatFields<'a> + 'static,
{
    fn format_event(
        &self,
        ctx: &tracing_subscriber::fmt::FmtContext<'_, S, N>,
        mut writer: tracing_subscriber::fmt::format::Writer<'_>,
        event: &tracing::Event<'_>,
    ) -> std::fmt::Result {
        let level = match *event.metadata().level() {
            tracing::Level::ERROR => "error",
            tracing::Level::WARN => "warning",
            tracing::Level::INFO => "info",
            tracing::Level::DEBUG => "debug",
            tracing::Level::TRACE => "trace",
        };
        write!(writer, "{level}: ")?;
        ctx.field_format().format_fields(writer.by_ref(), event)?;
        writeln!(writer)
    }
}

/// Whether bars can be drawn: not quiet, and stderr is a terminal.
pub fn bars_enabled(quiet: bool) -> bool {
    !quiet && std::io::stderr().is_terminal()
}

/// Renders `status` until the sender is dropped.
pub async fn render(mut rx: watch::Receiver<Status>, quiet: bool) {
    let bars = bars_enabled(quiet);
    if !bars {
        multi().set_draw_target(ProgressDrawTarget::hidden());
    }
    let mut bar: Option<(Kind, ProgressBar)> = None;
    let mut printed = Printed::default();
    let mut last_progress = std::time::Instant::now();
    loop {
        let s = rx.borrow_and_update().clone();
        if !bars && !quiet {
            plain_line(&s, &mut printed);
            if s.phase == Phase::Downloading && last_progress.elapsed() >= PLAIN_PROGRESS_EVERY {
                last_progress = std::time::Instant::now();
                let _ = writeln!(std::io::stderr(), "{}", progress_line(&s));
            }
        }
        if bars {
            draw(&s, &mut bar, None);
        }
        tokio::select! {
            r = rx.changed() => if r.is_err() { break },
            _ = tokio::time::sleep(Duration::from_millis(500)) => {}
        }
    }
    if let Some((_, b)) = bar {
        b.finish_and_clear();
    }
}

/// How often the plain (non-terminal) output prints a progress line.
const PLAIN_PROGRESS_EVERY: Duration = Duration::from_secs(5);

#[derive(PartialEq, Eq, Clone, Copy)]
enum Kind {
    Checking,
    Spinner,
    Transfer,
}

/// Draws `s` on its bar, made (above `anchor`, if given) or remade when
/// the kind of bar changes.
fn draw(s: &Status, bar: &mut Option<(Kind, ProgressBar)>, anchor: Option<&ProgressBar>) {
    let kind = match s.phase {
        Phase::Checking { .. } => Kind::Checking,
        Phase::Starting | Phase::Queued | Phase::FindingPeers | Phase::FetchingMetadata => {
            Kind::Spinner
        }
        Phase::Downloading | Phase::Seeding | Phase::Stopping => Kind::Transfer,
    };
    if bar.as_ref().map(|(k, _)| *k) != Some(kind) {
        if let Some((_, old)) = bar.take() {
            old.finish_and_clear();
        }
        let b = match kind {
            Kind::Checking => ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "checking {bar:30.cyan/blue} {pos}/{len} pieces {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
            Kind::Spinner => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {msg}").expect("valid template"),
            ),
            Kind::Transfer => ProgressBar::new(0).with_style(
                ProgressStyle::with_template(
                    "{prefix} {bar:30.green/blue} {bytes}/{total_bytes} {msg}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            ),
        };
        b.enable_steady_tick(Duration::from_millis(120));
        let b = match anchor {
            Some(a) => multi().insert_before(a, b),
            None => multi().add(b),
        };
        *bar = Some((kind, b));
    }
    let Some((_, b)) = bar else { return };
    match s.phase {
        Phase::Checking { done, total } => {
            b.set_length(total as u64);
            b.set_position(done as u64);
            b.set_message(s.name.clone());
        }
        Phase::Starting => b.set_message(format!("starting {}", s.name)),
        Phase::Queued => b.set_message(format!("queued {}", s.name)),
        Phase::FindingPeers => b.set_message(format!(
            "finding peers: DHT {} ({} nodes) / trackers {}/{} / connected {}",
            s.dht_peers, s.dht_nodes, s.trackers_ok, s.trackers_total, s.peers_connected
        )),
        Phase::FetchingMetadata => b.set_message(format!(
            "fetching metadata: {} of {} pieces from {} peers",
            s.metadata_progress.0, s.metadata_progress.1, s.peers_connected
        )),
        Phase::Downloading | Phase::Seeding | Phase::Stopping => {
            b.set_prefix(short_name(&s.name, 32));
            b.set_length(s.total);
            b.set_position(s.have);
            b.set_message(transfer_message(s));
        }
    }
}

/// `name` cut to `max` characters with an ellipsis, for the bar's prefix.
fn short_name(name: &str, max: usize) -> String {
    if name.chars().count() <= max {
        return name.to_string();
    }
    let mut s: String = name.chars().take(max.saturating_sub(1)).collect();
    s.push('…');
    s
}

/// The progress line printed every few seconds when stderr is not a
/// terminal (logs of headless runs).
fn progress_line(s: &Status) -> String {
    let pct = if s.total == 0 {
        0.0
    } else {
        s.have as f64 * 100.0 / s.total as f64
    };
    format!(
        "{}: {pct:.1}% {}/{} {}",
        s.name,
        human_bytes(s.have),
        human_bytes(s.total),
        transfer_message(s)
    )
}

fn transfer_message(s: &Status) -> String {
    let mut peers = format!("peers {}/{}", s.peers_connected, s.peers_known);
    // How they are connected, when not all plain TCP.
    let how: Vec<String> = [(s.peers_utp, "uTP"), (s.peers_encrypted, "RC4")]
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, what)| format!("{n} {what}"))
        .collect();
    if !how.is_empty() {
        peers.push_str(&format!(" ({})", how.join(", ")));
    }
    if s.web_seeds > 0 && s.phase != Phase::Seeding {
        peers.push_str(&format!(" + {} web", s.web_seeds));
    }
    match s.phase {
        Phase::Seeding => format!(
            "seeding ↑{}/s, uploaded {} (ratio {:.2}), {peers}",
            human_bytes(s.up_rate),
            human_bytes(s.uploaded),
            ratio(s)
        ),
        Phase::Stopping => "stopping…".to_string(),
        _ if s.blocked => format!(
            "blocked: --interface {} is down, nothing is sent until it is back; {peers}",
            crate::iface::name().unwrap_or("?")
        ),
        _ if s.disk_paused => format!("paused: disk error, retrying soon; {peers}"),
        _ => format!(
            "↓{}/s ↑{}/s {peers} ETA {}",
            human_bytes(s.down_rate),
            human_bytes(s.up_rate),
            eta(s)
        ),
    }
}

fn ratio(s: &Status) -> f64 {
    if s.total == 0 {
        0.0
    } else {
        s.uploaded as f64 / s.total as f64
    }
}

fn eta(s: &Status) -> String {
    if s.down_rate == 0 {
        return "-".into();
    }
    let secs = s.total.saturating_sub(s.have) / s.down_rate;
    human_duration(Duration::from_secs(secs))
}

/// `1h02m`, `3m05s`, `42s`, `0.8s`.
pub fn human_duration(d: Duration) -> String {
    let s = d.as_secs();
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, (s % 3600) / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else if s >= 10 {
        format!("{s}s")
    } else {
        format!("{:.1}s", d.as_secs_f64())
    }
}

/// Lines already printed in plain mode, keyed on lasting facts rather
/// than the current phase, which a fast run can skip between two looks.
#[derive(Default)]
struct Printed {
    finding: bool,
    metadata: bool,
    downloading: bool,
    seeding: bool,
}

fn plain_line(s: &Status, printed: &mut Printed) {
    let mut out = Vec::new();
    let magnet =
        s.metadata_at.is_some() || matches!(s.phase, Phase::FindingPeers | Phase::FetchingMetadata);
    if magnet && !printed.finding {
        printed.finding = true;
        out.push(format!("finding peers for {}", s.info_hash));
    }
    if let (Some(t), false) = (s.metadata_at, printed.metadata) {
        printed.metadata = true;
        out.push(format!(
            "metadata received: {} ({}) after {}",
            s.name,
            human_bytes(s.total),
            human_duration(t)
        ));
    }
    let live = matches!(
        s.phase,
        Phase::Downloading | Phase::Seeding | Phase::Stopping
    );
    if live && s.total > 0 && !printed.downloading && s.resumed_bytes < s.total {
        printed.downloading = true;
        out.push(format!(
            "downloading {} ({}, {} pieces already on disk)",
            s.name,
            human_bytes(s.total),
            s.resumed_pieces
        ));
    }
    if s.phase == Phase::Seeding && !printed.seeding {
        printed.seeding = true;
        out.push(format!("seeding {}", s.name));
    }
    for line in out {
        let _ = writeln!(std::io::stderr(), "{line}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_read_naturally() {
        assert_eq!(human_duration(Duration::from_millis(800)), "0.8s");
        assert_eq!(human_duration(Duration::from_secs(42)), "42s");
        assert_eq!(human_duration(Duration::from_secs(185)), "3m05s");
        assert_eq!(human_duration(Duration::from_secs(3720)), "1h02m");
    }

    #[test]
    fn progress_lines_name_the_torrent() {
        let s = Status {
            name: "ubuntu.iso".into(),
            total: 20 << 20,
            have: 20 << 20,
            resumed_bytes: 4 << 20,
            download_time: Some(Duration::from_secs(4)),
            peers_used: 3,
            ..Status::default()
        };
        let half = Status {
            have: 10 << 20,
            download_time: None,
            phase: Phase::Downloading,
            ..s
        };
        assert!(progress_line(&half).starts_with("ubuntu.iso: 50.0% 10.00 MiB/20.00 MiB ↓"));
        assert_eq!(short_name("abcdef", 4), "abc…");
        assert_eq!(short_name("abc", 4), "abc");
    }

    #[test]
    fn a_blocked_interface_shows_in_the_status_line() {
        let s = Status {
            phase: Phase::Downloading,
            blocked: true,
            ..Status::default()
        };
        let line = transfer_message(&s);
        assert!(line.starts_with("blocked: --interface"), "{line}");
        assert!(line.contains("nothing is sent until it is back"), "{line}");
    }

    #[test]
    fn eta_and_ratio() {
        let s = Status {
            total: 1000,
            have: 400,
            down_rate: 100,
            uploaded: 500,
            ..Status::default()
        };
        assert_eq!(eta(&s), "6.0s");
        assert!((ratio(&s) - 0.5).abs() < 1e-9);
        assert_eq!(eta(&Status::default()), "-");
    }
}
