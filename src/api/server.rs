//! The router's HTTP/1.1 server (hyper 1): Weave's paths and text formats on the full API
//! listener, and only `/status*`, `/report` and `/metrics` on the read-only status listener.

use crate::api::Attachment;
use crate::router::{status, Router};
use crate::{Error, ErrorKind};
use http_body_util::{BodyExt, Full, LengthLimitError, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::header::{HeaderValue, CONTENT_TYPE};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use ipnet::Ipv4Net;
use serde_json::json;
use std::convert::Infallible;
use std::future::Future;
use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// Largest request body accepted (413 beyond).
pub const MAX_BODY: usize = 64 * 1024;

/// Serves both listeners until `shutdown` completes; open connections are dropped with the
/// runtime.
pub async fn serve(
    router: Arc<Router>,
    http: Option<TcpListener>,
    status: Option<TcpListener>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let mut loops = Vec::new();
    if let Some(l) = http {
        loops.push(tokio::spawn(accept_loop(l, router.clone(), true)));
    }
    if let Some(l) = status {
        loops.push(tokio::spawn(accept_loop(l, router.clone(), false)));
    }
    shutdown.await;
    for l in loops {
        l.abort();
    }
}

async fn accept_loop(listener: TcpListener, router: Arc<Router>, full: bool) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                tracing::warn!("accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(handle(&router, req, full).await) }
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

/// Handles one request. `full` is false on the read-only status listener.
pub async fn handle(router: &Router, req: Request<Incoming>, full: bool) -> Response<Full<Bytes>> {
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
    let segs: Vec<String> = path
        .trim_start_matches('/')
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let read_only = matches!(s.first(), Some(&("status" | "report" | "metrics")));
    let reply = if full || (read_only && method == Method::GET) {
        route(router, &method, &s, &query, &body).await
    } else {
        Reply::Text(StatusCode::NOT_FOUND, "unknown path".into())
    };
    into_response(reply)
}

async fn route(router: &Router, method: &Method, s: &[&str], query: &str, body: &[u8]) -> Reply {
    let ipam = &router.ipam;
    match (method.as_str(), s) {
        ("GET", ["status"]) => with_view(router, |v| ok_text(status::status_text(v))).await,
        ("GET", ["status", sub]) => match *sub {
            "targets" => with_view(router, |v| ok_text(status::targets_text(v))).await,
            "connections" => with_view(router, |v| ok_text(status::connections_text(v))).await,
            "peers" => with_view(router, |v| ok_text(status::peers_text(v))).await,
            "ipam" => with_view(router, |v| ok_text(status::ipam_text(v))).await,
            _ => Reply::Text(StatusCode::NOT_FOUND, "unknown path".into()),
        },
        ("GET", ["report"]) => report(router, query).await,
        ("GET", ["metrics"]) => with_view(router, |v| ok_text(status::metrics(v))).await,
        ("GET", ["ip"]) => match ipam.owned().await {
            Ok(owned) => {
                let list: Vec<_> = owned
                    .iter()
                    .map(|(id, c)| json!({"containerid": id, "addrs": c.iter().map(|x| x.to_string()).collect::<Vec<_>>()}))
                    .collect();
                Reply::Json(StatusCode::OK, json!({ "owned": list }))
            }
            Err(e) => error_reply(&e, ""),
        },
        ("POST", ["ip", id]) => allocate(router, id, None, body).await,
        ("POST", ["ip", id, ip, len]) => match parse_cidr(ip, len) {
            Ok(subnet) => allocate(router, id, Some(subnet), body).await,
            Err(r) => r,
        },
        ("GET", ["ip", id]) => lookup(router, id, None).await,
        ("GET", ["ip", id, ip, len]) => match parse_cidr(ip, len) {
            Ok(subnet) => lookup(router, id, Some(subnet)).await,
            Err(r) => r,
        },
        ("PUT", ["ip", id, ip, len]) => match parse_cidr(ip, len) {
            Ok(cidr) => match ipam.claim(id, cidr).await {
                Ok(_) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, "Unable to claim: "),
            },
            Err(r) => r,
        },
        // Also drops the attachments recorded with the id's addresses.
        ("DELETE", ["ip", id]) => match ipam.free(id).await {
            Ok(_) => Reply::Empty(StatusCode::NO_CONTENT),
            Err(e) => error_reply(&e, ""),
        },
        ("DELETE", ["ip", id, ip]) => match ip.parse::<Ipv4Addr>() {
            Ok(ip) => match ipam.free_one(id, ip).await {
                Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, "Unable to free: "),
            },
            Err(_) => bad_request(format!("invalid IP address: {ip}")),
        },
        ("GET", ["ipinfo", "defaultsubnet"]) => ok_text(router.config.default_subnet.to_string()),
        ("GET", ["ipinfo", "tracker"]) => ok_text("\n"),
        // Starts the election and waits (bounded) for the ring.
        ("GET", ["ring"]) => match ipam.ring().await {
            Ok(()) => ok_text(""),
            Err(e) => error_reply(&e, ""),
        },
        ("POST", ["expose", ip, len]) => match parse_cidr(ip, len) {
            Ok(cidr) => match router.expose(cidr, query_flag(query, "skipNAT")).await {
                Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, "unable to expose: "),
            },
            Err(Reply::Text(c, t)) => Reply::Text(c, format!("unable to parse ip addr: {t}")),
            Err(r) => r,
        },
        ("DELETE", ["expose", ip, len]) => match parse_cidr(ip, len) {
            Ok(cidr) => match router.hide(cidr).await {
                Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, "unable to hide: "),
            },
            Err(r) => r,
        },
        ("POST", ["connect"]) => {
            let form = form_pairs(query, body);
            let peers = form_values(&form, "peer");
            let replace = form_values(&form, "replace").iter().any(|v| v == "true");
            match router.connect(&peers, replace).await {
                Ok(()) => ok_text(""),
                Err(e) => error_reply(&e, ""),
            }
        }
        ("POST", ["forget"]) => {
            let form = form_pairs(query, body);
            match router.forget(&form_values(&form, "peer")).await {
                Ok(()) => ok_text(""),
                Err(e) => error_reply(&e, ""),
            }
        }
        // `weave reset`: our ranges go to a live peer (gossiped), then we leave the mesh.
        ("DELETE", ["peer"]) => {
            if let Err(e) = ipam.shutdown().await {
                return error_reply(&e, "");
            }
            match router.mesh.leave().await {
                Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, ""),
            }
        }
        ("DELETE", ["peer", name]) => match ipam.rmpeer(name).await {
            Ok(text) => ok_text(text),
            Err(e) => error_reply(&e, ""),
        },
        ("GET", ["cni", "attachments"]) => match router.attachments().await {
            Ok(v) => Reply::Json(StatusCode::OK, json!(v)),
            Err(e) => error_reply(&e, ""),
        },
        ("POST", ["cni", "attachments"]) => match serde_json::from_slice::<Attachment>(body) {
            Ok(a) => match router.upsert_attachment(a).await {
                Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, ""),
            },
            Err(e) => bad_request(format!("decode attachment: {e}")),
        },
        ("DELETE", ["cni", "attachments", id, ifname]) => {
            match router.remove_attachment(id, ifname).await {
                Ok(()) => Reply::Empty(StatusCode::NO_CONTENT),
                Err(e) => error_reply(&e, ""),
            }
        }
        _ => Reply::Text(StatusCode::NOT_FOUND, "unknown path".into()),
    }
}

