#!/usr/bin/env bash
# Indexing throughput (issue 9, item 4): a first index of DIR into an empty home against
# embedding exactly the same blocks alone (`hgd-daemon index-texts` then `embed --bench`, same
# threads and batching limits). Prints blocks/s and files/s of each, their ratio, and where the
# job's time went by stage (from the daemon's log line). Optional BIN: other binaries.
# Usage: bench/index_throughput.sh DIR   e.g. /tmp/semble-bench/repos/kotlinx-coroutines
cd "$(dirname "$0")/.."
dir="${1:?usage: bench/index_throughput.sh DIR}"
source bench/daemon-home.sh throughput
texts="$HGD_HOME/texts.json"
hgd-daemon index-texts "$dir" > "$texts" 2>/dev/null || exit 2
files=$(cd "$dir" && git ls-files -- . | wc -l)

# Start the daemon outside the timed part (`hgd status` only asks a running one).
# Its log goes where the client would put it: the job's line is read from there.
mkdir -p "$HGD_HOME/logs"
hgd-daemon daemon >>"$HGD_HOME/logs/daemon.log" 2>&1 &
for _ in $(seq 100); do [ -S "$HGD_HOME/hgd.sock" ] && break; sleep 0.1; done
[ -S "$HGD_HOME/hgd.sock" ] || { echo "the daemon did not start" >&2; exit 2; }
start=$(date +%s.%N)
(cd "$dir" && hgd index >/dev/null 2>&1) || { echo "hgd index failed" >&2; exit 2; }
end=$(date +%s.%N)
line=$(grep -a 'indexed .* files embedded' "$HGD_HOME/logs/daemon.log" | tail -1)
embed_only=$(hgd-daemon embed --bench < "$texts" 2>&1 | grep 'texts/s')

python3 - "$texts" "$files" "$start" "$end" "$line" "$embed_only" <<'PY'
import json, re, sys
texts, files, start, end, line, embed_only = sys.argv[1:7]
n = len(json.load(open(texts)))
wall = float(end) - float(start)
blocks = int(re.search(r"\((\d+) blocks\)", line).group(1))
only = float(re.search(r"= ([0-9.]+) texts/s", embed_only).group(1))
def secs(v, u):
    return float(v) * {"ns": 1e-9, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}[u]
stages = {k: secs(v, u) for k, v, u in re.findall(r"(plan|parse|embed|write|copy) ([0-9.]+)(ns|µs|ms|s|m)\b", line)}
print(f"{files} files in the folder, {blocks} blocks embedded by the job ({n} texts from index-texts)")
print(f"pipeline (hgd index, whole command): {wall:7.1f} s  {blocks / wall:6.1f} blocks/s  {int(files) / wall:6.1f} files/s")
print(f"embedding the same texts alone:      {n / only:7.1f} s  {only:6.1f} blocks/s")
print(f"pipeline / embedding alone: {blocks / wall / only:.2f}x")
print("job stages, busy time and share of the job's wall time (parse, embed, write overlap):")
for k, v in stages.items():
    print(f"  {k:6s} {v:8.1f} s  {100 * v / wall:5.1f}%")
PY
