#!/usr/bin/env bash
# One node on PostgreSQL + NATS, `pairs` against a fresh database per run,
# with the server's CPU per message (scripts/server_cost.py) and, when the
# database has pg_stat_statements loaded, PostgreSQL's statements per
# message and its busiest statements over the run.
#
#   scripts/bench_postgres.sh BIN [OUT_DIR] [pairs args...]
#
# Defaults: `pairs --pairs 1000 --window 4 --duration-secs 15`. NODES=N
# (default 1) runs N nodes on one database and NATS; the bench spreads its
# users over them (each pair across two nodes) and the CPU per message is
# then summed over the nodes (the bench's own `--server-pid`). Needs
# PostgreSQL on 127.0.0.1:5432 (user postgres) and NATS on 127.0.0.1:4222.
set -euo pipefail
cd "$(dirname "$0")/.."

BIN=$1 OUT=${2:-bench-postgres}
shift $(($# < 2 ? $# : 2))
ARGS=("$@")
[ ${#ARGS[@]} -gt 0 ] || ARGS=(--pairs 1000 --window 4 --duration-secs 15)
mkdir -p "$OUT"
LABEL=$(basename "$BIN")-$$

source scripts/bench_limits.sh
PORT=18191
URL="http://127.0.0.1:$PORT"
PSQL=(psql -h 127.0.0.1 -U postgres -qAt)
DB=missive_bench

"${PSQL[@]}" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" -c "CREATE DATABASE $DB"
stats=$("${PSQL[@]}" -c "SELECT count(*) FROM pg_extension WHERE extname = 'pg_stat_statements'" -d "$DB" 2>/dev/null || echo 0)
if "${PSQL[@]}" -d "$DB" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" 2>/dev/null; then
    stats=1
fi

NODES=${NODES:-1}
servers=() pids=() urls=()
for node in $(seq 1 "$NODES"); do
    port=$((PORT + node - 1))
    dir="$OUT/$LABEL-$node.data"
    rm -rf "$dir"; mkdir -p "$dir"
    "$BIN" serve --listen "127.0.0.1:$port" --data-dir "$dir" --node-id "node$node" \
        --store "postgres://postgres@127.0.0.1:5432/$DB" --bus nats://127.0.0.1:4222 \
        --log-format json >"$dir.log" 2>&1 &
    pids+=($!)
    urls+=("http://127.0.0.1:$port")
    servers+=(--server "http://127.0.0.1:$port" --server-pid "$!")
done
for url in "${urls[@]}"; do
    for _ in $(seq 1 100); do
        curl -sf "$url/readyz" >/dev/null && break
        sleep 0.1
    done
done
[ "$stats" = 1 ] && "${PSQL[@]}" -d "$DB" -c "SELECT pg_stat_statements_reset()" >/dev/null
if [ "$NODES" = 1 ]; then
    scripts/server_cost.py "${pids[0]}" "$URL" "$OUT/$LABEL.cost.json" &
    sampler=$!
fi
"$BIN" bench pairs "${ARGS[@]}" "${servers[@]}" --out "$OUT/$LABEL.json" >"$OUT/$LABEL.txt" 2>&1 || true
if [ "$NODES" = 1 ]; then
    kill "$sampler"; wait "$sampler" || true
else
    echo '{}' >"$OUT/$LABEL.cost.json"
fi
sends=0
for url in "${urls[@]}"; do
    n=$(curl -s "$url/metrics" | awk '/^missive_sends_total/ {s += $2} END {print s + 0}')
    sends=$((sends + n))
done
for pid in "${pids[@]}"; do kill "$pid"; wait "$pid" || true; done
rm -rf "$OUT/$LABEL"-*.data

python3 - "$OUT/$LABEL.json" "$OUT/$LABEL.cost.json" <<'EOF'
import json, sys
report = json.load(open(sys.argv[1]))
cost = json.load(open(sys.argv[2]))
figures, tally = report.get("figures", {}), report.get("tally", {})
print(f"delivered/s {figures.get('delivered_per_sec', 0):,.0f}  lost {tally.get('lost')}  "
      f"duplicated {tally.get('duplicated')}  server CPU/msg "
      f"{cost.get('server_cpu_us_per_msg', figures.get('server_cpu_us_per_msg'))} µs "
      f"({cost.get('server_cpu_percent', 'n/a')} % of a core)")
EOF
if [ "$stats" = 1 ]; then
    echo "PostgreSQL over the run ($sends sends):"
    "${PSQL[@]}" -d "$DB" -F $'\t' -c "
        SELECT round(sum(calls)::numeric / greatest($sends, 1), 2) AS statements_per_send,
               round(sum(total_exec_time + total_plan_time)::numeric / 1000, 1) AS seconds
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$DB')"
    "${PSQL[@]}" -d "$DB" -F $'\t' -c "
        SELECT calls, round((total_exec_time + total_plan_time)::numeric / 1000, 2) AS s,
               round(((total_exec_time + total_plan_time) / greatest(calls, 1))::numeric, 3) AS ms_per_call,
               left(regexp_replace(query, '\s+', ' ', 'g'), 90)
        FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = '$DB')
        ORDER BY total_exec_time + total_plan_time DESC LIMIT 25"
fi
