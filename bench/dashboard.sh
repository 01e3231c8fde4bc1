#!/usr/bin/env bash
# Benchmark: what the dashboard costs on the 1M-customer snapshots of
# bench/nightly.sh. An earlier nightly run (as of 2026-06-01) is added so
# that there is a history, flows and drift; then
#   1. `engage report --scores ... --out` (load and check the snapshot,
#      compute the dashboard from it and the earlier one, render): wall
#      seconds and peak RSS, and the same load without the earlier snapshot;
#   2. `engage serve`: seconds from start to ready, its RSS, and the time of
#      `GET /dashboard` and a customer page (curl, 20 of each, median).
# For BENCHMARKS.md.
#
#   bash bench/dashboard.sh [CUSTOMERS]
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
out=bench/out/nightly-$customers
scores=$out/scores
bin=target/release/engage
[ -f "$scores/CURRENT" ] || bash bench/nightly.sh "$customers"
cargo build --release --quiet
export ENGAGE_ERASURE_LIST=/nonexistent/erasure_list.json
work=$(mktemp -d)
trap 'kill $(jobs -p) 2> /dev/null || true; rm -rf "$work"' EXIT

# One snapshot: the dashboard without history.
/usr/bin/time -f "report, 1 snapshot: %e s wall, %M KiB peak RSS" \
  "$bin" report --scores "$scores" --out "$work/one.html" | tail -1

# An earlier run, then the current one again (so CURRENT is the newest).
current=$(cat "$scores/CURRENT")
if ! ls "$scores/snapshots" | grep -q '^2026-06-01_'; then
  "$bin" nightly --config "$out/nightly.toml" --as-of 2026-06-01 > /dev/null
  "$bin" nightly --config "$out/nightly.toml" --as-of 2026-07-01 > /dev/null
fi
echo "snapshots: $(ls "$scores/snapshots" | tr '\n' ' ')"
/usr/bin/time -f "report, 2 snapshots: %e s wall, %M KiB peak RSS" \
  "$bin" report --scores "$scores" --out "$work/two.html" | tail -1

key=$("$bin" serve keygen --name bench --scope scores:read | sed -n 2p | tr -d '# ')
hash=$(printf %s "$key" | sha256sum | cut -d' ' -f1)
cat > "$work/serve.toml" <<TOML
scores = "$(realpath "$scores")"
bind = "127.0.0.1:18081"
workers = 2
[[api_keys]]
name = "bench"
sha256 = "$hash"
scopes = ["scores:read"]
TOML
start=$(date +%s.%N)
"$bin" serve --config "$work/serve.toml" 2> "$work/serve.log" &
server=$!
until curl -sf http://127.0.0.1:18081/readyz > /dev/null; do sleep 0.1; done
echo "serve: ready after $(echo "$(date +%s.%N) - $start" | bc) s, RSS $(awk '/VmRSS/ {print $2}' /proc/$server/status) KiB"
curl -s -c "$work/cookies" -o /dev/null --data-urlencode "key=$key" http://127.0.0.1:18081/dashboard/login
median() { sort -n | awk '{a[NR]=$1} END {print a[int((NR+1)/2)]}'; }
t=$(for i in $(seq 20); do
  curl -s -b "$work/cookies" -o "$work/page.html" -w '%{time_total}\n' http://127.0.0.1:18081/dashboard
done | median)
grep -q 'id="stage-counts"' "$work/page.html" || { echo "the dashboard did not render" >&2; exit 1; }
echo "GET /dashboard: $t s median of 20, $(wc -c < "$work/page.html") bytes"
t=$(for i in $(seq 20); do
  curl -s -b "$work/cookies" -o "$work/customer.html" -w '%{time_total}\n' \
    --data "id_type=customer_id&id=C$(printf %07d $((RANDOM * 30 % customers + 1)))" http://127.0.0.1:18081/dashboard/customer
done | median)
grep -q 'data-customer-id' "$work/customer.html" || { echo "the customer page did not render" >&2; exit 1; }
echo "POST /dashboard/customer: $t s median of 20"
echo "serve: RSS after the requests $(awk '/VmRSS/ {print $2}' /proc/$server/status) KiB"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%F)"
