//! Incoming connections: a budget, not a free-for-all.
//!
//! One listener (and one uTP socket on the same port number) serves every
//! torrent of the session. Before a single byte
//! is read, a connection must pass cheap gates, the ones that single out
//! one address first so that one noisy address cannot use up what
//! everyone shares: its IP's own accept rate
//! ([`PER_IP_RATE`] a second, bursts of [`PER_IP_BURST`]), the accept rate
//! of all ([`ACCEPT_RATE`] a second, bursts of [`ACCEPT_BURST`]), and the
//! handshakes under way from its IP ([`MAX_PENDING_PER_IP`]) and in all
//! ([`MAX_PENDING`], the oldest evicted for a newcomer). Only then does
//! it get [`HANDSHAKE_TIMEOUT`] to say which torrent it wants; that
//! torrent then judges its IP's standing (banned, or already at its
//! connection limit) before we answer. A thousand
//! sockets that never speak therefore cost a few file descriptors for a few
//! seconds, and an honest peer that speaks at once still gets in.

use super::Session;
use super::host::as_host;
use super::shared::Shared;
use crate::peer::conn;
use crate::peer::transport::PeerStream;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// Connections accepted per second, on average.
pub const ACCEPT_RATE: f64 = 50.0;
/// Connections accepted at once after a quiet spell.
pub const ACCEPT_BURST: f64 = 100.0;
/// Connections accepted per second from one IP, on average.
pub const PER_IP_RATE: f64 = 4.0;
/// Connections accepted at once from one IP after a quiet spell. An honest
/// client that shares many torrents with us opens one connection for each,
/// all at once (libtorrent: 20 in the same millisecond); one it drops waits
/// a minute or more before trying again.
pub const PER_IP_BURST: f64 = 32.0;
/// IPs whose accept rate is tracked; past this the least recently seen
/// are forgotten (a forgotten IP starts again with a full bucket).
const MAX_TRACKED_IPS: usize = 4096;
/// Incoming handshakes under way at once.
pub const MAX_PENDING: usize = 128;
/// Incoming handshakes under way at once from one IP (a burst's worth).
pub const MAX_PENDING_PER_IP: usize = 32;
/// Time an incoming peer has to send its handshake: honest peers send it
/// with their first packet.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);

/// A token bucket: `rate` tokens a second, at most `burst` saved up.
#[derive(Debug)]
pub struct TokenBucket {
    rate: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// A full bucket.
    pub fn new(rate: f64, burst: f64, now: Instant) -> Self {
        TokenBucket {
            rate,
            burst,
            tokens: burst,
            last: now,
        }
    }

    /// Takes a token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        let dt = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + dt * self.rate).min(self.burst);
        if self.tokens >= 1.0 {
            self.tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// One token bucket per recently seen IP, bounded.
#[derive(Default)]
struct PerIpBuckets {
    buckets: HashMap<IpAddr, TokenBucket>,
}

impl PerIpBuckets {
    fn try_take(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.buckets.contains_key(&ip) && self.buckets.len() >= MAX_TRACKED_IPS {
            // Forget the IP seen least recently.
            if let Some(old) = self
                .buckets
                .iter()
                .min_by_key(|(_, b)| b.last)
                .map(|(k, _)| *k)
            {
                self.buckets.remove(&old);
            }
        }
        self.buckets
            .entry(ip)
            .or_insert_with(|| TokenBucket::new(PER_IP_RATE, PER_IP_BURST, now))
            .try_take(now)
    }
}

/// The accept rates: an IP's own bucket first (so one noisy address cannot
/// use up what everyone shares), then everyone's. Incoming TCP connections
/// and uTP SYNs ([`super::utp`]) are each charged to one.
pub(super) struct AcceptRate {
    per_ip: PerIpBuckets,
    all: TokenBucket,
}

impl AcceptRate {
    /// Full buckets.
    pub(super) fn new(now: Instant) -> Self {
        AcceptRate {
            per_ip: PerIpBuckets::default(),
            all: TokenBucket::new(ACCEPT_RATE, ACCEPT_BURST, now),
        }
    }

    /// Takes a token from `ip`'s bucket and then from everyone's.
    pub(super) fn admit(&mut self, ip: IpAddr, now: Instant) -> bool {
        if !self.per_ip.try_take(ip, now) {
            tracing::trace!("incoming from {ip}: over its address's accept rate");
            return false;
        }
        if !self.all.try_take(now) {
            tracing::trace!("incoming from {ip}: over the accept rate");
            return false;
        }
        true
    }
}

/// Handshakes under way, so the oldest can be evicted and per-IP counts kept.
#[derive(Default)]
struct Pending {
    next_id: u64,
    /// By id (ids grow, so the first is the oldest).
    by_id: BTreeMap<u64, (IpAddr, CancellationToken)>,
    per_ip: HashMap<IpAddr, usize>,
}

impl Pending {
    /// Admits a handshake from `ip`, evicting the oldest one when full.
    fn start(&mut self, ip: IpAddr) -> Option<(u64, CancellationToken)> {
        if self.per_ip.get(&ip).copied().unwrap_or(0) >= MAX_PENDING_PER_IP {
            return None;
        }
        if self.by_id.len() >= MAX_PENDING
            && let Some((_, (_, token))) = self.by_id.pop_first()
        {
            // Its task sees the token and removes its own per-IP count.
            token.cancel();
        }
        self.next_id += 1;
        let token = CancellationToken::new();
        self.by_id.insert(self.next_id, (ip, token.clone()));
        *self.per_ip.entry(ip).or_insert(0) += 1;
        Some((self.next_id, token))
    }

    fn finish(&mut self, id: u64, ip: IpAddr) {
        self.by_id.remove(&id);
        if let Some(n) = self.per_ip.get_mut(&ip) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                self.per_ip.remove(&ip);
            }
        }
    }
}

