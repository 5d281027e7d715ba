//! `index`: track a folder of a repository and (optionally) wait until HEAD is indexed there.

use std::path::Path;
use std::sync::Arc;

use hgd_protocol::Response;

use super::{error_reply, wait_for_job};
use crate::server::Replies;
use crate::service::Service;

pub async fn run(
    service: &Arc<Service>,
    path: &str,
    wait: bool,
    replies: &mut Replies<'_>,
) -> bool {
    // An explicit `hgd index` retries a failed job at once and reports its failure.
    let crate::service::Ensured {
        located, freshness, ..
    } = match service.ensure_indexed(Path::new(path), true).await {
        Ok(found) => found,
        Err(e) => return replies.send(&error_reply(&e)).await,
    };
    let root = located.root.to_string_lossy().into_owned();
    if wait {
        match wait_for_job(service, &root, freshness, replies).await {
            Ok(true) => {}
            Ok(false) => return false,
            Err(e) => return replies.send(&error_reply(&e)).await,
        }
    }
    let statuses = service.repo_statuses().await;
    let status = statuses.iter().find(|s| s.root == root);
    replies
        .send(&Response::Indexed {
            repo: root.clone(),
            commit: status
                .and_then(|s| s.indexed_commit.clone())
                .unwrap_or_default(),
            blocks: status.map_or(0, |s| s.blocks),
        })
        .await
}
