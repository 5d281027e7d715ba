//! Retrieval and ranking over one repository's blocks, held in memory: code-aware BM25, exact
//! nearest neighbours over the block vectors, a name index of definitions, then a ranking stage
//! (fusion by query type, definition and path evidence, file roles, diversity). Every weight
//! lives in [`weights`]; a few structural limits stay where they are used (how many lines mark
//! a generated file, what length an extension or keyword has).
//!
//! The index groups the windows of one long definition into one entry: lexical search sees the
//! whole definition, the vector channel scores it by its best window, and a result is always the
//! whole definition with its line range.

pub mod filter;
pub mod lexical;
pub mod paths;
pub mod query;
pub mod tokens;
pub mod vectors;
pub mod weights;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use lexical::{Bag, Bm25};
use paths::Role;
use query::{Query, QueryKind};

use crate::git::in_subtree;
use crate::store::BlockRow;

/// Switches for each ranking rule, all on by default. `hgd-daemon eval --without RULE,...`
/// turns rules off to measure what each one is worth.
#[derive(Debug, Clone, Copy)]
pub struct Rules {
    /// Stop words are dropped from natural-language queries before lexical search.
    pub query_stop_words: bool,
    /// The vector share of fusion depends on the query type.
    pub query_type_weight: bool,
    /// Several good blocks in a file lift its best block.
    pub file_evidence: bool,
    /// A file close to the query's meaning as a whole lifts its best block.
    pub file_meaning: bool,
    /// Blocks defining a symbol the query names are lifted (and found if not retrieved).
    pub definitions: bool,
    /// ... less so when the definition's name differs from the query's in case only.
    pub exact_case: bool,
    /// A path query lifts the blocks of the files it names.
    pub path_query: bool,
    /// Keywords of a question that name a file or its folder lift that file.
    pub path_keywords: bool,
    /// Tests, docs, examples and the like rank below implementation code.
    pub roles: bool,
    /// ... unless the query asks for them ("tests for ...").
    pub asks_for: bool,
    /// Further blocks of a file already in the results decay.
    pub diversity: bool,
    /// Fuse by a blend of each candidate's rank and its normalised score (`rank_in_fusion`);
    /// off: by reciprocal rank alone.
    pub convex_fusion: bool,
}

impl Default for Rules {
    fn default() -> Self {
        Rules {
            query_stop_words: true,
            query_type_weight: true,
            file_evidence: true,
            file_meaning: true,
            definitions: true,
            exact_case: true,
            path_query: true,
            path_keywords: true,
            roles: true,
            asks_for: true,
            diversity: true,
            convex_fusion: true,
        }
    }
}

static CONFIGURED: std::sync::OnceLock<Rules> = std::sync::OnceLock::new();

impl Rules {
    /// The rules a daemon searches with: all, unless [`Rules::configure`] said otherwise.
    pub fn configured() -> Rules {
        CONFIGURED.get().copied().unwrap_or_default()
    }

    /// Sets the daemon's rules once, at start.
    pub fn configure(rules: Rules) {
        let _ = CONFIGURED.set(rules);
    }

    /// All rules but those named in `HGD_RANK_WITHOUT`, when set: a diagnostic (which rule put a
    /// result where it is), and how the quality test shows that each rule it relies on matters.
    pub fn from_env() -> Result<Option<Rules>, String> {
        match std::env::var("HGD_RANK_WITHOUT") {
            Ok(names) => Rules::without(&names)
                .map(Some)
                .map_err(|e| format!("HGD_RANK_WITHOUT: {e}")),
            Err(_) => Ok(None),
        }
    }

    /// All rules but those named (comma-separated).
    pub fn without(names: &str) -> Result<Rules, String> {
        let mut r = Rules::default();
        for name in names.split(',').map(str::trim).filter(|n| !n.is_empty()) {
            let flag = match name {
                "query_stop_words" => &mut r.query_stop_words,
                "query_type_weight" => &mut r.query_type_weight,
                "file_evidence" => &mut r.file_evidence,
                "file_meaning" => &mut r.file_meaning,
                "definitions" => &mut r.definitions,
                "exact_case" => &mut r.exact_case,
                "path_query" => &mut r.path_query,
                "path_keywords" => &mut r.path_keywords,
                "roles" => &mut r.roles,
                "asks_for" => &mut r.asks_for,
                "diversity" => &mut r.diversity,
                "convex_fusion" => &mut r.convex_fusion,
                other => return Err(format!("no rule named {other}")),
            };
            *flag = false;
        }
        Ok(r)
    }
}

/// Which channels answer a search.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    Hybrid,
    Lexical,
    Semantic,
}

/// One searchable unit: a definition (all its windows), the code between definitions, a section.
#[derive(Debug, Clone)]
pub struct Entry {
    pub path: Arc<str>,
    pub language: String,
    pub kind: String,
    pub name: String,
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
    file: u32,
    /// Rows of this entry's window vectors in [`RepoIndex::vectors`].
    vectors: Vec<u32>,
    /// Text lexical search sees besides `content`: the other pieces of a container (fields,
    /// closing lines) whose members are entries of their own.
    more_text: String,
}

struct FileInfo {
    role: Role,
    /// This file's entries (contiguous: entries are sorted by file).
    entries: std::ops::Range<u32>,
    /// Lowercase file name without extension.
    stem: String,
    /// Words of the file name and of its folder, for matching query keywords.
    name_words: Vec<String>,
    path: Arc<str>,
}

/// `v` scaled to length 1, or `None` for a zero vector.
fn normalised(mut v: Vec<f32>) -> Option<Vec<f32>> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    if norm <= f32::EPSILON {
        return None;
    }
    v.iter_mut().for_each(|x| *x /= norm);
    Some(v)
}

/// Block kinds that are not definitions.
fn is_definition(kind: &str) -> bool {
    !matches!(kind, "code" | "section" | "text")
}

/// The in-memory search index of one repository (or of its uncommitted files).
pub struct RepoIndex {
    entries: Vec<Entry>,
    files: Vec<FileInfo>,
    /// Entry `i`'s window rows in `vectors` are `window_rows[window_start[i]..window_start[i + 1]]`.
    window_start: Vec<u32>,
    window_rows: Vec<u32>,
    vectors: vectors::Vectors,
    /// Per file: the mean of its blocks' vectors (the query's dot with it is the mean of its
    /// dots with them), for how close the query is to the file as a whole.
    file_vectors: vectors::Vectors,
    bm25: Bm25,
    /// Term bags, kept only for the overlay (scored with HEAD's statistics).
    bags: Option<Vec<Bag>>,
    /// Lowercase symbol name (last component) → entries defining it.
    definitions: HashMap<String, Vec<u32>>,
    /// Lowercase file name → files.
    file_names: HashMap<String, Vec<u32>>,
}

