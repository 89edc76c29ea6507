//! The port mapping task: finds which protocol the router speaks (PCP,
//! then NAT-PMP, then UPnP), maps every wanted port, renews each mapping
//! before it ends, maps everything again when the router's epoch says it
//! restarted (heard at a renewal, or at once from the ANNOUNCE a PCP or
//! NAT-PMP router multicasts to 224.0.0.1:5350 when it starts; UPnP has
//! no epoch: the periodic re-add repairs a lost mapping), and deletes every mapping when stopped, within
//! [`DELETE_BUDGET`]. It only moves bytes and time: the messages are
//! [`super::pcp`]'s and [`super::natpmp`]'s, the schedule
//! [`super::timing`]'s.

use super::timing::{self, CHECK_INTERVAL, LIFETIME, NATPMP_TIMEOUTS, PCP_TIMEOUTS, UPNP_LEASE};
use super::{Event, ExternalPort, PortmapError, Protocol, Transport, natpmp, pcp, upnp};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::UdpSocket;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// The PCP and NAT-PMP server port on the router.
const SERVER_PORT: u16 = 5351;
/// Where PCP and NAT-PMP routers multicast their unsolicited ANNOUNCE
/// (224.0.0.1, the all-hosts group): a restarted router says so at once.
const ANNOUNCE_PORT: u16 = 5350;
/// The longest the deletions at exit may take, all together.
pub const DELETE_BUDGET: Duration = Duration::from_secs(3);
/// Retransmits of a deletion (a share of [`DELETE_BUDGET`]).
const DELETE_TIMEOUTS: [Duration; 2] = [Duration::from_millis(300), Duration::from_millis(600)];

/// What to map, and where.
#[derive(Debug, Clone)]
pub struct PortmapConfig {
    /// `--gateway`; `None`: the default route's gateway.
    pub gateway: Option<Ipv4Addr>,
    /// `--bind`: the local address to map to and send from.
    pub bind: Option<IpAddr>,
    /// The mappings to make (see [`super::wanted`]).
    pub wants: Vec<(Transport, u16)>,
    /// The TCP listen port: its external port is the one to announce.
    pub listen_port: u16,
}

/// Called with every [`Event`] (for `--json` and the log).
pub type Report = Box<dyn Fn(&Event) + Send + Sync>;

/// Starts the task; it ends once `stop` fires and the mappings are
/// deleted (or [`DELETE_BUDGET`] ran out).
pub fn spawn(
    cfg: PortmapConfig,
    external: Arc<ExternalPort>,
    report: Report,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut m = Mapper {
            slots: cfg
                .wants
                .iter()
                .map(|&(transport, internal)| Slot {
                    transport,
                    internal,
                    nonce: rand::random(),
                    granted: None,
                    asked: None,
                    due: Instant::now(),
                    failures: 0,
                    last_error: None,
                })
                .collect(),
            cfg,
            external,
            report,
            backend: None,
        };
        m.run(&stop).await;
        if tokio::time::timeout(DELETE_BUDGET, m.delete_all())
            .await
            .is_err()
        {
            tracing::warn!("port mapping: the router did not confirm every deletion in time");
        }
    })
}

/// One wanted mapping.
struct Slot {
    transport: Transport,
    internal: u16,
    /// PCP's mapping nonce, the same for renewals and the deletion.
    nonce: [u8; 12],
    /// What the router granted: external port and lifetime.
    granted: Option<(u16, u32)>,
    /// The external port of a request still unanswered when the task was
    /// stopped: the router may have granted it, so it is deleted too.
    asked: Option<u16>,
    /// When to map or renew next.
    due: Instant,
    /// Failures in a row (for the back-off).
    failures: u32,
    /// The last error reported (the same one is not reported again).
    last_error: Option<String>,
}

/// The socket PCP and NAT-PMP share, and what the router said so far.
struct Udp {
    sock: UdpSocket,
    /// Our address, as the router sees it.
    local: Ipv4Addr,
    /// The router's last epoch and when we heard it.
    epoch: Option<(u32, Instant)>,
    /// The router's external address, once known.
    external_ip: Option<IpAddr>,
    /// Set when the epoch said the router lost its mappings.
    restarted: bool,
}

impl Udp {
    fn observe_epoch(&mut self, epoch: u32) {
        let now = Instant::now();
        if let Some((prev, at)) = self.epoch
            && timing::epoch_restarted(prev, epoch, now - at)
        {
            tracing::info!(
                "port mapping: the router restarted (epoch {prev} -> {epoch}); mapping again"
            );
            self.restarted = true;
        }
        self.epoch = Some((epoch, now));
    }

