//! `hgd`: the thin client. It parses flags, finds the repository, asks the daemon (starting it when
//! needed) and prints. It links neither LanceDB nor ONNX Runtime, so it starts in milliseconds.

mod connect;
mod hooks;
mod mcp;
mod printer;
mod remote;
mod service;

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use connect::Connection;
use hgd_protocol::home::Home;
use hgd_protocol::{ErrorCode, Request, Response, SearchFilter, SearchMode};
use printer::{relative_path, ColorChoice, Printer};

#[derive(Parser)]
#[command(
    name = "hgd",
    version,
    about = "Semantic code search over git repositories, served by a background daemon",
    after_help = "Exit status: 0 results found, 1 no results, 2 error (as grep)."
)]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Search the repository containing PATH, restricted to PATH's subtree.
    #[command(after_help = "Examples:
  hgd search \"where are the git hooks installed\"
  hgd search -t py --exclude tests/ \"retry with exponential backoff\"
  hgd search -l -n 20 \"database migrations\"      (files only)
  hgd search --json -c \"parse the config file\"   (JSON without content)
  hgd search src/auth.py#check_token               (code like that function)
  hgd search src/auth.py:120                       (code like the block at line 120)

Exit status: 0 results found, 1 no results, 2 error.")]
    Search {
        /// What you are looking for, in words or code; or a block of a file, for code like it:
        /// FILE#NAME, FILE:LINE or FILE.
        query: String,
        /// Folder to search (default: the current directory).
        path: Option<PathBuf>,
        /// Number of results (default 10, or `results` in the config file).
        #[arg(short = 'n', long = "num")]
        num: Option<usize>,
        /// Print a JSON array of results (hygrep's fields: file, line, end_line, type, name, score, content).
        #[arg(short = 'j', long)]
        json: bool,
        /// JSON without each result's content (implies --json).
        #[arg(short = 'c', long)]
        compact: bool,
        /// Print only the files with results, each once, best first.
        #[arg(short = 'l', long = "files-only")]
        files_only: bool,
        /// Print nothing: the exit status says whether anything was found.
        #[arg(short = 'q', long)]
        quiet: bool,
        /// Leave out results scoring below this (scores run from 1 for the best result down).
        #[arg(long = "threshold", visible_alias = "min-score", value_name = "SCORE")]
        threshold: Option<f32>,
        /// Only files of this language (python, rust, …) or extension (py, rs, …); repeatable.
        #[arg(short = 't', long = "type", value_name = "TYPE")]
        types: Vec<String>,
        /// Leave out files matching this gitignore-style glob, relative to the searched folder;
        /// repeatable.
        #[arg(long, value_name = "GLOB")]
        exclude: Vec<String>,
        /// Only source code: no Markdown or other plain-text files.
        #[arg(long)]
        code_only: bool,
        /// Content lines shown per result in text output.
        #[arg(short = 'C', long = "lines", default_value_t = 4)]
        lines: usize,
        /// When to colour the output.
        #[arg(long, value_enum, default_value_t = ColorChoice::Auto)]
        color: ColorChoice,
        /// Channels: hybrid (words and meaning, ranked), semantic (meaning only) or lexical
        /// (words, names and paths only).
        #[arg(long, value_enum, default_value_t = Mode::Hybrid)]
        mode: Mode,
    },
    /// Track PATH (default: the current directory) and wait until HEAD is indexed there.
    #[command(
        after_help = "With --publish and no daemon running, one process indexes, publishes and
