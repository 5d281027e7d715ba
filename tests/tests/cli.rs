//! The client's other commands through the real binaries: `list`, `forget`, `model`,
//! `completions` and `man`.

use hgd_tests::{GitRepo, Hgd};

fn ok(out: &std::process::Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

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
