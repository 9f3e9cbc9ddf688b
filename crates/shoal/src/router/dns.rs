//! The authoritative DNS server: UDP and TCP (RFC 1035 §4.2.2 length-prefixed messages),
//! messages parsed and written with hickory-proto. The configured names get A or AAAA records
//! of the nodes the map chooses for the client (the EDNS Client Subnet address when the query
//! carries one, echoed with a scope; else the source address); the zone apex answers SOA and
//! NS; other names in the zone are NXDOMAIN, names outside it REFUSED.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

use super::client_subnet::{self, ClientSubnet};
use super::config::DnsConfig;
use super::map::{Map, Matched};

/// What answers are made from: the zone, the names and the map (swapped whole on reload).
pub struct Zone {
    apex: Name,
    names: Vec<Name>,
    /// `names` in wire form, lowercase, for `answer_common`.
    names_wire: Vec<Vec<u8>>,
    ttl: u32,
    answers: usize,
    soa: Record,
    nameservers: Vec<Record>,
    /// The routing map.
    pub map: ArcSwap<Map>,
    /// Answers given, by what decided them: prefix, ASN, country, continent, default.
    pub answered: [AtomicU64; 5],
}

impl Zone {
    /// The zone of `config` (checked: the names are in it) routed by `map`.
    pub fn new(config: &DnsConfig, map: Map) -> Result<Zone, String> {
        let name = |text: &str| {
            Name::from_ascii(text)
                .map(|name| {
                    let mut name = name.to_lowercase();
                    name.set_fqdn(true);
                    name
                })
                .map_err(|error| format!("`{text}`: not a DNS name: {error}"))
        };
        let apex = name(&config.zone)?;
        let ttl = config.ttl.duration().as_secs().min(u64::from(u32::MAX)) as u32;
        let zone = config.zone.trim_end_matches('.');
        let nameservers: Vec<Name> = match config.nameservers.is_empty() {
            true => vec![name(&format!("ns1.{zone}"))?],
            false => config
                .nameservers
                .iter()
                .map(|server| name(server))
                .collect::<Result<_, _>>()?,
        };
        let hostmaster = match config.hostmaster.is_empty() {
            true => name(&format!("hostmaster.{zone}"))?,
            false => name(&config.hostmaster)?,
        };
        let serial = (crate::clock::now_millis() / 1000) as u32;
        let soa = Record::from_rdata(
            apex.clone(),
            ttl,
            RData::SOA(SOA::new(
                nameservers[0].clone(),
                hostmaster,
                serial,
                3600,
                600,
                86400,
                ttl,
            )),
        );
        let names: Vec<Name> = config
            .names
            .iter()
            .map(|text| name(text))
            .collect::<Result<_, _>>()?;
        Ok(Zone {
            names_wire: names.iter().map(wire_form).collect(),
            names,
            soa,
            nameservers: nameservers
                .into_iter()
                .map(|server| Record::from_rdata(apex.clone(), ttl, RData::NS(NS(server))))
                .collect(),
            apex,
            ttl,
            answers: config.answers,
            map: ArcSwap::from_pointee(map),
            answered: Default::default(),
        })
    }

    /// The response to the message in `query` from `source`; `None` for bytes that are not a
    /// DNS query at all (dropped, as a server must not answer garbage).
    pub fn answer(&self, query: &[u8], source: IpAddr) -> Option<Vec<u8>> {
        let mut answer = Answer::default();
        self.answer_into(query, source, &mut answer)
            .then_some(answer.bytes)
    }

    /// `answer`, written into `out` (buffers the caller reuses); `false` when there is
    /// nothing to send.
    pub fn answer_into(&self, query: &[u8], source: IpAddr, out: &mut Answer) -> bool {
        if self.answer_common(query, source, out) {
            return true;
        }
        match self.answer_in_full(query, source) {
            Some(response) => {
                out.bytes = response;
                true
            }
            None => false,
        }
    }

