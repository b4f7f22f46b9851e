#!/usr/bin/env bash
# Instructions per proxied request, counted by callgrind: a figure that, unlike CPU time, does not
# move with the machine's load, so two builds can be compared on a busy machine and across days.
#
#   bash benches/instructions.sh [BINARY ...]     (default: target/release/tokenbroker)
#
# A BINARY of `floor` measures the bench helper's `load floor` instead: the same request through
# nothing but hyper's connections on one thread (benches/README.md, "The stack's floor").
#
# Each binary serves the benchmark's adobe_ims tenant (benches/run.sh's case) under callgrind, one
# worker thread. After a warm-up, callgrind's instrumentation is switched on, N requests are sent
# on one keep-alive connection, and it is switched off again: the instructions counted divided by
# N is the figure printed (start-up and the warm-up do not count). Needs valgrind
# (Debian's `valgrind`) and the bench's `load` helper (built by `bash benches/run.sh`, or by
# `cargo build --release --bench load`).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
WORK=$ROOT/target/bench/instructions
N=${N:-2000}
WARMUP=${WARMUP:-200}
mkdir -p "$WORK"
command -v valgrind >/dev/null || { echo "valgrind is required: apt-get install -y valgrind" >&2; exit 1; }
LOAD=$(ls -t "$ROOT"/target/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
[ -n "$LOAD" ] || { echo "the bench's load helper is missing: cargo build --release --bench load" >&2; exit 1; }
[ $# -gt 0 ] || set -- "$ROOT/target/release/tokenbroker"

PIDS=()
cleanup() { for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done; wait 2>/dev/null || true; }
trap cleanup EXIT

"$LOAD" serve --token-delay-ms 0 >"$WORK/helper.json" 2>"$WORK/helper.log" &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$WORK/helper.json" ] && break; sleep 0.05; done
read -r UPSTREAM TOKEN_URL _ < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["upstream"], d["token_url"], d["control"])' "$WORK/helper.json")
PORT=$(python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])')
python3 "$ROOT/benches/report.py" config "$WORK/tb.toml" "$PORT" 0 "$UPSTREAM" "$TOKEN_URL" 0

# Sends `count` GETs on one keep-alive connection, checking each answer.
drive() {
  python3 - "$PORT" "$1" <<'PY'
import http.client, sys
port, count = int(sys.argv[1]), int(sys.argv[2])
conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
for _ in range(count):
    conn.request("GET", "/bench/rest/default/V1/products/bench-sku-0001?fields=id,sku,price")
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        sys.exit(f"answer {response.status}")
PY
}

for binary in "$@"; do
  out="$WORK/callgrind.$(basename "$binary").$$.out"
  if [ "$binary" = floor ]; then
    # A bearer token as long as the one nginx sends (benches/run.sh).
    token=$(python3 -c 'print("e"*64+"."+"x"*900+"."+"s"*342)')
    valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
      "$LOAD" floor --listen "127.0.0.1:$PORT" --upstream "$UPSTREAM" --token "$token" 2>"$WORK/floor.log" &
  else
    env BENCH_IMS_SECRET=sandbox-secret-1 RUST_LOG=warn TOKENBROKER_WORKER_THREADS=1 \
      valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$out" \
      "$binary" run --config "$WORK/tb.toml" --log-format json 2>"$WORK/tb.log" &
  fi
  pid=$!; PIDS+=("$pid")
  for _ in $(seq 600); do
    python3 -c 'import socket,sys; socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close()' "$PORT" 2>/dev/null && break
    sleep 0.1
  done
  drive "$WARMUP"
  callgrind_control --instr=on "$pid" >/dev/null 2>&1
  drive "$N"
  callgrind_control --instr=off "$pid" >/dev/null 2>&1
  callgrind_control --dump "$pid" >/dev/null 2>&1
  kill "$pid"; wait "$pid" 2>/dev/null || true
  total=$(cat "$out"* | awk '/^totals:/ {s += $2} END {print s}')
  if [ "$binary" = floor ]; then name="the stack's floor (load floor)"; else name=$("$binary" --version); fi
  printf '%s\t%s\t%d instructions per request (%d requests)\n' "$name" "$binary" "$((total / N))" "$N"
done