/// The gates every incoming connection passes, TCP and uTP alike: one
/// budget for both, so a flood over one transport cannot get around it.
pub struct Gate {
    pending: Arc<Mutex<Pending>>,
    rates: Mutex<AcceptRate>,
}

impl Default for Gate {
    /// Open gates with full buckets.
    fn default() -> Self {
        Gate {
            pending: Arc::default(),
            rates: Mutex::new(AcceptRate::new(Instant::now())),
        }
    }
}

impl Gate {
    fn rate_ok(&self, ip: IpAddr, now: Instant) -> bool {
        self.rates
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .admit(ip, now)
    }
}

/// Accepts TCP peers for every torrent of the session until the session
/// is gone.
pub async fn accept_loop(listener: TcpListener, session: Weak<Session>, gate: Arc<Gate>) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok((stream, a)) => (stream, a),
            Err(e) => {
                // Out of descriptors, usually: wait for some to close.
                tracing::debug!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Some(tcp) = session.upgrade().map(|s| s.tcp()) else {
            return;
        };
        if !tcp {
            // --no-tcp: closed unread, as libtorrent does with TCP off.
            continue;
        }
        let _ = stream.set_nodelay(true);
        if !admit(&gate, &session, PeerStream::Tcp(stream), addr) {
            return;
        }
    }
}

