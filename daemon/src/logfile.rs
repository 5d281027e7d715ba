//! The daemon's log, kept to a bounded size for a daemon that runs for months.
//!
//! The daemon logs to its stderr, which the client (or launchd, or systemd) opens on the home's
//! `logs/daemon.log`. When that file passes its limit, it is renamed `daemon.log.1` (replacing the
//! previous one) and a new `daemon.log` takes over stdout and stderr, where tracing, panic
//! messages and ONNX Runtime all write. So the logs never hold more than twice the limit.
//! A daemon whose stderr is something else (a terminal, a pipe) leaves it alone, and so does one
//! that does not hold the home's lock.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// The default limit of `daemon.log`; `HGD_LOG_MAX_KIB` changes it.
pub const DEFAULT_MAX_BYTES: u64 = 10 << 20;

/// The limit from `HGD_LOG_MAX_KIB`, else the default.
pub fn max_bytes_from_env() -> u64 {
    std::env::var("HGD_LOG_MAX_KIB")
        .ok()
        .and_then(|v| v.trim().parse::<u64>().ok())
        .filter(|&kib| kib > 0)
        .map_or(DEFAULT_MAX_BYTES, |kib| kib.saturating_mul(1024))
}

/// A tracing writer to stderr that rotates the log file behind it.
#[derive(Clone)]
pub struct RotatingStderr {
    state: Arc<State>,
}

struct State {
    /// The log file, when stderr is that file; `None`: never rotate.
    path: Option<PathBuf>,
    max_bytes: u64,
    /// Bytes in the current file, as far as this process knows (other writers to stderr are
    /// counted at the next rotation check, which reads the file's size).
    written: AtomicU64,
    rotating: Mutex<()>,
}

impl RotatingStderr {
    /// Rotates `log` if stderr is that file; otherwise writes to stderr as it is.
    pub fn new(log: Option<PathBuf>, max_bytes: u64) -> RotatingStderr {
        let size = log.as_ref().and_then(|path| stderr_size_if_is(path));
        RotatingStderr {
            state: Arc::new(State {
                path: log.filter(|_| size.is_some()),
                max_bytes,
                written: AtomicU64::new(size.unwrap_or(0)),
                rotating: Mutex::new(()),
            }),
        }
    }
}

/// Off until the daemon holds its home's lock: a daemon that loses the race for the home must
/// not rotate the log of the one that won.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Lets the log rotate (call once the home's lock is held).
pub fn enable_rotation() {
    ENABLED.store(true, Ordering::Relaxed);
}

impl State {
    fn rotate_if_full(&self) {
        let Some(path) = &self.path else { return };
        if !ENABLED.load(Ordering::Relaxed) {
            return;
        }
        let _only_one = self.rotating.lock().unwrap_or_else(|p| p.into_inner());
        // The size of what stderr writes to now (other writers to it count too).
        let Some((stderr_file, size)) = stderr_identity_and_size() else {
            return;
        };
        if size <= self.max_bytes {
            self.written.store(size, Ordering::Relaxed);
            return;
        }
        self.written.store(0, Ordering::Relaxed);
        if let Err(e) = rotate(path, stderr_file) {
            // Keep writing where we are; try again after another limit's worth.
            let _ = writeln!(
                io::stderr(),
                "hgd-daemon: cannot rotate {}: {e}",
                path.display()
            );
        }
    }
}

/// Points stdout and stderr at a new, empty log at `path`. If `path` is the file stderr writes to,
/// it becomes `.1` first; if it is not (moved away by someone else, or gone), a new file is
/// simply made there, so rotation never stops for good.
fn rotate(path: &std::path::Path, stderr_file: (u64, u64)) -> io::Result<()> {
    if identity_of(path) == Some(stderr_file) {
        fs::rename(path, path.with_extension("log.1"))?;
    }
    let file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .mode(0o600)
        .open(path)?;
    for fd in [1, 2] {
        // SAFETY: dup2 on an open descriptor and the process's own standard descriptors.
        if unsafe { libc::dup2(file.as_raw_fd(), fd) } < 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn identity_of(path: &std::path::Path) -> Option<(u64, u64)> {
    fs::metadata(path).ok().map(|m| (m.dev(), m.ino()))
}

/// Device, inode and size of the file stderr writes to.
fn stderr_identity_and_size() -> Option<((u64, u64), u64)> {
    // SAFETY: fstat on descriptor 2 into a zeroed struct.
    let mut stat: libc::stat = unsafe { std::mem::zeroed() };
    if unsafe { libc::fstat(2, &mut stat) } != 0 {
        return None;
    }
    Some((
        (stat.st_dev as u64, stat.st_ino as u64),
        stat.st_size as u64,
    ))
}

/// The size of stderr's file if stderr is the file at `path`.
fn stderr_size_if_is(path: &std::path::Path) -> Option<u64> {
    let (identity, size) = stderr_identity_and_size()?;
    (identity_of(path) == Some(identity)).then_some(size)
}

/// One event's writer.
pub struct EventWriter<'a> {
    state: &'a State,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = io::stderr().write(buf)?;
        let total = self.state.written.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if total > self.state.max_bytes {
            self.state.rotate_if_full();
        }
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        io::stderr().flush()
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RotatingStderr {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> EventWriter<'a> {
        EventWriter { state: &self.state }
    }
}
