//! Repository-relative paths and scopes: `/`-separated, no leading `/`, no `.` or `..`
//! components. A scope is a folder of a repository that hgd indexes (the empty scope is the whole
//! repository).

use std::path::{Component, Path};

/// Whether `path` lies in `subtree` (a file in a folder, or the folder itself).
pub fn in_subtree(path: &str, subtree: &str) -> bool {
    subtree.is_empty()
        || path == subtree
        || (path.starts_with(subtree) && path.as_bytes().get(subtree.len()) == Some(&b'/'))
}

/// Whether `path` lies in one of `scopes`.
pub fn in_scopes(path: &str, scopes: &[String]) -> bool {
    scopes.iter().any(|scope| in_subtree(path, scope))
}

/// `path` relative to `root`, `/`-separated, when `path` is inside `root`; `None` for a path
/// outside it, or one that climbs out with `..` or does not name plain folders and files (both
/// should be canonical: symlinks resolved).
pub fn relative_to(root: &Path, path: &Path) -> Option<String> {
    let relative = path.strip_prefix(root).ok()?;
    let mut parts = Vec::new();
    for component in relative.components() {
        match component {
            Component::Normal(part) => parts.push(part.to_string_lossy()),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(parts.join("/"))
}
