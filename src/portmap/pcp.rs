//! PCP (RFC 6887) MAP requests and responses, sans-IO: bytes in, bytes
//! out. Only the MAP opcode is spoken (an inbound mapping of one port);
//! options in a response are skipped, never interpreted.
//!
//! Layout (RFC 6887 §7.1, §7.2, §11.1), all integers big-endian:
//!
//! ```text
//! request:  version=2 | R=0,opcode | reserved(2) | lifetime(4) | client IP(16)
//!           MAP: nonce(12) | protocol | reserved(3) | internal port(2)
//!                | suggested external port(2) | suggested external IP(16)
//! response: version=2 | R=1,opcode | reserved | result | lifetime(4) | epoch(4)
//!           | reserved(12) | MAP: nonce(12) | protocol | reserved(3)
//!           | internal port(2) | assigned external port(2) | assigned external IP(16)
//! ```

use super::{CodecError, Transport};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

/// The PCP version this module speaks.
pub const VERSION: u8 = 2;
/// The ANNOUNCE opcode (btc's probe: does a PCP server answer?).
pub const OP_ANNOUNCE: u8 = 0;
/// The MAP opcode.
pub const OP_MAP: u8 = 1;
/// Size of the common header, an ANNOUNCE request or response.
pub const HEADER_LEN: usize = 24;
/// Size of a MAP request (header and MAP payload, no options).
pub const MAP_REQUEST_LEN: usize = 60;
/// The largest PCP message (RFC 6887 §7: 1100 octets); anything longer is
/// not PCP.
pub const MAX_MESSAGE: usize = 1100;

/// Result codes (RFC 6887 §7.4) btc names; the rest are shown by number.
pub mod result {
    /// Success.
    pub const SUCCESS: u8 = 0;
    /// The server speaks another version (a NAT-PMP server says so too).
    pub const UNSUPP_VERSION: u8 = 1;
    /// The request is not allowed.
    pub const NOT_AUTHORIZED: u8 = 2;
    /// The server is out of resources (mappings).
    pub const NO_RESOURCES: u8 = 8;
    /// The suggested external port cannot be had and no other is offered.
    pub const CANNOT_PROVIDE_EXTERNAL: u8 = 11;
    /// The client IP in the request is not the packet's source.
    pub const ADDRESS_MISMATCH: u8 = 12;
}

/// One MAP request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapRequest {
    /// Identifies the mapping: the same for its renewals and its deletion.
    pub nonce: [u8; 12],
    /// TCP or UDP.
    pub transport: Transport,
    /// Our port.
    pub internal_port: u16,
    /// The external port we would like (0 = any).
    pub suggested_port: u16,
    /// Seconds; 0 deletes the mapping.
    pub lifetime: u32,
    /// Our address as the server sees it (the packet's source).
    pub client_ip: IpAddr,
}

/// A MAP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MapResponse {
    /// Result code; [`result::SUCCESS`] or an error.
    pub result: u8,
    /// Seconds the mapping lasts (on error: how long the error holds).
    pub lifetime: u32,
    /// The server's epoch (seconds since its state began).
    pub epoch: u32,
    /// The request's nonce, echoed.
    pub nonce: [u8; 12],
    /// TCP or UDP, echoed.
    pub transport: Transport,
    /// Our port, echoed.
    pub internal_port: u16,
    /// The external port granted.
    pub external_port: u16,
    /// The external address granted.
    pub external_ip: IpAddr,
}

/// A PCP answer other than a MAP response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Answer {
    /// A MAP response (success or error result).
    Map(MapResponse),
    /// An ANNOUNCE response.
    Announce {
        /// Result code.
        result: u8,
        /// The server's epoch.
        epoch: u32,
    },
    /// A server of another version (0: NAT-PMP) answering our request,
    /// normally with "unsupported version": speak its version instead.
    OtherVersion(u8),
}

/// Encodes an ANNOUNCE request (RFC 6887 §14.1), 24 bytes: the header
/// alone, lifetime 0.
pub fn encode_announce(client_ip: IpAddr) -> [u8; HEADER_LEN] {
    let mut b = [0u8; HEADER_LEN];
    b[0] = VERSION;
    b[1] = OP_ANNOUNCE;
    b[8..24].copy_from_slice(&v6(client_ip).octets());
    b
}