impl RepoIndex {
    /// Builds the index from stored rows (any order). `keep_bags` for the overlay.
    pub fn build(mut rows: Vec<BlockRow>, dims: usize, keep_bags: bool) -> RepoIndex {
        rows.sort_by(|a, b| {
            (a.path.as_str(), a.start_line, a.end_line).cmp(&(
                b.path.as_str(),
                b.start_line,
                b.end_line,
            ))
        });
        let mut entries: Vec<Entry> = Vec::new();
        let mut files: Vec<FileInfo> = Vec::new();
        // Rows without vectors (a job's parsed blocks): no vector channel, and no memory for one.
        let dims = if rows.iter().any(|r| r.vector.len() == dims) {
            dims
        } else {
            0
        };
        let rows_total = rows.len();
        let mut vectors = vectors::Vectors::with_capacity(rows.len(), dims);
        // Which rows have a vector (the others hold zeros), for the files' mean vectors.
        let mut embedded: Vec<bool> = Vec::with_capacity(rows.len());
        // Lines of the entry being assembled, so overlapping windows merge into one text.
        let mut lines: BTreeMap<u32, String> = BTreeMap::new();
        let finish = |entry: &mut Entry, lines: &mut BTreeMap<u32, String>| {
            // Blank lines between two windows are in neither: keep them, so that line numbers
            // counted from the entry's first line stay right.
            let mut text: Vec<String> = Vec::with_capacity(lines.len());
            let mut next = lines.keys().next().copied().unwrap_or(0);
            for (n, line) in std::mem::take(lines) {
                text.extend(std::iter::repeat_n(String::new(), (n - next) as usize));
                text.push(line);
                next = n + 1;
            }
            entry.content = text.join("\n");
        };
        for (i, row) in rows.into_iter().enumerate() {
            let same_file = files.last().is_some_and(|f| *f.path == *row.path);
            if !same_file {
                files.push(FileInfo::new(Arc::from(row.path.as_str())));
            }
            let continues = same_file
                && weights::w().whole_definitions
                // Windows of a file without a grammar (data, config, plain text) are slices
                // with no unit to restore: merged, a large file would become one result.
                && row.kind != "text"
                && entries.last().is_some_and(|e| {
                    e.kind == row.kind && e.name == row.name && row.start_line <= e.end_line + 1
                });
            if continues {
                let entry = entries.last_mut().expect("checked above");
                entry.end_line = entry.end_line.max(row.end_line);
                entry.vectors.push(i as u32);
            } else {
                if let Some(prev) = entries.last_mut() {
                    finish(prev, &mut lines);
                }
                let file = files.len() as u32 - 1;
                entries.push(Entry {
                    path: files[file as usize].path.clone(),
                    language: row.language,
                    kind: row.kind,
                    name: row.name,
                    start_line: row.start_line,
                    end_line: row.end_line,
                    content: String::new(),
                    file,
                    vectors: vec![i as u32],
                    more_text: String::new(),
                });
            }
            for (n, line) in row.content.lines().enumerate() {
                lines
                    .entry(row.start_line + n as u32)
                    .or_insert_with(|| line.to_owned());
            }
            embedded.push(row.vector.len() == dims);
            vectors.push(&row.vector);
        }
        if let Some(last) = entries.last_mut() {
            finish(last, &mut lines);
        }
        let entries = if weights::w().whole_definitions {
            merge_containers(entries)
        } else {
            entries
        };
        let mut facts = vec![
            paths::FileFacts {
                has_definitions: false,
                declarations_only: true,
                generated_marker: false,
            };
            files.len()
        ];
        let mut definitions: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, e) in entries.iter().enumerate() {
            let range = &mut files[e.file as usize].entries;
            if range.start == range.end {
                *range = i as u32..i as u32 + 1;
            } else {
                range.end = i as u32 + 1;
            }
            if e.start_line <= 2 && paths::says_generated(&e.content) {
                facts[e.file as usize].generated_marker = true;
            }
            if is_definition(&e.kind) && !e.name.is_empty() {
                let f = &mut facts[e.file as usize];
                f.has_definitions = true;
                f.declarations_only &= matches!(e.kind.as_str(), "interface" | "type");
                if let Some(last) = name_components(&e.name).pop() {
                    definitions.entry(last).or_default().push(i as u32);
                }
            }
        }
        let mut file_vectors = vectors::Vectors::with_capacity(files.len(), dims);
        if dims > 0 {
            for f in &files {
                let mut sum = vec![0.0f32; dims];
                let mut n = 0usize;
                for e in &entries[f.entries.start as usize..f.entries.end as usize] {
                    for &row in e.vectors.iter().filter(|&&r| embedded[r as usize]) {
                        vectors.add_to(row as usize, &mut sum);
                        n += 1;
                    }
                }
                sum.iter_mut().for_each(|v| *v /= n.max(1) as f32);
                file_vectors.push(&sum);
            }
        }
        let mut file_names: HashMap<String, Vec<u32>> = HashMap::new();
        for (i, f) in files.iter_mut().enumerate() {
            let mut fact = facts[i];
            fact.declarations_only &= fact.has_definitions;
            f.role = Role::of(&f.path, fact);
            let name = f.path.rsplit('/').next().unwrap_or("").to_lowercase();
            file_names.entry(name).or_default().push(i as u32);
        }
        let bags: Vec<Bag> = entries
            .iter()
            .map(|e| bag_of(e, &files[e.file as usize]))
            .collect();
        let (bm25, bags) = if keep_bags {
            (Bm25::build(bags.iter().cloned()), Some(bags))
        } else {
            (Bm25::build(bags), None)
        };
        // Each entry's window rows, flattened in entry order: the vector passes read them in
        // sequence instead of following a pointer per entry.
        let mut window_start = Vec::with_capacity(entries.len() + 1);
        let mut window_rows = Vec::with_capacity(rows_total);
        let mut entries = entries;
        for e in &mut entries {
            window_start.push(window_rows.len() as u32);
            window_rows.extend(std::mem::take(&mut e.vectors));
        }
        window_start.push(window_rows.len() as u32);
        RepoIndex {
            entries,
            files,
            window_start,
            window_rows,
            vectors,
            file_vectors,
            bm25,
            bags,
            definitions,
            file_names,
        }
    }

    pub fn entries(&self) -> &[Entry] {
        &self.entries
    }

    /// Files with at least one entry.
    pub fn file_count(&self) -> usize {
        self.files.len()
    }

    /// Bytes held, roughly: what the index cache counts against its budget.
    pub fn memory_bytes(&self) -> usize {
        let entries: usize = self
            .entries
            .iter()
            .map(|e| {
                std::mem::size_of::<Entry>()
                    + e.content.capacity()
                    + e.more_text.capacity()
                    + e.name.capacity()
                    + e.language.capacity()
                    + e.kind.capacity()
                    + e.vectors.capacity() * 4
            })
            .sum();
        let files: usize = self
            .files
            .iter()
            .map(|f| {
                std::mem::size_of::<FileInfo>()
                    + f.path.len()
                    + f.stem.capacity()
                    + f.name_words
                        .iter()
                        .map(|w| w.capacity() + 24)
                        .sum::<usize>()
            })
            .sum();
        let names: usize = self
            .definitions
            .iter()
            .chain(&self.file_names)
            .map(|(k, v)| k.capacity() + 48 + v.capacity() * 4)
            .sum();
        let bags: usize = self.bags.iter().flatten().map(|b| b.len() * 48).sum();
        entries
            + files
            + names
            + bags
            + (self.window_start.capacity() + self.window_rows.capacity()) * 4
            + self.vectors.memory_bytes()
            + self.file_vectors.memory_bytes()
            + self.bm25.memory_bytes()
    }

    /// The entries of the file at `path`, in line order (empty: no such file here).
    pub fn file_entries(&self, path: &str) -> std::ops::Range<u32> {
        match self.files.binary_search_by(|f| f.path.as_ref().cmp(path)) {
            Ok(i) => self.files[i].entries.clone(),
            Err(_) => 0..0,
        }
    }

    pub fn entry(&self, entry: u32) -> &Entry {
        &self.entries[entry as usize]
    }

    /// An entry's vector: the normalised sum of its windows' stored vectors (`None`: it has
    /// none yet).
    pub fn entry_vector(&self, entry: u32) -> Option<Vec<f32>> {
        let dims = self.vectors.dims();
        let windows = self.windows(entry);
        if dims == 0 || windows.is_empty() {
            return None;
        }
        let mut sum = vec![0.0f32; dims];
        for &row in windows {
            self.vectors.add_to(row as usize, &mut sum);
        }
        normalised(sum)
    }

    /// A file's vector: the normalised mean of its blocks' (`None`: no such file, or no vectors).
    pub fn file_vector(&self, path: &str) -> Option<Vec<f32>> {
        let i = self
            .files
            .binary_search_by(|f| f.path.as_ref().cmp(path))
            .ok()?;
        let dims = self.file_vectors.dims();
        if dims == 0 {
            return None;
        }
        let mut sum = vec![0.0f32; dims];
        self.file_vectors.add_to(i, &mut sum);
        normalised(sum)
    }

    /// Rows of entry `entry`'s window vectors.
    fn windows(&self, entry: u32) -> &[u32] {
        let i = entry as usize;
        &self.window_rows[self.window_start[i] as usize..self.window_start[i + 1] as usize]
    }

    fn best_window(&self, entry: u32, query: &vectors::QueryVector) -> f32 {
        let mut best = f32::MIN;
        for &row in self.windows(entry) {
            best = best.max(self.vectors.dot(row as usize, query));
        }
        best
    }
}

