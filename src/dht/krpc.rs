//! KRPC, the DHT's wire format (BEP 5), with BEP 32's IPv6 fields
//! (`nodes6`, `want`) and BEP 42's `ip`: typed messages, a strict decoder
//! and an encoder. No I/O.
//!
//! Every datagram is hostile: it is scanned under [`LIMITS`] before
//! anything is allocated, compact node and peer lists must be whole
//! multiples of their entry size, and a list longer than a datagram could
//! honestly carry cannot exist because the datagram is capped first.

use crate::bencode::{self, Limits, Value};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};

/// Largest datagram we read or decode (a KRPC message fits in ~1.4 KB).
pub const MAX_DATAGRAM: usize = 1500;

/// Caps for one datagram: its length and the values in it.
pub const LIMITS: Limits = Limits {
    max_len: MAX_DATAGRAM,
    max_items: 1024,
};

/// Longest transaction id we echo (ours are 2 bytes; others use up to 4).
pub const MAX_TID: usize = 16;

/// Longest token we keep (ours are 8 bytes, libtorrent's 4, others' 20).
pub const MAX_TOKEN: usize = 64;

/// A 160-bit node id or info-hash.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Default)]
pub struct NodeId(pub [u8; 20]);

impl std::fmt::Debug for NodeId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", crate::id::hex(&self.0[..4]))
    }
}

impl NodeId {
    /// XOR distance to `other`, compared as a big-endian number.
    pub fn distance(&self, other: &NodeId) -> [u8; 20] {
        let mut d = [0u8; 20];
        for (i, b) in d.iter_mut().enumerate() {
            *b = self.0[i] ^ other.0[i];
        }
        d
    }

    /// Leading bits `self` and `other` share (160 when equal).
    pub fn common_prefix(&self, other: &NodeId) -> usize {
        for (i, (a, b)) in self.0.iter().zip(other.0.iter()).enumerate() {
            let x = a ^ b;
            if x != 0 {
                return i * 8 + x.leading_zeros() as usize;
            }
        }
        160
    }
}

/// A node: its id and the UDP address it answers on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NodeInfo {
    /// The id it claims.
    pub id: NodeId,
    /// Where it answers.
    pub addr: SocketAddr,
}

/// Which address families a querier wants nodes of (BEP 32 `want`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Want {
    /// `n4`: IPv4 nodes in `nodes`.
    pub v4: bool,
    /// `n6`: IPv6 nodes in `nodes6`.
    pub v6: bool,
}

/// The four queries of BEP 5.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Query {
    /// Are you there?
    Ping,
    /// The nodes you know closest to `target`.
    FindNode {
        /// The id looked for.
        target: NodeId,
    },
    /// Peers for `info_hash`, or the nodes closest to it, and a token.
    GetPeers {
        /// The torrent.
        info_hash: NodeId,
    },
    /// The querier serves `info_hash` on `port` (or on the port it sends
    /// from, with `implied_port`).
    AnnouncePeer {
        /// The torrent.
        info_hash: NodeId,
        /// The TCP port it serves on.
        port: u16,
        /// Use the datagram's source port instead of `port` (BEP 5).
        implied_port: bool,
        /// The token we gave it in a `get_peers` answer.
        token: Vec<u8>,
    },
}

impl Query {
    /// The method name on the wire.
    pub fn method(&self) -> &'static str {
        match self {
            Query::Ping => "ping",
            Query::FindNode { .. } => "find_node",
            Query::GetPeers { .. } => "get_peers",
            Query::AnnouncePeer { .. } => "announce_peer",
        }
    }
}

/// An answer: the responder's id and whatever the query asked for.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Response {
    /// The responder's id.
    pub id: NodeId,
    /// Compact IPv4 nodes (`nodes`).
    pub nodes: Vec<NodeInfo>,
    /// Compact IPv6 nodes (`nodes6`).
    pub nodes6: Vec<NodeInfo>,
    /// Peers (`values`), of either family.
    pub values: Vec<SocketAddr>,
    /// The write token of a `get_peers` answer.
    pub token: Option<Vec<u8>>,
}

