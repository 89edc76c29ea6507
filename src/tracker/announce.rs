//! Tracker announce encoding and decoding, for HTTP (BEP 3, 23, 7) and UDP
//! (BEP 15). Pure and synchronous: the I/O shell in [`super::http`] and
//! `super::udp` only moves these bytes, so every parser is unit-tested here
//! with hand-built byte vectors.
//!
//! Leniency choices, made once here so both transports agree:
//! - A compact `peers`/`peers6` string whose length is not a multiple of the
//!   entry size keeps every whole entry and drops the partial tail: the whole
//!   entries are still valid addresses, and refusing them would only make a
//!   sloppy tracker useless.
//! - Bytes after the top-level dictionary are refused, except ASCII whitespace
//!   (some trackers end the body with a newline).
//! - Dictionary-model peers with a hostname instead of an IP literal are
//!   skipped: resolving names per peer would let a tracker make us do DNS work.
//! - At most [`MAX_PEERS`] peers are taken from one response.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6};
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde::de::{IgnoredAny, MapAccess, SeqAccess, Visitor};

use crate::bencode::{Limits, Value, decode_prefix_limited};
use crate::id::{InfoHash, PeerId};

/// Upper bound on peers taken from one response; a tracker answering with a
/// million peers must not make us allocate for all of them.
pub const MAX_PEERS: usize = 10_000;

/// Most bencode values in one HTTP response: [`MAX_PEERS`] dictionary-model
/// peers (seven values each) and room for the rest. Checked, like the
/// length, before anything is decoded.
pub const MAX_RESPONSE_ITEMS: usize = 8 * MAX_PEERS + 1024;

/// Errors of the tracker layer, from parsing to the sockets.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TrackerError {
    /// The tracker answered, but refused the announce (`failure reason` or a
    /// UDP error packet).
    #[error("tracker refused the announce: {0}")]
    Failure(String),
    /// The HTTP body is not bencode.
    #[error("tracker response is not valid bencode: {0}")]
    Bencode(String),
    /// The HTTP body is bencode but not a dictionary.
    #[error("tracker response is not a dictionary")]
    NotADict,
    /// A UDP packet shorter than its fixed header.
    #[error("udp {what} response too short: {len} bytes")]
    UdpShort {
        /// Which response we expected.
        what: &'static str,
        /// How many bytes arrived.
        len: usize,
    },
    /// A UDP packet with an action we did not ask for.
    #[error("udp response has action {got}, expected {expected}")]
    UdpAction {
        /// Action we sent.
        expected: u32,
        /// Action that came back.
        got: u32,
    },
    /// A UDP packet answering some other request (or forged).
    #[error("udp transaction id {got:#010x} does not match {expected:#010x}")]
    TransactionMismatch {
        /// Id we sent.
        expected: u32,
        /// Id that came back.
        got: u32,
    },
    /// The tracker URL uses a scheme we cannot speak (e.g. `wss://`).
    #[error("unsupported tracker url scheme: {0}")]
    UnsupportedScheme(String),
    /// The tracker URL cannot be parsed.
    #[error("bad tracker url {url}: {reason}")]
    BadUrl {
        /// The URL as given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// Connecting, sending or receiving over HTTP failed.
    #[error("http announce to {url} failed: {reason}")]
    Http {
        /// The tracker URL.
        url: String,
        /// The client's description of the failure.
        reason: String,
    },
    /// `--proxy` is set and cannot relay UDP (the proxy said so once).
    #[error("no UDP relay through the proxy")]
    NoUdpRelay,
    /// The shared HTTP client could not be built (TLS setup).
    #[error("cannot build http client: {0}")]
    Client(String),
    /// A non-success HTTP status without a `failure reason` body.
    #[error("http status {status} from {url}")]
    HttpStatus {
        /// The tracker URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The response body passed our cap and was abandoned.
    #[error("tracker response is over the {limit}-byte limit; ignored")]
    BodyTooLarge {
        /// The cap in bytes.
        limit: usize,
    },
    /// DNS lookup of a UDP tracker failed or gave no address.
    #[error("could not resolve {host}: {reason}")]
    Resolve {
        /// Host name from the URL.
        host: String,
        /// Why.
        reason: String,
    },
    /// A UDP socket operation failed (e.g. ICMP port unreachable).
    #[error("udp i/o with {addr} failed: {reason}")]
    Io {
        /// The tracker's address.
        addr: String,
        /// The OS error.
        reason: String,
    },
    /// No answer in time.
    #[error("{what} timed out after {after:?}")]
    Timeout {
        /// What was waited for.
        what: &'static str,
        /// How long we waited.
        after: Duration,
    },
}

/// The `event` of an announce.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A regular re-announce.
    None,
    /// First announce of a session.
    Started,
    /// The download just finished (sent once, never when starting complete).
    Completed,
    /// We are leaving the swarm.
    Stopped,
}