/// Makes each container that was split into members (a large class, impl or module) one entry
/// for the whole definition: its own pieces (header, fields) join, and its line range spans its
/// members, so a search for the class returns the class, not a fragment of it. The members stay
/// entries of their own. A container owns the run of entries right after its first piece that are
/// its members (`Name.*`) or its further pieces; a same-named definition before it (a `struct Foo`
/// before an `impl Foo`) or after other code is left alone (two `impl Foo` blocks with only members
/// between them read as one). `entries` are sorted by file, then line.
fn merge_containers(entries: Vec<Entry>) -> Vec<Entry> {
    fn is_member_of(member: &str, container: &str) -> bool {
        member.len() > container.len()
            && member.starts_with(container)
            && member.as_bytes()[container.len()] == b'.'
    }
    let mut out: Vec<Entry> = Vec::with_capacity(entries.len());
    // Lists still to merge, innermost last: a container's members are merged (as a list of their
    // own) before the rest of the list it is in. A stack, not recursion, so deeply nested
    // containers cannot overflow a thread's stack.
    let mut lists = vec![entries.into_iter().peekable()];
    while let Some(rest) = lists.last_mut() {
        let Some(mut head) = rest.next() else {
            lists.pop();
            continue;
        };
        // A Go type followed by its methods (`Type.method`, declared outside it) spans them too.
        let container = is_definition(&head.kind) && !head.name.is_empty();
        if !container {
            out.push(head);
            continue;
        }
        let mut members: Vec<Entry> = Vec::new();
        while let Some(next) = rest.next_if(|e| {
            e.file == head.file
                // A module named after another (`defmodule A.B` after `defmodule A` in Elixir)
                // is a module of its own, not a member.
                && ((is_member_of(&e.name, &head.name)
                    && !(e.kind == "module" && head.kind == "module"))
                    || (e.kind == head.kind && e.name == head.name && !members.is_empty()))
        }) {
            if next.name == head.name {
                // A further piece of the container (between or after its members).
                head.end_line = head.end_line.max(next.end_line);
                head.vectors.extend(next.vectors);
                head.more_text.push('\n');
                head.more_text.push_str(&next.content);
            } else {
                if weights::w().container_spans_members {
                    head.end_line = head.end_line.max(next.end_line);
                }
                members.push(next);
            }
        }
        out.push(head);
        // Members may be containers of their own: merge within them too.
        if !members.is_empty() {
            lists.push(members.into_iter().peekable());
        }
    }
    out
}

/// Whether `word` occurs in `text` as a whole identifier (case-sensitive).
fn contains_word(text: &str, word: &str) -> bool {
    let is_ident = |c: char| c.is_alphanumeric() || c == '_';
    !word.is_empty()
        && text.match_indices(word).any(|(at, _)| {
            !text[..at].chars().next_back().is_some_and(is_ident)
                && !text[at + word.len()..].chars().next().is_some_and(is_ident)
        })
}

impl FileInfo {
    fn new(path: Arc<str>) -> FileInfo {
        let file = path.rsplit('/').next().unwrap_or("");
        let stem = file.split('.').next().unwrap_or(file).to_lowercase();
        let parent = path.rsplit('/').nth(1).unwrap_or("");
        let mut name_words = tokens::tokens(&stem);
        name_words.extend(tokens::tokens(parent));
        FileInfo {
            role: Role::default(),
            entries: 0..0,
            stem,
            name_words,
            path,
        }
    }
}

/// The weighted terms of an entry: its content, plus its symbol name, file name and last folders
/// weighted up.
fn bag_of(entry: &Entry, file: &FileInfo) -> Bag {
    let mut bag = Bag::new();
    let mut add = |text: &str, weight: f32| {
        tokens::for_each_token(text, |t| {
            *bag.entry(tokens::lexical_form(t).into_owned()).or_default() += weight
        });
    };
    add(&entry.content, 1.0);
    add(&entry.more_text, 1.0);
    add(&entry.name, weights::w().name_tf);
    add(&file.stem, weights::w().file_name_tf);
    let folders: Vec<&str> = file.path.split('/').collect();
    let folders = &folders[..folders.len().saturating_sub(1)];
    for folder in folders.iter().rev().take(weights::w().folders) {
        add(folder, weights::w().folder_tf);
    }
    bag
}

/// The index a candidate comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Source {
    /// HEAD's index as it was built.
    Head,
    /// Files committed since HEAD's index was built, at HEAD now.
    Changed,
    /// The overlay of uncommitted files.
    Overlay,
}

