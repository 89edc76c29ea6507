//! `--proxy`: the pure half. The proxy URL, the SOCKS5 client handshake
//! (RFC 1928, with RFC 1929 username/password), the SOCKS5 UDP datagram
//! header, and HTTP `CONNECT`, as byte encoders and incremental decoders
//! that never touch a socket; [`net`] moves the bytes.
//!
//! Every decoder takes the bytes read so far and answers `Ok(None)` when
//! it needs more, `Ok(Some((value, consumed)))` when a whole message is
//! there, and an error for anything a well-behaved proxy would not send.
//! Replies are bounded (a SOCKS5 reply is at most [`MAX_REPLY`] bytes, an
//! HTTP `CONNECT` answer at most [`MAX_HTTP_REPLY`]), so a hostile proxy
//! costs a few hundred bytes of memory, never a panic.

pub mod net;

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// The SOCKS protocol version byte.
pub const SOCKS5: u8 = 5;
/// RFC 1929's sub-negotiation version byte.
const USERPASS_VERSION: u8 = 1;
/// Method: no authentication.
const METHOD_NONE: u8 = 0x00;
/// Method: username/password (RFC 1929).
const METHOD_USERPASS: u8 = 0x02;
/// Method reply: none of ours is acceptable.
const METHOD_REFUSED: u8 = 0xff;
const ATYP_V4: u8 = 1;
const ATYP_DOMAIN: u8 = 3;
const ATYP_V6: u8 = 4;
/// The longest SOCKS5 reply: 4 header bytes, a 1-byte length, a 255-byte
/// domain and a port.
pub const MAX_REPLY: usize = 4 + 1 + 255 + 2;
/// The longest HTTP `CONNECT` answer (status line and headers) we read.
pub const MAX_HTTP_REPLY: usize = 8 * 1024;

/// Why the proxy could not be used.
#[derive(Debug, thiserror::Error)]
pub enum ProxyError {
    /// The `--proxy` URL cannot be used.
    #[error("invalid proxy URL: {0}")]
    BadUrl(String),
    /// A field too long for its one-byte length (RFC 1928/1929).
    #[error("{0} is longer than 255 bytes")]
    TooLong(&'static str),
    /// An empty host name or user name.
    #[error("empty {0}")]
    Empty(&'static str),
    /// The reply's version byte is not the one we speak.
    #[error("not a SOCKS5 proxy (version byte {0})")]
    BadVersion(u8),
    /// The proxy accepts none of the methods we offered.
    #[error("the proxy accepts none of our authentication methods")]
    NoAcceptableMethod,
    /// The proxy wants a username and password and `--proxy` has none.
    #[error("the proxy wants a username and password")]
    AuthRequired,
    /// The proxy chose a method we did not offer.
    #[error("the proxy chose method {0:#04x}, which we did not offer")]
    UnknownMethod(u8),
    /// RFC 1929: the username/password was refused.
    #[error("username/password refused (status {0})")]
    AuthFailed(u8),
    /// An address type that is not IPv4, domain or IPv6.
    #[error("bad address type {0}")]
    BadAddressType(u8),
    /// A reserved or fragment field that must be 0 is not.
    #[error("malformed reply: {0}")]
    Malformed(&'static str),
    /// The proxy answered with a failure code.
    #[error("the proxy refused: {0}")]
    Refused(ReplyCode),
    /// The HTTP proxy answered `CONNECT` with something other than 2xx.
    #[error("the HTTP proxy refused CONNECT: {0}")]
    HttpRefused(String),
    /// A reply longer than any valid one.
    #[error("reply longer than {0} bytes")]
    Oversized(usize),
    /// The proxy closed the connection mid-reply.
    #[error("the proxy closed the connection")]
    Closed,
    /// A step took too long.
    #[error("timed out {0}")]
    Timeout(&'static str),
    /// This proxy cannot relay UDP.
    #[error("the proxy cannot relay UDP: {0}")]
    NoUdp(String),
    /// A socket error.
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl ProxyError {
    /// Whether the proxy itself failed (down, not a proxy, credentials
    /// refused), rather than the target it was asked to reach.
    pub fn is_the_proxys(&self) -> bool {
        match self {
            ProxyError::Refused(_) | ProxyError::Timeout(_) => false,
            ProxyError::HttpRefused(status) => status.contains(" 407"),
            _ => true,
        }
    }
}

/// A SOCKS5 reply code other than success (RFC 1928 section 6).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReplyCode(pub u8);

impl fmt::Display for ReplyCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let what = match self.0 {
            1 => "general SOCKS server failure",
            2 => "connection not allowed by ruleset",
            3 => "network unreachable",
            4 => "host unreachable",
            5 => "connection refused",
            6 => "TTL expired",
            7 => "command not supported",
            8 => "address type not supported",
            _ => return write!(f, "unknown reply code {}", self.0),
        };
        write!(f, "{what} (code {})", self.0)
    }
}

/// Which protocol the proxy speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ProxyKind {
    /// `socks5://`: SOCKS5. Host names still go to the proxy as SOCKS5
    /// domain addresses (btc never resolves a name itself under `--proxy`).
    Socks5,
    /// `socks5h://`: SOCKS5, names resolved by the proxy.
    Socks5h,
    /// `http://`: HTTP `CONNECT` tunnels, TCP only.
    Http,
}

impl ProxyKind {
    fn scheme(self) -> &'static str {
        match self {
            ProxyKind::Socks5 => "socks5",
            ProxyKind::Socks5h => "socks5h",
            ProxyKind::Http => "http",
        }
    }

    /// Whether the proxy speaks SOCKS5 (and so may relay UDP).
    pub fn is_socks(self) -> bool {
        self != ProxyKind::Http
    }
}

/// A username and password for the proxy. `Debug` does not show them.
#[derive(Clone, PartialEq, Eq)]
pub struct Credentials {
    /// Username.
    pub user: String,
    /// Password.
    pub pass: String,
}

impl fmt::Debug for Credentials {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credentials(<redacted>)")
    }
}

