#!/usr/bin/env bash
# Instructions the interceptor executes per proxied request, counted by callgrind: the figure
# to judge a hot-path change by on a shared, noisy machine (wall-clock req/s moves ±10 % from
# run to run; this moves by well under 1 %). User-space instructions only: the kernel's share
# is in loadtests/bench.py's CPU figures.
#
#   loadtests/instructions.sh                 # the build the checkout runs (compiled if current)
#   HTTPSCALE_PURE_PYTHON=1 loadtests/instructions.sh
#   DURATION=10 CONNECTIONS=16 loadtests/instructions.sh
#   KEEP=/tmp/prof loadtests/instructions.sh   # keep the callgrind dumps (for callgrind_annotate)
#   ROUTES=10000 loadtests/instructions.sh      # each request to a random one of 10,000 routes
#   CACHE=1 ROUTES=10000 loadtests/instructions.sh   # also data cache misses per request
#
# CACHE=1 simulates the caches (slower still) and adds the data reads and writes that missed
# L1 (`d1_misses`) and that missed the last level (`ll_misses`) per request. The last level is
# simulated as one core's private L2 (1 MiB, 8-way: the L2 of this machine's EPYC cores), not
# the L3 the host shares with other tenants: a miss there is what costs a request time when
# its working set spreads (10,000 routes' state), and it is as deterministic as the count.
#
# Needs valgrind, nginx (the backend), wrk and ss. Runs the interceptor under callgrind (about
# 50x slower) and one wrk run of CONNECTIONS connections. The connections' set-up is counted
# apart: counters zeroed before wrk starts, dumped once every client connection is open and has
# been answered (so the upstream pool is built too); that share, per connection, is `setup`.
# Then the steady state: zeroed, DURATION seconds, dumped, divided by the requests the backend
# answered meanwhile (counted in its access log, outside the process measured; wrk's own count
# would include the set-up, which at 1,024 connections under callgrind outweighs the requests).
# Loopback only; every process is stopped on exit.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
for tool in valgrind callgrind_control nginx wrk curl; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
duration="${DURATION:-6}"
connections="${CONNECTIONS:-16}"
routes="${ROUTES:-1}"
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
# Its access log (two bytes a request) counts the requests the proxy forwarded.
sed -e "s|@PREFIX@|$work|g" -e "s|@PORT@|$backend_port|g" \
  -e "s|access_log off;|log_format counted 'x'; access_log $work/access.log counted;|" \
  loadtests/nginx/backend.conf >"$work/backend.conf"
