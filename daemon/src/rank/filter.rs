//! Which files a search may return besides its folder: `--type` (a language or an extension),
//! `--exclude` (gitignore-style globs relative to the searched folder) and `--code-only`.
//! Applied while candidates are gathered, so `-n 10 -t py` gives ten Python results, not the
//! Python share of ten.

use hgd_protocol::SearchFilter;
use ignore::gitignore::{Gitignore, GitignoreBuilder};

use crate::chunk::languages::Language;

#[derive(Debug, thiserror::Error)]
pub enum FilterError {
    #[error("--exclude {glob:?} is not a valid glob: {error}")]
    BadGlob { glob: String, error: ignore::Error },
}

#[derive(Default, Clone)]
pub struct Filter {
    /// Lowercase, without a leading dot.
    types: Vec<String>,
    exclude: Option<Gitignore>,
    code_only: bool,
    /// The searched folder (repository-relative), which exclude globs are relative to.
    subtree: String,
    /// A file left out (the block a similar-code search starts from).
    skipped: Option<String>,
}

impl Filter {
    /// Every file.
    pub fn everything() -> Filter {
        Filter::default()
    }

    pub fn new(spec: &SearchFilter, subtree: &str) -> Result<Filter, FilterError> {
        let exclude = if spec.exclude.is_empty() {
            None
        } else {
            let mut builder = GitignoreBuilder::new("");
            for glob in &spec.exclude {
                builder
                    .add_line(None, glob)
                    .map_err(|error| FilterError::BadGlob {
                        glob: glob.clone(),
                        error,
                    })?;
            }
            Some(builder.build().map_err(|error| FilterError::BadGlob {
                glob: spec.exclude.join(" "),
                error,
            })?)
        };
        Ok(Filter {
            types: spec
                .types
                .iter()
                .map(|t| t.trim_start_matches('.').to_ascii_lowercase())
                .collect(),
            exclude,
            code_only: spec.code_only,
            subtree: subtree.to_owned(),
            skipped: None,
        })
    }

    /// The same, leaving out the file at `path` too.
    pub fn skipping(&self, path: &str) -> Filter {
        Filter {
            skipped: Some(path.to_owned()),
            ..self.clone()
        }
    }

    fn is_everything(&self) -> bool {
        self.types.is_empty() && self.exclude.is_none() && !self.code_only && self.skipped.is_none()
    }

    /// Whether results may come from the file at `path` (repository-relative).
    pub fn allows(&self, path: &str) -> bool {
        if self.is_everything() {
            return true;
        }
        if self.skipped.as_deref() == Some(path) {
            return false;
        }
        let language = Language::from_path(path);
        if self.code_only && matches!(language, Language::Markdown | Language::Text) {
            return false;
        }
        if !self.types.is_empty() && !self.types.iter().any(|t| is_type(t, path, language)) {
            return false;
        }
        if let Some(exclude) = &self.exclude {
            let relative = if self.subtree.is_empty() {
                path
            } else {
                path.strip_prefix(self.subtree.as_str())
                    .and_then(|p| p.strip_prefix('/'))
                    .unwrap_or(path)
            };
            if exclude
                .matched_path_or_any_parents(relative, false)
                .is_ignore()
            {
                return false;
            }
        }
        true
    }
}

/// Whether `wanted` (lowercase) names the file's language or its extension.
fn is_type(wanted: &str, path: &str, language: Language) -> bool {
    let extension = std::path::Path::new(path)
        .extension()
        .and_then(|e| e.to_str())
        .map(str::to_ascii_lowercase);
    if extension.as_deref() == Some(wanted) || language.name() == wanted {
        return true;
    }
    // Other names people use for a language.
    matches!(
        (wanted, language),
        ("typescript", Language::Tsx)
            | ("ts", Language::Tsx)
            | ("js", Language::JavaScript)
            | ("golang", Language::Go)
            | ("c++", Language::Cpp)
            | ("cs" | "c#", Language::CSharp)
            | ("shell" | "sh", Language::Bash)
            | ("md", Language::Markdown)
            | ("txt", Language::Text)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn filter(types: &[&str], exclude: &[&str], code_only: bool, subtree: &str) -> Filter {
        Filter::new(
            &SearchFilter {
                types: types.iter().map(|s| s.to_string()).collect(),
                exclude: exclude.iter().map(|s| s.to_string()).collect(),
                code_only,
            },
            subtree,
        )
        .unwrap()
    }

    #[test]
    fn types_match_a_language_or_an_extension() {
        let python = filter(&["python"], &[], false, "");
        assert!(python.allows("src/a.py") && python.allows("b.pyi"));
        assert!(!python.allows("src/a.rs"));
        let by_extension = filter(&["rs", ".md"], &[], false, "");
        assert!(by_extension.allows("a.rs") && by_extension.allows("README.md"));
        assert!(!by_extension.allows("a.py"));
        assert!(filter(&["TypeScript"], &[], false, "").allows("ui/App.tsx"));
        assert!(filter(&["cpp"], &[], false, "").allows("x/y.hpp"));
        assert!(filter(&["yaml"], &[], false, "").allows("ci.yaml"));
    }

    #[test]
    fn code_only_leaves_out_markdown_and_plain_text() {
        let code = filter(&[], &[], true, "");
        assert!(code.allows("src/main.go"));
        assert!(!code.allows("README.md") && !code.allows("notes.txt") && !code.allows("LICENSE"));
    }

    #[test]
    fn exclude_globs_are_gitignore_lines_relative_to_the_searched_folder() {
        let f = filter(&[], &["tests/", "*_test.go", "/vendor"], false, "pkg");
        assert!(f.allows("pkg/server.go"));
        assert!(!f.allows("pkg/tests/helpers.go"));
        assert!(!f.allows("pkg/a/b/tests/deep.go"));
        assert!(!f.allows("pkg/server_test.go"));
        assert!(!f.allows("pkg/vendor/x.go"));
        // Anchored at the searched folder, not below it.
        assert!(f.allows("pkg/a/vendor/x.go"));
        let negated = filter(&[], &["*.go", "!keep.go"], false, "");
        assert!(!negated.allows("a.go") && negated.allows("keep.go"));
        assert!(Filter::new(
            &SearchFilter {
                exclude: vec!["a/[z-a]".into()],
                ..SearchFilter::default()
            },
            ""
        )
        .is_err());
    }
}
