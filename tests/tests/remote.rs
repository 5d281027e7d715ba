//! A shared index on object storage, against a real S3 API server on loopback (moto, which
//! checks credentials and conditional writes): publish from one home and consume in another, a
//! server killed mid-job, two publishers at once, wrong credentials, another model's rows.

use std::path::Path;
use std::process::{Command, Stdio};

use hgd_tests::{ok, GitRepo, Hgd, S3Server};

const TOPICS: [(&str, &str); 10] = [
    ("parse_config", "import configparser\n    c = configparser.ConfigParser()\n    c.read(path)\n    return dict(c['main'])"),
    ("hash_file", "import hashlib\n    return hashlib.sha256(open(path, 'rb').read()).hexdigest()"),
    ("retry_request", "import time\n    for attempt in range(5):\n        try:\n            return fetch(path)\n        except IOError:\n            time.sleep(2 ** attempt)"),
    ("resize_image", "from PIL import Image\n    img = Image.open(path)\n    return img.resize((128, 128))"),
    ("send_email", "import smtplib\n    with smtplib.SMTP('localhost') as s:\n        s.sendmail('me', [path], 'hello')"),
    ("read_csv_rows", "import csv\n    with open(path) as f:\n        return list(csv.DictReader(f))"),
    ("compress_folder", "import shutil\n    return shutil.make_archive(path, 'zip', path)"),
    ("weekday_name", "import datetime\n    return datetime.date.fromisoformat(path).strftime('%A')"),
    ("tokenize_words", "import re\n    return re.findall(r'[a-z]+', path.lower())"),
    ("cache_result", "import functools\n    return functools.lru_cache(maxsize=128)(path)"),
];

const QUERIES: [&str; 4] = [
    "read settings from an ini file",
    "retry with exponential backoff",
    "checksum of a file's bytes",
    "which day of the week is a date",
];

/// Writes `count` Python modules named `{prefix}{i}.py`, each a variation of one topic.
fn write_modules(repo: &GitRepo, prefix: &str, count: usize) {
    for i in 0..count {
        let (name, body) = TOPICS[i % TOPICS.len()];
        repo.write(
            &format!("{prefix}{i:03}.py"),
            format!("\"\"\"Module {prefix}{i}.\"\"\"\n\n\ndef {name}_{prefix}{i}(path):\n    {body}\n\n\nVERSION_{i} = {i}\n"),
        );
    }
}

fn repo_with(count: usize) -> GitRepo {
    let repo = GitRepo::new();
    write_modules(&repo, "a", count);
    repo.commit_all("modules");
    repo
}

/// The top results of every query: (file, line, name).
fn answers(hgd: &Hgd, repo: &GitRepo) -> Vec<Vec<(String, u64, String)>> {
    QUERIES
        .iter()
        .map(|q| {
            hgd.search_json(&repo.path(), q, 10)
                .iter()
                .map(|r| {
                    (
                        r["file"].as_str().unwrap_or_default().to_owned(),
                        r["line"].as_u64().unwrap_or_default(),
                        r["name"].as_str().unwrap_or_default().to_owned(),
                    )
                })
                .collect()
        })
        .collect()
}

fn remote_status(hgd: &Hgd, cwd: &Path, name: &str) -> serde_json::Value {
    let status = hgd.status(cwd);
    status["remotes"]
        .as_array()
        .and_then(|r| r.iter().find(|r| r["name"] == name).cloned())
        .unwrap_or_else(|| panic!("no remote {name} in the status: {status:#}"))
}

fn stored_blocks(hgd: &Hgd, repo: &GitRepo) -> u64 {
    hgd.status(&repo.path())["repos"][0]["blocks"]
        .as_u64()
        .expect("blocks")
}

/// `hgd index --publish --json` with no daemon running; returns what it published (one entry
/// per remote) and its summary line on stderr.
fn index_and_publish(hgd: &Hgd, repo: &GitRepo) -> (serde_json::Value, String) {
    let out = hgd.hgd(&repo.path(), &["index", "--publish", "--json"]);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "hgd index --publish: {stderr}");
    (
        serde_json::from_slice(&out.stdout).expect("--json prints JSON"),
        stderr,
    )
}

