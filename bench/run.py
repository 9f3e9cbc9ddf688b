#!/usr/bin/env python3
"""Shoal against its peers, in one run, on this machine's loopback.

Every server is a RAM cache in front of the same origin (nginx on 127.0.0.1:9000); nginx
serving the files itself is the upper limit. Scenarios run in rounds, the servers in a rotating
order within each round; the table reports medians over rounds and ratios to a reference peer
measured in the same rounds. Hit scenarios are checked against the origin's request counter.

Run through bench/run.sh, which installs the peers and builds Shoal first.
"""

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
import urllib.request

WORK = "/tmp/shoal-bench"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ORIGIN_PORT = 9000
PORTS = {"nginx-direct": 9001, "shoal": 9100, "shoal-base": 9106, "shoal-files": 9107, "shoal-disk": 9105, "nginx-cache": 9101, "varnish": 9102, "haproxy": 9103, "trafficserver": 9104}
FILES = {"1k.bin": 1024, "1m.bin": 1 << 20, "64m.bin": 64 << 20}


def sh(command, **kwargs):
    return subprocess.run(command, shell=True, check=True, **kwargs)


def wait_port(port, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port}")


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as handle:
        handle.write(text)


# ---------------------------------------------------------------- configuration of each server

def prepare_files():
    www = f"{WORK}/www"
    os.makedirs(www, exist_ok=True)
    for name, size in FILES.items():
        path = f"{www}/{name}"
        if not os.path.exists(path) or os.path.getsize(path) != size:
            with open(path, "wb") as handle:
                handle.write(os.urandom(size))
    return www


def nginx_conf(name, server_block):
    return f"""
worker_processes {'1' if name == 'origin' else 'auto'};
pid {WORK}/{name}/nginx.pid;
error_log {WORK}/{name}/error.log warn;
worker_rlimit_nofile 19000;
events {{ worker_connections 15000; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 75s;
    open_file_cache max=1000 inactive=60s;
    default_type application/octet-stream;
    client_body_temp_path {WORK}/{name}/body;
    proxy_temp_path {WORK}/{name}/proxy;
    fastcgi_temp_path {WORK}/{name}/fastcgi;
    uwsgi_temp_path {WORK}/{name}/uwsgi;
    scgi_temp_path {WORK}/{name}/scgi;
    {server_block}
}}
"""


def start_origin(www):
    block = f"""
    server {{
        listen 127.0.0.1:{ORIGIN_PORT} reuseport;
        root {www};
        add_header Cache-Control "public, max-age=3600";
        location /miss/ {{ rewrite ^ /1k.bin break; }}
        location = /status {{ stub_status; }}
    }}"""
    return start_nginx("origin", block)


def start_nginx(name, block):
    os.makedirs(f"{WORK}/{name}", exist_ok=True)
    write(f"{WORK}/{name}/nginx.conf", nginx_conf(name, block))
    sh(f"nginx -c {WORK}/{name}/nginx.conf")
    time.sleep(0.3)
    master = int(open(f"{WORK}/{name}/nginx.pid").read())
    return Server(name, master, lambda: sh(f"nginx -c {WORK}/{name}/nginx.conf -s stop"))


def start_nginx_direct(www):
    block = f"""
    server {{
        listen 127.0.0.1:{PORTS['nginx-direct']} reuseport;
        root {www};
        add_header Cache-Control "public, max-age=3600";
        location /miss/ {{ rewrite ^ /1k.bin break; }}
    }}"""
    return start_nginx("nginx-direct", block)


def start_nginx_cache():
    os.makedirs("/dev/shm/shoal-bench-nginx", exist_ok=True)
    block = f"""
    proxy_cache_path /dev/shm/shoal-bench-nginx levels=1:2 keys_zone=bench:64m max_size=1g inactive=1h use_temp_path=off;
    upstream origin {{ server 127.0.0.1:{ORIGIN_PORT}; keepalive 64; }}
    server {{
        listen 127.0.0.1:{PORTS['nginx-cache']} reuseport;
        location / {{
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache bench;
            proxy_cache_lock on;
            proxy_buffering on;
            proxy_max_temp_file_size 0;
        }}
    }}"""
    return start_nginx("nginx-cache", block)