nginx -p "$work" -c "$work/backend.conf" -e stderr -g 'daemon off;' &
pids+=($!)
# The harness quits when its stdin closes: fd 3 holds the fifo's write end until exit.
mkfifo "$work/stdin"
# Names written out in every dump, so that each dump reads on its own (callgrind_annotate).
cache_opts=()
[ -z "${CACHE:-}" ] || cache_opts=(--cache-sim=yes --LL=1048576,8,64)
valgrind --tool=callgrind "${cache_opts[@]}" --compress-strings=no \
  --callgrind-out-file="$work/callgrind.%p" \
  .venv/bin/python loadtests/harness.py --port "$proxy_port" --routes "$routes" \
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
answered() { echo $(( $(stat -c %s "$work/access.log") / 2 )); }
established() { ss -Htn state established "( sport = :$proxy_port )" | wc -l; }
# Connections the kernel accepted that the proxy has not yet (they count as established).
unaccepted() { ss -Hltn "( sport = :$proxy_port )" | awk '{n += $2} END {print n + 0}'; }
# callgrind takes a moment to act on a command: the requests answered meanwhile are split
# evenly between the two sides of it (the figure's uncertainty; printed as `fuzz`).
fuzz=0
at=0
control() {  # control -z|-d; sets `at`: the backend's request count at that instant
  local before after
  before="$(answered)"
  # (It exits 0 even when vgdb could not deliver the command: the window would then be
  # wrong, so any error it prints stops the run rather than give a figure.)
  if ! callgrind_control "$1" >"$work/control.out" 2>&1 || grep -qi error "$work/control.out"
  then
    echo "callgrind_control $1 failed:" >&2
    cat "$work/control.out" >&2
    exit 1
  fi
  after="$(answered)"
  fuzz=$((fuzz + after - before))
  at=$(((before + after) / 2))
}
summary() {  # summary N [EVENT...]: the total of dump N's events (default: instructions)
  local events="${*:2}"
  awk -v want="${events:-Ir}" '
    /^events:/ {for (i = 2; i <= NF; i++) col[$i] = i}
    /^summary:/ {
      n = split(want, w, " "); t = 0
      for (j = 1; j <= n; j++) t += $(col[w[j]])
      printf "%.0f\n", t  # (mawk prints large sums as 1.2e+10 otherwise)
    }
  ' "$(ls "$work"/callgrind.*."$1")"
}
# Set-up ends with twice as many requests answered as connections (each has been served, so
# the upstream pool has grown to the load) and, with many routes, five per route (random
# hosts: then more than 99 % of routes have been hit), so that what a route builds on its
# first request (its counters, its Host memo entry, its slot's pool) is not counted as the
# steady state.
warm=$((2 * connections))
[ "$routes" -eq 1 ] || warm=$((warm > 5 * routes ? warm : 5 * routes))
# Bound for the set-up under callgrind (it answers some 1,000 requests a second on a quiet
# machine; a few hundred beside other work).
setup_s=$((connections / 4 + 120 + warm / 200))
ulimit -n "$(ulimit -Hn)"
hosts=(-H 'Host: app0.bench')
[ "$routes" -eq 1 ] || hosts=(-s loadtests/nginx/many_hosts.lua)
wrk -t1 -c"$connections" -d"$((setup_s + duration + 20))s" --timeout 60s "${hosts[@]}" \
  "$url" -- "$routes" >"$work/wrk.out" &
wrk_pid=$!
pids+=("$wrk_pid")
control -z
start=$at
# Set-up: every connection open and taken by the proxy, and `warm` requests answered (above).
deadline=$((SECONDS + setup_s))
until [ "$(established)" -ge "$connections" ] && [ "$(unaccepted)" -eq 0 ] &&
      [ $(($(answered) - start)) -ge "$warm" ]
do
  [ "$SECONDS" -lt "$deadline" ] || {
    echo "set-up not done in ${setup_s}s: $(established) connections open," \
         "$(($(answered) - start)) requests answered" >&2
    exit 1
  }
  sleep 0.2
done
sleep 1  # let the first round's stragglers settle
control -d
open=$at
setup_instructions="$(summary 1)"
setup_requests=$((open - start))
control -z
first=$at
sleep "$duration"
control -d
last=$at
instructions="$(summary 2)"
kill "$wrk_pid" 2>/dev/null || true
requests=$((last - first))
[ "$requests" -gt 0 ] || { echo "no requests answered" >&2; exit 1; }
per_request=$((instructions / requests))
# Set-up per connection: what the set-up window cost beyond its requests at the steady rate.
setup=$(((setup_instructions - setup_requests * per_request) / connections))
if [ -n "${KEEP:-}" ]; then
  mkdir -p "$KEEP"
  cp "$work"/callgrind.* "$KEEP"/  # .1: the set-up, .2: the steady state
fi
misses=""
if [ -n "${CACHE:-}" ]; then
  d1="$(summary 2 D1mr D1mw)"
  ll="$(summary 2 DLmr DLmw)"
  misses=" d1_misses=$(awk -v m="$d1" -v r="$requests" 'BEGIN {printf "%.1f", m / r}')"
  misses+=" ll_misses=$(awk -v m="$ll" -v r="$requests" 'BEGIN {printf "%.1f", m / r}')"
fi
echo "build=$build connections=$connections routes=$routes requests=$requests fuzz=$fuzz" \
     "instructions=$instructions per_request=$per_request setup_per_connection=$setup$misses"
