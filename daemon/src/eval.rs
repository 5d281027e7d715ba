//! `hgd-daemon eval`: retrieval quality of the ranking stage over an existing index, in-process,
//! for tuning. It reads a home that `bench/quality.sh` filled (HGD_BENCH_HOME), runs every query
//! of the benchmark's annotations through [`crate::rank`] and scores NDCG@10 with the harness's
//! rules (a target counts once, at its first result in the same file whose lines overlap). The
//! harness (`bench/quality.sh`) stays the figure of record: this only makes a rule's effect
//! visible in seconds instead of an hour.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;

use serde::Deserialize;

use crate::embed::Embedder;
use crate::rank::query::Query;
use crate::rank::{Mode, RepoIndex, Rules, Search};
use crate::store::{Layer, Store};

#[derive(Debug, thiserror::Error)]
pub enum EvalError {
    #[error("{0}: {1}")]
    Read(String, String),
    #[error(transparent)]
    Store(#[from] crate::store::StoreError),
    #[error(transparent)]
    Embed(#[from] crate::embed::EmbedError),
}

#[derive(Deserialize)]
struct RepoSpec {
    name: String,
    benchmark_root: Option<String>,
}

#[derive(Deserialize)]
struct Annotation {
    query: String,
    #[serde(default)]
    relevant: Vec<serde_json::Value>,
    #[serde(default)]
    secondary: Vec<serde_json::Value>,
    category: Option<String>,
}

struct Target {
    path: String,
    lines: Option<(u32, u32)>,
}

fn target(v: &serde_json::Value) -> Option<Target> {
    match v {
        serde_json::Value::String(p) => Some(Target {
            path: p.trim_start_matches("./").to_owned(),
            lines: None,
        }),
        serde_json::Value::Object(o) => {
            let path = o.get("path")?.as_str()?.trim_start_matches("./").to_owned();
            let lines = match (o.get("start_line"), o.get("end_line")) {
                (Some(s), Some(e)) => Some((s.as_u64()? as u32, e.as_u64()? as u32)),
                _ => None,
            };
            Some(Target { path, lines })
        }
        _ => None,
    }
}

fn read_json<T: serde::de::DeserializeOwned>(path: &Path) -> Result<T, EvalError> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| EvalError::Read(path.display().to_string(), e.to_string()))?;
    serde_json::from_str(&text)
        .map_err(|e| EvalError::Read(path.display().to_string(), e.to_string()))
}

/// NDCG@k of one ranked list of (path, start, end) against targets, as the harness scores it.
fn ndcg(hits: &[(String, u32, u32)], targets: &[Target], k: usize) -> f64 {
    if targets.is_empty() {
        return 0.0;
    }
    let mut gains = vec![0.0; k];
    for t in targets {
        let rank = hits.iter().take(k).position(|(p, s, e)| {
            *p == t.path && t.lines.is_none_or(|(ts, te)| !(*e < ts || *s > te))
        });
        if let Some(r) = rank {
            gains[r] = 1.0;
        }
    }
    let dcg = |g: &[f64]| -> f64 {
        g.iter()
            .enumerate()
            .map(|(i, x)| x / ((i + 2) as f64).log2())
            .sum()
    };
    let ideal = dcg(&vec![1.0; k.min(targets.len())]);
    dcg(&gains) / ideal
}

/// What to evaluate.
pub struct Options {
    /// The benchmark data folder (repos.json, annotations/).
    pub data: std::path::PathBuf,
    /// The folder of work trees.
    pub repos: std::path::PathBuf,
    /// Only these repositories (all indexed ones when empty).
    pub names: Vec<String>,
    pub mode: Mode,
    pub rules: Rules,
    /// Print every query that is not ranked perfectly.
    pub verbose: bool,
    /// Embed blocks again from this text instead of using the stored vectors.
    pub embed_as: Option<EmbedAs>,
}

/// Alternatives to the stored embedding text (header line + code), measured by embedding again.
#[derive(Debug, Clone, Copy)]
pub enum EmbedAs {
    /// The block's code alone.
    Content,
    /// The path on a line, then the code (no kind or name).
    PathAndContent,
}

