//! Search: the query is embedded while HEAD's in-memory index is fetched; the ranking stage
//! ([`crate::rank`]) runs over HEAD's blocks (less dirty paths) and the overlay of uncommitted
//! files, restricted to the searched subtree.

use std::collections::HashSet;
use std::sync::Arc;

use hgd_protocol::Hit;

use crate::embed::Embedder;
use crate::indexes::{HeadIndex, Indexes};
use crate::rank::query::Query;
use crate::rank::{Mode, RepoIndex, Rules, Search, Source};
use crate::store::{BlockRow, Layer, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding the query failed: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("a search task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the query embedding stopped before it answered")]
    EmbeddingLost(#[from] tokio::sync::oneshot::error::RecvError),
    #[error("{0}")]
    NoSuchBlock(String),
}

/// The block a similar-code search starts from: in the file at `path` (repository-relative),
/// the one named `name`, else the one holding `line`, else the whole file.
pub struct Like {
    pub path: String,
    pub line: Option<u32>,
    pub name: Option<String>,
}

/// How stale the results of a search during a long job may be: searches this close share one
/// index of the stored and parsed blocks.
pub const PROGRESSIVE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// The stored vector of the block `like` names in `index`.
fn like_vector(index: &RepoIndex, like: &Like) -> Result<Vec<f32>, SearchError> {
    let entries = index.file_entries(&like.path);
    if entries.is_empty() {
        return Err(SearchError::NoSuchBlock(format!(
            "{} has no indexed blocks (not tracked, ignored, binary or too large?)",
            like.path
        )));
    }
    let missing =
        || SearchError::NoSuchBlock(format!("{}: its vectors are not stored yet", like.path));
    if let Some(name) = &like.name {
        let named = |exact: bool| {
            entries.clone().find(|&i| {
                let e = index.entry(i);
                let last = e.name.rsplit(['.', ':']).next().unwrap_or(&e.name);
                if exact {
                    e.name == *name || last == name
                } else {
                    e.name.eq_ignore_ascii_case(name) || last.eq_ignore_ascii_case(name)
                }
            })
        };
        let Some(entry) = named(true).or_else(|| named(false)) else {
            let names: Vec<&str> = entries
                .clone()
                .map(|i| index.entry(i).name.as_str())
                .filter(|n| !n.is_empty())
                .collect();
            return Err(SearchError::NoSuchBlock(format!(
                "{} has no block named {name:?}; its blocks: {}",
                like.path,
                names.join(", ")
            )));
        };
        return index.entry_vector(entry).ok_or_else(missing);
    }
    if let Some(line) = like.line {
        // The smallest block holding the line.
        let entry = entries
            .clone()
            .filter(|&i| (index.entry(i).start_line..=index.entry(i).end_line).contains(&line))
            .min_by_key(|&i| index.entry(i).end_line - index.entry(i).start_line)
            .ok_or_else(|| {
                SearchError::NoSuchBlock(format!("{}: no block holds line {line}", like.path))
            })?;
        return index.entry_vector(entry).ok_or_else(missing);
    }
    index.file_vector(&like.path).ok_or_else(missing)
}

/// What to search and how.
pub struct Request<'a> {
    pub repo: &'a str,
    pub subtree: &'a str,
    pub filter: &'a crate::rank::filter::Filter,
    /// Similar-code search from this block: its stored vector is the query.
    pub like: Option<&'a Like>,
    /// Paths whose work-tree state differs from HEAD (their overlay blocks replace HEAD's).
    pub dirty: &'a [String],
    pub query: &'a str,
    pub limit: usize,
    pub mode: Mode,
    /// Blocks a running job parsed but has not stored (no vectors yet): searched together with
    /// what is stored, by words only.
    pub unstored: Option<Vec<BlockRow>>,
    /// The query's vector, already being computed (see [`embed_early`]); `None`: embed here.
    pub embedding: Option<Embedding>,
    /// During a long job: a recent index of stored and parsed blocks to search instead of
    /// building one from `unstored` ([`crate::indexes::Indexes::progressive`]).
    pub progressive: Option<Arc<RepoIndex>>,
}

