//! Output of search results: ripgrep-style text (coloured on a terminal) or hygrep-compatible JSON.

use std::io::{self, Write};
use std::path::{Component, Path, PathBuf};

use hgd_protocol::Hit;
use serde::Serialize;

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ColorChoice {
    Auto,
    Always,
    Never,
}

impl ColorChoice {
    /// `auto` colours only a terminal, and never when `NO_COLOR` is set.
    pub fn enabled(self) -> bool {
        use std::io::IsTerminal;
        match self {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => {
                std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty())
                    && io::stdout().is_terminal()
            }
        }
    }
}

/// One result as `--json` prints it; field names match hygrep's so existing scripts keep working.
#[derive(Debug, Serialize)]
pub struct JsonHit<'a> {
    pub file: String,
    pub line: u32,
    pub end_line: u32,
    #[serde(rename = "type")]
    pub kind: &'a str,
    pub name: &'a str,
    pub language: &'a str,
    pub score: f32,
    /// Left out by `--compact`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub content: Option<&'a str>,
    /// From an uncommitted work-tree file.
    pub dirty: bool,
    /// The channels that answered: `hybrid`, `semantic` or `lexical`.
    pub mode: &'a str,
}

pub struct Printer {
    color: bool,
    /// Content lines shown under each header.
    context_lines: usize,
}

const MAGENTA: &str = "\x1b[35m";
const GREEN: &str = "\x1b[32m";
const BOLD: &str = "\x1b[1m";
const DIM: &str = "\x1b[2m";
const RESET: &str = "\x1b[0m";

impl Printer {
    pub fn new(color: bool, context_lines: usize) -> Printer {
        Printer {
            color,
            context_lines,
        }
    }

    fn paint(&self, style: &str, text: &str) -> String {
        if self.color {
            format!("{style}{text}{RESET}")
        } else {
            text.to_owned()
        }
    }

    /// `path:line-end kind name` then the first lines of the block, numbered.
    pub fn text(
        &self,
        out: &mut impl Write,
        hits: &[Hit],
        display_paths: &[String],
    ) -> io::Result<()> {
        for (i, (hit, path)) in hits.iter().zip(display_paths).enumerate() {
            if i > 0 {
                writeln!(out)?;
            }
            let mut label = if hit.name.is_empty() {
                hit.kind.clone()
            } else {
                format!("{} {}", hit.kind, hit.name)
            };
            if hit.dirty {
                label.push_str(" (uncommitted)");
            }
            writeln!(
                out,
                "{}:{} {}",
                self.paint(MAGENTA, path),
                self.paint(GREEN, &format!("{}-{}", hit.line, hit.end_line)),
                self.paint(BOLD, &label)
            )?;
            let lines: Vec<&str> = hit.content.lines().collect();
            for (n, line) in lines.iter().take(self.context_lines).enumerate() {
                let number = format!("{}", hit.line as usize + n);
                writeln!(out, "{}: {}", self.paint(GREEN, &number), line.trim_end())?;
            }
            if lines.len() > self.context_lines {
                writeln!(
                    out,
                    "{}",
                    self.paint(
                        DIM,
                        &format!("  … {} more lines", lines.len() - self.context_lines)
                    )
                )?;
            }
        }
        Ok(())
    }

    pub fn json(
        &self,
        out: &mut impl Write,
        hits: &[Hit],
        display_paths: &[String],
        mode: hgd_protocol::SearchMode,
        compact: bool,
    ) -> io::Result<()> {
        let rows: Vec<JsonHit> = hits
            .iter()
            .zip(display_paths)
            .map(|(h, path)| JsonHit {
                file: path.clone(),
                line: h.line,
                end_line: h.end_line,
                kind: &h.kind,
                name: &h.name,
                language: &h.language,
                score: h.score,
                content: (!compact).then_some(h.content.as_str()),
                dirty: h.dirty,
                mode: mode.as_str(),
            })
            .collect();
        serde_json::to_writer_pretty(&mut *out, &rows)?;
        writeln!(out)
    }

    /// `--files-only`: each file once, in the order of its best result (`--json`: an array of
    /// paths).
    pub fn files(
        &self,
        out: &mut impl Write,
        display_paths: &[String],
        json: bool,
    ) -> io::Result<()> {
        let mut seen = std::collections::HashSet::new();
        let files: Vec<&String> = display_paths.iter().filter(|p| seen.insert(*p)).collect();
        if json {
            serde_json::to_writer_pretty(&mut *out, &files)?;
            return writeln!(out);
        }
        for file in files {
            writeln!(out, "{}", self.paint(MAGENTA, file))?;
        }
        Ok(())
    }
}

/// `target` relative to `base` (both absolute), with `..` where needed, `/`-separated.
pub fn relative_path(target: &Path, base: &Path) -> String {
    let t: Vec<Component> = target.components().collect();
    let b: Vec<Component> = base.components().collect();
    let common = t.iter().zip(&b).take_while(|(x, y)| x == y).count();
    let mut rel = PathBuf::new();
    for _ in common..b.len() {
        rel.push("..");
    }
    for part in &t[common..] {
        rel.push(part.as_os_str());
    }
    let s = rel.to_string_lossy().replace('\\', "/");
    if s.is_empty() {
        ".".into()
    } else {
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_paths() {
        assert_eq!(
            relative_path(Path::new("/r/src/a.rs"), Path::new("/r")),
            "src/a.rs"
        );
        assert_eq!(
            relative_path(Path::new("/r/src/a.rs"), Path::new("/r/src")),
            "a.rs"
        );
        assert_eq!(
            relative_path(Path::new("/r/lib/b.rs"), Path::new("/r/src")),
            "../lib/b.rs"
        );
        assert_eq!(relative_path(Path::new("/r"), Path::new("/r")), ".");
    }
}
