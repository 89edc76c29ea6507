//! Web seeds (BEP 19): plain HTTP servers holding the torrent's files, named
//! by the torrent's `url-list` or a magnet's `ws=`.
//!
//! Each URL gets one task that behaves like a peer holding every piece: it
//! asks the picker for blocks (more when the server is fast), fetches them
//! with HTTP range requests ([`plan`]), and hands the bytes to the same
//! store-and-verify path as peer blocks, so nothing from a web seed reaches
//! the disk unverified. A server whose data keeps failing the hash check,
//! or that keeps failing, is dropped; one that is only slow keeps its
//! blocks until the picker's endgame and stale-request rules hand them to
//! peers as well.

pub mod plan;

use crate::bitfield::Bitfield;
use crate::error_chain;
use crate::geometry::Geometry;
use crate::metainfo::Info;
use crate::peer::conn::next_key;
use crate::peer::message::BlockRef;
use crate::peer::swarm::Swarm;
use crate::picker::PeerKey;
use crate::storage::layout::Layout;
use plan::{Cutter, Run};
use reqwest::Client;
use std::net::IpAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

/// Most web seeds used at once; more URLs than this are ignored.
pub const MAX_WEB_SEEDS: usize = 8;

/// Blocks asked of the picker per round: between 256 KiB and 4 MiB, sized
/// to about [`ROUND_TARGET`] of the server's rate, so a slow server does
/// not sit on blocks that peers could fetch.
const MIN_ROUND_BLOCKS: usize = 16;
const MAX_ROUND_BLOCKS: usize = 256;
const ROUND_TARGET: Duration = Duration::from_secs(4);

/// A request with no new byte for this long is abandoned.
const STALL_TIMEOUT: Duration = Duration::from_secs(30);

/// Time allowed to connect to the server.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(15);

/// Zeros made at a time for a pad file's share of a run.
const PAD_CHUNK: u64 = 64 * 1024;

/// Rounds in a row that may fail before the server is given up.
const MAX_FAILURES: u32 = 8;

/// Redirects followed per request; one more fails the request (a redirect
/// loop ends here). Policy ([`plan::redirect_allowed`]): only to http(s),
/// and never from a public host to a loopback, private or link-local
/// address. Redirects to *other* hosts are followed: big web seeds
/// (archive.org, mirror networks) answer with a redirect to the machine
/// that holds the file, and it is safe because nothing from a web seed is
/// trusted: every byte is hash-checked before it reaches the disk, at most
/// the bytes asked for are read (see [`MAX_RESPONSE_BYTES`]), and the
/// torrent could have named that other public host directly anyway. The
/// one reach a redirect would add, into the user's own network, is the one
/// refused.
pub const MAX_REDIRECTS: usize = 5;

/// Most body bytes taken from one response: the bytes of one run, whose
/// length is checked against `Content-Range`/`Content-Length` before the
/// body is read ([`plan::check_framing`]). Reading stops there and the
/// connection is dropped, so an endless or lying body costs nothing more.
pub const MAX_RESPONSE_BYTES: u64 = MAX_ROUND_BLOCKS as u64 * 16 * 1024;

/// What went wrong with one web seed request.
#[derive(Debug, thiserror::Error)]
pub enum WebSeedError {
    /// Connecting, sending or reading failed.
    #[error("{url}: {reason}")]
    Http {
        /// The file's URL.
        url: String,
        /// The cause, with its chain.
        reason: String,
    },
    /// The server answered with something other than the range asked for.
    #[error("{url}: HTTP status {status} to a range request")]
    Status {
        /// The file's URL.
        url: String,
        /// The status.
        status: u16,
    },
    /// The response's headers do not fit the range asked for (wrong
    /// `Content-Range`, a `Content-Length` other than asked): refused
    /// before any body byte is taken.
    #[error("{url}: {why}; response refused")]
    Framing {
        /// The file's URL.
        url: String,
        /// What does not fit.
        why: String,
    },
    /// The body ended early.
    #[error("{url}: got {got} of {want} bytes")]
    Short {
        /// The file's URL.
        url: String,
        /// Bytes received.
        got: u64,
        /// Bytes asked for.
        want: u64,
    },
    /// No byte arrived for `STALL_TIMEOUT`.
    #[error("{url}: no data for {after:?}")]
    Stalled {
        /// The file's URL.
        url: String,
        /// How long it was silent.
        after: Duration,
    },
}

