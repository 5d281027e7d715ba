//! Jobs: one at a time (they share one embedder), taking turns. A job gives way to other
//! repositories' waiting jobs after a slice and resumes behind them. Requests for the same
//! repository coalesce: each request takes a ticket, a job covers every ticket issued before it
//! started (it reads HEAD after starting), and a waiter returns once a job covering its ticket
//! has finished. The store is optimised between jobs.

use futures::FutureExt;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hgd_protocol::Progress;
use tokio::sync::watch;

use super::{head_of, locate, progress_of, Failure, Service, ServiceError};
use crate::git;
use crate::indexer::{IndexError, JobProgress};
use crate::store::{RepoRecord, StoreError};

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
pub(super) fn job_slice() -> Duration {
    std::env::var("HGD_JOB_SLICE_MS")
        .ok()
        .and_then(|v| v.parse().ok())
        .map(Duration::from_millis)
        .unwrap_or(DEFAULT_JOB_SLICE)
}

const DEFAULT_JOB_SLICE: Duration = Duration::from_secs(15);

impl Service {
    /// Hands out a ticket for an up-to-date index of `root` and queues a job if none is queued.
    pub(super) fn request_job(&self, root: &str) -> u64 {
        let ticket = {
            let mut repos = self.lock_repos();
            let Some(entry) = repos.get_mut(root).filter(|e| !e.forgetting) else {
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

    pub(super) async fn worker(self: Arc<Self>) {
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
            // Exclusions that changed since the index was completed (a `.hgdignore` edited,
            // the config file's `exclude`) change which files belong at any commit: compare all.
            let rules = git::exclusion_rules(Path::new(&root));
            let rules_changed = rules != self.recorded_rules(&root);
            let (record, full, ticket, progress, generation) = {
                let mut repos = self.lock_repos();
                // Untracked, or being forgotten: no job (its rows are going).
                let Some(entry) = repos.get_mut(&root).filter(|e| !e.forgetting) else {
                    continue;
                };
                let progress = Arc::new(JobProgress::default());
                entry.running = Some(progress.clone());
                let full = std::mem::take(&mut entry.full_scan) || rules_changed;
                (
                    entry.record.clone(),
                    full,
                    entry.requested,
                    progress,
                    entry.generation,
                )
            };
            if rules_changed {
                // Durable before the job writes: stopped half way, the next start must still
                // compare everything, even if the rules are then back as recorded.
                self.record_rules(&root, Some(super::RULES_INCOMPLETE.to_owned()));
            }
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
                // A panic anywhere in the job fails this job only: the worker, and with it
                // every other repository's indexing, goes on.
                r = std::panic::AssertUnwindSafe(self.indexer.run(&record, full, progress, cancel.clone()))
                    .catch_unwind() => r.unwrap_or_else(|panic| Err(IndexError::Panicked(panic_message(&panic)))),
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
                self.advance_pointer(&root, &record, generation, &report.commit);
                match self.persist(&root).await {
                    Ok(()) => self.record_rules(&root, Some(rules)),
                    Err(e) => result = Err(e.into()),
                }
            }
            let store_failed = matches!(&result, Err(IndexError::Store(e)) if e.may_be_damage());
            let to_publish = match &result {
                Ok(report) if !report.changed_paths.is_empty() => {
                    Some(report.changed_paths.clone())
                }
                _ => None,
            };
            let failed_head = match &result {
                Ok(_) => None,
                Err(_) => head_of(&root).await,
            };
            let Some((again, changed_rows)) =
                self.finish_job(&root, ticket, failed_head, result, started)
            else {
                continue;
            };
            if store_failed {
                self.suspect_store();
            }
            if let Some(paths) = to_publish {
                self.publish_after_job(&root, paths);
            }
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
    fn advance_pointer(
        &self,
        root: &str,
        job: &RepoRecord,
        generation: u64,
        commit: &Option<String>,
    ) {
        if let Some(entry) = self.lock_repos().get_mut(root) {
            // Only from where the job started: a pointer cleared meanwhile (a scope widened, a
            // damaged table made again, even one the job started without a pointer) needs the
            // full comparison that clearing asked for.
            if entry.record.scopes == job.scopes
                && entry.record.indexed_commit == job.indexed_commit
                && entry.generation == generation
            {
                entry.record.indexed_commit = commit.clone();
            }
        }
    }

    /// Writes `root`'s current record (scopes and pointer). Writers take the record inside one
    /// lock, so the last write is always of the latest state, whichever of a widening search
    /// and a finishing job comes second.
    pub(super) async fn persist(&self, root: &str) -> Result<(), StoreError> {
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
        match &result {
            // The search index follows the paths the job changed.
            Ok(report) => self.indexes.head_committed(root, &report.changed_paths),
            // A failed job may have written some files: the index is stale.
            Err(_) => self.indexes.invalidate(root),
        }
        let mut repos = self.lock_repos();
        let entry = repos.get_mut(root)?;
        entry.running = None;
        entry.gave_way = false;
        entry.completed = ticket;
        let mut changed_rows = 0;
        match result {
            Ok(report) => {
                changed_rows = report.rows_changed;
                // A job that found nothing to change (a daemon's start, a checkout back and
                // forth) is not worth a line a day for months.
                let level_info = report.files_embedded
                    + report.files_from_remotes
                    + report.files_reused
                    + report.files_removed
                    > 0;
                macro_rules! indexed {
                    ($($arg:tt)*) => {
                        if level_info { tracing::info!($($arg)*) } else { tracing::debug!($($arg)*) }
                    };
                }
                indexed!(
                    "indexed {root} at {}: {} files embedded ({} blocks), {} from remotes ({} blocks), {} re-used, {} removed in {:.1?} ({})",
                    report.commit.as_deref().unwrap_or("(no commits)"),
                    report.files_embedded,
                    report.blocks_embedded,
                    report.files_from_remotes,
                    report.blocks_from_remotes,
                    report.files_reused,
                    report.files_removed,
                    started.elapsed(),
                    report.stages
                );
                entry.error = None;
            }
            Err(e) => {
                tracing::error!("indexing {root} failed: {e}");
                let in_a_row = entry.error.as_ref().map_or(0, |f| f.in_a_row) + 1;
                entry.error = Some(Failure {
                    error: Arc::new(e),
                    head: failed_head,
                    at: Instant::now(),
                    in_a_row,
                });
                entry.full_scan = true;
            }
        }
        entry.changed.send_modify(|v| *v += 1);
        Some((entry.requested > entry.completed, changed_rows))
    }

    /// Remotes configured with `publish = true` get the blocks of the files a job changed, in
    /// the background (a slow remote does not hold up the queue); a failure is logged and
    /// shown by `hgd status`, and the next `hgd publish` sends what was missed.
    /// Jobs that end while a publish runs add their paths to what the next one sends, so at
    /// most one background publish runs, whatever the rate of commits.
    fn publish_after_job(self: &Arc<Self>, root: &str, paths: Vec<String>) {
        if !self.publish_after_jobs || self.remotes.publishing().is_empty() {
            return;
        }
        self.lock_publish_pending()
            .entry(root.to_owned())
            .or_default()
            .extend(paths);
        if self.publisher_running.swap(true, Ordering::AcqRel) {
            return; // the running publisher takes them
        }
        let service = self.clone();
        tokio::spawn(async move {
            loop {
                let pending = std::mem::take(&mut *service.lock_publish_pending());
                if pending.is_empty() {
                    service.publisher_running.store(false, Ordering::Release);
                    // A job may have added paths after the take and seen us running.
                    if service.lock_publish_pending().is_empty()
                        || service.publisher_running.swap(true, Ordering::AcqRel)
                    {
                        return;
                    }
                    continue;
                }
                let remotes = service.remotes.publishing();
                for (root, paths) in pending {
                    let paths: Vec<String> = paths.into_iter().collect();
                    // Its own task: a panic (in Lance) fails this publish, not the publisher.
                    let publish = {
                        let (service, remotes, root) =
                            (service.clone(), remotes.clone(), root.clone());
                        tokio::spawn(async move {
                            service.publish_to(&root, &remotes, Some(&paths)).await
                        })
                    };
                    match publish.await {
                        Ok(Ok(_)) => {}
                        Ok(Err(e)) => tracing::warn!("publishing {root} failed: {e}"),
                        Err(e) => tracing::error!("publishing {root} stopped: {e}"),
                    }
                }
            }
        });
    }

    fn lock_publish_pending(
        &self,
    ) -> std::sync::MutexGuard<
        '_,
        std::collections::HashMap<String, std::collections::BTreeSet<String>>,
    > {
        self.publish_pending
            .lock()
            .unwrap_or_else(|p| p.into_inner())
    }

    /// Retries failed jobs by themselves, so indexing resumes once the cause is gone (disk space
    /// freed, a home made writable again) without waiting for a search or a commit. A failure
    /// that lasts is retried less and less often: after 1, 2, 4, ... retry periods, at most an
    /// hour apart.
    pub(super) async fn retry_failed_jobs(self: Arc<Self>) {
        let period = retry_period();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + period, period);
        loop {
            tokio::select! {
                _ = self.shutdown.cancelled() => return,
                _ = tick.tick() => {}
            }
            let due: Vec<String> = self
                .lock_repos()
                .iter()
                .filter(|(_, e)| {
                    let idle = e.running.is_none() && e.requested == e.completed;
                    e.error.as_ref().is_some_and(|f| {
                        let wait = period
                            .saturating_mul(1 << f.in_a_row.saturating_sub(1).min(16))
                            .min(Duration::from_secs(3600));
                        idle && !e.forgetting && f.at.elapsed() >= wait
                    })
                })
                .map(|(root, _)| root.clone())
                .collect();
            for root in due {
                tracing::debug!("retrying the failed job of {root}");
                self.request_job(&root);
            }
        }
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
            None => Err(ServiceError::NotTracked(root.to_owned())),
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
                    entry.error.as_ref().map(|f| f.error.clone()),
                    entry.running.as_ref().map(|p| progress_of(&waiter.root, p)),
                )
            };
            if done {
                return match error {
                    Some(error) => Err(ServiceError::JobFailed {
                        root: waiter.root.clone(),
                        error,
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
}

/// How often failed jobs are looked at for a retry (`HGD_RETRY_SECS` changes it, for tests).
fn retry_period() -> Duration {
    std::env::var("HGD_RETRY_SECS")
        .ok()
        .and_then(|v| v.parse::<f64>().ok())
        .filter(|s| *s > 0.0)
        .map_or(Duration::from_secs(60), Duration::from_secs_f64)
}

/// The message of a caught panic.
fn panic_message(panic: &Box<dyn std::any::Any + Send>) -> String {
    panic
        .downcast_ref::<&str>()
        .map(|s| (*s).to_owned())
        .or_else(|| panic.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "(no message)".to_owned())
}
