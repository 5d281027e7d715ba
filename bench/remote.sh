#!/usr/bin/env bash
# A team index (issue 11): the first index of DIR embedded locally against the first index of
# the same commit from a remote a publisher filled, on a real S3 API server on loopback (moto,
# scripts/s3-venv.sh), in one run. Prints both times, their ratio, the blocks each embedded, the
# publish time and whether the top 10 of every dev-benchmark query of that repository are the
# same in both homes.
# Usage: bench/remote.sh DIR [ANNOTATIONS]   e.g. /tmp/semble-bench/repos/redis
cd "$(dirname "$0")/.."
here="$PWD"
dir="${1:?usage: bench/remote.sh DIR [ANNOTATIONS]}"
name="$(basename "$dir")"
annotations="${2:-$here/../shared/bench/semble-dev/annotations/$name.json}"
source bench/binaries.sh
python="$(scripts/s3-venv.sh)" || exit 2
work="$(mktemp -d /tmp/hgd-remote-bench.XXXXXX)"
coproc S3 { "$python" tests/s3/server.py 0 2>/dev/null; }
read -r info <&"${S3[0]}"
field() { python3 -c "import json,sys; print(json.loads(sys.argv[1])[sys.argv[2]])" "$info" "$1"; }
export AWS_ACCESS_KEY_ID="$(field access_key)" AWS_SECRET_ACCESS_KEY="$(field secret_key)"
export AWS_EC2_METADATA_DISABLED=true AWS_CONFIG_FILE=/dev/null AWS_SHARED_CREDENTIALS_FILE=/dev/null
endpoint="$(field endpoint)"; bucket="$(field bucket)"
cleanup() {
  for h in local remote; do HGD_HOME="$work/$h" HGD_CONFIG="$work/$h.toml" hgd stop >/dev/null 2>&1; done
  kill "$S3_PID" 2>/dev/null
  rm -rf "$work"
}
trap cleanup EXIT
in_home() { local h="$1"; shift; HGD_HOME="$work/$h" HGD_CONFIG="$work/$h.toml" "$@"; }
secs() { local t0 t1; t0=$(date +%s.%N); "$@" >/dev/null || return 1; t1=$(date +%s.%N); echo "$t1 - $t0" | bc; }

for h in local remote; do
  in_home "$h" hgd remote add team "s3://$bucket/hgd" --endpoint "$endpoint" --allow-http --region us-east-1 >/dev/null
done
# The daemons start outside the timed part.
for h in local remote; do (cd "$dir" && in_home "$h" hgd status >/dev/null; in_home "$h" hgd list >/dev/null); done

local_secs=$(cd "$dir" && in_home local secs hgd index) || { echo "local index failed" >&2; exit 2; }
publish_secs=$(cd "$dir" && in_home local secs hgd publish) || { echo "publish failed" >&2; exit 2; }
remote_secs=$(cd "$dir" && in_home remote secs hgd index) || { echo "index from the remote failed" >&2; exit 2; }
(cd "$dir" && in_home local hgd status --json) > "$work/local.json"
(cd "$dir" && in_home remote hgd status --json) > "$work/remote.json"

python3 - "$annotations" "$work" "$dir" "$local_secs" "$publish_secs" "$remote_secs" <<'PY'
import json, os, subprocess, sys
annotations, work, repo, local_s, publish_s, remote_s = sys.argv[1:7]
queries = [a["query"] for a in json.load(open(annotations))]
def top(home, q):
    env = dict(os.environ, HGD_HOME=f"{work}/{home}", HGD_CONFIG=f"{work}/{home}.toml")
    out = subprocess.run(["hgd", "search", "--json", "-n", "10", q], cwd=repo, env=env,
                         capture_output=True, text=True).stdout
    return [(r["file"], r["line"], r["end_line"]) for r in json.loads(out or "[]")]
same = sum(top("local", q) == top("remote", q) for q in queries)
local, remote = (json.load(open(f"{work}/{h}.json")) for h in ("local", "remote"))
files = int(subprocess.run("git ls-files | wc -l", shell=True, cwd=repo, capture_output=True, text=True).stdout)
blocks = local["repos"][0]["blocks"]
r = remote["remotes"][0]
print(f"{os.path.basename(repo)}: {files} files, {blocks} blocks")
print("| first index | time | blocks embedded | blocks copied from the remote |")
print("| --- | --- | --- | --- |")
print(f"| embedded locally | {float(local_s):.1f} s | {local['blocks_embedded']} | 0 |")
print(f"| from the remote (loopback) | {float(remote_s):.1f} s | {remote['blocks_embedded']} | {r['blocks_copied']} |")
print(f"speed-up: {float(local_s) / float(remote_s):.1f}x; publishing took {float(publish_s):.1f} s")
print(f"identical top 10: {same} of {len(queries)} queries")
PY
