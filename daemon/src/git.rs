//! Reading repositories with gitoxide: where a path's repository is, what HEAD holds and blob
//! contents (from the object database), and for the overlay of uncommitted files the work tree's
//! dirty paths (gix status) and their text. When a search needs the work tree read is
//! `freshness.rs`'s decision.

use std::path::{Path, PathBuf};

use gix::bstr::ByteSlice;

/// Files above this size are skipped: they are almost always data or generated (the config
/// file's `max_file_kib` changes it, see [`set_max_file_bytes`]).
static MAX_FILE_BYTES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1 << 20);

/// Sets the size limit, once at start.
pub fn set_max_file_bytes(bytes: u64) {
    MAX_FILE_BYTES.store(bytes, std::sync::atomic::Ordering::Relaxed);
}

fn max_file_bytes() -> u64 {
    MAX_FILE_BYTES.load(std::sync::atomic::Ordering::Relaxed)
}

/// A repository's own list of paths never to index: gitignore syntax, at its work tree's root.
pub const HGDIGNORE: &str = ".hgdignore";

/// The config file's `exclude` lines (every repository), set once at start.
static CONFIG_EXCLUDE: std::sync::OnceLock<Vec<String>> = std::sync::OnceLock::new();

/// Sets the config file's `exclude` lines; an invalid line is an error naming it.
pub fn set_config_exclude(lines: Vec<String>) -> Result<(), String> {
    let mut builder = ignore::gitignore::GitignoreBuilder::new("");
    for line in &lines {
        builder
            .add_line(None, line)
            .map_err(|e| format!("exclude line {line:?} in the config file: {e}"))?;
    }
    let _ = CONFIG_EXCLUDE.set(lines);
    Ok(())
}

/// What decides which paths of the repository at `root` are never indexed: the config file's
/// `exclude` lines and the work tree's `.hgdignore`. Recorded with the index, so that a change
/// makes the next job compare all of HEAD with the store.
pub fn exclusion_rules(root: &Path) -> String {
    rules_text(
        &CONFIG_EXCLUDE
            .get()
            .map(|lines| lines.join("\n"))
            .unwrap_or_default(),
        &std::fs::read_to_string(root.join(HGDIGNORE)).unwrap_or_default(),
        max_file_bytes(),
    )
}

/// The rules when nothing is excluded: those of every index made before rules were recorded.
pub fn no_exclusion_rules() -> String {
    rules_text("", "", 1 << 20)
}

fn rules_text(config: &str, hgdignore: &str, max_file_bytes: u64) -> String {
    // The default limit is left out, so indexes recorded before the limit was configurable match.
    let limit = if max_file_bytes == 1 << 20 {
        String::new()
    } else {
        format!("--- max file bytes {max_file_bytes}\n")
    };
    format!("{limit}{config}\n--- {HGDIGNORE}\n{hgdignore}")
}

/// The matcher for [`exclusion_rules`] (lines of `.hgdignore` that are not valid globs are
/// skipped with a warning).
fn exclusions(root: &Path) -> ignore::gitignore::Gitignore {
    let mut builder = ignore::gitignore::GitignoreBuilder::new(root);
    for line in CONFIG_EXCLUDE.get().into_iter().flatten() {
        let _ = builder.add_line(None, line);
    }
    let file = root.join(HGDIGNORE);
    if file.is_file() {
        if let Some(e) = builder.add(&file) {
            tracing::warn!("{}: {e}", file.display());
        }
    }
    builder.build().unwrap_or_else(|e| {
        tracing::warn!("{}: {e}; nothing is excluded", file.display());
        ignore::gitignore::Gitignore::empty()
    })
}

#[derive(Debug, thiserror::Error)]
pub enum GitError {
    #[error("{0} is not in a git repository")]
    NotARepository(PathBuf),
    // The cause is in the message (clients see only that), so it is not also a `source`.
    #[error("{path}: {error}")]
    Gix {
        path: PathBuf,
        error: Box<dyn std::error::Error + Send + Sync>,
    },
}

