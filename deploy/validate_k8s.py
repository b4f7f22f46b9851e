"""Offline validation of deploy/k8s/*.yaml (run through deploy/validate.sh, inside its venv).

Why this exists: a manifest that `kubectl apply` accepts can still break the proxy at runtime
(a probe on the wrong port, a subPath mount that never sees ConfigMap reloads, a secret file the
Secret does not hold, a grace period shorter than tokenbroker's drain). So two layers:

1. Schema: every document against the *strict* Kubernetes JSON schemas bundled in the
   kubernetes-validate wheel (unknown fields and wrong types are errors), for each requested
   Kubernetes version. Unlike the kubernetes-validate CLI, an unknown kind/apiVersion is an
   error here, not a warning that exits 0.
2. Consistency: the ConfigMap's tokenbroker.toml passes the binary's own `check --no-secrets`,
   and the tokenbroker sidecar, that tokenbroker.toml, its Secret and the
   NetworkPolicy selecting its pods must agree with each other and with the README ("Operating
   it": probes, callers, reload, shutdown; "Limits": the admin listener). The NetworkPolicy must
   admit the admin port only from named peers (never from anywhere) and never admit a proxy port.
   The webhook listener, when configured, is a declared port that a Service targets, the ingress
   controller may reach, and Ingress paths route exactly the configured `/<name>` routes to.

Then a self-test mutates the good manifests in memory (wrong type, unknown field, removed API
version, subPath mount, missing secret key, ...) and fails the run if any mutation is accepted:
proof, on every run, that the validator still rejects what it should.
"""

import argparse
import copy
import ipaddress
import os
import re
import subprocess
import sys
import tempfile
import tomllib

import kubernetes_validate
import yaml

SECRET_KEYS = {"file"}


# ---------------------------------------------------------------- schema layer


def schema_errors(doc, versions):
    """Strict-schema problems of one document for every Kubernetes version."""
    if not isinstance(doc, dict) or "apiVersion" not in doc or "kind" not in doc:
        return ["document has no apiVersion/kind"]
    errors = []
    for version in versions:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            path = ".".join(str(p) for p in e.path) or "(root)"
            errors.append(f"k8s {version} schema: {path}: {e.message}")
        except (kubernetes_validate.SchemaNotFoundError, kubernetes_validate.InvalidSchemaError) as e:
            errors.append(f"k8s {version}: {e.message}")
        except kubernetes_validate.utils.VersionNotSupportedError as e:
            errors.append(f"validator: {e.message}")
    return errors


# ----------------------------------------------------------- consistency layer


def by_kind(docs, kind):
    return [d for d in docs if isinstance(d, dict) and d.get("kind") == kind]


def duration_s(text):
    """`"30s"`, `"5m"`, `"1h"`, `"500ms"` -> seconds (config.example.toml durations)."""
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", str(text))
    if not m:
        raise ValueError(f"not a duration: {text!r}")
    return int(m[1]) * {"ms": 0.001, "s": 1, "m": 60, "h": 3600}[m[2]]


def is_loopback(addr):
    host = addr.rsplit(":", 1)[0].strip("[]")
    return host == "localhost" or ipaddress.ip_address(host).is_loopback


def port_of(addr):
    return int(addr.rsplit(":", 1)[1])


def file_refs(node):
    """Every `{ file = "..." }` secret reference in the parsed TOML."""
    if isinstance(node, dict):
        if set(node) == SECRET_KEYS:
            yield node["file"]
        for value in node.values():
            yield from file_refs(value)
    elif isinstance(node, list):
        for value in node:
            yield from file_refs(value)


def tokenbroker_container(pod):
    for c in pod.get("initContainers", []) + pod.get("containers", []):
        if c.get("name") == "tokenbroker" or "tokenbroker" in str(c.get("image", "")):
            return c
    return None


def config_path(container):
    args = list(container.get("command", [])) + list(container.get("args", []))
    if "--config" in args and args.index("--config") + 1 < len(args):
        return args[args.index("--config") + 1]
    for env in container.get("env", []):
        if env.get("name") == "TOKENBROKER_CONFIG":
            return env.get("value")
    return "/etc/tokenbroker/tokenbroker.toml"  # the image's CMD


def mount_for(container, path):
    """The volumeMount whose mountPath is the directory holding `path`."""
    for m in container.get("volumeMounts", []):
        if path.startswith(m["mountPath"].rstrip("/") + "/"):
            return m
    return None


