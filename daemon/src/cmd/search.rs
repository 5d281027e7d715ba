//! `search`: index the searched folder first if no scope covers it or HEAD moved, then search it.

use std::path::Path;
use std::sync::Arc;

use hgd_protocol::{ErrorCode, Response};

use super::{error_reply, wait_with_progress};
use crate::server::Replies;
use crate::service::Service;

pub async fn run(
    service: &Arc<Service>,
    path: &str,
    query: &str,
    limit: usize,
    replies: &mut Replies<'_>,
) -> bool {
    if query.trim().is_empty() {
        return replies
            .send(&Response::error(
                ErrorCode::BadRequest,
                "the query is empty",
            ))
            .await;
    }
    let started = std::time::Instant::now();
    let (located, ticket) = match service.ensure_indexed(Path::new(path)).await {
        Ok(found) => found,
        Err(e) => return replies.send(&error_reply(&e)).await,
    };
    let root = located.root.to_string_lossy().into_owned();
    if let Some(ticket) = ticket {
        let waited = match service.waiter(&root, ticket) {
            Ok(waiter) => wait_with_progress(service, waiter, replies).await,
            Err(e) => Err(e),
        };
        match waited {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => return replies.send(&error_reply(&e)).await,
        }
    }
    let limit = limit.clamp(1, 1000);
    let indexed = started.elapsed();
    let dirty = match service.refresh_overlay(&root).await {
        Ok(dirty) => dirty,
        Err(e) => return replies.send(&error_reply(&e)).await,
    };
    let overlaid = started.elapsed();
    match crate::search::search(
        &service.store,
        &service.embedder,
        &root,
        &located.subtree,
        &dirty,
        query,
        limit,
    )
    .await
    {
        Ok(hits) => {
            tracing::debug!(
                "search {query:?}: index check {indexed:.1?}, overlay {:.1?}, search {:.1?}",
                overlaid - indexed,
                started.elapsed() - overlaid
            );
            replies
                .send(&Response::Search {
                    repo_root: root,
                    hits,
                })
                .await
        }
        Err(e) => {
            replies
                .send(&Response::error(ErrorCode::Internal, e.to_string()))
                .await
        }
    }
}
