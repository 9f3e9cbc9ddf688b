//! The request router's DNS answers: `examples/route.toml` (GB → 127.0.0.11, AS29518 →
//! 127.0.0.12, the operator prefix 216.160.83.56/29 → 127.0.0.14, anyone else → 127.0.0.13)
//! against the test databases of testdata/geoip, asked with `dig` (when installed; CI installs it) and
//! with a Rust client (hickory-proto messages over UDP), client addresses given as EDNS Client
//! Subnet.

use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsCode, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};
use shoal::router::config::RouterConfig;
use shoal::router::Router;

fn geoip() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../testdata/geoip")
}

/// `examples/route.toml` with its database paths made absolute (tests run in crates/shoal).
fn example() -> RouterConfig {
    let file = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/route.toml");
    let mut config = RouterConfig::load(&file).unwrap();
    config.geoip.country = Some(geoip().join("country.mmdb"));
    config.geoip.asn = Some(geoip().join("asn.mmdb"));
    config
}

async fn start(config: &RouterConfig) -> SocketAddr {
    let router = start_router(config.clone(), None).await;
    let address = router.dns[0];
    // The listeners' tasks hold what they need; the handle may go.
    std::mem::forget(router);
    address
}

/// Adds `node` to the configuration and to the group of the GB rule.
fn add_to_gb(config: &mut RouterConfig, node: shoal::router::config::NodeConfig) {
    config
        .groups
        .iter_mut()
        .find(|group| group.name == "gb")
        .unwrap()
        .nodes
        .push(node.name.clone());
    config.nodes.push(node);
}

async fn start_router(mut config: RouterConfig, file: Option<PathBuf>) -> std::sync::Arc<Router> {
    config.admin.listen = Some("127.0.0.1:0".parse().unwrap());
    // Not port 0: the kernel may give a SO_REUSEPORT UDP socket bound to port 0 the port of
    // another router of this user, and the two then share the queries.
    Router::start(config, &[crate::process::free_port()], None, file)
        .await
        .unwrap()
}

async fn gets(server: SocketAddr, client: &str) -> Vec<IpAddr> {
    addresses(
        &ask(
            server,
            "dl.cdn.test",
            RecordType::A,
            Some((client.parse().unwrap(), 32)),
        )
        .await,
    )
}

/// What `client` gets, asked again (for up to 5 s) until it is `expected`.
async fn gets_soon(server: SocketAddr, client: &str, expected: &str) -> Vec<IpAddr> {
    let mut answer = Vec::new();
    for _ in 0..100 {
        answer = gets(server, client).await;
        if answer == [ip(expected)] {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    answer
}

fn ip(text: &str) -> IpAddr {
    text.parse().unwrap()
}

/// Asks `server` for `name` `kind` over UDP, as a client in `subnet` (EDNS Client Subnet).
async fn ask(
    server: SocketAddr,
    name: &str,
    kind: RecordType,
    subnet: Option<(IpAddr, u8)>,
) -> Message {
    let mut query = Message::new();
    query
        .set_id(4242)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), kind));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    if let Some((address, prefix)) = subnet {
        edns.options_mut()
            .insert(EdnsOption::Subnet(ClientSubnet::new(address, prefix, 0)));
    }
    query.set_edns(edns);
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .unwrap();
    let mut buffer = vec![0u8; 4096];
    let (length, _) = tokio::time::timeout(
        std::time::Duration::from_secs(5),
        socket.recv_from(&mut buffer),
    )
    .await
    .expect("an answer")
    .unwrap();
    Message::from_vec(&buffer[..length]).unwrap()
}

fn addresses(answer: &Message) -> Vec<IpAddr> {
    answer
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(IpAddr::V4(a.0)),
            RData::AAAA(aaaa) => Some(IpAddr::V6(aaaa.0)),
            _ => None,
        })
        .collect()
}