impl Event {
    /// HTTP `event=` value; `None` is omitted from the query.
    fn http_name(self) -> Option<&'static str> {
        match self {
            Event::None => None,
            Event::Started => Some("started"),
            Event::Completed => Some("completed"),
            Event::Stopped => Some("stopped"),
        }
    }

    /// BEP 15 event code (note: not in declaration order).
    fn udp_code(self) -> u32 {
        match self {
            Event::None => 0,
            Event::Completed => 1,
            Event::Started => 2,
            Event::Stopped => 3,
        }
    }
}

/// Everything one announce says about us, independent of transport.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AnnounceRequest {
    /// Torrent being announced.
    pub info_hash: InfoHash,
    /// Our peer id.
    pub peer_id: PeerId,
    /// Our TCP listen port.
    pub port: u16,
    /// Bytes uploaded this session.
    pub uploaded: u64,
    /// Bytes downloaded this session.
    pub downloaded: u64,
    /// Bytes still missing.
    pub left: u64,
    /// Announce event.
    pub event: Event,
    /// How many peers we want; `None` lets the tracker choose.
    pub numwant: Option<u32>,
    /// Random per-session key so a tracker can recognise us across IP changes.
    pub key: u32,
    /// The `tracker id` a previous response gave us, echoed back.
    pub tracker_id: Option<String>,
    /// Our other addresses (BEP 7 `ipv6=` / `ipv4=`), so a tracker reached
    /// over one family can hand out our address in the other.
    pub also_at: Vec<IpAddr>,
}

/// A successful announce, transport-independent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct AnnounceResponse {
    /// How long to wait before the next regular announce.
    pub interval: Option<Duration>,
    /// Announcing sooner than this is refused by the tracker.
    pub min_interval: Option<Duration>,
    /// Opaque id to echo in later announces.
    pub tracker_id: Option<String>,
    /// Seeders.
    pub complete: Option<u32>,
    /// Leechers.
    pub incomplete: Option<u32>,
    /// Peer addresses, IPv4 and IPv6 mixed, at most [`MAX_PEERS`].
    pub peers: Vec<SocketAddr>,
    /// Peer entries left unread because the response had more than
    /// [`MAX_PEERS`].
    pub peers_dropped: usize,
    /// A non-fatal `warning message`.
    pub warning: Option<String>,
}

// ---------------------------------------------------------------------------
// HTTP
// ---------------------------------------------------------------------------

/// Appends `bytes` percent-encoded, leaving only RFC 3986 unreserved
/// characters literal. Info-hashes are binary, so this is byte by byte, never
/// via UTF-8. Web seed URLs use it too.
pub(crate) fn percent_encode_into(out: &mut String, bytes: &[u8]) {
    const DIGITS: &[u8; 16] = b"0123456789ABCDEF";
    for &b in bytes {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(DIGITS[(b >> 4) as usize] as char);
            out.push(DIGITS[(b & 15) as usize] as char);
        }
    }
}

/// Builds the full announce URL. `base` is the tracker URL from the torrent;
/// if it already carries a query (private trackers put a passkey there) our
/// parameters are appended with `&`.
pub fn http_url(base: &str, req: &AnnounceRequest) -> String {
    let mut url = String::with_capacity(base.len() + 256);
    url.push_str(base);
    if !base.contains('?') {
        url.push('?');
    } else if !base.ends_with('?') && !base.ends_with('&') {
        url.push('&');
    }
    url.push_str("info_hash=");
    percent_encode_into(&mut url, &req.info_hash.0);
    url.push_str("&peer_id=");
    percent_encode_into(&mut url, &req.peer_id.0);
    url.push_str(&format!(
        "&port={}&uploaded={}&downloaded={}&left={}&compact=1&no_peer_id=1",
        req.port, req.uploaded, req.downloaded, req.left
    ));
    if let Some(name) = req.event.http_name() {
        url.push_str("&event=");
        url.push_str(name);
    }
    if let Some(n) = req.numwant {
        url.push_str(&format!("&numwant={n}"));
    }
    url.push_str(&format!("&key={:08x}", req.key));
    if let Some(id) = &req.tracker_id {
        url.push_str("&trackerid=");
        percent_encode_into(&mut url, id.as_bytes());
    }
    for ip in &req.also_at {
        let (key, text) = match ip {
            IpAddr::V4(v4) => ("ipv4", v4.to_string()),
            IpAddr::V6(v6) => ("ipv6", v6.to_string()),
        };
        url.push_str(&format!("&{key}="));
        percent_encode_into(&mut url, text.as_bytes());
    }
    url
}

