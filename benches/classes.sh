# The caller-class case of `bash benches/run.sh` (sourced by it; CLASSES=0 skips it): what caller
# classes cost a limited tenant. The same limited tenant (a limit this load never reaches) behind
# one `[[caller]]` without a class ("callers", today's cost of callers) and behind an interactive
# and a batch caller, the load sent as batch ("classes": the lowest class, which on the shared
# bucket takes only due slots). Both in memory mode and with `[store] kind = "redis"`.
# Interleaved rounds at 64 connections. Target: CPU per request classes/callers within 5 %.
# Results: target/bench/classes.json.

CLASSES_KEY=bench-classes-batch-key-0123
CALLERS_KEY=bench-classes-standard-key-01

classes_case() {
  log "caller classes: a limited tenant with classes configured against the same with one caller"
  local rport
  rport=$(free_port)
  taskset -c "$LOADGEN_CPU" redis-server --port "$rport" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$WORK" >"$WORK/redis-classes.log" 2>&1 &
  PIDS+=("$!")
  wait_port "$rport"
  local limit='rate_limit = { per_second = 1000000, burst = 1000000, max_wait = "1s" }'
  local callers='[[caller]]\nname = "sync"\nkey = { env = "BENCH_CALLERS_KEY" }\n'
  local classes='[[caller]]\nname = "checkout"\nkey = { env = "BENCH_CALLERS_KEY" }\nclass = "interactive"\n[[caller]]\nname = "nightly"\nkey = { env = "BENCH_CLASSES_KEY" }\nclass = "batch"\n'
  local store='[store]\nkind = "redis"\nurl = { env = "BENCH_REDIS_URL" }\n'
  declare -gA CLASSES_URL=() CLASSES_PID=() CLASSES_PORT=()
  local case port
  for case in memory-callers memory-classes redis-callers redis-classes; do
    port=$(free_port)
    tenant_config "$WORK/tb-$case.toml" "$port" 0 1
    sed -i -e "s|^scopes = .*|&\n$limit|" "$WORK/tb-$case.toml"
    case $case in *-callers) printf '%b' "$callers" ;; *) printf '%b' "$classes" ;; esac >>"$WORK/tb-$case.toml"
    case $case in redis-*) printf '%b' "$store" >>"$WORK/tb-$case.toml" ;; esac
    TB_RUNTIME_ENV="$TB_RUNTIME_ENV BENCH_REDIS_URL=redis://127.0.0.1:$rport BENCH_CALLERS_KEY=$CALLERS_KEY BENCH_CLASSES_KEY=$CLASSES_KEY" \
      start_tokenbroker "$WORK/tb-$case.toml" "$WORK/tb-$case.log"
    CLASSES_PID[$case]=$TB_PID
    CLASSES_URL[$case]="http://127.0.0.1:$port/bench$REQ_PATH"
    CLASSES_PORT[$case]=$port
  done
  for port in "${CLASSES_PORT[@]}"; do wait_port "$port"; done
  : >"$WORK/runs-classes.jsonl"
  for case in memory-callers memory-classes redis-callers redis-classes; do
    curl -fsS --max-time 5 -o /dev/null -H "tokenbroker-key: $(classes_key "$case")" "${CLASSES_URL[$case]}" ||
      { log "a case does not answer 200: $case"; exit 1; }
    timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s -H "tokenbroker-key: $(classes_key "$case")" "${CLASSES_URL[$case]}" >/dev/null
  done
  local round
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: callers, classes; memory and redis (${DURATION}s at $CONNS connections)"
    for case in memory-callers memory-classes redis-callers redis-classes; do classes_wrk "$case" "$round"; done
  done
  kill "${CLASSES_PID[@]}"
  classes_report
}

classes_key() {
  case $1 in *-callers) echo "$CALLERS_KEY" ;; *) echo "$CLASSES_KEY" ;; esac
}

# One bounded wrk run; one JSON record in runs-classes.jsonl.
classes_wrk() {
  local case=$1 round=$2 pid=${CLASSES_PID[$1]} before after
  before=$(cpu_ticks "$pid")
  timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d"${DURATION}s" --latency \
    -H "tokenbroker-key: $(classes_key "$case")" "${CLASSES_URL[$case]}" >"$WORK/wrk-classes.txt"
  after=$(cpu_ticks "$pid")
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk-classes.txt" "$case" "$round" $CONNS \
    "$((after - before))" 0 >>"$WORK/runs-classes.jsonl"
}

classes_report() {
  python3 "$ROOT/benches/report.py" classes "$WORK/runs-classes.jsonl" "$OUT/classes.json"
}
