//! The daemon's shared state: the store, the embedder, the tracked repositories and the job queue.
//!
//! Jobs run one at a time (they share one embedder), taking turns: a job gives way to other
//! repositories' waiting jobs after a slice and resumes behind them. Requests for the same
//! repository coalesce: each request takes a ticket, a job covers every ticket issued before it
//! started (it reads HEAD after starting), and a waiter returns once a job covering its ticket
//! has finished.

use std::collections::{HashMap, VecDeque};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use hgd_protocol::home::Home;
use hgd_protocol::{Progress, RepoStatus};
use tokio::sync::{watch, Notify};
use tokio_util::sync::CancellationToken;

use crate::chunk::Limits;
use crate::embed::Embedder;
use crate::freshness::WorkTrees;
use crate::git::{self, GitError, Located, Repo};
use crate::indexer::{IndexError, Indexer, JobProgress};
use crate::indexes::Indexes;
use crate::store::{RepoRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("indexing {root} failed: {message}")]
    JobFailed { root: String, message: String },
    #[error("the daemon is shutting down")]
    ShuttingDown,
    #[error("internal: {0}")]
    Internal(String),
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
}

/// A failed job: what went wrong, at which HEAD, and when (searches retry it after a while or
/// when HEAD moves, and meanwhile answer from what is stored).
#[derive(Debug, Clone)]
struct Failure {
    message: String,
    head: Option<String>,
    at: Instant,
}

/// Where a repository's index stands for a request.
pub enum Freshness {
    /// At HEAD under the requested scope.
    Current,
    /// A job will bring it there; wait for this ticket.
    Wait(u64),
    /// The last job failed recently at this HEAD; what is stored is older than HEAD.
    Behind(String),
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
        }
    }
}

pub struct Service {
    pub home: Home,
    pub store: Arc<Store>,
    pub embedder: Arc<Embedder>,
    /// In-memory search indexes of HEAD, dropped when a job changes a repository.
    pub indexes: Indexes,
    pub(crate) indexer: Indexer,
    /// Watched work trees: what is dirty, without a walk per search.
    pub(crate) work_trees: Arc<WorkTrees>,
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
    pub shutdown: CancellationToken,
}

/// The store is optimised once this many rows changed since the last time, or after this many
/// jobs that changed anything.
const OPTIMIZE_AFTER_ROWS: u64 = 256;
const OPTIMIZE_AFTER_JOBS: u64 = 50;

/// A search does not wait for a running job with more blocks than this left to embed (several
/// seconds of work): it answers at once from what is stored and what the job parsed, by words.
const PROGRESSIVE_AFTER_BLOCKS: u64 = 256;

/// Quiet time after a hook's notification before its job starts.
const NOTIFY_SETTLE: Duration = Duration::from_millis(50);

/// A request waiting for a repository to be indexed.
pub struct Waiter {
    root: String,
    ticket: u64,
    changed: watch::Receiver<u64>,
}

