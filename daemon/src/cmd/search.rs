//! `search`: index the searched folder first if no scope covers it or HEAD moved, then search it.
//!
//! A search degrades rather than fails: when indexing failed it answers from what is stored, and
//! when uncommitted files cannot be read it searches HEAD alone, saying so in `warnings`.

use std::path::Path;
use std::sync::Arc;

use hgd_protocol::{BlockRef, ErrorCode, Progress, Response, SearchFilter, SearchMode};

use super::{error_reply, wait_until, Waited};
use crate::rank::filter::Filter;
use crate::server::Replies;
use crate::service::{Freshness, Service, ServiceError};

/// A search request as the client asked it.
pub struct Asked<'a> {
    pub path: &'a str,
    pub query: &'a str,
    pub limit: usize,
    pub mode: SearchMode,
    pub filter: &'a SearchFilter,
    /// Similar-code search from this block.
    pub like: Option<&'a BlockRef>,
}

pub async fn run(service: &Arc<Service>, asked: Asked<'_>, replies: &mut Replies<'_>) -> bool {
    let Asked {
        path,
        query,
        limit,
        mode,
        filter,
        like,
    } = asked;
    // Similar-code search ranks by the block's stored vector alone.
    let mode = if like.is_some() {
        SearchMode::Semantic
    } else {
        mode
    };
    if query.len() > hgd_protocol::MAX_QUERY_BYTES {
        return replies
            .send(&Response::error(
                ErrorCode::BadRequest,
                format!(
                    "the query is {} bytes, more than {} (to find code like a whole file, give the file: `hgd search FILE` or `FILE#NAME`)",
                    query.len(),
                    hgd_protocol::MAX_QUERY_BYTES
                ),
            ))
            .await;
    }
    if query.trim().is_empty() {
        return replies
            .send(&Response::error(
                ErrorCode::BadRequest,
                "the query is empty",
            ))
            .await;
    }
    // A bad glob is the caller's mistake: say so before any work.
    if let Err(e) = Filter::new(filter, "") {
        return replies
            .send(&Response::error(ErrorCode::BadRequest, e.to_string()))
            .await;
    }
    let started = std::time::Instant::now();
    // Embedding the query is the largest step: start it first, so that it runs while the
    // repository is located, the work tree checked and the index fetched (a lexical search
    // does not need it; for one that turns lexical or fails, an embedding already running
    // finishes into the cache and one still queued is skipped).
    let embedding = (mode != SearchMode::Lexical && like.is_none())
        .then(|| crate::search::embed_early(&service.embedder, query));
    let crate::service::Ensured {
        located,
        head,
        freshness,
    } = match service.ensure_indexed(Path::new(path), false).await {
        Ok(found) => found,
        Err(e) => return replies.send(&error_reply(&e)).await,
    };
    let root = located.root.to_string_lossy().into_owned();
    let mut warnings = Vec::new();
    let mut unstored = None;
    let mut progressive = None;
    let behind = |reason: &str| {
        format!("the index is behind HEAD, results may miss recent changes: {reason}")
    };
    match freshness {
        Freshness::Current => {}
        Freshness::Behind(reason) => warnings.push(behind(&reason.to_string())),
        Freshness::Wait(ticket) => {
            // Wait for the job, unless it turns out long (a first index): then answer at once
            // from what is stored and what the job has parsed.
            let waited = match service.waiter(&root, ticket) {
                Ok(waiter) => {
                    wait_until(service, waiter, replies, |s| {
                        s.long_running_job(&root).is_some() || s.queued_behind_long_job(&root)
                    })
                    .await
                }
                Err(e) => Err(e),
            };
            match waited {
                Ok(Waited::Done) => {}
                Ok(Waited::Gone) => return false,
                Ok(Waited::Stopped) => {
                    if service.queued_behind_long_job(&root) {
                        warnings.push(behind(
                            "its indexing is queued behind another repository's long job",
                        ));
                    } else if let Some(job) = service.long_running_job(&root) {
                        let (done, total) = (
                            job.embedded.load(std::sync::atomic::Ordering::Relaxed),
                            job.to_embed.load(std::sync::atomic::Ordering::Relaxed),
                        );
                        warnings.push(format!(
                            "indexing in progress ({done} of {total} blocks embedded): results so far, matched by words only"
                        ));
                        // A recent index of stored and parsed blocks is searched as it is,
                        // without copying the job's parsed rows again.
                        progressive = service
                            .indexes
                            .progressive(&root, crate::search::PROGRESSIVE_MAX_AGE);
                        unstored = Some(if progressive.is_some() {
                            Vec::new()
                        } else {
                            job.parsed_rows()
                        });
                    }
                }
                Err(ServiceError::JobFailed { error, .. }) => {
                    warnings.push(behind(&error.to_string()))
                }
                Err(e) => return replies.send(&error_reply(&e)).await,
            }
        }
    }
    let limit = limit.clamp(1, 1000);
    let filter = Filter::new(filter, &located.subtree).expect("checked above");
    // The block's file, relative to the repository (its blocks are left out of the results).
    let like = match like.map(|b| like_in(b, &located.root)).transpose() {
        Ok(like) => like,
        Err(message) => {
            return replies
                .send(&Response::error(ErrorCode::BadRequest, message))
                .await
        }
    };
    let indexed = started.elapsed();
    let work = async {
        let dirty = match service.refresh_overlay(&root, head.as_deref()).await {
            Ok(dirty) => dirty,
            Err(e) => {
                tracing::warn!("searching {root} without its uncommitted files: {e}");
                warnings.push(format!(
                    "uncommitted changes are not searched (results are from HEAD): {e}"
                ));
                Vec::new()
            }
        };
        let overlaid = started.elapsed();
        let hits = crate::search::search(
            &service.store,
            &service.indexes,
            &service.embedder,
            crate::search::Request {
                repo: &root,
                subtree: &located.subtree,
                filter: &filter,
                like: like.as_ref(),
                dirty: &dirty,
                query,
                limit,
                mode: match mode {
                    SearchMode::Hybrid => crate::rank::Mode::Hybrid,
                    SearchMode::Semantic => crate::rank::Mode::Semantic,
                    SearchMode::Lexical => crate::rank::Mode::Lexical,
                },
                unstored,
                embedding,
                progressive,
            },
        )
        .await;
        tracing::debug!(
            "search: index check {indexed:.1?}, overlay {:.1?}, search {:.1?}",
            overlaid - indexed,
            started.elapsed() - overlaid
        );
        hits
    };
    let Some(result) = with_keepalive(work, &root, "searching", replies).await else {
        return false;
    };
    match result {
        Ok((hits, answered)) => {
            replies
                .send(&Response::Search {
                    repo_root: root,
                    hits,
                    mode: match answered {
                        crate::rank::Mode::Hybrid => SearchMode::Hybrid,
                        crate::rank::Mode::Semantic => SearchMode::Semantic,
                        crate::rank::Mode::Lexical => SearchMode::Lexical,
                    },
                    warnings,
                })
                .await
        }
        Err(crate::search::SearchError::Store(e)) if e.may_be_damage() => {
            service.suspect_store();
            let message = format!(
                "the index could not be read ({e}); hgd is checking its store and rebuilds what \
                 is damaged from git: try again shortly (`hgd status` shows the indexing)"
            );
            replies
                .send(&Response::error(ErrorCode::Internal, message))
                .await
        }
        Err(e) => {
            let code = match e {
                crate::search::SearchError::NoSuchBlock(_) => ErrorCode::BadRequest,
                _ => ErrorCode::Internal,
            };
            replies.send(&Response::error(code, e.to_string())).await
        }
    }
}

