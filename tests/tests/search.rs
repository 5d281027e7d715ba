//! End to end: a real daemon on its own home, real git repositories, `hgd index` and `hgd search`.

use std::process::Command;
use std::time::Duration;

use hgd_tests::{files, GitRepo, Hgd};

/// A small project whose files share few words with the queries used below.
fn sample_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        "src/fingerprint.py",
        "import hashlib\n\n\ndef fingerprint(path):\n    h = hashlib.sha256()\n    with open(path, 'rb') as fh:\n        for piece in iter(lambda: fh.read(65536), b''):\n            h.update(piece)\n    return h.hexdigest()\n",
    );
    repo.write(
        "src/server.js",
        "const http = require('http');\n\nfunction startServer(port) {\n  const server = http.createServer((req, res) => {\n    res.writeHead(200, {'Content-Type': 'text/plain'});\n    res.end('ok');\n  });\n  server.listen(port);\n  return server;\n}\n\nmodule.exports = { startServer };\n",
    );
    repo.write(
        "src/dates.go",
        "package dates\n\nimport \"time\"\n\n// Weekday names the day of the week of t in English.\nfunc Weekday(t time.Time) string {\n\treturn t.Weekday().String()\n}\n",
    );
    repo.write(
        "lib/strings.rb",
        "module Text\n  def self.slugify(title)\n    title.downcase.strip.gsub(/[^a-z0-9]+/, '-')\n  end\nend\n",
    );
    repo.write(
        "docs/guide.md",
        "# Guide\n\nHow to use the tool.\n\n## Installing\n\nRun the installer and follow the prompts.\n",
    );
    repo.commit_all("initial");
    repo
}

#[test]
fn finds_a_function_by_meaning_with_json_fields() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    let out = hgd.hgd(&repo.path(), &["index", "."]);
    assert!(
        out.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&out.stderr),
        hgd.log()
    );

    // No word of the query appears in fingerprint.py.
    let results = hgd.search_json(&repo.path(), "compute checksum digest of a file's bytes", 3);
    assert_eq!(files(&results)[0], "src/fingerprint.py", "{results:#?}");
    let top = &results[0];
    assert_eq!(top["line"], 4, "{top:#?}");
    assert_eq!(top["end_line"], 9);
    assert_eq!(top["type"], "function");
    assert_eq!(top["name"], "fingerprint");
    assert!(top["score"].as_f64().unwrap() > 0.0);
    assert!(top["content"]
        .as_str()
        .unwrap()
        .contains("hashlib.sha256()"));

    let results = hgd.search_json(
        &repo.path(),
        "turn a headline into a url-friendly identifier",
        3,
    );
    assert_eq!(files(&results)[0], "lib/strings.rb", "{results:#?}");
}

#[test]
fn results_are_scoped_to_the_searched_folder_and_relative_to_it() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    for side in ["backend", "frontend"] {
        repo.write(
            &format!("{side}/auth.py"),
            format!("def check_password_{side}(user, password):\n    return user.password_hash == hash(password)\n"),
        );
        repo.write(
            &format!("{side}/render.py"),
            format!(
                "def draw_chart_{side}(values):\n    return ''.join('#' * v for v in values)\n"
            ),
        );
    }
    repo.commit_all("two halves");
    let frontend = repo.path().join("frontend");
    let results = hgd.search_json(&frontend, "verify a login password", 10);
    assert!(!results.is_empty());
    for file in files(&results) {
        assert!(
            file == "auth.py" || file == "render.py",
            "result outside frontend/ or not relative to it: {file}"
        );
    }
    // From the repository root both halves are visible, paths relative to the root.
    let results = hgd.search_json(&repo.path(), "verify a login password", 10);
    let all = files(&results);
    assert!(all.contains(&"backend/auth.py".to_owned()), "{all:?}");
    assert!(all.contains(&"frontend/auth.py".to_owned()), "{all:?}");
}

