//! The daemon's shared state: the store, the embedder, the tracked repositories and their
//! records, and what `hgd status` reports. Two parts live in submodules: `schedule` (the job
//! queue, fair turns, tickets and waiters) and `freshness` (what a request needs to know before
//! it reads an index: whether HEAD is indexed, and which work-tree files are dirty, kept in the
//! overlay).

mod freshness;
mod schedule;

pub use freshness::{Ensured, Freshness};
pub use schedule::Waiter;

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hgd_protocol::home::Home;
use hgd_protocol::{Progress, RepoStatus};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::chunk::Limits;
use crate::embed::Embedder;
use crate::git::{self, GitError, Located, Repo};
use crate::indexer::{IndexError, Indexer, JobProgress};
use crate::indexes::Indexes;
use crate::store::{RepoRecord, Store, StoreError};
use freshness::WorkTrees;

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    // The cause is in the message (clients see only that), so it is not also a `source`.
    #[error("indexing {root} failed: {error} (`hgd status` shows it; the next commit or `hgd index` tries again)")]
    JobFailed {
        root: String,
        error: Arc<IndexError>,
    },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("embedding failed: {0}")]
    Embed(#[from] crate::embed::EmbedError),
    #[error("{0} is not tracked (`hgd list` shows what is)")]
    NotTracked(String),
    #[error("{0} is being indexed; forget it once `hgd status` shows it idle")]
    Busy(String),
    #[error("{0} is being forgotten (`hgd forget`); search it again in a moment to index it anew")]
    Forgetting(String),
    #[error("a service task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Remote(#[from] crate::remote::RemoteError),
}

struct RepoEntry {
    record: RepoRecord,
    /// Highest ticket handed out.
    requested: u64,
    /// Highest ticket covered by a finished job.
    completed: u64,
    running: Option<Arc<JobProgress>>,
    /// The last job's failure, cleared by the next success.
    error: Option<Failure>,
    /// The next job compares everything stored against HEAD instead of diffing commits (the last
    /// job failed). A widened scope needs no flag: it clears the persisted indexed commit.
    full_scan: bool,
    /// When a hook last notified: hooks come in bursts (a rebase, a checkout after a merge), so a
    /// job for a notification waits for the burst to settle.
    last_notify: Option<Instant>,
    /// Bumped after every job, so waiters wake.
    changed: watch::Sender<u64>,
    /// Its last job gave way to other repositories (see [`Service::yield_when_others_wait`]);
    /// the running job does not give way to it in turn.
    gave_way: bool,
    /// `hgd forget` is deleting it: no job starts and no search reads or writes it.
    forgetting: bool,
    /// Bumped when the pointer is cleared under a running job (damaged tables made again): a job
    /// that started at another generation does not advance the pointer.
    generation: u64,
}

/// A failed job: what went wrong, at which HEAD, and when (searches retry it after a while or
/// when HEAD moves, and meanwhile answer from what is stored).
#[derive(Debug, Clone)]
struct Failure {
    error: Arc<IndexError>,
    head: Option<String>,
    at: Instant,
    /// Failed jobs in a row: the retries of a lasting failure back off.
    in_a_row: u32,
}

impl RepoEntry {
    fn new(record: RepoRecord) -> RepoEntry {
        RepoEntry {
            record,
            requested: 0,
            completed: 0,
            running: None,
            error: None,
            full_scan: false,
            last_notify: None,
            changed: watch::channel(0).0,
            gave_way: false,
            forgetting: false,
            generation: 0,
        }
    }
}

