#!/usr/bin/env bash
# A large store (issue 9, item 2): searches of one repository of ~180k blocks in a store of
# ~370k, made without embedding by bench/make_monorepo.sh. Copies HOME (left by that script),
# then times: the first search (the in-memory index built from the store), 100 new queries,
# the first search after a one-file commit, and 100 more; prints the daemon's memory. Vector
# search is exact (every window scored), so recall@10 against exact search is 1. Optional BIN:
# other binaries.
# Usage: bench/large_store.sh HOME MONOREPO   e.g. /tmp/hgd-200k /tmp/mono
cd "$(dirname "$0")/.."
home_src="${1:?usage: bench/large_store.sh HOME MONOREPO}"
mono="${2:?usage: bench/large_store.sh HOME MONOREPO}"
annotations="$PWD/../shared/bench/semble-dev/annotations"
source bench/daemon-home.sh large "$home_src"
base=$(git -C "$mono" rev-parse HEAD)
trap 'git -C "$mono" reset -q --hard "$base"; hgd stop >/dev/null 2>&1; rm -rf "$HGD_HOME"' EXIT
python3 - "$annotations" "$mono" <<'PY'
import glob, json, os, statistics, subprocess, sys, time
annotations, mono = sys.argv[1:3]
qs = []
for f in sorted(glob.glob(os.path.join(annotations, "*.json"))):
    qs += [q["query"] for q in json.load(open(f))]
first, second = qs[:100], qs[100:200]
def search(q):
    t = time.perf_counter()
    out = subprocess.run(["hgd", "search", "--json", "-n", "10", q], cwd=mono, capture_output=True, text=True)
    ms = (time.perf_counter() - t) * 1000
    assert out.returncode in (0, 1), out.stderr
    return ms
def show(label, xs):
    xs = sorted(xs)
    print(f"{label:52s} p50 {statistics.median(xs):7.1f} ms  p95 {xs[max(0, -(-len(xs) * 95 // 100) - 1)]:7.1f} ms  (n={len(xs)})")
def status():
    return json.loads(subprocess.run(["hgd", "status", "--json"], cwd=mono, capture_output=True, text=True).stdout)
subprocess.run(["hgd", "index"], cwd=mono, capture_output=True)  # starts the daemon; nothing to do
st = status()
blocks = sum(r["blocks"] for r in st["repos"])
mine = next(r["blocks"] for r in st["repos"] if r["root"] == os.path.realpath(mono))
print(f"store: {blocks} blocks in {len(st['repos'])} repositories; searched repository: {mine} blocks")
print(f"first search (index built from the store): {search('warm up'):.0f} ms")
show("new queries", [search(q) for q in first])
# One commit: a new function in an existing file.
target = next(p for p in subprocess.run(["git", "ls-files", "*.py"], cwd=mono, capture_output=True, text=True).stdout.split())
with open(os.path.join(mono, target), "a") as f:
    f.write("\n\ndef large_store_probe_function(x):\n    return x\n")
subprocess.run(["git", "commit", "-qam", "probe"], cwd=mono, check=True)
t = time.perf_counter()
subprocess.run(["hgd", "index"], cwd=mono, capture_output=True)
print(f"commit indexed in {(time.perf_counter() - t) * 1000:.0f} ms")
print(f"first search after the commit: {search('large_store_probe_function'):.0f} ms")
hits = json.loads(subprocess.run(["hgd", "search", "--json", "-n", "1", "large_store_probe_function"], cwd=mono, capture_output=True, text=True).stdout or "[]")
print(f"  it finds the new function: {bool(hits) and hits[0]['file'] == target}")
show("new queries after the commit", [search(q) for q in second])
st = status()
print(f"daemon resident memory: {st['resident_bytes'] / 2**20:.0f} MiB, search indexes {st['search_index_bytes'] / 2**20:.0f} MiB")
PY
grep -a "made the" "$HGD_HOME/logs/daemon.log" | sed "s/.*INFO [^ ]* //"
