//! How fresh a search is: whether HEAD is indexed under the searched scope (`ensure_indexed`,
//! which takes a ticket for a job when it is not), which paths of the work tree differ from
//! HEAD, and the overlay of their blocks that searches read over HEAD's.
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

use std::time::Duration;

use super::{RepoEntry, Service, ServiceError};
use crate::git::{self, GitError, Located, Repo};
use crate::store::{BlobKey, Layer, RepoRecord};

/// Repositories searches opened, by git directory, so that a search finds its repository and
/// HEAD without reading git's configuration again (about a millisecond per search). One is
/// opened again when its `config` file changes or its work tree is no longer where `.git` is
/// found; HEAD and references are read on every search.
pub struct OpenRepos {
    by_git_dir: Mutex<lru::LruCache<PathBuf, (Option<FileStamp>, git::SharedRepo)>>,
}

/// Repositories kept open; more are opened again as searches need them.
const OPEN_REPOS: usize = 64;

impl Default for OpenRepos {
    fn default() -> Self {
        OpenRepos {
            by_git_dir: Mutex::new(lru::LruCache::new(
                std::num::NonZeroUsize::new(OPEN_REPOS).expect("non-zero"),
            )),
        }
    }
}

impl OpenRepos {
    /// The work tree containing `path` and its HEAD commit (`None`: no commits yet): every
    /// search starts here.
    pub fn locate_with_head(&self, path: &Path) -> Result<(Located, Option<String>), GitError> {
        let found = git::find_upwards(path)?;
        let config = FileStamp::of(&found.git_dir.join("config"));
        let cached = {
            let mut open = self.by_git_dir.lock().unwrap_or_else(|p| p.into_inner());
            open.get(&found.git_dir)
                .filter(|(stamp, repo)| *stamp == config && repo.serves(&found))
                .map(|(_, repo)| repo.clone())
        };
        let repo = match cached {
            Some(repo) => repo,
            None => {
                let repo = git::SharedRepo::open(&found.canonical)?;
                let mut open = self.by_git_dir.lock().unwrap_or_else(|p| p.into_inner());
                if repo.serves(&found) {
                    open.put(found.git_dir, (config, repo.clone()));
                } else {
                    // A work tree configured away from its `.git`: opened on every search.
                    open.pop(&found.git_dir);
                }
                repo
            }
        };
        repo.locate_with_head(&found.canonical)
    }
}

/// The watched work trees, by canonical root.
pub struct WorkTrees {
    trees: Mutex<HashMap<String, Arc<WorkTree>>>,
    /// The daemon's home: its own writes (store, logs) inside a watched tree are not edits.
    home: PathBuf,
}

struct WorkTree {
    /// Set by the watcher on any change outside the git directory, cleared before each walk.
    changed: Arc<AtomicBool>,
    /// Set when events were lost or the watch failed: the next search watches again.
    broken: Arc<AtomicBool>,
    /// Events seen for [`SYNC_FILE`], so a search knows the watcher has caught up.
    synced: Arc<(Mutex<u64>, std::sync::Condvar)>,
    /// `None` when the tree could not be watched: every search walks it.
    watcher: Option<notify::RecommendedWatcher>,
    /// The file a search touches to sync with the watcher; `None` when the git directory is
    /// outside the watched tree (linked work trees): every search walks.
    sync_file: Option<PathBuf>,
    git_dir: PathBuf,
    /// Where `info/exclude` lives (the main git dir of a linked work tree).
    common_dir: PathBuf,
    /// Device and inode of the root when watched: a tree deleted and made again at the same
    /// path is a new tree the old watch does not see.
    identity: Option<(u64, u64)>,
    /// When a search last asked about this tree (idle watches are released).
    used: Mutex<std::time::Instant>,
    /// What the last complete refresh found; `None` while a walk is under way or after a failure.
    last: Mutex<Option<Known>>,
}

/// What, besides the work tree's files, decides the dirty set.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    head: Option<String>,
    scopes: Vec<String>,
    /// The git index (staging changes which paths differ from HEAD without touching the tree),
    /// and its trailing checksum: two writes in one second can leave the same size, time and
    /// even inode (git renames `index.lock` over it).
    index: Option<FileStamp>,
    index_checksum: Option<[u8; 20]>,
    /// `info/exclude` (changes which untracked files count).
    exclude: Option<FileStamp>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