async fn with_view(router: &Router, f: impl FnOnce(&status::View) -> Reply) -> Reply {
    match router.view().await {
        Ok(v) => f(&v),
        Err(e) => error_reply(&e, ""),
    }
}

async fn report(router: &Router, query: &str) -> Reply {
    let (view, owned) = match (router.view().await, router.ipam.owned().await) {
        (Ok(v), Ok(o)) => (v, o),
        (Err(e), _) | (_, Err(e)) => return error_reply(&e, ""),
    };
    let doc = status::report(&view, &owned);
    let pairs = form_pairs(query, b"");
    match form_values(&pairs, "format").first() {
        Some(t) => match status::render_template(t, &doc) {
            Ok(s) => ok_text(s),
            Err(e) => bad_request(e),
        },
        None => Reply::Json(StatusCode::OK, doc),
    }
}

/// `POST /ip/<id>`: Weave's allocate. A JSON body (our plugin's) describes the CNI
/// attachment the address is for; it is recorded before the answer, so one call does both.
async fn allocate(router: &Router, id: &str, subnet: Option<Ipv4Net>, body: &[u8]) -> Reply {
    let attachment = if body.first() == Some(&b'{') {
        match serde_json::from_slice::<Attachment>(body) {
            Ok(a) => Some(a),
            Err(e) => return bad_request(format!("decode attachment: {e}")),
        }
    } else {
        None
    };
    if let Some(a) = &attachment {
        if let Err(e) = crate::router::validate_attachment(a) {
            return error_reply(&e, "");
        }
    }
    match router.ipam.allocate_attached(id, subnet, attachment).await {
        Ok(c) => ok_text(c.to_string()),
        Err(e) => error_reply(&e, ""),
    }
}