fn dict_get<'v, 'a>(
    dict: &'v std::collections::HashMap<
        impl std::borrow::Borrow<[u8]> + std::hash::Hash + Eq,
        Value<'a>,
    >,
    key: &str,
) -> Option<&'v Value<'a>> {
    dict.get(key.as_bytes())
}

fn value_text(v: &Value<'_>) -> Option<String> {
    match v {
        Value::Bytes(b) => Some(String::from_utf8_lossy(b.0).into_owned()),
        _ => None,
    }
}

fn value_int(v: &Value<'_>) -> Option<i64> {
    match v {
        Value::Integer(i) => Some(*i),
        _ => None,
    }
}

/// Seconds from a tracker integer; negatives are ignored rather than trusted.
fn value_secs(v: &Value<'_>) -> Option<Duration> {
    value_int(v)
        .and_then(|i| u64::try_from(i).ok())
        .map(Duration::from_secs)
}

fn value_u32(v: &Value<'_>) -> Option<u32> {
    value_int(v).and_then(|i| u32::try_from(i).ok())
}

/// The top level of an HTTP announce body, borrowed from it. Fields are
/// loosely typed (a wrong type is ignored when read, not fatal) and keys we
/// do not know are skipped without being decoded. The peer lists are
/// [`RawPeers`], decoded lazily so a hostile list costs no allocation past
/// [`MAX_PEERS`] entries.
#[derive(Deserialize)]
#[serde(bound(deserialize = "'a: 'de, 'de: 'a"))]
struct RawResponse<'a> {
    #[serde(borrow, rename = "failure reason")]
    failure_reason: Option<Value<'a>>,
    #[serde(borrow)]
    interval: Option<Value<'a>>,
    #[serde(borrow, rename = "min interval")]
    min_interval: Option<Value<'a>>,
    #[serde(borrow, rename = "tracker id")]
    tracker_id: Option<Value<'a>>,
    #[serde(borrow)]
    complete: Option<Value<'a>>,
    #[serde(borrow)]
    incomplete: Option<Value<'a>>,
    #[serde(borrow, rename = "warning message")]
    warning: Option<Value<'a>>,
    #[serde(borrow)]
    peers: Option<RawPeers<'a>>,
    #[serde(borrow)]
    peers6: Option<RawPeers<'a>>,
}

/// A `peers` or `peers6` value as it comes.
enum RawPeers<'a> {
    /// BEP 23 / BEP 7 compact string, parsed later.
    Compact(&'a [u8]),
    /// Dictionary model: the first [`MAX_PEERS`] usable addresses, and how
    /// many list entries were skipped unread past that cap.
    Dicts {
        peers: Vec<SocketAddr>,
        dropped: usize,
    },
    /// Any other type: ignored.
    Other,
}

impl<'de: 'a, 'a> Deserialize<'de> for RawPeers<'a> {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<'a>(std::marker::PhantomData<&'a ()>);
        impl<'de: 'a, 'a> Visitor<'de> for V<'a> {
            type Value = RawPeers<'a>;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str("a peer list")
            }

            fn visit_borrowed_bytes<E: serde::de::Error>(
                self,
                v: &'de [u8],
            ) -> Result<Self::Value, E> {
                Ok(RawPeers::Compact(v))
            }

            fn visit_bytes<E: serde::de::Error>(self, _: &[u8]) -> Result<Self::Value, E> {
                Ok(RawPeers::Other)
            }

            fn visit_i64<E: serde::de::Error>(self, _: i64) -> Result<Self::Value, E> {
                Ok(RawPeers::Other)
            }

            fn visit_u64<E: serde::de::Error>(self, _: u64) -> Result<Self::Value, E> {
                Ok(RawPeers::Other)
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawPeers::Other)
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
                let mut peers = Vec::new();
                let mut dropped = 0usize;
                loop {
                    if peers.len() >= MAX_PEERS {
                        // Past the cap entries are skipped, never decoded.
                        if seq.next_element::<IgnoredAny>()?.is_none() {
                            break;
                        }
                        dropped += 1;
                        continue;
                    }
                    match seq.next_element::<Value<'de>>()? {
                        Some(item) => {
                            if let Some(a) = dict_peer(&item) {
                                peers.push(a);
                            }
                        }
                        None => break,
                    }
                }
                Ok(RawPeers::Dicts { peers, dropped })
            }
        }
        d.deserialize_any(V(std::marker::PhantomData))
    }
}

