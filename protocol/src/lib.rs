//! The wire protocol between the `hgd` client and the `hgd-daemon`, and where hgd keeps its files.
//!
//! Framing is JSON lines: one request per line from the client, one or more response lines from the
//! daemon (progress events end with a final `done` or `error` line). Every request carries the protocol
//! version so an old client talking to a new daemon gets a clear error instead of a misparse.
//!
//! This crate must stay light (serde + directories): the client links it and has to start in
//! milliseconds.

pub mod config;
pub mod home;
pub mod paths;

use serde::{Deserialize, Serialize};

/// Bumped whenever a request or response changes shape.
pub const PROTOCOL_VERSION: u32 = 2;

/// The oldest version a daemon still answers: a version-1 request (no search filter, no
/// similar-code search, no `Forget`) means the same under version 2. A version-2 client talking
/// to a version-1 daemon is told to restart it, rather than having its filters ignored.
pub const OLDEST_PROTOCOL_VERSION: u32 = 1;

/// Longest request line the daemon accepts; longer frames get an error reply.
pub const MAX_FRAME_BYTES: usize = 1 << 20;

/// The longest query a search accepts (a pasted block of code fits; a file does not: search
/// for code like a file with `FILE` or `FILE#NAME` instead).
pub const MAX_QUERY_BYTES: usize = 16 << 10;

/// One request line: `{"v":2,"request":{"type":"search",...}}`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Envelope {
    pub v: u32,
    pub request: Request,
}

impl Envelope {
    pub fn new(request: Request) -> Self {
        Envelope {
            v: PROTOCOL_VERSION,
            request,
        }
    }
}

/// A block of a file, for similar-code search: the block named `name`, the one holding `line`,
/// or with neither the whole file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct BlockRef {
    /// Absolute path of the file.
    pub file: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub line: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
}

/// Which files a search may return.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SearchFilter {
    /// Languages (`python`) or file extensions (`py`); empty: any.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub types: Vec<String>,
    /// Gitignore-style globs, relative to the searched folder, of files to leave out.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub exclude: Vec<String>,
    /// Source code only: no Markdown or other plain-text files.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub code_only: bool,
}

impl SearchFilter {
    pub fn is_empty(&self) -> bool {
        self == &SearchFilter::default()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check; answered with `Response::Pong`.
    Ping,
    /// Bring `path`'s repository up to date, then compare what is stored with HEAD: answered
    /// with `Response::Checked`.
    Check { path: String },
    /// Track `path` (a folder inside a git work tree) and index its repository's HEAD there.
    /// With `wait`, progress events stream until the index is current.
    Index { path: String, wait: bool },
    /// Search the subtree at `path`.
    Search {
        path: String,
        query: String,
        limit: usize,
        /// Which channels to use (older clients send none: hybrid).
        #[serde(default)]
        mode: SearchMode,
        /// Which files may answer, besides being under `path`.
        #[serde(default, skip_serializing_if = "SearchFilter::is_empty")]
        filter: SearchFilter,
        /// Similar-code search: the blocks most like this one, from other files, by its stored
        /// vector (`query` is then only a label).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        like: Option<BlockRef>,
    },
    /// A git hook saw HEAD move: bring the repository containing `path` up to date if it is tracked.
    /// Answered at once; the job runs in the background and bursts coalesce.
    Notify { path: String },
    /// Bring PATH's repository up to date, then add the blocks of HEAD's files that the
    /// remotes (the named one, else every one not read-only) lack.
    Publish {
        path: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        remote: Option<String>,
    },
    /// Per-repository and daemon status.
    Status,
    /// Stop tracking the repository at or containing `path` and delete its index.
    Forget { path: String },
    /// Ask the daemon to exit cleanly.
    Shutdown,
}

/// One response line. A request gets zero or more `Progress` lines, then exactly one final line.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Response {
    Pong {
        version: String,
        pid: u32,
    },
    Progress(Progress),
    Indexed {
        repo: String,
        commit: String,
        blocks: u64,
    },
    /// Reply to `Notify`: whether the repository is tracked (and so a job was queued).
    Notified {
        tracked: bool,
    },
    /// Reply to `Forget`: the repository's blocks are deleted and the store compacted.
    Forgotten {
        repo: String,
        blocks: u64,
        /// How much smaller the database is on disk afterwards.
        freed_bytes: u64,
    },
    Search {
        /// The repository root the result paths are relative to.
        repo_root: String,
        hits: Vec<Hit>,
        /// The channels that answered: `lexical` while a repository's vectors are not there
        /// yet, even when hybrid was asked for.
        #[serde(default)]
        mode: SearchMode,
        /// What the results may be missing (the index is behind HEAD, uncommitted files could
        /// not be read); the client prints these on stderr.
        #[serde(default, skip_serializing_if = "Vec::is_empty")]
        warnings: Vec<String>,
    },
    Status(Status),
    Checked(Consistency),
    /// One entry per remote published to.
    Published {
        publications: Vec<Publication>,
    },
    ShuttingDown,
    Error {
        code: ErrorCode,
        message: String,
    },
}