/// Which index a candidate comes from and its entry there.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Found {
    pub source: Source,
    pub entry: u32,
}

/// One search over HEAD's index, the files committed since it was built, and the overlay.
pub struct Search<'a> {
    pub head: &'a RepoIndex,
    /// Files committed since `head` was built (their blocks now), and their paths, not searched
    /// in `head`.
    pub changed: Option<(&'a RepoIndex, &'a HashSet<String>)>,
    pub overlay: Option<&'a RepoIndex>,
    /// Dirty paths: their overlay version, or nothing, is searched instead of HEAD's and the
    /// changed layer's.
    pub dirty: &'a HashSet<String>,
    pub subtree: &'a str,
    /// Types, excluded globs, code only (`filter::Filter::everything()`: no restriction).
    pub filter: &'a filter::Filter,
    pub query: &'a Query,
    pub vector: Option<&'a [f32]>,
    pub mode: Mode,
    pub limit: usize,
    pub rules: Rules,
}

impl<'a> Search<'a> {
    fn index(&self, source: Source) -> &'a RepoIndex {
        match source {
            Source::Head => self.head,
            Source::Changed => self.changed.map_or(self.head, |(index, _)| index),
            Source::Overlay => self.overlay.unwrap_or(self.head),
        }
    }

    pub fn entry(&self, found: Found) -> &'a Entry {
        &self.index(found.source).entries[found.entry as usize]
    }

    fn allowed(&self, source: Source, entry: &Entry) -> bool {
        self.allowed_path(source, &entry.path)
    }

    /// Under the searched folder, and not replaced by a later layer.
    fn allowed_path(&self, source: Source, path: &str) -> bool {
        let outside = |paths: &HashSet<String>| paths.is_empty() || !paths.contains(path);
        in_subtree(path, self.subtree)
            && self.filter.allows(path)
            && match source {
                Source::Head => {
                    outside(self.dirty) && self.changed.is_none_or(|(_, paths)| outside(paths))
                }
                Source::Changed => outside(self.dirty),
                Source::Overlay => true,
            }
    }

    fn layers(&self) -> impl Iterator<Item = (Source, &'a RepoIndex)> {
        std::iter::once((Source::Head, self.head))
            .chain(self.changed.map(|(c, _)| (Source::Changed, c)))
            .chain(self.overlay.map(|o| (Source::Overlay, o)))
    }

    /// The query's tokens for lexical search, in the form the index holds them (stop words of
    /// a question dropped).
    fn lexical_tokens(&self) -> Vec<String> {
        let natural = self.rules.query_stop_words && self.query.kind == QueryKind::Natural;
        self.query
            .tokens
            .iter()
            .filter(|t| !natural || !query::is_stop_word(t))
            .map(|t| tokens::lexical_form(t).into_owned())
            .collect()
    }

    /// Best lexical candidates with their BM25 scores, best first.
    fn lexical(&self, n: usize) -> Vec<(Found, f32)> {
        let mut scored: Vec<(Found, f32)> = Vec::new();
        let tokens = self.lexical_tokens();
        let mut scores = vec![0.0f32; self.head.entries.len()];
        self.head.bm25.score_all(&tokens, &mut scores);
        for entry in self.allowed_entries(Source::Head, self.head) {
            let s = scores[entry as usize];
            if s > 0.0 {
                scored.push((
                    Found {
                        source: Source::Head,
                        entry,
                    },
                    s,
                ));
            }
        }
        // The later layers are small: their entries keep their token bags and are scored with
        // HEAD's statistics, so scores compare across layers.
        for (source, index) in self.layers().skip(1) {
            if let Some(bags) = &index.bags {
                for entry in self.allowed_entries(source, index) {
                    let s = self.head.bm25.score_bag(&tokens, &bags[entry as usize]);
                    if s > 0.0 {
                        scored.push((Found { source, entry }, s));
                    }
                }
            }
        }
        top(scored, n)
    }

    /// Nearest entries by their best window (cosine), best first.
    fn semantic(&self, vector: &vectors::QueryVector, n: usize) -> Vec<(Found, f32)> {
        let mut scored = Vec::new();
        for (source, index) in self.layers() {
            if index.vectors.dims() != vector.dims() {
                continue;
            }
            for entry in self.allowed_entries(source, index) {
                scored.push((Found { source, entry }, index.best_window(entry, vector)));
            }
        }
        top(scored, n)
    }

    /// The entries of `index` that this search may return, checked a file at a time.
    fn allowed_entries(
        &self,
        source: Source,
        index: &'a RepoIndex,
    ) -> impl Iterator<Item = u32> + use<'a, '_> {
        index
            .files
            .iter()
            .filter(move |f| self.allowed_path(source, &f.path))
            .flat_map(|f| f.entries.clone())
    }

    /// Ranked results, best first, with their scores.
    pub fn run(&self) -> Vec<(Found, f32)> {
        let n = (self.limit * weights::w().candidates_per_result).max(weights::w().min_candidates);
        let share = match (self.mode, self.query.kind) {
            (Mode::Lexical, _) => 0.0,
            (Mode::Semantic, _) => 1.0,
            (Mode::Hybrid, _) if self.vector.is_none() => 0.0,
            (Mode::Hybrid, _) if !self.rules.query_type_weight => weights::w().vector_share_natural,
            (Mode::Hybrid, QueryKind::Natural) => weights::w().vector_share_natural,
            (Mode::Hybrid, _) => weights::w().vector_share_identifier,
        };
        let mut fused: HashMap<Found, f32> = HashMap::new();
        let convex = self.rules.convex_fusion;
        // Quantized once here, so each row is scored by an integer dot product.
        let vector = self.vector.map(vectors::QueryVector::new);
        if share < 1.0 {
            fuse_into(&mut fused, &self.lexical(n), 1.0 - share, convex);
        }
        if share > 0.0 {
            if let Some(vector) = &vector {
                fuse_into(&mut fused, &self.semantic(vector, n), share, convex);
            }
        }
        if self.mode != Mode::Semantic {
            self.rerank(&mut fused, vector.as_ref());
        }
        self.diversify(fused)
    }

    fn rerank(&self, fused: &mut HashMap<Found, f32>, vector: Option<&vectors::QueryVector>) {
        let best = fused.values().copied().fold(0.0f32, f32::max);
        // With no positive score (nothing matched), boosts are scaled to a first rank's value.
        let best = if best > 0.0 { best } else { 1.0 };
        // File evidence: several good blocks in one file lift that file's best block.
        // In entry order, so that sums and ties do not depend on the map's order.
        let mut candidates: Vec<(Found, f32)> = fused.iter().map(|(&f, &s)| (f, s)).collect();
        candidates.sort_by_key(|(f, _)| (f.source, f.entry));
        let mut per_file: HashMap<(Source, u32), (f32, Found, f32)> = HashMap::new();
        for (f, s) in candidates {
            let file = self.entry(f).file;
            let slot = per_file.entry((f.source, file)).or_insert((0.0, f, s));
            slot.0 += s;
            if s > slot.2 {
                slot.1 = f;
                slot.2 = s;
            }
        }
        let best_file = per_file.values().map(|v| v.0).fold(0.0f32, f32::max);
        if best_file > 0.0 && self.rules.file_evidence {
            for (sum, f, _) in per_file.values() {
                *fused.get_mut(f).expect("a candidate") +=
                    weights::w().file_evidence_boost * best * sum / best_file;
            }
        }
        // File meaning: a file whose blocks are close to the query on average lifts its best
        // block (scaled between the candidates' closest and furthest files).
        if let Some(vector) = vector.filter(|_| self.rules.file_meaning) {
            let closeness: Vec<(Found, f32)> = per_file
                .iter()
                .filter(|((source, _), _)| self.index(*source).file_vectors.dims() == vector.dims())
                .map(|(&(source, file), &(_, f, _))| {
                    (
                        f,
                        self.index(source).file_vectors.dot(file as usize, vector),
                    )
                })
                .collect();
            let hi = closeness.iter().map(|c| c.1).fold(f32::MIN, f32::max);
            let lo = closeness.iter().map(|c| c.1).fold(f32::MAX, f32::min);
            if hi > lo {
                for (f, c) in closeness {
                    *fused.get_mut(&f).expect("a candidate") +=
                        weights::w().file_meaning_boost * best * (c - lo) / (hi - lo);
                }
            }
        }
        // Definitions of the symbols the query names, found by name, retrieved or not. A path
        // query's symbol (`res.json` read as a member) counts only when no file has that path.
        let path_names_a_file =
            self.query.kind == QueryKind::Path && !self.files_named_by_path_query().is_empty();
        let symbols = if self.rules.definitions && !path_names_a_file {
            &self.query.symbols[..]
        } else {
            &[]
        };
        for symbol in symbols {
            let key = symbol.name.to_lowercase();
            // Case decides only between definitions that differ in it: a query written in
            // another case than the only definition still finds it at full strength.
            let some_named_exactly = self.rules.exact_case
                && self.layers().any(|(source, index)| {
                    index.definitions.get(&key).into_iter().flatten().any(|&i| {
                        let e = &index.entries[i as usize];
                        self.allowed(source, e) && named_exactly(&e.name, &symbol.name)
                    })
                });
            for (source, index) in self.layers() {
                let holder = symbol.qualifiers.last();
                let mut held_by_name = false;
                for &i in index.definitions.get(&key).into_iter().flatten() {
                    let e = &index.entries[i as usize];
                    if !self.allowed(source, e) {
                        continue;
                    }
                    let named = name_components(&e.name);
                    // Held by the holder when the component before the symbol is the holder's
                    // name (`HashMap.get` is not held by `Map`).
                    held_by_name |= holder
                        .is_some_and(|h| named.len() >= 2 && named[named.len() - 2] == h.as_str());
                    let file = &index.files[e.file as usize];
                    let mut boost = weights::w().definition_boost;
                    if stem_names(&file.stem, &key) {
                        boost *= weights::w().definition_file_factor;
                    }
                    if symbol.in_prose {
                        boost *= weights::w().definition_in_prose_factor;
                    }
                    if some_named_exactly && !named_exactly(&e.name, &symbol.name) {
                        boost *= weights::w().definition_case_factor;
                    }
                    // The outermost definition first: a class before its constructors (which
                    // share its name in Java, C#, C++), `Foo.bar` before `Outer.Foo.bar`.
                    // Nesting is counted by `.` only: a namespace (`ns::detail::f`) is not
                    // a holder the way a class is.
                    let depth = e.name.split('.').count();
                    let extra = depth.saturating_sub(symbol.qualifiers.len() + 1);
                    boost *= weights::w().definition_nested_factor.powi(extra as i32);
                    if !symbol.qualifiers.is_empty() {
                        // Whole components only: `io` of `io.Reader` must not match `audio.go`.
                        let path = file.path.to_lowercase();
                        let components: HashSet<&str> = named
                            .iter()
                            .map(String::as_str)
                            .chain(path.split('/').map(|c| c.split('.').next().unwrap_or(c)))
                            .filter(|c| !c.is_empty())
                            .collect();
                        let matched = symbol
                            .qualifiers
                            .iter()
                            .filter(|q| components.contains(q.as_str()))
                            .count();
                        let unmatched = weights::w().definition_unqualified_factor;
                        boost *= unmatched
                            + (1.0 - unmatched) * matched as f32 / symbol.qualifiers.len() as f32;
                    }
                    *fused.entry(Found { source, entry: i }).or_default() += boost * best;
                }
                // `Holder.member` where the holder was not split into members (it is short): the
                // member is not in the name index, but the holder's own text defines it.
                // Only for a query that is the qualified name itself: inside a sentence the
                // qualifier is as often a namespace (`std::vector for contiguous storage`), whose blocks
                // mention everything.
                let Some(holder) = holder.filter(|_| !held_by_name && !symbol.in_prose) else {
                    continue;
                };
                for &i in index.definitions.get(holder).into_iter().flatten() {
                    let e = &index.entries[i as usize];
                    // A holder with further pieces was split: its members are entries of
                    // their own, found above when they exist.
                    if !self.allowed(source, e)
                        || !e.more_text.is_empty()
                        || !contains_word(&e.content, &symbol.name)
                    {
                        continue;
                    }
                    *fused.entry(Found { source, entry: i }).or_default() +=
                        weights::w().definition_boost * best;
                }
            }
        }
        // A path query: the blocks of the files it names.
        let mut named_files: HashSet<(Source, u32)> = HashSet::new();
        if self.query.kind == QueryKind::Path && self.rules.path_query {
            for (source, file) in self.files_named_by_path_query() {
                named_files.insert((source, file));
                let index = self.index(source);
                for i in index.files[file as usize].entries.clone() {
                    if self.allowed(source, &index.entries[i as usize]) {
                        *fused.entry(Found { source, entry: i }).or_default() +=
                            weights::w().definition_boost * best;
                    }
                }
            }
        }
        // Keywords of a question that name the file or its folder.
        if self.query.kind == QueryKind::Natural
            && !self.query.keywords.is_empty()
            && self.rules.path_keywords
        {
            for (f, s) in fused.iter_mut() {
                let file = &self.index(f.source).files[self.entry(*f).file as usize];
                let matched = self
                    .query
                    .keywords
                    .iter()
                    .filter(|k| file.name_words.iter().any(|w| words_match(k, w)))
                    .count();
                let share = matched as f32 / self.query.keywords.len() as f32;
                if share >= weights::w().path_keyword_min_share {
                    *s += weights::w().path_keyword_boost * best * share;
                }
            }
        }
        // File roles: tests, docs, examples and the like rank below implementation code.
        // The file a path query names is wanted whatever its role.
        if self.rules.roles {
            let asks = if self.rules.asks_for {
                self.query.asks_for
            } else {
                query::AsksFor::default()
            };
            for (f, s) in fused.iter_mut() {
                let file = self.entry(*f).file;
                if !named_files.contains(&(f.source, file)) {
                    *s *= self.index(f.source).files[file as usize].role.factor(asks);
                }
            }
        }
    }

    /// The files (layer, file) whose path is the path query's, or ends with it.
    fn files_named_by_path_query(&self) -> Vec<(Source, u32)> {
        let wanted = self.query.text.trim_start_matches("./").to_lowercase();
        let name = wanted.rsplit('/').next().unwrap_or(&wanted).to_owned();
        let mut found = Vec::new();
        for (source, index) in self.layers() {
            for &file in index.file_names.get(&name).into_iter().flatten() {
                let path = index.files[file as usize].path.to_lowercase();
                if path == wanted || path.ends_with(&format!("/{wanted}")) {
                    found.push((source, file));
                }
            }
        }
        found
    }

    /// Picks results best first, decaying each further block of a file already picked.
    fn diversify(&self, fused: HashMap<Found, f32>) -> Vec<(Found, f32)> {
        let mut pool: Vec<(Found, f32)> = fused.into_iter().collect();
        pool.sort_by(|a, b| {
            b.1.total_cmp(&a.1)
                .then_with(|| self.entry(a.0).path.cmp(&self.entry(b.0).path))
                .then_with(|| self.entry(a.0).start_line.cmp(&self.entry(b.0).start_line))
        });
        let mut taken: HashMap<(Source, u32), i32> = HashMap::new();
        let mut out: Vec<(Found, f32)> = Vec::new();
        while out.len() < self.limit && !pool.is_empty() {
            let (pick, score) = pool
                .iter()
                .enumerate()
                .map(|(i, (f, s))| {
                    let n = taken
                        .get(&(f.source, self.entry(*f).file))
                        .copied()
                        .unwrap_or(0);
                    let decay = if self.rules.diversity {
                        weights::w().same_file_decay.powi(n)
                    } else {
                        1.0
                    };
                    (i, s * decay)
                })
                .fold((0, f32::MIN), |a, b| if b.1 > a.1 { b } else { a });
            let (found, _) = pool.remove(pick);
            *taken
                .entry((found.source, self.entry(found).file))
                .or_default() += 1;
            out.push((found, score));
        }
        out
    }
}

