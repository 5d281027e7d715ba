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
//! ```

use std::path::{Path, PathBuf};

use serde::Deserialize;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path} is not a valid hgd config file: {error}\nthe keys are model, threads, results, exclude and max_file_kib; fix or remove it (HGD_CONFIG names another file)")]
    Parse {
        path: PathBuf,
        error: Box<toml::de::Error>,
    },
    #[error("{0} in the config file must be a positive whole number")]
    NotPositive(&'static str),
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
        Ok(Config {
            path,
            file_exists,
            model,
            threads,
            results,
            exclude,
            max_file_kib,
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
