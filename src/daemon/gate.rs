//! Who may call the RPC: the rules every request passes before its body
//! is read. Pure (headers in, verdict out), so each rule is unit-tested.
//!
//! In Transmission's order: the Host header (421 for a name that is not
//! ours: DNS rebinding), basic auth when `--rpc-auth` is set (401 with
//! `WWW-Authenticate: Basic`, as clients send credentials only after
//! one), then the `X-Transmission-Session-Id` handshake (409 carrying the
//! id, which the client echoes from then on: a cross-site form cannot
//! read it). The body limit is checked here from `Content-Length` and
//! again while the body is read.

use base64::Engine;
use std::net::IpAddr;

/// The session-id header.
pub const SESSION_HEADER: &str = "X-Transmission-Session-Id";
/// Largest request body.
pub const MAX_BODY: u64 = 10 * 1024 * 1024;

/// A refusal: status, extra headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reject {
    /// HTTP status.
    pub status: u16,
    /// Headers to add.
    pub headers: Vec<(&'static str, String)>,
    /// A short explanation.
    pub body: String,
}

/// The rules, set once at start.
#[derive(Debug, Clone)]
pub struct Gate {
    /// The id clients must echo.
    pub session_id: String,
    /// `Basic …` value that passes, when auth is on.
    auth: Option<String>,
    /// The IP the RPC is bound to (a Host naming it passes).
    bound: IpAddr,
}

impl Gate {
    /// Rules for an RPC bound to `bound`, with `user:pass` when given.
    pub fn new(bound: IpAddr, auth: Option<&str>) -> Gate {
        let id: [u8; 24] = rand::random();
        Gate {
            session_id: base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(id),
            auth: auth.map(|a| {
                format!(
                    "Basic {}",
                    base64::engine::general_purpose::STANDARD.encode(a)
                )
            }),
            bound,
        }
    }

    /// Checks a request's headers (`get` looks one up, case-insensitive).
    pub fn check<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Result<(), Reject> {
        self.check_page(&get)?;
        if get(SESSION_HEADER) != Some(self.session_id.as_str()) {
            return Err(Reject {
                status: 409,
                headers: vec![(SESSION_HEADER, self.session_id.clone())],
                body: format!("Conflict: send the {SESSION_HEADER} header given here"),
            });
        }
        if let Some(len) = get("content-length")
            && len.trim().parse::<u64>().map_or(true, |n| n > MAX_BODY)
        {
            return Err(too_large());
        }
        Ok(())
    }

    /// The rules for the web page: the Host check and auth (the page gets
    /// the session id from its first call, as any client does).
    pub fn check_page<'a>(&self, get: impl Fn(&str) -> Option<&'a str>) -> Result<(), Reject> {
        if let Some(host) = get("host")
            && !self.host_ok(host)
        {
            return Err(Reject {
                status: 421,
                headers: Vec::new(),
                body: "Misdirected Request: unknown Host header (DNS rebinding?)".into(),
            });
        }
        if let Some(want) = &self.auth {
            let ok = get("authorization").is_some_and(|got| constant_time_eq(got.trim(), want));
            if !ok {
                return Err(Reject {
                    status: 401,
                    headers: vec![("WWW-Authenticate", "Basic realm=\"btc\"".into())],
                    body: "Unauthorized".into(),
                });
            }
        }
        Ok(())
    }

    /// A Host header that names us: `localhost`, an IP literal (with or
    /// without a port), or the bound address.
    fn host_ok(&self, host: &str) -> bool {
        let host = host.trim();
        // [v6]:port, [v6], v4:port, v4, name:port, name.
        let name = if let Some(rest) = host.strip_prefix('[') {
            match rest.split_once(']') {
                Some((ip, _)) => ip,
                None => return false,
            }
        } else {
            host.rsplit_once(':').map_or(host, |(h, _)| h)
        };
        name.eq_ignore_ascii_case("localhost")
            || name.parse::<IpAddr>().is_ok()
            || name == self.bound.to_string()
    }
}

/// The 413 for a body over [`MAX_BODY`].
pub fn too_large() -> Reject {
    Reject {
        status: 413,
        headers: Vec::new(),
        body: format!("Payload Too Large: at most {MAX_BODY} bytes"),
    }
}