    /// Sends `req` on the retransmit schedule until `accept` takes an
    /// answer; other datagrams are ignored.
    async fn transact<T>(
        &self,
        protocol: Protocol,
        req: &[u8],
        timeouts: &[Duration],
        mut accept: impl FnMut(&[u8]) -> Option<T>,
    ) -> Result<T, PortmapError> {
        let refused = |e: std::io::Error| match e.kind() {
            std::io::ErrorKind::ConnectionRefused => PortmapError::Unreachable(protocol),
            _ => PortmapError::Io(e),
        };
        // One more byte than the largest message, to see an overlong one.
        let mut buf = [0u8; pcp::MAX_MESSAGE + 1];
        for &wait in timeouts {
            self.sock.send(req).await.map_err(refused)?;
            let deadline = Instant::now() + wait;
            loop {
                match tokio::time::timeout_at(deadline, self.sock.recv(&mut buf)).await {
                    Err(_) => break,
                    Ok(Err(e)) => return Err(refused(e)),
                    Ok(Ok(n)) => {
                        if let Some(v) = accept(&buf[..n]) {
                            return Ok(v);
                        }
                    }
                }
            }
        }
        Err(PortmapError::Timeout(protocol))
    }
}

enum Backend {
    Pcp(Udp),
    NatPmp(Udp),
    Upnp(upnp::Gateway),
}

impl Backend {
    fn protocol(&self) -> Protocol {
        match self {
            Backend::Pcp(_) => Protocol::Pcp,
            Backend::NatPmp(_) => Protocol::NatPmp,
            Backend::Upnp(_) => Protocol::Upnp,
        }
    }
}

struct Mapper {
    cfg: PortmapConfig,
    slots: Vec<Slot>,
    external: Arc<ExternalPort>,
    report: Report,
    backend: Option<Backend>,
}

/// A mapping as granted: external port, lifetime, external address.
type Grant = (u16, u32, Option<IpAddr>);