pub struct Service {
    pub home: Home,
    pub store: Arc<Store>,
    pub embedder: Arc<Embedder>,
    /// Shared indexes on object storage (the config file's `[remote.NAME]`).
    pub remotes: Arc<crate::remote::Remotes>,
    /// In-memory search indexes of HEAD and the overlay (see `indexes.rs`).
    pub indexes: Indexes,
    pub(crate) indexer: Indexer,
    /// Watched work trees: what is dirty, without a walk per search.
    pub(crate) work_trees: Arc<WorkTrees>,
    open_repos: Arc<freshness::OpenRepos>,
    repos: Mutex<HashMap<String, RepoEntry>>,
    queue: Mutex<VecDeque<String>>,
    queued: Notify,
    started: Instant,
    blocks_embedded: Arc<AtomicU64>,
    jobs_run: AtomicU64,
    /// Rows changed in the store and jobs run since the last optimisation.
    unoptimized_rows: AtomicU64,
    jobs_since_optimize: AtomicU64,
    /// How long a job runs before it gives way to other repositories' waiting jobs.
    job_slice: Duration,
    /// One overlay refresh at a time per repository (concurrent searches would embed the same
    /// edits twice); other repositories' searches do not wait.
    pub(crate) overlay_locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Serialises writes of repository records (see [`Service::persist`]).
    persist_lock: tokio::sync::Mutex<()>,
    /// Per repository, the exclusion rules (`git::exclusion_rules`) its index was last
    /// completed under; kept in [`INDEX_RULES_FILE`] in the home.
    index_rules: Mutex<HashMap<String, String>>,
    /// A check of the store for damaged tables is running (see [`Service::suspect_store`]).
    repairing: std::sync::atomic::AtomicBool,
    /// Remotes with `publish = true` get each job's changed files (off in a one-shot
    /// `hgd-daemon index --publish`, which publishes everything itself).
    publish_after_jobs: bool,
    /// Paths of finished jobs not yet published by the background publisher, by repository.
    publish_pending: Mutex<HashMap<String, std::collections::BTreeSet<String>>>,
    publisher_running: std::sync::atomic::AtomicBool,
    pub shutdown: CancellationToken,
}

/// How long the indexing session outlives its last batch. Making it again costs about a second
/// of CPU, so commits a few minutes apart reuse it.
const INDEX_SESSION_IDLE: Duration = Duration::from_secs(120);

impl Service {
    pub async fn start(
        home: Home,
        store: Store,
        embedder: Embedder,
        shutdown: CancellationToken,
        publish_after_jobs: bool,
    ) -> Result<Arc<Service>, ServiceError> {
        let store = Arc::new(store);
        let embedder = Arc::new(embedder);
        let blocks_embedded = Arc::new(AtomicU64::new(0));
        let remotes = Arc::new(crate::remote::Remotes::new(
            home.model_dir(),
            store.model_id(),
            store.dims(),
        ));
        let indexer = Indexer {
            remotes: remotes.clone(),
            store: store.clone(),
            embedder: embedder.clone(),
            limits: Limits {
                tokens: Some(embedder.token_limit()),
                ..Limits::default()
            },
            blocks_embedded: blocks_embedded.clone(),
        };
        let work_trees = Arc::new(WorkTrees::new(home.root()));
        let home_root = home.root().to_path_buf();
        let index_rules: HashMap<String, String> = std::fs::read(home_rules_file(&home_root))
            .ok()
            .and_then(|bytes| serde_json::from_slice(&bytes).ok())
            .unwrap_or_default();
        let mut records = store.repos().await?;
        // Blocks tables made again at open left their pointers cleared in the store, so their
        // repositories' jobs compare all of HEAD; a lost repositories table is rebuilt here.
        let records_lost = store.repositories_lost();
        if records_lost {
            // The repositories indexed before are those with recorded exclusion rules; their
            // scopes are lost with the table, so each is tracked whole.
            records = index_rules
                .keys()
                .map(|root| RepoRecord {
                    root: root.clone(),
                    scopes: vec![String::new()],
                    indexed_commit: None,
                })
                .collect();
            tracing::warn!(
                "the repositories table was damaged: tracking again, whole, the {} repositories indexed before",
                records.len()
            );
        }
        let mut repos = HashMap::new();
        for record in records {
            repos.insert(record.root.clone(), RepoEntry::new(record));
        }
        let service = Arc::new(Service {
            home,
            store,
            embedder,
            remotes,
            indexes: Indexes::default(),
            indexer,
            work_trees,
            open_repos: Arc::default(),
            repos: Mutex::new(repos),
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            started: Instant::now(),
            blocks_embedded,
            jobs_run: AtomicU64::new(0),
            unoptimized_rows: AtomicU64::new(0),
            jobs_since_optimize: AtomicU64::new(0),
            job_slice: schedule::job_slice(),
            overlay_locks: Mutex::new(HashMap::new()),
            persist_lock: tokio::sync::Mutex::new(()),
            index_rules: Mutex::new(index_rules),
            repairing: std::sync::atomic::AtomicBool::new(false),
            publish_after_jobs,
            publish_pending: Mutex::new(HashMap::new()),
            publisher_running: std::sync::atomic::AtomicBool::new(false),
            shutdown,
        });
        if records_lost {
            let roots: Vec<String> = service.lock_repos().keys().cloned().collect();
            for root in roots {
                if let Err(e) = service.persist(&root).await {
                    tracing::warn!("cannot record {root} again: {e}");
                }
            }
        }
        // Catch up with commits made while the daemon was down.
        let roots: Vec<String> = service.lock_repos().keys().cloned().collect();
        for root in roots {
            service.request_job(&root);
        }
        tokio::spawn(service.clone().worker());
        tokio::spawn(service.clone().release_idle_memory());
        tokio::spawn(service.clone().retry_failed_jobs());
        Ok(service)
    }