/// The HTTP client web seeds share (connections are pooled per server).
pub fn client(bind: Option<IpAddr>) -> reqwest::Result<Client> {
    let mut builder = Client::builder()
        .user_agent(concat!("btc/", env!("CARGO_PKG_VERSION")))
        .connect_timeout(CONNECT_TIMEOUT)
        .redirect(reqwest::redirect::Policy::custom(|attempt| {
            if attempt.previous().len() > MAX_REDIRECTS {
                return attempt.error(format!("more than {MAX_REDIRECTS} redirects"));
            }
            let verdict = attempt
                .previous()
                .first()
                .map_or(Ok(()), |from| plan::redirect_allowed(from, attempt.url()));
            match verdict {
                Ok(()) => attempt.follow(),
                Err(why) => attempt.error(why),
            }
        }));
    if let Some(ip) = bind {
        builder = builder.local_address(ip);
    }
    crate::proxy::net::apply(crate::iface::http(builder)).build()
}

/// Whether `url` is one btc can use as a web seed.
pub fn is_usable(url: &str) -> bool {
    let lower = url.to_ascii_lowercase();
    lower.starts_with("http://") || lower.starts_with("https://")
}

/// What a web seed needs from its torrent beyond [`Swarm`] (picking,
/// delivering, releasing), implemented by the session.
pub trait WebSeedHost: Swarm {
    /// The torrent's files and geometry, once the metadata is known.
    fn web_seed_torrent(&self) -> Option<(Info, Geometry)>;
    /// A web seed starts, under `key`: its hash failures are counted.
    fn web_seed_joined(&self, key: PeerKey);
    /// The web seed under `key` stopped.
    fn web_seed_left(&self, key: PeerKey);
    /// Whether the data of the web seed under `key` failed the hash check
    /// too often to keep using it.
    fn web_seed_banned(&self, key: PeerKey) -> bool;
    /// The process-wide download limit web seeds share with peers.
    fn download_limit(&self) -> Option<Arc<crate::ratelimit::RateLimiter>> {
        None
    }
}

/// Starts fetching from the web seed `url`. Needs the metadata installed;
/// ends when the torrent is complete, the server is given up, or `stop`
/// is cancelled.
pub fn spawn(
    host: Arc<dyn WebSeedHost>,
    client: Client,
    url: String,
    tasks: &TaskTracker,
    stop: CancellationToken,
) -> JoinHandle<()> {
    crate::spawn::named(tasks, "web seed", async move {
        let key = next_key();
        host.web_seed_joined(key);
        tracing::info!("using web seed {url}");
        tokio::select! {
            _ = stop.cancelled() => {}
            _ = run(&*host, &client, &url, key) => {}
        }
        host.web_seed_left(key);
        host.peer_gone(key, None);
    })
}

async fn run(host: &dyn WebSeedHost, client: &Client, url: &str, key: PeerKey) {
    let Some((info, geometry)) = host.web_seed_torrent() else {
        return;
    };
    let info = &info;
    let layout = Layout::new(info.files.iter().map(|f| f.length));
    let everything = Bitfield::full(geometry.piece_count as usize);
    let mut failures = 0u32;
    let mut want = MIN_ROUND_BLOCKS;
    let mut me = Me {
        key,
        warned_overlong: false,
    };
    loop {
        if host.web_seed_banned(key) {
            tracing::warn!("web seed {url}: dropped, its data keeps failing the hash check");
            return;
        }
        if host.is_complete() {
            return;
        }
        // `--interface` is down: wait for it rather than fail.
        crate::iface::wait_up().await;
        let blocks = host.pick(key, &everything, want, &[], Instant::now());
        if blocks.is_empty() {
            // Everything left is in flight elsewhere; look again soon.
            tokio::time::sleep(Duration::from_millis(500)).await;
            continue;
        }
        let started = Instant::now();
        let mut fetched = 0u64;
        let mut result = Ok(());
        for run in plan::runs(&blocks, &geometry) {
            result = fetch_run(host, client, url, &mut me, info, &layout, &run).await;
            if result.is_err() {
                break;
            }
            fetched += run.len;
        }
        // Blocks not delivered go back to the pool (delivered ones are
        // already marked received, which release leaves alone).
        host.release(key, &blocks);
        match result {
            Ok(()) => {
                failures = 0;
                let rate = fetched as f64 / started.elapsed().as_secs_f64().max(1e-3);
                let ideal = rate * ROUND_TARGET.as_secs_f64() / 16384.0;
                want = (ideal as usize).clamp(MIN_ROUND_BLOCKS, MAX_ROUND_BLOCKS);
            }
            Err(e) if crate::iface::blocked() => {
                // Not the server's failure: retried once the device is back.
                tracing::debug!("web seed {e} while --interface is down");
                want = MIN_ROUND_BLOCKS;
            }
            Err(e) => {
                failures += 1;
                want = MIN_ROUND_BLOCKS;
                if failures >= MAX_FAILURES {
                    tracing::warn!("web seed {e}; giving up on it after {failures} failures");
                    return;
                }
                if failures == 1 {
                    tracing::warn!("web seed {e}; will retry");
                } else {
                    tracing::debug!("web seed {e} (failure {failures})");
                }
                let wait = Duration::from_secs(1 << failures.min(6)).min(Duration::from_secs(60));
                tokio::time::sleep(wait).await;
            }
        }
    }
}

