"""Evaluates the dashboard's queries and the alert rules in a real Prometheus against a live demo.

Why: Grafana cannot be installed on the machines this project builds on, so no screenshot of the
dashboard can be taken. The next best proof that the dashboard and the rules work is to do what
Grafana and Prometheus would do with them: start `tokenbroker demo`, send it some traffic, let the
Prometheus server from Debian's `prometheus` package scrape its admin listener and load
tokenbroker.rules.yml, then ask its HTTP API for every panel query (with `$tenant` = all and
`$__rate_interval` = 30s), the tenant variable's values and every rule's health.

It fails when a query does not parse, when a panel query returns no series (unless it is listed in
EMPTY_IN_THE_DEMO with the reason), when the tenant variable misses a demo tenant, or when a rule
does not evaluate cleanly. Everything listens on 127.0.0.1. Takes about 20 s.

Usage: python3 deploy/prometheus/live_check.py [--tokenbroker target/debug/tokenbroker]
"""

import argparse
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.parse
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DASHBOARD = os.path.join(ROOT, "deploy", "grafana", "tokenbroker.json")
RULES = os.path.join(HERE, "tokenbroker.rules.yml")
DEMO_TENANTS = {"demo-adobe", "demo-shopline", "demo-vantage", "demo-cyberbiz", "demo-commerce"}

# Panel targets (title, refId) that are empty against a healthy demo, and why.
EMPTY_IN_THE_DEMO = {
    ("Store up", "A"): "the demo keeps tokens in memory: no shared store, no store metrics",
    ("Store errors/s by operation", "A"): "the demo keeps tokens in memory: no shared store, no store metrics",
    ("Upstream 429s/s and SHOPLINE 423s/s", "A"): "the demo's sandboxes answer no 429 or 423",
    ("Upstream 401s and replays", "A"): "the demo's tokens are valid: no 401 reaches a caller",
}


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get(url, timeout=5):
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as e:
        return e.code, e.read()


def api(base, path, **params):
    status, body = get(f"{base}{path}?{urllib.parse.urlencode(params, doseq=True)}")
    return status, json.loads(body)


