//! The in-memory search indexes, two per repository (HEAD's blocks, and the overlay of uncommitted
//! files), built from the store on first use and dropped when their blocks change (a job for
//! HEAD, an overlay refresh that changed something); the next search rebuilds them. A build that
//! raced with a change is not kept. The cache holds at most a budget of bytes
//! (`HGD_INDEX_CACHE_MB`, default 96): past it, the indexes searched longest ago are dropped
//! (a repository's next search reads its blocks from the store again, like after a restart).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::rank::RepoIndex;
use crate::store::{Layer, Store, StoreError};

#[derive(Default)]
struct Slot {
    /// Bumped whenever the repository's stored blocks change.
    generation: u64,
    index: Option<Arc<RepoIndex>>,
    /// What `index` holds, roughly.
    bytes: usize,
    used: Option<Instant>,
}

pub struct Indexes {
    slots: Mutex<HashMap<(String, Layer), Slot>>,
    budget: usize,
}

impl Default for Indexes {
    fn default() -> Self {
        let megabytes = std::env::var("HGD_INDEX_CACHE_MB")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .unwrap_or(96);
        Indexes::with_budget(megabytes << 20)
    }
}

impl Indexes {
    pub fn with_budget(bytes: usize) -> Indexes {
        Indexes {
            slots: Mutex::default(),
            budget: bytes,
        }
    }

    /// Bytes the cached indexes hold, roughly.
    pub fn memory_bytes(&self) -> usize {
        self.lock().values().map(|s| s.bytes).sum()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<(String, Layer), Slot>> {
        self.slots.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn drop_index(&self, root: &str, layer: Layer) {
        let mut slots = self.lock();
        let slot = slots.entry((root.to_owned(), layer)).or_default();
        slot.generation += 1;
        slot.index = None;
        slot.bytes = 0;
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
            slot.used = Some(Instant::now());
            if let Some(index) = &slot.index {
                return Ok(index.clone());
            }
            slot.generation
        };
        let rows = store.repo_rows(layer, root, true).await?;
        let dims = store.dims();
        // The overlay keeps its token bags: it is small, and its BM25 statistics come from HEAD.
        let keep_bags = layer == Layer::Overlay;
        let index = tokio::task::spawn_blocking(move || {
            let index = Arc::new(RepoIndex::build(rows, dims, keep_bags));
            // The rows read from the store (vectors as f32, the embedded text) are freed now;
            // without a trim the allocator keeps them resident.
            crate::memory::return_free_memory();
            index
        })
        .await
        .map_err(|e| StoreError::Query(format!("building the search index: {e}")))?;
        let bytes = index.memory_bytes();
        let mut slots = self.lock();
        let slot = slots.entry(key.clone()).or_default();
        if slot.generation == generation {
            slot.index = Some(index.clone());
            slot.bytes = bytes;
            let evicted = evict(&mut slots, self.budget, &key);
            drop(slots);
            if evicted {
                // Searches in flight may still hold the dropped indexes; their memory goes
                // back once they finish, so trim at the next eviction too.
                crate::memory::return_free_memory();
            }
        }
        Ok(index)
    }
}

/// Drops the least recently used indexes other than `keep` until the rest fit in `budget`.
/// True when it dropped one.
fn evict(
    slots: &mut HashMap<(String, Layer), Slot>,
    budget: usize,
    keep: &(String, Layer),
) -> bool {
    let mut total: usize = slots.values().map(|s| s.bytes).sum();
    let mut evicted = false;
    while total > budget {
        let oldest = slots
            .iter()
            .filter(|(k, s)| *k != keep && s.index.is_some())
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone());
        let Some(oldest) = oldest else { break };
        let slot = slots.get_mut(&oldest).expect("found above");
        total -= slot.bytes;
        slot.index = None;
        slot.bytes = 0;
        evicted = true;
    }
    evicted
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(bytes: usize, age_ms: u64) -> Slot {
        Slot {
            generation: 0,
            index: Some(Arc::new(RepoIndex::build(Vec::new(), 2, false))),
            bytes,
            used: Some(Instant::now() - std::time::Duration::from_millis(age_ms)),
        }
    }

    #[test]
    fn eviction_drops_the_least_recently_used_but_never_the_one_kept() {
        let key = |r: &str| (r.to_owned(), Layer::Head);
        let mut slots = HashMap::from([
            (key("old"), slot(40, 300)),
            (key("mid"), slot(40, 200)),
            (key("new"), slot(40, 100)),
            (key("kept"), slot(40, 900)),
        ]);
        assert!(evict(&mut slots, 100, &key("kept")));
        let cached: Vec<&str> = {
            let mut c: Vec<&str> = slots
                .iter()
                .filter(|(_, s)| s.index.is_some())
                .map(|(k, _)| k.0.as_str())
                .collect();
            c.sort();
            c
        };
        assert_eq!(cached, ["kept", "new"]);
        // A kept index larger than the budget stays: the search that built it needs it.
        assert!(evict(&mut slots, 10, &key("kept")));
        assert!(slots[&key("kept")].index.is_some());
        assert!(!evict(&mut slots, 10, &key("kept")));
    }
}
