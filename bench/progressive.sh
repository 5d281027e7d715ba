#!/usr/bin/env bash
# Search latency during a long first index: starts `hgd index --no-wait` on an empty index of
# REPO_DIR (a large repository, e.g. abseil-cpp/absl), waits 25 s, then times 12 searches while
# the job runs. Optional BIN: other binaries to measure (an older build's).
# Usage: bench/progressive.sh REPO_DIR
cd "$(dirname "$0")/.."
dir="${1:?usage: bench/progressive.sh REPO_DIR}"
source bench/daemon-home.sh progressive
cd "$dir" || exit 2
hgd index --no-wait >/dev/null 2>&1
sleep 25
python3 - <<'PY'
import statistics, subprocess, time
qs = ["string view for references", "hash table implementation", "mutex lock", "time zone conversion",
      "random number generator", "flags parsing", "status error codes", "memory allocation",
      "cord data structure", "logging macros", "container inline vector", "str split utilities"]
xs = []
for q in qs:
    t = time.perf_counter()
    subprocess.run(["hgd", "search", "--json", "-n", "10", q], capture_output=True)
    xs.append((time.perf_counter() - t) * 1000)
print("searches during the job: first %.0f ms, then p50 %.0f ms, max %.0f ms" % (xs[0], statistics.median(xs[1:]), max(xs[1:])))
PY
hgd status | sed -n 2,3p
