//! The Local Service Discovery service (BEP 14) of the session: one
//! multicast socket per IP family for the process, in the IPv4 group and in
//! the IPv6 group (a network may carry only one of them; a family that
//! cannot be set up is left out and the other goes on). It announces every
//! public torrent taking peers on each group when it starts to (then every
//! `REANNOUNCE`; never more than once a minute), and hands the peers it
//! hears about to their torrent. Its own announces are known by their
//! cookie and ignored; one sender gets `PER_SENDER_BURST` datagrams, then
//! one a second, whichever group they come by.

use super::Session;
use super::accept::TokenBucket;
use crate::id::InfoHash;
use crate::lsd::{GROUP_V4, GROUP_V6, MAX_DATAGRAM, announce_packets, parse_announce};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV6};
use std::sync::Weak;
use std::task::Poll;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::time::Instant;

/// How often each torrent is announced again.
const REANNOUNCE: Duration = Duration::from_secs(5 * 60);
/// Datagrams taken at once from one sender.
const PER_SENDER_BURST: f64 = 5.0;
/// Senders whose rate is tracked (both families together); past this the
/// map is cleared.
const MAX_SENDERS: usize = 1024;

/// One family's sockets and the group it announces to.
struct Group {
    /// In the group: hears every announce (and, without `--bind`, sends).
    socket: UdpSocket,
    /// With `--bind`: bound to that address and sending out its interface,
    /// so that an announce comes from the address peers must dial (from
    /// the group socket it would come from the interface's first address).
    send: Option<UdpSocket>,
    to: SocketAddr,
}

impl Group {
    fn sender(&self) -> &UdpSocket {
        self.send.as_ref().unwrap_or(&self.socket)
    }
}

/// The IPv4 sockets: one bound to the group's port on every interface
/// (shared with other clients on the host), in the group (on the interface
/// of `bind`, if given), hearing its own datagrams (other processes on this
/// host are peers too); with `bind`, a second one that sends from it.
fn open_v4(bind: Option<IpAddr>) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = match bind {
        Some(IpAddr::V4(ip)) if !ip.is_unspecified() => Some(ip),
        _ => None,
    };
    let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    crate::iface::bind(&s)?;
    s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, GROUP_V4.port())).into())?;
    match crate::iface::index() {
        // Under --interface the group is joined there (its IGMP report
        // must not leave another interface).
        Some(i) => {
            s.join_multicast_v4_n(GROUP_V4.ip(), &socket2::InterfaceIndexOrAddress::Index(i))?
        }
        None => s.join_multicast_v4(GROUP_V4.ip(), &bind.unwrap_or(Ipv4Addr::UNSPECIFIED))?,
    }
    s.set_multicast_loop_v4(true)?;
    s.set_nonblocking(true)?;
    let send = match bind {
        Some(ip) => {
            let t = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
            crate::iface::bind(&t)?;
            t.bind(&SocketAddr::from((ip, 0)).into())?;
            t.set_multicast_if_v4(&ip)?;
            t.set_multicast_loop_v4(true)?;
            t.set_nonblocking(true)?;
            Some(UdpSocket::from_std(t.into())?)
        }
        None => None,
    };
    Ok((UdpSocket::from_std(s.into())?, send))
}

/// The IPv6 sockets, as the IPv4 ones. IPv6-only, so that they neither
/// take the IPv4 socket's port nor hear IPv4 datagrams twice. With `bind`,
/// the group is joined and sent to on the interface carrying that address
/// (when it can be found; else the system's choice).
fn open_v6(bind: Option<IpAddr>) -> std::io::Result<(UdpSocket, Option<UdpSocket>)> {
    use socket2::{Domain, Protocol, Socket, Type};
    let bind = match bind {
        Some(IpAddr::V6(ip)) if !ip.is_unspecified() => Some(ip),
        _ => None,
    };
    let ifindex = crate::iface::index()
        .or_else(|| bind.and_then(interface_of_v6))
        .unwrap_or(0);
    let s = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
    crate::iface::bind(&s)?;
    s.set_only_v6(true)?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(true)?;
    s.bind(&SocketAddr::from((Ipv6Addr::UNSPECIFIED, GROUP_V6.port())).into())?;
    s.join_multicast_v6(GROUP_V6.ip(), ifindex)?;
    s.set_multicast_loop_v6(true)?;
    // The link only, as IPv4's default TTL of 1 keeps the IPv4 announces.
    s.set_multicast_hops_v6(1)?;
    s.set_nonblocking(true)?;
    let send = match bind {
        Some(ip) => {
            let t = Socket::new(Domain::IPV6, Type::DGRAM, Some(Protocol::UDP))?;
            crate::iface::bind(&t)?;
            t.set_only_v6(true)?;
            // A link-local address is only bound with its interface.
            t.bind(&SocketAddr::V6(SocketAddrV6::new(ip, 0, 0, ifindex)).into())?;
            if ifindex != 0 {
                t.set_multicast_if_v6(ifindex)?;
            }
            t.set_multicast_loop_v6(true)?;
            t.set_multicast_hops_v6(1)?;
            t.set_nonblocking(true)?;
            Some(UdpSocket::from_std(t.into())?)
        }
        None => None,
    };
    Ok((UdpSocket::from_std(s.into())?, send))
}

