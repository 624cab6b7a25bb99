#!/usr/bin/env bash
# Render or deploy the Kubernetes manifests of deploy/k8s/ (`make k8s-render`, `make deploy`).
#
#   scripts/deploy.sh render [ENV]   print what would be applied: the base, or overlays/ENV
#   scripts/deploy.sh deploy ENV     apply overlays/ENV, wait for the rollout, send one
#                                    prediction; when a step fails, undo the rollout, exit 1
#
# IMAGE:TAG is the image (TAG: by default the one `make docker-build` wrote to build/image-tag).
# The cluster and namespace: KUBECONFIG's current context, or KUBECONFIG_DATA (a
# kubeconfig's text, as CI secrets hold it). ROLLOUT_TIMEOUT: seconds to wait for the
# rollout (300). SMOKE_URL: where the prediction goes (default: the Service, through
# `kubectl port-forward`). SMOKE_EXAMPLE: its body (default: the model's input example,
# exported by `make docker-build`).
set -euo pipefail
cd "$(dirname "$0")/.."

readonly NAME={{ cookiecutter.project_slug }}
IMAGE=${IMAGE:-$NAME}
ROLLOUT_TIMEOUT=${ROLLOUT_TIMEOUT:-300}
SMOKE_EXAMPLE=${SMOKE_EXAMPLE:-build/model/serving_input_example.json}
readonly TAG_FILE=build/image-tag

# A mistake in the request: said before anything changes.
usage() {
  echo "$*" >&2
  exit 2
}

# build/k8s/<env>/kustomization.yaml: the base or an overlay with the image IMAGE:<tag>.
# The file stays there: it is what was rendered or applied last.
write_kustomization() {
  local env=$1 tag=$2 source=base
  [ "$env" = base ] || source=overlays/$env
  if [ ! -f "deploy/k8s/$source/kustomization.yaml" ]; then
    usage "No deploy/k8s/$source: ENV is the name of a folder of deploy/k8s/overlays/."
  fi
  mkdir -p "build/k8s/$env"
  cat > "build/k8s/$env/kustomization.yaml" << EOF
# Written by scripts/deploy.sh: deploy/k8s/$source with the image to run.
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources:
  - ../../../deploy/k8s/$source
images:
  - name: $NAME
    newName: $IMAGE
    newTag: "$tag"
EOF
}

render() {
  local env=${1:-base}
  write_kustomization "$env" "${TAG:-latest}"
  kubectl kustomize "build/k8s/$env"
}

# POST the example to <url>/invocations; succeed on a 200 with predictions.
predict() {
  python3 - "$1/invocations" "$SMOKE_EXAMPLE" << 'EOF'
import json
import sys
import urllib.request

url, example = sys.argv[1], sys.argv[2]
with open(example, "rb") as body:
    request = urllib.request.Request(url, body.read(), {"Content-Type": "application/json"})
try:
    with urllib.request.urlopen(request, timeout=30) as response:
        answer = json.load(response)
        version = response.headers.get("X-Model-Version")
except (OSError, ValueError) as error:
    sys.exit(f"POST {url}: {error}")
if not isinstance(answer, dict) or "predictions" not in answer:
    sys.exit(f"POST {url}: no predictions in the answer {str(answer)[:200]}")
print(f"POST {url}: {len(answer['predictions'])} predictions by model version {version}")
EOF
}

forward_pid=""
stop_forwarding() {
  if [ -n "$forward_pid" ]; then
    kill "$forward_pid" 2> /dev/null || true
    wait "$forward_pid" 2> /dev/null || true
    forward_pid=""
  fi
}

