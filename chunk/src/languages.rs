//! Which grammar parses a file, and which of its nodes are definitions worth a block of their own.

use std::path::Path;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Language {
    Python,
    JavaScript,
    TypeScript,
    Tsx,
    Go,
    Rust,
    Java,
    C,
    Cpp,
    CSharp,
    Ruby,
    Php,
    Kotlin,
    Swift,
    Scala,
    Elixir,
    Haskell,
    Lua,
    Bash,
    Zig,
    /// Split by headings, not parsed.
    Markdown,
    /// Any other UTF-8 text: line windows.
    Text,
}

impl Language {
    pub fn from_path(path: &str) -> Language {
        let file = Path::new(path);
        let ext = file
            .extension()
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase)
            .unwrap_or_default();
        match ext.as_str() {
            "py" | "pyi" | "pyw" => Language::Python,
            "js" | "mjs" | "cjs" | "jsx" => Language::JavaScript,
            "ts" | "mts" | "cts" => Language::TypeScript,
            "tsx" => Language::Tsx,
            "go" => Language::Go,
            "rs" => Language::Rust,
            "java" => Language::Java,
            "c" | "h" => Language::C,
            "cc" | "cpp" | "cxx" | "c++" | "hpp" | "hh" | "hxx" | "h++" | "ipp" | "inl" => {
                Language::Cpp
            }
            "cs" => Language::CSharp,
            "rb" | "rake" | "gemspec" => Language::Ruby,
            "php" => Language::Php,
            "kt" | "kts" => Language::Kotlin,
            "swift" => Language::Swift,
            "scala" | "sc" => Language::Scala,
            "ex" | "exs" => Language::Elixir,
            "hs" | "lhs" => Language::Haskell,
            "lua" => Language::Lua,
            "sh" | "bash" | "zsh" => Language::Bash,
            "zig" => Language::Zig,
            "md" | "markdown" | "mdx" => Language::Markdown,
            _ => match file.file_name().and_then(|n| n.to_str()) {
                Some("Rakefile" | "Gemfile") => Language::Ruby,
                _ => Language::Text,
            },
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Language::Python => "python",
            Language::JavaScript => "javascript",
            Language::TypeScript => "typescript",
            Language::Tsx => "tsx",
            Language::Go => "go",
            Language::Rust => "rust",
            Language::Java => "java",
            Language::C => "c",
            Language::Cpp => "cpp",
            Language::CSharp => "csharp",
            Language::Ruby => "ruby",
            Language::Php => "php",
            Language::Kotlin => "kotlin",
            Language::Swift => "swift",
            Language::Scala => "scala",
            Language::Elixir => "elixir",
            Language::Haskell => "haskell",
            Language::Lua => "lua",
            Language::Bash => "bash",
            Language::Zig => "zig",
            Language::Markdown => "markdown",
            Language::Text => "text",
        }
    }

    pub fn grammar(self) -> Option<tree_sitter::Language> {
        let f = match self {
            Language::Python => tree_sitter_python::LANGUAGE,
            Language::JavaScript => tree_sitter_javascript::LANGUAGE,
            Language::TypeScript => tree_sitter_typescript::LANGUAGE_TYPESCRIPT,
            Language::Tsx => tree_sitter_typescript::LANGUAGE_TSX,
            Language::Go => tree_sitter_go::LANGUAGE,
            Language::Rust => tree_sitter_rust::LANGUAGE,
            Language::Java => tree_sitter_java::LANGUAGE,
            Language::C => tree_sitter_c::LANGUAGE,
            Language::Cpp => tree_sitter_cpp::LANGUAGE,
            Language::CSharp => tree_sitter_c_sharp::LANGUAGE,
            Language::Ruby => tree_sitter_ruby::LANGUAGE,
            Language::Php => tree_sitter_php::LANGUAGE_PHP,
            Language::Kotlin => tree_sitter_kotlin_ng::LANGUAGE,
            Language::Swift => tree_sitter_swift::LANGUAGE,
            Language::Scala => tree_sitter_scala::LANGUAGE,
            Language::Elixir => tree_sitter_elixir::LANGUAGE,
            Language::Haskell => tree_sitter_haskell::LANGUAGE,
            Language::Lua => tree_sitter_lua::LANGUAGE,
            Language::Bash => tree_sitter_bash::LANGUAGE,
            Language::Zig => tree_sitter_zig::LANGUAGE,
            Language::Markdown | Language::Text => return None,
        };
        Some(f.into())
    }

    /// The block kind of a definition node, or `None` when `node` is not a definition.
    pub fn definition_kind(self, node: &tree_sitter::Node, source: &[u8]) -> Option<&'static str> {
        let kind = node.kind();
        let label = match (self, kind) {
            (Language::Python, "decorated_definition") => {
                return node
                    .child_by_field_name("definition")
                    .and_then(|d| self.definition_kind(&d, source));
            }
            (
                Language::JavaScript | Language::TypeScript | Language::Tsx,
                "lexical_declaration" | "variable_declaration",
            ) => {
                return js_function_declarator(node).map(|_| "function");
            }
            (Language::Elixir, "call") => return elixir_definition(node, source).map(|(k, _)| k),
            (Language::Zig, "variable_declaration") => {
                let mut cursor = node.walk();
                let container = node.named_children(&mut cursor).any(|c| {
                    matches!(
                        c.kind(),
                        "struct_declaration"
                            | "enum_declaration"
                            | "union_declaration"
                            | "opaque_declaration"
                    )
                });
                return container.then_some("struct");
            }
            (Language::Swift, "class_declaration") => {
                return Some(
                    match node
                        .child_by_field_name("declaration_kind")
                        .map(|k| k.kind())
                    {
                        Some("struct") => "struct",
                        Some("enum") => "enum",
                        Some("extension") => "impl",
                        Some("actor") | Some("class") | None => "class",
                        Some(_) => "class",
                    },
                );
            }
            (
                Language::C | Language::Cpp,
                "struct_specifier" | "union_specifier" | "enum_specifier" | "class_specifier",
            ) => {
                node.child_by_field_name("body")?;
                if kind == "enum_specifier" {
                    "enum"
                } else if kind == "class_specifier" {
                    "class"
                } else {
                    "struct"
                }
            }
            // Only top-level equations; local `where` bindings stay inside their function.
            (Language::Haskell, "function" | "bind")
                if node.parent().is_some_and(|p| p.kind() == "declarations") =>
            {
                "function"
            }
            (Language::Haskell, "function" | "bind") => return None,
            (Language::Haskell, "data_type" | "newtype") => "type",
            (Language::Haskell, "class") => "interface",
            (Language::Haskell, "instance") => "impl",
            (
                _,
                "function_definition"
                | "function_declaration"
                | "function_item"
                | "generator_function_declaration"
                | "function"
                | "singleton_method",
            ) => "function",
            (
                _,
                "method_definition"
                | "method_declaration"
                | "method"
                | "constructor_declaration"
                | "secondary_constructor"
                | "init_declaration"
                | "deinit_declaration"
                | "operator_declaration",
            ) => "method",
            (
                _,
                "class_definition"
                | "class_declaration"
                | "abstract_class_declaration"
                | "class"
                | "record_declaration"
                | "object_definition"
                | "object_declaration"
                | "companion_object"
                | "singleton_class",
            ) => "class",
            (_, "struct_item" | "struct_declaration" | "union_item") => "struct",
            (
                _,
                "interface_declaration" | "protocol_declaration" | "annotation_type_declaration",
            ) => "interface",
            (_, "trait_item" | "trait_definition" | "trait_declaration") => "trait",
            (_, "enum_item" | "enum_declaration" | "enum_definition") => "enum",
            (_, "impl_item" | "extension_definition" | "given_definition") => "impl",
            (_, "mod_item") => {
                node.child_by_field_name("body")?;
                "module"
            }
            (
                _,
                "module" | "namespace_definition" | "namespace_declaration" | "internal_module",
            ) => "module",
            (_, "type_declaration" | "type_alias_declaration" | "type_definition") => "type",
            (_, "macro_definition") => "macro",
            (_, "test_declaration") => "test",
            _ => return None,
        };
        // Ruby's `module` and Haskell's `module` header are different things; Haskell's is the file.
        if self == Language::Haskell && kind == "module" {
            return None;
        }
        Some(label)
    }

    /// The name a definition node declares, best effort.
    pub fn definition_name(self, node: &tree_sitter::Node, source: &[u8]) -> String {
        match (self, node.kind()) {
            (Language::Python, "decorated_definition") => {
                if let Some(def) = node.child_by_field_name("definition") {
                    return self.definition_name(&def, source);
                }
            }
            (
                Language::JavaScript | Language::TypeScript | Language::Tsx,
                "lexical_declaration" | "variable_declaration",
            ) => {
                if let Some(name) =
                    js_function_declarator(node).and_then(|d| d.child_by_field_name("name"))
                {
                    return text(&name, source);
                }
            }
            (Language::Elixir, "call") => {
                if let Some((_, name)) = elixir_definition(node, source) {
                    return name;
                }
            }
            (Language::Go, "type_declaration") => {
                let mut cursor = node.walk();
                let spec = node
                    .named_children(&mut cursor)
                    .find(|c| c.kind() == "type_spec" || c.kind() == "type_alias");
                if let Some(name) = spec.and_then(|s| s.child_by_field_name("name")) {
                    return text(&name, source);
                }
            }
            // A method is named by its receiver's type as well (`Server.Close`), as a method
            // inside a class is: a query for the type then finds the type before a method
            // that shares its name, and `Server.Close` finds the method.
            (Language::Go, "method_declaration") => {
                let name = node.child_by_field_name("name").map(|n| text(&n, source));
                let receiver = node
                    .child_by_field_name("receiver")
                    .and_then(|r| {
                        let mut cursor = r.walk();
                        let first = r
                            .named_children(&mut cursor)
                            .find(|c| c.kind() == "parameter_declaration");
                        first
                    })
                    .and_then(|p| p.child_by_field_name("type"))
                    .map(|t| {
                        let t = text(&t, source);
                        // `*T`, `(*T)`, `T[K]`: the type's own name.
                        let t = t.trim_matches(|c: char| {
                            matches!(c, '(' | ')' | '*') || c.is_whitespace()
                        });
                        t.split('[').next().unwrap_or(t).trim().to_owned()
                    })
                    .filter(|t| !t.is_empty());
                return match (receiver, name) {
                    (Some(r), Some(n)) => format!("{r}.{n}"),
                    (None, Some(n)) => n,
                    _ => String::new(),
                };
            }
            (Language::Rust, "impl_item") => {
                let ty = node.child_by_field_name("type").map(|t| text(&t, source));
                let tr = node.child_by_field_name("trait").map(|t| text(&t, source));
                return match (tr, ty) {
                    (Some(tr), Some(ty)) => format!("{tr} for {ty}"),
                    (None, Some(ty)) => ty,
                    _ => String::new(),
                };
            }
            _ => {}
        }
        if let Some(name) = node.child_by_field_name("name") {
            return first_line(&text(&name, source));
        }
        // C-family functions: the name is inside nested declarators.
        let mut current = *node;
        while let Some(declarator) = current.child_by_field_name("declarator") {
            if matches!(
                declarator.kind(),
                "identifier"
                    | "field_identifier"
                    | "qualified_identifier"
                    | "destructor_name"
                    | "operator_name"
                    | "type_identifier"
            ) {
                return text(&declarator, source);
            }
            current = declarator;
        }
        let mut cursor = node.walk();
        let named = node.named_children(&mut cursor).find(|c| {
            let k = c.kind();
            k.contains("identifier")
                || k == "constant"
                || k == "name"
                || k == "type_constructor"
                || k == "variable"
        });
        named
            .map(|n| first_line(&text(&n, source)))
            .unwrap_or_default()
    }

    /// Nodes that sit just above a definition and belong to it (doc comments, attributes, decorators).
    pub fn is_leading_trivia(self, node: &tree_sitter::Node) -> bool {
        let kind = node.kind();
        kind.contains("comment")
            || kind == "attribute_item"
            || kind == "decorator"
            || kind == "annotation"
            || kind == "attribute_list"
    }
}