/// What a message is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Body {
    /// A query from the node `id`.
    Query {
        /// The querier's id.
        id: NodeId,
        /// What it asks.
        query: Query,
        /// Node families it wants back.
        want: Want,
        /// BEP 43 read-only node: it must not enter routing tables.
        read_only: bool,
    },
    /// An answer to one of our queries.
    Response(Response),
    /// An error answer (`[code, message]`).
    Error {
        /// 201 generic, 202 server, 203 protocol, 204 method unknown.
        code: i64,
        /// The explanation, lossily decoded.
        message: String,
    },
}

/// One KRPC datagram.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Message {
    /// Transaction id, echoed in the answer.
    pub tid: Vec<u8>,
    /// What it is.
    pub body: Body,
    /// BEP 42: the address the responder saw us at.
    pub ip: Option<SocketAddr>,
}

/// Why a datagram was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KrpcError {
    /// Not bencode, or over [`LIMITS`].
    #[error("{0}")]
    Bencode(#[from] bencode::BencodeError),
    /// Bencode, but not a KRPC message.
    #[error("malformed KRPC message: {0}")]
    Malformed(&'static str),
    /// A query we do not know (answered with error 204, echoing `tid`).
    #[error("unknown method")]
    UnknownMethod {
        /// The query's transaction id.
        tid: Vec<u8>,
    },
}

type Dict<'a> = std::collections::HashMap<crate::bencode::ByteBuf<'a>, Value<'a>>;

fn get<'a, 'b>(d: &'b Dict<'a>, key: &'static str) -> Option<&'b Value<'a>> {
    d.get(&crate::bencode::ByteBuf(key.as_bytes()))
}

fn bytes<'a>(d: &Dict<'a>, key: &'static str) -> Option<&'a [u8]> {
    match get(d, key) {
        Some(Value::Bytes(b)) => Some(b.0),
        _ => None,
    }
}

fn int(d: &Dict<'_>, key: &'static str) -> Option<i64> {
    match get(d, key) {
        Some(Value::Integer(i)) => Some(*i),
        _ => None,
    }
}

fn id20(d: &Dict<'_>, key: &'static str) -> Result<NodeId, KrpcError> {
    let b = bytes(d, key).ok_or(KrpcError::Malformed("missing a 20-byte id"))?;
    let arr: [u8; 20] = b
        .try_into()
        .map_err(|_| KrpcError::Malformed("an id is not 20 bytes"))?;
    Ok(NodeId(arr))
}

/// Decodes one datagram.
pub fn decode(buf: &[u8]) -> Result<Message, KrpcError> {
    let value: Value<'_> = bencode::decode_limited(buf, LIMITS)?;
    let Value::Dict(top) = value else {
        return Err(KrpcError::Malformed("not a dictionary"));
    };
    let tid = bytes(&top, "t").ok_or(KrpcError::Malformed("no transaction id"))?;
    if tid.len() > MAX_TID {
        return Err(KrpcError::Malformed("transaction id too long"));
    }
    let ip = bytes(&top, "ip").and_then(compact_addr);
    let body = match bytes(&top, "y") {
        Some(b"q") => decode_query(&top, tid)?,
        Some(b"r") => {
            let Some(Value::Dict(r)) = get(&top, "r") else {
                return Err(KrpcError::Malformed("response without r"));
            };
            Body::Response(decode_response(r)?)
        }
        Some(b"e") => {
            let Some(Value::List(e)) = get(&top, "e") else {
                return Err(KrpcError::Malformed("error without e"));
            };
            let code = match e.first() {
                Some(Value::Integer(c)) => *c,
                _ => 201,
            };
            let message = match e.get(1) {
                Some(Value::Bytes(b)) => String::from_utf8_lossy(&b.0[..b.0.len().min(200)]).into(),
                _ => String::new(),
            };
            Body::Error { code, message }
        }
        _ => return Err(KrpcError::Malformed("unknown message type")),
    };
    Ok(Message {
        tid: tid.to_vec(),
        body,
        ip,
    })
}

fn decode_query(top: &Dict<'_>, tid: &[u8]) -> Result<Body, KrpcError> {
    let Some(Value::Dict(a)) = get(top, "a") else {
        return Err(KrpcError::Malformed("query without arguments"));
    };
    let id = id20(a, "id")?;
    let mut want = Want::default();
    if let Some(Value::List(list)) = get(a, "want") {
        for w in list {
            match w {
                Value::Bytes(b) if b.0 == b"n4" => want.v4 = true,
                Value::Bytes(b) if b.0 == b"n6" => want.v6 = true,
                _ => {}
            }
        }
    }
    let read_only = int(top, "ro") == Some(1);
    let query = match bytes(top, "q") {
        Some(b"ping") => Query::Ping,
        Some(b"find_node") => Query::FindNode {
            target: id20(a, "target")?,
        },
        Some(b"get_peers") => Query::GetPeers {
            info_hash: id20(a, "info_hash")?,
        },
        Some(b"announce_peer") => {
            let token = bytes(a, "token").ok_or(KrpcError::Malformed("announce without token"))?;
            if token.len() > MAX_TOKEN {
                return Err(KrpcError::Malformed("token too long"));
            }
            let implied_port = int(a, "implied_port").is_some_and(|v| v != 0);
            let port = match int(a, "port") {
                Some(p) => {
                    u16::try_from(p).map_err(|_| KrpcError::Malformed("port out of range"))?
                }
                None if implied_port => 0,
                None => return Err(KrpcError::Malformed("announce without port")),
            };
            Query::AnnouncePeer {
                info_hash: id20(a, "info_hash")?,
                port,
                implied_port,
                token: token.to_vec(),
            }
        }
        Some(_) => return Err(KrpcError::UnknownMethod { tid: tid.to_vec() }),
        None => return Err(KrpcError::Malformed("query without a method")),
    };
    Ok(Body::Query {
        id,
        query,
        want,
        read_only,
    })
}

fn decode_response(r: &Dict<'_>) -> Result<Response, KrpcError> {
    let id = id20(r, "id")?;
    let nodes = match bytes(r, "nodes") {
        Some(b) => compact_nodes4(b)?,
        None => Vec::new(),
    };
    let nodes6 = match bytes(r, "nodes6") {
        Some(b) => compact_nodes6(b)?,
        None => Vec::new(),
    };
    let mut values = Vec::new();
    if let Some(Value::List(list)) = get(r, "values") {
        for v in list {
            // A peer of the wrong length is skipped, not fatal: some
            // nodes pad or mix families.
            if let Value::Bytes(b) = v
                && let Some(a) = compact_addr(b.0)
            {
                values.push(a);
            }
        }
    }
    let token = match bytes(r, "token") {
        Some(t) if t.len() <= MAX_TOKEN => Some(t.to_vec()),
        Some(_) => return Err(KrpcError::Malformed("token too long")),
        None => None,
    };
    Ok(Response {
        id,
        nodes,
        nodes6,
        values,
        token,
    })
}

/// A compact address: 6 bytes (IPv4 + port) or 18 (IPv6 + port).
pub fn compact_addr(b: &[u8]) -> Option<SocketAddr> {
    match b.len() {
        6 => {
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Some(SocketAddr::V4(SocketAddrV4::new(
                ip,
                u16::from_be_bytes([b[4], b[5]]),
            )))
        }
        18 => {
            let ip: [u8; 16] = b[..16].try_into().ok()?;
            let port = u16::from_be_bytes([b[16], b[17]]);
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(ip),
                port,
                0,
                0,
            )))
        }
        _ => None,
    }
}

