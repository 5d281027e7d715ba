//! The LanceDB store: one blocks table per model (so vectors of different models never mix) and a
//! table of repositories with the commit each is indexed at.
//!
//! A file's blocks are always written in one `add`, so a file is either wholly in the table or not
//! at all; a repository's indexed-commit pointer is written only after all its blocks are.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use arrow_array::{
    Array, ArrayRef, FixedSizeListArray, Float32Array, RecordBatch, StringArray, UInt32Array,
};
use arrow_schema::{DataType, Field, Schema, SchemaRef};
use futures::{FutureExt, TryStreamExt};
use lancedb::query::{ExecutableQuery, QueryBase, Select};
use lancedb::table::OptimizeAction;
use lancedb::Table;
use tokio::sync::Mutex;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("LanceDB: {0}")]
    Lance(#[from] lancedb::Error),
    #[error("arrow: {0}")]
    Arrow(#[from] arrow_schema::ArrowError),
    #[error("bad query: {0}")]
    Query(String),
    #[error("unexpected column {0} in a stored table")]
    Column(&'static str),
    #[error("{0} panicked in LanceDB: the table is damaged")]
    Panicked(String),
}

impl StoreError {
    /// Whether this failure may come from a damaged table (and so calls for a check), rather
    /// than from the system: a full disk or quota, a home without write access, too many open
    /// files, no memory, an I/O error of the device. Those damage nothing, and a table is never
    /// set aside for them.
    pub fn may_be_damage(&self) -> bool {
        let text = self.to_string();
        let system = [
            "No space left",
            "Read-only file system",
            "Permission denied",
            "Too many open files",
            "Cannot allocate memory",
            "Disk quota exceeded",
            "Input/output error",
        ];
        let codes = [5, 12, 13, 24, 28, 30, 122];
        !(system.iter().any(|cause| text.contains(cause))
            || codes.iter().any(|code| {
                text.contains(&format!("os error {code})"))
                    || text.ends_with(&format!("os error {code}"))
            }))
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// One stored block with its vector.
#[derive(Debug, Clone)]
pub struct BlockRow {
    pub repo: String,
    pub path: String,
    pub oid: String,
    pub language: String,
    pub kind: String,
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
    /// What was embedded: path, kind, name and content.
    pub text: String,
    pub vector: Vec<f32>,
}

impl BlockRow {
    /// Where and what the block is within its blob: one stored copy per cut is enough.
    fn cut(&self) -> (u32, u32, String, String) {
        (
            self.start_line,
            self.end_line,
            self.kind.clone(),
            self.name.clone(),
        )
    }

    pub fn key(&self) -> BlobKey {
        BlobKey {
            oid: self.oid.clone(),
            language: self.language.clone(),
        }
    }
}

/// A search hit as read back from the table.
#[derive(Debug, Clone)]
pub struct StoredHit {
    pub path: String,
    pub language: String,
    pub kind: String,
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
}

/// What a blob's stored blocks depend on: its bytes and the language its path selects (which
/// decides how it is cut into blocks). Blocks are re-used only under the same key, so renaming
/// `script` to `script.py` parses the file again as Python.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct BlobKey {
    pub oid: String,
    pub language: String,
}

impl BlobKey {
    /// The key of blob `oid` at `path`.
    pub fn at(path: &str, oid: &str) -> BlobKey {
        BlobKey {
            oid: oid.to_owned(),
            language: crate::chunk::Language::from_path(path).name().to_owned(),
        }
    }

    fn filter(&self) -> String {
        format!(
            "oid = {} AND language = {}",
            quote(&self.oid),
            quote(&self.language)
        )
    }
}

/// The persisted state of one repository.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RepoRecord {
    pub root: String,
    pub scopes: Vec<String>,
    pub indexed_commit: Option<String>,
}

/// The searchable tables: blocks of HEAD, and blocks of uncommitted work-tree files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Layer {
    Head,
    /// Modified and untracked files of the work tree, searched over HEAD and marked dirty.
    Overlay,
}

pub struct Store {
    db: lancedb::Connection,
    dir: std::path::PathBuf,
    /// The repositories table was damaged at open and made again empty: the caller tracks
    /// again what it held. (Blocks tables made again need nothing more: their pointers are
    /// cleared in the store before.)
    repositories_lost: bool,
    /// Swapped whole when a damaged table is made again (see [`Store::remake`]).
    tables: std::sync::RwLock<Tables>,
    dims: usize,
    /// Serialises writers; readers never wait for it.
    write_lock: Mutex<()>,
    model_id: String,
}

/// A table of the store, as [`Store::damaged`] and [`Store::remake`] name it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Layered {
    Head,
    Overlay,
    Retired,
    Repos,
}

/// What a store's tables were written by, in `format.json` beside them.
#[derive(Debug, serde::Serialize, serde::Deserialize)]
struct StoreFormat {
    chunker: u32,
}

impl StoreFormat {
    const FILE: &'static str = "format.json";

    fn current() -> StoreFormat {
        StoreFormat {
            chunker: crate::chunk::CHUNKER_VERSION,
        }
    }

