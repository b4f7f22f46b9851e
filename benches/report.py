#!/usr/bin/env python3
"""Helpers of benches/run.sh: CPU ticks, config generation, wrk parsing and the summary table.

Kept in one file so the driver stays a readable list of steps. Standard library only.
"""
import datetime
import json
import os
import re
import statistics
import sys

TICK = os.sysconf("SC_CLK_TCK")


def ticks(pids):
    """utime+stime (fields 14 and 15, after the parenthesised comm) of whole processes."""
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    print(total)


def config(path, port, count, upstream, token_url, gen):
    count = int(count)
    names = [f"t{i}" for i in range(count)] if count else ["bench"]
    out = [
        "[server]",
        f'listen = "127.0.0.1:{port}"',
        'admin_listen = "off"',
        "",
    ]
    for name in names:
        out += [
            "[[tenant]]",
            f'name = "{name}"',
            'provider = "adobe_ims"',
            f'upstream = "http://{upstream}"',
            f'token_url = "{token_url}"',
            'client_id = "sandbox-client"',
            'client_secret = { env = "BENCH_IMS_SECRET" }',
            'scopes = ["openid", "AdobeID", "commerce.accs"]',
        ]
        if count:
            # Changes on reload, so every tenant is rebuilt (its token is kept: same credentials).
            out.append(f'headers = {{ "x-bench-gen" = "{gen}" }}')
        out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


def https_config(path, port, token_url, ca_file, *ports):
    """One adobe_ims tenant per HTTPS case (`tls-h1=PORT` ...), trusting the bench CA."""
    out = ["[server]", f'listen = "127.0.0.1:{port}"', 'admin_listen = "off"', ""]
    for spec in ports:
        name, upstream_port = spec.split("=")
        out += [
            "[[tenant]]",
            f'name = "{name}"',
            'provider = "adobe_ims"',
            f'upstream = "https://127.0.0.1:{upstream_port}"',
            f'ca_file = "{ca_file}"',
            f'token_url = "{token_url}"',
            'client_id = "sandbox-client"',
            'client_secret = { env = "BENCH_IMS_SECRET" }',
            'scopes = ["openid", "AdobeID", "commerce.accs"]',
            "",
        ]
    with open(path, "w") as f:
        f.write("\n".join(out))


def template(src, dst, *pairs):
    """Copies `src` to `dst` replacing each `@KEY@` by its value (`KEY=VALUE`; values may hold
    quotes, braces or slashes, which a sed expression would not take as they are)."""
    with open(src) as f:
        text = f.read()
    for pair in pairs:
        key, value = pair.split("=", 1)
        text = text.replace(f"@{key}@", value)
    left = re.findall(r"@[A-Z0-9_]+@", text)
    if left:
        sys.exit(f"{src}: no value for {', '.join(sorted(set(left)))}")
    with open(dst, "w") as f:
        f.write(text)


UNITS = {"us": 1.0, "ms": 1e3, "s": 1e6, "m": 60e6}


def micros(text):
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text)
    return float(m.group(1)) * UNITS[m.group(2)]


def parse_wrk(text):
    out = {}
    for pct in ("50", "75", "90", "99"):
        m = re.search(rf"^\s+{pct}%\s+(\S+)", text, re.M)
        out[f"p{pct}_us"] = micros(m.group(1)) if m else None
    out["requests"] = int(re.search(r"(\d+) requests in", text).group(1))
    out["rps"] = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    m = re.search(r"Non-2xx or 3xx responses: (\d+)", text)
    out["non_2xx"] = int(m.group(1)) if m else 0
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    out["socket_errors"] = sum(map(int, m.groups())) if m else 0
    return out


def connections(spec):
    """The upstream connections logged since line START of LOG (`LOG:START`): the TLS upstream
    logs the first request of each connection (benches/nginx-tls-upstream.conf.in)."""
    path, start = spec.rsplit(":", 1)
    with open(path) as f:
        lines = f.read().splitlines()[int(start):]
    fields = [dict(kv.split("=", 1) for kv in line.split()[3:]) | {"tls": " ".join(line.split()[1:3])}
              for line in lines]
    return {
        "upstream_connections": len(fields),
        "resumed": sum(f["reused"] == "r" for f in fields),
        "without_bearer": sum(f["bearer"] != "1" for f in fields),
        "without_store": sum(f["store"] != "default" for f in fields),
        "negotiated": sorted({f"{f['tls']} {f['kx']} {f['alpn']}" for f in fields}),
    }


