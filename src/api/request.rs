//! Pure parsing and validation of the router's HTTP requests: (method, path, query, body) →
//! [`ApiRequest`], or a [`Rejection`] with a status and a reason. Nothing here touches the
//! router's state, so every input check can be fuzzed and unit-tested without a router.

use crate::attachment::Attachment;
use ipnet::Ipv4Net;
use std::net::Ipv4Addr;

/// Which `/status` page.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusPage {
    Summary,
    Targets,
    Connections,
    Peers,
    Ipam,
    Dns,
}

/// A request that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub enum ApiRequest {
    Status(StatusPage),
    Report {
        format: Option<String>,
    },
    Metrics,
    ListOwned,
    Allocate {
        id: String,
        subnet: Option<Ipv4Net>,
        attachment: Option<Attachment>,
    },
    Lookup {
        id: String,
        subnet: Option<Ipv4Net>,
    },
    Claim {
        id: String,
        cidr: Ipv4Net,
    },
    Free {
        id: String,
    },
    FreeOne {
        id: String,
        ip: Ipv4Addr,
    },
    DefaultSubnet,
    Tracker,
    Ring,
    Expose {
        cidr: Ipv4Net,
        skip_nat: bool,
    },
    Hide {
        cidr: Ipv4Net,
    },
    Connect {
        peers: Vec<String>,
        replace: bool,
    },
    Forget {
        peers: Vec<String>,
    },
    Leave,
    RemovePeer {
        name: String,
    },
    ListAttachments,
    PutAttachment(Attachment),
    RemoveAttachment {
        id: String,
        ifname: String,
    },
    /// `PUT /name/<id>/<ip>?fqdn=`: a name for the container's address.
    NameAdd {
        id: String,
        ip: Ipv4Addr,
        fqdn: String,
    },
    /// `DELETE /name[/<id>[/<ip>]][?fqdn=]`: our records, narrowed (`id` "*" is any).
    NameRemove {
        id: String,
        ip: Option<Ipv4Addr>,
        fqdn: Option<String>,
    },
    /// `GET /name/<fqdn>`: its addresses.
    NameLookup {
        fqdn: String,
    },
    /// `GET /name`: every record with its owner (JSON).
    NameList,
    /// `GET /domain`.
    Domain,
    /// `GET /dns-address`.
    DnsAddress,
}

/// Why a request was refused: an HTTP status and a one-line reason for the body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub reason: String,
}

fn reject(status: u16, reason: impl Into<String>) -> Rejection {
    Rejection {
        status,
        reason: reason.into(),
    }
}

fn bad(reason: impl Into<String>) -> Rejection {
    reject(400, reason)
}

fn not_found() -> Rejection {
    reject(404, "unknown path")
}

type Parsed = Result<ApiRequest, Rejection>;

/// Validates one request. `full` is false on the read-only status listener, which knows only
/// `GET /status*`, `/report` and `/metrics`.
pub fn parse_request(method: &str, path: &str, query: &str, body: &[u8], full: bool) -> Parsed {
    let segs: Vec<String> = path
        .strip_prefix('/')
        .unwrap_or(path)
        .split('/')
        .map(percent_decode)
        .collect();
    let s: Vec<&str> = segs.iter().map(String::as_str).collect();
    let read_only = matches!(s.first(), Some(&("status" | "report" | "metrics")));
    if !(full || read_only && method == "GET") {
        return Err(not_found());
    }
    let allowed: &[&str] = match s.as_slice() {
        ["status"] | ["status", "targets" | "connections" | "peers" | "ipam" | "dns"] => &["GET"],
        ["name"] | ["name", _] => &["GET", "DELETE"],
        ["name", _, _] => &["PUT", "DELETE"],
        ["domain"] | ["dns-address"] => &["GET"],
        ["report"] | ["metrics"] | ["ring"] | ["ip"] => &["GET"],
        ["ipinfo", "defaultsubnet" | "tracker"] => &["GET"],
        ["ip", _] => &["GET", "POST", "DELETE"],
        ["ip", _, _] => &["DELETE"],
        ["ip", _, _, _] => &["GET", "POST", "PUT"],
        ["expose", _, _] => &["POST", "DELETE"],
        ["connect"] | ["forget"] => &["POST"],
        ["peer"] | ["peer", _] => &["DELETE"],
        ["cni", "attachments"] => &["GET", "POST"],
        ["cni", "attachments", _, _] => &["DELETE"],
        _ => return Err(not_found()),
    };
    if !allowed.contains(&method) {
        return Err(reject(
            405,
            format!(
                "method {} not allowed on this path (allowed: {})",
                printable(method),
                allowed.join(", ")
            ),
        ));
    }
    route(method, &s, query, body).map_err(bounded)
}

