//! Entry points of the fuzz targets in `fuzz/`, one function per target.
//!
//! Each takes the fuzzer's bytes, feeds them to a parser or state machine
//! that sees outside data, and checks properties that must hold for *any*
//! input (round trips, bounds, bookkeeping); a violated property panics,
//! which is what the fuzzer looks for. The fuzz targets are one-line calls
//! to these functions, and the unit tests replay the checked-in corpus and
//! crash inputs through them on stable Rust (see [`TARGETS`]).
//!
//! Only built with the `fuzzing` feature (the fuzz crate enables it) and in
//! tests.

use bytes::{Bytes, BytesMut};
use sha1::{Digest, Sha1};
use tokio_util::codec::Decoder;

use crate::bencode::{self, Limits, Value};
use crate::bitfield::Bitfield;
use crate::geometry::Geometry;
use crate::id::{InfoHash, PeerId};
use crate::magnet::Magnet;
use crate::metainfo::{Metainfo, MetainfoError};
use crate::peer::codec::{MAX_FRAME, PeerCodec};
use crate::peer::extension::ExtendedHandshake;
use crate::peer::handshake::{HANDSHAKE_LEN, Handshake};
use crate::peer::message::Message;
use crate::peer::pex::{MAX_PEX_PEERS, PexMessage};
use crate::resume;
use crate::tracker::announce::{
    MAX_PEERS, parse_http_response, parse_udp_announce, parse_udp_connect, udp_transaction_matches,
};

mod dht;
mod hash_exchange;
mod metadata;
mod mse;
mod peer_state;
mod utp_conn;
mod webseed_plan;
pub use dht::dht;
pub use hash_exchange::hash_exchange;
pub use metadata::metadata;
pub use mse::mse;
pub use peer_state::peer_state;
pub use utp_conn::utp_conn;
pub use webseed_plan::webseed_plan;

/// A fuzz target's body.
pub type Entry = fn(&[u8]);

/// Every fuzz target: its name (the folder under `fuzz/corpus/` and
/// `fuzz/artifacts/`, and the binary in `fuzz/fuzz_targets/`) and entry.
pub const TARGETS: &[(&str, Entry)] = &[
    ("bencode_metainfo", bencode_metainfo),
    ("magnet", magnet),
    ("peer_codec", peer_codec),
    ("handshake", handshake),
    ("extension", extension),
    ("metadata", metadata),
    ("http_tracker", http_tracker),
    ("udp_tracker", udp_tracker),
    ("state_files", state_files),
    ("webseed_plan", webseed_plan),
    ("mse", mse),
    ("lsd", lsd),
    ("pex", pex),
    ("peer_state", peer_state),
    ("utp_packet", utp_packet),
    ("utp_conn", utp_conn),
    ("portmap", portmap),
    ("proxy", proxy),
    ("dht", dht),
    ("rpc_request", rpc_request),
    ("hash_exchange", hash_exchange),
    ("dns", dns),
];

