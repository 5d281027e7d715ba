//! Splits a file into blocks: definitions (functions, methods, classes, ...) found with tree-sitter,
//! the code between them, Markdown sections, and line windows for everything else.
//!
//! Every non-blank line of a file ends up in some block: code between definitions (imports, module
//! headers, top-level statements, class fields) forms blocks of its own, labelled with the container
//! it sits in. Blocks longer than [`Limits`] allow are cut into overlapping windows.

pub mod languages;

pub use languages::Language;

use tree_sitter::{Node, Parser};

/// How blocks are cut. Bump it whenever a change to the chunker cuts any file differently: stores
/// cut by another version are then cut again from git (`store::Store::open`), since blocks are
/// re-used by blob and would otherwise keep the old cuts for good.
/// Version 1: what stores written before versions were recorded hold (older Go method names
/// and windows among them), and stores stamped 1 by the commits that introduced the record
/// (their cuts are already version 2's, but they are cut again once); 2: the cuts since.
pub const CHUNKER_VERSION: u32 = 2;

/// One unit of search: a definition, the code between definitions, a section or a window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// `function`, `method`, `class`, `struct`, ..., `code` (between definitions), `section`, `text`.
    pub kind: String,
    /// Declared name (`Class.method` for members), heading path for Markdown sections.
    pub name: String,
    /// 1-based, inclusive.
    pub start_line: u32,
    pub end_line: u32,
    pub content: String,
}

/// Size limits of one block.
#[derive(Debug, Clone)]
pub struct Limits {
    pub max_lines: usize,
    pub max_chars: usize,
    /// Lines shared by consecutive windows of a split block.
    pub overlap: usize,
    /// The embedding model's limit: a block over it is cut into windows the model reads whole.
    pub tokens: Option<TokenLimit>,
}

/// Counts model tokens (without special tokens) and the most one block may have.
#[derive(Clone)]
pub struct TokenLimit {
    pub max: usize,
    pub count: std::sync::Arc<dyn Fn(&str) -> usize + Send + Sync>,
}

impl std::fmt::Debug for TokenLimit {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "TokenLimit({})", self.max)
    }
}

impl Default for Limits {
    fn default() -> Self {
        // Room for lexical search to see a whole definition; the token limit, when set, cuts
        // further so the model sees every part of a long one.
        Limits {
            max_lines: 80,
            max_chars: 3000,
            overlap: 8,
            tokens: None,
        }
    }
}

pub fn chunk(path: &str, source: &str, limits: &Limits) -> Vec<Block> {
    let language = Language::from_path(path);
    let lines: Vec<&str> = source.lines().collect();
    let blocks = match language {
        Language::Markdown => markdown_sections(&lines),
        Language::Text => vec![Span::new(0, lines.len(), "text", String::new())],
        _ => match parse_definitions(language, source, limits) {
            Some(spans) => spans,
            None => vec![Span::new(0, lines.len(), "code", String::new())],
        },
    };
    let mut out = Vec::new();
    for span in blocks {
        emit(&lines, span, limits, &mut out);
    }
    out
}

/// A half-open range of 0-based lines with a label.
#[derive(Debug, Clone)]
struct Span {
    start: usize,
    end: usize,
    kind: &'static str,
    name: String,
}

impl Span {
    fn new(start: usize, end: usize, kind: &'static str, name: String) -> Span {
        Span {
            start,
            end,
            kind,
            name,
        }
    }
}

/// A definition found in the tree: its lines, label, and whether nested definitions were split out.
#[derive(Debug)]
struct Definition {
    span: Span,
    depth: usize,
    has_children: bool,
}

fn parse_definitions(language: Language, source: &str, limits: &Limits) -> Option<Vec<Span>> {
    let grammar = language.grammar()?;
    let mut parser = Parser::new();
    parser.set_language(&grammar).ok()?;
    let tree = parser.parse(source, None)?;
    let line_count = source.lines().count();
    let mut defs = Vec::new();
    collect(
        language,
        tree.root_node(),
        source.as_bytes(),
        limits,
        &mut defs,
    );

    // Every line belongs to its innermost definition; lines of a container that are not inside a
    // nested definition are the container's own (its header, fields, closing brace).
    let mut owner: Vec<Option<usize>> = vec![None; line_count];
    for (i, def) in defs.iter().enumerate() {
        for slot in owner
            .iter_mut()
            .take(def.span.end.min(line_count))
            .skip(def.span.start)
        {
            match slot {
                Some(j) if defs[*j].depth >= def.depth => {}
                _ => *slot = Some(i),
            }
        }
    }
    let mut spans: Vec<Span> = Vec::new();
    let mut line = 0;
    while line < line_count {
        let who = owner[line];
        let mut end = line + 1;
        while end < line_count && owner[end] == who {
            end += 1;
        }
        let span = match who {
            Some(i) if !defs[i].has_children => defs[i].span.clone(),
            Some(i) => Span::new(line, end, defs[i].span.kind, defs[i].span.name.clone()),
            None => Span::new(line, end, "code", String::new()),
        };
        // A leaf definition owns exactly its lines; clamp in case a nested one overlapped it.
        let span = Span::new(line, end, span.kind, span.name);
        spans.push(span);
        line = end;
    }
    Some(spans)
}