def wrk(path, case, rnd, conns, proxy_ticks, upstream_ticks, suite=None, log=None):
    with open(path) as f:
        rec = parse_wrk(f.read())
    rec.update(case=case, round=int(rnd), conns=int(conns))
    if suite:
        rec.update(suite=suite, **connections(log))
    n = max(rec["requests"], 1)
    rec["cpu_us_per_req"] = int(proxy_ticks) / TICK * 1e6 / n
    rec["upstream_cpu_us_per_req"] = int(upstream_ticks) / TICK * 1e6 / n
    # At one connection the mean latency is exactly 1/throughput, finer than wrk's percentiles.
    rec["mean_latency_us"] = 1e6 / rec["rps"] * int(conns) if rec["rps"] else None
    print(json.dumps(rec))


def spread(values):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"median": statistics.median(values), "min": min(values), "max": max(values)}


METRICS = ("rps", "p50_us", "p99_us", "cpu_us_per_req", "upstream_cpu_us_per_req", "mean_latency_us")


def aggregate(runs):
    cases = {}
    for conns in sorted({r["conns"] for r in runs}):
        for case in ("direct", "tokenbroker", "nginx", "floor"):
            sel = [r for r in runs if r["case"] == case and r["conns"] == conns]
            if case == "floor" and not sel:
                continue
            cases[f"{case}@{conns}"] = {m: spread([r[m] for r in sel]) for m in METRICS}
            cases[f"{case}@{conns}"]["failed"] = sum(r["non_2xx"] + r["socket_errors"] for r in sel)
            cases[f"{case}@{conns}"]["rounds"] = len(sel)
    return cases


def paired(runs, conns, metric, num, den, minus=None):
    """Per-round ratio num/den (optionally of differences to `minus`), as median/min/max."""
    by = {(r["case"], r["round"]): r[metric] for r in runs if r["conns"] == conns}
    vals = []
    for rnd in sorted({r["round"] for r in runs}):
        a, b = by.get((num, rnd)), by.get((den, rnd))
        if a is None or b is None:
            continue
        if minus:
            base = by[(minus, rnd)]
            a, b = a - base, b - base
        vals.append(a / b if b else None)
    return spread(vals)


def ratios(runs):
    return {
        "rps tokenbroker/direct": paired(runs, 64, "rps", "tokenbroker", "direct"),
        "rps nginx/direct": paired(runs, 64, "rps", "nginx", "direct"),
        "rps tokenbroker/nginx": paired(runs, 64, "rps", "tokenbroker", "nginx"),
        "cpu/req tokenbroker/nginx": paired(runs, 64, "cpu_us_per_req", "tokenbroker", "nginx"),
        "p99 tokenbroker/nginx": paired(runs, 64, "p99_us", "tokenbroker", "nginx"),
        "p50 tokenbroker/nginx": paired(runs, 64, "p50_us", "tokenbroker", "nginx"),
        "added latency@1 tokenbroker/nginx": paired(
            runs, 1, "mean_latency_us", "tokenbroker", "nginx", minus="direct"),
        # The floor (`load floor`): hyper's connections alone. floor/nginx is what the stack costs
        # before tokenbroker does anything; tokenbroker/floor is what its own work costs.
        "cpu/req floor/nginx": paired(runs, 64, "cpu_us_per_req", "floor", "nginx"),
        "cpu/req tokenbroker/floor": paired(runs, 64, "cpu_us_per_req", "tokenbroker", "floor"),
    }


def read_json(path, default=None):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def log_events(path):
    events = []
    with open(path) as f:
        for line in f:
            try:
                events.append(json.loads(line))
            except ValueError:
                pass
    return events


