//! The query path, pure: one packet in, a verdict out (reply bytes, forward, or drop). The
//! wire format is hickory-proto's; nothing here writes DNS bytes by hand.
//!
//! - A (and ANY) for names under the domain: every address, shuffled per answer;
//! - PTR for an address we hold a name for; other reverse names are forwarded;
//! - a name under the domain that we do not hold: NXDOMAIN; another type for a name we
//!   hold: NOERROR without answers; both with the domain's SOA so caches keep them TTL long;
//! - names outside the domain: forwarded;
//! - undecodable queries: FORMERR when the header is readable, else dropped; responses
//!   sent to us are dropped (no reflection loops); opcodes other than QUERY: NOTIMP.

use super::name::{in_domain, parse_reverse};
use super::store::Zone;
use hickory_proto::op::{Edns, Header, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR, SOA};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};
use hickory_proto::serialize::binary::{BinDecodable, BinDecoder};
use rand::seq::SliceRandom;

/// UDP payload we accept and advertise with EDNS (the DNS flag day 2020 figure).
pub const EDNS_PAYLOAD: u16 = 1232;
/// UDP payload of a query without EDNS.
pub const PLAIN_UDP_PAYLOAD: usize = 512;

/// What became of one packet (each outcome has a counter in `/metrics`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// Addresses (A) or names (PTR) from our records.
    Answered,
    /// A name we hold, asked for another type.
    NoData,
    NxDomain,
    /// Not ours: goes to the upstream resolvers.
    Forward,
    /// Undecodable query answered with FORMERR.
    FormErr,
    /// An opcode other than QUERY.
    NotImp,
    /// Not even a header, or a response sent to us.
    Dropped,
}

/// What to do with a packet.
#[derive(Debug)]
pub enum Verdict {
    Reply(Vec<u8>, Outcome),
    /// The parsed query, for the forwarder (and its SERVFAIL when upstream fails).
    Forward(Box<Message>),
    Drop,
}

/// The local zone's settings.
#[derive(Debug, Clone)]
pub struct Answerer {
    domain: String,
    soa: Record,
    ttl: u32,
}

impl Answerer {
    /// `domain` normalised (`weave.local.`); `ttl` of local answers in seconds.
    pub fn new(domain: &str, ttl: u32) -> crate::Result<Answerer> {
        let domain = super::name::normalize(domain)?;
        let origin = Name::from_ascii(&domain).map_err(|e| {
            crate::Error::new(
                crate::ErrorKind::InvalidConfig,
                format!("DNS domain {domain}: {e}"),
            )
        })?;
        let label = |l: &str| {
            Name::from_ascii(l)
                .and_then(|n| n.append_domain(&origin))
                .unwrap_or_else(|_| origin.clone())
        };
        let soa = SOA::new(label("ns"), label("hostmaster"), 1, 3600, 600, 86400, ttl);
        Ok(Answerer {
            soa: Record::from_rdata(origin, ttl, RData::SOA(soa)),
            domain,
            ttl,
        })
    }

    pub fn domain(&self) -> &str {
        &self.domain
    }

    pub fn ttl(&self) -> u32 {
        self.ttl
    }

    /// The verdict on `packet`. `udp` limits the answer's size (TC when it does not fit).
    pub fn answer(&self, packet: &[u8], zone: &Zone, udp: bool) -> Verdict {
        let query = match Message::from_vec(packet) {
            Ok(m) => m,
            Err(_) => return self.undecodable(packet),
        };
        if query.metadata.message_type != MessageType::Query {
            return Verdict::Drop;
        }
        let udp = udp.then(|| udp_limit(&query));
        if query.metadata.op_code != OpCode::Query {
            return reply(
                error_for(&query, ResponseCode::NotImp),
                udp,
                Outcome::NotImp,
            );
        }
        if query.queries.len() != 1 {
            return reply(
                error_for(&query, ResponseCode::FormErr),
                udp,
                Outcome::FormErr,
            );
        }
        let q = &query.queries[0];
        let qname = q.name().to_lowercase().to_ascii();
        if q.query_class() != DNSClass::IN && q.query_class() != DNSClass::ANY {
            return Verdict::Forward(Box::new(query));
        }
        if let Some(ip) = parse_reverse(&qname) {
            if q.query_type() == RecordType::PTR {
                if let Some(names) = zone.by_ip.get(&ip) {
                    let mut r = response_to(&query, ResponseCode::NoError);
                    for n in names {
                        if let Ok(target) = Name::from_ascii(n) {
                            r.add_answer(Record::from_rdata(
                                q.name().clone(),
                                self.ttl,
                                RData::PTR(PTR(target)),
                            ));
                        }
                    }
                    return reply(r, udp, Outcome::Answered);
                }
            }
            return Verdict::Forward(Box::new(query));
        }
        if !in_domain(&qname, &self.domain) {
            return Verdict::Forward(Box::new(query));
        }
        let Some(ips) = zone.by_name.get(&qname) else {
            let mut r = response_to(&query, ResponseCode::NXDomain);
            r.add_authority(self.soa.clone());
            return reply(r, udp, Outcome::NxDomain);
        };
        let mut r = response_to(&query, ResponseCode::NoError);
        if matches!(q.query_type(), RecordType::A | RecordType::ANY) {
            let mut ips = ips.clone();
            ips.shuffle(&mut rand::rng());
            for ip in ips {
                r.add_answer(Record::from_rdata(
                    q.name().clone(),
                    self.ttl,
                    RData::A(A(ip)),
                ));
            }
            return reply(r, udp, Outcome::Answered);
        }
        r.add_authority(self.soa.clone());
        reply(r, udp, Outcome::NoData)
    }