/// Where a connection or datagram should go: an IP address, or a name the
/// proxy resolves.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetAddr {
    /// An IP address and port.
    Ip(SocketAddr),
    /// A host name (at most 255 bytes) and port.
    Domain(String, u16),
}

impl TargetAddr {
    /// `host` as an IP when it is one (brackets allowed), else a name.
    pub fn from_host(host: &str, port: u16) -> TargetAddr {
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        match bare.parse::<IpAddr>() {
            Ok(ip) => TargetAddr::Ip(SocketAddr::new(ip, port)),
            Err(_) => TargetAddr::Domain(bare.to_string(), port),
        }
    }

    /// The port.
    pub fn port(&self) -> u16 {
        match self {
            TargetAddr::Ip(a) => a.port(),
            TargetAddr::Domain(_, p) => *p,
        }
    }
}

impl fmt::Display for TargetAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetAddr::Ip(a) => write!(f, "{a}"),
            TargetAddr::Domain(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// A parsed `--proxy` URL. `Display` and `Debug` never show the
/// credentials.
#[derive(Clone, PartialEq, Eq)]
pub struct ProxyUrl {
    /// The protocol.
    pub kind: ProxyKind,
    /// The proxy's host: an IP or a name (resolved once, at start).
    pub host: String,
    /// The proxy's port.
    pub port: u16,
    /// `user:pass@`, percent-decoded.
    pub auth: Option<Credentials>,
}

impl fmt::Display for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let auth = if self.auth.is_some() { "***@" } else { "" };
        let host = if self.host.contains(':') {
            format!("[{}]", self.host)
        } else {
            self.host.clone()
        };
        write!(f, "{}://{auth}{host}:{}", self.kind.scheme(), self.port)
    }
}

impl fmt::Debug for ProxyUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ProxyUrl({self})")
    }
}

impl std::str::FromStr for ProxyUrl {
    type Err = ProxyError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_proxy_url(s)
    }
}