/// Longest reason sent back: a reason echoes input, and a 64 KiB body of bad peers or a huge
/// id must not come back (and go to logs) many times over. Found by the http_request fuzzer.
pub const MAX_REASON: usize = 1024;
/// Invalid peers named in one `/connect` reason.
const MAX_PEER_ERRORS: usize = 8;

fn bounded(mut r: Rejection) -> Rejection {
    if r.reason.len() > MAX_REASON {
        let mut end = MAX_REASON;
        while !r.reason.is_char_boundary(end) {
            end -= 1;
        }
        r.reason.truncate(end);
        r.reason.push('…');
    }
    r
}

fn route(method: &str, s: &[&str], query: &str, body: &[u8]) -> Parsed {
    use ApiRequest as R;
    Ok(match (method, s) {
        (_, ["status"]) => R::Status(StatusPage::Summary),
        (_, ["status", "targets"]) => R::Status(StatusPage::Targets),
        (_, ["status", "connections"]) => R::Status(StatusPage::Connections),
        (_, ["status", "peers"]) => R::Status(StatusPage::Peers),
        (_, ["status", "dns"]) => R::Status(StatusPage::Dns),
        (_, ["status", _]) => R::Status(StatusPage::Ipam),
        (_, ["report"]) => R::Report {
            format: form_values(&form_pairs(query, b""), "format")
                .into_iter()
                .next(),
        },
        (_, ["metrics"]) => R::Metrics,
        (_, ["ring"]) => R::Ring,
        (_, ["ip"]) => R::ListOwned,
        (_, ["ipinfo", "defaultsubnet"]) => R::DefaultSubnet,
        (_, ["ipinfo", _]) => R::Tracker,
        ("POST", ["ip", id]) => R::Allocate {
            id: id_of(id)?,
            subnet: None,
            attachment: attachment_of(body)?,
        },
        ("POST", ["ip", id, ip, len]) => R::Allocate {
            id: id_of(id)?,
            subnet: Some(subnet_of(ip, len)?),
            attachment: attachment_of(body)?,
        },
        ("GET", ["ip", id]) => R::Lookup {
            id: id_of(id)?,
            subnet: None,
        },
        ("GET", ["ip", id, ip, len]) => R::Lookup {
            id: id_of(id)?,
            subnet: Some(subnet_of(ip, len)?),
        },
        ("PUT", ["ip", id, ip, len]) => R::Claim {
            id: id_of(id)?,
            cidr: host_cidr(ip, len)?,
        },
        ("DELETE", ["ip", id]) => R::Free { id: id_of(id)? },
        ("DELETE", ["ip", id, ip]) => R::FreeOne {
            id: id_of(id)?,
            ip: strict_ip(ip)
                .ok_or_else(|| bad(format!("invalid IP address: {}", printable(ip))))?,
        },
        ("POST", ["expose", ip, len]) => R::Expose {
            cidr: host_cidr(ip, len)
                .map_err(|r| bad(format!("unable to parse ip addr: {}", r.reason)))?,
            skip_nat: query_flag(query, "skipNAT"),
        },
        (_, ["expose", ip, len]) => R::Hide {
            cidr: host_cidr(ip, len)?,
        },
        ("POST", ["connect"]) => {
            let form = form_pairs(query, body);
            let peers = form_values(&form, "peer");
            let errors: Vec<String> = peers
                .iter()
                .filter_map(|p| crate::peer::validate_target(p).err())
                .map(|e| e.to_string())
                .collect();
            if errors.len() > MAX_PEER_ERRORS {
                let more = errors.len() - MAX_PEER_ERRORS;
                let mut shown = errors[..MAX_PEER_ERRORS].join("\n");
                shown.push_str(&format!("\n(and {more} more invalid peers)"));
                return Err(bad(shown));
            }
            if !errors.is_empty() {
                return Err(bad(errors.join("\n")));
            }
            let replace = form_values(&form, "replace").iter().any(|v| v == "true");
            R::Connect { peers, replace }
        }
        (_, ["forget"]) => R::Forget {
            peers: form_values(&form_pairs(query, body), "peer"),
        },
        (_, ["peer"]) => R::Leave,
        (_, ["peer", name]) => R::RemovePeer {
            name: peer_name_of(name)?,
        },
        ("GET", ["name"]) => R::NameList,
        ("GET", ["name", fqdn]) => R::NameLookup {
            fqdn: fqdn_of(fqdn)?,
        },
        ("PUT", ["name", id, ip]) => R::NameAdd {
            id: id_of(id)?,
            ip: ip_of(ip)?,
            fqdn: form_fqdn(query, body)?
                .ok_or_else(|| bad("missing fqdn (PUT /name/<container>/<ip>?fqdn=<name>)"))?,
        },
        (_, ["name"]) => R::NameRemove {
            id: "*".into(),
            ip: None,
            fqdn: Some(
                form_fqdn(query, body)?
                    .ok_or_else(|| bad("missing fqdn (DELETE /name?fqdn=<name>)"))?,
            ),
        },
        (_, ["name", id]) => R::NameRemove {
            id: id_of(id)?,
            ip: None,
            fqdn: form_fqdn(query, body)?,
        },
        (_, ["name", id, ip]) => R::NameRemove {
            id: id_of(id)?,
            ip: Some(ip_of(ip)?),
            fqdn: form_fqdn(query, body)?,
        },
        (_, ["domain"]) => R::Domain,
        (_, ["dns-address"]) => R::DnsAddress,
        ("GET", ["cni", "attachments"]) => R::ListAttachments,
        (_, ["cni", "attachments"]) => match serde_json::from_slice::<Attachment>(body) {
            Ok(a) => {
                a.validate().map_err(|e| bad(e.to_string()))?;
                R::PutAttachment(a)
            }
            Err(e) => return Err(bad(format!("decode attachment: {e}"))),
        },
        (_, ["cni", "attachments", id, ifname]) => {
            crate::attachment::validate_key(id, ifname).map_err(|e| bad(e.to_string()))?;
            R::RemoveAttachment {
                id: id.to_string(),
                ifname: ifname.to_string(),
            }
        }
        _ => return Err(not_found()),
    })
}

