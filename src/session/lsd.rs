//! The Local Service Discovery service (BEP 14) of the session: one
//! multicast socket for the process. It announces every public torrent
//! taking peers when it starts to (then every [`REANNOUNCE`]; never more
//! than once a minute), and hands the peers it hears about to their
//! torrent. Its own announces are known by their cookie and ignored; one
//! sender gets [`PER_SENDER_BURST`] datagrams, then one a second.

use super::Session;
use super::accept::TokenBucket;
use crate::id::InfoHash;
use crate::lsd::{GROUP_V4, MAX_DATAGRAM, announce_packets, parse_announce};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Weak;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How often each torrent is announced again.
const REANNOUNCE: Duration = Duration::from_secs(5 * 60);
/// Datagrams taken at once from one sender.
const PER_SENDER_BURST: f64 = 5.0;
/// Senders whose rate is tracked; past this the map is cleared.
const MAX_SENDERS: usize = 1024;

/// The socket: bound to the group's port on every interface (shared with
/// other clients on the host), in the group, hearing its own datagrams
/// (other processes on this host are peers too).
fn open_socket() -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, GROUP_V4.port())).into())?;
    s.join_multicast_v4(GROUP_V4.ip(), &Ipv4Addr::UNSPECIFIED)?;
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    UdpSocket::from_std(s.into())
}

/// Starts the service; it ends with the session. A host where multicast
/// cannot be set up only loses LSD (one warning).
pub fn spawn(session: &std::sync::Arc<Session>) {
    let socket = match open_socket() {
        Ok(s) => s,
        Err(e) => {
            tracing::warn!("local peer discovery (LSD) disabled: {e}");
            return;
        }
    };
    let weak = std::sync::Arc::downgrade(session);
    let (tasks, shutdown) = (session.tasks.clone(), session.shutdown.clone());
    crate::spawn::named(&tasks, "lsd", async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(socket, weak) => {}
        }
    });
}

async fn run(socket: UdpSocket, session: Weak<Session>) {
    let cookie = format!("btc{:08x}", rand::random::<u32>());
    let mut announced: HashMap<InfoHash, Instant> = HashMap::new();
    let mut senders: HashMap<IpAddr, TokenBucket> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    loop {
        // Announce what is due (new torrents, or REANNOUNCE old).
        let Some(s) = session.upgrade() else { return };
        let registered = s.registered.notified();
        tokio::pin!(registered);
        registered.as_mut().enable();
        let now = Instant::now();
        let public = s.public_torrents();
        announced.retain(|ih, _| public.contains(ih));
        let due: Vec<InfoHash> = public
            .iter()
            .filter(|ih| announced.get(ih).is_none_or(|t| now >= *t + REANNOUNCE))
            .copied()
            .collect();
        for packet in announce_packets(s.listen_port, &due, &cookie) {
            if let Err(e) = socket.send_to(&packet, SocketAddr::V4(GROUP_V4)).await {
                tracing::debug!("LSD announce: {e}");
            }
        }
        for ih in due {
            announced.insert(ih, now);
        }
        let next = announced
            .values()
            .map(|t| *t + REANNOUNCE)
            .min()
            .unwrap_or(now + REANNOUNCE);
        tokio::select! {
            _ = &mut registered => {
                // Let a burst of registrations settle into one announce.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep_until(next) => {}
            r = socket.recv_from(&mut buf) => {
                let Ok((n, from)) = r else { continue };
                if senders.len() >= MAX_SENDERS {
                    senders.clear();
                }
                let now = Instant::now();
                let ok = senders
                    .entry(from.ip())
                    .or_insert_with(|| TokenBucket::new(1.0, PER_SENDER_BURST, now))
                    .try_take(now);
                if ok {
                    heard(&s, &buf[..n], from.ip(), &cookie);
                }
            }
        }
    }
}

/// One datagram: its peer goes to every torrent it names that we run.
fn heard(session: &Session, data: &[u8], from: IpAddr, cookie: &str) {
    let a = match parse_announce(data) {
        Ok(a) => a,
        Err(e) => {
            tracing::trace!("LSD datagram from {from}: {e}");
            return;
        }
    };
    if a.cookie.as_deref() == Some(cookie) {
        return;
    }
    // A datagram from 0.0.0.0 can only come from this host (multicast sent
    // on an interface without an address, as on a bare loopback).
    let from = if from.is_unspecified() {
        IpAddr::V4(Ipv4Addr::LOCALHOST)
    } else {
        from
    };
    let peer = SocketAddr::new(from, a.port);
    for ih in a.info_hashes {
        if let Some(shared) = session.torrent(&ih)
            && !shared.data().is_some_and(|d| d.meta.info.private)
            && let Some(sink) = shared.discovered.get()
        {
            tracing::info!("LSD: peer {peer} for {ih}");
            let _ = sink.try_send(vec![peer]);
        }
    }
}