/// A repository found from some path inside its work tree.
#[derive(Debug, Clone)]
pub struct Located {
    /// Canonical work tree root.
    pub root: PathBuf,
    /// The searched folder relative to `root`, `/`-separated, empty for the root itself.
    pub subtree: String,
}

/// Finds the work tree containing `path` (which must exist).
pub fn locate(path: &Path) -> Result<Located, GitError> {
    discover(path).map(|(located, _)| located)
}

/// Where a path's repository is, found by looking for `.git` upwards without opening the
/// repository (no configuration read).
pub struct Found {
    /// The path, canonical.
    pub canonical: PathBuf,
    pub git_dir: PathBuf,
    /// The folder holding `.git` (`None`: a bare repository). Opening the repository may put
    /// the work tree elsewhere (`core.worktree`).
    pub work_dir: Option<PathBuf>,
}

pub fn find_upwards(path: &Path) -> Result<Found, GitError> {
    let canonical = path
        .canonicalize()
        .map_err(|_| GitError::NotARepository(path.to_path_buf()))?;
    let (found, _trust) = gix::discover::upwards(&canonical)
        .map_err(|_| GitError::NotARepository(path.to_path_buf()))?;
    let (git_dir, work_dir) = found.into_repository_and_work_tree_directories();
    Ok(Found {
        canonical,
        git_dir,
        work_dir,
    })
}

/// A repository opened once and shared between threads, so that finding HEAD again costs a few
/// file reads rather than an open, which reads git's configuration (about a millisecond).
#[derive(Clone)]
pub struct SharedRepo {
    inner: gix::ThreadSafeRepository,
    root: PathBuf,
}

impl SharedRepo {
    /// Opens the repository containing the canonical path `canonical`, as [`locate`] finds it.
    pub fn open(canonical: &Path) -> Result<SharedRepo, GitError> {
        let (located, inner) = discover(canonical)?;
        Ok(SharedRepo {
            inner: inner.into_sync(),
            root: located.root,
        })
    }

    /// Whether this repository is the one `found` found, with its work tree where `.git` is
    /// and `found`'s path inside it: then [`SharedRepo::locate_with_head`] answers for it as an
    /// open would. (A work tree moved, or a repository whose work tree is configured elsewhere,
    /// is opened again.)
    pub fn serves(&self, found: &Found) -> bool {
        found.work_dir.as_deref() == Some(self.root.as_path())
            && found.canonical.starts_with(&self.root)
    }

    /// Where the canonical path `canonical` is in this repository's work tree, and HEAD now
    /// (references are read from disk on every call).
    pub fn locate_with_head(
        &self,
        canonical: &Path,
    ) -> Result<(Located, Option<String>), GitError> {
        // As `discover`: a path outside the configured work tree searches all of it.
        let located = Located {
            root: self.root.clone(),
            subtree: relative_to(&self.root, canonical).unwrap_or_default(),
        };
        let head = head_commit_of(&self.inner.to_thread_local(), &self.root)?;
        Ok((located, head))
    }
}

fn discover(path: &Path) -> Result<(Located, gix::Repository), GitError> {
    let canonical = path
        .canonicalize()
        .map_err(|_| GitError::NotARepository(path.to_path_buf()))?;
    let repo =
        gix::discover(&canonical).map_err(|_| GitError::NotARepository(path.to_path_buf()))?;
    let root = repo
        .workdir()
        .ok_or_else(|| GitError::NotARepository(path.to_path_buf()))?
        .canonicalize()
        .map_err(|_| GitError::NotARepository(path.to_path_buf()))?;
    let subtree = relative_to(&root, &canonical).unwrap_or_default();
    Ok((Located { root, subtree }, repo))
}

/// HEAD's commit, `None` when the branch has no commits yet.
fn head_commit_of(repo: &gix::Repository, root: &Path) -> Result<Option<String>, GitError> {
    // The id HEAD's branch (or a detached HEAD) holds, read from the references alone: a
    // repository kept open then reads no object, so it keeps no pack file mapped that
    // `git gc` has since deleted. Peeled through the object database only when needed.
    if let Ok(head) = repo.head() {
        if head.is_unborn() {
            return Ok(None);
        }
        if let Some(id) = head.id() {
            return Ok(Some(id.to_string()));
        }
    }
    match repo.head_id() {
        Ok(id) => Ok(Some(id.to_string())),
        Err(_) if repo.head().map(|h| h.is_unborn()).unwrap_or(false) => Ok(None),
        Err(e) => Err(gix_err(root)(e)),
    }
}