# The smoke request: to SMOKE_URL, or to the Service through a local port kubectl picks.
smoke() {
  if [ -n "${SMOKE_URL:-}" ]; then
    predict "${SMOKE_URL%/}"
    return
  fi
  local log=build/k8s/port-forward.log port="" status=0
  kubectl port-forward "service/$NAME" :80 > "$log" 2>&1 &
  forward_pid=$!
  for _ in $(seq 300); do
    port=$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "$log" | head -n 1)
    if [ -n "$port" ] || ! kill -0 "$forward_pid" 2> /dev/null; then break; fi
    sleep 0.1
  done
  if [ -z "$port" ]; then
    cat "$log" >&2
    stop_forwarding
    return 1
  fi
  predict "http://127.0.0.1:$port" || status=$?
  stop_forwarding
  return "$status"
}

# What a deploy changes and what undoes it, for roll_back.
ENVIRONMENT="" DEPLOYING="" BEFORE=""

deploy() {
  local tag
  ENVIRONMENT=${1:-}
  [ -n "$ENVIRONMENT" ] || usage "Name the environment: make deploy ENV=staging (or production)."
  tag=${TAG:-$(cat "$TAG_FILE" 2> /dev/null || true)}
  if [ -z "$tag" ] || [ "$tag" = latest ]; then
    usage "Name the image to deploy: make deploy ENV=$ENVIRONMENT TAG=<tag> (make docker-build writes $TAG_FILE)."
  fi
  if [ ! -f "$SMOKE_EXAMPLE" ]; then
    usage "No request for the smoke test: $SMOKE_EXAMPLE is missing (make docker-build exports it; or set SMOKE_EXAMPLE)."
  fi
  write_kustomization "$ENVIRONMENT" "$tag"
  DEPLOYING="$IMAGE:$tag to $ENVIRONMENT"
  trap stop_forwarding EXIT
  if [ -n "${KUBECONFIG_DATA:-}" ]; then
    KUBECONFIG=$(mktemp) # readable by this user alone
    export KUBECONFIG
    trap 'stop_forwarding; rm -f "$KUBECONFIG"' EXIT
    printf '%s\n' "$KUBECONFIG_DATA" > "$KUBECONFIG"
  fi
  # The revision serving now, to go back to: none on a first deploy.
  if ! BEFORE=$(kubectl get "deployment/$NAME" --ignore-not-found \
    -o 'jsonpath={.metadata.annotations.deployment\.kubernetes\.io/revision}'); then
    echo "Deploy of $DEPLOYING failed: kubectl cannot read deployment/$NAME (is KUBECONFIG set?). Nothing changed." >&2
    exit 1
  fi
  echo "Deploying $DEPLOYING (revision now: ${BEFORE:-none})"
  step apply kubectl apply -k "build/k8s/$ENVIRONMENT"
  step "rollout status" kubectl rollout status "deployment/$NAME" --timeout="${ROLLOUT_TIMEOUT}s"
  step "smoke request" smoke
  echo "Deployed $DEPLOYING."
}

# step NAME COMMAND...: run the command; if it fails, roll back and exit 1.
step() {
  local name=$1
  shift
  "$@" || roll_back "$name"
}

# Put back the revision that served before this deploy, then exit 1 naming the failed step.
# `--to-revision` makes it safe whatever changed: an apply that failed before touching
# the Deployment leaves that revision current, and undoing to it changes nothing.
roll_back() {
  local failed="Deploy of $DEPLOYING failed at step '$1'"
  stop_forwarding
  if [ -z "$BEFORE" ]; then
    echo "$failed; nothing to roll back to on a first deploy (kubectl delete -k build/k8s/$ENVIRONMENT removes it)." >&2
  elif kubectl rollout undo "deployment/$NAME" --to-revision="$BEFORE" \
    && kubectl rollout status "deployment/$NAME" --timeout="${ROLLOUT_TIMEOUT}s"; then
    echo "$failed; rolled back to revision $BEFORE (kubectl rollout undo)." >&2
  else
    echo "$failed, and the rollback to revision $BEFORE failed too: see kubectl's messages above." >&2
  fi
  exit 1
}

case ${1:-} in
  render) render "${2:-}" ;;
  deploy) deploy "${2:-}" ;;
  *) usage "Usage: $0 render [ENV] | deploy ENV" ;;
esac
