#!/usr/bin/env bash
# Offline validation of deploy/: Kubernetes manifests against the strict Kubernetes JSON schemas
# (1.29, the oldest supported, and 1.37), the ConfigMap's tokenbroker.toml through the binary's own
# `tokenbroker check --no-secrets`, cross-checks between the sidecar, its ConfigMap, its
# Secret and its NetworkPolicy (the admin port only from named peers, no proxy port), a self-test
# proving broken variants are rejected, the Prometheus alert rules (promtool check and unit tests,
# and the PrometheusRule generated from them), the dashboard's queries and the rules evaluated by a
# real Prometheus scraping `tokenbroker demo`, the store examples of deploy/redis/, and the
# systemd unit.
#
# Why a venv under target/: the validator (kubernetes-validate, pinned in
# validate-requirements.txt) bundles the schemas in its wheel, so the only network it needs is
# PyPI on the first run; target/ is gitignored and nothing is installed system-wide. Idempotent:
# the venv is rebuilt only when validate-requirements.txt changes (about 1 s on later runs).
#
# Usage: bash deploy/validate.sh        (exit 0 = all valid, non-zero otherwise)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/.." && pwd)"
venv="$root/target/deploy-validate/venv"
requirements="$here/validate-requirements.txt"
stamp="$venv/.requirements.sha256"
python="${PYTHON:-python3}"

if ! "$python" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
    echo "deploy/validate.sh: needs Python >= 3.11 (set PYTHON=...)" >&2
    exit 2
fi

want="$(sha256sum "$requirements" | cut -d' ' -f1)"
if [[ ! -x "$venv/bin/python" || "$(cat "$stamp" 2>/dev/null || true)" != "$want" ]]; then
    echo "deploy/validate.sh: installing the pinned validator into ${venv#"$root"/}" >&2
    rm -rf "$venv"
    "$python" -m venv "$venv"
    "$venv/bin/pip" install --quiet --disable-pip-version-check --no-input \
        --only-binary=:all: -r "$requirements"
    echo "$want" >"$stamp"
fi

# The ConfigMap's tokenbroker.toml is checked by the binary itself (`check --no-secrets`), so the
# rules live in one place: build it (cargo test reuses the same debug build).
cargo build --quiet --locked --bin tokenbroker
tokenbroker="${CARGO_TARGET_DIR:-$root/target}/debug/tokenbroker"

# Kubernetes manifests: strict schemas, consistency, self-test. prometheusrule.yaml is left out
# here: PrometheusRule is the prometheus-operator's CRD, and the bundled Kubernetes schemas have
# none for it (it would fail as an unknown kind). It is checked below instead, as the generated
# copy of the rule file that promtool checks and tests.
manifests=()
for manifest in "$here"/k8s/*.yaml; do
    [[ "$(basename "$manifest")" == prometheusrule.yaml ]] || manifests+=("$manifest")
done
"$venv/bin/python" "$here/validate_k8s.py" --tokenbroker "$tokenbroker" -k 1.29.0 -k 1.37.0 "${manifests[@]}"

# The store examples, one per Redis topology, through the binary's own check.
for example in "$here"/redis/*.toml; do
    if ! out="$("$tokenbroker" check --no-secrets --config "$example" 2>&1)"; then
        echo "$out" >&2
        exit 1
    fi
done

# Alert rules: promtool (Debian's `prometheus` package; .ci/run installs it) checks the rule file
# and runs its unit tests, and the PrometheusRule must carry exactly the rule file's groups.
if ! command -v promtool >/dev/null 2>&1; then
    echo "ERROR promtool not found: install Debian's prometheus package (apt-get install -y prometheus)" >&2
    exit 1
fi
promtool check rules "$here/prometheus/tokenbroker.rules.yml"
promtool test rules "$here/prometheus/tokenbroker.rules.test.yml"
"$venv/bin/python" "$here/prometheus/gen_prometheusrule.py" --check

# The dashboard and the rules in a real Prometheus (same package) against a live `tokenbroker
# demo` on 127.0.0.1: every panel query and rule must evaluate, and the panels must have data.
# Grafana itself is in no package registry this project can reach; this is the check instead.
"$python" "$here/prometheus/live_check.py" --tokenbroker "$tokenbroker"

# systemd unit, where systemd-analyze exists. `verify` insists the ExecStart binary exists, so it
# runs against a copy whose paths point at a stand-in executable; everything else is as shipped.
unit="$here/systemd/tokenbroker.service"
if command -v systemd-analyze >/dev/null 2>&1; then
    scratch="$root/target/deploy-validate/systemd"
    rm -rf "$scratch" && mkdir -p "$scratch"
    printf '#!/bin/sh\nexit 0\n' >"$scratch/tokenbroker" && chmod 0755 "$scratch/tokenbroker"
    sed "s|/usr/local/bin/tokenbroker|$scratch/tokenbroker|g" "$unit" >"$scratch/tokenbroker.service"
    # verify prints problems but may still exit 0 for some of them: treat any output as failure.
    if ! out="$(systemd-analyze verify "$scratch/tokenbroker.service" 2>&1)" || [[ -n "$out" ]]; then
        printf '%s\n' "$out" >&2
        echo "ERROR systemd: deploy/systemd/tokenbroker.service does not verify" >&2
        exit 1
    fi
    echo "ok: systemd unit verifies"
else
    echo "skip: systemd-analyze not installed, deploy/systemd/tokenbroker.service not verified" >&2
fi