/// Accepts uTP peers (on the UDP port of the same number) until the
/// session is gone.
pub async fn accept_utp_loop(utp: Arc<super::utp::Utp>, session: Weak<Session>, gate: Arc<Gate>) {
    loop {
        let stream = match utp.accept().await {
            Ok(s) => s,
            Err(e) => {
                tracing::debug!("uTP accept: {e}");
                if session.strong_count() == 0 {
                    return;
                }
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let addr = stream.remote_addr();
        if !admit(&gate, &session, PeerStream::Utp(stream), addr) {
            return;
        }
    }
}

/// Runs one accepted connection through the gates, then its handshake on
/// the session's task tracker; a peer that names a torrent we run is
/// handed to that torrent (and its task tracker), any other is dropped.
/// Returns false once the session is gone.
fn admit(gate: &Arc<Gate>, session: &Weak<Session>, stream: PeerStream, addr: SocketAddr) -> bool {
    // IPv4 peers reach a dual-stack socket as ::ffff:a.b.c.d.
    let addr = SocketAddr::new(addr.ip().to_canonical(), addr.port());
    let Some(session) = session.upgrade() else {
        return false;
    };
    if session.shutdown.is_cancelled() {
        return false;
    }
    let ip = addr.ip();
    if !gate.rate_ok(ip, Instant::now()) {
        return true;
    }
    let Some((id, token)) = gate
        .pending
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .start(ip)
    else {
        tracing::trace!("incoming {addr}: too many handshakes from it");
        return true;
    };
    let pending = gate.pending.clone();
    let tasks = session.tasks.clone();
    crate::spawn::named(&tasks, "incoming peer", async move {
        let routed = tokio::select! {
            _ = token.cancelled() => None,
            _ = session.shutdown.cancelled() => None,
            r = incoming_handshake(stream, addr, &session) => r,
        };
        pending
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .finish(id, ip);
        let Some((stream, theirs, shared)) = routed else {
            return;
        };
        drop(session);
        let link = stream.link("incoming");
        if theirs.info_hash == shared.info_hash {
            tracing::info!("incoming {addr}: {link}, for {}", shared.info_hash);
        } else {
            tracing::info!(
                "incoming {addr}: {link}, for {} in its other swarm {}",
                shared.info_hash,
                theirs.info_hash
            );
        }
        // From here the connection belongs to its torrent: it ends with
        // it, and the torrent's shutdown waits for it.
        let tasks = shared.tasks.clone();
        crate::spawn::named(&tasks, "incoming peer", async move {
            if let Err(e) = conn::run(stream, theirs, addr, false, link, as_host(&shared)).await {
                tracing::debug!("peer {addr}: {}", crate::error_chain(&e));
            }
        });
    });
    true
}

/// An incoming connection once set up: plaintext, or MSE (RC4 or
/// plaintext payload after an obfuscated handshake), over TCP or uTP.
pub type Incoming = crate::mse::MseStream<PeerStream>;

/// Sets up encryption as `--encryption` allows (MSE or a plaintext
/// handshake, told apart by the first bytes), reads the handshake, finds
/// the torrent it names and answers for it; all within
/// [`HANDSHAKE_TIMEOUT`].
async fn incoming_handshake(
    stream: PeerStream,
    addr: SocketAddr,
    session: &Session,
) -> Option<(Incoming, crate::peer::handshake::Handshake, Arc<Shared>)> {
    let deadline = Instant::now() + HANDSHAKE_TIMEOUT;
    let lookup = |h: &[u8; 20]| session.torrent_by_req2(h);
    let accepted = match crate::mse::accept_any(
        stream,
        &lookup,
        session.encryption,
        HANDSHAKE_TIMEOUT,
    )
    .await
    {
        Ok(a) => a,
        Err(crate::mse::SetupError::PlaintextRefused) => {
            tracing::info!(
                "incoming {addr}: refused: a plaintext handshake, and --encryption require"
            );
            return None;
        }
        Err(e) => {
            tracing::debug!("incoming {addr}: {}", crate::error_chain(&e));
            return None;
        }
    };
    let mut stream = accepted.stream;
    let left = deadline.saturating_duration_since(Instant::now());
    let theirs = match conn::read_handshake(&mut stream, left).await {
        Ok(h) => h,
        Err(e) => {
            tracing::debug!("incoming {addr}: {}", crate::error_chain(&e));
            return None;
        }
    };
    if accepted.info_hash.is_some_and(|ih| ih != theirs.info_hash) {
        tracing::debug!("incoming {addr}: its handshake names another torrent than its MSE setup");
        return None;
    }
    let Some(shared) = session
        .torrent_when_ready(&theirs.info_hash, deadline)
        .await
    else {
        tracing::debug!(
            "incoming {addr} wants {}, which we do not run",
            theirs.info_hash
        );
        return None;
    };
    {
        let st = shared.lock();
        // One more than the limit may handshake: it may replace its own
        // duplicate (both sides dialled at once).
        let ip = addr.ip();
        let from_ip = st.peers.values().filter(|p| p.addr.ip() == ip).count();
        if st.banned.contains(&ip) || from_ip > shared.limits.max_per_ip {
            return None;
        }
    }
    if let Err(e) = conn::send_answer(&mut stream, &*shared, &theirs).await {
        tracing::debug!("incoming {addr}: {}", crate::error_chain(&e));
        return None;
    }
    Some((stream, theirs, shared))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_refills_at_its_rate() {
        let t0 = Instant::now();
        let mut b = TokenBucket::new(10.0, 5.0, t0);
        assert_eq!((0..10).filter(|_| b.try_take(t0)).count(), 5);
        assert!(!b.try_take(t0));
        let later = t0 + Duration::from_millis(300);
        assert_eq!((0..10).filter(|_| b.try_take(later)).count(), 3);
    }

    #[test]
    fn one_noisy_address_cannot_use_up_the_shared_rate() {
        let t0 = Instant::now();
        let mut per_ip = PerIpBuckets::default();
        let noisy: IpAddr = "10.0.0.2".parse().unwrap();
        let admitted = (0..1000).filter(|_| per_ip.try_take(noisy, t0)).count();
        assert_eq!(admitted, PER_IP_BURST as usize);
        assert!(per_ip.try_take("10.0.0.3".parse().unwrap(), t0));
        let later = t0 + Duration::from_secs(1);
        assert_eq!(
            (0..1000).filter(|_| per_ip.try_take(noisy, later)).count(),
            PER_IP_RATE as usize
        );
        for i in 0..2 * MAX_TRACKED_IPS {
            per_ip.try_take(
                IpAddr::from([10, 9, (i / 256) as u8, (i % 256) as u8]),
                later,
            );
        }
        assert!(per_ip.buckets.len() <= MAX_TRACKED_IPS);
    }

    #[test]
    fn pending_handshakes_are_capped_per_ip_and_evict_the_oldest() {
        let mut p = Pending::default();
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let firsts: Vec<_> = (0..MAX_PENDING_PER_IP)
            .map(|_| p.start(a).expect("room"))
            .collect();
        assert!(p.start(a).is_none(), "per-IP cap");
        for i in 0..MAX_PENDING - MAX_PENDING_PER_IP {
            let ip = IpAddr::from([10, 1, (i / 256) as u8, (i % 256) as u8]);
            p.start(ip).expect("room");
        }
        // Full: a newcomer evicts the oldest handshake (10.0.0.1's first).
        let (_, t) = p.start("10.9.9.9".parse().unwrap()).expect("evicts");
        assert!(firsts[0].1.is_cancelled());
        assert!(!t.is_cancelled());
        assert!(!firsts[1].1.is_cancelled());
        p.finish(firsts[0].0, a);
        assert!(p.start(a).is_some(), "its slot came back");
    }
}