    /// The recorded format, `None` when the file does not exist. An unreadable file is an error:
    /// a passing fault must never look like an old store (which would be cut again, for hours).
    fn read(dir: &std::path::Path) -> Result<Option<StoreFormat>> {
        let path = dir.join(Self::FILE);
        match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).map(Some).map_err(|e| {
                StoreError::Query(format!("{} is not a store format: {e}", path.display()))
            }),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Query(format!(
                "cannot read {}: {e}",
                path.display()
            ))),
        }
    }

    fn write(&self, dir: &std::path::Path) -> Result<()> {
        let path = dir.join(Self::FILE);
        let temp = path.with_extension("json.tmp");
        let text = serde_json::to_vec_pretty(self).unwrap_or_default();
        std::fs::write(&temp, text)
            .and_then(|_| std::fs::rename(&temp, &path))
            .map_err(|e| StoreError::Query(format!("cannot write {}: {e}", path.display())))
    }
}

/// Whether a stored table has the columns (names and types) this version reads and writes.
fn schema_matches(found: &Schema, wanted: &Schema) -> bool {
    found.fields().len() == wanted.fields().len()
        && wanted.fields().iter().all(|w| {
            found
                .field_with_name(w.name())
                .is_ok_and(|f| f.data_type() == w.data_type())
        })
}

/// Opens table `name` (making it if it does not exist). A table whose manifest cannot be read
/// twice (damage: set aside in `damaged/`), or whose columns are not this version's (written by
/// another version of hgd: removed), is made again empty (`true`), after clearing the
/// indexed-commit pointers in `repos` (when given: the table and the model whose pointers to
/// clear), and the caller rebuilds its rows from git. Never read as it is. A failure of the
/// system (permissions, resources) is returned instead: nothing is removed.
async fn open_or_remake(
    db: &lancedb::Connection,
    dir: &std::path::Path,
    names: &[String],
    name: String,
    schema: SchemaRef,
    repos: Option<(&Table, Option<&str>)>,
) -> Result<(Table, bool)> {
    if !names.contains(&name) {
        let table = db.create_empty_table(&name, schema).execute().await?;
        return Ok((table, false));
    }
    // Twice: a read that fails once may have met a passing fault.
    let opened = match open_and_count(db, &name).await {
        Err(e) if e.may_be_damage() => open_and_count(db, &name).await,
        opened => opened,
    };
    let damaged = match opened {
        Ok(table) => match table.schema().await.map_err(StoreError::from) {
            Ok(found) if schema_matches(&found, &schema) => return Ok((table, false)),
            Ok(_) => {
                tracing::warn!(
                    "the {name} table was written by another version of hgd (other columns): making it again"
                );
                false
            }
            Err(e) if e.may_be_damage() => {
                tracing::error!("the {name} table is damaged ({e}): making it again");
                true
            }
            Err(e) => return Err(e),
        },
        Err(e) if e.may_be_damage() => {
            tracing::error!("the {name} table is damaged ({e}): making it again");
            true
        }
        Err(e) => return Err(e),
    };
    if let Some((repos, model)) = repos {
        clear_pointers(repos, model).await?;
    }
    if damaged {
        set_aside(dir, &name);
    } else {
        remove_table_dir(dir, &name)?;
    }
    let table = db.create_empty_table(&name, schema).execute().await?;
    Ok((table, true))
}

/// Removes a table's folder (gone already is fine; anything else is an error, so that an old
/// table is never kept and then stamped current).
fn remove_table_dir(dir: &std::path::Path, name: &str) -> Result<()> {
    match std::fs::remove_dir_all(dir.join(format!("{name}.lance"))) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(StoreError::Query(format!(
            "cannot remove the {name} table: {e}"
        ))),
        _ => Ok(()),
    }
}

/// Clears the indexed commit of every repository (of `model`, or of all models): the next job of
/// each compares all of HEAD with the store, which rebuilds whatever a table made again lost.
async fn clear_pointers(repos: &Table, model: Option<&str>) -> Result<()> {
    let mut update = repos.update().column("indexed_commit", "NULL");
    if let Some(model) = model {
        update = update.only_if(format!("model = {}", quote(model)));
    }
    update.execute().await?;
    Ok(())
}

/// Opens a table and reads its row count, which reads its manifest. A manifest of garbage can
/// make Lance panic (an arithmetic overflow on a bogus offset): that is damage too.
async fn open_and_count(db: &lancedb::Connection, name: &str) -> Result<Table> {
    let opened = async {
        let table = db.open_table(name).execute().await?;
        table.count_rows(None).await?;
        Ok(table)
    };
    std::panic::AssertUnwindSafe(opened)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Panicked(format!("opening {name}"))))
}

/// Reads every column of every row, keeping none of it (a panic in Lance counts as a failure).
async fn read_whole(table: &Table) -> Result<()> {
    let read = async {
        table.count_rows(None).await?;
        let mut batches = table.query().execute().await?;
        while batches.try_next().await?.is_some() {}
        Ok(())
    };
    std::panic::AssertUnwindSafe(read)
        .catch_unwind()
        .await
        .unwrap_or_else(|_| Err(StoreError::Panicked(format!("reading {}", table.name()))))
}

/// Moves a damaged table's folder to `damaged/` in the store, for a post-mortem; removes it if
/// it cannot be moved.
fn set_aside(dir: &std::path::Path, name: &str) {
    let from = dir.join(format!("{name}.lance"));
    let aside = dir.join("damaged");
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let to = aside.join(format!("{name}-{stamp}.lance"));
    if std::fs::create_dir_all(&aside)
        .and_then(|_| std::fs::rename(&from, &to))
        .is_err()
    {
        let _ = std::fs::remove_dir_all(&from);
    }
}