/// The index of the interface carrying the IPv6 address `ip`, from
/// `/proc/net/if_inet6` (Linux: `<32 hex address> <hex index> ...`); `None`
/// where that cannot be read or does not list it.
fn interface_of_v6(ip: Ipv6Addr) -> Option<u32> {
    let text = std::fs::read_to_string("/proc/net/if_inet6").ok()?;
    interface_in_if_inet6(&text, ip)
}

fn interface_in_if_inet6(text: &str, ip: Ipv6Addr) -> Option<u32> {
    let want = format!("{:032x}", u128::from(ip));
    text.lines().find_map(|line| {
        let mut fields = line.split_whitespace();
        let addr = fields.next()?;
        let index = fields.next()?;
        (addr.eq_ignore_ascii_case(&want))
            .then(|| u32::from_str_radix(index, 16).ok())
            .flatten()
    })
}

/// Starts the service; it ends with the session. A host where multicast
/// cannot be set up for one family loses LSD on that family only (one
/// warning naming it); LSD is off only when no family works. With
/// `--bind`, only the bound address's family is used: peers could not
/// reach us, nor we them, on the other; and announces are sent from the
/// bound address, the one a peer hearing them dials. Returns whether it
/// runs.
pub fn spawn(session: &std::sync::Arc<Session>) -> bool {
    let (want_v4, want_v6) = match session.bind {
        Some(IpAddr::V4(_)) => (true, false),
        Some(IpAddr::V6(_)) => (false, true),
        None => (true, true),
    };
    let mut groups = Vec::new();
    let mut failed = Vec::new();
    for (wanted, family, open, to) in [
        (
            want_v4,
            "IPv4",
            open_v4 as fn(_) -> _,
            SocketAddr::V4(GROUP_V4),
        ),
        (want_v6, "IPv6", open_v6, SocketAddr::V6(GROUP_V6)),
    ] {
        if wanted {
            match open(session.bind) {
                Ok((socket, send)) => groups.push(Group { socket, send, to }),
                Err(e) => failed.push((family, e)),
            }
        }
    }
    if groups.is_empty() {
        let why: Vec<String> = failed.iter().map(|(f, e)| format!("{f}: {e}")).collect();
        tracing::warn!("local peer discovery (LSD) disabled: {}", why.join("; "));
        return false;
    }
    // Said at info level: a host without IPv6 multicast (common) loses
    // nothing it had, and a warning at every start would be noise.
    for (family, e) in failed {
        tracing::info!("local peer discovery (LSD) on {family} disabled: {e}");
    }
    let weak = std::sync::Arc::downgrade(session);
    let (tasks, shutdown) = (session.tasks.clone(), session.shutdown.clone());
    crate::spawn::named(&tasks, "lsd", async move {
        tokio::select! {
            _ = shutdown.cancelled() => {}
            _ = run(groups, weak) => {}
        }
    });
    true
}

