#!/usr/bin/env python3
"""Work trees of every dev-split repository that has a snapshot, for bench/quality.sh.

Runs ../shared/bench/setup_repos.py for each repository of the dev split whose bare snapshot is in
MIRRORS (OWNER+NAME/repo, as the search tool's `fetch` lays them out). Snapshots lack files of 4 MiB
and more; when such a file breaks a full checkout, the work tree is made with a sparse checkout of
the benchmark root only (hgd indexes only the searched folder anyway). When the pinned commit is
missing and HEAD lacks the benchmark root, the newest branch that has it is used. Prints one line
per repository and the list of names to pass to bench/quality.sh.

Usage: bench/dev_repos.py MIRRORS REPOS_DIR
"""
import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parent.parent.parent / "shared" / "bench"


def git(*args, check=True):
    p = subprocess.run(["git", *args], capture_output=True, text=True)
    if check and p.returncode != 0:
        raise RuntimeError(f"git {' '.join(args)}: {p.stderr.strip()}")
    return p.stdout.strip()


def mirror_of(mirrors: Path, url: str) -> Path:
    owner, name = url.rstrip("/").removesuffix(".git").split("github.com/")[-1].split("/")[:2]
    return mirrors / f"{owner}+{name}" / "repo"


def pick_revision(gd: Path, repo: dict) -> str:
    rev = repo["revision"]
    if subprocess.run(["git", "--git-dir", str(gd), "cat-file", "-e", rev + "^{commit}"]).returncode == 0:
        return rev
    root = repo.get("benchmark_root")
    refs = git("--git-dir", str(gd), "for-each-ref", "--sort=-committerdate", "--format=%(refname)",
               "refs/heads").splitlines()
    for ref in ["HEAD", *refs]:
        if not root or git("--git-dir", str(gd), "ls-tree", ref, root, check=False):
            return git("--git-dir", str(gd), "rev-parse", ref)
    return git("--git-dir", str(gd), "rev-parse", "HEAD")


def sparse_checkout(gd: Path, dest: Path, repo: dict) -> str:
    subprocess.run(["rm", "-rf", str(dest)], check=True)
    rev = pick_revision(gd, repo)
    git("clone", "-q", "--no-checkout", "--local", str(gd), str(dest))
    git("-C", str(dest), "sparse-checkout", "set", repo.get("benchmark_root") or ".")
    # Objects missing outside the sparse cone are reported but do not stop the checkout.
    subprocess.run(["git", "-C", str(dest), "-c", "advice.detachedHead=false", "checkout", "-q",
                    "--detach", rev], capture_output=True)
    return rev


def main() -> None:
    mirrors, repos_dir = Path(sys.argv[1]), Path(sys.argv[2])
    data = BENCH / "semble-dev"
    split = json.loads((data / "split.json").read_text())["dev"]
    repos = {r["name"]: r for r in json.loads((data / "repos.json").read_text())}
    ready = []
    for name in split:
        repo = repos[name]
        gd = mirror_of(mirrors, repo["url"])
        if not gd.exists():
            print(f"{name}: no snapshot")
            continue
        dest = repos_dir / name
        p = subprocess.run([sys.executable, str(BENCH / "setup_repos.py"), "--data", str(data),
                            "--repos", str(repos_dir), "--mirrors", str(mirrors), "--split",
                            str(data / "split.json"), "--which", "dev", "--only", name],
                           capture_output=True, text=True)
        root = dest / (repo.get("benchmark_root") or "")
        how = "setup_repos.py"
        if p.returncode != 0 or not root.is_dir():
            rev = sparse_checkout(gd, dest, repo)
            how = f"sparse checkout at {rev[:12]}" + ("" if rev == repo["revision"] else " (pin missing)")
        if root.is_dir():
            ready.append(name)
            print(f"{name}: {how}")
        else:
            print(f"{name}: benchmark root missing, skipped")
    print(" ".join(ready))


if __name__ == "__main__":
    main()
