//! `publish`: bring a repository up to date, then add the blocks of HEAD's files that the
//! remotes lack.

use std::sync::Arc;

use hgd_protocol::{ErrorCode, Response};

use super::{error_reply, indexed_root, Indexed};
use crate::server::Replies;
use crate::service::{Service, ServiceError};

pub async fn run(
    service: &Arc<Service>,
    path: &str,
    remote: Option<&str>,
    replies: &mut Replies<'_>,
) -> bool {
    // Which remotes first: a misspelt name must not cost a whole index.
    let remotes = match service.remotes.writable(remote) {
        Ok(remotes) => remotes,
        Err(e) => {
            return replies
                .send(&Response::error(ErrorCode::BadRequest, e.to_string()))
                .await
        }
    };
    let root = match indexed_root(service, path, true, replies).await {
        Ok(Indexed { waited: Err(e), .. }) => return replies.send(&error_reply(&e)).await,
        Ok(Indexed { root, .. }) => root,
        Err(sent) => return sent,
    };
    // Its own task, so a client that goes away does not stop it half way.
    let task = {
        let (service, root) = (service.clone(), root.clone());
        tokio::spawn(async move { service.publish_to(&root, &remotes, None).await })
    };
    let Some(published) = super::search::with_keepalive(task, &root, "publishing", replies).await
    else {
        return false;
    };
    let reply = match published.map_err(ServiceError::from).and_then(|r| r) {
        Ok(publications) => Response::Published { publications },
        Err(e) => error_reply(&e),
    };
    replies.send(&reply).await
}
