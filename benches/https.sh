# The HTTPS cases of the load benchmark, sourced by benches/run.sh (see benches/README.md,
# "HTTPS cases"). Uses run.sh's settings and helpers (free_port, wait_port, cpu_ticks,
# start_tokenbroker, log), the IMS sandbox of the main comparison (TOKEN_URL) and its pinning.
#
#   https-h1          upstream TLS listener with ALPN http/1.1 only
#   https-h2          upstream TLS listener offering h2 (tokenbroker: one h2 connection; nginx:
#                     HTTP/1.1 over TLS, all it can proxy)
#   https-h2-recycle  as https-h2, the upstream closing each connection after 1,000 requests
#
# The upstream is nginx in the upstream role (benches/nginx-tls-upstream.conf.in) on the server
# CPU, with a CA and a server certificate made here with openssl, under $WORK/tls (never
# committed). Both proxies verify the upstream against that CA.

HTTPS_SUITES=(https-h1 https-h2 https-h2-recycle)
declare -A HTTPS_TENANT=([https-h1]=tls-h1 [https-h2]=tls-h2 [https-h2-recycle]=tls-h2r)
# What tokenbroker must negotiate on each (nginx always gets HTTP/1.1).
declare -A HTTPS_ALPN=([https-h1]=HTTP/1.1 [https-h2]=HTTP/2.0 [https-h2-recycle]=HTTP/2.0)

# A throw-away CA (ECDSA P-256) and a server certificate for localhost and 127.0.0.1 it signed.
tls_material() {
  local dir=$WORK/tls
  rm -rf "$dir" && mkdir -p "$dir"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj /CN=tokenbroker-bench-ca -keyout "$dir/ca.key" -out "$dir/ca.pem" \
    -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign 2>/dev/null
  openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=localhost \
    -keyout "$dir/server.key" -out "$dir/server.csr" 2>/dev/null
  printf '%s\n' 'subjectAltName=DNS:localhost,IP:127.0.0.1' 'basicConstraints=critical,CA:FALSE' \
    'keyUsage=critical,digitalSignature' 'extendedKeyUsage=serverAuth' >"$dir/server.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial \
    -days 2 -extfile "$dir/server.ext" -out "$dir/server.pem" 2>/dev/null
  openssl verify -CAfile "$dir/ca.pem" "$dir/server.pem" >/dev/null
}

# Three distinct free ports (held open together while chosen).
free_ports3() {
  python3 -c 'import socket
s=[socket.socket() for _ in range(3)]
[x.bind(("127.0.0.1",0)) for x in s]
print(*[x.getsockname()[1] for x in s])'
}

# nginx in the upstream role; sets TLS_H1 TLS_H2 TLS_H2R (ports) and TLSUP_PIDS.
start_tls_upstream() {
  local dir=$WORK/tls-upstream body
  rm -rf "$dir" && mkdir -p "$dir"
  read -r TLS_H1 TLS_H2 TLS_H2R < <(free_ports3)
  # The plain upstream's own document, so that every case answers the same bytes.
  body=$(curl -fsS --max-time 5 "http://$UPSTREAM$UPSTREAM_PATH")
  python3 "$ROOT/benches/report.py" template "$ROOT/benches/nginx-tls-upstream.conf.in" "$dir/nginx.conf" \
    "H1_PORT=$TLS_H1" "H2_PORT=$TLS_H2" "H2R_PORT=$TLS_H2R" "DIR=$dir" "TLS=$WORK/tls" "BODY=$body"
  taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" -e "$dir/error.log" &
  TLSUP_PID=$!; PIDS+=("$TLSUP_PID")
  for port in "$TLS_H1" "$TLS_H2" "$TLS_H2R"; do wait_port "$port"; done
  TLSUP_PIDS="$TLSUP_PID $(pgrep -P "$TLSUP_PID" | tr '\n' ' ')"
  declare -gA HTTPS_LOG=([https-h1]=$dir/h1.log [https-h2]=$dir/h2.log [https-h2-recycle]=$dir/h2r.log)
  for suite in "${HTTPS_SUITES[@]}"; do : >"${HTTPS_LOG[$suite]}"; done
}

# nginx in front of the TLS upstream; sets NGINXS_PORT NGINXS_PID NGINXS_PIDS.
start_nginx_https() {
  local dir=$WORK/nginx-https
  rm -rf "$dir" && mkdir -p "$dir"
  NGINXS_PORT=$(free_port)
  python3 "$ROOT/benches/report.py" template "$ROOT/benches/nginx-https.conf.in" "$dir/nginx.conf" \
    "PORT=$NGINXS_PORT" "H1_PORT=$TLS_H1" "H2_PORT=$TLS_H2" "H2R_PORT=$TLS_H2R" "DIR=$dir" \
    "TLS=$WORK/tls" "TOKEN=$(python3 -c 'print("e"*64+"."+"x"*900+"."+"s"*342)')"
  taskset -c "$SERVER_CPU" nginx -c "$dir/nginx.conf" -e "$dir/error.log" &
  NGINXS_PID=$!; PIDS+=("$NGINXS_PID")
  wait_port "$NGINXS_PORT"
  NGINXS_PIDS="$NGINXS_PID $(pgrep -P "$NGINXS_PID" | tr '\n' ' ')"
}

