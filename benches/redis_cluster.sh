# The Redis Cluster case of `bash benches/run.sh` (sourced by it): the same tenant, the same load,
# with `[store] mode = "cluster"` (three primaries on loopback) against `mode = "standalone"` (one
# server), interleaved rounds in one run. Unlimited, the request path never touches Redis, so CPU
# per request must match; rate-limited, every batch of waiting requests makes one script call,
# routed by slot on the Cluster: the target is CPU per request within 10 % of standalone. Redis
# runs on the load CPU, as in the shared-store case. Results: target/bench/redis-cluster.json.
# Skipped with CLUSTER=0; CLUSTER_ONLY=1 runs only this case.

# A port whose cluster bus port (+10000) is free too.
cluster_port() {
  local port
  while :; do
    port=$(free_port)
    if [ "$port" -lt 55000 ] && python3 -c 'import socket,sys;s=socket.socket();s.bind(("127.0.0.1",int(sys.argv[1])))' "$((port + 10000))" 2>/dev/null; then
      echo "$port"; return
    fi
  done
}

cluster_case() {
  log "Redis Cluster: tokenbroker with [store] mode = \"cluster\" against mode = \"standalone\""
  [ -n "${UPSTREAM:-}" ] || start_helper helper-cluster 0
  local one nodes=() port
  one=$(free_port)
  taskset -c "$LOADGEN_CPU" redis-server --port "$one" --bind 127.0.0.1 --save "" \
    --appendonly no --dir "$WORK" >"$WORK/redis-one.log" 2>&1 &
  PIDS+=("$!")
  for i in 1 2 3; do
    port=$(cluster_port)
    mkdir -p "$WORK/cluster-$i" && rm -f "$WORK/cluster-$i/nodes.conf"
    taskset -c "$LOADGEN_CPU" redis-server --port "$port" --bind 127.0.0.1 --save "" --appendonly no \
      --cluster-enabled yes --dir "$WORK/cluster-$i" >"$WORK/cluster-$i.log" 2>&1 &
    PIDS+=("$!")
    nodes+=("127.0.0.1:$port")
  done
  for port in "$one" "${nodes[@]##*:}"; do wait_port "$port"; done
  timeout 60 redis-cli --cluster create "${nodes[@]}" --cluster-yes >"$WORK/cluster-create.log"
  for _ in $(seq 200); do
    redis-cli -p "${nodes[0]##*:}" cluster info | grep -q 'cluster_state:ok' && break
    sleep 0.05
  done
  local limit='rate_limit = { per_second = 1000000, burst = 1000000, max_wait = "1s" }'
  local cases=(one cluster one-limited cluster-limited) urls=() pids=() case_port
  for case in "${cases[@]}"; do
    case_port=$(free_port)
    tenant_config "$WORK/tb-$case.toml" "$case_port" 0 1
    case $case in *limited) sed -i -e "s|^scopes = .*|&\n$limit|" "$WORK/tb-$case.toml" ;; esac
    local mode=standalone url="redis://127.0.0.1:$one"
    case $case in cluster*) mode=cluster; url="redis://${nodes[0]}" ;; esac
    printf '\n[store]\nkind = "redis"\nmode = "%s"\nurl = { env = "BENCH_REDIS_URL" }\n' "$mode" >>"$WORK/tb-$case.toml"
    TB_RUNTIME_ENV="$TB_RUNTIME_ENV BENCH_REDIS_URL=$url" start_tokenbroker "$WORK/tb-$case.toml" "$WORK/tb-$case.log"
    pids+=("$TB_PID")
    urls+=("http://127.0.0.1:$case_port/bench$REQ_PATH")
    wait_port "$case_port"
  done
  for url in "${urls[@]}"; do
    curl -fsS --max-time 5 -o /dev/null "$url" || { log "a case does not answer 200: $url"; exit 1; }
    timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s "$url" >/dev/null
  done
  : >"$WORK/runs-cluster.jsonl"
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: standalone, cluster, each unlimited and limited (${DURATION}s at $CONNS connections)"
    for i in 0 1 2 3; do
      cluster_wrk "${cases[$i]}" "$round" "$DURATION" "${urls[$i]}" "${pids[$i]}"
    done
  done
  # The cluster cases must really have used the cluster: the token and the bucket are there.
  local tokens=0 buckets=0
  for node in "${nodes[@]}"; do
    tokens=$((tokens + $(redis-cli -p "${node##*:}" --scan --pattern 'tokenbroker:*:token' | wc -l)))
    buckets=$((buckets + $(redis-cli -p "${node##*:}" --scan --pattern 'tokenbroker:*:bucket' | wc -l)))
  done
  [ "$tokens" -ge 1 ] && [ "$buckets" = 1 ] || { log "the cluster holds $tokens tokens and $buckets buckets"; exit 1; }
  kill "${pids[@]}"
  python3 - "$WORK/runs-cluster.jsonl" "$OUT/redis-cluster.json" <<'PY'
import json, statistics, sys
runs = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
def ratio(metric, num, den):
    by = {(r["case"], r["round"]): r[metric] for r in runs}
    vals = [by[(num, n)] / by[(den, n)] for n in sorted({r["round"] for r in runs}) if by.get((den, n)) and (num, n) in by]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals)} if vals else None
failed = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
result = {
    "cpu/req cluster/standalone": ratio("cpu_us_per_req", "cluster", "one"),
    "rps cluster/standalone": ratio("rps", "cluster", "one"),
    "limited: cpu/req cluster/standalone": ratio("cpu_us_per_req", "cluster-limited", "one-limited"),
    "limited: rps cluster/standalone": ratio("rps", "cluster-limited", "one-limited"),
    "limited: p99 cluster/standalone": ratio("p99_us", "cluster-limited", "one-limited"),
    "failed": failed,
}
json.dump(result, open(sys.argv[2], "w"), indent=2)
print("\nRedis Cluster vs one server, same run, median [min..max] over rounds")
for name, v in result.items():
    if isinstance(v, dict):
        print(f"  {name:38} {v['median']:.3f} [{v['min']:.3f}..{v['max']:.3f}]")
cpu = result["limited: cpu/req cluster/standalone"]
verdict = "PASS" if cpu and cpu["median"] <= 1.10 else "MISS"
print(f"  target: limited cpu/req cluster <= 1.10 x standalone: {verdict}; failed requests: {failed}")
sys.exit(1 if failed else 0)
PY
}

# One bounded wrk run of the Cluster case; one JSON record in runs-cluster.jsonl.
cluster_wrk() {
  local case=$1 round=$2 secs=$3 url=$4 pid=$5 before after
  before=$(cpu_ticks "$pid")
  timeout $((secs + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${secs}s" --latency "$url" >"$WORK/wrk-cluster.txt"
  after=$(cpu_ticks "$pid")
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk-cluster.txt" "$case" "$round" "$CONNS" \
    "$((after - before))" 0 >>"$WORK/runs-cluster.jsonl"
}