def start_shoal(name="shoal", binary=f"{ROOT}/target/release/shoal", admin=9190,
                origin=f"http://127.0.0.1:{ORIGIN_PORT}"):
    log = open(f"{WORK}/{name}.log", "w")
    process = subprocess.Popen(
        [binary, "serve", "--listen", f"127.0.0.1:{PORTS[name]}", "--origin", origin,
         "--admin", f"127.0.0.1:{admin}", "--cache-mem", "1GiB"],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    return Server(name, process.pid, lambda: (process.terminate(), process.wait()))


def start_shoal_base():
    """Another build of Shoal (the binary named by SHOAL_BASE_BINARY), configured as `shoal`,
    so that a change is measured against the code before it in the same interleaved rounds."""
    binary = os.environ.get("SHOAL_BASE_BINARY")
    if not binary:
        sys.exit("shoal-base needs SHOAL_BASE_BINARY=/path/to/an/older/shoal")
    return start_shoal("shoal-base", binary, 9196)


def start_shoal_files(www):
    """Shoal as the origin itself: the bench's files from a `file://` host, against nginx
    serving them (nginx-direct). Files up to 1 MiB are cached in RAM, larger ones sent with
    sendfile (docs/upstreams.md)."""
    return start_shoal("shoal-files", admin=9197, origin=f"file://{www}")


def start_shoal_disk():
    """Shoal with a disk tier and a RAM tier too small for the 64 MiB object, never promoting
    from disk: its 64 MiB hits are disk-tier hits (from the page cache, as on any warm disk)."""
    binary = f"{ROOT}/target/release/shoal"
    cache = f"{WORK}/shoal-disk"
    shutil.rmtree(cache, ignore_errors=True)
    write(f"{cache}/shoal.toml", '[cache]\nmax_object_size = "8MiB"\n[disk]\npromote_after_hits = 255\n')
    log = open(f"{WORK}/shoal-disk.log", "w")
    process = subprocess.Popen(
        [binary, "serve", "--config", f"{cache}/shoal.toml", "--listen", f"127.0.0.1:{PORTS['shoal-disk']}",
         "--origin", f"http://127.0.0.1:{ORIGIN_PORT}", "--admin", "127.0.0.1:9195", "--cache-mem", "16MiB",
         "--cache-dir", f"{cache}/dir", "--cache-disk", "4GiB"],
        stdout=log, stderr=log, env={**os.environ, "RUST_LOG": "warn"})
    return Server("shoal-disk", process.pid, lambda: (process.terminate(), process.wait()))


def start_varnish():
    os.makedirs(f"{WORK}/varnish", exist_ok=True)
    write(f"{WORK}/varnish/default.vcl", f"""vcl 4.1;
backend origin {{ .host = "127.0.0.1"; .port = "{ORIGIN_PORT}"; }}
""")
    sh(f"varnishd -a 127.0.0.1:{PORTS['varnish']} -f {WORK}/varnish/default.vcl -s malloc,1G "
       f"-n {WORK}/varnish/instance -P {WORK}/varnish/varnishd.pid -p thread_pool_min=100")
    time.sleep(1)
    pid = int(open(f"{WORK}/varnish/varnishd.pid").read())
    return Server("varnish", pid, lambda: os.kill(pid, signal.SIGTERM))


def start_haproxy():
    # The cache is 1 GiB (total-max-size is in MB), as the other servers' RAM caches are: at
    # 4 GB it never filled within a run, while the others evicted one object per miss.
    os.makedirs(f"{WORK}/haproxy", exist_ok=True)
    write(f"{WORK}/haproxy/haproxy.cfg", f"""
global
    maxconn 9000
    nbthread 2
    pidfile {WORK}/haproxy/haproxy.pid
defaults
    mode http
    timeout connect 5s
    timeout client 75s
    timeout server 75s
    option http-keep-alive
cache bench
    total-max-size 1024
    max-object-size 100000000
    max-age 3600
frontend front
    bind 127.0.0.1:{PORTS['haproxy']}
    http-request cache-use bench
    http-response cache-store bench
    default_backend origin
backend origin
    http-reuse always
    server origin 127.0.0.1:{ORIGIN_PORT}
""")
    sh(f"haproxy -D -f {WORK}/haproxy/haproxy.cfg")
    time.sleep(0.5)
    pid = int(open(f"{WORK}/haproxy/haproxy.pid").read())
    return Server("haproxy", pid, lambda: os.kill(pid, signal.SIGTERM))


def start_trafficserver():
    base = f"{WORK}/ats"
    shutil.rmtree(base, ignore_errors=True)
    for sub in ("etc", "log", "run", "cache", "var"):
        os.makedirs(f"{base}/{sub}", exist_ok=True)
    sh(f"cp -r /etc/trafficserver/* {base}/etc/")
    write(f"{base}/runroot.yaml", "\n".join([
        "prefix: /usr", "exec_prefix: /usr", "bindir: /usr/bin", "sbindir: /usr/sbin",
        f"sysconfdir: {base}/etc", "datadir: /usr/share/trafficserver", "includedir: /usr/include",
        "libdir: /usr/lib/trafficserver", "libexecdir: /usr/lib/trafficserver/modules",
        f"localstatedir: {base}/var", f"runtimedir: {base}/run", f"logdir: {base}/log", f"cachedir: {base}/cache", ""]))
    records = open(f"{base}/etc/records.config").read()
    records = re.sub(r"CONFIG proxy.config.http.server_ports STRING .*", f"CONFIG proxy.config.http.server_ports STRING {PORTS['trafficserver']}", records)
    records += "\n".join([
        "CONFIG proxy.config.cache.ram_cache.size INT 1073741824",
        "CONFIG proxy.config.cache.ram_cache_cutoff INT 104857600",
        "CONFIG proxy.config.http.cache.required_headers INT 0",
        "CONFIG proxy.config.net.connections_throttle INT 15000",
        "CONFIG proxy.config.log.logging_enabled INT 0", ""])
    write(f"{base}/etc/records.config", records)
    shutil.rmtree("/dev/shm/shoal-bench-ats", ignore_errors=True)
    os.makedirs("/dev/shm/shoal-bench-ats")
    sh("chown trafficserver /dev/shm/shoal-bench-ats")
    write(f"{base}/etc/storage.config", "/dev/shm/shoal-bench-ats 2G\n")
    write(f"{base}/etc/remap.config", f"map / http://127.0.0.1:{ORIGIN_PORT}/\n")
    sh(f"chown -R trafficserver {base}")
    log = open(f"{WORK}/ats.out", "w")
    process = subprocess.Popen(["traffic_server", f"--run-root={base}/runroot.yaml"], stdout=log, stderr=log)
    time.sleep(2)
    return Server("trafficserver", process.pid, lambda: (process.terminate(), process.wait()))


class Server:
    def __init__(self, name, pid, stop):
        self.name, self.pid, self.stop = name, pid, stop

    def pids(self):
        """The server's process and all its descendants (workers, children)."""
        found, frontier = {self.pid}, [self.pid]
        while frontier:
            parent = frontier.pop()
            try:
                children = open(f"/proc/{parent}/task/{parent}/children").read().split()
            except OSError:
                continue
            for child in map(int, children):
                if child not in found:
                    found.add(child)
                    frontier.append(child)
        return found

    def cpu_seconds(self):
        ticks = os.sysconf("SC_CLK_TCK")
        total = 0
        for pid in self.pids():
            try:
                fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
                total += int(fields[11]) + int(fields[12])
            except OSError:
                pass
        return total / ticks

    def rss_mib(self):
        total = 0
        for pid in self.pids():
            try:
                for line in open(f"/proc/{pid}/status"):
                    if line.startswith("VmRSS:"):
                        total += int(line.split()[1])
            except OSError:
                pass
        return total / 1024


# ---------------------------------------------------------------- measurement

MISS_SCRIPT = """
local threads = 0
function setup(thread)
  threads = threads + 1
  thread:set("tid", threads)
end
function init(args)
  counter = 0
  prefix = os.getenv("MISS_PREFIX") or "p"
end
function request()
  counter = counter + 1
  return wrk.format("GET", "/miss/" .. prefix .. "-" .. tid .. "-" .. counter)
end
"""

# Every request names a URL the server has not been asked for (a query it has not seen on a
# file that exists): for a cache, a miss that reads the file (Shoal serving files itself opens,
# reads and stores it); nginx serving files ignores the query, so it is its usual read.
FIRST_READ_SCRIPT = MISS_SCRIPT.replace('"/miss/" .. prefix', '"/1k.bin?first=" .. prefix')


def origin_requests():
    text = urllib.request.urlopen(f"http://127.0.0.1:{ORIGIN_PORT}/status").read().decode()
    return int(text.splitlines()[2].split()[2])


def parse_size(text):
    number, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]", "", text)
    return number * {"B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30}[unit]


def parse_latency(text):
    number, unit = float(re.match(r"[\d.]+", text).group()), re.sub(r"[\d.]", "", text)
    return number * {"us": 0.001, "ms": 1, "s": 1000}[unit]


def wrk(port, path, connections, duration, close=False, script=None):
    command = ["wrk", "-t2", f"-c{connections}", f"-d{duration}s", "--latency", "--timeout", "10s"]
    if close:
        command += ["-H", "Connection: close"]
    if script:
        command += ["-s", script]
    command.append(f"http://127.0.0.1:{port}{path}")
    env = {**os.environ, "MISS_PREFIX": f"{port}-{time.time_ns()}"}
    output = subprocess.run(command, capture_output=True, text=True, env=env).stdout
    result = {"rps": float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))}
    result["bytes_per_s"] = parse_size(re.search(r"Transfer/sec:\s+(\S+)", output).group(1))
    for percentile in ("50", "99"):
        match = re.search(rf"^\s+{percentile}%\s+(\S+)", output, re.M)
        result[f"p{percentile}"] = parse_latency(match.group(1)) if match else float("nan")
    errors = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    result["errors"] = int(errors.group(1)) if errors else 0
    socket_errors = re.search(r"Socket errors: (.*)", output)
    result["socket_errors"] = socket_errors.group(1) if socket_errors else ""
    return result


