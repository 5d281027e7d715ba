//! The embedder: texts in, L2-normalised vectors out, on ONNX Runtime loaded at run time.
//!
//! CPU cost is dominated by padding, so texts are tokenised once, sorted by length and cut into
//! batches of similar lengths; results go back in input order. Execution providers are chosen in
//! [`execution_providers`] and nowhere else.

use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hgd_protocol::home::Home;
use ort::session::Session;
use tokenizers::{Tokenizer, TruncationParams};

use crate::model::{ModelConfig, ModelConfigError, Pooling};

#[derive(Debug, thiserror::Error)]
pub enum EmbedError {
    #[error("ONNX Runtime library not found at {0}; run `hgd setup` (or set HGD_ORT_DYLIB)")]
    RuntimeMissing(PathBuf),
    // Causes are in the messages (clients see only those), so they are not also `source`s.
    #[error("cannot load ONNX Runtime from {path}: {error}; run `hgd setup` to install a compatible one (>= 1.31)")]
    RuntimeLoad {
        path: PathBuf,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
    #[error("model not found at {0}; run `hgd setup` (or set HGD_MODEL_DIR to a folder with model.onnx, tokenizer.json and model.toml)")]
    ModelMissing(PathBuf),
    #[error(transparent)]
    Config(#[from] ModelConfigError),
    #[error("cannot load tokenizer {path}: {error}")]
    Tokenizer {
        path: PathBuf,
        error: tokenizers::Error,
    },
    #[error("tokenizing failed: {0}")]
    Encode(tokenizers::Error),
    #[error("ONNX Runtime: {0}")]
    Ort(#[from] ort::Error),
    #[error("the model returned vectors of {actual} dims but model.toml says {expected}")]
    Dims { expected: usize, actual: usize },
}

fn ort_err<E: Into<ort::Error>>(e: E) -> EmbedError {
    EmbedError::Ort(e.into())
}

/// Where the runtime library is: `HGD_ORT_DYLIB`, else the one `hgd setup` put in the home.
pub fn runtime_path(home: &Home) -> PathBuf {
    if let Some(path) = std::env::var_os("HGD_ORT_DYLIB").filter(|v| !v.is_empty()) {
        return PathBuf::from(path);
    }
    let dir = home.runtime_dir();
    let file = match crate::setup::runtime_artifact() {
        Ok(artifact) => artifact.file,
        Err(_) => "libonnxruntime.so",
    };
    dir.join(file)
}

/// Loads the ONNX Runtime library once per process. A missing or incompatible library is an error
/// naming `hgd setup`, never a panic.
fn init_runtime(path: &Path) -> Result<ort::environment::Environment, EmbedError> {
    if !path.is_file() {
        return Err(EmbedError::RuntimeMissing(path.to_path_buf()));
    }
    let load_err = |error: Box<dyn std::error::Error + Send + Sync>| EmbedError::RuntimeLoad {
        path: path.to_path_buf(),
        error,
    };
    let builder = ort::init_from(path).map_err(|e| load_err(Box::new(e)))?;
    builder
        .with_name("hgd")
        .build()
        .map_err(|e| load_err(Box::new(e)))
}

/// The one place execution providers are chosen: CoreML on macOS; elsewhere none is registered and
/// ONNX Runtime uses its built-in CPU provider (registering it explicitly measured no faster).
fn execution_providers() -> Vec<(&'static str, ort::ep::ExecutionProviderDispatch)> {
    #[cfg(target_os = "macos")]
    {
        vec![(
            "CoreML",
            ort::ep::CoreML::default().build().error_on_failure(),
        )]
    }
    #[cfg(not(target_os = "macos"))]
    {
        Vec::new()
    }
}

#[derive(Debug, Clone)]
pub struct EmbedOptions {
    /// Intra-op threads for indexing; queries use one thread so they stay quick during a job.
    pub threads: usize,
    pub batch_size: usize,
    /// Upper bound on texts x padded length per batch. Attention memory grows with
    /// batch x length², and on CPU small batches of long texts are faster, not slower (measured in
    /// BENCHMARKS.md): 512 gave the best throughput at a third of the memory of 4096.
    pub max_batch_tokens: usize,
    pub query_cache: usize,
}

impl Default for EmbedOptions {
    fn default() -> Self {
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        // HGD_THREADS, else the config file's `threads`, else all cores.
        let threads = match hgd_protocol::config::Config::load() {
            Ok(config) => config.threads.value,
            // A broken file (reported where the daemon starts) loses to the environment.
            Err(_) => std::env::var("HGD_THREADS")
                .ok()
                .and_then(|v| v.parse().ok())
                .filter(|&n: &usize| n > 0),
        }
        .unwrap_or(cores);
        EmbedOptions {
            threads,
            batch_size: 32,
            max_batch_tokens: std::env::var("HGD_BATCH_TOKENS")
                .ok()
                .and_then(|v| v.parse().ok())
                .unwrap_or(512),
            query_cache: 128,
        }
    }
}

pub struct Embedder {
    config: ModelConfig,
    tokenizer: Tokenizer,
    /// Large batches for indexing, at background priority.
    index_session: LazySession,
    onnx: PathBuf,
    /// The session for queries (up to two threads), so a search never waits behind an indexing
    /// batch. On CPU its products with weight matrices are in 8-bit integers (`onnx_rewrite`):
    /// about 2 ms for a query instead of 5, and vectors that differ slightly from the other
    /// sessions' and depend on the batch, so it embeds single queries and nothing that is stored.
    query_session: Mutex<Session>,
    /// A search's few edited files (one thread, normal priority), embedded exactly as indexing
    /// would: their rows are stored and reused when the file is committed.
    search_session: LazySession,
    has_token_type_ids: bool,
    /// On accelerators every distinct input shape is compiled once; pad to a few fixed lengths.
    fixed_shapes: bool,
    batch_size: usize,
    max_batch_tokens: usize,
    query_cache: Mutex<lru::LruCache<String, Vec<f32>>>,
    environment: ort::environment::Environment,
}

/// Most blocks a search embeds on the query session (one thread) rather than making the indexing
/// session: a few edited files' worth.
const SEARCH_EMBED_ON_SEARCH_SESSION: usize = 64;

/// A session made when first needed and dropped by [`Embedder::release_idle`] after it went
/// unused for a while, because each holds the model's weights unpacked to `f32` (~55 MB for
/// MiniLM int8) and an arena sized by its largest batch.
struct LazySession {
    slot: Mutex<Option<(Session, Instant)>>,
    threads: usize,
    purpose: Purpose,
}

impl LazySession {
    fn new(threads: usize, purpose: Purpose) -> LazySession {
        LazySession {
            slot: Mutex::new(None),
            threads,
            purpose,
        }
    }

    /// Runs `work` on the session, making it first if needed.
    fn run<T>(
        &self,
        environment: &ort::environment::Environment,
        onnx: &Path,
        work: impl FnOnce(&mut Session) -> Result<T, EmbedError>,
    ) -> Result<T, EmbedError> {
        let mut slot = self.slot.lock().unwrap_or_else(|p| p.into_inner());
        if slot.is_none() {
            let (session, _) = build_session(environment, onnx, self.threads, self.purpose, &[])?;
            *slot = Some((session, Instant::now()));
        }
        let (session, used) = slot.as_mut().expect("made above");
        *used = Instant::now();
        work(session)
    }

    /// Drops the session when nothing ran on it for `idle`; true when it did.
    fn release_idle(&self, idle: Duration) -> bool {
        // Work holding the lock is running: not idle, and no reason to wait for it.
        let mut slot = match self.slot.try_lock() {
            Ok(slot) => slot,
            Err(std::sync::TryLockError::Poisoned(p)) => p.into_inner(),
            Err(std::sync::TryLockError::WouldBlock) => return false,
        };
        if slot
            .as_ref()
            .is_some_and(|(_, used)| used.elapsed() >= idle)
        {
            *slot = None;
            return true;
        }
        false
    }
}

/// One tokenised text, before padding.
struct Encoded {
    ids: Vec<i64>,
    type_ids: Vec<i64>,
}

impl From<&tokenizers::Encoding> for Encoded {
    fn from(encoding: &tokenizers::Encoding) -> Encoded {
        let wide = |values: &[u32]| values.iter().map(|&i| i64::from(i)).collect();
        Encoded {
            ids: wide(encoding.get_ids()),
            type_ids: wide(encoding.get_type_ids()),
        }
    }
}

impl Embedder {
    /// Opens the runtime and the model in `model_dir` (model.onnx, tokenizer.json, model.toml).
    pub fn open(
        runtime: &Path,
        model_dir: &Path,
        options: &EmbedOptions,
    ) -> Result<Embedder, EmbedError> {
        let onnx = model_dir.join("model.onnx");
        let tokenizer_path = model_dir.join("tokenizer.json");
        if !onnx.is_file() || !tokenizer_path.is_file() {
            return Err(EmbedError::ModelMissing(model_dir.to_path_buf()));
        }
        let config = ModelConfig::load(&model_dir.join("model.toml"))?;
        let environment = init_runtime(runtime)?;

        let mut tokenizer =
            Tokenizer::from_file(&tokenizer_path).map_err(|error| EmbedError::Tokenizer {
                path: tokenizer_path.clone(),
                error,
            })?;
        // tokenizer.json may carry fixed padding/truncation (MiniLM's pads everything to 128):
        // we pad per batch ourselves and truncate where model.toml says.
        tokenizer.with_padding(None);
        tokenizer
            .with_truncation(Some(TruncationParams {
                max_length: config.max_tokens,
                ..Default::default()
            }))
            .map_err(|error| EmbedError::Tokenizer {
                path: tokenizer_path.clone(),
                error,
            })?;

        // Two threads cut a short query's time (MiniLM in f32 products, 8-16 tokens: 5.1-6.5 ms
        // on one thread, 3.2-3.9 ms on two), but only with cores to spare: on two cores the
        // query's second thread competes with the rest of the search and with indexing
        // (measured: no gain; with integer products, slower).
        let query_threads = if options.threads >= 4 { 2 } else { 1 };
        // The tokenizer's parallel batches run on rayon's global pool, whose threads keep the
        // priority of the thread that makes it (at first use): make it now, at normal priority,
        // not later from an indexing thread, since a search's edited files are tokenised there
        // too. (Already made: another embedder in this process made it the same way.)
        let _ = rayon::ThreadPoolBuilder::new()
            .thread_name(|i| format!("hgd-tokenize-{i}"))
            .build_global();
        // Texts of different lengths padded into one batch, on which the exact model with the
        // fused operators must give its outputs without them. The last, ~80 tokens, for attention over more than the short ones (a probe at the
        // model's limit of 256 made the daemon's start 0.5 s longer).
        let long = "for (i, row) in rows.iter().enumerate() { total += row.len() * i; } ".repeat(3);
        let probe: Vec<Encoded> = [
            "where is the configuration file read",
            "fn parse_arguments(args: &[String]) -> Result<Options, Error> { todo!() }",
            long.as_str(),
        ]
        .iter()
        .filter_map(|text| tokenizer.encode(*text, true).ok())
        .map(|encoding| Encoded::from(&encoding))
        .collect();
        let (query_session, fixed_shapes) =
            build_session(&environment, &onnx, query_threads, Purpose::Query, &probe)?;
        // Loading read the model into memory, rewrote it and, to check the fused operators,
        // made two more sessions: all freed now, and given back rather than kept resident.
        crate::memory::return_free_memory();
        let has_token_type_ids = query_session
            .inputs()
            .iter()
            .any(|i| i.name() == "token_type_ids");
        let cache = NonZeroUsize::new(options.query_cache.max(1)).expect("max(1) is non-zero");
        Ok(Embedder {
            config,
            tokenizer,
            index_session: LazySession::new(options.threads.max(1), Purpose::Index),
            onnx,
            query_session: Mutex::new(query_session),
            search_session: LazySession::new(1, Purpose::SearchDocuments),
            has_token_type_ids,
            fixed_shapes,
            batch_size: options.batch_size.max(1),
            max_batch_tokens: options.max_batch_tokens.max(1),
            query_cache: Mutex::new(lru::LruCache::new(cache)),
            environment,
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.config
    }

    /// Tokens `text` becomes without special tokens (capped at the model's limit), so the chunker
    /// can cut blocks the model reads whole.
    pub fn count_tokens(&self, text: &str) -> usize {
        self.tokenizer
            .encode(text, false)
            .map_or(text.len() / 3, |e| e.get_ids().len())
    }

    /// The chunker's token limit for this model: its sequence length less room for the special
    /// tokens and the path/kind/name line that precedes each block's content.
    pub fn token_limit(self: &std::sync::Arc<Self>) -> crate::chunk::TokenLimit {
        let embedder = self.clone();
        crate::chunk::TokenLimit {
            max: self.config.max_tokens.saturating_sub(32).max(16),
            count: std::sync::Arc::new(move |text| embedder.count_tokens(text)),
        }
    }

    /// Embeds documents for the index (with the model's document prefix), in input order.
    pub fn embed_documents<S: AsRef<str>>(&self, texts: &[S]) -> Result<Vec<Vec<f32>>, EmbedError> {
        // Nothing to embed must not make the indexing session (a few hundred MB).
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        let encoded = self.encode(texts, &self.config.doc_prefix)?;
        self.index_session
            .run(&self.environment, &self.onnx, |session| {
                self.embed_encoded(session, encoded)
            })
    }

    /// Embeds documents a search is waiting for (edited files): on the search session when they
    /// are few, so that the search neither waits behind a job's batch nor runs at the indexing
    /// session's background priority; many go to the indexing session. The search session is
    /// made when first needed after 2 idle minutes (about 0.1 s on CPU, one thread).
    pub fn embed_documents_for_search<S: AsRef<str>>(
        &self,
        texts: &[S],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        if texts.is_empty() {
            return Ok(Vec::new());
        }
        // Few texts go to the search session even when the indexing session exists: that one
        // runs at background priority and may be busy with a job's batch.
        if texts.len() > SEARCH_EMBED_ON_SEARCH_SESSION {
            return self.embed_documents(texts);
        }
        let encoded = self.encode(texts, &self.config.doc_prefix)?;
        self.search_session
            .run(&self.environment, &self.onnx, |session| {
                self.embed_encoded(session, encoded)
            })
    }

    /// Drops the indexing session and the session for a search's edited files when nothing ran
    /// on them for `idle`, so an idle daemon holds only the small query session. True when it
    /// dropped one.
    pub fn release_idle(&self, idle: Duration) -> bool {
        let index = self.index_session.release_idle(idle);
        let search = self.search_session.release_idle(idle);
        if index || search {
            crate::memory::return_free_memory();
        }
        index || search
    }

    /// The vector of a query asked before, from the LRU cache.
    pub fn cached_query(&self, query: &str) -> Option<Vec<f32>> {
        self.lock_cache().get(query).cloned()
    }

    /// Embeds a search query (with the query prefix), from the LRU cache when it was asked before.
    pub fn embed_query(&self, query: &str) -> Result<Vec<f32>, EmbedError> {
        if let Some(hit) = self.lock_cache().get(query) {
            return Ok(hit.clone());
        }
        let encoded = self.encode(&[query], &self.config.query_prefix)?;
        let vector = {
            let mut session = self.query_session.lock().unwrap_or_else(|p| p.into_inner());
            self.embed_encoded(&mut session, encoded)?.remove(0)
        };
        self.lock_cache().put(query.to_owned(), vector.clone());
        Ok(vector)
    }

    fn lock_cache(&self) -> std::sync::MutexGuard<'_, lru::LruCache<String, Vec<f32>>> {
        self.query_cache.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn encode<S: AsRef<str>>(&self, texts: &[S], prefix: &str) -> Result<Vec<Encoded>, EmbedError> {
        let inputs: Vec<String> = texts
            .iter()
            .map(|text| format!("{prefix}{}", text.as_ref()))
            .collect();
        // encode_batch tokenises in parallel, on the tokenizer's pool; one text (a query) is
        // tokenised here instead, since handing it to the pool wakes a worker, which then spins
        // waiting for more work on a core the rest of the search needs.
        let encodings = if inputs.len() == 1 {
            let input = inputs.into_iter().next().expect("one input");
            vec![self
                .tokenizer
                .encode(input, true)
                .map_err(EmbedError::Encode)?]
        } else {
            self.tokenizer
                .encode_batch(inputs, true)
                .map_err(EmbedError::Encode)?
        };
        Ok(encodings.iter().map(Encoded::from).collect())
    }

    fn embed_encoded(
        &self,
        session: &mut Session,
        encoded: Vec<Encoded>,
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let mut order: Vec<usize> = (0..encoded.len()).collect();
        order.sort_by_key(|&i| encoded[i].ids.len());
        let mut out = vec![Vec::new(); encoded.len()];
        let mut rest = &order[..];
        while !rest.is_empty() {
            // Sorted ascending, so the last text of a batch is its longest: grow the batch while
            // its padded size stays within the token budget.
            let mut n = 1;
            while n < rest.len()
                && n < self.batch_size
                && (n + 1) * encoded[rest[n]].ids.len() <= self.max_batch_tokens
            {
                n += 1;
            }
            let (batch, tail) = rest.split_at(n);
            rest = tail;
            let items: Vec<&Encoded> = batch.iter().map(|&i| &encoded[i]).collect();
            let vectors = self.run_batch(session, &items)?;
            for (&i, vector) in batch.iter().zip(vectors) {
                out[i] = vector;
            }
        }
        Ok(out)
    }

    fn run_batch(
        &self,
        session: &mut Session,
        items: &[&Encoded],
    ) -> Result<Vec<Vec<f32>>, EmbedError> {
        let longest = items.iter().map(|e| e.ids.len()).max().unwrap_or(1).max(1);
        let seq = padded_len(longest, self.fixed_shapes);
        let rows = items.len();
        let pooling = self.config.pooling;
        let expected = self.config.dims;
        with_hidden_states(
            session,
            items,
            seq,
            self.has_token_type_ids,
            |out_shape, data, mask| {
                let dims = *out_shape.last().unwrap_or(&0) as usize;
                if dims != expected {
                    return Err(EmbedError::Dims {
                        expected,
                        actual: dims,
                    });
                }
                let vectors: Vec<Vec<f32>> = match out_shape.len() {
                    // Already pooled: [batch, dims].
                    2 => data.chunks(dims).map(<[f32]>::to_vec).collect(),
                    // Per token: [batch, seq, dims].
                    _ => (0..rows)
                        .map(|r| {
                            let hidden = &data[r * seq * dims..(r + 1) * seq * dims];
                            pool(hidden, &mask[r * seq..(r + 1) * seq], dims, pooling)
                        })
                        .collect(),
                };
                Ok(vectors.into_iter().map(normalise).collect())
            },
        )
    }
}

/// A model's output for a padded batch.
#[derive(Debug)]
struct Hidden {
    shape: Vec<i64>,
    values: Vec<f32>,
    /// The attention mask it was given: 1 for a token, 0 for padding.
    mask: Vec<i64>,
}

impl Hidden {
    fn copy(shape: &[i64], values: &[f32], mask: &[i64]) -> Result<Hidden, EmbedError> {
        Ok(Hidden {
            shape: shape.to_vec(),
            values: values.to_vec(),
            mask: mask.to_vec(),
        })
    }
}

/// `read` applied to the model's output for `items` padded to `seq` tokens: its shape, its
/// values, and the attention mask given.
fn with_hidden_states<T>(
    session: &mut Session,
    items: &[&Encoded],
    seq: usize,
    has_token_type_ids: bool,
    read: impl FnOnce(&[i64], &[f32], &[i64]) -> Result<T, EmbedError>,
) -> Result<T, EmbedError> {
    let rows = items.len();
    let mut ids = vec![0i64; rows * seq];
    let mut mask = vec![0i64; rows * seq];
    let mut types = vec![0i64; rows * seq];
    for (r, item) in items.iter().enumerate() {
        let at = r * seq;
        ids[at..at + item.ids.len()].copy_from_slice(&item.ids);
        mask[at..at + item.ids.len()].fill(1);
        types[at..at + item.type_ids.len()].copy_from_slice(&item.type_ids);
    }
    let shape = [rows, seq];
    let mut inputs: Vec<(&str, ort::session::SessionInputValue)> = vec![
        (
            "input_ids",
            ort::value::Tensor::from_array((shape, ids))
                .map_err(ort_err)?
                .into(),
        ),
        (
            "attention_mask",
            ort::value::Tensor::from_array((shape, mask.clone()))
                .map_err(ort_err)?
                .into(),
        ),
    ];
    if has_token_type_ids {
        inputs.push((
            "token_type_ids",
            ort::value::Tensor::from_array((shape, types))
                .map_err(ort_err)?
                .into(),
        ));
    }
    let outputs = session.run(inputs).map_err(ort_err)?;
    let (out_shape, data) = outputs[0].try_extract_tensor::<f32>().map_err(ort_err)?;
    read(&out_shape[..], data, &mask)
}

/// What a session is for.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Purpose {
    Index,
    /// Single search queries, in 8-bit integer products.
    Query,
    /// The few edited files a search waits for.
    SearchDocuments,
}

fn build_session(
    environment: &ort::environment::Environment,
    onnx: &Path,
    threads: usize,
    purpose: Purpose,
    probe: &[Encoded],
) -> Result<(Session, bool), EmbedError> {
    let mut builder = Session::builder(environment)
        .map_err(ort_err)?
        .with_intra_threads(threads.max(1))
        .map_err(ort_err)?
        // The query session's idle threads must not spin after each query, taking CPU from
        // indexing; the indexing session's spin between its back-to-back batches.
        .with_intra_op_spinning(purpose == Purpose::Index)
        .map_err(ort_err)?;
    if purpose == Purpose::Index {
        // Its worker threads lower their own priority, so indexing yields the CPU to searches.
        builder = builder
            .with_thread_manager(crate::priority::BackgroundThreads)
            .map_err(ort_err)?;
    }
    let mut accelerated = false;
    for (name, provider) in execution_providers() {
        match builder.with_execution_providers([provider]) {
            Ok(with) => {
                builder = with;
                accelerated = true;
                if purpose == Purpose::Query {
                    tracing::info!("execution provider: {name}, {threads} intra-op threads");
                } else {
                    tracing::debug!("execution provider: {name}, {threads} intra-op threads");
                }
            }
            Err(e) => {
                tracing::warn!(
                    "{name} execution provider failed to register ({e}); falling back to CPU"
                );
                builder = e.recover();
            }
        }
    }
    if !accelerated {
        if purpose == Purpose::Query {
            tracing::info!("execution provider: CPU, {threads} intra-op threads");
        } else {
            tracing::debug!("execution provider: CPU, {threads} intra-op threads");
        }
    }
    // HGD_MODEL_AS_IS=1 loads the file unchanged: a diagnostic, and how the tests show that the
    // table-lookup rewrite changes no vector.
    let as_is = std::env::var("HGD_MODEL_AS_IS").is_ok_and(|v| v == "1");
    // Integer products for queries on CPUs whose 8-bit kernels do not saturate; accelerators
    // (CoreML) have no such operator and would split the graph around each one.
    let integer = purpose == Purpose::Query && !accelerated && integer_products_are_exact_enough();
    let bytes = if as_is {
        None
    } else {
        // A read error is reported by the load below.
        std::fs::read(onnx).ok()
    };
    // Fused operators for queries on CPU, once shown to compute what the exporter's graph does;
    // `HGD_MODEL_FUSED=0` leaves them out (a diagnostic, and how the tests compare).
    let checked = if purpose == Purpose::Query
        && !accelerated
        && !std::env::var("HGD_MODEL_FUSED").is_ok_and(|v| v == "0")
    {
        bytes
            .as_deref()
            .and_then(|model| fusions_hold(&builder, model, probe))
    } else {
        None
    };
    // The variants to try, most rewritten first, each made only if the one before did not load:
    // should ONNX Runtime refuse the integer operator, the exact rewrites still save memory.
    let variants: &[(bool, bool)] = if integer {
        &[(true, true), (true, false), (false, true), (false, false)]
    } else {
        &[(false, true), (false, false)]
    };
    let candidates = variants.iter().filter_map(|&(integer, fused)| {
        if fused && checked.is_none() {
            return None;
        }
        let candidate = match rewrite_model(bytes.as_deref()?, integer, fused) {
            Ok(rewritten) => rewritten?,
            Err(e) => {
                tracing::warn!("{}: {e}; loading it as it is", onnx.display());
                return None;
            }
        };
        // A fused variant only where the fusions found the same blocks as in the checked model.
        if fused {
            let counts = crate::onnx_rewrite::operator_counts(&candidate.0, &FUSED_OPERATORS);
            if counts.ok().as_ref() != checked.as_ref() {
                tracing::warn!(
                    "operators left unfused: they fuse other blocks in the served model"
                );
                return None;
            }
        }
        Some(candidate)
    });
    for (bytes, what) in candidates {
        match builder.commit_from_memory(&bytes) {
            Ok(session) => {
                // Sessions for indexing come and go with jobs; the query session's lines, at the
                // daemon's start, say which provider and model it runs.
                if purpose == Purpose::Query {
                    tracing::info!("model for {}: {what}", purpose.name());
                } else {
                    tracing::debug!("model for {}: {what}", purpose.name());
                }
                return Ok((session, accelerated));
            }
            Err(e) => tracing::warn!(
                "{}: the model rewritten ({what}) did not load ({e})",
                onnx.display()
            ),
        }
    }
    // From the file, so that a model with external data files finds them beside it.
    let session = builder.commit_from_file(onnx).map_err(ort_err)?;
    Ok((session, accelerated))
}

impl Purpose {
    fn name(self) -> &'static str {
        match self {
            Purpose::Index => "indexing",
            Purpose::Query => "queries",
            Purpose::SearchDocuments => "a search's edited files",
        }
    }
}

/// Whether ONNX Runtime's 8-bit products keep queries' vectors close (cosine ≈ 0.99) on this
/// CPU: on x86-64 only with VNNI instructions, since the AVX2 kernels add pairs of products in
/// 16 bits, which can saturate with full-range weights (ONNX Runtime's quantization guide);
/// on ARM64 the dot-product kernels add in 32 bits.
fn integer_products_are_exact_enough() -> bool {
    #[cfg(target_arch = "x86_64")]
    let vnni = std::arch::is_x86_feature_detected!("avx512vnni")
        || std::arch::is_x86_feature_detected!("avxvnni");
    #[cfg(target_arch = "aarch64")]
    let vnni = true;
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    let vnni = false;
    if !vnni {
        tracing::info!("queries use f32 products: this CPU has no 8-bit dot-product instructions");
    }
    vnni
}

/// The model as a session loads it, and what changed (see `onnx_rewrite`), or `None` to load
/// the file as it is. Every session: a lookup in an 8-bit table scales only the rows it fetches
/// (same vectors, the table not unpacked to `f32`). With `integer` (queries): products with
/// 8-bit weight matrices in integers.
fn rewrite_model(
    model: &[u8],
    integer: bool,
    fused: bool,
) -> Result<Option<(Vec<u8>, String)>, crate::onnx_rewrite::RewriteError> {
    let mut what = Vec::new();
    let mut current = None;
    if let Some(rewritten) = crate::onnx_rewrite::gather_before_dequantize(model)? {
        what.push("table lookups fetch 8-bit codes before scaling them".to_owned());
        current = Some(rewritten);
    }
    if integer {
        let from = current.as_deref().unwrap_or(model);
        if let Some(rewritten) = crate::onnx_rewrite::integer_matmuls(from)? {
            what.push("products with weight matrices in 8-bit integers".to_owned());
            current = Some(rewritten);
        }
    }
    if fused {
        if let Some((rewritten, names)) = fuse_operators(current.as_deref().unwrap_or(model))? {
            what.push(format!("fused operators: {}", names.join(", ")));
            current = Some(rewritten);
        }
    }
    Ok(current.map(|bytes| (bytes, what.join("; "))))
}

/// A model's bytes after operator fusions, and which fusions applied.
type FusedModel = (Vec<u8>, Vec<&'static str>);

/// The model with each layer's attention and GELU as single ONNX Runtime operators
/// (`onnx_rewrite::fused_attention`, `fused_gelu`), and which of them were fused; `None` when
/// neither was.
fn fuse_operators(model: &[u8]) -> Result<Option<FusedModel>, crate::onnx_rewrite::RewriteError> {
    type Rewrite = fn(&[u8]) -> Result<Option<Vec<u8>>, crate::onnx_rewrite::RewriteError>;
    let rewrites: [(Rewrite, &str); 2] = [
        (crate::onnx_rewrite::fused_attention, "attention"),
        (crate::onnx_rewrite::fused_gelu, "GELU"),
    ];
    let mut fused: Option<Vec<u8>> = None;
    let mut names = Vec::new();
    for (rewrite, name) in rewrites {
        if let Some(rewritten) = rewrite(fused.as_deref().unwrap_or(model))? {
            fused = Some(rewritten);
            names.push(name);
        }
    }
    Ok(fused.map(|bytes| (bytes, names)))
}

/// The operators the fusions make, counted to tell that two variants of a model fused alike.
const FUSED_OPERATORS: [&str; 2] = ["MultiHeadAttention", "Gelu"];

/// Whether the fused operators compute what the exporter's graph does: the model with only the
/// exact rewrites, with and without them, must give the same hidden states on `probe` (texts of
/// different lengths padded into one batch), within float rounding. Checked on the exact model,
/// where a last-bit difference stays one; in 8-bit integer products it could round a value to
/// the next integer. `Some(how many of each of FUSED_OPERATORS the fused model has)` when they
/// do.
fn fusions_hold(
    builder: &ort::session::builder::SessionBuilder,
    model: &[u8],
    probe: &[Encoded],
) -> Option<Vec<usize>> {
    let lengths: std::collections::HashSet<usize> = probe.iter().map(|e| e.ids.len()).collect();
    if lengths.len() < 2 {
        tracing::warn!("operators left unfused: the probe texts are all of one length");
        return None;
    }
    let unfused = |e: &dyn std::fmt::Display| {
        tracing::warn!("operators left unfused: {e}");
        None
    };
    let exact = match rewrite_model(model, false, false) {
        Ok(Some((bytes, _))) => bytes,
        Ok(None) => model.to_vec(),
        Err(e) => return unfused(&e),
    };
    let fused = match fuse_operators(&exact) {
        Ok(Some((bytes, _))) => bytes,
        Ok(None) => return None,
        Err(e) => return unfused(&e),
    };
    let counts = match crate::onnx_rewrite::operator_counts(&fused, &FUSED_OPERATORS) {
        Ok(counts) => counts,
        Err(e) => return unfused(&e),
    };
    let compared = (|| {
        // Made and dropped once, at start: without graph optimisations (no constant folding of
        // the weights to f32, which costs most of a session's making) and on every core.
        let cores = std::thread::available_parallelism().map_or(1, NonZeroUsize::get);
        let mut builder = builder
            .clone()
            .with_optimization_level(ort::session::builder::GraphOptimizationLevel::Disable)
            .map_err(ort_err)?
            .with_intra_threads(cores)
            .map_err(ort_err)?;
        let mut unfused = builder.commit_from_memory(&exact).map_err(ort_err)?;
        let mut fused = builder.commit_from_memory(&fused).map_err(ort_err)?;
        let items: Vec<&Encoded> = probe.iter().collect();
        let seq = items.iter().map(|e| e.ids.len()).max().unwrap_or(1);
        let type_ids = unfused
            .inputs()
            .iter()
            .any(|i| i.name() == "token_type_ids");
        let a = with_hidden_states(&mut unfused, &items, seq, type_ids, Hidden::copy)?;
        let b = with_hidden_states(&mut fused, &items, seq, type_ids, Hidden::copy)?;
        Ok::<_, EmbedError>(same_hidden_states(&a, &b))
    })();
    match compared {
        Ok(true) => Some(counts),
        Ok(false) => {
            tracing::warn!(
                "operators left unfused: the fused model's outputs differ (or are not per token)"
            );
            None
        }
        Err(e) => unfused(&format!("comparing the models failed ({e})")),
    }
}

/// Whether two outputs for one padded batch agree within float rounding at every token (padding
/// positions are ignored: pooling skips them); false when there is no token to compare.
fn same_hidden_states(a: &Hidden, b: &Hidden) -> bool {
    if a.shape != b.shape || a.shape.len() != 3 || a.mask != b.mask {
        return false;
    }
    let dims = a.shape[2] as usize;
    let tokens = a.mask.len();
    if dims == 0 || a.values.len() != tokens * dims || b.values.len() != tokens * dims {
        return false;
    }
    let mut compared = 0;
    for t in (0..tokens).filter(|&t| a.mask[t] == 1) {
        let (x, y) = (
            &a.values[t * dims..(t + 1) * dims],
            &b.values[t * dims..(t + 1) * dims],
        );
        // NaN compares unequal, so it fails too.
        if !x
            .iter()
            .zip(y)
            .all(|(p, q)| (p - q).abs() <= 1e-3 * (1.0 + p.abs()))
        {
            return false;
        }
        compared += 1;
    }
    compared > 0
}

/// Sequence length a batch is padded to. On accelerators a few fixed lengths keep the compiled-shape
/// cache small; on CPU the longest text in the batch is cheapest.
fn padded_len(longest: usize, fixed_shapes: bool) -> usize {
    const BUCKETS: [usize; 5] = [32, 64, 128, 256, 512];
    if !fixed_shapes {
        return longest;
    }
    BUCKETS
        .iter()
        .copied()
        .find(|&b| b >= longest)
        .unwrap_or(longest)
}

/// Pools per-token vectors `hidden` ([seq, dims]) into one vector.
fn pool(hidden: &[f32], mask: &[i64], dims: usize, pooling: Pooling) -> Vec<f32> {
    match pooling {
        Pooling::Cls => hidden[..dims].to_vec(),
        Pooling::Mean => {
            let mut sum = vec![0f32; dims];
            let mut count = 0f32;
            for (token, &m) in hidden.chunks(dims).zip(mask) {
                if m != 0 {
                    count += 1.0;
                    sum.iter_mut().zip(token).for_each(|(s, t)| *s += t);
                }
            }
            let count = count.max(1.0);
            sum.iter_mut().for_each(|s| *s /= count);
            sum
        }
    }
}

fn normalise(mut v: Vec<f32>) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm > 0.0 {
        v.iter_mut().for_each(|x| *x /= norm);
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hidden(values: &[f32], mask: &[i64]) -> Hidden {
        Hidden {
            shape: vec![1, mask.len() as i64, (values.len() / mask.len()) as i64],
            values: values.to_vec(),
            mask: mask.to_vec(),
        }
    }

    #[test]
    fn hidden_states_agree_at_tokens_within_rounding_only() {
        let a = hidden(&[1.0, -2.0, 3.0, 4.0, 7.0, 7.0], &[1, 1, 0]);
        // Rounding-sized differences agree; padding positions may differ in any way.
        let b = hidden(&[1.0004, -2.0, 3.0, 4.002, -50.0, f32::NAN], &[1, 1, 0]);
        assert!(same_hidden_states(&a, &b));
        // A real difference, NaN at a token, another mask or shape: not the same.
        assert!(!same_hidden_states(
            &a,
            &hidden(&[1.01, -2.0, 3.0, 4.0, 7.0, 7.0], &[1, 1, 0])
        ));
        assert!(!same_hidden_states(
            &a,
            &hidden(&[1.0, f32::NAN, 3.0, 4.0, 7.0, 7.0], &[1, 1, 0])
        ));
        assert!(!same_hidden_states(
            &a,
            &hidden(&[1.0, -2.0, 3.0, 4.0, 7.0, 7.0], &[1, 1, 1])
        ));
        assert!(!same_hidden_states(
            &a,
            &hidden(&[1.0, -2.0, 3.0, 4.0, 7.0, 7.0, 0.0, 0.0], &[1, 1, 0, 0])
        ));
        // Nothing compared proves nothing.
        let empty = hidden(&[1.0, 2.0], &[0]);
        assert!(!same_hidden_states(&empty, &empty));
    }

    #[test]
    fn mean_pooling_ignores_padding() {
        // Two real tokens and one padding token that must not count.
        let hidden = [1.0, 3.0, 3.0, 5.0, 100.0, 100.0];
        assert_eq!(pool(&hidden, &[1, 1, 0], 2, Pooling::Mean), vec![2.0, 4.0]);
        assert_eq!(pool(&hidden, &[1, 1, 0], 2, Pooling::Cls), vec![1.0, 3.0]);
    }

    #[test]
    fn buckets_only_on_accelerators() {
        assert_eq!(padded_len(17, false), 17);
        assert_eq!(padded_len(17, true), 32);
        assert_eq!(padded_len(300, true), 512);
        assert_eq!(padded_len(700, true), 700);
    }
}
