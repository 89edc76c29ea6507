//! Port mapping: asks the router to forward our listen port (TCP and UDP)
//! and the DHT's UDP port from its external address, so peers on the
//! internet can reach a btc behind a NAT.
//!
//! Three protocols, tried in this order: PCP (RFC 6887), NAT-PMP (RFC
//! 6886), UPnP IGD (`WANIPConnection:1`/`:2`, `WANPPPConnection:1`,
//! through `igd-next`, in [`upnp`] only). The PCP and NAT-PMP messages are
//! pure codecs ([`pcp`], [`natpmp`]); when to send, resend and renew, and
//! whether a router restarted, are pure functions ([`timing`]); the
//! default gateway is parsed from `/proc/net/route` ([`gateway`]). The
//! driver ([`driver`]) is the only part that touches sockets and clocks:
//! it maps, renews before each lease ends, maps again after a router
//! restart, and deletes every mapping when the run stops.
//!
//! Failures are warnings, never fatal; no router at all is one debug line.

pub mod driver;
pub mod gateway;
pub mod natpmp;
pub mod pcp;
pub mod timing;
pub mod upnp;

use std::net::IpAddr;

pub use driver::{PortmapConfig, spawn};

/// Which protocol made a mapping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    /// Port Control Protocol, RFC 6887.
    Pcp,
    /// NAT Port Mapping Protocol, RFC 6886.
    NatPmp,
    /// UPnP Internet Gateway Device.
    Upnp,
}

impl Protocol {
    /// The stable lower-case name (`--json`).
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "natpmp",
            Protocol::Upnp => "upnp",
        }
    }
}

impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Pcp => "PCP",
            Protocol::NatPmp => "NAT-PMP",
            Protocol::Upnp => "UPnP",
        })
    }
}

/// The transport a mapping forwards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// TCP (peers).
    Tcp,
    /// UDP (uTP and the DHT).
    Udp,
}

impl Transport {
    /// The IP protocol number (PCP carries it).
    pub fn ip_protocol(self) -> u8 {
        match self {
            Transport::Tcp => 6,
            Transport::Udp => 17,
        }
    }

    /// The transport of an IP protocol number, if TCP or UDP.
    pub fn from_ip_protocol(p: u8) -> Option<Transport> {
        match p {
            6 => Some(Transport::Tcp),
            17 => Some(Transport::Udp),
            _ => None,
        }
    }

    /// The stable lower-case name (`--json`).
    pub fn name(self) -> &'static str {
        match self {
            Transport::Tcp => "tcp",
            Transport::Udp => "udp",
        }
    }
}

/// A PCP or NAT-PMP message that is not what it should be.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum CodecError {
    /// Too short, too long or a size the message cannot have.
    #[error("a message of {0} bytes")]
    Length(usize),
    /// A request, or a response to an opcode we did not send.
    #[error("not a response")]
    NotAResponse,
    /// A version this parser does not speak.
    #[error("version {0}")]
    Version(u8),
    /// An opcode this parser does not know.
    #[error("opcode {0}")]
    Opcode(u8),
    /// An IP protocol other than TCP or UDP.
    #[error("IP protocol {0}")]
    Protocol(u8),
}

/// Why a mapping could not be made, renewed or deleted.
#[derive(Debug, thiserror::Error)]
pub enum PortmapError {
    /// The router did not answer within the capped retransmit schedule.
    #[error("no {0} answer from the router")]
    Timeout(Protocol),
    /// Nothing listens on the router's port (ICMP port unreachable).
    #[error("the router does not speak {0}")]
    Unreachable(Protocol),
    /// The router answered with an error result.
    #[error("{protocol} refused the mapping (result {code}: {})", result_name(*protocol, *code))]
    Refused {
        /// Which protocol said so.
        protocol: Protocol,
        /// Its result code.
        code: u16,
    },
    /// The socket failed.
    #[error("talking to the router")]
    Io(#[from] std::io::Error),
    /// No UPnP gateway answered the search.
    #[error("no UPnP gateway found")]
    NoUpnpGateway,
    /// A UPnP request failed (igd-next's error, as text).
    #[error("UPnP: {0}")]
    Upnp(String),
}

/// What a result code means, for the message.
fn result_name(protocol: Protocol, code: u16) -> &'static str {
    match (protocol, code) {
        (_, 1) => "unsupported version",
        (_, 2) => "not authorized",
        (Protocol::Pcp, 3) => "malformed request",
        (Protocol::NatPmp, 3) => "network failure",
        (Protocol::NatPmp, 4) => "out of resources",
        (Protocol::Pcp, 8) => "no resources",
        (Protocol::Pcp, 7) => "network failure",
        (Protocol::Pcp, 11) => "cannot provide external port",
        (Protocol::Pcp, 12) => "address mismatch",
        _ => "error",
    }
}

