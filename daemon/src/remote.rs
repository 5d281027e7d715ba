//! Shared indexes on object storage ("remotes", `[remote.NAME]` in the config file): LanceDB
//! tables at `s3://…` holding blocks by blob, model and cut, with their vectors. A block embedded
//! by one hgd home is valid in every other that runs the same model, so a team (or a CI job)
//! embeds each blob once.
//!
//! - Consuming: before a job embeds new blobs, it asks the remotes for them, a few hundred per
//!   query ([`Remotes::offered`]), and copies the vectors of blocks it can verify
//!   ([`verified_vectors`]): the job cuts the blob itself and takes a remote row only when its
//!   model, lines, kind, name and content equal the block's. A remote that fails or does not
//!   answer within [`LOOKUP_TIMEOUT`] is skipped for [`RETRY_AFTER`]; the job embeds locally.
//! - Publishing ([`RemoteStore::publish`]): adds the rows of the blobs the remote lacks with a
//!   LanceDB `merge_insert` keyed on each block's identity (the table's unenforced primary
//!   key). Lance commits a version on S3 with a conditional put (`If-None-Match`), so two
//!   publishers never overwrite each other's manifest; one that loses the race retries against
//!   the new version; two inserts at once are a conflict Lance resolves by running the later
//!   merge again against the new version, where the keys the other added now match: no
//!   duplicate (`two_publishers_at_once_add_each_block_once`; the same publish as a plain
//!   append stores every block twice there).
//!
//! hgd stores no credentials: they come from the AWS environment variables and profile files
//! (the default AWS credentials chain), and errors never echo them.

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, RecordBatchIterator,
    StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::TryStreamExt;
use hgd_protocol::config::Remote;
use hgd_protocol::RemoteStatus;
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::Table;

use crate::chunk::Block;
use crate::store::{quote, BlobKey, BlockRow};

