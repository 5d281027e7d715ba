//! How fresh a search is: which paths of the work tree differ from HEAD, and the overlay of their
//! blocks that searches read over HEAD's.
//!
//! Walking the work tree (`git status`) on every search costs time that grows with the work tree.
//! Instead each tracked work tree has a file-system watcher (inotify, FSEvents through `notify`)
//! that marks it changed on any event outside the git directory. A search walks only when the
//! tree is marked changed, the git index file or HEAD moved, or the searched scopes differ from
//! the last walk's; otherwise it reuses the last walk's dirty paths and leaves the overlay as it
//! is. A work tree that cannot be watched (watch limit, unsupported file system) is walked on
//! every search, as before.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::git::{GitError, Repo};
use crate::service::{Service, ServiceError};
use crate::store::{BlobKey, Layer};

/// The watched work trees, by canonical root.
#[derive(Default)]
pub struct WorkTrees {
    trees: Mutex<HashMap<String, Arc<WorkTree>>>,
}

struct WorkTree {
    /// Set by the watcher on any change outside the git directory, cleared before each walk.
    changed: Arc<AtomicBool>,
    /// `None` when the tree could not be watched: every search walks it.
    watcher: Option<notify::RecommendedWatcher>,
    git_dir: PathBuf,
    /// What the last complete refresh found; `None` while a walk is under way or after a failure.
    last: Mutex<Option<Known>>,
}

/// What, besides the work tree's files, decides the dirty set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    head: Option<String>,
    scopes: Vec<String>,
    /// The git index (staging changes which paths differ from HEAD without touching the tree).
    index: Option<FileStamp>,
    /// `info/exclude` (changes which untracked files count).
    exclude: Option<FileStamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
        })
    }
}

struct Known {
    stamp: Stamp,
    dirty: Vec<String>,
}

/// The dirty paths of a work tree, and whether they are known to be what the last complete
/// refresh saw (so the overlay needs no work).
pub enum Dirty {
    Unchanged(Vec<String>),
    Walked { dirty: Vec<String>, stamp: Stamp },
}

impl WorkTrees {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<WorkTree>>> {
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The paths under `scopes` whose work-tree state differs from `head` (blocking: it may walk
    /// the work tree). The first call for a work tree starts watching it.
    pub fn dirty(
        &self,
        root: &Path,
        head: Option<&str>,
        scopes: &[String],
    ) -> Result<Dirty, GitError> {
        let key = root.to_string_lossy().into_owned();
        let existing = self.lock().get(&key).cloned();
        let (tree, repo) = match existing {
            Some(tree) => (tree, None),
            None => {
                let repo = Repo::open(root)?;
                let tree = Arc::new(WorkTree::watch(root, repo.git_dir()));
                self.lock().insert(key, tree.clone());
                (tree, Some(repo))
            }
        };
        let stamp = Stamp {
            head: head.map(str::to_owned),
            scopes: scopes.to_vec(),
            index: FileStamp::of(&tree.git_dir.join("index")),
            exclude: FileStamp::of(&tree.git_dir.join("info").join("exclude")),
        };
        {
            let mut last = tree.last.lock().unwrap_or_else(|p| p.into_inner());
            if tree.watcher.is_some() && !tree.changed.load(Ordering::Acquire) {
                if let Some(known) = last.as_ref().filter(|k| k.stamp == stamp) {
                    return Ok(Dirty::Unchanged(known.dirty.clone()));
                }
            }
            // Events from now on mark the tree again; until this walk's refresh completes, no
            // answer is reused.
            tree.changed.store(false, Ordering::Release);
            *last = None;
        }
        let repo = match repo {
            Some(repo) => repo,
            None => Repo::open(root)?,
        };
        let dirty = repo.dirty_paths(scopes)?;
        Ok(Dirty::Walked { dirty, stamp })
    }

    /// The overlay now matches a walk: later searches may reuse it until something changes.
    fn remember(&self, root: &str, stamp: Stamp, dirty: Vec<String>) {
        if let Some(tree) = self.lock().get(root) {
            *tree.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Known { stamp, dirty });
        }
    }

    /// Stops watching `root`.
    pub fn forget(&self, root: &str) {
        self.lock().remove(root);
    }