/// Parses `socks5://[user:pass@]host[:port]` (also `socks5h://` and
/// `http://`). The port defaults to 1080 for SOCKS5 and 80 for HTTP; user
/// and password are percent-decoded; a path, query or fragment is refused.
/// Errors never echo the password.
pub fn parse_proxy_url(s: &str) -> Result<ProxyUrl, ProxyError> {
    let bad = |why: &str| ProxyError::BadUrl(why.to_string());
    let (scheme, rest) = s
        .split_once("://")
        .ok_or_else(|| bad("expected socks5://, socks5h:// or http://HOST:PORT"))?;
    let kind = match scheme.to_ascii_lowercase().as_str() {
        "socks5" => ProxyKind::Socks5,
        "socks5h" => ProxyKind::Socks5h,
        "http" => ProxyKind::Http,
        "https" => return Err(bad("https:// proxies are not supported (use http://)")),
        "socks4" | "socks4a" => return Err(bad("SOCKS4 is not supported (use socks5://)")),
        _ => return Err(bad("the scheme must be socks5://, socks5h:// or http://")),
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    if rest.contains(['/', '?', '#']) {
        return Err(bad("no path, query or fragment allowed"));
    }
    let (auth, hostport) = match rest.rsplit_once('@') {
        Some((a, h)) => (Some(a), h),
        None => (None, rest),
    };
    let auth = match auth {
        None => None,
        Some(a) => {
            let (u, p) = a.split_once(':').unwrap_or((a, ""));
            let user = percent_decode(u).ok_or_else(|| bad("bad %-escape in the user name"))?;
            let pass = percent_decode(p).ok_or_else(|| bad("bad %-escape in the password"))?;
            if user.is_empty() {
                return Err(bad("empty user name"));
            }
            if user.len() > 255 || pass.len() > 255 {
                return Err(bad("user name or password longer than 255 bytes"));
            }
            Some(Credentials { user, pass })
        }
    };
    let (host, port) = if let Some(v6) = hostport.strip_prefix('[') {
        let (h, after) = v6
            .split_once(']')
            .ok_or_else(|| bad("unclosed [ in the host"))?;
        h.parse::<Ipv6Addr>()
            .map_err(|_| bad("not an IPv6 address in [ ]"))?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':').ok_or_else(|| bad("junk after ]"))?),
        };
        (h.to_string(), port)
    } else {
        let (h, p) = match hostport.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (hostport, None),
        };
        if h.contains(':') {
            return Err(bad("an IPv6 address goes in [ ]"));
        }
        (h.to_string(), p)
    };
    if host.is_empty() {
        return Err(bad("no host"));
    }
    if host.len() > 253
        || !host
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-.:_".contains(&b))
    {
        return Err(bad("bad host name"));
    }
    let port = match port {
        None => match kind {
            ProxyKind::Http => 80,
            _ => 1080,
        },
        Some(p) => match p.parse::<u16>() {
            Ok(n) if n != 0 => n,
            _ => return Err(bad("the port must be 1-65535")),
        },
    };
    Ok(ProxyUrl {
        kind,
        host: host.to_ascii_lowercase(),
        port,
        auth,
    })
}

/// `%XX` decoding; `None` on a broken escape or invalid UTF-8.
fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = s.get(i + 1..i + 3)?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// `%XX`-encodes everything but unreserved characters (for the URL given
/// to the HTTP client).
pub fn percent_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The SOCKS5 methods we offer (RFC 1928 section 3): no authentication,
/// and username/password when we have credentials.
pub fn greeting(with_auth: bool) -> Vec<u8> {
    if with_auth {
        vec![SOCKS5, 2, METHOD_NONE, METHOD_USERPASS]
    } else {
        vec![SOCKS5, 1, METHOD_NONE]
    }
}

/// The method the proxy chose.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Method {
    /// Go straight to the request.
    NoAuth,
    /// Send the username and password first ([`auth_request`]).
    UserPass,
}

/// Decodes the method choice (2 bytes). `with_auth`: whether we offered
/// username/password.
pub fn parse_method_choice(
    buf: &[u8],
    with_auth: bool,
) -> Result<Option<(Method, usize)>, ProxyError> {
    if let Some(&v) = buf.first()
        && v != SOCKS5
    {
        return Err(ProxyError::BadVersion(v));
    }
    let Some(&m) = buf.get(1) else {
        return Ok(None);
    };
    let method = match m {
        METHOD_NONE => Method::NoAuth,
        METHOD_USERPASS if with_auth => Method::UserPass,
        METHOD_USERPASS => return Err(ProxyError::AuthRequired),
        METHOD_REFUSED if !with_auth => return Err(ProxyError::AuthRequired),
        METHOD_REFUSED => return Err(ProxyError::NoAcceptableMethod),
        other => return Err(ProxyError::UnknownMethod(other)),
    };
    Ok(Some((method, 2)))
}

