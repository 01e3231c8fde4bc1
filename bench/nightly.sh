#!/usr/bin/env bash
# Benchmark: `engage nightly` end to end (ingest, identity, features, scoring
# with churn, uplift and CLV models, segments, publish) on generated data.
# Wall seconds and peak resident memory from GNU time, for BENCHMARKS.md.
#
#   bash bench/nightly.sh [CUSTOMERS] [MEMORY_LIMIT]
#
# With MEMORY_LIMIT (say 4GiB) every step runs under that engine limit,
# spilling to $out/spill, and the results go to bench/out/nightly-N-LIMIT.
#
# The models are trained first on the same data (not timed): churn as of
# 2026-03-31 with a 90-day horizon, CLV as of 2026-03-31, uplift on the
# contacts after 2026-03-01. The nightly run then scores as of 2026-07-01
# and selects two campaigns' audiences, twice (the second run re-selects the
# same audiences and prunes the first, superseded, snapshot). It reads a data
# root of links to the generated tables, with its own copies of contacts and
# campaigns, which the audiences append to.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
limit=${2:-}
bin=target/release/engage
data=bench/out/data-$customers
out=bench/out/nightly-$customers${limit:+-$limit}
bounded=()
engine=""
if [ -n "$limit" ]; then
  mkdir -p "$out/spill"
  bounded=(--memory-limit "$limit" --spill-dir "$out/spill")
  engine=$'[engine]\nmemory_limit = "'"$limit"$'"\nspill_dir = "spill"'
fi
[ -x "$bin" ] || cargo build --release
if [ ! -d "$data" ]; then
  /usr/bin/time -f "generate: %e s wall, %M KiB peak RSS" "$bin" generate --customers "$customers" --seed 42 --out "$data" > /dev/null
fi
export ENGAGE_ERASURE_LIST=/nonexistent/erasure_list.json
if [ ! -d "$out/models" ]; then
  mkdir -p "$out"
  /usr/bin/time -f "train churn (not part of nightly): %e s wall, %M KiB peak RSS" \
    "$bin" train churn --data "$data" --as-of 2026-03-31 --horizon 90d --models "$out/models" "${bounded[@]}" | tail -1
  /usr/bin/time -f "train clv (not part of nightly): %e s wall, %M KiB peak RSS" \
    "$bin" train clv --data "$data" --as-of 2026-03-31 --models "$out/models" "${bounded[@]}" | tail -1
  "$bin" dataset --data "$data" --task response --as-of 2026-03-01 --horizon 60d --out "$out/response" \
    "${bounded[@]}" | tail -1
  /usr/bin/time -f "train uplift (not part of nightly): %e s wall, %M KiB peak RSS" \
    "$bin" train uplift --features "$out/response/dataset.parquet" --models "$out/models" | tail -1
fi
rm -rf "$out/data" && mkdir -p "$out/data"
for t in customers transactions interactions responses; do ln -s "$(realpath "$data/$t")" "$out/data/$t"; done
cp -r "$data/contacts" "$out/data/contacts"
mkdir -p "$out/data/campaigns"
if [ -f "$data/campaigns.parquet" ]; then cp "$data/campaigns.parquet" "$out/data/campaigns/"; else cp "$data"/campaigns/* "$out/data/campaigns/"; fi
cat > "$out/nightly.toml" <<TOML
as_of = "2026-07-01"
[data]
root = "data"
[models]
registry = "models"
[output]
scores = "scores"
keep = 3
[audiences]
universal_holdout = 0.05
[[campaigns]]
id = "RETAIN"
kind = "wave"
dates = ["2026-07-01"]
channel = "email"
offer = "10pct_off"
where = "risk_band = 'high' AND value_tier IN ('high', 'medium')"
rank_by = "churn_probability * clv"
limit = 50000
[[campaigns]]
id = "UPLIFT"
kind = "wave"
dates = ["2026-07-01"]
channel = "sms"
where = "lifecycle_stage IN ('active', 'at_risk')"
rank_by = "uplift"
limit = 100000
[[campaigns]]
id = "COMPLAINT"
kind = "trigger"
channel = "call"
where = "days_since_last_complaint <= 7"
rank_by = "clv"
budget = 5000.0
cost_per_contact = 5.0
$engine
TOML
rm -rf "$out/scores"
for run in first rerun; do
  /usr/bin/time -f "nightly ($run): %e s wall, %M KiB peak RSS" "$bin" nightly --config "$out/nightly.toml" \
    > "$out/nightly-$run.txt"
done
cat "$out/nightly-rerun.txt"
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%F)"