/// Finds the definitions under `root` in document order (a container before what it holds).
///
/// Walks the tree with an explicit stack rather than recursion: a file of deeply nested brackets
/// has as many tree levels as brackets, and a recursive walk would overflow the thread's stack and
/// abort the daemon.
fn collect(
    language: Language,
    root: Node,
    source: &[u8],
    limits: &Limits,
    out: &mut Vec<Definition>,
) {
    /// The named children of one node, and where that node sits among its own siblings (`None`
    /// for the root's children), so the walk finds a node's neighbours and parents by index
    /// rather than by tree-sitter's `prev_named_sibling`/`parent`, which search from the root.
    /// Kept in an arena (a chain of reference-counted parents would drop recursively).
    struct Siblings<'t> {
        nodes: Vec<Node<'t>>,
        parent: Option<(usize, usize)>,
    }
    /// A node still to visit, with the definition context it sits in.
    struct Pending {
        list: usize,
        index: usize,
        parent_name: std::rc::Rc<str>,
        depth: usize,
        /// Index in `out` of the container whose split-out members this node is among.
        container: Option<usize>,
    }
    fn push_children<'t>(
        lists: &mut Vec<Siblings<'t>>,
        stack: &mut Vec<Pending>,
        node: Node<'t>,
        place: Option<(usize, usize)>,
        parent_name: &std::rc::Rc<str>,
        depth: usize,
        container: Option<usize>,
    ) {
        let mut cursor = node.walk();
        let nodes: Vec<Node<'t>> = node.named_children(&mut cursor).collect();
        let list = lists.len();
        // Reversed, so the first child is visited first.
        for index in (0..nodes.len()).rev() {
            stack.push(Pending {
                list,
                index,
                parent_name: parent_name.clone(),
                depth,
                container,
            });
        }
        lists.push(Siblings {
            nodes,
            parent: place,
        });
    }
    let mut lists: Vec<Siblings> = Vec::new();
    let mut stack: Vec<Pending> = Vec::new();
    let top: std::rc::Rc<str> = std::rc::Rc::from("");
    push_children(&mut lists, &mut stack, root, None, &top, 0, None);
    while let Some(Pending {
        list,
        index: position,
        parent_name,
        depth,
        container,
    }) = stack.pop()
    {
        let child = lists[list].nodes[position];
        let Some(mut kind) = language.definition_kind(&child, source) else {
            if child.named_child_count() > 0 {
                let place = Some((list, position));
                push_children(
                    &mut lists,
                    &mut stack,
                    child,
                    place,
                    &parent_name,
                    depth,
                    container,
                );
            }
            continue;
        };
        let name = language.definition_name(&child, source);
        if kind == "function" && !parent_name.is_empty() {
            kind = "method";
        }
        let qualified = match (parent_name.is_empty(), name.is_empty()) {
            (false, false) => format!("{parent_name}.{name}"),
            (false, true) => parent_name.to_string(),
            _ => name.clone(),
        };
        // Doc comments, attributes and decorators directly above belong to the definition. A
        // definition wrapped in a node that starts on its line (`export function f`) has them
        // above the wrapper.
        let mut start = child.start_position().row;
        let (mut sibs, mut at) = (list, position);
        while at == 0 {
            let Some((parent_list, parent_at)) = lists[sibs].parent else {
                break;
            };
            if lists[parent_list].nodes[parent_at].start_position().row != start {
                break;
            }
            (sibs, at) = (parent_list, parent_at);
        }
        while at > 0 {
            let p = lists[sibs].nodes[at - 1];
            if language.is_leading_trivia(&p) && p.end_position().row + 1 >= start {
                start = p.start_position().row;
                at -= 1;
            } else {
                break;
            }
        }
        let end = child.end_position().row + 1;
        let index = out.len();
        out.push(Definition {
            span: Span::new(start, end, kind, qualified.clone()),
            depth,
            has_children: false,
        });
        if let Some(container) = container {
            out[container].has_children = true;
        }
        let too_big = end - start > limits.max_lines || child.byte_range().len() > limits.max_chars;
        let is_container = !matches!(kind, "function" | "method" | "macro" | "test");
        if too_big && is_container {
            push_children(
                &mut lists,
                &mut stack,
                child,
                Some((list, position)),
                &std::rc::Rc::from(qualified.as_str()),
                depth + 1,
                Some(index),
            );
        }
    }
}

