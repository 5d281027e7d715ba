//! `hgd-daemon`: the heavy half of hgd. The thin `hgd` client runs it for `hgd daemon` and `hgd setup`.

use std::io::Read;
use std::time::Instant;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use hgd_daemon::chunk;
use hgd_daemon::embed::{self, EmbedOptions, Embedder};
use hgd_daemon::server;
use hgd_daemon::service::Service;
use hgd_daemon::store::Store;
use hgd_protocol::home::Home;
use tokio_util::sync::CancellationToken;

#[derive(Parser)]
#[command(
    name = "hgd-daemon",
    version,
    about = "The hgd indexing and search daemon"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the daemon in the foreground (the `hgd` client starts it in the background on demand).
    Daemon,
    /// Install the ONNX Runtime library and the default model into hgd's home (idempotent).
    Setup,
    /// Index PATH's repository in this process, with no daemon (one must not be running on this
    /// home), optionally publish it to the remotes, and exit: for CI.
    Index {
        path: std::path::PathBuf,
        /// Then add the blocks of HEAD's files that the remotes lack.
        #[arg(long)]
        publish: bool,
        /// Publish to this remote only (default: every one not read-only).
        #[arg(long, requires = "publish")]
        remote: Option<String>,
        /// Print the result as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Embed texts given as a JSON array of strings on stdin; print a JSON array of vectors.
    Embed {
        /// Embed as search queries (query prefix, query session) instead of documents.
        #[arg(long)]
        query: bool,
        /// Texts per batch.
        #[arg(long, default_value_t = 32)]
        batch_size: usize,
        /// Most texts x padded tokens per batch (default: HGD_BATCH_TOKENS, else 512).
        #[arg(long)]
        max_batch_tokens: Option<usize>,
        /// Intra-op threads (default: HGD_THREADS, else the config file's `threads`, else all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// Print throughput on stderr instead of vectors on stdout.
        #[arg(long)]
        bench: bool,
        /// Embed in calls of this many texts, in input order (as an indexing job does), instead
        /// of all in one call (which sorts every text by length first).
        #[arg(long)]
        group: Option<usize>,
    },
    /// Print the model folder the daemon would use.
    ModelDir,
    /// Print, as a JSON array, the texts a first index of HEAD under DIR embeds (the same
    /// blocks as the job, cut with the model's token limit): input for `embed --bench`, to
    /// compare the indexing pipeline with embedding alone.
    IndexTexts { dir: std::path::PathBuf },
    /// Score the ranking stage on the semble benchmark over the index already in HGD_HOME
    /// (filled by bench/quality.sh with HGD_BENCH_HOME): NDCG@10 per repository and category.
    Eval {
        /// The benchmark data folder (repos.json, annotations/).
        #[arg(long)]
        data: std::path::PathBuf,
        /// The folder of work trees (bench/dev_repos.py).
        #[arg(long)]
        repos: std::path::PathBuf,
        /// Only these repositories (default: every indexed one).
        #[arg(long = "repo")]
        names: Vec<String>,
        /// hybrid, lexical or semantic.
        #[arg(long, default_value = "hybrid")]
        mode: String,
        /// Turn these ranking rules off (comma-separated), to measure them.
        #[arg(long, default_value = "")]
        without: String,
        /// Override ranking weights for this run: `name=value,...` (see rank/weights.rs).
        #[arg(long, default_value = "")]
        set: String,
        /// Print every query that is not ranked perfectly.
        #[arg(long)]
        verbose: bool,
        /// Embed every block again from this text instead of using its stored vector, to
        /// measure what gets embedded: `content` (the code alone) or `path` (path and code).
        /// Stored vectors embed the header (path, kind, name) and the code.
        #[arg(long)]
        embed_as: Option<String>,
    },
    /// Count the rows of this model on a remote and their distinct block keys (equal unless
    /// rows were duplicated), as JSON: for tests and inspection.
    RemoteRows { name: String },
    /// Split files into blocks as the indexer would; print them as JSON.
    Chunk {
        files: Vec<std::path::PathBuf>,
        /// Print only the texts that would be embedded (a JSON array of strings).
        #[arg(long)]
        texts: bool,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    // `hgd index --publish` runs `index`: its failures exit as the client's do (grep's 2).
    let failure = match cli.command {
        Command::Index { .. } => std::process::ExitCode::from(2),
        _ => std::process::ExitCode::FAILURE,
    };
    // Only the daemon keeps (and rotates) the home's log; other commands log to the terminal.
    let log_file = matches!(cli.command, Command::Daemon)
        .then(|| Home::from_env().ok().map(|home| home.daemon_log()))
        .flatten();
    init_logging(log_file);
    match run(cli) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("hgd-daemon: {e:#}");
            failure
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let home = Home::from_env()?;
    match cli.command {
        Command::Daemon => run_daemon(home),
        Command::Index {
            path,
            publish,
            remote,
            json,
        } => index_once(home, &path, publish.then_some(remote), json),
        Command::Setup => {
            let report = hgd_daemon::setup::run(&home)?;
            for line in report.lines {
                println!("{line}");
            }
            Ok(())
        }
        Command::Chunk { files, texts } => chunk_files(&files, texts),
        Command::Eval {
            data,
            repos,
            names,
            mode,
            without,
            set,
            verbose,
            embed_as,
        } => {
            let embed_as = match embed_as.as_deref() {
                None => None,
                Some("content") => Some(hgd_daemon::eval::EmbedAs::Content),
                Some("path") => Some(hgd_daemon::eval::EmbedAs::PathAndContent),
                Some(other) => anyhow::bail!("unknown --embed-as {other}: content or path"),
            };
            hgd_daemon::rank::weights::override_with(&set).map_err(anyhow::Error::msg)?;
            let rules = hgd_daemon::rank::Rules::without(&without).map_err(anyhow::Error::msg)?;
            let mode = match mode.as_str() {
                "hybrid" => hgd_daemon::rank::Mode::Hybrid,
                "lexical" => hgd_daemon::rank::Mode::Lexical,
                "semantic" => hgd_daemon::rank::Mode::Semantic,
                other => anyhow::bail!("unknown mode {other}: hybrid, lexical or semantic"),
            };
            let embedder = Embedder::open(
                &embed::runtime_path(&home),
                &home.model_dir(),
                &EmbedOptions::default(),
            )?;
            let config = embedder.config().clone();
            let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
            runtime.block_on(async {
                let store = Store::open(&home.db_dir(), &config.id(), config.dims).await?;
                let options = hgd_daemon::eval::Options {
                    data,
                    repos,
                    names,
                    mode,
                    rules,
                    verbose,
                    embed_as,
                };
                hgd_daemon::eval::run(&store, &embedder, &options).await?;
                anyhow::Ok(())
            })
        }
        Command::IndexTexts { dir } => {
            let embedder = std::sync::Arc::new(Embedder::open(
                &embed::runtime_path(&home),
                &home.model_dir(),
                &EmbedOptions::default(),
            )?);
            let limits = chunk::Limits {
                tokens: Some(embedder.token_limit()),
                ..chunk::Limits::default()
            };
            let texts = hgd_daemon::indexer::head_texts(&dir, &limits)?;
            println!("{}", serde_json::to_string(&texts)?);
            Ok(())
        }
        Command::RemoteRows { name } => {
            let model_dir = home.model_dir();
            let config = hgd_daemon::model::ModelConfig::load(&model_dir.join("model.toml"))?;
            let remotes = hgd_daemon::remote::Remotes::new(model_dir, &config.id(), config.dims);
            let runtime = tokio::runtime::Runtime::new().context("start the async runtime")?;
            runtime.block_on(async {
                let remote = remotes
                    .current()
                    .into_iter()
                    .find(|r| r.spec.name == name)
                    .ok_or_else(|| hgd_daemon::remote::RemoteError::Unknown(name.clone()))?;
                let (rows, keys) = remote.count_rows(&remotes.identity().await?).await?;
                println!("{}", serde_json::json!({"rows": rows, "keys": keys}));
                anyhow::Ok(())
            })
        }
        Command::ModelDir => {
            println!("{}", home.model_dir().display());
            Ok(())
        }
        Command::Embed {
            query,
            batch_size,
            max_batch_tokens,
            threads,
            bench,
            group,
        } => {
            let mut input = String::new();
            std::io::stdin().read_to_string(&mut input)?;
            let texts: Vec<String> =
                serde_json::from_str(&input).context("stdin must be a JSON array of strings")?;
            let mut options = EmbedOptions {
                batch_size,
                ..EmbedOptions::default()
            };
            if let Some(threads) = threads {
                options.threads = threads;
            }
            if let Some(max) = max_batch_tokens {
                options.max_batch_tokens = max;
            }
            let embedder =
                Embedder::open(&embed::runtime_path(&home), &home.model_dir(), &options)?;
            let started = Instant::now();
            let vectors = if query {
                texts
                    .iter()
                    .map(|t| embedder.embed_query(t))
                    .collect::<Result<Vec<_>, _>>()?
            } else if let Some(group) = group {
                let mut vectors = Vec::with_capacity(texts.len());
                for chunk in texts.chunks(group.max(1)) {
                    vectors.extend(embedder.embed_documents(chunk)?);
                }
                vectors
            } else {
                embedder.embed_documents(&texts)?
            };
            let secs = started.elapsed().as_secs_f64();
            if bench {
                eprintln!(
                    "hgd (Rust ort): {} texts in {secs:.2}s = {:.1} texts/s ({} threads, batch {batch_size}, {} tokens)",
                    texts.len(),
                    texts.len() as f64 / secs,
                    options.threads,
                    options.max_batch_tokens
                );
            } else {
                println!("{}", serde_json::to_string(&vectors)?);
            }
            Ok(())
        }
    }
}

fn chunk_files(files: &[std::path::PathBuf], texts_only: bool) -> Result<()> {
    let mut blocks = Vec::new();
    let mut texts = Vec::new();
    for file in files {
        let source =
            std::fs::read_to_string(file).with_context(|| format!("read {}", file.display()))?;
        let path = file.to_string_lossy();
        for block in chunk::chunk(&path, &source, &chunk::Limits::default()) {
            texts.push(hgd_daemon::indexer::embed_text(&path, &block));
            blocks.push(serde_json::json!({
                "file": path,
                "line": block.start_line,
                "end_line": block.end_line,
                "type": block.kind,
                "name": block.name,
                "content": block.content,
            }));
        }
    }
    let out = if texts_only {
        serde_json::to_string_pretty(&texts)?
    } else {
        serde_json::to_string_pretty(&blocks)?
    };
    println!("{out}");
    Ok(())
}

/// What the daemon and a one-shot index set up before opening the home: the config file's
/// exclusions and size limit, the allocator, the ranking rules.
fn configure_process() -> Result<()> {
    // A config file with a mistake stops the daemon with the reason, rather than being ignored.
    let config = hgd_protocol::config::Config::load()?;
    hgd_daemon::git::set_config_exclude(config.exclude.value).map_err(anyhow::Error::msg)?;
    hgd_daemon::git::set_max_file_bytes(config.max_file_kib.value.saturating_mul(1024));
    hgd_daemon::memory::limit_arenas();
    let rules = hgd_daemon::rank::Rules::from_env().map_err(anyhow::Error::msg)?;
    if let Some(rules) = rules {
        hgd_daemon::rank::Rules::configure(rules);
        tracing::warn!("ranking without some rules (HGD_RANK_WITHOUT): {rules:?}");
    }
    Ok(())
}

/// `hgd-daemon index PATH [--publish]`: the daemon's service in this process, without a
/// socket, for one repository; the home's lock keeps a daemon from starting meanwhile.
fn index_once(
    home: Home,
    path: &std::path::Path,
    publish: Option<Option<String>>,
    json: bool,
) -> Result<()> {
    configure_process()?;
    let path = std::path::absolute(path).context("the path to index")?;
    let _lock = server::lock_home(&home).map_err(|e| match e {
        server::ServerError::AlreadyRunning(..) => anyhow::anyhow!(
            "a daemon is running on {}: ask it instead (`hgd index --publish` does), or stop it with `hgd stop`",
            home.root().display()
        ),
        e => e.into(),
    })?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    let result = runtime.block_on(async move {
        let shutdown = CancellationToken::new();
        // It publishes everything itself, once the index is done.
        let service = start_service(&home, shutdown.clone(), false).await?;
        let outcome = index_and_publish(&service, &path, publish, json).await;
        shutdown.cancel();
        outcome
    });
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    result
}

async fn index_and_publish(
    service: &std::sync::Arc<Service>,
    path: &std::path::Path,
    publish: Option<Option<String>>,
    json: bool,
) -> Result<()> {
    let remotes = match &publish {
        Some(name) => Some(service.remotes.writable(name.as_deref())?),
        None => None,
    };
    let started = Instant::now();
    let ensured = service.ensure_indexed(path, true).await?;
    let root = ensured.located.root.to_string_lossy().into_owned();
    if let hgd_daemon::service::Freshness::Wait(ticket) = ensured.freshness {
        let mut waiter = service.waiter(&root, ticket)?;
        let mut said = Instant::now();
        while let Some(progress) = service.wait_step(&mut waiter).await? {
            if said.elapsed().as_secs() >= 10 {
                said = Instant::now();
                eprintln!(
                    "hgd: {}: {} of {} blocks",
                    progress.phase, progress.done, progress.total
                );
            }
        }
    }
    let copied = service.blocks_from_remotes();
    let record = service.record_of(&root);
    let commit = record.and_then(|r| r.indexed_commit).unwrap_or_default();
    let publications = match remotes {
        Some(remotes) => service.publish_to(&root, &remotes, None).await?,
        None => Vec::new(),
    };
    // The summary goes to stderr; stdout is what `hgd publish` prints, so `hgd index
    // --publish` prints the same whether or not a daemon ran it.
    eprintln!(
        "hgd: indexed {root} at {}: {} blocks embedded, {copied} copied from remotes, in {:.1}s",
        commit.get(..10).unwrap_or(&commit),
        service.blocks_embedded(),
        started.elapsed().as_secs_f64()
    );
    if json {
        println!("{}", serde_json::to_string_pretty(&publications)?);
    } else {
        for p in &publications {
            println!("{p}");
        }
    }
    Ok(())
}

fn run_daemon(home: Home) -> Result<()> {
    configure_process()?;
    let lock = std::sync::Arc::new(server::lock_home(&home)?);
    hgd_daemon::logfile::enable_rotation();
    // A daemon outlives the folder it was started from (a client's, which may be deleted): with
    // that folder gone, git's discovery, which reads the working directory, failed for every
    // repository. Requests carry absolute paths, so the daemon works from `/`, with the paths it
    // was given relative to where it started made absolute first (the config file is read).
    for var in ["HGD_MODEL_DIR", "HGD_ORT_DYLIB", "HGD_CONFIG"] {
        if let Some(path) = std::env::var_os(var).filter(|v| !v.is_empty()) {
            if let Ok(absolute) = std::path::absolute(&path) {
                // Single-threaded still: no other thread reads the environment yet.
                std::env::set_var(var, absolute);
            }
        }
    }
    std::env::set_current_dir("/").context("change to the root folder")?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("start the async runtime")?;
    // Shared, not moved: the lock is held until the runtime's blocking threads are done below.
    let held = lock.clone();
    let result = runtime.block_on(async move {
        tracing::info!(
            "hgd daemon {} (pid {}) on {}",
            env!("CARGO_PKG_VERSION"),
            std::process::id(),
            home.root().display()
        );
        let shutdown = CancellationToken::new();
        let service = start_service(&home, shutdown.clone(), true).await?;
        hgd_daemon::search::start_query_thread();
        let listener = server::bind(&home)?;
        tokio::spawn(shutdown_on_signal(shutdown));
        // Accepting on a worker, not on this thread: a connection's task then starts on the
        // worker that accepted it instead of waking another thread, a hop that cost a search
        // 0.1-0.2 ms (a sleeping CPU takes that long to wake on this machine).
        tokio::spawn(server::serve(home, held, listener, service))
            .await
            .context("the accept loop stopped")?;
        anyhow::Ok(())
    });
    // A job still on a blocking thread saw the cancel flag; its pointer was not advanced, so it is
    // safe not to wait long for it.
    runtime.shutdown_timeout(std::time::Duration::from_secs(2));
    if !hgd_daemon::search::wait_for_queries(std::time::Duration::from_secs(2)) {
        tracing::warn!("a query embedding was still running at exit");
    }
    result?;
    if server::REPLACED.load(std::sync::atomic::Ordering::Relaxed) {
        anyhow::bail!(
            "stopped: its executable was replaced by another version, which the next client (or the service manager) starts"
        );
    }
    Ok(())
}

/// The embedder (made on a blocking thread: it reads the model), the store and the service.
async fn start_service(
    home: &Home,
    shutdown: CancellationToken,
    publish_after_jobs: bool,
) -> Result<std::sync::Arc<Service>> {
    let embedder = {
        let runtime_path = embed::runtime_path(home);
        let model_dir = home.model_dir();
        tokio::task::spawn_blocking(move || {
            Embedder::open(&runtime_path, &model_dir, &EmbedOptions::default())
        })
        .await??
    };
    let config = embedder.config().clone();
    let store = Store::open(&home.db_dir(), &config.id(), config.dims).await?;
    Ok(Service::start(home.clone(), store, embedder, shutdown, publish_after_jobs).await?)
}

/// SIGTERM (a service manager's stop, logout), SIGINT (Ctrl-C in `hgd daemon`) or SIGHUP (the
/// terminal that ran `hgd daemon` closed): stop accepting, finish what is open, remove the socket.
async fn shutdown_on_signal(shutdown: CancellationToken) {
    use tokio::signal::unix::{signal, SignalKind};
    let (Ok(mut term), Ok(mut int), Ok(mut hup)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
        signal(SignalKind::hangup()),
    ) else {
        tracing::warn!("cannot install signal handlers");
        return;
    };
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
        _ = hup.recv() => tracing::info!("SIGHUP: shutting down"),
        _ = shutdown.cancelled() => return,
    }
    shutdown.cancel();
}

fn init_logging(log_file: Option<std::path::PathBuf>) {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HGD_LOG").unwrap_or_else(|_| {
        tracing_subscriber::EnvFilter::new("info,lance=warn,lancedb=warn,ort=warn")
    });
    let writer = hgd_daemon::logfile::RotatingStderr::new(
        log_file,
        hgd_daemon::logfile::max_bytes_from_env(),
    );
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(writer)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
}
