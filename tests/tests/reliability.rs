//! Faults the daemon must survive without losing files or hanging its clients: killed jobs after a
//! scope change, renames across languages, failed jobs, unreadable work-tree state, pathological
//! nesting, idle connections and a suspended daemon.

use std::os::unix::net::UnixStream;
use std::process::Command;
use std::time::Duration;

use hgd_tests::{files, GitRepo, Hgd};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &pid.to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill -{name} {pid}");
}

/// A repository with a small `a/` and a `b/` large enough that its first index takes seconds.
fn two_folder_repo(b_files: usize) -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        "a/checksum.py",
        "import hashlib\n\ndef file_digest(path):\n    return hashlib.sha256(open(path, 'rb').read()).hexdigest()\n",
    );
    let topics = ["parse", "render", "encode", "decode", "merge"];
    for i in 0..b_files {
        let topic = topics[i % topics.len()];
        repo.write(
            &format!("b/part{}/step_{i}.py", i % 4),
            format!(
                "def {topic}_record_{i}(value):\n    \"\"\"{topic} the record number {i}.\"\"\"\n    return value * {i} + {}\n",
                i * 3
            ),
        );
    }
    repo.write(
        "b/zebra.py",
        "def count_zebra_stripes(image):\n    \"\"\"How many stripes the zebra in the picture has.\"\"\"\n    return len(image.stripes)\n",
    );
    repo.commit_all("two folders");
    repo
}

/// Widening a scope (a search from the root after indexing a subfolder) and killing the daemon in
/// the middle of that job must not lose the new folder's files: after a restart they are indexed.
#[test]
fn a_widened_scope_killed_mid_job_is_indexed_whole_after_restart() {
    let repo = two_folder_repo(150);
    let fresh = Hgd::new();
    fresh.index(&repo.path());
    let want_blocks = fresh.status(&repo.path())["repos"][0]["blocks"].clone();

    let hgd = Hgd::new();
    let mut daemon = hgd.start_daemon();
    hgd.index(&repo.path().join("a"));
    let out = hgd.hgd(&repo.path(), &["index", "--no-wait"]);
    assert!(out.status.success(), "{}", stderr(&out));
    hgd.wait_for_running_job(&repo.path(), 20);
    daemon.kill().unwrap(); // SIGKILL, in the middle of indexing b/
    daemon.wait().unwrap();

    hgd.index(&repo.path()); // the client starts a new daemon
    let status = hgd.status(&repo.path());
    assert_eq!(status["repos"][0]["blocks"], want_blocks, "{status:#}");
    let found = files(&hgd.search_json(&repo.path(), "count the stripes of a zebra", 3));
    assert_eq!(
        found.first().map(String::as_str),
        Some("b/zebra.py"),
        "{found:?}"
    );
}

/// Blocks are re-used by blob only for the same language: a file renamed from no extension to `.py`
/// is parsed again as Python, not left as plain-text windows.
#[test]
fn a_rename_to_another_language_is_parsed_again() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    let script = "import sys\n\n\ndef shout_arguments(args):\n    \"\"\"Print every argument in capitals.\"\"\"\n    for a in args:\n        print(a.upper())\n\n\ndef count_arguments(args):\n    return len(args)\n";
    repo.write("script", script);
    repo.commit_all("script");
    hgd.index(&repo.path());
    let before = hgd.search_json(&repo.path(), "print arguments in capitals", 1);
    assert_eq!(before[0]["type"], "text", "{before:#?}");

    repo.git(&["mv", "script", "script.py"]);
    repo.commit_all("it is python");
    let after = hgd.search_json(&repo.path(), "print arguments in capitals", 1);
    assert_eq!(after[0]["file"], "script.py", "{after:#?}");
    assert_eq!(after[0]["type"], "function", "{after:#?}");
    assert_eq!(after[0]["name"], "shout_arguments", "{after:#?}");
}

/// Path of the loose object `oid` in `repo`.
fn loose_object(repo: &GitRepo, oid: &str) -> std::path::PathBuf {
    repo.path()
        .join(".git/objects")
        .join(&oid[..2])
        .join(&oid[2..])
}

