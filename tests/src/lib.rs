//! Helpers for end-to-end tests: real git repositories in temp dirs, the real `hgd` and
//! `hgd-daemon` binaries, a daemon per test on its own home, and the model installed by `hgd setup`.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use hgd_protocol::home::Home;

/// Folder with the built binaries: tests run from `target/<profile>/deps/`.
pub fn bin_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HGD_BIN") {
        return PathBuf::from(dir);
    }
    let exe = std::env::current_exe().expect("test executable path");
    exe.parent()
        .and_then(Path::parent)
        .expect("target/<profile>/deps")
        .to_path_buf()
}

pub fn bin(name: &str) -> PathBuf {
    let path = bin_dir().join(name);
    assert!(
        path.is_file(),
        "{} is missing: build the binaries first (`bash -c 'source scripts/env.sh && hgd_build'`)",
        path.display()
    );
    path
}

/// The home `hgd setup` provisioned (HGD_HOME or the platform default); tests share its runtime and
/// model and never write to it.
pub fn provisioned() -> (PathBuf, PathBuf) {
    let home = Home::from_env().expect("a home directory");
    let model = home.model_dir();
    let runtime = std::fs::read_dir(home.runtime_dir())
        .ok()
        .and_then(|mut entries| entries.find_map(|e| e.ok().map(|e| e.path())))
        .unwrap_or_else(|| home.runtime_dir().join("missing"));
    assert!(
        model.join("model.onnx").is_file() && runtime.is_file(),
        "the model and runtime are not installed in {}: run `hgd setup` first",
        home.root().display()
    );
    (runtime, model)
}

/// One isolated hgd installation: its own home (socket, index, logs), the shared model.
pub struct Hgd {
    pub dir: tempfile::TempDir,
    runtime: PathBuf,
    model: PathBuf,
    /// Extra environment for every command (and so for the daemon the client starts).
    env: Vec<(String, String)>,
}

impl Default for Hgd {
    fn default() -> Self {
        Self::new()
    }
}

impl Hgd {
    pub fn new() -> Hgd {
        let (runtime, model) = provisioned();
        Hgd {
            dir: tempfile::Builder::new()
                .prefix("hgd")
                .tempdir()
                .expect("temp dir"),
            runtime,
            model,
            env: Vec::new(),
        }
    }

    /// The same installation with `key=value` in every command's environment.
    pub fn with_env(mut self, key: &str, value: &str) -> Hgd {
        self.env.push((key.to_owned(), value.to_owned()));
        self
    }

    pub fn home(&self) -> PathBuf {
        self.dir.path().join("home")
    }

    /// The config file this installation's commands read (`HGD_CONFIG`).
    pub fn config_file(&self) -> PathBuf {
        self.dir.path().join("config.toml")
    }

    pub fn socket(&self) -> PathBuf {
        self.home().join("hgd.sock")
    }

    /// A command for one of the binaries with this installation's environment.
    pub fn command(&self, binary: &str) -> Command {
        self.command_at(&bin(binary))
    }

    /// A command for the program at `program` (a copy of a binary) with this installation's
    /// environment.
    pub fn command_at(&self, program: &Path) -> Command {
        let mut cmd = Command::new(program);
        cmd.env("HGD_HOME", self.home())
            .env("HGD_MODEL_DIR", &self.model)
            .env("HGD_ORT_DYLIB", &self.runtime)
            .env("HGD_DAEMON_BIN", bin("hgd-daemon"))
            // Its own config file (absent unless a test writes it), not the developer's.
            .env("HGD_CONFIG", self.config_file())
            .env("HGD_THREADS", "1")
            .env("NO_COLOR", "1")
            .env_remove("HGD_LOG")
            .env_remove("HGD_RANK_WITHOUT");
        for (key, value) in &self.env {
            cmd.env(key, value);
        }
        cmd
    }

    /// Runs `hgd ARGS` in `cwd`.
    pub fn hgd(&self, cwd: &Path, args: &[&str]) -> Output {
        self.command("hgd")
            .current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("run hgd")
    }