SCENARIOS = [
    # name, path, connections, close, script, is_hit
    ("1 KiB hit, 50 conns", "/1k.bin", 50, False, None, True),
    ("1 KiB hit, 500 conns", "/1k.bin", 500, False, None, True),
    ("1 KiB hit, new conn per request", "/1k.bin", 50, True, None, True),
    ("1 MiB hit, 50 conns", "/1m.bin", 50, False, None, True),
    ("64 MiB hit, 10 conns", "/64m.bin", 10, False, None, True),
    ("miss (unique URLs), 50 conns", "MISS", 50, False, "miss.lua", False),
    ("1 KiB first read (unique URLs), 50 conns", "MISS", 50, False, "first-read.lua", False),
    # The same loads paced: each connection waits a fixed time between a response and its next
    # request, so every server gets about the same request rate, below the slowest one's
    # capacity. Latency at saturation (above) mostly measures the load generator's own queue,
    # which grows with the server's throughput; these runs compare servers at equal load.
    ("1 KiB hit, 500 conns, paced 10 ms", "/1k.bin", 500, False, "paced-10.lua", True),
    ("1 KiB hit, new conn per request, paced 10 ms", "/1k.bin", 50, True, "paced-10.lua", True),
    ("1 MiB hit, 50 conns, paced 10 ms", "/1m.bin", 50, False, "paced-10.lua", True),
    ("64 MiB hit, 10 conns, paced 150 ms", "/64m.bin", 10, False, "paced-150.lua", True),
    ("miss (unique URLs), 50 conns, paced 5 ms", "MISS", 50, False, "miss-paced-5.lua", False),
]

