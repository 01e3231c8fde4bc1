#!/usr/bin/env bash
# Time to first result: clone the committed main into a scratch directory
# with an empty target dir, then `cargo run --release -- demo` there.
# Crates already in ~/.cargo/registry are not downloaded again; on a machine
# without them add the download time.
#
#   bash bench/first-run.sh
set -euo pipefail
cd "$(dirname "$0")/.."
scratch=$(mktemp -d)
trap 'rm -rf "$scratch"' EXIT
git clone -q . "$scratch/engage"
cd "$scratch/engage"
start=$(date +%s)
cargo build --release --locked 2>&1 | tail -1
built=$(date +%s)
cargo run --release --locked -q -- demo | tail -25
done_at=$(date +%s)
echo "build: $((built - start)) s, demo: $((done_at - built)) s, clone -> demo summary: $((done_at - start)) s"
