//! Per-request cost of the HTTP clients against one local server on loopback (no root):
//! today's minimal router client (`weave::api::Client`, hand-written HTTP/1.1) beside the
//! one hyper client (`weave::http`) through its blocking facade, reused (the CLI, the
//! harness) and built anew for each request (what one CNI plugin process pays: a
//! current-thread runtime plus the request). One connection per request in every case.
//!
//! Usage: cargo bench --bench http_client -- [--iterations N] [--json PATH]

#[path = "common/mod.rs"]
mod common;

use common::{arg, report, stats, Row, Target};
use http_body_util::Full;
use hyper::body::Bytes;
use serde_json::json;
use std::time::{Duration, Instant};
use weave::http::{self, blocking, Request, Url};

/// A hyper server answering every request with a CIDR, as the router's `POST /ip` does.
fn serve() -> std::net::SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(|_req| async {
                        Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(
                            Bytes::from_static(b"10.32.0.1/12"),
                        )))
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                        .await;
                });
            }
        });
    });
    addr
}

/// Microseconds per call of `f`, one sample per call.
fn measure(n: usize, mut f: impl FnMut()) -> Vec<f64> {
    for _ in 0..n / 10 + 1 {
        f(); // warm-up
    }
    (0..n)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64() * 1e6
        })
        .collect()
}

fn main() {
    let n: usize = arg("--iterations")
        .and_then(|v| v.parse().ok())
        .unwrap_or(2000);
    let addr = serve();
    let url = Url::parse(&format!("http://{addr}/ip/bench"), 6784).unwrap();
    let req = Request::post(url, "");

    let minimal = weave::api::Client::new(&addr.to_string());
    let old = measure(n, || {
        let (code, body) = minimal.request("POST", "/ip/bench", Some(b"")).unwrap();
        assert_eq!((code, body.as_str()), (200, "10.32.0.1/12"));
    });
    let settings =
        || http::Client::new().with_timeouts(Duration::from_secs(2), Duration::from_secs(5));
    let reused = blocking::Client::new(settings()).unwrap();
    let hyper_reused = measure(n, || {
        let r = reused.fetch(&req, 1 << 20).unwrap();
        assert_eq!((r.status(), r.body.as_slice()), (200, &b"10.32.0.1/12"[..]));
    });
    let hyper_fresh = measure(n, || {
        let c = blocking::Client::new(settings()).unwrap();
        let r = c.fetch(&req, 1 << 20).unwrap();
        assert_eq!(r.status(), 200);
    });

    let (o, o10, o90) = stats(&old);
    let (r, r10, r90) = stats(&hyper_reused);
    let (f, f10, f90) = stats(&hyper_fresh);
    let rows = [
        Row::new("minimal client (api::Client), per request", "us", o),
        Row::new("hyper client, reused runtime, per request", "us", r).vs(
            "minimal client",
            o,
            Target::None,
        ),
        Row::new("hyper client, new runtime per request", "us", f).vs(
            "minimal client",
            o,
            Target::None,
        ),
    ];
    report(
        "http_client",
        &format!("HTTP client per-request cost on loopback, median of {n} (p10-p90 in details)"),
        &rows,
        json!({
            "iterations": n,
            "minimal_us": {"median": o, "p10": o10, "p90": o90},
            "hyper_reused_us": {"median": r, "p10": r10, "p90": r90},
            "hyper_new_runtime_us": {"median": f, "p10": f10, "p90": f90},
        }),
        arg("--json").as_deref(),
    );
}
