//! Every constant of retrieval and ranking, in one place. ARCHITECTURE.md gives each rule's
//! reason and its measured effect on the dev split.

/// BM25 term-frequency saturation and length normalisation (the usual Lucene values).
pub const BM25_K1: f32 = 1.2;
pub const BM25_B: f32 = 0.75;

/// Extra term frequency a token gets when it is in the block's symbol name (per occurrence).
pub const NAME_TF: f32 = 2.0;
/// Extra term frequency for a token of the file's name (stem and its parts).
pub const FILE_NAME_TF: f32 = 2.0;
/// Extra term frequency for a token of the last folders of the path.
pub const FOLDER_TF: f32 = 1.0;
/// How many trailing folders of the path count.
pub const FOLDERS: usize = 3;

/// Candidates taken from each channel, as a multiple of the results asked for (at least
/// [`MIN_CANDIDATES`]).
pub const CANDIDATES_PER_RESULT: usize = 5;
pub const MIN_CANDIDATES: usize = 50;

/// Reciprocal-rank fusion constant.
pub const RRF_K: f32 = 60.0;
/// Share of the vector channel in fusion, by query type; the rest is lexical.
pub const VECTOR_SHARE_IDENTIFIER: f32 = 0.3;
pub const VECTOR_SHARE_NATURAL: f32 = 0.5;

/// A block that defines a symbol the query names gets this many times the best fused score.
pub const DEFINITION_BOOST: f32 = 3.0;
/// ... times this when its file is named after the symbol too.
pub const DEFINITION_FILE_FACTOR: f32 = 1.5;
/// ... times this when the symbol is only mentioned inside a natural-language question.
pub const DEFINITION_IN_PROSE_FACTOR: f32 = 0.5;

/// The best block of a file gets up to this share of the best fused score, in proportion to
/// how much of the candidates' total score its file holds relative to the best file.
pub const FILE_EVIDENCE_BOOST: f32 = 0.2;

/// A block whose file or folder name matches the query's keywords gets up to this share of the
/// best fused score, in proportion to the share of keywords matched.
pub const PATH_KEYWORD_BOOST: f32 = 1.0;
/// Matches below this share of keywords give nothing.
pub const PATH_KEYWORD_MIN_SHARE: f32 = 0.1;

/// Multipliers for files that usually are not the answer to a code question, unless the query
/// asks for that kind of file.
pub const TEST_FACTOR: f32 = 0.3;
pub const PROSE_FACTOR: f32 = 0.5;
pub const EXAMPLE_FACTOR: f32 = 0.3;
pub const COMPAT_FACTOR: f32 = 0.3;
pub const REEXPORT_FACTOR: f32 = 0.5;
pub const TYPE_STUB_FACTOR: f32 = 0.7;
pub const VENDORED_FACTOR: f32 = 0.3;

/// Each further block from a file already in the results is multiplied by this, once more per
/// block already taken from it.
pub const SAME_FILE_DECAY: f32 = 0.5;