/// With the /24 client subnets most public resolvers send, the scope is the prefix length of
/// the data that decided the answer, not the source prefix: a /24 that holds a longer operator
/// prefix gets a scope longer than 24 (its answer is not the same for all of it), and a /24 in
/// a wide network without data a shorter one.
#[tokio::test]
async fn the_client_subnet_scope_is_that_of_the_deciding_data() {
    let server = start(&example()).await;
    for (subnet, expected, scope) in [
        ("81.2.69.0", "127.0.0.11", 24),    // the GB network is a /24
        ("89.160.20.0", "127.0.0.12", 24),  // so is the AS29518 one
        ("216.160.83.0", "127.0.0.13", 27), // holds the operator's 216.160.83.56/29
        ("8.8.8.0", "127.0.0.13", 6),       // nothing in 8.0.0.0/6
    ] {
        let answer = ask(server, "dl.cdn.test", RecordType::A, Some((ip(subnet), 24))).await;
        assert_eq!(addresses(&answer), [ip(expected)], "{subnet}/24");
        let echoed = echoed_subnet(&answer);
        assert_eq!(echoed.source_prefix(), 24);
        assert_eq!(echoed.scope_prefix(), scope, "{subnet}/24");
    }
    // The operator prefix itself, sent whole: its own length.
    let answer = ask(
        server,
        "dl.cdn.test",
        RecordType::A,
        Some((ip("216.160.83.56"), 29)),
    )
    .await;
    assert_eq!(addresses(&answer), [ip("127.0.0.14")]);
    assert_eq!(echoed_subnet(&answer).scope_prefix(), 29);
}

/// The client subnet option is read as RFC 7871 says, on a path hickory-proto's own parser
/// does not take: SOURCE PREFIX-LENGTH 0 (with FAMILY 1, 2 or 0) places the client by the
/// query's source address, with scope 0; the FAMILY, SOURCE PREFIX-LENGTH and ADDRESS are
/// echoed exactly as sent; more address octets than the prefix needs, or bits set past it,
/// are FORMERR (§6). Over UDP and TCP, for the configured name and for the apex.
#[tokio::test]
async fn the_client_subnet_option_is_read_as_rfc_7871_says() {
    let mut config = example();
    // The test's own source address gets an answer of its own, so that being placed by it
    // shows.
    config.rules[0].prefixes.push("127.0.0.1/32".into());
    let server = start(&config).await;
    for (what, option, expected) in [
        ("IPv4, source 0", &[0, 1, 0, 0][..], Some("127.0.0.14")),
        ("IPv6, source 0", &[0, 2, 0, 0][..], Some("127.0.0.14")),
        ("family 0, source 0", &[0, 0, 0, 0][..], Some("127.0.0.14")),
        ("a /24", &[0, 1, 24, 0, 81, 2, 69][..], Some("127.0.0.11")),
        (
            "a /24, scope 8 sent",
            &[0, 1, 24, 8, 81, 2, 69][..],
            Some("127.0.0.11"),
        ),
        (
            "a /24 with 4 octets",
            &[0, 1, 24, 0, 81, 2, 69, 0][..],
            None,
        ),
        (
            "a /20 with bits past it",
            &[0, 1, 20, 0, 81, 2, 69][..],
            None,
        ),
        ("a /33", &[0, 1, 33, 0, 81, 2, 69, 142, 0][..], None),
        ("family 0 with a prefix", &[0, 0, 8, 0, 81][..], None),
        ("family 3", &[0, 3, 0, 0][..], None),
        ("too short", &[0, 1, 0][..], None),
    ] {
        for tcp in [false, true] {
            for name in ["dl.cdn.test", "cdn.test"] {
                let answer = ask_raw(server, name, option, tcp).await;
                let code = answer[3] & 0x0F;
                let Some(expected) = expected else {
                    assert_eq!(code, 1, "{what}: FORMERR");
                    assert_eq!(&answer[10..12], &[0, 1], "{what}: with an OPT record");
                    continue;
                };
                assert_eq!(code, 0, "{what}: NOERROR");
                // The echo is the last option of the OPT record, which is the last record.
                let echo = &answer[answer.len() - option.len()..];
                let scope = if option[2] == 0 { 0 } else { 24 };
                assert_eq!(&echo[..3], &option[..3], "{what}: echoed as sent");
                assert_eq!(&echo[4..], &option[4..], "{what}: echoed as sent");
                if name == "cdn.test" {
                    continue; // the apex: a SOA, and scope 0
                }
                assert_eq!(echo[3], scope, "{what}: scope");
                // The one A record's data ends where the OPT record starts.
                let opt = answer.len() - option.len() - 4 - 11;
                let address =
                    std::net::Ipv4Addr::from(<[u8; 4]>::try_from(&answer[opt - 4..opt]).unwrap());
                assert_eq!(address.to_string(), expected, "{what}");
            }
        }
    }
}

