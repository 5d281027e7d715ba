//! The client's other commands through the real binaries: `list`, `forget`, `model`,
//! `completions` and `man`.

use hgd_tests::{ok, GitRepo, Hgd};

fn repo(name: &str) -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        &format!("{name}.py"),
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n",
    );
    repo.commit_all("one");
    repo
}

#[test]
fn list_model_and_forget_manage_tracked_repositories() {
    let hgd = Hgd::new();
    let (one, two) = (repo("one"), repo("two"));
    hgd.index(&one.path());
    hgd.index(&two.path());
    let root = |r: &GitRepo| r.path().canonicalize().unwrap().display().to_string();

    let listed = ok(&hgd.hgd(&one.path(), &["list"]));
    assert!(
        listed.contains(&root(&one)) && listed.contains(&root(&two)),
        "{listed}"
    );
    assert!(
        listed.contains("idle") && listed.contains("blocks"),
        "{listed}"
    );
    let json: serde_json::Value =
        serde_json::from_str(&ok(&hgd.hgd(&one.path(), &["list", "--json"]))).unwrap();
    assert_eq!(json.as_array().unwrap().len(), 2, "{json}");

    let model = ok(&hgd.hgd(&one.path(), &["model"]));
    assert!(
        model.contains("model.onnx") && model.contains("dims = 384"),
        "{model}"
    );
    assert!(model.contains("in use by the daemon"), "{model}");

    let db = hgd.home().join("db");
    let before = disk_bytes(&db);
    let forgot = ok(&hgd.hgd(&one.path(), &["forget"]));
    assert!(
        forgot.contains(&format!("forgot {}", root(&one))),
        "{forgot}"
    );
    assert!(forgot.contains("blocks deleted"), "{forgot}");
    assert!(disk_bytes(&db) < before, "the store did not shrink");
    let listed = ok(&hgd.hgd(&two.path(), &["list"]));
    assert!(
        !listed.contains(&root(&one)) && listed.contains(&root(&two)),
        "{listed}"
    );
    // The other repository still answers; the forgotten one is not tracked any more.
    let found = hgd.search_json(&two.path(), "add two numbers", 1);
    assert_eq!(found.len(), 1);
    let again = hgd.hgd(&one.path(), &["forget"]);
    assert_eq!(again.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&again.stderr).contains("not tracked"));
    // Searching there tracks and indexes it again.
    let found = hgd.search_json(&one.path(), "add two numbers", 1);
    assert_eq!(found.len(), 1);

    // A repository deleted from disk is forgotten by its path.
    let gone = root(&two);
    drop(two);
    assert!(!std::path::Path::new(&gone).exists());
    let forgot = ok(&hgd.hgd(&one.path(), &["forget", &gone]));
    assert!(forgot.contains(&format!("forgot {gone}")), "{forgot}");
    let listed = ok(&hgd.hgd(&one.path(), &["list"]));
    assert!(!listed.contains(&gone), "{listed}");
}

fn disk_bytes(dir: &std::path::Path) -> u64 {
    std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| match e.file_type() {
                    Ok(t) if t.is_dir() => disk_bytes(&e.path()),
                    _ => e.metadata().map_or(0, |m| m.len()),
                })
                .sum()
        })
        .unwrap_or(0)
}

#[test]
fn completions_and_the_man_page_cover_every_command() {
    let hgd = Hgd::new();
    let dir = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let script = ok(&hgd.hgd(dir.path(), &["completions", shell]));
        for word in ["search", "files-only", "service", "forget", "mcp"] {
            assert!(script.contains(word), "{shell}: no {word}");
        }
    }
    let bad = hgd.hgd(dir.path(), &["completions", "tcsh"]);
    assert_eq!(bad.status.code(), Some(2));
    let man = ok(&hgd.hgd(dir.path(), &["man"]));
    assert!(man.contains(".TH hgd 1"), "{man}");
    for word in ["search", "service", "forget"] {
        assert!(man.contains(word), "man: no {word}");
    }
}