/// How long a job writes blocks before it gives way to other repositories' jobs
/// (`HGD_JOB_SLICE_MS` changes it, for tests).
fn job_slice() -> Duration {
    std::env::var("HGD_JOB_SLICE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_JOB_SLICE)
}

const DEFAULT_JOB_SLICE: Duration = Duration::from_secs(15);

/// How long the indexing session outlives its last batch. Making it again costs about a second
/// of CPU, so commits a few minutes apart reuse it.
const INDEX_SESSION_IDLE: Duration = Duration::from_secs(120);

impl Service {
    pub async fn start(
        home: Home,
        store: Store,
        embedder: Embedder,
        shutdown: CancellationToken,
    ) -> Result<Arc<Service>, ServiceError> {
        let store = Arc::new(store);
        let embedder = Arc::new(embedder);
        let blocks_embedded = Arc::new(AtomicU64::new(0));
        let indexer = Indexer {
            store: store.clone(),
            embedder: embedder.clone(),
            limits: Limits {
                tokens: Some(embedder.token_limit()),
                ..Limits::default()
            },
            blocks_embedded: blocks_embedded.clone(),
        };
        let work_trees = Arc::new(WorkTrees::new(home.root()));
        let mut repos = HashMap::new();
        for record in store.repos().await? {
            repos.insert(record.root.clone(), RepoEntry::new(record));
        }
        let service = Arc::new(Service {
            home,
            store,
            embedder,
            indexes: Indexes::default(),
            indexer,
            work_trees,
            repos: Mutex::new(repos),
            queue: Mutex::new(VecDeque::new()),
            queued: Notify::new(),
            started: Instant::now(),
            blocks_embedded,
            jobs_run: AtomicU64::new(0),
            unoptimized_rows: AtomicU64::new(0),
            jobs_since_optimize: AtomicU64::new(0),
            job_slice: job_slice(),
            overlay_locks: Mutex::new(HashMap::new()),
            persist_lock: tokio::sync::Mutex::new(()),
            shutdown,
        });
        // Catch up with commits made while the daemon was down.
        let roots: Vec<String> = service.lock_repos().keys().cloned().collect();
        for root in roots {
            service.request_job(&root);
        }
        tokio::spawn(service.clone().worker());
        tokio::spawn(service.clone().release_idle_memory());
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
                tracing::debug!("indexing session released (idle)");
            }
        }
    }

    fn lock_repos(&self) -> std::sync::MutexGuard<'_, HashMap<String, RepoEntry>> {
        self.repos.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub fn blocks_embedded(&self) -> u64 {
        self.blocks_embedded.load(Ordering::Relaxed)
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

    /// Hands out a ticket for an up-to-date index of `root` and queues a job if none is queued.
    fn request_job(&self, root: &str) -> u64 {
        let ticket = {
            let mut repos = self.lock_repos();
            let Some(entry) = repos.get_mut(root) else {
                return 0;
            };
            entry.requested += 1;
            entry.requested
        };
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if !queue.iter().any(|r| r == root) {
            queue.push_back(root.to_owned());
            self.queued.notify_one();
        }
        ticket
    }

    /// Waits until no notification for `root` arrived in the last [`NOTIFY_SETTLE`] (at most a
    /// second), so a burst of hook calls becomes one job for the final HEAD.
    async fn settle(&self, root: &str) {
        let deadline = Instant::now() + Duration::from_secs(1);
        loop {
            let last = self.lock_repos().get(root).and_then(|e| e.last_notify);
            let Some(quiet_at) = last.map(|t| t + NOTIFY_SETTLE) else {
                return;
            };
            let now = Instant::now();
            if now >= quiet_at || now >= deadline {
                return;
            }
            tokio::time::sleep(quiet_at.min(deadline) - now).await;
        }
    }

    async fn worker(self: Arc<Self>) {
        loop {
            let next = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .pop_front();
            let Some(root) = next else {
                tokio::select! {
                    _ = self.queued.notified() => continue,
                    _ = self.shutdown.cancelled() => return,
                }
            };
            self.settle(&root).await;
            let (record, full, ticket, progress) = {
                let mut repos = self.lock_repos();
                let Some(entry) = repos.get_mut(&root) else {
                    continue;
                };
                let progress = Arc::new(JobProgress::default());
                entry.running = Some(progress.clone());
                let full = std::mem::take(&mut entry.full_scan);
                (entry.record.clone(), full, entry.requested, progress)
            };
            let started = Instant::now();
            // Set by the slice task when the job gives way (shutdown returns below instead).
            let cancel = Arc::new(AtomicBool::new(false));
            let turn = progress.clone();
            let slice = tokio::spawn(self.clone().yield_when_others_wait(
                root.clone(),
                turn.clone(),
                cancel.clone(),
            ));
            let mut result = tokio::select! {
                r = self.indexer.run(&record, full, progress, cancel.clone()) => r,
                _ = self.shutdown.cancelled() => {
                    // The indexed-commit pointer was not advanced; the next start resumes the job.
                    cancel.store(true, Ordering::Relaxed);
                    slice.abort();
                    return;
                }
            };
            slice.abort();
            if cancel.load(Ordering::Relaxed) && matches!(result, Err(IndexError::Cancelled)) {
                // What it wrote counts towards the next optimisation like any job's rows.
                self.unoptimized_rows
                    .fetch_add(turn.written.load(Ordering::Relaxed), Ordering::Relaxed);
                self.requeue_yielded(&root, full, started);
                continue;
            }
            if let Ok(report) = &result {
                // Every block of the job is durable: now the pointer may advance.
                self.advance_pointer(&root, &record, &report.commit);
                if let Err(e) = self.persist(&root).await {
                    result = Err(e.into());
                }
            }
            let failed_head = match &result {
                Ok(_) => None,
                Err(_) => head_of(&root).await,
            };
            let Some((again, changed_rows)) =
                self.finish_job(&root, ticket, failed_head, result, started)
            else {
                continue;
            };
            let pending = self
                .unoptimized_rows
                .fetch_add(changed_rows, Ordering::Relaxed)
                + changed_rows;
            let jobs = self.jobs_since_optimize.fetch_add(1, Ordering::Relaxed) + 1;
            if pending >= OPTIMIZE_AFTER_ROWS || (pending > 0 && jobs >= OPTIMIZE_AFTER_JOBS) {
                // Merge the small fragments that many adds leave and prune old versions, so reads
                // stay fast and the store does not grow. Not after every small commit: it would
                // delay the next job by more than the commit's own work.
                self.unoptimized_rows.store(0, Ordering::Relaxed);
                self.jobs_since_optimize.store(0, Ordering::Relaxed);
                let started = Instant::now();
                match self.store.optimize().await {
                    Ok(()) => tracing::info!("optimised the store in {:.1?}", started.elapsed()),
                    Err(e) => tracing::warn!("optimising the store failed: {e}"),
                }
            }
            if again {
                let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
                if !queue.iter().any(|r| r == &root) {
                    queue.push_back(root.clone());
                }
            }
        }
    }

    /// Fair turns: once the job of `root` has written blocks for [`Service::job_slice`], it is
    /// cancelled as soon as another repository has a job waiting, so a commit's small job does
    /// not wait behind a large first index. Cancelling is safe at any point (files are written
    /// whole and the pointer has not moved); the job resumes later and re-uses every file it
    /// already wrote. The slice counts from its first write, so every turn moves it forward past
    /// its planning; and it does not give way to a job that gave way itself, so two large jobs
    /// take one turn each and then finish one after the other instead of alternating.
    async fn yield_when_others_wait(
        self: Arc<Self>,
        root: String,
        progress: Arc<JobProgress>,
        cancel: Arc<AtomicBool>,
    ) {
        while progress.written.load(Ordering::Relaxed) == 0 {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        tokio::time::sleep(self.job_slice).await;
        loop {
            let waiting: Vec<String> = self
                .queue
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .iter()
                .filter(|r| **r != root)
                .cloned()
                .collect();
            let others_wait = {
                let repos = self.lock_repos();
                waiting
                    .iter()
                    .any(|r| repos.get(r).is_some_and(|e| !e.gave_way))
            };
            if others_wait {
                cancel.store(true, Ordering::Relaxed);
                return;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// A job that gave way: not a failure and covering no ticket, it goes to the back of the queue
    /// (a full comparison stays full).
    fn requeue_yielded(&self, root: &str, full: bool, started: Instant) {
        // Files it wrote are in the store: the in-memory index is stale.
        self.indexes.invalidate(root);
        {
            let mut repos = self.lock_repos();
            let Some(entry) = repos.get_mut(root) else {
                return;
            };
            entry.running = None;
            entry.full_scan |= full;
            entry.gave_way = true;
            entry.changed.send_modify(|v| *v += 1);
        }
        tracing::info!(
            "indexing {root} gave way to other repositories after {:.1?}; it resumes after them",
            started.elapsed()
        );
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        if !queue.iter().any(|r| r == root) {
            queue.push_back(root.to_owned());
        }
    }

    /// A job over `job`'s scopes reached `commit`: the in-memory pointer moves there, unless a
    /// scope was added while the job ran (the job did not cover it, so the pointer stays cleared
    /// and the next job, even after a restart, compares all of HEAD with the store).
    fn advance_pointer(&self, root: &str, job: &RepoRecord, commit: &Option<String>) {
        if let Some(entry) = self.lock_repos().get_mut(root) {
            if entry.record.scopes == job.scopes {
                entry.record.indexed_commit = commit.clone();
            }
        }
    }

    /// Writes `root`'s current record (scopes and pointer). Writers take the record inside one
    /// lock, so the last write is always of the latest state, whichever of a widening search
    /// and a finishing job comes second.
    async fn persist(&self, root: &str) -> Result<(), StoreError> {
        let _guard = self.persist_lock.lock().await;
        let record = self.lock_repos().get(root).map(|e| e.record.clone());
        match record {
            Some(record) => self.store.put_repo(&record).await,
            None => Ok(()),
        }
    }

    /// Records a finished job and wakes its waiters. Returns whether another job is due and how many
    /// rows the job changed in the store, or `None` if the repository is no longer tracked.
    fn finish_job(
        &self,
        root: &str,
        ticket: u64,
        failed_head: Option<String>,
        result: Result<crate::indexer::JobReport, crate::indexer::IndexError>,
        started: Instant,
    ) -> Option<(bool, u64)> {
        self.jobs_run.fetch_add(1, Ordering::Relaxed);
        // Even a failed job may have written some files: the in-memory index is stale either way.
        self.indexes.invalidate(root);
        let mut repos = self.lock_repos();
        let entry = repos.get_mut(root)?;
        entry.running = None;
        entry.gave_way = false;
        entry.completed = ticket;
        let mut changed_rows = 0;
        match result {
            Ok(report) => {
                changed_rows = report.rows_changed;
                tracing::info!(
                    "indexed {root} at {}: {} files embedded ({} blocks), {} re-used, {} removed in {:.1?} ({})",
                    report.commit.as_deref().unwrap_or("(no commits)"),
                    report.files_embedded,
                    report.blocks_embedded,
                    report.files_reused,
                    report.files_removed,
                    started.elapsed(),
                    report.stages
                );
                entry.error = None;
            }
            Err(e) => {
                tracing::error!("indexing {root} failed: {e}");
                entry.error = Some(Failure {
                    message: e.to_string(),
                    head: failed_head,
                    at: Instant::now(),
                });
                entry.full_scan = true;
            }
        }
        entry.changed.send_modify(|v| *v += 1);
        Some((entry.requested > entry.completed, changed_rows))
    }

    /// A hook says HEAD of the repository containing `path` moved: queue a job if it is tracked.
    /// Never adds scopes (a hook does not know which folders the user searches).
    pub async fn notify(&self, path: &Path) -> Result<bool, ServiceError> {
        let located = locate(path).await?;
        let root = located.root.to_string_lossy().into_owned();
        match self.lock_repos().get_mut(&root) {
            Some(entry) => entry.last_notify = Some(Instant::now()),
            None => return Ok(false),
        }
        self.request_job(&root);
        Ok(true)
    }

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
        let (located, head) = {
            let path = path.to_path_buf();
            tokio::task::spawn_blocking(move || git::locate_with_head(&path))
                .await
                .map_err(|e| ServiceError::Internal(e.to_string()))??
        };
        let root = located.root.to_string_lossy().into_owned();
        let (scope_added, freshness) = {
            let mut repos = self.lock_repos();
            let entry = repos.entry(root.clone()).or_insert_with(|| {
                RepoEntry::new(RepoRecord {
                    root: root.clone(),
                    scopes: Vec::new(),
                    indexed_commit: None,
                })
            });
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
                        Some(Freshness::Behind(failure.message.clone()))
                    } else {
                        None
                    }
                }
                None if idle && !scope_added && entry.record.indexed_commit == head => {
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

    /// The running job of `root` if it is long (many blocks still to embed): a search then
    /// answers from the store and the job's parsed blocks instead of waiting.
    pub fn long_running_job(&self, root: &str) -> Option<Arc<JobProgress>> {
        let repos = self.lock_repos();
        let progress = repos.get(root)?.running.clone()?;
        let left = progress
            .to_embed
            .load(Ordering::Relaxed)
            .saturating_sub(progress.embedded.load(Ordering::Relaxed));
        (left > PROGRESSIVE_AFTER_BLOCKS).then_some(progress)
    }

    /// Whether `root`'s job has not started because another repository's long job is running
    /// (jobs run one at a time): a search then answers from what is stored instead of waiting.
    pub fn queued_behind_long_job(&self, root: &str) -> bool {
        let others: Vec<String> = {
            let repos = self.lock_repos();
            match repos.get(root) {
                Some(entry) if entry.running.is_none() => repos
                    .iter()
                    .filter(|(r, e)| r.as_str() != root && e.running.is_some())
                    .map(|(r, _)| r.clone())
                    .collect(),
                _ => return false,
            }
        };
        others.iter().any(|r| self.long_running_job(r).is_some())
    }

    /// Starts waiting for a job covering `ticket` of `root`.
    pub fn waiter(&self, root: &str, ticket: u64) -> Result<Waiter, ServiceError> {
        match self.lock_repos().get(root) {
            Some(entry) => Ok(Waiter {
                root: root.to_owned(),
                ticket,
                changed: entry.changed.subscribe(),
            }),
            None => Err(ServiceError::Internal(format!("{root} is not tracked"))),
        }
    }

    /// Waits up to a quarter second. `Ok(None)`: a job covering the ticket has finished well;
    /// `Ok(Some(progress))`: still waiting.
    pub async fn wait_step(&self, waiter: &mut Waiter) -> Result<Option<Progress>, ServiceError> {
        for first in [true, false] {
            let (done, error, progress) = {
                let repos = self.lock_repos();
                let entry = &repos[&waiter.root];
                (
                    entry.completed >= waiter.ticket,
                    entry.error.as_ref().map(|f| f.message.clone()),
                    entry.running.as_ref().map(|p| progress_of(&waiter.root, p)),
                )
            };
            if done {
                return match error {
                    Some(message) => Err(ServiceError::JobFailed {
                        root: waiter.root.clone(),
                        message,
                    }),
                    None => Ok(None),
                };
            }
            if !first {
                return Ok(Some(progress.unwrap_or_else(|| Progress {
                    repo: waiter.root.clone(),
                    phase: "queued".into(),
                    ..Progress::default()
                })));
            }
            tokio::select! {
                _ = waiter.changed.changed() => {}
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
                _ = self.shutdown.cancelled() => return Err(ServiceError::ShuttingDown),
            }
        }
        unreachable!("the second pass always returns")
    }

    pub async fn repo_statuses(&self) -> Vec<RepoStatus> {
        let entries: Vec<(RepoRecord, Option<Progress>, Option<String>)> = self
            .lock_repos()
            .values()
            .map(|e| {
                (
                    e.record.clone(),
                    e.running.as_ref().map(|p| progress_of(&e.record.root, p)),
                    e.error.as_ref().map(|f| f.message.clone()),
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
        .await
        .map_err(|e| ServiceError::Internal(e.to_string()))?
        .map_err(ServiceError::from)
}

fn progress_of(root: &str, p: &JobProgress) -> Progress {
    let parsed_all = p.parsed_all.load(Ordering::Relaxed);
    Progress {
        repo: root.to_owned(),
        phase: if parsed_all { "embedding" } else { "parsing" }.into(),
        done: p.embedded.load(Ordering::Relaxed),
        total: p.to_embed.load(Ordering::Relaxed),
        total_known: parsed_all,
    }
}