/// A nameserver's answer (`--interface` looks names up itself): the
/// fuzzer's bytes as a whole datagram, and as the records after a header
/// and question that match our query (so the record parser is reached);
/// never a panic, never more than `MAX_ADDRS` addresses, each of the
/// family asked for. The same bytes as resolv.conf text give at most
/// three nameservers.
pub fn dns(data: &[u8]) {
    use crate::dns::{Kind, MAX_ADDRS, nameservers, parse_answer, query};
    let id = data
        .get(..2)
        .map_or(0, |b| u16::from_be_bytes([b[0], b[1]]));
    for kind in [Kind::A, Kind::Aaaa] {
        let q = query(id, "tracker.example", kind).expect("a valid name");
        let mut framed = q.clone();
        framed[2] = 0x81;
        framed[3] = 0x80;
        if let Some(count) = data.get(2..4) {
            framed[6..8].copy_from_slice(count);
        }
        framed.extend_from_slice(data.get(4..).unwrap_or_default());
        for answer in [data, &framed[..]] {
            if let Ok(ips) = parse_answer(answer, &q, kind) {
                assert!(ips.len() <= MAX_ADDRS);
                assert!(ips.iter().all(|ip| ip.is_ipv4() == (kind == Kind::A)));
            }
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        assert!(nameservers(text).len() <= 3);
    }
}

/// (r) A body sent to `btc daemon`'s Transmission RPC: parsed into a call
/// or refused, never a panic; the reply to either is JSON echoing the
/// request's tag.
pub fn rpc_request(data: &[u8]) {
    use crate::daemon::rpc;
    let (tag, body) = match rpc::parse(data) {
        Ok(r) => {
            if let rpc::Call::TorrentGet { fields, .. } = &r.call {
                assert!(data.len() >= fields.len());
            }
            (
                r.tag.clone(),
                rpc::reply("success", serde_json::json!({}), r.tag.as_ref()),
            )
        }
        Err(e) => (e.tag.clone(), rpc::refused(&e)),
    };
    let v: serde_json::Value = serde_json::from_slice(&body).expect("a reply is JSON");
    assert_eq!(v.get("tag").cloned(), tag);
}

/// (m) What a router or the system says to port mapping: PCP and NAT-PMP
/// responses (any datagram from port 5351) and the text of
/// `/proc/net/route`. Every input parses or is refused without a panic,
/// and what parses has the size its kind must have.
pub fn portmap(data: &[u8]) {
    use crate::portmap::{gateway, natpmp, pcp};
    match pcp::parse(data) {
        Ok(pcp::Answer::Map(r)) => {
            assert!(data.len() >= pcp::MAP_REQUEST_LEN && data.len() <= pcp::MAX_MESSAGE);
            assert!(data.len().is_multiple_of(4));
            let req = pcp::MapRequest {
                nonce: r.nonce,
                transport: r.transport,
                internal_port: r.internal_port,
                suggested_port: r.external_port,
                lifetime: r.lifetime,
                client_ip: r.external_ip,
            };
            assert!(pcp::answers(&r, &req));
            // Our request for it carries the same nonce, protocol and port
            // (the reserved bytes between are not looked at).
            let b = pcp::encode_map(&req);
            assert_eq!(&b[24..37], &data[24..37]);
            assert_eq!(&b[40..42], &data[40..42]);
        }
        Ok(pcp::Answer::Announce { .. }) => assert!(data.len() >= pcp::HEADER_LEN),
        Ok(pcp::Answer::OtherVersion(v)) => assert_ne!(v, pcp::VERSION),
        Err(_) => {}
    }
    match natpmp::parse(data) {
        Ok(natpmp::Response::Address { .. }) => assert_eq!(data.len(), 12),
        Ok(natpmp::Response::Map { .. }) => assert_eq!(data.len(), 16),
        Ok(natpmp::Response::Error { result, .. }) => {
            assert_eq!(data.len(), 8);
            assert_ne!(result, natpmp::result::SUCCESS);
        }
        Err(_) => {}
    }
    if let Some(gw) = gateway::parse_route_table(&String::from_utf8_lossy(data)) {
        assert!(!gw.is_unspecified());
    }
}

/// (u) uTP packet headers (BEP 29), the first thing to see any datagram
/// on the uTP port: any bytes parse or are refused without a panic, the
/// payload is a suffix of the datagram, and what parses re-encodes to a
/// header that parses to the same fields.
///
/// The corpus file `two_extensions_regression` is from the crate we used
/// before, whose encoder chained two extensions wrongly; ours parses it.
pub fn utp_packet(data: &[u8]) {
    use crate::utp::packet::{Header, parse};
    let Ok((h, payload)) = parse(data) else {
        return;
    };
    assert!(payload.len() <= data.len().saturating_sub(crate::utp::packet::HEADER_LEN));
    assert_eq!(payload, &data[data.len() - payload.len()..]);
    let mut buf = [0u8; 128];
    let n = h.encode(&mut buf);
    assert_eq!(n, h.encoded_len());
    let (again, rest): (Header, &[u8]) = parse(&buf[..n]).expect("our own header parses");
    assert!(rest.is_empty());
    assert_eq!(again, h);
}

/// (l) LSD announces (BEP 14): whatever parses is bounded and re-encodes,
/// for either group, to announces that fit a datagram and parse the same.
pub fn lsd(data: &[u8]) {
    if let Ok(a) = crate::lsd::parse_announce(data) {
        assert!(!a.info_hashes.is_empty() && a.info_hashes.len() <= crate::lsd::MAX_HASHES);
        assert!(a.port != 0);
        for group in [crate::lsd::GROUP_V4.into(), crate::lsd::GROUP_V6.into()] {
            let packets = crate::lsd::announce_packets(group, a.port, &a.info_hashes, "c");
            let mut again = Vec::new();
            for p in &packets {
                assert!(p.len() <= crate::lsd::MAX_DATAGRAM);
                again.extend(
                    crate::lsd::parse_announce(p)
                        .expect("our own announce parses")
                        .info_hashes,
                );
            }
            assert_eq!(again, a.info_hashes);
        }
    }
}

/// (x) What a proxy sends back (SOCKS5 method choice, RFC 1929 answer,
/// `CONNECT`/`UDP ASSOCIATE` reply, relayed datagram header, HTTP
/// `CONNECT` answer) and the `--proxy` URL: any bytes decode or are
/// refused without a panic, a decoder never claims more bytes than it was
/// given nor more than its bound, decoded addresses re-encode to the same
/// bytes, and a parsed URL's display never shows the password.
pub fn proxy(data: &[u8]) {
    use crate::proxy::*;
    for with_auth in [false, true] {
        if let Ok(Some((_, n))) = parse_method_choice(data, with_auth) {
            assert!(n <= data.len());
        }
    }
    if let Ok(Some(n)) = parse_auth_reply(data) {
        assert!(n <= data.len());
    }
    if let Ok(Some((addr, n))) = parse_reply(data) {
        assert!(n <= data.len() && n <= MAX_REPLY);
        let again = request(Command::Connect, &addr).expect("a decoded address encodes");
        assert_eq!(&again[3..], &data[3..n], "the address re-encodes the same");
    }
    if let Ok((addr, payload)) = unwrap_udp(data) {
        assert_eq!(wrap_udp(&addr, payload).expect("re-wraps"), data);
    }
    if let Ok(Some(n)) = parse_http_connect_reply(data) {
        assert!(n <= data.len() && n <= MAX_HTTP_REPLY);
    }
    let text = String::from_utf8_lossy(data);
    if let Ok(u) = parse_proxy_url(&text) {
        let shown = format!("{u} {u:?}");
        if let Some(c) = &u.auth
            && c.pass.len() >= 4
        {
            assert!(!shown.contains(&c.pass), "the password is shown: {shown}");
        }
        let again = parse_proxy_url(&u.to_string()).expect("the display parses");
        assert_eq!(
            (again.kind, &again.host, again.port),
            (u.kind, &u.host, u.port)
        );
    }
}

fn sha1(bytes: &[u8]) -> [u8; 20] {
    let mut out = [0u8; 20];
    out.copy_from_slice(&Sha1::digest(bytes));
    out
}

/// What every successfully parsed torrent must satisfy.
fn check_metainfo(m: &Metainfo) {
    let info = &m.info;
    match (&m.v2, &info.v2_pieces) {
        // v2-only: the swarm knows it by its v2 hash cut to 20 bytes.
        (Some(v2), Some(checks)) if info.is_v2_only() => {
            assert_eq!(m.info_hash.0[..], v2.info_hash[..20]);
            assert_eq!(checks.len(), info.piece_count());
        }
        _ => assert_eq!(m.info_hash.0, sha1(&m.info_bytes)),
    }
    if let Some(v2) = &m.v2 {
        // A hybrid's halves describe the same files, and every kept layer
        // hashes up to its file's root.
        assert_eq!(v2.files.len(), info.files.iter().filter(|f| !f.pad).count());
        for f in &v2.files {
            if let (Some(layer), Some(root)) = (&f.layer, f.pieces_root) {
                let root_again = crate::merkle::root_from_layer(layer, f.length, info.piece_length);
                assert_eq!(root_again, Some(root));
            }
        }
    }
    assert!(info.piece_length > 0);
    assert!(info.total_length > 0);
    let g = Geometry::new(info.total_length, info.piece_length);
    assert_eq!(g.piece_count as usize, info.piece_count());
    let mut offset = 0u64;
    for f in &info.files {
        assert_eq!(f.offset, offset);
        assert!(!f.path.is_empty());
        offset += f.length;
    }
    assert_eq!(offset, info.total_length);
    let mut sum = 0u64;
    for i in 0..info.piece_count() {
        sum += u64::from(info.piece_len(i).unwrap_or(0));
    }
    assert_eq!(sum, info.total_length);
    assert_eq!(info.piece_len(info.piece_count()), None);
    // The info dict alone parses to the same thing (a v2-only torrent's
    // pieces are checked by layers from outside the info dict: without
    // them, it is refused when a file spans pieces).
    // A hybrid without its layers is checked by SHA-1 alone.
    let without_layers = |i: &crate::metainfo::Info| crate::metainfo::Info {
        v2_pieces: None,
        ..i.clone()
    };
    match Metainfo::from_info_bytes(&m.info_bytes, m.tracker_tiers()) {
        Ok(again) if !info.is_v2_only() || again.info == m.info => {
            assert_eq!(without_layers(&again.info), without_layers(&m.info));
            assert_eq!(again.info_hash, m.info_hash);
        }
        Err(MetainfoError::V2Only { .. }) if info.is_v2_only() => {}
        other => panic!("the info dict alone parses otherwise: {other:?}"),
    }
    // The magnet link for it parses back.
    let link = Magnet::from_metainfo(m);
    assert_eq!(Magnet::parse(&link.to_uri()).as_ref(), Ok(&link));
}

/// (a) bencode, `.torrent` files and bare info dictionaries.
pub fn bencode_metainfo(data: &[u8]) {
    let value = bencode::decode::<Value>(data);
    if let Ok(v) = &value {
        assert_eq!(bencode::scan(data, Limits::DEFAULT), Ok(data.len()));
        // Re-encoding (sorted keys) is stable.
        let once = bencode::encode(v);
        let back: Value = bencode::decode(&once).expect("own encoding");
        assert_eq!(bencode::encode(&back), once);
    }
    if let Ok(m) = Metainfo::from_bytes(data) {
        check_metainfo(&m);
    }
    if let Ok(m) = Metainfo::from_info_bytes(data, vec![vec!["udp://t:1".into()]]) {
        assert_eq!(&m.info_bytes[..], data);
        check_metainfo(&m);
    }
}

/// (b) magnet links and bare info-hashes.
pub fn magnet(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(m) = Magnet::parse(text) {
        let uri = m.to_uri();
        assert_eq!(Magnet::parse(&uri).as_ref(), Ok(&m), "{uri}");
    }
    if let Ok(h) = InfoHash::parse(text) {
        assert_eq!(InfoHash::parse(&h.to_hex()), Ok(h));
    }
}

/// (c) the peer frame codec on a byte stream cut at fuzzer-chosen points,
/// and single-frame message decoding.
pub fn peer_codec(data: &[u8]) {
    let (cuts, stream) = data.split_at(data.len().min(8));
    // The whole stream at once...
    let mut whole = BytesMut::from(stream);
    let mut expected = Vec::new();
    let whole_err = loop {
        match PeerCodec.decode(&mut whole) {
            Ok(Some(m)) => expected.push(m),
            Ok(None) => break false,
            Err(_) => break true,
        }
    };
    // ...and in chunks give the same messages and the same verdict.
    let mut buf = BytesMut::new();
    let mut got = Vec::new();
    let mut chunked_err = false;
    let mut rest = stream;
    let mut i = 0;
    'feed: while !rest.is_empty() {
        let n = (usize::from(cuts.get(i % cuts.len().max(1)).copied().unwrap_or(0)) + 1)
            .min(rest.len());
        i += 1;
        buf.extend_from_slice(&rest[..n]);
        rest = &rest[n..];
        loop {
            match PeerCodec.decode(&mut buf) {
                Ok(Some(m)) => got.push(m),
                Ok(None) => break,
                Err(_) => {
                    chunked_err = true;
                    break 'feed;
                }
            }
        }
        // Buffer growth is bounded by one frame, whatever the prefix says.
        assert!(buf.capacity() <= 2 * (MAX_FRAME + 4) + stream.len());
    }
    assert_eq!(got, expected);
    assert_eq!(chunked_err, whole_err);
    // Every decoded message re-encodes to its frame (ids we ignore lose
    // their payload, so they are skipped).
    for m in &expected {
        if matches!(m, Message::Unknown { .. }) {
            continue;
        }
        let mut wire = BytesMut::new();
        m.encode(&mut wire);
        assert_eq!(wire.len(), m.encoded_len());
        assert_eq!(PeerCodec.decode(&mut wire).ok().flatten().as_ref(), Some(m));
        if let Message::Bitfield(b) = m {
            // Piece counts that fit and do not fit the payload.
            for n in [
                b.len() * 8,
                (b.len() * 8).saturating_sub(3),
                b.len() * 8 + 1,
            ] {
                if let Some(bf) = Bitfield::from_wire(b, n) {
                    assert_eq!(bf.len(), n);
                    assert_eq!(bf.as_bytes(), &b[..]);
                }
            }
        }
    }
    let _ = Message::decode(Bytes::copy_from_slice(data));
}