def check_security(c, pod, err):
    sc, psc = c.get("securityContext", {}), pod.get("securityContext", {})
    if not (sc.get("runAsNonRoot") or psc.get("runAsNonRoot")):
        err("tokenbroker: runAsNonRoot is not set")
    if sc.get("readOnlyRootFilesystem") is not True:
        err("tokenbroker: readOnlyRootFilesystem must be true")
    if sc.get("allowPrivilegeEscalation") is not False:
        err("tokenbroker: allowPrivilegeEscalation must be false")
    if "ALL" not in sc.get("capabilities", {}).get("drop", []):
        err("tokenbroker: capabilities must drop ALL")
    seccomp = sc.get("seccompProfile") or psc.get("seccompProfile") or {}
    if seccomp.get("type") != "RuntimeDefault":
        err("tokenbroker: seccompProfile must be RuntimeDefault")


def check_probes(c, server, err):
    admin = server.get("admin_listen", "127.0.0.1:9901")
    if is_loopback(admin):
        err(f"admin_listen {admin} is loopback: the kubelet's probes cannot reach it")
    named = {p.get("name"): p.get("containerPort") for p in c.get("ports", [])}
    if port_of(admin) not in named.values():
        err(f"admin port {port_of(admin)} is not a declared containerPort")
    for probe, path in (("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        get = c.get(probe, {}).get("httpGet")
        port = get and named.get(get.get("port"), get.get("port"))
        if not get or get.get("path") != path or port != port_of(admin):
            err(f"tokenbroker: {probe} must GET {path} on the admin port {port_of(admin)}")


def check_with_binary(tokenbroker, text, err):
    """The product's own validation of the ConfigMap's tokenbroker.toml, without its secrets
    (`tokenbroker check --no-secrets`): no copy of the configuration rules lives here."""
    with tempfile.TemporaryDirectory() as scratch:
        path = os.path.join(scratch, "tokenbroker.toml")
        with open(path, "w", encoding="utf-8") as f:
            f.write(text)
        run = subprocess.run([tokenbroker, "check", "--no-secrets", "--config", path],
                             capture_output=True, text=True, timeout=60, check=False)
    if run.returncode != 0:
        err(f"tokenbroker check --no-secrets rejects tokenbroker.toml:\n{run.stderr.strip()}")


def check_secrets(c, pod, cfg, secrets, err):
    volumes = {v["name"]: v for v in pod.get("volumes", [])}
    for path in file_refs(cfg):
        mount = mount_for(c, path)
        source = volumes.get(mount["name"], {}).get("secret") if mount else None
        if not source:
            err(f"secret file {path} is not under a Secret volume mounted into tokenbroker")
            continue
        if not mount.get("readOnly"):
            err(f"Secret mount {mount['mountPath']} must be readOnly")
        secret = secrets.get(source.get("secretName"))
        key = path[len(mount["mountPath"].rstrip("/")) + 1 :]
        if secret is None:
            err(f"Secret {source.get('secretName')} is not in the manifests")
        elif key not in {**secret.get("data", {}), **secret.get("stringData", {})}:
            err(f"Secret {source['secretName']} has no key {key!r} (referenced as {path})")
        mode = source.get("defaultMode", 0o644)
        if mode != 0o400:
            err(f"Secret volume {mount['name']} defaultMode is {mode:#o}, want 0o400")
        elif not pod.get("securityContext", {}).get("fsGroup"):
            err("0400 Secret files are unreadable by a non-root user without pod fsGroup")


def check_app_urls(pod, cfg, err):
    listen_port = port_of(cfg.get("server", {}).get("listen", "127.0.0.1:8080"))
    tenants = {t.get("name") for t in cfg.get("tenant", [])}
    for c in pod.get("containers", []):
        for env in c.get("env", []):
            m = re.fullmatch(r"http://127\.0\.0\.1:(\d+)/([^/]+)/?", str(env.get("value", "")))
            if m and (int(m[1]) != listen_port or m[2] not in tenants):
                err(f"{c['name']} env {env['name']}={env['value']}: no tenant {m[2]!r} on :{listen_port}")


def port_names(pod):
    """containerPort by port name, across the pod's containers (NetworkPolicy named ports)."""
    containers = pod.get("initContainers", []) + pod.get("containers", [])
    return {p["name"]: p.get("containerPort") for c in containers for p in c.get("ports", []) if "name" in p}


def selects(policy, labels):
    """Whether a NetworkPolicy's podSelector (matchLabels only) selects pods labelled `labels`."""
    selector = policy.get("spec", {}).get("podSelector", {})
    return not selector.get("matchExpressions") and selector.get("matchLabels", {}).items() <= labels.items()


def rule_ports(rule, names):
    """The port numbers an ingress rule admits, or None when it admits every port."""
    admitted = set()
    for entry in rule.get("ports") or [None]:
        port = (entry or {}).get("port")
        if port is None:
            return None
        number = names.get(port, port)
        admitted |= set(range(number, entry.get("endPort", number) + 1)) if isinstance(number, int) else {number}
    return admitted


def from_anywhere(rule):
    """Whether an ingress rule admits every source (no `from`, or an ipBlock of a whole family)."""
    peers = rule.get("from") or []
    return not peers or any(ipaddress.ip_network(p["ipBlock"]["cidr"]).prefixlen == 0 for p in peers if "ipBlock" in p)


def check_network_policy(docs, pod, labels, cfg, err):
    server = cfg.get("server", {})
    admin = port_of(server.get("admin_listen", "127.0.0.1:9901"))
    proxies = {port_of(server.get("listen", "127.0.0.1:8080"))}
    proxies |= {port_of(t["listen"]) for t in cfg.get("tenant", []) if "listen" in t}
    policies = [p for p in by_kind(docs, "NetworkPolicy") if selects(p, labels)]
    policies = [p for p in policies if "Ingress" in p["spec"].get("policyTypes", ["Ingress"])]
    if not policies:
        err(f"no NetworkPolicy restricts ingress to the tokenbroker pods: the admin port {admin} is open cluster-wide")
        return
    names, scraped = port_names(pod), False
    for policy in policies:
        name = policy["metadata"]["name"]
        for rule in policy["spec"].get("ingress", []):
            ports = rule_ports(rule, names)
            if ports is None:
                err(f"NetworkPolicy {name}: an ingress rule admits every port, the admin and proxy ports included")
                continue
            for port in sorted(proxies & ports):
                err(f"NetworkPolicy {name}: admits the proxy port {port} from outside the pod")
            if admin in ports and from_anywhere(rule):
                err(f"NetworkPolicy {name}: admits the admin port {admin} from anywhere")
            scraped |= admin in ports and not from_anywhere(rule)
    if not scraped:
        err(f"no NetworkPolicy rule admits a scraper to the admin port {admin} (/metrics unreachable)")


def check_webhooks(docs, pod, labels, cfg, err):
    """The webhook listener's way in from outside: a declared port, a Service selecting the pods
    that targets it, a NetworkPolicy rule admitting it, and Ingress paths that are each exactly the
    `/<name>` of a configured [[webhook]] (README, "Webhooks")."""
    listen = cfg.get("server", {}).get("webhook_listen")
    if listen is None:
        return
    port, names = port_of(listen), port_names(pod)
    hooks = {f"/{w['name']}" for w in cfg.get("webhook", []) if "name" in w}
    if port not in names.values():
        err(f"webhook port {port} is not a declared containerPort")
    services = set()
    for service in by_kind(docs, "Service"):
        selector = service["spec"].get("selector") or {}
        if not selector or not selector.items() <= labels.items():
            continue
        for entry in service["spec"].get("ports", []):
            target = entry.get("targetPort", entry.get("port"))
            if names.get(target, target) == port:
                services.add(service["metadata"]["name"])
    if not services:
        err(f"no Service targets the webhook port {port}: the platforms cannot reach it")
    routed = set()
    for ingress in by_kind(docs, "Ingress"):
        for rule in ingress["spec"].get("rules", []):
            for path in rule.get("http", {}).get("paths", []):
                if path.get("backend", {}).get("service", {}).get("name") not in services:
                    continue
                if path.get("pathType") != "Exact" or path.get("path") not in hooks:
                    err(f"Ingress {ingress['metadata']['name']}: path {path.get('path')} ({path.get('pathType')}) "
                        f"is not exactly the /<name> of a [[webhook]]")
                routed.add(path.get("path"))
    for hook in sorted(hooks - routed):
        err(f"no Ingress path routes {hook} to the webhook listener")
    policies = [p for p in by_kind(docs, "NetworkPolicy") if selects(p, labels)]
    rules = [r for p in policies for r in p["spec"].get("ingress", [])]
    if policies and not any(port in (rule_ports(r, names) or set()) for r in rules):
        err(f"no NetworkPolicy rule admits the ingress to the webhook port {port}")


def load_config(c, pod, configmaps, err):
    """The tokenbroker.toml the container will read, as (text, parsed), or None (after
    reporting why)."""
    path = config_path(c)
    mount = mount_for(c, path)
    source = {v["name"]: v for v in pod.get("volumes", [])}.get(mount["name"] if mount else None, {})
    if not mount or "configMap" not in source:
        err(f"config {path} is not in a ConfigMap volume mounted as a directory")
        return None
    if mount.get("subPath") or mount.get("subPathExpr"):
        err("config mount uses subPath: ConfigMap updates would never reach watch_config")
    cm = configmaps.get(source["configMap"].get("name"))
    text = (cm or {}).get("data", {}).get(path.rsplit("/", 1)[1])
    if text is None:
        err(f"ConfigMap {source['configMap'].get('name')} does not provide {path}")
        return None
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as e:
        err(f"tokenbroker.toml does not parse: {e}")
        return None


def consistency_errors(docs, tokenbroker):
    errors = []
    err = errors.append
    configmaps = {d["metadata"]["name"]: d for d in by_kind(docs, "ConfigMap")}
    secrets = {d["metadata"]["name"]: d for d in by_kind(docs, "Secret")}
    deployments = by_kind(docs, "Deployment")
    if not deployments:
        err("no Deployment found")
    for dep in deployments:
        spec, pod = dep.get("spec", {}), dep.get("spec", {}).get("template", {}).get("spec", {})
        labels = spec.get("template", {}).get("metadata", {}).get("labels", {})
        if not spec.get("selector", {}).get("matchLabels", {}).items() <= labels.items():
            err("Deployment selector does not match the pod template labels")
        volume_names = {v["name"] for v in pod.get("volumes", [])}
        for c in pod.get("initContainers", []) + pod.get("containers", []):
            for m in c.get("volumeMounts", []):
                if m["name"] not in volume_names:
                    err(f"{c['name']}: volumeMount {m['name']} has no volume")
        c = tokenbroker_container(pod)
        if c is None:
            err("no tokenbroker container in the Deployment")
            continue
        check_security(c, pod, err)
        loaded = load_config(c, pod, configmaps, err)
        if loaded is None:
            continue
        text, cfg = loaded
        server = cfg.get("server", {})
        check_with_binary(tokenbroker, text, err)
        check_probes(c, server, err)
        check_secrets(c, pod, cfg, secrets, err)
        check_app_urls(pod, cfg, err)
        check_network_policy(docs, pod, labels, cfg, err)
        check_webhooks(docs, pod, labels, cfg, err)
        grace = duration_s(server.get("shutdown_grace", "30s"))
        if pod.get("terminationGracePeriodSeconds", 30) <= grace:
            err(f"terminationGracePeriodSeconds must exceed shutdown_grace ({grace:g}s)")
    return errors


# ------------------------------------------------------------------- self-test


def _tb(docs):
    pod = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]
    return tokenbroker_container(pod)


def _pod(docs):
    return by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]