# https_precheck SUITE CASE URL ALPN: one request answers 200, on a new upstream connection that
# negotiated ALPN and carried the injected headers.
https_precheck() {
  local suite=$1 case=$2 url=$3 alpn=$4 last
  curl -fsS --max-time 5 -o /dev/null "$url" || { log "$suite/$case does not answer 200: $url"; exit 1; }
  last=$(tail -n 1 "${HTTPS_LOG[$suite]}")
  case $last in
    *"alpn=$alpn bearer=1 store=default") ;;
    *) log "$suite/$case: the upstream saw '$last' (want alpn=$alpn bearer=1 store=default)"; exit 1 ;;
  esac
}

# run_https_wrk SUITE CASE ROUND URL PIDS...: one bounded 64-connection wrk run, one JSON record
# with the proxy's and the upstream's CPU and the upstream connections opened meanwhile.
run_https_wrk() {
  local suite=$1 case=$2 round=$3 url=$4; shift 4
  local logf=${HTTPS_LOG[$suite]} start before after up_before up_after
  start=$(wc -l <"$logf")
  before=$(cpu_ticks "$@"); up_before=$(cpu_ticks $TLSUP_PIDS)
  timeout $((DURATION + 30)) taskset -c "$LOADGEN_CPU" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" >"$WORK/wrk.txt"
  after=$(cpu_ticks "$@"); up_after=$(cpu_ticks $TLSUP_PIDS)
  python3 "$ROOT/benches/report.py" wrk "$WORK/wrk.txt" "$case" "$round" "$CONNS" \
    "$((after - before))" "$((up_after - up_before))" "$suite" "$logf:$start" >>"$WORK/runs-https.jsonl"
}

https_cases() {
  log "HTTPS cases: TLS material, the TLS upstream (nginx), tokenbroker (3 tenants) and nginx in front"
  tls_material
  start_tls_upstream
  local port direct
  port=$(free_port)
  python3 "$ROOT/benches/report.py" https-config "$WORK/tb-https.toml" "$port" "$TOKEN_URL" \
    "$WORK/tls/ca.pem" "tls-h1=$TLS_H1" "tls-h2=$TLS_H2" "tls-h2r=$TLS_H2R"
  start_tokenbroker "$WORK/tb-https.toml" "$WORK/tb-https.log"
  wait_port "$port"
  start_nginx_https
  declare -A tb ngx
  for suite in "${HTTPS_SUITES[@]}"; do
    tb[$suite]="http://127.0.0.1:$port/${HTTPS_TENANT[$suite]}$REQ_PATH"
    ngx[$suite]="http://127.0.0.1:$NGINXS_PORT/${HTTPS_TENANT[$suite]}$REQ_PATH"
    https_precheck "$suite" tokenbroker "${tb[$suite]}" "${HTTPS_ALPN[$suite]}"
    https_precheck "$suite" nginx "${ngx[$suite]}" HTTP/1.1
  done
  # wrk itself over TLS to the http/1.1 listener: what the upstream does without a proxy.
  direct="https://127.0.0.1:$TLS_H1$UPSTREAM_PATH"
  curl -fsS --max-time 5 --cacert "$WORK/tls/ca.pem" -o /dev/null "$direct" || { log "direct https does not answer 200"; exit 1; }
  log "HTTPS warm-up (2 s per case)"
  for url in "$direct" "${tb[@]}" "${ngx[@]}"; do
    timeout 20 taskset -c "$LOADGEN_CPU" wrk -t1 -c$CONNS -d2s "$url" >/dev/null
  done
  : >"$WORK/runs-https.jsonl"
  for round in $(seq "$ROUNDS"); do
    log "HTTPS round $round/$ROUNDS: ${HTTPS_SUITES[*]}, tokenbroker and nginx (${DURATION}s at $CONNS connections)"
    run_https_wrk https-h1 direct "$round" "$direct"
    for suite in "${HTTPS_SUITES[@]}"; do
      run_https_wrk "$suite" tokenbroker "$round" "${tb[$suite]}" "$TB_PID"
      # shellcheck disable=SC2086
      run_https_wrk "$suite" nginx "$round" "${ngx[$suite]}" $NGINXS_PIDS
    done
  done
  kill "$TB_PID" "$NGINXS_PID" "$TLSUP_PID"
}
