"""Writes deploy/k8s/prometheusrule.yaml from deploy/prometheus/tokenbroker.rules.yml.

Why: the prometheus-operator wants the same alerts wrapped in a `PrometheusRule`. Keeping two
hand-edited copies would let them drift, so the rule file is the one source and this script
embeds its `groups:` verbatim (comments included). `--check` (run by deploy/validate.sh) fails
when the committed PrometheusRule is not what the script would write, or when its parsed
`spec.groups` differ from the rule file's `groups`.

Usage: python3 deploy/prometheus/gen_prometheusrule.py [--check]
"""

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
RULES = os.path.join(HERE, "tokenbroker.rules.yml")
TARGET = os.path.join(HERE, "..", "k8s", "prometheusrule.yaml")

HEADER = """\
# GENERATED from deploy/prometheus/tokenbroker.rules.yml by deploy/prometheus/gen_prometheusrule.py:
# edit the rule file, then run the script (deploy/validate.sh fails while the two differ).
#
# tokenbroker's alerts for the prometheus-operator. The operator loads a PrometheusRule only when
# its labels match the Prometheus resource's `ruleSelector` (kube-prometheus-stack's default wants
# `release: <its release name>`): add that label here for your installation.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: tokenbroker
  labels:
    app.kubernetes.io/name: tokenbroker
    app.kubernetes.io/component: alerts
spec:
"""


def render():
    with open(RULES, encoding="utf-8") as f:
        lines = f.read().splitlines()
    start = lines.index("groups:")
    body = "".join(f"  {line}\n" if line else "\n" for line in lines[start:])
    return HEADER + body


def check(text):
    import yaml

    with open(TARGET, encoding="utf-8") as f:
        committed = f.read()
    if committed != text:
        return "deploy/k8s/prometheusrule.yaml is stale: run python3 deploy/prometheus/gen_prometheusrule.py"
    with open(RULES, encoding="utf-8") as f:
        rules = yaml.safe_load(f)
    resource = yaml.safe_load(committed)
    if resource["spec"]["groups"] != rules["groups"]:
        return "deploy/k8s/prometheusrule.yaml: spec.groups differ from the rule file's groups"
    return None


def main():
    text = render()
    if sys.argv[1:] == ["--check"]:
        problem = check(text)
        if problem:
            print(f"ERROR {problem}", file=sys.stderr)
            return 1
        print("ok: deploy/k8s/prometheusrule.yaml carries the rule file's groups")
        return 0
    with open(TARGET, "w", encoding="utf-8") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