    /// How many work trees are watched (the rest are walked on every search).
    pub fn watched(&self) -> usize {
        self.lock().values().filter(|t| t.watcher.is_some()).count()
    }
}

/// `HGD_WATCH=off` turns watching off: every search walks the work tree (for file systems
/// without change notifications, such as some network mounts, and to measure the difference).
fn watching_enabled() -> bool {
    !matches!(
        std::env::var("HGD_WATCH").as_deref(),
        Ok("off" | "0" | "false" | "no")
    )
}

impl WorkTree {
    fn watch(root: &Path, git_dir: &Path) -> WorkTree {
        use notify::Watcher;
        let changed = Arc::new(AtomicBool::new(true));
        let git_dir = git_dir
            .canonicalize()
            .unwrap_or_else(|_| git_dir.to_path_buf());
        if !watching_enabled() {
            return WorkTree {
                changed,
                watcher: None,
                git_dir,
                last: Mutex::new(None),
            };
        }
        let flag = changed.clone();
        let ignored = git_dir.clone();
        let watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let relevant = match event {
                // Reads (ours included: the overlay reads dirty files) change nothing.
                Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => false,
                Ok(event) => {
                    event.paths.is_empty() || event.paths.iter().any(|p| !p.starts_with(&ignored))
                }
                // Lost events (queue overflow) or a failing watch: assume anything changed.
                Err(_) => true,
            };
            if relevant {
                flag.store(true, Ordering::Release);
            }
        })
        .and_then(|mut watcher| {
            watcher.watch(root, notify::RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        let watcher = match watcher {
            Ok(watcher) => Some(watcher),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); every search will check its files",
                    root.display()
                );
                None
            }
        };
        WorkTree {
            changed,
            watcher,
            git_dir,
            last: Mutex::new(None),
        }
    }
}

impl Service {
    /// Brings the overlay of `root`'s uncommitted files up to date and returns every dirty path
    /// (modified, deleted or untracked) under its scopes; HEAD's blocks of those paths are hidden
    /// from search. When the watcher saw nothing change, this costs a few file stats. Otherwise
    /// only files whose content changed since the last refresh are parsed, and only content never
    /// seen before is embedded.
    pub async fn refresh_overlay(
        &self,
        root: &str,
        head: Option<&str>,
    ) -> Result<Vec<String>, ServiceError> {
        let _guard = self.overlay_lock.lock().await;
        let Some(scopes) = self.scopes(root) else {
            return Ok(Vec::new());
        };
        let root_path = PathBuf::from(root);
        let trees = self.work_trees.clone();
        let head = head.map(str::to_owned);
        let (dirty, stamp, files) = tokio::task::spawn_blocking(move || {
            match trees.dirty(&root_path, head.as_deref(), &scopes)? {
                Dirty::Unchanged(dirty) => Ok::<_, GitError>((dirty, None, Vec::new())),
                Dirty::Walked { dirty, stamp } => {
                    let repo = Repo::open(&root_path)?;
                    let files: Vec<(String, String, String)> = dirty
                        .iter()
                        .filter_map(|p| repo.read_worktree_text(p).map(|(t, o)| (p.clone(), t, o)))
                        .collect();
                    Ok((dirty, Some(stamp), files))
                }
            }
        })
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))??;
        let Some(stamp) = stamp else {
            return Ok(dirty);
        };

        let stored = self.store.overlay_files(root).await?;
        let current: HashMap<&str, &str> = files
            .iter()
            .map(|(p, _, o)| (p.as_str(), o.as_str()))
            .collect();
        let stale: Vec<String> = stored
            .iter()
            .filter(|(p, o)| current.get(p.as_str()) != Some(&o.as_str()))
            .map(|(p, _)| p.clone())
            .collect();
        if !stale.is_empty() {
            self.store.delete_overlay(root, &stale).await?;
            self.indexes.invalidate_overlay(root);
        }

        let new_files: Vec<(String, String, String)> = files
            .into_iter()
            .filter(|(p, _, o)| stored.get(p) != Some(o))
            .collect();
        if !new_files.is_empty() {
            self.add_to_overlay(root, new_files).await?;
            self.indexes.invalidate_overlay(root);
        }
        self.work_trees.remember(root, stamp, dirty.clone());
        Ok(dirty)
    }

    /// Stores blocks for changed work-tree files `(path, text, blob id)`: copies of known blobs'
    /// blocks, and new blocks for content never seen before.
    async fn add_to_overlay(
        &self,
        root: &str,
        new_files: Vec<(String, String, String)>,
    ) -> Result<(), ServiceError> {
        let keys: Vec<BlobKey> = new_files
            .iter()
            .map(|(p, _, o)| BlobKey::at(p, o))
            .collect();
        let known = self.store.known_among(&keys).await?;
        let mut rows = Vec::new();
        let mut to_embed = Vec::new();
        for (path, text, oid) in new_files {
            let key = BlobKey::at(&path, &oid);
            if known.contains(&key) {
                rows.extend(self.store.copies_of_blob(&key, root, &path).await?);
            } else {
                to_embed.push(crate::indexer::Parsed::new(
                    path,
                    oid,
                    &text,
                    &self.indexer.limits,
                ));
            }
        }
        if !to_embed.is_empty() {
            let embedder = self.embedder.clone();
            let root = root.to_owned();
            let embedded = tokio::task::spawn_blocking(move || {
                crate::indexer::embed_rows(&embedder, &root, to_embed)
            })
            .await
            .map_err(|e| ServiceError::Internal(e.to_string()))?
            .map_err(|e| ServiceError::Internal(e.to_string()))?;
            self.count_embedded(embedded.len());
            rows.extend(embedded);
        }
        self.store.add_to(Layer::Overlay, &rows).await?;
        Ok(())
    }
}