/// One web seed task's identity and what it has already warned about.
struct Me {
    /// Its key in the picker.
    key: PeerKey,
    /// The "sent more than asked" warning was printed.
    warned_overlong: bool,
}

/// Fetches one run, part by part, delivering each block as it completes.
async fn fetch_run(
    host: &dyn WebSeedHost,
    client: &Client,
    base: &str,
    me: &mut Me,
    info: &Info,
    layout: &Layout,
    run: &Run,
) -> Result<(), WebSeedError> {
    let key = me.key;
    let download_limit = host.download_limit();
    let mut cutter = Cutter::new(run);
    let mut deliver = |b: BlockRef, bytes: &[u8]| {
        host.deliver(key, b.piece, b.offset, bytes);
    };
    for part in plan::parts(run, layout, info) {
        if part.pad {
            let zeros = vec![0u8; part.len.min(PAD_CHUNK) as usize];
            let mut left = part.len;
            while left > 0 {
                let n = left.min(PAD_CHUNK) as usize;
                cutter.push(&zeros[..n], &mut deliver);
                left -= n as u64;
            }
            continue;
        }
        let url = plan::file_url(base, info, part.file);
        let http = |e: reqwest::Error| WebSeedError::Http {
            url: url.clone(),
            reason: error_chain(&e),
        };
        let stalled = || WebSeedError::Stalled {
            url: url.clone(),
            after: STALL_TIMEOUT,
        };
        let request = client
            .get(&url)
            .header(reqwest::header::RANGE, part.range_header())
            .send();
        let mut resp = tokio::time::timeout(STALL_TIMEOUT, request)
            .await
            .map_err(|_| stalled())?
            .map_err(http)?;
        let file_len = info.files.get(part.file).map_or(0, |f| f.length);
        let content_range = resp
            .headers()
            .get(reqwest::header::CONTENT_RANGE)
            .map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned());
        // A server that ignores Range sends the whole file (200): fine
        // only when the whole file is what we asked for.
        match plan::check_framing(
            resp.status().as_u16(),
            content_range.as_deref(),
            resp.content_length(),
            &part,
            file_len,
        ) {
            Ok(()) => {}
            Err(plan::Framing::Status(status)) => {
                return Err(WebSeedError::Status { url, status });
            }
            Err(plan::Framing::Bad(why)) => return Err(WebSeedError::Framing { url, why }),
        }
        let mut got = 0u64;
        while got < part.len {
            let chunk = tokio::time::timeout(STALL_TIMEOUT, resp.chunk())
                .await
                .map_err(|_| stalled())?
                .map_err(http)?;
            let Some(chunk) = chunk else { break };
            let take = chunk.len().min((part.len - got) as usize);
            if take < chunk.len() && !me.warned_overlong {
                me.warned_overlong = true;
                tracing::warn!(
                    "web seed {url}: sent more than the {} bytes asked for; cut there",
                    part.len
                );
            }
            cutter.push(&chunk[..take], &mut deliver);
            got += take as u64;
            if let Some(limit) = &download_limit {
                limit.consume(chunk.len()).await;
            }
        }
        // Never read past what was asked: dropping `resp` closes the
        // connection on whatever the server still wanted to send.
        drop(resp);
        if got < part.len {
            return Err(WebSeedError::Short {
                url,
                got,
                want: part.len,
            });
        }
    }
    Ok(())
}