/// (d) the 68-byte BEP 3 handshake.
pub fn handshake(data: &[u8]) {
    let Some(bytes) = data.get(..HANDSHAKE_LEN) else {
        return;
    };
    let mut b = [0u8; HANDSHAKE_LEN];
    b.copy_from_slice(bytes);
    if let Ok(h) = Handshake::decode(&b) {
        assert_eq!(h.encode(), b);
        let _ = (h.supports_dht(), h.supports_extensions());
        let ours = Handshake::ours(h.info_hash, PeerId(h.peer_id.0), true);
        assert_eq!(Handshake::decode(&ours.encode()), Ok(ours));
    }
}

/// BEP 11 PEX messages: at most [`MAX_PEX_PEERS`] added and dropped peers
/// per family come out of any payload, and what comes out re-encodes to
/// itself.
pub fn pex(data: &[u8]) {
    if let Ok(m) = PexMessage::decode(data) {
        assert!(m.added.len() <= 2 * MAX_PEX_PEERS);
        assert!(m.dropped.len() <= 2 * MAX_PEX_PEERS);
        for list in [
            m.added.iter().map(|(a, _)| *a).collect::<Vec<_>>(),
            m.dropped.clone(),
        ] {
            assert!(list.iter().filter(|a| a.is_ipv4()).count() <= MAX_PEX_PEERS);
            assert!(list.iter().filter(|a| a.is_ipv6()).count() <= MAX_PEX_PEERS);
        }
        assert_eq!(PexMessage::decode(&m.encode()), Ok(m));
    }
}