exits (for CI); with a daemon running, the daemon does both."
    )]
    Index {
        path: Option<PathBuf>,
        /// Return as soon as the daemon has the request.
        #[arg(long, conflicts_with = "publish")]
        no_wait: bool,
        /// Then publish HEAD's blocks to the remotes (as `hgd publish`).
        #[arg(long)]
        publish: bool,
        /// Publish to this remote only.
        #[arg(long, requires = "publish")]
        remote: Option<String>,
        /// With --publish: print what was published as JSON.
        #[arg(short = 'j', long, requires = "publish")]
        json: bool,
    },
    /// Add the blocks of HEAD's files (PATH's repository, indexed first) that the remotes lack,
    /// so other hgd homes copy them instead of embedding.
    #[command(after_help = "Examples:
  hgd remote add team s3://my-bucket/hgd --region eu-west-1
  hgd publish                    every remote that is not read-only
  hgd publish --remote team")]
    Publish {
        path: Option<PathBuf>,
        /// Only this remote (default: every one not read-only).
        #[arg(long)]
        remote: Option<String>,
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Shared indexes on object storage (S3 or S3-compatible): jobs copy the blocks of blobs a
    /// remote has instead of embedding them. Credentials come from the AWS environment
    /// variables and profile files; hgd stores none.
    #[command(after_help = "Examples:
  hgd remote add team s3://my-bucket/hgd --region eu-west-1
  hgd remote add local s3://hgd/index --endpoint http://127.0.0.1:9000 --allow-http
  hgd remote add ci s3://my-bucket/hgd --read-only
  hgd remote list
  hgd remote remove team")]
    Remote {
        #[command(subcommand)]
        action: RemoteAction,
    },
    /// Bring PATH's repository (default: the current one) up to date, then compare its stored
    /// blocks with HEAD: missing, stale, orphaned or duplicated blocks and broken vectors.
    /// Exit status 1 when they differ.
    Check {
        path: Option<PathBuf>,
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Show the daemon and every tracked repository.
    Status {
        #[arg(long)]
        json: bool,
    },
    /// Install or remove the git hooks that keep the index current after commits, merges,
    /// checkouts and rewrites.
    Hooks {
        #[command(subcommand)]
        action: HooksAction,
    },
    /// Tell a running daemon that HEAD of PATH's repository may have moved (what the hooks run).
    /// Never starts the daemon and never fails: a daemon that is down catches up when it starts.
    Notify { path: Option<PathBuf> },
    /// Run the daemon in the foreground.
    Daemon,
    /// Stop the daemon.
    Stop,
    /// Install the ONNX Runtime library and the default model (idempotent).
    Setup,
    /// List the tracked repositories: state, blocks, indexed commit.
    List {
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Stop tracking a repository and delete its index, reclaiming the space.
    Forget {
        /// The repository (default: the one containing the current directory); it may no
        /// longer exist on disk.
        path: Option<PathBuf>,
    },
    /// Show the embedding model: its name, where it is, what it computes.
    Model,
    /// Print the effective configuration and where each value comes from (the config file,
    /// an environment variable, or the default).
    Config,
    /// Print a shell completion script: `hgd completions bash > ~/.local/share/bash-completion/completions/hgd`.
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// Print the man page (roff): `hgd man > ~/.local/share/man/man1/hgd.1`.
    Man,
    /// Serve the Model Context Protocol on stdin/stdout (tools: search, similar, status), for
    /// coding agents.
    #[command(
        after_help = "Register it with an agent that starts MCP servers as commands, e.g.:
  claude mcp add hgd -- hgd mcp
  {\"mcpServers\": {\"hgd\": {\"command\": \"hgd\", \"args\": [\"mcp\"]}}}"
    )]
    Mcp,
    /// Run the daemon as a service: a launchd agent on macOS, a systemd user unit on Linux.
    /// Installed, it starts at login and again after a crash, and hgd no longer starts a
    /// daemon itself.
    #[command(after_help = "Examples:
  hgd service install             a launchd agent (macOS) or systemd user unit (Linux), started now
  hgd service install --dry-run   print it instead
  hgd service status
  hgd service uninstall")]
    Service {
        #[command(subcommand)]
        action: ServiceAction,
    },
}

#[derive(Subcommand)]
enum ServiceAction {
    /// Write the service definition and start it (idempotent).
    Install {
        /// Print the definition instead of installing it.
        #[arg(long)]
        dry_run: bool,
        /// The service manager (default: this platform's).
        #[arg(long, value_enum)]
        manager: Option<service::Manager>,
    },
    /// Stop the service and remove its definition (idempotent).
    Uninstall {
        /// Print what would be removed.
        #[arg(long)]
        dry_run: bool,
        #[arg(long, value_enum)]
        manager: Option<service::Manager>,
    },
    /// Whether the service is installed and running.
    Status {
        #[arg(long, value_enum)]
        manager: Option<service::Manager>,
    },
}

#[derive(Subcommand)]
enum RemoteAction {
    /// Name a LanceDB location on object storage in the config file.
    Add {
        name: String,
        /// s3://BUCKET/PREFIX
        uri: String,
        /// An S3-compatible server's URL (MinIO, R2, a local test server).
        #[arg(long)]
        endpoint: Option<String>,
        #[arg(long)]
        region: Option<String>,
        /// Plain HTTP to the endpoint (a local server).
        #[arg(long)]
        allow_http: bool,
        /// Only consume from it; never publish to it.
        #[arg(long, conflicts_with = "publish")]
        read_only: bool,
        /// The daemon publishes the blocks each indexing job adds.
        #[arg(long)]
        publish: bool,
    },
    /// List the remotes of the config file.
    List {
        #[arg(short = 'j', long)]
        json: bool,
    },
    /// Remove a remote from the config file (what it holds stays).
    Remove { name: String },
}

#[derive(Subcommand)]
enum HooksAction {
    /// Write post-commit, post-merge, post-checkout and post-rewrite hooks (existing hooks are kept
    /// and run after hgd's).
    Install {
        /// The repository (default: the current directory).
        #[arg(long)]
        repo: Option<PathBuf>,
    },
    /// Remove hgd's hooks and restore the ones they replaced.
    Uninstall {
        #[arg(long)]
        repo: Option<PathBuf>,
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(code) => code,
        Err(e) => {
            eprintln!("hgd: {e:#}");
            ExitCode::from(2)
        }
    }
}

/// Prints `lines` to stdout. A reader that stops early (`hgd status | head -1`) closes the pipe;
/// like grep, hgd then stops printing without an error (Rust's `println!` would panic).
fn print_lines<I: IntoIterator<Item = String>>(lines: I) -> Result<()> {
    use std::io::Write;
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = lines
        .into_iter()
        .try_for_each(|line| writeln!(out, "{line}"))
        .and_then(|_| out.flush());
    match written {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(e.into()),
        _ => Ok(()),
    }
}

fn run(cli: Cli) -> Result<ExitCode> {
    let home = Home::from_env()?;
    match cli.command {
        Cmd::Search {
            query,
            path,
            num,
            json,
            compact,
            files_only,
            quiet,
            threshold,
            types,
            exclude,
            code_only,
            lines,
            color,
            mode,
        } => search(
            &home,
            &query,
            path,
            SearchOptions {
                num: match num {
                    Some(n) => n,
                    None => hgd_protocol::config::Config::load()?.results.value,
                },
                output: if quiet {
                    Output::Quiet
                } else if files_only {
                    Output::Files {
                        json: json || compact,
                    }
                } else if json || compact {
                    Output::Json { compact }
                } else {
                    Output::Text
                },
                threshold,
                filter: SearchFilter {
                    types,
                    exclude,
                    code_only,
                },
                lines,
                color,
                mode: mode.into(),
            },
        ),
        Cmd::Index {
            path,
            no_wait,
            publish,
            remote,
            json,
        } => {
            if publish {
                index_and_publish(&home, path, remote, json)
            } else {
                index(&home, path, no_wait)
            }
        }
        Cmd::Publish { path, remote, json } => {
            let dir = target_dir(path)?;
            let mut conn = Connection::connect_or_start(&home)?;
            publish_with(&mut conn, &dir, remote, json)
        }
        Cmd::Remote { action } => {
            let lines = match action {
                RemoteAction::Add {
                    name,
                    uri,
                    endpoint,
                    region,
                    allow_http,
                    read_only,
                    publish,
                } => remote::add(&hgd_protocol::config::Remote {
                    name,
                    uri: uri.trim_end_matches('/').to_owned(),
                    endpoint,
                    region,
                    allow_http,
                    read_only,
                    publish,
                })?,
                RemoteAction::List { json } => remote::list(json)?,
                RemoteAction::Remove { name } => remote::remove(&name)?,
            };
            print_lines(lines)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Status { json } => status(&home, json),
        Cmd::Check { path, json } => check(&home, path, json),
        Cmd::Hooks { action } => {
            let lines = match action {
                HooksAction::Install { repo } => {
                    let repo = target_dir(repo)?;
                    let exe = std::env::current_exe().context("find the hgd executable")?;
                    hooks::install(&repo, &exe)?
                }
                HooksAction::Uninstall { repo } => hooks::uninstall(&target_dir(repo)?)?,
            };
            print_lines(lines)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Notify { path } => {
            notify(&home, path);
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Daemon => exec_daemon("daemon"),
        Cmd::Setup => exec_daemon("setup"),
        Cmd::Stop => stop(&home),
        Cmd::List { json } => list(&home, json),
        Cmd::Forget { path } => forget(&home, path),
        Cmd::Model => model(&home),
        Cmd::Config => config(&home),
        Cmd::Completions { shell } => {
            use clap::CommandFactory;
            let mut text = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "hgd", &mut text);
            print_lines([String::from_utf8_lossy(&text).trim_end().to_owned()])?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Man => {
            use clap::CommandFactory;
            let mut text = Vec::new();
            clap_mangen::Man::new(Cli::command()).render(&mut text)?;
            print_lines([String::from_utf8_lossy(&text).trim_end().to_owned()])?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Mcp => {
            mcp::serve(&home)?;
            Ok(ExitCode::SUCCESS)
        }
        Cmd::Service { action } => {
            let lines = match action {
                ServiceAction::Install { dry_run, manager } => {
                    let manager = manager.unwrap_or_else(service::Manager::native);
                    if dry_run {
                        let text = service::Definition::for_home(&home)?.render(manager);
                        vec![text.trim_end().to_owned()]
                    } else {
                        service::install(&home, manager)?
                    }
                }
                ServiceAction::Uninstall { dry_run, manager } => {
                    let manager = manager.unwrap_or_else(service::Manager::native);
                    if dry_run {
                        vec![format!(
                            "would stop the service and remove {}",
                            manager.definition_path()?.display()
                        )]
                    } else {
                        service::uninstall(&home, manager)?
                    }
                }
                ServiceAction::Status { manager } => {
                    service::status(&home, manager.unwrap_or_else(service::Manager::native))?
                }
            };
            print_lines(lines)?;
            Ok(ExitCode::SUCCESS)
        }
    }
}

/// `hgd daemon` and `hgd setup` are the daemon binary's job; replace this process with it.
fn exec_daemon(subcommand: &str) -> Result<ExitCode> {
    use std::os::unix::process::CommandExt;
    let bin = connect::daemon_binary();
    let err = std::process::Command::new(&bin).arg(subcommand).exec();
    bail!("cannot run {}: {err}", bin.display())
}

/// The absolute folder to work on, which must be inside a git work tree.
fn target_dir(path: Option<PathBuf>) -> Result<PathBuf> {
    let path = path.unwrap_or_else(|| PathBuf::from("."));
    let abs = path
        .canonicalize()
        .with_context(|| format!("{}: no such file or directory", path.display()))?;
    let mut dir: &Path = &abs;
    loop {
        if dir.join(".git").exists() {
            return Ok(abs);
        }
        match dir.parent() {
            Some(parent) => dir = parent,
            None => bail!(
                "{} is not in a git repository; run hgd inside a git work tree, or give a folder in one",
                path.display()
            ),
        }
    }
}

fn daemon_error(code: ErrorCode, message: String) -> anyhow::Error {
    match code {
        ErrorCode::NotSetUp => anyhow::anyhow!("{message}\nrun `hgd setup` first"),
        ErrorCode::VersionMismatch | ErrorCode::BadRequest | ErrorCode::NotARepository => {
            anyhow::anyhow!(message)
        }
        _ => anyhow::anyhow!(
            "{message}\n(the daemon's side: {})",
            connect::home_log_hint()
        ),
    }
}

/// The channels of a search, as the command line names them.
#[derive(Clone, Copy, clap::ValueEnum)]
enum Mode {
    Hybrid,
    Semantic,
    Lexical,
}

impl From<Mode> for SearchMode {
    fn from(m: Mode) -> SearchMode {
        match m {
            Mode::Hybrid => SearchMode::Hybrid,
            Mode::Semantic => SearchMode::Semantic,
            Mode::Lexical => SearchMode::Lexical,
        }
    }
}

/// What `hgd search` prints.
#[derive(Clone, Copy)]
enum Output {
    Text,
    Json { compact: bool },
    Files { json: bool },
    Quiet,
}

struct SearchOptions {
    num: usize,
    output: Output,
    threshold: Option<f32>,
    filter: SearchFilter,
    lines: usize,
    color: ColorChoice,
    mode: SearchMode,
}

fn search(
    home: &Home,
    query: &str,
    path: Option<PathBuf>,
    opts: SearchOptions,
) -> Result<ExitCode> {
    let SearchOptions {
        num,
        output,
        threshold,
        filter,
        lines,
        color,
        mode,
    } = opts;
    let dir = path.unwrap_or_else(|| PathBuf::from("."));
    let like = block_ref(query);
    if let (Some(like), false) = (&like, matches!(output, Output::Quiet)) {
        // Say so: a query that happens to name an existing file changes meaning.
        eprintln!(
            "hgd: searching for code like {}{} (the query names a file here)",
            like.file,
            match (&like.name, like.line) {
                (Some(name), _) => format!("#{name}"),
                (None, Some(line)) => format!(":{line}"),
                (None, None) => String::new(),
            }
        );
    }
    let Found {
        repo_root,
        hits,
        mode: answered,
        warnings,
    } = ask_search(home, &dir, query, num, mode, filter, like)?;
    for warning in warnings {
        eprintln!("hgd: warning: {warning}");
    }
    let hits: Vec<_> = match threshold {
        Some(min) => hits.into_iter().filter(|h| h.score >= min).collect(),
        None => hits,
    };
    let cwd = std::env::current_dir()?
        .canonicalize()
        .context("the current directory")?;
    let display: Vec<String> = hits
        .iter()
        .map(|h| relative_path(&Path::new(&repo_root).join(&h.path), &cwd))
        .collect();
    let printer = Printer::new(color.enabled(), lines);
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let written = match output {
        Output::Text => printer.text(&mut out, &hits, &display),
        Output::Json { compact } => printer.json(&mut out, &hits, &display, answered, compact),
        Output::Files { json } => printer.files(&mut out, &display, json),
        Output::Quiet => Ok(()),
    };
    match written.and_then(|_| out.flush()) {
        Ok(()) => {}
        // `hgd search ... | head` closes the pipe early; that is not an error.
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
        Err(e) => return Err(e.into()),
    }
    Ok(if hits.is_empty() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

/// What the daemon answered to a search.
struct Found {
    repo_root: String,
    hits: Vec<hgd_protocol::Hit>,
    mode: SearchMode,
    warnings: Vec<String>,
}

/// One search of the folder `dir` through the daemon (started if needed), with a progress bar
/// on a terminal while it indexes first.
fn ask_search(
    home: &Home,
    dir: &Path,
    query: &str,
    limit: usize,
    mode: SearchMode,
    filter: SearchFilter,
    like: Option<hgd_protocol::BlockRef>,
) -> Result<Found> {
    let dir = target_dir(Some(dir.to_path_buf()))?;
    let mut conn = Connection::connect_or_start(home)?;
    let mut bar = ProgressDisplay::new();
    let response = conn.request(
        Request::Search {
            path: dir.to_string_lossy().into_owned(),
            query: query.to_owned(),
            limit,
            mode,
            filter,
            like,
        },
        |p| bar.update(p),
    )?;
    bar.finish();
    match response {
        Response::Search {
            repo_root,
            hits,
            mode,
            warnings,
        } => Ok(Found {
            repo_root,
            hits,
            mode,
            warnings,
        }),
        Response::Error { code, message } => Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    }
}

/// A query naming a block of an existing file asks for similar code: `FILE#NAME` (the block
/// named NAME), `FILE:LINE` (the block holding that line) or `FILE` (the whole file), with FILE
/// relative to the current directory.
fn block_ref(query: &str) -> Option<hgd_protocol::BlockRef> {
    let file = |path: &str| {
        let path = Path::new(path);
        path.is_file()
            .then(|| std::path::absolute(path).ok())
            .flatten()
            .map(|p| p.to_string_lossy().into_owned())
    };
    if let Some((path, name)) = query.rsplit_once('#') {
        if let (Some(file), false) = (file(path), name.is_empty()) {
            return Some(hgd_protocol::BlockRef {
                file,
                line: None,
                name: Some(name.to_owned()),
            });
        }
    }
    if let Some((path, line)) = query.rsplit_once(':') {
        if let (Some(file), Ok(line)) = (file(path), line.parse::<u32>()) {
            return Some(hgd_protocol::BlockRef {
                file,
                line: Some(line),
                name: None,
            });
        }
    }
    file(query).map(|file| hgd_protocol::BlockRef {
        file,
        line: None,
        name: None,
    })
}

fn index(home: &Home, path: Option<PathBuf>, no_wait: bool) -> Result<ExitCode> {
    let dir = target_dir(path)?;
    let mut conn = Connection::connect_or_start(home)?;
    let mut bar = ProgressDisplay::new();
    let response = conn.request(
        Request::Index {
            path: dir.to_string_lossy().into_owned(),
            wait: !no_wait,
        },
        |p| bar.update(p),
    )?;
    bar.finish();
    match response {
        Response::Indexed {
            repo,
            commit,
            blocks,
        } => {
            if no_wait {
                eprintln!("hgd: indexing {repo} in the background");
            } else if std::io::stderr().is_terminal() {
                let short = commit.get(..10).unwrap_or(&commit);
                eprintln!("hgd: {repo} indexed at {short}: {blocks} blocks");
            }
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { code, message } => Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    }
}

/// `hgd index --publish`: a running daemon indexes and publishes; with none, one process
/// (`hgd-daemon index --publish`) does both and exits, leaving nothing running (for CI).
fn index_and_publish(
    home: &Home,
    path: Option<PathBuf>,
    remote: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let dir = target_dir(path)?;
    if let Some(mut conn) = Connection::try_connect(home) {
        return publish_with(&mut conn, &dir, remote, json);
    }
    use std::os::unix::process::CommandExt;
    let bin = connect::daemon_binary();
    let mut command = std::process::Command::new(&bin);
    command.arg("index").arg(&dir).arg("--publish");
    if let Some(remote) = remote {
        command.arg("--remote").arg(remote);
    }
    if json {
        command.arg("--json");
    }
    let err = command.exec();
    bail!("cannot run {}: {err}", bin.display())
}

/// Asks the daemon to bring `dir`'s repository up to date and publish it; prints what each
/// remote got.
fn publish_with(
    conn: &mut Connection,
    dir: &Path,
    remote: Option<String>,
    json: bool,
) -> Result<ExitCode> {
    let mut bar = ProgressDisplay::new();
    let response = conn.request(
        Request::Publish {
            path: dir.to_string_lossy().into_owned(),
            remote,
        },
        |p| bar.update(p),
    );
    bar.finish();
    let publications = match response? {
        Response::Published { publications } => publications,
        Response::Error { code, message } => return Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    };
    if json {
        print_lines([serde_json::to_string_pretty(&publications)?])?;
    } else {
        print_lines(publications.iter().map(|p| p.to_string()))?;
    }
    Ok(ExitCode::SUCCESS)
}

/// The running daemon's status, `None` when no daemon runs.
fn daemon_status(home: &Home) -> Result<Option<hgd_protocol::Status>> {
    let Some(mut conn) = Connection::try_connect(home) else {
        return Ok(None);
    };
    match conn.request(Request::Status, |_| {})? {
        Response::Status(status) => Ok(Some(status)),
        Response::Error { code, message } => Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    }
}

fn status(home: &Home, json: bool) -> Result<ExitCode> {
    let Some(status) = daemon_status(home)? else {
        print_lines([if json {
            "{\"running\":false}".to_owned()
        } else {
            format!("hgd daemon: not running ({})", home.socket().display())
        }])?;
        return Ok(ExitCode::SUCCESS);
    };
    if json {
        let mut value = serde_json::to_value(&status)?;
        value["running"] = serde_json::Value::Bool(true);
        print_lines([serde_json::to_string_pretty(&value)?])?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut lines = vec![format!(
        "hgd daemon {}: pid {}, up {}s, {} MiB resident ({} MiB search indexes), model {}, {} blocks embedded since start, index {} MiB",
        status.version,
        status.pid,
        status.uptime_secs,
        status.resident_bytes >> 20,
        status.search_index_bytes >> 20,
        status.model,
        status.blocks_embedded,
        status.store_bytes >> 20
    )];
    for repo in &status.repos {
        let short = |c: &Option<String>| {
            c.as_deref()
                .map(|c| c.get(..10).unwrap_or(c).to_owned())
                .unwrap_or_else(|| "-".into())
        };
        let scopes = if repo.scopes.iter().any(String::is_empty) {
            "(all)".to_owned()
        } else {
            repo.scopes.join(", ")
        };
        lines.push(format!(
            "{}: {} (indexed {}, HEAD {}), {} blocks, scopes {}",
            repo.root,
            repo.state,
            short(&repo.indexed_commit),
            short(&repo.head),
            repo.blocks,
            scopes
        ));
        if let Some(p) = &repo.progress {
            lines.push(format!("  {}: {}/{} blocks", p.phase, p.done, p.total));
        }
        if let Some(error) = &repo.error {
            lines.push(format!("  error: {error}"));
        }
    }
    for remote in &status.remotes {
        lines.push(format!(
            "remote {} ({}{}): {}, {} blocks copied, {} refused, {} published",
            remote.name,
            remote.uri,
            if remote.read_only { ", read-only" } else { "" },
            remote.state,
            remote.blocks_copied,
            remote.blocks_refused,
            remote.blocks_published
        ));
        if let Some(error) = &remote.error {
            lines.push(match remote.state.as_str() {
                "unreachable" => format!("  error: {error} (jobs embed locally meanwhile)"),
                _ => format!(
                    "  error: {error} (lookups still work; `hgd publish` sends what was missed)"
                ),
            });
        }
    }
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}

fn list(home: &Home, json: bool) -> Result<ExitCode> {
    // The daemon knows what it tracks (its records are in its store): start it if needed.
    let repos = {
        let mut conn = Connection::connect_or_start(home)?;
        match conn.request(Request::Status, |_| {})? {
            Response::Status(status) => status.repos,
            Response::Error { code, message } => return Err(daemon_error(code, message)),
            other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
        }
    };
    if json {
        print_lines([serde_json::to_string_pretty(&repos)?])?;
        return Ok(ExitCode::SUCCESS);
    }
    if repos.is_empty() {
        eprintln!("hgd: no repository is tracked (a search or `hgd index` in one tracks it)");
        return Ok(ExitCode::SUCCESS);
    }
    print_lines(repos.iter().map(|r| {
        let commit = r
            .indexed_commit
            .as_deref()
            .map_or("-", |c| c.get(..10).unwrap_or(c));
        format!("{}\t{}\t{} blocks\t{}", r.root, r.state, r.blocks, commit)
    }))?;
    Ok(ExitCode::SUCCESS)
}

fn check(home: &Home, path: Option<PathBuf>, json: bool) -> Result<ExitCode> {
    let dir = target_dir(path)?;
    let mut conn = Connection::connect_or_start(home)?;
    let mut bar = ProgressDisplay::new();
    let response = conn.request(
        Request::Check {
            path: dir.to_string_lossy().into_owned(),
        },
        |p| bar.update(p),
    );
    bar.finish();
    let report = match response? {
        Response::Checked(report) => report,
        Response::Error { code, message } => return Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    };
    if json {
        print_lines([serde_json::to_string_pretty(&report)?])?;
    } else {
        let short = |c: &Option<String>| {
            c.as_deref()
                .map_or("-".to_owned(), |c| c.get(..10).unwrap_or(c).to_owned())
        };
        let mut lines = vec![format!(
            "{}: {} files, {} blocks; HEAD {}, indexed {}",
            report.repo,
            report.files,
            report.blocks,
            short(&report.commit),
            short(&report.indexed_commit)
        )];
        for (what, paths) in [
            ("missing", &report.missing),
            ("stale", &report.stale),
            ("orphaned", &report.orphans),
            ("duplicated", &report.duplicates),
        ] {
            lines.extend(paths.iter().map(|p| format!("{what}: {p}")));
        }
        if report.bad_vectors > 0 {
            lines.push(format!("broken vectors: {}", report.bad_vectors));
        }
        lines.push(if report.is_consistent() {
            "consistent".to_owned()
        } else {
            "NOT consistent: `hgd forget` then `hgd index` rebuilds the index".to_owned()
        });
        print_lines(lines)?;
    }
    Ok(if report.is_consistent() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

fn forget(home: &Home, path: Option<PathBuf>) -> Result<ExitCode> {
    let path = path.unwrap_or_else(|| PathBuf::from("."));
    let path = std::path::absolute(&path).with_context(|| format!("{}", path.display()))?;
    let mut conn = Connection::connect_or_start(home)?;
    match conn.request(
        Request::Forget {
            path: path.to_string_lossy().into_owned(),
        },
        |_| {},
    )? {
        Response::Forgotten {
            repo,
            blocks,
            freed_bytes,
        } => {
            let freed = if freed_bytes >= 1 << 20 {
                format!("{:.1} MiB", freed_bytes as f64 / (1 << 20) as f64)
            } else {
                format!("{} KiB", freed_bytes >> 10)
            };
            print_lines([format!(
                "forgot {repo}: {blocks} blocks deleted, {freed} freed"
            )])?;
            Ok(ExitCode::SUCCESS)
        }
        Response::Error { code, message } => Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    }
}

/// The model: its folder and `model.toml` from the home (no daemon needed), and the id the
/// running daemon uses.
fn model(home: &Home) -> Result<ExitCode> {
    let dir = home.model_dir();
    let mut lines = vec![format!("folder: {}", dir.display())];
    match std::fs::read_to_string(dir.join("model.toml")) {
        Ok(toml) => lines.extend(
            toml.lines()
                .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
                .map(|l| format!("  {}", l.trim())),
        ),
        Err(_) => lines.push("  not installed: run `hgd setup`".into()),
    }
    for file in ["model.onnx", "tokenizer.json"] {
        let path = dir.join(file);
        lines.push(match std::fs::metadata(&path) {
            Ok(m) => format!("{file}: {:.1} MB", m.len() as f64 / 1e6),
            Err(_) => format!("{file}: missing"),
        });
    }
    lines.push(match daemon_status(home)? {
        Some(status) => format!(
            "in use by the daemon (pid {}): {}",
            status.pid, status.model
        ),
        None => "daemon: not running".into(),
    });
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}

fn config(home: &Home) -> Result<ExitCode> {
    let config = hgd_protocol::config::Config::load()?;
    let mut lines = vec![format!(
        "# {} ({}; HGD_CONFIG names another)",
        config.path.display(),
        if config.file_exists {
            "read"
        } else {
            "not found: every value is a default or from the environment"
        }
    )];
    let model = config
        .model
        .value
        .clone()
        .unwrap_or_else(|| home.model_dir());
    lines.push(format!(
        "model = {:?}    # {}",
        model.display().to_string(),
        config.model.source
    ));
    lines.push(match config.threads.value {
        Some(n) => format!("threads = {n}    # {}", config.threads.source),
        None => format!(
            "threads = {}    # default: all cores",
            std::thread::available_parallelism().map_or(1, |n| n.get())
        ),
    });
    lines.push(format!(
        "results = {}    # {}",
        config.results.value, config.results.source
    ));
    lines.push(format!(
        "exclude = {:?}    # {} (each repository's .hgdignore adds its own)",
        config.exclude.value, config.exclude.source
    ));
    lines.push(format!(
        "max_file_kib = {}    # {}",
        config.max_file_kib.value, config.max_file_kib.source
    ));
    for r in &config.remotes {
        lines.push(format!(
            "[remote.{}]    # config file (`hgd remote`)",
            r.name
        ));
        lines.push(format!("uri = {:?}", r.uri));
        if let Some(endpoint) = &r.endpoint {
            lines.push(format!("endpoint = {endpoint:?}"));
        }
        if let Some(region) = &r.region {
            lines.push(format!("region = {region:?}"));
        }
        for (key, on) in [
            ("allow_http", r.allow_http),
            ("read_only", r.read_only),
            ("publish", r.publish),
        ] {
            if on {
                lines.push(format!("{key} = true"));
            }
        }
    }
    lines.push(format!(
        "# home: {} ({})",
        home.root().display(),
        if std::env::var_os("HGD_HOME").is_some_and(|v| !v.is_empty()) {
            "HGD_HOME"
        } else {
            "default"
        }
    ));
    print_lines(lines)?;
    Ok(ExitCode::SUCCESS)
}

/// Best effort by design: hooks call this after every commit and must never slow or fail git.
fn notify(home: &Home, path: Option<PathBuf>) {
    let Ok(dir) = target_dir(path) else {
        return;
    };
    if let Some(mut conn) = Connection::try_connect(home) {
        let _ = conn.request(
            Request::Notify {
                path: dir.to_string_lossy().into_owned(),
            },
            |_| {},
        );
    }
}

fn stop(home: &Home) -> Result<ExitCode> {
    let Some(mut conn) = Connection::try_connect(home) else {
        eprintln!("hgd: the daemon is not running");
        return Ok(ExitCode::SUCCESS);
    };
    match conn.request(Request::Shutdown, |_| {})? {
        Response::ShuttingDown => {}
        Response::Error { code, message } => return Err(daemon_error(code, message)),
        other => bail!("unexpected reply: {other:?}; the daemon may be another version of hgd: restart it with `hgd stop`"),
    }
    // Return once the daemon has exited (its lock is free), so `hgd stop && hgd daemon` works.
    for _ in 0..400 {
        let lock = std::fs::File::open(home.lock_file());
        if !home.socket().exists() && lock.is_ok_and(|f| f.try_lock().is_ok()) {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(25));
    }
    bail!("the daemon did not stop within 10s; `hgd status` shows its pid, to stop it with kill")
}

/// Indexing progress on a terminal: blocks embedded / total, rate, ETA.
struct ProgressDisplay {
    bar: Option<indicatif::ProgressBar>,
}

impl ProgressDisplay {
    fn new() -> ProgressDisplay {
        ProgressDisplay { bar: None }
    }

    fn update(&mut self, p: &hgd_protocol::Progress) {
        if !std::io::stderr().is_terminal() {
            return;
        }
        let bar = self.bar.get_or_insert_with(|| {
            let bar = indicatif::ProgressBar::new(0);
            bar.set_style(
                indicatif::ProgressStyle::with_template(
                    "{msg:10} [{bar:30}] {pos}/{len} blocks, {per_sec}, ETA {eta}",
                )
                .expect("valid template")
                .progress_chars("=> "),
            );
            bar.enable_steady_tick(Duration::from_millis(200));
            bar
        });
        bar.set_message(p.phase.clone());
        bar.set_length(p.total.max(p.done));
        bar.set_position(p.done);
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}
