#!/usr/bin/env bash
# Checks the deployment and observability files, offline, in well under a minute:
#
#   bash scripts/check-deploy.sh        # what .ci/run runs after `cargo test`
#
# - deploy/prometheus: `promtool check rules`, `promtool test rules` (alerts.test.yml),
#   `promtool check config --syntax-only` of the scrape job (promtool: Debian's
#   prometheus package). That every metric they and the Grafana dashboard name exists
#   is tests/it/deploy.rs.
# - deploy/k8s: every manifest against the Kubernetes JSON schemas, strictly (unknown
#   fields refused), with a pinned kubernetes-validate from PyPI, which ships the schemas
#   (nothing is downloaded at run time), in a venv under target/. A manifest broken on
#   purpose must fail, so a validator that checks nothing fails this script.
# - deploy/config.toml and the ConfigMap's config.toml: read by the service's own parser
#   (`gtfs-fetch --config FILE config`, the debug binary `cargo test` built).
# - The shutdown settings against each supervisor's kill deadline: compose's
#   stop_grace_period, systemd's TimeoutStopSec and the Deployment's
#   terminationGracePeriodSeconds must each exceed shutdown_drain + shutdown_timeout.
# - docker-compose.yml: no default secret (each token and the database password is
#   ${VAR:?...}); there is no compose binary here, so that is read from the YAML.
# - deploy/systemd: `systemd-analyze verify` when it exists, warnings counted as errors.
set -euo pipefail
shopt -s inherit_errexit
cd "$(dirname "$0")/.."

# Schemas of Kubernetes 1.37 included; pinned so that CI does not change on its own.
KV_VERSION=1.37.0
K8S_VERSION=1.37.0
VENV=target/deploy-venv
BIN=target/debug/gtfs-fetch
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

echo "== promtool: alert rules, their unit tests, the scrape job"
promtool check rules deploy/prometheus/alerts.yml
promtool test rules deploy/prometheus/alerts.test.yml
promtool check config --syntax-only deploy/prometheus/scrape.yml

if [ "$("$VENV/bin/kubernetes-validate" --version 2>/dev/null || true)" != "$KV_VERSION" ]; then
    echo "== installing kubernetes-validate $KV_VERSION into $VENV"
    rm -rf "$VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$KV_VERSION"
fi
validate() { "$VENV/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$@"; }
echo "== kubernetes-validate $KV_VERSION (Kubernetes $K8S_VERSION schemas): deploy/k8s"
validate deploy/k8s/*.yaml
sed 's/terminationGracePeriodSeconds:/terminationGracePeriodSecond:/' \
    deploy/k8s/deployment.yaml >"$work/broken.yaml"
if validate "$work/broken.yaml" >/dev/null 2>&1; then
    echo "kubernetes-validate accepted a Deployment with an unknown field" >&2
    exit 1
fi

[ -x "$BIN" ] || cargo build --locked --quiet
echo "== the configuration files, read by the service"
"$BIN" --config deploy/config.toml config >/dev/null
"$VENV/bin/python" - "$work" <<'EOF'
import pathlib, re, sys, tomllib, yaml

work = pathlib.Path(sys.argv[1])
fail = []
def shutdown(toml_text, where):
    c = tomllib.loads(toml_text)
    total = c.get("shutdown_drain", 0) + c.get("shutdown_timeout", 30)
    print(f"{where}: shutdown_drain + shutdown_timeout = {total} s")
    return total

base = shutdown(pathlib.Path("deploy/config.toml").read_text(), "deploy/config.toml")

cm = yaml.safe_load(pathlib.Path("deploy/k8s/configmap.yaml").read_text())
(work / "k8s-config.toml").write_text(cm["data"]["config.toml"])
k8s = shutdown(cm["data"]["config.toml"], "deploy/k8s/configmap.yaml")
dep = yaml.safe_load(pathlib.Path("deploy/k8s/deployment.yaml").read_text())
grace = dep["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
if grace <= k8s:
    fail.append(f"terminationGracePeriodSeconds {grace} <= {k8s}")

compose = yaml.safe_load(pathlib.Path("docker-compose.yml").read_text())
svc = compose["services"]["gtfs-fetch"]
m = re.fullmatch(r"(\d+)s", svc["stop_grace_period"])
if not m or int(m[1]) <= base:
    fail.append(f"compose stop_grace_period {svc['stop_grace_period']} <= {base} s")
if "./deploy/config.toml:/etc/gtfs-fetch/config.toml:ro" not in svc["volumes"]:
    fail.append("compose does not mount deploy/config.toml")
env = svc["environment"]
for var in ["GTFS_OPS_TOKEN", "GTFS_API_TOKEN"]:
    if not re.fullmatch(r"\$\{%s:\?[^}]+\}" % var, env.get(var, "")):
        fail.append(f"compose {var} is not required (${{{var}:?...}}): {env.get(var)!r}")
for value in [env["DATABASE_URL"], compose["services"]["db"]["environment"]["POSTGRES_PASSWORD"]]:
    if "${POSTGRES_PASSWORD:?" not in value:
        fail.append(f"compose: the database password has a default: {value!r}")
if re.search(r":-|change-me", pathlib.Path("docker-compose.yml").read_text()):
    fail.append("compose has a default value (:-) or change-me")

unit = pathlib.Path("deploy/systemd/gtfs-fetch.service").read_text()
stop = int(re.search(r"^TimeoutStopSec=(\d+)$", unit, re.M)[1])
if stop <= base:
    fail.append(f"systemd TimeoutStopSec {stop} <= {base}")
print(f"kill deadlines: compose {svc['stop_grace_period']}, systemd {stop} s, k8s {grace} s")
if fail:
    sys.exit("deploy files disagree:\n  " + "\n  ".join(fail))
EOF
"$BIN" --config "$work/k8s-config.toml" config >/dev/null

if command -v systemd-analyze >/dev/null 2>&1; then
    echo "== systemd-analyze verify deploy/systemd/gtfs-fetch.service"
    # verify wants ExecStart's binary to exist: point it at the one just built.
    sed "s|/usr/local/bin/gtfs-fetch|$PWD/$BIN|" deploy/systemd/gtfs-fetch.service \
        >"$work/gtfs-fetch.service"
    out=$(systemd-analyze verify "$work/gtfs-fetch.service" 2>&1) || { echo "$out" >&2; exit 1; }
    # Unknown keys are only warnings ("Unknown key ..., ignoring"): refuse them too.
    if [ -n "$out" ]; then
        echo "$out" >&2
        exit 1
    fi
else
    echo "== systemd-analyze not installed: the unit is not verified"
fi
echo "== deploy files: ok"
