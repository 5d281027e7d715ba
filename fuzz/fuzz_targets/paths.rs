//! Repository paths and scopes: which files a scope holds, and a path made relative to a
//! repository root, which must never climb out of it.
#![no_main]

use std::path::Path;

use hgd_protocol::paths::{in_scopes, in_subtree, relative_to};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|input: (String, String, Vec<String>)| {
    let (path, subtree, scopes) = input;
    assert!(in_subtree(&path, ""));
    assert!(in_subtree(&path, &path));
    if in_subtree(&path, &subtree) && !subtree.is_empty() {
        assert!(path == subtree || path.starts_with(&format!("{subtree}/")));
    }
    assert_eq!(
        in_scopes(&path, &scopes),
        scopes.iter().any(|scope| in_subtree(&path, scope))
    );
    if let Some(relative) = relative_to(Path::new(&subtree), Path::new(&path)) {
        assert!(!relative.starts_with('/'), "{relative:?}");
        assert!(
            relative.split('/').all(|part| part != ".." && part != "."),
            "{relative:?}"
        );
        // Joined back onto the root, it names the same place.
        let joined = Path::new(&subtree).join(&relative);
        if !relative.is_empty() {
            assert_eq!(
                plain_components(&joined),
                plain_components(Path::new(&path)),
                "{relative:?}"
            );
        }
    }
});

/// A path's components without `.`: how `Path::join` and `strip_prefix` see the same place.
fn plain_components(p: &Path) -> Vec<std::path::Component<'_>> {
    p.components()
        .filter(|c| !matches!(c, std::path::Component::CurDir))
        .collect()
}