/// The block `b` names, with its file relative to the repository at `root`.
fn like_in(b: &BlockRef, root: &Path) -> Result<crate::search::Like, String> {
    let file = Path::new(&b.file);
    let canonical = file
        .canonicalize()
        .map_err(|e| format!("{}: {e}", file.display()))?;
    let relative = hgd_protocol::paths::relative_to(root, &canonical).ok_or_else(|| {
        format!(
            "{} is not in the searched repository ({})",
            file.display(),
            root.display()
        )
    })?;
    Ok(crate::search::Like {
        path: relative,
        line: b.line,
        name: b.name.clone(),
    })
}

/// Runs `work`, sending a progress line every second while it runs, so that a client can tell a
/// slow answer (many uncommitted files to embed) from a daemon that stopped answering. `None`
/// when the client went away.
pub(super) async fn with_keepalive<T>(
    work: impl std::future::Future<Output = T>,
    root: &str,
    phase: &str,
    replies: &mut Replies<'_>,
) -> Option<T> {
    let mut work = std::pin::pin!(work);
    // The first tick a second from now: an interval's immediate first tick still waits for the
    // timer's next millisecond, which was a millisecond added to every search.
    let second = std::time::Duration::from_secs(1);
    let mut ticks = tokio::time::interval_at(tokio::time::Instant::now() + second, second);
    loop {
        tokio::select! {
            out = &mut work => return Some(out),
            _ = ticks.tick() => {
                let progress = Progress {
                    repo: root.to_owned(),
                    phase: phase.into(),
                    ..Progress::default()
                };
                if !replies.send(&Response::Progress(progress)).await {
                    return None;
                }
            }
        }
    }
}