/// The `n` best of `scored`, best first (ties by entry order, for stable results). Only the `n`
/// best are sorted: the lists hold every entry of a repository.
fn top(mut scored: Vec<(Found, f32)>, n: usize) -> Vec<(Found, f32)> {
    let order = |a: &(Found, f32), b: &(Found, f32)| {
        b.1.total_cmp(&a.1)
            .then_with(|| (a.0.source, a.0.entry).cmp(&(b.0.source, b.0.entry)))
    };
    if n == 0 {
        return Vec::new();
    }
    if scored.len() > n {
        scored.select_nth_unstable_by(n - 1, order);
        scored.truncate(n);
    }
    scored.sort_by(order);
    scored
}

/// Adds one channel's ranked list into `fused` with weight `share`: by reciprocal rank, or by
/// score scaled to 0..1 between the list's last and first (its own best is 1, the weakest
/// candidate 0), so that a clear winner stays clear.
fn fuse_into(fused: &mut HashMap<Found, f32>, list: &[(Found, f32)], share: f32, convex: bool) {
    let (first, last) = match (list.first(), list.last()) {
        (Some(f), Some(l)) => (f.1, l.1),
        _ => return,
    };
    for (rank, &(found, score)) in list.iter().enumerate() {
        let k = weights::w().rrf_k;
        // By rank, scaled so the first is 1 like the first by score.
        let by_rank = (k + 1.0) / (k + rank as f32 + 1.0);
        let value = if convex {
            let by_score = if first > last {
                (score - last) / (first - last)
            } else {
                1.0
            };
            let blend = weights::w().rank_in_fusion;
            blend * by_rank + (1.0 - blend) * by_score
        } else {
            by_rank / (k + 1.0)
        };
        *fused.entry(found).or_default() += share * value;
    }
}