    /// The response to the query nearly every client sends (one question, for a configured
    /// name, A or AAAA in class IN, perhaps an EDNS OPT record with a client subnet), read and
    /// written here in place; `false`, with nothing decided, for any other message, which
    /// `answer_in_full` then handles with hickory-proto's whole-message parser.
    ///
    /// Written by hand because the general path (parse into a `Message`, build one, encode it)
    /// was a third of the router's CPU per query, mostly allocation: this path allocates
    /// nothing. Its answers are the same as the general path's (a unit test compares them).
    fn answer_common(&self, query: &[u8], source: IpAddr, answer: &mut Answer) -> bool {
        let Some(common) = CommonQuery::read(query) else {
            return false;
        };
        let name = &query[12..common.question_end - 4];
        let ours = self.names_wire.iter().any(|wire| {
            wire.len() == name.len()
                && wire
                    .iter()
                    .zip(name)
                    .all(|(wire, byte)| *wire == byte.to_ascii_lowercase())
        });
        if !ours {
            return false;
        }
        let client = common.subnet.map_or(source, |subnet| subnet.client(source));
        let Answer {
            bytes: out,
            addresses,
        } = answer;
        let map = self.map.load();
        let matched = map.choose(client, common.v6, self.answers, addresses);
        if addresses.is_empty() {
            return false; // no data: the general path adds the SOA
        }
        self.count(matched);

        out.clear();
        out.extend_from_slice(&query[..2]);
        // QR, AA, and RD as asked; NOERROR.
        let flags = 0x8400 | (u16::from_be_bytes([query[2], query[3]]) & 0x0100);
        out.extend_from_slice(&flags.to_be_bytes());
        out.extend_from_slice(&1u16.to_be_bytes());
        out.extend_from_slice(&(addresses.len() as u16).to_be_bytes());
        out.extend_from_slice(&0u16.to_be_bytes());
        out.extend_from_slice(&u16::from(common.edns).to_be_bytes());
        out.extend_from_slice(&query[12..common.question_end]);
        for address in addresses.iter() {
            // The owner is the question's name: a pointer to offset 12.
            out.extend_from_slice(&[0xC0, 0x0C]);
            let (kind, bytes): (u16, &[u8]) = match address {
                IpAddr::V4(v4) => (1, &v4.octets()[..]),
                IpAddr::V6(v6) => (28, &v6.octets()[..]),
            };
            out.extend_from_slice(&kind.to_be_bytes());
            out.extend_from_slice(&1u16.to_be_bytes());
            out.extend_from_slice(&self.ttl.to_be_bytes());
            out.extend_from_slice(&(bytes.len() as u16).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        if common.edns {
            // OPT: root owner, payload size 1232, version 0, no flags.
            out.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
            match common.subnet {
                Some(subnet) => {
                    // The subnet echoed, with the scope of the data that decided the answer.
                    let scope = subnet.scope(|| map.scope(client, matched));
                    out.extend_from_slice(&(4 + subnet.length as u16).to_be_bytes());
                    out.extend_from_slice(&8u16.to_be_bytes());
                    out.extend_from_slice(&(subnet.length as u16).to_be_bytes());
                    subnet.echo(query, scope, out);
                }
                None => out.extend_from_slice(&0u16.to_be_bytes()),
            }
        }
        true
    }

    /// The zone of `examples/route.toml` in the project at `root`, with the GeoIP test
    /// databases of `root/testdata/geoip` and an IPv6 address for the default node.
    /// For the tests and the `dns_query` fuzz target.
    #[doc(hidden)]
    pub fn example(root: &std::path::Path) -> Result<Zone, String> {
        let text = std::fs::read_to_string(root.join("examples/route.toml"))
            .map_err(|error| error.to_string())?
            .replace(
                "testdata/geoip",
                &root.join("testdata/geoip").to_string_lossy(),
            )
            .replace(r#"["127.0.0.13"]"#, r#"["127.0.0.13", "2001:db8::13"]"#);
        let config: super::config::RouterConfig =
            crate::config::parse_toml(&text, std::path::Path::new("route.toml"))
                .map_err(|error| error.to_string())?;
        Zone::new(&config.dns, Map::build(&config, None))
    }

    /// Whether the common path's response to `query` is the general path's, as a client sees
    /// it: `Ok(false)` when the common path leaves the query alone. For the tests and the
    /// `dns_query` fuzz target.
    #[doc(hidden)]
    pub fn check_common_path(&self, query: &[u8], source: IpAddr) -> Result<bool, String> {
        let mut common = Answer::default();
        if !self.answer_common(query, source, &mut common) {
            return Ok(false);
        }
        let general = self
            .answer_in_full(query, source)
            .ok_or("the general path drops a query the common path answers")?;
        let (common, general) = (seen(&common.bytes)?, seen(&general)?);
        match common == general {
            true => Ok(true),
            false => Err(format!("common path: {common}\ngeneral path: {general}")),
        }
    }

    /// Any message: parsed whole with hickory-proto, answered (SOA, NS, NXDOMAIN, REFUSED,
    /// FORMERR, NOTIMP, no data), encoded.
    fn answer_in_full(&self, query: &[u8], source: IpAddr) -> Option<Vec<u8>> {
        // With an OPT record when the query had one (RFC 6891 §7).
        let malformed = |with_opt: bool| {
            let id = u16::from_be_bytes([query[0], query[1]]);
            let mut refused = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
            if with_opt {
                let mut edns = Edns::new();
                edns.set_max_payload(1232);
                refused.set_edns(edns);
            }
            refused.to_vec().ok()
        };
        if query.len() < 12 || query[2] & 0x80 != 0 {
            return None; // not a query: nothing to answer
        }
        let Ok(subnet) = client_subnet::in_message(query) else {
            // Records beyond the question: the OPT record among them, most likely.
            return malformed(query[10..12] != [0, 0]);
        };
        // hickory-proto refuses FAMILY 0 (see client_subnet).
        let parsed = subnet.map_or(query.into(), |subnet| subnet.parseable(query));
        let Ok(request) = Message::from_vec(&parsed) else {
            return malformed(false);
        };
        if request.message_type() != MessageType::Query {
            return None;
        }
        let mut response = Message::new();
        response
            .set_id(request.id())
            .set_message_type(MessageType::Response)
            .set_op_code(request.op_code())
            .set_recursion_desired(request.recursion_desired())
            .set_authoritative(true);
        if request.extensions().is_some() {
            let mut edns = Edns::new();
            edns.set_max_payload(1232);
            response.set_edns(edns);
        }
        let [question] = request.queries() else {
            response.set_response_code(ResponseCode::FormErr);
            return response.to_vec().ok();
        };
        if request.op_code() != OpCode::Query {
            response.set_response_code(ResponseCode::NotImp);
            return response.to_vec().ok();
        }
        response.add_query(question.clone());
        let name = question.name().to_lowercase();
        let mut scope = 0;
        if self.names.contains(&name) {
            match question.query_type() {
                kind @ (RecordType::A | RecordType::AAAA | RecordType::ANY) => {
                    let v6 = kind == RecordType::AAAA;
                    let client = subnet.map_or(source, |subnet| subnet.client(source));
                    let mut addresses = Vec::new();
                    let map = self.map.load();
                    let matched = map.choose(client, v6, self.answers, &mut addresses);
                    self.count(matched);
                    scope = subnet.map_or(0, |subnet| subnet.scope(|| map.scope(client, matched)));
                    for address in addresses {
                        let rdata = match address {
                            IpAddr::V4(v4) => RData::A(A(v4)),
                            IpAddr::V6(v6) => RData::AAAA(AAAA(v6)),
                        };
                        response.add_answer(Record::from_rdata(name.clone(), self.ttl, rdata));
                    }
                    if response.answers().is_empty() {
                        response.add_name_server(self.soa.clone());
                    }
                }
                _ => {
                    response.add_name_server(self.soa.clone());
                }
            }
        } else if name == self.apex {
            match question.query_type() {
                RecordType::SOA => {
                    response.add_answer(self.soa.clone());
                }
                RecordType::NS => {
                    response.add_answers(self.nameservers.iter().cloned());
                }
                _ => {
                    response.add_name_server(self.soa.clone());
                }
            }
        } else if self.apex.zone_of(&name) {
            response.set_response_code(ResponseCode::NXDomain);
            response.add_name_server(self.soa.clone());
        } else {
            response.set_authoritative(false);
            response.set_response_code(ResponseCode::Refused);
        }
        if let (Some(subnet), Some(edns)) = (subnet, response.extensions_mut()) {
            let mut echo = Vec::with_capacity(subnet.length);
            subnet.echo(query, scope, &mut echo);
            edns.options_mut()
                .insert(EdnsOption::Unknown(u16::from(EdnsCode::Subnet), echo));
        }
        response.to_vec().ok()
    }

    fn count(&self, matched: Matched) {
        let index = match matched {
            Matched::Prefix(_) => 0,
            Matched::Asn(_) => 1,
            Matched::Country(_) => 2,
            Matched::Continent(_) => 3,
            Matched::Default => 4,
        };
        self.answered[index].fetch_add(1, Ordering::Relaxed);
    }
}

/// Answers the queries that reach `socket` until `owner` is dropped, on the calling thread.
///
/// A blocking socket on a thread of its own rather than a task on the runtime: a query then
/// costs one wake-up, a `recvfrom` and a `sendto`. Through the runtime it also cost an
/// `epoll_wait`, a `recvfrom` that finds nothing, and a futex wake of a parked worker, which
/// at moderate rates (every query arriving to an idle socket) was half the router's CPU.
/// `socket` has a read timeout, so the thread notices `owner` is gone even when no query comes.
pub fn serve_udp<T>(socket: std::net::UdpSocket, zone: Arc<Zone>, owner: Weak<T>) {
    let mut buffer = vec![0u8; 4096];
    let mut answer = Answer::default();
    while owner.strong_count() > 0 {
        let Ok((length, peer)) = socket.recv_from(&mut buffer) else {
            continue;
        };
        if zone.answer_into(&buffer[..length], peer.ip(), &mut answer) {
            let _ = socket.send_to(&answer.bytes, peer);
        }
    }
}

/// Answers DNS over TCP on `listener` until the process ends.
pub async fn serve_tcp(listener: TcpListener, zone: Arc<Zone>) {
    loop {
        let Ok((stream, peer)) = listener.accept().await else {
            continue;
        };
        tokio::spawn(tcp_connection(stream, peer, Arc::clone(&zone)));
    }
}

async fn tcp_connection(mut stream: TcpStream, peer: SocketAddr, zone: Arc<Zone>) {
    let idle = std::time::Duration::from_secs(10);
    loop {
        let mut length = [0u8; 2];
        match tokio::time::timeout(idle, stream.read_exact(&mut length)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let mut query = vec![0u8; usize::from(u16::from_be_bytes(length))];
        match tokio::time::timeout(idle, stream.read_exact(&mut query)).await {
            Ok(Ok(_)) => {}
            _ => return,
        }
        let Some(response) = zone.answer(&query, peer.ip()) else {
            return;
        };
        let Ok(length) = u16::try_from(response.len()) else {
            return;
        };
        let mut framed = Vec::with_capacity(response.len() + 2);
        framed.extend_from_slice(&length.to_be_bytes());
        framed.extend_from_slice(&response);
        if stream.write_all(&framed).await.is_err() {
            return;
        }
    }
}

/// What a client sees of a response: everything but the records' owner-name case and the
/// encoding (compression).
fn seen(response: &[u8]) -> Result<String, String> {
    // An echoed FAMILY 0, which hickory-proto cannot parse, is read as 1.
    let parsed = match client_subnet::in_message(response) {
        Ok(Some(subnet)) => subnet.parseable(response),
        _ => response.into(),
    };
    let message = Message::from_vec(&parsed).map_err(|error| error.to_string())?;
    let records = |records: &[Record]| -> Vec<String> {
        records
            .iter()
            .map(|record| {
                format!(
                    "{} {} {} {:?}",
                    record.name().to_lowercase(),
                    record.record_type(),
                    record.ttl(),
                    record.data()
                )
            })
            .collect()
    };
    Ok(format!(
        "{:?} {:?} {:?} aa={} tc={} rd={} ra={} {:?} q={:?} an={:?} ns={:?} edns={:?}",
        message.id(),
        message.message_type(),
        message.op_code(),
        message.authoritative(),
        message.truncated(),
        message.recursion_desired(),
        message.recursion_available(),
        message.response_code(),
        message.queries(),
        records(message.answers()),
        records(message.name_servers()),
        message.extensions(),
    ))
}

/// A response being written, and the buffers it is made in, reused from query to query.
#[derive(Default)]
pub struct Answer {
    /// The response message.
    pub bytes: Vec<u8>,
    /// The node addresses chosen.
    addresses: Vec<IpAddr>,
}

/// `name` in wire form (length-prefixed labels, then the root), lowercase.
fn wire_form(name: &Name) -> Vec<u8> {
    let mut wire = Vec::new();
    for label in name.iter() {
        wire.push(label.len() as u8);
        wire.extend(label.iter().map(u8::to_ascii_lowercase));
    }
    wire.push(0);
    wire
}

/// What `Zone::answer_common` needs of a query of the common shape.
struct CommonQuery {
    /// Where the question (name, type, class) ends.
    question_end: usize,
    v6: bool,
    /// Whether the query has an OPT record (the answer then has one).
    edns: bool,
    subnet: Option<ClientSubnet>,
}

impl CommonQuery {
    /// `Some` only for a well-formed query of exactly this shape: header with QR 0, opcode
    /// QUERY, not truncated; one question of type A or AAAA, class IN, a name without
    /// compression; no answer or authority records; at most an OPT record (version 0, at most
    /// one client subnet option, well formed), and nothing after it. Anything else is
    /// left to the general path, which knows what to answer (FORMERR, BADVERS, ...).
    fn read(query: &[u8]) -> Option<CommonQuery> {
        let u16_at = |at: usize| -> Option<u16> {
            Some(u16::from_be_bytes([*query.get(at)?, *query.get(at + 1)?]))
        };
        if u16_at(2)? & 0xFE00 != 0 || u16_at(4)? != 1 || u16_at(6)? != 0 || u16_at(8)? != 0 {
            return None;
        }
        let additional = u16_at(10)?;
        let mut at = 12;
        loop {
            let length = usize::from(*query.get(at)?);
            at += 1;
            if length == 0 {
                break;
            }
            if length > 63 {
                return None; // a pointer or an extended label type
            }
            at += length;
        }
        if at - 12 > 255 {
            return None;
        }
        let v6 = match u16_at(at)? {
            1 => false,
            28 => true,
            _ => return None,
        };
        if u16_at(at + 2)? != 1 {
            return None;
        }
        let question_end = at + 4;
        let mut common = CommonQuery {
            question_end,
            v6,
            edns: false,
            subnet: None,
        };
        match additional {
            0 if query.len() == question_end => return Some(common),
            1 => {}
            _ => return None,
        }
        // The OPT record: root owner, type 41, payload size, extended RCODE, version 0, flags.
        let opt = question_end;
        if *query.get(opt)? != 0 || u16_at(opt + 1)? != 41 || *query.get(opt + 6)? != 0 {
            return None;
        }
        let options_end = opt + 11 + usize::from(u16_at(opt + 9)?);
        if options_end != query.len() {
            return None;
        }
        common.edns = true;
        common.subnet = client_subnet::in_options(query, opt + 11, options_end).ok()?;
        Some(common)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::Query;
    use hickory_proto::rr::rdata::opt::EdnsOption;

    fn zone() -> Zone {
        Zone::example(&std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")).unwrap()
    }

    fn query(name: &str, kind: RecordType, edns: Option<Vec<EdnsOption>>, rd: bool) -> Vec<u8> {
        let mut message = Message::new();
        message
            .set_id(0x1234)
            .set_message_type(MessageType::Query)
            .set_op_code(OpCode::Query)
            .set_recursion_desired(rd)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
        if let Some(options) = edns {
            let mut edns = Edns::new();
            edns.set_max_payload(4096);
            for option in options {
                edns.options_mut().insert(option);
            }
            message.set_edns(edns);
        }
        message.to_vec().unwrap()
    }

    fn subnet(address: &str, prefix: u8) -> EdnsOption {
        let subnet =
            hickory_proto::rr::rdata::opt::ClientSubnet::new(address.parse().unwrap(), prefix, 0);
        EdnsOption::Subnet(subnet)
    }

    #[test]
    fn the_common_path_answers_as_the_general_one_does() {
        let zone = zone();
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let cookie = EdnsOption::Unknown(10, vec![1, 2, 3, 4, 5, 6, 7, 8]);
        let mut common = Vec::new();
        let mut general_only = Vec::new();
        for name in [
            "dl.cdn.test.",
            "DL.Cdn.TEST.",
            "cdn.test.",
            "www.cdn.test.",
            "example.org.",
        ] {
            for kind in [
                RecordType::A,
                RecordType::AAAA,
                RecordType::MX,
                RecordType::ANY,
            ] {
                for edns in [
                    None,
                    Some(vec![]),
                    Some(vec![cookie.clone()]),
                    Some(vec![subnet("81.2.69.142", 32)]),
                    Some(vec![subnet("81.2.69.0", 24), cookie.clone()]),
                    Some(vec![subnet("89.160.20.128", 25)]),
                    Some(vec![subnet("216.160.83.56", 29)]),
                    Some(vec![subnet("0.0.0.0", 0)]),
                    Some(vec![subnet("2a02:d3c0::", 29)]),
                    Some(vec![subnet("2001:db8::1", 128)]),
                    Some(vec![subnet("::", 0)]),
                    // A scope in the query, which should be 0, is ignored.
                    Some(vec![EdnsOption::Unknown(8, vec![0, 1, 24, 8, 81, 2, 69])]),
                    // FAMILY 0 (source 0), which hickory-proto cannot parse in the answers.
                    Some(vec![EdnsOption::Unknown(8, vec![0, 0, 0, 0])]),
                ] {
                    for rd in [false, true] {
                        let query = query(name, kind, edns.clone(), rd);
                        match zone.check_common_path(&query, source) {
                            Ok(true) => common.push(query),
                            Ok(false) => general_only.push((name, kind)),
                            Err(difference) => panic!("{name} {kind} {edns:?}:\n{difference}"),
                        }
                    }
                }
            }
        }
        // Every A and AAAA query for the configured name, in either case, took the common
        // path (the IPv6 ones have a node with an IPv6 address); nothing else did.
        assert_eq!(common.len(), 2 * 2 * 13 * 2);
        assert!(general_only
            .iter()
            .all(|(name, kind)| !name.eq_ignore_ascii_case("dl.cdn.test.")
                || !matches!(kind, RecordType::A | RecordType::AAAA)));
    }

    #[test]
    fn the_common_path_leaves_irregular_queries_to_the_general_one() {
        let zone = zone();
        let source: IpAddr = "127.0.0.1".parse().unwrap();
        let mut out = Answer::default();
        let regular = query(
            "dl.cdn.test.",
            RecordType::A,
            Some(vec![subnet("81.2.69.0", 24)]),
            true,
        );
        assert!(zone.answer_common(&regular, source, &mut out));
        // The ECS option's data is the last 7 bytes: family (2), source, scope, 3 address bytes.
        let ecs = regular.len() - 7;
        let mutate = |change: &dyn Fn(&mut Vec<u8>)| {
            let mut query = regular.clone();
            change(&mut query);
            query
        };
        let irregular = [
            ("a response", mutate(&|q| q[2] |= 0x80)),
            ("truncated", mutate(&|q| q[2] |= 0x02)),
            ("opcode NOTIFY", mutate(&|q| q[2] |= 0x20)),
            ("two questions", mutate(&|q| q[5] = 2)),
            ("an answer record", mutate(&|q| q[7] = 1)),
            ("a byte after the OPT record", mutate(&|q| q.push(0))),
            ("cut short", regular[..regular.len() - 1].to_vec()),
            ("EDNS version 1", mutate(&|q| q[ecs - 4 - 11 + 6] = 1)),
            ("family 3", mutate(&|q| q[ecs + 1] = 3)),
            (
                "source past the address bytes",
                mutate(&|q| q[ecs + 2] = 32),
            ),
            (
                "bits set past the source prefix",
                mutate(&|q| q[ecs + 2] = 20),
            ),
            ("a 33-bit IPv4 prefix", mutate(&|q| q[ecs + 2] = 33)),
            ("header only", regular[..12].to_vec()),
        ];
        for (what, query) in irregular {
            assert!(
                !zone.answer_common(&query, source, &mut out),
                "took the common path: {what}"
            );
        }
        // A compressed question name is left alone too.
        let mut compressed = regular[..12].to_vec();
        compressed.extend_from_slice(&[0xC0, 0x0C, 0, 1, 0, 1]);
        compressed[11] = 0;
        assert!(!zone.answer_common(&compressed, source, &mut out));
    }
}