#[test]
fn exit_codes_follow_grep() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    let out = hgd.hgd(&repo.path(), &["search", "http server"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("src/server.js:3-10 function startServer"),
        "{text}"
    );

    // A folder with nothing indexable: no results.
    repo.write("assets/logo.bin", [0u8, 1, 2, 3, 0, 255]);
    repo.commit_all("binary");
    let out = hgd.hgd(&repo.path().join("assets"), &["search", "http server"]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );

    // Not a git repository.
    let plain = tempfile::tempdir().unwrap();
    let out = hgd.hgd(plain.path(), &["search", "anything"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not in a git repository"));
}

#[test]
fn skips_binary_huge_non_utf8_and_generated_files_without_failing() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    repo.write(
        "ok.py",
        "def parse_config_file(path):\n    return open(path).read()\n",
    );
    let mut binary = b"zebra_binary_marker ".to_vec();
    binary.extend([0u8; 64]);
    repo.write("data.bin", binary);
    repo.write("huge.txt", "zebra_huge_marker\n".repeat(70_000));
    repo.write("latin1.txt", b"zebra_latin_marker caf\xe9\n");
    repo.write("gen/api.py", "def zebra_generated_marker():\n    pass\n");
    repo.write(".gitattributes", "gen/** linguist-generated\n");
    repo.commit_all("mixed content");
    hgd.index(&repo.path());
    let results = hgd.search_json(&repo.path(), "zebra marker", 20);
    let found = files(&results);
    for skipped in ["data.bin", "huge.txt", "latin1.txt", "gen/api.py"] {
        assert!(
            !found.contains(&skipped.to_owned()),
            "{skipped} was indexed: {found:?}"
        );
    }
    assert!(found.contains(&"ok.py".to_owned()));
}

#[test]
fn malformed_frames_get_errors_and_the_daemon_keeps_serving() {
    let hgd = Hgd::new();
    let mut daemon = hgd.start_daemon();
    let mut client = hgd.connect();

    client.send_raw(b"this is not json\n");
    let reply = client.read();
    assert_eq!(reply["type"], "error");
    assert_eq!(reply["code"], "bad_request");

    client.send_raw(b"{\"v\":1,\"request\":{\"type\":\"launch_missiles\"}}\n");
    assert_eq!(client.read()["code"], "bad_request");

    client.send_raw(b"{\"v\":99,\"request\":{\"type\":\"ping\"}}\n");
    assert_eq!(client.read()["code"], "version_mismatch");

    let mut huge = vec![b'x'; 2 << 20];
    huge.push(b'\n');
    client.send_raw(&huge);
    assert_eq!(client.read()["code"], "frame_too_large");

    // A query too long to be one (a whole file pasted) is refused on its own connection.
    let long_query = serde_json::json!({"v": 2, "request": {"type": "search", "path": "/", "query": "x ".repeat(20_000), "limit": 10}});
    client.send_raw(format!("{long_query}\n").as_bytes());
    let reply = client.read();
    assert_eq!(reply["code"], "bad_request", "{reply}");
    assert!(
        reply["message"].as_str().unwrap().contains("more than"),
        "{reply}"
    );

    // The same connection still works, and so does a new one.
    client.send_raw(b"{\"v\":1,\"request\":{\"type\":\"ping\"}}\n");
    assert_eq!(client.read()["type"], "pong");
    let mut other = hgd.connect();
    other.send_raw(b"{\"v\":1,\"request\":{\"type\":\"ping\"}}\n");
    assert_eq!(other.read()["type"], "pong");

    // Invalid UTF-8 closes only that connection.
    let mut rude = hgd.connect();
    rude.send_raw(b"\xff\xfe\xfd\n");
    assert_eq!(rude.read()["code"], "bad_request");
    other.send_raw(b"{\"v\":1,\"request\":{\"type\":\"ping\"}}\n");
    assert_eq!(other.read()["type"], "pong");

    other.send_raw(b"{\"v\":1,\"request\":{\"type\":\"shutdown\"}}\n");
    assert_eq!(other.read()["type"], "shutting_down");
    let status = daemon.wait().unwrap();
    assert!(status.success());
    assert!(!hgd.socket().exists(), "socket left behind");
}

/// Two clients search one repository while a long job indexes another: both are answered with
/// the right results while that job runs, and a search of the repository being indexed answers
/// at once by words from what the job has parsed.
#[test]
fn two_clients_search_while_another_repository_is_indexed() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    hgd.index(&repo.path());
    let big = GitRepo::new();
    for i in 0..600 {
        big.write(
            &format!("m{}/unit_{i}.py", i % 5),
            format!("def unit_{i}(x):\n    \"\"\"Scale the reading number {i}.\"\"\"\n    return x * {i}\n"),
        );
    }
    big.write(
        "m0/kettle.py",
        "def boil_water_in_kettle(litres):\n    \"\"\"Heat water until it boils.\"\"\"\n    return litres * 4200 * 80\n",
    );
    big.commit_all("many units");
    let out = hgd.hgd(&big.path(), &["index", "--no-wait"]);
    assert!(out.status.success());
    hgd.wait_for_running_job(&big.path(), 1);
    std::thread::scope(|s| {
        let a = s.spawn(|| hgd.search_json(&repo.path(), "day of the week", 2));
        let b = s.spawn(|| hgd.search_json(&repo.path(), "listen for web requests", 2));
        assert_eq!(files(&a.join().unwrap())[0], "src/dates.go");
        assert_eq!(files(&b.join().unwrap())[0], "src/server.js");
    });
    // The searches did overlap the job: it is still running.
    let status = hgd.status(&big.path());
    let state = status["repos"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["root"].as_str() == big.path().to_str())
        .map(|r| r["state"].clone());
    assert_eq!(state, Some("indexing".into()), "{status:#}");
    let hits = hgd.search_json(&big.path(), "boil water", 1);
    assert_eq!(files(&hits), ["m0/kettle.py"]);
    assert_eq!(hits[0]["mode"], "lexical", "{hits:#?}");
}

