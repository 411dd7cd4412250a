use super::*;
use std::net::Ipv4Addr;

fn zone() -> Zone {
    let mut pairs: Vec<(String, Ipv4Addr)> = vec![
        ("web.weave.local".into(), "10.32.0.2".parse().unwrap()),
        ("web.weave.local".into(), "10.32.0.3".parse().unwrap()),
        ("web.weave.local".into(), "10.40.0.2".parse().unwrap()),
        ("db.fw.weave.local".into(), "10.40.0.9".parse().unwrap()),
    ];
    for i in 0..60 {
        pairs.push(("many.weave.local".into(), Ipv4Addr::from(0x0a30_0000 + i)));
    }
    Zone::from_pairs(pairs.iter().map(|(n, a)| (n.as_str(), *a))).unwrap()
}

fn answerer() -> Answerer {
    Answerer::new("weave.local", 1).unwrap()
}

fn query(name: &str, t: RecordType) -> Message {
    let mut m = Message::query();
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), t));
    m
}

fn ask(m: &Message, udp: bool) -> (Message, Outcome, usize) {
    match answerer().answer(&m.to_vec().unwrap(), &zone(), udp) {
        Verdict::Reply(b, o) => (Message::from_vec(&b).unwrap(), o, b.len()),
        other => panic!("{other:?}"),
    }
}

fn addresses(m: &Message) -> Vec<Ipv4Addr> {
    m.answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect()
}

#[test]
fn a_records_come_shuffled_with_the_ttl() {
    let q = query("WEB.weave.local.", RecordType::A);
    let mut orders = std::collections::BTreeSet::new();
    for _ in 0..60 {
        let (r, o, _) = ask(&q, true);
        assert_eq!(o, Outcome::Answered);
        assert_eq!(r.metadata.id, q.metadata.id);
        assert_eq!(r.metadata.message_type, MessageType::Response);
        assert_eq!(r.metadata.response_code, ResponseCode::NoError);
        assert!(r.metadata.authoritative);
        assert!(r.metadata.recursion_desired);
        assert_eq!(r.queries, q.queries);
        assert!(r.answers.iter().all(|a| a.ttl == 1));
        let mut got = addresses(&r);
        orders.insert(got.clone());
        got.sort();
        let want: Vec<Ipv4Addr> = ["10.32.0.2", "10.32.0.3", "10.40.0.2"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got, want);
    }
    assert!(orders.len() > 1, "answers are never shuffled: {orders:?}");
}

#[test]
fn ttl_is_configurable() {
    let a = Answerer::new("weave.local.", 30).unwrap();
    let q = query("db.fw.weave.local.", RecordType::A);
    let Verdict::Reply(b, _) = a.answer(&q.to_vec().unwrap(), &zone(), true) else {
        panic!()
    };
    let r = Message::from_vec(&b).unwrap();
    assert_eq!(r.answers[0].ttl, 30);
    assert_eq!(a.ttl(), 30);
    assert_eq!(a.domain(), "weave.local.");
}

#[test]
fn unknown_local_names_are_nxdomain_with_soa() {
    let (r, o, _) = ask(&query("nope.weave.local.", RecordType::A), true);
    assert_eq!(o, Outcome::NxDomain);
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    assert!(r.answers.is_empty());
    let soa = &r.authorities[0];
    assert_eq!(soa.record_type(), RecordType::SOA);
    assert_eq!(soa.ttl, 1);
}

#[test]
fn other_types_of_a_known_name_are_nodata() {
    let (r, o, _) = ask(&query("web.weave.local.", RecordType::AAAA), true);
    assert_eq!(o, Outcome::NoData);
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
    assert!(r.answers.is_empty());
    assert_eq!(r.authorities.len(), 1);
    // ANY gets the addresses.
    let (r, o, _) = ask(&query("web.weave.local.", RecordType::ANY), true);
    assert_eq!(o, Outcome::Answered);
    assert_eq!(addresses(&r).len(), 3);
}

#[test]
fn ptr_for_known_addresses_and_forward_for_the_rest() {
    let (r, o, _) = ask(&query("9.0.40.10.in-addr.arpa.", RecordType::PTR), true);
    assert_eq!(o, Outcome::Answered);
    match &r.answers[0].data {
        RData::PTR(p) => assert_eq!(p.0.to_ascii(), "db.fw.weave.local."),
        other => panic!("{other:?}"),
    }
    let unknown = query("1.1.168.192.in-addr.arpa.", RecordType::PTR);
    assert!(matches!(
        answerer().answer(&unknown.to_vec().unwrap(), &zone(), true),
        Verdict::Forward(_)
    ));
}

#[test]
fn names_outside_the_domain_are_forwarded() {
    for n in ["example.com.", "weave.local.", "xweave.local."] {
        let q = query(n, RecordType::A);
        match answerer().answer(&q.to_vec().unwrap(), &zone(), true) {
            Verdict::Forward(m) => assert_eq!(m.metadata.id, q.metadata.id),
            other => panic!("{n}: {other:?}"),
        }
    }
}