#[derive(Clone)]
struct Tables {
    blocks: Table,
    overlay: Table,
    /// Blocks of blobs no longer at any tracked path, kept so that switching back to a branch (or
    /// undoing a delete) copies them instead of embedding again. Never searched.
    retired: Table,
    repos: Table,
}

/// SQL string literal.
pub fn quote(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

/// The distinct object ids of `keys` as an SQL list (for `oid IN (…)`).
pub fn oid_list<'k>(keys: impl IntoIterator<Item = &'k BlobKey>) -> String {
    let oids: HashSet<&str> = keys.into_iter().map(|k| k.oid.as_str()).collect();
    oids.into_iter().map(quote).collect::<Vec<_>>().join(",")
}

/// The `vector` column: `dims` 32-bit floats per row.
pub fn vector_field(dims: usize) -> Field {
    Field::new(
        "vector",
        DataType::FixedSizeList(
            Arc::new(Field::new("item", DataType::Float32, true)),
            dims as i32,
        ),
        false,
    )
}

/// A `vector` column of `dims` floats per row from all rows' values in sequence.
pub fn vector_array(
    values: Vec<f32>,
    dims: usize,
) -> std::result::Result<FixedSizeListArray, arrow_schema::ArrowError> {
    FixedSizeListArray::try_new(
        Arc::new(Field::new("item", DataType::Float32, true)),
        dims as i32,
        Arc::new(Float32Array::from(values)),
        None,
    )
}

fn blocks_schema(dims: usize) -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("repo", DataType::Utf8, false),
        Field::new("path", DataType::Utf8, false),
        Field::new("oid", DataType::Utf8, false),
        Field::new("language", DataType::Utf8, false),
        Field::new("kind", DataType::Utf8, false),
        Field::new("name", DataType::Utf8, false),
        Field::new("start_line", DataType::UInt32, false),
        Field::new("end_line", DataType::UInt32, false),
        Field::new("content", DataType::Utf8, false),
        Field::new("text", DataType::Utf8, false),
        vector_field(dims),
    ]))
}

fn repos_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("root", DataType::Utf8, false),
        Field::new("model", DataType::Utf8, false),
        Field::new("scopes", DataType::Utf8, false),
        Field::new("indexed_commit", DataType::Utf8, true),
    ]))
}

/// Table names allow `[A-Za-z0-9_-.]`; model names may hold anything.
pub(crate) fn table_name(model_id: &str) -> String {
    let safe: String = model_id
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .collect();
    format!("blocks_{safe}")
}

/// LanceDB's cache of opened indices (hgd's tables have none today; room for a vector index).
const STORE_INDEX_CACHE_BYTES: usize = 4 << 20;
/// LanceDB's cache of file and fragment metadata.
const STORE_METADATA_CACHE_BYTES: usize = 8 << 20;

impl Store {
    pub async fn open(dir: &std::path::Path, model_id: &str, dims: usize) -> Result<Store> {
        // LanceDB's defaults (6 GB of index cache, 1 GB of metadata cache) suit a database
        // server. Searches read hgd's in-memory indexes, so the store needs little: file and
        // fragment metadata for scans and writes.
        let session = lancedb::Session::new(
            STORE_INDEX_CACHE_BYTES,
            STORE_METADATA_CACHE_BYTES,
            Arc::new(lancedb::ObjectStoreRegistry::default()),
        );
        let db = lancedb::connect(&dir.to_string_lossy())
            .session(Arc::new(session))
            .execute()
            .await?;
        let names = db.table_names().execute().await?;
        // The repositories table first: before any blocks table is made again, every pointer is
        // cleared, so that a crash half way leaves repositories to index, never an empty index
        // marked current.
        let (repos, repos_remade) =
            open_or_remake(&db, dir, &names, "repos".to_owned(), repos_schema(), None).await?;
        let has_blocks = names.iter().any(|n| n.contains("blocks_"));
        // A store without the file but with blocks was cut before versions were recorded.
        let recorded = match StoreFormat::read(dir)? {
            Some(format) => format.chunker,
            None if has_blocks => 1,
            None => crate::chunk::CHUNKER_VERSION,
        };
        if !has_blocks {
            // Recorded before the first block exists, so a store is never without it.
            StoreFormat::current().write(dir)?;
        }
        let blocks = table_name(model_id);
        let (retired, overlay) = (format!("retired_{blocks}"), format!("overlay_{blocks}"));
        let recut = recorded != crate::chunk::CHUNKER_VERSION;
        if recut {
            tracing::warn!(
                "the stored blocks were cut by chunker version {recorded}, this hgd cuts with version {}: cutting them again from git",
                crate::chunk::CHUNKER_VERSION
            );
            // Every model's blocks: the cuts do not depend on the model.
            clear_pointers(&repos, None).await?;
            for name in names.iter().filter(|n| n.contains("blocks_")) {
                remove_table_dir(dir, name)?;
            }
            StoreFormat::current().write(dir)?;
        }
        let names: Vec<String> = db.table_names().execute().await?;
        if !names.contains(&blocks) && !recut {
            // No blocks table (deleted by hand, or not made again after a repair): pointers that
            // say indexed would point at nothing.
            clear_pointers(&repos, Some(model_id)).await?;
        }
        let mut tables = Vec::new();
        for (name, clears) in [(blocks, true), (retired, false), (overlay, false)] {
            // Only HEAD's blocks are what the pointers vouch for; the overlay is rebuilt by the
            // next search and the retired blocks are a cache.
            let repos_to_clear = clears.then_some((&repos, Some(model_id)));
            let (table, _) =
                open_or_remake(&db, dir, &names, name, blocks_schema(dims), repos_to_clear).await?;
            tables.push(table);
        }
        let [blocks, retired, overlay]: [Table; 3] = tables
            .try_into()
            .map_err(|_| StoreError::Query("three tables".into()))?;
        let store = Store {
            db: db.clone(),
            dir: dir.to_path_buf(),
            repositories_lost: repos_remade,
            tables: std::sync::RwLock::new(Tables {
                blocks,
                overlay,
                retired,
                repos,
            }),
            dims,
            write_lock: Mutex::new(()),
            model_id: model_id.to_owned(),
        };
        // Only faster lookups: a store without the index works, so a failure does not stop it.
        if let Err(e) = store.ensure_scalar_indexes().await {
            tracing::warn!("could not index blob ids (lookups scan the table): {e}");
        }
        Ok(store)
    }