#[derive(Debug, thiserror::Error)]
pub enum RemoteError {
    #[error("remote {name}: {message}")]
    Lance { name: String, message: String },
    #[error("remote {name} did not answer within {seconds} s")]
    TimedOut { name: String, seconds: u64 },
    #[error("no remote named {0} (`hgd remote list` shows them)")]
    Unknown(String),
    #[error("remote {0} is read-only (`hgd remote list`)")]
    ReadOnly(String),
    #[error("no remote to publish to: add one with `hgd remote add NAME s3://BUCKET/PREFIX`")]
    NoneWritable,
    #[error("cannot identify the model in {0}: {1}")]
    Model(PathBuf, String),
    /// The local store failed while publishing: not the remote's fault.
    #[error("reading the blocks to publish: {0}")]
    Local(#[from] crate::store::StoreError),
}

impl RemoteError {
    fn lance(name: &str, e: impl std::fmt::Display) -> RemoteError {
        RemoteError::Lance {
            name: name.to_owned(),
            message: explain(&e.to_string()),
        }
    }
}

/// Object storage errors are long chains; say first what a user can act on.
fn explain(message: &str) -> String {
    // Status texts and S3 error codes only: a bare "403" may be part of an object id.
    let hint = if [
        "InvalidAccessKeyId",
        "SignatureDoesNotMatch",
        "AccessDenied",
        "403 Forbidden",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        "access denied: check the AWS credentials (AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, AWS_PROFILE) and the bucket's permissions; "
    } else if message.contains("NoSuchBucket") {
        "the bucket does not exist; "
    } else if [
        "Connection refused",
        "error sending request",
        "dns error",
        "timed out",
    ]
    .iter()
    .any(|m| message.contains(m))
    {
        "cannot reach the server; "
    } else {
        ""
    };
    format!("{hint}{message}")
}

/// How long one lookup may take before the job embeds without that remote.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a remote that failed is left alone (jobs meanwhile embed locally).
pub const RETRY_AFTER: Duration = Duration::from_secs(60);
/// Blobs asked for per query: one filter of a few hundred object ids, so a first index of a
/// large repository costs a few round trips, not one per blob.
pub const LOOKUP_BLOBS: usize = 256;

/// [`LOOKUP_BLOBS`], or `HGD_REMOTE_LOOKUP_BLOBS` (tests make it small, so a job asks many
/// times).
pub fn lookup_blobs() -> usize {
    std::env::var("HGD_REMOTE_LOOKUP_BLOBS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(LOOKUP_BLOBS)
}
/// Rows gathered before a `merge_insert` when publishing (each is one commit, one new version
/// on the remote); the rest go in one last commit.
const PUBLISH_ROWS: usize = 4096;
/// Small fragments on a remote that make a publisher merge them (`HGD_REMOTE_COMPACT_FRAGMENTS`
/// overrides: tests make it small).
fn compact_after() -> usize {
    std::env::var("HGD_REMOTE_COMPACT_FRAGMENTS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&n: &usize| n > 0)
        .unwrap_or(64)
}

/// Versions of a remote older than this are removed when it is compacted.
const PRUNE_OLDER_THAN_HOURS: i64 = 1;

/// Identifies how hgd turns a block into the text it embeds (`indexer::embed_text`): vectors
/// made by another form are another model's.
const EMBED_FORM: u32 = 1;

/// What a remote offers for one block of a blob.
#[derive(Debug, Clone)]
pub struct OfferedBlock {
    pub model: String,
    /// The path the block was embedded under (part of the embedded text).
    pub path: String,
    pub kind: String,
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
    pub vector: Vec<f32>,
}

/// The vectors of `blocks` (cut here from the blob's own text) taken from what a remote
/// offered for that blob, in block order; `None` unless every block has an offered row of this
/// model with the same lines, kind, name and content, and a vector of `dims` finite numbers.
/// A blob's blocks are stored together, so a file is copied whole or embedded whole.
pub fn verified_vectors(
    blocks: &[Block],
    offered: &[OfferedBlock],
    model: &str,
    dims: usize,
) -> Option<Vec<Vec<f32>>> {
    let by_cut: HashMap<(u32, u32, &str, &str), &OfferedBlock> = offered
        .iter()
        .filter(|o| o.model == model)
        .map(|o| {
            (
                (o.start_line, o.end_line, o.kind.as_str(), o.name.as_str()),
                o,
            )
        })
        .collect();
    blocks
        .iter()
        .map(|b| {
            let o = by_cut.get(&(b.start_line, b.end_line, b.kind.as_str(), b.name.as_str()))?;
            (o.content == b.content
                && o.vector.len() == dims
                && o.vector.iter().all(|v| v.is_finite()))
            .then(|| o.vector.clone())
        })
        .collect()
}

/// The identity of a block on a remote: unique per model, blob, language and cut.
fn block_key(model: &str, oid: &str, language: &str, b: &BlockRow) -> String {
    format!(
        "{model}\n{oid}\n{language}\n{}\n{}\n{}\n{}",
        b.start_line, b.end_line, b.kind, b.name
    )
}

fn remote_schema(dims: usize) -> SchemaRef {
    let key = Field::new("key", DataType::Utf8, false).with_metadata(
        [(
            "lance-schema:unenforced-primary-key".to_owned(),
            "true".to_owned(),
        )]
        .into(),
    );
    Arc::new(Schema::new(vec![
        key,
        Field::new("model", DataType::Utf8, false),
        Field::new("oid", DataType::Utf8, false),
        Field::new("language", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("start_line", DataType::UInt32, false),
        Field::new("end_line", DataType::UInt32, false),
        Field::new("content", DataType::Utf8, false),
        crate::store::vector_field(dims),
    ]))
}

/// The model a store's vectors come from, as remotes record it: the model's id, a digest of
/// its files (weights, tokenizer, `model.toml`: name, pooling, token limit, prefixes), how
/// blocks are cut and how a block becomes text. Rows of any other are never used.
#[derive(Debug, Clone)]
pub struct ModelIdentity {
    pub id: String,
    pub dims: usize,
    pub fingerprint: String,
}

impl ModelIdentity {
    pub fn of(model_dir: &std::path::Path, id: &str, dims: usize) -> Result<Self, RemoteError> {
        use sha2::{Digest, Sha256};
        let mut hash = Sha256::new();
        for file in ["model.toml", "tokenizer.json", "model.onnx"] {
            let path = model_dir.join(file);
            let mut reader = std::fs::File::open(&path)
                .map_err(|e| RemoteError::Model(model_dir.to_path_buf(), format!("{file}: {e}")))?;
            std::io::copy(&mut reader, &mut hash)
                .map_err(|e| RemoteError::Model(model_dir.to_path_buf(), format!("{file}: {e}")))?;
        }
        let digest = hash.finalize();
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Ok(ModelIdentity {
            id: id.to_owned(),
            dims,
            fingerprint: format!(
                "{id}/{hex}/chunker{}/form{EMBED_FORM}",
                crate::chunk::CHUNKER_VERSION
            ),
        })
    }

    /// The table of this model's blocks on a remote: named as the local one.
    fn table_name(&self) -> String {
        crate::store::table_name(&self.id)
    }
}

/// How a remote fared. Reads and writes are apart: a bucket readable but not writable still
/// serves lookups.
#[derive(Debug, Default)]
struct Health {
    used: bool,
    /// The last lookup's failure: lookups rest for [`RETRY_AFTER`].
    failed: Option<(Instant, String)>,
    /// The last publish's failure, cleared by the next publish that succeeds.
    publish_failed: Option<String>,
}

/// What [`RemoteStore::guarded`] runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Use {
    Read,
    Write,
}

/// One configured remote, its opened table and its counters.
pub struct RemoteStore {
    pub spec: Remote,
    /// The opened table; never held across network I/O.
    table: Mutex<Option<Table>>,
    /// One publish at a time to this remote.
    publishing: tokio::sync::Mutex<()>,
    health: Mutex<Health>,
    copied: AtomicU64,
    refused: AtomicU64,
    published: AtomicU64,
}

impl RemoteStore {
    fn new(spec: Remote) -> RemoteStore {
        RemoteStore {
            spec,
            table: Mutex::new(None),
            publishing: tokio::sync::Mutex::new(()),
            health: Mutex::default(),
            copied: AtomicU64::new(0),
            refused: AtomicU64::new(0),
            published: AtomicU64::new(0),
        }
    }

    fn health(&self) -> std::sync::MutexGuard<'_, Health> {
        self.health.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Failed less than [`RETRY_AFTER`] ago: jobs do not wait for it.
    fn resting(&self) -> bool {
        self.health()
            .failed
            .as_ref()
            .is_some_and(|(at, _)| at.elapsed() < RETRY_AFTER)
    }

    fn succeeded(&self, work: Use) {
        let mut health = self.health();
        health.used = true;
        match work {
            Use::Read => health.failed = None,
            Use::Write => health.publish_failed = None,
        }
    }

    fn failed(&self, work: Use, error: &RemoteError) {
        let mut health = self.health();
        health.used = true;
        match work {
            Use::Read => {
                if health.failed.is_none() {
                    tracing::warn!("{error}; jobs embed locally meanwhile");
                }
                health.failed = Some((Instant::now(), error.to_string()));
            }
            Use::Write => {
                tracing::warn!("publishing: {error}");
                health.publish_failed = Some(error.to_string());
            }
        }
    }

    pub fn count_copied(&self, blocks: u64) {
        self.copied.fetch_add(blocks, Ordering::Relaxed);
    }

    pub fn count_refused(&self, blocks: u64) {
        self.refused.fetch_add(blocks, Ordering::Relaxed);
    }

    fn status(&self) -> RemoteStatus {
        let health = self.health();
        let (state, error) = match (&health.failed, &health.publish_failed, health.used) {
            (Some((_, error)), _, _) => ("unreachable", Some(error.clone())),
            (None, Some(error), _) => ("publish failed", Some(error.clone())),
            (None, None, true) => ("ok", None),
            (None, None, false) => ("unused", None),
        };
        RemoteStatus {
            name: self.spec.name.clone(),
            uri: self.spec.uri.clone(),
            read_only: self.spec.read_only,
            publish: self.spec.publish,
            state: state.into(),
            error,
            blocks_copied: self.copied.load(Ordering::Relaxed),
            blocks_refused: self.refused.load(Ordering::Relaxed),
            blocks_published: self.published.load(Ordering::Relaxed),
        }
    }

    /// The connection options: the endpoint, region and plain HTTP of the config file, short
    /// network timeouts and few retries (a job waits for a lookup), nothing secret.
    fn storage_options(&self) -> Vec<(String, String)> {
        let mut options = vec![
            ("connect_timeout".to_owned(), "2s".to_owned()),
            ("timeout".to_owned(), "60s".to_owned()),
            ("client_max_retries".to_owned(), "2".to_owned()),
            ("client_retry_timeout".to_owned(), "10".to_owned()),
        ];
        if let Some(endpoint) = &self.spec.endpoint {
            options.push(("aws_endpoint".into(), endpoint.clone()));
        }
        if let Some(region) = &self.spec.region {
            options.push(("aws_region".into(), region.clone()));
        }
        if self.spec.allow_http {
            options.push(("allow_http".into(), "true".into()));
        }
        options
    }

    /// This model's table on the remote, opened once; `None` when nobody published for this
    /// model yet (and `create` is false).
    async fn table(
        &self,
        model: &ModelIdentity,
        create: bool,
    ) -> Result<Option<Table>, RemoteError> {
        if let Some(table) = self.opened() {
            return Ok(Some(table));
        }
        // Opened without holding the lock: a slow open (a publish's) never holds up a lookup,
        // which has its own timeout. Two opening at once both succeed; one table is kept.
        let name = &self.spec.name;
        let db = lancedb::connect(&self.spec.uri)
            .storage_options(self.storage_options())
            // Every read sees the latest version: other homes publish meanwhile.
            .read_consistency_interval(Duration::ZERO)
            .execute()
            .await
            .map_err(|e| RemoteError::lance(name, e))?;
        let table_name = model.table_name();
        let table = match db.open_table(&table_name).execute().await {
            Ok(table) => table,
            Err(lancedb::Error::TableNotFound { .. }) if !create => return Ok(None),
            Err(lancedb::Error::TableNotFound { .. }) => {
                match db
                    .create_empty_table(&table_name, remote_schema(model.dims))
                    .execute()
                    .await
                {
                    Ok(table) => table,
                    // Another publisher made it first.
                    Err(lancedb::Error::TableAlreadyExists { .. }) => db
                        .open_table(&table_name)
                        .execute()
                        .await
                        .map_err(|e| RemoteError::lance(name, e))?,
                    Err(e) => return Err(RemoteError::lance(name, e)),
                }
            }
            Err(e) => return Err(RemoteError::lance(name, e)),
        };
        *self.table.lock().unwrap_or_else(|p| p.into_inner()) = Some(table.clone());
        Ok(Some(table))
    }

    fn opened(&self) -> Option<Table> {
        self.table.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Runs `work` against the remote within `limit`, recording how it went; a failure of the
    /// remote drops the opened table, so the next use connects again (a failure of the local
    /// store is not the remote's).
    async fn guarded<T, F>(&self, work_is: Use, limit: Duration, work: F) -> Result<T, RemoteError>
    where
        F: std::future::Future<Output = Result<T, RemoteError>>,
    {
        let result = match tokio::time::timeout(limit, work).await {
            Ok(result) => result,
            Err(_) => Err(RemoteError::TimedOut {
                name: self.spec.name.clone(),
                seconds: limit.as_secs().max(1),
            }),
        };
        match &result {
            Ok(_) => self.succeeded(work_is),
            Err(RemoteError::Local(_)) => {}
            Err(e) => {
                self.failed(work_is, e);
                *self.table.lock().unwrap_or_else(|p| p.into_inner()) = None;
            }
        }
        result
    }

    /// What the remote holds for `keys` (one query), by blob key.
    async fn lookup(
        &self,
        model: &ModelIdentity,
        keys: &[&BlobKey],
    ) -> Result<HashMap<BlobKey, Vec<OfferedBlock>>, RemoteError> {
        let name = self.spec.name.clone();
        self.guarded(Use::Read, LOOKUP_TIMEOUT, async {
            let Some(table) = self.table(model, false).await? else {
                return Ok(HashMap::new());
            };
            let wanted: HashSet<&BlobKey> = keys.iter().copied().collect();
            let query = table
                .query()
                .only_if(blob_filter(&model.fingerprint, keys))
                .select(Select::columns(&[
                    "model",
                    "oid",
                    "language",
                    "path",
                    "kind",
                    "name",
                    "start_line",
                    "end_line",
                    "content",
                    "vector",
                ]));
            let batches = collect(&name, query).await?;
            let mut out: HashMap<BlobKey, Vec<OfferedBlock>> = HashMap::new();
            for batch in &batches {
                for (key, block) in offered_of(batch).map_err(|e| RemoteError::lance(&name, e))? {
                    if wanted.contains(&key) {
                        out.entry(key).or_default().push(block);
                    }
                }
            }
            Ok(out)
        })
        .await
    }

    /// Which of `keys` the remote holds blocks of (one query, keys only).
    async fn present(
        &self,
        table: &Table,
        model: &ModelIdentity,
        keys: &[&BlobKey],
    ) -> Result<HashSet<BlobKey>, RemoteError> {
        crate::store::keys_in(table, Some(blob_filter(&model.fingerprint, keys)))
            .await
            .map_err(|e| RemoteError::lance(&self.spec.name, e))
    }

    /// Adds to the remote the blocks of those `keys` it lacks, reading them with `rows_of`
    /// (the local store's rows of a few hundred blobs). Returns (blobs added, blocks added).
    pub async fn publish<F, Fut>(
        &self,
        model: &ModelIdentity,
        keys: &[BlobKey],
        rows_of: F,
    ) -> Result<(u64, u64), RemoteError>
    where
        F: Fn(Vec<BlobKey>) -> Fut,
        Fut: std::future::Future<Output = Result<Vec<BlockRow>, crate::store::StoreError>>,
    {
        if self.spec.read_only {
            return Err(RemoteError::ReadOnly(self.spec.name.clone()));
        }
        let name = self.spec.name.clone();
        let _one_at_a_time = self.publishing.lock().await;
        // No overall timeout: a large first publish takes as long as its bytes take; each
        // request has the connection's own timeouts.
        self.guarded(Use::Write, Duration::from_secs(24 * 3600), async {
            let table = self
                .table(model, true)
                .await?
                .expect("a table is made when missing");
            let (mut blobs, mut blocks) = (0u64, 0u64);
            let mut pending: Vec<BlockRow> = Vec::new();
            let mut lacked = 0;
            for chunk in keys.chunks(lookup_blobs()) {
                let refs: Vec<&BlobKey> = chunk.iter().collect();
                let present = self.present(&table, model, &refs).await?;
                let missing: Vec<BlobKey> = chunk
                    .iter()
                    .filter(|k| !present.contains(k))
                    .cloned()
                    .collect();
                lacked += missing.len();
                if missing.is_empty() {
                    continue;
                }
                let rows = rows_of(missing).await?;
                blobs += rows.iter().map(BlockRow::key).collect::<HashSet<_>>().len() as u64;
                pending.extend(rows);
                if pending.len() >= PUBLISH_ROWS {
                    blocks += self.insert(&table, model, &pending).await?;
                    pending.clear();
                }
            }
            crate::fault::wait_to_insert_if_asked().await;
            blocks += self.insert(&table, model, &pending).await?;
            tracing::debug!(
                "remote {name} lacked {lacked} of {} blobs; {blocks} blocks inserted",
                keys.len()
            );
            if blocks > 0 {
                self.maintain(&table).await;
            }
            Ok((blobs, blocks))
        })
        .await
    }

    /// The rows of this model's table and how many distinct block keys they hold (equal unless
    /// publishers duplicated rows), reading the key column whole: for tests and inspection.
    pub async fn count_rows(&self, model: &ModelIdentity) -> Result<(u64, u64), RemoteError> {
        let name = self.spec.name.clone();
        self.guarded(Use::Read, Duration::from_secs(600), async {
            let Some(table) = self.table(model, false).await? else {
                return Ok((0, 0));
            };
            let query = table.query().select(Select::columns(&["key"]));
            let batches = collect(&name, query).await?;
            let mut keys = HashSet::new();
            let mut rows = 0u64;
            for batch in &batches {
                let column = strings(batch, "key").map_err(|e| RemoteError::lance(&name, e))?;
                rows += batch.num_rows() as u64;
                keys.extend((0..batch.num_rows()).map(|i| column.value(i).to_owned()));
            }
            Ok((rows, keys.len() as u64))
        })
        .await
    }

    /// Inserts rows whose keys the remote lacks (one commit). Returns the rows inserted.
    async fn insert(
        &self,
        table: &Table,
        model: &ModelIdentity,
        rows: &[BlockRow],
    ) -> Result<u64, RemoteError> {
        if rows.is_empty() {
            return Ok(0);
        }
        let name = &self.spec.name;
        let batch = remote_batch(model, rows).map_err(|e| RemoteError::lance(name, e))?;
        let schema = batch.schema();
        let mut merge = table.merge_insert(&["key"]);
        merge.when_not_matched_insert_all();
        // Concurrent inserts of one key are detected (and retried, then matched) only on
        // Lance's plan that does not use an index on the key: keep it so, should `key` ever
        // get one.
        merge.use_index(false);
        let result = merge
            .execute(Box::new(RecordBatchIterator::new(vec![Ok(batch)], schema)))
            .await
            .map_err(|e| RemoteError::lance(name, e))?;
        self.published
            .fetch_add(result.num_inserted_rows, Ordering::Relaxed);
        tracing::debug!(
            "remote {name}: {} of {} rows inserted in {} attempts",
            result.num_inserted_rows,
            rows.len(),
            result.num_attempts
        );
        Ok(result.num_inserted_rows)
    }

    /// After a publish that added rows, keeps lookups fast; best effort (a failure is logged,
    /// the rows are in). Each publish adds small fragments and a version: once
    /// [`compact_after`] small fragments have gathered they are merged, and versions older than
    /// [`PRUNE_OLDER_THAN_HOURS`] are removed (readers always read the latest version, and a
    /// commit that meets the merge is retried by Lance). Then the `oid` index is made or
    /// brought up to date.
    async fn maintain(&self, table: &Table) {
        let name = &self.spec.name;
        let small = match table.stats().await {
            Ok(stats) => stats.fragment_stats.num_small_fragments,
            Err(e) => {
                tracing::debug!("remote {name}: reading its statistics: {e}");
                0
            }
        };
        if small >= compact_after() {
            let started = Instant::now();
            let compacted = table
                .optimize(lancedb::table::OptimizeAction::Compact {
                    options: Default::default(),
                    remap_options: None,
                })
                .await;
            let pruned = match compacted {
                Ok(_) => {
                    table
                        .optimize(lancedb::table::OptimizeAction::Prune {
                            older_than: lancedb::table::Duration::try_hours(PRUNE_OLDER_THAN_HOURS),
                            delete_unverified: Some(false),
                            error_if_tagged_old_versions: None,
                        })
                        .await
                }
                Err(e) => Err(e),
            };
            match pruned {
                Ok(_) => tracing::info!(
                    "remote {name}: merged {small} small fragments in {:.1?}",
                    started.elapsed()
                ),
                Err(e) => tracing::warn!("remote {name}: merging its small fragments: {e}"),
            }
        }
        self.index_blob_column(table).await;
    }

    /// A B-tree index on `oid`, so a lookup reads a few rows, not the column; kept current
    /// after each publish. Best effort: a lookup without it scans, and two publishers indexing
    /// at once may see one give up.
    async fn index_blob_column(&self, table: &Table) {
        let indexed = match table.list_indices().await {
            Ok(indices) => indices.iter().any(|i| i.columns.iter().any(|c| c == "oid")),
            Err(e) => {
                tracing::debug!("remote {}: listing indexes: {e}", self.spec.name);
                return;
            }
        };
        let result = if indexed {
            table
                .optimize(lancedb::table::OptimizeAction::Index(Default::default()))
                .await
                .map(|_| ())
        } else {
            table
                .create_index(&["oid"], lancedb::index::Index::BTree(Default::default()))
                .execute()
                .await
        };
        if let Err(e) = result {
            tracing::debug!("remote {}: indexing oid: {e}", self.spec.name);
        }
    }
}

/// `model = … AND oid IN (…)`.
fn blob_filter(model: &str, keys: &[&BlobKey]) -> String {
    format!(
        "model = {} AND oid IN ({})",
        quote(model),
        crate::store::oid_list(keys.iter().copied())
    )
}

/// Runs a query on a remote's table and collects its batches.
async fn collect(
    name: &str,
    query: lancedb::query::Query,
) -> Result<Vec<RecordBatch>, RemoteError> {
    query
        .execute()
        .await
        .map_err(|e| RemoteError::lance(name, e))?
        .try_collect()
        .await
        .map_err(|e| RemoteError::lance(name, e))
}

fn strings<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b StringArray, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or_else(|| format!("column {name} is missing or not text"))
}

fn u32s<'b>(batch: &'b RecordBatch, name: &str) -> Result<&'b UInt32Array, String> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .ok_or_else(|| format!("column {name} is missing or not a whole number"))
}

/// The offered blocks of a batch read from a remote.
fn offered_of(batch: &RecordBatch) -> Result<Vec<(BlobKey, OfferedBlock)>, String> {
    let text = |n| strings(batch, n);
    let (model, oid, language, path) = (
        text("model")?,
        text("oid")?,
        text("language")?,
        text("path")?,
    );
    let (kind, name, content) = (text("kind")?, text("name")?, text("content")?);
    let (start, end) = (u32s(batch, "start_line")?, u32s(batch, "end_line")?);
    let vectors = batch
        .column_by_name("vector")
        .and_then(|c| c.as_any().downcast_ref::<FixedSizeListArray>())
        .ok_or("column vector is missing or not a list of numbers")?;
    (0..batch.num_rows())
        .map(|i| {
            let vector = vectors
                .value(i)
                .as_any()
                .downcast_ref::<Float32Array>()
                .ok_or("vector items are not 32-bit floats")?
                .values()
                .to_vec();
            Ok((
                BlobKey {
                    oid: oid.value(i).to_owned(),
                    language: language.value(i).to_owned(),
                },
                OfferedBlock {
                    model: model.value(i).to_owned(),
                    path: path.value(i).to_owned(),
                    kind: kind.value(i).to_owned(),
                    name: name.value(i).to_owned(),
                    start_line: start.value(i),
                    end_line: end.value(i),
                    content: content.value(i).to_owned(),
                    vector,
                },
            ))
        })
        .collect()
}

/// Rows of the local store as a remote's batch.
fn remote_batch(model: &ModelIdentity, rows: &[BlockRow]) -> Result<RecordBatch, String> {
    let col = |f: &dyn Fn(&BlockRow) -> String| -> ArrayRef {
        Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
    };
    let values: Vec<f32> = rows.iter().flat_map(|r| r.vector.iter().copied()).collect();
    if values.len() != rows.len() * model.dims {
        return Err("a local row has a vector of the wrong length".into());
    }
    let vectors = crate::store::vector_array(values, model.dims).map_err(|e| e.to_string())?;
    let fingerprint = &model.fingerprint;
    RecordBatch::try_new(
        remote_schema(model.dims),
        vec![
            col(&|r| block_key(fingerprint, &r.oid, &r.language, r)),
            col(&|_| fingerprint.clone()),
            col(&|r| r.oid.clone()),
            col(&|r| r.language.clone()),
            col(&|r| r.path.clone()),
            col(&|r| r.kind.clone()),
            col(&|r| r.name.clone()),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.start_line),
            )),
            Arc::new(UInt32Array::from_iter_values(
                rows.iter().map(|r| r.end_line),
            )),
            col(&|r| r.content.clone()),
            Arc::new(vectors),
        ],
    )
    .map_err(|e| e.to_string())
}

