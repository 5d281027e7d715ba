//! Incremental indexing: after the first index, work follows what changed in git, renames and
//! branch switches embed nothing new, hooks keep the index current, and a killed daemon resumes into
//! the same index a fresh one builds.

use std::process::Command;
use std::time::{Duration, Instant};

use hgd_tests::{files, GitRepo, Hgd};

fn embedded(hgd: &Hgd, repo: &GitRepo) -> u64 {
    hgd.status(&repo.path())["blocks_embedded"]
        .as_u64()
        .expect("blocks_embedded")
}

fn base_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        "checksum.py",
        "import hashlib\n\ndef file_digest(path):\n    return hashlib.sha256(open(path, 'rb').read()).hexdigest()\n",
    );
    repo.write(
        "dates.py",
        "import datetime\n\ndef weekday_name(day):\n    return day.strftime('%A')\n",
    );
    repo.commit_all("base");
    repo
}

#[test]
fn add_modify_delete_and_rename_are_reflected_and_a_rename_embeds_nothing() {
    let hgd = Hgd::new();
    let repo = base_repo();
    hgd.index(&repo.path());

    // Add.
    repo.write(
        "config.py",
        "def read_ini_settings(path):\n    import configparser\n    c = configparser.ConfigParser()\n    c.read(path)\n    return c\n",
    );
    repo.commit_all("add config");
    let found = files(&hgd.search_json(&repo.path(), "load settings from an ini file", 3));
    assert_eq!(found[0], "config.py", "{found:?}");

    // Modify a function: the new body is found, the old one is gone.
    repo.write(
        "dates.py",
        "import datetime\n\ndef days_until_new_year(day):\n    return (datetime.date(day.year + 1, 1, 1) - day).days\n",
    );
    repo.commit_all("modify dates");
    let results = hgd.search_json(&repo.path(), "how many days remain before january first", 5);
    let dates = results
        .iter()
        .find(|r| r["file"] == "dates.py")
        .expect("dates.py found");
    assert!(dates["content"]
        .as_str()
        .unwrap()
        .contains("days_until_new_year"));
    assert!(results
        .iter()
        .all(|r| !r["content"].as_str().unwrap().contains("weekday_name")));

    // Delete.
    repo.git(&["rm", "-q", "checksum.py"]);
    repo.commit_all("delete checksum");
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 10));
    assert!(!found.contains(&"checksum.py".to_owned()), "{found:?}");

    // Rename: the blocks are copied, nothing is embedded.
    let before = embedded(&hgd, &repo);
    std::fs::create_dir_all(repo.path().join("settings")).unwrap();
    repo.git(&["mv", "config.py", "settings/ini.py"]);
    repo.commit_all("rename");
    let found = files(&hgd.search_json(&repo.path(), "load settings from an ini file", 3));
    assert_eq!(found[0], "settings/ini.py", "{found:?}");
    assert!(!found.contains(&"config.py".to_owned()));
    assert_eq!(embedded(&hgd, &repo), before, "a rename embedded blocks");
}

#[test]
fn switching_branches_and_back_embeds_nothing_the_second_time() {
    let hgd = Hgd::new();
    let repo = base_repo();
    hgd.index(&repo.path());
    repo.git(&["checkout", "-q", "-b", "feature"]);
    repo.write(
        "dates.py",
        "def parse_iso_timestamp(text):\n    from datetime import datetime\n    return datetime.fromisoformat(text)\n",
    );
    repo.write(
        "extra.py",
        "def ring_buffer_push(buf, item, cap):\n    buf.append(item)\n    del buf[:-cap]\n",
    );
    repo.commit_all("feature work");

    let found = files(&hgd.search_json(&repo.path(), "fixed size circular queue append", 3));
    assert_eq!(found[0], "extra.py");
    repo.git(&["checkout", "-q", "main"]);
    let found = files(&hgd.search_json(&repo.path(), "fixed size circular queue append", 10));
    assert!(!found.contains(&"extra.py".to_owned()), "{found:?}");
    let after_first_switch = embedded(&hgd, &repo);

    repo.git(&["checkout", "-q", "feature"]);
    let found = files(&hgd.search_json(&repo.path(), "fixed size circular queue append", 3));
    assert_eq!(found[0], "extra.py");
    repo.git(&["checkout", "-q", "main"]);
    let results = hgd.search_json(&repo.path(), "name of the day of the week", 3);
    assert!(results[0]["content"]
        .as_str()
        .unwrap()
        .contains("weekday_name"));
    assert_eq!(
        embedded(&hgd, &repo),
        after_first_switch,
        "switching to a branch seen before embedded blocks"
    );
}

