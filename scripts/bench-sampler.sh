#!/usr/bin/env bash
# Sampler cost: `hopscope sample` on 100 populated cgroups at 10 Hz, its CPU
# from rusage. The figure is the difference between a long and a short run of
# the same command (startup, opening 100 cgroups and writing the JSON cancel
# out), as a share of one core. Budget (issue 5): at most 1%.
# Needs root (makes cgroups under <root>/hopscope-bench-sampler, removed at exit).
# Env: N=100 cgroups, LONG=30 and SHORT=2 seconds, REPS=3 rounds per reader
#      (--reader auto, then files); PERF='perf record -g -o FILE' profiles
#      each `hopscope sample` run.
set -eu -o pipefail
cd "$(dirname "$0")/.."
N=${N:-100} LONG=${LONG:-30} SHORT=${SHORT:-2}
BIN=bin/hopscope
[ -x "$BIN" ] || go build -o "$BIN" ./cmd/hopscope
[ "$(id -u)" = 0 ] || { echo "bench-sampler: needs root to make cgroups" >&2; exit 1; }
out=results/bench
mkdir -p "$out"
top=hopscope-bench-sampler
C=/sys/fs/cgroup

# The directories of one cgroup, as sampler.CgroupDirs gives them.
if [ "$(stat -fc %T $C)" = cgroup2fs ]; then
  mode=unified; roots=("$C")
else
  mode=legacy; roots=()
  [ -d $C/unified ] && [ "$(stat -fc %T $C/unified)" = cgroup2fs ] && { mode=hybrid; roots+=("$C/unified"); }
  for h in memory cpuacct cpu,cpuacct; do [ -d "$C/$h" ] && roots+=("$C/$h"); done
fi

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for r in "${roots[@]}"; do
    [ -d "$r/$top" ] || continue
    # Sleepers a killed earlier run left in our cgroups: ours, end them by PID.
    for p in $(cat "$r/$top"/*/cgroup.procs 2>/dev/null); do kill "$p" 2>/dev/null || true; done
    sleep 0.2
    find "$r/$top" -mindepth 1 -depth -type d -exec rmdir {} + 2>/dev/null || true
    rmdir "$r/$top" 2>/dev/null || true
  done
}
trap cleanup EXIT
cleanup

if [ $mode = unified ]; then
  echo "+cpu +memory" > $C/cgroup.subtree_control
  mkdir -p "$C/$top"
  echo "+cpu +memory" > "$C/$top/cgroup.subtree_control"
fi
args=()
for i in $(seq -w 1 "$N"); do
  for r in "${roots[@]}"; do mkdir -p "$r/$top/c$i"; done
  # One sleeping process per cgroup, so each is populated.
  ( for r in "${roots[@]}"; do echo $BASHPID > "$r/$top/c$i/cgroup.procs"; done; exec sleep $(( (LONG + SHORT + 10) * ${REPS:-3} * 2 + 120 )) ) &
  pids+=($!)
  args+=(--cgroup "/$top/c$i")
done
sleep 0.5

secs() { # "0m1.234s 0m0.100s" -> 1.334
  awk '{ t = 0; for (i = 1; i <= NF; i++) { split($i, a, /[ms]/); t += a[1] * 60 + a[2] } printf "%.3f", t }' <<<"$1"
}
cpu=
run() { # runs hopscope sample for $1 seconds with --reader $2; sets cpu to its CPU seconds (user+sys)
  local t=$out/.times before after
  times >"$t" # line 2: waited-for children's user and system time (no subshell: $(times) would see none)
  before=$(sed -n 2p "$t")
  ${PERF:-} "$BIN" sample "${args[@]}" --duration "$1s" --interval 100ms --reader "$2" --json "$out/sampler-$2-$1s.json" >/dev/null
  times >"$t"
  after=$(sed -n 2p "$t")
  rm -f "$t"
  cpu=$(awk -v a="$(secs "$after")" -v b="$(secs "$before")" 'BEGIN { printf "%.3f", a - b }')
}

# REPS rounds, the two readers back to back in each; the figure per reader
# is the median over rounds of (long - short) / (LONG - SHORT).
REPS=${REPS:-3}
: >"$out/sampler.txt"
for reader in auto files; do
  pcts=()
  for rep in $(seq "$REPS"); do
    run "$SHORT" $reader; short=$cpu
    run "$LONG" $reader; long=$cpu
    pcts+=("$(awk -v l="$long" -v s="$short" -v L="$LONG" -v S="$SHORT" 'BEGIN { printf "%.2f", 100 * (l - s) / (L - S) }')")
  done
  med=$(printf '%s\n' "${pcts[@]}" | sort -n | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')
  json=$out/sampler-$reader-${LONG}s.json
  samples=$(jq '[.sources[].samples] | min' "$json")
  used=$(jq -r '.reader + (if .reader_note then " (" + .reader_note + ")" else "" end)' "$json")
  load=$(cut -d' ' -f1-3 /proc/loadavg)
  line="sampler: $N cgroups ($mode) at 10 Hz, --reader $reader [$used]: median ${med}% of one core over $REPS runs (${pcts[*]}; rusage of ${LONG}s minus ${SHORT}s runs; >= $samples samples each; load avg $load); budget 1%"
  echo "$line" | tee -a "$out/sampler.txt"
done
