#!/usr/bin/env bash
# Benchmark: `engage serve` under wrk on loopback, over the 1M-customer
# snapshot of bench/nightly.sh. Runs of 20 s, wrk with 2 threads on the
# same 2 cores as the server:
#   1. single lookups of random existing customer ids, 16 and 64 connections;
#   2. a mix: 10 % unknown ids, 5 % batches of 100 ids, the rest lookups;
#   3. single lookups while a new snapshot is published and reloaded
#      (wrk reports any non-2xx answer);
#   4. the same lookups against a trivial actix-web handler (the ceiling),
#      16 and 64 connections, answering 50 bytes, then as many bytes as
#      engage's answer.
# Server RSS from /proc after each run; for runs 1 and 4 also the server's
# CPU time per request. For BENCHMARKS.md.
#
#   bash bench/serve.sh [CUSTOMERS]      (needs `wrk`: apt-get install wrk)
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
out=bench/out/nightly-$customers
scores=$out/scores
[ -f "$scores/CURRENT" ] || bash bench/nightly.sh "$customers"
command -v wrk > /dev/null || { echo "needs wrk (apt-get install wrk)" >&2; exit 1; }
cargo build --release --quiet
cargo build --release --quiet -p engage-serving --example trivial
bin=target/release/engage
threads=${WRK_THREADS:-2}
secs=${WRK_SECONDS:-20}
work=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$work"' EXIT

key=$("$bin" serve keygen --name bench --scope scores:read --scope admin | sed -n 2p | tr -d '# ')
hash=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
cat > "$work/serve.toml" <<TOML
scores = "$(realpath "$scores")"
bind = "127.0.0.1:18080"
workers = 2
watch_interval_ms = 1000
[[api_keys]]
name = "bench"
sha256 = "$hash"
scopes = ["scores:read", "admin"]
TOML
ENGAGE_LOG=warn "$bin" serve --config "$work/serve.toml" 2> "$work/serve.log" &
pid=$!
until curl -sf http://127.0.0.1:18080/readyz > /dev/null; do sleep 0.5; done
rss() { awk '/VmRSS|VmHWM/ {printf "%s %.0f MiB  ", $1, $2/1024}' "/proc/$1/status"; echo; }
echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo); $(date -u +%F)"
echo "server loaded: $(rss $pid)"
# The size of one answer, for the padded ceiling (section 4).
answer=$(curl -s -H "Authorization: Bearer $key" http://127.0.0.1:18080/v1/customers/C0000001/scores | wc -c)

cat > "$work/lookup.lua" <<LUA
math.randomseed(os.time())
wrk.headers["Authorization"] = "Bearer $key"
request = function()
  return wrk.format("GET", string.format("/v1/customers/C%07d/scores", math.random(1, $customers)))
end
LUA
ids=$(python3 -c "import random; print(','.join('{\"id\":\"C%07d\"}' % random.randint(1, $customers) for _ in range(100)))")
cat > "$work/mix.lua" <<LUA
math.randomseed(os.time())
wrk.headers["Authorization"] = "Bearer $key"
local batch = '{"items":[$ids]}'
request = function()
  local r = math.random()
  if r < 0.05 then
    return wrk.format("POST", "/v1/scores:batch", {["Content-Type"] = "application/json", ["Authorization"] = "Bearer $key"}, batch)
  elseif r < 0.15 then
    return wrk.format("GET", string.format("/v1/customers/X%07d/scores", math.random(1, $customers)))
  end
  return wrk.format("GET", string.format("/v1/customers/C%07d/scores", math.random(1, $customers)))
end
LUA

run() { wrk -t"$threads" -c"${3:-64}" -d"${secs}s" --latency -s "$2" "$1"; }
# CPU time (user + system) of process $1 in clock ticks.
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# A run against process $1 that also prints the server's CPU time per
# answered request: less noisy than requests/s on a shared machine, since
# neither wrk's share of the cores nor other tenants enter it.
measured() {
  local pid=$1 before after text
  shift
  before=$(ticks "$pid")
  text=$(run "$@")
  after=$(ticks "$pid")
  echo "$text"
  echo "$text" | awk -v t=$((after - before)) -v hz="$(getconf CLK_TCK)" \
    '/requests in/ {printf "server CPU per request: %.1f us\n", t / hz * 1e6 / $1}'
}
for c in 16 64; do
  echo; echo "== 1. single lookups, random existing ids, $c connections"
  measured $pid http://127.0.0.1:18080 "$work/lookup.lua" $c
  echo "server: $(rss $pid)"
done
echo; echo "== 2. mix: 10% unknown ids (404), 5% batches of 100"
run http://127.0.0.1:18080 "$work/mix.lua"
echo "server: $(rss $pid)"

echo; echo "== 3. single lookups while a new snapshot is published and reloaded"
current=$(cat "$scores/CURRENT")
copy="${current}_bench"
rm -rf "$scores/snapshots/$copy"
# Published 2 s into a run twice as long as the others: loading and checking
# a 1M snapshot takes 10 s or more while wrk keeps both cores busy, and the
# swap must land inside the run.
( sleep 2
  cp -r "$scores/snapshots/$current" "$scores/snapshots/$copy"
  python3 - "$scores/snapshots/$copy/manifest.json" "$copy" <<'PY'
import json, sys
m = json.load(open(sys.argv[1])); m["snapshot_id"] = sys.argv[2]; json.dump(m, open(sys.argv[1], "w"))
PY
  printf '%s\n' "$copy" > "$scores/CURRENT.tmp" && mv "$scores/CURRENT.tmp" "$scores/CURRENT"
) &
secs=$((secs * 2)) run http://127.0.0.1:18080 "$work/lookup.lua"
echo "served after the run: $(curl -s -H "Authorization: Bearer $key" http://127.0.0.1:18080/v1/snapshot | python3 -c 'import json,sys; print(json.load(sys.stdin)["snapshot_id"])')"
echo "server: $(rss $pid)"
printf '%s\n' "$current" > "$scores/CURRENT.tmp" && mv "$scores/CURRENT.tmp" "$scores/CURRENT"
sleep 2; rm -rf "$scores/snapshots/$copy"
kill $pid; wait $pid 2> /dev/null || true

# The ceiling twice: the trivial handler's usual 50-byte answer, then padded
# to the size of engage's answer (so that the difference left is engage's
# work, not the bytes on the wire).
for bytes in 50 "$answer"; do
  target/release/examples/trivial 127.0.0.1:18090 2 "$bytes" &
  tpid=$!
  until curl -sf http://127.0.0.1:18090/v1/customers/C0000001/scores > /dev/null; do sleep 0.2; done
  for c in 16 64; do
    echo; echo "== 4. the ceiling: a trivial actix-web handler answering $bytes bytes, same workers, $c connections"
    measured $tpid http://127.0.0.1:18090 "$work/lookup.lua" $c
  done
  echo "trivial server: $(rss $tpid)"
  kill $tpid; wait $tpid 2> /dev/null || true
done