/// A tracked file at HEAD that is worth indexing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TrackedFile {
    pub path: String,
    pub oid: String,
}

/// `path -> blob` a path should hold now; `None`: it holds nothing indexable any more.
pub type PathChanges = Vec<(String, Option<String>)>;

/// What HEAD holds under the tracked scopes.
#[derive(Debug)]
pub struct HeadSnapshot {
    /// `None` for a repository without commits.
    pub commit: Option<String>,
    pub files: Vec<TrackedFile>,
}

pub struct Repo {
    inner: gix::Repository,
    root: PathBuf,
    /// The work tree's root with symlinks resolved: work-tree files are read only under it.
    canonical_root: PathBuf,
}

fn gix_err(root: &Path) -> impl Fn(gix::Error) -> GitError + '_ {
    move |e| GitError::Gix {
        path: root.to_path_buf(),
        error: Box::new(e),
    }
}

use hgd_protocol::paths::relative_to;
pub use hgd_protocol::paths::{in_scopes, in_subtree};

/// Answers "is this file excluded (the config file, `.hgdignore`) or marked `linguist-generated`
/// or `linguist-vendored`?", the attributes from .gitattributes as recorded in an index.
struct GeneratedFilter<'r> {
    attributes: gix::AttributeStack<'r>,
    outcome: gix::attrs::search::Outcome,
    excluded: ignore::gitignore::Gitignore,
}

impl<'r> GeneratedFilter<'r> {
    fn new(
        repo: &'r gix::Repository,
        index: &gix::index::State,
        root: &Path,
    ) -> Result<Self, gix::Error> {
        let attributes = repo.attributes_only(
            index,
            gix::worktree::stack::state::attributes::Source::IdMapping,
        )?;
        let outcome =
            attributes.selected_attribute_matches(["linguist-generated", "linguist-vendored"]);
        Ok(GeneratedFilter {
            attributes,
            outcome,
            excluded: exclusions(root),
        })
    }

    fn is_marked(
        &mut self,
        path: &str,
        mode: Option<gix::index::entry::Mode>,
    ) -> Result<bool, gix::Error> {
        if self
            .excluded
            .matched_path_or_any_parents(path, false)
            .is_ignore()
        {
            return Ok(true);
        }
        let platform = self.attributes.at_entry(path, mode)?;
        self.outcome.reset();
        Ok(platform.matching_attributes(&mut self.outcome)
            && self
                .outcome
                .iter_selected()
                .any(|m| match m.assignment.state {
                    gix::attrs::StateRef::Set => true,
                    gix::attrs::StateRef::Value(v) => v.as_bstr() == "true",
                    _ => false,
                }))
    }
}

impl Repo {
    pub fn open(root: &Path) -> Result<Repo, GitError> {
        let inner = gix::open(root).map_err(|e| GitError::Gix {
            path: root.to_path_buf(),
            error: Box::new(e),
        })?;
        let mut inner = inner;
        // Blob reads are the hot path of indexing; a small object cache helps packed repositories.
        inner.object_cache_size_if_unset(4 << 20);
        Ok(Repo {
            inner,
            canonical_root: root.canonicalize().unwrap_or_else(|_| root.to_path_buf()),
            root: root.to_path_buf(),
        })
    }

    /// The repository's git directory (`.git`, or elsewhere for linked work trees).
    pub fn git_dir(&self) -> &Path {
        self.inner.git_dir()
    }

    pub fn head_commit(&self) -> Result<Option<String>, GitError> {
        head_commit_of(&self.inner, &self.root)
    }

