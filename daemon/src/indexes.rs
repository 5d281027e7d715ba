//! The in-memory search indexes, two per repository (HEAD's blocks, and the overlay of uncommitted
//! files), built from the store on first use and dropped when their blocks change (a job for
//! HEAD, an overlay refresh that changed something); the next search rebuilds them. A build that
//! raced with a change is not kept.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::rank::RepoIndex;
use crate::store::{Layer, Store, StoreError};

#[derive(Default)]
struct Slot {
    /// Bumped whenever the repository's stored blocks change.
    generation: u64,
    index: Option<Arc<RepoIndex>>,
}

#[derive(Default)]
pub struct Indexes {
    slots: Mutex<HashMap<(String, Layer), Slot>>,
}

impl Indexes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Layer), Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drop_index(&self, root: &str, layer: Layer) {
        let mut slots = self.lock();
        let slot = slots.entry((root.to_owned(), layer)).or_default();
        slot.generation += 1;
        slot.index = None;
    }

    /// The stored HEAD blocks of `root` changed: its index is stale.
    pub fn invalidate(&self, root: &str) {
        self.drop_index(root, Layer::Head);
    }

    /// The overlay blocks of `root` changed.
    pub fn invalidate_overlay(&self, root: &str) {
        self.drop_index(root, Layer::Overlay);
    }

    /// HEAD's index of `root`, built from the store if there is none.
    pub async fn head(&self, store: &Store, root: &str) -> Result<Arc<RepoIndex>, StoreError> {
        self.get(store, root, Layer::Head).await
    }

    /// The index of `root`'s uncommitted files, built from the store if there is none.
    pub async fn overlay(&self, store: &Store, root: &str) -> Result<Arc<RepoIndex>, StoreError> {
        self.get(store, root, Layer::Overlay).await
    }

    async fn get(
        &self,
        store: &Store,
        root: &str,
        layer: Layer,
    ) -> Result<Arc<RepoIndex>, StoreError> {
        let key = (root.to_owned(), layer);
        let generation = {
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_default();
            if let Some(index) = &slot.index {
                return Ok(index.clone());
            }
            slot.generation
        };
        let rows = store.repo_rows(layer, root, true).await?;
        let dims = store.dims();
        // The overlay keeps its token bags: it is small, and its BM25 statistics come from HEAD.
        let keep_bags = layer == Layer::Overlay;
        let index =
            tokio::task::spawn_blocking(move || Arc::new(RepoIndex::build(rows, dims, keep_bags)))
                .await
                .map_err(|e| StoreError::Query(format!("building the search index: {e}")))?;
        let mut slots = self.lock();
        let slot = slots.entry(key).or_default();
        if slot.generation == generation {
            slot.index = Some(index.clone());
        }
        Ok(index)
    }
}
