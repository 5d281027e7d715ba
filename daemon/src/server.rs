//! The socket server: one Unix socket, JSON-lines frames, a bounded number of connections, and a
//! graceful shutdown that stops accepting, lets requests finish, and removes the socket.

use std::collections::HashMap;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures::{SinkExt, StreamExt};
use hgd_protocol::home::Home;
use hgd_protocol::{
    Envelope, ErrorCode, Response, MAX_FRAME_BYTES, OLDEST_PROTOCOL_VERSION, PROTOCOL_VERSION,
};
use interprocess::local_socket::tokio::{prelude::*, Stream};
use interprocess::local_socket::{GenericFilePath, ListenerOptions};
use interprocess::os::unix::local_socket::ListenerOptionsExt;
use tokio::sync::Semaphore;
use tokio_util::codec::{Framed, LinesCodec, LinesCodecError};
use tokio_util::sync::CancellationToken;

use crate::cmd;
use crate::service::Service;

/// Open connections at most. When all are taken, the one idle the longest is closed to make
/// room, so clients that connect and say nothing can never lock others out.
const MAX_CONNECTIONS: usize = 64;

/// A connection that sends no complete request for this long is closed. Requests that take long
/// (waiting for an index) keep the connection busy, not idle, and stream progress meanwhile.
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);

/// Connections waiting for their next request, by connection number: when they went idle and how
/// to close them.
#[derive(Default)]
struct IdleConnections {
    waiting: Mutex<HashMap<u64, (Instant, CancellationToken)>>,
}

impl IdleConnections {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, (Instant, CancellationToken)>> {
        self.waiting.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn enter(&self, id: u64) -> CancellationToken {
        let token = CancellationToken::new();
        self.lock().insert(id, (Instant::now(), token.clone()));
        token
    }

    fn leave(&self, id: u64) {
        self.lock().remove(&id);
    }

