//! The `dht` fuzz target: KRPC datagrams (BEP 5, BEP 32) into the codec
//! and into a running IPv6 node.

use crate::dht::krpc::{self, Body, MAX_DATAGRAM};
use crate::dht::node::{Family, Node};
use crate::dht::table::K;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// (q) The DHT: any datagram decodes or is refused without a panic; what
/// decodes re-encodes to a datagram that decodes to the same message (an
/// error's text aside, which is cut lossily). Then the input, cut into
/// datagrams (a length byte, a sender byte, the bytes), drives a node
/// that also runs a lookup: everything it sends decodes, fits a datagram,
/// and its table keeps within K per bucket.
pub fn dht(data: &[u8]) {
    if let Ok(m) = krpc::decode(data)
        && !matches!(m.body, Body::Error { .. })
    {
        let again = krpc::decode(&krpc::encode(&m)).expect("our own encoding decodes");
        assert_eq!(again, m);
    }
    let start = Instant::now();
    let from = |b: u8| -> SocketAddr { format!("[fd00::{}]:{}", b % 8 + 1, 6881).parse().unwrap() };
    let mut node = Node::new(
        krpc::NodeId([0x11; 20]),
        Family::V6,
        vec![from(0), from(1)],
        false,
        7,
        start,
    );
    node.get_peers(krpc::NodeId([0x22; 20]), start);
    let mut rest = data;
    let mut now = start;
    while rest.len() >= 2 {
        let len = usize::from(rest[0]).min(rest.len() - 2);
        let sender = rest[1];
        let datagram = &rest[2..2 + len];
        rest = &rest[2 + len..];
        now += Duration::from_millis(u64::from(sender) * 10);
        node.handle(from(sender), datagram, now);
        if sender & 0x80 != 0 {
            node.tick(now);
        }
        while let Some((to, out)) = node.poll_transmit() {
            assert!(out.len() <= MAX_DATAGRAM, "{} bytes to {to}", out.len());
            krpc::decode(&out).expect("what the node sends decodes");
        }
        while node.poll_event().is_some() {}
    }
    assert!(node.table().len() <= 160 * K);
}