/// Parses an HTTP announce body (see the module doc for leniency rules).
pub fn parse_http_response(body: &[u8]) -> Result<AnnounceResponse, TrackerError> {
    // The pre-scan caps length, nesting and values before serde sees a
    // byte; past that, dictionary peer lists are read lazily (see RawPeers).
    let limits = Limits {
        max_len: super::http::MAX_BODY,
        max_items: MAX_RESPONSE_ITEMS,
    };
    if body.first() != Some(&b'd') {
        // Not a dictionary: say whether it is bencode at all.
        return match decode_prefix_limited::<IgnoredAny>(body, limits) {
            Ok(_) => Err(TrackerError::NotADict),
            Err(e) => Err(TrackerError::Bencode(e.0)),
        };
    }
    let (raw, used): (RawResponse<'_>, usize) =
        decode_prefix_limited(body, limits).map_err(|e| TrackerError::Bencode(e.0))?;
    let rest = &body[used..];
    if !rest.iter().all(|b| b.is_ascii_whitespace()) {
        return Err(TrackerError::Bencode(format!(
            "{} bytes after the end of the dictionary",
            rest.len()
        )));
    }
    if let Some(reason) = &raw.failure_reason {
        let text = value_text(reason).unwrap_or_else(|| "(failure reason not a string)".into());
        return Err(TrackerError::Failure(text));
    }
    let mut resp = AnnounceResponse {
        interval: raw.interval.as_ref().and_then(value_secs),
        min_interval: raw.min_interval.as_ref().and_then(value_secs),
        tracker_id: raw.tracker_id.as_ref().and_then(value_text),
        complete: raw.complete.as_ref().and_then(value_u32),
        incomplete: raw.incomplete.as_ref().and_then(value_u32),
        peers: Vec::new(),
        peers_dropped: 0,
        warning: raw.warning.as_ref().and_then(value_text),
    };
    match raw.peers {
        Some(RawPeers::Compact(b)) => {
            resp.peers_dropped += push_compact_v4(&mut resp.peers, b);
        }
        Some(RawPeers::Dicts { peers, dropped }) => {
            resp.peers = peers;
            resp.peers_dropped += dropped;
        }
        _ => {}
    }
    if let Some(RawPeers::Compact(b)) = raw.peers6 {
        resp.peers_dropped += push_compact_v6(&mut resp.peers, b);
    }
    Ok(resp)
}

/// BEP 23 compact IPv4 peers: 4 address bytes then a big-endian port.
/// Stops at [`MAX_PEERS`] in `out`; returns how many entries it left.
fn push_compact_v4(out: &mut Vec<SocketAddr>, bytes: &[u8]) -> usize {
    for (i, c) in bytes.chunks_exact(6).enumerate() {
        if out.len() >= MAX_PEERS {
            return bytes.len() / 6 - i;
        }
        let ip = Ipv4Addr::new(c[0], c[1], c[2], c[3]);
        let port = u16::from_be_bytes([c[4], c[5]]);
        if port != 0 {
            out.push(SocketAddr::V4(SocketAddrV4::new(ip, port)));
        }
    }
    0
}

/// BEP 7 compact IPv6 peers: 16 address bytes then a big-endian port.
/// Stops at [`MAX_PEERS`] in `out`; returns how many entries it left.
fn push_compact_v6(out: &mut Vec<SocketAddr>, bytes: &[u8]) -> usize {
    for (i, c) in bytes.chunks_exact(18).enumerate() {
        if out.len() >= MAX_PEERS {
            return bytes.len() / 18 - i;
        }
        let mut a = [0u8; 16];
        a.copy_from_slice(&c[..16]);
        let port = u16::from_be_bytes([c[16], c[17]]);
        if port != 0 {
            out.push(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(a),
                port,
                0,
                0,
            )));
        }
    }
    0
}