    /// Makes the B-tree index on `oid` that every blob lookup filters by, on tables that have
    /// rows and lack it: without it each lookup of a blob (a rename, a file shared between
    /// repositories) scans the whole table, and a job that copies many files costs the number of
    /// files times the store's size. Made once; afterwards `optimize` folds new rows into it
    /// (LanceDB scans the rows not yet indexed until then). Not on `repo`: reading a whole
    /// repository through that index held ~20-40 MB more resident than a scan (bench/memory.sh).
    async fn ensure_scalar_indexes(&self) -> Result<()> {
        for table in [&self.blocks(), &self.overlay(), &self.retired()] {
            if table.count_rows(None).await? == 0 {
                continue;
            }
            let indexed: Vec<String> = table
                .list_indices()
                .await?
                .into_iter()
                .flat_map(|i| i.columns)
                .collect();
            for column in SCALAR_INDEXED {
                if indexed.iter().any(|c| c == column) {
                    continue;
                }
                let started = std::time::Instant::now();
                table
                    .create_index(&[column], lancedb::index::Index::BTree(Default::default()))
                    .execute()
                    .await?;
                tracing::info!(
                    "made the {column} index of {} in {:.1?}",
                    table.name(),
                    started.elapsed()
                );
                // Building it read the whole column: give that memory back.
                crate::memory::return_free_memory();
            }
        }
        Ok(())
    }

    /// Whether opening found the repositories table damaged and made it again empty.
    pub fn repositories_lost(&self) -> bool {
        self.repositories_lost
    }

    /// The tables that cannot be read whole (a truncated or corrupted data file), each read
    /// twice, since a read that fails once may have met a passing fault; errors of the system
    /// are not damage. Changes nothing.
    pub async fn damaged(&self) -> Vec<Layered> {
        let tables = self.tables();
        let mut damaged = Vec::new();
        for (which, table) in [
            (Layered::Repos, tables.repos),
            (Layered::Head, tables.blocks),
            (Layered::Overlay, tables.overlay),
            (Layered::Retired, tables.retired),
        ] {
            let Err(first) = read_whole(&table).await else {
                continue;
            };
            match read_whole(&table).await {
                Ok(()) => {}
                Err(e) if e.may_be_damage() => {
                    tracing::error!("the {} table is damaged ({e})", table.name());
                    damaged.push(which);
                }
                Err(e) => tracing::warn!("could not check {}: {e} (first: {first})", table.name()),
            }
        }
        damaged
    }

    /// Makes the `damaged` tables again, empty, setting the old ones aside; returns those set
    /// aside (their rows are gone, even if making one again failed). When HEAD's blocks are among
    /// them, this model's indexed commits are cleared in the store first, so that a crash half
    /// way leaves repositories to index, never an empty index marked current. Writers wait.
    pub async fn remake(&self, damaged: &[Layered]) -> Vec<Layered> {
        let _guard = self.write_lock.lock().await;
        if damaged.contains(&Layered::Head) && !damaged.contains(&Layered::Repos) {
            if let Err(e) = clear_pointers(&self.repos_table(), Some(&self.model_id)).await {
                tracing::error!("cannot clear the indexed commits, so nothing is made again: {e}");
                return Vec::new();
            }
        }
        let tables = self.tables();
        let mut remade = Vec::new();
        for &which in damaged {
            let table = match which {
                Layered::Head => tables.blocks.clone(),
                Layered::Overlay => tables.overlay.clone(),
                Layered::Retired => tables.retired.clone(),
                Layered::Repos => tables.repos.clone(),
            };
            let name = table.name().to_owned();
            drop(table);
            set_aside(&self.dir, &name);
            remade.push(which);
            let schema = match which {
                Layered::Repos => repos_schema(),
                _ => blocks_schema(self.dims),
            };
            let fresh = match self.db.open_table(&name).execute().await {
                // Still there (setting it aside failed): overwrite it.
                Ok(_) => {
                    self.db
                        .create_empty_table(&name, schema)
                        .mode(lancedb::database::CreateTableMode::Overwrite)
                        .execute()
                        .await
                }
                Err(_) => self.db.create_empty_table(&name, schema).execute().await,
            };
            match fresh {
                Ok(fresh) => {
                    tracing::warn!("made the {name} table again");
                    let mut tables = self.tables.write().unwrap_or_else(|p| p.into_inner());
                    match which {
                        Layered::Head => tables.blocks = fresh,
                        Layered::Overlay => tables.overlay = fresh,
                        Layered::Retired => tables.retired = fresh,
                        Layered::Repos => tables.repos = fresh,
                    }
                }
                // The next open makes it (and, for HEAD's, clears the pointers again).
                Err(e) => tracing::error!("cannot make the {name} table again: {e}"),
            }
        }
        remade
    }

    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Dimensions of the stored vectors.
    pub fn dims(&self) -> usize {
        self.dims
    }

