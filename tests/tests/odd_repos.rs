//! Repositories with odd content or an odd shape either index or are refused with a clear
//! message, and never crash the daemon: huge lines, NUL bytes, invalid UTF-8, CRLF, files past the
//! size limit, submodules, symlink loops, odd file names, shallow clones, bare repositories,
//! linked worktrees, a detached HEAD, an unborn branch, and a repository deleted or moved while
//! tracked.

use std::process::Command;

use hgd_tests::{files, ok, GitRepo, Hgd};

fn stderr(out: &std::process::Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// The daemon still answers (the same process as before).
fn still_up(hgd: &Hgd, cwd: &std::path::Path, pid: &str) {
    let status = hgd.status(cwd);
    assert_eq!(
        status["pid"].to_string(),
        pid,
        "the daemon restarted or stopped\n{}",
        hgd.log()
    );
}

fn daemon_pid(hgd: &Hgd, cwd: &std::path::Path) -> String {
    let pid = hgd.status(cwd)["pid"].clone();
    assert!(pid.is_u64(), "no daemon pid in hgd status");
    pid.to_string()
}

#[test]
fn odd_content_indexes_what_is_text_and_skips_the_rest() {
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    repo.write(
        "ok.py",
        "def parse_ledger_entry(line):\n    \"\"\"Split a ledger line into date and amount.\"\"\"\n    return line.split(';')\n",
    );
    // A 600 KiB single line (under the 1 MiB limit): cut into windows, not one block.
    repo.write(
        "huge_line.js",
        format!("var table = [{}];\n", "1,".repeat(300_000)),
    );
    repo.write(
        "nul.py",
        b"def f():\n    return 1\n\x00\x00binary tail\n".as_slice(),
    );
    repo.write(
        "latin1.py",
        b"# caf\xe9\ndef caf\xe9_price():\n    return 3\n".as_slice(),
    );
    repo.write(
        "crlf.py",
        "def windows_line_endings_total(rows):\r\n    \"\"\"Sum the rows of a file saved on Windows.\"\"\"\r\n    return sum(rows)\r\n",
    );
    repo.write("big.txt", "all work and no play\n".repeat(500_000)); // ~10 MiB
    repo.write(
        "with space 'quote\".py",
        "def quoted_name_helper():\n    return 'odd file name'\n",
    );
    repo.write(
        "new\nline.py",
        "def newline_in_file_name():\n    return 'newline'\n",
    );
    std::os::unix::fs::symlink("loop_b", repo.path().join("loop_a")).unwrap();
    std::os::unix::fs::symlink("loop_a", repo.path().join("loop_b")).unwrap();
    std::os::unix::fs::symlink(".", repo.path().join("self_link")).unwrap();
    repo.commit_all("odd content");
    // A file name that is not UTF-8.
    let odd = std::ffi::OsStr::from_bytes_lossless(b"bad\xffname.py");
    std::fs::write(
        repo.path().join(odd),
        "def not_utf8_name():\n    return 0\n",
    )
    .unwrap();
    repo.commit_all("a name that is not UTF-8");

    hgd.index(&repo.path());
    let pid = daemon_pid(&hgd, &repo.path());
    let found = files(&hgd.search_json(&repo.path(), "split a ledger line", 1));
    assert_eq!(found, ["ok.py"]);
    let hits = hgd.search_json(&repo.path(), "sum the rows of a file saved on Windows", 1);
    assert_eq!(files(&hits), ["crlf.py"]);
    assert_eq!(hits[0]["line"], 1);
    assert!(
        !hits[0]["content"].as_str().unwrap().contains('\r'),
        "{}",
        hits[0]
    );
    let found = files(&hgd.search_json(&repo.path(), "quoted name helper", 1));
    assert_eq!(found, ["with space 'quote\".py"]);
    let found = files(&hgd.search_json(&repo.path(), "newline in file name", 1));
    assert_eq!(found, ["new\nline.py"]);
    let blocks = hgd.status(&repo.path())["repos"][0]["blocks"]
        .as_u64()
        .unwrap();
    // ok, crlf, quoted, newline: one block each; the huge line: a few windows; nothing of the
    // binary, Latin-1, oversized, symlinked or non-UTF-8-named files.
    for hit in hgd.search_json(
        &repo.path(),
        "binary tail caf price all work and no play",
        20,
    ) {
        let file = hit["file"].as_str().unwrap();
        assert!(
            ![
                "nul.py",
                "latin1.py",
                "big.txt",
                "loop_a",
                "loop_b",
                "self_link"
            ]
            .contains(&file)
                && !file.starts_with("bad"),
            "indexed {file}"
        );
    }
    assert!((5..200).contains(&blocks), "{blocks} blocks");
    hgd.assert_consistent(&repo.path());
    still_up(&hgd, &repo.path(), &pid);
}

trait FromBytes {
    fn from_bytes_lossless(bytes: &[u8]) -> &std::ffi::OsStr;
}

impl FromBytes for std::ffi::OsStr {
    fn from_bytes_lossless(bytes: &[u8]) -> &std::ffi::OsStr {
        std::os::unix::ffi::OsStrExt::from_bytes(bytes)
    }
}

fn git(dir: &std::path::Path, args: &[&str]) -> String {
    hgd_tests::git_in(dir, args, &[])
}

fn source_repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        "money.py",
        "def round_to_cents(amount):\n    \"\"\"Round an amount of money to whole cents.\"\"\"\n    return round(amount, 2)\n",
    );
    repo.commit_all("one");
    repo.write("later.py", "def added_later():\n    return 2\n");
    repo.commit_all("two");
    repo
}