/// A query's vector: already there (asked before) or being computed on the query thread; it
/// answers once.
pub type Embedding = tokio::sync::oneshot::Receiver<Result<Vec<f32>, crate::embed::EmbedError>>;

type QueryJob = Box<dyn FnOnce() + Send>;

/// Query embeddings sent to the query thread and not yet finished, so that the daemon's exit
/// can wait for them (ONNX Runtime must not be mid-run when the process tears down).
static QUERIES_IN_FLIGHT: (std::sync::Mutex<usize>, std::sync::Condvar) =
    (std::sync::Mutex::new(0), std::sync::Condvar::new());

fn count_query(change: isize) {
    let (count, changed) = &QUERIES_IN_FLIGHT;
    let mut count = count.lock().unwrap_or_else(|p| p.into_inner());
    *count = count.saturating_add_signed(change);
    changed.notify_all();
}

/// The queue of the thread that embeds queries (the daemon starts it with
/// [`start_query_thread`], anything else at first use); `None` if it could not start. One
/// long-lived thread rather than tokio's blocking pool: with a pool thread woken for each query,
/// the worker thread that woke it was often left waiting for the CPU until the embedding ended,
/// while the other CPU idled, and the index check beside the embedding took a median 2.6-2.75 ms
/// instead of 0.45-0.75 ms (BENCHMARKS.md, session 11).
fn query_thread() -> Option<&'static std::sync::mpsc::Sender<QueryJob>> {
    static JOBS: std::sync::OnceLock<Option<std::sync::mpsc::Sender<QueryJob>>> =
        std::sync::OnceLock::new();
    JOBS.get_or_init(|| {
        let (jobs, queue) = std::sync::mpsc::channel::<QueryJob>();
        let started = std::thread::Builder::new()
            .name("hgd-query".to_owned())
            .spawn(move || {
                while let Ok(job) = queue.recv() {
                    // A panic drops that query's reply (its search reports the failure); the
                    // thread stays for the next query.
                    let _ = std::panic::catch_unwind(std::panic::AssertUnwindSafe(job));
                    count_query(-1);
                }
            });
        match started {
            Ok(_) => Some(jobs),
            Err(e) => {
                tracing::warn!(
                    "could not start the query thread ({e}): queries are embedded on the blocking pool"
                );
                None
            }
        }
    })
    .as_ref()
}

/// Starts the query thread now, from the calling thread (the daemon's start), so that it has
/// that thread's normal priority whichever thread asks the first query.
pub fn start_query_thread() {
    query_thread();
}

/// Waits up to `limit` for the query thread's embeddings to finish; true when none is left.
pub fn wait_for_queries(limit: std::time::Duration) -> bool {
    let (count, changed) = &QUERIES_IN_FLIGHT;
    let count = count.lock().unwrap_or_else(|p| p.into_inner());
    let (count, _) = changed
        .wait_timeout_while(count, limit, |n| *n > 0)
        .unwrap_or_else(|p| p.into_inner());
    *count == 0
}

/// Starts embedding `query` at once, so that it runs while the search checks HEAD and the work
/// tree (about half of a search's time in the daemon is the embedding). A query asked before is
/// answered from the cache here, without waiting behind another query's embedding.
pub fn embed_early(embedder: &Arc<Embedder>, query: &str) -> Embedding {
    let (reply, embedding) = tokio::sync::oneshot::channel();
    if let Some(vector) = embedder.cached_query(query) {
        let _ = reply.send(Ok(vector));
        return embedding;
    }
    let embedder = embedder.clone();
    let query = query.to_owned();
    let asked = std::time::Instant::now();
    let job = move || {
        // Its search ended (a client gone) while the job waited: nobody needs the vector.
        if reply.is_closed() {
            return;
        }
        let queued = asked.elapsed();
        let vector = embedder.embed_query(&query);
        tracing::debug!(
            "query embedding: queued {queued:.1?}, ran {:.1?}",
            asked.elapsed() - queued
        );
        // The search may have ended since; the vector is in the cache anyway.
        let _ = reply.send(vector);
    };
    let unsent: Option<QueryJob> = match query_thread() {
        Some(jobs) => {
            count_query(1);
            jobs.send(Box::new(job)).err().map(|e| {
                count_query(-1);
                e.0
            })
        }
        None => Some(Box::new(job)),
    };
    if let Some(job) = unsent {
        tokio::task::spawn_blocking(job);
    }
    embedding
}

