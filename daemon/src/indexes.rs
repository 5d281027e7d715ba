//! The in-memory search indexes per repository: HEAD's blocks, and the overlay of uncommitted
//! files, built from the store on first use. An overlay refresh that changed something drops the
//! overlay's; the next search rebuilds it. A job that changed HEAD's blocks does not drop HEAD's
//! index (rebuilding it reads every block of the repository: seconds for a large one): the
//! paths it changed are hidden in it and searched in a small index of their new blocks instead,
//! until those paths pass a tenth of the repository's files; then the next search rebuilds the
//! whole. A build that raced with a change is not kept. The cache holds at most a budget of bytes
//! (`HGD_INDEX_CACHE_MB`, default 96): past it, the indexes searched longest ago are dropped
//! (a repository's next search reads its blocks from the store again, like after a restart).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use crate::rank::RepoIndex;
use crate::store::{BlockRow, Layer, Store, StoreError};

#[derive(Default)]
struct Slot {
    /// Bumped whenever the repository's stored blocks change.
    generation: u64,
    index: Option<Arc<RepoIndex>>,
    /// What `index` and `changed_index` hold, roughly.
    bytes: usize,
    /// What `index` alone holds.
    base_bytes: usize,
    used: Option<Instant>,
    /// HEAD's only: paths whose stored blocks changed since `index` was built.
    changed: Option<Arc<HashSet<String>>>,
    /// Their blocks now, built on first use after the change.
    changed_index: Option<Arc<RepoIndex>>,
}

impl Slot {
    fn clear(&mut self) {
        self.index = None;
        self.bytes = 0;
        self.base_bytes = 0;
        self.changed = None;
        self.changed_index = None;
    }
}

/// HEAD's index of a repository as a search reads it.
pub struct HeadIndex {
    pub base: Arc<RepoIndex>,
    /// Files committed since `base` was built: their paths (hidden in `base`) and their blocks.
    pub changed: Option<(Arc<HashSet<String>>, Arc<RepoIndex>)>,
}

/// Changed paths carried over commits at most: a tenth of the files HEAD's index was built
/// with, and at least this many.
const CARRY_MIN_PATHS: usize = 64;

pub struct Indexes {
    slots: Mutex<HashMap<(String, Layer), Slot>>,
    budget: usize,
    /// While a long job runs: the last index of stored and parsed blocks per repository, with
    /// when it was built (see [`Indexes::progressive`]).
    progressive: Mutex<HashMap<String, (Instant, Arc<RepoIndex>)>>,
}

impl Default for Indexes {
    fn default() -> Self {
        let megabytes = match std::env::var("HGD_INDEX_CACHE_MB") {
            Ok(v) => v.trim().parse::<usize>().unwrap_or_else(|_| {
                tracing::warn!("HGD_INDEX_CACHE_MB={v:?} is not a number of megabytes; using 96");
                96
            }),
            Err(_) => 96,
        };
        Indexes::with_budget(megabytes.saturating_mul(1 << 20))
    }
}