impl Mapper {
    async fn run(&mut self, stop: &CancellationToken) {
        let gateway = match self.cfg.gateway.or_else(default_gateway) {
            Some(g) => g,
            None => {
                tracing::info!("port mapping: no default gateway; nothing to map");
                return;
            }
        };
        if self.slots.is_empty() {
            return;
        }
        if let Some(IpAddr::V6(ip)) = self.cfg.bind {
            tracing::info!("port mapping: IPv4 only, and --bind {ip} is IPv6; nothing to map");
            return;
        }
        // Searches since a mapping last succeeded (the back-off), and when
        // a restart last made us map everything again (a router whose
        // epoch is nonsense must not make us map in a loop).
        let mut searches = 0u32;
        let mut remapped: Option<Instant> = None;
        // Made once the router is known to speak PCP or NAT-PMP.
        let mut announces: Option<UdpSocket> = None;
        loop {
            if self.backend.is_none() {
                let found = tokio::select! {
                    _ = stop.cancelled() => return,
                    b = discover(gateway, self.cfg.bind) => b,
                };
                match found {
                    Ok(b) => {
                        tracing::debug!("port mapping: the router speaks {}", b.protocol());
                        self.backend = Some(b);
                        let now = Instant::now();
                        for s in &mut self.slots {
                            s.due = now;
                        }
                    }
                    Err(e) => {
                        if searches == 0 {
                            let error = format!(
                                "no router at {gateway} answered PCP, NAT-PMP or UPnP ({e})"
                            );
                            tracing::info!("port mapping: {error}");
                            for s in &self.slots {
                                (self.report)(&Event::Failed {
                                    protocol: None,
                                    transport: s.transport,
                                    internal: s.internal,
                                    error: error.clone(),
                                });
                            }
                        }
                        let wait = timing::retry_after(searches);
                        searches = searches.saturating_add(1);
                        tokio::select! {
                            _ = stop.cancelled() => return,
                            _ = tokio::time::sleep(wait) => continue,
                        }
                    }
                }
            }
            let now = Instant::now();
            for i in 0..self.slots.len() {
                if self.slots[i].due > now {
                    continue;
                }
                let mapped = tokio::select! {
                    _ = stop.cancelled() => return,
                    ok = self.map_slot(i) => ok,
                };
                if mapped {
                    searches = 0;
                }
                if self.backend.is_none() {
                    break;
                }
            }
            if self.backend.is_none() {
                // The router stopped answering: look for one again later.
                let wait = timing::retry_after(searches);
                searches = searches.saturating_add(1);
                tokio::select! {
                    _ = stop.cancelled() => return,
                    _ = tokio::time::sleep(wait) => continue,
                }
            }
            if let Some(Backend::Pcp(u) | Backend::NatPmp(u)) = &mut self.backend
                && std::mem::take(&mut u.restarted)
                && remapped.is_none_or(|t| t.elapsed() >= timing::MIN_RENEW)
            {
                let now = Instant::now();
                remapped = Some(now);
                for s in &mut self.slots {
                    s.due = now;
                }
                continue;
            }
            if announces.is_none()
                && let Some(Backend::Pcp(u) | Backend::NatPmp(u)) = &self.backend
            {
                announces = announce_listener(u.local)
                    .inspect_err(|e| {
                        tracing::debug!("port mapping: not listening for router announcements: {e}")
                    })
                    .ok();
            }
            let next = self.slots.iter().map(|s| s.due).min().unwrap_or(now);
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(next) => {}
                Some(epoch) = unsolicited_epoch(announces.as_ref(), gateway) => {
                    if let Some(Backend::Pcp(u) | Backend::NatPmp(u)) = &mut self.backend {
                        tracing::debug!("port mapping: the router announced epoch {epoch}");
                        u.observe_epoch(epoch);
                    }
                }
            }
        }
    }

    /// Maps or renews slot `i` and reports what changed; true if the
    /// router granted it.
    async fn map_slot(&mut self, i: usize) -> bool {
        let Some(backend) = self.backend.as_mut() else {
            return false;
        };
        let protocol = backend.protocol();
        let s = &self.slots[i];
        let want = s.granted.map_or(s.internal, |g| g.0);
        let (transport, internal, nonce) = (s.transport, s.internal, s.nonce);
        self.slots[i].asked = Some(want);
        let r = map(backend, transport, internal, want, nonce).await;
        let s = &mut self.slots[i];
        s.asked = None;
        match r {
            Ok((external, lifetime, external_ip)) => {
                let changed = s.granted.map(|g| g.0) != Some(external);
                s.granted = Some((external, lifetime));
                s.failures = 0;
                s.last_error = None;
                s.due = Instant::now() + timing::renew_after(lifetime, CHECK_INTERVAL);
                if s.transport == Transport::Tcp && s.internal == self.cfg.listen_port {
                    self.external.set(external);
                }
                if changed {
                    tracing::info!(
                        "port mapping: {protocol} maps {} {} to external port {external}{} for {lifetime} s",
                        s.transport.name().to_uppercase(),
                        s.internal,
                        external_ip
                            .map(|ip| format!(" on {ip}"))
                            .unwrap_or_default()
                    );
                    (self.report)(&Event::Mapped {
                        protocol,
                        transport: s.transport,
                        internal: s.internal,
                        external,
                        external_ip,
                        lifetime,
                    });
                }
                true
            }
            Err(e) => {
                let lost_router = matches!(
                    e,
                    PortmapError::Timeout(_) | PortmapError::Unreachable(_) | PortmapError::Io(_)
                );
                s.due = Instant::now() + timing::retry_after(s.failures);
                s.failures = s.failures.saturating_add(1);
                let text = crate::error_chain(&e);
                if s.last_error.as_deref() != Some(&text) {
                    tracing::warn!(
                        "port mapping: {} port {}: {text}",
                        s.transport.name().to_uppercase(),
                        s.internal
                    );
                    (self.report)(&Event::Failed {
                        protocol: Some(protocol),
                        transport: s.transport,
                        internal: s.internal,
                        error: text.clone(),
                    });
                    s.last_error = Some(text);
                }
                if lost_router {
                    // Find out again what (if anything) answers.
                    self.backend = None;
                }
                false
            }
        }
    }

    /// Deletes every granted mapping (a lease left behind would forward
    /// the port to whoever gets our address next).
    async fn delete_all(&mut self) {
        let Some(backend) = self.backend.as_ref() else {
            return;
        };
        for s in &mut self.slots {
            let Some(external) = s.granted.take().map(|g| g.0).or(s.asked.take()) else {
                continue;
            };
            let r = match backend {
                Backend::Pcp(u) => {
                    let req = pcp::encode_map(&pcp::MapRequest {
                        nonce: s.nonce,
                        transport: s.transport,
                        internal_port: s.internal,
                        suggested_port: external,
                        lifetime: 0,
                        client_ip: IpAddr::V4(u.local),
                    });
                    u.transact(
                        Protocol::Pcp,
                        &req,
                        &DELETE_TIMEOUTS,
                        |b| match pcp::parse(b) {
                            Ok(pcp::Answer::Map(r)) if r.nonce == s.nonce => Some(()),
                            _ => None,
                        },
                    )
                    .await
                }
                Backend::NatPmp(u) => {
                    let req = natpmp::encode_map(s.transport, s.internal, 0, 0);
                    u.transact(Protocol::NatPmp, &req, &DELETE_TIMEOUTS, |b| {
                        natpmp_map_answer(b, s.transport, s.internal).map(|_| ())
                    })
                    .await
                }
                Backend::Upnp(g) => g.remove(s.transport, external).await,
            };
            match r {
                Ok(()) => tracing::info!(
                    "port mapping: deleted {} {external}",
                    s.transport.name().to_uppercase()
                ),
                Err(e) => tracing::warn!(
                    "port mapping: deleting {} {external}: {}",
                    s.transport.name().to_uppercase(),
                    crate::error_chain(&e)
                ),
            }
        }
        self.external.set(0);
    }
}