struct FileStamp {
    modified: Option<std::time::SystemTime>,
    len: u64,
    #[cfg(unix)]
    inode: u64,
    #[cfg(unix)]
    device: u64,
}

impl FileStamp {
    /// Device and inode (on Unix; elsewhere always the same).
    fn identity(&self) -> (u64, u64) {
        #[cfg(unix)]
        return (self.device, self.inode);
        #[cfg(not(unix))]
        return (0, 0);
    }

    fn of(path: &Path) -> Option<FileStamp> {
        let meta = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: meta.modified().ok(),
            len: meta.len(),
            #[cfg(unix)]
            inode: std::os::unix::fs::MetadataExt::ino(&meta),
            #[cfg(unix)]
            device: std::os::unix::fs::MetadataExt::dev(&meta),
        })
    }
}

/// The last 20 bytes of a file (the git index ends with the SHA-1 of its content).
fn trailing_checksum(path: &Path) -> Option<[u8; 20]> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path).ok()?;
    file.seek(SeekFrom::End(-20)).ok()?;
    let mut sum = [0u8; 20];
    file.read_exact(&mut sum).ok()?;
    Some(sum)
}

struct Known {
    stamp: Stamp,
    dirty: Vec<String>,
}

/// The dirty paths of a work tree, and whether they are known to be what the last complete
/// refresh saw (so the overlay needs no work).
pub enum Dirty {
    Unchanged(Vec<String>),
    /// Walked now: the repository it was walked with reads the dirty files next.
    Walked {
        dirty: Vec<String>,
        stamp: Stamp,
        repo: Box<Repo>,
    },
}

