//! The request router's DNS against PowerDNS's GeoIP backend with the same map, in one run.
//!
//!     cargo build --release && cargo run --release --example dns_router [-- --rounds 3 --seconds 10 --rate 20000]
//!
//! Needs `dnsperf`, `pdns-server` and `pdns-backend-geoip` (`apt install dnsperf pdns-server
//! pdns-backend-geoip`). Starts `target/release/shoal route` with the map of
//! `examples/route.toml` and PowerDNS with `bench/dns/` (the same map as a GeoIP backend zone),
//! both on 127.0.0.1 with the test databases of testdata/geoip (made by tests/it/geoip.rs), and in
//! rounds (the servers in a rotating order) measures each with the same queries: 4,096
//! `dl.cdn.test A` queries whose EDNS Client Subnet values are spread evenly over the map's four
//! rules (the operator prefix, the AS number, the country and the default; many distinct
//! subnets and source prefix lengths within each):
//!
//! - full load: `dnsperf` as fast as it goes, queries answered per second;
//! - CPU cost: `dnsperf` at a fixed rate, queries answered per CPU-second of the server (user +
//!   system time of all its threads, from /proc);
//! - correctness under load: this program's own client, as fast as it goes, checks every answer
//!   (NOERROR, authoritative, exactly the node address the rule names) and counts the wrong
//!   and the lost ones. `dnsperf` cannot check answers, so this is a run of its own.
//!
//! Prints the medians, the per-round ratios of Shoal to the best of PowerDNS's three thread
//! layouts, and the bar of issue 7 (at least twice PowerDNS's queries per CPU-second, full-load
//! rate no lower); writes the raw numbers to /tmp/shoal-bench/dns-results.json. Only ever talks
//! to 127.0.0.1.