#[test]
fn amend_rebase_and_merge_are_reflected() {
    let hgd = Hgd::new();
    let repo = base_repo();
    hgd.index(&repo.path());

    // Amend replaces the commit's content.
    repo.write("net.py", "def open_tcp_socket(host, port):\n    import socket\n    return socket.create_connection((host, port))\n");
    repo.commit_all("net");
    repo.write(
        "net.py",
        "def resolve_hostname(name):\n    import socket\n    return socket.gethostbyname(name)\n",
    );
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "--amend", "-m", "net, amended"]);
    let results = hgd.search_json(&repo.path(), "resolve a hostname over the network", 10);
    let net = results
        .iter()
        .find(|r| r["file"] == "net.py")
        .expect("net.py found");
    assert!(net["content"].as_str().unwrap().contains("gethostbyname"));
    assert!(
        results
            .iter()
            .all(|r| !r["content"].as_str().unwrap().contains("create_connection")),
        "the commit replaced by --amend is still indexed"
    );

    // Rebase a branch onto new work on main.
    repo.git(&["checkout", "-q", "-b", "topic"]);
    repo.write(
        "topic.py",
        "def levenshtein_distance(a, b):\n    return 0 if a == b else max(len(a), len(b))\n",
    );
    repo.commit_all("topic");
    repo.git(&["checkout", "-q", "main"]);
    repo.write(
        "main_only.py",
        "def gzip_compress_bytes(data):\n    import gzip\n    return gzip.compress(data)\n",
    );
    repo.commit_all("main work");
    repo.git(&["checkout", "-q", "topic"]);
    repo.git(&["rebase", "-q", "main"]);
    let found = files(&hgd.search_json(&repo.path(), "compress bytes with gzip", 3));
    assert_eq!(found[0], "main_only.py", "{found:?}");
    let found = files(&hgd.search_json(&repo.path(), "edit distance between two strings", 3));
    assert_eq!(found[0], "topic.py", "{found:?}");

    // Merge the topic into main.
    repo.git(&["checkout", "-q", "main"]);
    let found = files(&hgd.search_json(&repo.path(), "edit distance between two strings", 10));
    assert!(!found.contains(&"topic.py".to_owned()));
    repo.git(&["merge", "-q", "--no-edit", "topic"]);
    let found = files(&hgd.search_json(&repo.path(), "edit distance between two strings", 3));
    assert_eq!(found[0], "topic.py", "{found:?}");
}