async fn run(groups: Vec<Group>, session: Weak<Session>) {
    let cookie = format!("btc{:08x}", rand::random::<u32>());
    let mut announced: HashMap<InfoHash, Instant> = HashMap::new();
    let mut senders: HashMap<IpAddr, TokenBucket> = HashMap::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let mut turn = 0usize;
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
        for g in &groups {
            for packet in announce_packets(g.to, s.listen_port, &due, &cookie) {
                if let Err(e) = g.sender().send_to(&packet, g.to).await {
                    tracing::debug!("LSD announce to {}: {e}", g.to);
                }
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
        turn = turn.wrapping_add(1);
        tokio::select! {
            _ = &mut registered => {
                // Let a burst of registrations settle into one announce.
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            _ = tokio::time::sleep_until(next) => {}
            r = recv_any(&groups, turn, &mut buf) => {
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
                    heard(&s, &buf[..n.min(buf.len())], from, &cookie);
                }
            }
        }
    }
}

/// The next datagram on any socket, into the one buffer. The socket asked
/// first changes with `turn`, so a flood on one group cannot starve the
/// other.
async fn recv_any(
    groups: &[Group],
    turn: usize,
    buf: &mut [u8],
) -> std::io::Result<(usize, SocketAddr)> {
    std::future::poll_fn(|cx| {
        for i in 0..groups.len() {
            let g = &groups[(turn + i) % groups.len()];
            let mut rb = tokio::io::ReadBuf::new(buf);
            if let Poll::Ready(r) = g.socket.poll_recv_from(cx, &mut rb) {
                return Poll::Ready(r.map(|from| (rb.filled().len(), from)));
            }
        }
        Poll::Pending
    })
    .await
}

/// Where the sender of `from` takes peers: its address (with the scope id
/// of a link-local IPv6 one, without which it cannot be dialled) and the
/// announced port.
fn peer_addr(from: SocketAddr, port: u16) -> SocketAddr {
    match from {
        // A datagram from 0.0.0.0 or :: can only come from this host
        // (multicast sent on an interface without an address, as on a bare
        // loopback).
        SocketAddr::V4(a) if a.ip().is_unspecified() => (Ipv4Addr::LOCALHOST, port).into(),
        SocketAddr::V4(a) => (*a.ip(), port).into(),
        SocketAddr::V6(a) if a.ip().is_unspecified() => (Ipv6Addr::LOCALHOST, port).into(),
        SocketAddr::V6(a) => SocketAddrV6::new(*a.ip(), port, 0, a.scope_id()).into(),
    }
}

/// One datagram: its peer goes to every torrent it names that we run.
fn heard(session: &Session, data: &[u8], from: SocketAddr, cookie: &str) {
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
    let peer = peer_addr(from, a.port);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_address_keeps_the_sender_and_takes_the_announced_port() {
        let v4: SocketAddr = "192.168.1.7:6771".parse().unwrap();
        assert_eq!(peer_addr(v4, 51413), "192.168.1.7:51413".parse().unwrap());
        let v6: SocketAddr = "[2001:db8::7]:6771".parse().unwrap();
        assert_eq!(peer_addr(v6, 51413), "[2001:db8::7]:51413".parse().unwrap());
        // A link-local sender is only reachable through its interface.
        let ll = SocketAddr::V6(SocketAddrV6::new("fe80::1".parse().unwrap(), 6771, 9, 3));
        match peer_addr(ll, 7000) {
            SocketAddr::V6(p) => {
                assert_eq!(
                    (*p.ip(), p.port(), p.scope_id(), p.flowinfo()),
                    ("fe80::1".parse::<Ipv6Addr>().unwrap(), 7000, 3, 0)
                );
            }
            other => panic!("{other}"),
        }
        // Unspecified senders are this host.
        assert_eq!(
            peer_addr("0.0.0.0:6771".parse().unwrap(), 1),
            "127.0.0.1:1".parse().unwrap()
        );
        assert_eq!(
            peer_addr("[::]:6771".parse().unwrap(), 1),
            "[::1]:1".parse().unwrap()
        );
    }

    #[test]
    fn the_interface_of_a_bound_ipv6_address_is_read_from_if_inet6() {
        let text = "00000000000000000000000000000001 01 80 10 80       lo\n\
                    fe800000000000000000000000000001 0a 40 20 80     eth0\n\
                    20010db8000000000000000000000007 0b 40 00 00     wlan0\n";
        let at = |ip: &str| interface_in_if_inet6(text, ip.parse().unwrap());
        assert_eq!(at("::1"), Some(1));
        assert_eq!(at("fe80::1"), Some(10));
        assert_eq!(at("2001:db8::7"), Some(11));
        assert_eq!(at("2001:db8::8"), None);
        assert_eq!(
            interface_in_if_inet6("garbage\n\n", "::1".parse().unwrap()),
            None
        );
    }
}
