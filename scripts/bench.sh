#!/usr/bin/env bash
# make bench: runs every scripts/bench-*.sh in turn (load generator vs peers,
# probe cost, sampler cost) and the Go benchmarks. Each part prints its own
# figures; results also land under results/bench/.
set -u -o pipefail
cd "$(dirname "$0")/.."
mkdir -p results/bench
status=0
go test -run '^$' -bench . -benchtime 2s ./... 2>&1 | tee results/bench/go-bench.txt || status=1
for part in scripts/bench-*.sh; do
  [ -e "$part" ] || continue
  echo "== $part"
  bash "$part" || { echo "bench: $part failed" >&2; status=1; }
done
exit $status