impl Indexes {
    pub fn with_budget(bytes: usize) -> Indexes {
        Indexes {
            slots: Mutex::default(),
            budget: bytes,
            progressive: Mutex::default(),
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
        slot.clear();
    }

    /// The stored HEAD blocks of `root` changed in ways not known path by path (a failed or
    /// interrupted job): its index is stale.
    pub fn invalidate(&self, root: &str) {
        self.drop_index(root, Layer::Head);
        self.lock_progressive().remove(root);
    }

    /// A job changed the stored HEAD blocks of `paths` (and nothing else) of `root`: the index
    /// is kept with those paths hidden and searched in a small index of their new blocks, unless
    /// too many paths changed since it was built (see [`CARRY_MIN_PATHS`]).
    pub fn head_committed(&self, root: &str, paths: &[String]) {
        {
            let mut slots = self.lock();
            let slot = slots.entry((root.to_owned(), Layer::Head)).or_default();
            // First the generation, then the progressive index: a progressive build finishing
            // in between is then not kept (see `keep_progressive`).
            slot.generation += 1;
            carry(slot, paths, root);
        }
        self.lock_progressive().remove(root);
    }

    fn lock_progressive(
        &self,
    ) -> std::sync::MutexGuard<'_, HashMap<String, (Instant, Arc<RepoIndex>)>> {
        self.progressive.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The index of stored and parsed blocks a search built during `root`'s running job, if it
    /// is younger than `max_age`: searches in quick succession during a long first index share
    /// one build (each costs seconds on a large repository) and see results at most that old.
    pub fn progressive(&self, root: &str, max_age: std::time::Duration) -> Option<Arc<RepoIndex>> {
        self.lock_progressive()
            .get(root)
            .filter(|(built, _)| built.elapsed() < max_age)
            .map(|(_, index)| index.clone())
    }

    /// The generation of `root`'s stored blocks: a progressive build started at one generation
    /// is kept only while it is still current (no job ended since).
    pub fn generation(&self, root: &str) -> u64 {
        head_generation(&self.lock(), root)
    }

    /// Keeps `index`, whose build started at `started` when the stored blocks were at
    /// `generation`, as `root`'s progressive index, unless a job ended since (see `invalidate`).
    pub fn keep_progressive(
        &self,
        root: &str,
        started: Instant,
        generation: u64,
        index: Arc<RepoIndex>,
    ) {
        let slots = self.lock();
        if head_generation(&slots, root) == generation {
            self.lock_progressive()
                .insert(root.to_owned(), (started, index));
        }
    }

    /// The overlay blocks of `root` changed.
    pub fn invalidate_overlay(&self, root: &str) {
        self.drop_index(root, Layer::Overlay);
    }

    /// HEAD's index of `root`, built from the store if there is none, with the blocks of the
    /// files committed since it was built.
    pub async fn head(&self, store: &Store, root: &str) -> Result<HeadIndex, StoreError> {
        let key = (root.to_owned(), Layer::Head);
        loop {
            let (base, built) = self.get_or_build(store, root, Layer::Head).await?;
            let (generation, changed) = {
                let mut slots = self.lock();
                let slot = slots.entry(key.clone()).or_default();
                if !slot.index.as_ref().is_some_and(|i| Arc::ptr_eq(i, &base)) {
                    if built {
                        // Built from the store here but not kept (a job ended meanwhile): used
                        // once, as it is.
                        return Ok(HeadIndex {
                            base,
                            changed: None,
                        });
                    }
                    // A cached index dropped or replaced since: its hidden paths went with
                    // it, so look again.
                    continue;
                }
                let Some(paths) = slot.changed.clone() else {
                    return Ok(HeadIndex {
                        base,
                        changed: None,
                    });
                };
                if let Some(index) = &slot.changed_index {
                    return Ok(HeadIndex {
                        base,
                        changed: Some((paths, index.clone())),
                    });
                }
                (slot.generation, paths)
            };
            let wanted: Vec<String> = changed.iter().cloned().collect();
            let rows = store.repo_rows_at(Layer::Head, root, &wanted).await?;
            // Kept with its token bags: scored with the base's BM25 statistics, like the overlay.
            let index = build(rows, store.dims(), true).await?;
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_default();
            if slot.generation == generation {
                slot.bytes = slot.base_bytes + index.memory_bytes();
                slot.changed_index = Some(index.clone());
            }
            return Ok(HeadIndex {
                base,
                changed: Some((changed, index)),
            });
        }
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
        Ok(self.get_or_build(store, root, layer).await?.0)
    }

    /// The cached index, or one built from the store now (`true`: built here).
    async fn get_or_build(
        &self,
        store: &Store,
        root: &str,
        layer: Layer,
    ) -> Result<(Arc<RepoIndex>, bool), StoreError> {
        let key = (root.to_owned(), layer);
        let generation = {
            let mut slots = self.lock();
            let slot = slots.entry(key.clone()).or_default();
            slot.used = Some(Instant::now());
            if let Some(index) = &slot.index {
                return Ok((index.clone(), false));
            }
            slot.generation
        };
        let rows = store.repo_rows(layer, root, true).await?;
        // The overlay keeps its token bags: it is small, and its BM25 statistics come from HEAD.
        let index = build(rows, store.dims(), layer == Layer::Overlay).await?;
        let bytes = index.memory_bytes();
        let mut slots = self.lock();
        let slot = slots.entry(key).or_default();
        if slot.generation == generation {
            slot.clear();
            slot.index = Some(index.clone());
            slot.bytes = bytes;
            slot.base_bytes = bytes;
            let evicted = evict(&mut slots, self.budget, root);
            drop(slots);
            if !evicted.is_empty() {
                // Freed and trimmed off the async threads, and after the lock is released.
                tokio::task::spawn_blocking(move || {
                    drop(evicted);
                    crate::memory::return_free_memory();
                });
            }
        }
        Ok((index, true))
    }
}

/// Builds an index of `rows` off the async threads.
async fn build(
    rows: Vec<BlockRow>,
    dims: usize,
    keep_bags: bool,
) -> Result<Arc<RepoIndex>, StoreError> {
    // A large read (vectors as f32, every block's text) is freed once the index is built;
    // without a trim the allocator keeps it resident. Small ones (an overlay after an edit, the
    // files of a commit) are not worth a trim on a search's path.
    let trim = rows.len() >= TRIM_AFTER_ROWS;
    tokio::task::spawn_blocking(move || {
        let index = Arc::new(RepoIndex::build(rows, dims, keep_bags));
        if trim {
            crate::memory::return_free_memory();
        }
        index
    })
    .await
    .map_err(|e| StoreError::Query(format!("building the search index: {e}")))
}

/// Hides `paths` in `slot`'s HEAD index (searched in the changed layer instead), or drops the
/// index when too many paths changed since it was built.
fn carry(slot: &mut Slot, paths: &[String], root: &str) {
    if paths.is_empty() {
        return;
    }
    let Some(base) = &slot.index else {
        return slot.clear();
    };
    let mut changed = slot.changed.as_deref().cloned().unwrap_or_default();
    changed.extend(paths.iter().cloned());
    if changed.len() > CARRY_MIN_PATHS.max(base.file_count() / 10) {
        tracing::info!(
            "search index of {root}: {} paths changed, rebuilt on the next search",
            changed.len()
        );
        return slot.clear();
    }
    tracing::info!(
        "search index of {root}: carried, {} paths changed since it was built",
        changed.len()
    );
    slot.bytes = slot.base_bytes;
    slot.changed = Some(Arc::new(changed));
    slot.changed_index = None;
}

fn head_generation(slots: &HashMap<(String, Layer), Slot>, root: &str) -> u64 {
    slots
        .get(&(root.to_owned(), Layer::Head))
        .map_or(0, |s| s.generation)
}

/// Rows read for one index build past which the freed read is trimmed.
const TRIM_AFTER_ROWS: usize = 2_000;

/// Takes the least recently used indexes out of the cache until the rest fit in `budget`, never
/// those of `keep` (the repository being searched: its HEAD and overlay indexes are used
/// together) nor those a search still holds (dropping them would free nothing). Returns them,
/// for the caller to drop outside the lock.
fn evict(
    slots: &mut HashMap<(String, Layer), Slot>,
    budget: usize,
    keep: &str,
) -> Vec<Arc<RepoIndex>> {
    let mut total: usize = slots.values().map(|s| s.bytes).sum();
    let mut evicted = Vec::new();
    while total > budget {
        let oldest = slots
            .iter()
            .filter(|(k, s)| {
                k.0 != keep && s.index.as_ref().is_some_and(|i| Arc::strong_count(i) == 1)
            })
            .min_by_key(|(_, s)| s.used)
            .map(|(k, _)| k.clone());
        let Some(oldest) = oldest else { break };
        let slot = slots.get_mut(&oldest).expect("found above");
        total -= slot.bytes;
        evicted.extend(slot.index.take());
        slot.clear();
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
            base_bytes: bytes,
            used: Some(Instant::now() - std::time::Duration::from_millis(age_ms)),
            changed: None,
            changed_index: None,
        }
    }