/// RFC 1929's username/password request.
pub fn auth_request(c: &Credentials) -> Result<Vec<u8>, ProxyError> {
    if c.user.is_empty() {
        return Err(ProxyError::Empty("user name"));
    }
    let (u, p) = (c.user.as_bytes(), c.pass.as_bytes());
    let ul = u8::try_from(u.len()).map_err(|_| ProxyError::TooLong("the user name"))?;
    let pl = u8::try_from(p.len()).map_err(|_| ProxyError::TooLong("the password"))?;
    let mut out = Vec::with_capacity(3 + u.len() + p.len());
    out.extend_from_slice(&[USERPASS_VERSION, ul]);
    out.extend_from_slice(u);
    out.push(pl);
    out.extend_from_slice(p);
    Ok(out)
}

/// Decodes RFC 1929's 2-byte answer: status 0 is success.
pub fn parse_auth_reply(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    if let Some(&v) = buf.first()
        && v != USERPASS_VERSION
    {
        return Err(ProxyError::BadVersion(v));
    }
    match buf.get(1) {
        None => Ok(None),
        Some(0) => Ok(Some(2)),
        Some(&s) => Err(ProxyError::AuthFailed(s)),
    }
}

/// A SOCKS5 request command.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Open a TCP connection.
    Connect = 1,
    /// Open a UDP relay.
    UdpAssociate = 3,
}

fn put_addr(out: &mut Vec<u8>, target: &TargetAddr) -> Result<(), ProxyError> {
    match target {
        TargetAddr::Ip(SocketAddr::V4(a)) => {
            out.push(ATYP_V4);
            out.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Ip(SocketAddr::V6(a)) => {
            out.push(ATYP_V6);
            out.extend_from_slice(&a.ip().octets());
        }
        TargetAddr::Domain(h, _) => {
            if h.is_empty() {
                return Err(ProxyError::Empty("host name"));
            }
            let n = u8::try_from(h.len()).map_err(|_| ProxyError::TooLong("the host name"))?;
            out.push(ATYP_DOMAIN);
            out.push(n);
            out.extend_from_slice(h.as_bytes());
        }
    }
    out.extend_from_slice(&target.port().to_be_bytes());
    Ok(())
}

/// Decodes ATYP + address + port at the start of `buf`: `Ok(None)` when
/// more bytes are needed, else the address and the bytes it took.
fn get_addr(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, ProxyError> {
    let Some(&atyp) = buf.first() else {
        return Ok(None);
    };
    let (len, start) = match atyp {
        ATYP_V4 => (4, 1),
        ATYP_V6 => (16, 1),
        ATYP_DOMAIN => match buf.get(1) {
            None => return Ok(None),
            Some(0) => return Err(ProxyError::Malformed("empty domain")),
            Some(&n) => (usize::from(n), 2),
        },
        other => return Err(ProxyError::BadAddressType(other)),
    };
    let end = start + len + 2;
    if buf.len() < end {
        return Ok(None);
    }
    let a = &buf[start..start + len];
    let port = u16::from_be_bytes([buf[end - 2], buf[end - 1]]);
    let addr = match atyp {
        ATYP_V4 => {
            let o: [u8; 4] = a.try_into().expect("4 bytes");
            TargetAddr::Ip(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(o)), port))
        }
        ATYP_V6 => {
            let o: [u8; 16] = a.try_into().expect("16 bytes");
            TargetAddr::Ip(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(o)), port))
        }
        _ => TargetAddr::Domain(
            std::str::from_utf8(a)
                .map_err(|_| ProxyError::Malformed("domain is not UTF-8"))?
                .to_string(),
            port,
        ),
    };
    Ok(Some((addr, end)))
}

/// A SOCKS5 request (RFC 1928 section 4).
pub fn request(cmd: Command, target: &TargetAddr) -> Result<Vec<u8>, ProxyError> {
    let mut out = vec![SOCKS5, cmd as u8, 0];
    put_addr(&mut out, target)?;
    Ok(out)
}