/// What the driver tells the rest of btc: one per grant and per failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// A mapping was made (or renewed onto another port).
    Mapped {
        /// Which protocol.
        protocol: Protocol,
        /// TCP or UDP.
        transport: Transport,
        /// Our port.
        internal: u16,
        /// The router's port for it.
        external: u16,
        /// The router's external address, when it said.
        external_ip: Option<IpAddr>,
        /// Seconds until it ends unless renewed (0: until deleted).
        lifetime: u32,
    },
    /// A mapping could not be made.
    Failed {
        /// Which protocol, once one answered.
        protocol: Option<Protocol>,
        /// TCP or UDP.
        transport: Transport,
        /// Our port.
        internal: u16,
        /// Why, on one line.
        error: String,
    },
}

/// The port peers should dial as trackers and the DHT hear it: the
/// external port of the listen port's TCP mapping once the router
/// granted one, else our own (0 = none mapped). Trackers watch it to
/// announce again when it changes.
#[derive(Debug)]
pub struct ExternalPort(tokio::sync::watch::Sender<u16>);

impl Default for ExternalPort {
    fn default() -> Self {
        ExternalPort(tokio::sync::watch::Sender::new(0))
    }
}

impl ExternalPort {
    /// Records the TCP listen port's external port (0: none any more).
    pub fn set(&self, port: u16) {
        self.0
            .send_if_modified(|p| std::mem::replace(p, port) != port);
    }

    /// The port to announce: the mapped one, else `local`.
    pub fn or(&self, local: u16) -> u16 {
        match *self.0.borrow() {
            0 => local,
            p => p,
        }
    }

    /// Wakes on every change.
    pub fn watch(&self) -> tokio::sync::watch::Receiver<u16> {
        self.0.subscribe()
    }
}

/// The mappings a run wants: the listen port for TCP (unless `--no-tcp`)
/// and for UDP (uTP, or the DHT when it shares it), and the DHT's UDP port
/// when it is another one.
pub fn wanted(listen: u16, tcp: bool, utp: bool, dht: Option<u16>) -> Vec<(Transport, u16)> {
    let mut w = Vec::new();
    if tcp {
        w.push((Transport::Tcp, listen));
    }
    if utp || dht == Some(listen) {
        w.push((Transport::Udp, listen));
    }
    if let Some(d) = dht.filter(|&d| d != listen && d != 0) {
        w.push((Transport::Udp, d));
    }
    w
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wanted_mappings() {
        use Transport::*;
        assert_eq!(
            wanted(6881, true, true, Some(6882)),
            [(Tcp, 6881), (Udp, 6881), (Udp, 6882)]
        );
        assert_eq!(
            wanted(6881, true, false, Some(6881)),
            [(Tcp, 6881), (Udp, 6881)]
        );
        assert_eq!(wanted(6881, true, false, None), [(Tcp, 6881)]);
        assert_eq!(wanted(6881, false, true, None), [(Udp, 6881)]);
    }

    #[test]
    fn external_port_falls_back_to_ours() {
        let p = ExternalPort::default();
        let mut rx = p.watch();
        assert_eq!(p.or(6881), 6881);
        p.set(40000);
        assert!(rx.has_changed().unwrap());
        rx.borrow_and_update();
        p.set(40000);
        assert!(
            !rx.has_changed().unwrap(),
            "the same port again is no change"
        );
        assert_eq!(p.or(6881), 40000);
        p.set(0);
        assert_eq!(p.or(6881), 6881);
    }

    #[test]
    fn errors_read_well() {
        let e = PortmapError::Refused {
            protocol: Protocol::Pcp,
            code: 2,
        };
        assert_eq!(
            e.to_string(),
            "PCP refused the mapping (result 2: not authorized)"
        );
        assert_eq!(
            PortmapError::Timeout(Protocol::NatPmp).to_string(),
            "no NAT-PMP answer from the router"
        );
    }
}
