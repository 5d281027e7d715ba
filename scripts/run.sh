#!/usr/bin/env bash
# The main job on a fresh machine: build hgd, install its runtime and model (idempotent), then search
# the git repository you are in. Usage: scripts/run.sh ["QUERY"] [PATH]
here="$(cd "$(dirname "$0")/.." && pwd)"
(cd "$here" && source scripts/env.sh && hgd_build --quiet >&2) || exit
source "$here/scripts/env.sh"
"$HGD_BIN/hgd" setup >&2
query="${1:-where is the command line parsed}"
shift || true
exec "$HGD_BIN/hgd" search "$query" "$@"
