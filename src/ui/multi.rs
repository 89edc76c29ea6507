//! The display of several torrents: one bar per torrent that is busy
//! (checking, queued, finding peers, downloading), at most [`MAX_ROWS`] of
//! them, and one total line under them that sums up the rest, so a
//! thousand seeding torrents take two lines, not a thousand.

use super::{Kind, Printed, bars_enabled, draw, multi, plain_line, progress_line};
use crate::cmd::info::human_bytes;
use crate::session::status::{Phase, Status};
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use std::io::Write;
use std::time::Duration;
use tokio::sync::watch;

/// Torrents shown with a bar of their own.
pub const MAX_ROWS: usize = 8;

/// How often the screen is redrawn (it polls; a thousand `watch`es are
/// not worth a thousand wake-ups).
const REDRAW: Duration = Duration::from_millis(500);

/// Counts for the total line.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Totals {
    /// Torrents still running.
    pub running: usize,
    /// Checking or downloading (metadata included).
    pub downloading: usize,
    /// Waiting for a download slot.
    pub queued: usize,
    /// Complete and seeding.
    pub seeding: usize,
    /// Verified bytes of the wanted data, all torrents.
    pub have: u64,
    /// Wanted bytes, all torrents (known sizes only).
    pub total: u64,
    /// Receive rate, all torrents.
    pub down_rate: u64,
    /// Send rate, all torrents.
    pub up_rate: u64,
}

/// Whether a torrent in this phase gets a row (seeding ones are summed up).
pub fn is_busy(phase: Phase) -> bool {
    !matches!(phase, Phase::Seeding | Phase::Stopping)
}

/// Sums up the torrents still running.
pub fn totals<'a>(all: impl IntoIterator<Item = &'a Status>) -> Totals {
    let mut t = Totals::default();
    for s in all {
        t.running += 1;
        match s.phase {
            Phase::Queued => t.queued += 1,
            Phase::Seeding => t.seeding += 1,
            Phase::Stopping => {}
            _ => t.downloading += 1,
        }
        t.have += s.have;
        t.total += s.total;
        t.down_rate += s.down_rate;
        t.up_rate += s.up_rate;
    }
    t
}

/// The total line: `total: 12 torrents, 3 downloading, 2 queued, 7
/// seeding; 1.2 GiB/3.4 GiB ↓… ↑…` plus how many busy ones have no row.
pub fn total_line(t: &Totals, hidden: usize) -> String {
    let mut s = format!(
        "total: {} torrents, {} downloading, {} queued, {} seeding; {}/{} ↓{}/s ↑{}/s",
        t.running,
        t.downloading,
        t.queued,
        t.seeding,
        human_bytes(t.have),
        human_bytes(t.total),
        human_bytes(t.down_rate),
        human_bytes(t.up_rate)
    );
    if hidden > 0 {
        s.push_str(&format!(" (+{hidden} more not shown)"));
    }
    s
}

/// Renders every torrent's status until all their senders are dropped.
pub async fn render_all(mut rxs: Vec<watch::Receiver<Status>>, quiet: bool) {
    if rxs.len() == 1 {
        let rx = rxs.pop().expect("one");
        return super::render(rx, quiet).await;
    }
    let bars = bars_enabled(quiet);
    if !bars {
        multi().set_draw_target(ProgressDrawTarget::hidden());
    }
    let total_bar = multi().add(
        ProgressBar::new_spinner()
            .with_style(ProgressStyle::with_template("{msg}").expect("valid template")),
    );
    let mut rows: Vec<Option<(Kind, ProgressBar)>> = rxs.iter().map(|_| None).collect();
    let mut printed: Vec<Printed> = rxs.iter().map(|_| Printed::default()).collect();
    let mut open: Vec<bool> = rxs.iter().map(|_| true).collect();
    let mut last: Vec<Status> = rxs.iter().map(|_| Status::default()).collect();
    let mut last_progress = std::time::Instant::now();
    loop {
        for (i, rx) in rxs.iter_mut().enumerate() {
            match rx.has_changed() {
                // Copied only when it changed: an idle seeding torrent costs
                // a look, not a copy, per redraw.
                Ok(true) => last[i] = rx.borrow_and_update().clone(),
                Ok(false) => {}
                Err(_) if open[i] => {
                    open[i] = false;
                    if let Some((_, b)) = rows[i].take() {
                        b.finish_and_clear();
                    }
                }
                Err(_) => {}
            }
        }
        let snapshot: Vec<(usize, &Status)> = (0..last.len())
            .filter(|&i| open[i])
            .map(|i| (i, &last[i]))
            .collect();
        if snapshot.is_empty() {
            break;
        }
        let plain_progress = last_progress.elapsed() >= super::PLAIN_PROGRESS_EVERY;
        if plain_progress {
            last_progress = std::time::Instant::now();
        }
        let mut shown = 0;
        let mut hidden = 0;
        for (i, s) in &snapshot {
            let p = &mut printed[*i];
            let row = is_busy(s.phase) && shown < MAX_ROWS;
            if is_busy(s.phase) {
                if row {
                    shown += 1;
                } else {
                    hidden += 1;
                }
            }
            if !bars && !quiet {
                plain_line(s, p);
                if row && plain_progress && s.phase == Phase::Downloading {
                    let _ = writeln!(std::io::stderr(), "{}", progress_line(s));
                }
            }
            if bars {
                if row {
                    draw(s, &mut rows[*i], Some(&total_bar));
                } else if let Some((_, b)) = rows[*i].take() {
                    b.finish_and_clear();
                }
            }
        }
        let t = totals(snapshot.iter().map(|(_, s)| *s));
        if bars {
            total_bar.set_message(total_line(&t, hidden));
        } else if !quiet && plain_progress {
            let _ = writeln!(std::io::stderr(), "{}", total_line(&t, hidden));
        }
        tokio::time::sleep(REDRAW).await;
    }
    for (_, b) in rows.into_iter().flatten() {
        b.finish_and_clear();
    }
    total_bar.finish_and_clear();
}

/// Prints a line above the bars (or plainly when there are none).
pub fn print_line(line: &str) {
    if multi().is_hidden() {
        let _ = writeln!(std::io::stderr(), "{line}");
    } else {
        let _ = multi().println(line);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn st(phase: Phase, have: u64, total: u64) -> Status {
        Status {
            phase,
            have,
            total,
            down_rate: 10,
            ..Status::default()
        }
    }

    #[test]
    fn the_total_line_sums_up_every_torrent() {
        let all = [
            st(Phase::Downloading, 5, 10),
            st(Phase::Queued, 0, 10),
            st(Phase::Seeding, 10, 10),
            st(Phase::Checking { done: 1, total: 2 }, 0, 10),
        ];
        let t = totals(all.iter());
        assert_eq!(
            (t.running, t.downloading, t.queued, t.seeding),
            (4, 2, 1, 1)
        );
        assert_eq!((t.have, t.total, t.down_rate), (15, 40, 40));
        let line = total_line(&t, 3);
        assert!(line.starts_with("total: 4 torrents, 2 downloading, 1 queued, 1 seeding"));
        assert!(line.ends_with("(+3 more not shown)"), "{line}");
        assert!(is_busy(Phase::Queued) && !is_busy(Phase::Seeding));
    }
}
