//! The HTTP shell of the RPC (hyper, HTTP/1.1): `/transmission/rpc`
//! passes the `gate`, its body is read up to the limit, parsed by `rpc`
//! and carried out by `serve`. `/` is btc's own web page (`web.html`,
//! built into the binary: plain HTML and JavaScript calling the same RPC).
//! Everything else is 404.

use super::gate::{Gate, MAX_BODY, Reject, too_large};
use super::rpc;
use super::serve::Daemon;
use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// Connections served at once; more wait in the listen queue.
const MAX_CONNECTIONS: usize = 256;
/// A request's headers must arrive within this.
const HEADER_TIMEOUT: Duration = Duration::from_secs(10);
/// A whole request (body read and call carried out) within this.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(60);

/// Accepts RPC connections until `stop`.
pub async fn serve(
    listener: TcpListener,
    gate: Arc<Gate>,
    daemon: Arc<Daemon>,
    stop: CancellationToken,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_CONNECTIONS));
    let tasks = tokio_util::task::TaskTracker::new();
    loop {
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = stop.cancelled() => break,
        };
        let (stream, _) = tokio::select! {
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tracing::debug!("RPC accept: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = stop.cancelled() => break,
        };
        let (gate, daemon, stop) = (gate.clone(), daemon.clone(), stop.clone());
        tasks.spawn(async move {
            let _permit = permit;
            let service = hyper::service::service_fn(move |req| {
                let (gate, daemon) = (gate.clone(), daemon.clone());
                async move {
                    let r = tokio::time::timeout(REQUEST_TIMEOUT, handle(req, &gate, &daemon))
                        .await
                        .unwrap_or_else(|_| text(StatusCode::REQUEST_TIMEOUT, "Request Timeout"));
                    Ok::<_, std::convert::Infallible>(r)
                }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(hyper_util::rt::TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .serve_connection(hyper_util::rt::TokioIo::new(stream), service);
            tokio::pin!(conn);
            tokio::select! {
                r = conn.as_mut() => {
                    if let Err(e) = r {
                        tracing::debug!("RPC connection: {e}");
                    }
                }
                _ = stop.cancelled() => {}
            }
        });
    }
    tasks.close();
    let _ = tokio::time::timeout(Duration::from_secs(2), tasks.wait()).await;
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    r
}

fn rejected(r: Reject) -> Response<Full<Bytes>> {
    let mut resp = text(
        StatusCode::from_u16(r.status).unwrap_or(StatusCode::BAD_REQUEST),
        &r.body,
    );
    for (name, value) in r.headers {
        if let Ok(v) = hyper::header::HeaderValue::from_str(&value) {
            resp.headers_mut().insert(name, v);
        }
    }
    resp
}

/// The web page.
const PAGE: &str = include_str!("web.html");

fn page() -> Response<Full<Bytes>> {
    use hyper::header::{CACHE_CONTROL, CONTENT_TYPE, HeaderValue};
    let mut r = Response::new(Full::new(Bytes::from_static(PAGE.as_bytes())));
    let h = r.headers_mut();
    h.insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    h.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // Its own inline script and style only; never inside a frame.
    h.insert(
        "Content-Security-Policy",
        HeaderValue::from_static(
            "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; \
             connect-src 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert("X-Frame-Options", HeaderValue::from_static("DENY"));
    r
}

async fn handle(req: Request<Incoming>, gate: &Gate, daemon: &Daemon) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    if path == "/" || path == "/index.html" {
        let headers = req.headers();
        return match gate.check_page(|name| headers.get(name).and_then(|v| v.to_str().ok())) {
            Ok(()) if req.method() == Method::GET => page(),
            Ok(()) => text(StatusCode::METHOD_NOT_ALLOWED, "GET the page"),
            Err(r) => rejected(r),
        };
    }
    if path != "/transmission/rpc" && path != "/transmission/rpc/" {
        return text(StatusCode::NOT_FOUND, "Not Found");
    }
    let headers = req.headers();
    if let Err(r) = gate.check(|name| headers.get(name).and_then(|v| v.to_str().ok())) {
        // A 409 is every client's first answer, and it asks again at once
        // on the same connection: read its body (within the limit, as a
        // call's) so hyper keeps the connection, where an unread body
        // made it close it about half the time (a keep-alive client's
        // retry then met a broken pipe).
        if r.status == 409 {
            let _ = Limited::new(req.into_body(), MAX_BODY as usize)
                .collect()
                .await;
        }
        return rejected(r);
    }
    if req.method() != Method::POST {
        return text(StatusCode::METHOD_NOT_ALLOWED, "POST a JSON request");
    }
    let body = match Limited::new(req.into_body(), MAX_BODY as usize)
        .collect()
        .await
    {
        Ok(b) => b.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return rejected(too_large()),
        Err(e) => return text(StatusCode::BAD_REQUEST, &format!("reading the body: {e}")),
    };
    let reply = match rpc::parse(&body) {
        Ok(request) => daemon.reply(request).await,
        Err(refused) => rpc::refused(&refused),
    };
    let mut r = Response::new(Full::new(Bytes::from(reply)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json; charset=utf-8"),
    );
    r
}