use std::net::{IpAddr, Ipv4Addr, SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use hickory_proto::op::{Edns, Message, MessageType, OpCode, Query, ResponseCode};
use hickory_proto::rr::rdata::opt::{ClientSubnet, EdnsOption};
use hickory_proto::rr::{Name, RData, RecordType};

const SHOAL_DNS: &str = "127.0.0.1:5399";
const SHOAL_ADMIN: &str = "127.0.0.1:5391";
/// PowerDNS in three thread layouts (bench/dns/powerdns.conf, then these lines), each on its
/// own port: Debian's default (one receiving thread, three distributor threads: fastest at
/// full load on this machine together with the next), two receiving threads on SO_REUSEPORT
/// sockets, and one distributor thread (the least CPU per query at a moderate rate). Shoal is
/// compared with the best of the three on each measure.
const POWERDNS: [(&str, &str, &str); 3] = [
    ("powerdns", "127.0.0.1:5398", ""),
    (
        "powerdns-2r",
        "127.0.0.1:5397",
        "receiver-threads=2\nreuseport=yes\n",
    ),
    ("powerdns-1d", "127.0.0.1:5396", "distributor-threads=1\n"),
];
/// Queries per rule in the query set.
const PER_RULE: usize = 1024;
/// dnsperf at full load: two threads, eight clients (source ports), 1,000 queries in flight.
const DNSPERF_FULL_LOAD: [&str; 6] = ["-T", "2", "-c", "8", "-q", "1000"];
/// The checking client: threads (one socket each) and queries in flight per thread.
const CHECKER_THREADS: usize = 2;
const CHECKER_WINDOW: usize = 200;

/// One query of the set: the client subnet it carries and the node address its rule names.
struct Probe {
    subnet: Ipv4Addr,
    prefix: u8,
    rule: &'static str,
    expected: Ipv4Addr,
}

#[derive(Default, Clone, serde::Serialize)]
struct Run {
    server: String,
    round: usize,
    full_load_qps: f64,
    full_load_lost: u64,
    fixed_rate_qps: f64,
    fixed_rate_cpu_seconds: f64,
    queries_per_cpu_second: f64,
    checked: u64,
    checked_qps: f64,
    wrong: u64,
    lost: u64,
}

fn main() {
    let mut rounds = 3usize;
    let mut seconds = 10u64;
    let mut rate = 20_000u64;
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let value = args.next().unwrap_or_default();
        match flag.as_str() {
            "--rounds" => rounds = value.parse().expect("--rounds N"),
            "--seconds" => seconds = value.parse().expect("--seconds S"),
            "--rate" => rate = value.parse().expect("--rate QPS"),
            _ => panic!("unknown argument {flag} (--rounds N --seconds S --rate QPS)"),
        }
    }
    for tool in ["dnsperf", "/usr/sbin/pdns_server"] {
        if Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .stdout(Stdio::null())
            .status()
            .map_or(true, |status| !status.success())
        {
            eprintln!("{tool} is missing: apt install dnsperf pdns-server pdns-backend-geoip");
            std::process::exit(2);
        }
    }

    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../..")
        .canonicalize()
        .unwrap();
    let work = PathBuf::from("/tmp/shoal-bench/dns");
    std::fs::create_dir_all(&work).unwrap();
    let probes = probes();
    let queries: Vec<Vec<u8>> = probes.iter().map(query).collect();
    let query_file = work.join("queries.bin");
    write_dnsperf_input(&query_file, &queries);

    let mut processes = vec![start_shoal(&root, &work)];
    let mut servers: Vec<(&str, u32, SocketAddr)> =
        vec![("shoal", processes[0].id(), SHOAL_DNS.parse().unwrap())];
    for (name, address, threads) in POWERDNS {
        let address: SocketAddr = address.parse().unwrap();
        let process = start_powerdns(&root, &work, name, address, threads);
        servers.push((name, process.id(), address));
        processes.push(process);
    }
    for &(name, _, address) in &servers {
        wait_for_answers(name, address, &queries[0]);
        // Warm both (PowerDNS's packet cache among them) with every query of the set.
        let warm = check(address, &queries, &probes, Duration::from_secs(2));
        assert_eq!(
            warm.wrong, 0,
            "{name} answers wrongly before any load: see above"
        );
    }

    let mut runs = Vec::new();
    for round in 0..rounds {
        for turn in 0..servers.len() {
            let (name, pid, address) = servers[(round + turn) % servers.len()];
            let mut run = Run {
                server: name.into(),
                round,
                ..Run::default()
            };
            let full = dnsperf(&query_file, address, seconds, &DNSPERF_FULL_LOAD);
            run.full_load_qps = full.qps;
            run.full_load_lost = full.lost;

            let cpu_before = cpu_seconds(pid);
            let paced = dnsperf(
                &query_file,
                address,
                seconds,
                &["-T", "1", "-c", "4", "-Q", &rate.to_string()],
            );
            run.fixed_rate_cpu_seconds = cpu_seconds(pid) - cpu_before;
            run.fixed_rate_qps = paced.qps;
            run.queries_per_cpu_second = paced.completed as f64 / run.fixed_rate_cpu_seconds;

            let checked = check(address, &queries, &probes, Duration::from_secs(seconds));
            run.checked = checked.answered;
            run.checked_qps = checked.answered as f64 / seconds as f64;
            run.wrong = checked.wrong;
            run.lost = checked.lost;
            println!(
                "round {round} {name:>8}: full load {:>9.0} q/s (lost {}), at {rate}/s {:>9.0} queries per CPU-second, checked {} answers at {:.0} q/s: {} wrong, {} lost",
                run.full_load_qps,
                run.full_load_lost,
                run.queries_per_cpu_second,
                run.checked,
                run.checked_qps,
                run.wrong,
                run.lost
            );
            runs.push(run);
        }
    }
    for mut process in processes {
        let _ = process.kill();
        let _ = process.wait();
    }

    report(&runs, rounds, rate);
    std::fs::write(
        "/tmp/shoal-bench/dns-results.json",
        serde_json::to_string_pretty(&runs).unwrap(),
    )
    .unwrap();
    println!("raw numbers: /tmp/shoal-bench/dns-results.json");
}

