#!/usr/bin/env bash
# The tokenbroker load benchmark: one command, `bash benches/run.sh` (see benches/README.md).
#
# Cases, interleaved A B C x ROUNDS on 127.0.0.1 against the same minimal upstream:
#   direct      wrk -> upstream
#   tokenbroker wrk -> tokenbroker (adobe_ims tenant, token from the IMS sandbox) -> upstream
#   nginx       wrk -> nginx (same rewrite, static Authorization) -> upstream
# Then the shared-store case (benches/redis.sh): the same tenant with [store] kind = "redis"
# against memory mode.
# Then the Redis Cluster case (benches/redis_cluster.sh): mode = "cluster" against "standalone",
# unlimited and rate-limited.
# Then the caller-class case (benches/classes.sh): a limited tenant with classes configured against
# the same with one plain caller, in memory and redis mode.
# Then the signing case (benches/signing.sh): an adobe_commerce tenant, every request signed with
# OAuth 1.0a, against a static tenant.
# Then the webhook case (benches/webhooks.sh): a verified, de-duplicated webhook forward against a
# plain proxied POST of the same body.
# Then the HTTPS cases (benches/https.sh): an nginx TLS upstream speaking http/1.1, h2, and h2
# recycling its connections every 1,000 requests, each through tokenbroker and nginx.
# Then: peak RSS with 1,000 tenants under load, 10,000 cold requests over 100 tenants (token calls
# must be exactly 100), and a 1,000-tenant reload under load (time, failed requests).
# Pinning (2 cores): the load generator on CPU 0; the upstream and the proxy under test on CPU 1,
# each proxy with one worker. Results: target/bench/results.json (the previous run is kept as
# results.prev.json and compared).
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
OUT=$ROOT/target/bench
WORK=$OUT/work
DURATION=${DURATION:-8}          # seconds per 64-connection run
LAT_DURATION=${LAT_DURATION:-4}  # seconds per 1-connection run
ROUNDS=${ROUNDS:-3}
# One worker for the proxy, as nginx gets `worker_processes 1`.
TB_RUNTIME_ENV=${TB_RUNTIME_ENV:-TOKENBROKER_WORKER_THREADS=1}
# EXTRAS=0 skips the 1,000-tenant and cold-burst steps (quick before/after comparisons);
# TOKENBROKER_BIN=path measures another build of the proxy (e.g. a saved baseline);
# SKIP_BUILD=1 uses the binaries already built; REDIS=0 skips the shared-store case, CLUSTER=0 the
# Redis Cluster case (CLUSTER_ONLY=1 runs only it), CLASSES=0 the caller-class case, HTTPS=0 the
# HTTPS cases, SIGNING=0 the signing case; SIGNING_ONLY=1 runs only the signing case;
# WEBHOOKS=0 skips the webhook case, WEBHOOKS_ONLY=1 runs only the webhook case; FLOOR=0 skips
# the floor case (the bench helper's `load floor`: the same request through nothing but hyper's
# connections, what the stack itself costs; benches/README.md, "The stack's floor").
FLOOR=${FLOOR:-1}
CONNS=64
LOADGEN_CPU=0
SERVER_CPU=1
[ "$(nproc)" -ge 2 ] || { LOADGEN_CPU=0; SERVER_CPU=0; echo "warning: one CPU only; load generator and servers share it" >&2; }
REQ_PATH="/rest/default/V1/products/bench-sku-0001?fields=id,sku,price"
UPSTREAM_PATH="/V1/products/bench-sku-0001?fields=id,sku,price"

PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap cleanup EXIT

log() { printf '==> %s\n' "$*" >&2; }

