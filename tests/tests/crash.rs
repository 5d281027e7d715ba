//! SIGKILL at random points of indexing jobs (a first index, an incremental commit, a branch
//! switch, and the optimisation after a job): after a restart, `hgd check` must find the store
//! consistent with HEAD and holding exactly the blocks of a fresh index of the same commit (equal
//! digests), and searches must answer as on the fresh index.
//!
//! CI runs one trial per kind of job. The long form runs more, with the seed printed for replay:
//! `HGD_KILL_TRIALS=24 cargo nextest run -p hgd-tests --test crash --no-capture`
//! (`HGD_KILL_SEED=N` replays a run).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use hgd_tests::{GitRepo, Hgd};

/// A small deterministic generator (xorshift), so a failing trial can be replayed by its seed.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0 % n.max(1)
    }
}

const QUERIES: [&str; 3] = [
    "verify the signature of a webhook payload",
    "retry a request with exponential backoff",
    "parse the date of an invoice",
];

/// 160 small files in four languages (about 330 blocks: enough for a job to take a few seconds
/// and to be followed by an optimisation), plus the files the queries look for.
fn write_base(repo: &GitRepo) {
    for i in 0..40 {
        repo.write(
            &format!("py/mod{}/item_{i}.py", i % 5),
            format!("def load_item_{i}(store):\n    return store.get({i})\n\n\ndef save_item_{i}(store, value):\n    store.put({i}, value)\n"),
        );
        repo.write(
            &format!("js/part{}/widget_{i}.js", i % 4),
            format!("export function renderWidget{i}(node) {{\n  node.textContent = 'widget {i}';\n}}\n\nexport function hideWidget{i}(node) {{\n  node.hidden = true;\n}}\n"),
        );
        repo.write(
            &format!("go/pkg{}/counter_{i}.go", i % 3),
            format!("package pkg\n\nfunc Count{i}(xs []int) int {{\n\treturn len(xs) + {i}\n}}\n\nfunc Reset{i}(xs []int) []int {{\n\treturn xs[:0]\n}}\n"),
        );
        repo.write(
            &format!("rs/unit{}/gauge_{i}.rs", i % 2),
            format!("pub fn gauge_{i}(v: u32) -> u32 {{\n    v.saturating_add({i})\n}}\n\npub fn clamp_{i}(v: u32) -> u32 {{\n    v.min({i})\n}}\n"),
        );
    }
    repo.write(
        "hooks/webhook.py",
        "import hmac, hashlib\n\ndef verify_webhook_signature(secret, payload, signature):\n    \"\"\"Check that the payload was signed with the shared secret.\"\"\"\n    expected = hmac.new(secret, payload, hashlib.sha256).hexdigest()\n    return hmac.compare_digest(expected, signature)\n",
    );
    repo.write(
        "net/retry.go",
        "package net\n\nimport \"time\"\n\n// RetryWithBackoff calls f until it succeeds, doubling the wait after each failure.\nfunc RetryWithBackoff(f func() error, attempts int) error {\n\twait := 100 * time.Millisecond\n\tvar err error\n\tfor i := 0; i < attempts; i++ {\n\t\tif err = f(); err == nil {\n\t\t\treturn nil\n\t\t}\n\t\ttime.Sleep(wait)\n\t\twait *= 2\n\t}\n\treturn err\n}\n",
    );
}

/// A commit that modifies, adds, deletes and renames files.
fn write_change(repo: &GitRepo) {
    for i in 0..12 {
        repo.write(
            &format!("py/mod{}/item_{i}.py", i % 5),
            format!(
                "def load_item_{i}(store, default=None):\n    return store.get({i}, default)\n"
            ),
        );
        repo.write(
            &format!("py/new/extra_{i}.py",),
            format!("def extra_step_{i}(x):\n    return x * {i}\n"),
        );
    }
    for i in 12..20 {
        std::fs::remove_file(repo.path().join(format!("js/part{}/widget_{i}.js", i % 4))).unwrap();
    }
    repo.git(&["mv", "net/retry.go", "net/backoff.go"]);
    repo.write(
        "billing/invoice.rb",
        "require 'date'\n\nclass Invoice\n  # Reads the invoice date from its header line, e.g. \"Date: 2024-03-01\".\n  def parse_invoice_date(header)\n    Date.parse(header.sub('Date:', '').strip)\n  end\nend\n",
    );
}

/// The commits the trials index: `main` (base), `main` after a change, and a branch `other`.
struct Commits {
    repo: GitRepo,
    base: String,
    changed: String,
    other: String,
}