/// Client subnets over the four rules of examples/route.toml, `PER_RULE` each, taken from the
/// networks the test databases know (testdata/geoip/README.md): every address
/// of each range, cycled, with a few wider source prefixes as resolvers send them.
fn probes() -> Vec<Probe> {
    let prefix_rule: &[(&str, u8)] = &[("216.160.83.56", 29)];
    let asn_rule: &[(&str, u8)] = &[("89.160.20.112", 28), ("89.160.20.128", 25)];
    let country_rule: &[(&str, u8)] = &[
        ("81.2.69.142", 31),
        ("81.2.69.144", 28),
        ("81.2.69.160", 27),
        ("81.2.69.192", 28),
        ("2.125.160.216", 29),
    ];
    // CN, BT, PH; networks with an ASN but no country; addresses in no database.
    let default_rule: &[(&str, u8)] = &[
        ("175.16.199.0", 24),
        ("214.78.120.0", 22),
        ("67.43.156.0", 24),
        ("202.196.224.0", 20),
        ("50.114.0.0", 22),
        ("74.209.16.0", 20),
        ("111.235.160.0", 22),
        ("217.65.48.0", 29),
        ("1.0.0.0", 24),
        ("12.81.92.0", 22),
        ("8.8.8.0", 24),
        ("10.20.0.0", 16),
    ];
    let rules = [
        ("prefix", prefix_rule, Ipv4Addr::new(127, 0, 0, 14)),
        ("asn", asn_rule, Ipv4Addr::new(127, 0, 0, 12)),
        ("country", country_rule, Ipv4Addr::new(127, 0, 0, 11)),
        ("default", default_rule, Ipv4Addr::new(127, 0, 0, 13)),
    ];
    let mut per_rule: Vec<Vec<Probe>> = Vec::new();
    for (rule, networks, expected) in rules {
        let addresses: Vec<(Ipv4Addr, u8)> = networks
            .iter()
            .flat_map(|(network, length)| {
                let base = u32::from(network.parse::<Ipv4Addr>().unwrap());
                let count = 1u32 << (32 - u32::from(*length)).min(10);
                (0..count).map(move |offset| (Ipv4Addr::from(base + offset), *length))
            })
            .collect();
        let probes = (0..PER_RULE)
            .map(|index| {
                let (address, network_length) = addresses[index % addresses.len()];
                // One query in eight carries the whole network (as a resolver's /24 would),
                // the others a single address.
                let (subnet, prefix) = match index % 8 {
                    0 => (
                        Ipv4Addr::from(
                            u32::from(address) & (u32::MAX << (32 - u32::from(network_length))),
                        ),
                        network_length,
                    ),
                    _ => (address, 32),
                };
                Probe {
                    subnet,
                    prefix,
                    rule,
                    expected,
                }
            })
            .collect();
        per_rule.push(probes);
    }
    // Interleaved, so every stretch of the query file covers all four rules.
    let mut interleaved = Vec::with_capacity(4 * PER_RULE);
    let mut columns: Vec<_> = per_rule.into_iter().map(Vec::into_iter).collect();
    for _ in 0..PER_RULE {
        for column in &mut columns {
            interleaved.push(column.next().unwrap());
        }
    }
    interleaved
}

fn query(probe: &Probe) -> Vec<u8> {
    let mut message = Message::new();
    message
        .set_id(0)
        .set_message_type(MessageType::Query)
        .set_op_code(OpCode::Query)
        .add_query(Query::query(
            Name::from_ascii("dl.cdn.test.").unwrap(),
            RecordType::A,
        ));
    let mut edns = Edns::new();
    edns.set_max_payload(1232);
    edns.options_mut()
        .insert(EdnsOption::Subnet(ClientSubnet::new(
            IpAddr::V4(probe.subnet),
            probe.prefix,
            0,
        )));
    message.set_edns(edns);
    message.to_vec().unwrap()
}

