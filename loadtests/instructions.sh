#!/usr/bin/env bash
# Instructions the interceptor executes per proxied request, counted by callgrind: the figure
# to judge a hot-path change by on a shared, noisy machine (wall-clock req/s moves ±10 % from
# run to run; this moves by well under 1 %). User-space instructions only: the kernel's share
# is in loadtests/bench.py's CPU figures.
#
#   loadtests/instructions.sh                 # the build the checkout runs (compiled if current)
#   HTTPSCALE_PURE_PYTHON=1 loadtests/instructions.sh
#   DURATION=10 CONNECTIONS=16 loadtests/instructions.sh
#
# Needs valgrind, nginx (the backend) and wrk. Runs the interceptor under callgrind (about 50x
# slower), warms it up, zeroes the counters, drives wrk for DURATION seconds, dumps and divides
# by the requests wrk completed. Loopback only; every process is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
for tool in valgrind callgrind_control nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
duration="${DURATION:-6}"
connections="${CONNECTIONS:-16}"
work="$(mktemp -d)"
pids=()
cleanup() {
  exec 3>&- 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() {
  .venv/bin/python -c 'import sys; sys.path.insert(0, "loadtests")
from benchkit import free_port; print(free_port())'
}
backend_port="$(free_port)"
proxy_port="$(free_port)"
# The benchmark's own backend, so the counts are for the responses bench.py proxies.
sed -e "s|@PREFIX@|$work|g" -e "s|@PORT@|$backend_port|g" loadtests/nginx/backend.conf \
  >"$work/backend.conf"
nginx -p "$work" -c "$work/backend.conf" -e stderr -g 'daemon off;' &
pids+=($!)
# The harness quits when its stdin closes: fd 3 holds the fifo's write end until exit.
mkfifo "$work/stdin"
valgrind --tool=callgrind --callgrind-out-file="$work/callgrind.%p" \
  .venv/bin/python loadtests/harness.py --port "$proxy_port" --routes 1 \
  --upstream "127.0.0.1:$backend_port" <"$work/stdin" >"$work/harness.out" 2>"$work/harness.err" &
pids+=($!)
exec 3>"$work/stdin"
url="http://127.0.0.1:$proxy_port/"
for _ in $(seq 1 400); do
  curl -fs -o /dev/null -H 'Host: app0.bench' "$url" && break
  sleep 0.5
done
curl -fs -o /dev/null -H 'Host: app0.bench' "$url" || { cat "$work/harness.err" >&2; exit 1; }
build="$(.venv/bin/python -c 'from httpscale import dataplane; print(dataplane.active().name)')"
wrk -t1 -c"$connections" -d2s -H 'Host: app0.bench' "$url" >/dev/null   # warm-up
callgrind_control -z >/dev/null 2>&1
out="$(wrk -t1 -c"$connections" -d"${duration}s" -H 'Host: app0.bench' "$url")"
callgrind_control -d >/dev/null 2>&1
requests="$(awk '/requests in/ {print $1}' <<<"$out")"
dump="$(ls "$work"/callgrind.*.1)"
instructions="$(awk '/^summary:/ {print $2}' "$dump")"
echo "build=$build requests=$requests instructions=$instructions" \
     "per_request=$((instructions / requests))"