    fn cached(slots: &HashMap<(String, Layer), Slot>) -> Vec<String> {
        let mut c: Vec<String> = slots
            .iter()
            .filter(|(_, s)| s.index.is_some())
            .map(|(k, _)| format!("{}:{:?}", k.0, k.1))
            .collect();
        c.sort();
        c
    }

    #[test]
    fn eviction_drops_the_least_recently_used_but_never_the_searched_repository() {
        let key = |r: &str, layer| (r.to_owned(), layer);
        let mut slots = HashMap::from([
            (key("old", Layer::Head), slot(40, 300)),
            (key("mid", Layer::Head), slot(40, 200)),
            (key("new", Layer::Head), slot(40, 100)),
            (key("kept", Layer::Head), slot(40, 900)),
            (key("kept", Layer::Overlay), slot(40, 800)),
        ]);
        assert_eq!(evict(&mut slots, 130, "kept").len(), 2);
        assert_eq!(
            cached(&slots),
            ["kept:Head", "kept:Overlay", "new:Head"],
            "both layers of the searched repository stay"
        );
        // An index a search still holds is not dropped: nothing would be freed.
        let held = slots[&key("new", Layer::Head)].index.clone();
        assert!(evict(&mut slots, 10, "kept").is_empty());
        drop(held);
        assert_eq!(evict(&mut slots, 10, "kept").len(), 1);
        assert_eq!(cached(&slots), ["kept:Head", "kept:Overlay"]);
    }
}