/// dnsperf's binary input (`-B`): each message preceded by its length, as on a TCP stream.
fn write_dnsperf_input(path: &Path, queries: &[Vec<u8>]) {
    let mut bytes = Vec::new();
    for query in queries {
        bytes.extend_from_slice(&(query.len() as u16).to_be_bytes());
        bytes.extend_from_slice(query);
    }
    std::fs::write(path, bytes).unwrap();
}

fn start_shoal(root: &Path, work: &Path) -> Child {
    let config = std::fs::read_to_string(root.join("examples/route.toml"))
        .unwrap()
        .replace(
            "testdata/geoip",
            &root.join("testdata/geoip").to_string_lossy(),
        )
        .replace("127.0.0.1:9190", SHOAL_ADMIN);
    let path = work.join("route.toml");
    std::fs::write(&path, config).unwrap();
    let binary = root.join("target/release/shoal");
    Command::new(&binary)
        .args(["route", "--config"])
        .arg(&path)
        .args(["--dns", SHOAL_DNS])
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .unwrap_or_else(|error| {
            panic!(
                "{}: {error} (cargo build --release first)",
                binary.display()
            )
        })
}

/// PowerDNS as bench/dns/powerdns.conf configures it (the GeoIP backend, ECS processing, the
/// packet cache on, as by default) on `address`, with the `threads` lines added.
fn start_powerdns(
    root: &Path,
    work: &Path,
    name: &str,
    address: SocketAddr,
    threads: &str,
) -> Child {
    let directory = work.join(name);
    std::fs::create_dir_all(&directory).unwrap();
    let conf = std::fs::read_to_string(root.join("bench/dns/powerdns.conf"))
        .unwrap()
        .replace("GEOIP", &root.join("testdata/geoip").to_string_lossy())
        .replace("CONFDIR", &directory.to_string_lossy())
        .replace("local-port=5398", &format!("local-port={}", address.port()))
        + threads;
    std::fs::write(directory.join("pdns.conf"), conf).unwrap();
    std::fs::copy(
        root.join("bench/dns/powerdns-zones.yaml"),
        directory.join("powerdns-zones.yaml"),
    )
    .unwrap();
    Command::new("/usr/sbin/pdns_server")
        .arg(format!("--config-dir={}", directory.display()))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("pdns_server")
}

fn wait_for_answers(name: &str, server: SocketAddr, query: &[u8]) {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();
    let mut buffer = [0u8; 1500];
    for _ in 0..50 {
        let _ = socket.send_to(query, server);
        if socket.recv_from(&mut buffer).is_ok() {
            return;
        }
    }
    panic!("{name} does not answer on {server}");
}

struct Dnsperf {
    qps: f64,
    completed: u64,
    lost: u64,
}

fn dnsperf(input: &Path, server: SocketAddr, seconds: u64, extra: &[&str]) -> Dnsperf {
    let output = Command::new("dnsperf")
        .arg("-B")
        .arg("-d")
        .arg(input)
        .args(["-s", &server.ip().to_string()])
        .args(["-p", &server.port().to_string()])
        .args(["-l", &seconds.to_string()])
        .args(extra)
        .output()
        .expect("dnsperf");
    let text = String::from_utf8_lossy(&output.stdout);
    let field = |label: &str| -> f64 {
        text.lines()
            .find_map(|line| line.trim().strip_prefix(label))
            .and_then(|rest| rest.split_whitespace().next())
            .and_then(|number| number.parse().ok())
            .unwrap_or_else(|| panic!("dnsperf printed no {label:?}:\n{text}"))
    };
    let completed = field("Queries completed:") as u64;
    let noerror = text
        .lines()
        .find_map(|line| line.trim().strip_prefix("Response codes:"))
        .unwrap_or("");
    assert!(
        completed == 0 || noerror.trim_start().starts_with("NOERROR") && !noerror.contains(','),
        "answers other than NOERROR: {noerror}"
    );
    Dnsperf {
        qps: field("Queries per second:"),
        completed,
        lost: field("Queries lost:") as u64,
    }
}

