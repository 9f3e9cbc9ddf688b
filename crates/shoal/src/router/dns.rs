//! The authoritative DNS server: UDP and TCP (RFC 1035 §4.2.2 length-prefixed messages),
//! messages parsed and written with hickory-proto. The configured names get A or AAAA records
//! of the nodes the map chooses for the client (the EDNS Client Subnet address when the query
//! carries one, echoed with a scope; else the source address); the zone apex answers SOA and
//! NS; other names in the zone are NXDOMAIN, names outside it REFUSED.

use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use arc_swap::ArcSwap;
use hickory_proto::op::{Edns, Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::rdata::{A, AAAA, NS, SOA};
use hickory_proto::rr::{Name, RData, Record, RecordType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream, UdpSocket};

use super::config::DnsConfig;
use super::map::{Map, Matched};

/// What answers are made from: the zone, the names and the map (swapped whole on reload).
pub struct Zone {
    apex: Name,
    names: Vec<Name>,
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
        let serial = (crate::proxy::now_millis() / 1000) as u32;
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
        Ok(Zone {
            names: config
                .names
                .iter()
                .map(|text| name(text))
                .collect::<Result<_, _>>()?,
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
        let request = match Message::from_vec(query) {
            Ok(request) => request,
            Err(_) if query.len() >= 12 => {
                let id = u16::from_be_bytes([query[0], query[1]]);
                let refused = Message::error_msg(id, OpCode::Query, ResponseCode::FormErr);
                return refused.to_vec().ok();
            }
            Err(_) => return None,
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
        let subnet =
            request
                .extensions()
                .as_ref()
                .and_then(|edns| match edns.option(EdnsCode::Subnet) {
                    Some(EdnsOption::Subnet(subnet)) => Some(*subnet),
                    _ => None,
                });
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
                    let client = subnet.map_or(source, |subnet| subnet.addr());
                    let map = self.map.load();
                    let (addresses, matched) = map.choose(client, v6, self.answers);
                    self.count(matched);
                    // The answer holds for the whole subnet the client sent.
                    scope = subnet.map_or(0, |subnet| subnet.source_prefix());
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
            edns.options_mut()
                .insert(EdnsOption::Subnet(ClientSubnet::new(
                    subnet.addr(),
                    subnet.source_prefix(),
                    scope,
                )));
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

/// Answers the queries that reach `socket` until the process ends.
pub async fn serve_udp(socket: UdpSocket, zone: Arc<Zone>) {
    let mut buffer = vec![0u8; 4096];
    loop {
        let Ok((length, peer)) = socket.recv_from(&mut buffer).await else {
            continue;
        };
        if let Some(response) = zone.answer(&buffer[..length], peer.ip()) {
            let _ = socket.send_to(&response, peer).await;
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
