#!/usr/bin/env bash
# Every performance figure of issue 9 in one run: search latency with many repositories tracked
# (a small and a mid-sized one, `rg` alongside), searches while another repository indexes,
# indexing throughput against embedding alone, memory over many repositories and over 10,000
# searches, and a store of ~370k blocks with one ~180k-block repository. Prints one table and
# appends it to BENCHMARKS.md with the date, machine, commit and command. About 40 minutes on 2
# cores once the inputs exist.
#
# Usage: bench/all.sh INDEX_HOME [REPOS_DIR]
#   INDEX_HOME: an index of the dev split, as `HGD_BENCH_HOME=INDEX_HOME bench/quality.sh
#     REPOS_DIR` leaves it; made here first when missing (about two hours on 2 cores).
#   REPOS_DIR: the dev split's work trees (bench/dev_repos.py); default /tmp/semble-bench/repos.
#   LARGE_HOME, MONO: the large store and its repository (bench/make_monorepo.sh); made from
#     INDEX_HOME when missing (about 15 minutes: every block is copied, none embedded).
cd "$(dirname "$0")/.."
index_home="${1:?usage: bench/all.sh INDEX_HOME [REPOS_DIR]}"
repos_dir="${2:-/tmp/semble-bench/repos}"
large_home="${LARGE_HOME:-$index_home-large}"
mono="${MONO:-$index_home-mono}"
export REPOS_DIR="$repos_dir"
source scripts/env.sh
set +e
hgd_build --quiet || exit 2
# Frozen copies: nothing rebuilds them while the figures are taken.
frozen="$(mktemp -d /tmp/hgd-all-bin.XXXXXX)"
trap 'rm -rf "$frozen"' EXIT
cp "$HGD_BIN/hgd" "$HGD_BIN/hgd-daemon" "$frozen/"
export BIN="$frozen"
"$frozen/hgd" setup >/dev/null || exit 2
if [ ! -d "$index_home/db" ]; then
  echo "== making the dev split's index in $index_home (hours)"
  HGD_BENCH_HOME="$index_home" bench/quality.sh "$repos_dir" >/dev/null
fi
if [ ! -d "$large_home/db" ] || [ ! -d "$mono/.git" ]; then
  echo "== making the large store in $large_home"
  bench/make_monorepo.sh "$index_home" "$large_home" "$mono" >/dev/null 2>&1
fi
logs="$(mktemp -d /tmp/hgd-all-logs.XXXXXX)"
run() {
  local name="$1"
  shift
  echo "== $name: $*"
  "$@" >"$logs/$name.txt" 2>&1
}
run click bench/search_profile.sh "$index_home" click src/click
run ecto bench/search_profile.sh "$index_home" ecto lib
run during bench/search_during_index.sh "$repos_dir/abseil-cpp/absl" "$repos_dir/click/src/click" click
run throughput bench/index_throughput.sh "$repos_dir/kotlinx-coroutines"
run memory bench/memory.sh "$index_home" 13 0
run soak bench/memory_soak.sh "$index_home" 10000 5
run large bench/large_store.sh "$large_home" "$mono"

table="$(python3 - "$logs" <<'PY'
import re, sys
logs = sys.argv[1]
def text(name):
    return open(f"{logs}/{name}.txt", errors="replace").read()
def pair(name, label):
    m = re.search(re.escape(label) + r".*?p50\s+([0-9.]+) ms\s+p95\s+([0-9.]+) ms", text(name))
    return (m.group(1), m.group(2)) if m else ("?", "?")
rows = []
for repo in ("click", "ecto"):
    new, rep, rg = (pair(repo, l) for l in ("new queries", "repeated", "rg -i"))
    rows.append((f"{repo}: hgd search, new queries (p50 / p95)", f"{new[0]} / {new[1]} ms", "p50 <= 10 ms, p95 <= 20 ms, p50 <= rg"))
    rows.append((f"{repo}: the same queries repeated", f"{rep[0]} / {rep[1]} ms", ""))
    rows.append((f"{repo}: rg in the same run", f"{rg[0]} / {rg[1]} ms", ""))
idle, busy = pair("during", "idle: hgd"), pair("during", "indexing: hgd")
rows.append(("click while abseil-cpp's first index runs (p50 / p95)", f"{busy[0]} / {busy[1]} ms (idle {idle[0]} / {idle[1]})", "p95 <= 50 ms"))
t = text("throughput")
ratio = re.search(r"pipeline / embedding alone: ([0-9.]+)x", t)
bps = re.search(r"pipeline .*?([0-9.]+) blocks/s\s+([0-9.]+) files/s", t)
rows.append(("first index of kotlinx-coroutines: pipeline / embedding alone", f"{ratio.group(1) if ratio else '?'}x ({bps.group(1) if bps else '?'} blocks/s, {bps.group(2) if bps else '?'} files/s)", ">= 0.9x"))
mem = [l for l in text("memory").splitlines() if "searched in total" in l]
near40 = min(mem, key=lambda l: abs(int(re.search(r"(\d+) searched", l).group(1)) - 40000)) if mem else "?"
m = re.search(r"(\d+) searched in total: (\d+) MiB", near40) if mem else None
rows.append(("resident memory after searching ~40k blocks (the index's repositories tracked)", f"{m.group(2)} MiB at {m.group(1)} blocks" if m else "?", "<= 350 MB"))
soak = re.search(r"first pass.*?: (\d+) MiB resident.*?after \d+ searches.*?: (\d+) MiB resident.*?first pass ([-+][0-9.]+%)", text("soak"), re.S)
rows.append(("resident memory over 10,000 searches", f"{soak.group(1)} -> {soak.group(2)} MiB ({soak.group(3)})" if soak else "?", "growth <= 5%"))
L = text("large")
size = re.search(r"store: (\d+) blocks.*?repository: (\d+) blocks", L)
lq, la = pair("large", "new queries "), pair("large", "new queries after the commit")
first = re.search(r"first search after the commit: (\d+) ms", L)
rows.append((f"large store ({size.group(1) if size else '?'} blocks; searched repository {size.group(2) if size else '?'})", f"{lq[0]} / {lq[1]} ms; after a commit {la[0]} / {la[1]} ms", "p50 <= 30 ms"))
rows.append(("  first search after a commit there", f"{first.group(1) if first else '?'} ms", "no rebuild from scratch"))
print("| figure | measured | target |")
print("| --- | --- | --- |")
for r in rows:
    print(f"| {r[0]} | {r[1]} | {r[2]} |")
PY
)"
echo "$table"
{
  echo
  echo "## Issue 9 in one run: bench/all.sh, $(date -u +%F) ($(git rev-parse --short HEAD))"
  echo
  echo "Machine: $(uname -srm), $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'). Command:"
  echo
  echo '```'
  echo "bench/all.sh $index_home $repos_dir"
  echo '```'
  echo
  echo "$table"
} >> BENCHMARKS.md
echo "appended to BENCHMARKS.md; full outputs in $logs"