fn ip_of(ip: &str) -> Result<Ipv4Addr, Rejection> {
    strict_ip(ip).ok_or_else(|| bad(format!("invalid IP address: {}", printable(ip))))
}

fn fqdn_of(n: &str) -> Result<String, Rejection> {
    crate::dns::name::normalize(n).map_err(|e| bad(e.to_string()))
}

/// The `fqdn` form value (query or form body), checked; `None` when absent.
fn form_fqdn(query: &str, body: &[u8]) -> Result<Option<String>, Rejection> {
    match form_values(&form_pairs(query, body), "fqdn")
        .into_iter()
        .next()
    {
        Some(n) => fqdn_of(&n).map(Some),
        None => Ok(None),
    }
}

fn id_of(id: &str) -> Result<String, Rejection> {
    crate::ipam::validate_id(id).map_err(|e| bad(e.to_string()))?;
    Ok(id.to_string())
}

/// A JSON body (our plugin's) describes the CNI attachment an allocation is for; any other
/// body is a form (Weave's `check-alive`), which we accept and ignore.
fn attachment_of(body: &[u8]) -> Result<Option<Attachment>, Rejection> {
    if body.first() != Some(&b'{') {
        return Ok(None);
    }
    let a = serde_json::from_slice::<Attachment>(body)
        .map_err(|e| bad(format!("decode attachment: {e}")))?;
    a.validate().map_err(|e| bad(e.to_string()))?;
    Ok(Some(a))
}