    /// Closes the connection that has been idle the longest; false if none is idle.
    fn evict_oldest(&self) -> bool {
        let mut waiting = self.lock();
        let oldest = waiting
            .iter()
            .min_by_key(|(_, (since, _))| *since)
            .map(|(id, _)| *id);
        match oldest.and_then(|id| waiting.remove(&id)) {
            Some((_, token)) => {
                token.cancel();
                true
            }
            None => false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error(
        "another hgd daemon is already running on {0} (lock held on {1}); `hgd stop` stops it"
    )]
    AlreadyRunning(String, String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> ServerError {
    let context = context.into();
    move |source| ServerError::Io { context, source }
}

/// Set when the daemon stops because its executable was replaced: it then exits with a failure
/// status, so that a service manager that restarts on failure (systemd's `on-failure`) starts
/// the new version.
pub static REPLACED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// How often the daemon checks that its socket and lock file are still in the home.
const OWNERSHIP_CHECK: Duration = Duration::from_secs(2);

/// Held for the daemon's lifetime: the flock that keeps a second daemon off this home.
pub struct HomeLock {
    _file: fs::File,
    /// The lock file's identity: when the home's lock file is another one, the home was deleted
    /// or replaced and another daemon may own it now.
    identity: FileIdentity,
}

/// A file by device and inode, which tells a file from another one made at the same path.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileIdentity(u64, u64);

impl FileIdentity {
    fn of_path(path: &std::path::Path) -> Option<FileIdentity> {
        use std::os::unix::fs::MetadataExt;
        fs::symlink_metadata(path)
            .ok()
            .map(|m| FileIdentity(m.dev(), m.ino()))
    }
}

/// Prepares the home (mode 0700) and takes the daemon lock, refusing if another daemon holds it.
pub fn lock_home(home: &Home) -> Result<HomeLock, ServerError> {
    fs::create_dir_all(home.root()).map_err(io_err(format!("create {}", home.root().display())))?;
    fs::set_permissions(home.root(), fs::Permissions::from_mode(0o700))
        .map_err(io_err(format!("chmod {}", home.root().display())))?;
    fs::create_dir_all(home.logs()).map_err(io_err("create the logs folder"))?;
    let path = home.lock_file();
    let file = fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .read(true)
        .write(true)
        .open(&path)
        .map_err(io_err(format!("open {}", path.display())))?;
    // A client checking whether a daemon runs takes the lock for an instant: try a few times.
    let mut locked = file.try_lock().is_ok();
    for _ in 0..10 {
        if locked {
            break;
        }
        std::thread::sleep(Duration::from_millis(30));
        locked = file.try_lock().is_ok();
    }
    if !locked {
        return Err(ServerError::AlreadyRunning(
            home.root().display().to_string(),
            path.display().to_string(),
        ));
    }
    file.set_len(0).ok();
    std::io::Write::write_all(&mut &file, format!("{}\n", std::process::id()).as_bytes()).ok();
    let identity = {
        use std::os::unix::fs::MetadataExt;
        let meta = file
            .metadata()
            .map_err(io_err(format!("stat {}", path.display())))?;
        FileIdentity(meta.dev(), meta.ino())
    };
    Ok(HomeLock {
        _file: file,
        identity,
    })
}

/// What the periodic check found.
#[derive(Debug, PartialEq, Eq)]
enum Ownership {
    /// The socket and lock file are this daemon's.
    Intact,
    /// The socket file was deleted or replaced: bind it again, or clients cannot reach us.
    SocketLost,
    /// The lock file is gone or another one: the home was deleted or moved, and a new daemon may
    /// serve it. Stop, rather than run on unreachable or take its socket away.
    HomeLost,
    /// This daemon's executable was replaced (a new version installed): stop, so that the next
    /// client (or the service manager) starts the new one.
    BinaryReplaced,
}

/// This process's executable and its identity now, to notice when a new version replaces it.
fn own_binary() -> Option<(std::path::PathBuf, FileIdentity)> {
    let path = std::env::current_exe().ok()?;
    let identity = FileIdentity::of_path(&path)?;
    Some((path, identity))
}

fn ownership(
    home: &Home,
    lock: &HomeLock,
    socket: Option<FileIdentity>,
    binary: &Option<(std::path::PathBuf, FileIdentity)>,
) -> Ownership {
    if FileIdentity::of_path(&home.lock_file()) != Some(lock.identity) {
        Ownership::HomeLost
    } else if binary
        .as_ref()
        .is_some_and(|(path, identity)| FileIdentity::of_path(path) != Some(*identity))
    {
        Ownership::BinaryReplaced
    } else if socket.is_none() || FileIdentity::of_path(&home.socket()) != socket {
        Ownership::SocketLost
    } else {
        Ownership::Intact
    }
}

/// Binds the socket (mode 0600). Call only while holding the home lock: a leftover socket file
/// belongs to a dead daemon and is replaced.
pub fn bind(home: &Home) -> Result<LocalSocketListener, ServerError> {
    let path = home.socket();
    if path.exists() {
        fs::remove_file(&path).map_err(io_err(format!("remove stale {}", path.display())))?;
    }
    let name = path
        .clone()
        .to_fs_name::<GenericFilePath>()
        .map_err(io_err("socket name"))?;
    ListenerOptions::new()
        .name(name)
        .mode(0o600)
        // Not unlinked by path when the listener drops: the path may be another listener's by
        // then (see `serve`, which removes it only if it is still this daemon's).
        .reclaim_name(false)
        .create_tokio()
        .map_err(io_err(format!("listen on {}", path.display())))
}

type LocalSocketListener = interprocess::local_socket::tokio::Listener;

/// Accepts connections until `shutdown` fires, then waits briefly for open requests and removes the
/// socket (only if it is still this daemon's). Every few seconds it checks that the socket and the
/// lock file are still its own: a deleted socket is bound again, and a deleted home stops it.
pub async fn serve(
    home: Home,
    lock: Arc<HomeLock>,
    mut listener: LocalSocketListener,
    service: Arc<Service>,
) {
    let (home, lock) = (&home, &*lock);
    let shutdown = service.shutdown.clone();
    let mut socket = FileIdentity::of_path(&home.socket());
    let binary = own_binary();
    let mut check = tokio::time::interval_at(
        tokio::time::Instant::now() + OWNERSHIP_CHECK,
        OWNERSHIP_CHECK,
    );
    check.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let idle = Arc::new(IdleConnections::default());
    let tracker = tokio_util::task::TaskTracker::new();
    let mut next_id: u64 = 0;
    tracing::info!("listening on {}", home.socket().display());
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(stream) => stream,
                Err(e) => {
                    tracing::warn!("accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = check.tick() => {
                match ownership(home, lock, socket, &binary) {
                    Ownership::Intact => {}
                    Ownership::SocketLost => match bind(home) {
                        Ok(rebound) => {
                            listener = rebound;
                            socket = FileIdentity::of_path(&home.socket());
                            tracing::warn!("{} was deleted or replaced: listening on it again", home.socket().display());
                        }
                        Err(e) => tracing::warn!("cannot listen again on {}: {e}", home.socket().display()),
                    },
                    Ownership::BinaryReplaced => {
                        tracing::info!("hgd-daemon was replaced by another version: stopping, so that the next client starts the new one");
                        REPLACED.store(true, std::sync::atomic::Ordering::Relaxed);
                        shutdown.cancel();
                    }
                    Ownership::HomeLost => {
                        tracing::warn!("{} is no longer this daemon's home (its lock file was deleted or replaced): stopping", home.root().display());
                        shutdown.cancel();
                    }
                }
                continue;
            }
            _ = shutdown.cancelled() => break,
        };
        // Full: make room by closing the longest-idle connection, and keep trying while every
        // connection is busy (a request that ends leaves its connection idle, to be closed next).
        let permit = loop {
            if let Ok(permit) = slots.clone().try_acquire_owned() {
                break Some(permit);
            }
            if idle.evict_oldest() {
                tracing::debug!("closed an idle connection to make room");
            }
            tokio::select! {
                permit = slots.clone().acquire_owned() => break Some(permit.expect("semaphore is never closed")),
                _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                _ = shutdown.cancelled() => break None,
            }
        };
        let Some(permit) = permit else { break };
        next_id += 1;
        let (service, idle, id) = (service.clone(), idle.clone(), next_id);
        // Idle from the moment it is accepted, so it can be evicted before its task first runs.
        let evicted = idle.enter(id);
        tracker.spawn(async move {
            handle_connection(stream, service, &idle, id, evicted).await;
            idle.leave(id);
            drop(permit);
        });
    }
    // No new connections from here on: the socket goes first (only if it is still this
    // daemon's: another may have bound the path since, after this home was deleted and made
    // again), so a client meanwhile starts or finds the next daemon instead of waiting in the
    // backlog of this one; then open requests finish.
    if socket.is_some() && FileIdentity::of_path(&home.socket()) == socket {
        let _ = fs::remove_file(home.socket());
    }
    drop(listener);
    tracker.close();
    if tokio::time::timeout(Duration::from_secs(5), tracker.wait())
        .await
        .is_err()
    {
        tracing::warn!("some clients were still connected at shutdown");
    }
    tracing::info!("stopped");
}

/// The write half of a connection, as the command handlers see it.
pub struct Replies<'a> {
    framed: &'a mut Framed<Stream, LinesCodec>,
}

impl Replies<'_> {
    /// Sends one response line. A client that went away is not an error worth more than a log line.
    pub async fn send(&mut self, response: &Response) -> bool {
        let line = serde_json::to_string(response).expect("responses always serialise");
        match self.framed.send(line).await {
            Ok(()) => true,
            Err(e) => {
                tracing::debug!("client went away: {e}");
                false
            }
        }
    }
}

/// Why the peer may not use this daemon: it runs as another user (or its user cannot be told).
fn foreign_user(stream: &Stream) -> Option<String> {
    // SAFETY: geteuid has no failure mode.
    let ours = unsafe { libc::geteuid() };
    match stream.peer_creds().map(|creds| creds.euid()) {
        Ok(Some(uid)) if uid == ours => None,
        Ok(Some(uid)) => Some(format!(
            "this hgd daemon serves user {ours} only; the client runs as user {uid}"
        )),
        Ok(None) | Err(_) => Some(format!(
            "this hgd daemon serves user {ours} only, and the client's user cannot be told"
        )),
    }
}

async fn handle_connection(
    stream: Stream,
    service: Arc<Service>,
    idle: &IdleConnections,
    id: u64,
    first_wait: CancellationToken,
) {
    // The socket is 0600 in a 0700 home; the peer's user is checked as well, should either mode
    // be loosened (by hand, or by a home on a filesystem without modes).
    let refusal = foreign_user(&stream);
    let mut framed = Framed::new(stream, LinesCodec::new_with_max_length(MAX_FRAME_BYTES));
    if let Some(message) = refusal {
        tracing::warn!("refused a connection: {message}");
        let reply = Response::error(ErrorCode::PermissionDenied, message);
        let _ = framed
            .send(serde_json::to_string(&reply).unwrap_or_default())
            .await;
        return;
    }
    let shutdown: CancellationToken = service.shutdown.clone();
    let mut first_wait = Some(first_wait);
    loop {
        // Waiting for a request: idle, so a timeout or a newcomer may close this connection.
        let evicted = first_wait.take().unwrap_or_else(|| idle.enter(id));
        let frame = tokio::select! {
            frame = framed.next() => frame,
            _ = tokio::time::sleep(IDLE_TIMEOUT) => {
                tracing::debug!("closing a connection idle for {IDLE_TIMEOUT:?}");
                return;
            }
            _ = evicted.cancelled() => return,
            _ = shutdown.cancelled() => return,
        };
        idle.leave(id);
        let line = match frame {
            None => return,
            Some(Ok(line)) => line,
            Some(Err(LinesCodecError::MaxLineLengthExceeded)) => {
                let reply = Response::error(
                    ErrorCode::FrameTooLarge,
                    format!("request longer than {MAX_FRAME_BYTES} bytes"),
                );
                if !(Replies {
                    framed: &mut framed,
                })
                .send(&reply)
                .await
                {
                    return;
                }
                // A framed stream ends after a decode error; rebuild it around the same codec,
                // which is still discarding the rest of the long line.
                framed = Framed::from_parts(framed.into_parts());
                continue;
            }
            Some(Err(LinesCodecError::Io(e))) => {
                // Not UTF-8 or a broken connection: answer if we can, then drop this client.
                let reply =
                    Response::error(ErrorCode::BadRequest, format!("unreadable request: {e}"));
                (Replies {
                    framed: &mut framed,
                })
                .send(&reply)
                .await;
                return;
            }
        };
        if line.trim().is_empty() {
            continue;
        }
        let mut replies = Replies {
            framed: &mut framed,
        };
        let envelope: Envelope = match serde_json::from_str(&line) {
            Ok(envelope) => envelope,
            Err(e) => {
                let version = serde_json::from_str::<serde_json::Value>(&line)
                    .ok()
                    .and_then(|v| v.get("v").and_then(|v| v.as_u64()));
                let reply = match version {
                    Some(v)
                        if !u32::try_from(v).is_ok_and(|v| {
                            (OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&v)
                        }) =>
                    {
                        version_mismatch(v)
                    }
                    _ => Response::error(ErrorCode::BadRequest, format!("malformed request: {e}")),
                };
                if !replies.send(&reply).await {
                    return;
                }
                continue;
            }
        };
        if !(OLDEST_PROTOCOL_VERSION..=PROTOCOL_VERSION).contains(&envelope.v) {
            if !replies.send(&version_mismatch(envelope.v.into())).await {
                return;
            }
            continue;
        }
        if !cmd::dispatch(&service, envelope.request, &mut replies).await {
            return;
        }
    }
}

fn version_mismatch(v: u64) -> Response {
    Response::error(
        ErrorCode::VersionMismatch,
        format!(
            "client speaks protocol {v}, daemon speaks {PROTOCOL_VERSION}; restart the daemon (`hgd stop`) after upgrading"
        ),
    )
}