#[test]
fn big_answers_are_truncated_on_udp_only() {
    let q = query("many.weave.local.", RecordType::A);
    let (r, _, len) = ask(&q, true);
    assert!(r.metadata.truncation);
    assert!(r.answers.is_empty());
    assert!(len <= PLAIN_UDP_PAYLOAD);
    let (r, _, _) = ask(&q, false);
    assert!(!r.metadata.truncation);
    assert_eq!(addresses(&r).len(), 60);
    // With EDNS the client may take up to 1232 bytes: 60 addresses fit.
    let mut q = q;
    let mut e = Edns::new();
    e.set_max_payload(4096);
    q.set_edns(e);
    let (r, _, len) = ask(&q, true);
    assert!(!r.metadata.truncation);
    assert_eq!(addresses(&r).len(), 60);
    assert!(len <= EDNS_PAYLOAD as usize);
    assert_eq!(r.edns.as_ref().unwrap().max_payload(), EDNS_PAYLOAD);
}

#[test]
fn malformed_input_gets_formerr_or_nothing() {
    let a = answerer();
    let z = zone();
    // Shorter than a header: nothing to answer to.
    for p in [&[][..], &[1, 2, 3], &[0u8; 11]] {
        assert!(matches!(a.answer(p, &z, true), Verdict::Drop), "{p:?}");
    }
    // A header that announces a question that is not there: FORMERR with the same ID.
    let mut p = query("web.weave.local.", RecordType::A).to_vec().unwrap();
    let id = u16::from_be_bytes([p[0], p[1]]);
    p.truncate(16);
    match a.answer(&p, &z, true) {
        Verdict::Reply(b, Outcome::FormErr) => {
            let r = Message::from_vec(&b).unwrap();
            assert_eq!(r.metadata.id, id);
            assert_eq!(r.metadata.response_code, ResponseCode::FormErr);
        }
        other => panic!("{other:?}"),
    }
    // A label longer than 63 bytes.
    let mut p = query("web.weave.local.", RecordType::A).to_vec().unwrap();
    p[12] = 64;
    assert!(matches!(
        a.answer(&p, &z, true),
        Verdict::Reply(_, Outcome::FormErr)
    ));
    // A compression pointer loop.
    let mut p = query("web.weave.local.", RecordType::A).to_vec().unwrap();
    p[12] = 0xc0;
    p[13] = 12;
    assert!(matches!(
        a.answer(&p, &z, true),
        Verdict::Reply(_, Outcome::FormErr)
    ));
    // Two questions.
    let mut q = query("web.weave.local.", RecordType::A);
    q.add_query(Query::query(
        Name::from_ascii("db.fw.weave.local.").unwrap(),
        RecordType::A,
    ));
    assert!(matches!(
        a.answer(&q.to_vec().unwrap(), &z, true),
        Verdict::Reply(_, Outcome::FormErr)
    ));
    // No question.
    let q = Message::query();
    assert!(matches!(
        a.answer(&q.to_vec().unwrap(), &z, true),
        Verdict::Reply(_, Outcome::FormErr)
    ));
}

#[test]
fn responses_are_dropped_and_other_opcodes_not_implemented() {
    let a = answerer();
    let mut q = query("web.weave.local.", RecordType::A);
    q.metadata.message_type = MessageType::Response;
    assert!(matches!(
        a.answer(&q.to_vec().unwrap(), &zone(), true),
        Verdict::Drop
    ));
    let mut q = query("web.weave.local.", RecordType::A);
    q.metadata.op_code = OpCode::Update;
    match a.answer(&q.to_vec().unwrap(), &zone(), true) {
        Verdict::Reply(b, Outcome::NotImp) => {
            let r = Message::from_vec(&b).unwrap();
            assert_eq!(r.metadata.response_code, ResponseCode::NotImp);
        }
        other => panic!("{other:?}"),
    }
}

#[test]
fn servfail_refused_and_fitting_upstream_answers() {
    let a = answerer();
    let q = query("example.com.", RecordType::A);
    let r = Message::from_vec(&a.servfail(&q)).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert_eq!(r.metadata.id, q.metadata.id);
    assert_eq!(r.queries, q.queries);
    let r = Message::from_vec(&a.refused(&q)).unwrap();
    assert_eq!(r.metadata.response_code, ResponseCode::Refused);
    // An upstream answer larger than the client's 512 bytes becomes TC.
    let mut big = Message::response(q.metadata.id, OpCode::Query);
    big.add_query(q.queries[0].clone());
    for i in 0..60u32 {
        big.add_answer(Record::from_rdata(
            Name::from_ascii("example.com.").unwrap(),
            60,
            RData::A(A(Ipv4Addr::from(i))),
        ));
    }
    let bytes = big.to_vec().unwrap();
    assert!(bytes.len() > 512);
    let fitted = Message::from_vec(&fit_udp(&q, bytes)).unwrap();
    assert!(fitted.metadata.truncation);
    assert_eq!(fitted.metadata.id, q.metadata.id);
    let small = a.servfail(&q);
    assert_eq!(fit_udp(&q, small.clone()), small);
}

#[test]
fn bad_domains_are_refused() {
    assert!(Answerer::new("", 1).is_err());
    assert!(Answerer::new("a..b", 1).is_err());
    assert_eq!(
        Answerer::new("Mesos.Local", 1).unwrap().domain(),
        "mesos.local."
    );
}