    /// Lists HEAD's regular files under `scopes`, skipping symlinks, submodules, files over
    /// the size limit, excluded files and files marked `linguist-generated` or `linguist-vendored`.
    pub fn head_snapshot(&self, scopes: &[String]) -> Result<HeadSnapshot, GitError> {
        let Some(commit) = self.head_commit()? else {
            return Ok(HeadSnapshot {
                commit: None,
                files: Vec::new(),
            });
        };
        let err = gix_err(&self.root);
        let tree = self.inner.head_tree_id().map_err(&err)?;
        let index = self.inner.index_from_tree(&tree).map_err(&err)?;
        let mut generated = GeneratedFilter::new(&self.inner, &index, &self.root).map_err(&err)?;
        let mut files = Vec::new();
        for entry in index.entries() {
            if !matches!(
                entry.mode,
                gix::index::entry::Mode::FILE | gix::index::entry::Mode::FILE_EXECUTABLE
            ) {
                continue;
            }
            let path_bytes = entry.path(&index);
            let Ok(path) = path_bytes.to_str() else {
                continue;
            };
            if !in_scopes(path, scopes) {
                continue;
            }
            if generated.is_marked(path, Some(entry.mode)).map_err(&err)? {
                continue;
            }
            // Over the limit: left out here, so that a smaller limit also drops stored rows.
            if self
                .inner
                .find_header(entry.id)
                .is_ok_and(|h| h.size() > max_file_bytes())
            {
                continue;
            }
            files.push(TrackedFile {
                path: path.to_owned(),
                oid: entry.id.to_string(),
            });
        }
        Ok(HeadSnapshot {
            commit: Some(commit),
            files,
        })
    }

    /// What changed under `scopes` between `old_commit`'s tree and HEAD's, as `path -> new blob`
    /// (`None`: the path no longer holds an indexable file). Rename tracking is on; a rename shows
    /// as its source removed and its destination added. `Ok(None)` when `old_commit` is not in the
    /// object database any more (history rewritten and collected): the caller compares against
    /// what it stored instead.
    pub fn changes_since(
        &self,
        old_commit: &str,
        scopes: &[String],
    ) -> Result<Option<(String, PathChanges)>, GitError> {
        let err = gix_err(&self.root);
        let Some(head) = self.head_commit()? else {
            return Ok(None);
        };
        let Ok(old_id) = gix::ObjectId::from_hex(old_commit.as_bytes()) else {
            return Ok(None);
        };
        let old_tree = match self.inner.find_commit(old_id).and_then(|c| c.tree()) {
            Ok(tree) => tree,
            Err(_) => return Ok(None),
        };
        let new_tree = self
            .inner
            .head_commit()
            .and_then(|c| c.tree())
            .map_err(&err)?;
        let mut options = gix::diff::Options::default();
        options
            .track_path()
            .track_rewrites(Some(gix::diff::Rewrites::default()));
        let changes = self
            .inner
            .diff_tree_to_tree(&old_tree, &new_tree, options)
            .map_err(&err)?;

        // Attributes come from the work tree's index (`linguist-generated` and friends).
        let index = self
            .inner
            .index_or_load_from_head_or_empty()
            .map_err(&err)?;
        let mut generated = GeneratedFilter::new(&self.inner, &index, &self.root).map_err(&err)?;
        let inner = &self.inner;
        let mut indexable = |path: &str,
                             mode: gix::object::tree::EntryMode,
                             id: &gix::ObjectId|
         -> Result<bool, GitError> {
            if !mode.is_blob() || !in_scopes(path, scopes) {
                return Ok(false);
            }
            // Over the size limit, as when HEAD is listed: its rows must not be copied back
            // from the store (a blob seen before under a larger limit).
            if inner
                .find_header(*id)
                .is_ok_and(|h| h.size() > max_file_bytes())
            {
                return Ok(false);
            }
            Ok(!generated.is_marked(path, None).map_err(&err)?)
        };
        let mut out = Vec::new();
        use gix::object::tree::diff::ChangeDetached as Change;
        for change in changes {
            match change {
                Change::Addition {
                    location,
                    entry_mode,
                    id,
                    ..
                }
                | Change::Modification {
                    location,
                    entry_mode,
                    id,
                    ..
                } => {
                    let Ok(path) = location.to_str() else {
                        continue;
                    };
                    let keep = indexable(path, entry_mode, &id)?;
                    if in_scopes(path, scopes) {
                        out.push((path.to_owned(), keep.then(|| id.to_string())));
                    }
                }
                Change::Deletion { location, .. } => {
                    if let Ok(path) = location.to_str() {
                        if in_scopes(path, scopes) {
                            out.push((path.to_owned(), None));
                        }
                    }
                }
                Change::Rewrite {
                    source_location,
                    location,
                    entry_mode,
                    id,
                    copy,
                    ..
                } => {
                    if !copy {
                        if let Ok(source) = source_location.to_str() {
                            if in_scopes(source, scopes) {
                                out.push((source.to_owned(), None));
                            }
                        }
                    }
                    let Ok(path) = location.to_str() else {
                        continue;
                    };
                    let keep = indexable(path, entry_mode, &id)?;
                    if in_scopes(path, scopes) {
                        out.push((path.to_owned(), keep.then(|| id.to_string())));
                    }
                }
            }
        }
        Ok(Some((head, out)))
    }