    /// Drops the embedder's indexing session once no job has used it for
    /// [`INDEX_SESSION_IDLE`]: between jobs a daemon needs only the query session.
    async fn release_idle_memory(self: Arc<Self>) {
        let mut tick = tokio::time::interval(INDEX_SESSION_IDLE / 4);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let embedder = self.embedder.clone();
            let released =
                tokio::task::spawn_blocking(move || embedder.release_idle(INDEX_SESSION_IDLE))
                    .await;
            if let Ok(true) = released {
                tracing::debug!(
                    "idle embedding sessions released (indexing, a search's edited files)"
                );
            }
        }
    }

    fn lock_repos(&self) -> std::sync::MutexGuard<'_, HashMap<String, RepoEntry>> {
        self.repos.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A read of the store failed: check every table, in the background, and rebuild from git
    /// what is damaged (a truncated or corrupted data file). At most one check at a time; a
    /// store that reads whole costs one full read and changes nothing.
    pub fn suspect_store(self: &Arc<Self>) {
        if self.repairing.swap(true, Ordering::AcqRel) {
            return;
        }
        let service = self.clone();
        tokio::spawn(async move {
            let damaged = service.store.damaged().await;
            if damaged.is_empty() {
                tracing::info!("checked the store after a failed read: every table reads whole");
            } else {
                service.rebuild_after_repair(&damaged).await;
            }
            service.repairing.store(false, Ordering::Release);
        });
    }

    /// Makes the `damaged` tables again and indexes again from git what they held. When HEAD's
    /// blocks are lost, every repository's pointer is cleared in memory first, and its
    /// generation bumped, so that a job running meanwhile cannot advance it over the loss.
    async fn rebuild_after_repair(self: &Arc<Self>, damaged: &[crate::store::Layered]) {
        use crate::store::Layered;
        let roots: Vec<String> = self.lock_repos().keys().cloned().collect();
        if damaged.contains(&Layered::Head) || damaged.contains(&Layered::Repos) {
            for entry in self.lock_repos().values_mut() {
                entry.record.indexed_commit = None;
                entry.full_scan = true;
                entry.generation += 1;
            }
        }
        let remade = self.store.remake(damaged).await;
        let head_lost = remade.contains(&Layered::Head);
        for root in &roots {
            // The search indexes were built from the lost rows (or point at them).
            self.indexes.invalidate(root);
            if head_lost || remade.contains(&Layered::Repos) {
                if let Err(e) = self.persist(root).await {
                    tracing::warn!("cannot record {root} again: {e}");
                }
            }
            if head_lost {
                self.request_job(root);
            }
        }
        tracing::warn!(
            "made again {remade:?}; {} repositories are indexed again from git",
            if head_lost { roots.len() } else { 0 }
        );
    }

    /// The persisted state of the repository at `root`, if tracked.
    pub fn record_of(&self, root: &str) -> Option<RepoRecord> {
        self.lock_repos().get(root).map(|e| e.record.clone())
    }

    pub fn blocks_embedded(&self) -> u64 {
        self.blocks_embedded.load(Ordering::Relaxed)
    }

    /// Blocks copied from the remotes now configured, since the daemon started.
    pub fn blocks_from_remotes(&self) -> u64 {
        self.remotes
            .statuses()
            .iter()
            .map(|r| r.blocks_copied)
            .sum()
    }

    pub(crate) fn count_embedded(&self, blocks: usize) {
        self.blocks_embedded
            .fetch_add(blocks as u64, Ordering::Relaxed);
    }

    /// The scopes `root` is indexed under, if it is tracked.
    pub(crate) fn scopes(&self, root: &str) -> Option<Vec<String>> {
        self.lock_repos().get(root).map(|e| e.record.scopes.clone())
    }

    pub fn jobs_run(&self) -> u64 {
        self.jobs_run.load(Ordering::Relaxed)
    }

    pub fn uptime(&self) -> Duration {
        self.started.elapsed()
    }

    pub async fn repo_statuses(&self) -> Vec<RepoStatus> {
        let entries: Vec<(RepoRecord, Option<Progress>, Option<String>)> = self
            .lock_repos()
            .values()
            .map(|e| {
                (
                    e.record.clone(),
                    e.running.as_ref().map(|p| progress_of(&e.record.root, p)),
                    e.error.as_ref().map(|f| f.error.to_string()),
                )
            })
            .collect();
        let queued: Vec<String> = self
            .queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .cloned()
            .collect();
        let mut out = Vec::new();
        for (record, progress, error) in entries {
            let head = head_of(&record.root).await;
            let blocks = self
                .store
                .count_blocks(Some(&record.root))
                .await
                .unwrap_or(0);
            let state = if progress.is_some() {
                "indexing"
            } else if queued.contains(&record.root) {
                "queued"
            } else if error.is_some() {
                "failed"
            } else {
                "idle"
            };
            out.push(RepoStatus {
                root: record.root,
                scopes: record.scopes,
                indexed_commit: record.indexed_commit,
                head,
                state: state.into(),
                progress,
                error,
                blocks,
                vectors: blocks,
            });
        }
        out.sort_by(|a, b| a.root.cmp(&b.root));
        out
    }
}

