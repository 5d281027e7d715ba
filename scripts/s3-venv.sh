#!/usr/bin/env bash
# The S3 API server the remote tests and benchmarks run against: PyPI's `moto[server]`, pinned,
# in a virtual environment under ~/.cache/hgd (made once; idempotent). Prints its python.
set -euo pipefail
MOTO_VERSION=5.2.5
venv="${HGD_S3_VENV:-$HOME/.cache/hgd/moto-$MOTO_VERSION}"
mkdir -p "$(dirname "$venv")"
exec 9>"$venv.lock"
flock 9
if ! "$venv/bin/python" -c "import moto, boto3; assert moto.__version__ == '$MOTO_VERSION'" 2>/dev/null; then
  if ! python3 -m venv --help >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1; then
    sudo=""; [ "$(id -u)" = 0 ] || sudo=sudo
    $sudo apt-get install -y -qq python3-venv >&2
  fi
  rm -rf "$venv"
  python3 -m venv "$venv" >&2
  "$venv/bin/pip" install -q --disable-pip-version-check "moto[server]==$MOTO_VERSION" >&2
fi
echo "$venv/bin/python"