/// How a repository's stored blocks compare with HEAD (`hgd check`). Consistent when every list
/// is empty and `bad_vectors` is 0; `digest` is equal for two stores holding the same blocks.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Consistency {
    pub repo: String,
    /// HEAD, and the commit the index says it holds.
    pub commit: Option<String>,
    pub indexed_commit: Option<String>,
    /// Files at HEAD under the tracked scopes that hold blocks, and their blocks.
    pub files: u64,
    pub blocks: u64,
    /// Files whose blocks are absent.
    pub missing: Vec<String>,
    /// Files whose stored blocks are not those of HEAD's blob (another version, other cuts).
    pub stale: Vec<String>,
    /// Files with stored blocks that HEAD does not hold (deleted, out of scope, excluded).
    pub orphans: Vec<String>,
    /// Files with the same block stored more than once.
    pub duplicates: Vec<String>,
    /// Blocks whose vector has the wrong length, is not finite or not of unit length.
    pub bad_vectors: u64,
    /// SHA-256 over every stored block (path, lines, kind, name, content), in order.
    pub digest: String,
}

/// What one publish to one remote did.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Publication {
    pub repo: String,
    pub commit: String,
    pub remote: String,
    pub uri: String,
    /// Distinct blobs (with their language) of HEAD's files that have blocks.
    pub blobs: u64,
    /// Of those, the blobs the remote lacked when asked, whose blocks were sent (a publisher
    /// racing this one may have added some of them first: `blocks_added` counts only rows
    /// this publish inserted).
    pub blobs_added: u64,
    pub blocks_added: u64,
    pub seconds: f64,
}

impl std::fmt::Display for Publication {
    /// The line `hgd publish` prints.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "published {} at {} to {} ({}): {} blocks of {} blobs added, {} blobs already there, in {:.1}s",
            self.repo,
            self.commit.get(..10).unwrap_or(&self.commit),
            self.remote,
            self.uri,
            self.blocks_added,
            self.blobs_added,
            self.blobs - self.blobs_added,
            self.seconds
        )
    }
}

/// A remote as `hgd status` shows it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct RemoteStatus {
    pub name: String,
    pub uri: String,
    pub read_only: bool,
    pub publish: bool,
    /// `unused` (not asked since the daemon started), `ok`, `unreachable` (its last lookup
    /// failed: jobs embed locally until it is asked again, a minute later) or `publish failed`
    /// (lookups work; the last publish did not).
    pub state: String,
    /// The failure behind `unreachable` or `publish failed`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Blocks copied from it instead of embedded, since the daemon started.
    pub blocks_copied: u64,
    /// Blocks of blobs it offered whose rows did not match what hgd cuts from the blob (lines,
    /// kind, name, content, vector length), embedded here instead. (Another model's rows are
    /// never offered: lookups ask for this model's only.)
    pub blocks_refused: u64,
    pub blocks_published: u64,
}

impl Consistency {
    pub fn is_consistent(&self) -> bool {
        self.commit == self.indexed_commit
            && self.missing.is_empty()
            && self.stale.is_empty()
            && self.orphans.is_empty()
            && self.duplicates.is_empty()
            && self.bad_vectors == 0
    }
}

impl Response {
    /// Whether this is the last line for its request.
    pub fn is_final(&self) -> bool {
        !matches!(self, Response::Progress(_))
    }