/// `rmpeer` takes a peer name or a nickname: printable, no `/`, at most 255 bytes.
fn peer_name_of(name: &str) -> Result<String, Rejection> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && name.bytes().all(|b| b.is_ascii_graphic() && b != b'/');
    if !ok {
        return Err(bad(format!("invalid peer name {:?}", printable(name))));
    }
    Ok(name.to_string())
}

/// Dotted quad with no leading `+`, spaces or zeros (std already refuses octal-looking parts).
fn strict_ip(ip: &str) -> Option<Ipv4Addr> {
    ip.parse().ok()
}

/// `ip/len` exactly as written: decimal prefix 0-32 of at most two digits.
fn cidr_of(ip: &str, len: &str) -> Result<Ipv4Net, Rejection> {
    let invalid = || {
        bad(format!(
            "invalid CIDR address: {}/{}",
            printable(ip),
            printable(len)
        ))
    };
    let digits = !len.is_empty() && len.len() <= 2 && len.bytes().all(|b| b.is_ascii_digit());
    let (Some(addr), true) = (strict_ip(ip), digits) else {
        return Err(invalid());
    };
    let prefix: u8 = len.parse().map_err(|_| invalid())?;
    Ipv4Net::new(addr, prefix).map_err(|_| invalid())
}

/// A subnet to allocate or look up in: aligned and big enough to hold a host (the range
/// check needs the router's universe and is done by IPAM).
fn subnet_of(ip: &str, len: &str) -> Result<Ipv4Net, Rejection> {
    let net = cidr_of(ip, len)?;
    if net.addr() != net.network() {
        return Err(bad(format!(
            "invalid subnet - bits after network prefix are not all zero: {net}"
        )));
    }
    let min = crate::ipam::MIN_SUBNET_SIZE;
    if (1u64 << (32 - net.prefix_len())) < min {
        return Err(bad(format!(
            "invalid subnet - smaller than minimum size {min}: {net}"
        )));
    }
    Ok(net)
}

/// A host address with its subnet's prefix (claim, expose): not `/0`, and not the network
/// or broadcast address of a subnet that has both.
fn host_cidr(ip: &str, len: &str) -> Result<Ipv4Net, Rejection> {
    let c = cidr_of(ip, len)?;
    if c.prefix_len() == 0 {
        return Err(bad(format!("invalid CIDR address: {c}: prefix length 0")));
    }
    if c.prefix_len() <= 30 && (c.addr() == c.network() || c.addr() == c.broadcast()) {
        return Err(bad(format!(
            "invalid CIDR address: {c}: the network or broadcast address of its subnet"
        )));
    }
    Ok(c)
}

/// Bounded, escaped echo of untrusted input for reasons and logs.
fn printable(s: &str) -> String {
    let mut out: String = s.chars().take(64).flat_map(char::escape_debug).collect();
    if s.chars().count() > 64 {
        out.push('…');
    }
    out
}

fn query_flag(query: &str, key: &str) -> bool {
    form_values(&form_pairs(query, b""), key)
        .iter()
        .any(|v| v == "true")
}

/// `application/x-www-form-urlencoded` pairs from the query string and the body.
pub fn form_pairs(query: &str, body: &[u8]) -> Vec<(String, String)> {
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

pub fn form_values(pairs: &[(String, String)], key: &str) -> Vec<String> {
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
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

#[cfg(test)]
#[path = "request_tests.rs"]
mod tests;