def extras(work):
    out = {}
    rss = {}
    with open(f"{work}/rss-1000.txt") as f:
        for line in f:
            key, value = line.split(":")
            rss[key] = int(value.split()[0]) / 1024
    with open(f"{work}/wrk-1000.txt") as f:
        load = parse_wrk(f.read())
    out["thousand_tenants"] = {
        "peak_rss_mb": rss.get("VmHWM"), "rss_mb": rss.get("VmRSS"), "rps": load["rps"],
        "failed": load["non_2xx"] + load["socket_errors"]}
    with open(f"{work}/wrk-reload.txt") as f:
        during = parse_wrk(f.read())
    events = log_events(f"{work}/tb-1000.log")
    done = [e for e in events if e.get("message") == "configuration reloaded"]
    hup_at = float(open(f"{work}/sighup-at.txt").read())
    reload = {"failed_requests": during["non_2xx"] + during["socket_errors"],
              "requests_during": during["requests"], "reloads_logged": len(done)}
    if done:
        e = done[-1]
        reload["elapsed_ms"] = e.get("elapsed_ms")
        stamp = datetime.datetime.fromisoformat(e["timestamp"].replace("Z", "+00:00")).timestamp()
        reload["sighup_to_log_ms"] = (stamp - hup_at) * 1000
        reload["tenants"] = e.get("tenants")
    stats = read_json(f"{work}/thousand-stats.json", {})
    before = int(open(f"{work}/thousand-calls-before.txt").read())
    reload["token_calls_1000_tenants"] = stats.get("token_calls", 0) - before
    out["reload_1000"] = reload
    cold = read_json(f"{work}/cold.json", {})
    cold_stats = read_json(f"{work}/cold-stats.json", {})
    out["cold_burst"] = {"requests": cold.get("requests"), "ok": cold.get("ok"),
                         "statuses": cold.get("statuses"), "elapsed_ms": cold.get("elapsed_ms"),
                         "token_calls": cold_stats.get("token_calls")}
    out["main_upstream_counters"] = read_json(f"{work}/main-stats.json", {})
    return out


def fmt(s, unit=""):
    if s is None:
        return "-"
    return f"{s['median']:.3g}{unit} [{s['min']:.3g}..{s['max']:.3g}]"


def targets(result):
    r, x = result["ratios"], result["extras"]
    med = lambda k: (r[k] or {}).get("median")
    x = {k: x.get(k, {}) for k in ("thousand_tenants", "reload_1000", "cold_burst")}
    checks = [
        ("cpu/req tokenbroker <= 0.87 x nginx", med("cpu/req tokenbroker/nginx"), lambda v: v <= 0.87),
        ("rps tokenbroker >= 1.15 x nginx", med("rps tokenbroker/nginx"), lambda v: v >= 1.15),
        ("p99 tokenbroker <= nginx", med("p99 tokenbroker/nginx"), lambda v: v <= 1.0),
        ("added latency@1 tokenbroker <= nginx", med("added latency@1 tokenbroker/nginx"), lambda v: v <= 1.0),
        ("1,000 tenants peak RSS <= 30 MB", x["thousand_tenants"].get("peak_rss_mb"), lambda v: v <= 30),
        ("reload 1,000 tenants < 100 ms", x["reload_1000"].get("elapsed_ms"), lambda v: v < 100),
        ("reload: 0 failed requests", x["reload_1000"].get("failed_requests"), lambda v: v == 0),
        ("cold: exactly 100 token calls", x["cold_burst"].get("token_calls"), lambda v: v == 100),
        ("cold: all 10,000 answered 200", x["cold_burst"].get("ok"), lambda v: v == 10000),
    ]
    return [{"target": n, "value": v, "met": (v is not None and bool(ok(v)))} for n, v, ok in checks]


HTTPS_SUITES = ("https-h1", "https-h2", "https-h2-recycle")
CONNS_HTTPS = 64
HTTPS_RATIOS = {"rps": "rps", "cpu/req": "cpu_us_per_req", "p99": "p99_us",
                "upstream cpu/req": "upstream_cpu_us_per_req"}


