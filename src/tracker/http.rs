//! HTTP(S) announce: one GET, body read under a hard cap, parsed by
//! [`super::announce::parse_http_response`].

use crate::error_chain;
use std::net::IpAddr;
use std::time::Duration;

use super::announce::{
    AnnounceRequest, AnnounceResponse, TrackerError, http_url, parse_http_response,
};

/// Whole-request bound: connect, headers and body. A tracker slower than this
/// is treated as down; the announcer retries later.
pub(crate) const HTTP_TIMEOUT: Duration = Duration::from_secs(15);

/// Largest body we accept, checked against `Content-Length` first and then
/// chunk by chunk *before* buffering each one, so an endless or gigabyte
/// body costs at most this much memory. A compact response with 10k peers
/// is ~60 KiB, so 2 MiB leaves room for dictionary-model peers while
/// refusing a tracker (or a captive portal) that streams forever.
pub(crate) const MAX_BODY: usize = 2 * 1024 * 1024;

/// Redirects followed per announce; one more is an error (a redirect loop
/// ends here instead of spinning).
pub(crate) const MAX_REDIRECTS: usize = 5;

/// Idle keep-alive connections kept per tracker host.
const POOL_IDLE_PER_HOST: usize = 4;
/// How long an idle tracker connection is kept.
const POOL_IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Builds the one client all HTTP trackers share (connection pooling, one TLS
/// config). With `bind` set, every connection leaves from that local IP so a
/// tracker sees the address our peers should dial.
pub fn build_client(bind: Option<IpAddr>) -> Result<reqwest::Client, TrackerError> {
    // Redirects stay on http(s): a tracker must not bounce us to file:// or
    // some other scheme, and long chains are a loop.
    let policy = reqwest::redirect::Policy::custom(|attempt| {
        if attempt.previous().len() > MAX_REDIRECTS {
            attempt.error(format!("more than {MAX_REDIRECTS} redirects"))
        } else if matches!(attempt.url().scheme(), "http" | "https") {
            attempt.follow()
        } else {
            attempt.stop()
        }
    });
    let mut builder = reqwest::Client::builder()
        .user_agent(concat!("btc/", env!("CARGO_PKG_VERSION")))
        .timeout(HTTP_TIMEOUT)
        .connect_timeout(HTTP_TIMEOUT)
        // A few idle connections per tracker host, not one per announce:
        // tens of thousands of paced announces to one keep-alive tracker
        // held a connection (~20 KiB and a descriptor) each for 90 s.
        .pool_max_idle_per_host(POOL_IDLE_PER_HOST)
        .pool_idle_timeout(POOL_IDLE_TIMEOUT)
        .redirect(policy);
    if let Some(ip) = bind {
        builder = builder.local_address(ip);
    }
    crate::proxy::net::apply(crate::iface::http(builder))
        .build()
        .map_err(|e| TrackerError::Client(error_chain(&e)))
}

/// One HTTP scrape (`scrape` is the scrape URL, see
/// [`super::scrape::scrape_url`]).
pub(crate) async fn scrape(
    client: &reqwest::Client,
    scrape: &str,
    info_hash: &crate::id::InfoHash,
) -> Result<super::scrape::ScrapeStats, TrackerError> {
    let url = super::scrape::http_scrape_request(scrape, info_hash);
    let http_err = |e: reqwest::Error| TrackerError::Http {
        url: redact(scrape),
        reason: error_chain(&e.without_url()),
    };
    let mut resp = client.get(&url).send().await.map_err(http_err)?;
    if !resp.status().is_success() {
        return Err(TrackerError::HttpStatus {
            url: redact(scrape),
            status: resp.status().as_u16(),
        });
    }
    let mut body = Vec::new();
    while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
        if body.len() + chunk.len() > MAX_BODY {
            return Err(TrackerError::BodyTooLarge { limit: MAX_BODY });
        }
        body.extend_from_slice(&chunk);
    }
    super::scrape::parse_http_scrape(&body, info_hash)
}

/// One HTTP announce to `base` (the tracker URL from the torrent).
pub(crate) async fn announce(
    client: &reqwest::Client,
    base: &str,
    req: &AnnounceRequest,
) -> Result<AnnounceResponse, TrackerError> {
    let url = http_url(base, req);
    let fut = async {
        // Without the URL: it carries the query (passkeys, and counters that
        // change every announce, which would defeat warn-once-per-error).
        let http_err = |e: reqwest::Error| TrackerError::Http {
            url: redact(base),
            reason: error_chain(&e.without_url()),
        };
        let mut resp = client.get(&url).send().await.map_err(http_err)?;
        let status = resp.status();
        if resp.content_length().is_some_and(|n| n > MAX_BODY as u64) {
            return Err(TrackerError::BodyTooLarge { limit: MAX_BODY });
        }
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(http_err)? {
            if body.len() + chunk.len() > MAX_BODY {
                return Err(TrackerError::BodyTooLarge { limit: MAX_BODY });
            }
            body.extend_from_slice(&chunk);
        }
        let parsed = parse_http_response(&body);
        if status.is_success() {
            return parsed;
        }
        // Some trackers send `failure reason` with a 4xx; prefer that text.
        match parsed {
            Err(e @ TrackerError::Failure(_)) => Err(e),
            _ => Err(TrackerError::HttpStatus {
                url: redact(base),
                status: status.as_u16(),
            }),
        }
    };
    // reqwest's own timeout covers this too; the outer one makes the bound
    // independent of how the client was built.
    match tokio::time::timeout(HTTP_TIMEOUT + Duration::from_secs(1), fut).await {
        Ok(r) => r,
        Err(_) => Err(TrackerError::Timeout {
            what: "http announce",
            after: HTTP_TIMEOUT,
        }),
    }
}

/// A tracker URL fit for logs: private trackers put a passkey in the query,
/// so everything from `?` on is cut.
pub(crate) fn redact(url: &str) -> String {
    match url.split_once('?') {
        Some((head, _)) => format!("{head}?…"),
        None => url.to_string(),
    }
}
