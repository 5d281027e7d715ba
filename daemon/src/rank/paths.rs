//! What a file's path says about its role: implementation code, or tests, documentation,
//! examples, compatibility shims, re-export barrels, type stubs and vendored code, which answer a
//! code question less often than the implementation does.

use super::query::AsksFor;
use super::weights;

/// What a file's blocks define, as far as roles care.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct FileFacts {
    /// Some block defines something (a barrel file defines nothing of its own).
    pub has_definitions: bool,
    /// Every definition is an interface or a type alias: declarations, no implementation.
    pub declarations_only: bool,
}

/// The roles of a file that lower its rank (several may hold at once).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Role {
    pub test: bool,
    pub prose: bool,
    pub example: bool,
    pub compat: bool,
    pub reexport: bool,
    pub type_stub: bool,
    pub vendored: bool,
}

impl Role {
    /// The role of `path`, from its name and what its blocks define.
    pub fn of(path: &str, facts: FileFacts) -> Role {
        let has_definitions = facts.has_definitions;
        let lower = path.to_lowercase();
        let components: Vec<&str> = lower.split('/').collect();
        let (folders, file) = components.split_at(components.len().saturating_sub(1));
        let file = file.first().copied().unwrap_or("");
        let original_file = path.rsplit('/').next().unwrap_or("");
        let in_folder = |names: &[&str]| folders.iter().any(|f| names.contains(f));
        let (stem, ext) = file.rsplit_once('.').unwrap_or((file, ""));
        Role {
            test: in_folder(&[
                "test",
                "tests",
                "__tests__",
                "spec",
                "specs",
                "testing",
                "testdata",
            ]) || is_test_file(original_file, stem, ext),
            prose: matches!(
                ext,
                "md" | "mdx" | "markdown" | "rst" | "txt" | "adoc" | "rdoc"
            ) || (in_folder(&["doc", "docs", "documentation"])
                && matches!(ext, "html" | "htm" | "")),
            example: in_folder(&[
                "example",
                "examples",
                "_example",
                "_examples",
                "demo",
                "demos",
                "sample",
                "samples",
                "bench",
                "benches",
                "benchmark",
                "benchmarks",
            ]) || is_benchmark_file(original_file, stem, ext),
            compat: in_folder(&["compat", "_compat", "legacy"])
                || matches!(stem, "compat" | "_compat"),
            reexport: !has_definitions
                && matches!(
                    file,
                    "__init__.py" | "package-info.java" | "index.js" | "index.ts" | "mod.rs"
                ),
            // Declarations without implementations: `.d.ts`, `.pyi`, and TypeScript modules that
            // declare only interfaces and type aliases.
            type_stub: file.ends_with(".d.ts")
                || ext == "pyi"
                || (matches!(ext, "ts" | "tsx") && facts.declarations_only),
            vendored: in_folder(&[
                "vendor",
                "vendored",
                "third_party",
                "thirdparty",
                "node_modules",
            ]),
        }
    }

    /// The multiplier for this role, except for what the query asks for.
    pub fn factor(&self, asks: AsksFor) -> f32 {
        let mut f = 1.0;
        if self.test && !asks.tests {
            f *= weights::w().test_factor;
        }
        if self.prose && !asks.docs {
            f *= weights::w().prose_factor;
        }
        if self.example && !asks.examples {
            f *= weights::w().example_factor;
        }
        if self.compat {
            f *= weights::w().compat_factor;
        }
        if self.reexport {
            f *= weights::w().reexport_factor;
        }
        if self.type_stub {
            f *= weights::w().type_stub_factor;
        }
        if self.vendored {
            f *= weights::w().vendored_factor;
        }
        f
    }
}

/// Test files by the naming conventions of the common languages.
fn is_test_file(file: &str, stem: &str, ext: &str) -> bool {
    let code = !matches!(ext, "" | "md" | "txt" | "json" | "yaml" | "yml" | "toml");
    code && (stem.starts_with("test_")
        || stem.ends_with("_test")
        || stem.ends_with("_tests")
        || stem.ends_with("_spec")
        || stem.ends_with(".test")
        || stem.ends_with(".spec")
        || stem.ends_with("_unittest")
        || stem == "conftest"
        || stem.starts_with("test_helper")
        || ["Test", "Tests", "Spec", "Suite"].iter().any(|s| {
            file.strip_suffix(&format!(".{ext}"))
                .is_some_and(|f| f.ends_with(s) && f.len() > s.len())
        }))
}

/// Benchmark files by the naming conventions of the common languages (`btree_benchmark.cc`,
/// `parse.bench.ts`, `bench_io.py`, `ParserBenchmark.java`).
fn is_benchmark_file(file: &str, stem: &str, ext: &str) -> bool {
    stem.ends_with("_benchmark")
        || stem.ends_with("_benchmarks")
        || stem.ends_with("_bench")
        || stem.ends_with(".bench")
        || stem.starts_with("bench_")
        || stem.starts_with("benchmark_")
        || ["Benchmark", "Benchmarks"].iter().any(|s| {
            file.strip_suffix(&format!(".{ext}"))
                .is_some_and(|f| f.ends_with(s) && f.len() > s.len())
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    const CODE: FileFacts = FileFacts {
        has_definitions: true,
        declarations_only: false,
    };
    const NOTHING: FileFacts = FileFacts {
        has_definitions: false,
        declarations_only: false,
    };

    #[test]
    fn roles_from_paths() {
        assert!(Role::of("tests/test_core.py", CODE).test);
        assert!(Role::of("src/core_test.go", CODE).test);
        assert!(Role::of("src/main/FooTest.java", CODE).test);
        assert!(Role::of("src/app.spec.ts", CODE).test);
        assert!(!Role::of("src/contest.py", CODE).test);
        assert!(Role::of("README.md", NOTHING).prose);
        assert!(Role::of("examples/basic.rs", CODE).example);
        assert!(Role::of("absl/container/btree_benchmark.cc", CODE).example);
        assert!(Role::of("src/parse.bench.ts", CODE).example);
        assert!(Role::of("src/main/ParserBenchmark.java", CODE).example);
        assert!(!Role::of("src/benchmark.py", CODE).example);
        assert!(Role::of("base/strings_unittest.cc", CODE).test);
        assert!(Role::of("src/_compat.py", CODE).compat);
        assert!(Role::of("pkg/__init__.py", NOTHING).reexport);
        assert!(!Role::of("pkg/__init__.py", CODE).reexport);
        assert!(Role::of("types/index.d.ts", NOTHING).type_stub);
        let types_only = FileFacts {
            has_definitions: true,
            declarations_only: true,
        };
        assert!(Role::of("src/shapes.ts", types_only).type_stub);
        assert!(!Role::of("src/shapes.ts", CODE).type_stub);
        assert!(!Role::of("pkg/types.py", types_only).type_stub);
        assert_eq!(Role::of("src/app/core.py", CODE), Role::default());
    }
}
