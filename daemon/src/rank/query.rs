//! What a query is: an identifier, a path, or a question in words; which symbols it names; its
//! keywords; and whether it asks for tests, documentation or examples.

use super::tokens;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueryKind {
    /// The whole query is one identifier, maybe qualified: `parseArgs`, `Foo::bar`, `http.Client`.
    Identifier,
    /// The whole query is a path or a file name: `src/router.go`, `config.py`.
    Path,
    /// Anything else: words, maybe with identifiers among them.
    Natural,
}

/// A symbol the query names.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Symbol {
    /// The last component, as written: `bar` of `Foo::bar`.
    pub name: String,
    /// The components before it, lowercased: `foo` of `Foo::bar`.
    pub qualifiers: Vec<String>,
    /// Found inside a question rather than being the whole query.
    pub in_prose: bool,
}

/// Kinds of files a query can ask for explicitly, which then are not ranked down.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AsksFor {
    pub tests: bool,
    pub docs: bool,
    pub examples: bool,
}

#[derive(Debug, Clone)]
pub struct Query {
    pub text: String,
    pub kind: QueryKind,
    /// Lexical tokens, as blocks are tokenised.
    pub tokens: Vec<String>,
    pub symbols: Vec<Symbol>,
    /// Lowercase words of more than two letters that are not stop words.
    pub keywords: Vec<String>,
    pub asks_for: AsksFor,
}

/// Words that say nothing about where code is.
const STOP_WORDS: &[&str] = &[
    "a", "about", "an", "and", "are", "as", "at", "be", "by", "can", "do", "does", "for", "from",
    "get", "gets", "has", "have", "how", "in", "into", "is", "it", "its", "of", "on", "or", "that",
    "the", "their", "there", "this", "to", "used", "uses", "using", "via", "what", "when", "where",
    "which", "while", "who", "why", "with",
];

pub fn is_stop_word(word: &str) -> bool {
    STOP_WORDS.binary_search(&word).is_ok()
}

/// Separators of qualified names across languages.
const QUALIFIERS: &[&str] = &["::", "->", "\\", "."];

impl Query {
    pub fn parse(text: &str) -> Query {
        let trimmed = text.trim();
        let kind = if is_path_like(trimmed) {
            QueryKind::Path
        } else if is_identifier_like(trimmed) {
            QueryKind::Identifier
        } else {
            QueryKind::Natural
        };
        let symbols = match kind {
            QueryKind::Identifier => symbol_of(trimmed, false).into_iter().collect(),
            // `res.json` or `node.js` may be a member as well as a file: when no file has that
            // path, the ranking stage uses this symbol instead (see `Search::rerank`).
            QueryKind::Path if !trimmed.contains('/') && is_identifier_like(trimmed) => {
                symbol_of(trimmed, false).into_iter().collect()
            }
            QueryKind::Path => Vec::new(),
            // Inside a sentence, only words no one writes in prose: camelCase, snake_case,
            // qualified names; not acronyms (`JSON`, `HTTP`) or capitalised words.
            QueryKind::Natural => trimmed
                .split_whitespace()
                .map(|w| w.trim_matches(|c: char| !(c.is_alphanumeric() || c == '_')))
                .filter(|w| looks_like_code(w) && w.chars().any(char::is_lowercase))
                .filter_map(|w| symbol_of(w, true))
                .collect(),
        };
        // Whole words only: identifier parts (`DocBook`, `SampleRate`, `TestClient`) name
        // things more often than they ask for a kind of file.
        let words: Vec<String> = trimmed
            .split(|c: char| !c.is_alphanumeric())
            .map(str::to_lowercase)
            .collect();
        let has = |list: &[&str]| words.iter().any(|w| list.contains(&w.as_str()));
        let asks_for = AsksFor {
            tests: has(&[
                "test", "tests", "testing", "spec", "specs", "fixture", "fixtures",
            ]),
            docs: has(&[
                "doc",
                "docs",
                "documentation",
                "readme",
                "guide",
                "tutorial",
            ]),
            examples: has(&[
                "example",
                "examples",
                "demo",
                "sample",
                "benchmark",
                "benchmarks",
            ]),
        };
        let mut keywords: Vec<String> = Vec::new();
        for word in tokens::tokens(trimmed) {
            if word.chars().count() > 2 && !is_stop_word(&word) && !keywords.contains(&word) {
                keywords.push(word);
            }
        }
        Query {
            text: trimmed.to_owned(),
            kind,
            tokens: tokens::tokens(trimmed),
            symbols,
            keywords,
            asks_for,
        }
    }
}

/// One word of identifier characters, or several joined by qualifier separators.
fn is_identifier_like(s: &str) -> bool {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    let parts = split_qualified(s);
    if parts.iter().any(|p| !is_identifier(p)) {
        return false;
    }
    // A single plain lowercase word is as likely an English word as a name; a capitalised one
    // on its own is most likely a type.
    parts.len() > 1 || looks_like_code(s) || s.starts_with(char::is_uppercase)
}