/// The configured remotes, read again from the config file when it changes, and the model
/// identity rows must carry.
pub struct Remotes {
    model_dir: PathBuf,
    model_id: String,
    dims: usize,
    identity: tokio::sync::OnceCell<ModelIdentity>,
    loaded: Mutex<Loaded>,
}

#[derive(Default)]
struct Loaded {
    /// The config file's modification time and size when last read.
    stamp: Option<(Option<std::time::SystemTime>, u64)>,
    list: Vec<Arc<RemoteStore>>,
}

impl Remotes {
    pub fn new(model_dir: PathBuf, model_id: &str, dims: usize) -> Remotes {
        Remotes {
            model_dir,
            model_id: model_id.to_owned(),
            dims,
            identity: tokio::sync::OnceCell::new(),
            loaded: Mutex::default(),
        }
    }

    /// The remotes the config file names now. A file that does not parse keeps the last good
    /// list (the error is logged once per change).
    pub fn current(&self) -> Vec<Arc<RemoteStore>> {
        let path = hgd_protocol::config::Config::path();
        let stamp = path
            .as_ref()
            .and_then(|p| std::fs::metadata(p).ok())
            .map(|m| (m.modified().ok(), m.len()));
        let stamp = Some(stamp.unwrap_or((None, 0)));
        let mut loaded = self.loaded.lock().unwrap_or_else(|p| p.into_inner());
        if loaded.stamp != stamp {
            loaded.stamp = stamp;
            match hgd_protocol::config::Config::load() {
                Ok(config) => {
                    let old = std::mem::take(&mut loaded.list);
                    loaded.list = config
                        .remotes
                        .into_iter()
                        .map(|spec| {
                            old.iter()
                                .find(|r| r.spec == spec)
                                .cloned()
                                .unwrap_or_else(|| Arc::new(RemoteStore::new(spec)))
                        })
                        .collect();
                }
                Err(e) => tracing::warn!("remotes: keeping the last good list: {e}"),
            }
        }
        loaded.list.clone()
    }