    /// Runs `hgd index` in `cwd` and fails the test if it fails.
    pub fn index(&self, cwd: &Path) {
        let out = self.hgd(cwd, &["index"]);
        assert!(
            out.status.success(),
            "hgd index failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// Runs `hgd check` in `cwd` (which first brings the index up to date) and fails the test
    /// unless the store holds exactly what HEAD does.
    pub fn assert_consistent(&self, cwd: &Path) {
        let out = self.hgd(cwd, &["check"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "hgd check: {}{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
    }

    /// `hgd status --json`, parsed.
    pub fn status(&self, cwd: &Path) -> serde_json::Value {
        let out = self.hgd(cwd, &["status", "--json"]);
        serde_json::from_slice(&out.stdout).expect("status --json prints JSON")
    }

    /// Runs `hgd search --json -n N QUERY [PATH]` and returns the parsed results.
    pub fn search_json(&self, cwd: &Path, query: &str, n: usize) -> Vec<serde_json::Value> {
        let n = n.to_string();
        let out = self.hgd(cwd, &["search", "--json", "-n", &n, query]);
        assert!(
            out.status.code() == Some(0) || out.status.code() == Some(1),
            "hgd search failed: {}\n{}",
            String::from_utf8_lossy(&out.stderr),
            self.log()
        );
        serde_json::from_slice(&out.stdout).expect("--json prints a JSON array")
    }

    /// Waits (up to 60 s) until a job of the repository at `cwd` is running and has embedded at
    /// least `min_done` blocks, or all but 5 when its known total is smaller (a job resumed
    /// after a crash has only what was not stored left); panics if no job gets there (it
    /// finished first, or never started).
    pub fn wait_for_running_job(&self, cwd: &Path, min_done: u64) {
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut last = serde_json::Value::Null;
        while Instant::now() < deadline {
            last = self.status(cwd);
            let running = last["repos"].as_array().into_iter().flatten().any(|r| {
                let progress = &r["progress"];
                let wanted = match progress["total"].as_u64() {
                    Some(total) if progress["total_known"] == true => {
                        min_done.min(total.saturating_sub(5).max(1))
                    }
                    _ => min_done,
                };
                r["state"] == "indexing" && progress["done"].as_u64() >= Some(wanted)
            });
            if running {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("no job reached {min_done} embedded blocks: {last:#}");
    }

    /// Runs `hgd ARGS` in `cwd` with extra environment, killing it after `limit`: returns `None`
    /// if it had to be killed (it hung).
    pub fn hgd_within(
        &self,
        cwd: &Path,
        args: &[&str],
        env: &[(&str, &str)],
        limit: Duration,
    ) -> Option<Output> {
        let mut cmd = self.command("hgd");
        cmd.current_dir(cwd)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("run hgd");
        let deadline = Instant::now() + limit;
        while Instant::now() < deadline {
            if child.try_wait().expect("wait for hgd").is_some() {
                return Some(child.wait_with_output().expect("hgd output"));
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = child.kill();
        let _ = child.wait();
        None
    }

    /// Starts `hgd-daemon daemon` in the foreground as a child and waits for its socket.
    pub fn start_daemon(&self) -> std::process::Child {
        let log = std::fs::File::create(self.dir.path().join("daemon.out")).expect("log file");
        let child = self
            .command("hgd-daemon")
            .arg("daemon")
            .stdout(log.try_clone().expect("log"))
            .stderr(log)
            .spawn()
            .expect("start the daemon");
        self.wait_for_socket();
        child
    }

    /// Stops a daemon started with [`Hgd::start_daemon`] (`hgd stop`) and waits for it to exit.
    pub fn stop(&self, daemon: &mut std::process::Child) {
        let _ = self.command("hgd").arg("stop").output();
        daemon.wait().expect("wait for the daemon");
    }

    pub fn wait_for_socket(&self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            if UnixStream::connect(self.socket()).is_ok() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the daemon did not listen within 60s\n{}", self.log());
    }

    /// Raw socket connection, for protocol-level tests.
    pub fn connect(&self) -> RawClient {
        let stream = UnixStream::connect(self.socket()).expect("connect to the daemon");
        stream
            .set_read_timeout(Some(Duration::from_secs(120)))
            .expect("timeout");
        RawClient {
            reader: BufReader::new(stream),
        }
    }

    /// Everything the daemon logged, for failure messages.
    pub fn log(&self) -> String {
        let mut text = String::new();
        for path in [
            self.dir.path().join("daemon.out"),
            self.home().join("logs").join("daemon.log"),
        ] {
            if let Ok(s) = std::fs::read_to_string(&path) {
                text.push_str(&format!("--- {}\n{s}", path.display()));
            }
        }
        text
    }
}

impl Drop for Hgd {
    fn drop(&mut self) {
        // Stop any daemon this test started (auto-started ones included).
        if self.socket().exists() {
            let _ = self.command("hgd").arg("stop").output();
        }
    }
}

pub struct RawClient {
    reader: BufReader<UnixStream>,
}

impl RawClient {
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.reader.get_mut().write_all(bytes).expect("write");
    }

    /// Reads one response line as JSON.
    pub fn read(&mut self) -> serde_json::Value {
        let mut line = String::new();
        self.reader.read_line(&mut line).expect("read a reply");
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("reply {line:?} is not JSON: {e}"))
    }

    /// Reads lines until a final (non-progress) one.
    pub fn read_final(&mut self) -> serde_json::Value {
        loop {
            let reply = self.read();
            if reply["type"] != "progress" {
                return reply;
            }
        }
    }
}

/// A real git repository in a temp dir.
pub struct GitRepo {
    pub dir: tempfile::TempDir,
}

impl Default for GitRepo {
    fn default() -> Self {
        Self::new()
    }
}

impl GitRepo {
    pub fn new() -> GitRepo {
        let repo = GitRepo {
            dir: tempfile::Builder::new()
                .prefix("repo")
                .tempdir()
                .expect("temp dir"),
        };
        repo.git(&["init", "-q", "-b", "main"]);
        repo.git(&["config", "user.email", "test@example.com"]);
        repo.git(&["config", "user.name", "hgd test"]);
        repo.git(&["config", "commit.gpgsign", "false"]);
        repo
    }

    pub fn path(&self) -> PathBuf {
        self.dir.path().canonicalize().expect("repo path")
    }

    pub fn git(&self, args: &[&str]) -> String {
        self.git_with(args, &[])
    }

    /// Runs git with extra environment (e.g. `HGD_HOME`, so installed hooks reach a test's daemon)
    /// and fails the test if it fails.
    pub fn git_with(&self, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
        git_in(self.dir.path(), args, env)
    }

    pub fn write(&self, path: &str, content: impl AsRef<[u8]>) {
        let full = self.dir.path().join(path);
        std::fs::create_dir_all(full.parent().expect("parent")).expect("mkdir");
        std::fs::write(full, content).expect("write file");
    }

    pub fn commit_all(&self, message: &str) {
        self.git(&["add", "-A"]);
        self.git(&["commit", "-q", "-m", message]);
    }
}

/// Runs git in `dir` (any folder: a clone, a bare repository, a linked worktree) as a test
/// identity, with extra environment, and fails the test if it fails.
pub fn git_in(dir: &Path, args: &[&str], env: &[(&str, &std::ffi::OsStr)]) -> String {
    let mut cmd = Command::new("git");
    cmd.current_dir(dir)
        .args(args)
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_AUTHOR_NAME", "hgd test")
        .env("GIT_AUTHOR_EMAIL", "test@example.com")
        .env("GIT_COMMITTER_NAME", "hgd test")
        .env("GIT_COMMITTER_EMAIL", "test@example.com");
    for (key, value) in env {
        cmd.env(key, value);
    }
    let out = cmd.output().expect("run git");
    assert!(
        out.status.success(),
        "git {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The standard output of a command that must have succeeded (else the test fails with its
/// standard error).
pub fn ok(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).expect("UTF-8 output")
}

/// The `file` fields of search results.
pub fn files(results: &[serde_json::Value]) -> Vec<String> {
    results
        .iter()
        .map(|r| r["file"].as_str().unwrap_or_default().to_owned())
        .collect()
}

/// A real S3 API server on loopback (PyPI's `moto[server]`, pinned in `scripts/s3-venv.sh`),
/// checking credentials, with one bucket; stopped when dropped.
pub struct S3Server {
    child: Option<std::process::Child>,
    pub endpoint: String,
    pub bucket: String,
    pub access_key: String,
    pub secret_key: String,
}

impl S3Server {
    pub fn start() -> S3Server {
        static PYTHON: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let python = PYTHON.get_or_init(|| {
            let out = Command::new("bash")
                .arg(root.join("scripts/s3-venv.sh"))
                .output()
                .expect("run scripts/s3-venv.sh");
            assert!(
                out.status.success(),
                "scripts/s3-venv.sh failed: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            PathBuf::from(String::from_utf8_lossy(&out.stdout).trim())
        });
        let mut child = Command::new(python)
            .arg(root.join("tests/s3/server.py"))
            .arg("0")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start the S3 server");
        let mut line = String::new();
        BufReader::new(child.stdout.take().expect("stdout"))
            .read_line(&mut line)
            .expect("the S3 server's first line");
        let info: serde_json::Value = serde_json::from_str(&line)
            .unwrap_or_else(|e| panic!("the S3 server did not start ({e}): {line:?}"));
        let text = |k: &str| info[k].as_str().expect("server info").to_owned();
        S3Server {
            endpoint: text("endpoint"),
            bucket: text("bucket"),
            access_key: text("access_key"),
            secret_key: text("secret_key"),
            child: Some(child),
        }
    }

    /// `s3://BUCKET/PREFIX`.
    pub fn uri(&self, prefix: &str) -> String {
        format!("s3://{}/{prefix}", self.bucket)
    }

    /// Stops the server (SIGSTOP): connections are accepted and never answered.
    pub fn pause(&mut self) {
        if let Some(child) = &self.child {
            let _ = Command::new("kill")
                .args(["-STOP", &child.id().to_string()])
                .status();
        }
    }

    /// Kills the server at once (SIGKILL): requests after this are refused.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        self.kill();
    }
}

impl Hgd {
    /// This installation with the server's credentials in the AWS environment variables (and
    /// no profile file, so nothing of the developer's is used).
    pub fn with_s3_credentials(self, server: &S3Server) -> Hgd {
        self.with_aws_keys(&server.access_key, &server.secret_key)
    }

    pub fn with_aws_keys(self, key: &str, secret: &str) -> Hgd {
        let none = self.dir.path().join("no-aws-files");
        self.with_env("AWS_ACCESS_KEY_ID", key)
            .with_env("AWS_SECRET_ACCESS_KEY", secret)
            .with_env("AWS_CONFIG_FILE", &none.to_string_lossy())
            .with_env("AWS_SHARED_CREDENTIALS_FILE", &none.to_string_lossy())
            .with_env("AWS_EC2_METADATA_DISABLED", "true")
    }

    /// `hgd remote add NAME URI --endpoint … --allow-http --region us-east-1 EXTRA…`.
    pub fn add_remote(&self, name: &str, server: &S3Server, prefix: &str, extra: &[&str]) {
        let uri = server.uri(prefix);
        let mut args = vec![
            "remote",
            "add",
            name,
            &uri,
            "--endpoint",
            &server.endpoint,
            "--allow-http",
            "--region",
            "us-east-1",
        ];
        args.extend_from_slice(extra);
        let out = self.hgd(self.dir.path(), &args);
        assert!(
            out.status.success(),
            "hgd remote add: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
