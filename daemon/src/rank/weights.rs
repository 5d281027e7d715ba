//! Every constant of retrieval and ranking, in one place. ARCHITECTURE.md gives each rule's
//! reason and its measured effect on the dev split.
//!
//! The daemon always uses [`DEFAULT`]. `hgd-daemon eval --set name=value,...` overrides values for
//! one tuning run (once, before any search), so a change can be measured in seconds.

use std::sync::OnceLock;

macro_rules! weights {
    ($($(#[doc = $doc:literal])+ $name:ident: $ty:ty = $value:expr;)+) => {
        /// The constants of ranking (see the module documentation).
        #[derive(Debug, Clone)]
        pub struct Weights {
            $($(#[doc = $doc])+ pub $name: $ty,)+
        }

        /// The values the daemon uses.
        pub const DEFAULT: Weights = Weights { $($name: $value,)+ };

        impl Weights {
            fn set(&mut self, name: &str, value: &str) -> Result<(), String> {
                match name {
                    $(stringify!($name) => {
                        self.$name = value
                            .parse()
                            .map_err(|_| format!("{name}: {value:?} is not a number"))?
                    })+
                    _ => return Err(format!("no weight named {name}")),
                }
                Ok(())
            }
        }
    };
}

weights! {
    /// BM25 term-frequency saturation.
    bm25_k1: f32 = 0.9;
    /// BM25 length normalisation.
    bm25_b: f32 = 0.5;
    /// Windows of one long definition are one entry, and a container split into members is one
    /// entry spanning them (off: every stored window and piece is an entry of its own).
    whole_definitions: bool = true;
    /// ... and the container's line range spans its members (off: only its own pieces).
    container_spans_members: bool = true;
    /// Lexical tokens are reduced to their English stems (index and query alike).
    stemming: bool = true;
    /// Extra term frequency a token gets when it is in the block's symbol name (per occurrence).
    name_tf: f32 = 2.0;
    /// Extra term frequency for a token of the file's name (stem and its parts).
    file_name_tf: f32 = 2.0;
    /// Extra term frequency for a token of the last folders of the path.
    folder_tf: f32 = 1.0;
    /// How many trailing folders of the path count.
    folders: usize = 3;
    /// Candidates taken from each channel, as a multiple of the results asked for...
    candidates_per_result: usize = 5;
    /// ... and at least this many.
    min_candidates: usize = 50;
    /// In convex fusion, the share of a candidate's value that comes from its rank (scaled so
    /// the first is 1) rather than from its score scaled between the list's last and first.
    rank_in_fusion: f32 = 0.5;
    /// Reciprocal-rank fusion constant (when fusing by rank).
    rrf_k: f32 = 30.0;
    /// Share of the vector channel in fusion for identifier and path queries; the rest is lexical.
    vector_share_identifier: f32 = 0.3;
    /// Share of the vector channel in fusion for questions in words.
    vector_share_natural: f32 = 0.5;
    /// A block that defines a symbol the query names gets this many times the best fused score.
    definition_boost: f32 = 3.0;
    /// ... times this when its file is named after the symbol too.
    definition_file_factor: f32 = 1.5;
    /// ... times this for each level a definition is nested deeper than the query names it.
    definition_nested_factor: f32 = 0.5;
    /// ... times this when none of the query's qualifiers (`Foo` of `Foo.bar`) is in the
    /// definition's qualified name or path; in proportion up to 1 as more of them are.
    definition_unqualified_factor: f32 = 0.5;
    /// ... times this when the definition's name differs from the query's in case only
    /// (`parser` for `Parser`): identifiers are case-sensitive in most languages.
    definition_case_factor: f32 = 0.5;
    /// ... times this when the symbol is only mentioned inside a question in words.
    definition_in_prose_factor: f32 = 0.5;
    /// The best block of a file gets up to this share of the best fused score, in proportion to
    /// the file's share of the candidates' total score relative to the best file.
    file_evidence_boost: f32 = 0.35;
    /// The best block of a file gets up to this share of the best fused score, by how close
    /// the query's vector is to the mean of the file's vectors (scaled over the candidates' files).
    file_meaning_boost: f32 = 0.3;
    /// A block whose file or folder name matches the query's keywords gets up to this share of
    /// the best fused score, in proportion to the share of keywords matched.
    path_keyword_boost: f32 = 1.0;
    /// A keyword and a path word match when they share a prefix of at least this many letters...
    path_keyword_min_prefix: usize = 4;
    /// ... and the shorter one has at most this many letters after it.
    path_keyword_slack: usize = 3;
    /// Matches below this share of keywords give nothing.
    path_keyword_min_share: f32 = 0.1;
    /// Multiplier for test files, unless the query asks for tests.
    test_factor: f32 = 0.3;
    /// Multiplier for documentation and other prose, unless the query asks for docs.
    prose_factor: f32 = 0.5;
    /// Multiplier for examples, demos and benchmarks, unless the query asks for them.
    example_factor: f32 = 0.3;
    /// Multiplier for compatibility shims and legacy code (`compat`, `_compat`, `legacy`).
    compat_factor: f32 = 0.3;
    /// Multiplier for re-export barrels that define nothing themselves.
    reexport_factor: f32 = 0.5;
    /// Multiplier for type stubs (`.d.ts`, `.pyi`, TypeScript modules declaring only interfaces
    /// and type aliases).
    type_stub_factor: f32 = 0.7;
    /// Multiplier for vendored third-party code.
    vendored_factor: f32 = 0.3;
    /// Multiplier for generated files (lockfiles, minified bundles, generated sources).
    generated_factor: f32 = 0.3;
    /// Each further block from a file already in the results is multiplied by this, once more per
    /// block already taken from it.
    same_file_decay: f32 = 0.5;
    /// Block vectors held as 8-bit integers with a scale each (a quarter of the memory).
    quantize_vectors: bool = true;
}

static CURRENT: OnceLock<Weights> = OnceLock::new();

/// The weights in force.
pub fn w() -> &'static Weights {
    CURRENT.get().unwrap_or(&DEFAULT)
}

/// Overrides weights for this process (`name=value,...`); only before the first search.
pub fn override_with(pairs: &str) -> Result<(), String> {
    let mut weights = DEFAULT;
    for pair in pairs.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = pair
            .split_once('=')
            .ok_or_else(|| format!("{pair:?} is not name=value"))?;
        weights.set(name.trim(), value.trim())?;
    }
    CURRENT
        .set(weights)
        .map_err(|_| "weights were already in use".to_owned())
}
