//! The router's HTTP/1.1 server (hyper 1): Weave's paths and text formats on the full API
//! listener, and only `/status*`, `/report` and `/metrics` on the read-only status listener.
//! A request is parsed and checked first ([`super::request`], pure), then executed against a
//! [`Backend`]; errors become statuses in one place ([`error_reply`]).

use super::backend::Backend;
use super::request::{parse_request, ApiRequest, StatusPage};
use super::status;
use crate::{Error, ErrorKind};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 64 * 1024;

/// Serves both listeners until `shutdown` completes; open connections are dropped with the
/// runtime.
pub async fn serve<B: Backend>(
    backend: Arc<B>,
    http: Option<TcpListener>,
    status: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut loops = Vec::new();
    if let Some(l) = http {
        loops.push(tokio::spawn(accept_loop(l, backend.clone(), true)));
    }
    if let Some(l) = status {
        loops.push(tokio::spawn(accept_loop(l, backend.clone(), false)));
    }
    shutdown.await;
    for l in loops {
        l.abort();
    }
}

async fn accept_loop<B: Backend>(listener: TcpListener, backend: Arc<B>, full: bool) {
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        // Weave guards the API port with an iptables rule; this holds even without it
        // (e.g. `--http-addr 0.0.0.0:6784`, or the rule flushed).
        if !is_local_client(peer, stream.local_addr().ok()) {
            tracing::warn!("refusing HTTP client {peer}: not a local address");
            continue;
        }
        let _ = stream.set_nodelay(true);
        let backend = backend.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let backend = backend.clone();
                async move { Ok::<_, Infallible>(handle(backend.as_ref(), req, full).await) }
            });
            let conn = http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(Duration::from_secs(30))
                .serve_connection(TokioIo::new(stream), svc);
            if let Err(e) = conn.await {
                tracing::debug!("http connection: {e}");
            }
        });
    }
}

/// What a handler answers, before it becomes a hyper response.
enum Reply {
    Text(StatusCode, String),
    Json(StatusCode, serde_json::Value),
    Empty(StatusCode),
}

fn ok_text(s: impl Into<String>) -> Reply {
    Reply::Text(StatusCode::OK, s.into())
}

fn bad_request(s: impl Into<String>) -> Reply {
    Reply::Text(StatusCode::BAD_REQUEST, s.into())
}

/// Maps a crate error to a status: input problems 400, "try later" 503, the rest 500.
fn error_reply(e: &Error, prefix: &str) -> Reply {
    let code = match e.kind() {
        ErrorKind::InvalidConfig | ErrorKind::Decode | ErrorKind::Env => StatusCode::BAD_REQUEST,
        ErrorKind::TryAgainLater => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    };
    Reply::Text(code, format!("{prefix}{e}"))
}

fn into_response(r: Reply) -> Response<Full<Bytes>> {
    let (code, body, ctype) = match r {
        Reply::Text(c, t) => (c, t, "text/plain; charset=utf-8"),
        Reply::Json(c, v) => (
            c,
            serde_json::to_string_pretty(&v).unwrap_or_default() + "\n",
            "application/json",
        ),
        Reply::Empty(c) => (c, String::new(), "text/plain; charset=utf-8"),
    };
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = code;
    resp.headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static(ctype));
    resp
}

/// True for loopback peers and peers using one of this host's own addresses (Weave's
/// `-m addrtype --src-type LOCAL`).
pub fn is_local_client(peer: SocketAddr, local: Option<SocketAddr>) -> bool {
    let ip = match peer.ip() {
        IpAddr::V6(v6) => v6
            .to_ipv4_mapped()
            .map(IpAddr::V4)
            .unwrap_or(IpAddr::V6(v6)),
        v4 => v4,
    };
    if ip.is_loopback() || local.is_some_and(|l| l.ip() == ip) {
        return true;
    }
    match nix::ifaddrs::getifaddrs() {
        Ok(addrs) => addrs.filter_map(|a| a.address).any(|a| {
            a.as_sockaddr_in().map(|s| IpAddr::V4(s.ip())) == Some(ip)
                || a.as_sockaddr_in6().map(|s| IpAddr::V6(s.ip())) == Some(ip)
        }),
        Err(e) => {
            tracing::warn!("list local addresses: {e}");
            false
        }
    }
}

/// Handles one request: validates it without touching state, then executes it.
/// `full` is false on the read-only status listener.
pub async fn handle<B: Backend>(
    backend: &B,
    req: Request<Incoming>,
    full: bool,
) -> Response<Full<Bytes>> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let body = match Limited::new(req.into_body(), MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(e) if e.downcast_ref::<LengthLimitError>().is_some() => {
            return into_response(Reply::Text(
                StatusCode::PAYLOAD_TOO_LARGE,
                format!("request body larger than {MAX_BODY} bytes"),
            ))
        }
        Err(e) => return into_response(bad_request(format!("read request body: {e}"))),
    };
    let reply = match parse_request(method.as_str(), &path, &query, &body, full) {
        Ok(r) => execute(backend, r).await,
        Err(rej) => Reply::Text(
            StatusCode::from_u16(rej.status).unwrap_or(StatusCode::BAD_REQUEST),
            rej.reason,
        ),
    };
    into_response(reply)
}

