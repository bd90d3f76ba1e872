#!/usr/bin/env python3
"""Samples a server's CPU time and stored messages while a benchmark runs,
then reports its CPU per message over the steady phase.

    scripts/server_cost.py PID URL OUT.json &   # until SIGTERM/SIGINT
    ... run the load ...
    kill %1

Every 250 ms it reads utime+stime of PID from /proc and
`missive_sends_total` from URL/metrics. The steady phase runs from the
last sample before the first stored message to the first sample after the
last one, so setup (registration, login: Argon2 hashing) is left out and
nothing but the traffic is measured. It works with any build that reports
`missive_sends_total`, which is what lets two builds be compared by the
same measure in one run.
"""

import json
import os
import signal
import sys
import time
import urllib.request

TICKS_PER_SEC = os.sysconf("SC_CLK_TCK")
INTERVAL = 0.25


def cpu_ticks(pid):
    with open(f"/proc/{pid}/stat") as stat:
        rest = stat.read().rsplit(")", 1)[1].split()
    return int(rest[11]) + int(rest[12])


def sends(url):
    with urllib.request.urlopen(f"{url}/metrics", timeout=2) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("missive_sends_total "):
                return float(line.split()[1])
    return 0.0


def steady(samples):
    """(cpu_secs, sends, wall_secs) between the edges of the sending phase:
    from the last sample before the first send to one sample after the last
    (so trailing deliveries and acks count)."""
    grew = [i for i in range(1, len(samples)) if samples[i][2] > samples[i - 1][2]]
    if not grew:
        return None
    start = samples[grew[0] - 1]
    end = samples[min(grew[-1] + 1, len(samples) - 1)]
    return (
        (end[1] - start[1]) / TICKS_PER_SEC,
        end[2] - start[2],
        end[0] - start[0],
    )


def main():
    pid, url, out = int(sys.argv[1]), sys.argv[2].rstrip("/"), sys.argv[3]
    samples = []
    stop = []
    signal.signal(signal.SIGTERM, lambda *_: stop.append(1))
    signal.signal(signal.SIGINT, lambda *_: stop.append(1))
    while not stop:
        try:
            samples.append((time.monotonic(), cpu_ticks(pid), sends(url)))
        except (OSError, ValueError):
            break
        time.sleep(INTERVAL)
    result = {"pid": pid, "samples": len(samples)}
    phase = steady(samples) if len(samples) > 1 else None
    if phase and phase[1] > 0:
        cpu_secs, sent, wall = phase
        result.update(
            server_cpu_secs=round(cpu_secs, 2),
            server_sends=int(sent),
            wall_secs=round(wall, 2),
            server_cpu_us_per_msg=round(cpu_secs * 1e6 / sent, 1),
            server_cpu_percent=round(100 * cpu_secs / wall, 1),
        )
    with open(out, "w") as f:
        json.dump(result, f)
        f.write("\n")


if __name__ == "__main__":
    main()