/// Decodes a SOCKS5 reply (RFC 1928 section 6): on success the bound
/// address (for `UDP ASSOCIATE`, where to send datagrams); any other reply
/// code is [`ProxyError::Refused`].
pub fn parse_reply(buf: &[u8]) -> Result<Option<(TargetAddr, usize)>, ProxyError> {
    if let Some(&v) = buf.first()
        && v != SOCKS5
    {
        return Err(ProxyError::BadVersion(v));
    }
    if let Some(&rep) = buf.get(1)
        && rep != 0
    {
        return Err(ProxyError::Refused(ReplyCode(rep)));
    }
    if buf.len() < 4 {
        return Ok(None);
    }
    if buf[2] != 0 {
        return Err(ProxyError::Malformed("reserved byte is not 0"));
    }
    Ok(get_addr(&buf[3..])?.map(|(a, n)| (a, 3 + n)))
}

/// Wraps a datagram for the SOCKS5 UDP relay (RFC 1928 section 7).
pub fn wrap_udp(target: &TargetAddr, payload: &[u8]) -> Result<Vec<u8>, ProxyError> {
    let mut out = Vec::with_capacity(payload.len() + 262);
    out.extend_from_slice(&[0, 0, 0]);
    put_addr(&mut out, target)?;
    out.extend_from_slice(payload);
    Ok(out)
}

/// Unwraps a datagram from the SOCKS5 UDP relay: who sent it, and its
/// payload. Fragments (FRAG != 0) are refused, as RFC 1928 allows.
pub fn unwrap_udp(buf: &[u8]) -> Result<(TargetAddr, &[u8]), ProxyError> {
    if buf.len() < 4 {
        return Err(ProxyError::Malformed("short UDP header"));
    }
    if buf[0] != 0 || buf[1] != 0 {
        return Err(ProxyError::Malformed("reserved UDP header bytes are not 0"));
    }
    if buf[2] != 0 {
        return Err(ProxyError::Malformed("fragmented datagram"));
    }
    match get_addr(&buf[3..])? {
        Some((a, n)) => Ok((a, &buf[3 + n..])),
        None => Err(ProxyError::Malformed("short UDP header")),
    }
}

/// An HTTP `CONNECT` request for `target`, with Basic proxy authorization
/// when there are credentials.
pub fn http_connect_request(target: &TargetAddr, auth: Option<&Credentials>) -> Vec<u8> {
    let authority = match target {
        TargetAddr::Ip(SocketAddr::V6(a)) => format!("[{}]:{}", a.ip(), a.port()),
        other => other.to_string(),
    };
    let mut s = format!("CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n");
    if let Some(c) = auth {
        let token = base64(format!("{}:{}", c.user, c.pass).as_bytes());
        s.push_str(&format!("Proxy-Authorization: Basic {token}\r\n"));
    }
    s.push_str("\r\n");
    s.into_bytes()
}

/// Decodes the HTTP proxy's answer to `CONNECT`: `Ok(Some(n))` once the
/// header's blank line is in (a 2xx status), the bytes it took.
pub fn parse_http_connect_reply(buf: &[u8]) -> Result<Option<usize>, ProxyError> {
    let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        if buf.len() >= MAX_HTTP_REPLY {
            return Err(ProxyError::Oversized(MAX_HTTP_REPLY));
        }
        return Ok(None);
    };
    if end + 4 > MAX_HTTP_REPLY {
        return Err(ProxyError::Oversized(MAX_HTTP_REPLY));
    }
    let head = String::from_utf8_lossy(&buf[..end]);
    let status = head.lines().next().unwrap_or("");
    let mut parts = status.splitn(3, ' ');
    let version = parts.next().unwrap_or("");
    let code = parts.next().unwrap_or("");
    if !version.starts_with("HTTP/1.") {
        return Err(ProxyError::Malformed("not an HTTP/1.x answer"));
    }
    if code.len() == 3 && code.starts_with('2') && code.bytes().all(|b| b.is_ascii_digit()) {
        Ok(Some(end + 4))
    } else {
        let shown: String = status.chars().take(120).collect();
        Err(ProxyError::HttpRefused(shown))
    }
}

/// Standard base64 with padding (RFC 4648), for Basic authorization.
fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            chunk.get(1).copied().unwrap_or(0),
            chunk.get(2).copied().unwrap_or(0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

#[cfg(test)]
mod tests;
