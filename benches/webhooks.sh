# The webhook case of `bash benches/run.sh` (sourced by it; WEBHOOKS=0 skips it, WEBHOOKS_ONLY=1
# runs it alone after the build): what verifying and de-duplicating a webhook costs. Two
# single-purpose proxies against the same minimal upstream, the same POST body (a 2 KB order) and
# headers: a `static` tenant proxying it (the plain proxied POST), and a SHOPLINE `[[webhook]]`
# verifying its HMAC-SHA256, claiming and recording its delivery id (in memory; every request
# carries a fresh id, so each one is forwarded) and forwarding it. Interleaved rounds at 64
# connections; the figure is proxy CPU per request, webhook minus proxied, per round.
# Results: target/bench/webhooks.json.

webhooks_case() {
  log "webhooks: a verified, de-duplicated forward against a plain proxied POST of the same body"
  [ -n "${UPSTREAM:-}" ] || signing_upstream
  declare -gA HOOK_URL=() HOOK_PID=()
  local body=$WORK/webhook-body.json case port
  python3 -c 'import json,sys; print(json.dumps({"id": 4711, "topic": "orders/create", "line_items": [{"sku": "bench-sku-%04d" % i, "quantity": 1, "price": "19.90"} for i in range(30)]}), end="")' >"$body"
  HOOK_SIGNATURE=$(python3 -c 'import hashlib,hmac,sys; print(hmac.new(b"bench-webhook-app-secret", open(sys.argv[1], "rb").read(), hashlib.sha256).hexdigest())' "$body")
  for case in proxied webhook; do
    port=$(free_port)
    webhooks_config "$WORK/tb-hooks-$case.toml" "$port" "$case"
    TB_RUNTIME_ENV="$TB_RUNTIME_ENV BENCH_STATIC=Bearer-$(python3 -c 'print("s"*40)') BENCH_APP_SECRET=bench-webhook-app-secret" \
      start_tokenbroker "$WORK/tb-hooks-$case.toml" "$WORK/tb-hooks-$case.log"
    HOOK_PID[$case]=$TB_PID
    wait_port "$port"
  done
  webhooks_script "$body"
  : >"$WORK/runs-webhooks.jsonl"
  for case in proxied webhook; do
    timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s -s "$WORK/webhook.lua" "${HOOK_URL[$case]}" -- "warm-$case" >/dev/null
  done
  local round
  for round in $(seq "$ROUNDS"); do
    log "round $round/$ROUNDS: proxied, webhook (${DURATION}s at $CONNS connections)"
    for case in proxied webhook; do webhooks_wrk "$case" "$round"; done
  done
  # Every delivery carried a fresh id, so every one must have been forwarded, none a duplicate.
  curl -s --max-time 5 "http://$HOOK_ADMIN/metrics" | grep '^tokenbroker_webhooks_total' >"$WORK/webhook-outcomes.txt" || true
  kill "${HOOK_PID[@]}"
  python3 "$ROOT/benches/report.py" webhooks "$WORK/runs-webhooks.jsonl" "$OUT/webhooks.json" "$WORK/webhook-outcomes.txt"
}

# webhooks_config FILE PORT CASE: `proxied` is a static tenant `bench` on the main listener;
# `webhook` a SHOPLINE tenant (its token calls go nowhere and back off; the webhook needs only its
# app secret) and a webhook `bench-orders` on the webhook listener, both forwarding to the upstream.
webhooks_config() {
  case $3 in
    proxied)
      printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "off"\n\n' "$2"
      printf '[[tenant]]\nname = "bench"\nprovider = "static"\nupstream = "http://%s"\nvalue = { env = "BENCH_STATIC" }\n' "$UPSTREAM"
      HOOK_URL[$3]="http://127.0.0.1:$2/bench/hooks/shopline" ;;
    webhook)
      HOOK_ADMIN=127.0.0.1:$(free_port)
      printf '[server]\nlisten = "127.0.0.1:%s"\nadmin_listen = "%s"\nwebhook_listen = "127.0.0.1:%s"\n\n' "$(free_port)" "$HOOK_ADMIN" "$2"
      printf '[[tenant]]\nname = "shop"\nprovider = "shopline"\nhandle = "bench"\nupstream = "http://127.0.0.1:1"\n'
      printf 'app_key = "bench"\napp_secret = { env = "BENCH_APP_SECRET" }\n\n'
      printf '[[webhook]]\nname = "bench-orders"\ntenant = "shop"\nforward = "http://%s/hooks/shopline"\n' "$UPSTREAM"
      HOOK_URL[$3]="http://127.0.0.1:$2/bench-orders" ;;
  esac >"$1"
}

# The same POST for both cases: the order body, its content type, SHOPLINE's headers and signature,
# and a delivery id unique within the run (its prefix is wrk's first script argument).
webhooks_script() {
  cat >"$WORK/webhook.lua" <<LUA
local f = io.open("$1", "rb")
local body = f:read("*a")
f:close()
local prefix, n = "", 0
init = function(args) prefix = args[1] or "" end
request = function()
  n = n + 1
  local path = wrk.path
  return wrk.format("POST", path, {
    ["content-type"] = "application/json",
    ["x-shopline-topic"] = "orders/create",
    ["x-shopline-shop-domain"] = "bench.myshopline.com",
    ["x-shopline-webhook-id"] = prefix .. "-" .. n,
    ["x-shopline-hmac-sha256"] = "$HOOK_SIGNATURE",
  }, body)
end
LUA
}

# One bounded wrk run; one JSON record in runs-webhooks.jsonl.
webhooks_wrk() {
  local case=$1 round=$2 pid=${HOOK_PID[$1]} before after
  before=$(cpu_ticks "$pid")
  timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d"${DURATION}s" --latency \
    -s "$WORK/webhook.lua" "${HOOK_URL[$case]}" -- "r$round-$case" >"$WORK/wrk-webhooks.txt"
  after=$(cpu_ticks "$pid")
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk-webhooks.txt" "$case" "$round" $CONNS \
    "$((after - before))" 0 >>"$WORK/runs-webhooks.jsonl"
}
