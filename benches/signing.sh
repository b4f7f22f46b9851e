# The signing case of `bash benches/run.sh` (sourced by it; SIGNING=0 skips it, SIGNING_ONLY=1 runs
# it alone after the build): what signing every request with OAuth 1.0a costs. Two single-tenant
# proxies against the same minimal upstream, the same request (a path, a query of two parameters,
# no body): a `static` tenant (one header built once) and an `adobe_commerce` tenant (a base string
# prepared per request, a nonce, an HMAC-SHA256 and an `Authorization` per attempt). Interleaved
# rounds at 64 connections; the figure is proxy CPU per request, signed minus static, per round.
# Target: under 5 us per request. Results: target/bench/signing.json.

signing_case() {
  log "signing: an adobe_commerce tenant (every request signed) against a static tenant"
  [ -n "${UPSTREAM:-}" ] || signing_upstream
  declare -gA SIGNING_URL=() SIGNING_PID=()
  local case port
  for case in static signed; do
    port=$(free_port)
    signing_config "$WORK/tb-signing-$case.toml" "$port" "$case"
    TB_RUNTIME_ENV="$TB_RUNTIME_ENV BENCH_STATIC=Bearer-$(python3 -c 'print("s"*40)') BENCH_CK=bench-consumer-key BENCH_CS=bench-consumer-secret BENCH_AT=bench-access-token BENCH_ATS=bench-access-token-secret" \
      start_tokenbroker "$WORK/tb-signing-$case.toml" "$WORK/tb-signing-$case.log"
    SIGNING_PID[$case]=$TB_PID
    SIGNING_URL[$case]="http://127.0.0.1:$port/bench$REQ_PATH"
    wait_port "$port"
  done
  : >"$WORK/runs-signing.jsonl"
  for case in static signed; do
    curl -fsS --max-time 5 -o /dev/null "${SIGNING_URL[$case]}" || { log "a case does not answer 200: $case"; exit 1; }
    timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s "${SIGNING_URL[$case]}" >/dev/null
  done
  local round
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: static, signed (${DURATION}s at $CONNS connections)"
    for case in static signed; do signing_wrk "$case" "$round"; done
  done
  kill "${SIGNING_PID[@]}"
  python3 "$ROOT/benches/report.py" signing "$WORK/runs-signing.jsonl" "$OUT/signing.json"
}

# With SIGNING_ONLY=1 and SKIP_BUILD=1 there may be no `load` helper: an nginx answering every
# request with a fixed JSON document (keep-alive) stands in for the minimal upstream. Only the
# proxies' CPU is compared, and both cases share it.
signing_upstream() {
  if [ -x "${LOAD:-}" ]; then
    start_helper helper-signing 0
    return
  fi
  local port dir=$WORK/nginx-signing
  port=$(free_port)
  mkdir -p "$dir"
  printf 'worker_processes 1;\ndaemon off;\npid %s/nginx.pid;\nerror_log %s/error.log warn;\nevents { worker_connections 4096; }\nhttp {\n  access_log off;\n  client_body_temp_path %s/body;\n  keepalive_requests 1000000;\n  server {\n    listen 127.0.0.1:%s;\n    location / { default_type application/json; return 200 '"'"'{"id":1,"sku":"bench-sku-0001","price":19.9}'"'"'; }\n  }\n}\n' \
    "$dir" "$dir" "$dir" "$port" >"$dir/nginx.conf"
  taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" -e "$dir/error.log" &
  PIDS+=("$!")
  wait_port "$port"
  UPSTREAM=127.0.0.1:$port
}

# signing_config FILE PORT CASE: one tenant `bench` on the minimal upstream.
signing_config() {
  {
    printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "off"\n\n[[tenant]]\nname = "bench"\n' "$2"
    printf 'upstream = "http://%s"\n' "$UPSTREAM"
    case $3 in
      static) printf 'provider = "static"\nvalue = { env = "BENCH_STATIC" }\n' ;;
      signed) printf 'provider = "adobe_commerce"\nconsumer_key = { env = "BENCH_CK" }\nconsumer_secret = { env = "BENCH_CS" }\naccess_token = { env = "BENCH_AT" }\naccess_token_secret = { env = "BENCH_ATS" }\n' ;;
    esac
  } >"$1"
}

# One bounded wrk run; one JSON record in runs-signing.jsonl.
signing_wrk() {
  local case=$1 round=$2 pid=${SIGNING_PID[$1]} before after
  before=$(cpu_ticks "$pid")
  timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d"${DURATION}s" --latency \
    "${SIGNING_URL[$case]}" >"$WORK/wrk-signing.txt"
  after=$(cpu_ticks "$pid")
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk-signing.txt" "$case" "$round" $CONNS \
    "$((after - before))" 0 >>"$WORK/runs-signing.jsonl"
}