def _policy_rules(docs):
    return by_kind(docs, "NetworkPolicy")[0]["spec"]["ingress"]


def _admin_rule(docs):
    return next(r for r in _policy_rules(docs) if any(p.get("port") == "admin" for p in r["ports"]))


def _drop_policies(docs):
    docs[:] = [d for d in docs if d.get("kind") != "NetworkPolicy"]


def _webhook_rule(docs):
    return next(r for r in _policy_rules(docs) if any(p.get("port") == "webhooks" for p in r["ports"]))


def _ingress_path(docs):
    return by_kind(docs, "Ingress")[0]["spec"]["rules"][0]["http"]["paths"][0]


def _toml(docs, old, new):
    cm = by_kind(docs, "ConfigMap")[0]["data"]
    cm["tokenbroker.toml"] = cm["tokenbroker.toml"].replace(old, new)


# (description, mutation, expected error text): each must be rejected, for the right reason.
MUTATIONS = [
    ('containerPort: "abc"', lambda d: _tb(d)["ports"][0].update(containerPort="abc"), "is not of type"),
    ("unknown field (strict)", lambda d: _tb(d).update(imagePullPolcy="Always"), "imagePullPolcy"),
    ("removed API version", lambda d: by_kind(d, "Deployment")[0].update(apiVersion="apps/v1beta1"),
     "Couldn't find schema"),
    ("config via subPath", lambda d: _tb(d)["volumeMounts"][0].update(subPath="tokenbroker.toml"), "subPath"),
    ("probe on wrong port", lambda d: _tb(d)["livenessProbe"]["httpGet"].update(port=9902), "livenessProbe"),
    ("secret key missing", lambda d: by_kind(d, "Secret")[0]["stringData"].popitem(), "has no key"),
    ("grace below drain", lambda d: _pod(d).update(terminationGracePeriodSeconds=20), "shutdown_grace"),
    ("anonymous public proxy",
     lambda d: _toml(d, 'listen = "127.0.0.1:8080"', 'listen = "0.0.0.0:8080"'), "not a loopback address"),
    ("typo in tokenbroker.toml", lambda d: _toml(d, "watch_config", "watch_confg"), "watch_confg"),
    ("broken TOML", lambda d: _toml(d, "[server]", "[server"), "does not parse"),
    ("privilege escalation",
     lambda d: _tb(d)["securityContext"].update(allowPrivilegeEscalation=True), "allowPrivilegeEscalation"),
    ("no NetworkPolicy", _drop_policies, "no NetworkPolicy restricts"),
    ("NetworkPolicy selects other pods",
     lambda d: by_kind(d, "NetworkPolicy")[0]["spec"]["podSelector"].update(matchLabels={"app": "x"}),
     "no NetworkPolicy restricts"),
    ("admin port from any pod", lambda d: _admin_rule(d).pop("from"), "admin port 9901 from anywhere"),
    ("admin port from 0.0.0.0/0",
     lambda d: _admin_rule(d).update({"from": [{"ipBlock": {"cidr": "0.0.0.0/0"}}]}), "from anywhere"),
    ("ingress rule for every port", lambda d: _policy_rules(d)[0].pop("ports"), "admits every port"),
    ("proxy port admitted",
     lambda d: _policy_rules(d)[0]["ports"].append({"port": 8080, "protocol": "TCP"}), "proxy port 8080"),
    ("no scrape rule", lambda d: _policy_rules(d).remove(_admin_rule(d)), "no NetworkPolicy rule admits a scraper"),
    ("webhook port undeclared",
     lambda d: _tb(d).update(ports=[p for p in _tb(d)["ports"] if p["name"] != "webhooks"]),
     "webhook port 8090 is not a declared containerPort"),
    ("webhook Service on another port",
     lambda d: by_kind(d, "Service")[0]["spec"]["ports"][0].update(targetPort=9901), "no Service targets the webhook port"),
    ("Ingress path for no webhook", lambda d: _ingress_path(d).update(path="/acme-shopline"), "is not exactly the /<name>"),
    ("Ingress prefix path", lambda d: _ingress_path(d).update(pathType="Prefix"), "is not exactly the /<name>"),
    ("webhook port not admitted", lambda d: _policy_rules(d).remove(_webhook_rule(d)), "admits the ingress to the webhook"),
    ("webhook whose tenant holds no app secret",
     lambda d: _toml(d, 'tenant = "acme-shopline"', 'tenant = "acme-adobe"'), "holds no webhook secret"),
]


