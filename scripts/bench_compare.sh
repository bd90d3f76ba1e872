#!/usr/bin/env bash
# Before/after on one build pair, in one run: for each binary, a fresh
# embedded server (fsync=always) and that build's own load generator (a
# build speaks its own protocol), with the server's CPU per message
# sampled from outside by scripts/server_cost.py, the same way for both.
#
#   scripts/bench_compare.sh BEFORE_BIN AFTER_BIN [OUT_DIR]
#
# Sizes: SCENARIOS (default: the issue's table) as name:bench-arguments.
# Each run writes OUT_DIR/<label>-<name>.json (the bench's report) and
# OUT_DIR/<label>-<name>.cost.json (the server's CPU); the summary table
# is printed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

BEFORE=$1 AFTER=$2 OUT=${3:-bench-compare}
mkdir -p "$OUT"
DEFAULT_SCENARIOS=(
    "pairs100:pairs --pairs 100 --window 4 --duration-secs 15"
    "pairs1000:pairs --pairs 1000 --window 4 --duration-secs 20"
    "group1000:group --members 1000 --window 16 --duration-secs 20"
)
if [ -n "${SCENARIOS:-}" ]; then
    IFS=';' read -r -a RUNS <<<"$SCENARIOS"
else
    RUNS=("${DEFAULT_SCENARIOS[@]}")
fi

source scripts/bench_limits.sh
PORT=18181
URL="http://127.0.0.1:$PORT"

run_one() { # label binary name args...
    local label=$1 bin=$2 name=$3; shift 3
    local dir="$OUT/$label-$name.data"
    rm -rf "$dir"; mkdir -p "$dir"
    "$bin" serve --listen "127.0.0.1:$PORT" --data-dir "$dir" --fsync always \
        --log-format json >"$dir.log" 2>&1 &
    local server=$!
    for _ in $(seq 1 100); do
        curl -sf "$URL/readyz" >/dev/null && break
        sleep 0.1
    done
    scripts/server_cost.py "$server" "$URL" "$OUT/$label-$name.cost.json" &
    local sampler=$!
    "$bin" bench "$@" --server "$URL" --out "$OUT/$label-$name.json" \
        --tag build="$label" >"$OUT/$label-$name.txt" 2>&1 || true
    kill "$sampler"; wait "$sampler" || true
    kill "$server"; wait "$server" || true
    rm -rf "$dir"
}

for run in "${RUNS[@]}"; do
    name=${run%%:*} args=${run#*:}
    # shellcheck disable=SC2086
    run_one before "$BEFORE" "$name" $args
    # shellcheck disable=SC2086
    run_one after "$AFTER" "$name" $args
done

python3 - "$OUT" "${RUNS[@]}" <<'PY'
import json, sys
out, runs = sys.argv[1], sys.argv[2:]
def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}
print("| scenario | build | rate | lost / dup | server CPU µs/msg | server CPU % |")
print("|---|---|---|---|---|---|")
for run in runs:
    name = run.split(":", 1)[0]
    for label in ("before", "after"):
        report = load(f"{out}/{label}-{name}.json")
        cost = load(f"{out}/{label}-{name}.cost.json")
        figures = report.get("figures", {})
        rate = figures.get("delivered_per_sec", figures.get("deliveries_per_sec"))
        tally = report.get("tally", {})
        print(f"| {name} | {label} | {rate:,.0f}/s | {tally.get('lost','?')} / {tally.get('duplicated','?')} "
              f"| {cost.get('server_cpu_us_per_msg','-')} | {cost.get('server_cpu_percent','-')} |"
              if rate is not None else f"| {name} | {label} | failed (see {out}/{label}-{name}.txt) | | | |")
PY
