# The shared-store case of `bash benches/run.sh` (sourced by it): the same tenant, the same load,
# with `[store] kind = "redis"` against the default memory store, interleaved rounds in one run.
# The request path never touches Redis (each replica serves from its local token), so the target
# is CPU per request within 5 % of memory mode. Redis runs on the load CPU: it is not on the
# request path, and the little it does (pings, the renewal protocol) must not be charged to the
# proxy's core. Results: target/bench/redis.json. Skipped with REDIS=0.

redis_case() {
  log "shared store: tokenbroker with [store] kind = \"redis\" against memory mode"
  local rport mem_port redis_port
  rport=$(free_port)
  taskset -c "$LOADGEN_CPU" redis-server --port "$rport" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$WORK" >"$WORK/redis.log" 2>&1 &
  PIDS+=("$!")
  wait_port "$rport"
  mem_port=$(free_port)
  redis_port=$(free_port)
  tenant_config "$WORK/tb-mem.toml" "$mem_port" 0 1
  tenant_config "$WORK/tb-redis.toml" "$redis_port" 0 1
  local mem_lim_port redis_lim_port
  mem_lim_port=$(free_port)
  redis_lim_port=$(free_port)
  # The same tenant with a limit that never throttles this load: what the limiter costs, local
  # (no await on the fast path) against cluster-wide (one Redis round trip per request).
  local limit='rate_limit = { per_second = 1000000, burst = 1000000, max_wait = "1s" }'
  sed -e "s|^scopes = .*|&\n$limit|" -e "s|127.0.0.1:$mem_port|127.0.0.1:$mem_lim_port|" \
    "$WORK/tb-mem.toml" >"$WORK/tb-mem-limited.toml"
  sed -e "s|^scopes = .*|&\n$limit|" -e "s|127.0.0.1:$redis_port|127.0.0.1:$redis_lim_port|" \
    "$WORK/tb-redis.toml" >"$WORK/tb-redis-limited.toml"
  printf '\n[store]\nkind = "redis"\nurl = { env = "BENCH_REDIS_URL" }\n' | tee -a "$WORK/tb-redis.toml" >>"$WORK/tb-redis-limited.toml"
  start_tokenbroker "$WORK/tb-mem.toml" "$WORK/tb-mem.log"
  local mem_pid=$TB_PID
  TB_RUNTIME_ENV="$TB_RUNTIME_ENV BENCH_REDIS_URL=redis://127.0.0.1:$rport" \
    start_tokenbroker "$WORK/tb-redis.toml" "$WORK/tb-redis.log"
  local redis_pid=$TB_PID
  start_tokenbroker "$WORK/tb-mem-limited.toml" "$WORK/tb-mem-limited.log"
  local mem_lim_pid=$TB_PID
  TB_RUNTIME_ENV="$TB_RUNTIME_ENV BENCH_REDIS_URL=redis://127.0.0.1:$rport" \
    start_tokenbroker "$WORK/tb-redis-limited.toml" "$WORK/tb-redis-limited.log"
  local redis_lim_pid=$TB_PID
  for port in "$mem_port" "$redis_port" "$mem_lim_port" "$redis_lim_port"; do wait_port "$port"; done
  local mem="http://127.0.0.1:$mem_port/bench$REQ_PATH"
  local shared="http://127.0.0.1:$redis_port/bench$REQ_PATH"
  local mem_lim="http://127.0.0.1:$mem_lim_port/bench$REQ_PATH"
  local shared_lim="http://127.0.0.1:$redis_lim_port/bench$REQ_PATH"
  for url in "$mem" "$shared" "$mem_lim" "$shared_lim"; do
    curl -fsS --max-time 5 -o /dev/null "$url" || { log "a case does not answer 200: $url"; exit 1; }
  done
  for url in "$mem" "$shared" "$mem_lim" "$shared_lim"; do timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s "$url" >/dev/null; done
  : >"$WORK/runs-redis.jsonl"
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: memory, redis (${DURATION}s at $CONNS connections, ${LAT_DURATION}s at 1)"
    redis_wrk memory "$round" $CONNS "$DURATION" "$mem" "$mem_pid"
    redis_wrk redis "$round" $CONNS "$DURATION" "$shared" "$redis_pid"
    redis_wrk memory "$round" 1 "$LAT_DURATION" "$mem" "$mem_pid"
    redis_wrk redis "$round" 1 "$LAT_DURATION" "$shared" "$redis_pid"
    redis_wrk memory-limited "$round" $CONNS "$DURATION" "$mem_lim" "$mem_lim_pid"
    redis_wrk redis-limited "$round" $CONNS "$DURATION" "$shared_lim" "$redis_lim_pid"
    redis_wrk memory-limited "$round" 1 "$LAT_DURATION" "$mem_lim" "$mem_lim_pid"
    redis_wrk redis-limited "$round" 1 "$LAT_DURATION" "$shared_lim" "$redis_lim_pid"
  done
  # The shared case must really have shared: its token is in Redis (sealed).
  local stored buckets
  stored=$(redis-cli -p "$rport" --scan --pattern 'tokenbroker:*:token' | wc -l)
  [ "$stored" = 1 ] || { log "the redis case stored $stored tokens in Redis, expected 1"; exit 1; }
  buckets=$(redis-cli -p "$rport" --scan --pattern 'tokenbroker:*:bucket' | wc -l)
  [ "$buckets" = 1 ] || { log "the limited redis case left $buckets buckets in Redis, expected 1"; exit 1; }
  kill "$mem_pid" "$redis_pid" "$mem_lim_pid" "$redis_lim_pid"
  python3 - "$WORK/runs-redis.jsonl" "$OUT/redis.json" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def per_round(metric, conns, num="redis", den="memory", diff=False):
    by = {(r["case"], r["round"]): r[metric] for r in runs if r["conns"] == conns}
    rounds = [n for n in sorted({r["round"] for r in runs}) if by.get((den, n)) and by.get((num, n)) is not None]
    vals = [by[(num, n)] - by[(den, n)] if diff else by[(num, n)] / by[(den, n)] for n in rounds]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None
failed = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
result = {
    "cpu/req redis/memory": per_round("cpu_us_per_req", 64),
    "rps redis/memory": per_round("rps", 64),
    "p99 redis/memory": per_round("p99_us", 64),
    "latency@1 redis/memory": per_round("mean_latency_us", 1),
    "limited: cpu/req redis/memory": per_round("cpu_us_per_req", 64, "redis-limited", "memory-limited"),
    "limited: rps redis/memory": per_round("rps", 64, "redis-limited", "memory-limited"),
    "limited: added latency@1 us": per_round("mean_latency_us", 1, "redis-limited", "memory-limited", True),
    "failed": failed,
}
json.dump(result, open(sys.argv[2], "w"), indent=2)
print("\nshared store (redis) vs memory, same run, median [min..max] over rounds")
for name, v in result.items():
    if isinstance(v, dict):
        print(f"  {name:34} {v['median']:.3f} [{v['min']:.3f}..{v['max']:.3f}]")
cpu = result["cpu/req redis/memory"]
verdict = "PASS" if cpu and cpu["median"] <= 1.05 else "MISS"
print(f"  target: cpu/req redis <= 1.05 x memory: {verdict}; failed requests: {failed}")
sys.exit(1 if failed else 0)
PY
}

# One bounded wrk run of the shared-store case; one JSON record in runs-redis.jsonl.
redis_wrk() {
  local case=$1 round=$2 conns=$3 secs=$4 url=$5 pid=$6 before after
  before=$(cpu_ticks "$pid")
  timeout $((secs + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$conns" -d"${secs}s" --latency "$url" >"$WORK/wrk-redis.txt"
  after=$(cpu_ticks "$pid")
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk-redis.txt" "$case" "$round" "$conns" \
    "$((after - before))" 0 >>"$WORK/runs-redis.jsonl"
}