/// The default IPv4 gateway (Linux); `None` elsewhere or without one.
fn default_gateway() -> Option<Ipv4Addr> {
    let text = std::fs::read_to_string("/proc/net/route").ok()?;
    super::gateway::parse_route_table(&text)
}

/// A socket on the announcement port, in the all-hosts group on the
/// interface of `local` (shared with other clients on this host).
fn announce_listener(local: Ipv4Addr) -> std::io::Result<UdpSocket> {
    use socket2::{Domain, Socket, Type};
    let sock = Socket::new(Domain::IPV4, Type::DGRAM, Some(socket2::Protocol::UDP))?;
    sock.set_reuse_address(true)?;
    sock.set_reuse_port(true)?;
    sock.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, ANNOUNCE_PORT)).into())?;
    sock.join_multicast_v4(&Ipv4Addr::new(224, 0, 0, 1), &local)?;
    sock.set_nonblocking(true)?;
    UdpSocket::from_std(sock.into())
}

/// The epoch of the next announcement the gateway multicasts (a PCP
/// ANNOUNCE or a NAT-PMP address notice); anything from another address,
/// or that does not parse, is dropped. Pending forever without a socket.
async fn unsolicited_epoch(sock: Option<&UdpSocket>, gateway: Ipv4Addr) -> Option<u32> {
    let Some(sock) = sock else {
        return std::future::pending().await;
    };
    let mut buf = [0u8; pcp::MAX_MESSAGE + 1];
    loop {
        let (n, from) = sock.recv_from(&mut buf).await.ok()?;
        if from.ip() != IpAddr::V4(gateway) || from.port() != SERVER_PORT {
            continue;
        }
        if let Ok(pcp::Answer::Announce { epoch, .. }) = pcp::parse(&buf[..n]) {
            return Some(epoch);
        }
        if let Ok(natpmp::Response::Address { epoch, .. }) = natpmp::parse(&buf[..n]) {
            return Some(epoch);
        }
    }
}

