#!/usr/bin/env python3
"""Renders bench-results/*.json (written by `missive bench`) as the results
table in BENCHMARKS.md, between the `results:start` / `results:end` markers.

Usage: scripts/bench_table.py RESULTS_DIR BENCHMARKS.md
"""
import json
import pathlib
import sys

START = "<!-- results:start -->"
END = "<!-- results:end -->"

# (file stem, label, figure, unit, target, how "better" reads)
ROWS = [
    ("idle", "idle: server RSS per connection", "server_rss_per_connection_bytes", "B", "≤ 6,000 B"),
    ("idle", "idle: connect rate", "connect_per_sec", "/s", ""),
    ("idle", "idle: server CPU while idle", "server_idle_cpu_percent", "%", ""),
    ("pairs-closed-always", "pairs, fsync=always: delivered msgs/s", "delivered_per_sec", "/s", "≥ 100,000"),
    ("pairs-closed-always", "pairs, fsync=always: send→sent p99", "send_to_sent_p99_us", "µs", ""),
    ("pairs-open-always", "pairs, fsync=always, half max rate: send→delivered p99", "send_to_delivered_p99_us", "µs", "≤ 10,000 µs"),
    ("pairs-closed-off", "pairs, fsync=off: delivered msgs/s", "delivered_per_sec", "/s", ""),
    ("pairs-open-off", "pairs, fsync=off, half max rate: send→delivered p99", "send_to_delivered_p99_us", "µs", ""),
    ("group-always", "group, fsync=always: deliveries/s", "deliveries_per_sec", "/s", "≥ 300,000"),
    ("group-always", "group, fsync=always: latency to last member p99", "send_to_last_member_p99_us", "µs", ""),
    ("group-off", "group, fsync=off: deliveries/s", "deliveries_per_sec", "/s", ""),
    ("drain-always", "drain, fsync=always: msgs/s", "drain_msgs_per_sec", "/s", "≥ 200,000"),
    ("drain-always", "drain, fsync=always: time to empty", "time_to_empty_ms", "ms", ""),
    ("drain-off", "drain, fsync=off: msgs/s", "drain_msgs_per_sec", "/s", ""),
    ("cluster-pairs-1", "cluster pairs, 1 node (PostgreSQL+NATS): delivered msgs/s", "delivered_per_sec", "/s", ""),
    ("cluster-pairs-3", "cluster pairs, 3 nodes (PostgreSQL+NATS): delivered msgs/s", "delivered_per_sec", "/s", ""),
    ("cluster-idle-3", "cluster idle, 3 nodes, 2 bench workers: RSS per connection", "server_rss_per_connection_bytes", "B", ""),
    ("cluster-idle-3", "cluster idle, 3 nodes, 2 bench workers: connect rate", "connect_per_sec", "/s", ""),
]


def fmt(value, unit):
    if unit == "%":
        return f"{value:.1f} %"
    return f"{value:,.0f} {unit}"


def main():
    results, doc = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    reports = {p.stem: json.loads(p.read_text()) for p in results.glob("*.json")}
    lines = [
        "| figure | measured | target | sizes | lost / duplicated |",
        "|---|---|---|---|---|",
    ]
    for stem, label, figure, unit, target in ROWS:
        report = reports.get(stem)
        if report is None or figure not in report["figures"]:
            continue
        params = report["params"]
        sizes = ", ".join(
            f"{k}={v}" for k, v in params.items()
            if k not in ("servers",) and not k.startswith("tag.")
        )
        tally = report["tally"]
        faults = f"{tally['lost']} / {tally['duplicated']}" if tally["expected"] else "-"
        lines.append(
            f"| {label} | {fmt(report['figures'][figure], unit)} | {target or '-'} | {sizes} | {faults} |"
        )
    text = doc.read_text()
    head, rest = text.split(START, 1)
    _, tail = rest.split(END, 1)
    doc.write_text(head + START + "\n" + "\n".join(lines) + "\n" + END + tail)


if __name__ == "__main__":
    main()
