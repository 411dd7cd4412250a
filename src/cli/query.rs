//! Commands that are one or a few router calls: status, connect, forget, rmpeer, report,
//! version.

use super::{usage_of, CliResult, Ctx, Failure};
use std::time::Duration;

/// The `weave status` sub-commands the router serves under `/status/<sub>`.
pub const STATUS_SUBS: [&str; 5] = ["targets", "connections", "peers", "ipam", "dns"];

/// Calls the router like Weave's `call_weave`: the body of a 2xx answer, exit code 4 for a
/// 404 (body swallowed), and the body as the error message for anything else.
pub(super) fn call(
    ctx: &Ctx,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<String, Failure> {
    let (status, text) = ctx.client.request(method, path, body)?;
    match status {
        200..=299 => Ok(text),
        404 => Err(Failure::new(4, "")),
        _ => Err(Failure::new(1, text.trim_end().to_string())),
    }
}

pub(super) fn status(ctx: &Ctx, sub: Option<&str>) -> CliResult {
    let invalid = |sub: &str| {
        Failure::new(
            1,
            format!(
                "Invalid 'weave status' sub-command: {sub}\n{}",
                usage_of("status")
            ),
        )
    };
    if let Some(s) = sub {
        if !STATUS_SUBS.contains(&s) {
            return Err(invalid(s));
        }
    }
    let (code, body) = match ctx.client.status(sub) {
        Ok(answer) => answer,
        Err(e) if e.kind() == crate::ErrorKind::NotFound => return Err(invalid(sub.unwrap_or(""))),
        Err(e) => return Err(e.into()),
    };
    match code {
        200..=299 if sub.is_none() => {
            // Weave prints the main status block between blank lines.
            print!("\n{}\n", with_newline(&body));
            Ok(())
        }
        200..=299 => {
            print!("{}", with_newline(&body));
            Ok(())
        }
        404 => Err(invalid(sub.unwrap_or(""))),
        // 503 while the router is still starting: the body says what it waits for.
        _ => Err(Failure::new(1, body.trim_end().to_string())),
    }
}

pub(super) fn connect(ctx: &Ctx, peers: &[String], replace: bool) -> CliResult {
    let mut form = peer_form(peers);
    if replace {
        form.push_str("&replace=true");
    }
    print!("{}", call(ctx, "POST", "/connect", Some(form.as_bytes()))?);
    Ok(())
}

pub(super) fn forget(ctx: &Ctx, peers: &[String]) -> CliResult {
    print!(
        "{}",
        call(ctx, "POST", "/forget", Some(peer_form(peers).as_bytes()))?
    );
    Ok(())
}

/// `DELETE /peer/<peer>` for each; every peer is tried, exit 1 if any failed.
pub(super) fn rmpeer(ctx: &Ctx, peers: &[String]) -> CliResult {
    let mut failed = false;
    for peer in peers {
        match call(ctx, "DELETE", &format!("/peer/{}", url_encode(peer)), None) {
            Ok(body) => print!("{}", with_newline(&body)),
            Err(f) if f.code == 4 => {
                eprintln!("remove peer {peer}: not found");
                failed = true;
            }
            Err(f) => {
                eprintln!("remove peer {peer}: {}", f.message);
                failed = true;
            }
        }
    }
    if failed {
        Err(Failure::new(1, ""))
    } else {
        Ok(())
    }
}

pub(super) fn report(ctx: &Ctx) -> CliResult {
    let report = ctx.client.report()?;
    let text = serde_json::to_string_pretty(&report)
        .map_err(|e| Failure::new(1, format!("encode report: {e}")))?;
    println!("{text}");
    Ok(())
}

/// Our version always; the router's only if one answers quickly.
pub(super) fn version(ctx: &Ctx) -> CliResult {
    println!("weave {}", crate::VERSION);
    let quick = ctx
        .client
        .clone()
        .with_timeouts(Duration::from_millis(500), Duration::from_secs(2));
    if let Ok(report) = quick.report() {
        if let Some(v) = report.get("Version").and_then(|v| v.as_str()) {
            println!("weave router {v}");
        }
    }
    Ok(())
}

fn peer_form(peers: &[String]) -> String {
    peers
        .iter()
        .map(|p| format!("peer={}", url_encode(p)))
        .collect::<Vec<_>>()
        .join("&")
}

fn with_newline(s: &str) -> String {
    if s.is_empty() || s.ends_with('\n') {
        s.to_string()
    } else {
        format!("{s}\n")
    }
}

/// Percent-encodes everything but RFC 3986 unreserved characters and `:` (peers are
/// `host:port` or MACs; a literal `:` is valid in paths and form values and needs no
/// decoding by the router).
pub(super) fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~:".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms_are_encoded() {
        assert_eq!(
            peer_form(&["10.0.0.1:6783".into(), "a b".into()]),
            "peer=10.0.0.1:6783&peer=a%20b"
        );
        assert_eq!(url_encode("a&b=c/d"), "a%26b%3Dc%2Fd");
    }
}