/// Asks `server` for `name` A with an EDNS Client Subnet option of exactly the bytes `option`
/// (FAMILY, SOURCE and SCOPE PREFIX-LENGTH, ADDRESS), over UDP or TCP; the raw answer.
async fn ask_raw(server: SocketAddr, name: &str, option: &[u8], tcp: bool) -> Vec<u8> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut query = vec![0x12, 0x34, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 1];
    for label in name.split('.') {
        query.push(label.len() as u8);
        query.extend_from_slice(label.as_bytes());
    }
    query.extend_from_slice(&[0, 0, 1, 0, 1]);
    // OPT: root, type 41, payload 1232, no extended RCODE, version 0, no flags.
    query.extend_from_slice(&[0, 0, 41, 0x04, 0xD0, 0, 0, 0, 0]);
    query.extend_from_slice(&(4 + option.len() as u16).to_be_bytes());
    query.extend_from_slice(&[0, 8]);
    query.extend_from_slice(&(option.len() as u16).to_be_bytes());
    query.extend_from_slice(option);
    let wait = std::time::Duration::from_secs(5);
    if tcp {
        let mut stream = tokio::net::TcpStream::connect(server).await.unwrap();
        let mut framed = (query.len() as u16).to_be_bytes().to_vec();
        framed.extend_from_slice(&query);
        stream.write_all(&framed).await.unwrap();
        let mut length = [0u8; 2];
        tokio::time::timeout(wait, stream.read_exact(&mut length))
            .await
            .expect("an answer")
            .unwrap();
        let mut answer = vec![0u8; usize::from(u16::from_be_bytes(length))];
        stream.read_exact(&mut answer).await.unwrap();
        return answer;
    }
    let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
    socket.send_to(&query, server).await.unwrap();
    let mut buffer = vec![0u8; 4096];
    let (length, _) = tokio::time::timeout(wait, socket.recv_from(&mut buffer))
        .await
        .expect("an answer")
        .unwrap();
    buffer.truncate(length);
    buffer
}

/// The client subnet option an answer echoes.
fn echoed_subnet(answer: &Message) -> ClientSubnet {
    match answer
        .extensions()
        .as_ref()
        .unwrap()
        .option(EdnsCode::Subnet)
    {
        Some(EdnsOption::Subnet(subnet)) => *subnet,
        other => panic!("no client subnet echoed: {other:?}"),
    }
}

#[tokio::test]
async fn clients_get_the_nodes_of_their_prefix_network_country_or_the_default() {
    let server = start(&example()).await;
    // The scope (RFC 7871 §7.2.1) is the prefix length over which the data consulted gives
    // the same answer (testdata/geoip/README.md has the networks): 81.2.69.0/24 in GB;
    // 89.160.20.0/24 in AS29518; the operator prefix is a /29; 8.8.8.8 is in 8.0.0.0/6, where
    // neither database has a network (both have one in the /5 around it).
    for (client, expected, scope) in [
        ("81.2.69.142", "127.0.0.11", 24),
        ("89.160.20.130", "127.0.0.12", 24),
        ("216.160.83.57", "127.0.0.14", 29),
        ("8.8.8.8", "127.0.0.13", 6),
    ] {
        let answer = ask(
            server,
            "dl.cdn.test",
            RecordType::A,
            Some((client.parse().unwrap(), 32)),
        )
        .await;
        assert_eq!(answer.response_code(), ResponseCode::NoError);
        assert!(answer.authoritative());
        assert_eq!(
            addresses(&answer),
            [expected.parse::<IpAddr>().unwrap()],
            "{client}"
        );
        assert_eq!(answer.answers()[0].ttl(), 30);
        // The client subnet is echoed, with the scope the answer holds for.
        let echoed = echoed_subnet(&answer);
        assert_eq!(echoed.source_prefix(), 32);
        assert_eq!(echoed.scope_prefix(), scope, "{client}");
    }
    // A /27 subnet in GB: the same answer for all of it.
    let subnet = Some((ip("81.2.69.160"), 27));
    let answer = ask(server, "dl.cdn.test", RecordType::A, subnet).await;
    assert_eq!(addresses(&answer), [ip("127.0.0.11")]);
    // Without a subnet, the source address (loopback: in no database) decides.
    let answer = ask(server, "dl.cdn.test", RecordType::A, None).await;
    assert_eq!(
        addresses(&answer),
        ["127.0.0.13".parse::<IpAddr>().unwrap()]
    );
    // No IPv6 node: an empty answer with the SOA, not an error.
    let answer = ask(server, "dl.cdn.test", RecordType::AAAA, None).await;
    assert_eq!(answer.response_code(), ResponseCode::NoError);
    assert!(answer.answers().is_empty());
    assert_eq!(answer.name_servers()[0].record_type(), RecordType::SOA);
    // The zone: SOA and NS at the apex, NXDOMAIN inside, REFUSED outside.
    let soa = ask(server, "cdn.test", RecordType::SOA, None).await;
    assert_eq!(soa.answers()[0].record_type(), RecordType::SOA);
    let ns = ask(server, "cdn.test", RecordType::NS, None).await;
    assert_eq!(ns.answers()[0].record_type(), RecordType::NS);
    let missing = ask(server, "other.cdn.test", RecordType::A, None).await;
    assert_eq!(missing.response_code(), ResponseCode::NXDomain);
    let outside = ask(server, "example.com", RecordType::A, None).await;
    assert_eq!(outside.response_code(), ResponseCode::Refused);
}

