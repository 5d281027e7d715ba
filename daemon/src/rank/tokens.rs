//! Code-aware tokens for lexical search: identifiers are split into their words (camelCase,
//! PascalCase, snake_case, kebab-case, letters and digits) and also kept whole, so `parseArgs`
//! matches a query for "parse args", for "parseargs" and for `parseArgs`.

/// The lowercase words of one identifier: `HTTPServerError2` → `http`, `server`, `error`, `2`;
/// `parse_args` → `parse`, `args`. Empty parts are dropped.
pub fn split_identifier(word: &str) -> Vec<String> {
    let mut parts = Vec::new();
    for piece in word.split(|c: char| !c.is_alphanumeric()) {
        let chars: Vec<char> = piece.chars().collect();
        let mut start = 0;
        for i in 1..chars.len() {
            let (prev, cur) = (chars[i - 1], chars[i]);
            let next_lower = chars.get(i + 1).is_some_and(|c| c.is_lowercase());
            let boundary = (prev.is_lowercase() && cur.is_uppercase())
                // The last capital of an acronym starts the next word: HTTPServer → HTTP Server.
                || (prev.is_uppercase() && cur.is_uppercase() && next_lower)
                || (prev.is_alphabetic() && cur.is_numeric())
                || (prev.is_numeric() && cur.is_alphabetic());
            if boundary {
                parts.push(chars[start..i].iter().collect::<String>().to_lowercase());
                start = i;
            }
        }
        if start < chars.len() {
            parts.push(chars[start..].iter().collect::<String>().to_lowercase());
        }
    }
    parts
}

/// The words of `text` as lexical search sees them: every identifier-like run (letters, digits,
/// `_`) lowercased and whole, followed by its parts when it has more than one. Runs of one
/// character are dropped: they are operators' neighbours and loop counters, not words.
pub fn tokens(text: &str) -> Vec<String> {
    let mut out = Vec::new();
    for_each_token(text, |t| out.push(t.to_owned()));
    out
}

/// Calls `f` with each token of `text` (see [`tokens`]) without collecting them.
pub fn for_each_token(text: &str, mut f: impl FnMut(&str)) {
    let mut word = String::new();
    let flush = |word: &mut String, f: &mut dyn FnMut(&str)| {
        if word.chars().count() > 1 {
            let parts = split_identifier(word);
            let whole = word.to_lowercase();
            let whole = whole.trim_matches('_');
            if !whole.is_empty() {
                f(whole);
            }
            if parts.len() > 1 {
                for part in parts
                    .iter()
                    .filter(|p| p.chars().count() > 1 || is_digit(p))
                {
                    f(part);
                }
            }
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_alphanumeric() || c == '_' {
            word.push(c);
        } else if !word.is_empty() {
            flush(&mut word, &mut f);
        }
    }
    if !word.is_empty() {
        flush(&mut word, &mut f);
    }
}

/// The form a token takes in the lexical index: its English stem (`validators` → `valid`,
/// `parsing` → `pars`) when stemming is on, so inflections of a word match each other.
pub fn lexical_form(token: &str) -> std::borrow::Cow<'_, str> {
    use std::sync::OnceLock;
    static STEMMER: OnceLock<rust_stemmers::Stemmer> = OnceLock::new();
    if !super::weights::w().stemming {
        return std::borrow::Cow::Borrowed(token);
    }
    STEMMER
        .get_or_init(|| rust_stemmers::Stemmer::create(rust_stemmers::Algorithm::English))
        .stem(token)
}

fn is_digit(s: &str) -> bool {
    !s.is_empty() && s.chars().all(|c| c.is_ascii_digit())
}

/// The tokens of a path: each component split like an identifier, the file name whole and
/// without its extension (`src/http_client.rs` → `src`, `http_client.rs`, `http_client`, `http`,
/// `client`, `rs`).
pub fn path_tokens(path: &str) -> Vec<String> {
    let mut out = tokens(path);
    if let Some(file) = path.rsplit('/').next() {
        let lower = file.to_lowercase();
        if lower.contains('.') {
            out.push(lower.clone());
        }
        if let Some((stem, _)) = lower.rsplit_once('.') {
            if !stem.is_empty() && !out.iter().any(|t| t == stem) {
                out.push(stem.to_owned());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_split_into_words() {
        assert_eq!(split_identifier("parseArgs"), ["parse", "args"]);
        assert_eq!(
            split_identifier("HTTPServerError2"),
            ["http", "server", "error", "2"]
        );
        assert_eq!(
            split_identifier("snake_case_name"),
            ["snake", "case", "name"]
        );
        assert_eq!(split_identifier("kebab-case"), ["kebab", "case"]);
        assert_eq!(split_identifier("utf8Decode"), ["utf", "8", "decode"]);
        assert_eq!(split_identifier("IOError"), ["io", "error"]);
    }

    #[test]
    fn tokens_keep_identifiers_whole_and_split() {
        assert_eq!(
            tokens("fn parseArgs(x) -> Foo::bar_baz"),
            [
                "fn",
                "parseargs",
                "parse",
                "args",
                "foo",
                "bar_baz",
                "bar",
                "baz"
            ]
        );
        assert_eq!(tokens("__init__ a b"), ["init"]);
    }

    #[test]
    fn paths_give_components_name_and_stem() {
        let t = path_tokens("src/http_client.rs");
        for want in [
            "src",
            "http_client",
            "http",
            "client",
            "rs",
            "http_client.rs",
        ] {
            assert!(t.iter().any(|x| x == want), "{want} missing from {t:?}");
        }
    }
}