/// User and system CPU time of a process, all threads, in seconds.
fn cpu_seconds(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    // Fields after the command name (which may hold spaces) begin at the last ')'.
    let fields: Vec<&str> = stat[stat.rfind(')').unwrap() + 2..]
        .split_whitespace()
        .collect();
    let ticks: f64 = fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap();
    ticks / clock_ticks_per_second()
}

fn clock_ticks_per_second() -> f64 {
    let output = Command::new("getconf").arg("CLK_TCK").output().unwrap();
    String::from_utf8_lossy(&output.stdout)
        .trim()
        .parse()
        .unwrap()
}

#[derive(Default)]
struct Checked {
    answered: u64,
    wrong: u64,
    lost: u64,
}

/// Sends the query set round and round for `duration` from `CHECKER_THREADS` sockets with
/// `CHECKER_WINDOW` queries in flight each, and checks every answer.
fn check(server: SocketAddr, queries: &[Vec<u8>], probes: &[Probe], duration: Duration) -> Checked {
    std::thread::scope(|scope| {
        let workers: Vec<_> = (0..CHECKER_THREADS)
            .map(|thread| {
                scope
                    .spawn(move || check_from_one_socket(server, queries, probes, duration, thread))
            })
            .collect();
        let mut total = Checked::default();
        for worker in workers {
            let checked = worker.join().unwrap();
            total.answered += checked.answered;
            total.wrong += checked.wrong;
            total.lost += checked.lost;
        }
        total
    })
}

fn check_from_one_socket(
    server: SocketAddr,
    queries: &[Vec<u8>],
    probes: &[Probe],
    duration: Duration,
    thread: usize,
) -> Checked {
    let socket = UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.connect(server).unwrap();
    socket
        .set_read_timeout(Some(Duration::from_millis(500)))
        .unwrap();
    // The message ID names the query in flight: which probe it was.
    let mut in_flight: Vec<Option<usize>> = vec![None; 1 << 16];
    let mut outstanding = 0usize;
    let mut next_id: u16 = 0;
    let mut next_probe = thread * 997;
    let mut checked = Checked::default();
    let mut buffer = [0u8; 1500];
    let mut reported = 0;
    let started = Instant::now();
    let mut message = Vec::new();
    let mut send = |id: u16, probe: usize| {
        message.clear();
        message.extend_from_slice(&queries[probe]);
        message[..2].copy_from_slice(&id.to_be_bytes());
        socket.send(&message).unwrap();
    };
    loop {
        let sending = started.elapsed() < duration;
        while sending && outstanding < CHECKER_WINDOW {
            let probe = next_probe % queries.len();
            next_probe += 1;
            if in_flight[usize::from(next_id)].replace(probe).is_some() {
                // Its ID came round again unanswered: count it lost, not answered.
                checked.lost += 1;
                outstanding -= 1;
            }
            send(next_id, probe);
            next_id = next_id.wrapping_add(1);
            outstanding += 1;
        }
        if outstanding == 0 {
            return checked;
        }
        let Ok(length) = socket.recv(&mut buffer) else {
            // Nothing for half a second: what is in flight is lost.
            checked.lost += outstanding as u64;
            in_flight.iter_mut().for_each(|slot| *slot = None);
            outstanding = 0;
            continue;
        };
        let Some(id) = buffer.get(..2).map(|id| u16::from_be_bytes([id[0], id[1]])) else {
            checked.wrong += 1;
            continue;
        };
        let Some(probe) = in_flight[usize::from(id)].take() else {
            continue; // a late answer to a query already counted lost
        };
        outstanding -= 1;
        checked.answered += 1;
        if let Err(why) = verify(&buffer[..length], &probes[probe]) {
            checked.wrong += 1;
            if reported < 5 {
                reported += 1;
                eprintln!("wrong answer from {server}: {why}");
            }
        }
    }
}