#[tokio::test]
async fn dig_sees_the_routing_over_udp_and_tcp() {
    if std::process::Command::new("dig")
        .arg("-v")
        .output()
        .is_err()
    {
        assert!(
            std::env::var_os("SHOAL_REQUIRE_DIG").is_none(),
            "SHOAL_REQUIRE_DIG is set but dig is not installed"
        );
        eprintln!("dig is not installed (apt install bind9-dnsutils): test skipped");
        return;
    }
    let server = start(&example()).await;
    let dig = |args: Vec<String>| {
        tokio::task::spawn_blocking(move || {
            let output = std::process::Command::new("dig")
                .args([
                    "@127.0.0.1",
                    "-p",
                    &server.port().to_string(),
                    "+time=5",
                    "+tries=1",
                ])
                .args(&args)
                .output()
                .unwrap();
            String::from_utf8_lossy(&output.stdout).into_owned()
        })
    };
    for (client, expected) in [
        ("81.2.69.142", "127.0.0.11"),
        ("89.160.20.130", "127.0.0.12"),
        ("216.160.83.57", "127.0.0.14"),
        ("8.8.8.8", "127.0.0.13"),
    ] {
        let short = dig(vec![
            format!("+subnet={client}/32"),
            "+short".into(),
            "dl.cdn.test".into(),
            "A".into(),
        ])
        .await
        .unwrap();
        assert_eq!(short.trim(), expected, "{client}");
    }
    let full = dig(vec![
        "+subnet=81.2.69.142/32".into(),
        "dl.cdn.test".into(),
        "A".into(),
    ])
    .await
    .unwrap();
    assert!(full.contains("flags: qr aa"), "{full}");
    assert!(full.contains("CLIENT-SUBNET: 81.2.69.142/32/24"), "{full}");
    let tcp = dig(vec![
        "+tcp".into(),
        "+subnet=89.160.20.130/32".into(),
        "+short".into(),
        "dl.cdn.test".into(),
    ])
    .await
    .unwrap();
    assert_eq!(tcp.trim(), "127.0.0.12");
}

#[tokio::test]
async fn without_its_geoip_databases_the_router_answers_from_the_default() {
    let mut config = example();
    config.geoip.country = Some(PathBuf::from("/nonexistent/GeoIP2-Country.mmdb"));
    let server = start(&config).await;
    assert_eq!(gets(server, "81.2.69.142").await, [ip("127.0.0.13")]);
    // Operator prefixes need no database.
    assert_eq!(gets(server, "216.160.83.57").await, [ip("127.0.0.14")]);
}

#[tokio::test]
async fn a_bad_router_config_names_the_file_and_what_is_wrong() {
    let dir = crate::disk::TempDir::new("router-config");
    let file = dir.0.join("route.toml");
    let check = |text: &str, expected: &str| {
        std::fs::write(&file, text).unwrap();
        let error = RouterConfig::load(&file).unwrap_err().to_string();
        assert!(
            error.contains("route.toml") && error.contains(expected),
            "{error}"
        );
    };
    let base = "[dns]\nzone = \"cdn.test\"\nnames = [\"dl.cdn.test\"]\n";
    check(
        &format!("{base}[[rules]]\ngroups = [\"nope\"]\ndefault = true\n"),
        "group `nope`",
    );
    check(
        &format!("{base}[[groups]]\nname = \"g\"\nnodes = []\n[[rules]]\ngroups = [\"g\"]\n"),
        "exactly one rule",
    );
    check(&format!("{base}[[groups]]\nname = \"g\"\nnodes = []\n[[rules]]\nprefixes = [\"10.0.0.0/99\"]\ngroups = [\"g\"]\ndefault = true\n"), "10.0.0.0/99");
    check(
        "[dns]\nzone = \"cdn.test\"\nnames = [\"dl.other.test\"]\n",
        "not in the zone",
    );
    check("[dns]\nbogus = 1\n", "bogus");
}