/// `const f = () => ...` / `var f = function () ...`: the declarator holding a function value.
fn js_function_declarator<'t>(node: &tree_sitter::Node<'t>) -> Option<tree_sitter::Node<'t>> {
    let mut cursor = node.walk();
    let declarators: Vec<_> = node
        .named_children(&mut cursor)
        .filter(|c| c.kind() == "variable_declarator")
        .collect();
    match declarators.as_slice() {
        [one] => {
            let value = one.child_by_field_name("value")?;
            matches!(
                value.kind(),
                "arrow_function"
                    | "function_expression"
                    | "function"
                    | "generator_function"
                    | "class"
            )
            .then_some(*one)
        }
        _ => None,
    }
}

/// Elixir definitions are macro calls: `def name(args) do ... end`, `defmodule Name do ... end`.
fn elixir_definition(node: &tree_sitter::Node, source: &[u8]) -> Option<(&'static str, String)> {
    let target = node.child_by_field_name("target")?;
    let kind = match text(&target, source).as_str() {
        "def" | "defp" | "defmacro" | "defmacrop" | "defguard" | "defdelegate" => "function",
        "defmodule" => "module",
        "defprotocol" => "interface",
        "defimpl" => "impl",
        "test" | "describe" => "test",
        _ => return None,
    };
    let mut cursor = node.walk();
    let args = node
        .named_children(&mut cursor)
        .find(|c| c.kind() == "arguments")?;
    let mut cursor = args.walk();
    let first = args.named_children(&mut cursor).next()?;
    let name = match first.kind() {
        "call" => first
            .child_by_field_name("target")
            .map(|t| text(&t, source))
            .unwrap_or_default(),
        "binary_operator" => first
            .child_by_field_name("left")
            .map(|l| {
                let t = text(&l, source);
                t.split('(').next().unwrap_or(&t).to_owned()
            })
            .unwrap_or_default(),
        _ => text(&first, source),
    };
    Some((kind, first_line(&name)))
}

pub fn text(node: &tree_sitter::Node, source: &[u8]) -> String {
    String::from_utf8_lossy(&source[node.byte_range()]).into_owned()
}

fn first_line(s: &str) -> String {
    let line = s.lines().next().unwrap_or("").trim();
    line.chars().take(120).collect()
}