impl Service {
    /// Adds to each of `remotes` the blocks of HEAD's files in `root` (those at `paths`, or
    /// all) that it lacks. The repository must be indexed: publish what is stored. Every remote
    /// is tried; if any failed, the first failure is returned (the others' are logged).
    pub async fn publish_to(
        &self,
        root: &str,
        remotes: &[Arc<crate::remote::RemoteStore>],
        paths: Option<&[String]>,
    ) -> Result<Vec<hgd_protocol::Publication>, ServiceError> {
        let commit = self
            .record_of(root)
            .and_then(|r| r.indexed_commit)
            .unwrap_or_default();
        let files = match paths {
            Some(paths) => self.store.stored_files_at(root, paths).await?,
            None => self.store.stored_files(root).await?,
        };
        let mut keys: Vec<crate::store::BlobKey> = files
            .iter()
            .map(|(path, oid)| crate::store::BlobKey::at(path, oid))
            .collect();
        keys.sort_by(|a, b| (&a.oid, &a.language).cmp(&(&b.oid, &b.language)));
        keys.dedup();
        if keys.is_empty() {
            return Ok(Vec::new()); // a job that only removed files: nothing to send
        }
        let model = self.remotes.identity().await?;
        let mut out = Vec::new();
        let mut failure = None;
        for remote in remotes {
            let started = Instant::now();
            let store = self.store.clone();
            let published = remote
                .publish(&model, &keys, move |keys| {
                    let store = store.clone();
                    async move { store.head_blocks_of(&keys).await }
                })
                .await;
            let (blobs_added, blocks_added) = match published {
                Ok(added) => added,
                Err(e) => {
                    if failure.is_some() {
                        tracing::warn!("publishing {root}: {e}");
                    }
                    failure.get_or_insert(e);
                    continue;
                }
            };
            let seconds = started.elapsed().as_secs_f64();
            tracing::info!(
                "published {root} at {commit} to {}: {blocks_added} blocks of {blobs_added} new blobs ({} blobs looked at) in {seconds:.1}s",
                remote.spec.name,
                keys.len()
            );
            out.push(hgd_protocol::Publication {
                repo: root.to_owned(),
                commit: commit.clone(),
                remote: remote.spec.name.clone(),
                uri: remote.spec.uri.clone(),
                blobs: keys.len() as u64,
                blobs_added,
                blocks_added,
                seconds,
            });
        }
        match failure {
            Some(e) => Err(e.into()),
            None => Ok(out),
        }
    }

