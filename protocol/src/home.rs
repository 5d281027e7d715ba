//! hgd's home directory: where the socket, logs, runtime, models and index live.
//!
//! `HGD_HOME` overrides the platform data directory (`~/.local/share/hgd` on Linux,
//! `~/Library/Application Support/hgd` on macOS). `HGD_MODEL_DIR` and `HGD_ORT_DYLIB` point the
//! daemon at a model folder or an ONNX Runtime library elsewhere (tests share one provisioned copy).

use std::path::{Path, PathBuf};

/// Name of the default model's folder under `models/`.
pub const DEFAULT_MODEL: &str = "all-minilm-l6-v2-int8";

#[derive(Debug, Clone)]
pub struct Home {
    root: PathBuf,
}

#[derive(Debug, thiserror::Error)]
#[error("cannot find a home directory for hgd; set HGD_HOME")]
pub struct NoHome;

impl Home {
    /// `HGD_HOME`, else the platform data directory.
    pub fn from_env() -> Result<Home, NoHome> {
        if let Some(dir) = std::env::var_os("HGD_HOME").filter(|v| !v.is_empty()) {
            return Ok(Home::at(PathBuf::from(dir)));
        }
        directories::ProjectDirs::from("", "", "hgd")
            .map(|dirs| Home::at(dirs.data_dir().to_path_buf()))
            .ok_or(NoHome)
    }

    pub fn at(root: PathBuf) -> Home {
        // Relative HGD_HOME values would change meaning when the daemon changes directory.
        let root = std::path::absolute(&root).unwrap_or(root);
        Home { root }
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    pub fn socket(&self) -> PathBuf {
        self.root.join("hgd.sock")
    }

    /// Held (flock) by the running daemon; a second daemon on the same home is refused.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("daemon.lock")
    }

    pub fn logs(&self) -> PathBuf {
        self.root.join("logs")
    }

    pub fn daemon_log(&self) -> PathBuf {
        self.logs().join("daemon.log")
    }

    /// Folder holding the ONNX Runtime shared library installed by `hgd setup`.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root.join("runtime")
    }

    pub fn models_dir(&self) -> PathBuf {
        self.root.join("models")
    }

    /// The model the daemon uses: `HGD_MODEL_DIR`, else the config file's `model`, else the
    /// default model under `models/`. (A config file that does not parse is reported where it
    /// is loaded; here it counts as absent.)
    pub fn model_dir(&self) -> PathBuf {
        let configured = match crate::config::Config::load() {
            Ok(config) => config.model.value,
            // A broken file loses to the environment all the same.
            Err(_) => std::env::var_os("HGD_MODEL_DIR")
                .filter(|v| !v.is_empty())
                .map(PathBuf::from),
        };
        configured.unwrap_or_else(|| self.models_dir().join(DEFAULT_MODEL))
    }

    /// The LanceDB database.
    pub fn db_dir(&self) -> PathBuf {
        self.root.join("db")
    }
}
