//! One indexing job: bring a repository's stored blocks in line with HEAD under its tracked scopes.
//!
//! Files whose blob is unchanged are not touched; a blob that already has blocks anywhere in the store
//! (a rename, a copy, a file shared between repositories) is re-used without embedding; only new
//! blobs are parsed and embedded. New blobs stream through parse → embed → write stages joined by
//! bounded channels, so memory is bounded by the parsed-ahead limit whatever the repository size.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;

use tokio::sync::mpsc;

use crate::chunk::{self, Block, Language, Limits};
use crate::embed::{EmbedError, Embedder};
use crate::git::{GitError, PathChanges, Repo, TrackedFile};
use crate::remote::Remotes;
use crate::store::{BlobKey, BlockRow, RepoRecord, Store, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum IndexError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("embedding failed: {0}")]
    Embed(#[from] EmbedError),
    #[error("indexing was cancelled")]
    Cancelled,
    #[error("an indexing task stopped: {0}")]
    Task(#[from] tokio::task::JoinError),
    #[error("the {0} thread of the job panicked")]
    StagePanicked(&'static str),
    #[error("the job panicked: {0}")]
    Panicked(String),
}

/// Live counters of a running job, read by status and progress reporting, and the blocks it
/// parsed but has not written yet: a search during a long job reads them (without vectors) so a
/// repository is searchable by words long before its vectors are all there. Rows leave this
/// list once they are in the store.
#[derive(Debug, Default)]
pub struct JobProgress {
    pub embedded: AtomicU64,
    /// Blocks whose vectors were copied from a remote instead.
    pub from_remotes: AtomicU64,
    /// Embedded rows this job has written to the store (durable even if it is cancelled).
    pub written: AtomicU64,
    pub to_embed: AtomicU64,
    pub parsed_all: AtomicBool,
    parsed: std::sync::Mutex<Vec<BlockRow>>,
}

impl JobProgress {
    /// Blocks parsed by this job so far, without vectors.
    pub fn parsed_rows(&self) -> Vec<BlockRow> {
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn add_parsed(&self, rows: Vec<BlockRow>) {
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .extend(rows);
    }

    /// These rows are in the store now: searches read them there.
    fn forget_written(&self, written: &[BlockRow]) {
        self.written
            .fetch_add(written.len() as u64, Ordering::Relaxed);
        let paths: std::collections::HashSet<&str> =
            written.iter().map(|r| r.path.as_str()).collect();
        self.parsed
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .retain(|r| !paths.contains(r.path.as_str()));
    }
}

/// What a finished job did.
#[derive(Debug, Clone, Default)]
pub struct JobReport {
    pub commit: Option<String>,
    pub files_removed: usize,
    pub files_reused: usize,
    pub files_embedded: usize,
    pub blocks_embedded: u64,
    /// New blobs whose blocks a remote had (verified), copied instead of embedded.
    pub files_from_remotes: usize,
    pub blocks_from_remotes: u64,
    /// Rows written or deleted: embedded blocks plus blocks copied for re-used blobs plus removed
    /// files (what decides when the store needs optimising).
    pub rows_changed: u64,
    /// Where the job's time went, stage by stage (the middle three overlap: they run at once).
    pub stages: StageTimes,
    /// Every path whose stored blocks the job changed (removed, replaced or added), sorted.
    pub changed_paths: Vec<String>,
}

/// Busy time of each stage of a job: planning (tree diff, stored blobs), parsing (reading blobs,
/// chunking), embedding (the model), writing embedded rows, and copying rows of known blobs.
/// Parse, embed and write run concurrently, so a stage's share of the wall time says how close
/// it is to being the bottleneck; waiting on a channel is not counted.
#[derive(Debug, Clone, Copy, Default)]
pub struct StageTimes {
    pub plan: std::time::Duration,
    pub parse: std::time::Duration,
    pub embed: std::time::Duration,
    pub write: std::time::Duration,
    pub copy: std::time::Duration,
}

impl std::fmt::Display for StageTimes {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "plan {:.1?}, parse {:.1?}, embed {:.1?}, write {:.1?}, copy {:.1?}",
            self.plan, self.parse, self.embed, self.write, self.copy
        )
    }
}

/// Parsed files waiting for the embedder at most: enough for the parser to run far ahead (so a
/// long job's blocks are searchable by words early) while bounding memory (with the unwritten
/// rows kept for searches, about twice the text of this many files).
const PARSED_AHEAD: usize = 4096;

/// Rows are written in groups of whole files of about this many rows: one LanceDB commit each.
const WRITE_ROWS: usize = 512;
/// ... or after this long, so a long first index becomes searchable (and survives a crash) bit by
/// bit rather than all at the end.
const WRITE_EVERY: std::time::Duration = std::time::Duration::from_secs(2);
/// Blocks embedded per call (the embedder batches further by length).
const EMBED_BLOCKS: usize = 64;

/// What gets embedded for a block: where it is, what it is, and its code.
pub fn embed_text(path: &str, block: &Block) -> String {
    if block.name.is_empty() {
        format!("{path}\n{}", block.content)
    } else {
        format!("{path}\n{} {}\n{}", block.kind, block.name, block.content)
    }
}

pub struct Indexer {
    pub store: Arc<Store>,
    pub embedder: Arc<Embedder>,
    pub limits: Limits,
    /// Blocks embedded since the daemon started, across jobs.
    pub blocks_embedded: Arc<AtomicU64>,
    /// Shared indexes asked for new blobs before they are embedded.
    pub remotes: Arc<Remotes>,
}

/// A parsed file waiting for its vectors.
pub struct Parsed {
    pub path: String,
    pub oid: String,
    pub language: Language,
    pub blocks: Vec<Block>,
}

impl Parsed {
    pub fn new(path: String, oid: String, text: &str, limits: &Limits) -> Parsed {
        Parsed {
            language: Language::from_path(&path),
            blocks: chunk::chunk(&path, text, limits),
            path,
            oid,
        }
    }
}

/// The texts a first index of HEAD under `dir` embeds, in the order the job embeds them (one per
/// block; a blob met again under the same language is copied, not embedded): for measuring
/// embedding alone on exactly the pipeline's blocks (`hgd-daemon index-texts`).
pub fn head_texts(dir: &std::path::Path, limits: &Limits) -> Result<Vec<String>, IndexError> {
    let located = crate::git::locate(dir)?;
    let repo = Repo::open(&located.root)?;
    let snapshot = repo.head_snapshot(&[located.subtree])?;
    let mut seen = std::collections::HashSet::new();
    let mut texts = Vec::new();
    for file in snapshot.files {
        if !seen.insert(BlobKey::at(&file.path, &file.oid)) {
            continue;
        }
        let Ok(Some(text)) = repo.read_text(&file.oid) else {
            continue;
        };
        let parsed = Parsed::new(file.path, file.oid, &text, limits);
        texts.extend(parsed.blocks.iter().map(|b| embed_text(&parsed.path, b)));
    }
    Ok(texts)
}

/// Embeds the blocks of whole files (blocking) and turns them into rows of `root`;
/// `for_search`: a search waits for them (see [`Embedder::embed_documents_for_search`]).
pub fn embed_rows(
    embedder: &Embedder,
    root: &str,
    files: Vec<Parsed>,
    for_search: bool,
) -> Result<Vec<BlockRow>, EmbedError> {
    let texts: Vec<String> = files
        .iter()
        .flat_map(|p| p.blocks.iter().map(|b| embed_text(&p.path, b)))
        .collect();
    let vectors = if for_search {
        embedder.embed_documents_for_search(&texts)?
    } else {
        embedder.embed_documents(&texts)?
    };
    let mut rows = Vec::with_capacity(texts.len());
    let mut embedded = texts.into_iter().zip(vectors);
    for parsed in files {
        let blocks = parsed.blocks.len();
        rows.extend(rows_with_vectors(
            root,
            parsed,
            embedded.by_ref().take(blocks),
        ));
    }
    Ok(rows)
}

/// The rows of a parsed file before embedding (empty vectors).
fn rows_without_vectors(root: &str, parsed: &Parsed) -> Vec<BlockRow> {
    parsed
        .blocks
        .iter()
        .map(|block| BlockRow {
            repo: root.to_owned(),
            path: parsed.path.clone(),
            oid: parsed.oid.clone(),
            language: parsed.language.name().to_owned(),
            kind: block.kind.clone(),
            name: block.name.clone(),
            start_line: block.start_line,
            end_line: block.end_line,
            content: block.content.clone(),
            text: String::new(),
            vector: Vec::new(),
        })
        .collect()
}

/// What a job has to do: the commit it brings the index to, what each affected path should hold,
/// and what the store holds for those paths.
struct Plan {
    commit: Option<String>,
    target: PathChanges,
    stored: HashMap<String, String>,
}

impl Indexer {
    /// Brings the stored blocks of `record`'s repository to HEAD (the indexed-commit pointer is
    /// the caller's to write once this returns). With `full`, compares everything stored against
    /// HEAD's files (first index, new scopes); otherwise diffs the indexed commit's tree against
    /// HEAD's, so the work follows the change, falling back to the full comparison when the indexed
    /// commit is gone.
    pub async fn run(
        &self,
        record: &RepoRecord,
        full: bool,
        progress: Arc<JobProgress>,
        cancel: Arc<AtomicBool>,
    ) -> Result<JobReport, IndexError> {
        let root = record.root.clone();
        crate::fault::panic_if_asked("planning", &root);
        let started = std::time::Instant::now();
        let Plan {
            commit,
            target,
            stored,
        } = self.plan(record, full).await?;

        // Paths whose stored blob is not the one they should hold.
        let stale: Vec<String> = target
            .iter()
            .filter(|(path, oid)| stored.get(path).is_some_and(|s| Some(s) != oid.as_ref()))
            .map(|(path, _)| path.clone())
            .collect();
        self.store.delete_paths(&root, &stale).await?;

        let wanted: Vec<TrackedFile> = target
            .into_iter()
            .filter_map(|(path, oid)| oid.map(|oid| TrackedFile { path, oid }))
            .filter(|f| stored.get(&f.path) != Some(&f.oid))
            .collect();
        let mut changed_paths: Vec<String> = stale
            .iter()
            .cloned()
            .chain(wanted.iter().map(|f| f.path.clone()))
            .collect();
        changed_paths.sort();
        changed_paths.dedup();
        let keys: Vec<BlobKey> = wanted
            .iter()
            .map(|f| BlobKey::at(&f.path, &f.oid))
            .collect();
        let known = self.store.known_among(&keys).await?;
        let (mut reuse, candidates): (Vec<_>, Vec<_>) = wanted
            .into_iter()
            .partition(|f| known.contains(&BlobKey::at(&f.path, &f.oid)));
        // Identical new files in this job: embed the first, copy the others once it is stored.
        let mut first_seen = std::collections::HashSet::new();
        let (fresh, copies): (Vec<_>, Vec<_>) = candidates
            .into_iter()
            .partition(|f| first_seen.insert(BlobKey::at(&f.path, &f.oid)));

        let mut report = JobReport {
            commit: commit.clone(),
            files_removed: stale.len(),
            files_reused: reuse.len() + copies.len(),
            files_embedded: fresh.len(),
            changed_paths,
            ..JobReport::default()
        };
        report.stages.plan = started.elapsed();

        let fresh = self
            .embed_fresh(&root, fresh, &progress, &cancel, &mut report.stages)
            .await?;
        report.blocks_embedded = fresh.blocks_embedded;
        report.files_from_remotes = fresh.files_from_remotes;
        report.blocks_from_remotes = fresh.blocks_from_remotes;
        report.files_embedded -= fresh.files_from_remotes;
        report.rows_changed +=
            report.blocks_embedded + report.blocks_from_remotes + report.files_removed as u64;

        // Renames, copies and blobs shared with other repositories: copy rows, embed nothing.
        let copying = std::time::Instant::now();
        reuse.extend(copies);
        let mut pending: Vec<BlockRow> = Vec::new();
        for file in &reuse {
            if cancel.load(Ordering::Relaxed) {
                return Err(IndexError::Cancelled);
            }
            for row in self
                .store
                .copies_of_blob(&BlobKey::at(&file.path, &file.oid), &root, &file.path)
                .await?
            {
                pending.push(row);
                report.rows_changed += 1;
            }
            if pending.len() >= WRITE_ROWS {
                self.store.add(&pending).await?;
                pending.clear();
            }
        }
        self.store.add(&pending).await?;
        report.stages.copy = copying.elapsed();
        // The caller advances the indexed-commit pointer: it knows whether scopes changed meanwhile.
        Ok(report)
    }

    /// What HEAD should hold (`path -> blob`, `None` for paths to drop) and what is stored for
    /// those paths.
    async fn plan(&self, record: &RepoRecord, full: bool) -> Result<Plan, IndexError> {
        let root = record.root.clone();
        let scopes = record.scopes.clone();
        let since = record.indexed_commit.clone().filter(|_| !full);
        // Either the changes since the indexed commit, or (no usable commit) all of HEAD.
        let (commit, seen) = tokio::task::spawn_blocking(move || {
            let repo = Repo::open(&PathBuf::from(&root))?;
            if let Some(old) = since {
                if let Some((head, changes)) = repo.changes_since(&old, &scopes)? {
                    return Ok::<_, IndexError>((Some(head), Ok(changes)));
                }
            }
            let snapshot = repo.head_snapshot(&scopes)?;
            Ok((snapshot.commit, Err(snapshot.files)))
        })
        .await??;

        let (target, stored) = match seen {
            Ok(changes) => {
                let paths: Vec<String> = changes.iter().map(|(p, _)| p.clone()).collect();
                let stored = self.store.stored_files_at(&record.root, &paths).await?;
                (changes, stored)
            }
            Err(files) => {
                let stored = self.store.stored_files(&record.root).await?;
                let in_head: std::collections::HashSet<&str> =
                    files.iter().map(|f| f.path.as_str()).collect();
                let gone: PathChanges = stored
                    .keys()
                    .filter(|p| !in_head.contains(p.as_str()))
                    .map(|p| (p.clone(), None))
                    .collect();
                let mut target: PathChanges =
                    files.into_iter().map(|f| (f.path, Some(f.oid))).collect();
                target.extend(gone);
                (target, stored)
            }
        };
        Ok(Plan {
            commit,
            target,
            stored,
        })
    }

    /// Parses, embeds and writes blobs that have no blocks yet, copying the vectors of those a
    /// remote has instead of embedding them.
    async fn embed_fresh(
        &self,
        root: &str,
        fresh: Vec<crate::git::TrackedFile>,
        progress: &Arc<JobProgress>,
        cancel: &Arc<AtomicBool>,
        stages: &mut StageTimes,
    ) -> Result<FreshReport, IndexError> {
        let (parsed_tx, from_parser) = mpsc::channel::<Parsed>(PARSED_AHEAD);
        let (rows_tx, mut rows_rx) = mpsc::channel::<Vec<BlockRow>>(4);
        // With remotes, parsed files pass through them on the way to the embedder.
        let (mut parsed_rx, from_remotes) = if self.remotes.current().is_empty() {
            (from_parser, None)
        } else {
            // Small: files wait for lookups in the parser's channel, so lookups keep pace with
            // the embedder instead of all happening at the start.
            let (to_embed_tx, to_embed_rx) = mpsc::channel::<Parsed>(EMBED_BLOCKS);
            let stage = tokio::spawn(copy_from_remotes(
                self.remotes.clone(),
                root.to_owned(),
                from_parser,
                to_embed_tx,
                rows_tx.clone(),
                progress.clone(),
                cancel.clone(),
            ));
            (to_embed_rx, Some(stage))
        };

        // Parsing and embedding run on threads of their own at background priority, so a search
        // (normal priority) gets the CPU first while a long job runs.
        let parser = crate::priority::spawn_background("hgd-parse", {
            let root = root.to_owned();
            let progress = progress.clone();
            let cancel = cancel.clone();
            let limits = self.limits.clone();
            move || -> Result<std::time::Duration, IndexError> {
                let mut busy = std::time::Duration::ZERO;
                let repo = Repo::open(&PathBuf::from(&root))?;
                for file in fresh {
                    if cancel.load(Ordering::Relaxed) {
                        return Err(IndexError::Cancelled);
                    }
                    let step = std::time::Instant::now();
                    let text = match repo.read_text(&file.oid) {
                        Ok(Some(text)) => text,
                        Ok(None) => continue,
                        Err(e) => {
                            tracing::warn!("skipping {}: {e}", file.path);
                            continue;
                        }
                    };
                    crate::fault::panic_if_asked("parsing", &file.path);
                    let parsed = Parsed::new(file.path, file.oid, &text, &limits);
                    progress
                        .to_embed
                        .fetch_add(parsed.blocks.len() as u64, Ordering::Relaxed);
                    progress.add_parsed(rows_without_vectors(&root, &parsed));
                    busy += step.elapsed();
                    if parsed_tx.blocking_send(parsed).is_err() {
                        break; // the embedder stopped; its error is reported
                    }
                }
                progress.parsed_all.store(true, Ordering::Relaxed);
                Ok(busy)
            }
        });

        let embedder_task = crate::priority::spawn_background("hgd-embed", {
            let embedder = self.embedder.clone();
            let root = root.to_owned();
            let progress = progress.clone();
            let total = self.blocks_embedded.clone();
            let cancel = cancel.clone();
            move || -> Result<(u64, std::time::Duration), IndexError> {
                let mut busy = std::time::Duration::ZERO;
                let mut embedded = 0u64;
                let mut group: Vec<Parsed> = Vec::new();
                let mut open = true;
                while open {
                    let mut count: usize = group.iter().map(|p| p.blocks.len()).sum();
                    while count < EMBED_BLOCKS {
                        match parsed_rx.blocking_recv() {
                            Some(parsed) => {
                                count += parsed.blocks.len();
                                group.push(parsed);
                            }
                            None => {
                                open = false;
                                break;
                            }
                        }
                    }
                    if cancel.load(Ordering::Relaxed) {
                        return Err(IndexError::Cancelled);
                    }
                    if group.is_empty() {
                        continue;
                    }
                    let step = std::time::Instant::now();
                    let rows = embed_rows(&embedder, &root, std::mem::take(&mut group), false)?;
                    busy += step.elapsed();
                    let n = rows.len() as u64;
                    embedded += n;
                    progress.embedded.fetch_add(n, Ordering::Relaxed);
                    total.fetch_add(n, Ordering::Relaxed);
                    if !rows.is_empty() && rows_tx.blocking_send(rows).is_err() {
                        break;
                    }
                }
                Ok((embedded, busy))
            }
        });

        // Writer: whole files only, in groups of about WRITE_ROWS rows or every WRITE_EVERY.
        let mut pending: Vec<BlockRow> = Vec::new();
        let mut write_result = Ok(());
        let mut last_write = std::time::Instant::now();
        while let Some(rows) = rows_rx.recv().await {
            pending.extend(rows);
            if pending.len() >= WRITE_ROWS || last_write.elapsed() >= WRITE_EVERY {
                let step = std::time::Instant::now();
                if let Err(e) = self.store.add(&pending).await {
                    write_result = Err(e);
                    break;
                }
                stages.write += step.elapsed();
                progress.forget_written(&pending);
                pending.clear();
                last_write = std::time::Instant::now();
            }
        }
        drop(rows_rx);
        if write_result.is_ok() {
            let step = std::time::Instant::now();
            write_result = self.store.add(&pending).await;
            stages.write += step.elapsed();
        }
        let parsed = parser.await.ok_or(IndexError::StagePanicked("parse"))?;
        let embedded = embedder_task
            .await
            .ok_or(IndexError::StagePanicked("embed"))?;
        let copied = match from_remotes {
            Some(stage) => stage.await,
            None => Ok(Ok((0, 0))),
        };
        // A store failure first: it is what the scheduler must see (not a cancel met after it).
        write_result?;
        stages.parse = parsed?;
        let (embedded, busy) = embedded?;
        let copied = copied??;
        stages.embed = busy;
        Ok(FreshReport {
            blocks_embedded: embedded,
            files_from_remotes: copied.0,
            blocks_from_remotes: copied.1,
        })
    }
}

/// What [`Indexer::embed_fresh`] did.
struct FreshReport {
    blocks_embedded: u64,
    files_from_remotes: usize,
    blocks_from_remotes: u64,
}

/// How long the remote stage waits for the parser to fill a group of files to look up
/// (parsing is much faster than embedding, so groups are usually full).
const GATHER_WAIT: std::time::Duration = std::time::Duration::from_millis(20);

/// The remote stage of a job: asks the remotes for parsed files a group at a time; files a
/// remote has (every block verified) go straight to the writer with the remote's vectors, the
/// others on to the embedder. Returns the files and blocks copied.
async fn copy_from_remotes(
    remotes: Arc<Remotes>,
    root: String,
    mut parsed_rx: mpsc::Receiver<Parsed>,
    to_embed: mpsc::Sender<Parsed>,
    rows_tx: mpsc::Sender<Vec<BlockRow>>,
    progress: Arc<JobProgress>,
    cancel: Arc<AtomicBool>,
) -> Result<(usize, u64), IndexError> {
    let (mut files, mut blocks) = (0usize, 0u64);
    let lookup_blobs = crate::remote::lookup_blobs();
    let mut open = true;
    while open {
        let Some(first) = parsed_rx.recv().await else {
            break;
        };
        let mut group = vec![first];
        let deadline = tokio::time::Instant::now() + GATHER_WAIT;
        while group.len() < lookup_blobs {
            match tokio::time::timeout_at(deadline, parsed_rx.recv()).await {
                Ok(Some(parsed)) => group.push(parsed),
                Ok(None) => {
                    open = false;
                    break;
                }
                Err(_) => break,
            }
        }
        if cancel.load(Ordering::Relaxed) {
            return Err(IndexError::Cancelled);
        }
        let keys: Vec<BlobKey> = group
            .iter()
            .filter(|p| !p.blocks.is_empty())
            .map(|p| BlobKey::at(&p.path, &p.oid))
            .collect();
        let (offered, model) = remotes.offered(&keys).await;
        for parsed in group {
            let found = offered.get(&BlobKey::at(&parsed.path, &parsed.oid));
            let vectors = match (found, &model) {
                (Some((remote, offer)), Some(model)) => {
                    let vectors = crate::remote::verified_vectors(
                        &parsed.blocks,
                        offer,
                        &model.fingerprint,
                        model.dims,
                    );
                    if vectors.is_some() {
                        remote.count_copied(parsed.blocks.len() as u64);
                    } else {
                        tracing::warn!(
                            "remote {}: its blocks of {} ({}) do not match the blob; embedding it here",
                            remote.spec.name,
                            parsed.path,
                            parsed.oid
                        );
                        remote.count_refused(parsed.blocks.len() as u64);
                    }
                    vectors
                }
                _ => None,
            };
            match vectors {
                Some(vectors) => {
                    let texts: Vec<String> = parsed
                        .blocks
                        .iter()
                        .map(|b| embed_text(&parsed.path, b))
                        .collect();
                    let rows = rows_with_vectors(&root, parsed, texts.into_iter().zip(vectors));
                    let n = rows.len() as u64;
                    files += 1;
                    blocks += n;
                    progress.from_remotes.fetch_add(n, Ordering::Relaxed);
                    if rows_tx.send(rows).await.is_err() {
                        return Ok((files, blocks)); // the writer stopped; its error is reported
                    }
                }
                None => {
                    if to_embed.send(parsed).await.is_err() {
                        return Ok((files, blocks)); // the embedder stopped; its error is reported
                    }
                }
            }
        }
    }
    Ok((files, blocks))
}

/// The rows of a parsed file from each block's embedded text and vector, in block order.
fn rows_with_vectors(
    root: &str,
    parsed: Parsed,
    embedded: impl IntoIterator<Item = (String, Vec<f32>)>,
) -> Vec<BlockRow> {
    let Parsed {
        path,
        oid,
        language,
        blocks,
    } = parsed;
    blocks
        .into_iter()
        .zip(embedded)
        .map(|(block, (text, vector))| BlockRow {
            repo: root.to_owned(),
            text,
            path: path.clone(),
            oid: oid.clone(),
            language: language.name().to_owned(),
            kind: block.kind,
            name: block.name,
            start_line: block.start_line,
            end_line: block.end_line,
            content: block.content,
            vector,
        })
        .collect()
}