#[test]
fn shallow_clones_linked_worktrees_detached_heads_and_submodules_index() {
    let hgd = Hgd::new();
    let source = source_repo();
    let scratch = tempfile::tempdir().unwrap();

    // A shallow clone (its parent commits are missing).
    let shallow = scratch.path().join("shallow");
    let url = format!("file://{}", source.path().display());
    git(
        scratch.path(),
        &[
            "clone",
            "-q",
            "--depth",
            "1",
            &url,
            shallow.to_str().unwrap(),
        ],
    );
    hgd.index(&shallow);
    assert_eq!(
        files(&hgd.search_json(&shallow, "round money to cents", 1)),
        ["money.py"]
    );

    // A linked worktree, on a detached HEAD at the first commit.
    let linked = scratch.path().join("linked");
    git(
        &source.path(),
        &[
            "worktree",
            "add",
            "-q",
            "--detach",
            linked.to_str().unwrap(),
            "HEAD~1",
        ],
    );
    hgd.index(&linked);
    let found = files(&hgd.search_json(&linked, "added later", 5));
    assert!(
        !found.contains(&"later.py".to_owned()),
        "the worktree is at the first commit: {found:?}"
    );
    assert_eq!(
        files(&hgd.search_json(&linked, "round money to cents", 1)),
        ["money.py"]
    );

    // A submodule: the superproject indexes its own files, not the submodule's.
    let superproject = GitRepo::new();
    superproject.write("app.py", "def start_the_app():\n    return 'started'\n");
    superproject.commit_all("app");
    let out = Command::new("git")
        .args([
            "-c",
            "protocol.file.allow=always",
            "submodule",
            "add",
            "-q",
            &url,
            "vendor/money",
        ])
        .current_dir(superproject.path())
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    superproject.commit_all("a submodule");
    hgd.index(&superproject.path());
    assert_eq!(
        files(&hgd.search_json(&superproject.path(), "start the app", 1)),
        ["app.py"]
    );
    let found = files(&hgd.search_json(&superproject.path(), "round money to cents", 5));
    assert!(
        !found.iter().any(|f| f.starts_with("vendor/")),
        "indexed the submodule's files: {found:?}"
    );
    hgd.assert_consistent(&superproject.path());
}

#[test]
fn an_unborn_branch_and_a_bare_repository_are_answered_clearly() {
    let hgd = Hgd::new();
    let unborn = GitRepo::new();
    unborn.write("draft.py", "def not_committed_yet():\n    return 0\n");
    let out = hgd.hgd(&unborn.path(), &["index"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    // Nothing committed: searched as uncommitted work.
    let hits = hgd.search_json(&unborn.path(), "not committed yet", 3);
    assert_eq!(files(&hits), ["draft.py"]);
    assert_eq!(hits[0]["dirty"], true);

    let scratch = tempfile::tempdir().unwrap();
    let bare = scratch.path().join("bare.git");
    git(
        scratch.path(),
        &["init", "-q", "--bare", bare.to_str().unwrap()],
    );
    let out = hgd.hgd(&bare, &["search", "anything"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("work tree") || stderr(&out).contains("not in a git repository"),
        "{}",
        stderr(&out)
    );
    let out = hgd.hgd(&bare, &["index"]);
    assert_ne!(out.status.code(), Some(0));
    let pid = daemon_pid(&hgd, &unborn.path());
    still_up(&hgd, &unborn.path(), &pid);
}

#[test]
fn a_repository_deleted_or_moved_while_tracked_is_reported_and_can_be_forgotten() {
    let hgd = Hgd::new();
    let scratch = tempfile::tempdir().unwrap();
    let gone = GitRepo::new();
    gone.write("a.py", "def soon_deleted():\n    return 1\n");
    gone.commit_all("a");
    hgd.index(&gone.path());
    let gone_path = gone.path();
    let moved = source_repo();
    hgd.index(&moved.path());
    let moved_from = moved.path();
    let pid = daemon_pid(&hgd, scratch.path());
    drop(gone);
    let moved_to = scratch.path().join("moved");
    std::fs::rename(&moved_from, &moved_to).unwrap();
    // The daemon was started from the deleted repository's folder: that must not matter.
    // Hooks (or anything) notify about both; the daemon stays up and says what it can.
    for path in [&gone_path, &moved_from] {
        let out = hgd.hgd(scratch.path(), &["notify", path.to_str().unwrap()]);
        assert_eq!(out.status.code(), Some(0));
    }
    // The moved repository is found again at its new place.
    assert_eq!(
        files(&hgd.search_json(&moved_to, "round money to cents", 1)),
        ["money.py"]
    );
    still_up(&hgd, scratch.path(), &pid);
    let list = ok(&hgd.hgd(scratch.path(), &["list"]));
    assert!(list.contains(gone_path.to_str().unwrap()), "{list}");
    let out = hgd.hgd(scratch.path(), &["forget", gone_path.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let list = ok(&hgd.hgd(scratch.path(), &["list"]));
    assert!(!list.contains(gone_path.to_str().unwrap()), "{list}");
    still_up(&hgd, scratch.path(), &pid);
    std::mem::forget(moved);
}