/// The components of a definition's name, lowercase, as a query names them: generic arguments
/// dropped (`BoundedQueue<T>.push` is `boundedqueue`, `push`) and a trait implementation named by
/// its type (`Display for Foo` is `foo`). Separators: `.`, `::`, `\`.
fn name_components(name: &str) -> Vec<String> {
    plain_name(name)
        .split(NAME_SEPARATORS)
        .map(str::trim)
        .filter(|c| !c.is_empty())
        .map(str::to_lowercase)
        .collect()
}

/// What separates the parts of a qualified name: `Foo.bar`, `Foo::bar`, `Foo\Bar`.
const NAME_SEPARATORS: [char; 3] = ['.', ':', '\\'];

/// A definition's name without generic arguments, and a trait implementation's by its type.
fn plain_name(name: &str) -> String {
    let mut plain = String::with_capacity(name.len());
    let mut generics = 0usize;
    for c in name.chars() {
        match c {
            '<' => generics += 1,
            '>' if generics > 0 => generics -= 1,
            _ if generics == 0 => plain.push(c),
            _ => {}
        }
    }
    match plain.rsplit_once(" for ") {
        Some((_, ty)) => ty.to_owned(),
        None => plain,
    }
}

/// Whether the last component of definition `name` is `symbol` with the same case (generic
/// arguments and a trait implementation's trait left out, as in [`name_components`]).
fn named_exactly(name: &str, symbol: &str) -> bool {
    let plain = plain_name(name);
    plain.rsplit(NAME_SEPARATORS).next().unwrap_or("").trim() == symbol
}

/// Whether a file named `stem` is named after symbol `name` (both lowercase): the same, the same
/// without underscores, or a plural.
fn stem_names(stem: &str, name: &str) -> bool {
    let plain = |s: &str| s.replace(['_', '-'], "");
    stem == name
        || plain(stem) == plain(name)
        || stem.trim_end_matches('s') == name.trim_end_matches('s')
}