    fn tables(&self) -> Tables {
        self.tables
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn blocks(&self) -> Table {
        self.tables().blocks
    }

    fn overlay(&self) -> Table {
        self.tables().overlay
    }

    fn retired(&self) -> Table {
        self.tables().retired
    }

    fn repos_table(&self) -> Table {
        self.tables().repos
    }

    fn table(&self, layer: Layer) -> Table {
        match layer {
            Layer::Head => self.blocks(),
            Layer::Overlay => self.overlay(),
        }
    }

    // ---- repositories -------------------------------------------------------------------------

    pub async fn repos(&self) -> Result<Vec<RepoRecord>> {
        let batches: Vec<RecordBatch> = self
            .repos_table()
            .query()
            .only_if(format!("model = {}", quote(&self.model_id)))
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut out = Vec::new();
        for batch in &batches {
            let root = strings(batch, "root")?;
            let scopes = strings(batch, "scopes")?;
            let commit = strings(batch, "indexed_commit")?;
            for i in 0..batch.num_rows() {
                out.push(RepoRecord {
                    root: root.value(i).to_owned(),
                    scopes: serde_json::from_str(scopes.value(i)).unwrap_or_default(),
                    indexed_commit: (!commit.is_null(i)).then(|| commit.value(i).to_owned()),
                });
            }
        }
        Ok(out)
    }

    /// Writes a repository's record (scopes and indexed commit) in one commit.
    pub async fn put_repo(&self, record: &RepoRecord) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        let batch = RecordBatch::try_new(
            repos_schema(),
            vec![
                Arc::new(StringArray::from(vec![record.root.as_str()])),
                Arc::new(StringArray::from(vec![self.model_id.as_str()])),
                Arc::new(StringArray::from(vec![serde_json::to_string(
                    &record.scopes,
                )
                .unwrap_or_else(|_| "[]".into())])),
                Arc::new(StringArray::from(vec![record.indexed_commit.as_deref()])),
            ],
        )?;
        let mut merge = self.repos_table().merge_insert(&["root", "model"]);
        merge
            .when_matched_update_all(None)
            .when_not_matched_insert_all();
        let reader = arrow_array::RecordBatchIterator::new(vec![Ok(batch)], repos_schema());
        merge.execute(Box::new(reader)).await?;
        Ok(())
    }

    // ---- blocks -------------------------------------------------------------------------------

    /// `path -> blob oid` of everything stored for `repo`.
    pub async fn stored_files(&self, repo: &str) -> Result<HashMap<String, String>> {
        self.stored_files_where(format!("repo = {}", quote(repo)))
            .await
    }

    /// `path -> blob oid` stored for `paths` of `repo`.
    pub async fn stored_files_at(
        &self,
        repo: &str,
        paths: &[String],
    ) -> Result<HashMap<String, String>> {
        let mut out = HashMap::new();
        for chunk in paths.chunks(500) {
            let list = chunk.iter().map(|p| quote(p)).collect::<Vec<_>>().join(",");
            out.extend(
                self.stored_files_where(format!("repo = {} AND path IN ({list})", quote(repo)))
                    .await?,
            );
        }
        Ok(out)
    }

    async fn stored_files_where(&self, filter: String) -> Result<HashMap<String, String>> {
        let batches: Vec<RecordBatch> = self
            .blocks()
            .query()
            .only_if(filter)
            .select(Select::columns(&["path", "oid"]))
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut out = HashMap::new();
        for batch in &batches {
            let paths = strings(batch, "path")?;
            let oids = strings(batch, "oid")?;
            for i in 0..batch.num_rows() {
                out.insert(paths.value(i).to_owned(), oids.value(i).to_owned());
            }
        }
        Ok(out)
    }

    /// Those of `keys` that have blocks anywhere in the store (any repository, any path, or
    /// retired).
    pub async fn known_among(&self, keys: &[BlobKey]) -> Result<HashSet<BlobKey>> {
        let wanted: HashSet<&BlobKey> = keys.iter().collect();
        let mut out = HashSet::new();
        for chunk in keys.chunks(500) {
            let filter = format!("oid IN ({})", oid_list(chunk));
            for table in [&self.blocks(), &self.overlay(), &self.retired()] {
                out.extend(
                    keys_in(table, Some(filter.clone()))
                        .await?
                        .into_iter()
                        .filter(|k| wanted.contains(k)),
                );
            }
        }
        Ok(out)
    }

