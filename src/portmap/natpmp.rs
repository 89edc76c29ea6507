//! NAT-PMP (RFC 6886) requests and responses, sans-IO. Two requests: the
//! external address (opcode 0) and a port mapping (1 = UDP, 2 = TCP).
//!
//! Layout (RFC 6886 §3.2, §3.3), all integers big-endian:
//!
//! ```text
//! address request:  version=0 | opcode=0
//! address response: version=0 | 128 | result(2) | epoch(4) | external IPv4(4)
//! map request:      version=0 | opcode | reserved(2) | internal port(2)
//!                   | suggested external port(2) | lifetime(4)
//! map response:     version=0 | 128+opcode | result(2) | epoch(4)
//!                   | internal port(2) | mapped external port(2) | lifetime(4)
//! ```

use super::{CodecError, Transport};
use std::net::Ipv4Addr;

/// Size of an external address request.
pub const ADDRESS_REQUEST_LEN: usize = 2;
/// Size of a mapping request.
pub const MAP_REQUEST_LEN: usize = 12;

/// Result codes (RFC 6886 §3.5) btc names; the rest are shown by number.
pub mod result {
    /// Success.
    pub const SUCCESS: u16 = 0;
    /// The server speaks another version.
    pub const UNSUPPORTED_VERSION: u16 = 1;
    /// Mapping is turned off or refused.
    pub const NOT_AUTHORIZED: u16 = 2;
    /// The router has no external address (e.g. its uplink is down).
    pub const NETWORK_FAILURE: u16 = 3;
    /// No mapping left.
    pub const OUT_OF_RESOURCES: u16 = 4;
}

/// A response from a NAT-PMP server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Response {
    /// The answer to an external address request.
    Address {
        /// Result code.
        result: u16,
        /// Seconds since the server's mapping table began.
        epoch: u32,
        /// The router's external address.
        ip: Ipv4Addr,
    },
    /// The answer to a mapping request.
    Map {
        /// Result code.
        result: u16,
        /// Seconds since the server's mapping table began.
        epoch: u32,
        /// TCP or UDP (from the opcode).
        transport: Transport,
        /// Our port, echoed.
        internal_port: u16,
        /// The external port granted.
        external_port: u16,
        /// Seconds the mapping lasts.
        lifetime: u32,
    },
    /// A header only: an error answer (e.g. unsupported version or opcode)
    /// to a request we did not make in this form.
    Error {
        /// Result code.
        result: u16,
        /// Seconds since the server's mapping table began.
        epoch: u32,
    },
}

impl Response {
    /// The result code, whatever the kind.
    pub fn result(&self) -> u16 {
        match self {
            Response::Address { result, .. }
            | Response::Map { result, .. }
            | Response::Error { result, .. } => *result,
        }
    }

    /// The server's epoch, whatever the kind.
    pub fn epoch(&self) -> u32 {
        match self {
            Response::Address { epoch, .. }
            | Response::Map { epoch, .. }
            | Response::Error { epoch, .. } => *epoch,
        }
    }
}

/// The external address request.
pub fn encode_address() -> [u8; ADDRESS_REQUEST_LEN] {
    [0, 0]
}

/// A mapping request; `lifetime` 0 with `suggested_port` 0 deletes it
/// (RFC 6886 §3.4).
pub fn encode_map(
    transport: Transport,
    internal_port: u16,
    suggested_port: u16,
    lifetime: u32,
) -> [u8; MAP_REQUEST_LEN] {
    let mut b = [0u8; MAP_REQUEST_LEN];
    b[1] = opcode(transport);
    b[4..6].copy_from_slice(&internal_port.to_be_bytes());
    b[6..8].copy_from_slice(&suggested_port.to_be_bytes());
    b[8..12].copy_from_slice(&lifetime.to_be_bytes());
    b
}