/// Markdown sections: each heading starts one, named by its heading path (`Install > From source`).
fn markdown_sections(lines: &[&str]) -> Vec<Span> {
    let mut spans = Vec::new();
    let mut path: Vec<(usize, String)> = Vec::new();
    let mut start = 0;
    let mut name = String::new();
    let mut in_fence = false;
    for (i, line) in lines.iter().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.starts_with("```") || trimmed.starts_with("~~~") {
            in_fence = !in_fence;
        }
        if in_fence || !trimmed.starts_with('#') {
            continue;
        }
        let level = trimmed.chars().take_while(|&c| c == '#').count();
        let title = trimmed[level..].trim();
        if level > 6 || title.is_empty() || !trimmed[level..].starts_with(' ') {
            continue;
        }
        if i > start {
            spans.push(Span::new(start, i, "section", name.clone()));
        }
        path.retain(|(l, _)| *l < level);
        path.push((level, title.to_owned()));
        name = path
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join(" > ");
        start = i;
    }
    if start < lines.len() {
        spans.push(Span::new(start, lines.len(), "section", name));
    }
    spans
}

/// Turns a span into blocks: trims blank edges, drops spans with no real content, and cuts long ones
/// into overlapping windows.
fn emit(lines: &[&str], span: Span, limits: &Limits, out: &mut Vec<Block>) {
    let mut start = span.start;
    let mut end = span.end.min(lines.len());
    while start < end && lines[start].trim().is_empty() {
        start += 1;
    }
    while end > start && lines[end - 1].trim().is_empty() {
        end -= 1;
    }
    if start >= end {
        return;
    }
    let substance: usize = lines[start..end]
        .iter()
        .map(|l| l.chars().filter(|c| c.is_alphanumeric()).count())
        .sum();
    // A lone closing brace or `end` is not worth a block.
    if substance < 6 {
        return;
    }
    // Per-line token counts, only for spans the model could not read whole.
    let line_tokens: Option<(usize, Vec<usize>)> = limits.tokens.as_ref().and_then(|t| {
        let whole = (t.count)(&lines[start..end].join("\n"));
        (whole > t.max).then(|| {
            (
                t.max,
                lines[start..end].iter().map(|l| (t.count)(l)).collect(),
            )
        })
    });
    let mut window_start = start;
    loop {
        let mut window_end = window_start;
        let mut chars = 0;
        let mut tokens = 0;
        while window_end < end && window_end - window_start < limits.max_lines {
            let len = lines[window_end].len() + 1;
            let (over_tokens, line_cost) = match &line_tokens {
                Some((max, counts)) => {
                    let cost = counts[window_end - start];
                    (tokens + cost > *max, cost)
                }
                None => (false, 0),
            };
            if (chars + len > limits.max_chars || over_tokens) && window_end > window_start {
                break;
            }
            chars += len;
            tokens += line_cost;
            window_end += 1;
        }
        let content = lines[window_start..window_end].join("\n");
        out.push(Block {
            kind: span.kind.to_owned(),
            name: span.name.clone(),
            start_line: window_start as u32 + 1,
            end_line: window_end as u32,
            content,
        });
        if window_end >= end {
            break;
        }
        // Short (token-limited) windows share proportionally fewer lines: overlap costs embedding.
        let overlap = limits.overlap.min((window_end - window_start) / 4);
        let next = window_end.saturating_sub(overlap);
        window_start = if next > window_start {
            next
        } else {
            window_end
        };
        // A window starts on a line with something on it.
        while window_start < end && lines[window_start].trim().is_empty() {
            window_start += 1;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(path: &str, src: &str) -> Vec<(String, String)> {
        chunk(path, src, &Limits::default())
            .into_iter()
            .map(|b| (b.kind, b.name))
            .collect()
    }

    fn has(path: &str, src: &str, kind: &str, name: &str) {
        let found = names(path, src);
        assert!(
            found.iter().any(|(k, n)| k == kind && n == name),
            "{path}: no {kind} {name} in {found:?}"
        );
    }

    #[test]
    fn definitions_in_every_benchmark_language() {
        has(
            "a.py",
            "import os\n\ndef hash_file(p):\n    return p\n",
            "function",
            "hash_file",
        );
        has(
            "a.js",
            "const add = (a, b) => {\n  return a + b;\n};\n",
            "function",
            "add",
        );
        has(
            "a.js",
            "function install() {\n  return 1;\n}\n",
            "function",
            "install",
        );
        has(
            "a.ts",
            "interface Shape {\n  area(): number;\n}\n",
            "interface",
            "Shape",
        );
        has(
            "a.tsx",
            "export function App() {\n  return <div/>;\n}\n",
            "function",
            "App",
        );
        has(
            "a.go",
            "package main\n\nfunc Walk(dir string) error {\n\treturn nil\n}\n",
            "function",
            "Walk",
        );
        has(
            "a.go",
            "package main\n\ntype Server struct {\n\taddr string\n}\n",
            "type",
            "Server",
        );
        // Go methods are named by their receiver's type, pointer and type parameters left out.
        has(
            "a.go",
            "package main\n\nfunc (s *Server) Close() error {\n\treturn nil\n}\n",
            "method",
            "Server.Close",
        );
        has(
            "a.go",
            "package main\n\nfunc (s Set[K]) Add(k K) {\n}\n",
            "method",
            "Set.Add",
        );
        has(
            "a.go",
            "package main\n\nfunc (s *Set[K]) Remove(k K) {\n}\n",
            "method",
            "Set.Remove",
        );
        has(
            "a.go",
            "package main\n\nfunc (Plain) Touch() {\n}\n",
            "method",
            "Plain.Touch",
        );
        has(
            "a.go",
            "package main\n\nfunc (s (*Server)) Open() {\n}\n",
            "method",
            "Server.Open",
        );
        has(
            "a.rs",
            "/// Docs.\nfn parse_args() -> u32 {\n    1\n}\n",
            "function",
            "parse_args",
        );
        has(
            "A.java",
            "class A {\n  void run() {\n    go();\n  }\n}\n",
            "class",
            "A",
        );
        has(
            "a.c",
            "static int open_file(const char *p) {\n  return 0;\n}\n",
            "function",
            "open_file",
        );
        has(
            "a.cpp",
            "namespace n {\nint Parser::parse(int x) {\n  return x;\n}\n}\n",
            "module",
            "n",
        );
        has(
            "a.cs",
            "class Cache {\n  public int Get(int k) {\n    return k;\n  }\n}\n",
            "class",
            "Cache",
        );
        has(
            "a.rb",
            "class Repo\n  def clone_url\n    @url\n  end\nend\n",
            "class",
            "Repo",
        );
        has(
            "a.php",
            "<?php\nfunction render_page($x) {\n  return $x;\n}\n",
            "function",
            "render_page",
        );
        has(
            "a.kt",
            "fun greet(name: String): String {\n    return name\n}\n",
            "function",
            "greet",
        );
        has(
            "a.swift",
            "struct Point {\n  var x: Int\n}\n",
            "struct",
            "Point",
        );
        has(
            "a.scala",
            "object Main {\n  def main(args: Array[String]): Unit = {\n    println(1)\n  }\n}\n",
            "class",
            "Main",
        );
        has(
            "a.ex",
            "defmodule Shop.Cart do\n  def total(items) do\n    Enum.sum(items)\n  end\nend\n",
            "module",
            "Shop.Cart",
        );
        has(
            "a.hs",
            "module Main where\n\ncompute :: Int -> Int\ncompute x = x + 1\n",
            "function",
            "compute",
        );
        has(
            "a.lua",
            "function M.load_config(path)\n  return path\nend\n",
            "function",
            "M.load_config",
        );
        has(
            "a.sh",
            "install_hooks() {\n  echo installing hooks\n}\n",
            "function",
            "install_hooks",
        );
        has(
            "a.zig",
            "pub fn allocate(n: usize) usize {\n    return n;\n}\n",
            "function",
            "allocate",
        );
    }

    #[test]
    fn code_between_definitions_is_kept() {
        let src = "import os\nimport sys\n\nCONFIG_PATH = os.environ['HOME']\n\ndef f():\n    return 1\n\nprint(f())\n";
        let blocks = chunk("m.py", src, &Limits::default());
        let all: String = blocks
            .iter()
            .map(|b| b.content.clone())
            .collect::<Vec<_>>()
            .join("\n");
        for line in src.lines().filter(|l| !l.trim().is_empty()) {
            assert!(all.contains(line), "lost line {line:?}");
        }
        assert_eq!(blocks[0].kind, "code");
        assert_eq!((blocks[0].start_line, blocks[0].end_line), (1, 4));
    }

    #[test]
    fn big_classes_split_into_methods_with_qualified_names() {
        let mut src =
            String::from("class Store:\n    \"\"\"Keeps things.\"\"\"\n    limit = 10\n\n");
        for i in 0..30 {
            src.push_str(&format!(
                "    def method_{i}(self):\n        x = {i}\n        return x\n\n"
            ));
        }
        let blocks = chunk("s.py", &src, &Limits::default());
        assert!(blocks
            .iter()
            .any(|b| b.kind == "method" && b.name == "Store.method_7"));
        let header = blocks
            .iter()
            .find(|b| b.kind == "class")
            .expect("class header block");
        assert!(header.content.contains("Keeps things"));
        assert_eq!(header.start_line, 1);
    }

    #[test]
    fn long_functions_become_overlapping_windows() {
        let mut src = String::from("def long():\n");
        for i in 0..200 {
            src.push_str(&format!("    v{i} = {i}\n"));
        }
        let blocks = chunk("l.py", &src, &Limits::default());
        assert!(blocks.len() >= 3);
        assert!(blocks
            .iter()
            .all(|b| b.name == "long" && b.end_line - b.start_line < 80));
        assert!(blocks[1].start_line < blocks[0].end_line, "windows overlap");
        assert_eq!(blocks.last().unwrap().end_line, 201);
    }

    #[test]
    fn token_limit_cuts_windows_the_model_reads_whole() {
        let mut src = String::from("def tokens_heavy():\n");
        for i in 0..30 {
            src.push_str(&format!("    call_{i}(alpha, beta, gamma, delta)\n"));
        }
        let words = |s: &str| s.split_whitespace().count();
        let limits = Limits {
            tokens: Some(TokenLimit {
                max: 40,
                count: std::sync::Arc::new(words),
            }),
            ..Limits::default()
        };
        let blocks = chunk("t.py", &src, &limits);
        assert!(blocks.len() > 3, "{} blocks", blocks.len());
        for b in &blocks {
            assert!(
                words(&b.content) <= 40,
                "{} words in {:?}",
                words(&b.content),
                b
            );
        }
        assert_eq!(blocks.last().unwrap().end_line, 31);
        // Without a token limit the function is one block.
        assert_eq!(chunk("t.py", &src, &Limits::default()).len(), 1);
    }

    #[test]
    fn markdown_sections_have_heading_paths() {
        let src = "# Guide\nintro text here\n## Install\nrun the installer now\n```\n# not a heading\n```\n## Usage\nsearch for things\n";
        let blocks = chunk("README.md", src, &Limits::default());
        let names: Vec<&str> = blocks.iter().map(|b| b.name.as_str()).collect();
        assert_eq!(names, ["Guide", "Guide > Install", "Guide > Usage"]);
        assert!(blocks[1].content.contains("# not a heading"));
    }

    #[test]
    fn doc_comments_above_exported_definitions_belong_to_them() {
        let src = "export interface Options {\n  n: number;\n}\n\n/** Retries a task. */\nexport async function retry(task: () => void) {\n  return task();\n}\n";
        let blocks = chunk("r.ts", src, &Limits::default());
        let retry = blocks
            .iter()
            .find(|b| b.name == "retry")
            .expect("retry found");
        assert_eq!(retry.start_line, 5, "{blocks:#?}");
        assert!(blocks.iter().all(|b| b.kind != "code"), "{blocks:#?}");
    }

    #[test]
    fn deeply_nested_code_does_not_overflow_the_stack() {
        // 100,000 levels of brackets (200 KB, under the file size limit) in a thread with a
        // small stack: a walk that recursed once per tree level would overflow it.
        let depth = 100_000;
        let cases = [
            (
                "deep.py",
                format!("nested = {}1{}\n", "[".repeat(depth), "]".repeat(depth)),
            ),
            (
                "deep.js",
                format!(
                    "const nested = {}1{};\n",
                    "[".repeat(depth),
                    "]".repeat(depth)
                ),
            ),
            (
                "deep.rs",
                format!(
                    "fn nested() {{ {}1{} }}\n",
                    "(".repeat(depth),
                    ")".repeat(depth)
                ),
            ),
            (
                "deep.c",
                format!(
                    "int nested = {}1{};\n",
                    "(".repeat(depth),
                    ")".repeat(depth)
                ),
            ),
        ];
        for (path, src) in cases {
            let blocks = std::thread::Builder::new()
                .stack_size(512 * 1024)
                .spawn(move || chunk(path, &src, &Limits::default()))
                .unwrap()
                .join()
                .unwrap_or_else(|_| panic!("{path}: chunking panicked"));
            assert!(!blocks.is_empty(), "{path}: no blocks");
        }
    }
}