fn verify(answer: &[u8], probe: &Probe) -> Result<(), String> {
    let message = Message::from_vec(answer).map_err(|error| error.to_string())?;
    let addresses: Vec<Ipv4Addr> = message
        .answers()
        .iter()
        .filter_map(|record| match record.data() {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect();
    let subnet = format!("{}/{}", probe.subnet, probe.prefix);
    if message.response_code() != ResponseCode::NoError || !message.authoritative() {
        return Err(format!(
            "{subnet}: {} (authoritative: {})",
            message.response_code(),
            message.authoritative()
        ));
    }
    if addresses != [probe.expected] {
        return Err(format!(
            "{subnet} ({} rule): {addresses:?}, expected {}",
            probe.rule, probe.expected
        ));
    }
    Ok(())
}

fn report(runs: &[Run], rounds: usize, rate: u64) {
    let servers: Vec<&str> = std::iter::once("shoal")
        .chain(POWERDNS.iter().map(|(name, _, _)| *name))
        .collect();
    let median = |mut values: Vec<f64>| -> f64 {
        values.sort_by(f64::total_cmp);
        values[values.len() / 2]
    };
    let of = |server: &str, value: fn(&Run) -> f64| -> f64 {
        median(
            runs.iter()
                .filter(|run| run.server == server)
                .map(value)
                .collect(),
        )
    };
    // Per round: Shoal's figure over the best PowerDNS figure of that round.
    let ratio = |value: fn(&Run) -> f64| -> f64 {
        median(
            (0..rounds)
                .map(|round| {
                    let in_round = runs.iter().filter(|run| run.round == round);
                    let shoal = in_round
                        .clone()
                        .find(|run| run.server == "shoal")
                        .map(value)
                        .unwrap();
                    let best = in_round
                        .filter(|run| run.server != "shoal")
                        .map(value)
                        .fold(0.0, f64::max);
                    shoal / best
                })
                .collect(),
        )
    };
    let total = |server: &str, value: fn(&Run) -> u64| -> u64 {
        runs.iter()
            .filter(|run| run.server == server)
            .map(value)
            .sum()
    };
    println!();
    println!("| medians of {rounds} rounds | full load (dnsperf), q/s | queries per CPU-second at {rate} q/s | checking client at full load, q/s | answers checked | wrong | lost |");
    println!("|---|---|---|---|---|---|---|");
    for server in &servers {
        println!(
            "| {server} | {:.0} | {:.0} | {:.0} | {} | {} | {} |",
            of(server, |run| run.full_load_qps),
            of(server, |run| run.queries_per_cpu_second),
            of(server, |run| run.checked_qps),
            total(server, |run| run.checked),
            total(server, |run| run.wrong),
            total(server, |run| run.lost)
        );
    }
    let full = ratio(|run| run.full_load_qps);
    let per_cpu = ratio(|run| run.queries_per_cpu_second);
    let checked = ratio(|run| run.checked_qps);
    println!(
        "| shoal / best PowerDNS of the round (median) | {full:.2} | {per_cpu:.2} | {checked:.2} | | | |"
    );
    println!();
    let verdict = |met: bool| if met { "met" } else { "NOT met" };
    let wrong: u64 = servers
        .iter()
        .map(|server| total(server, |run| run.wrong))
        .sum();
    println!(
        "bar: queries per CPU-second >= 2 x PowerDNS's best: {per_cpu:.2} x, {}; full load >= PowerDNS's best: {full:.2} x, {}; every answer correct: {}",
        verdict(per_cpu >= 2.0),
        verdict(full >= 1.0),
        verdict(wrong == 0)
    );
}