fn wait_until_indexed_at_head(hgd: &Hgd, repo: &GitRepo) {
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let status = hgd.status(&repo.path());
        let repo_status = &status["repos"][0];
        if repo_status["indexed_commit"] == head.as_str() && repo_status["state"] == "idle" {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "never indexed {head}: {status:#}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

#[test]
fn hooks_keep_the_index_current_chain_existing_hooks_and_uninstall_cleanly() {
    let hgd = Hgd::new();
    let repo = base_repo();
    let hooks_dir = repo.path().join(".git").join("hooks");
    std::fs::create_dir_all(&hooks_dir).unwrap();
    let original = "#!/bin/sh\necho ran >> \"$(git rev-parse --git-dir)/original-hook-ran\"\n";
    let hook = hooks_dir.join("post-commit");
    std::fs::write(&hook, original).unwrap();
    std::fs::set_permissions(&hook, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();

    let out = hgd.hgd(&repo.path(), &["hooks", "install"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for name in ["post-commit", "post-merge", "post-checkout", "post-rewrite"] {
        assert!(hooks_dir.join(name).is_file(), "{name} missing");
    }
    hgd.index(&repo.path());

    // A commit alone (no search, no `hgd index`) brings the index to the new HEAD.
    repo.write(
        "queue.py",
        "def bounded_work_queue(limit):\n    import queue\n    return queue.Queue(maxsize=limit)\n",
    );
    repo.git(&["add", "-A"]);
    // git runs with this test's HGD_HOME, so the hook talks to this test's daemon.
    repo.git_with(
        &["commit", "-q", "-m", "queue"],
        &[("HGD_HOME", hgd.home().as_os_str())],
    );
    assert!(
        repo.path().join(".git").join("original-hook-ran").is_file(),
        "the chained hook did not run"
    );
    wait_until_indexed_at_head(&hgd, &repo);

    let out = hgd.hgd(&repo.path(), &["hooks", "uninstall"]);
    assert!(out.status.success());
    assert_eq!(std::fs::read_to_string(&hook).unwrap(), original);
    assert!(!hooks_dir.join("post-merge").exists());
}

#[test]
fn git_commit_succeeds_with_hooks_installed_and_no_daemon() {
    let hgd = Hgd::new();
    let repo = base_repo();
    repo.git(&["config", "core.hooksPath", ".githooks"]);
    let out = hgd.hgd(&repo.path(), &["hooks", "install"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        repo.path().join(".githooks").join("post-commit").is_file(),
        "core.hooksPath ignored"
    );

    repo.write("new.py", "def f():\n    return 2\n");
    let started = Instant::now();
    repo.git(&["add", "-A"]);
    repo.git_with(
        &["commit", "-q", "-m", "no daemon"],
        &[("HGD_HOME", hgd.home().as_os_str())],
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // The hook does not start a daemon: starting one creates its log file at once (before the
    // daemon could listen), so give the background hook time, then check no log was ever made.
    std::thread::sleep(Duration::from_millis(1500));
    assert!(
        !hgd.home().join("logs").join("daemon.log").exists(),
        "a hook started a daemon"
    );
    assert!(!hgd.socket().exists());
}

#[test]
fn hooks_of_an_uninstalled_hgd_do_not_break_git() {
    let hgd = Hgd::new();
    let repo = base_repo();
    // Install from a copy of hgd, then remove the copy: the hook's hgd is gone and none is on PATH.
    let copy = hgd.dir.path().join("hgd-copy");
    std::fs::copy(hgd_tests::bin("hgd"), &copy).unwrap();
    // A fork in another test thread can briefly hold the copy's write handle (ETXTBSY).
    let mut tries = 0;
    let out = loop {
        match Command::new(&copy)
            .args(["hooks", "install"])
            .current_dir(repo.path())
            .env("HGD_HOME", hgd.home())
            .output()
        {
            Err(e) if e.kind() == std::io::ErrorKind::ExecutableFileBusy && tries < 50 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(50));
            }
            other => break other.unwrap(),
        }
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    std::fs::remove_file(&copy).unwrap();
    repo.git_with(
        &["commit", "-q", "--allow-empty", "-m", "hgd is gone"],
        &[("PATH", std::ffi::OsStr::new("/usr/bin:/bin"))],
    );
}

/// Kill -9 the daemon at several points of a large job; after a restart the index must equal a fresh
/// full index of the same commit: the same blocks, no duplicates, the same answers.
#[test]
fn sigkill_during_indexing_then_restart_gives_the_same_index_as_a_fresh_one() {
    let repo = GitRepo::new();
    let topics = [
        "parse", "render", "encode", "decode", "hash", "sort", "merge", "split", "fetch", "store",
    ];
    for (i, topic) in topics.iter().cycle().take(120).enumerate() {
        repo.write(
            &format!("pkg{}/mod_{i}.py", i % 6),
            format!(
                "def {topic}_item_{i}(value):\n    \"\"\"{topic} step number {i} of the pipeline.\"\"\"\n    result = value * {i} + {}\n    return result\n",
                i * 7
            ),
        );
    }
    repo.commit_all("many files");
    let queries = ["hash step 17", "merge the items", "render value 42"];

    let fresh = Hgd::new();
    fresh.index(&repo.path());
    let fresh_blocks = fresh.status(&repo.path())["repos"][0]["blocks"].clone();
    let expected: Vec<Vec<String>> = queries
        .iter()
        .map(|q| files(&fresh.search_json(&repo.path(), q, 10)))
        .collect();

    let crashed = Hgd::new();
    // Each kill lands while a job is running, after it embedded some blocks; blocks are written
    // every two seconds, so later kills usually find some of the job's blocks stored.
    for embedded in [5u64, 30, 60] {
        let mut daemon = crashed.start_daemon();
        let out = crashed.hgd(&repo.path(), &["index", "--no-wait"]);
        assert!(out.status.success());
        crashed.wait_for_running_job(&repo.path(), embedded);
        daemon.kill().unwrap(); // SIGKILL
        daemon.wait().unwrap();
    }
    // Restart (the client starts the daemon) and let it finish.
    crashed.index(&repo.path());
    let status = crashed.status(&repo.path());
    assert_eq!(status["repos"][0]["blocks"], fresh_blocks, "{status:#}");
    for (q, want) in queries.iter().zip(&expected) {
        assert_eq!(
            &files(&crashed.search_json(&repo.path(), q, 10)),
            want,
            "query {q}"
        );
    }
}

/// The status entry of `repo`.
fn repo_status(hgd: &Hgd, repo: &GitRepo) -> serde_json::Value {
    let status = hgd.status(&repo.path());
    status["repos"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|r| r["root"].as_str() == repo.path().to_str())
        .cloned()
        .unwrap_or_else(|| panic!("{} not in {status:#}", repo.path().display()))
}

#[test]
fn a_commit_in_one_repository_does_not_wait_for_another_repositorys_first_index() {
    // Give way as soon as the job has written blocks: this tests the turn, not its length.
    let hgd = Hgd::new().with_env("HGD_JOB_SLICE_MS", "0");
    let small = base_repo();
    hgd.index(&small.path());
    // A job long enough (800 blocks: half a minute here, seconds on a fast laptop) that the
    // commit below comes while it runs, past its first write.
    let big = GitRepo::new();
    let mut paths = Vec::new();
    for i in 0..800 {
        let path = format!("part{}/unit_{i}.py", i % 4);
        big.write(
            &path,
            format!("def measure_unit_{i}(x):\n    \"\"\"Reading number {i} of the gauge.\"\"\"\n    return x * {i}\n"),
        );
        paths.push(big.path().join(path));
    }
    big.commit_all("many units");
    let out = hgd.hgd(&big.path(), &["index", "--no-wait"]);
    assert!(out.status.success());
    hgd.wait_for_running_job(&big.path(), 5);

    small.write(
        "temperature.py",
        "def fahrenheit_to_celsius(f):\n    return (f - 32) * 5 / 9\n",
    );
    small.commit_all("temperatures");
    hgd.index(&small.path());
    // The large first index gave way instead of making the commit wait for all of it (on a
    // machine that embeds over ~1,000 blocks/s it may finish before the commit comes).
    assert!(hgd.log().contains("gave way"), "{}", hgd.log());
    let big_now = repo_status(&hgd, &big);
    assert_ne!(
        big_now["indexed_commit"],
        big_now["head"],
        "{big_now:#}\n{}",
        hgd.log()
    );
    let hits = hgd.search_json(&small.path(), "convert fahrenheit to celsius", 1);
    assert_eq!(files(&hits), ["temperature.py"]);

    // It resumes, re-using what it wrote, and ends with each block once.
    hgd.index(&big.path());
    let big_done = repo_status(&hgd, &big);
    assert_eq!(big_done["indexed_commit"], big_done["head"]);
    assert!(big_done["error"].is_null(), "{big_done:#}");
    let chunked = hgd
        .command("hgd-daemon")
        .arg("chunk")
        .args(&paths)
        .output()
        .unwrap();
    assert!(chunked.status.success());
    let blocks: Vec<serde_json::Value> = serde_json::from_slice(&chunked.stdout).unwrap();
    assert_eq!(big_done["blocks"], blocks.len() as u64, "{big_done:#}");
    assert_eq!(
        files(&hgd.search_json(&big.path(), "reading number 137 of the gauge", 1)),
        ["part1/unit_137.py"]
    );
}

/// Each thread of process `pid`: its name and nice value (from `/proc/PID/task/TID/stat`).
#[cfg(target_os = "linux")]
fn thread_priorities(pid: u64) -> Vec<(u64, String, i64)> {
    let mut threads = Vec::new();
    for task in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let task = task.unwrap();
        let Ok(stat) = std::fs::read_to_string(task.path().join("stat")) else {
            continue; // the thread ended meanwhile
        };
        // "tid (name) state ..." where the name may hold spaces and parentheses; the nice value
        // is the 19th field, the 17th after the name.
        let (head, tail) = stat.rsplit_once(')').unwrap();
        let name = head.split_once('(').unwrap().1.to_owned();
        let nice = tail.split_whitespace().nth(16).unwrap().parse().unwrap();
        let tid = task.file_name().to_string_lossy().parse().unwrap();
        threads.push((tid, name, nice));
    }
    threads
}

/// Indexing runs at background priority so that searches keep the CPU during a long job: hgd's
/// embedding thread and the indexing session's ONNX Runtime workers run at nice 10, while the
/// daemon's other threads (the socket, searches, the query session) stay at the normal priority.
#[cfg(target_os = "linux")]
#[test]
fn indexing_runs_at_background_priority_and_searches_do_not() {
    // Two intra-op threads, so the indexing session has a worker thread of its own.
    let hgd = Hgd::new().with_env("HGD_THREADS", "2");
    let big = GitRepo::new();
    // Long enough (800 blocks: half a minute here) to be running when the threads are read.
    for i in 0..800 {
        big.write(
            &format!("part{}/unit_{i}.py", i % 4),
            format!("def measure_unit_{i}(x):\n    \"\"\"Reading number {i} of the gauge.\"\"\"\n    return x * {i}\n"),
        );
    }
    big.commit_all("many units");
    let out = hgd.hgd(&big.path(), &["index", "--no-wait"]);
    assert!(out.status.success());
    hgd.wait_for_running_job(&big.path(), 5);
    let pid = hgd.status(&big.path())["pid"].as_u64().unwrap();
    let threads = thread_priorities(pid);

    let named = |name: &str| threads.iter().filter(|t| t.1 == name).collect::<Vec<_>>();
    let (embedder, workers) = (named("hgd-embed"), named("hgd-onnx-index"));
    assert!(!embedder.is_empty(), "{threads:?}");
    assert!(!workers.is_empty(), "the session's worker: {threads:?}");
    assert!(
        embedder.iter().chain(&workers).all(|t| t.2 == 10),
        "{threads:?}"
    );
    // The tokenizer's pool (queries are tokenised there) was made at start, at normal priority.
    let tokenizer: Vec<_> = threads
        .iter()
        .filter(|t| t.1.starts_with("hgd-tokenize"))
        .collect();
    assert!(
        !tokenizer.is_empty() && tokenizer.iter().all(|t| t.2 == 0),
        "{threads:?}"
    );
    let main = threads.iter().find(|t| t.0 == pid).unwrap();
    assert_eq!(main.2, 0, "{threads:?}");
    let runtime = named("tokio-rt-worker");
    assert!(
        !runtime.is_empty() && runtime.iter().all(|t| t.2 == 0),
        "the socket and search threads stay at normal priority: {threads:?}"
    );
    let query = named("hgd-query");
    assert!(
        query.len() == 1 && query[0].2 == 0,
        "one query thread, at normal priority: {threads:?}"
    );
    // A search during the job still answers (by words until the blocks are embedded).
    assert_eq!(
        files(&hgd.search_json(&big.path(), "measure_unit_3", 1)),
        ["part3/unit_3.py"]
    );
}

/// History rewritten and the old commit garbage-collected: the job cannot diff against it and
/// compares with what it stored instead.
#[test]
fn a_collected_indexed_commit_falls_back_to_comparing_stored_blobs() {
    let hgd = Hgd::new();
    let repo = base_repo();
    hgd.index(&repo.path());
    repo.write(
        "dates.py",
        "def leap_year(y):\n    return y % 4 == 0 and (y % 100 != 0 or y % 400 == 0)\n",
    );
    repo.git(&["add", "-A"]);
    repo.git(&["commit", "-q", "--amend", "-m", "rewritten base"]);
    repo.git(&["reflog", "expire", "--expire=now", "--all"]);
    repo.git(&["gc", "-q", "--prune=now"]);
    let results = hgd.search_json(&repo.path(), "is this year a leap year", 5);
    assert_eq!(results[0]["file"], "dates.py");
    assert!(results[0]["content"]
        .as_str()
        .unwrap()
        .contains("leap_year"));
    assert!(results
        .iter()
        .all(|r| !r["content"].as_str().unwrap().contains("weekday_name")));
}

#[test]
fn uncommitted_edits_and_untracked_files_are_searched_and_ignored_files_are_not() {
    let hgd = Hgd::new();
    let repo = base_repo();
    repo.write(".gitignore", "scratch/\n");
    repo.commit_all("ignore scratch");
    hgd.index(&repo.path());

    // An uncommitted edit replaces the committed content in results, marked dirty.
    repo.write(
        "dates.py",
        "def fiscal_quarter(day):\n    return (day.month - 1) // 3 + 1\n",
    );
    // An untracked file is found too; an ignored one is not.
    repo.write(
        "draft.py",
        "def exponential_backoff_delay(attempt):\n    return min(60, 2 ** attempt)\n",
    );
    repo.write(
        "scratch/notes.py",
        "def exponential_backoff_retry_ignored(attempt):\n    return attempt\n",
    );

    let results = hgd.search_json(&repo.path(), "which quarter of the financial year", 5);
    let dates = results
        .iter()
        .find(|r| r["file"] == "dates.py")
        .expect("dates.py found");
    assert_eq!(dates["dirty"], true);
    assert!(dates["content"]
        .as_str()
        .unwrap()
        .contains("fiscal_quarter"));
    assert!(results
        .iter()
        .all(|r| !r["content"].as_str().unwrap().contains("weekday_name")));

    let results = hgd.search_json(&repo.path(), "wait longer after each failed retry", 10);
    assert_eq!(results[0]["file"], "draft.py", "{results:#?}");
    assert_eq!(results[0]["dirty"], true);
    assert!(!files(&results).contains(&"scratch/notes.py".to_owned()));

    // Committed, the same content is HEAD's and no longer dirty; nothing new is embedded for it.
    let before = embedded(&hgd, &repo);
    repo.commit_all("commit the drafts");
    let results = hgd.search_json(&repo.path(), "wait longer after each failed retry", 3);
    assert_eq!(results[0]["file"], "draft.py");
    assert_eq!(results[0]["dirty"], false);
    assert_eq!(
        embedded(&hgd, &repo),
        before,
        "committing an indexed edit embedded again"
    );

    // Deleting a file in the work tree hides it before the deletion is committed.
    std::fs::remove_file(repo.path().join("draft.py")).unwrap();
    let found = files(&hgd.search_json(&repo.path(), "wait longer after each failed retry", 10));
    assert!(!found.contains(&"draft.py".to_owned()), "{found:?}");
}

/// Searches reuse what they knew about the work tree while nothing in it changed; every edit
/// between two searches is still seen: a second edit of a file that is already dirty (the dirty
/// paths stay the same, only the watcher can tell), a file in a folder made after the first
/// search, an exclusion in `.git/info/exclude`, and a work tree made again at the same path.
#[test]
fn edits_between_searches_are_seen_at_once() {
    let hgd = Hgd::new();
    let repo = base_repo();
    hgd.index(&repo.path());
    for _ in 0..2 {
        let results = hgd.search_json(&repo.path(), "name of the day of the week", 3);
        assert_eq!(results[0]["file"], "dates.py");
        assert_eq!(results[0]["dirty"], false);
    }

    repo.write(
        "dates.py",
        "def fiscal_quarter(day):\n    return (day.month - 1) // 3 + 1\n",
    );
    let results = hgd.search_json(&repo.path(), "which quarter of the financial year", 3);
    assert_eq!(results[0]["file"], "dates.py");
    assert_eq!(results[0]["dirty"], true);

    repo.write(
        "dates.py",
        "def lunar_phase(day):\n    return (day.toordinal() % 29.53) / 29.53\n",
    );
    let results = hgd.search_json(&repo.path(), "phase of the moon on a day", 3);
    let content = results[0]["content"].as_str().unwrap();
    assert!(content.contains("lunar_phase"), "{results:#?}");
    assert!(results
        .iter()
        .all(|r| !r["content"].as_str().unwrap().contains("fiscal_quarter")));

    repo.write(
        "tides/models/height.py",
        "def tide_height(hour):\n    return 1.2 * math.sin(hour / 12.42 * math.tau)\n",
    );
    let results = hgd.search_json(&repo.path(), "height of the tide at an hour", 3);
    assert_eq!(results[0]["file"], "tides/models/height.py", "{results:#?}");

    // Excluded in .git/info/exclude (inside the git directory, which the watcher ignores), the
    // untracked file is no longer searched.
    repo.write(".git/info/exclude", "tides/\n");
    let found = files(&hgd.search_json(&repo.path(), "height of the tide at an hour", 5));
    assert!(
        !found.contains(&"tides/models/height.py".to_owned()),
        "{found:?}"
    );

    // A work tree deleted and cloned again at the same path is watched anew.
    let path = repo.path();
    let copy = tempfile::tempdir().unwrap();
    let moved = copy.path().join("old");
    std::fs::rename(&path, &moved).unwrap();
    let status = Command::new("git")
        .args(["clone", "-q"])
        .arg(&moved)
        .arg(&path)
        .status()
        .unwrap();
    assert!(status.success());
    hgd.search_json(&path, "name of the day of the week", 3);
    std::fs::write(
        path.join("dates.py"),
        "def moon_rise(day):\n    return day.replace(hour=19)\n",
    )
    .unwrap();
    let results = hgd.search_json(&path, "when does the moon rise", 3);
    assert!(
        results[0]["content"]
            .as_str()
            .unwrap()
            .contains("moon_rise"),
        "{results:#?}"
    );
}

/// A rebase of many commits notifies the daemon a few times at most, and the notifications that
/// arrive while a job runs coalesce into one more job for the final HEAD.
#[test]
fn a_burst_of_notifications_coalesces() {
    let hgd = Hgd::new();
    let repo = base_repo();
    let out = hgd.hgd(&repo.path(), &["hooks", "install"]);
    assert!(out.status.success());
    hgd.index(&repo.path());
    let jobs_before = hgd.status(&repo.path())["jobs_run"].as_u64().unwrap();

    // 30 notifications as fast as a script can send them.
    for _ in 0..30 {
        let out = hgd.hgd(&repo.path(), &["notify"]);
        assert!(out.status.success());
    }
    // A rebase of 25 commits with the hooks installed, notifying this test's daemon.
    repo.git(&["checkout", "-q", "-b", "long"]);
    for i in 0..25 {
        repo.write(
            &format!("steps/step_{i}.py"),
            format!("def step_{i}():\n    return {i}\n"),
        );
        repo.commit_all(&format!("step {i}"));
    }
    repo.git(&["checkout", "-q", "main"]);
    repo.write("main.py", "def entry_point():\n    return 0\n");
    repo.commit_all("main moves on");
    repo.git(&["checkout", "-q", "long"]);
    repo.git_with(
        &["rebase", "-q", "main"],
        &[("HGD_HOME", hgd.home().as_os_str())],
    );
    wait_until_indexed_at_head(&hgd, &repo);
    let jobs = hgd.status(&repo.path())["jobs_run"].as_u64().unwrap() - jobs_before;
    // 30 notifications plus the rebase's post-checkout and post-rewrite hooks (the commits above ran
    // git without this test's HGD_HOME, so their hooks notified nobody): far fewer jobs (a loaded
    // machine spaces hooks out more, so allow up to a third).
    assert!(jobs <= 10, "{jobs} jobs for over 30 notifications");
}

/// HEAD's search index is carried across commits (the files a job changed are searched in a
/// small index beside it) until enough files changed that the next search rebuilds it. Results
/// follow every commit either way: an edited function is found in its new form only, a deleted
/// file is gone, an uncommitted edit over a committed change wins, and after a commit of many
/// files (past the carry limit) everything is still found once.
#[test]
fn results_follow_a_run_of_commits_whether_the_index_is_carried_or_rebuilt() {
    let hgd = Hgd::new();
    let repo = base_repo();
    hgd.index(&repo.path());
    // The first search builds HEAD's index; the commits below are carried over it.
    assert_eq!(
        files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1)),
        ["checksum.py"]
    );

    repo.write(
        "dates.py",
        "import datetime\n\ndef days_until_new_year(day):\n    return (datetime.date(day.year + 1, 1, 1) - day).days\n",
    );
    repo.commit_all("edit dates");
    hgd.index(&repo.path());
    assert!(
        hgd.log().contains("carried, 1 paths changed"),
        "{}",
        hgd.log()
    );
    let results = hgd.search_json(
        &repo.path(),
        "how many days remain before january first",
        10,
    );
    let dates = functions_of(&results, "dates.py");
    assert_eq!(dates.len(), 1, "{results:#?}");
    assert!(dates[0]["content"]
        .as_str()
        .unwrap()
        .contains("days_until_new_year"));
    assert_eq!(dates[0]["dirty"], false);
    let old = hgd.search_json(&repo.path(), "weekday_name", 10);
    assert!(
        old.iter()
            .all(|r| !r["content"].as_str().unwrap().contains("weekday_name")),
        "{old:#?}"
    );

    repo.git(&["rm", "-q", "checksum.py"]);
    repo.commit_all("delete checksum");
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 10));
    assert!(!found.contains(&"checksum.py".to_owned()), "{found:?}");

    // Uncommitted, over the committed edit: only the work tree's version is searched.
    repo.write(
        "dates.py",
        "import datetime\n\ndef leap_year(year):\n    return year % 4 == 0 and (year % 100 != 0 or year % 400 == 0)\n",
    );
    let results = hgd.search_json(&repo.path(), "is this year a leap year", 10);
    let dates = functions_of(&results, "dates.py");
    assert_eq!(dates.len(), 1, "{results:#?}");
    assert_eq!(dates[0]["dirty"], true);
    assert!(dates[0]["content"].as_str().unwrap().contains("leap_year"));
    assert!(
        results
            .iter()
            .filter(|r| r["file"] == "dates.py")
            .all(|r| r["dirty"] == true),
        "{results:#?}"
    );
    repo.git(&["checkout", "-q", "dates.py"]);

    // Past the carry limit (64 files): the next search rebuilds the whole index.
    for i in 0..80 {
        repo.write(
            &format!("units/unit_{i}.py"),
            format!("def convert_unit_{i}(x):\n    \"\"\"Scale reading {i} of the meter.\"\"\"\n    return x * {i}\n"),
        );
    }
    repo.commit_all("many units");
    hgd.index(&repo.path());
    assert!(
        hgd.log().contains("rebuilt on the next search"),
        "{}",
        hgd.log()
    );
    assert_eq!(
        files(&hgd.search_json(&repo.path(), "convert_unit_42", 1)),
        ["units/unit_42.py"]
    );
    let results = hgd.search_json(
        &repo.path(),
        "how many days remain before january first",
        10,
    );
    assert_eq!(functions_of(&results, "dates.py").len(), 1, "{results:#?}");
}

/// The results in `file` that hold a function definition.
fn functions_of<'a>(results: &'a [serde_json::Value], file: &str) -> Vec<&'a serde_json::Value> {
    results
        .iter()
        .filter(|r| r["file"] == file && r["content"].as_str().unwrap().contains("def "))
        .collect()
}