    /// The stored blocks of one blob as rows of `repo`'s `path`: a rename, a copy, a branch switched
    /// back to, or an edit seen before, at the cost of a query instead of embedding.
    pub async fn copies_of_blob(
        &self,
        key: &BlobKey,
        repo: &str,
        path: &str,
    ) -> Result<Vec<BlockRow>> {
        Ok(self
            .blocks_of_blob(key)
            .await?
            .into_iter()
            .map(|mut row| {
                row.text = row.text.replacen(&row.path, path, 1);
                row.repo = repo.to_owned();
                row.path = path.to_owned();
                row
            })
            .collect())
    }

    /// The stored blocks of one blob, to re-use under another path without embedding again.
    pub async fn blocks_of_blob(&self, key: &BlobKey) -> Result<Vec<BlockRow>> {
        let filter = key.filter();
        let mut batches: Vec<RecordBatch> = filtered(&self.blocks(), &filter).await?;
        for fallback in [&self.overlay(), &self.retired()] {
            if batches.iter().any(|b| b.num_rows() > 0) {
                break;
            }
            batches = filtered(fallback, &filter).await?;
        }
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for batch in &batches {
            for row in rows_of(batch)? {
                // The same blob may be stored under several paths; one copy of each block is enough.
                if seen.insert(row.cut()) {
                    rows.push(row);
                }
            }
        }
        Ok(rows)
    }

    /// HEAD's stored blocks of `keys` (one copy of each block of each blob, with vectors):
    /// what a publish sends.
    pub async fn head_blocks_of(&self, keys: &[BlobKey]) -> Result<Vec<BlockRow>> {
        let wanted: HashSet<&BlobKey> = keys.iter().collect();
        let mut rows = Vec::new();
        let mut seen = HashSet::new();
        for chunk in keys.chunks(500) {
            let filter = format!("oid IN ({})", oid_list(chunk));
            for batch in filtered(&self.blocks(), &filter).await? {
                for row in rows_of(&batch)? {
                    let key = row.key();
                    if wanted.contains(&key) && seen.insert((row.cut(), key)) {
                        rows.push(row);
                    }
                }
            }
        }
        Ok(rows)
    }

    /// Appends rows in one commit.
    pub async fn add(&self, rows: &[BlockRow]) -> Result<()> {
        self.add_to(Layer::Head, rows).await
    }

    /// Appends rows to one layer in one commit.
    pub async fn add_to(&self, layer: Layer, rows: &[BlockRow]) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let batch = self.batch(rows)?;
        let _guard = self.write_lock.lock().await;
        self.table(layer).add(batch).execute().await?;
        Ok(())
    }

    /// Every row of `repo` in one layer (what the in-memory search index is built from), without
    /// the embedded text (rows carry an empty `text`); without `vectors`, the vector column is
    /// not read either and rows carry empty vectors (searching by words).
    pub async fn repo_rows(
        &self,
        layer: Layer,
        repo: &str,
        vectors: bool,
    ) -> Result<Vec<BlockRow>> {
        self.rows_where(layer, format!("repo = {}", quote(repo)), vectors)
            .await
    }

    /// The rows of `repo` at `paths` (with vectors), for the files a job just changed.
    pub async fn repo_rows_at(
        &self,
        layer: Layer,
        repo: &str,
        paths: &[String],
    ) -> Result<Vec<BlockRow>> {
        let mut rows = Vec::new();
        for chunk in paths.chunks(500) {
            let list = chunk.iter().map(|p| quote(p)).collect::<Vec<_>>().join(",");
            let filter = format!("repo = {} AND path IN ({list})", quote(repo));
            rows.extend(self.rows_where(layer, filter, true).await?);
        }
        Ok(rows)
    }

    async fn rows_where(
        &self,
        layer: Layer,
        filter: String,
        vectors: bool,
    ) -> Result<Vec<BlockRow>> {
        // Searches never read the embedded text (path and content again): leave it on disk.
        let mut columns = vec![
            "repo",
            "path",
            "oid",
            "language",
            "kind",
            "name",
            "start_line",
            "end_line",
            "content",
        ];
        if vectors {
            columns.push("vector");
        }
        let query = self
            .table(layer)
            .query()
            .only_if(filter)
            .select(Select::columns(&columns));
        let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
        let mut rows = Vec::new();
        for batch in &batches {
            rows.extend(rows_of(batch)?);
        }
        Ok(rows)
    }

    /// `path -> blob oid` of the overlay rows of `repo`.
    pub async fn overlay_files(&self, repo: &str) -> Result<HashMap<String, String>> {
        let batches: Vec<RecordBatch> = self
            .overlay()
            .query()
            .only_if(format!("repo = {}", quote(repo)))
            .select(Select::columns(&["path", "oid"]))
            .execute()
            .await?
            .try_collect()
            .await?;
        let mut out = HashMap::new();
        for batch in &batches {
            let (paths, oids) = (strings(batch, "path")?, strings(batch, "oid")?);
            for i in 0..batch.num_rows() {
                out.insert(paths.value(i).to_owned(), oids.value(i).to_owned());
            }
        }
        Ok(out)
    }

    /// Drops the overlay rows of `paths` in `repo` (their files are clean again or changed).
    pub async fn delete_overlay(&self, repo: &str, paths: &[String]) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        for chunk in paths.chunks(500) {
            let list = chunk.iter().map(|p| quote(p)).collect::<Vec<_>>().join(",");
            self.overlay()
                .delete(format!("repo = {} AND path IN ({list})", quote(repo)).as_str())
                .await?;
        }
        Ok(())
    }
}

