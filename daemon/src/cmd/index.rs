//! `index`: track a folder of a repository and (optionally) wait until HEAD is indexed there.

use std::sync::Arc;

use hgd_protocol::Response;

use super::{error_reply, indexed_root, Indexed};
use crate::server::Replies;
use crate::service::Service;

pub async fn run(
    service: &Arc<Service>,
    path: &str,
    wait: bool,
    replies: &mut Replies<'_>,
) -> bool {
    // An explicit `hgd index` retries a failed job at once and reports its failure.
    let root = match indexed_root(service, path, wait, replies).await {
        Ok(Indexed { waited: Err(e), .. }) => return replies.send(&error_reply(&e)).await,
        Ok(Indexed { root, .. }) => root,
        Err(sent) => return sent,
    };
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
