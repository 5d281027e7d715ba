#!/usr/bin/env bash
# Embedding throughput, hgd (Rust ort) against Python onnxruntime on the same texts, model, threads
# and batch order, run alternately so both see the same machine load. Also checks that both give the
# same vectors. Usage: bench/embed.sh [THREADS] [ROUNDS]
here="$(cd "$(dirname "$0")/.." && pwd)"
cd "$here"
source scripts/env.sh
threads="${1:-2}"
rounds="${2:-5}"
hgd_build --quiet
"$HGD_BIN/hgd" setup >/dev/null
model_dir="$("$HGD_BIN/hgd-daemon" model-dir)"

venv="$HOME/.cache/hgd/bench-venv"
if [ ! -x "$venv/bin/python" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet onnxruntime==1.31.1 tokenizers numpy
fi

# The fixed text set: every block of the files in bench/embed-files.txt as they were at a pinned
# commit of this repository, so the figure does not drift as the code changes.
pinned=9fefccd719063fd897f6989796287a11a1c90de3
texts="$(mktemp --suffix=.json)"
src="$(mktemp -d)"
trap 'rm -rf "$texts" "$texts.rust" "$texts.py" "$src"' EXIT
while read -r f; do
  mkdir -p "$src/$(dirname "$f")"
  git show "$pinned:$f" > "$src/$f"
done < bench/embed-files.txt
# shellcheck disable=SC2046
(cd "$src" && "$HGD_BIN/hgd-daemon" chunk --texts $(cat "$OLDPWD/bench/embed-files.txt")) > "$texts"
echo "texts: $(python3 -c "import json,sys; print(len(json.load(open(sys.argv[1]))))" "$texts") blocks of $(wc -l < bench/embed-files.txt) files; threads $threads; batch 32"

rust=(); py=()
for _ in $(seq "$rounds"); do
  r=$("$HGD_BIN/hgd-daemon" embed --bench --threads "$threads" < "$texts" 2>&1 | grep 'texts/s')
  p=$("$venv/bin/python" bench/embed_python.py "$texts" --model-dir "$model_dir" --threads "$threads")
  echo "$r"; echo "$p"
  rust+=("$(echo "$r" | grep -oE '= [0-9.]+' | tr -d '= ')")
  py+=("$(echo "$p" | grep -oE '= [0-9.]+' | tr -d '= ')")
done
python3 - "${rust[*]}" "${py[*]}" <<'PY'
import statistics, sys
rust, py = ([float(x) for x in a.split()] for a in sys.argv[1:3])
r, p = statistics.median(rust), statistics.median(py)
print(f"median texts/s: hgd {r:.1f}, Python {p:.1f}; hgd/Python = {r / p:.2f}x ({len(rust)} alternating rounds)")
PY

# Same vectors? (Rust ort and Python ort, independent pooling code.)
"$HGD_BIN/hgd-daemon" embed --threads "$threads" < "$texts" > "$texts.rust"
"$venv/bin/python" bench/embed_python.py "$texts" --model-dir "$model_dir" --threads "$threads" --vectors "$texts.py" > /dev/null
python3 - "$texts.rust" "$texts.py" <<'PY'
import json, sys
a, b = (json.load(open(p)) for p in sys.argv[1:3])
diff = max(abs(x - y) for u, v in zip(a, b) for x, y in zip(u, v))
print(f"max |rust - python| over all vector components: {diff:.2e}")
PY