fn compact_nodes4(b: &[u8]) -> Result<Vec<NodeInfo>, KrpcError> {
    compact_nodes(b, 26)
}

fn compact_nodes6(b: &[u8]) -> Result<Vec<NodeInfo>, KrpcError> {
    compact_nodes(b, 38)
}

fn compact_nodes(b: &[u8], entry: usize) -> Result<Vec<NodeInfo>, KrpcError> {
    if !b.len().is_multiple_of(entry) {
        return Err(KrpcError::Malformed("compact node list of a bad length"));
    }
    Ok(b.chunks_exact(entry)
        .filter_map(|c| {
            let id = NodeId(c[..20].try_into().ok()?);
            let addr = compact_addr(&c[20..])?;
            Some(NodeInfo { id, addr })
        })
        .collect())
}

/// The compact form of `addr` (6 or 18 bytes).
pub fn write_compact_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr {
        SocketAddr::V4(a) => out.extend_from_slice(&a.ip().octets()),
        SocketAddr::V6(a) => out.extend_from_slice(&a.ip().octets()),
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

/// A tiny bencode writer: KRPC messages are a few fixed shapes, and
/// writing their keys in sorted order by hand beats building values.
struct Writer(Vec<u8>);

impl Writer {
    fn bytes(&mut self, b: &[u8]) {
        self.0.extend_from_slice(b.len().to_string().as_bytes());
        self.0.push(b':');
        self.0.extend_from_slice(b);
    }
    fn key(&mut self, k: &str) {
        self.bytes(k.as_bytes());
    }
    fn int(&mut self, i: i64) {
        self.0.push(b'i');
        self.0.extend_from_slice(i.to_string().as_bytes());
        self.0.push(b'e');
    }
}

/// Encodes `msg`. Keys go out in bencode's sorted order.
pub fn encode(msg: &Message) -> Vec<u8> {
    let mut w = Writer(Vec::with_capacity(256));
    w.0.push(b'd');
    match &msg.body {
        Body::Query {
            id,
            query,
            want,
            read_only,
        } => {
            w.key("a");
            w.0.push(b'd');
            // Sorted: id, implied_port, info_hash, port, target, token, want.
            w.key("id");
            w.bytes(&id.0);
            if let Query::AnnouncePeer { implied_port, .. } = query {
                w.key("implied_port");
                w.int(i64::from(*implied_port));
            }
            match query {
                Query::GetPeers { info_hash } | Query::AnnouncePeer { info_hash, .. } => {
                    w.key("info_hash");
                    w.bytes(&info_hash.0);
                }
                _ => {}
            }
            if let Query::AnnouncePeer { port, .. } = query {
                w.key("port");
                w.int(i64::from(*port));
            }
            if let Query::FindNode { target } = query {
                w.key("target");
                w.bytes(&target.0);
            }
            if let Query::AnnouncePeer { token, .. } = query {
                w.key("token");
                w.bytes(token);
            }
            if want.v4 || want.v6 {
                w.key("want");
                w.0.push(b'l');
                if want.v4 {
                    w.bytes(b"n4");
                }
                if want.v6 {
                    w.bytes(b"n6");
                }
                w.0.push(b'e');
            }
            w.0.push(b'e');
            write_ip(&mut w, msg.ip);
            w.key("q");
            w.key(query.method());
            if *read_only {
                w.key("ro");
                w.int(1);
            }
            w.key("t");
            w.bytes(&msg.tid);
            w.key("y");
            w.key("q");
        }
        Body::Response(r) => {
            write_ip(&mut w, msg.ip);
            w.key("r");
            w.0.push(b'd');
            // Sorted: id, nodes, nodes6, token, values.
            w.key("id");
            w.bytes(&r.id.0);
            if !r.nodes.is_empty() {
                w.key("nodes");
                w.bytes(&compact_nodes_bytes(&r.nodes));
            }
            if !r.nodes6.is_empty() {
                w.key("nodes6");
                w.bytes(&compact_nodes_bytes(&r.nodes6));
            }
            if let Some(t) = &r.token {
                w.key("token");
                w.bytes(t);
            }
            if !r.values.is_empty() {
                w.key("values");
                w.0.push(b'l');
                for v in &r.values {
                    let mut c = Vec::with_capacity(18);
                    write_compact_addr(&mut c, *v);
                    w.bytes(&c);
                }
                w.0.push(b'e');
            }
            w.0.push(b'e');
            w.key("t");
            w.bytes(&msg.tid);
            w.key("y");
            w.key("r");
        }
        Body::Error { code, message } => {
            w.key("e");
            w.0.push(b'l');
            w.int(*code);
            w.bytes(message.as_bytes());
            w.0.push(b'e');
            write_ip(&mut w, msg.ip);
            w.key("t");
            w.bytes(&msg.tid);
            w.key("y");
            w.key("e");
        }
    }
    w.0.push(b'e');
    w.0
}

fn write_ip(w: &mut Writer, ip: Option<SocketAddr>) {
    if let Some(ip) = ip {
        let mut c = Vec::with_capacity(18);
        write_compact_addr(&mut c, ip);
        w.key("ip");
        w.bytes(&c);
    }
}

fn compact_nodes_bytes(nodes: &[NodeInfo]) -> Vec<u8> {
    let mut out = Vec::with_capacity(nodes.len() * 38);
    for n in nodes {
        out.extend_from_slice(&n.id.0);
        write_compact_addr(&mut out, n.addr);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(b: u8) -> NodeId {
        NodeId([b; 20])
    }

    fn round_trip(m: &Message) {
        let bytes = encode(m);
        // The encoder's output is canonical bencode: the library decodes it
        // and re-encodes it to the same bytes (keys sorted).
        let v: Value<'_> = bencode::decode(&bytes).unwrap();
        assert_eq!(
            bencode::encode(&v),
            bytes,
            "{}",
            String::from_utf8_lossy(&bytes)
        );
        assert_eq!(&decode(&bytes).unwrap(), m);
    }

    #[test]
    fn every_query_round_trips() {
        for query in [
            Query::Ping,
            Query::FindNode { target: id(7) },
            Query::GetPeers { info_hash: id(8) },
            Query::AnnouncePeer {
                info_hash: id(9),
                port: 6881,
                implied_port: true,
                token: b"tok".to_vec(),
            },
        ] {
            round_trip(&Message {
                tid: b"aa".to_vec(),
                body: Body::Query {
                    id: id(1),
                    query,
                    want: Want { v4: true, v6: true },
                    read_only: true,
                },
                ip: None,
            });
        }
    }

    #[test]
    fn responses_and_errors_round_trip() {
        let v6: SocketAddr = "[2001:db8::1]:6881".parse().unwrap();
        let v4: SocketAddr = "192.0.2.1:51413".parse().unwrap();
        round_trip(&Message {
            tid: b"zz".to_vec(),
            body: Body::Response(Response {
                id: id(2),
                nodes: vec![NodeInfo {
                    id: id(3),
                    addr: v4,
                }],
                nodes6: vec![NodeInfo {
                    id: id(4),
                    addr: v6,
                }],
                values: vec![v4, v6],
                token: Some(b"12345678".to_vec()),
            }),
            ip: Some(v6),
        });
        round_trip(&Message {
            tid: b"e1".to_vec(),
            body: Body::Error {
                code: 203,
                message: "bad token".into(),
            },
            ip: None,
        });
    }

    #[test]
    fn decodes_the_bep5_example() {
        let m = decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:ping1:t2:aa1:y1:qe").unwrap();
        assert_eq!(m.tid, b"aa");
        match m.body {
            Body::Query { id, query, .. } => {
                assert_eq!(&id.0, b"abcdefghij0123456789");
                assert_eq!(query, Query::Ping);
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn hostile_datagrams_are_errors_not_panics() {
        for bad in [
            &b""[..],
            b"i1e",
            b"d1:t2:aa1:y1:qe",
            b"d1:ad2:id3:abce1:q4:ping1:t2:aa1:y1:qe",
            b"d1:rd2:id20:abcdefghij01234567895:nodes3:abce1:t2:aa1:y1:re",
            b"d1:ad2:id20:abcdefghij0123456789e1:q4:evil1:t2:aa1:y1:qe",
            b"d1:ad2:id20:abcdefghij01234567894:porti70000e5:token1:x9:info_hash20:abcdefghij0123456789e1:q13:announce_peer1:t2:aa1:y1:qe",
            b"d1:t17:aaaaaaaaaaaaaaaaa1:y1:re",
        ] {
            assert!(decode(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
        assert_eq!(
            decode(b"d1:ad2:id20:abcdefghij0123456789e1:q4:evil1:t2:aa1:y1:qe"),
            Err(KrpcError::UnknownMethod {
                tid: b"aa".to_vec()
            })
        );
        let huge = vec![b'l'; MAX_DATAGRAM + 1];
        assert!(decode(&huge).is_err());
    }

    #[test]
    fn distance_and_prefix() {
        let a = NodeId([0; 20]);
        let mut b = NodeId([0; 20]);
        b.0[1] = 0b0001_0000;
        assert_eq!(a.common_prefix(&b), 11);
        assert_eq!(a.common_prefix(&a), 160);
        assert_eq!(a.distance(&b)[1], 0b0001_0000);
    }
}