#[tokio::test]
async fn a_node_that_fails_its_checks_is_not_handed_out_and_all_down_fails_open() {
    use crate::support::Origin;
    let london = Origin::fixed("ok").await;
    let everywhere = Origin::fixed("ok").await;
    let mut config = example();
    config.health.interval = shoal::config::Span(std::time::Duration::from_millis(50));
    config.health.fall = 2;
    config.health.rise = 1;
    for node in &mut config.nodes {
        match node.name.as_str() {
            "london" => node.check = Some(format!("{}/health", london.url())),
            "everywhere" => node.check = Some(format!("{}/health", everywhere.url())),
            _ => {}
        }
    }
    let router = start_router(config, None).await;
    let server = router.dns[0];
    assert_eq!(gets(server, "81.2.69.142").await, [ip("127.0.0.11")]);

    // London stops answering its checks: GB clients go to the next group of their rule.
    london.stop();
    assert_eq!(
        gets_soon(server, "81.2.69.142", "127.0.0.13").await,
        [ip("127.0.0.13")],
        "london is no longer handed out"
    );
    let shown = status(&router).await;
    let node = |name: &str| {
        shown["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .find(|node| node["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(node("london")["up"], false);
    assert_eq!(node("everywhere")["up"], true);
    assert_eq!(shown["failing_open"], false);

    // Every node of the rule down: the router fails open to the default rule's nodes, and says so.
    everywhere.stop();
    let mut failing_open = false;
    for _ in 0..100 {
        let answer = gets(server, "81.2.69.142").await;
        assert_eq!(answer, [ip("127.0.0.13")], "still answering");
        if status(&router).await["failing_open"] == true {
            failing_open = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(failing_open);
}

async fn status(router: &Router) -> serde_json::Value {
    let response = crate::support::client()
        .get(format!("http://{}/status", router.admin.unwrap()))
        .send()
        .await
        .unwrap();
    serde_json::from_slice(&response.bytes().await.unwrap()).unwrap()
}

#[tokio::test]
async fn a_reload_changes_the_map_at_once_and_a_bad_file_changes_nothing() {
    let dir = crate::disk::TempDir::new("router-reload");
    let file = dir.0.join("route.toml");
    let text = std::fs::read_to_string(
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/route.toml"),
    )
    .unwrap()
    .replace("testdata/geoip", geoip().to_str().unwrap());
    std::fs::write(&file, &text).unwrap();
    let router = start_router(RouterConfig::load(&file).unwrap(), Some(file.clone())).await;
    let server = router.dns[0];
    assert_eq!(gets(server, "81.2.69.142").await, [ip("127.0.0.11")]);

    // GB now goes to the peering group.
    std::fs::write(
        &file,
        text.replace(
            "groups = [\"gb\", \"default\"]",
            "groups = [\"peers\", \"default\"]",
        ),
    )
    .unwrap();
    router.reload().unwrap();
    assert_eq!(gets(server, "81.2.69.142").await, [ip("127.0.0.14")]);

    // A bad file is refused with its reason; the map in force stays.
    std::fs::write(&file, "[dns]\nzone = 3\n").unwrap();
    let error = router.reload().unwrap_err();
    assert!(
        error.contains("route.toml") && error.contains("zone"),
        "{error}"
    );
    assert_eq!(gets(server, "81.2.69.142").await, [ip("127.0.0.14")]);

    // A fixed file is noticed and loaded without being asked (GB back to its own group).
    std::fs::write(&file, &text).unwrap();
    assert_eq!(
        gets_soon(server, "81.2.69.142", "127.0.0.11").await,
        [ip("127.0.0.11")],
        "the changed file was loaded"
    );

    // `shoal ctl --admin ROUTER nodes` lists the nodes; `reload` reloads.
    let admin = format!("http://{}", router.admin.unwrap());
    let ctl = |args: &'static [&'static str]| {
        let admin = admin.clone();
        tokio::task::spawn_blocking(move || {
            std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
                .args(["ctl", "--admin", &admin])
                .args(args)
                .output()
                .unwrap()
        })
    };
    let output = ctl(&["nodes"]).await.unwrap();
    let table = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{output:?}");
    assert!(
        table.contains("london") && table.contains("127.0.0.11") && table.contains("up"),
        "{table}"
    );
    let output = ctl(&["reload"]).await.unwrap();
    assert!(output.status.success(), "{output:?}");
    assert!(String::from_utf8_lossy(&output.stdout).contains("reloaded"));
    assert!(router.generation() >= 4);
}

#[tokio::test]
async fn the_redirect_mode_sends_clients_to_their_node_with_ordered_fallbacks() {
    let mut config = example();
    add_to_gb(
        &mut config,
        shoal::router::config::NodeConfig {
            name: "manchester".into(),
            addresses: vec![ip("127.0.0.15")],
            weight: 1,
            url: Some("http://manchester.cdn.test".into()),
            check: None,
            capacity: Default::default(),
        },
    );
    config.http.listen = Some("127.0.0.1:0".parse().unwrap());
    config.http.fallbacks = 2;
    config.http.trust_x_forwarded_for = true;
    let router = start_router(config.clone(), None).await;
    let base = format!("http://{}", router.http.unwrap());
    let plain = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .build()
        .unwrap();
    let redirect = |client: &'static str, path: &'static str| {
        let request = plain
            .get(format!("{base}{path}"))
            .header("x-forwarded-for", client);
        async move { request.send().await.unwrap() }
    };
    let response = redirect("81.2.69.142", "/files/a.iso?v=2").await;
    assert_eq!(response.status(), 302);
    let location = response.headers()["location"].to_str().unwrap().to_owned();
    assert!(
        location == "http://127.0.0.11/files/a.iso?v=2"
            || location == "http://manchester.cdn.test/files/a.iso?v=2",
        "{location}"
    );
    let links: Vec<String> = response
        .headers()
        .get_all("link")
        .iter()
        .map(|value| value.to_str().unwrap().to_owned())
        .collect();
    assert_eq!(links.len(), 2, "{links:?}");
    // The other GB node first, then the rule's next group.
    assert!(
        links[0].ends_with("/files/a.iso?v=2>; rel=duplicate; pri=1"),
        "{links:?}"
    );
    assert!(!links[0].contains(&location));
    assert_eq!(
        links[1],
        "<http://127.0.0.13/files/a.iso?v=2>; rel=duplicate; pri=2"
    );
    assert_eq!(response.headers()["cache-control"], "no-store");

    // Why, on request.
    let explained = redirect("89.160.20.130", "/files/a.iso?explain").await;
    assert_eq!(explained.status(), 200);
    let why: serde_json::Value = serde_json::from_slice(&explained.bytes().await.unwrap()).unwrap();
    assert_eq!(why["rule"], "AS29518");
    assert_eq!(why["group"], "bredband2");
    assert_eq!(why["nodes"][0]["url"], "http://127.0.0.12/files/a.iso");

    // Without trusting X-Forwarded-For, the connection's address (loopback) decides.
    let mut untrusting = config.clone();
    untrusting.http.trust_x_forwarded_for = false;
    let other = start_router(untrusting, None).await;
    let response = plain
        .get(format!("http://{}/x", other.http.unwrap()))
        .header("x-forwarded-for", "81.2.69.142")
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["location"], "http://127.0.0.13/x");

    // Hashed paths: one path keeps going to one node; paths spread over the group.
    let mut hashing = config;
    hashing.http.hash_paths = true;
    let hashed = start_router(hashing, None).await;
    let first_node = |path: String| {
        let request = plain
            .get(format!("http://{}{path}", hashed.http.unwrap()))
            .header("x-forwarded-for", "81.2.69.142");
        async move {
            let response = request.send().await.unwrap();
            let location = response.headers()["location"].to_str().unwrap().to_owned();
            location.split("/f/").next().unwrap().to_owned()
        }
    };
    let mut seen = std::collections::HashSet::new();
    for n in 0..40 {
        let node = first_node(format!("/f/{n}")).await;
        assert_eq!(first_node(format!("/f/{n}")).await, node, "path {n} moved");
        seen.insert(node);
    }
    assert_eq!(seen.len(), 2, "{seen:?}");
}

#[tokio::test]
async fn a_node_near_its_capacity_gets_less_of_the_traffic() {
    use crate::support::{Origin, Reply};
    let reported = |requests_per_second: u64| {
        move |_: &crate::support::Seen| {
            Reply::ok(format!(
                "{{\"load\": {{\"requests_per_second\": {requests_per_second}, \"bytes_per_second\": 0, \"connections\": 3}}}}"
            ))
        }
    };
    let busy = Origin::start(reported(990)).await;
    let idle = Origin::start(reported(10)).await;
    let mut config = example();
    config.health.interval = shoal::config::Span(std::time::Duration::from_millis(50));
    add_to_gb(
        &mut config,
        shoal::router::config::NodeConfig {
            name: "manchester".into(),
            addresses: vec![ip("127.0.0.15")],
            weight: 1,
            url: None,
            check: Some(format!("{}/status", idle.url())),
            capacity: shoal::router::config::CapacityConfig {
                requests_per_second: 1000,
                ..Default::default()
            },
        },
    );
    let london = config
        .nodes
        .iter_mut()
        .find(|n| n.name == "london")
        .unwrap();
    london.check = Some(format!("{}/status", busy.url()));
    london.capacity.requests_per_second = 1000;
    let router = start_router(config, None).await;
    let server = router.dns[0];
    // Wait until both loads are known.
    let mut known = false;
    for _ in 0..100 {
        let shown = status(&router).await;
        if shown["nodes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|n| !n["load"].is_null())
            .count()
            == 2
        {
            known = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    assert!(known);
    let mut to_busy = 0;
    for _ in 0..400 {
        if gets(server, "81.2.69.142").await == [ip("127.0.0.11")] {
            to_busy += 1;
        }
    }
    // At 99 % of its capacity london keeps 5 % of its weight: about 5 % of the answers,
    // instead of half.
    assert!(to_busy < 60, "{to_busy} of 400 went to the busy node");
    let shown = status(&router).await;
    let london = shown["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "london")
        .unwrap()
        .clone();
    assert_eq!(london["effective_weight"], 0.05);
    assert_eq!(london["load"]["requests_per_second"], 990);
}

/// The README's router command, as a newcomer runs it from the project root of a clone: the
/// binary reads `examples/route.toml` and the databases it names (inside the checkout) and
/// gives the answers the example's comments list.
#[tokio::test]
async fn the_example_router_runs_from_the_project_root() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let dns = crate::process::free_port();
    let mut router = std::process::Command::new(env!("CARGO_BIN_EXE_shoal"))
        .current_dir(&root)
        .args(["route", "--config", "examples/route.toml", "--dns"])
        .arg(dns.to_string())
        // Its own status port: the example's may be in use on a machine running it already.
        .arg("--admin")
        .arg(crate::process::free_port().to_string())
        .env("RUST_LOG", "warn")
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let mut answered = false;
    for _ in 0..100 {
        let socket = tokio::net::UdpSocket::bind("127.0.0.1:0").await.unwrap();
        let probe = ask_once(&socket, dns).await;
        if probe {
            answered = true;
            break;
        }
    }
    assert!(answered, "the example router did not start");
    for (client, expected) in [
        ("81.2.69.142", "127.0.0.11"),
        ("89.160.20.130", "127.0.0.12"),
        ("216.160.83.57", "127.0.0.14"),
        ("8.8.8.8", "127.0.0.13"),
    ] {
        let answer = ask(dns, "dl.cdn.test", RecordType::A, Some((ip(client), 32))).await;
        assert_eq!(addresses(&answer), [ip(expected)], "{client}");
    }
    router.kill().unwrap();
    router.wait().unwrap();
}

/// Whether `server` answers a query within 100 ms.
async fn ask_once(socket: &tokio::net::UdpSocket, server: SocketAddr) -> bool {
    let mut query = Message::new();
    query
        .set_id(1)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(
            Name::from_ascii("dl.cdn.test").unwrap(),
            RecordType::A,
        ));
    if socket
        .send_to(&query.to_vec().unwrap(), server)
        .await
        .is_err()
    {
        return false;
    }
    let mut buffer = [0u8; 512];
    tokio::time::timeout(
        std::time::Duration::from_millis(100),
        socket.recv_from(&mut buffer),
    )
    .await
    .is_ok_and(|received| received.is_ok())
}