/// When a job fails (here HEAD's tree object is missing), searches still answer from what is
/// stored and say the index is behind; `hgd index` reports the failure; once the repository is
/// repaired the index catches up.
#[test]
fn a_failed_job_leaves_searches_answering_from_the_stored_index() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());

    repo.write(
        "a/weather.py",
        "def rain_probability(clouds):\n    return min(1.0, clouds / 8)\n",
    );
    repo.commit_all("weather");
    let tree = repo.git(&["rev-parse", "HEAD^{tree}"]).trim().to_owned();
    let object = loose_object(&repo, &tree);
    let saved = std::fs::read(&object).expect("the new tree is a loose object");
    std::fs::remove_file(&object).unwrap();

    for attempt in 0..2 {
        let out = hgd.hgd(
            &repo.path(),
            &["search", "--json", "sha256 digest of a file"],
        );
        assert_eq!(
            out.status.code(),
            Some(0),
            "attempt {attempt}: {}",
            stderr(&out)
        );
        let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(files(&hits)[0], "a/checksum.py");
        assert!(stderr(&out).contains("behind HEAD"), "{}", stderr(&out));
    }
    let out = hgd.hgd(&repo.path(), &["index"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "hgd index must report the failure"
    );
    assert_eq!(hgd.status(&repo.path())["repos"][0]["state"], "failed");

    std::fs::write(&object, saved).unwrap();
    hgd.index(&repo.path());
    let found = files(&hgd.search_json(&repo.path(), "chance of rain from cloud cover", 1));
    assert_eq!(found, ["a/weather.py"]);
}

/// An unreadable work-tree index (the overlay of uncommitted files cannot be computed) does not
/// fail the search: it answers from HEAD and says so.
#[test]
fn an_overlay_failure_still_answers_from_head() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());
    std::fs::write(
        repo.path().join(".git/index"),
        b"DIRC garbage, not an index",
    )
    .unwrap();
    let out = hgd.hgd(
        &repo.path(),
        &["search", "--json", "sha256 digest of a file"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(files(&hits)[0], "a/checksum.py");
    assert!(
        stderr(&out).contains("uncommitted changes are not searched"),
        "{}",
        stderr(&out)
    );
}

/// A file of 100,000 nested brackets (one line, 200 KB) is indexed without taking the daemon down.
#[test]
fn deeply_nested_code_does_not_crash_the_daemon() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    let depth = 100_000;
    repo.write(
        "a/deep.py",
        format!("x = {}1{}\n", "[".repeat(depth), "]".repeat(depth)),
    );
    repo.commit_all("deep");
    hgd.index(&repo.path());
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
    // The daemon that indexed the file is still the one running (a crash would have been
    // hidden by the client starting a new one).
    assert!(daemon.try_wait().unwrap().is_none(), "the daemon died");
    assert_eq!(
        hgd.status(&repo.path())["pid"].as_u64(),
        Some(u64::from(daemon.id()))
    );
    hgd.stop(&mut daemon);
}

/// Clients that connect and say nothing can not lock others out: with more idle connections than
/// the daemon has slots, a new client is still served.
#[test]
fn idle_connections_do_not_lock_out_other_clients() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    let idle: Vec<UnixStream> = (0..100)
        .map(|_| UnixStream::connect(hgd.socket()).expect("connect"))
        .collect();
    let out = hgd
        .hgd_within(
            &repo.path(),
            &["status", "--json"],
            &[],
            Duration::from_secs(20),
        )
        .expect("hgd status hung behind idle connections");
    assert!(out.status.success(), "{}", stderr(&out));
    drop(idle);
    hgd.stop(&mut daemon);
}

/// A suspended daemon (laptop sleep, SIGSTOP) makes clients fail with a clear message after the
/// reply timeout instead of hanging; once resumed it answers again.
#[test]
fn a_suspended_daemon_times_out_clearly_and_answers_once_resumed() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    hgd.index(&repo.path());
    signal(daemon.id(), "STOP");
    let out = hgd.hgd_within(
        &repo.path(),
        &["search", "sha256 digest of a file"],
        &[("HGD_TIMEOUT", "2")],
        Duration::from_secs(20),
    );
    signal(daemon.id(), "CONT");
    let out = out.expect("the client hung on a suspended daemon");
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("did not answer"), "{}", stderr(&out));
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
    hgd.stop(&mut daemon);
}

/// A test that needs root or mounts cannot run here: skip it, unless the suite was told these
/// must run (`HGD_REQUIRE_PRIVILEGED=1`, set by scripts/test.sh where they can).
fn skip_unprivileged(why: &str) {
    assert!(
        std::env::var("HGD_REQUIRE_PRIVILEGED").as_deref() != Ok("1"),
        "cannot run although HGD_REQUIRE_PRIVILEGED=1: {why}"
    );
    println!("skipped: {why}");
}

fn alive(pid: u32) -> bool {
    // Not a zombie either: a child reaped by nobody still has a /proc entry.
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|stat| !stat.contains(") Z "))
        .unwrap_or(false)
}

/// A deleted socket file (a cleaner of temporary files, a mistaken `rm`) is bound again by the
/// running daemon: the next search reaches the same daemon, and no second one is started.
#[test]
fn a_deleted_socket_is_bound_again_by_the_running_daemon() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    hgd.index(&repo.path());
    std::fs::remove_file(hgd.socket()).expect("delete the socket");
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
    assert!(hgd.socket().exists(), "the socket was not bound again");
    assert_eq!(
        daemon.try_wait().expect("wait"),
        None,
        "the first daemon stopped\n{}",
        hgd.log()
    );
    let lock = std::fs::read_to_string(hgd.home().join("daemon.lock")).expect("lock file");
    assert_eq!(
        lock.trim(),
        daemon.id().to_string(),
        "another daemon took over"
    );
    assert!(hgd.log().contains("listening on it again"), "{}", hgd.log());
    hgd.stop(&mut daemon);
}

