//! Talking to the daemon: connect to its socket, start it in the background when nothing answers,
//! send one request and read response lines until the final one.

use std::fs;
use std::io::{BufRead, BufReader, ErrorKind, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use hgd_protocol::home::Home;
use hgd_protocol::{Envelope, Request, Response};
use interprocess::local_socket::{prelude::*, GenericFilePath, Stream};

/// How long a freshly started daemon may take to load its model and open the store.
const START_TIMEOUT: Duration = Duration::from_secs(60);

/// The longest silence accepted from the daemon between two reply lines. A working daemon sends
/// progress lines at least every second during long requests, so only a stopped, suspended or
/// wedged daemon is this quiet. `HGD_TIMEOUT` (seconds) overrides it.
const REPLY_TIMEOUT: Duration = Duration::from_secs(30);

fn reply_timeout() -> Duration {
    std::env::var("HGD_TIMEOUT")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(REPLY_TIMEOUT, Duration::from_secs_f64)
}

/// Whether a daemon holds the home's lock (is running), whether or not its socket answers.
fn lock_is_held(home: &Home) -> bool {
    fs::File::open(home.lock_file())
        .map(|file| matches!(file.try_lock(), Err(fs::TryLockError::WouldBlock)))
        .unwrap_or(false)
}

pub struct Connection {
    reader: BufReader<Stream>,
}

impl Connection {
    /// Connects to a running daemon, or `None` when nothing listens on the socket.
    pub fn try_connect(home: &Home) -> Option<Connection> {
        let name = home.socket().to_fs_name::<GenericFilePath>().ok()?;
        let stream = Stream::connect(name).ok()?;
        let timeout = reply_timeout();
        stream.set_recv_timeout(Some(timeout)).ok()?;
        stream.set_send_timeout(Some(timeout)).ok()?;
        Some(Connection {
            reader: BufReader::new(stream),
        })
    }

    /// Connects, starting the daemon in the background first if none answers.
    pub fn connect_or_start(home: &Home) -> Result<Connection> {
        if let Some(conn) = Connection::try_connect(home) {
            return Ok(conn);
        }
        if crate::service::is_managed_now(home) {
            return Connection::start_managed(home);
        }
        let mut child = start_daemon(home)?;
        let mut restarted = false;
        let mut deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(conn) = Connection::try_connect(home) {
                return Ok(conn);
            }
            if let Some(status) = child.try_wait()? {
                // Ours could not take the home: another daemon holds it, one started by another
                // client (still loading, or repairing its store), one whose socket was deleted
                // (it binds it again), or one stopping (replaced by a new version). Wait for it
                // to answer, or to let go of the home and then start ours once more.
                if lock_is_held(home) {
                    if Instant::now() > deadline {
                        bail!(
                            "another hgd daemon holds {} but did not answer within {}s; see {}",
                            home.lock_file().display(),
                            START_TIMEOUT.as_secs(),
                            home.daemon_log().display()
                        );
                    }
                    std::thread::sleep(Duration::from_millis(25));
                    continue;
                }
                if let Some(conn) = Connection::try_connect(home) {
                    return Ok(conn);
                }
                if !restarted {
                    restarted = true;
                    child = start_daemon(home)?;
                    // The new daemon gets the whole start time, however long we waited.
                    deadline = Instant::now() + START_TIMEOUT;
                    continue;
                }
                bail!(
                    "the hgd daemon exited ({status}) before it was ready:\n{}",
                    log_tail(&home.daemon_log(), 15)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "the hgd daemon did not answer within {}s; see {}",
                    START_TIMEOUT.as_secs(),
                    home.daemon_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Has the service manager start the daemon (the client must not start a second one) and
    /// connects once it answers.
    fn start_managed(home: &Home) -> Result<Connection> {
        crate::service::start_managed(home).context(
            "the hgd service is installed but did not start; see `hgd service status`, or run \
             `hgd service uninstall` to let hgd start the daemon itself",
        )?;
        let deadline = Instant::now() + START_TIMEOUT;
        loop {
            if let Some(conn) = Connection::try_connect(home) {
                return Ok(conn);
            }
            if Instant::now() > deadline {
                bail!(
                    "the hgd service did not answer within {}s; see `hgd service status` and {}",
                    START_TIMEOUT.as_secs(),
                    home.daemon_log().display()
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        }
    }

    /// Sends `request`; calls `on_progress` for each progress line; returns the final response.
    pub fn request(
        &mut self,
        request: Request,
        mut on_progress: impl FnMut(&hgd_protocol::Progress),
    ) -> Result<Response> {
        let mut line = serde_json::to_string(&Envelope::new(request))?;
        line.push('\n');
        self.reader
            .get_mut()
            .write_all(line.as_bytes())
            .context("send the request to the daemon")?;
        loop {
            let mut reply = String::new();
            let n = match self.reader.read_line(&mut reply) {
                Ok(n) => n,
                Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                    bail!(
                        "the daemon did not answer for {}s: it may be suspended, stuck or overloaded; \
                         check `hgd status` and its log, or restart it with `hgd stop` (HGD_TIMEOUT \
                         sets the wait in seconds)",
                        reply_timeout().as_secs_f64()
                    )
                }
                Err(e) => return Err(e).context("read the daemon's reply"),
            };
            if n == 0 {
                return Err(anyhow!(
                    "the daemon closed the connection; see `hgd status` and {}",
                    home_log_hint()
                ));
            }
            let response: Response = serde_json::from_str(&reply)
                .with_context(|| format!("unexpected reply from the daemon: {}", reply.trim()))?;
            match response {
                Response::Progress(p) => on_progress(&p),
                other => return Ok(other),
            }
        }
    }
}

/// Where the daemon's log is, for error messages.
pub fn home_log_hint() -> String {
    Home::from_env()
        .map(|home| format!("its log, {}", home.daemon_log().display()))
        .unwrap_or_else(|_| "its log".into())
}

/// The daemon binary: `HGD_DAEMON_BIN`, else `hgd-daemon` beside this executable, else on PATH.
pub fn daemon_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("HGD_DAEMON_BIN").filter(|v| !v.is_empty()) {
        return PathBuf::from(bin);
    }
    if let Ok(exe) = std::env::current_exe() {
        let sibling = exe.with_file_name("hgd-daemon");
        if sibling.is_file() {
            return sibling;
        }
    }
    PathBuf::from("hgd-daemon")
}

/// Starts `hgd-daemon daemon` detached from this terminal, logging to the home's logs folder.
fn start_daemon(home: &Home) -> Result<std::process::Child> {
    fs::create_dir_all(home.logs()).with_context(|| format!("create {}", home.logs().display()))?;
    let log = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(home.daemon_log())
        .with_context(|| format!("open {}", home.daemon_log().display()))?;
    let mut cmd = Command::new(daemon_binary());
    cmd.arg("daemon")
        .env("HGD_HOME", home.root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        // Its own process group: a Ctrl-C meant for this command must not stop the daemon.
        cmd.process_group(0);
    }
    cmd.spawn()
        .with_context(|| format!("start {}", daemon_binary().display()))
}

fn log_tail(path: &Path, lines: usize) -> String {
    let text = fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