impl WorkTrees {
    pub fn new(home: &Path) -> WorkTrees {
        WorkTrees {
            trees: Mutex::default(),
            home: home.canonicalize().unwrap_or_else(|_| home.to_path_buf()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Arc<WorkTree>>> {
        self.trees.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The paths under `scopes` whose work-tree state differs from `head` (blocking: it may walk
    /// the work tree). The first call for a work tree starts watching it; a watch that broke
    /// (lost events, the tree deleted or made again at the same path) starts again.
    pub fn dirty(
        &self,
        root: &Path,
        head: Option<&str>,
        scopes: &[String],
    ) -> Result<Dirty, GitError> {
        let key = root.to_string_lossy().into_owned();
        let existing = {
            let mut trees = self.lock();
            // A watch costs kernel resources and a thread: release those of trees nobody
            // searched for a while (the next search there walks and watches again).
            trees.retain(|k, t| {
                k == &key
                    || t.used.lock().unwrap_or_else(|p| p.into_inner()).elapsed() < WATCH_IDLE_LIMIT
            });
            trees.get(&key).cloned()
        };
        let identity = FileStamp::of(root).map(|s| s.identity());
        let tree = match existing {
            Some(tree) if !tree.broken.load(Ordering::Acquire) && tree.identity == identity => tree,
            _ => {
                let repo = Repo::open(root)?;
                let tree = Arc::new(WorkTree::watch(root, repo.git_dir(), &self.home, identity));
                self.lock().insert(key, tree.clone());
                tree
            }
        };
        *tree.used.lock().unwrap_or_else(|p| p.into_inner()) = std::time::Instant::now();
        let stamp = Stamp {
            head: head.map(str::to_owned),
            scopes: scopes.to_vec(),
            index: FileStamp::of(&tree.git_dir.join("index")),
            index_checksum: trailing_checksum(&tree.git_dir.join("index")),
            exclude: FileStamp::of(&tree.common_dir.join("info").join("exclude")),
        };
        if tree.watcher.is_some() && tree.sync() {
            let last = tree.last.lock().unwrap_or_else(|p| p.into_inner());
            if !tree.changed.load(Ordering::Acquire) {
                if let Some(known) = last.as_ref().filter(|k| k.stamp == stamp) {
                    return Ok(Dirty::Unchanged(known.dirty.clone()));
                }
            }
        }
        {
            // Events from now on mark the tree again; until this walk's refresh completes, no
            // answer is reused.
            let mut last = tree.last.lock().unwrap_or_else(|p| p.into_inner());
            tree.changed.store(false, Ordering::Release);
            *last = None;
        }
        let repo = Repo::open(root)?;
        let dirty = repo.dirty_paths(scopes)?;
        Ok(Dirty::Walked {
            dirty,
            stamp,
            repo: Box::new(repo),
        })
    }

    /// Stops watching the work tree at `root`.
    pub fn forget(&self, root: &str) {
        self.lock().remove(root);
    }

    /// The overlay now matches a walk: later searches may reuse it until something changes.
    fn remember(&self, root: &str, stamp: Stamp, dirty: Vec<String>) {
        if let Some(tree) = self.lock().get(root) {
            *tree.last.lock().unwrap_or_else(|p| p.into_inner()) = Some(Known { stamp, dirty });
        }
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

/// The file-system statistics of `path`.
#[cfg(any(target_os = "linux", target_os = "macos"))]
fn statfs(path: &Path) -> Option<libc::statfs> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes()).ok()?;
    let mut stat: libc::statfs = unsafe { std::mem::zeroed() };
    // SAFETY: a NUL-terminated path and a zeroed statfs the call fills in.
    (unsafe { libc::statfs(c_path.as_ptr(), &mut stat) } == 0).then_some(stat)
}

/// The kind of file system under `path` when it is one whose changes can come from elsewhere
/// without local change notifications (network and FUSE mounts, a Windows drive under WSL).
#[cfg(target_os = "linux")]
fn remote_file_system(path: &Path) -> Option<&'static str> {
    match statfs(path)?.f_type as u64 {
        0x6969 => Some("NFS"),
        0x517B => Some("SMB"),
        0xFF53_4D42 => Some("CIFS"),
        0xFE53_4D42 => Some("SMB2"),
        0x6573_5546 => Some("FUSE"),
        0x0102_1997 => Some("9p"),
        0x0BD0_0BD0 => Some("Lustre"),
        0x5346_414F => Some("AFS"),
        _ => None,
    }
}

#[cfg(target_os = "macos")]
fn remote_file_system(path: &Path) -> Option<&'static str> {
    let stat = statfs(path)?;
    // SAFETY: f_fstypename is a NUL-terminated C string within the struct.
    let name = unsafe { std::ffi::CStr::from_ptr(stat.f_fstypename.as_ptr()) };
    match name.to_bytes() {
        b"nfs" => Some("NFS"),
        b"smbfs" => Some("SMB"),
        b"afpfs" => Some("AFP"),
        b"webdav" => Some("WebDAV"),
        b"macfuse" | b"osxfuse" => Some("FUSE"),
        _ => None,
    }
}

#[cfg(not(any(target_os = "linux", target_os = "macos")))]
fn remote_file_system(_path: &Path) -> Option<&'static str> {
    None
}

/// A work tree not searched for this long is no longer watched.
const WATCH_IDLE_LIMIT: Duration = Duration::from_secs(30 * 60);

/// Name of the file a search touches in the git directory to know the watcher has caught up.
const SYNC_FILE: &str = "hgd-sync";

/// How long a search waits for the watcher to catch up before it walks instead.
const SYNC_WAIT: Duration = Duration::from_millis(100);

impl WorkTree {
    fn watch(root: &Path, git_dir: &Path, home: &Path, identity: Option<(u64, u64)>) -> WorkTree {
        use notify::Watcher;
        let changed = Arc::new(AtomicBool::new(true));
        let broken = Arc::new(AtomicBool::new(false));
        let synced = Arc::new((Mutex::new(0u64), std::sync::Condvar::new()));
        let git_dir = git_dir
            .canonicalize()
            .unwrap_or_else(|_| git_dir.to_path_buf());
        // A linked work tree's git dir is `<common>/worktrees/<name>`; `info/exclude` is shared.
        let common_dir = std::fs::read_to_string(git_dir.join("commondir"))
            .ok()
            .map(|c| git_dir.join(c.trim()))
            .and_then(|c| c.canonicalize().ok())
            .unwrap_or_else(|| git_dir.clone());
        let root_dir = root.canonicalize().unwrap_or_else(|_| root.to_path_buf());
        let tree = |watcher| WorkTree {
            changed: changed.clone(),
            broken: broken.clone(),
            synced: synced.clone(),
            watcher,
            sync_file: git_dir
                .starts_with(&root_dir)
                .then(|| git_dir.join(SYNC_FILE)),
            git_dir: git_dir.clone(),
            common_dir: common_dir.clone(),
            identity,
            used: Mutex::new(std::time::Instant::now()),
            last: Mutex::new(None),
        };
        if !watching_enabled() {
            return tree(None);
        }
        if let Some(kind) = remote_file_system(root) {
            tracing::info!(
                "{} is on {kind}, whose changes from other machines raise no events; every search will check its files",
                root.display()
            );
            return tree(None);
        }
        let (flag, broke, seen) = (changed.clone(), broken.clone(), synced.clone());
        let ignored = [git_dir.clone(), home.to_path_buf()];
        let sync_file = git_dir.join(SYNC_FILE);
        let handler = move |event: notify::Result<notify::Event>| match event {
            // Reads (ours included: the overlay reads dirty files) change nothing.
            Ok(event) if matches!(event.kind, notify::EventKind::Access(_)) => {}
            // Lost events (queue overflow): what changed is unknown, and folders made meanwhile
            // may be unwatched; watch again from scratch.
            Ok(event) if event.need_rescan() => {
                flag.store(true, Ordering::Release);
                broke.store(true, Ordering::Release);
            }
            Ok(event) => {
                if event.paths.iter().any(|p| p == &sync_file) {
                    let (count, cv) = &*seen;
                    *count.lock().unwrap_or_else(|p| p.into_inner()) += 1;
                    cv.notify_all();
                }
                if event.paths.is_empty()
                    || event
                        .paths
                        .iter()
                        .any(|p| !ignored.iter().any(|i| p.starts_with(i)))
                {
                    flag.store(true, Ordering::Release);
                }
            }
            Err(_) => {
                flag.store(true, Ordering::Release);
                broke.store(true, Ordering::Release);
            }
        };
        // Symlinks are not followed (git does not follow them either): a followed link shares
        // its target's kernel watch, and removing the link would silently unwatch the target.
        let config = notify::Config::default().with_follow_symlinks(false);
        let watcher = notify::RecommendedWatcher::new(handler, config).and_then(|mut watcher| {
            watcher.watch(root, notify::RecursiveMode::Recursive)?;
            Ok(watcher)
        });
        match watcher {
            Ok(watcher) => tree(Some(watcher)),
            Err(e) => {
                tracing::warn!(
                    "cannot watch {} ({e}); every search will check its files",
                    root.display()
                );
                tree(None)
            }
        }
    }

    /// Makes sure the watcher has handled every event of changes made before this call: touches
    /// a file in the git directory and waits for its event (events arrive in order). False when
    /// that cannot be known (no such file for a linked work tree, or no event in time): walk.
    fn sync(&self) -> bool {
        let Some(sync_file) = &self.sync_file else {
            return false;
        };
        let (count, cv) = &*self.synced;
        let before = *count.lock().unwrap_or_else(|p| p.into_inner());
        if std::fs::write(sync_file, b"").is_err() {
            return false;
        }
        let guard = count.lock().unwrap_or_else(|p| p.into_inner());
        let (guard, _) = cv
            .wait_timeout_while(guard, SYNC_WAIT, |n| *n == before)
            .unwrap_or_else(|p| p.into_inner());
        *guard != before
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
        let lock = self.overlay_lock(root);
        let _guard = lock.lock().await;
        let Some(scopes) = self.scopes(root) else {
            return Ok(Vec::new());
        };
        let root_path = PathBuf::from(root);
        let trees = self.work_trees.clone();
        let head = head.map(str::to_owned);
        let (dirty, stamp, files) = tokio::task::spawn_blocking(move || {
            match trees.dirty(&root_path, head.as_deref(), &scopes)? {
                Dirty::Unchanged(dirty) => Ok::<_, GitError>((dirty, None, Vec::new())),
                Dirty::Walked { dirty, stamp, repo } => {
                    let files: Vec<(String, String, String)> = dirty
                        .iter()
                        .filter_map(|p| repo.read_worktree_text(p).map(|(t, o)| (p.clone(), t, o)))
                        .collect();
                    Ok((dirty, Some(stamp), files))
                }
            }
        })
        .await??;
        let Some(stamp) = stamp else {
            return Ok(dirty);
        };
        // Whatever happens below (a failed write, a cancelled search), no overlay index built
        // before this refresh is used after it: the next search builds it from the store.
        self.indexes.invalidate_overlay(root);

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
                crate::indexer::embed_rows(&embedder, &root, to_embed, true)
            })
            .await??;
            self.count_embedded(embedded.len());
            rows.extend(embedded);
        }
        self.store.add_to(Layer::Overlay, &rows).await?;
        Ok(())
    }
}

