//! `hgd service`: the launchd agent and systemd unit it writes, checked by a property-list parser
//! and by `systemd-analyze verify`, and a home a service manager owns, which the client must not
//! start a daemon for. Installing into a running `systemd --user` runs only where one runs.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use hgd_tests::{bin, ok, GitRepo, Hgd};

/// A home whose path needs quoting and escaping everywhere: spaces, `&`, `%`, `$` and a quote.
fn awkward_home(hgd: &Hgd) -> PathBuf {
    hgd.home()
        .parent()
        .unwrap()
        .join("my home & 100% $HOME \"quoted\"")
}

fn dry_run(hgd: &Hgd, home: &Path, manager: &str) -> String {
    ok(&hgd
        .command("hgd")
        .env("HGD_HOME", home)
        .args(["service", "install", "--dry-run", "--manager", manager])
        .output()
        .unwrap())
}

#[test]
fn the_launchd_agent_parses_as_a_property_list_with_the_right_keys() {
    let hgd = Hgd::new();
    let home = awkward_home(&hgd);
    let text = dry_run(&hgd, &home, "launchd");
    let value = plist::Value::from_reader_xml(text.as_bytes())
        .unwrap_or_else(|e| panic!("not a property list ({e}):\n{text}"));
    let agent = value.as_dictionary().expect("a dictionary");
    let string = |key: &str| agent[key].as_string().unwrap_or_else(|| panic!("{key}"));
    assert_eq!(string("Label"), "hgd.daemon");
    let arguments: Vec<&str> = agent["ProgramArguments"]
        .as_array()
        .unwrap()
        .iter()
        .map(|a| a.as_string().unwrap())
        .collect();
    assert_eq!(
        arguments,
        [bin("hgd-daemon").to_str().unwrap(), "daemon"],
        "the daemon by its absolute path"
    );
    assert_eq!(agent["RunAtLoad"].as_boolean(), Some(true));
    let keep_alive = agent["KeepAlive"].as_dictionary().unwrap();
    assert_eq!(keep_alive["SuccessfulExit"].as_boolean(), Some(false));
    assert!(agent["ThrottleInterval"].as_signed_integer().unwrap() > 0);
    assert!(["Background", "Adaptive"].contains(&string("ProcessType")));
    assert_eq!(agent["LowPriorityBackgroundIO"].as_boolean(), Some(true));
    let log = home.join("logs").join("daemon.log");
    assert_eq!(string("StandardOutPath"), log.to_str().unwrap());
    assert_eq!(string("StandardErrorPath"), log.to_str().unwrap());
    let environment = agent["EnvironmentVariables"].as_dictionary().unwrap();
    assert_eq!(
        environment["HGD_HOME"].as_string(),
        Some(home.to_str().unwrap())
    );
}