fn make_commits() -> Commits {
    let repo = GitRepo::new();
    write_base(&repo);
    repo.commit_all("base");
    let base = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&["checkout", "-q", "-b", "other"]);
    for i in 0..30 {
        repo.write(
            &format!("other/branch_{i}.py"),
            format!("def branch_only_{i}(v):\n    return v - {i}\n"),
        );
    }
    std::fs::remove_dir_all(repo.path().join("rs")).unwrap();
    repo.commit_all("other branch");
    let other = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    repo.git(&["checkout", "-q", "main"]);
    write_change(&repo);
    repo.commit_all("change");
    let changed = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    Commits {
        repo,
        base,
        changed,
        other,
    }
}

/// A work tree of `commits.repo` at `commit`, in its own folder (so a daemon sees exactly that).
fn worktree_at(commits: &Commits, commit: &str) -> tempfile::TempDir {
    let dir = tempfile::Builder::new().prefix("wt").tempdir().unwrap();
    let path = dir.path().join("repo");
    let status = Command::new("git")
        .args(["clone", "-q", "--no-hardlinks"])
        .arg(commits.repo.path())
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    let status = Command::new("git")
        .args(["checkout", "-q", "-B", "main", commit])
        .current_dir(&path)
        .status()
        .unwrap();
    assert!(status.success());
    dir
}

/// What a store holds for the repository at `dir` after catching up: `hgd check --json`.
fn check(hgd: &Hgd, dir: &Path) -> serde_json::Value {
    let out = hgd.hgd(dir, &["check", "--json"]);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|_| {
        panic!(
            "hgd check printed no report: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            hgd.log()
        )
    });
    report
}

/// The top three (file, line) of each query.
fn answers(hgd: &Hgd, dir: &Path) -> Vec<Vec<(String, u64)>> {
    QUERIES
        .iter()
        .map(|q| {
            hgd.search_json(dir, q, 3)
                .iter()
                .map(|h| {
                    (
                        h["file"].as_str().unwrap_or_default().to_owned(),
                        h["line"].as_u64().unwrap_or_default(),
                    )
                })
                .collect()
        })
        .collect()
}

/// The digest and answers of a fresh index of `commit`.
fn reference(commits: &Commits, commit: &str) -> (String, Vec<Vec<(String, u64)>>) {
    let tree = worktree_at(commits, commit);
    let dir = tree.path().join("repo");
    let hgd = Hgd::new();
    let report = check(&hgd, &dir);
    assert_eq!(report["missing"], serde_json::json!([]), "{report:#}");
    (
        report["digest"].as_str().unwrap().to_owned(),
        answers(&hgd, &dir),
    )
}

#[derive(Clone, Copy, Debug)]
enum Job {
    First,
    Incremental,
    BranchSwitch,
    Optimisation,
}

fn sigkill(daemon: &mut std::process::Child) {
    daemon.kill().expect("SIGKILL the daemon");
    daemon.wait().expect("reap the daemon");
}