#[test]
fn the_config_file_sets_defaults_and_hgd_config_says_where_each_comes_from() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    repo.write(
        "ops.py",
        "def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\ndef mul(a, b):\n    return a * b\n",
    );
    repo.commit_all("one");
    let model = hgd_tests::provisioned().1;
    std::fs::write(
        hgd.config_file(),
        format!(
            "results = 2\nthreads = 1\nmodel = {:?}\n",
            model.display().to_string()
        ),
    )
    .unwrap();
    // The model comes from the file, not HGD_MODEL_DIR, for the client and the daemon it starts.
    let run = |args: &[&str]| {
        hgd.command("hgd")
            .env_remove("HGD_MODEL_DIR")
            .current_dir(repo.path())
            .args(args)
            .output()
            .unwrap()
    };
    let shown = ok(&run(&["config"]));
    assert!(
        shown.contains(&hgd.config_file().display().to_string()),
        "{shown}"
    );
    assert!(shown.contains("results = 2    # config file"), "{shown}");
    assert!(
        shown
            .lines()
            .any(|l| l.starts_with("model = ") && l.ends_with("# config file")),
        "{shown}"
    );
    // The test environment sets HGD_THREADS, which overrides the file.
    assert!(shown.contains("threads = 1    # HGD_THREADS"), "{shown}");
    let hits: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&run(&["search", "--json", "arithmetic"]))).unwrap();
    assert_eq!(hits.len(), 2, "the file's `results` is the default -n");
    let hits: Vec<serde_json::Value> =
        serde_json::from_str(&ok(&run(&["search", "--json", "-n", "3", "arithmetic"]))).unwrap();
    assert_eq!(hits.len(), 3, "-n overrides it");
    let model_out = ok(&run(&["model"]));
    assert!(
        model_out.contains(&model.display().to_string()),
        "{model_out}"
    );
    ok(&run(&["stop"]));

    // A mistake in the file is an error that names it, for the client and the daemon alike.
    std::fs::write(hgd.config_file(), "resutls = 3\n").unwrap();
    let out = run(&["search", "arithmetic"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("not a valid hgd config file") && stderr.contains("config.toml"),
        "{stderr}"
    );
    // (Waited for with a deadline: a daemon that ignored the file would run on.)
    let mut daemon = hgd
        .command("hgd-daemon")
        .arg("daemon")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let status = loop {
        if let Some(status) = daemon.try_wait().unwrap() {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = daemon.kill();
            panic!("the daemon started with a broken config file");
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    };
    let mut stderr = String::new();
    std::io::Read::read_to_string(&mut daemon.stderr.take().unwrap(), &mut stderr).unwrap();
    assert!(!status.success());
    assert!(stderr.contains("not a valid hgd config file"), "{stderr}");
    std::fs::write(hgd.config_file(), "results = 0\n").unwrap();
    let out = run(&["config"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("results"));
}

/// `.hgdignore` (work tree, uncommitted) and the config file's `exclude` keep files out of the
/// index; editing `.hgdignore` at the same HEAD takes effect at the next search, both ways, and
/// survives a restart without re-embedding.
#[test]
fn hgdignore_and_config_excludes_keep_files_out_of_the_index() {
    let hgd = Hgd::new();
    std::fs::write(hgd.config_file(), "exclude = [\"*.gen.py\"]\n").unwrap();
    let repo = GitRepo::new();
    repo.write("a.py", "def alpha_checksum():\n    return 1\n");
    repo.write("b.gen.py", "def beta_generated():\n    return 2\n");
    repo.write("vendor/c.py", "def gamma_vendored():\n    return 3\n");
    repo.commit_all("three files");
    // Whether the file defining `word` answers a search for it.
    let found = |word: &str| -> bool {
        let file = match word {
            "alpha_checksum" => "a.py",
            "beta_generated" => "b.gen.py",
            _ => "vendor/c.py",
        };
        let out = hgd.hgd(&repo.path(), &["search", "-l", "--mode", "lexical", word]);
        assert!(
            matches!(out.status.code(), Some(0 | 1)),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == file)
    };
    assert!(found("alpha_checksum"));
    assert!(!found("beta_generated"), "excluded by the config file");
    assert!(found("gamma_vendored"));
    let blocks = |hgd: &Hgd| {
        hgd.status(&repo.path())["repos"][0]["blocks"]
            .as_u64()
            .unwrap()
    };
    let before = blocks(&hgd);

    repo.write(".hgdignore", "# not ours\nvendor/\n");
    assert!(
        !found("gamma_vendored"),
        "excluded by .hgdignore at the same HEAD"
    );
    assert!(found("alpha_checksum"));
    assert!(blocks(&hgd) < before, "its blocks left the index");
    // An uncommitted edit of an excluded file stays out too.
    repo.write("vendor/c.py", "def gamma_vendored():\n    return 4\n");
    assert!(!found("gamma_vendored"));

    // The rules the index was completed under are recorded, and survive a restart.
    let recorded = std::fs::read_to_string(hgd.home().join("index-rules.json")).unwrap();
    assert!(
        recorded.contains("vendor/") && recorded.contains("*.gen.py"),
        "{recorded}"
    );
    ok(&hgd.hgd(&repo.path(), &["stop"]));
    assert!(!found("gamma_vendored"));
    let status = hgd.status(&repo.path());
    assert_eq!(status["blocks_embedded"], 0, "{status}");

    // Back as committed (not an uncommitted file the overlay would show), then not excluded:
    // HEAD's blocks of it return.
    repo.git(&["checkout", "vendor/c.py"]);
    std::fs::remove_file(repo.path().join(".hgdignore")).unwrap();
    assert!(
        found("gamma_vendored"),
        "indexed again once no longer excluded"
    );
    assert_eq!(
        blocks(&hgd),
        before,
        "the same blocks as before it was excluded"
    );
}

/// The config file's size limit: a file over it is not indexed; raised (and the daemon
/// restarted to read it), the file is indexed at the same HEAD; lowered again, it leaves.
#[test]
fn the_size_limit_from_the_config_file_applies_to_the_whole_index() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    repo.write("small.py", "def small_helper():\n    return 1\n");
    let big: String = (0..200)
        .map(|i| format!("def large_function_{i}():\n    return {i}\n"))
        .collect();
    assert!(big.len() > 4096 && big.len() < 8192);
    repo.write("big.py", &big);
    repo.commit_all("two files");
    let indexed = |word: &str, file: &str| -> bool {
        let out = hgd.hgd(&repo.path(), &["search", "-l", "--mode", "lexical", word]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .any(|l| l == file)
    };
    let limit = |kib: u64| {
        std::fs::write(hgd.config_file(), format!("max_file_kib = {kib}\n")).unwrap();
        let _ = hgd.hgd(&repo.path(), &["stop"]);
    };
    limit(4);
    assert!(indexed("small_helper", "small.py"));
    assert!(!indexed("large_function_7", "big.py"), "over the limit");
    limit(8);
    assert!(
        indexed("large_function_7", "big.py"),
        "within the raised limit"
    );
    limit(4);
    assert!(
        !indexed("large_function_7", "big.py"),
        "over the lowered limit again"
    );
    assert!(indexed("small_helper", "small.py"));
    // Commits that remove and restore it (a diff, not a listing of HEAD) keep it out too: its
    // stored rows are not copied back.
    repo.git(&["rm", "-q", "big.py"]);
    repo.commit_all("without big.py");
    assert!(indexed("small_helper", "small.py"));
    repo.git(&["revert", "--no-edit", "HEAD"]);
    assert!(indexed("small_helper", "small.py"));
    assert!(
        !indexed("large_function_7", "big.py"),
        "restored by a commit, still over the limit"
    );
}