#[test]
fn the_systemd_unit_passes_systemd_analyze_verify() {
    let hgd = Hgd::new();
    let home = awkward_home(&hgd);
    let text = dry_run(&hgd, &home, "systemd");
    assert!(text.contains("Restart=on-failure"), "{text}");
    assert!(
        text.contains(&format!(
            "ExecStart=\"{}\" daemon",
            bin("hgd-daemon").display()
        )),
        "{text}"
    );
    // In Environment=, `%` is a specifier (doubled) but `$` is not special.
    assert!(
        text.contains(r#"Environment="HGD_HOME="#) && text.contains(r#"100%% $HOME \"quoted\""#),
        "{text}"
    );
    let dir = tempfile::tempdir().unwrap();
    let unit = dir.path().join("hgd.service");
    std::fs::write(&unit, &text).unwrap();
    // Its own runtime folder: systemd-analyze runs here without systemd as PID 1.
    let runtime = dir.path().join("runtime");
    std::fs::create_dir(&runtime).unwrap();
    std::fs::set_permissions(
        &runtime,
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let out = Command::new("systemd-analyze")
        .args(["verify", "--user"])
        .arg(&unit)
        .env("XDG_RUNTIME_DIR", &runtime)
        .output()
        .expect("systemd-analyze (Debian's systemd package; scripts/env.sh installs it)");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stderr.trim().is_empty(),
        "systemd-analyze verify: {}\n{stderr}\n{text}",
        out.status
    );
}

/// An installation whose service manager cannot be reached (no user bus; its own config folder
/// for unit files), and a repository with one file.
fn without_a_service_manager() -> (tempfile::TempDir, Hgd, GitRepo) {
    let config = tempfile::tempdir().unwrap();
    let hgd = Hgd::new()
        .with_env("XDG_RUNTIME_DIR", "/nonexistent")
        .with_env("DBUS_SESSION_BUS_ADDRESS", "unix:path=/nonexistent/bus")
        .with_env("XDG_CONFIG_HOME", config.path().to_str().unwrap());
    let repo = GitRepo::new();
    repo.write("a.py", "def f():\n    return 1\n");
    repo.commit_all("one");
    (config, hgd, repo)
}

/// With the home marked as owned by a service manager, a search asks the manager to start the
/// daemon and never starts one itself. (No systemd manager runs here, so the start fails and
/// the search says what to do.)
#[test]
fn a_client_does_not_start_a_daemon_for_a_home_a_service_manager_owns() {
    let (config, hgd, repo) = without_a_service_manager();
    std::fs::create_dir_all(hgd.home()).unwrap();
    // Installed as `hgd service install` leaves it: the unit, and the home marked.
    let unit = config.path().join("systemd/user/hgd.service");
    std::fs::create_dir_all(unit.parent().unwrap()).unwrap();
    std::fs::write(&unit, dry_run(&hgd, &hgd.home(), "systemd")).unwrap();
    std::fs::write(hgd.home().join("service"), "systemd").unwrap();
    if Command::new("systemctl")
        .args(["--user", "start", "hgd.service"])
        .env("XDG_RUNTIME_DIR", "/nonexistent")
        .status()
        .is_ok_and(|s| s.success())
    {
        eprintln!("skipped: a systemd user manager answered; this test needs one that does not");
        return;
    }
    let out = hgd.hgd(&repo.path(), &["search", "f"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hgd service"), "{stderr}");
    assert!(!hgd.socket().exists());
    assert!(
        !hgd.home().join("logs").join("daemon.log").exists(),
        "a daemon was started: {}",
        hgd.log()
    );
    // A mark whose unit was removed by hand is stale: the client starts the daemon again.
    std::fs::remove_file(&unit).unwrap();
    let out = hgd.hgd(&repo.path(), &["search", "f"]);
    assert_eq!(out.status.code(), Some(0), "{}", hgd.log());
}

/// An install the service manager refuses (none runs here) leaves nothing behind: no unit, no
/// mark, and hgd goes on starting the daemon itself.
#[test]
fn a_failed_install_leaves_nothing_installed() {
    let (config, hgd, repo) = without_a_service_manager();
    let out = hgd.hgd(
        &repo.path(),
        &["service", "install", "--manager", "systemd"],
    );
    if out.status.success() {
        eprintln!("skipped: a systemd user manager accepted the unit");
        let _ = hgd.hgd(
            &repo.path(),
            &["service", "uninstall", "--manager", "systemd"],
        );
        return;
    }
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("nothing was installed"), "{stderr}");
    assert!(!config.path().join("systemd/user/hgd.service").exists());
    assert!(!hgd.home().join("service").exists());
    let search = hgd.hgd(&repo.path(), &["search", "f"]);
    assert_eq!(search.status.code(), Some(0), "{}", hgd.log());
}

#[test]
fn status_and_uninstall_of_a_service_never_installed() {
    let hgd = Hgd::new();
    let config = tempfile::tempdir().unwrap();
    let run = |args: &[&str]| {
        ok(&hgd
            .command("hgd")
            .env("XDG_CONFIG_HOME", config.path())
            .args(args)
            .output()
            .unwrap())
    };
    let status = run(&["service", "status", "--manager", "systemd"]);
    assert!(status.contains("not installed"), "{status}");
    assert!(status.contains("daemon: not running"), "{status}");
    let removed = run(&["service", "uninstall", "--manager", "systemd"]);
    assert!(removed.contains("not installed"), "{removed}");
    let dry = run(&["service", "uninstall", "--dry-run", "--manager", "systemd"]);
    assert!(
        dry.contains(
            &config
                .path()
                .join("systemd/user/hgd.service")
                .display()
                .to_string()
        ),
        "{dry}"
    );
}

/// Against a real `systemd --user`, where one runs: install leaves a daemon that serves searches
/// and comes back after `kill -9`; uninstall stops it and removes the unit.
#[test]
fn install_survives_kill_and_uninstall_removes_it_under_systemd() {
    let running = Command::new("systemctl")
        .args(["--user", "is-system-running"])
        .output()
        .is_ok_and(|o| {
            let state = String::from_utf8_lossy(&o.stdout);
            matches!(state.trim(), "running" | "degraded")
        });
    if !running {
        eprintln!(
            "skipped: no systemd user manager runs here (`systemctl --user is-system-running`)"
        );
        return;
    }
    let unit = dirs_config().join("systemd/user/hgd.service");
    if unit.exists() {
        eprintln!("skipped: {} exists (a real installation)", unit.display());
        return;
    }
    let hgd = Hgd::new();
    let repo = GitRepo::new();
    repo.write("a.py", "def add(a, b):\n    return a + b\n");
    repo.commit_all("one");
    let install = hgd.hgd(&repo.path(), &["service", "install"]);
    assert!(
        install.status.success(),
        "{}",
        String::from_utf8_lossy(&install.stderr)
    );
    let search = hgd.hgd(&repo.path(), &["search", "add two numbers"]);
    assert_eq!(search.status.code(), Some(0), "{}", hgd.log());
    let pid = daemon_pid(&hgd);
    assert!(Command::new("kill")
        .args(["-9", &pid.to_string()])
        .status()
        .unwrap()
        .success());
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        std::thread::sleep(Duration::from_millis(200));
        if hgd.socket().exists() && daemon_pid_opt(&hgd).is_some_and(|p| p != pid) {
            break;
        }
        assert!(Instant::now() < deadline, "not restarted\n{}", hgd.log());
    }
    let uninstall = hgd.hgd(&repo.path(), &["service", "uninstall"]);
    assert!(uninstall.status.success());
    assert!(!unit.exists());
    std::thread::sleep(Duration::from_secs(1));
    assert!(daemon_pid_opt(&hgd).is_none(), "still running");
}

fn dirs_config() -> PathBuf {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(std::env::var_os("HOME").unwrap()).join(".config"))
}

fn daemon_pid_opt(hgd: &Hgd) -> Option<u64> {
    let out = hgd
        .command("hgd")
        .args(["status", "--json"])
        .output()
        .ok()?;
    let status: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
    status["pid"].as_u64()
}

fn daemon_pid(hgd: &Hgd) -> u64 {
    daemon_pid_opt(hgd).expect("a running daemon")
}

/// What service managers and terminals send when a session ends: each stops the daemon cleanly,
/// leaving neither its socket nor a held lock (a new daemon starts on the same home at once).
#[test]
fn sigterm_and_sighup_stop_the_daemon_cleanly() {
    let hgd = Hgd::new();
    for signal in ["-TERM", "-HUP", "-INT"] {
        let mut daemon = hgd.start_daemon();
        assert!(Command::new("kill")
            .args([signal, &daemon.id().to_string()])
            .status()
            .unwrap()
            .success());
        let status = daemon.wait().unwrap();
        assert!(
            status.success(),
            "{signal}: exited with {status}\n{}",
            hgd.log()
        );
        assert!(!hgd.socket().exists(), "{signal}: socket left behind");
    }
}
