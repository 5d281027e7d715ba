//! hgd's daemon: provisioning, embedding, chunking, git walking, the LanceDB store, indexing jobs,
//! search, and the socket server. `main.rs` is the only place that uses `anyhow`.

pub mod check;
/// The chunker lives in its own crate (`chunk/`), so fuzzing it does not build the store.
pub use hgd_chunk as chunk;
mod cmd;
pub mod embed;
pub mod eval;
pub mod fault;
pub mod git;
pub mod indexer;
pub mod indexes;
pub mod logfile;
pub mod memory;
pub mod model;
pub mod onnx_rewrite;
pub mod priority;
pub mod rank;
pub mod remote;
pub mod search;
pub mod server;
pub mod service;
pub mod setup;
pub mod store;
