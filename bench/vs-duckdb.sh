#!/usr/bin/env bash
# Benchmark: `engage features` against the same RFM query in DuckDB and in
# DataFusion's Python bindings, on the same generated data, with a check that
# all three give the same per-customer numbers; then what DuckDB takes only to
# read the inputs the whole library reads (bench/read_floor.py). Wall seconds
# and peak resident memory come from GNU time; results go to stdout for
# BENCHMARKS.md. `engage features` also runs twice with --checked-inputs
# (making the entry, then reading it).
#
#   bash bench/vs-duckdb.sh [CUSTOMERS] [AS_OF]
#
# DuckDB and DataFusion-Python go into a virtualenv under bench/out/ (only for
# this benchmark). The query, bench/rfm.sql, reads the raw transactions and
# engage's identity map (from `engage identity`, not timed here): it is the
# RFM core of sql/features/value.sql with attribution done by joins. The
# default cutoff is after the last event, so the identity map of all rows is
# the one in force at the cutoff.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
as_of=${2:-2026-07-15}
bin=target/release/engage
data=bench/out/data-$customers
venv=bench/out/venv
out=bench/out/vs-duckdb-$customers
[ -x "$bin" ] || cargo build --release
if [ ! -d "$data" ]; then
  echo "generating $customers customers into $data"
  "$bin" generate --customers "$customers" --seed 42 --out "$data"
fi
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet duckdb==2.0.0 datafusion==55.0.0
fi
rm -rf "$out" && mkdir -p "$out"
"$bin" identity --data "$data" --out "$out/identity" > /dev/null
/usr/bin/time -f "engage features: %e s wall, %M KiB peak RSS" \
  "$bin" features --data "$data" --as-of "$as_of" --out "$out/features" | sed -n '/^stage/,/^write/p'
# With the checked inputs kept (docs/data-contract.md): the first run makes
# the entry, the second reads it; both must write the same feature table.
for run in made used; do
  /usr/bin/time -f "engage features --checked-inputs ($run): %e s wall, %M KiB peak RSS" \
    "$bin" features --data "$data" --as-of "$as_of" --out "$out/features-$run" \
    --checked-inputs "$out/checked" | sed -n '/^stage/,/^write/p'
  cmp "$out/features/customer_features.parquet" "$out/features-$run/customer_features.parquet"
done
du -sh "$out/checked" "$data"
for engine in duckdb datafusion; do
  /usr/bin/time -f "$engine process: %e s wall, %M KiB peak RSS" "$venv/bin/python" bench/rfm.py \
    "$engine" "$data" "$out/identity/identity_map.parquet" "$as_of" "$out/rfm-$engine.parquet"
done
for engine in duckdb datafusion; do
  echo -n "$engine vs engage: "
  "$venv/bin/python" bench/compare_rfm.py "$out/features/customer_features.parquet" "$out/rfm-$engine.parquet"
done
# The floor: DuckDB only reading every column of the inputs the library reads.
"$venv/bin/python" bench/read_floor.py "$data" 2 | grep " all "
