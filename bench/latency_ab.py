#!/usr/bin/env python3
"""Side-by-side whole-process search latency of two builds of hgd on the same index.

Each build runs on its own copy of HOME (an index made beforehand, e.g. by the older build, so
both see the same blocks); rounds alternate between them over one benchmark repository's queries
(`hgd search --json -n 10 QUERY`, process start included), so machine noise hits both alike.

Usage: bench/latency_ab.py OLD_BIN_DIR NEW_BIN_DIR HOME REPO_DIR DATA_NAME [ROUNDS]
  e.g. bench/latency_ab.py /tmp/old-bin ~/.cache/hgd/target/debug /tmp/lat-home \\
           /tmp/semble-bench/repos/click/src/click click 2
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def main() -> None:
    old_bin, new_bin, home, cwd, name = sys.argv[1:6]
    rounds = int(sys.argv[6]) if len(sys.argv) > 6 else 2
    data = Path(__file__).resolve().parent.parent.parent / "shared" / "bench" / "semble-dev"
    queries = [a["query"] for a in json.loads((data / "annotations" / f"{name}.json").read_text())]
    scratch = Path(tempfile.mkdtemp(prefix="hgd-latency-"))
    sides = {}
    for label, bindir in (("old", old_bin), ("new", new_bin)):
        copy = scratch / label
        shutil.copytree(home, copy)
        sides[label] = (Path(bindir) / "hgd", copy)
    times = {label: [] for label in sides}
    first = {}
    try:
        for _ in range(rounds):
            for label, (hgd, copy) in sides.items():
                env = dict(os.environ, HGD_HOME=str(copy))
                subprocess.run([hgd, "index", "."], cwd=cwd, env=env, capture_output=True)
                t0 = time.perf_counter()
                subprocess.run([hgd, "search", "--json", "-n", "10", "warm up"], cwd=cwd, env=env,
                               capture_output=True)
                first.setdefault(label, (time.perf_counter() - t0) * 1000)
                for q in queries:
                    t0 = time.perf_counter()
                    subprocess.run([hgd, "search", "--json", "-n", "10", q], cwd=cwd, env=env,
                                   capture_output=True)
                    times[label].append((time.perf_counter() - t0) * 1000)
                subprocess.run([hgd, "stop"], env=env, capture_output=True)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    for label, ts in times.items():
        ts.sort()
        p95 = ts[max(0, int(len(ts) * 0.95) - 1)]
        print(f"{label}: {len(ts)} searches, p50 {statistics.median(ts):.1f} ms, p95 {p95:.1f} ms, "
              f"first search after start {first[label]:.0f} ms")


if __name__ == "__main__":
    main()
