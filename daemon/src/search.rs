//! Search: vector nearest neighbours and BM25 full-text search over the same blocks, fused by
//! reciprocal rank, restricted to the searched subtree.

use std::collections::HashMap;

use hgd_protocol::Hit;

use crate::embed::Embedder;
use crate::git::in_subtree;
use crate::store::{quote, Store, StoreError, StoredHit};

#[derive(Debug, thiserror::Error)]
pub enum SearchError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding the query failed: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("internal: {0}")]
    Internal(String),
}

/// Reciprocal rank fusion constant (the usual 60).
const RRF_K: f32 = 60.0;

/// The LanceDB filter for `repo`'s blocks under `subtree`. `LIKE` treats `_` as a wildcard, so it
/// selects a superset; [`in_subtree`] makes it exact afterwards.
fn subtree_filter(repo: &str, subtree: &str) -> String {
    let mut filter = format!("repo = {}", quote(repo));
    if !subtree.is_empty() {
        let prefix: String = subtree.chars().take_while(|&c| c != '%').collect();
        filter.push_str(&format!(
            " AND (path = {} OR path LIKE {})",
            quote(subtree),
            quote(&format!("{prefix}/%"))
        ));
    }
    filter
}

pub async fn search(
    store: &Store,
    embedder: &std::sync::Arc<Embedder>,
    repo: &str,
    subtree: &str,
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    let filter = subtree_filter(repo, subtree);
    let candidates = (limit * 4).max(40);
    let vector = {
        let embedder = embedder.clone();
        let query = query.to_owned();
        tokio::task::spawn_blocking(move || embedder.embed_query(&query))
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))??
    };
    let (semantic, lexical) = tokio::join!(
        store.vector_search(&vector, &filter, candidates),
        store.text_search(query, &filter, candidates)
    );
    let (semantic, lexical) = (semantic?, lexical?);
    Ok(fuse([semantic, lexical], subtree, limit))
}

/// Reciprocal rank fusion of ranked lists of blocks, keyed by (path, start line).
fn fuse<const N: usize>(lists: [Vec<StoredHit>; N], subtree: &str, limit: usize) -> Vec<Hit> {
    let mut scored: HashMap<(String, u32), (f32, StoredHit)> = HashMap::new();
    for list in lists {
        for (rank, hit) in list
            .into_iter()
            .filter(|h| in_subtree(&h.path, subtree))
            .enumerate()
        {
            let score = 1.0 / (RRF_K + rank as f32 + 1.0);
            scored
                .entry((hit.path.clone(), hit.start_line))
                .and_modify(|(s, _)| *s += score)
                .or_insert((score, hit));
        }
    }
    let mut ranked: Vec<(f32, StoredHit)> = scored.into_values().collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1.path.cmp(&b.1.path))
            .then_with(|| a.1.start_line.cmp(&b.1.start_line))
    });
    ranked
        .into_iter()
        .take(limit)
        .map(|(score, h)| Hit {
            path: h.path,
            line: h.start_line,
            end_line: h.end_line,
            kind: h.kind,
            name: h.name,
            language: h.language,
            score,
            content: h.content,
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subtree_filter_quotes_and_scopes() {
        assert_eq!(subtree_filter("/r/it's", ""), "repo = '/r/it''s'");
        assert_eq!(
            subtree_filter("/r", "src/a_b"),
            "repo = '/r' AND (path = 'src/a_b' OR path LIKE 'src/a_b/%')"
        );
    }
}
