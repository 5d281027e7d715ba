//! `check`: bring a repository up to date, then compare its stored blocks with HEAD.

use std::path::Path;
use std::sync::Arc;

use hgd_protocol::{ErrorCode, Response};

use super::{indexed_root, Indexed};
use crate::server::Replies;
use crate::service::Service;

pub async fn run(service: &Arc<Service>, path: &str, replies: &mut Replies<'_>) -> bool {
    let root = match indexed_root(service, path, true, replies).await {
        Ok(Indexed { root, waited }) => {
            // A failed job is what a check reports, not a reason to skip it.
            if let Err(e) = waited {
                tracing::warn!("checking {root} after a failed job: {e}");
            }
            root
        }
        Err(sent) => return sent,
    };
    let Some(record) = service.record_of(&root) else {
        return replies
            .send(&Response::error(
                ErrorCode::Internal,
                format!("{root} is not tracked"),
            ))
            .await;
    };
    // HEAD's layer, with vectors (their shape is checked).
    let rows = match service
        .store
        .repo_rows(crate::store::Layer::Head, &root, true)
        .await
    {
        Ok(rows) => rows,
        Err(e) => {
            return replies
                .send(&Response::error(ErrorCode::Internal, e.to_string()))
                .await
        }
    };
    let (dims, limits) = (service.store.dims(), service.indexer.limits.clone());
    let compared = tokio::task::spawn_blocking(move || {
        let repo = crate::git::Repo::open(Path::new(&record.root))?;
        crate::check::compare(
            &repo,
            &record.root,
            &record.scopes,
            record.indexed_commit,
            rows,
            dims,
            &limits,
        )
    })
    .await;
    let reply = match compared {
        Ok(Ok(report)) => Response::Checked(report),
        Ok(Err(e)) => Response::error(ErrorCode::Internal, e.to_string()),
        Err(e) => Response::error(ErrorCode::Internal, format!("the check stopped: {e}")),
    };
    replies.send(&reply).await
}