async fn lookup(router: &Router, id: &str, subnet: Option<Ipv4Net>) -> Reply {
    match router.ipam.lookup(id, subnet).await {
        Ok(v) => ok_text(
            v.iter()
                .map(|c| c.to_string())
                .collect::<Vec<_>>()
                .join(" "),
        ),
        Err(e) => error_reply(&e, ""),
    }
}

fn parse_cidr(ip: &str, len: &str) -> Result<Ipv4Net, Reply> {
    let (Ok(addr), Ok(len)) = (ip.parse::<Ipv4Addr>(), len.parse::<u8>()) else {
        return Err(bad_request(format!("invalid CIDR address: {ip}/{len}")));
    };
    Ipv4Net::new(addr, len).map_err(|_| bad_request(format!("invalid CIDR address: {ip}/{len}")))
}

fn query_flag(query: &str, key: &str) -> bool {
    form_values(&form_pairs(query, b""), key)
        .iter()
        .any(|v| v == "true")
}

/// `application/x-www-form-urlencoded` pairs from the query string and the body.
fn form_pairs(query: &str, body: &[u8]) -> Vec<(String, String)> {
    let body = String::from_utf8_lossy(body);
    [query, body.as_ref()]
        .iter()
        .flat_map(|part| part.split('&'))
        .filter(|kv| !kv.is_empty())
        .map(|kv| {
            let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
            (form_decode(k), form_decode(v))
        })
        .collect()
}

fn form_values(pairs: &[(String, String)], key: &str) -> Vec<String> {
    pairs
        .iter()
        .filter(|(k, _)| k == key)
        .map(|(_, v)| v.clone())
        .collect()
}

fn form_decode(s: &str) -> String {
    percent_decode(&s.replace('+', " "))
}

/// Decodes `%XX` escapes; malformed escapes are kept as written.
fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16).map(|d| d as u8);
        if b[i] == b'%' && i + 2 < b.len() {
            if let (Some(h), Some(l)) = (hex(b[i + 1]), hex(b[i + 2])) {
                out.push(h * 16 + l);
                i += 3;
                continue;
            }
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn decoding() {
        assert_eq!(percent_decode("weave%3Aexpose"), "weave:expose");
        assert_eq!(percent_decode("a%2"), "a%2");
        assert_eq!(percent_decode("%é1"), "%é1");
        assert_eq!(percent_decode("%41"), "A");
        let p = form_pairs("skipNAT=true", b"peer=10.0.0.1&peer=h%3A6783&replace=true");
        assert_eq!(form_values(&p, "peer"), vec!["10.0.0.1", "h:6783"]);
        assert!(query_flag("skipNAT=true", "skipNAT"));
        assert!(!query_flag("", "skipNAT"));
    }
}