# 64 MiB hits run four times as long: at about 30 requests a second, a 5-second run holds some
# 150 requests and its p99 is its second-slowest request.
DURATION_FACTOR = {"/64m.bin": 4}

PACED_SCRIPTS = {
    "paced-10.lua": "function delay() return 10 end\n",
    "paced-150.lua": "function delay() return 150 end\n",
    "miss-paced-5.lua": MISS_SCRIPT + "function delay() return 5 end\n",
}


def warm(port):
    for name in FILES:
        for _ in range(3):
            urllib.request.urlopen(f"http://127.0.0.1:{port}/{name}").read()


def idle_connections_rss(server, port, count):
    """RSS of `server` while `count` keep-alive connections sit idle after one request each."""
    import asyncio

    async def hold():
        connections = []
        for start in range(0, count, 500):
            # From 40 loopback addresses: Shoal admits at most server.max_connections_per_ip
            # (1024) connections from one address.
            batch = await asyncio.gather(*[
                asyncio.open_connection("127.0.0.1", port, local_addr=(f"127.0.0.{2 + (start + i) % 40}", 0))
                for i in range(min(500, count - start))])
            for reader, writer in batch:
                writer.write(b"GET /1k.bin HTTP/1.1\r\nHost: bench\r\n\r\n")
            for reader, writer in batch:
                await reader.readuntil(b"\r\n\r\n")
                await reader.readexactly(1024)
            connections.extend(batch)
        await asyncio.sleep(2)
        rss = server.rss_mib()
        for _, writer in connections:
            writer.close()
        return rss

    return asyncio.run(hold())