    pub fn statuses(&self) -> Vec<RemoteStatus> {
        self.current().iter().map(|r| r.status()).collect()
    }

    /// The identity of the model this daemon embeds with (its files are read once).
    pub async fn identity(&self) -> Result<ModelIdentity, RemoteError> {
        let (dir, id, dims) = (self.model_dir.clone(), self.model_id.clone(), self.dims);
        // Kept once known; a failure (a model file being replaced) is tried again next time.
        let model_dir = self.model_dir.clone();
        self.identity
            .get_or_try_init(|| async move {
                tokio::task::spawn_blocking(move || ModelIdentity::of(&dir, &id, dims))
                    .await
                    .unwrap_or_else(|e| Err(RemoteError::Model(model_dir, e.to_string())))
            })
            .await
            .cloned()
    }

    /// What the remotes offer for `keys`, asked a few hundred at a time, each key from the first
    /// remote (in name order) that has it. Remotes that fail are skipped (and rest); so are all
    /// when the model cannot be identified: the job embeds.
    pub async fn offered(
        &self,
        keys: &[BlobKey],
    ) -> (
        HashMap<BlobKey, (Arc<RemoteStore>, Vec<OfferedBlock>)>,
        Option<ModelIdentity>,
    ) {
        let remotes = self.current();
        let mut out = HashMap::new();
        if remotes.is_empty() || keys.is_empty() {
            return (out, None);
        }
        let model = match self.identity().await {
            Ok(model) => model,
            Err(e) => {
                tracing::warn!("{e}: not using the remotes");
                return (out, None);
            }
        };
        for remote in remotes {
            if remote.resting() {
                continue;
            }
            let missing: Vec<&BlobKey> = keys.iter().filter(|k| !out.contains_key(*k)).collect();
            for chunk in missing.chunks(lookup_blobs()) {
                match remote.lookup(&model, chunk).await {
                    Ok(found) => {
                        for (key, blocks) in found {
                            out.insert(key, (remote.clone(), blocks));
                        }
                    }
                    Err(_) => break, // logged; the rest is embedded (or asked of the next remote)
                }
            }
        }
        (out, Some(model))
    }