/// One entry of the original dictionary model, `{ip, port, peer id}`.
/// Entries that are not dicts, lack fields, carry hostnames or bad ports
/// give `None`.
fn dict_peer(item: &Value<'_>) -> Option<SocketAddr> {
    let Value::Dict(d) = item else { return None };
    let ip = dict_get(d, "ip")
        .and_then(value_text)
        .and_then(|s| s.trim().parse::<IpAddr>().ok())?;
    let port = dict_get(d, "port")
        .and_then(value_int)
        .and_then(|p| u16::try_from(p).ok())
        .filter(|p| *p != 0)?;
    Some(SocketAddr::new(ip, port))
}

// ---------------------------------------------------------------------------
// UDP (BEP 15)
// ---------------------------------------------------------------------------

/// Magic constant that opens every connect request.
pub const UDP_PROTOCOL_ID: u64 = 0x0417_2710_1980;
/// Action codes.
const ACTION_CONNECT: u32 = 0;
const ACTION_ANNOUNCE: u32 = 1;
const ACTION_ERROR: u32 = 3;

/// How long a connection id may be reused (BEP 15: one minute).
pub const UDP_CONNECTION_TTL: Duration = Duration::from_secs(60);

/// Largest UDP response we read: the 20-byte header plus [`MAX_PEERS`]
/// compact entries would exceed any datagram, so a full 64 KiB buffer suffices.
pub const UDP_MAX_DATAGRAM: usize = 65_536;

/// The 16-byte connect request.
pub fn udp_connect_request(transaction_id: u32) -> [u8; 16] {
    let mut b = [0u8; 16];
    b[0..8].copy_from_slice(&UDP_PROTOCOL_ID.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_CONNECT.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b
}

/// BEP 41 option type carrying the tracker URL's path and query.
const OPTION_URL_DATA: u8 = 2;
/// Path and query bytes sent at most (private trackers put a passkey there;
/// anything longer is not a tracker path).
pub const MAX_URL_DATA: usize = 1024;

/// The announce request: the 98 bytes of BEP 15, then (BEP 41) the tracker
/// URL's path and query as URLData options of up to 255 bytes each, so a
/// tracker that serves several paths on one port (passkeys) knows which.
/// IP is always 0 (the tracker uses the source address); numwant `None`
/// becomes -1 ("tracker's default").
pub fn udp_announce_request(
    connection_id: u64,
    transaction_id: u32,
    req: &AnnounceRequest,
    url_data: &[u8],
) -> Vec<u8> {
    let url_data = &url_data[..url_data.len().min(MAX_URL_DATA)];
    let mut b = vec![0u8; 98];
    b[0..8].copy_from_slice(&connection_id.to_be_bytes());
    b[8..12].copy_from_slice(&ACTION_ANNOUNCE.to_be_bytes());
    b[12..16].copy_from_slice(&transaction_id.to_be_bytes());
    b[16..36].copy_from_slice(&req.info_hash.0);
    b[36..56].copy_from_slice(&req.peer_id.0);
    b[56..64].copy_from_slice(&req.downloaded.to_be_bytes());
    b[64..72].copy_from_slice(&req.left.to_be_bytes());
    b[72..80].copy_from_slice(&req.uploaded.to_be_bytes());
    b[80..84].copy_from_slice(&req.event.udp_code().to_be_bytes());
    // 84..88: IP address, 0 = use the packet's source.
    b[88..92].copy_from_slice(&req.key.to_be_bytes());
    let numwant: i32 = match req.numwant {
        Some(n) => i32::try_from(n).unwrap_or(i32::MAX),
        None => -1,
    };
    b[92..96].copy_from_slice(&numwant.to_be_bytes());
    b[96..98].copy_from_slice(&req.port.to_be_bytes());
    for chunk in url_data.chunks(255) {
        b.push(OPTION_URL_DATA);
        b.push(chunk.len() as u8);
        b.extend_from_slice(chunk);
    }
    b
}

/// The BEP 41 URLData of a `udp://host:port/path?query` URL: its path and
/// query, or nothing when the path is empty or `/`.
pub fn udp_url_data(url: &str) -> Vec<u8> {
    let rest = url.strip_prefix("udp://").unwrap_or(url);
    match rest.find('/') {
        Some(i) if &rest[i..] != "/" => rest.as_bytes()[i..].to_vec(),
        _ => Vec::new(),
    }
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether a datagram answers the request with `transaction_id`. The shell
/// uses this to ignore stray or late datagrams instead of failing on them.
pub fn udp_transaction_matches(buf: &[u8], transaction_id: u32) -> bool {
    buf.len() >= 8 && be_u32(buf, 4) == transaction_id
}

/// Shared header check: length, transaction id, error packets, action.
pub(super) fn udp_header(
    buf: &[u8],
    transaction_id: u32,
    expected: u32,
    min_len: usize,
    what: &'static str,
) -> Result<(), TrackerError> {
    if buf.len() < 8 {
        return Err(TrackerError::UdpShort {
            what,
            len: buf.len(),
        });
    }
    let got_tid = be_u32(buf, 4);
    if got_tid != transaction_id {
        return Err(TrackerError::TransactionMismatch {
            expected: transaction_id,
            got: got_tid,
        });
    }
    let action = be_u32(buf, 0);
    if action == ACTION_ERROR {
        return Err(TrackerError::Failure(
            String::from_utf8_lossy(&buf[8..])
                .trim_end_matches('\0')
                .to_string(),
        ));
    }
    if action != expected {
        return Err(TrackerError::UdpAction {
            expected,
            got: action,
        });
    }
    if buf.len() < min_len {
        return Err(TrackerError::UdpShort {
            what,
            len: buf.len(),
        });
    }
    Ok(())
}

/// Parses a connect response into the connection id.
pub fn parse_udp_connect(buf: &[u8], transaction_id: u32) -> Result<u64, TrackerError> {
    udp_header(buf, transaction_id, ACTION_CONNECT, 16, "connect")?;
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[8..16]);
    Ok(u64::from_be_bytes(id))
}

/// Parses an announce response. BEP 15 peers are IPv4 only; a partial entry
/// at the end is dropped like in the HTTP compact form.
pub fn parse_udp_announce(
    buf: &[u8],
    transaction_id: u32,
) -> Result<AnnounceResponse, TrackerError> {
    udp_header(buf, transaction_id, ACTION_ANNOUNCE, 20, "announce")?;
    let mut resp = AnnounceResponse {
        interval: Some(Duration::from_secs(u64::from(be_u32(buf, 8)))),
        incomplete: Some(be_u32(buf, 12)),
        complete: Some(be_u32(buf, 16)),
        ..AnnounceResponse::default()
    };
    resp.peers_dropped = push_compact_v4(&mut resp.peers, &buf[20..]);
    Ok(resp)
}

/// BEP 15 retransmit timeout for attempt `n`: 15 * 2^n seconds, n capped at 8.
/// The client decides how many attempts to make; waiting the full schedule
/// (over an hour) for one dead tracker would be pointless.
pub fn udp_timeout(attempt: u32) -> Duration {
    Duration::from_secs(15u64 << attempt.min(8))
}

/// A connection id and when we got it; BEP 15 lets us reuse it for a minute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct UdpConnection {
    /// Id from the connect response.
    pub id: u64,
    /// When the connect response arrived.
    pub obtained: Instant,
}