#[test]
fn a_published_index_is_copied_in_another_home_with_the_same_results() {
    let server = S3Server::start();
    let repo = repo_with(12);
    let ci = Hgd::new().with_s3_credentials(&server);
    ci.add_remote("team", &server, "hgd", &[]);

    // CI: one process indexes, publishes and exits.
    let (published, summary) = index_and_publish(&ci, &repo);
    assert!(
        summary.contains("blocks embedded, 0 copied from remotes"),
        "{summary}"
    );
    let added = published[0]["blocks_added"].as_u64().expect("blocks_added");
    assert!(added > 0, "{published:#}");
    assert!(
        !ci.socket().exists(),
        "index --publish left a daemon running"
    );

    // A laptop: its first index copies everything and embeds nothing. Its daemon runs before
    // the remote is added: it reads the config file again when the file changes.
    let laptop = Hgd::new().with_s3_credentials(&server);
    assert!(laptop.hgd(&repo.path(), &["list"]).status.success());
    laptop.add_remote("team", &server, "hgd", &["--read-only"]);
    laptop.index(&repo.path());
    let status = laptop.status(&repo.path());
    assert_eq!(status["blocks_embedded"], 0, "{status:#}");
    let remote = remote_status(&laptop, &repo.path(), "team");
    assert_eq!(remote["state"], "ok", "{remote:#}");
    assert_eq!(remote["blocks_copied"].as_u64(), Some(added), "{remote:#}");
    assert_eq!(stored_blocks(&laptop, &repo), added);
    laptop.assert_consistent(&repo.path());
    assert_eq!(answers(&laptop, &repo), answers(&ci, &repo));

    // Publishing again adds nothing; a read-only remote is refused.
    let out = ci.hgd(&repo.path(), &["publish", "--json"]);
    let again: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(again[0]["blocks_added"], 0, "{again:#}");
    let out = laptop.hgd(&repo.path(), &["publish"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("read-only"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn a_remote_killed_mid_job_leaves_the_job_to_embed_locally_and_loses_nothing() {
    let mut server = S3Server::start();
    let repo = repo_with(10);
    let ci = Hgd::new().with_s3_credentials(&server);
    ci.add_remote("team", &server, "hgd", &[]);
    let (published, _) = index_and_publish(&ci, &repo);
    let copied_first = published[0]["blocks_added"].as_u64().unwrap();

    // Files nobody published: the job asks the remote two files at a time while it embeds them.
    write_modules(&repo, "b", 150);
    repo.commit_all("more modules");
    let laptop = Hgd::new()
        .with_s3_credentials(&server)
        .with_env("HGD_REMOTE_LOOKUP_BLOBS", "2");
    laptop.add_remote("team", &server, "hgd", &[]);
    let out = laptop.hgd(&repo.path(), &["index", "--no-wait"]);
    assert!(out.status.success());
    laptop.wait_for_running_job(&repo.path(), copied_first + 40);
    server.kill();

    laptop.index(&repo.path());
    let remote = remote_status(&laptop, &repo.path(), "team");
    assert_eq!(remote["state"], "unreachable", "{remote:#}");
    assert!(
        remote["error"].as_str().is_some_and(|e| e.contains("team")),
        "{remote:#}"
    );
    assert_eq!(
        remote["blocks_copied"].as_u64(),
        Some(copied_first),
        "{remote:#}"
    );
    let status = laptop.status(&repo.path());
    assert!(status["blocks_embedded"].as_u64() > Some(0), "{status:#}");
    assert_eq!(status["repos"][0]["state"], "idle", "{status:#}");
    laptop.assert_consistent(&repo.path());
    // The same index as a home that embedded everything itself.
    ci.index(&repo.path());
    assert_eq!(stored_blocks(&laptop, &repo), stored_blocks(&ci, &repo));
    assert_eq!(answers(&laptop, &repo), answers(&ci, &repo));
}

#[test]
fn a_remote_that_does_not_answer_is_given_up_after_a_short_timeout() {
    let mut server = S3Server::start();
    let repo = repo_with(4);
    let ci = Hgd::new().with_s3_credentials(&server);
    ci.add_remote("team", &server, "hgd", &[]);
    index_and_publish(&ci, &repo);

    // Stopped, not killed: connections are accepted and never answered.
    server.pause();
    let laptop = Hgd::new().with_s3_credentials(&server);
    laptop.add_remote("team", &server, "hgd", &[]);
    let started = std::time::Instant::now();
    let out = laptop
        .hgd_within(
            &repo.path(),
            &["index"],
            &[],
            std::time::Duration::from_secs(90),
        )
        .expect("indexing waited for a remote that does not answer");
    ok(&out);
    let remote = remote_status(&laptop, &repo.path(), "team");
    assert_eq!(remote["state"], "unreachable", "{remote:#}");
    assert!(
        remote["error"]
            .as_str()
            .is_some_and(|e| e.contains("did not answer within 5 s")),
        "{remote:#}"
    );
    assert!(laptop.status(&repo.path())["blocks_embedded"].as_u64() > Some(0));
    eprintln!("indexed past a silent remote in {:?}", started.elapsed());
    laptop.assert_consistent(&repo.path());
}

#[test]
fn two_publishers_at_once_add_each_block_once() {
    let server = S3Server::start();
    let repo = repo_with(15);
    let homes: Vec<Hgd> = (0..2)
        .map(|_| {
            let hgd = Hgd::new().with_s3_credentials(&server);
            hgd.add_remote("team", &server, "hgd", &[]);
            hgd
        })
        .collect();
    // Two CI jobs at once: each indexes, finds every blob missing, and (told to) inserts at the
    // same instant, so their commits race.
    let insert_at = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis()
        + 15_000;
    let running: Vec<_> = homes
        .iter()
        .map(|hgd| {
            hgd.command("hgd")
                .current_dir(repo.path())
                .args(["index", "--publish", "--json"])
                .env("HGD_FAULT_PUBLISH_INSERT_AT_MS", insert_at.to_string())
                .env("HGD_LOG", "warn,hgd_daemon::remote=debug")
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .expect("start hgd index --publish")
        })
        .collect();
    let mut added = 0;
    let mut logs = Vec::new();
    for child in running {
        let out = child.wait_with_output().unwrap();
        let log = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{log}");
        let published: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        added += published[0]["blocks_added"].as_u64().unwrap();
        logs.push(log);
    }
    homes[0].index(&repo.path());
    let blocks = stored_blocks(&homes[0], &repo);
    assert_eq!(added, blocks, "each block added once between the two");
    let out = homes[0]
        .command("hgd-daemon")
        .args(["remote-rows", "team"])
        .output()
        .unwrap();
    let counted: serde_json::Value = serde_json::from_str(&ok(&out)).unwrap();
    assert_eq!(counted["rows"].as_u64(), Some(blocks), "{counted}");
    assert_eq!(counted["keys"].as_u64(), Some(blocks), "{counted}");
    // Otherwise this test would not have tested a race: both found every blob missing, and
    // one insert met the other's commit and ran again (Lance's retry after a conflict).
    for log in &logs {
        assert!(log.contains("lacked 15 of 15 blobs"), "{log}");
    }
    assert!(
        logs.iter().any(|log| log
            .lines()
            .any(|l| l.contains("rows inserted in") && !l.ends_with("in 1 attempts"))),
        "no insert was retried: the two commits did not meet\n{}",
        logs.join("\n")
    );
}

#[test]
fn wrong_credentials_are_a_clear_error_and_jobs_embed_locally() {
    let server = S3Server::start();
    let repo = repo_with(3);
    let secret = "not-the-secret-0123456789";
    let hgd = Hgd::new().with_aws_keys("AKIAWRONGWRONGWRONG1", secret);
    hgd.add_remote("team", &server, "hgd", &[]);

    let out = hgd.hgd(&repo.path(), &["publish"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("remote team: access denied: check the AWS credentials"),
        "{stderr}"
    );
    assert!(!stderr.contains(secret));

    // The daemon stays up; indexing embeds locally and status says why.
    hgd.assert_consistent(&repo.path());
    let status = hgd.status(&repo.path());
    assert!(status["blocks_embedded"].as_u64() > Some(0), "{status:#}");
    let remote = remote_status(&hgd, &repo.path(), "team");
    assert_eq!(remote["state"], "unreachable", "{remote:#}");
    assert!(
        remote["error"]
            .as_str()
            .is_some_and(|e| e.contains("access denied")),
        "{remote:#}"
    );
    assert!(!hgd.log().contains(secret));
}

#[test]
fn rows_of_another_model_are_never_copied() {
    let server = S3Server::start();
    let repo = repo_with(4);
    let ci = Hgd::new().with_s3_credentials(&server);
    ci.add_remote("team", &server, "hgd", &[]);
    index_and_publish(&ci, &repo);

    // The same weights and tokenizer, but another model.toml: another model.
    let (_, model) = hgd_tests::provisioned();
    let other = tempfile::tempdir().unwrap();
    for file in ["model.onnx", "tokenizer.json", "vocab.txt"] {
        std::os::unix::fs::symlink(model.join(file), other.path().join(file)).unwrap();
    }
    let toml = std::fs::read_to_string(model.join("model.toml")).unwrap();
    std::fs::write(
        other.path().join("model.toml"),
        format!("{toml}\n# converted again\n"),
    )
    .unwrap();
    let laptop = Hgd::new()
        .with_s3_credentials(&server)
        .with_env("HGD_MODEL_DIR", &other.path().to_string_lossy());
    laptop.add_remote("team", &server, "hgd", &[]);
    laptop.index(&repo.path());
    let status = laptop.status(&repo.path());
    assert!(status["blocks_embedded"].as_u64() > Some(0), "{status:#}");
    let remote = remote_status(&laptop, &repo.path(), "team");
    assert_eq!(remote["blocks_copied"], 0, "{remote:#}");
    assert_eq!(remote["state"], "ok", "{remote:#}");
}

#[test]
fn remotes_are_added_listed_and_removed_in_the_config_file() {
    let hgd = Hgd::new();
    std::fs::write(hgd.config_file(), "# my settings\nresults = 7\n").unwrap();
    let run = |args: &[&str]| hgd.hgd(hgd.dir.path(), args);

    let out = run(&[
        "remote",
        "add",
        "team",
        "s3://bucket/hgd",
        "--endpoint",
        "http://127.0.0.1:9",
    ]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("allow_http"));
    let out = run(&["remote", "add", "team", "https://bucket/hgd"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("s3://"));

    let out = run(&[
        "remote",
        "add",
        "team",
        "s3://bucket/hgd/",
        "--region",
        "eu-west-1",
        "--read-only",
    ]);
    ok(&out);
    let out = run(&["remote", "add", "team", "s3://other/x"]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "a second remote of the same name"
    );
    let out = run(&["remote", "list"]);
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "team\ts3://bucket/hgd\tregion eu-west-1, read-only\n"
    );
    let text = std::fs::read_to_string(hgd.config_file()).unwrap();
    assert!(text.starts_with("# my settings\nresults = 7\n"), "{text}");
    // `hgd config` still reads the file, with the remote.
    let out = run(&["config"]);
    ok(&out);

    let out = run(&["remote", "remove", "team"]);
    assert!(out.status.success());
    assert_eq!(
        std::fs::read_to_string(hgd.config_file()).unwrap(),
        "# my settings\nresults = 7\n"
    );
    let out = run(&["remote", "remove", "team"]);
    assert_eq!(out.status.code(), Some(2));
    // A key that could hold a secret is refused.
    std::fs::write(
        hgd.config_file(),
        "[remote.team]\nuri = \"s3://b/x\"\naws_secret_access_key = \"x\"\n",
    )
    .unwrap();
    let out = Command::new(hgd_tests::bin("hgd"))
        .env("HGD_CONFIG", hgd.config_file())
        .env("HGD_HOME", hgd.home())
        .args(["remote", "list"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("aws_secret_access_key"));
}

#[test]
fn a_daemon_configured_to_publish_sends_each_jobs_new_blocks() {
    let server = S3Server::start();
    let repo = repo_with(5);
    // Two small fragments (two publishes) are enough to merge them.
    let dev = Hgd::new()
        .with_s3_credentials(&server)
        .with_env("HGD_LOG", "info,hgd_daemon::remote=debug")
        .with_env("HGD_REMOTE_COMPACT_FRAGMENTS", "2");
    dev.add_remote("team", &server, "hgd", &["--publish"]);
    let published_reaches = |blocks: u64| {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let remote = remote_status(&dev, &repo.path(), "team");
            if remote["blocks_published"].as_u64() == Some(blocks) {
                return;
            }
            assert!(
                std::time::Instant::now() < deadline,
                "not published: {remote:#}\n{}",
                dev.log()
            );
            std::thread::sleep(std::time::Duration::from_millis(100));
        }
    };
    dev.index(&repo.path());
    let first = stored_blocks(&dev, &repo);
    published_reaches(first);
    // A commit: only its new blocks are sent.
    write_modules(&repo, "c", 2);
    repo.commit_all("two more");
    dev.index(&repo.path());
    let all = stored_blocks(&dev, &repo);
    assert!(all > first);
    published_reaches(all);
    assert!(
        dev.log().contains("lacked 2 of 2 blobs"),
        "the second publish asked about more than the commit's files\n{}",
        dev.log()
    );
    // Merging follows the insert in the same background publish.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
    while !dev.log().contains("merged 2 small fragments") {
        assert!(
            std::time::Instant::now() < deadline,
            "the second publish did not merge the remote's fragments\n{}",
            dev.log()
        );
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    let out = dev
        .command("hgd-daemon")
        .args(["remote-rows", "team"])
        .output()
        .unwrap();
    let counted: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(counted["rows"].as_u64(), Some(all), "{counted}");
    assert_eq!(counted["keys"].as_u64(), Some(all), "{counted}");

    let laptop = Hgd::new().with_s3_credentials(&server);
    laptop.add_remote("team", &server, "hgd", &["--read-only"]);
    laptop.index(&repo.path());
    assert_eq!(laptop.status(&repo.path())["blocks_embedded"], 0);
    assert_eq!(answers(&laptop, &repo), answers(&dev, &repo));
}
