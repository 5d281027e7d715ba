#!/usr/bin/env bash
# Where a search's time goes, on a quiet machine, over a copy of an index left by
# bench/quality.sh (HGD_BENCH_HOME): process start (`hgd --version`), whole searches with new and
# with repeated queries (query vector cached), and `rg` on the first word of each query in the
# same folder, the three in turn per query for ROUNDS rounds (default 5); then the daemon's own
# split per new search (index check, overlay, embedding and ranking) from its debug log.
# Usage: [ROUNDS=N] bench/search_profile.sh HOME REPO [SUBDIR]   e.g. ... /tmp/hgd-bench-v3 click src/click
cd "$(dirname "$0")/.."
home_src="${1:?usage: bench/search_profile.sh HOME REPO [SUBDIR]}"
repo="${2:?usage: bench/search_profile.sh HOME REPO [SUBDIR]}"
sub="${3:-}"
rounds="${ROUNDS:-5}"
repos_dir="${REPOS_DIR:-/tmp/semble-bench/repos}"
export HGD_LOG="${HGD_LOG:-hgd_daemon=debug}"
source bench/daemon-home.sh profile "$home_src"
queries="$HGD_HOME/queries.txt"
python3 -c "import json,sys; [print(q['query']) for q in json.load(open(sys.argv[1]))]" \
  "../shared/bench/semble-dev/annotations/$repo.json" > "$queries"
cd "$repos_dir/$repo/$sub" || { echo "no folder $repos_dir/$repo/$sub" >&2; exit 2; }
hgd search -n 1 warmup >/dev/null 2>&1
python3 - "$queries" "$HGD_HOME/logs/daemon.log" "$rounds" <<'PY'
import re, statistics, subprocess, sys, time
qs = open(sys.argv[1]).read().splitlines()
rounds = int(sys.argv[3])
def run(cmd):
    t = time.perf_counter()
    subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000
def show(label, xs):
    xs = sorted(xs)
    print(f"{label:50s} p50 {statistics.median(xs):6.1f} ms  p95 {xs[max(0, int(len(xs) * 0.95) - 1)]:6.1f} ms  (n={len(xs)})")
show("hgd --version (process start)", [run(["hgd", "--version"]) for _ in qs])
log = open(sys.argv[2]); log.seek(0, 2)
# Each query new, then repeated (its vector cached), then rg, one after another, so the three
# meet the same moment's machine; rounds after the first ask "QUERY N", new to the daemon.
new, repeated, rg, lines = [], [], [], []
for r in range(rounds):
    for q in qs:
        asked = q if r == 0 else f"{q} {r}"
        new.append(run(["hgd", "search", "--json", "-n", "10", asked]))
        lines += [l for l in log.read().splitlines() if "search: index check" in l]
        repeated.append(run(["hgd", "search", "--json", "-n", "10", asked]))
        rg.append(run(["rg", "-i", "-n", q.split()[0], "."]))
        log.read()
show("hgd search --json -n 10, new queries", new)
show("hgd search --json -n 10, repeated (vector cached)", repeated)
show("rg -i -n FIRST_WORD .", rg)
def ms(v, u):
    return {"ns": float(v) / 1e6, "µs": float(v) / 1000, "s": float(v) * 1000}.get(u, float(v))
parts = [[ms(v, u) for v, u in re.findall(r"([0-9.]+)(ms|µs|ns|s)\b", l)[-3:]] for l in lines]
for i, name in enumerate(["index check (locate, HEAD)", "overlay (watcher sync)", "embedding wait + ranking"]):
    if parts:  # the daemon's debug log (HGD_LOG) has the split
        print(f"  daemon, new queries: {name:32s} median {statistics.median(p[i] for p in parts):.2f} ms")
PY
