//! `model.toml`: how to run the embedding model that sits beside it.

use std::path::Path;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Pooling {
    /// Average of the token vectors under the attention mask (sentence-transformers MiniLM).
    Mean,
    /// The first token's vector (BERT-style `[CLS]`, e.g. snowflake-arctic-embed).
    Cls,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    pub name: String,
    pub dims: usize,
    pub pooling: Pooling,
    /// Sequences are truncated to this many tokens (special tokens included).
    pub max_tokens: usize,
    /// Prepended to queries (retrieval models trained with instructions need it).
    #[serde(default)]
    pub query_prefix: String,
    /// Prepended to indexed documents.
    #[serde(default)]
    pub doc_prefix: String,
}

#[derive(Debug, thiserror::Error)]
pub enum ModelConfigError {
    #[error("cannot read {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path} is not a valid model.toml: {source}")]
    Parse {
        path: String,
        source: toml::de::Error,
    },
    #[error("{path}: dims and max_tokens must be positive")]
    Invalid { path: String },
}

impl ModelConfig {
    pub fn load(path: &Path) -> Result<ModelConfig, ModelConfigError> {
        let shown = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|source| ModelConfigError::Read {
            path: shown.clone(),
            source,
        })?;
        let config: ModelConfig =
            toml::from_str(&text).map_err(|source| ModelConfigError::Parse {
                path: shown.clone(),
                source,
            })?;
        if config.dims == 0 || config.max_tokens < 3 {
            return Err(ModelConfigError::Invalid { path: shown });
        }
        Ok(config)
    }

    pub fn write(&self, path: &Path) -> std::io::Result<()> {
        let text = toml::to_string(self).map_err(std::io::Error::other)?;
        std::fs::write(path, text)
    }

    /// Identifies the vector space: blocks embedded under another id are never mixed with these.
    pub fn id(&self) -> String {
        format!("{}-{}d", self.name, self.dims)
    }
}
