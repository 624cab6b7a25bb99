#!/usr/bin/env bash
# Bake the default project, install it, train it, serve it and print one prediction.
set -euo pipefail

demo_dir=${1:-demo}
port=${2:-8080}
template=$(cd "$(dirname "$0")/.." && pwd)

rm -rf "$demo_dir"
mkdir -p "$demo_dir"
"${UV:-uv}" run --locked --project "$template" cookiecutter --no-input --output-dir "$demo_dir" "$template"
project=$(find "$demo_dir" -mindepth 1 -maxdepth 1 -type d | head -n 1)
cd "$project"

make install train

make serve PORT="$port" > serve.log 2>&1 &
server=$!
trap 'kill $server 2>/dev/null; wait $server 2>/dev/null || true' EXIT

# Python's urllib rather than curl: a machine needs nothing but Python, make and git.
python3 - "$port" <<'PY'
import sys, time, urllib.request

url = f"http://127.0.0.1:{sys.argv[1]}"
for _ in range(240):
    try:
        urllib.request.urlopen(f"{url}/health", timeout=2)
        break
    except OSError:
        time.sleep(0.5)
else:
    sys.exit(f"The server did not answer {url}/health: see serve.log.")
with open("data/sample.csv", "rb") as file:
    rows = b"".join(file.readlines()[:2])
request = urllib.request.Request(f"{url}/invocations", data=rows, headers={"Content-Type": "text/csv"})
print("Prediction for the first row of data/sample.csv:")
print(urllib.request.urlopen(request, timeout=60).read().decode())
PY