def https_results(runs):
    """The HTTPS cases (benches/https.sh): per suite and case, the figures and the upstream
    connections opened; per suite, the per-round ratios tokenbroker/nginx; the issue's targets."""
    cases, ratio = {}, {}
    for suite in HTTPS_SUITES:
        sel = [r for r in runs if r["suite"] == suite]
        for case in ("direct", "tokenbroker", "nginx"):
            mine = [r for r in sel if r["case"] == case]
            if not mine:
                continue
            c = {m: spread([r[m] for r in mine]) for m in ("rps", "p50_us", "p99_us", "cpu_us_per_req",
                                                        "upstream_cpu_us_per_req")}
            c["failed"] = sum(r["non_2xx"] + r["socket_errors"] for r in mine)
            c["rounds"], c["requests"] = len(mine), sum(r["requests"] for r in mine)
            for key in ("upstream_connections", "resumed", "without_bearer", "without_store"):
                c[key] = sum(r[key] for r in mine)
            c["negotiated"] = sorted({n for r in mine for n in r["negotiated"]})
            cases[f"{suite}/{case}"] = c
        ratio[suite] = {f"{name} tokenbroker/nginx": paired(sel, CONNS_HTTPS, metric, "tokenbroker", "nginx")
                        for name, metric in HTTPS_RATIOS.items()}
    med = lambda suite, name: (ratio[suite][f"{name} tokenbroker/nginx"] or {}).get("median")
    failed = sum(c["failed"] for c in cases.values())
    checks = [
        ("https: 0 failed requests in every case", failed, lambda v: v == 0),
        ("https-h2-recycle rps tokenbroker >= 1.0 x nginx", med("https-h2-recycle", "rps"), lambda v: v >= 1.0),
        ("https-h1 cpu/req tokenbroker <= 1.0 x nginx", med("https-h1", "cpu/req"), lambda v: v <= 1.0),
    ]
    checked = [{"target": n, "value": v, "met": (v is not None and bool(ok(v)))} for n, v, ok in checks]
    return {"cases": cases, "ratios": ratio, "targets": checked}


def print_https(https, prev):
    print("\nHTTPS cases at 64 connections, median [min..max] over interleaved rounds "
          "(CPU in us per request; conns = upstream connections opened during the measured runs)")
    print(f"{'case':<29}{'req/s':>30}{'p99 us':>30}{'proxy CPU':>22}{'upstream CPU':>22}")
    for name, c in https["cases"].items():
        per_conn = c["requests"] / c["upstream_connections"] if c["upstream_connections"] else None
        shown = f"{per_conn:.0f} req/conn" if per_conn else "pooled"
        proxy = fmt(c["cpu_us_per_req"]) if not name.endswith("/direct") else "-"
        print(f"{name:<29}{fmt(c['rps']):>30}{fmt(c['p99_us']):>30}{proxy:>22}"
              f"{fmt(c['upstream_cpu_us_per_req']):>22}  failed={c['failed']}"
              f"  conns={c['upstream_connections']} ({c['resumed']} resumed, {shown})"
              f"  {'; '.join(c['negotiated'])}")
    print("\nHTTPS per-round ratios tokenbroker/nginx, median [min..max]" + ("  (previous run's median)" if prev else ""))
    for suite, ratios_ in https["ratios"].items():
        for name, s in ratios_.items():
            old = (((prev or {}).get("https", {}).get("ratios", {}).get(suite) or {}).get(name) or {}).get("median")
            print(f"  {suite + ' ' + name:<46} {fmt(s)}" + (f"  (prev {old:.3g})" if old is not None else ""))
    print("\nHTTPS targets:")
    for t in https["targets"]:
        v = t["value"]
        shown = f"{v:.3g}" if isinstance(v, float) else str(v)
        print(f"  [{'PASS' if t['met'] else 'MISS'}] {t['target']:<50} {shown}")