ensure_tools() {
  local missing=()
  command -v wrk >/dev/null || missing+=(wrk)
  command -v nginx >/dev/null || missing+=(nginx-light)
  command -v taskset >/dev/null || missing+=(util-linux)
  command -v redis-server >/dev/null || missing+=(redis-server)
  command -v openssl >/dev/null || missing+=(openssl)
  if [ ${#missing[@]} -gt 0 ]; then
    log "installing ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  fi
}

build() {
  if [ "${SKIP_BUILD:-0}" = 1 ]; then
    LOAD=$(ls -t "$ROOT"/target/release/deps/load-* 2>/dev/null | grep -v '\.d$' | head -1 || true)
    TB=${TOKENBROKER_BIN:-$ROOT/target/release/tokenbroker}
    return
  fi
  log "building release binaries"
  # Two invocations on purpose: a bench target unifies the dev-dependency features (tokio's
  # test-util) into the whole build, and the proxy under test must be the binary that ships.
  LOAD=$(cargo build --release --bench load --message-format=json-render-diagnostics \
    | python3 -c 'import json,sys
for l in sys.stdin:
    m=json.loads(l)
    if m.get("reason")=="compiler-artifact" and m["target"]["name"]=="load" and m.get("executable"): print(m["executable"])')
  cargo build --release --bin tokenbroker
  TB=${TOKENBROKER_BIN:-$ROOT/target/release/tokenbroker}
}

free_port() { python3 -c 'import socket;s=socket.socket();s.bind(("127.0.0.1",0));print(s.getsockname()[1])'; }

# Waits (bounded) until something accepts on 127.0.0.1:$1.
wait_port() {
  python3 - "$1" <<'PY'
import socket, sys, time
deadline = time.time() + 20
while time.time() < deadline:
    try:
        socket.create_connection(("127.0.0.1", int(sys.argv[1])), 0.2).close(); sys.exit(0)
    except OSError:
        time.sleep(0.01)
sys.exit("port %s never opened" % sys.argv[1])
PY
}

# utime+stime in clock ticks, summed over the given pids (whole thread groups).
cpu_ticks() { python3 "$ROOT/benches/report.py" ticks "$@"; }

stats() { curl -s --max-time 5 "http://$CONTROL/stats"; }

# start_helper NAME DELAY_MS: starts `load serve` on the server CPU; sets UPSTREAM TOKEN_URL CONTROL HELPER_PID.
start_helper() {
  taskset -c "$SERVER_CPU" "$LOAD" serve --token-delay-ms "$2" >"$WORK/$1.json" 2>"$WORK/$1.log" &
  HELPER_PID=$!; PIDS+=("$HELPER_PID")
  for _ in $(seq 200); do [ -s "$WORK/$1.json" ] && break; sleep 0.05; done
  read -r UPSTREAM TOKEN_URL CONTROL < <(python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); print(d["upstream"], d["token_url"], d["control"])' "$WORK/$1.json")
}

# tenant_config FILE LISTEN_PORT COUNT HEADER_GEN: COUNT adobe_ims tenants t0.. (or "bench" when COUNT=0).
tenant_config() {
  python3 "$ROOT/benches/report.py" config "$1" "$2" "$3" "$UPSTREAM" "$TOKEN_URL" "$4"
}

# start_tokenbroker CONFIG LOGFILE: the real binary, one tokio worker, pinned; sets TB_PID.
start_tokenbroker() {
  # shellcheck disable=SC2086
  env BENCH_IMS_SECRET=sandbox-secret-1 RUST_LOG="${TB_LOG:-warn}" ${TB_RUNTIME_ENV} \
    taskset -c "$SERVER_CPU" "$TB" run --config "$1" --log-format json 2>"$2" &
  TB_PID=$!; PIDS+=("$TB_PID")
}

start_nginx() {
  NGINX_PORT=$(free_port)
  mkdir -p "$WORK/nginx"
  sed -e "s|@PORT@|$NGINX_PORT|; s|@UPSTREAM@|$UPSTREAM|; s|@DIR@|$WORK/nginx|g" \
    -e "s|@TOKEN@|$(python3 -c 'print("e"*64+"."+"x"*900+"."+"s"*342)')|" \
    "$ROOT/benches/nginx.conf.in" >"$WORK/nginx/nginx.conf"
  taskset -c "$SERVER_CPU" nginx -c "$WORK/nginx/nginx.conf" -e "$WORK/nginx/error.log" &
  NGINX_PID=$!; PIDS+=("$NGINX_PID")
  wait_port "$NGINX_PORT"
  NGINX_PIDS="$NGINX_PID $(pgrep -P "$NGINX_PID" | tr '\n' ' ')"
}

# run_wrk CASE ROUND CONNS DURATION URL PIDS...: one bounded wrk run on the load CPU, one JSON record.
run_wrk() {
  local case=$1 round=$2 conns=$3 secs=$4 url=$5; shift 5
  local before after helper_before helper_after
  before=$(cpu_ticks "$@"); helper_before=$(cpu_ticks "$HELPER_PID")
  timeout $((secs + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" >"$WORK/wrk.txt"
  after=$(cpu_ticks "$@"); helper_after=$(cpu_ticks "$HELPER_PID")
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk.txt" "$case" "$round" "$conns" \
    "$((after - before))" "$((helper_after - helper_before))" >>"$WORK/runs.jsonl"
}

main_comparison() {
  log "case setup: upstream, IMS sandbox, tokenbroker (1 tenant), nginx"
  start_helper helper 0
  TB_PORT=$(free_port)
  tenant_config "$WORK/tb-1.toml" "$TB_PORT" 0 1
  start_tokenbroker "$WORK/tb-1.toml" "$WORK/tb-1.log"
  wait_port "$TB_PORT"
  start_nginx
  local direct="http://$UPSTREAM$UPSTREAM_PATH"
  local tb="http://127.0.0.1:$TB_PORT/bench$REQ_PATH"
  local ngx="http://127.0.0.1:$NGINX_PORT/bench$REQ_PATH"
  local urls=("$direct" "$tb" "$ngx") floor="" names="direct, tokenbroker, nginx"
  if [ "$FLOOR" = 1 ]; then
    start_floor
    floor="http://127.0.0.1:$FLOOR_PORT/bench$REQ_PATH"
    urls+=("$floor"); names+=", floor"
  fi
  for url in "${urls[@]}"; do
    curl -fsS --max-time 5 -o /dev/null "$url" || { log "a case does not answer 200: $url"; exit 1; }
  done
  log "warm-up (2 s per case)"
  for url in "${urls[@]}"; do timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s "$url" >/dev/null; done
  : >"$WORK/runs.jsonl"
  local conns secs
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: $names (${DURATION}s at $CONNS connections, ${LAT_DURATION}s at 1)"
    for conns in $CONNS 1; do
      secs=$DURATION; [ "$conns" = 1 ] && secs=$LAT_DURATION
      run_wrk direct "$round" "$conns" "$secs" "$direct" "$HELPER_PID"
      run_wrk tokenbroker "$round" "$conns" "$secs" "$tb" "$TB_PID"
      # shellcheck disable=SC2086
      run_wrk nginx "$round" "$conns" "$secs" "$ngx" $NGINX_PIDS
      [ -z "$floor" ] || run_wrk floor "$round" "$conns" "$secs" "$floor" "$FLOOR_PID"
    done
  done
  stats >"$WORK/main-stats.json"
  kill "$TB_PID" "$NGINX_PID" ${FLOOR_PID:+"$FLOOR_PID"}
}

# start_floor: the bench helper's `load floor` on the server CPU, with a bearer token as long as
# nginx's; sets FLOOR_PORT FLOOR_PID.
start_floor() {
  FLOOR_PORT=$(free_port)
  taskset -c "$SERVER_CPU" "$LOAD" floor --listen "127.0.0.1:$FLOOR_PORT" --upstream "$UPSTREAM" \
    --token "$(python3 -c 'print("e"*64+"."+"x"*900+"."+"s"*342)')" 2>"$WORK/floor.log" &
  FLOOR_PID=$!; PIDS+=("$FLOOR_PID")
  wait_port "$FLOOR_PORT"
}

# 1,000 tenants: peak RSS under load, then a reload of all of them under load.
thousand_tenants() {
  log "1,000 tenants: peak RSS under load"
  local port calls_before
  port=$(free_port)
  tenant_config "$WORK/tb-1000.toml" "$port" 1000 1
  calls_before=$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_calls"])')
  TB_LOG="warn,tokenbroker::app=info" start_tokenbroker "$WORK/tb-1000.toml" "$WORK/tb-1000.log"
  wait_port "$port"
  for _ in $(seq 200); do
    [ "$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["token_calls"])')" -ge $((calls_before + 1000)) ] && break
    sleep 0.05
  done
  local script="$WORK/spread.lua"
  printf 'local i = 0\nrequest = function()\n  i = (i + 1) %% 1000\n  return wrk.format(nil, "/t" .. i .. "%s")\nend\n' "$REQ_PATH" >"$script"
  timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$port" >"$WORK/wrk-1000.txt"
  grep -E '^(VmHWM|VmRSS)' "/proc/$TB_PID/status" >"$WORK/rss-1000.txt"
  log "1,000 tenants: reload under load"
  tenant_config "$WORK/tb-1000.toml.new" "$port" 1000 2
  timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d"${DURATION}s" --latency -s "$script" "http://127.0.0.1:$port" >"$WORK/wrk-reload.txt" &
  local wrk_pid=$!
  sleep $((DURATION / 3))
  mv "$WORK/tb-1000.toml.new" "$WORK/tb-1000.toml"
  date +%s.%N >"$WORK/sighup-at.txt"
  kill -HUP "$TB_PID"
  wait "$wrk_pid"
  stats >"$WORK/thousand-stats.json"
  echo "$calls_before" >"$WORK/thousand-calls-before.txt"
  kill "$TB_PID"
}

# 10,000 concurrent first requests over 100 tenants whose token endpoint answers after 2 s.
cold_burst() {
  log "cold burst: 10,000 requests over 100 tenants, token endpoint delayed 2 s"
  local port
  start_helper helper-cold 2000
  port=$(free_port)
  tenant_config "$WORK/tb-100.toml" "$port" 100 1
  start_tokenbroker "$WORK/tb-100.toml" "$WORK/tb-100.log"
  wait_port "$port"
  timeout 60 taskset -c "$LOADGEN_CPU" "$LOAD" cold --proxy "127.0.0.1:$port" --tenants 100 --requests 10000 >"$WORK/cold.json"
  stats >"$WORK/cold-stats.json"
  kill "$TB_PID"
}

# shellcheck source=benches/redis.sh
source "$ROOT/benches/redis.sh"
# shellcheck source=benches/redis_cluster.sh
source "$ROOT/benches/redis_cluster.sh"
# shellcheck source=benches/https.sh
source "$ROOT/benches/https.sh"
# shellcheck source=benches/classes.sh
source "$ROOT/benches/classes.sh"
# shellcheck source=benches/signing.sh
source "$ROOT/benches/signing.sh"
# shellcheck source=benches/webhooks.sh
source "$ROOT/benches/webhooks.sh"

mkdir -p "$WORK"
rm -f "$WORK/runs-https.jsonl"
ensure_tools
build
if [ "${SIGNING_ONLY:-0}" = 1 ]; then
  signing_case
  exit 0
fi
if [ "${WEBHOOKS_ONLY:-0}" = 1 ]; then
  webhooks_case
  exit 0
fi
if [ "${CLUSTER_ONLY:-0}" = 1 ]; then
  cluster_case
  exit 0
fi
[ -f "$OUT/results.json" ] && mv "$OUT/results.json" "$OUT/results.prev.json"
main_comparison
if [ "${REDIS:-1}" = 1 ]; then
  redis_case
fi
if [ "${CLUSTER:-1}" = 1 ]; then
  cluster_case
fi
if [ "${CLASSES:-1}" = 1 ]; then
  classes_case
fi
if [ "${HTTPS:-1}" = 1 ]; then
  https_cases
fi
if [ "${SIGNING:-1}" = 1 ]; then
  signing_case
fi
if [ "${WEBHOOKS:-1}" = 1 ]; then
  webhooks_case
fi
if [ "${EXTRAS:-1}" = 1 ]; then
  thousand_tenants
  cold_burst
fi
python3 "$ROOT/benches/report.py" summary "$WORK" "$OUT/results.json" "$OUT/results.prev.json"