/// A daemon whose home is deleted while it runs stops by itself, and on stopping leaves alone
/// the socket of the daemon that now serves the home made again at the same path.
#[test]
fn a_daemon_whose_home_was_deleted_stops_without_taking_the_new_daemons_socket() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let mut first = hgd.start_daemon();
    hgd.index(&repo.path());
    std::fs::remove_dir_all(hgd.home()).expect("delete the home");
    // A client now starts a second daemon in a new home at the same path.
    hgd.index(&repo.path());
    let second: u32 = std::fs::read_to_string(hgd.home().join("daemon.lock"))
        .expect("the new lock file")
        .trim()
        .parse()
        .expect("a pid");
    assert_ne!(second, first.id());
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while first.try_wait().expect("wait").is_none() {
        assert!(
            std::time::Instant::now() < deadline,
            "the daemon of the deleted home still runs\n{}",
            hgd.log()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(alive(second), "the new daemon stopped");
    assert!(
        hgd.socket().exists(),
        "the old daemon removed the new daemon's socket"
    );
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
}

/// `daemon.log` is rotated past its limit (`HGD_LOG_MAX_KIB`): it becomes `daemon.log.1` and the
/// daemon goes on writing to a new `daemon.log`, so the logs never hold much more than twice the
/// limit however long the daemon runs.
#[test]
fn the_daemon_log_is_rotated_past_its_limit() {
    let hgd = Hgd::new()
        .with_env("HGD_LOG_MAX_KIB", "4")
        .with_env("HGD_LOG", "hgd_daemon=debug");
    let repo = two_folder_repo(0);
    // Started by the client, so the daemon's stderr is the home's log.
    hgd.index(&repo.path());
    let logs = hgd.home().join("logs");
    for i in 0..40 {
        let found = files(&hgd.search_json(&repo.path(), &format!("sha256 digest {i}"), 1));
        assert_eq!(found, ["a/checksum.py"]);
    }
    let current = std::fs::metadata(logs.join("daemon.log"))
        .expect("daemon.log")
        .len();
    let previous = std::fs::metadata(logs.join("daemon.log.1"))
        .expect("no daemon.log.1: the log was not rotated")
        .len();
    // The limit plus at most one event written past it.
    assert!(current <= 4096 + 1024, "daemon.log is {current} bytes");
    assert!(previous <= 4096 + 1024, "daemon.log.1 is {previous} bytes");
    let before = std::fs::read_to_string(logs.join("daemon.log")).unwrap();
    hgd.search_json(&repo.path(), "sha256 digest once more", 1);
    let after = std::fs::read_to_string(logs.join("daemon.log")).unwrap();
    assert!(
        after.len() > before.len() || !after.starts_with(&before),
        "the daemon stopped writing to the new daemon.log"
    );
}

/// At the default log level, neither queries nor file contents reach the log.
#[test]
fn the_default_log_holds_no_queries_or_file_contents() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());
    let query = "zebra stripes counted in the picture";
    hgd.search_json(&repo.path(), query, 3);
    let log = std::fs::read_to_string(hgd.home().join("logs").join("daemon.log")).unwrap();
    assert!(
        log.contains("indexed"),
        "the log is not the daemon's:\n{log}"
    );
    for secret in [
        query,
        "count_zebra_stripes",
        "hashlib.sha256",
        "How many stripes",
    ] {
        assert!(!log.contains(secret), "the log holds {secret:?}:\n{log}");
    }
    // Nothing logged per search either (LanceDB once warned of deprecations on every one).
    let lines = log.lines().count();
    for i in 0..5 {
        hgd.search_json(&repo.path(), &format!("zebra stripes {i}"), 3);
    }
    let log = std::fs::read_to_string(hgd.home().join("logs").join("daemon.log")).unwrap();
    assert_eq!(
        log.lines().count(),
        lines,
        "searches wrote to the log:\n{log}"
    );
    assert!(!log.to_lowercase().contains("deprecat"), "{log}");
}

