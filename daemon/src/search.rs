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
}

/// How stale the results of a search during a long job may be: searches this close share one
/// index of the stored and parsed blocks.
pub const PROGRESSIVE_MAX_AGE: std::time::Duration = std::time::Duration::from_secs(5);

/// What to search and how.
pub struct Request<'a> {
    pub repo: &'a str,
    pub subtree: &'a str,
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

/// A query embedding running on a blocking thread.
pub type Embedding = tokio::task::JoinHandle<Result<Vec<f32>, crate::embed::EmbedError>>;

/// Starts embedding `query` at once, so that it runs while the search checks HEAD and the work
/// tree (about half of a search's time in the daemon is the embedding).
pub fn embed_early(embedder: &Arc<Embedder>, query: &str) -> Embedding {
    let embedder = embedder.clone();
    let query = query.to_owned();
    tokio::task::spawn_blocking(move || embedder.embed_query(&query))
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
        if request.mode == Mode::Lexical {
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
    let query = Query::parse(request.query);
    let search = Search {
        head: &head.base,
        changed: head
            .changed
            .as_ref()
            .map(|(paths, index)| (index.as_ref(), paths.as_ref())),
        overlay: overlay.as_deref(),
        dirty: &dirty,
        subtree: request.subtree,
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