impl Store {
    /// Removes every block of `paths` in `repo`, keeping a copy of blobs the store would otherwise
    /// lose in the retired table.
    pub async fn delete_paths(&self, repo: &str, paths: &[String]) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        for chunk in paths.chunks(500) {
            let list = chunk.iter().map(|p| quote(p)).collect::<Vec<_>>().join(",");
            let filter = format!("repo = {} AND path IN ({list})", quote(repo));
            let batches: Vec<RecordBatch> = filtered(&self.blocks(), &filter).await?;
            let mut rows = Vec::new();
            for batch in &batches {
                rows.extend(rows_of(batch)?);
            }
            let oids: HashSet<&str> = rows.iter().map(|r| r.oid.as_str()).collect();
            if !oids.is_empty() {
                let list = oids.iter().map(|o| quote(o)).collect::<Vec<_>>().join(",");
                let already = keys_in(&self.retired(), Some(format!("oid IN ({list})"))).await?;
                let mut seen = HashSet::new();
                let keep: Vec<BlockRow> = rows
                    .iter()
                    .filter(|r| !already.contains(&r.key()))
                    .filter(|r| seen.insert((r.key(), r.start_line, r.end_line, r.kind.clone())))
                    .cloned()
                    .collect();
                if !keep.is_empty() {
                    self.retired().add(self.batch(&keep)?).execute().await?;
                }
            }
            self.blocks().delete(filter.as_str()).await?;
        }
        Ok(())
    }

    /// Deletes everything stored for `repo` (its blocks, its uncommitted files' blocks and its
    /// record); returns how many blocks it had. Space is reclaimed by the next [`Store::optimize`].
    pub async fn forget_repo(&self, repo: &str) -> Result<u64> {
        let _guard = self.write_lock.lock().await;
        let filter = format!("repo = {}", quote(repo));
        let blocks = self.blocks().count_rows(Some(filter.clone())).await? as u64;
        // The record (and its indexed-commit pointer) first: stopped half way, what is left is
        // untracked rows, never a pointer whose blocks are gone.
        self.repos_table()
            .delete(&format!(
                "root = {} AND model = {}",
                quote(repo),
                quote(&self.model_id)
            ))
            .await?;
        self.blocks().delete(&filter).await?;
        self.overlay().delete(&filter).await?;
        Ok(blocks)
    }

    pub async fn count_blocks(&self, repo: Option<&str>) -> Result<u64> {
        let filter = repo.map(|r| format!("repo = {}", quote(r)));
        Ok(self.blocks().count_rows(filter).await? as u64)
    }

    /// Compacts small fragments (and updates any index an older version created), prunes old versions and
    /// bounds the retired table, so the store does not grow without bound.
    pub async fn optimize(&self) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        // A table that was empty at start has its first rows now.
        if let Err(e) = self.ensure_scalar_indexes().await {
            tracing::warn!("could not index blob ids (lookups scan the table): {e}");
        }
        // Crude but bounded: past the cap, forget retired blobs wholesale (they only save embedding).
        if self.retired().count_rows(None).await? > RETIRED_MAX_ROWS {
            self.retired().delete("true").await?;
        }
        // Every commit makes a version; only the daemon (which holds the home lock) writes, so
        // versions older than a few minutes can go without waiting the default week.
        compact_and_prune(
            &[
                &self.blocks(),
                &self.overlay(),
                &self.retired(),
                &self.repos_table(),
            ],
            lancedb::table::Duration::try_minutes(5),
            true,
        )
        .await
    }

    /// Gives the space of deleted rows back at once (`hgd forget`): compacts the tables and
    /// removes every older version's files. Files no version references yet (another job's
    /// write in progress) are kept.
    pub async fn reclaim(&self) -> Result<()> {
        let _guard = self.write_lock.lock().await;
        compact_and_prune(
            &[&self.blocks(), &self.overlay(), &self.repos_table()],
            lancedb::table::Duration::try_seconds(0),
            false,
        )
        .await
    }

    /// Bytes the database occupies on disk.
    pub fn disk_bytes(dir: &std::path::Path) -> u64 {
        fn walk(dir: &std::path::Path) -> u64 {
            std::fs::read_dir(dir)
                .map(|entries| {
                    entries
                        .flatten()
                        .map(|e| match e.file_type() {
                            Ok(t) if t.is_dir() => walk(&e.path()),
                            _ => e.metadata().map_or(0, |m| m.len()),
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        walk(dir)
    }

    fn batch(&self, rows: &[BlockRow]) -> Result<RecordBatch> {
        let col = |f: fn(&BlockRow) -> &str| -> ArrayRef {
            Arc::new(StringArray::from_iter_values(rows.iter().map(f)))
        };
        let values: Vec<f32> = rows
            .iter()
            .flat_map(|r| {
                debug_assert_eq!(r.vector.len(), self.dims);
                r.vector.iter().copied()
            })
            .collect();
        let vectors = vector_array(values, self.dims)?;
        Ok(RecordBatch::try_new(
            blocks_schema(self.dims),
            vec![
                col(|r| &r.repo),
                col(|r| &r.path),
                col(|r| &r.oid),
                col(|r| &r.language),
                col(|r| &r.kind),
                col(|r| &r.name),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|r| r.start_line),
                )),
                Arc::new(UInt32Array::from_iter_values(
                    rows.iter().map(|r| r.end_line),
                )),
                col(|r| &r.content),
                col(|r| &r.text),
                Arc::new(vectors),
            ],
        )?)
    }
}

/// Every row of `table` matching `filter`, all columns.
async fn filtered(table: &Table, filter: impl AsRef<str>) -> Result<Vec<RecordBatch>> {
    Ok(table
        .query()
        .only_if(filter)
        .execute()
        .await?
        .try_collect()
        .await?)
}

/// Columns with a B-tree index in every blocks table (see `Store::ensure_scalar_indexes`).
const SCALAR_INDEXED: [&str; 1] = ["oid"];

/// Retired blocks kept at most (about 300 MB with 384-dim vectors).
const RETIRED_MAX_ROWS: usize = 200_000;

/// The blob keys of the rows of `table` matching `filter`.
pub(crate) async fn keys_in(table: &Table, filter: Option<String>) -> Result<HashSet<BlobKey>> {
    let mut query = table.query().select(Select::columns(&["oid", "language"]));
    if let Some(filter) = filter {
        query = query.only_if(filter);
    }
    let batches: Vec<RecordBatch> = query.execute().await?.try_collect().await?;
    let mut out = HashSet::new();
    for batch in &batches {
        let (oids, languages) = (strings(batch, "oid")?, strings(batch, "language")?);
        for i in 0..batch.num_rows() {
            out.insert(BlobKey {
                oid: oids.value(i).to_owned(),
                language: languages.value(i).to_owned(),
            });
        }
    }
    Ok(out)
}

fn strings<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b StringArray> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<StringArray>())
        .ok_or(StoreError::Column(name))
}

