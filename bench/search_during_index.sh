#!/usr/bin/env bash
# Searches of one repository while another's long first index runs (issue 9, item 4: search p95
# during indexing <= 50 ms). Indexes QUIET_DIR into an empty home, times the benchmark queries of
# REPO there with the daemon idle, restarts it (so every query is new again: its vector is not
# cached), starts a first index of BUSY_DIR and times the same queries while that job embeds;
# `rg` on the first word of each query alongside, in both phases. Optional BIN: other binaries.
# Usage: bench/search_during_index.sh BUSY_DIR QUIET_DIR REPO
#   e.g. bench/search_during_index.sh /tmp/semble-bench/repos/abseil-cpp/absl \
#          /tmp/semble-bench/repos/click/src/click click
cd "$(dirname "$0")/.."
busy="${1:?usage: bench/search_during_index.sh BUSY_DIR QUIET_DIR REPO}"
quiet="${2:?usage: bench/search_during_index.sh BUSY_DIR QUIET_DIR REPO}"
repo="${3:?usage: bench/search_during_index.sh BUSY_DIR QUIET_DIR REPO}"
annotations="$PWD/../shared/bench/semble-dev/annotations/$repo.json"
source bench/daemon-home.sh during
(cd "$quiet" && hgd index >/dev/null 2>&1) || { echo "indexing $quiet failed" >&2; exit 2; }
python3 - "$annotations" "$quiet" "$busy" <<'PY'
import json, os, statistics, subprocess, sys, time
annotations, quiet, busy = sys.argv[1:4]
qs = [q["query"] for q in json.load(open(annotations))]
def run(cmd, cwd):
    t = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return (time.perf_counter() - t) * 1000
def show(label, xs):
    xs = sorted(xs)
    p95 = xs[max(0, -(-len(xs) * 95 // 100) - 1)]
    print(f"{label:44s} p50 {statistics.median(xs):6.1f} ms  p95 {p95:6.1f} ms  max {xs[-1]:6.1f} ms  (n={len(xs)})")
def daemon_cpu():
    pid = json.loads(subprocess.run(["hgd", "status", "--json"], cwd=quiet, capture_output=True, text=True).stdout)["pid"]
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
def phase(name):
    run(["hgd", "search", "-n", "1", "warm up the connection"], quiet)
    cpu, wall = daemon_cpu(), time.perf_counter()
    show(f"{name}: hgd search --json -n 10 (new queries)", [run(["hgd", "search", "--json", "-n", "10", q], quiet) for q in qs])
    show(f"{name}: rg -i -n FIRST_WORD .", [run(["rg", "-i", "-n", q.split()[0], "."], quiet) for q in qs])
    print(f"{name}: the daemon used {(daemon_cpu() - cpu) / (time.perf_counter() - wall):.2f} cores meanwhile")
phase("idle")
subprocess.run(["hgd", "stop"], capture_output=True)
subprocess.run(["hgd", "index", "--no-wait"], cwd=busy, capture_output=True)
time.sleep(15)  # past planning and the session's start: the job is embedding
phase("indexing")
status = json.loads(subprocess.run(["hgd", "status", "--json"], cwd=busy, capture_output=True, text=True).stdout)
for r in status.get("repos", []):
    if r.get("root", "").rstrip("/") and busy.startswith(r["root"]):
        print(f"busy repository: {r.get('state')}, {r.get('progress', {}).get('done')} blocks embedded so far")
PY
