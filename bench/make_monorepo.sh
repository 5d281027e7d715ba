#!/usr/bin/env bash
# Makes the large store of bench/large_store.sh without embedding anything: a copy of an index
# left by bench/quality.sh (every dev repository's benchmark folder indexed) at OUT_HOME, and a
# repository OUT_REPO whose one commit holds each dev repository's benchmark folder under its
# name. Indexing OUT_REPO copies every block from the store (its blobs are all there already),
# so the store ends with about twice the dev split's blocks, half of them in one repository.
# Optional BIN: other binaries.
# Usage: bench/make_monorepo.sh INDEX_HOME OUT_HOME OUT_REPO
#   e.g. bench/make_monorepo.sh /tmp/hgd-bench-v3 /tmp/hgd-200k /tmp/mono
cd "$(dirname "$0")/.."
src="${1:?usage: bench/make_monorepo.sh INDEX_HOME OUT_HOME OUT_REPO}"
out_home="${2:?usage: bench/make_monorepo.sh INDEX_HOME OUT_HOME OUT_REPO}"
out_repo="${3:?usage: bench/make_monorepo.sh INDEX_HOME OUT_HOME OUT_REPO}"
repos_dir="${REPOS_DIR:-/tmp/semble-bench/repos}"
source bench/binaries.sh
rm -rf "$out_home" "$out_repo"
cp -a "$src" "$out_home"
rm -f "$out_home/hgd.sock" "$out_home/daemon.lock"
mkdir -p "$out_repo"
git -C "$out_repo" init -q
python3 - "$repos_dir" "$out_repo" <<'PY'
import json, os, subprocess, sys
repos_dir, out = sys.argv[1:3]
for r in json.load(open("../shared/bench/semble-dev/repos.json")):
    src = os.path.join(repos_dir, r["name"])
    if not os.path.isdir(src):
        continue
    root = r.get("benchmark_root") or ""
    archive = subprocess.run(["git", "-C", src, "archive", f"HEAD:{root}" if root else "HEAD"], capture_output=True, check=True)
    os.makedirs(os.path.join(out, r["name"]))
    subprocess.run(["tar", "-x", "-C", os.path.join(out, r["name"])], input=archive.stdout, check=True)
PY
git -C "$out_repo" add -A
git -C "$out_repo" -c user.name=bench -c user.email=bench@localhost commit -qm "the dev split's benchmark folders"
export HGD_HOME="$out_home"
(cd "$out_repo" && time hgd index)
hgd status | head -2
hgd stop