fn u32s<'b>(batch: &'b RecordBatch, name: &'static str) -> Result<&'b UInt32Array> {
    batch
        .column_by_name(name)
        .and_then(|c| c.as_any().downcast_ref::<UInt32Array>())
        .ok_or(StoreError::Column(name))
}

/// The columns a search hit is read from.
struct HitColumns<'b> {
    path: &'b StringArray,
    language: &'b StringArray,
    kind: &'b StringArray,
    name: &'b StringArray,
    content: &'b StringArray,
    start: &'b UInt32Array,
    end: &'b UInt32Array,
}

impl<'b> HitColumns<'b> {
    fn of(batch: &'b RecordBatch) -> Result<HitColumns<'b>> {
        Ok(HitColumns {
            path: strings(batch, "path")?,
            language: strings(batch, "language")?,
            kind: strings(batch, "kind")?,
            name: strings(batch, "name")?,
            content: strings(batch, "content")?,
            start: u32s(batch, "start_line")?,
            end: u32s(batch, "end_line")?,
        })
    }

    fn hit(&self, i: usize) -> StoredHit {
        StoredHit {
            path: self.path.value(i).to_owned(),
            language: self.language.value(i).to_owned(),
            kind: self.kind.value(i).to_owned(),
            name: self.name.value(i).to_owned(),
            start_line: self.start.value(i),
            end_line: self.end.value(i),
            content: self.content.value(i).to_owned(),
        }
    }
}

/// The rows of a batch; rows read without the vector column get an empty vector.
fn rows_of(batch: &RecordBatch) -> Result<Vec<BlockRow>> {
    let vectors = batch
        .column_by_name("vector")
        .map(|c| {
            c.as_any()
                .downcast_ref::<FixedSizeListArray>()
                .ok_or(StoreError::Column("vector"))
        })
        .transpose()?;
    let columns = HitColumns::of(batch)?;
    let (repo, oid) = (strings(batch, "repo")?, strings(batch, "oid")?);
    let text = batch
        .column_by_name("text")
        .map(|_| strings(batch, "text"))
        .transpose()?;
    (0..batch.num_rows())
        .map(|i| {
            let vector = match vectors {
                Some(vectors) => vectors
                    .value(i)
                    .as_any()
                    .downcast_ref::<Float32Array>()
                    .ok_or(StoreError::Column("vector"))?
                    .values()
                    .to_vec(),
                None => Vec::new(),
            };
            let hit = columns.hit(i);
            Ok(BlockRow {
                repo: repo.value(i).to_owned(),
                path: hit.path,
                oid: oid.value(i).to_owned(),
                language: hit.language,
                kind: hit.kind,
                name: hit.name,
                start_line: hit.start_line,
                end_line: hit.end_line,
                content: hit.content,
                text: text.map(|t| t.value(i).to_owned()).unwrap_or_default(),
                vector,
            })
        })
        .collect()
}
/// Merges each table's small fragments (and updates its indexes), then deletes the files of
/// versions older than `older_than`; `delete_unverified` also deletes files no version
/// references yet (safe only when no write is in progress).
async fn compact_and_prune(
    tables: &[&Table],
    older_than: Option<lancedb::table::Duration>,
    delete_unverified: bool,
) -> Result<()> {
    for table in tables {
        table.optimize(OptimizeAction::All).await?;
        table
            .optimize(OptimizeAction::Prune {
                older_than,
                delete_unverified: Some(delete_unverified),
                error_if_tagged_old_versions: None,
            })
            .await?;
    }
    Ok(())
}