/// A query keyword and a word of a path match when equal or when they share a prefix of at least
/// four letters that leaves at most three letters of the shorter word: the inflections and
/// abbreviations of file names (`parser` ~ `parsing`, `handler` ~ `handlers`, `auth` ~
/// `authentication`).
fn words_match(keyword: &str, word: &str) -> bool {
    if keyword == word {
        return true;
    }
    let common = keyword
        .chars()
        .zip(word.chars())
        .take_while(|(a, b)| a == b)
        .count();
    let shorter = keyword.chars().count().min(word.chars().count());
    common >= weights::w().path_keyword_min_prefix
        && shorter - common <= weights::w().path_keyword_slack
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(path: &str, kind: &str, name: &str, start: u32, content: &str) -> BlockRow {
        BlockRow {
            repo: "/r".into(),
            path: path.into(),
            oid: "0".into(),
            language: "python".into(),
            kind: kind.into(),
            name: name.into(),
            start_line: start,
            end_line: start + content.lines().count() as u32 - 1,
            content: content.into(),
            text: String::new(),
            vector: vec![0.0; 2],
        }
    }

    fn search(index: &RepoIndex, q: &str) -> Vec<String> {
        search_with(index, q, Rules::default())
    }

    fn search_with(index: &RepoIndex, q: &str, rules: Rules) -> Vec<String> {
        scored(index, q, None, rules)
            .into_iter()
            .map(|(path, _)| path)
            .collect()
    }

    /// (path, score) of each result; hybrid with a query vector, else lexical.
    fn scored(
        index: &RepoIndex,
        q: &str,
        vector: Option<&[f32]>,
        rules: Rules,
    ) -> Vec<(String, f32)> {
        let query = Query::parse(q);
        let dirty = HashSet::new();
        let s = Search {
            head: index,
            changed: None,
            overlay: None,
            dirty: &dirty,
            subtree: "",
            filter: &filter::Filter::everything(),
            query: &query,
            vector,
            mode: if vector.is_some() {
                Mode::Hybrid
            } else {
                Mode::Lexical
            },
            limit: 5,
            rules,
        };
        s.run()
            .into_iter()
            .map(|(f, score)| (s.entry(f).path.to_string(), score))
            .collect()
    }

    #[test]
    fn a_qualified_member_of_a_short_class_finds_the_class_before_a_namesake() {
        let rows = vec![
            // A short class is one block: its methods are not in the name index of their own.
            row(
                "limits.py",
                "class",
                "RateLimiter",
                1,
                "class RateLimiter:\n    def allow(self, key):\n        return self.tokens[key] > 0",
            ),
            // A same-named function elsewhere, which the name index does know.
            row(
                "acl.py",
                "function",
                "allow",
                1,
                "def allow(user, action):\n    return action in user.rights",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        assert_eq!(search(&index, "RateLimiter.allow")[0], "limits.py");
        assert_eq!(search(&index, "allow")[0], "acl.py");
    }

    #[test]
    fn case_decides_between_definitions_that_differ_only_in_case() {
        let rows = vec![
            // The file named after the symbol favours the lower-case function.
            row(
                "app/core.py",
                "class",
                "Parser",
                1,
                "class Parser:\n    pass",
            ),
            row(
                "app/parser.py",
                "function",
                "parser",
                1,
                "def parser(name):\n    return Parser()",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        assert_eq!(search(&index, "Parser")[0], "app/core.py");
        assert_eq!(search(&index, "parser")[0], "app/parser.py");
        let without = Rules::without("exact_case").unwrap();
        assert_eq!(search_with(&index, "Parser", without)[0], "app/parser.py");
        // With no definition in the query's case, case costs nothing.
        let only = RepoIndex::build(
            vec![
                row(
                    "app/net.py",
                    "class",
                    "HTTPClient",
                    1,
                    "class HTTPClient:\n    pass",
                ),
                row(
                    "app/util.py",
                    "function",
                    "pad",
                    1,
                    "def pad(s):\n    return s",
                ),
            ],
            2,
            false,
        );
        let best = |q: &str| scored(&only, q, None, Rules::default())[0].1;
        assert_eq!(best("HttpClient"), best("HTTPClient"));
        assert!(named_exactly("Display for Foo<T>", "Foo"));
        assert!(named_exactly("Queue<T>.push", "push"));
        assert!(!named_exactly("Queue<T>.push", "Push"));
    }

    #[test]
    fn a_file_close_to_the_question_as_a_whole_lifts_its_best_block() {
        let with_vector = |mut r: BlockRow, v: [f32; 2]| {
            r.vector = v.to_vec();
            r
        };
        // One block of a.py is the closest of all; the rest of a.py is about something else.
        // Every block of b.py is fairly close.
        let mut rows = vec![with_vector(
            row("a.py", "function", "best", 1, "def best():\n    pass"),
            [1.0, 0.0],
        )];
        for i in 0..4 {
            rows.push(with_vector(
                row(
                    "a.py",
                    "function",
                    &format!("other{i}"),
                    10 + 5 * i,
                    "def other():\n    pass",
                ),
                [0.0, 1.0],
            ));
            rows.push(with_vector(
                row(
                    "b.py",
                    "function",
                    &format!("near{i}"),
                    1 + 5 * i,
                    "def near():\n    pass",
                ),
                [0.8, 0.6],
            ));
        }
        let index = RepoIndex::build(rows, 2, false);
        let first = |rules: Rules| {
            scored(&index, "how is it done", Some(&[1.0, 0.0]), rules)[0]
                .0
                .clone()
        };
        assert_eq!(first(Rules::default()), "b.py");
        assert_eq!(first(Rules::without("file_meaning").unwrap()), "a.py");
    }

    #[test]
    fn a_method_of_a_generic_impl_is_found_by_its_type() {
        // `impl<T> Queue<T>` split into members named `Queue<T>.push`; another `push` elsewhere.
        let rows = vec![
            // Files not named after the type, so that only the name index can supply it.
            row("a/impls.rs", "impl", "Queue<T>", 1, "impl<T> Queue<T> {"),
            row(
                "a/impls.rs",
                "function",
                "Queue<T>.push",
                2,
                "    pub fn push(&mut self, item: T) {\n        self.items.push(item);\n    }",
            ),
            row(
                "b/stack.rs",
                "function",
                "push",
                1,
                "pub fn push(stack: &mut Stack, item: u8) {\n    stack.items.push(item);\n}",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        assert_eq!(name_components("Display for Foo<T>.fmt"), ["foo", "fmt"]);
        assert!(index.definitions.contains_key("queue"));
        assert_eq!(search(&index, "Queue::push")[0], "a/impls.rs");
    }

    #[test]
    fn a_path_query_is_a_member_only_when_no_file_has_that_path() {
        let rows = vec![
            row(
                "conf/package.json",
                "text",
                "",
                1,
                "{\n  \"name\": \"app\"\n}",
            ),
            row(
                "web/ctx.py",
                "function",
                "Context.json",
                1,
                "def json(self, value):\n    return dumps(value)",
            ),
            row(
                "http/res.py",
                "function",
                "Res.json",
                1,
                "def json(self):\n    return loads(self.body)",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        assert_eq!(search(&index, "package.json")[0], "conf/package.json");
        assert_eq!(search(&index, "res.json")[0], "http/res.py");
    }

    #[test]
    fn windows_of_text_files_stay_apart() {
        // Two overlapping windows of a long text file stay two results; a long function's are one
        // (as are a long run of top-level code's and a long section's).
        let text: String = (1..=100).map(|n| format!("key{n}: value{n}\n")).collect();
        let lines: Vec<&str> = text.lines().collect();
        let rows = vec![
            row("conf.yaml", "text", "", 1, &lines[..80].join("\n")),
            row("conf.yaml", "text", "", 71, &lines[70..].join("\n")),
            row("f.py", "function", "f", 1, &lines[..80].join("\n")),
            row("f.py", "function", "f", 71, &lines[70..].join("\n")),
        ];
        let index = RepoIndex::build(rows, 2, false);
        let spans: Vec<(&str, u32, u32)> = index
            .entries
            .iter()
            .map(|e| (&*e.path, e.start_line, e.end_line))
            .collect();
        assert_eq!(
            spans,
            [
                ("conf.yaml", 1, 80),
                ("conf.yaml", 71, 100),
                ("f.py", 1, 100)
            ]
        );
    }

    #[test]
    fn blank_lines_between_windows_keep_line_numbers() {
        // The first window's range ends with blank lines its text does not hold.
        let mut first = row("f.py", "function", "f", 1, "def f():\n    a = 1");
        first.end_line = 4;
        let rows = vec![
            first,
            row("f.py", "function", "f", 5, "    b = 2\n    return a + b"),
        ];
        let index = RepoIndex::build(rows, 2, false);
        let e = &index.entries[0];
        assert_eq!((e.start_line, e.end_line), (1, 6));
        assert_eq!(
            e.content.lines().nth(4),
            Some("    b = 2"),
            "line 5 is the entry's fifth line"
        );
    }

    #[test]
    fn a_module_named_after_the_one_before_it_is_not_its_member() {
        let rows = vec![
            row(
                "shape.ex",
                "module",
                "Shape",
                1,
                "defmodule Shape do\n  @moduledoc \"Shapes\"",
            ),
            row(
                "shape.ex",
                "function",
                "Shape.build",
                3,
                "  def build(owner) do\n    owner\n  end",
            ),
            row(
                "shape.ex",
                "module",
                "Shape.Circle",
                10,
                "defmodule Shape.Circle do\n  @moduledoc \"a circle\"",
            ),
            row(
                "shape.ex",
                "function",
                "Shape.Circle.build",
                12,
                "  def build(owner) do\n    owner\n  end",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        let spans: Vec<(&str, u32, u32)> = index
            .entries
            .iter()
            .filter(|e| e.kind == "module")
            .map(|e| (e.name.as_str(), e.start_line, e.end_line))
            .collect();
        assert_eq!(spans, [("Shape", 1, 5), ("Shape.Circle", 10, 14)]);
    }

    #[test]
    fn tests_rank_below_the_code_they_test_unless_asked_for() {
        let rows = vec![
            row(
                "tests/test_durations.py",
                "function",
                "test_parse_duration",
                1,
                "def test_parse_duration():\n    assert parse_duration('1h30m') == 5400\n    assert parse_duration('45s') == 45",
            ),
            row(
                "src/durations.py",
                "function",
                "parse_duration",
                1,
                "def parse_duration(text):\n    return sum(int(n) * UNITS[u] for n, u in pairs(text))",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        assert_eq!(search(&index, "parse a duration")[0], "src/durations.py");
        let without_roles = Rules::without("roles").unwrap();
        assert_eq!(
            search_with(&index, "parse a duration", without_roles)[0],
            "tests/test_durations.py",
            "the test names the function more often: only its role ranks it down"
        );
        assert_eq!(
            search(&index, "tests for parsing a duration")[0],
            "tests/test_durations.py"
        );
    }

    #[test]
    fn a_second_file_answers_before_a_third_block_of_the_first() {
        let mut rows: Vec<BlockRow> = (0..3)
            .map(|i| {
                row(
                    "cache.go",
                    "function",
                    &format!("evict{i}"),
                    1 + 10 * i,
                    "func evict() {\n    // evict the least recently used cache entry\n    evict(cache.oldest)\n}",
                )
            })
            .collect();
        rows.push(row(
            "lru.go",
            "function",
            "drop",
            1,
            "func drop() {\n    // evict an entry from the cache\n}",
        ));
        let index = RepoIndex::build(rows, 2, false);
        let found = search(&index, "evict the least recently used cache entry");
        assert_eq!(found[0], "cache.go");
        assert!(
            found[..3].contains(&"lru.go".to_owned()),
            "another file within the first three: {found:?}"
        );
        let found = search_with(
            &index,
            "evict the least recently used cache entry",
            Rules::without("diversity").unwrap(),
        );
        assert_eq!(found[..3], ["cache.go", "cache.go", "cache.go"]);
    }

    #[test]
    fn deeply_nested_split_containers_do_not_overflow_the_stack() {
        // `class A { class A { ... } }`, each level split into its pieces: a member of the level
        // above and a container of the level below.
        let depth = 3000;
        let mut name = String::from("a");
        let mut rows = Vec::new();
        for level in 0..depth {
            rows.push(row("deep.rs", "class", &name, level + 1, "class A {"));
            name.push_str(".a");
        }
        let built = std::thread::Builder::new()
            .stack_size(256 * 1024)
            .spawn(move || RepoIndex::build(rows, 2, false).entries.len())
            .unwrap()
            .join()
            .expect("building the index overflowed its stack");
        assert_eq!(built, depth as usize);
    }

    #[test]
    fn a_container_spans_its_members_and_only_its_own() {
        let rows = vec![
            row(
                "foo.rs",
                "struct",
                "Foo",
                1,
                "pub struct Foo {\n    size: usize,\n}",
            ),
            row("foo.rs", "impl", "Foo", 5, "impl Foo {"),
            row(
                "foo.rs",
                "method",
                "Foo.new",
                6,
                "    pub fn new() -> Foo {\n        Foo { size: 0 }\n    }",
            ),
            row(
                "foo.rs",
                "method",
                "Foo.size",
                9,
                "    pub fn size(&self) -> usize {\n        self.size\n    }",
            ),
            row("foo.rs", "impl", "Foo", 13, "impl Foo {"),
            row(
                "foo.rs",
                "method",
                "Foo.clear",
                14,
                "    pub fn clear(&mut self) {\n        self.size = 0;\n    }",
            ),
        ];
        let index = RepoIndex::build(rows, 2, false);
        let spans: Vec<(&str, &str, u32, u32)> = index
            .entries()
            .iter()
            .map(|e| (e.kind.as_str(), e.name.as_str(), e.start_line, e.end_line))
            .collect();
        assert_eq!(
            spans,
            [
                ("struct", "Foo", 1, 3),
                // A second `impl Foo` right after the first one's members cannot be told from a
                // trailing piece of the first: the two read as one.
                ("impl", "Foo", 5, 16),
                ("method", "Foo.new", 6, 8),
                ("method", "Foo.size", 9, 11),
                ("method", "Foo.clear", 14, 16),
            ]
        );
    }

    #[test]
    fn inflected_words_match() {
        let index = RepoIndex::build(
            vec![
                row("auth.py", "class", "AuthenticationMiddleware", 1, "class AuthenticationMiddleware:\n    def authenticate(self, request):\n        return request.user"),
                row("other.py", "function", "render", 1, "def render(template):\n    return template.format()"),
            ],
            2,
            false,
        );
        assert_eq!(
            search(&index, "how does authentication middleware work"),
            ["auth.py"]
        );
        assert_eq!(search(&index, "authenticating requests"), ["auth.py"]);
    }
}