def read_runs(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def classes_summary(runs_path, out_path):
    """The caller-class case (benches/classes.sh): classes/callers per round, in each store mode."""
    runs = read_runs(runs_path)
    metrics = (("cpu/req", "cpu_us_per_req"), ("rps", "rps"), ("p99", "p99_us"))
    result = {
        f"{mode}: {name} classes/callers": paired(runs, 64, key, f"{mode}-classes", f"{mode}-callers")
        for mode in ("memory", "redis")
        for name, key in metrics
    }
    failed = sum(r["non_2xx"] + r["socket_errors"] for r in runs)
    result["failed"] = failed
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print("\ncaller classes vs one caller, limited tenant, same run, median [min..max] over rounds")
    for name, v in result.items():
        if isinstance(v, dict):
            print(f"  {name:34} {v['median']:.3f} [{v['min']:.3f}..{v['max']:.3f}]")
    for mode in ("memory", "redis"):
        cpu = result[f"{mode}: cpu/req classes/callers"]
        verdict = "PASS" if cpu and cpu["median"] <= 1.05 else "MISS"
        print(f"  target: {mode} cpu/req classes <= 1.05 x callers: {verdict}")
    print(f"  failed requests: {failed}")
    sys.exit(1 if failed else 0)


def signing_summary(runs_path, out_path):
    """The signing case (benches/signing.sh): proxy CPU per request, signed minus static, per round."""
    runs = read_runs(runs_path)
    by = {(r["case"], r["round"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    diffs = [by[("signed", n)]["cpu_us_per_req"] - by[("static", n)]["cpu_us_per_req"]
             for n in rounds if ("signed", n) in by and ("static", n) in by]
    result = {
        "static cpu us/req": spread([r["cpu_us_per_req"] for r in runs if r["case"] == "static"]),
        "signed cpu us/req": spread([r["cpu_us_per_req"] for r in runs if r["case"] == "signed"]),
        "signing cpu us/req (signed - static)": spread(diffs),
        "static rps": spread([r["rps"] for r in runs if r["case"] == "static"]),
        "signed rps": spread([r["rps"] for r in runs if r["case"] == "signed"]),
        "failed": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print("\nsigning every request (adobe_commerce) vs a static tenant, median [min..max] over rounds")
    for name, v in result.items():
        if isinstance(v, dict):
            print(f"  {name:38} {v['median']:.2f} [{v['min']:.2f}..{v['max']:.2f}]")
    cost = result["signing cpu us/req (signed - static)"]
    verdict = "PASS" if cost and cost["median"] < 5 else "MISS"
    print(f"  target: signing < 5 us/req: {verdict}")
    print(f"  failed requests: {result['failed']}")
    sys.exit(1 if result["failed"] else 0)


def webhooks_summary(runs_path, out_path, outcomes_path):
    """The webhook case (benches/webhooks.sh): proxy CPU per request, webhook minus proxied, per round."""
    runs = read_runs(runs_path)
    by = {(r["case"], r["round"]): r for r in runs}
    rounds = sorted({r["round"] for r in runs})
    diffs = [by[("webhook", n)]["cpu_us_per_req"] - by[("proxied", n)]["cpu_us_per_req"]
             for n in rounds if ("webhook", n) in by and ("proxied", n) in by]
    result = {
        "proxied POST cpu us/req": spread([r["cpu_us_per_req"] for r in runs if r["case"] == "proxied"]),
        "webhook cpu us/req": spread([r["cpu_us_per_req"] for r in runs if r["case"] == "webhook"]),
        "webhook extra cpu us/req": spread(diffs),
        "proxied POST rps": spread([r["rps"] for r in runs if r["case"] == "proxied"]),
        "webhook rps": spread([r["rps"] for r in runs if r["case"] == "webhook"]),
        "proxied POST p99 us": spread([r["p99_us"] for r in runs if r["case"] == "proxied"]),
        "webhook p99 us": spread([r["p99_us"] for r in runs if r["case"] == "webhook"]),
        "failed": sum(r["non_2xx"] + r["socket_errors"] for r in runs),
    }
    with open(outcomes_path) as f:
        outcomes = {m.group(1): float(m.group(2)) for m in re.finditer(r'outcome="(\w+)"} (\S+)', f.read())}
    result["outcomes"] = outcomes
    # A 200 for a duplicate would be a cheaper request than the one measured.
    result["failed"] += int(sum(v for k, v in outcomes.items() if k != "forwarded"))
    if not outcomes.get("forwarded"):
        result["failed"] += 1
    with open(out_path, "w") as f:
        json.dump(result, f, indent=2)
    print("\na verified, de-duplicated webhook forward vs a proxied POST of the same body, median [min..max]")
    for name, v in result.items():
        if isinstance(v, dict) and "median" in v:
            print(f"  {name:38} {v['median']:.2f} [{v['min']:.2f}..{v['max']:.2f}]")
    print(f"  webhook outcomes: {outcomes}")
    print(f"  failed requests: {result['failed']}")
    sys.exit(1 if result["failed"] else 0)


def summary(work, out_path, prev_path):
    """Writes results.json and prints the tables; exits non-zero when a case had failed requests (wrk's
    non-2xx and socket errors) or an upstream connection arrived without the injected headers."""
    runs = read_runs(f"{work}/runs.jsonl")
    result = {"when": datetime.datetime.now(datetime.timezone.utc).isoformat(), "runs": runs,
              "cases": aggregate(runs), "ratios": ratios(runs), "extras": {}}
    if os.path.exists(f"{work}/cold.json"):
        result["extras"] = extras(work)
    result["targets"] = targets(result)
    if os.path.exists(f"{work}/runs-https.jsonl"):
        result["https_runs"] = read_runs(f"{work}/runs-https.jsonl")
        result["https"] = https_results(result["https_runs"])
    with open(out_path, "w") as f:
        json.dump(result, f, indent=1)
    prev = read_json(prev_path)
    print_table(result, prev)
    if "https" in result:
        print_https(result["https"], prev)
    broken = [name for name, c in result["cases"].items() if c["failed"]]
    for name, c in result.get("https", {}).get("cases", {}).items():
        if c["failed"] or (not name.endswith("/direct") and (c["without_bearer"] or c["without_store"])):
            broken.append(name)
    if broken:
        sys.exit(f"\nFAILED: requests failed or went upstream without the injected headers in {', '.join(broken)}")


def print_table(result, prev):
    print("\nmedian [min..max] over interleaved rounds")
    print(f"{'case':<16}{'req/s':>28}{'p50 us':>26}{'p99 us':>26}{'proxy CPU us/req':>26}{'upstream CPU us/req':>26}")
    for name, c in result["cases"].items():
        print(f"{name:<16}{fmt(c['rps']):>28}{fmt(c['p50_us']):>26}{fmt(c['p99_us']):>26}"
              f"{fmt(c['cpu_us_per_req'] if not name.startswith('direct') else None):>26}"
              f"{fmt(c['upstream_cpu_us_per_req']):>26}  failed={c['failed']}")
    print("\nat 1 connection, mean latency (1/throughput):")
    for case in ("direct", "tokenbroker", "nginx"):
        print(f"  {case:<12} {fmt(result['cases'][f'{case}@1']['mean_latency_us'], ' us')}")
    print("\nper-round ratios, median [min..max]" + ("  (previous run's median)" if prev else ""))
    for name, s in result["ratios"].items():
        old = ((prev or {}).get("ratios", {}).get(name) or {}).get("median")
        print(f"  {name:<38} {fmt(s)}" + (f"  (prev {old:.3g})" if old is not None else ""))
    print("\nfurther measurements:")
    print("  " + json.dumps(result["extras"], indent=1).replace("\n", "\n  "))
    print("\ntargets:")
    for t in result["targets"]:
        v = t["value"]
        shown = f"{v:.3g}" if isinstance(v, float) else str(v)
        print(f"  [{'met' if t['met'] else 'NOT MET':>7}] {t['target']:<40} {shown}")


if __name__ == "__main__":
    cmd, args = sys.argv[1], sys.argv[2:]
    {"ticks": lambda: ticks(args), "config": lambda: config(*args), "wrk": lambda: wrk(*args),
     "summary": lambda: summary(*args), "https-config": lambda: https_config(*args),
     "template": lambda: template(*args), "classes": lambda: classes_summary(*args),
     "signing": lambda: signing_summary(*args), "webhooks": lambda: webhooks_summary(*args)}[cmd]()
