#!/usr/bin/env bash
# Benchmark: `engage features` and `engage identity` on generated data. Wall seconds and peak
# resident memory come from GNU time; results go to stdout for BENCHMARKS.md.
#
#   bash bench/features.sh [CUSTOMERS] [AS_OF]
#
# Needs a release build (cargo build --release). Data is generated once per
# size under bench/out/ (git-ignored) and reused.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-1000000}
as_of=${2:-2026-07-01}
bin=target/release/engage
data=bench/out/data-$customers
out=bench/out/features-$customers
[ -x "$bin" ] || cargo build --release
if [ ! -d "$data" ]; then
  echo "generating $customers customers into $data"
  /usr/bin/time -f "generate: %e s wall, %M KiB peak RSS" "$bin" generate --customers "$customers" --seed 42 --out "$data"
fi
du -sh "$data"
rm -rf "$out"
/usr/bin/time -f "features: %e s wall, %M KiB peak RSS" "$bin" features --data "$data" --as-of "$as_of" --out "$out"
identity=bench/out/identity-$customers
rm -rf "$identity"
/usr/bin/time -f "identity: %e s wall, %M KiB peak RSS" "$bin" identity --data "$data" --out "$identity"