def self_test(docs, versions, tokenbroker):
    """Names of the mutations that validation wrongly accepted (or rejected for another reason)."""
    accepted = []
    for name, mutate, expected in MUTATIONS:
        broken = copy.deepcopy(docs)
        mutate(broken)
        found = [e for d in broken for e in schema_errors(d, versions)] + consistency_errors(broken, tokenbroker)
        if not any(expected in e for e in found):
            accepted.append(f"{name} (errors: {found or 'none'})")
    return accepted


# ------------------------------------------------------------------------ main


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("-k", "--kubernetes-version", action="append", required=True)
    parser.add_argument("--no-self-test", action="store_true")
    parser.add_argument("--tokenbroker", required=True, help="the tokenbroker binary, for `check --no-secrets`")
    parser.add_argument("files", nargs="+")
    args = parser.parse_args()

    docs, failed = [], False
    for name in args.files:
        with open(name, encoding="utf-8") as f:
            file_docs = [d for d in yaml.safe_load_all(f) if d]
        for doc in file_docs:
            what = f"{name}: {doc.get('kind')}/{doc.get('metadata', {}).get('name')}"
            for e in schema_errors(doc, args.kubernetes_version):
                print(f"ERROR {what}: {e}", file=sys.stderr)
                failed = True
        docs += file_docs
    for e in consistency_errors(docs, args.tokenbroker):
        print(f"ERROR consistency: {e}", file=sys.stderr)
        failed = True
    if failed:
        return 1
    versions = ", ".join(args.kubernetes_version)
    print(f"ok: {len(docs)} manifests valid (strict schemas, Kubernetes {versions}) and consistent")
    if not args.no_self_test:
        accepted = self_test(docs, args.kubernetes_version, args.tokenbroker)
        for name in accepted:
            print(f"ERROR self-test: a broken manifest was accepted: {name}", file=sys.stderr)
        if accepted:
            return 1
        print(f"ok: self-test rejected all {len(MUTATIONS)} deliberately broken variants")
    return 0


if __name__ == "__main__":
    sys.exit(main())