/// Compares without an early exit (the time taken does not tell how much
/// of a guessed password was right).
fn constant_time_eq(a: &str, b: &str) -> bool {
    a.len() == b.len()
        && a.bytes()
            .zip(b.bytes())
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn headers(pairs: &[(&str, &str)]) -> HashMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_ascii_lowercase(), v.to_string()))
            .collect()
    }

    fn check(g: &Gate, h: &HashMap<String, String>) -> Result<(), Reject> {
        g.check(|k| h.get(&k.to_ascii_lowercase()).map(String::as_str))
    }

    #[test]
    fn the_first_request_gets_409_with_the_id_then_passes_with_it() {
        let g = Gate::new("127.0.0.1".parse().unwrap(), None);
        let r = check(&g, &headers(&[("Host", "127.0.0.1:9091")])).unwrap_err();
        assert_eq!(r.status, 409);
        let (name, id) = &r.headers[0];
        assert_eq!(*name, SESSION_HEADER);
        assert_eq!(id, &g.session_id);
        assert!(id.len() >= 32, "{id}");
        let ok = headers(&[("Host", "127.0.0.1:9091"), (SESSION_HEADER, id)]);
        assert_eq!(check(&g, &ok), Ok(()));
        let stale = headers(&[(SESSION_HEADER, "not-it")]);
        assert_eq!(check(&g, &stale).unwrap_err().status, 409);
        // Each daemon start has a fresh id.
        assert_ne!(
            Gate::new("127.0.0.1".parse().unwrap(), None).session_id,
            g.session_id
        );
    }

    #[test]
    fn auth_is_asked_with_www_authenticate_before_the_session_id() {
        let g = Gate::new("127.0.0.1".parse().unwrap(), Some("user:pass"));
        let r = check(&g, &headers(&[])).unwrap_err();
        assert_eq!(r.status, 401);
        assert_eq!(r.headers[0].0, "WWW-Authenticate");
        assert!(r.headers[0].1.starts_with("Basic"));
        // user:pass → dXNlcjpwYXNz
        let wrong = headers(&[("Authorization", "Basic dXNlcjpwYXN0")]);
        assert_eq!(check(&g, &wrong).unwrap_err().status, 401);
        let right = headers(&[("Authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(check(&g, &right).unwrap_err().status, 409);
        let all = headers(&[
            ("Authorization", "Basic dXNlcjpwYXNz"),
            (SESSION_HEADER, &g.session_id),
        ]);
        assert_eq!(check(&g, &all), Ok(()));
    }

    #[test]
    fn the_page_needs_the_host_and_auth_but_no_session_id() {
        let g = Gate::new("127.0.0.1".parse().unwrap(), Some("user:pass"));
        let page = |h: &HashMap<String, String>| {
            g.check_page(|k| h.get(&k.to_ascii_lowercase()).map(String::as_str))
        };
        assert_eq!(page(&headers(&[])).unwrap_err().status, 401);
        let authed = headers(&[("Authorization", "Basic dXNlcjpwYXNz")]);
        assert_eq!(page(&authed), Ok(()));
        let evil = headers(&[
            ("Authorization", "Basic dXNlcjpwYXNz"),
            ("Host", "evil.example"),
        ]);
        assert_eq!(page(&evil).unwrap_err().status, 421);
    }

    #[test]
    fn a_foreign_host_name_gets_421_before_anything_else() {
        let g = Gate::new("192.168.1.5".parse().unwrap(), Some("u:p"));
        let id = g.session_id.clone();
        for bad in [
            "evil.example",
            "evil.example:9091",
            "[::1",
            "localhost.evil.com",
        ] {
            let r = check(&g, &headers(&[("Host", bad), (SESSION_HEADER, &id)])).unwrap_err();
            assert_eq!(r.status, 421, "{bad}");
        }
        for good in [
            "localhost",
            "LOCALHOST:9091",
            "127.0.0.1",
            "192.168.1.5:9091",
            "[::1]:9091",
            "10.0.0.1",
        ] {
            let r = check(&g, &headers(&[("Host", good), (SESSION_HEADER, &id)])).unwrap_err();
            assert_eq!(r.status, 401, "{good}");
        }
    }

    #[test]
    fn an_oversized_or_unreadable_content_length_gets_413() {
        let g = Gate::new("127.0.0.1".parse().unwrap(), None);
        let id = g.session_id.clone();
        let big = (MAX_BODY + 1).to_string();
        let r = check(
            &g,
            &headers(&[(SESSION_HEADER, &id), ("Content-Length", &big)]),
        );
        assert_eq!(r.unwrap_err().status, 413);
        let r = check(
            &g,
            &headers(&[(SESSION_HEADER, &id), ("Content-Length", "x")]),
        );
        assert_eq!(r.unwrap_err().status, 413);
        let ok = MAX_BODY.to_string();
        let r = check(
            &g,
            &headers(&[(SESSION_HEADER, &id), ("Content-Length", &ok)]),
        );
        assert_eq!(r, Ok(()));
    }
}