/// Waits until the daemon's log has `needle` `count` times (or 60 s pass).
fn wait_for_log(hgd: &Hgd, needle: &str, count: usize) {
    let deadline = Instant::now() + Duration::from_secs(60);
    while hgd.log().matches(needle).count() < count {
        assert!(
            Instant::now() < deadline,
            "no {needle:?} in the log:\n{}",
            hgd.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Where a trial's kill landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Landed {
    /// A job was running.
    InJob,
    /// The job had finished and the store's optimisation had not.
    InOptimisation,
    /// Nothing was running any more.
    AfterAll,
}

/// One trial: runs `job` in a fresh home, SIGKILLs the daemon `delay_ms` into it and restarts it.
/// Returns the repository's folder, the home, the daemon, the commit it should catch up to and
/// where the kill landed.
fn trial(
    commits: &Commits,
    job: Job,
    delay_ms: u64,
) -> (tempfile::TempDir, Hgd, std::process::Child, String, Landed) {
    let start_at = match job {
        Job::First | Job::Optimisation | Job::Incremental => commits.base.clone(),
        Job::BranchSwitch => commits.changed.clone(),
    };
    let tree = worktree_at(commits, &start_at);
    let dir = tree.path().join("repo");
    let hgd = Hgd::new().with_env("HGD_LOG", "hgd_daemon=info");
    let mut daemon = hgd.start_daemon();
    let target = match job {
        Job::First => {
            assert!(hgd.hgd(&dir, &["index", "--no-wait"]).status.success());
            hgd.wait_for_running_job(&dir, 1);
            commits.base.clone()
        }
        Job::Optimisation => {
            assert!(hgd.hgd(&dir, &["index", "--no-wait"]).status.success());
            wait_for_log(&hgd, "indexed ", 1);
            commits.base.clone()
        }
        Job::Incremental | Job::BranchSwitch => {
            hgd.index(&dir);
            let commit = match job {
                Job::Incremental => commits.changed.clone(),
                _ => commits.other.clone(),
            };
            let status = Command::new("git")
                .args(["checkout", "-q", "-B", "main", &commit])
                .current_dir(&dir)
                .status()
                .unwrap();
            assert!(status.success());
            assert!(hgd.hgd(&dir, &["notify"]).status.success());
            commit
        }
    };
    std::thread::sleep(Duration::from_millis(delay_ms));
    let state = hgd.status(&dir)["repos"][0]["state"].clone();
    let log = hgd.log();
    sigkill(&mut daemon);
    let landed = if state == "indexing" || state == "queued" {
        Landed::InJob
    } else if matches!(job, Job::Optimisation) && !log.contains("optimised the store") {
        Landed::InOptimisation
    } else {
        Landed::AfterAll
    };
    let restarted = hgd.start_daemon();
    (tree, hgd, restarted, target, landed)
}

#[test]
fn a_daemon_killed_during_any_job_catches_up_to_a_fresh_index() {
    let trials: u64 = std::env::var("HGD_KILL_TRIALS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4);
    let seed: u64 = std::env::var("HGD_KILL_SEED")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .unwrap()
                .as_nanos() as u64
                | 1
        });
    println!("HGD_KILL_SEED={seed}");
    let mut dice = Dice(seed);
    let commits = make_commits();
    let mut references = std::collections::HashMap::new();
    for commit in [&commits.base, &commits.changed, &commits.other] {
        references.insert(commit.clone(), reference(&commits, commit));
    }
    let jobs = [
        Job::First,
        Job::Incremental,
        Job::BranchSwitch,
        Job::Optimisation,
    ];
    let mut landings = Vec::new();
    for n in 0..trials {
        let job = jobs[(n % 4) as usize];
        let delay_ms = match job {
            // After the first block is stored; the job takes a few seconds more here.
            Job::First => dice.below(1500),
            // This small store's optimisation follows the job at once and is short.
            Job::Optimisation => dice.below(120),
            Job::Incremental => dice.below(300),
            Job::BranchSwitch => dice.below(800),
        };
        let (tree, hgd, mut daemon, target, landed) = trial(&commits, job, delay_ms);
        let dir = tree.path().join("repo");
        let report = check(&hgd, &dir);
        let what =
            format!("trial {n} ({job:?}, killed after {delay_ms} ms: {landed:?}; seed {seed})");
        println!("{what}: {} blocks", report["blocks"]);
        assert_eq!(
            report["commit"].as_str(),
            Some(target.as_str()),
            "{what}: {report:#}"
        );
        assert_eq!(
            report["indexed_commit"].as_str(),
            Some(target.as_str()),
            "{what}: the catch-up job did not complete: {report:#}"
        );
        for list in ["missing", "stale", "orphans", "duplicates"] {
            assert_eq!(
                report[list],
                serde_json::json!([]),
                "{what}: {list}: {report:#}"
            );
        }
        assert_eq!(report["bad_vectors"], 0, "{what}: {report:#}");
        let (digest, want) = &references[&target];
        assert_eq!(
            report["digest"].as_str(),
            Some(digest.as_str()),
            "{what}: not the blocks of a fresh index"
        );
        assert_eq!(
            &answers(&hgd, &dir),
            want,
            "{what}: answers differ from a fresh index"
        );
        let _ = hgd.hgd(&dir, &["stop"]);
        let _ = daemon.wait();
        landings.push(landed);
    }
    let in_job = landings.iter().filter(|l| **l == Landed::InJob).count();
    println!(
        "{trials} trials: {in_job} killed a running job, {} an optimisation, {} after both",
        landings
            .iter()
            .filter(|l| **l == Landed::InOptimisation)
            .count(),
        landings.iter().filter(|l| **l == Landed::AfterAll).count()
    );
    // The first index takes seconds after its first block: its trials kill it mid-way.
    assert!(in_job > 0, "no trial killed a running job: {landings:?}");
}