    /// Paths under `scopes` whose work-tree state differs from HEAD: modified (staged or not),
    /// deleted, and untracked files that are not ignored. Submodules are not looked into.
    pub fn dirty_paths(&self, scopes: &[String]) -> Result<Vec<String>, GitError> {
        let err = gix_err(&self.root);
        let iter = self
            .inner
            .status(gix::progress::Discard)
            .map_err(&err)?
            .untracked_files(gix::status::UntrackedFiles::Files)
            .index_worktree_submodules(None)
            .into_iter(None)
            .map_err(&err)?;
        let excluded = exclusions(&self.root);
        let mut paths = Vec::new();
        for item in iter {
            let item = item.map_err(|e| GitError::Gix {
                path: self.root.clone(),
                error: Box::new(e),
            })?;
            if let Ok(path) = item.location().to_str() {
                if in_scopes(path, scopes)
                    && !excluded
                        .matched_path_or_any_parents(path, false)
                        .is_ignore()
                {
                    paths.push(path.to_owned());
                }
            }
        }
        paths.sort();
        paths.dedup();
        Ok(paths)
    }

    /// A work-tree file's text and the blob id it would have, or `None` when it is gone or should
    /// not be indexed (same rules as [`Repo::read_text`], plus symlinks).
    pub fn read_worktree_text(&self, path: &str) -> Option<(String, String)> {
        let full = self.root.join(path);
        let meta = std::fs::symlink_metadata(&full).ok()?;
        if !meta.is_file() || meta.len() > max_file_bytes() {
            return None;
        }
        // A folder on the way may be a symlink (a tracked folder replaced by a link elsewhere):
        // never read through it, so nothing outside the work tree is indexed.
        if full.canonicalize().ok()? != self.canonical_root.join(path) {
            return None;
        }
        let data = std::fs::read(&full).ok()?;
        if data[..data.len().min(8192)].contains(&0)
            || data.starts_with(b"version https://git-lfs.github.com/spec/")
        {
            return None;
        }
        let oid = gix::objs::compute_hash(self.inner.object_hash(), gix::objs::Kind::Blob, &data)
            .ok()?
            .to_string();
        String::from_utf8(data).ok().map(|text| (text, oid))
    }

    /// The blob's text, or `None` when it should not be indexed: too large, binary (NUL in the first
    /// 8 KiB), a Git LFS pointer, or not UTF-8.
    pub fn read_text(&self, oid: &str) -> Result<Option<String>, GitError> {
        let err = gix_err(&self.root);
        let id = gix::ObjectId::from_hex(oid.as_bytes()).map_err(|e| GitError::Gix {
            path: self.root.clone(),
            error: Box::new(e),
        })?;
        let header = self.inner.find_header(id).map_err(&err)?;
        if header.size() > max_file_bytes() {
            return Ok(None);
        }
        let blob = self.inner.find_blob(id).map_err(&err)?;
        let data = &blob.data;
        if data[..data.len().min(8192)].contains(&0) {
            return Ok(None);
        }
        if data.starts_with(b"version https://git-lfs.github.com/spec/") {
            return Ok(None);
        }
        Ok(String::from_utf8(data.to_vec()).ok())
    }
}
