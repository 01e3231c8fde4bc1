#!/usr/bin/env bash
# Benchmark: `engage train uplift` on about a million contact records, for the
# memory bound the models issue asks for (Python uplift libraries run out of
# memory there). Wall seconds and peak resident memory from GNU time, for
# BENCHMARKS.md.
#
#   bash bench/uplift.sh [CUSTOMERS]
#
# The contact records come from `engage dataset --task response` on generated
# data: every 60 days from 2024-09-01 to 2026-03-01 (ten cutoffs), each with
# the contacts of the next 60 days. 300,000 customers give about a million.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-300000}
bin=target/release/engage
data=bench/out/data-$customers
out=bench/out/uplift-$customers
[ -x "$bin" ] || cargo build --release
if [ ! -d "$data" ]; then
  /usr/bin/time -f "generate: %e s wall, %M KiB peak RSS" "$bin" generate --customers "$customers" --seed 42 --out "$data" > /dev/null
fi
rm -rf "$out" && mkdir -p "$out"
export ENGAGE_ERASURE_LIST=/nonexistent/erasure_list.json
/usr/bin/time -f "dataset: %e s wall, %M KiB peak RSS" "$bin" dataset --data "$data" --task response \
  --every 60d --from 2024-09-01 --to 2026-03-01 --horizon 60d --out "$out/dataset" | tail -1
for kind in logistic gbm; do
  /usr/bin/time -f "train uplift ($kind): %e s wall, %M KiB peak RSS" "$bin" train uplift \
    --features "$out/dataset/dataset.parquet" --kind "$kind" --models "$out/models"
done
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%F)"