/// Where a repository's index stands for a request.
pub enum Freshness {
    /// At HEAD under the requested scope.
    Current,
    /// A job will bring it there; wait for this ticket.
    Wait(u64),
    /// The last job failed recently at this HEAD; what is stored is older than HEAD.
    Behind(Arc<crate::indexer::IndexError>),
}

/// What [`Service::ensure_indexed`] found.
pub struct Ensured {
    pub located: Located,
    /// HEAD when the request came (`None`: no commits yet).
    pub head: Option<String>,
    pub freshness: Freshness,
}

/// A search does not retry a failed job at the same HEAD more often than this.
const RETRY_FAILED_AFTER: Duration = Duration::from_secs(30);

impl Service {
    /// Makes sure the repository containing `path` is tracked with a scope covering `path`, and that a
    /// job will bring it to HEAD. Returns where it is and how fresh its index is. With
    /// `retry_failed`, a recently failed job is retried at once; otherwise (searches) it is retried
    /// only after [`RETRY_FAILED_AFTER`] or when HEAD moves, and meanwhile reported as
    /// [`Freshness::Behind`].
    pub async fn ensure_indexed(
        &self,
        path: &Path,
        retry_failed: bool,
    ) -> Result<Ensured, ServiceError> {
        let (located, head, rules) = {
            let path = path.to_path_buf();
            let open = self.open_repos.clone();
            tokio::task::spawn_blocking(move || {
                open.locate_with_head(&path).map(|(located, head)| {
                    let rules = git::exclusion_rules(&located.root);
                    (located, head, rules)
                })
            })
            .await??
        };
        let root = located.root.to_string_lossy().into_owned();
        // Changed exclusions (.hgdignore, the config file) need a job even at the same HEAD: it
        // compares all of HEAD with the store (see the worker).
        let rules_current = self.recorded_rules(&root) == rules;
        let (scope_added, freshness) = {
            let mut repos = self.lock_repos();
            let entry = repos.entry(root.clone()).or_insert_with(|| {
                RepoEntry::new(RepoRecord {
                    root: root.clone(),
                    scopes: Vec::new(),
                    indexed_commit: None,
                })
            });
            if entry.forgetting {
                return Err(ServiceError::Forgetting(root));
            }
            let scopes = &mut entry.record.scopes;
            let scope_added = !git::in_scopes(&located.subtree, scopes);
            if scope_added {
                // A wider scope replaces the narrower ones inside it. The indexed commit does
                // not cover the new scope: clear it, persistently, so that the next job (after a
                // restart too) compares all of HEAD with the store instead of diffing commits.
                scopes.retain(|s| !git::in_subtree(s, &located.subtree));
                scopes.push(located.subtree.clone());
                scopes.sort();
                entry.record.indexed_commit = None;
            }
            let idle = entry.running.is_none() && entry.requested == entry.completed;
            let freshness = match &entry.error {
                Some(failure) if idle && !scope_added => {
                    if failure.head == head
                        && !retry_failed
                        && failure.at.elapsed() < RETRY_FAILED_AFTER
                    {
                        Some(Freshness::Behind(failure.error.clone()))
                    } else {
                        None
                    }
                }
                None if idle
                    && !scope_added
                    && rules_current
                    && entry.record.indexed_commit == head =>
                {
                    Some(Freshness::Current)
                }
                _ => None,
            };
            (scope_added, freshness)
        };
        if scope_added {
            self.persist(&root).await?;
        }
        let freshness = match freshness {
            Some(freshness) => freshness,
            None => Freshness::Wait(self.request_job(&root)),
        };
        Ok(Ensured {
            located,
            head,
            freshness,
        })
    }
}
