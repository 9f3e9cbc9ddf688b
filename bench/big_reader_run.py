#!/usr/bin/env python3
"""64 MiB hits measured with bench/big_reader.rs (large reads, every connection served as soon as
it has data) instead of wrk, for every server of bench/run.py, in rounds, servers in rotating
order. Usage, after `cargo build --release --bin shoal --example big_reader`:

    python3 bench/big_reader_run.py [ROUNDS] [SECONDS]

Prints a line per run and a table of medians (ratios to Traffic Server within each round);
raw numbers in /tmp/shoal-bench/big-reader.json. Only 127.0.0.1 is targeted.
"""

import json
import os
import statistics
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import run  # noqa: E402  (bench/run.py: the servers' configurations)

READER = os.path.join(os.path.dirname(HERE), "target/release/examples/big_reader")
NAMES = ["nginx-direct", "shoal", "haproxy", "trafficserver", "nginx-cache", "varnish"]


def main():
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 3
    seconds = sys.argv[2] if len(sys.argv) > 2 else "10"
    os.makedirs(run.WORK, exist_ok=True)
    www = run.prepare_files()
    starters = run.server_starters(www)
    servers = {}
    origin = run.start_origin(www)
    try:
        run.wait_port(run.ORIGIN_PORT)
        for name in NAMES:
            servers[name] = starters[name]()
            run.wait_port(run.PORTS[name])
            run.warm(run.PORTS[name])
        results = {name: [] for name in NAMES}
        for index in range(rounds):
            for name in NAMES[index % len(NAMES):] + NAMES[:index % len(NAMES)]:
                output = subprocess.run([READER, f"127.0.0.1:{run.PORTS[name]}", "/64m.bin", "10", seconds],
                                        capture_output=True, text=True, check=True).stdout
                results[name].append(json.loads(output))
                print(index + 1, name, output.strip(), flush=True)
        with open(f"{run.WORK}/big-reader.json", "w") as handle:
            json.dump(results, handle, indent=1)
        print("| server | req/s | MB/s | p50 ms | p99 ms | max ms | ratio req/s |")
        print("|---|---:|---:|---:|---:|---:|---:|")
        for name in NAMES:
            runs = results[name]
            median = lambda key: statistics.median(r[key] for r in runs)  # noqa: E731
            ratio = statistics.median(a["rps"] / b["rps"] for a, b in zip(runs, results["trafficserver"]))
            print(f"| {name} | {median('rps'):.1f} | {median('mb_per_s'):.0f} | {median('p50'):.0f} | "
                  f"{median('p99'):.0f} | {median('max'):.0f} | {ratio:.2f} |")
    finally:
        run.stop_all(list(servers.values()) + [origin])


if __name__ == "__main__":
    main()