/// Another user is refused even when the home's and socket's modes let them connect (modes
/// loosened by hand, or a home on a filesystem without them): the daemon checks the peer's uid.
#[test]
fn another_user_is_refused_even_through_a_loosened_socket() {
    use std::os::unix::fs::PermissionsExt;
    use std::os::unix::process::CommandExt;
    let uid = Command::new("id").arg("-u").output().expect("run id");
    if String::from_utf8_lossy(&uid.stdout).trim() != "0" {
        skip_unprivileged("running a client as another user needs root");
        return;
    }
    let hgd = Hgd::new();
    let mut daemon = hgd.start_daemon();
    for (path, mode) in [
        (hgd.dir.path().to_path_buf(), 0o755),
        (hgd.home(), 0o755),
        (hgd.socket(), 0o666),
    ] {
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    }
    let ask = |uid: u32| {
        let out = Command::new("perl")
            .args([
                "-MIO::Socket::UNIX",
                "-e",
                // The refusal may come, and the connection close, before the request is sent.
                r#"$SIG{PIPE} = 'IGNORE';
                   my $s = IO::Socket::UNIX->new(Peer => $ARGV[0]) or die "connect: $!\n";
                   print $s qq({"v":2,"request":{"type":"ping"}}\n);
                   my $line = <$s>; print $line;"#,
            ])
            .arg(hgd.socket())
            .uid(uid)
            .gid(uid)
            .output()
            .expect("run perl");
        assert!(out.status.success(), "{}", stderr(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let nobody = ask(65534);
    assert!(
        nobody.contains("permission_denied") && nobody.contains("serves user 0 only"),
        "another user was not refused: {nobody}"
    );
    // The owner, through the same client, is answered.
    assert!(ask(0).contains("pong"), "the owner was refused");
    let _ = hgd.command("hgd").arg("stop").output();
    daemon.wait().unwrap();
}

/// No request reads or indexes a file outside the repository searched: block references with
/// `..`, absolute paths or symlinks leading out are refused, `hgd index` of a symlink leading out
/// is not a repository, and a tracked folder replaced by a symlink to another folder is not
/// followed by the uncommitted-files overlay.
#[test]
fn paths_leading_out_of_the_repository_are_refused() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let outside = tempfile::tempdir().unwrap();
    let secret = "def leaked_payroll_secret():\n    return 'outside the repository'\n";
    std::fs::write(outside.path().join("secret.py"), secret).unwrap();
    std::fs::create_dir(outside.path().join("pkg")).unwrap();
    std::fs::write(outside.path().join("pkg").join("payroll.py"), secret).unwrap();
    repo.write(
        "pkg/payroll.py",
        "def payroll_total(rows):\n    return sum(rows)\n",
    );
    repo.commit_all("a package");
    std::os::unix::fs::symlink(
        outside.path().join("secret.py"),
        repo.path().join("link.py"),
    )
    .unwrap();
    std::os::unix::fs::symlink(outside.path(), repo.path().join("linkdir")).unwrap();
    hgd.index(&repo.path());

    let escape = format!(
        "../{}/secret.py#leaked_payroll_secret",
        outside.path().file_name().unwrap().to_string_lossy()
    );
    let absolute = format!("{}:1", outside.path().join("secret.py").display());
    for query in [
        escape.as_str(),
        "link.py#leaked_payroll_secret",
        absolute.as_str(),
    ] {
        let out = hgd.hgd(&repo.path(), &["search", "--json", query]);
        assert_eq!(out.status.code(), Some(2), "{query}: {}", stderr(&out));
        assert!(
            stderr(&out).contains("is not in the searched repository"),
            "{query}: {}",
            stderr(&out)
        );
    }
    let out = hgd.hgd(&repo.path(), &["index", "linkdir"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "indexed a folder outside the repository"
    );
    assert!(
        stderr(&out).contains("not in a git repository"),
        "{}",
        stderr(&out)
    );

    // A tracked folder replaced by a symlink to a folder outside.
    std::fs::remove_dir_all(repo.path().join("pkg")).unwrap();
    std::os::unix::fs::symlink(outside.path().join("pkg"), repo.path().join("pkg")).unwrap();
    let hits = hgd.search_json(
        &repo.path(),
        "leaked payroll secret outside the repository",
        10,
    );
    for hit in &hits {
        let content = hit["content"].as_str().unwrap_or_default();
        assert!(
            !content.contains("leaked_payroll_secret"),
            "read a file outside the repository through a symlink: {hit}"
        );
    }
}

/// A panic inside one repository's job (here injected into the parser) fails that job only:
/// `hgd status` reports it for that repository, its searches answer from what was stored, and
/// another repository indexes and searches as usual, in the same daemon.
#[test]
fn a_panicking_job_fails_alone_and_the_daemon_goes_on() {
    let hgd = Hgd::new().with_env("HGD_FAULT_PANIC_PATH", "boom");
    let broken = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    hgd.index(&broken.path());
    broken.write("a/boom.py", "def explode():\n    return 1\n");
    broken.commit_all("a file whose parsing panics");
    let out = hgd.hgd(&broken.path(), &["index"]);
    assert_ne!(out.status.code(), Some(0), "the panicking job succeeded");
    let status = hgd.status(&broken.path());
    let error = status["repos"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(error.contains("panicked"), "status: {status:#}");

    let out = hgd.hgd(
        &broken.path(),
        &["search", "--json", "sha256 digest of a file"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    assert!(stderr(&out).contains("behind"), "{}", stderr(&out));
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(files(&hits)[0], "a/checksum.py");

    let healthy = GitRepo::new();
    healthy.write(
        "geo.py",
        "def haversine_distance(a, b):\n    \"\"\"Great-circle distance between two points.\"\"\"\n    return 0.0\n",
    );
    healthy.commit_all("geo");
    hgd.index(&healthy.path());
    let found = files(&hgd.search_json(&healthy.path(), "great circle distance", 1));
    assert_eq!(found, ["geo.py"]);

    // A panic on the job's own (async) path, planning a repository whose root matches.
    let scratch = tempfile::tempdir().unwrap();
    let doomed = scratch.path().join("boom-repo");
    std::fs::create_dir(&doomed).unwrap();
    hgd_tests::git_in(&doomed, &["init", "-q", "-b", "main"], &[]);
    std::fs::write(doomed.join("x.py"), "def x():\n    return 1\n").unwrap();
    hgd_tests::git_in(&doomed, &["add", "-A"], &[]);
    hgd_tests::git_in(&doomed, &["commit", "-q", "-m", "x"], &[]);
    let out = hgd.hgd(&doomed, &["index"]);
    assert_ne!(out.status.code(), Some(0), "the panicking job succeeded");
    let status = hgd.status(&doomed);
    let entry = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| {
            r["root"]
                .as_str()
                .is_some_and(|root| root.ends_with("boom-repo"))
        })
        .expect("the repository is tracked");
    assert!(
        entry["error"]
            .as_str()
            .unwrap_or_default()
            .contains("the job panicked"),
        "{status:#}"
    );
    // The worker that ran the panicking job still runs jobs.
    healthy.write(
        "route.py",
        "def shortest_route(graph, a, b):\n    \"\"\"Dijkstra between two stops.\"\"\"\n    return []\n",
    );
    healthy.commit_all("route");
    hgd.index(&healthy.path());
    let found = files(&hgd.search_json(&healthy.path(), "shortest route between two stops", 1));
    assert_eq!(found, ["route.py"], "the worker stopped after the panic");
    assert_eq!(daemon.try_wait().unwrap(), None, "the daemon stopped");
    hgd.stop(&mut daemon);
}

/// A tmpfs mounted on a test's home (root only), unmounted when dropped.
struct SmallDisk {
    at: std::path::PathBuf,
}

impl SmallDisk {
    /// `None` (the test is skipped) when not root or mounting is not allowed here.
    fn mount(at: &std::path::Path, size: &str) -> Option<SmallDisk> {
        std::fs::create_dir_all(at).unwrap();
        let ok = Command::new("mount")
            .args([
                "-t",
                "tmpfs",
                "-o",
                &format!("size={size},mode=0700"),
                "tmpfs",
            ])
            .arg(at)
            .output()
            .is_ok_and(|o| o.status.success());
        if !ok {
            skip_unprivileged("cannot mount a tmpfs here (needs root)");
            return None;
        }
        Some(SmallDisk {
            at: at.to_path_buf(),
        })
    }

    /// Fills the disk up with one file; returns it.
    fn fill(&self) -> std::path::PathBuf {
        use std::io::Write;
        let path = self.at.join("filler");
        let mut file = std::fs::File::create(&path).unwrap();
        let chunk = vec![0u8; 64 << 10];
        while file.write_all(&chunk).is_ok() {}
        let _ = file.sync_all();
        path
    }
}

impl Drop for SmallDisk {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).output();
    }
}

/// Waits up to 60 s for the repository at `dir` to be indexed at its HEAD with no error, without
/// asking for a job (the daemon must retry by itself).
fn wait_until_caught_up(hgd: &Hgd, repo: &GitRepo) {
    let head = repo.git(&["rev-parse", "HEAD"]).trim().to_owned();
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let status = hgd.status(&repo.path());
        let entry = &status["repos"][0];
        if entry["indexed_commit"] == head.as_str() && entry["error"].is_null() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "indexing did not resume by itself: {status:#}\n{}",
            hgd.log()
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn add_files(repo: &GitRepo, n: usize, topic: &str) {
    for i in 0..n {
        repo.write(
            &format!("c/{topic}_{i}.py"),
            format!("def {topic}_step_{i}(x):\n    \"\"\"{topic} number {i}.\"\"\"\n    return x + {i}\n"),
        );
    }
    repo.commit_all(topic);
}

/// A full disk fails the job with a clear status while the previous index keeps answering, and
/// indexing resumes by itself once space returns.
#[test]
fn a_full_disk_fails_the_job_clearly_and_indexing_resumes_when_space_returns() {
    let hgd = Hgd::new().with_env("HGD_RETRY_SECS", "1");
    let Some(disk) = SmallDisk::mount(&hgd.home(), "16m") else {
        return;
    };
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    hgd.index(&repo.path());
    let filler = disk.fill();
    add_files(&repo, 80, "ledger");
    let out = hgd.hgd(&repo.path(), &["index"]);
    assert_ne!(out.status.code(), Some(0), "indexed onto a full disk");
    let status = hgd.status(&repo.path());
    let error = status["repos"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("No space left") || error.contains("os error 28"),
        "status does not say the disk is full: {status:#}"
    );
    let out = hgd.hgd(
        &repo.path(),
        &["search", "--json", "sha256 digest of a file"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(files(&hits)[0], "a/checksum.py");

    std::fs::remove_file(filler).unwrap();
    wait_until_caught_up(&hgd, &repo);
    let found = files(&hgd.search_json(&repo.path(), "ledger number 7", 3));
    assert!(found.contains(&"c/ledger_7.py".to_owned()), "{found:?}");
    hgd.assert_consistent(&repo.path());
    assert_eq!(daemon.try_wait().unwrap(), None, "the daemon stopped");
    hgd.stop(&mut daemon);
}

/// A home whose store turns read-only under a running daemon (a read-only bind mount over its
/// `db` folder, root only) fails the job clearly, searches go on from the stored index, and
/// indexing resumes by itself once it is writable again.
#[test]
fn a_read_only_home_fails_the_job_clearly_and_indexing_resumes_when_writable() {
    let hgd = Hgd::new().with_env("HGD_RETRY_SECS", "1");
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    hgd.index(&repo.path());
    let db = hgd.home().join("db");
    let mount = |args: &[&str]| {
        Command::new("mount")
            .args(args)
            .arg(&db)
            .arg(&db)
            .output()
            .is_ok_and(|o| o.status.success())
    };
    if !mount(&["--bind"]) {
        skip_unprivileged("cannot bind-mount here (needs root)");
        let _ = hgd.hgd(&repo.path(), &["stop"]);
        daemon.wait().unwrap();
        return;
    }
    let remounted = Command::new("mount")
        .args(["-o", "remount,bind,ro"])
        .arg(&db)
        .output()
        .unwrap();
    assert!(remounted.status.success(), "{}", stderr(&remounted));
    add_files(&repo, 20, "voucher");
    let out = hgd.hgd(&repo.path(), &["index"]);
    let status = hgd.status(&repo.path());
    let answered = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    // Writable again before any assertion can fail, so a failure leaves no mount behind.
    let unmounted = Command::new("umount").arg(&db).output().unwrap();
    assert!(unmounted.status.success(), "{}", stderr(&unmounted));
    assert_ne!(out.status.code(), Some(0), "indexed into a read-only home");
    let error = status["repos"][0]["error"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(
        error.contains("Read-only file system") || error.contains("os error 30"),
        "status does not say the home is read-only: {status:#}"
    );
    assert_eq!(
        answered,
        ["a/checksum.py"],
        "no answer from the stored index"
    );
    wait_until_caught_up(&hgd, &repo);
    let found = files(&hgd.search_json(&repo.path(), "voucher number 3", 3));
    assert!(found.contains(&"c/voucher_3.py".to_owned()), "{found:?}");
    assert_eq!(daemon.try_wait().unwrap(), None, "the daemon stopped");
    hgd.stop(&mut daemon);
}

/// The folder of one of the store's tables in a test's home.
fn table_dir(hgd: &Hgd, prefix: &str) -> std::path::PathBuf {
    std::fs::read_dir(hgd.home().join("db"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(prefix) && n.ends_with(".lance"))
        })
        .unwrap_or_else(|| panic!("no {prefix} table"))
}

fn damage_every_file_in(dir: &std::path::Path, how: impl Fn(&std::path::Path)) -> usize {
    let mut n = 0;
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_file() {
            how(&path);
            n += 1;
        }
    }
    n
}

/// Truncated data files of the blocks table, under a running daemon: the job that reads them
/// fails with a clear error, the daemon finds the damaged table, makes it again and indexes the
/// repository again from git, by itself; it stays up throughout.
#[test]
fn truncated_data_files_are_rebuilt_from_git_while_the_daemon_runs() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    let mut daemon = hgd.start_daemon();
    hgd.index(&repo.path());
    let data = table_dir(&hgd, "blocks_").join("data");
    let damaged = damage_every_file_in(&data, |f| {
        std::fs::OpenOptions::new()
            .write(true)
            .open(f)
            .unwrap()
            .set_len(100)
            .unwrap()
    });
    assert!(damaged > 0);
    add_files(&repo, 5, "receipt");
    let out = hgd.hgd(&repo.path(), &["index"]);
    assert_ne!(
        out.status.code(),
        Some(0),
        "a job read the truncated files without error"
    );
    wait_until_caught_up(&hgd, &repo);
    hgd.assert_consistent(&repo.path());
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
    assert!(hgd.log().contains("is damaged"), "{}", hgd.log());
    assert_eq!(daemon.try_wait().unwrap(), None, "the daemon stopped");
    hgd.stop(&mut daemon);
}

/// Manifests of garbage (the blocks table's, then the repositories table's) found when the
/// daemon starts: it sets the tables aside, makes them again and indexes from git what they
/// held, instead of failing to start.
#[test]
fn damaged_manifests_are_rebuilt_from_git_when_the_daemon_starts() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());
    for table in ["blocks_", "repos"] {
        let _ = hgd.hgd(&repo.path(), &["stop"]);
        let versions = table_dir(&hgd, table).join("_versions");
        let damaged = damage_every_file_in(&versions, |f| {
            if f.extension().is_some_and(|e| e == "manifest") {
                std::fs::write(f, b"not a manifest, just some bytes of garbage").unwrap()
            }
        });
        assert!(damaged > 0);
        // Started by this search: answers once the repository is indexed again.
        let out = hgd.hgd(&repo.path(), &["check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{table}: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            stderr(&out),
            hgd.log()
        );
        let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
        assert_eq!(found, ["a/checksum.py"], "{table}");
    }
    assert!(
        hgd.home().join("db").join("damaged").is_dir(),
        "nothing set aside"
    );
}

/// A new version installed over the daemon's executable (a new file renamed over it, as `cargo
/// install` does): the running daemon notices, stops cleanly, and the next command runs the new
/// one.
#[test]
fn a_daemon_whose_binary_was_replaced_stops_and_the_next_client_starts_the_new_one() {
    let installed = tempfile::tempdir().unwrap();
    let daemon_bin = installed.path().join("hgd-daemon");
    std::fs::copy(hgd_tests::bin("hgd-daemon"), &daemon_bin).unwrap();
    let hgd = Hgd::new().with_env("HGD_DAEMON_BIN", daemon_bin.to_str().unwrap());
    let repo = two_folder_repo(0);
    let mut old = hgd
        .command_at(&daemon_bin)
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    hgd.wait_for_socket();
    hgd.index(&repo.path());
    let fresh = installed.path().join("hgd-daemon.new");
    std::fs::copy(hgd_tests::bin("hgd-daemon"), &fresh).unwrap();
    std::fs::rename(&fresh, &daemon_bin).unwrap();
    // Search as soon as the old daemon lets go of its socket, while it may still hold the home
    // (its open requests finish first): the client waits for it and starts the new one.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while hgd.socket().exists() {
        assert!(
            std::time::Instant::now() < deadline,
            "the replaced daemon did not notice"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
    let status = old.wait().unwrap();
    assert!(
        !status.success(),
        "a replaced daemon must exit with a failure status (systemd restarts on failure)"
    );
    let now = hgd.status(&repo.path())["pid"].as_u64().unwrap() as u32;
    assert_ne!(now, old.id());
}

/// The socket is 0600 in a 0700 home, whatever the umask.
#[test]
fn the_socket_and_home_are_private() {
    use std::os::unix::fs::PermissionsExt;
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());
    let mode = |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode(&hgd.home()), 0o700);
    assert_eq!(mode(&hgd.socket()), 0o600);
}

/// Hooks quote every path: an hgd installed in a folder whose name has spaces and quotes, and a
/// repository whose path has them too, still keep the index current after a commit.
#[test]
fn hooks_work_with_spaces_and_quotes_in_every_path() {
    let odd = tempfile::tempdir().unwrap();
    let bin_dir = odd.path().join("it's a \"bin\" dir");
    std::fs::create_dir_all(&bin_dir).unwrap();
    for name in ["hgd", "hgd-daemon"] {
        std::fs::copy(hgd_tests::bin(name), bin_dir.join(name)).unwrap();
    }
    let hgd = Hgd::new().with_env(
        "HGD_DAEMON_BIN",
        bin_dir.join("hgd-daemon").to_str().unwrap(),
    );
    let repo_dir = odd.path().join("my repo's $HOME `x`");
    std::fs::create_dir_all(&repo_dir).unwrap();
    let daemon_bin = bin_dir.join("hgd-daemon");
    let git = |args: &[&str]| {
        hgd_tests::git_in(
            &repo_dir,
            args,
            &[
                ("HGD_HOME", hgd.home().as_os_str()),
                ("HGD_CONFIG", hgd.config_file().as_os_str()),
                ("HGD_DAEMON_BIN", daemon_bin.as_os_str()),
            ],
        )
    };
    git(&["init", "-q", "-b", "main"]);
    std::fs::write(repo_dir.join("one.py"), "def first_file():\n    return 1\n").unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "one"]);
    let out = Command::new(bin_dir.join("hgd"))
        .args(["hooks", "install"])
        .current_dir(&repo_dir)
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    hgd.index(&repo_dir);
    std::fs::write(
        repo_dir.join("two.py"),
        "def settle_the_invoice_balance():\n    return 0\n",
    )
    .unwrap();
    git(&["add", "-A"]);
    git(&["commit", "-q", "-m", "two"]);
    let head = String::from_utf8(
        Command::new("git")
            .args(["rev-parse", "HEAD"])
            .current_dir(&repo_dir)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    // The post-commit hook notified the daemon: the index moves to HEAD without any request.
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let status = hgd.status(&repo_dir);
        if status["repos"][0]["indexed_commit"] == head.trim() {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the hook did not notify: {status:#}\n{}",
            hgd.log()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Tables written by another version of hgd are never read as they are: a blocks table with
/// other columns (here, the repositories table's files put in its place) and blocks cut by
/// another chunker version (`db/format.json`) are made again and cut again from git.
#[test]
fn stores_written_by_another_version_are_rebuilt_not_misread() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());
    let _ = hgd.hgd(&repo.path(), &["stop"]);
    // Another layout: the blocks table's files replaced by a table of other columns.
    let blocks = table_dir(&hgd, "blocks_");
    std::fs::remove_dir_all(&blocks).unwrap();
    let status = Command::new("cp")
        .arg("-r")
        .arg(table_dir(&hgd, "repos"))
        .arg(&blocks)
        .status()
        .unwrap();
    assert!(status.success());
    hgd.assert_consistent(&repo.path());
    assert!(
        hgd.log().contains("written by another version of hgd"),
        "{}",
        hgd.log()
    );
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);

    // Another chunker.
    let _ = hgd.hgd(&repo.path(), &["stop"]);
    let format = hgd.home().join("db").join("format.json");
    let text = std::fs::read_to_string(&format).expect("format.json");
    assert!(text.contains("\"chunker\""), "{text}");
    std::fs::write(&format, "{\"chunker\": 0}").unwrap();
    let old_blocks = table_dir(&hgd, "blocks_");
    std::fs::write(old_blocks.join("planted-by-the-test"), "").unwrap();
    hgd.assert_consistent(&repo.path());
    assert!(
        hgd.log().contains("cut by chunker version 0"),
        "{}",
        hgd.log()
    );
    assert!(
        !old_blocks.join("planted-by-the-test").exists(),
        "the old blocks table was kept"
    );
    let embedded = hgd.status(&repo.path())["blocks_embedded"]
        .as_u64()
        .unwrap();
    assert!(embedded > 0, "nothing was cut and embedded again");
    let found = files(&hgd.search_json(&repo.path(), "sha256 digest of a file", 1));
    assert_eq!(found, ["a/checksum.py"]);
    assert!(!std::fs::read_to_string(&format)
        .unwrap()
        .contains("\"chunker\": 0"));
}

/// Laptop sleep during a job (SIGSTOP, then SIGCONT a few seconds later): the job finishes once
/// the daemon resumes and the index is consistent with HEAD, nothing lost or doubled.
#[test]
fn a_daemon_suspended_during_a_job_finishes_it_consistently_once_resumed() {
    let hgd = Hgd::new();
    let repo = two_folder_repo(200);
    let mut daemon = hgd.start_daemon();
    assert!(hgd
        .hgd(&repo.path(), &["index", "--no-wait"])
        .status
        .success());
    hgd.wait_for_running_job(&repo.path(), 10);
    signal(daemon.id(), "STOP");
    std::thread::sleep(Duration::from_secs(3));
    signal(daemon.id(), "CONT");
    hgd.assert_consistent(&repo.path());
    let found = files(&hgd.search_json(&repo.path(), "how many stripes the zebra has", 1));
    assert_eq!(found, ["b/zebra.py"]);
    hgd.stop(&mut daemon);
}

/// A log moved away by someone else (a user, logrotate) does not end rotation: the daemon makes a
/// new `daemon.log` at the path once the old file passes the limit, and keeps it bounded.
#[test]
fn a_log_moved_away_is_followed_by_a_new_one() {
    let hgd = Hgd::new()
        .with_env("HGD_LOG_MAX_KIB", "4")
        .with_env("HGD_LOG", "hgd_daemon=debug");
    let repo = two_folder_repo(0);
    hgd.index(&repo.path());
    let logs = hgd.home().join("logs");
    std::fs::rename(logs.join("daemon.log"), logs.join("moved.log")).unwrap();
    for i in 0..40 {
        hgd.search_json(&repo.path(), &format!("sha256 digest {i}"), 1);
    }
    let current = std::fs::metadata(logs.join("daemon.log"))
        .expect("no new daemon.log after the old one was moved away")
        .len();
    assert!(
        current > 0 && current <= 4096 + 1024,
        "daemon.log is {current} bytes"
    );
    let moved = std::fs::metadata(logs.join("moved.log")).unwrap().len();
    assert!(
        moved <= 4096 + 2048,
        "the moved log kept growing: {moved} bytes"
    );
}
