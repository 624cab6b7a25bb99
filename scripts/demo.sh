#!/usr/bin/env bash
# Bake the default project, install it, train it, serve it and print one prediction.
set -euo pipefail

demo_dir=${1:-demo}
port=${2:-8080}
template=$(cd "$(dirname "$0")/.." && pwd)

rm -rf "$demo_dir"
mkdir -p "$demo_dir"
uv run --locked --project "$template" cookiecutter --no-input --output-dir "$demo_dir" "$template"
project=$(find "$demo_dir" -mindepth 1 -maxdepth 1 -type d | head -n 1)
cd "$project"

make install train

make serve PORT="$port" > serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

for _ in $(seq 120); do
  curl -fs "http://127.0.0.1:$port/health" > /dev/null 2>&1 && break
  sleep 0.5
done

echo "Prediction for the first row of data/sample.csv:"
head -n 2 data/sample.csv | curl -fsS "http://127.0.0.1:$port/invocations" -H 'Content-Type: text/csv' --data-binary @-
echo
