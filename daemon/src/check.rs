//! The consistency checker behind `hgd check`: compares a repository's stored blocks with what a
//! fresh index of HEAD would hold, without embedding anything.
//!
//! Each file at HEAD under the tracked scopes is cut into blocks again and compared with its
//! stored rows: the same blocks (lines, kind, name, content) under the same blob, each once, and
//! no rows for paths HEAD does not hold. Vectors are checked for shape only (embedding again is
//! what `hgd check` avoids). The digest lets two stores be compared: equal digests, equal blocks.

use std::collections::{BTreeMap, HashMap};

use hgd_protocol::Consistency;
use sha2::{Digest, Sha256};

use crate::chunk::{self, Limits};
use crate::git::{GitError, Repo};
use crate::store::{BlockRow, StoreError};

#[derive(Debug, thiserror::Error)]
pub enum CheckError {
    #[error(transparent)]
    Git(#[from] GitError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One block as a fresh index would cut it, in a comparable form.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
struct Cut {
    start_line: u32,
    end_line: u32,
    kind: String,
    name: String,
    content: String,
}

/// Compares the stored HEAD blocks of `root` with HEAD under `scopes`. Blocking (it reads and
/// parses every file): run it off the async threads.
pub fn compare(
    repo: &Repo,
    root: &str,
    scopes: &[String],
    indexed_commit: Option<String>,
    rows: Vec<BlockRow>,
    dims: usize,
    limits: &Limits,
) -> Result<Consistency, CheckError> {
    let snapshot = repo.head_snapshot(scopes)?;
    let mut report = Consistency {
        repo: root.to_owned(),
        commit: snapshot.commit.clone(),
        indexed_commit,
        ..Consistency::default()
    };
    let mut stored: BTreeMap<String, Vec<BlockRow>> = BTreeMap::new();
    for row in rows {
        if !vector_is_sound(&row.vector, dims) {
            report.bad_vectors += 1;
        }
        stored.entry(row.path.clone()).or_default().push(row);
    }
    let expected: HashMap<&str, &str> = snapshot
        .files
        .iter()
        .map(|f| (f.path.as_str(), f.oid.as_str()))
        .collect();
    let mut digest = Sha256::new();
    for (path, rows) in &stored {
        let mut have: Vec<Cut> = rows.iter().map(cut_of_row).collect();
        have.sort();
        // Every stored block counts, orphans included: equal digests, equal stores.
        for cut in &have {
            digest.update(format!(
                "{path}\0{}\0{}\0{}\0{}\0",
                cut.start_line, cut.end_line, cut.kind, cut.name
            ));
            digest.update(Sha256::digest(cut.content.as_bytes()));
        }
        let Some(&oid) = expected.get(path.as_str()) else {
            report.orphans.push(path.clone());
            continue;
        };
        let want = fresh_cuts(repo, path, oid, limits)?;
        if rows.iter().any(|r| r.oid != oid) {
            report.stale.push(path.clone());
        } else if have != want {
            let (mut have_once, mut want_once) = (have.clone(), want);
            have_once.dedup();
            want_once.dedup();
            if have_once == want_once {
                report.duplicates.push(path.clone());
            } else {
                report.stale.push(path.clone());
            }
        }
        let before = have.len();
        report.files += 1;
        report.blocks += before as u64;
    }
    for file in &snapshot.files {
        if !stored.contains_key(&file.path)
            && !fresh_cuts(repo, &file.path, &file.oid, limits)?.is_empty()
        {
            report.missing.push(file.path.clone());
        }
    }
    report.missing.sort();
    report.digest = format!("{:x}", digest.finalize());
    Ok(report)
}

fn cut_of_row(row: &BlockRow) -> Cut {
    Cut {
        start_line: row.start_line,
        end_line: row.end_line,
        kind: row.kind.clone(),
        name: row.name.clone(),
        content: row.content.clone(),
    }
}

fn fresh_cuts(repo: &Repo, path: &str, oid: &str, limits: &Limits) -> Result<Vec<Cut>, GitError> {
    let Some(text) = repo.read_text(oid)? else {
        return Ok(Vec::new());
    };
    let mut cuts: Vec<Cut> = chunk::chunk(path, &text, limits)
        .into_iter()
        .map(|b| Cut {
            start_line: b.start_line,
            end_line: b.end_line,
            kind: b.kind,
            name: b.name,
            content: b.content,
        })
        .collect();
    cuts.sort();
    Ok(cuts)
}

fn vector_is_sound(vector: &[f32], dims: usize) -> bool {
    if vector.len() != dims || !vector.iter().all(|x| x.is_finite()) {
        return false;
    }
    let norm = vector.iter().map(|x| x * x).sum::<f32>().sqrt();
    (norm - 1.0).abs() < 1e-3
}