    pub fn error(code: ErrorCode, message: impl Into<String>) -> Self {
        Response::Error {
            code,
            message: message.into(),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ErrorCode {
    /// The frame was not valid JSON or not a known request.
    BadRequest,
    /// The frame was longer than [`MAX_FRAME_BYTES`].
    FrameTooLarge,
    /// The client speaks another protocol version.
    VersionMismatch,
    /// The path is not inside a git work tree.
    NotARepository,
    /// The model or runtime is not installed (`hgd setup`).
    NotSetUp,
    /// The client runs as another user than the daemon.
    PermissionDenied,
    /// Anything else; the message says what.
    Internal,
}

/// Which retrieval channels a search uses.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SearchMode {
    /// Words and meaning together, then the ranking stage.
    #[default]
    Hybrid,
    /// Nearest neighbours by meaning only.
    Semantic,
    /// Code-aware BM25, symbol names and paths only.
    Lexical,
}

impl SearchMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SearchMode::Hybrid => "hybrid",
            SearchMode::Semantic => "semantic",
            SearchMode::Lexical => "lexical",
        }
    }
}

/// Indexing progress for one repository.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Progress {
    pub repo: String,
    pub phase: String,
    /// Blocks embedded so far in this job.
    pub done: u64,
    /// Blocks this job has to embed (grows while files are still being parsed).
    pub total: u64,
    /// True once all files are parsed and `total` is final.
    pub total_known: bool,
}

/// One search result. Paths are relative to the repository root; the client rewrites them
/// relative to the current directory.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Hit {
    pub path: String,
    /// 1-based, inclusive.
    pub line: u32,
    pub end_line: u32,
    pub kind: String,
    pub name: String,
    pub language: String,
    pub score: f32,
    pub content: String,
    /// From an uncommitted (modified or untracked) work-tree file rather than HEAD.
    #[serde(default)]
    pub dirty: bool,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Status {
    pub pid: u32,
    pub version: String,
    pub uptime_secs: u64,
    pub resident_bytes: u64,
    /// Bytes the in-memory search indexes hold, roughly (bounded by `HGD_INDEX_CACHE_MB`).
    #[serde(default)]
    pub search_index_bytes: u64,
    pub model: String,
    /// Blocks embedded since the daemon started (a rename or a branch switch back adds nothing).
    pub blocks_embedded: u64,
    /// Indexing jobs finished since the daemon started (bursts of notifications coalesce).
    pub jobs_run: u64,
    /// Bytes the index occupies on disk (all repositories and models).
    pub store_bytes: u64,
    pub repos: Vec<RepoStatus>,
    #[serde(default)]
    pub remotes: Vec<RemoteStatus>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RepoStatus {
    pub root: String,
    pub scopes: Vec<String>,
    pub indexed_commit: Option<String>,
    pub head: Option<String>,
    /// `idle`, `indexing`, `queued` (a job waits its turn) or `failed`.
    pub state: String,
    pub progress: Option<Progress>,
    pub error: Option<String>,
    pub blocks: u64,
    /// Vectors stored for this repository (one per block).
    pub vectors: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_lines_round_trip() {
        let line = serde_json::to_string(&Envelope::new(Request::Search {
            path: "/r".into(),
            query: "hash a file".into(),
            limit: 5,
            mode: SearchMode::Lexical,
            filter: SearchFilter::default(),
            like: None,
        }))
        .unwrap();
        assert_eq!(
            line,
            r#"{"v":2,"request":{"type":"search","path":"/r","query":"hash a file","limit":5,"mode":"lexical"}}"#
        );
        // A request without a mode (an older client) searches hybrid.
        let old = r#"{"v":1,"request":{"type":"search","path":"/r","query":"q","limit":5}}"#;
        let back: Envelope = serde_json::from_str(old).unwrap();
        assert!(matches!(
            back.request,
            Request::Search {
                mode: SearchMode::Hybrid,
                ..
            }
        ));
        let back: Envelope = serde_json::from_str(&line).unwrap();
        assert!(matches!(back.request, Request::Search { limit: 5, .. }));
    }

    #[test]
    fn every_reply_with_a_list_serialises() {
        // An internally tagged newtype variant cannot hold a list: serde refuses at run time.
        let reply = Response::Published {
            publications: vec![Publication::default()],
        };
        let line = serde_json::to_string(&reply).expect("serialises");
        let back: Response = serde_json::from_str(&line).unwrap();
        assert!(matches!(back, Response::Published { publications } if publications.len() == 1));
    }

    #[test]
    fn only_progress_is_not_final() {
        assert!(!Response::Progress(Progress::default()).is_final());
        assert!(Response::ShuttingDown.is_final());
    }
}