    /// The remotes `hgd publish` writes to: the named one, else every one not read-only.
    pub fn writable(&self, name: Option<&str>) -> Result<Vec<Arc<RemoteStore>>, RemoteError> {
        let remotes = self.current();
        match name {
            Some(name) => {
                let remote = remotes
                    .into_iter()
                    .find(|r| r.spec.name == name)
                    .ok_or_else(|| RemoteError::Unknown(name.to_owned()))?;
                if remote.spec.read_only {
                    return Err(RemoteError::ReadOnly(name.to_owned()));
                }
                Ok(vec![remote])
            }
            None => {
                let writable: Vec<_> = remotes
                    .iter()
                    .filter(|r| !r.spec.read_only)
                    .cloned()
                    .collect();
                if writable.is_empty() {
                    return Err(match remotes.is_empty() {
                        true => RemoteError::NoneWritable,
                        false => RemoteError::ReadOnly(
                            remotes
                                .iter()
                                .map(|r| r.spec.name.as_str())
                                .collect::<Vec<_>>()
                                .join(", "),
                        ),
                    });
                }
                Ok(writable)
            }
        }
    }

    /// The remotes the daemon publishes each job's new blocks to (`publish = true`).
    pub fn publishing(&self) -> Vec<Arc<RemoteStore>> {
        self.current()
            .into_iter()
            .filter(|r| r.spec.publish && !r.spec.read_only)
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn block(start: u32, end: u32, content: &str) -> Block {
        Block {
            kind: "function".into(),
            name: "f".into(),
            start_line: start,
            end_line: end,
            content: content.into(),
        }
    }

    fn offer(model: &str, start: u32, end: u32, content: &str, vector: Vec<f32>) -> OfferedBlock {
        OfferedBlock {
            model: model.into(),
            path: "a.py".into(),
            kind: "function".into(),
            name: "f".into(),
            start_line: start,
            end_line: end,
            content: content.into(),
            vector,
        }
    }

    #[test]
    fn only_rows_matching_every_block_and_the_model_are_used() {
        let blocks = [block(1, 2, "def f():\n  pass"), block(4, 5, "x = 1\ny = 2")];
        let good = vec![
            offer("m", 4, 5, "x = 1\ny = 2", vec![0.5, 0.5]),
            offer("m", 1, 2, "def f():\n  pass", vec![1.0, 0.0]),
        ];
        assert_eq!(
            verified_vectors(&blocks, &good, "m", 2),
            Some(vec![vec![1.0, 0.0], vec![0.5, 0.5]])
        );
        // Another model's rows, other content, a missing block, a bad vector: embed instead.
        assert_eq!(verified_vectors(&blocks, &good, "other", 2), None);
        let mut edited = good.clone();
        edited[0].content = "x = 1\ny = 3".into();
        assert_eq!(verified_vectors(&blocks, &edited, "m", 2), None);
        assert_eq!(verified_vectors(&blocks, &good[..1], "m", 2), None);
        let mut broken = good.clone();
        broken[1].vector = vec![f32::NAN, 0.0];
        assert_eq!(verified_vectors(&blocks, &broken, "m", 2), None);
        assert_eq!(verified_vectors(&blocks, &good, "m", 3), None);
    }

    #[test]
    fn errors_say_what_to_fix_first() {
        let e = RemoteError::lance(
            "team",
            "Client error with status 403 Forbidden: InvalidAccessKeyId",
        );
        assert!(e
            .to_string()
            .starts_with("remote team: access denied: check the AWS credentials"));
        let e = RemoteError::lance("team", "error sending request for url: Connection refused");
        assert!(e.to_string().contains("cannot reach the server"));
    }
}