/// The results and the channels that produced them.
pub async fn search(
    store: &Store,
    indexes: &Indexes,
    embedder: &Arc<Embedder>,
    mut request: Request<'_>,
) -> Result<(Vec<Hit>, Mode), SearchError> {
    if request.unstored.is_some() {
        // Some blocks have no vectors yet: the vector channel would miss them.
        request.mode = Mode::Lexical;
    }
    let early = request.embedding.take();
    let embedding = async {
        // Similar-code search takes its block's stored vector instead.
        if request.mode == Mode::Lexical || request.like.is_some() {
            return Ok(None);
        }
        let running = early.unwrap_or_else(|| embed_early(embedder, request.query));
        running.await?.map(Some).map_err(SearchError::from)
    };
    let overlay = async {
        if request.dirty.is_empty() {
            return Ok::<_, SearchError>(None);
        }
        Ok(Some(indexes.overlay(store, request.repo).await?))
    };
    let unstored = request.unstored.take();
    let head = async {
        match unstored {
            // A job is running: the stored rows change under it, so build afresh, shared only
            // by searches within a few seconds of each other.
            Some(unstored) => {
                if let Some(index) = request.progressive.take() {
                    return Ok::<_, SearchError>(HeadIndex {
                        base: index,
                        changed: None,
                    });
                }
                let started = std::time::Instant::now();
                let generation = indexes.generation(request.repo);
                let mut rows = store.repo_rows(Layer::Head, request.repo, false).await?;
                let stored: HashSet<String> = rows.iter().map(|r| r.path.clone()).collect();
                rows.extend(unstored.into_iter().filter(|r| !stored.contains(&r.path)));
                let dims = store.dims();
                let index = tokio::task::spawn_blocking(move || {
                    Arc::new(RepoIndex::build(rows, dims, false))
                })
                .await?;
                indexes.keep_progressive(request.repo, started, generation, index.clone());
                Ok(HeadIndex {
                    base: index,
                    changed: None,
                })
            }
            None => Ok(indexes.head(store, request.repo).await?),
        }
    };
    let (vector, head, overlay) = tokio::join!(embedding, head, overlay);
    let (vector, head, overlay) = (vector?, head?, overlay?);
    let dirty: HashSet<String> = request.dirty.iter().cloned().collect();
    let skipping;
    let (vector, query, filter) = match request.like {
        None => (vector, Query::parse(request.query), request.filter),
        Some(like) => {
            // The layer holding the file's current blocks.
            let index = if dirty.contains(&like.path) {
                overlay.as_deref().unwrap_or(&head.base)
            } else {
                match &head.changed {
                    Some((paths, index)) if paths.contains(&like.path) => index.as_ref(),
                    _ => &head.base,
                }
            };
            skipping = request.filter.skipping(&like.path);
            // No words: only the block's vector ranks.
            (Some(like_vector(index, like)?), Query::parse(""), &skipping)
        }
    };
    let search = Search {
        head: &head.base,
        changed: head
            .changed
            .as_ref()
            .map(|(paths, index)| (index.as_ref(), paths.as_ref())),
        overlay: overlay.as_deref(),
        dirty: &dirty,
        subtree: request.subtree,
        filter,
        query: &query,
        vector: vector.as_deref(),
        mode: request.mode,
        limit: request.limit,
        rules: Rules::configured(),
    };
    let hits = search
        .run()
        .into_iter()
        .map(|(found, score)| {
            let e = search.entry(found);
            Hit {
                path: e.path.to_string(),
                line: e.start_line,
                end_line: e.end_line,
                kind: e.kind.clone(),
                name: e.name.clone(),
                language: e.language.clone(),
                score,
                content: e.content.clone(),
                dirty: found.source == Source::Overlay,
            }
        })
        .collect();
    Ok((hits, request.mode))
}