def server_starters(www):
    """How to start each server by name, serving the files of `www` through the origin."""
    return {"nginx-direct": lambda: start_nginx_direct(www), "shoal": start_shoal, "shoal-base": start_shoal_base,
            "shoal-files": lambda: start_shoal_files(www), "shoal-disk": start_shoal_disk,
            "nginx-cache": start_nginx_cache, "varnish": start_varnish, "haproxy": start_haproxy,
            "trafficserver": start_trafficserver}


def stop_all(servers):
    for server in servers:
        try:
            server.stop()
        except Exception as error:  # keep stopping the others
            print(f"stopping {server.name}: {error}", file=sys.stderr)


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--duration", type=int, default=5)
    parser.add_argument("--servers", default="nginx-direct,shoal,haproxy,trafficserver,nginx-cache,varnish")
    parser.add_argument("--idle", type=int, default=10000)
    parser.add_argument("--scenarios", default="", help="semicolon-separated substrings of scenario names to run")
    parser.add_argument("--json", default=f"{WORK}/results.json")
    args = parser.parse_args()
    names = args.servers.split(",")
    if args.scenarios:
        wanted = args.scenarios.split(";")
        SCENARIOS[:] = [s for s in SCENARIOS if any(w in s[0] for w in wanted)]

    import resource
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    os.makedirs(WORK, exist_ok=True)
    write(f"{WORK}/miss.lua", MISS_SCRIPT)
    write(f"{WORK}/first-read.lua", FIRST_READ_SCRIPT)
    for name, text in PACED_SCRIPTS.items():
        write(f"{WORK}/{name}", text)
    www = prepare_files()
    starters = server_starters(www)
    servers = {}
    origin = start_origin(www)
    try:
        wait_port(ORIGIN_PORT)
        for name in names:
            servers[name] = starters[name]()
            wait_port(PORTS[name])
            warm(PORTS[name])
        results = {name: {scenario[0]: [] for scenario in SCENARIOS} for name in names}
        cpu = {name: {scenario[0]: [] for scenario in SCENARIOS} for name in names}
        hit_check = {name: {} for name in names}
        for round_index in range(args.rounds):
            order = names[round_index % len(names):] + names[:round_index % len(names)]
            for scenario, path, connections, close, script, is_hit in SCENARIOS:
                for name in order:
                    port = PORTS[name]
                    before_origin = origin_requests()
                    before_cpu = servers[name].cpu_seconds()
                    duration = args.duration * DURATION_FACTOR.get(path, 1)
                    result = wrk(port, "/" if path == "MISS" else path, connections, duration, close,
                                 f"{WORK}/{script}" if script else None)
                    result["cpu"] = (servers[name].cpu_seconds() - before_cpu) / duration
                    result["origin_requests"] = origin_requests() - before_origin - 1  # the status request itself
                    results[name][scenario].append(result)
                    if is_hit and name != "nginx-direct":
                        hit_check[name][scenario] = hit_check[name].get(scenario, 0) + result["origin_requests"]
                    print(f"round {round_index + 1} {scenario:<34} {name:<14} {result['rps']:>10.0f} req/s "
                          f"{result['bytes_per_s'] / 1e6:>9.0f} MB/s p99 {result['p99']:>8.2f} ms cpu {result['cpu']:.2f} "
                          f"origin {result['origin_requests']} errors {result['errors']} {result['socket_errors']}", flush=True)
        rss = {name: servers[name].rss_mib() for name in names}
        idle = {}
        summary = {"results": results, "rss_mib": rss, "idle_rss_mib": idle, "hit_check": hit_check,
                   "rounds": args.rounds, "duration": args.duration}
        # Saved now, and again with the idle-connection figures: a failure there keeps the runs.
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=1)
        # Idle connections are measured on a fresh instance, so that the cached 64 MiB object
        # of the runs above does not count as connection memory.
        for name in ("shoal", "nginx-direct"):
            if args.idle and name in servers:
                servers.pop(name).stop()
                servers[name] = starters[name]()
                wait_port(PORTS[name])
                idle[name] = idle_connections_rss(servers[name], PORTS[name], args.idle)
        with open(args.json, "w") as handle:
            json.dump(summary, handle, indent=1)
        print(report(summary, names))
    finally:
        stop_all(list(servers.values()) + [origin])