    /// FORMERR for a query whose header is readable; nothing otherwise.
    fn undecodable(&self, packet: &[u8]) -> Verdict {
        let Ok(h) = Header::read(&mut BinDecoder::new(packet)) else {
            return Verdict::Drop;
        };
        if h.metadata.message_type != MessageType::Query {
            return Verdict::Drop;
        }
        let m = Message::error_msg(h.metadata.id, h.metadata.op_code, ResponseCode::FormErr);
        reply(m, Some(PLAIN_UDP_PAYLOAD), Outcome::FormErr)
    }

    /// SERVFAIL for a query the upstream resolvers did not answer.
    pub fn servfail(&self, query: &Message) -> Vec<u8> {
        let m = error_for(query, ResponseCode::ServFail);
        encode(&m, None).unwrap_or_default()
    }

    /// REFUSED for a query from a source we do not serve.
    pub fn refused(&self, query: &Message) -> Vec<u8> {
        let m = error_for(query, ResponseCode::Refused);
        encode(&m, None).unwrap_or_default()
    }
}

/// A response carrying the query's ID, opcode, RD, question and EDNS presence.
fn response_to(query: &Message, code: ResponseCode) -> Message {
    let mut r = Message::response(query.metadata.id, query.metadata.op_code);
    r.metadata.recursion_desired = query.metadata.recursion_desired;
    r.metadata.recursion_available = true;
    r.metadata.authoritative = code != ResponseCode::ServFail && code != ResponseCode::Refused;
    r.metadata.checking_disabled = query.metadata.checking_disabled;
    r.metadata.response_code = code;
    r.queries = query
        .queries
        .iter()
        .take(1)
        .cloned()
        .collect::<Vec<Query>>();
    if query.edns.is_some() {
        let mut e = Edns::new();
        e.set_max_payload(EDNS_PAYLOAD);
        r.set_edns(e);
    }
    r
}

fn error_for(query: &Message, code: ResponseCode) -> Message {
    let mut r = response_to(query, code);
    r.metadata.authoritative = false;
    r
}

/// The most a UDP answer to `query` may hold: what its EDNS says (512 to our 1232), else 512.
fn udp_limit(query: &Message) -> usize {
    match &query.edns {
        Some(e) => (e.max_payload() as usize).clamp(PLAIN_UDP_PAYLOAD, EDNS_PAYLOAD as usize),
        None => PLAIN_UDP_PAYLOAD,
    }
}

/// Encodes `m`; over `limit` bytes, again without its records and with TC set.
fn encode(m: &Message, limit: Option<usize>) -> Option<Vec<u8>> {
    let bytes = m.to_vec().ok()?;
    match limit {
        Some(l) if bytes.len() > l => m.truncate().to_vec().ok(),
        _ => Some(bytes),
    }
}

fn reply(m: Message, limit: Option<usize>, outcome: Outcome) -> Verdict {
    match encode(&m, limit) {
        Some(b) => Verdict::Reply(b, outcome),
        None => Verdict::Drop,
    }
}

/// Upstream's answer (or our SERVFAIL) fitted to a UDP client: TC when it is larger than
/// the client said it can take.
pub fn fit_udp(query: &Message, answer: Vec<u8>) -> Vec<u8> {
    if answer.len() <= udp_limit(query) {
        return answer;
    }
    let mut r = response_to(query, ResponseCode::NoError);
    if let Ok(m) = Message::from_vec(&answer) {
        r.metadata.response_code = m.metadata.response_code;
    }
    r.metadata.truncation = true;
    r.metadata.authoritative = false;
    encode(&r, None).unwrap_or_default()
}

/// The IPv4 addresses of the A records in `answer`, sorted: what a client compares when the
/// server shuffles them.
pub fn a_addresses(answer: &Message) -> Vec<std::net::Ipv4Addr> {
    let mut ips: Vec<_> = answer
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    ips.sort();
    ips
}

#[cfg(test)]
#[path = "answer_tests.rs"]
mod tests;