impl UdpConnection {
    /// Whether the id may still be used at `now`.
    pub fn is_valid(&self, now: Instant) -> bool {
        now.saturating_duration_since(self.obtained) < UDP_CONNECTION_TTL
    }
}

// ---------------------------------------------------------------------------
// Scheduling
// ---------------------------------------------------------------------------

/// Used when the tracker gives no interval.
pub const DEFAULT_INTERVAL: Duration = Duration::from_secs(30 * 60);
/// Re-announce bounds: below 15 s is abuse (ours or the tracker's), above an
/// hour we would lose the swarm's freshness.
pub const MIN_REANNOUNCE: Duration = Duration::from_secs(15);
/// See [`MIN_REANNOUNCE`].
pub const MAX_REANNOUNCE: Duration = Duration::from_secs(60 * 60);

/// When to announce again after a success: the tracker's interval (or 30 min),
/// never below its `min interval`, clamped to [15 s, 1 h].
pub fn reannounce_after(resp: &AnnounceResponse) -> Duration {
    let base = resp.interval.unwrap_or(DEFAULT_INTERVAL);
    let base = match resp.min_interval {
        Some(min) => base.max(min),
        None => base,
    };
    base.clamp(MIN_REANNOUNCE, MAX_REANNOUNCE)
}

/// Retry delay after `failures` consecutive errors: 5 s doubling to 5 min.
pub fn retry_after(failures: u32) -> Duration {
    let secs = 5u64.saturating_mul(1u64 << failures.min(10));
    Duration::from_secs(secs.min(300))
}

#[cfg(test)]
mod tests;