    /// Stops tracking the repository at or containing `path` (which may no longer exist),
    /// deletes what is stored for it and compacts the store. Refused while it has a job running
    /// or queued. Returns its root, its block count and the bytes freed on disk.
    pub async fn forget(&self, path: &Path) -> Result<(String, u64, u64), ServiceError> {
        let db_dir = self.home.db_dir();
        let given = std::path::absolute(path).unwrap_or_else(|_| path.to_path_buf());
        let canonical = given.canonicalize().ok();
        // A tracked root named as it is, or the repository containing an existing path.
        let exact = self
            .lock_repos()
            .keys()
            .find(|r| {
                Path::new(r.as_str()) == given
                    || canonical.as_deref() == Some(Path::new(r.as_str()))
            })
            .cloned();
        let root = match exact {
            Some(root) => root,
            None => locate(&given)
                .await
                .map(|l| l.root.to_string_lossy().into_owned())
                .map_err(|_| ServiceError::NotTracked(given.display().to_string()))?,
        };
        {
            let mut repos = self.lock_repos();
            let Some(entry) = repos.get_mut(&root) else {
                return Err(ServiceError::NotTracked(root));
            };
            if entry.running.is_some() || entry.requested != entry.completed || entry.forgetting {
                return Err(ServiceError::Busy(root));
            }
            // Kept until its rows are gone, marked: a search or a hook meanwhile neither starts
            // a job nor re-tracks it over rows about to be deleted.
            entry.forgetting = true;
        }
        self.queue
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| r != &root);
        // A search already refreshing the overlay finishes first; one after sees it untracked.
        let overlay_lock = self.overlay_lock(&root);
        let overlay_guard = overlay_lock.lock().await;
        let before = Store::disk_bytes(&db_dir);
        let blocks = match self.store.forget_repo(&root).await {
            Ok(blocks) => blocks,
            Err(e) => {
                // Still tracked, as it was: its next job brings the store back in line.
                if let Some(entry) = self.lock_repos().get_mut(&root) {
                    entry.forgetting = false;
                    entry.full_scan = true;
                }
                return Err(e.into());
            }
        };
        self.lock_repos().remove(&root);
        drop(overlay_guard);
        self.indexes.invalidate(&root);
        self.work_trees.forget(&root);
        self.record_rules(&root, None);
        self.store.reclaim().await?;
        let freed = before.saturating_sub(Store::disk_bytes(&db_dir));
        tracing::info!("forgot {root}: {blocks} blocks, {freed} bytes freed");
        Ok((root, blocks, freed))
    }
}

/// In the home: the exclusion rules each repository's index was completed under.
const INDEX_RULES_FILE: &str = "index-rules.json";

/// Recorded while a job under changed rules runs: matches no rules (they hold no NUL).
pub(crate) const RULES_INCOMPLETE: &str = "\0a job under other exclusion rules did not finish";

fn home_rules_file(home: &Path) -> std::path::PathBuf {
    home.join(INDEX_RULES_FILE)
}

impl Service {
    /// The lock one overlay refresh of `root` holds at a time (`forget` takes it too).
    pub(crate) fn overlay_lock(&self, root: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.overlay_locks
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .entry(root.to_owned())
            .or_default()
            .clone()
    }

    /// The exclusion rules `root`'s index was last completed under (for an index made before
    /// they were recorded: none, the rules of a repository without any).
    pub(crate) fn recorded_rules(&self, root: &str) -> String {
        self.index_rules
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(root)
            .cloned()
            .unwrap_or_else(git::no_exclusion_rules)
    }

    /// Records the rules a job of `root` completed under (`None`: forget them), in memory and
    /// in the home. A failed write costs one more full comparison later, nothing else.
    pub(crate) fn record_rules(&self, root: &str, rules: Option<String>) {
        // Written under the lock, so writes land in the order the map changed.
        let mut map = self.index_rules.lock().unwrap_or_else(|p| p.into_inner());
        match rules {
            Some(rules) => map.insert(root.to_owned(), rules),
            None => map.remove(root),
        };
        let text = serde_json::to_vec_pretty(&*map).unwrap_or_default();
        let path = home_rules_file(self.home.root());
        let temp = path.with_extension("json.tmp");
        if let Err(e) = std::fs::write(&temp, text).and_then(|_| std::fs::rename(&temp, &path)) {
            tracing::warn!("cannot write {}: {e}", path.display());
        }
    }
}

/// HEAD of the repository at `root`, or `None` when it has no commits or cannot be read.
async fn head_of(root: &str) -> Option<String> {
    let root = std::path::PathBuf::from(root);
    tokio::task::spawn_blocking(move || Repo::open(&root).and_then(|r| r.head_commit()))
        .await
        .ok()
        .and_then(Result::ok)
        .flatten()
}

/// The work tree containing `path`, found off the async threads (it touches the disk).
async fn locate(path: &Path) -> Result<Located, ServiceError> {
    let path = path.to_path_buf();
    tokio::task::spawn_blocking(move || git::locate(&path))
        .await?
        .map_err(ServiceError::from)
}

fn progress_of(root: &str, p: &JobProgress) -> Progress {
    let parsed_all = p.parsed_all.load(Ordering::Relaxed);
    Progress {
        repo: root.to_owned(),
        phase: if parsed_all { "embedding" } else { "parsing" }.into(),
        done: p.embedded.load(Ordering::Relaxed) + p.from_remotes.load(Ordering::Relaxed),
        total: p.to_embed.load(Ordering::Relaxed),
        total_known: parsed_all,
    }
}