/// (e) the BEP 10 extended handshake.
pub fn extension(data: &[u8]) {
    if let Ok(hs) = ExtendedHandshake::decode(data) {
        let again = ExtendedHandshake::decode(&hs.encode()).expect("own encoding");
        assert_eq!(again, hs);
    }
}

/// (g) HTTP tracker responses.
pub fn http_tracker(data: &[u8]) {
    if let Ok(r) = parse_http_response(data) {
        assert!(r.peers.len() <= MAX_PEERS);
        assert!(r.peers.iter().all(|p| p.port() != 0));
    }
    // The same bytes as a scrape answer, for a hash that may be in it: the
    // 20 bytes after the first `20:`, if any.
    let hash = data
        .windows(3)
        .position(|w| w == b"20:")
        .and_then(|i| data.get(i + 3..i + 23))
        .map_or(InfoHash([0; 20]), |h| {
            InfoHash(h.try_into().expect("20 bytes"))
        });
    let _ = crate::tracker::scrape::parse_http_scrape(data, &hash);
}

/// (h) UDP tracker responses, with the transaction id they carry (so the
/// parsers get past the id check) and with another.
pub fn udp_tracker(data: &[u8]) {
    let own = data
        .get(4..8)
        .map_or(0, |b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]));
    for tid in [own, own.wrapping_add(1)] {
        let matches = udp_transaction_matches(data, tid);
        if let Ok(r) = parse_udp_announce(data, tid) {
            assert!(matches);
            assert!(r.peers.len() <= MAX_PEERS);
            assert!(r.peers.iter().all(|p| p.port() != 0));
        }
        if parse_udp_connect(data, tid).is_ok() {
            assert!(matches);
        }
        if crate::tracker::scrape::parse_udp_scrape(data, tid).is_ok() {
            assert!(matches);
        }
    }
}

