//! Search: vector nearest neighbours and BM25 full-text search over the same blocks, fused by
//! reciprocal rank, restricted to the searched subtree.

use std::collections::HashMap;

use hgd_protocol::Hit;

use crate::embed::Embedder;
use crate::git::in_subtree;
use crate::store::{quote, Layer, Store, StoreError, StoredHit};

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

/// Searches `repo` under `subtree`: HEAD's blocks except those of `dirty` paths, plus the overlay
/// of uncommitted files.
pub async fn search(
    store: &Store,
    embedder: &std::sync::Arc<Embedder>,
    repo: &str,
    subtree: &str,
    dirty: &[String],
    query: &str,
    limit: usize,
) -> Result<Vec<Hit>, SearchError> {
    let overlay_filter = subtree_filter(repo, subtree);
    let mut head_filter = overlay_filter.clone();
    if !dirty.is_empty() {
        let list = dirty.iter().map(|p| quote(p)).collect::<Vec<_>>().join(",");
        head_filter.push_str(&format!(" AND path NOT IN ({list})"));
    }
    let candidates = (limit * 4).max(40);
    let vector = {
        let embedder = embedder.clone();
        let query = query.to_owned();
        tokio::task::spawn_blocking(move || embedder.embed_query(&query))
            .await
            .map_err(|e| SearchError::Internal(e.to_string()))??
    };
    let (head_vec, head_text) = tokio::join!(
        store.vector_search(Layer::Head, &vector, &head_filter, candidates),
        store.text_search(Layer::Head, query, &head_filter, candidates)
    );
    let (mut semantic, mut lexical): (Vec<Ranked>, Vec<Ranked>) = (
        head_vec?.into_iter().map(|h| (h, false)).collect(),
        head_text?.into_iter().map(|h| (h, false)).collect(),
    );
    if !dirty.is_empty() {
        let (over_vec, over_text) = tokio::join!(
            store.vector_search(Layer::Overlay, &vector, &overlay_filter, candidates),
            store.text_search(Layer::Overlay, query, &overlay_filter, candidates)
        );
        semantic.extend(over_vec?.into_iter().map(|h| (h, true)));
        lexical.extend(over_text?.into_iter().map(|h| (h, true)));
        // One ranking per kind: nearest first, best BM25 first.
        semantic.sort_by(|a, b| a.0.rank.total_cmp(&b.0.rank));
        lexical.sort_by(|a, b| b.0.rank.total_cmp(&a.0.rank));
    }
    Ok(fuse([semantic, lexical], subtree, limit))
}

/// A hit and whether it comes from the overlay.
type Ranked = (StoredHit, bool);

/// Reciprocal rank fusion of ranked lists of blocks, keyed by (path, start line).
fn fuse<const N: usize>(lists: [Vec<Ranked>; N], subtree: &str, limit: usize) -> Vec<Hit> {
    let mut scored: HashMap<(String, u32), (f32, Ranked)> = HashMap::new();
    for list in lists {
        for (rank, hit) in list
            .into_iter()
            .filter(|h| in_subtree(&h.0.path, subtree))
            .enumerate()
        {
            let score = 1.0 / (RRF_K + rank as f32 + 1.0);
            scored
                .entry((hit.0.path.clone(), hit.0.start_line))
                .and_modify(|(s, _)| *s += score)
                .or_insert((score, hit));
        }
    }
    let mut ranked: Vec<(f32, Ranked)> = scored.into_values().collect();
    ranked.sort_by(|a, b| {
        b.0.total_cmp(&a.0)
            .then_with(|| a.1 .0.path.cmp(&b.1 .0.path))
            .then_with(|| a.1 .0.start_line.cmp(&b.1 .0.start_line))
    });
    ranked
        .into_iter()
        .take(limit)
        .map(|(score, (h, dirty))| Hit {
            path: h.path,
            line: h.start_line,
            end_line: h.end_line,
            kind: h.kind,
            name: h.name,
            language: h.language,
            score,
            content: h.content,
            dirty,
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
