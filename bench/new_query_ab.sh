#!/usr/bin/env bash
# Two builds side by side on new queries: each build's daemon runs on its own copy of an index
# left by bench/quality.sh (HOME_SRC), every benchmark query of REPO is asked of both in turn
# (new to each; the two builds in alternating order), then again (repeated), with `rg` on its
# first word in the same loop.
# Usage: bench/new_query_ab.sh HOME_SRC REPO SUBDIR BIN_A BIN_B [ROUNDS]
#   e.g. bench/new_query_ab.sh /tmp/hgd-bench-v3 click src/click /tmp/old ~/.cache/hgd/target/debug 3
set -u
home_src="$1"; repo="$2"; sub="$3"; a="$4"; b="$5"; rounds="${6:-1}"
cd "$(dirname "$0")/.."
repos_dir="${REPOS_DIR:-/tmp/semble-bench/repos}"
source scripts/env.sh >/dev/null 2>&1
set +eu +o pipefail
unset HGD_HOME
HGD_MODEL_DIR="$("$a/hgd-daemon" model-dir)"
HGD_ORT_DYLIB="$(ls "$(dirname "$(dirname "$HGD_MODEL_DIR")")"/runtime/libonnxruntime* | head -1)"
export HGD_MODEL_DIR HGD_ORT_DYLIB
homes=()
for x in a b; do
  h="$(mktemp -d "/tmp/hgd-ab-$x.XXXXXX")"
  cp -a "$home_src/." "$h/"
  rm -f "$h/hgd.sock" "$h/daemon.lock"
  homes+=("$h")
done
trap 'HGD_HOME=${homes[0]} "$a/hgd" stop >/dev/null 2>&1; HGD_HOME=${homes[1]} "$b/hgd" stop >/dev/null 2>&1; rm -rf "${homes[@]}"' EXIT
queries="${homes[0]}/queries.txt"
python3 -c "import json,sys; [print(q['query']) for q in json.load(open(sys.argv[1]))]" \
  "../shared/bench/semble-dev/annotations/$repo.json" > "$queries"
cd "$repos_dir/$repo/$sub" || exit 2
HGD_HOME=${homes[0]} "$a/hgd" search -n 1 warmup >/dev/null
HGD_HOME=${homes[1]} "$b/hgd" search -n 1 warmup >/dev/null
python3 - "$a" "$b" "${homes[0]}" "${homes[1]}" "$rounds" "$queries" <<'PY'
import os, statistics, subprocess, sys, time
a, b, ha, hb, rounds, queries = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), sys.argv[6]
qs = open(queries).read().splitlines()
def run(cmd, env=None):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    return (time.perf_counter() - t) * 1000
ea, eb = dict(os.environ, HGD_HOME=ha), dict(os.environ, HGD_HOME=hb)
res = {k: [] for k in ["A new", "B new", "A repeated", "B repeated", "rg"]}
n = 0
for r in range(rounds):
    for q in qs:
        qq = q if r == 0 else f"{q} {r}"
        # Whichever build runs first after rg pays for the caches it left: alternate the order.
        order = [("A", a, ea), ("B", b, eb)]
        if n % 2:
            order.reverse()
        n += 1
        for name, bin_, env in order:
            res[f"{name} new"].append(run([bin_ + "/hgd", "search", "--json", "-n", "10", qq], env))
        res["rg"].append(run(["rg", "-i", "-n", q.split()[0], "."]))
        for name, bin_, env in order:
            res[f"{name} repeated"].append(run([bin_ + "/hgd", "search", "--json", "-n", "10", qq], env))
print(f"A = {a}\nB = {b}")
for k, xs in res.items():
    xs = sorted(xs)
    print(f"{k:11s} p50 {statistics.median(xs):6.2f} ms  p95 {xs[max(0, int(len(xs) * 0.95) - 1)]:6.2f} ms  (n={len(xs)})")
PY
