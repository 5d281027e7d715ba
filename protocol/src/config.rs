//! hgd's configuration file: `config.toml` in the platform config folder (`~/.config/hgd` on
//! Linux, `~/Library/Application Support/hgd` on macOS), or the file `HGD_CONFIG` names. Shared
//! by the client and the daemon. An environment variable overrides the file's value, which
//! overrides the default; [`Config::load`] says where each value came from (`hgd config`).
//!
//! ```toml
//! model = "/path/to/a/model/folder"   # model.onnx, tokenizer.json, model.toml
//! threads = 4                          # intra-op threads for indexing
//! results = 20                         # hgd search's default -n
//! exclude = ["*.min.js", "fixtures/"]  # never index these (gitignore lines, every repository)
//! max_file_kib = 1024                  # files larger than this are not indexed
//!
//! [remote.team]                        # a shared index on object storage (`hgd remote add`)
//! uri = "s3://bucket/hgd"              # a LanceDB location
//! endpoint = "http://127.0.0.1:9000"   # S3-compatible servers only
//! region = "eu-west-1"
//! allow_http = false                   # true for a local server without TLS
//! read_only = false                    # only consume: never publish here
//! publish = false                      # the daemon publishes each job's new blocks
//! ```
//!
//! Remotes hold no credentials: those come from the standard AWS environment variables and
//! profile files, and a key in the file that could hold one is refused.

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a valid hgd config file: {error}\nthe keys are model, threads, results, exclude, max_file_kib and [remote.NAME] tables (uri, endpoint, region, allow_http, read_only, publish); fix or remove it (HGD_CONFIG names another file)")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("{0} in the config file must be a positive whole number")]
    NotPositive(&'static str),
    #[error("remote {name} in the config file: {problem}")]
    BadRemote { name: String, problem: String },
}

/// The file as written; unknown keys are errors (a misspelt key must not be ignored silently).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    model: Option<PathBuf>,
    threads: Option<usize>,
    results: Option<usize>,
    exclude: Option<Vec<String>>,
    max_file_kib: Option<u64>,
    #[serde(default)]
    remote: std::collections::BTreeMap<String, RemoteFile>,
}

/// A `[remote.NAME]` table as written.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RemoteFile {
    uri: String,
    endpoint: Option<String>,
    region: Option<String>,
    #[serde(default)]
    allow_http: bool,
    #[serde(default)]
    read_only: bool,
    #[serde(default)]
    publish: bool,
}

/// A shared index on object storage: a LanceDB location other hgd homes consume blocks from
/// (and publish blocks to, unless read-only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Remote {
    pub name: String,
    /// `s3://bucket/prefix`.
    pub uri: String,
    /// An S3-compatible server's URL (default: AWS's, from the region).
    pub endpoint: Option<String>,
    pub region: Option<String>,
    /// Plain HTTP to the endpoint (a local server).
    pub allow_http: bool,
    /// Consume only; `hgd publish` skips it.
    pub read_only: bool,
    /// The daemon publishes the blocks each job adds.
    pub publish: bool,
}

impl Remote {
    /// Checks a remote's name and values; the error says what is wrong.
    pub fn validate(&self) -> Result<(), String> {
        if self.name.is_empty()
            || !self
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err("a remote's name is letters, digits, '-' and '_'".into());
        }
        let Some(rest) = self.uri.strip_prefix("s3://") else {
            return Err(format!(
                "uri {:?} is not an s3:// location (s3://BUCKET/PREFIX)",
                self.uri
            ));
        };
        if rest.split('/').next().unwrap_or("").is_empty() {
            return Err(format!("uri {:?} names no bucket", self.uri));
        }
        if self.uri.contains('@') || self.uri.contains('?') {
            return Err("the uri must hold no credentials or options: credentials come from the AWS environment variables or profile files".into());
        }
        if let Some(endpoint) = &self.endpoint {
            if endpoint.contains('@') {
                return Err("the endpoint must hold no credentials: they come from the AWS environment variables or profile files".into());
            }
            if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
                return Err(format!("endpoint {endpoint:?} is not an http(s):// URL"));
            }
            if endpoint.starts_with("http://") && !self.allow_http {
                return Err(format!(
                    "endpoint {endpoint:?} is plain HTTP: set allow_http = true (--allow-http) for a local server"
                ));
            }
        }
        if self.publish && self.read_only {
            return Err("publish and read_only exclude each other".into());
        }
        Ok(())
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Source {
    Default,
    /// The configuration file.
    File,
    /// This environment variable.
    Env(&'static str),
}

impl std::fmt::Display for Source {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Source::Default => write!(f, "default"),
            Source::File => write!(f, "config file"),
            Source::Env(name) => write!(f, "{name}"),
        }
    }
}

#[derive(Debug, Clone)]
pub struct Setting<T> {
    pub value: T,
    pub source: Source,
}

/// The effective configuration.
#[derive(Debug, Clone)]
pub struct Config {
    /// The file read (or that would be read).
    pub path: PathBuf,
    pub file_exists: bool,
    /// The model folder; `None`: the default model in hgd's home.
    pub model: Setting<Option<PathBuf>>,
    /// Intra-op threads for indexing; `None`: all cores.
    pub threads: Setting<Option<usize>>,
    /// `hgd search`'s default number of results.
    pub results: Setting<usize>,
    /// Gitignore lines of files never indexed, in every repository (each repository's
    /// `.hgdignore` adds its own).
    pub exclude: Setting<Vec<String>>,
    /// Files larger than this many KiB are not indexed.
    pub max_file_kib: Setting<u64>,
    /// Shared indexes on object storage, by name (from the file only).
    pub remotes: Vec<Remote>,
}