/// Which protocol the router at `gateway` speaks: a PCP ANNOUNCE first
/// (an answer says PCP), then NAT-PMP's address request (unless nothing
/// listens on the port), then an SSDP search.
async fn discover(gateway: Ipv4Addr, bind: Option<IpAddr>) -> Result<Backend, PortmapError> {
    let local_bind = match bind {
        Some(IpAddr::V4(ip)) => ip,
        _ => Ipv4Addr::UNSPECIFIED,
    };
    let sock = UdpSocket::bind((local_bind, 0)).await?;
    sock.connect(SocketAddr::from((gateway, SERVER_PORT)))
        .await?;
    let IpAddr::V4(local) = sock.local_addr()?.ip() else {
        return Err(std::io::Error::other("an IPv4 socket with an IPv6 address").into());
    };
    let mut udp = Udp {
        sock,
        local,
        epoch: None,
        external_ip: None,
        restarted: false,
    };
    let probe = pcp::encode_announce(IpAddr::V4(local));
    let pcp = udp
        .transact(Protocol::Pcp, &probe, &PCP_TIMEOUTS, |b| {
            match pcp::parse(b) {
                Ok(a @ (pcp::Answer::Announce { .. } | pcp::Answer::OtherVersion(_))) => Some(a),
                _ => None,
            }
        })
        .await;
    match pcp {
        Ok(pcp::Answer::Announce { epoch, .. }) => {
            udp.observe_epoch(epoch);
            return Ok(Backend::Pcp(udp));
        }
        Ok(pcp::Answer::OtherVersion(v)) => {
            tracing::debug!("port mapping: the router answers PCP with version {v}");
        }
        Ok(pcp::Answer::Map(_)) => {}
        // Nothing listens on the port: no NAT-PMP either.
        Err(e @ PortmapError::Unreachable(_)) => {
            tracing::debug!("port mapping: PCP: {e}");
            return Ok(Backend::Upnp(upnp::search(local).await?));
        }
        // A router may ignore a version it does not speak.
        Err(e) => tracing::debug!("port mapping: PCP: {e}"),
    }
    let addr = udp
        .transact(
            Protocol::NatPmp,
            &natpmp::encode_address(),
            &NATPMP_TIMEOUTS,
            |b| match natpmp::parse(b) {
                Ok(r @ (natpmp::Response::Address { .. } | natpmp::Response::Error { .. })) => {
                    Some(r)
                }
                _ => None,
            },
        )
        .await;
    match addr {
        Ok(natpmp::Response::Address {
            result: 0,
            epoch,
            ip,
        }) => {
            udp.observe_epoch(epoch);
            udp.external_ip = Some(IpAddr::V4(ip));
            return Ok(Backend::NatPmp(udp));
        }
        Ok(r) => tracing::debug!("port mapping: NAT-PMP result {}", r.result()),
        Err(e) => tracing::debug!("port mapping: NAT-PMP: {e}"),
    }
    Ok(Backend::Upnp(upnp::search(local).await?))
}

/// Maps `internal` asking for `want`; returns what was granted.
async fn map(
    backend: &mut Backend,
    transport: Transport,
    internal: u16,
    want: u16,
    nonce: [u8; 12],
) -> Result<Grant, PortmapError> {
    match backend {
        Backend::Pcp(u) => {
            let req = pcp::MapRequest {
                nonce,
                transport,
                internal_port: internal,
                suggested_port: want,
                lifetime: LIFETIME,
                client_ip: IpAddr::V4(u.local),
            };
            let r =
                u.transact(Protocol::Pcp, &pcp::encode_map(&req), &PCP_TIMEOUTS, |b| {
                    match pcp::parse(b) {
                        Ok(pcp::Answer::Map(r)) if pcp::answers(&r, &req) => Some(r),
                        _ => None,
                    }
                })
                .await?;
            u.observe_epoch(r.epoch);
            if r.result != pcp::result::SUCCESS {
                return Err(PortmapError::Refused {
                    protocol: Protocol::Pcp,
                    code: r.result.into(),
                });
            }
            Ok((r.external_port, r.lifetime, Some(r.external_ip)))
        }
        Backend::NatPmp(u) => {
            let req = natpmp::encode_map(transport, internal, want, LIFETIME);
            let r = u
                .transact(Protocol::NatPmp, &req, &NATPMP_TIMEOUTS, |b| {
                    natpmp_map_answer(b, transport, internal)
                })
                .await?;
            u.observe_epoch(r.epoch());
            match r {
                natpmp::Response::Map {
                    result: 0,
                    external_port,
                    lifetime,
                    ..
                } => Ok((external_port, lifetime, u.external_ip)),
                r => Err(PortmapError::Refused {
                    protocol: Protocol::NatPmp,
                    code: r.result(),
                }),
            }
        }
        Backend::Upnp(g) => {
            let (external, lease) = g.add(transport, internal, want, UPNP_LEASE).await?;
            Ok((external, lease, g.external_ip().await))
        }
    }
}

/// A NAT-PMP answer to a mapping request of ours (or a bare error).
fn natpmp_map_answer(b: &[u8], transport: Transport, internal: u16) -> Option<natpmp::Response> {
    match natpmp::parse(b) {
        Ok(
            r @ natpmp::Response::Map {
                transport: t,
                internal_port,
                ..
            },
        ) if t == transport && internal_port == internal => Some(r),
        Ok(r @ natpmp::Response::Error { .. }) => Some(r),
        _ => None,
    }
}