/// Scores every query of the chosen repositories (every indexed one when none is named);
/// prints a table and returns the mean of per-repository means.
pub async fn run(store: &Store, embedder: &Embedder, options: &Options) -> Result<f64, EvalError> {
    let Options {
        data,
        repos: repos_dir,
        names,
        mode,
        rules,
        verbose,
        embed_as,
    } = options;
    let (mode, rules, verbose) = (*mode, *rules, *verbose);
    let specs: Vec<RepoSpec> = read_json(&data.join("repos.json"))?;
    let mut per_repo = Vec::new();
    let mut per_category: BTreeMap<String, Vec<f64>> = BTreeMap::new();
    // A repository counts once its first index is complete: while a job runs, its rows are a
    // partial (progressive) set and would score as a different, worse tool.
    let indexed: HashSet<String> = store
        .repos()
        .await?
        .into_iter()
        .filter(|r| r.indexed_commit.is_some())
        .map(|r| r.root)
        .collect();
    for spec in &specs {
        if !names.is_empty() && !names.contains(&spec.name) {
            continue;
        }
        let Ok(root) = repos_dir.join(&spec.name).canonicalize() else {
            continue;
        };
        let subtree = spec.benchmark_root.clone().unwrap_or_default();
        let subtree = subtree.trim_matches('/').to_owned();
        if !indexed.contains(root.to_string_lossy().as_ref()) {
            eprintln!("{}: not indexed in this home, skipped", spec.name);
            continue;
        }
        let rows = store
            .repo_rows(Layer::Head, &root.to_string_lossy(), true)
            .await?;
        if rows.is_empty() {
            eprintln!("{}: not indexed in this home, skipped", spec.name);
            continue;
        }
        let mut rows = rows;
        if let Some(embed_as) = embed_as {
            let texts: Vec<String> = rows
                .iter()
                .map(|r| match embed_as {
                    EmbedAs::Content => r.content.clone(),
                    EmbedAs::PathAndContent => format!("{}\n{}", r.path, r.content),
                })
                .collect();
            for (row, vector) in rows.iter_mut().zip(embedder.embed_documents(&texts)?) {
                row.vector = vector;
            }
        }
        let index = RepoIndex::build(rows, embedder.config().dims, false);
        let annotations: Vec<Annotation> =
            read_json(&data.join("annotations").join(format!("{}.json", spec.name)))?;
        let mut scores = Vec::new();
        let dirty = HashSet::new();
        let mut reachable = 0;
        for a in &annotations {
            let targets: Vec<Target> = a
                .relevant
                .iter()
                .chain(&a.secondary)
                .filter_map(target)
                .map(|mut t| {
                    // Targets relative to the searched folder become relative to the repository.
                    if !subtree.is_empty()
                        && !root.join(&t.path).exists()
                        && root.join(&subtree).join(&t.path).exists()
                    {
                        t.path = format!("{subtree}/{}", t.path);
                    }
                    t
                })
                .collect();
            if targets.iter().any(|t| root.join(&t.path).exists()) {
                reachable += 1;
            }
            let query = Query::parse(&a.query);
            let vector = match mode {
                Mode::Lexical => None,
                _ => Some(embedder.embed_query(&a.query)?),
            };
            let search = Search {
                head: &index,
                changed: None,
                overlay: None,
                dirty: &dirty,
                subtree: &subtree,
                filter: &crate::rank::filter::Filter::everything(),
                query: &query,
                vector: vector.as_deref(),
                mode,
                limit: 10,
                rules,
            };
            let hits: Vec<(String, u32, u32)> = search
                .run()
                .into_iter()
                .map(|(f, _)| {
                    let e = search.entry(f);
                    (e.path.to_string(), e.start_line, e.end_line)
                })
                .collect();
            let score = ndcg(&hits, &targets, 10);
            let category = a.category.clone().unwrap_or_else(|| "semantic".into());
            if verbose && score < 1.0 {
                let want: Vec<&str> = targets.iter().map(|t| t.path.as_str()).collect();
                let got: Vec<String> = hits
                    .iter()
                    .take(5)
                    .map(|(p, s, e)| format!("{p}:{s}-{e}"))
                    .collect();
                eprintln!(
                    "  {score:.2} [{category}] {:?} want {want:?} got {got:?}",
                    a.query
                );
            }
            scores.push((category, score));
        }
        if reachable == 0 {
            // A snapshot older than the pinned revision can lack every annotated file; no tool
            // can score there, so the repository is reported and left out of the means.
            eprintln!(
                "{}: no annotated file exists in this snapshot, left out of the means",
                spec.name
            );
            continue;
        }
        let mean = scores.iter().map(|(_, s)| s).sum::<f64>() / scores.len().max(1) as f64;
        for (category, score) in scores.iter() {
            per_category
                .entry(category.clone())
                .or_default()
                .push(*score);
        }
        println!("{:<20} {:>3} {:.3}", spec.name, scores.len(), mean);
        per_repo.push(mean);
    }
    let overall = per_repo.iter().sum::<f64>() / per_repo.len().max(1) as f64;
    let cats: Vec<String> = per_category
        .iter()
        .map(|(c, v)| {
            format!(
                "{c} {:.3} (n={})",
                v.iter().sum::<f64>() / v.len() as f64,
                v.len()
            )
        })
        .collect();
    println!(
        "NDCG@10 mean of {} repositories: {overall:.4}; by category over queries: {}",
        per_repo.len(),
        cats.join(", ")
    );
    Ok(overall)
}
