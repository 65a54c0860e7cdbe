#!/usr/bin/env bash
# make bench, part "load": hopscope load against fortio and vegeta (the peers
# of ../shared/tools/peers/run.sh, same versions, same nginx config) on
# loopback, in one run, repeated; medians and ratios land in
# results/bench/load.md.
#   A. 2000 req/s, 10 connections: hopscope's send-lag p99; client CPU per
#      1000 requests (wait4 rusage of the client) and corrected p50 vs fortio
#      and vegeta.
#   B. closed loop, client pinned to CPU 0 and nginx to CPU 1 (taskset):
#      requests/s of hopscope --rate max vs fortio -qps 0.
#   C. 200 req/s with the nginx worker SIGSTOPped for 1 s: latency p99.
# Plus the machine's own timer jitter floor (a bare sleep loop) per rep.
# Env: REPS=5 DUR=10 WARM=2 MAXDUR=8 CO_DUR=12 CO_AT=5 PORT=18090
#      PRIO=10 (chrt -f priority for nginx and every client alike; 0: none)
#      PEERS_BIN=/tmp/peers-work/bin (fortio, vegeta; go-installed if missing)
set -u -o pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
REPS=${REPS:-5}; DUR=${DUR:-10}; WARM=${WARM:-2}; MAXDUR=${MAXDUR:-8}
CO_DUR=${CO_DUR:-12}; CO_AT=${CO_AT:-5}; PORT=${PORT:-18090}; PRIO=${PRIO:-10}
PEERS_BIN=${PEERS_BIN:-/tmp/peers-work/bin}
GO=${GO:-$(command -v go || echo /usr/local/go/bin/go)}
HS=$REPO/bin/hopscope
OUT=$REPO/results/bench/load
WORK=$(mktemp -d /tmp/hsg-bench.XXXXXX)
URL="http://127.0.0.1:$PORT/"
mkdir -p "$OUT"
rm -f "$OUT"/*.json "$OUT"/*.rus "$OUT"/*.out "$OUT"/*.txt
log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }

[ -x "$HS" ] || "$GO" build -o "$HS" ./cmd/hopscope || exit 1
mkdir -p "$PEERS_BIN"
[ -x "$PEERS_BIN/fortio" ] || GOBIN=$PEERS_BIN GOFLAGS=-buildvcs=false timeout 600 "$GO" install fortio.org/fortio@v1.66.5 || log "fortio install failed: it is left out"
[ -x "$PEERS_BIN/vegeta" ] || GOBIN=$PEERS_BIN GOFLAGS=-buildvcs=false timeout 600 "$GO" install github.com/tsenart/vegeta/v12@v12.13.0 || log "vegeta install failed: it is left out"
command -v /usr/sbin/nginx >/dev/null || { log "nginx missing: bash scripts/setup.sh test"; exit 1; }

RT=()
if [ "$PRIO" != 0 ] && chrt -f "$PRIO" true 2>/dev/null; then RT=(chrt -f "$PRIO"); fi

# rusage: run a command, write the wait4 user/sys CPU of it (µs resolution).
cat > "$WORK/rusage.py" <<'PY'
import os, signal, sys
out, argv = sys.argv[1], sys.argv[2:]
pid = os.fork()
if pid == 0:
    os.execvp(argv[0], argv)
for s in (signal.SIGINT, signal.SIGTERM):
    signal.signal(s, lambda sig, frm: os.kill(pid, sig))
while True:
    try:
        _, status, ru = os.wait4(pid, 0)
        break
    except InterruptedError:
        continue
with open(out, "w") as f:
    f.write("user_s=%.6f sys_s=%.6f\n" % (ru.ru_utime, ru.ru_stime))
sys.exit(os.waitstatus_to_exitcode(status) & 0xFF)
PY

NGX=$WORK/nginx; mkdir -p "$NGX/logs"
NGX_PID=""
nginx_start() { # [cpu]
  nginx_stop
  cat > "$NGX/nginx.conf" <<NG
worker_processes 1;
daemon off;
master_process on;
pid $NGX/nginx.pid;
error_log $NGX/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $NGX/tmp_body;
  proxy_temp_path $NGX/tmp_proxy;
  fastcgi_temp_path $NGX/tmp_fcgi;
  uwsgi_temp_path $NGX/tmp_uwsgi;
  scgi_temp_path $NGX/tmp_scgi;
  keepalive_requests 100000000;
  keepalive_timeout 75s;
  server {
    listen 127.0.0.1:$PORT;
    location / { return 200 "ok"; }
  }
}
NG
  local pin=(); [ -n "${1:-}" ] && pin=(taskset -c "$1")
  "${RT[@]}" "${pin[@]}" /usr/sbin/nginx -p "$NGX" -c "$NGX/nginx.conf" &
  NGX_PID=$!
  for _ in $(seq 50); do curl -s -o /dev/null "$URL" 2>/dev/null && break; sleep 0.1; done
  curl -s "$URL" | grep -q ok || { log "nginx did not come up on $URL"; return 1; }
}
nginx_worker() { pgrep -P "$NGX_PID" | head -1; }
nginx_stop() {
  if [ -n "$NGX_PID" ] && kill -0 "$NGX_PID" 2>/dev/null; then
    local w; w=$(nginx_worker); [ -n "$w" ] && kill -CONT "$w" 2>/dev/null
    kill -QUIT "$NGX_PID"; for _ in $(seq 50); do kill -0 "$NGX_PID" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$NGX_PID" 2>/dev/null && kill -KILL "$NGX_PID"
    wait "$NGX_PID" 2>/dev/null
  fi
  NGX_PID=""
}
trap 'nginx_stop; rm -rf "$WORK"' EXIT
trap 'exit 130' INT TERM

# client TOOL MODE(rate|max) RATE DUR OUTPREFIX [CPU] [EXTRA...]
client() {
  local tool=$1 mode=$2 rate=$3 dur=$4 out=$5 cpu=${6:-}; shift 6 2>/dev/null || shift $#
  local pin=(); [ -n "$cpu" ] && pin=(taskset -c "$cpu")
  local T=(timeout -s INT -k 5 $((dur + 30)) "${RT[@]}" "${pin[@]}" python3 "$WORK/rusage.py" "$out.rus")
  case $tool in
    hopscope|hopscope-spin)
      local r=$rate; [ "$mode" = max ] && r=max
      local extra=(); [ "$tool" = hopscope-spin ] && extra=(--spin 50us)
      "${T[@]}" "$HS" load -q --rate "$r" --duration "${dur}s" -c 10 "${extra[@]}" --json "$out.json" "$URL" >"$out.out" 2>&1 ;;
    fortio)
      local q=$rate; [ "$mode" = max ] && q=0
      "${T[@]}" "$PEERS_BIN/fortio" load -quiet -qps "$q" -c 10 -t "${dur}s" -p "50,90,99,99.9" -json "$out.json" "$URL" >"$out.out" 2>&1 ;;
    vegeta)
      echo "GET $URL" | "${T[@]}" "$PEERS_BIN/vegeta" attack -rate "${rate}/s" -duration "${dur}s" -workers 10 \
          -connections 10 -max-connections 10 -output "$out.bin" >"$out.out" 2>&1
      "$PEERS_BIN/vegeta" report -type json "$out.bin" >"$out.json" 2>>"$out.out"; rm -f "$out.bin" ;;
  esac
}
have() { case $1 in hopscope*) return 0;; *) [ -x "$PEERS_BIN/$1" ];; esac; }

log "conditions: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg), priority: ${RT[*]:-none}"
echo "cpus=$(nproc) loadavg_start=\"$(cut -d' ' -f1-3 /proc/loadavg)\" prio=\"${RT[*]:-none}\" reps=$REPS dur=$DUR maxdur=$MAXDUR kernel=$(uname -r)" > "$OUT/conditions.txt"

# The floor: how late a bare single-threaded sleep loop wakes here (500 µs
# periods, same priority). No generator's send lag can beat it.
cat > "$WORK/jitter.py" <<'PY'
import json, sys, time
P = 500_000; t0 = time.monotonic_ns() + P; lags = []
for i in range(int(sys.argv[2])):
    at = t0 + i * P
    d = at - time.monotonic_ns()
    if d > 0:
        time.sleep(d / 1e9)
    lags.append(time.monotonic_ns() - at)
lags.sort(); n = len(lags)
json.dump({"p50": lags[n // 2], "p99": lags[n * 99 // 100], "max": lags[-1]}, open(sys.argv[1], "w"))
PY

nginx_start || exit 1
for rep in $(seq "$REPS"); do
  log "A rep $rep: timer jitter floor"
  "${RT[@]}" python3 "$WORK/jitter.py" "$OUT/jitter_$rep.txt" $((DUR * 2000))
  for tool in hopscope fortio vegeta hopscope-spin; do have $tool || continue
    log "A rep $rep: $tool at 2000 req/s for ${DUR}s"
    client $tool rate 2000 "$WARM" "$WORK/warm" ""
    client $tool rate 2000 "$DUR" "$OUT/fixed__${tool}__$rep" ""
  done
done
nginx_stop

nginx_start 1 || exit 1
for rep in $(seq "$REPS"); do
  for tool in hopscope fortio; do have $tool || continue
    log "B rep $rep: $tool closed loop for ${MAXDUR}s (client cpu0, nginx cpu1)"
    client $tool max 0 "$WARM" "$WORK/warm" 0
    client $tool max 0 "$MAXDUR" "$OUT/max__${tool}__$rep" 0
  done
done
nginx_stop

nginx_start || exit 1
for tool in hopscope fortio vegeta; do have $tool || continue
  client $tool rate 200 "$WARM" "$WORK/warm" ""
  w=$(nginx_worker)
  log "C: $tool at 200 req/s, nginx worker $w stopped at ${CO_AT}s for 1s"
  client $tool rate 200 "$CO_DUR" "$OUT/co__${tool}__1" "" &
  cp=$!
  sleep "$CO_AT"; kill -STOP "$w"; sleep 1; kill -CONT "$w"
  wait $cp
done
nginx_stop
echo "loadavg_end=\"$(cut -d' ' -f1-3 /proc/loadavg)\"" >> "$OUT/conditions.txt"

python3 - "$OUT" <<'PY' | tee "$REPO/results/bench/load.md"
import glob, json, os, re, statistics, sys
out = sys.argv[1]
def cpu(p):
    m = re.search(r"user_s=([\d.]+) sys_s=([\d.]+)", open(p + ".rus").read())
    return float(m.group(1)) + float(m.group(2))
def parse(tool, p):
    j = json.load(open(p + ".json"))
    if tool.startswith("hopscope"):
        return dict(n=j["requests"], rate=j["achieved_rps"], p50=j["latency_ns"]["p50"] / 1e6,
                    p99=j["latency_ns"]["p99"] / 1e6, max=j["latency_ns"]["max"] / 1e6,
                    lag99=j["send_lag_ns"]["p99"] / 1e3, errors=j["errors"])
    if tool == "fortio":
        h = j["DurationHistogram"]; pc = {x["Percentile"]: x["Value"] * 1e3 for x in h["Percentiles"]}
        codes = j.get("RetCodes", {})
        return dict(n=h["Count"], rate=j["ActualQPS"], p50=pc[50], p99=pc[99], max=h["Max"] * 1e3,
                    errors=sum(v for k, v in codes.items() if k != "200"))
    L = j["latencies"]
    return dict(n=j["requests"], rate=j["throughput"], p50=L["50th"] / 1e6, p99=L["99th"] / 1e6,
                max=L["max"] / 1e6, errors=j["requests"] - j.get("status_codes", {}).get("200", 0))
def load(test):
    rows = {}
    for f in sorted(glob.glob(os.path.join(out, test + "__*.json"))):
        p = f[:-5]; _, tool, rep = os.path.basename(p).split("__")
        try:
            r = parse(tool, p); r["cpu"] = cpu(p); r["cpk"] = r["cpu"] / r["n"] * 1e6 if r["n"] else None
        except Exception as e:
            r = dict(err=str(e))
        rows.setdefault(tool, []).append(r)
    return rows
med = lambda rs, k: statistics.median([r[k] for r in rs if r.get(k) is not None]) if any(r.get(k) is not None for r in rs) else None
fmt = lambda v, nd=3: "n/a" if v is None else ("%.*f" % (nd, v))
print("## hopscope load vs peers (%s)\n" % open(os.path.join(out, "conditions.txt")).read().replace("\n", " ").strip())
A = load("fixed")
print("### A. 2000 req/s, 10 connections, nginx on loopback: medians over runs\n")
print("| tool | runs | achieved req/s | p50 ms | p99 ms | send-lag p99 µs | CPU ms / 1000 req | errors |")
print("|---|---:|---:|---:|---:|---:|---:|---:|")
for t in ["hopscope", "hopscope-spin", "fortio", "vegeta"]:
    if t in A:
        rs = A[t]; name = {"hopscope-spin": "hopscope --spin 50us"}.get(t, t)
        print("| %s | %d | %s | %s | %s | %s | %s | %s |" % (name, len(rs), fmt(med(rs, "rate"), 1), fmt(med(rs, "p50")), fmt(med(rs, "p99")),
              fmt(med(rs, "lag99"), 0) if t.startswith("hopscope") else "-", fmt(med(rs, "cpk"), 1), fmt(med(rs, "errors"), 0)))
if "hopscope" in A and "fortio" in A:
    pairs = [(a["cpk"] / b["cpk"], a["p50"] / b["p50"]) for a, b in zip(A["hopscope"], A["fortio"]) if "cpk" in a and "cpk" in b]
    print("\nPer-run ratios hopscope/fortio (same rep, back to back): CPU %s; p50 %s" % (
        ", ".join("%.2f" % c for c, _ in pairs), ", ".join("%.2f" % p for _, p in pairs)))
    print("Median ratios: CPU %.2f, p50 %.2f" % (statistics.median(c for c, _ in pairs), statistics.median(p for _, p in pairs)))
if "hopscope" in A and "vegeta" in A:
    pv = [a["p50"] / b["p50"] for a, b in zip(A["hopscope"], A["vegeta"]) if "p50" in a and "p50" in b]
    print("Median p50 ratio hopscope/vegeta: %.2f" % statistics.median(pv))
if "hopscope" in A:
    print("hopscope send-lag p99 per run (µs): %s" % ", ".join(fmt(r.get("lag99"), 0) for r in A["hopscope"]))
jit = [json.load(open(f)) for f in sorted(glob.glob(os.path.join(out, "jitter_*.txt")))]
if jit:
    print("Timer jitter floor (a bare sleep loop, 2000 wake-ups/s, same priority), p99 per run (µs): %s; max (µs): %s" % (
        ", ".join("%.0f" % (j["p99"] / 1e3) for j in jit), ", ".join("%.0f" % (j["max"] / 1e3) for j in jit)))
if "hopscope-spin" in A:
    print("hopscope --spin 50us send-lag p99 per run (µs): %s" % ", ".join(fmt(r.get("lag99"), 0) for r in A["hopscope-spin"]))
B = load("max")
print("\n### B. Closed loop, 10 connections, client on CPU 0, nginx on CPU 1\n")
print("| tool | runs | median req/s | per run | CPU ms / 1000 req |")
print("|---|---:|---:|---|---:|")
for t in ["hopscope", "fortio"]:
    if t in B:
        rs = B[t]
        print("| %s | %d | %s | %s | %s |" % ({"hopscope": "hopscope --rate max", "fortio": "fortio -qps 0"}[t], len(rs),
              fmt(med(rs, "rate"), 0), ", ".join(fmt(r.get("rate"), 0) for r in rs), fmt(med(rs, "cpk"), 1)))
if "hopscope" in B and "fortio" in B:
    rr = [a["rate"] / b["rate"] for a, b in zip(B["hopscope"], B["fortio"]) if "rate" in a and "rate" in b]
    print("\nPer-run throughput ratios hopscope/fortio: %s (median %.2f)" % (", ".join("%.2f" % x for x in rr), statistics.median(rr)))
C = load("co")
print("\n### C. 200 req/s, nginx worker SIGSTOPped for 1 s\n")
print("| tool | p50 ms | p99 ms | max ms | requests |")
print("|---|---:|---:|---:|---:|")
for t in ["hopscope", "fortio", "vegeta"]:
    if t in C:
        r = C[t][0]
        print("| %s | %s | %s | %s | %s |" % (t, fmt(r.get("p50")), fmt(r.get("p99"), 1), fmt(r.get("max"), 1), r.get("n")))
PY
