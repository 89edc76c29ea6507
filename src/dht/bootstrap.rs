//! Bootstrap names and addresses resolved with a deadline: mainline
//! resolves names synchronously, so `start` hands it addresses only and
//! never waits on DNS for longer than [`super::RESOLVE_DEADLINE`]; and the
//! watcher that resolves them again while the routing table stays empty
//! (see "Starting offline" in [`super`]).

use super::{Inner, MAX_BOOTSTRAP_ADDRS, RESOLVE_DEADLINE, RETRY_MAX, SIZE_REFRESH};
use std::net::{SocketAddr, SocketAddrV4, ToSocketAddrs};
use std::sync::atomic::Ordering;
use std::sync::{Weak, mpsc};
use std::time::{Duration, Instant};

/// Bootstrap entries considered; more are ignored (each name costs a thread).
pub(crate) const MAX_BOOTSTRAP_ENTRIES: usize = 64;

/// Resolves `HOST:PORT` entries to IPv4 addresses. Literal addresses cost
/// nothing; names are resolved on helper threads and whatever has not
/// answered by `deadline` is skipped (the threads finish on their own).
pub(crate) fn resolve_bounded(entries: &[String], deadline: Duration) -> Vec<SocketAddrV4> {
    resolve_bounded_all(entries, deadline)
        .into_iter()
        .filter_map(|a| match a {
            SocketAddr::V4(v4) => Some(v4),
            SocketAddr::V6(_) => None,
        })
        .collect()
}

/// [`resolve_bounded`] for both families (`[v6addr]:port` literals and
/// AAAA records too), for the IPv6 node.
pub(crate) fn resolve_bounded_all(entries: &[String], deadline: Duration) -> Vec<SocketAddr> {
    let mut out = Vec::new();
    let (tx, rx) = mpsc::channel::<Vec<SocketAddr>>();
    let mut pending = 0usize;
    for entry in entries.iter().take(MAX_BOOTSTRAP_ENTRIES) {
        let entry = entry.trim();
        if let Ok(addr) = entry.parse::<SocketAddr>() {
            out.push(addr);
            continue;
        }
        let name = entry.to_string();
        let tx = tx.clone();
        let spawned = std::thread::Builder::new()
            .name("btc-dht-resolve".into())
            .spawn(move || {
                let addrs = match name.to_socket_addrs() {
                    Ok(it) => it.collect(),
                    Err(e) => {
                        tracing::debug!(%name, error = %e, "dht bootstrap name did not resolve");
                        Vec::new()
                    }
                };
                let _ = tx.send(addrs);
            });
        if spawned.is_ok() {
            pending += 1;
        }
    }
    drop(tx);
    let until = Instant::now() + deadline;
    while pending > 0 {
        let left = until.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(addrs) => {
                pending -= 1;
                for a in addrs {
                    if !out.contains(&a) {
                        out.push(a);
                    }
                }
            }
            Err(_) => {
                tracing::debug!(pending, "dht bootstrap resolution deadline passed");
                break;
            }
        }
    }
    out
}

/// `current` plus the addresses of `more` it lacks, or `None` if it lacks
/// none (so there is no reason to rebuild).
pub(super) fn widened(
    current: &[SocketAddrV4],
    more: &[SocketAddrV4],
) -> Option<Vec<SocketAddrV4>> {
    let mut out = current.to_vec();
    for a in more {
        if out.len() < MAX_BOOTSTRAP_ADDRS && !out.contains(a) {
            out.push(*a);
        }
    }
    (out.len() > current.len()).then_some(out)
}

/// Wait before re-resolution number `attempt` (0-based) while the routing
/// table stays empty: 1, 2, 4, 8, 16 s, then every [`RETRY_MAX`].
pub(super) fn retry_delay(attempt: u32) -> Duration {
    Duration::from_secs(1u64 << attempt.min(5)).min(RETRY_MAX)
}

/// Keeps `table_size` fresh and, while the table is empty, re-resolves the
/// bootstrap names and rebuilds the node when they yield new addresses.
/// A plain thread (no runtime needed, and resolution blocks); it holds the
/// node only for moments, and stops once the last handle is gone.
pub(super) fn spawn_watcher(inner: Weak<Inner>) -> std::io::Result<()> {
    std::thread::Builder::new()
        .name("btc-dht-watch".into())
        .spawn(move || {
            let mut attempt = 0u32;
            let mut next_retry: Option<Instant> = None;
            loop {
                let Some(strong) = inner.upgrade() else {
                    return;
                };
                let size = strong.good_nodes().len();
                strong.table_size.store(size, Ordering::Relaxed);
                let empty = size == 0 && !strong.names.is_empty();
                let names = strong.names.clone();
                drop(strong);
                if !empty {
                    attempt = 0;
                    next_retry = None;
                } else {
                    let due = *next_retry.get_or_insert_with(|| Instant::now() + retry_delay(0));
                    if Instant::now() >= due {
                        let resolved = resolve_bounded(&names, RESOLVE_DEADLINE);
                        tracing::debug!(
                            attempt,
                            ?resolved,
                            "dht routing table empty; re-resolved bootstrap names"
                        );
                        match inner.upgrade() {
                            Some(strong) => strong.rebuild_with(&resolved),
                            None => return,
                        };
                        attempt += 1;
                        next_retry = Some(Instant::now() + retry_delay(attempt));
                    }
                }
                std::thread::sleep(SIZE_REFRESH);
            }
        })
        .map(|_| ())
}