/// A path or a file name: has a `/`, or ends in a short extension after a name.
fn is_path_like(s: &str) -> bool {
    if s.is_empty() || s.chars().any(char::is_whitespace) {
        return false;
    }
    let s = s.trim_start_matches("./");
    if s.contains('/') {
        // `src/router.go` or `src/web/router`, but not `read/write` or `client/server`.
        let last = s.rsplit('/').next().unwrap_or("");
        return (last.contains('.') || s.matches('/').count() >= 2)
            && s.split('/').all(|c| {
                c.chars()
                    .all(|ch| ch.is_alphanumeric() || "._-".contains(ch))
            });
    }
    match s.rsplit_once('.') {
        Some((stem, ext)) => {
            // `config.py`, and dotted names like `index.d.ts` or `app.spec.ts`.
            !stem.is_empty()
                && !stem.starts_with('.')
                && (1..=5).contains(&ext.len())
                && ext
                    .chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
                && stem
                    .chars()
                    .all(|c| c.is_alphanumeric() || "_-.".contains(c))
                && is_known_extension(ext)
        }
        None => false,
    }
}

fn is_known_extension(ext: &str) -> bool {
    crate::chunk::Language::from_path(&format!("x.{ext}")) != crate::chunk::Language::Text
        || matches!(
            ext,
            "txt" | "toml" | "yaml" | "yml" | "json" | "cfg" | "ini"
        )
}

fn is_identifier(s: &str) -> bool {
    let mut chars = s.chars();
    matches!(chars.next(), Some(c) if c.is_alphabetic() || c == '_' || c == '$')
        && chars.all(|c| c.is_alphanumeric() || c == '_' || c == '$')
}

/// Written as code rather than as a word: snake_case, camelCase, PascalCase with an inner
/// capital, ALLCAPS, a leading `$`, or qualified (`Foo::bar`).
fn looks_like_code(w: &str) -> bool {
    let parts = split_qualified(w);
    if parts.len() > 1 {
        return parts.iter().all(|p| is_identifier(p));
    }
    if !is_identifier(w) || w.chars().count() < 2 {
        return false;
    }
    w.contains('_') || w.starts_with('$') || w.chars().skip(1).any(char::is_uppercase)
}

fn split_qualified(s: &str) -> Vec<&str> {
    let mut parts = vec![s];
    for sep in QUALIFIERS {
        parts = parts.into_iter().flat_map(|p| p.split(sep)).collect();
    }
    parts.into_iter().filter(|p| !p.is_empty()).collect()
}

fn symbol_of(s: &str, in_prose: bool) -> Option<Symbol> {
    let parts = split_qualified(s);
    let (name, qualifiers) = parts.split_last()?;
    (is_identifier(name) && name.chars().count() > 1).then(|| Symbol {
        name: (*name).to_owned(),
        qualifiers: qualifiers.iter().map(|q| q.to_lowercase()).collect(),
        in_prose,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_kinds() {
        for q in [
            "parseArgs",
            "Foo::bar",
            "http.Client",
            "snake_case_name",
            "HTTPServer",
            "_private",
        ] {
            assert_eq!(Query::parse(q).kind, QueryKind::Identifier, "{q}");
        }
        for q in [
            "config.py",
            "src/router.go",
            "lib/web/base.rb",
            "index.d.ts",
            "./src/x.rs",
        ] {
            assert_eq!(Query::parse(q).kind, QueryKind::Path, "{q}");
        }
        assert_eq!(Query::parse("src/web/router").kind, QueryKind::Path);
        for q in [
            "how are hooks installed",
            "session",
            "parse the args",
            "read/write",
            "client/server",
        ] {
            assert_eq!(Query::parse(q).kind, QueryKind::Natural, "{q}");
        }
    }

    #[test]
    fn symbols_and_qualifiers() {
        let q = Query::parse("Foo::bar");
        assert_eq!(q.symbols[0].name, "bar");
        assert_eq!(q.symbols[0].qualifiers, ["foo"]);
        let q = Query::parse("where does parseArgs handle the --verbose flag");
        assert_eq!(q.symbols.len(), 1);
        assert_eq!(q.symbols[0].name, "parseArgs");
        assert!(q.symbols[0].in_prose);
    }

    #[test]
    fn keywords_and_what_is_asked_for() {
        let q = Query::parse("How are the tests for the router written?");
        assert!(q.asks_for.tests && !q.asks_for.docs);
        assert_eq!(q.keywords, ["tests", "router", "written"]);
        assert!(!Query::parse("DocBook").asks_for.docs);
    }

    #[test]
    fn a_member_that_looks_like_a_file_name_is_also_a_symbol() {
        let q = Query::parse("res.json");
        assert_eq!(q.kind, QueryKind::Path);
        assert_eq!(q.symbols[0].name, "json");
        assert_eq!(q.symbols[0].qualifiers, ["res"]);
        assert!(Query::parse("src/config.py").symbols.is_empty());
    }

    #[test]
    fn stop_words_are_sorted() {
        let mut sorted = STOP_WORDS.to_vec();
        sorted.sort_unstable();
        assert_eq!(sorted, STOP_WORDS);
    }
}