/// Encodes a MAP request (RFC 6887 §11.1), 60 bytes.
pub fn encode_map(req: &MapRequest) -> [u8; MAP_REQUEST_LEN] {
    let mut b = [0u8; MAP_REQUEST_LEN];
    b[0] = VERSION;
    b[1] = OP_MAP;
    b[4..8].copy_from_slice(&req.lifetime.to_be_bytes());
    b[8..24].copy_from_slice(&v6(req.client_ip).octets());
    b[24..36].copy_from_slice(&req.nonce);
    b[36] = req.transport.ip_protocol();
    b[40..42].copy_from_slice(&req.internal_port.to_be_bytes());
    b[42..44].copy_from_slice(&req.suggested_port.to_be_bytes());
    // Suggested external address: "any of the client's family", the
    // IPv4-mapped all-zeros address for an IPv4 client (§11.1).
    let any = match req.client_ip {
        IpAddr::V4(_) => Ipv4Addr::UNSPECIFIED.to_ipv6_mapped(),
        IpAddr::V6(_) => Ipv6Addr::UNSPECIFIED,
    };
    b[44..60].copy_from_slice(&any.octets());
    b
}

/// Parses a response to a MAP request. A response of another version is
/// [`Answer::OtherVersion`]; anything that is not a MAP response (a
/// request, another opcode, too short or too long, an unknown protocol) is
/// an error.
pub fn parse(buf: &[u8]) -> Result<Answer, CodecError> {
    if buf.len() > MAX_MESSAGE {
        return Err(CodecError::Length(buf.len()));
    }
    let version = *buf.first().ok_or(CodecError::Length(0))?;
    if version != VERSION {
        // A NAT-PMP server answers a PCP request with its own 8+ byte
        // header (version 0, opcode 128 + ours, result 1).
        if buf.len() < 4 || buf[1] & 0x80 == 0 {
            return Err(CodecError::NotAResponse);
        }
        return Ok(Answer::OtherVersion(version));
    }
    if buf.len() < HEADER_LEN || !buf.len().is_multiple_of(4) {
        return Err(CodecError::Length(buf.len()));
    }
    let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
    if buf[1] == 0x80 | OP_ANNOUNCE {
        return Ok(Answer::Announce {
            result: buf[3],
            epoch: u32_at(8),
        });
    }
    if buf[1] != 0x80 | OP_MAP {
        return Err(CodecError::NotAResponse);
    }
    if buf.len() < MAP_REQUEST_LEN {
        return Err(CodecError::Length(buf.len()));
    }
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&buf[24..36]);
    let transport = Transport::from_ip_protocol(buf[36]).ok_or(CodecError::Protocol(buf[36]))?;
    let mut ip = [0u8; 16];
    ip.copy_from_slice(&buf[44..60]);
    let ip = Ipv6Addr::from(ip);
    Ok(Answer::Map(MapResponse {
        result: buf[3],
        lifetime: u32_at(4),
        epoch: u32_at(8),
        nonce,
        transport,
        internal_port: u16_at(40),
        external_port: u16_at(42),
        external_ip: ip.to_ipv4_mapped().map_or(IpAddr::V6(ip), IpAddr::V4),
    }))
}

/// Whether a MAP response answers this request (RFC 6887 §11.3: nonce,
/// protocol and internal port must match).
pub fn answers(resp: &MapResponse, req: &MapRequest) -> bool {
    resp.nonce == req.nonce
        && resp.transport == req.transport
        && resp.internal_port == req.internal_port
}