fn done(r: crate::Result<()>, prefix: &str) -> Reply {
    match r {
        Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
        Err(e) => error_reply(&e, prefix),
    }
}

async fn execute<B: Backend>(backend: &B, req: ApiRequest) -> Reply {
    use ApiRequest as R;
    let ipam = backend.ipam();
    match req {
        R::Status(page) => {
            let render = match page {
                StatusPage::Summary => status::status_text,
                StatusPage::Targets => status::targets_text,
                StatusPage::Connections => status::connections_text,
                StatusPage::Peers => status::peers_text,
                StatusPage::Ipam => status::ipam_text,
            };
            with_view(backend, |v| ok_text(render(v))).await
        }
        R::Report { format } => report(backend, format).await,
        R::Metrics => with_view(backend, |v| ok_text(status::metrics(v))).await,
        R::ListOwned => match ipam.owned().await {
            Ok(owned) => {
                let list: Vec<_> = owned
                    .iter()
                    .map(|(id, c)| json!({"containerid": id, "addrs": c.iter().map(|x| x.to_string()).collect::<Vec<_>>()}))
                    .collect();
                Reply::Json(StatusCode::OK, json!({ "owned": list }))
            }
            Err(e) => error_reply(&e, ""),
        },
        // The attachment is recorded with the allocation: one call, one write.
        R::Allocate {
            id,
            subnet,
            attachment,
        } => match ipam.allocate_attached(&id, subnet, attachment).await {
            Ok(c) => ok_text(c.to_string()),
            Err(e) => error_reply(&e, ""),
        },
        R::Lookup { id, subnet } => match ipam.lookup(&id, subnet).await {
            Ok(v) => ok_text(
                v.iter()
                    .map(|c| c.to_string())
                    .collect::<Vec<_>>()
                    .join(" "),
            ),
            Err(e) => error_reply(&e, ""),
        },
        R::Claim { id, cidr } => done(ipam.claim(&id, cidr).await.map(|_| ()), "Unable to claim: "),
        // Also drops the attachments recorded with the id's addresses.
        R::Free { id } => done(ipam.free(&id).await.map(|_| ()), ""),
        R::FreeOne { id, ip } => done(ipam.free_one(&id, ip).await, "Unable to free: "),
        R::DefaultSubnet => ok_text(backend.default_subnet().to_string()),
        R::Tracker => ok_text("\n"),
        // Starts the election and waits (bounded) for the ring.
        R::Ring => match ipam.ring().await {
            Ok(()) => ok_text(""),
            Err(e) => error_reply(&e, ""),
        },
        R::Expose { cidr, skip_nat } => {
            done(backend.expose(cidr, skip_nat).await, "unable to expose: ")
        }
        R::Hide { cidr } => done(backend.hide(cidr).await, "unable to hide: "),
        R::Connect { peers, replace } => match backend.connect(&peers, replace).await {
            Ok(()) => ok_text(""),
            Err(e) => error_reply(&e, ""),
        },
        R::Forget { peers } => match backend.forget(&peers).await {
            Ok(()) => ok_text(""),
            Err(e) => error_reply(&e, ""),
        },
        // `weave reset`: our ranges go to a live peer (gossiped), then we leave the mesh.
        R::Leave => done(backend.leave().await, ""),
        R::RemovePeer { name } => match ipam.rmpeer(&name).await {
            Ok(text) => ok_text(text),
            Err(e) => error_reply(&e, ""),
        },
        R::ListAttachments => match ipam.attachments().await {
            Ok(v) => Reply::Json(StatusCode::OK, json!(v)),
            Err(e) => error_reply(&e, ""),
        },
        R::PutAttachment(a) => done(ipam.put_attachment(a).await, ""),
        R::RemoveAttachment { id, ifname } => done(ipam.remove_attachment(&id, &ifname).await, ""),
    }
}

async fn with_view<B: Backend>(backend: &B, f: impl FnOnce(&status::View) -> Reply) -> Reply {
    match backend.view().await {
        Ok(v) => f(&v),
        Err(e) => error_reply(&e, ""),
    }
}

async fn report<B: Backend>(backend: &B, format: Option<String>) -> Reply {
    let (view, owned) = match (backend.view().await, backend.ipam().owned().await) {
        (Ok(v), Ok(o)) => (v, o),
        (Err(e), _) | (_, Err(e)) => return error_reply(&e, ""),
    };
    let doc = status::report(&view, &owned);
    match format {
        Some(t) => match status::render_template(&t, &doc) {
            Ok(s) => ok_text(s),
            Err(e) => bad_request(e),
        },
        None => Reply::Json(StatusCode::OK, doc),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn local_clients() {
        let at = |s: &str| s.parse::<SocketAddr>().unwrap();
        assert!(is_local_client(at("127.0.0.1:5000"), None));
        assert!(is_local_client(at("127.9.9.9:5000"), None));
        assert!(is_local_client(at("[::1]:5000"), None));
        assert!(is_local_client(at("[::ffff:127.0.0.1]:5000"), None));
        assert!(is_local_client(
            at("192.0.2.7:5000"),
            Some(at("192.0.2.7:6784"))
        ));
        // TEST-NET-2 is never assigned to a host in the test environment.
        assert!(!is_local_client(at("198.51.100.9:5000"), None));
    }
}