#[test]
fn the_client_starts_the_daemon_and_stop_removes_the_socket() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    assert!(!hgd.socket().exists());
    let status = hgd.hgd(&repo.path(), &["status"]);
    assert!(String::from_utf8_lossy(&status.stdout).contains("not running"));

    let results = hgd.search_json(&repo.path(), "day of the week", 1);
    assert_eq!(files(&results), ["src/dates.go"]);
    assert!(
        hgd.socket().exists(),
        "auto-started daemon is not listening"
    );
    assert!(hgd.home().join("logs").join("daemon.log").is_file());

    let status = hgd.status(&repo.path());
    assert_eq!(status["running"], true);
    assert_eq!(
        status["repos"][0]["root"],
        repo.path().to_string_lossy().as_ref()
    );
    assert_eq!(status["repos"][0]["state"], "idle");
    assert!(status["repos"][0]["blocks"].as_u64().unwrap() >= 5);

    let out = hgd.hgd(&repo.path(), &["stop"]);
    assert!(out.status.success());
    assert!(!hgd.socket().exists());
}

#[test]
fn sigterm_shuts_down_cleanly_and_a_second_daemon_is_refused() {
    let hgd = Hgd::new();
    let mut daemon = hgd.start_daemon();

    let second = hgd.command("hgd-daemon").arg("daemon").output().unwrap();
    assert!(!second.status.success());
    assert!(
        String::from_utf8_lossy(&second.stderr).contains("already running"),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    // The refused daemon did not take the socket away from the running one.
    hgd.connect();

    let killed = Command::new("kill")
        .args(["-TERM", &daemon.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = daemon.wait().unwrap();
    assert!(
        status.success(),
        "daemon exited with {status}\n{}",
        hgd.log()
    );
    std::thread::sleep(Duration::from_millis(50));
    assert!(!hgd.socket().exists(), "socket left behind after SIGTERM");
}

#[test]
fn identical_files_are_embedded_once_and_both_found() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    let body = "def merge_sorted_lists(left, right):\n    out = []\n    while left and right:\n        out.append(left.pop(0) if left[0] < right[0] else right.pop(0))\n    return out + left + right\n";
    repo.write("a/merge.py", body);
    repo.write("b/merge_copy.py", body);
    repo.commit_all("same content twice");
    hgd.index(&repo.path());
    let status = hgd.status(&repo.path());
    assert_eq!(status["blocks_embedded"], 1, "{status:#}");
    assert_eq!(status["repos"][0]["blocks"], 2, "{status:#}");
    let found = files(&hgd.search_json(&repo.path(), "combine two ordered sequences", 5));
    assert!(found.contains(&"a/merge.py".to_owned()), "{found:?}");
    assert!(found.contains(&"b/merge_copy.py".to_owned()), "{found:?}");
}

/// Another model (here: the same files under another name) gets its own vectors: everything is
/// embedded again instead of mixing two models' vectors in one table.
#[test]
fn changing_the_model_re_embeds_instead_of_mixing_vectors() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    hgd.index(&repo.path());
    let first = hgd.status(&repo.path());
    let embedded = first["blocks_embedded"].as_u64().unwrap();
    assert!(embedded > 0);
    assert!(hgd.hgd(&repo.path(), &["stop"]).status.success());

    let (_, model) = hgd_tests::provisioned();
    let other = hgd.dir.path().join("other-model");
    std::fs::create_dir_all(&other).unwrap();
    for file in ["model.onnx", "tokenizer.json"] {
        std::fs::copy(model.join(file), other.join(file)).unwrap();
    }
    let toml = std::fs::read_to_string(model.join("model.toml")).unwrap();
    let renamed = toml.replace(
        "name = \"all-MiniLM-L6-v2-int8\"",
        "name = \"renamed-model\"",
    );
    assert_ne!(toml, renamed, "model.toml has no name line to change");
    std::fs::write(other.join("model.toml"), renamed).unwrap();

    let out = hgd
        .command("hgd")
        .args(["index"])
        .current_dir(repo.path())
        .env("HGD_MODEL_DIR", &other)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: serde_json::Value = serde_json::from_slice(
        &hgd.command("hgd")
            .args(["status", "--json"])
            .env("HGD_MODEL_DIR", &other)
            .output()
            .unwrap()
            .stdout,
    )
    .unwrap();
    assert_eq!(second["model"], "renamed-model-384d");
    assert_eq!(
        second["blocks_embedded"].as_u64().unwrap(),
        embedded,
        "{second:#}"
    );
    assert_eq!(second["repos"][0]["blocks"], first["repos"][0]["blocks"]);
}

/// A first index of a repository of 2,000 files answers by words within seconds, long before all
/// vectors are embedded, and says so (`"mode": "lexical"`).
#[test]
fn a_large_first_index_is_searchable_by_words_within_seconds() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    for i in 0..2000 {
        repo.write(
            &format!("pkg{:02}/module_{i}.py", i % 40),
            format!("def handler_{i}(event):\n    \"\"\"Handle event number {i} of the stream.\"\"\"\n    return event.get('value', 0) + {i}\n"),
        );
    }
    repo.write(
        "pkg39/zz_last.py",
        "def reconcile_ledger_balances(ledger):\n    \"\"\"Bring the ledger's balances in line with its entries.\"\"\"\n    return sum(e.amount for e in ledger.entries)\n",
    );
    repo.commit_all("many modules");
    let started = std::time::Instant::now();
    let out = hgd.hgd(&repo.path(), &["index", "--no-wait"]);
    assert!(out.status.success());
    let mut answer = None;
    while started.elapsed() < Duration::from_secs(30) {
        let out = hgd.hgd(
            &repo.path(),
            &["search", "--json", "-n", "1", "reconcile_ledger_balances"],
        );
        if out.status.code() == Some(0) {
            let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
            answer = Some((started.elapsed(), hits[0].clone()));
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    let (after, hit) = answer.expect("no answer within 30 s");
    assert_eq!(hit["file"], "pkg39/zz_last.py", "{hit:#}");
    assert_eq!(hit["mode"], "lexical", "{hit:#}");
    let status = hgd.status(&repo.path());
    assert_eq!(
        status["repos"][0]["state"], "indexing",
        "the job finished first: {status:#}"
    );
    assert!(
        after < Duration::from_secs(15),
        "first answer after {after:?}"
    );
    eprintln!("first answer after {after:?}");
}

/// `--mode` chooses the channels and `--json` says which answered: a query that shares no word
/// with the code is found by meaning only, an exact identifier by words only.
#[test]
fn modes_choose_the_channels() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    hgd.index(&repo.path());
    let run = |mode: &str, query: &str| -> Vec<serde_json::Value> {
        let out = hgd.hgd(
            &repo.path(),
            &["search", "--json", "-n", "3", "--mode", mode, query],
        );
        assert!(out.status.code() == Some(0) || out.status.code() == Some(1));
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // No word of this query is in fingerprint.py: lexical search cannot find it, semantic can.
    let query = "compute checksum digest of a file's bytes";
    let semantic = run("semantic", query);
    assert_eq!(files(&semantic)[0], "src/fingerprint.py", "{semantic:#?}");
    assert_eq!(semantic[0]["mode"], "semantic");
    let lexical = run("lexical", query);
    assert!(
        !files(&lexical).contains(&"src/fingerprint.py".to_owned()),
        "{lexical:#?}"
    );
    let exact = run("lexical", "startServer");
    assert_eq!(files(&exact)[0], "src/server.js");
    assert_eq!(exact[0]["mode"], "lexical");
    assert_eq!(run("hybrid", "startServer")[0]["mode"], "hybrid");
}

/// Queries are embedded with 8-bit integer products (faster, slightly different vectors), but a
/// search's uncommitted files are embedded exactly as indexing embeds them: their rows are stored
/// and copied into the index when the file is committed, so a file first seen uncommitted must
/// score the same as in an index made from the commit alone.
#[test]
fn a_file_first_seen_uncommitted_scores_as_in_a_fresh_index_of_its_commit() {
    let repo = sample_repo();
    let hgd = Hgd::new();
    hgd.index(&repo.path());
    repo.write(
        "src/retry.py",
        "import time\n\n\ndef with_backoff(call, attempts=5):\n    delay = 0.1\n    for _ in range(attempts):\n        try:\n            return call()\n        except OSError:\n            time.sleep(delay)\n            delay *= 2\n    return call()\n",
    );
    let query = "retry an operation, waiting longer after each failure";
    let semantic = |hgd: &Hgd| -> Vec<serde_json::Value> {
        let out = hgd.hgd(
            &repo.path(),
            &["search", "--json", "-n", "3", "--mode", "semantic", query],
        );
        assert_eq!(out.status.code(), Some(0), "{}", hgd.log());
        serde_json::from_slice(&out.stdout).unwrap()
    };
    let uncommitted = semantic(&hgd);
    assert_eq!(files(&uncommitted)[0], "src/retry.py", "{uncommitted:#?}");
    assert_eq!(uncommitted[0]["dirty"], true);
    repo.commit_all("retry");
    let committed = semantic(&hgd);
    assert_eq!(files(&committed)[0], "src/retry.py");
    assert_eq!(committed[0]["dirty"], false, "{committed:#?}");
    let fresh = Hgd::new();
    let from_commit = semantic(&fresh);
    assert_eq!(files(&from_commit)[0], "src/retry.py");
    // Scores are scaled by the list's best and weakest, so the file's own vector shows in every
    // score of the list.
    let scores = |hits: &[serde_json::Value]| -> Vec<f64> {
        hits.iter().map(|h| h["score"].as_f64().unwrap()).collect()
    };
    for (what, hits) in [("uncommitted", &uncommitted), ("committed", &committed)] {
        assert_eq!(files(hits), files(&from_commit), "{what}");
        let differs = scores(hits)
            .iter()
            .zip(scores(&from_commit))
            .any(|(a, b)| (a - b).abs() > 1e-4);
        assert!(
            !differs,
            "{what}: {:?} vs {:?} in a fresh index",
            scores(hits),
            scores(&from_commit)
        );
    }
}

/// hygrep's flags: `-t`, `--exclude` and `--code-only` choose the files (before `-n` counts);
/// `-j`, `-c`, `-l` and `-q` shape the output; `--threshold` drops weak results.
#[test]
fn hygrep_flags_choose_files_and_shape_the_output() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    hgd.index(&repo.path());
    let run = |args: &[&str]| -> std::process::Output {
        let mut all = vec!["search"];
        all.extend_from_slice(args);
        hgd.hgd(&repo.path(), &all)
    };
    let json = |args: &[&str]| -> Vec<serde_json::Value> {
        let out = run(args);
        assert!(
            out.status.code() == Some(0),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    // Types: a language or an extension, repeatable; -n counts only what passes.
    let python = json(&["-j", "-n", "5", "-t", "python", "open a file and read it"]);
    assert!(!python.is_empty(), "{python:#?}");
    assert!(
        files(&python).iter().all(|f| f == "src/fingerprint.py"),
        "{python:#?}"
    );
    let two = json(&["-j", "-n", "10", "-t", "go", "-t", "rb", "text"]);
    let mut found = files(&two);
    found.sort();
    found.dedup();
    assert_eq!(found, ["lib/strings.rb", "src/dates.go"], "{two:#?}");
    // Gitignore-style excludes, relative to the searched folder.
    let excluded = json(&[
        "-j",
        "-n",
        "10",
        "--exclude",
        "src/",
        "--exclude",
        "*.md",
        "text",
    ]);
    assert_eq!(files(&excluded), ["lib/strings.rb"], "{excluded:#?}");
    // Code only: the guide answers a question about installing, unless documents are left out.
    let install = "how do I install the tool";
    assert_eq!(
        files(&json(&["-j", "-n", "1", install]))[0],
        "docs/guide.md"
    );
    // Filtered before -n counts: one result asked, one (code) result given.
    let first_code = json(&["-j", "-n", "1", "--code-only", install]);
    assert_eq!(first_code.len(), 1, "{first_code:#?}");
    assert!(!files(&first_code)[0].ends_with(".md"));
    let code = json(&["-j", "-n", "10", "--code-only", install]);
    assert!(
        !code.is_empty() && !files(&code).iter().any(|f| f.ends_with(".md")),
        "{code:#?}"
    );
    // Compact JSON: hygrep's fields without content.
    let compact = json(&["-c", "-n", "3", "sha256"]);
    assert!(!compact.is_empty());
    for hit in &compact {
        for field in ["file", "type", "name", "line", "end_line", "score"] {
            assert!(hit.get(field).is_some(), "{field}: {hit}");
        }
        assert!(hit.get("content").is_none(), "{hit}");
    }
    // Files only: each file once, best first.
    let listed = run(&["-l", "-n", "10", "function"]);
    let text = String::from_utf8(listed.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    let mut unique = lines.clone();
    unique.sort();
    unique.dedup();
    assert!(!lines.is_empty() && unique.len() == lines.len(), "{text}");
    assert!(lines.iter().all(|l| !l.contains(':')), "{text}");
    // Quiet: no output; the status says whether anything was found.
    let quiet = run(&["-q", "sha256"]);
    assert_eq!(quiet.status.code(), Some(0));
    assert!(quiet.stdout.is_empty());
    let none = run(&["-q", "-t", "zig", "sha256"]);
    assert_eq!(none.status.code(), Some(1));
    assert!(none.stdout.is_empty());
    // A threshold keeps only results scoring at least that (the best scores 1).
    let best = json(&["-j", "-n", "5", "--min-score", "0.999", "sha256"]);
    assert_eq!(best.len(), 1, "{best:#?}");
    let some = json(&["-j", "-n", "5", "--threshold", "0.0", "sha256"]);
    assert!(some.len() > 1, "{some:#?}");
    // A bad glob is the caller's error, named.
    let bad = run(&["--exclude", "src/[z-a]", "text"]);
    assert_eq!(bad.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&bad.stderr).contains("--exclude"),
        "{}",
        String::from_utf8_lossy(&bad.stderr)
    );
}

/// `FILE#NAME`, `FILE:LINE` or `FILE` as the query finds code like that block (or file) in other
/// files, ranked by its stored vector.
#[test]
fn a_block_of_a_file_finds_similar_code_in_other_files() {
    let hgd = Hgd::new();
    let repo = sample_repo();
    repo.write(
        "src/digest.py",
        "import hashlib\n\n\ndef file_digest(name):\n    d = hashlib.md5()\n    with open(name, 'rb') as f:\n        d.update(f.read())\n    return d.hexdigest()\n",
    );
    repo.commit_all("digest");
    hgd.index(&repo.path());
    let similar = |query: &str| -> Vec<serde_json::Value> {
        let out = hgd.hgd(&repo.path(), &["search", "--json", "-n", "3", query]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{query}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    };
    for query in [
        "src/fingerprint.py#fingerprint",
        "src/fingerprint.py:6",
        "src/fingerprint.py",
    ] {
        let hits = similar(query);
        assert_eq!(files(&hits)[0], "src/digest.py", "{query}: {hits:#?}");
        // A block: the function like it (a whole file may match its imports first).
        if query.contains(['#', ':']) {
            assert_eq!(hits[0]["name"], "file_digest", "{query}: {hits:#?}");
        }
        assert_eq!(hits[0]["mode"], "semantic");
        assert!(
            !files(&hits).contains(&"src/fingerprint.py".to_owned()),
            "{query}: the block's own file answered: {hits:#?}"
        );
    }
    // From a subfolder, paths are relative to it.
    let out = hgd.hgd(
        &repo.path().join("src"),
        &["search", "--json", "-n", "1", "fingerprint.py#fingerprint"],
    );
    let hits: Vec<serde_json::Value> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(files(&hits), ["digest.py"]);
    // A name the file does not define: an error that lists what it does define.
    let out = hgd.hgd(&repo.path(), &["search", "src/digest.py#nothing_here"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("no block named") && stderr.contains("file_digest"),
        "{stderr}"
    );
}