def median(values):
    values = [v for v in values if v == v]
    return statistics.median(values) if values else float("nan")


def report(summary, names):
    results = summary["results"]
    lines = []
    reference = {"1 KiB hit, 50 conns": "haproxy", "1 KiB hit, 500 conns": "haproxy",
                 "1 KiB hit, new conn per request": "haproxy", "1 MiB hit, 50 conns": "trafficserver",
                 "64 MiB hit, 10 conns": "trafficserver", "miss (unique URLs), 50 conns": "trafficserver"}
    for scenario, *_ in SCENARIOS:
        ref = reference.get(scenario, "trafficserver")
        ref = ref if ref in names else names[0]
        lines.append(f"\n### {scenario} (ratios to {ref}; nginx-direct is the upper limit)\n")
        lines.append("| server | req/s | MB/s | p50 ms | p99 ms | CPU cores | origin reqs | ratio req/s | ratio vs nginx-direct | ratio p99 |")
        lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for name in names:
            runs = results[name][scenario]
            ratios = [run["rps"] / results[ref][scenario][i]["rps"] for i, run in enumerate(runs)]
            p99_ratios = [run["p99"] / results[ref][scenario][i]["p99"] for i, run in enumerate(runs)]
            direct = [run["rps"] / results["nginx-direct"][scenario][i]["rps"] for i, run in enumerate(runs)] if "nginx-direct" in names else [float("nan")]
            lines.append(
                f"| {name} | {median([r['rps'] for r in runs]):.0f} | {median([r['bytes_per_s'] for r in runs]) / 1e6:.0f} | "
                f"{median([r['p50'] for r in runs]):.2f} | {median([r['p99'] for r in runs]):.2f} | "
                f"{median([r['cpu'] for r in runs]):.2f} | {sum(r['origin_requests'] for r in runs)} | "
                f"{median(ratios):.2f} | {median(direct):.2f} | {median(p99_ratios):.2f} |")
    lines.append("\n### Memory\n")
    lines.append("| server | RSS after the runs (MiB) | RSS with idle keep-alive connections (MiB) |")
    lines.append("|---|---:|---:|")
    for name in names:
        idle = summary["idle_rss_mib"].get(name)
        lines.append(f"| {name} | {summary['rss_mib'][name]:.0f} | {'' if idle is None else f'{idle:.0f}'} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
