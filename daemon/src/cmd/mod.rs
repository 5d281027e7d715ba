//! One module per request: each turns a request into response lines.

mod check;
mod index;
mod publish;
mod search;
mod status;

use std::sync::Arc;

use hgd_protocol::{ErrorCode, Request, Response};

use crate::server::Replies;
use crate::service::{Service, ServiceError, Waiter};

/// Answers one request. Returns false when the client went away.
pub async fn dispatch(service: &Arc<Service>, request: Request, replies: &mut Replies<'_>) -> bool {
    match request {
        Request::Ping => {
            replies
                .send(&Response::Pong {
                    version: env!("CARGO_PKG_VERSION").into(),
                    pid: std::process::id(),
                })
                .await
        }
        Request::Index { path, wait } => index::run(service, &path, wait, replies).await,
        Request::Check { path } => check::run(service, &path, replies).await,
        Request::Search {
            path,
            query,
            limit,
            mode,
            filter,
            like,
        } => {
            let request = search::Asked {
                path: &path,
                query: &query,
                limit,
                mode,
                filter: &filter,
                like: like.as_ref(),
            };
            search::run(service, request, replies).await
        }
        Request::Notify { path } => {
            let reply = match service.notify(std::path::Path::new(&path)).await {
                Ok(tracked) => Response::Notified { tracked },
                Err(e) => error_reply(&e),
            };
            replies.send(&reply).await
        }
        Request::Publish { path, remote } => {
            publish::run(service, &path, remote.as_deref(), replies).await
        }
        Request::Status => status::run(service, replies).await,
        Request::Forget { path } => {
            // Its own task, so a client that goes away does not stop it half way; progress
            // lines keep the client waiting while a large store is compacted.
            let task = {
                let service = service.clone();
                let path = path.clone();
                tokio::spawn(async move { service.forget(std::path::Path::new(&path)).await })
            };
            let Some(forgotten) = search::with_keepalive(task, &path, "forgetting", replies).await
            else {
                return false;
            };
            let reply = match forgotten.map_err(ServiceError::from).and_then(|r| r) {
                Ok((repo, blocks, freed_bytes)) => Response::Forgotten {
                    repo,
                    blocks,
                    freed_bytes,
                },
                Err(e) => error_reply(&e),
            };
            replies.send(&reply).await
        }
        Request::Shutdown => {
            let sent = replies.send(&Response::ShuttingDown).await;
            tracing::info!("shutdown requested by a client");
            service.shutdown.cancel();
            sent
        }
    }
}

/// Maps a service error to the reply a client gets.
fn error_reply(e: &ServiceError) -> Response {
    let code = match e {
        ServiceError::Git(crate::git::GitError::NotARepository(_)) => ErrorCode::NotARepository,
        ServiceError::NotTracked(_) | ServiceError::Busy(_) | ServiceError::Forgetting(_) => {
            ErrorCode::BadRequest
        }
        // The remote's own failure (credentials, network, a name), not the daemon's.
        ServiceError::Remote(
            crate::remote::RemoteError::Model(..) | crate::remote::RemoteError::Local(_),
        ) => ErrorCode::Internal,
        ServiceError::Remote(_) => ErrorCode::BadRequest,
        _ => ErrorCode::Internal,
    };
    Response::error(code, e.to_string())
}

/// What [`indexed_root`] found: the repository's root, and how waiting for its job ended
/// (`Err`: the job failed; `Ok` also when not asked to wait).
struct Indexed {
    root: String,
    waited: Result<(), ServiceError>,
}

/// Makes sure `path`'s repository is tracked and (with `wait`) waits for the job bringing it to
/// HEAD, with progress lines; an explicit request retries a failed job at once. `Err(sent)`:
/// already answered (an error was sent, or the client went away: `false`).
async fn indexed_root(
    service: &Service,
    path: &str,
    wait: bool,
    replies: &mut Replies<'_>,
) -> Result<Indexed, bool> {
    let crate::service::Ensured {
        located, freshness, ..
    } = match service
        .ensure_indexed(std::path::Path::new(path), true)
        .await
    {
        Ok(found) => found,
        Err(e) => return Err(replies.send(&error_reply(&e)).await),
    };
    let root = located.root.to_string_lossy().into_owned();
    let waited = match wait {
        true => match wait_for_job(service, &root, freshness, replies).await {
            Ok(true) => Ok(()),
            Ok(false) => return Err(false),
            Err(e) => Err(e),
        },
        false => Ok(()),
    };
    Ok(Indexed { root, waited })
}

/// Waits, with progress lines, for the job `freshness` asks to wait for, if any. `Ok(false)`: the
/// client went away; `Err`: the job failed.
async fn wait_for_job(
    service: &Service,
    root: &str,
    freshness: crate::service::Freshness,
    replies: &mut Replies<'_>,
) -> Result<bool, ServiceError> {
    match freshness {
        crate::service::Freshness::Wait(ticket) => {
            let waiter = service.waiter(root, ticket)?;
            wait_with_progress(service, waiter, replies).await
        }
        _ => Ok(true),
    }
}

/// Streams progress lines until the waited-for job is done. `Ok(false)`: the client went away.
async fn wait_with_progress(
    service: &Service,
    waiter: Waiter,
    replies: &mut Replies<'_>,
) -> Result<bool, ServiceError> {
    Ok(wait_until(service, waiter, replies, |_| false).await? == Waited::Done)
}

/// How a wait ended.
#[derive(Debug, PartialEq, Eq)]
enum Waited {
    /// The job covering the ticket finished well.
    Done,
    /// `stop_early` said to stop waiting.
    Stopped,
    /// The client went away.
    Gone,
}

/// Streams progress lines until the waited-for job is done, or until `stop_early` (asked after
/// every progress step) says to stop waiting.
async fn wait_until(
    service: &Service,
    mut waiter: Waiter,
    replies: &mut Replies<'_>,
    stop_early: impl Fn(&Service) -> bool,
) -> Result<Waited, ServiceError> {
    // Already true (a search during a long job): answer now, not after the first wait step.
    if stop_early(service) {
        return Ok(Waited::Stopped);
    }
    while let Some(progress) = service.wait_step(&mut waiter).await? {
        if stop_early(service) {
            return Ok(Waited::Stopped);
        }
        if !replies.send(&Response::Progress(progress)).await {
            return Ok(Waited::Gone);
        }
    }
    Ok(Waited::Done)
}
