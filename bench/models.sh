#!/usr/bin/env bash
# Benchmark: engage's classifiers against scikit-learn (and linfa's decision
# tree and random forest) on the same feature matrix and split, and BG/NBD
# against the Python `lifetimes` package on CDNOW. Fit seconds and
# validation ROC AUC per model, one JSON line each, for BENCHMARKS.md.
#
#   bash bench/models.sh [CUSTOMERS] [MODEL]
#
# MODEL (logistic, gbm, tree or forest) times only that classifier on
# both sides (the linfa forest alone takes minutes).
#
# The feature matrix is `engage dataset --task churn` at two cutoffs on
# generated data; bench/models.py encodes it once (one-hot text, 0/1
# booleans, missing kept) and writes train.csv (the earlier cutoff) and
# valid.csv (the later one), which both sides read. scikit-learn, pandas and
# lifetimes go into the virtualenv under bench/out/.
set -euo pipefail
cd "$(dirname "$0")/.."
customers=${1:-200000}
model=${2:-}
bin=target/release/engage
data=bench/out/data-$customers
venv=bench/out/venv
out=bench/out/models-$customers
[ -x "$bin" ] || cargo build --release
if [ ! -d "$data" ]; then
  "$bin" generate --customers "$customers" --seed 42 --out "$data" > /dev/null
fi
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet scikit-learn==1.7.2 pandas pyarrow lifetimes==0.11.3
(cd bench/models && CARGO_TARGET_DIR=../out/target-models cargo build --release --quiet)
rust=bench/out/target-models/release/engage-bench-models
rm -rf "$out" && mkdir -p "$out"
"$bin" dataset --data "$data" --task churn --as-of 2025-12-31,2026-03-31 --out "$out/dataset" > /dev/null
"$venv/bin/python" bench/models.py export "$out/dataset/dataset.parquet" "$out"
"$rust" classifiers "$out" $model
"$venv/bin/python" bench/models.py sklearn "$out" $model
cdnow=tests/fixtures/cdnow/cdnow_customers_summary_with_transactions.csv
"$rust" bgnbd "$cdnow" 5
"$rust" clvscore "$cdnow" 1000000
"$venv/bin/python" bench/models.py lifetimes "$cdnow" 3
echo "machine: $(nproc) cores, $(free -g | awk '/Mem:/ {print $2}') GiB; $(date -u +%F)"
