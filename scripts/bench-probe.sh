#!/usr/bin/env bash
# The probe's costs (issue 4), as Go benchmarks in one run each:
#  - per-packet cost of the classifier via BPF_PROG_TEST_RUN, next to a
#    minimal reserve+submit program measured in the same run;
#  - flood: events/s read and dropped at fixed rates (drops = missing events);
#  - client latency at 2000 RPS through a meshed lab, probe detached vs
#    attached in alternating windows (HOPSCOPE_BENCH_WINDOW, default 4s here;
#    HOPSCOPE_BENCH_PAIRS pairs, default 8), with the median of per-pair
#    differences next to the pooled ones.
# Needs root. Figures land in results/bench/probe.txt.
set -u -o pipefail
cd "$(dirname "$0")/.."
mkdir -p results/bench
out=results/bench/probe.txt
: >"$out"
if [ "$(id -u)" != 0 ]; then
  echo "bench-probe: needs root (CAP_BPF, CAP_NET_ADMIN): run with sudo" >&2
  exit 1
fi
status=0
run() { go test -run '^$' "$@" ./probe/ 2>&1 | tee -a "$out" | grep -E '^(Benchmark|---|FAIL|ok|PASS)|per pair' || status=1; }
echo "== classifier cost per packet (ns/pkt; 5 runs)" | tee -a "$out"
run -bench 'BenchmarkClassifier' -benchtime 500000x -count 5
echo "== flood (events, read, drops per 1 s window)" | tee -a "$out"
run -bench 'BenchmarkFlood' -benchtime 1x
echo "== client latency at 2000 RPS, probe detached vs attached (µs)" | tee -a "$out"
HOPSCOPE_BENCH_WINDOW=${HOPSCOPE_BENCH_WINDOW:-4s} HOPSCOPE_BENCH_PAIRS=${HOPSCOPE_BENCH_PAIRS:-8} \
  run -bench 'BenchmarkOverhead' -benchtime 1x -v -timeout 20m
exit $status