/// (i) state files: the DHT state file, remembered metadata (the part
/// after the SHA-1 check, which is `Metainfo::from_info_bytes`) and resume
/// data, decoded for a few torrent shapes (the corpus's `seed-resume` is
/// for 2 files and 10 pieces).
pub fn state_files(data: &[u8]) {
    for (files, pieces) in [(2, 10), (1, 1), (3, 64), (0, 8)] {
        let expect = resume::Expect {
            info_hash: InfoHash([7; 20]),
            files,
            pieces,
        };
        if let Ok(r) = resume::decode(data, &expect) {
            assert!(data.len() <= resume::max_len(&expect));
            assert_eq!(r.files.len(), files);
            assert_eq!(r.have.len(), pieces);
            assert!(r.output.is_absolute());
            assert_eq!(resume::decode(&resume::encode(&r), &expect), Ok(r));
        }
    }
    if let Ok(text) = std::str::from_utf8(data) {
        let (nodes, ip) = crate::dht::parse_state_text(text);
        assert!(nodes.len() <= 256);
        assert!(nodes.iter().all(|n| n.port() != 0));
        if let Some(ip) = ip {
            assert!(!ip.is_private() && !ip.is_loopback());
        }
    }
    if let Ok(m) = Metainfo::from_info_bytes(data, Vec::new()) {
        check_metainfo(&m);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Replays every checked-in corpus file and crash input through its
    /// target, so `cargo test` on stable catches regressions.
    #[test]
    fn fuzz_corpus_replays_clean() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz");
        for (name, entry) in TARGETS {
            let mut replayed = 0;
            for kind in ["corpus", "artifacts"] {
                let Ok(dir) = std::fs::read_dir(root.join(kind).join(name)) else {
                    continue;
                };
                for file in dir {
                    let path = file.unwrap().path();
                    if !path.is_file() {
                        continue;
                    }
                    let data = std::fs::read(&path).unwrap();
                    let r = std::panic::catch_unwind(|| entry(&data));
                    assert!(r.is_ok(), "{name}: {} fails", path.display());
                    replayed += 1;
                }
            }
            assert!(replayed > 0, "{name}: no corpus under {}", root.display());
        }
    }

    /// Crash inputs found but not fixed yet live in `fuzz/known/TARGET/`:
    /// kept so the next session can reproduce them, not replayed by the
    /// normal run (which must pass). Run with `cargo test --lib -- --ignored
    /// known_fuzz_crashes`; it fails while any of them still crashes.
    #[test]
    #[ignore = "open fuzz findings; see fuzz/known/"]
    fn known_fuzz_crashes() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/known");
        let mut failing = Vec::new();
        for (name, entry) in TARGETS {
            let Ok(dir) = std::fs::read_dir(root.join(name)) else {
                continue;
            };
            for file in dir.flatten() {
                let data = std::fs::read(file.path()).unwrap();
                if std::panic::catch_unwind(|| entry(&data)).is_err() {
                    failing.push(file.path());
                }
            }
        }
        assert!(failing.is_empty(), "still crashing: {failing:?}");
    }

    #[test]
    fn every_target_has_a_fuzz_binary() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
        for (name, _) in TARGETS {
            let src = std::fs::read_to_string(dir.join(format!("{name}.rs"))).unwrap();
            assert!(src.contains(&format!("btc::fuzzing::{name}(")), "{name}");
        }
    }
}