def start_demo(tokenbroker):
    demo = subprocess.Popen([tokenbroker, "demo"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                            stdin=subprocess.DEVNULL, text=True, env={**os.environ, "RUST_LOG": "warn"})
    urls, admin = [], None
    deadline = time.monotonic() + 60
    for line in demo.stdout:
        line = line.strip()
        if m := re.match(r"curl -sg '(.*)'", line):
            urls.append(m.group(1))
        if m := re.match(r"curl -s (http://[^/]+)/readyz", line):
            admin = m.group(1)
        if "Ctrl-C stops everything" in line or time.monotonic() > deadline:
            break
    if not admin or len(urls) != len(DEMO_TENANTS):
        demo.kill()
        sys.exit(f"ERROR the demo did not print its admin URL and {len(DEMO_TENANTS)} commands: {urls} {admin}")
    return demo, urls, admin


def traffic(urls, stop):
    """Keeps every tenant busy, plus a 404 from a tenant's upstream and one matching no tenant."""
    base = urls[0].split("/demo-")[0]
    extra = [f"{base}/no-such-tenant/x", urls[0].split("?")[0] + "/no-such-thing"]
    while not stop.is_set():
        for url in urls + extra:
            get(url)
        stop.wait(0.2)


def start_prometheus(admin, workdir):
    port = free_port()
    config = os.path.join(workdir, "prometheus.yml")
    with open(config, "w", encoding="utf-8") as f:
        f.write(
            "global: {scrape_interval: 1s, evaluation_interval: 1s}\n"
            f"rule_files: [{json.dumps(RULES)}]\n"
            "scrape_configs:\n"
            "  - job_name: tokenbroker\n"
            f"    static_configs: [{{targets: [{json.dumps(admin.removeprefix('http://'))}]}}]\n"
        )
    prometheus = subprocess.Popen(
        ["prometheus", f"--config.file={config}", f"--storage.tsdb.path={workdir}/data",
         f"--web.listen-address=127.0.0.1:{port}"],
        stdout=subprocess.DEVNULL, stderr=open(os.path.join(workdir, "prometheus.log"), "w"))
    return prometheus, f"http://127.0.0.1:{port}"


def wait_for_samples(prom, seconds):
    """Until the target is up and has `seconds` of samples, so that rate() over 30s has data."""
    deadline = time.monotonic() + 60
    first = None
    while time.monotonic() < deadline:
        try:
            _, body = api(prom, "/api/v1/query", query="up")
            if any(r["value"][1] == "1" for r in body["data"]["result"]):
                first = first or time.monotonic()
                if time.monotonic() - first >= seconds:
                    return
        except (OSError, ValueError, KeyError):
            pass
        time.sleep(0.5)
    sys.exit("ERROR Prometheus never scraped the demo's admin listener")


def panel_targets():
    with open(DASHBOARD, encoding="utf-8") as f:
        dashboard = json.load(f)
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"].replace("$tenant", ".*").replace("$__rate_interval", "30s")
            yield panel["title"], target["refId"], expr


def check_panels(prom):
    problems = []
    for title, ref, expr in panel_targets():
        status, body = api(prom, "/api/v1/query", query=expr)
        if body.get("status") != "success":
            problems.append(f"{title} [{ref}]: {body.get('error')}")
            continue
        series = len(body["data"]["result"])
        expected_empty = EMPTY_IN_THE_DEMO.get((title, ref))
        note = f"empty as expected ({expected_empty})" if expected_empty and not series else f"{series} series"
        print(f"  panel {title} [{ref}]: {note}")
        if not series and not expected_empty:
            problems.append(f"{title} [{ref}]: no data: {expr}")
    return problems


def check_variable(prom):
    _, body = api(prom, "/api/v1/label/tenant/values", **{"match[]": "tokenbroker_tenant_info"})
    tenants = set(body.get("data", []))
    print(f"  variable tenant: {sorted(tenants)}")
    return [] if DEMO_TENANTS <= tenants else [f"tenant variable lacks {sorted(DEMO_TENANTS - tenants)}"]


def check_rules(prom):
    problems = []
    _, body = api(prom, "/api/v1/rules")
    rules = [r for g in body["data"]["groups"] for r in g["rules"]]
    if not rules:
        return ["Prometheus loaded no rules"]
    for rule in rules:
        if rule.get("health") != "ok" or rule.get("lastError"):
            problems.append(f"rule {rule['name']}: health {rule.get('health')} {rule.get('lastError', '')}")
        _, result = api(prom, "/api/v1/query", query=rule["query"])
        if result.get("status") != "success":
            problems.append(f"rule {rule['name']}: {result.get('error')}")
        firing = ", ".join(f"{a['labels'].get('tenant', a['labels'].get('instance'))} {a['state']}" for a in rule.get("alerts", []))
        print(f"  rule {rule['name']}: {rule.get('health')}{' -- ' + firing if firing else ''}")
    return problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tokenbroker", default=os.path.join(ROOT, "target", "debug", "tokenbroker"))
    args = parser.parse_args()
    if not shutil.which("prometheus"):
        sys.exit("ERROR prometheus not found: install Debian's prometheus package (apt-get install -y prometheus)")
    workdir = tempfile.mkdtemp(prefix="tokenbroker-live-check-")
    demo, urls, admin = start_demo(args.tokenbroker)
    stop = threading.Event()
    threading.Thread(target=traffic, args=(urls, stop), daemon=True).start()
    prometheus = None
    try:
        prometheus, prom = start_prometheus(admin, workdir)
        wait_for_samples(prom, 12)
        print(f"live check: Prometheus {prom} scraping the demo's admin listener {admin}")
        problems = check_variable(prom) + check_panels(prom) + check_rules(prom)
    finally:
        stop.set()
        for process in (prometheus, demo):
            if process:
                process.terminate()
                process.wait(timeout=10)
        shutil.rmtree(workdir, ignore_errors=True)
    for problem in problems:
        print(f"ERROR live check: {problem}", file=sys.stderr)
    if problems:
        return 1
    print("ok: every panel query and rule evaluates in Prometheus against the live demo")
    return 0


if __name__ == "__main__":
    sys.exit(main())
