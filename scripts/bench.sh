#!/usr/bin/env bash
# Regenerates the results in BENCHMARKS.md: builds the release binary,
# runs every `missive bench` scenario against a fresh embedded server with
# fsync = always and = off, then `pairs` on a one-node and a three-node
# cluster (PostgreSQL + NATS on their default local ports), `idle` past one
# process's open-file limit on the three nodes, and rewrites
# the table between the markers in BENCHMARKS.md.
#
#   scripts/bench.sh            # full sizes (the issue's targets; ~1 hour)
#   SCALE=small scripts/bench.sh  # a few minutes, smaller counts
set -euo pipefail
cd "$(dirname "$0")/.."

SCALE=${SCALE:-full}
OUT=${OUT:-bench-results}
BIN=target/release/missive
mkdir -p "$OUT"
cargo build --release -q

if [ "$SCALE" = full ]; then
    PAIRS=1000; GROUP=1000; DRAIN_DEVICES=10000; DRAIN_QUEUED=100; IDLE=19000; SECS=20
    CLUSTER_IDLE=30000
else
    PAIRS=100; GROUP=200; DRAIN_DEVICES=500; DRAIN_QUEUED=100; IDLE=2000; SECS=10
    CLUSTER_IDLE=3000
fi

source scripts/bench_limits.sh
# Registrations hash passwords: two at a time leaves the cores to the load.
export MISSIVE_LIMITS__PASSWORD_HASHES_CONCURRENT_MAX=2

PIDS=()
start_node() { # port data_dir [extra serve flags...]
    local port=$1 dir=$2; shift 2
    rm -rf "$dir"; mkdir -p "$dir"
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" --log-format json "$@" \
        >"$dir.log" 2>&1 &
    PIDS+=($!)
    for _ in $(seq 1 100); do
        curl -sf "http://127.0.0.1:$port/readyz" >/dev/null && return 0
        sleep 0.1
    done
    echo "node on $port did not become ready"; cat "$dir.log"; exit 1
}
stop_nodes() {
    for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
    PIDS=()
}
trap stop_nodes EXIT

for fsync in always off; do
    start_node 8090 /tmp/missive-bench "--fsync" "$fsync"
    url=http://127.0.0.1:8090
    "$BIN" bench pairs --server $url --pairs $PAIRS --window 4 --duration-secs $SECS \
        --tag fsync=$fsync --out "$OUT/pairs-closed-$fsync.json" --sources 4 | tee -a "$OUT/log.txt"
    max=$(python3 -c "import json;print(int(json.load(open('$OUT/pairs-closed-$fsync.json'))['figures']['delivered_per_sec']))")
    "$BIN" bench pairs --server $url --pairs $PAIRS --rate $((max / 2)) --duration-secs $SECS \
        --tag fsync=$fsync --out "$OUT/pairs-open-$fsync.json" --sources 4 | tee -a "$OUT/log.txt"
    "$BIN" bench group --server $url --members $GROUP --window 16 --duration-secs $SECS \
        --tag fsync=$fsync --out "$OUT/group-$fsync.json" --sources 4 | tee -a "$OUT/log.txt"
    "$BIN" bench drain --server $url --devices $DRAIN_DEVICES --queued $DRAIN_QUEUED \
        --reconnect-rate 20000 --tag fsync=$fsync --out "$OUT/drain-$fsync.json" --sources 4 \
        --setup-concurrency 4 | tee -a "$OUT/log.txt"
    stop_nodes
done

# idle on a fresh server: heap the scenarios above left free would absorb
# the new connections' memory and hide it (19,000 connections measured
# 1.8 KB each after them).
start_node 8090 /tmp/missive-bench --fsync always
"$BIN" bench idle --server http://127.0.0.1:8090 --connections $IDLE --devices-per-user 100 \
    --server-pid "${PIDS[0]}" --idle-secs 10 --tag fsync=always --sources 4 \
    --out "$OUT/idle.json" | tee -a "$OUT/log.txt"
stop_nodes

# One node versus three on PostgreSQL + NATS, same machine, same sizes.
if pg_isready -h 127.0.0.1 -q && (exec 3<>/dev/tcp/127.0.0.1/4222) 2>/dev/null; then
    for nodes in 1 3; do
        db=missive_bench_$nodes
        psql -h 127.0.0.1 -U postgres -qc "DROP DATABASE IF EXISTS $db WITH (FORCE)" -c "CREATE DATABASE $db"
        servers=()
        for i in $(seq 1 $nodes); do
            start_node $((8090 + i)) /tmp/missive-bench-node$i \
                --store "postgres://postgres@127.0.0.1:5432/$db" --bus nats://127.0.0.1:4222 \
                --node-id "bench$i"
            servers+=(--server "http://127.0.0.1:$((8090 + i))")
        done
        "$BIN" bench pairs "${servers[@]}" --pairs $PAIRS --window 4 --duration-secs $SECS \
            --tag nodes=$nodes --tag store=postgres --out "$OUT/cluster-pairs-$nodes.json" \
            --sources 4 | tee -a "$OUT/log.txt"
        if [ "$nodes" = 3 ]; then
            # Past one process's open-file limit: two bench workers, each
            # node holding a third; memory and CPU are the three nodes' sums.
            "$BIN" bench idle "${servers[@]}" --connections $CLUSTER_IDLE --devices-per-user 100 \
                --workers 2 --server-pid "${PIDS[0]}" --server-pid "${PIDS[1]}" \
                --server-pid "${PIDS[2]}" --idle-secs 10 --tag nodes=3 --tag store=postgres \
                --sources 4 --out "$OUT/cluster-idle-3.json" | tee -a "$OUT/log.txt"
        fi
        stop_nodes
    done
fi

python3 scripts/bench_table.py "$OUT" BENCHMARKS.md
echo "BENCHMARKS.md updated from $OUT/"