/// The default size limit: larger files are almost always data or generated.
pub const DEFAULT_MAX_FILE_KIB: u64 = 1024;

pub const DEFAULT_RESULTS: usize = 10;

impl Config {
    /// The file `HGD_CONFIG` names, else `config.toml` in the platform config folder.
    pub fn path() -> Option<PathBuf> {
        if let Some(path) = std::env::var_os("HGD_CONFIG").filter(|v| !v.is_empty()) {
            // Absolute, so that every process (the daemon changes directory) reads the same file.
            let path = PathBuf::from(path);
            return Some(std::path::absolute(&path).unwrap_or(path));
        }
        directories::ProjectDirs::from("", "", "hgd").map(|d| d.config_dir().join("config.toml"))
    }

    /// Reads the file (a missing file is an empty one) and applies the environment.
    pub fn load() -> Result<Config, ConfigError> {
        let path = Config::path().unwrap_or_else(|| PathBuf::from("config.toml"));
        let (file, file_exists) = read(&path)?;
        let env = |name: &'static str| std::env::var_os(name).filter(|v| !v.is_empty());
        let model = match (env("HGD_MODEL_DIR"), file.model) {
            (Some(dir), _) => Setting {
                value: Some(PathBuf::from(dir)),
                source: Source::Env("HGD_MODEL_DIR"),
            },
            (None, Some(dir)) => Setting {
                value: Some(relative_to(&path, dir)),
                source: Source::File,
            },
            (None, None) => Setting {
                value: None,
                source: Source::Default,
            },
        };
        let threads = match (
            env("HGD_THREADS").and_then(|v| v.to_str().and_then(|v| v.parse::<usize>().ok())),
            file.threads,
        ) {
            (Some(n), _) if n > 0 => Setting {
                value: Some(n),
                source: Source::Env("HGD_THREADS"),
            },
            (_, Some(0)) => return Err(ConfigError::NotPositive("threads")),
            (_, Some(n)) => Setting {
                value: Some(n),
                source: Source::File,
            },
            _ => Setting {
                value: None,
                source: Source::Default,
            },
        };
        if file.results == Some(0) {
            return Err(ConfigError::NotPositive("results"));
        }
        if file.max_file_kib == Some(0) {
            return Err(ConfigError::NotPositive("max_file_kib"));
        }
        let results = from_file(file.results, DEFAULT_RESULTS);
        let exclude = from_file(file.exclude, Vec::new());
        let max_file_kib = from_file(file.max_file_kib, DEFAULT_MAX_FILE_KIB);
        let mut remotes = Vec::new();
        for (name, r) in file.remote {
            let remote = Remote {
                name,
                uri: r.uri.trim_end_matches('/').to_owned(),
                endpoint: r.endpoint,
                region: r.region,
                allow_http: r.allow_http,
                read_only: r.read_only,
                publish: r.publish,
            };
            remote
                .validate()
                .map_err(|problem| ConfigError::BadRemote {
                    name: remote.name.clone(),
                    problem,
                })?;
            remotes.push(remote);
        }
        Ok(Config {
            path,
            file_exists,
            model,
            threads,
            results,
            exclude,
            max_file_kib,
            remotes,
        })
    }
}

/// The file's value, else the default.
fn from_file<T>(value: Option<T>, default: T) -> Setting<T> {
    match value {
        Some(value) => Setting {
            value,
            source: Source::File,
        },
        None => Setting {
            value: default,
            source: Source::Default,
        },
    }
}

fn read(path: &Path) -> Result<(File, bool), ConfigError> {
    match std::fs::read_to_string(path) {
        Ok(text) => toml::from_str(&text)
            .map(|file| (file, true))
            .map_err(|error| ConfigError::Parse {
                path: path.to_path_buf(),
                error: Box::new(error),
            }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok((File::default(), false)),
        Err(error) => Err(ConfigError::Read {
            path: path.to_path_buf(),
            error,
        }),
    }
}

/// A path in the file, relative to the file's folder when it is not absolute.
fn relative_to(file: &Path, path: PathBuf) -> PathBuf {
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path,
    }
}

#[cfg(test)]
mod tests {
    use super::Remote;

    fn remote(uri: &str, endpoint: Option<&str>) -> Remote {
        Remote {
            name: "team".into(),
            uri: uri.into(),
            endpoint: endpoint.map(str::to_owned),
            region: None,
            allow_http: true,
            read_only: false,
            publish: false,
        }
    }

    #[test]
    fn remotes_hold_no_credentials_and_only_s3_locations() {
        assert!(remote("s3://bucket/hgd", Some("http://127.0.0.1:9000"))
            .validate()
            .is_ok());
        for (uri, endpoint) in [
            ("s3://KEY:SECRET@bucket/hgd", None),
            ("s3://bucket/hgd?access_key=KEY", None),
            ("s3://bucket/hgd", Some("https://KEY:SECRET@minio.local")),
            ("gs://bucket/hgd", None),
            ("s3:///hgd", None),
            ("s3://bucket/hgd", Some("minio.local:9000")),
        ] {
            assert!(
                remote(uri, endpoint).validate().is_err(),
                "{uri} {endpoint:?}"
            );
        }
        let mut named = remote("s3://bucket/hgd", None);
        named.name = "a b".into();
        assert!(named.validate().is_err());
    }
}
