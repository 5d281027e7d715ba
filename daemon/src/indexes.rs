//! The in-memory search indexes of HEAD, one per repository, built from the store on a
//! repository's first search and dropped when a job changes its blocks (the next search
//! rebuilds it). A build that raced with a job is not kept.

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
    slots: Mutex<HashMap<String, Slot>>,
}

impl Indexes {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The stored blocks of `root` changed: its index is stale.
    pub fn invalidate(&self, root: &str) {
        let mut slots = self.lock();
        let slot = slots.entry(root.to_owned()).or_default();
        slot.generation += 1;
        slot.index = None;
    }

    /// HEAD's index of `root`, built from the store if there is none.
    pub async fn head(&self, store: &Store, root: &str) -> Result<Arc<RepoIndex>, StoreError> {
        let generation = {
            let mut slots = self.lock();
            let slot = slots.entry(root.to_owned()).or_default();
            if let Some(index) = &slot.index {
                return Ok(index.clone());
            }
            slot.generation
        };
        let rows = store.repo_rows(Layer::Head, root, true).await?;
        let dims = store.dims();
        let index =
            tokio::task::spawn_blocking(move || Arc::new(RepoIndex::build(rows, dims, false)))
                .await
                .map_err(|e| StoreError::Query(format!("building the search index: {e}")))?;
        let mut slots = self.lock();
        let slot = slots.entry(root.to_owned()).or_default();
        if slot.generation == generation {
            slot.index = Some(index.clone());
        }
        Ok(index)
    }
}