/// Parses a server's response. Requests, other versions, short or
/// overlong messages are errors; an error result on a shorter message
/// than the opcode's is [`Response::Error`].
pub fn parse(buf: &[u8]) -> Result<Response, CodecError> {
    if buf.len() < 8 {
        return Err(CodecError::Length(buf.len()));
    }
    if buf[0] != 0 {
        return Err(CodecError::Version(buf[0]));
    }
    if buf[1] & 0x80 == 0 {
        return Err(CodecError::NotAResponse);
    }
    let u16_at = |i: usize| u16::from_be_bytes([buf[i], buf[i + 1]]);
    let u32_at = |i: usize| u32::from_be_bytes([buf[i], buf[i + 1], buf[i + 2], buf[i + 3]]);
    let (result, epoch) = (u16_at(2), u32_at(4));
    let exact = |n: usize| match buf.len() {
        l if l == n => Ok(()),
        l => Err(CodecError::Length(l)),
    };
    if buf.len() == 8 && result != result::SUCCESS {
        // An error answer may be the bare header (RFC 6886 §3.5).
        return Ok(Response::Error { result, epoch });
    }
    match buf[1] & 0x7f {
        0 => {
            exact(12)?;
            Ok(Response::Address {
                result,
                epoch,
                ip: Ipv4Addr::new(buf[8], buf[9], buf[10], buf[11]),
            })
        }
        op @ (1 | 2) => {
            exact(16)?;
            Ok(Response::Map {
                result,
                epoch,
                transport: if op == 1 {
                    Transport::Udp
                } else {
                    Transport::Tcp
                },
                internal_port: u16_at(8),
                external_port: u16_at(10),
                lifetime: u32_at(12),
            })
        }
        op => Err(CodecError::Opcode(op)),
    }
}

fn opcode(t: Transport) -> u8 {
    match t {
        Transport::Udp => 1,
        Transport::Tcp => 2,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The request layouts of RFC 6886 §3.2 and §3.3.
    #[test]
    fn request_layouts() {
        assert_eq!(encode_address(), [0, 0]);
        assert_eq!(
            encode_map(Transport::Tcp, 6881, 6881, 7200),
            [0, 2, 0, 0, 0x1a, 0xe1, 0x1a, 0xe1, 0, 0, 0x1c, 0x20]
        );
        assert_eq!(
            encode_map(Transport::Udp, 6882, 0, 0),
            [0, 1, 0, 0, 0x1a, 0xe2, 0, 0, 0, 0, 0, 0]
        );
    }

    #[test]
    fn responses_parse() {
        let addr = [0, 128, 0, 0, 0, 0, 0, 42, 203, 0, 113, 9];
        assert_eq!(
            parse(&addr).unwrap(),
            Response::Address {
                result: 0,
                epoch: 42,
                ip: Ipv4Addr::new(203, 0, 113, 9)
            }
        );
        let map = [
            0, 130, 0, 0, 0, 0, 1, 0, 0x1a, 0xe1, 0x9c, 0x40, 0, 0, 0x0e, 0x10,
        ];
        let r = parse(&map).unwrap();
        assert_eq!(
            r,
            Response::Map {
                result: 0,
                epoch: 256,
                transport: Transport::Tcp,
                internal_port: 6881,
                external_port: 40000,
                lifetime: 3600
            }
        );
        assert_eq!((r.result(), r.epoch()), (0, 256));
        let mut udp = map;
        udp[1] = 129;
        assert!(matches!(
            parse(&udp),
            Ok(Response::Map {
                transport: Transport::Udp,
                ..
            })
        ));
    }

    #[test]
    fn error_results_are_carried() {
        let mut map = [0, 130, 0, 2, 0, 0, 0, 5, 0x1a, 0xe1, 0, 0, 0, 0, 0, 0];
        assert_eq!(parse(&map).unwrap().result(), result::NOT_AUTHORIZED);
        map[3] = 4;
        assert_eq!(parse(&map).unwrap().result(), result::OUT_OF_RESOURCES);
        // Unsupported version: a bare header.
        let short = [0, 130, 0, 1, 0, 0, 0, 5];
        assert_eq!(
            parse(&short).unwrap(),
            Response::Error {
                result: result::UNSUPPORTED_VERSION,
                epoch: 5
            }
        );
    }

    #[test]
    fn garbage_is_an_error() {
        assert!(parse(&[]).is_err());
        assert!(parse(&[0, 128, 0]).is_err());
        assert_eq!(
            parse(&[2, 129, 0, 0, 0, 0, 0, 0]),
            Err(CodecError::Version(2))
        );
        // A request is not a response.
        assert_eq!(
            parse(&encode_map(Transport::Tcp, 1, 1, 1)),
            Err(CodecError::NotAResponse)
        );
        // A success that lacks its body, or carries too much.
        assert!(parse(&[0, 128, 0, 0, 0, 0, 0, 0]).is_err());
        assert!(parse(&[0, 130, 0, 0, 0, 0, 0, 0, 1, 1, 1, 1, 0, 0, 0, 0, 9]).is_err());
        assert_eq!(
            parse(&[0, 140, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]),
            Err(CodecError::Opcode(12))
        );
    }
}