/// An address as PCP carries it: IPv4 as IPv4-mapped IPv6.
fn v6(ip: IpAddr) -> Ipv6Addr {
    match ip {
        IpAddr::V4(v4) => v4.to_ipv6_mapped(),
        IpAddr::V6(v6) => v6,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn request() -> MapRequest {
        MapRequest {
            nonce: *b"0123456789ab",
            transport: Transport::Tcp,
            internal_port: 6881,
            suggested_port: 6881,
            lifetime: 7200,
            client_ip: "192.168.1.10".parse().unwrap(),
        }
    }

    /// Every field at its RFC 6887 offset (§7.1, §11.1).
    #[test]
    fn map_request_layout() {
        let b = encode_map(&request());
        let mut want = vec![2, 1, 0, 0, 0, 0, 0x1c, 0x20];
        want.extend([0; 10]);
        want.extend([0xff, 0xff, 192, 168, 1, 10]);
        want.extend(b"0123456789ab");
        want.extend([6, 0, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1]);
        want.extend([0; 10]);
        want.extend([0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(b.to_vec(), want);
        let udp = encode_map(&MapRequest {
            transport: Transport::Udp,
            lifetime: 0,
            suggested_port: 0,
            ..request()
        });
        assert_eq!(udp[36], 17);
        assert_eq!(&udp[4..8], &[0; 4], "lifetime 0 deletes");
        assert_eq!(&udp[42..44], &[0; 2]);
    }

    fn response(result: u8) -> Vec<u8> {
        let mut b = vec![2, 0x81, 0, result];
        b.extend(3600u32.to_be_bytes());
        b.extend(1234u32.to_be_bytes());
        b.extend([0; 12]);
        b.extend(b"0123456789ab");
        b.extend([6, 0, 0, 0]);
        b.extend(6881u16.to_be_bytes());
        b.extend(40000u16.to_be_bytes());
        b.extend([0; 10]);
        b.extend([0xff, 0xff, 203, 0, 113, 7]);
        b
    }

    #[test]
    fn map_response_parses() {
        let Answer::Map(r) = parse(&response(0)).unwrap() else {
            panic!("a MAP response")
        };
        assert_eq!(r.result, result::SUCCESS);
        assert_eq!((r.lifetime, r.epoch), (3600, 1234));
        assert_eq!((r.internal_port, r.external_port), (6881, 40000));
        assert_eq!(r.external_ip, "203.0.113.7".parse::<IpAddr>().unwrap());
        assert_eq!(r.transport, Transport::Tcp);
        assert!(answers(&r, &request()));
        assert!(!answers(
            &r,
            &MapRequest {
                nonce: [0; 12],
                ..request()
            }
        ));
        // Options after the MAP payload are skipped.
        let mut with_option = response(0);
        with_option.extend([0x80, 0, 0, 0]);
        assert!(matches!(parse(&with_option), Ok(Answer::Map(_))));
    }

    #[test]
    fn error_results_are_carried() {
        for code in [
            result::NOT_AUTHORIZED,
            result::NO_RESOURCES,
            result::CANNOT_PROVIDE_EXTERNAL,
            result::ADDRESS_MISMATCH,
        ] {
            let Ok(Answer::Map(r)) = parse(&response(code)) else {
                panic!("parsed")
            };
            assert_eq!(r.result, code);
        }
    }

    /// A NAT-PMP server's answer to a PCP request: version 0, result 1.
    #[test]
    fn nat_pmp_server_is_recognised() {
        let b = [0, 0x81, 0, 1, 0, 0, 0, 9];
        assert_eq!(parse(&b).unwrap(), Answer::OtherVersion(0));
    }

    #[test]
    fn announce_round() {
        let ip: IpAddr = "10.0.0.2".parse().unwrap();
        let b = encode_announce(ip);
        let mut want = vec![2, 0, 0, 0, 0, 0, 0, 0];
        want.extend([0; 10]);
        want.extend([0xff, 0xff, 10, 0, 0, 2]);
        assert_eq!(b.to_vec(), want);
        let mut resp = b;
        resp[1] = 0x80;
        resp[8..12].copy_from_slice(&77u32.to_be_bytes());
        assert_eq!(
            parse(&resp),
            Ok(Answer::Announce {
                result: 0,
                epoch: 77
            })
        );
        assert_eq!(parse(&b), Err(CodecError::NotAResponse));
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[2]).is_err());
        assert!(parse(&response(0)[..59]).is_err());
        // Our own request echoed back is not a response.
        assert_eq!(
            parse(&encode_map(&request())),
            Err(CodecError::NotAResponse)
        );
        let mut bad_proto = response(0);
        bad_proto[36] = 99;
        assert_eq!(parse(&bad_proto), Err(CodecError::Protocol(99)));
        assert!(parse(&vec![2; 2000]).is_err());
        assert!(parse(&[0, 1]).is_err());
    }
}
