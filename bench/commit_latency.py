"""Time from `git commit` returning to `hgd search` returning the changed function, in a large and a
small repository, and the time hgd's hooks add to `git commit`.

    python3 bench/commit_latency.py --bin DIR [--large 2000] [--small 200] [--rounds 10]

DIR holds the built `hgd` and `hgd-daemon`. Each repository gets synthetic Python files (one
function each), hgd's hooks, and a first full index (not timed). Then, per round: rewrite one function
with a distinctive new body, commit (timed), and run `hgd search` for it until the new body is the top
result (timed from the commit's return). Hook overhead: commits alternate with and without hooks
(`core.hooksPath` pointed at an empty folder), medians compared.
"""
import argparse
import json
import os
import statistics
import subprocess
import tempfile
import time

TOPICS = ["parse", "render", "encode", "decode", "hash", "sort", "merge", "split", "fetch", "store",
          "cache", "retry", "queue", "route", "index", "scan", "watch", "sign", "pack", "load"]
WORDS = ["amber", "birch", "cobalt", "dune", "ember", "fjord", "glacier", "harbor", "iris", "juniper",
         "kelp", "lagoon", "meadow", "nebula", "orchid", "prairie", "quartz", "reef", "sierra", "tundra"]


def git(repo, *args, env=None):
    subprocess.run(["git", *args], cwd=repo, check=True, capture_output=True, env=env)


def make_repo(root, n):
    os.makedirs(root)
    git(root, "init", "-q", "-b", "main")
    git(root, "config", "user.email", "bench@example.com")
    git(root, "config", "user.name", "bench")
    for i in range(n):
        topic = TOPICS[i % len(TOPICS)]
        d = os.path.join(root, f"pkg{i % 40}")
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, f"{topic}_{i}.py"), "w") as f:
            f.write(
                f"def {topic}_step_{i}(value, factor={i}):\n"
                f"    \"\"\"{topic.capitalize()} stage {i}: combine the value with its factor.\"\"\"\n"
                f"    total = value * factor + {i * 3}\n"
                f"    return total\n"
            )
    git(root, "add", "-A")
    git(root, "commit", "-q", "-m", "initial")


def run(cmd, env, cwd):
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True)


def measure(repo, n, rounds, env, hgd):
    out = run([hgd, "hooks", "install"], env, repo)
    assert out.returncode == 0, out.stderr
    t = time.perf_counter()
    out = run([hgd, "index"], env, repo)
    assert out.returncode == 0, out.stderr
    first = time.perf_counter() - t
    latencies, with_hooks, without_hooks = [], [], []
    empty_hooks = tempfile.mkdtemp(prefix="nohooks")
    for r in range(rounds):
        i = (r * 37) % n
        topic = TOPICS[i % len(TOPICS)]
        word = WORDS[r % len(WORDS)]
        path = os.path.join(repo, f"pkg{i % 40}", f"{topic}_{i}.py")
        with open(path, "w") as f:
            f.write(
                f"def {topic}_step_{i}(value, factor={i}):\n"
                f"    \"\"\"Blend the {word} gradient {r} into the value.\"\"\"\n"
                f"    return value * {r + 2} - {i}\n"
            )
        git(repo, "add", "-A")
        git(repo, "commit", "-q", "-m", f"round {r}", env=env)
        t1 = time.perf_counter()
        while True:
            out = run([hgd, "search", "--json", "-n", "1", f"blend the {word} gradient {r}"], env, repo)
            hits = json.loads(out.stdout or "[]")
            if hits and f"gradient {r}" in hits[0]["content"]:
                break
        latencies.append(time.perf_counter() - t1)
        # Empty commits with and without hgd's hooks, alternating, for the hooks' cost.
        no_hooks = {**env, "GIT_CONFIG_COUNT": "1", "GIT_CONFIG_KEY_0": "core.hooksPath",
                    "GIT_CONFIG_VALUE_0": empty_hooks}
        for hooks_env, samples in ((no_hooks, without_hooks), (env, with_hooks)):
            t = time.perf_counter()
            git(repo, "commit", "-q", "--allow-empty", "-m", "empty", env=hooks_env)
            samples.append(time.perf_counter() - t)
    return first, latencies, with_hooks, without_hooks


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True)
    ap.add_argument("--large", type=int, default=2000)
    ap.add_argument("--small", type=int, default=200)
    ap.add_argument("--rounds", type=int, default=10)
    args = ap.parse_args()
    hgd = os.path.join(args.bin, "hgd")
    work = tempfile.mkdtemp(prefix="hgd-latency")
    env = {**os.environ, "HGD_HOME": os.path.join(work, "home")}
    results = {}
    try:
        for label, n in (("small", args.small), ("large", args.large)):
            repo = os.path.join(work, label)
            make_repo(repo, n)
            results[label] = measure(repo, n, args.rounds, env, hgd)
            first, lat, wh, woh = results[label]
            print(f"{label} ({n} files): first index {first:.1f}s; commit -> searchable p50 "
                  f"{statistics.median(lat) * 1000:.0f} ms, max {max(lat) * 1000:.0f} ms "
                  f"({len(lat)} rounds); git commit p50 {statistics.median(wh) * 1000:.1f} ms with hooks, "
                  f"{statistics.median(woh) * 1000:.1f} ms without")
        ratio = statistics.median(results["large"][1]) / statistics.median(results["small"][1])
        print(f"large/small commit -> searchable p50 ratio: {ratio:.2f}")
    finally:
        subprocess.run([hgd, "stop"], env=env, capture_output=True)


if __name__ == "__main__":
    main()
