//! `hgd mcp`: a Model Context Protocol server on stdin/stdout, so a coding agent can call hgd's
//! search directly. It is as thin as the rest of the client: each tool call is one request to
//! the daemon, like `hgd search`.
//!
//! The stdio transport is newline-delimited JSON-RPC 2.0, written here with serde_json: an MCP
//! crate would bring an async runtime into the client, which starts in milliseconds and has no
//! other use for one. Requests are answered one at a time, in order; a malformed line gets a
//! JSON-RPC error and the server reads on.

use std::io::{BufRead, Read, Write};
use std::path::{Path, PathBuf};

use anyhow::Result;
use hgd_protocol::home::Home;
use hgd_protocol::{BlockRef, SearchFilter, SearchMode};
use serde_json::{json, Value};

/// Protocol revisions this server speaks, newest first: a client asking for one of them gets it,
/// any other client the newest.
const PROTOCOL_VERSIONS: [&str; 3] = ["2025-06-18", "2025-03-26", "2024-11-05"];

/// Longest message read; a longer line is answered with an error and skipped.
const MAX_LINE_BYTES: usize = 1 << 20;

const PARSE_ERROR: i64 = -32700;
const INVALID_REQUEST: i64 = -32600;
const METHOD_NOT_FOUND: i64 = -32601;
const INVALID_PARAMS: i64 = -32602;

/// Serves until stdin closes.
pub fn serve(home: &Home) -> Result<()> {
    let stdin = std::io::stdin();
    let stdout = std::io::stdout();
    let cwd = std::env::current_dir()?;
    let mut input = stdin.lock();
    let mut bytes = Vec::new();
    loop {
        bytes.clear();
        // Bytes, not `lines()`: a line that is not UTF-8 gets an error, not the end of the server.
        let read = (&mut input)
            .take(MAX_LINE_BYTES as u64 + 1)
            .read_until(b'\n', &mut bytes)?;
        if read == 0 {
            return Ok(());
        }
        let reply = if bytes.len() > MAX_LINE_BYTES && !bytes.ends_with(b"\n") {
            skip_line(&mut input)?;
            Some(error(
                Value::Null,
                INVALID_REQUEST,
                &format!("message longer than {MAX_LINE_BYTES} bytes"),
            ))
        } else {
            match std::str::from_utf8(&bytes) {
                Ok(line) if line.trim().is_empty() => None,
                Ok(line) => handle_line(home, &cwd, line),
                Err(_) => Some(error(Value::Null, PARSE_ERROR, "the message is not UTF-8")),
            }
        };
        if let Some(reply) = reply {
            let mut out = stdout.lock();
            serde_json::to_writer(&mut out, &reply)?;
            out.write_all(b"\n")?;
            out.flush()?;
        }
    }
}

/// Reads past the end of the current line without keeping it (it may be any length).
fn skip_line(input: &mut impl BufRead) -> std::io::Result<()> {
    loop {
        let buffer = input.fill_buf()?;
        if buffer.is_empty() {
            return Ok(());
        }
        match buffer.iter().position(|&b| b == b'\n') {
            Some(at) => {
                input.consume(at + 1);
                return Ok(());
            }
            None => {
                let n = buffer.len();
                input.consume(n);
            }
        }
    }
}

/// The reply to one line, `None` for a notification.
fn handle_line(home: &Home, cwd: &Path, line: &str) -> Option<Value> {
    let message: Value = match serde_json::from_str(line) {
        Ok(message) => message,
        Err(e) => return Some(error(Value::Null, PARSE_ERROR, &format!("not JSON: {e}"))),
    };
    // A batch (an array) is not part of MCP's current revision.
    let Some(object) = message.as_object() else {
        return Some(error(
            Value::Null,
            INVALID_REQUEST,
            "expected a JSON-RPC request object",
        ));
    };
    let id = object.get("id").cloned();
    let method = match object.get("method").and_then(Value::as_str) {
        Some(method) if object.get("jsonrpc") == Some(&json!("2.0")) => method,
        // A response from the client (this server sends no requests): nothing to answer.
        None if object.contains_key("result") || object.contains_key("error") => return None,
        _ => {
            return Some(error(
                id.unwrap_or(Value::Null),
                INVALID_REQUEST,
                "expected {\"jsonrpc\": \"2.0\", \"method\": ...}",
            ))
        }
    };
    let params = object.get("params").cloned().unwrap_or(json!({}));
    // Notifications (no id) get no reply.
    let id = id?;
    let result = match method {
        "initialize" => Ok(json!({
            "protocolVersion": params["protocolVersion"]
                .as_str()
                .filter(|v| PROTOCOL_VERSIONS.contains(v))
                .unwrap_or(PROTOCOL_VERSIONS[0]),
            "capabilities": { "tools": {} },
            "serverInfo": { "name": "hgd", "version": env!("CARGO_PKG_VERSION") },
            "instructions": "Semantic code search over the git repositories on this machine. \
                Use `search` for \"where is X done?\" questions (words or code), `similar` for \
                code like a given function or file, `status` for what is indexed.",
        })),
        "ping" => Ok(json!({})),
        "tools/list" => Ok(json!({ "tools": tools() })),
        "tools/call" => call(home, cwd, &params),
        _ => Err((METHOD_NOT_FOUND, format!("unknown method {method:?}"))),
    };
    Some(match result {
        Ok(result) => json!({ "jsonrpc": "2.0", "id": id, "result": result }),
        Err((code, message)) => error(id, code, &message),
    })
}

fn error(id: Value, code: i64, message: &str) -> Value {
    json!({ "jsonrpc": "2.0", "id": id, "error": { "code": code, "message": message } })
}

fn tools() -> Value {
    let filters = json!({
        "path": { "type": "string", "description": "Folder to search (default: the server's working directory); results come from its subtree." },
        "n": { "type": "integer", "minimum": 1, "maximum": 100, "description": "Number of results (default 10)." },
        "types": { "type": "array", "items": { "type": "string" }, "description": "Only these languages (python, rust, …) or extensions (py, rs, …)." },
        "exclude": { "type": "array", "items": { "type": "string" }, "description": "Gitignore-style globs of files to leave out, relative to `path`." },
        "code_only": { "type": "boolean", "description": "Leave out Markdown and other plain-text files." },
    });
    let mut search = filters.clone();
    search["query"] =
        json!({ "type": "string", "description": "What you are looking for, in words or code." });
    search["mode"] = json!({ "type": "string", "enum": ["hybrid", "semantic", "lexical"], "description": "hybrid (default): words and meaning; semantic: meaning only; lexical: words, names and paths." });
    let mut similar = filters;
    similar["file"] = json!({ "type": "string", "description": "The file whose code to match (absolute, or relative to the server's working directory)." });
    similar["name"] = json!({ "type": "string", "description": "The function, class or section of `file` to match." });
    similar["line"] = json!({ "type": "integer", "minimum": 1, "description": "A line of `file`: match the block holding it." });
    json!([
        {
            "name": "search",
            "title": "Search code",
            "description": "Find where something is done in a git repository, by meaning and by words. Returns the best blocks (functions, classes, sections) with file, lines and content.",
            "inputSchema": { "type": "object", "properties": search, "required": ["query"] },
        },
        {
            "name": "similar",
            "title": "Find similar code",
            "description": "Find code like a given block (by name or line) or file, in other files of its repository.",
            "inputSchema": { "type": "object", "properties": similar, "required": ["file"] },
        },
        {
            "name": "status",
            "title": "Index status",
            "description": "The daemon and each tracked repository: indexed commit, HEAD, state, blocks.",
            "inputSchema": { "type": "object", "properties": {} },
        },
    ])
}

/// `tools/call`: a tool's failure is a result with `isError` (the agent sees why); only a call
/// that names no known tool or has malformed arguments is a JSON-RPC error.
fn call(home: &Home, cwd: &Path, params: &Value) -> Result<Value, (i64, String)> {
    let name = params["name"]
        .as_str()
        .ok_or((INVALID_PARAMS, "tools/call needs a tool name".to_owned()))?;
    let args = params.get("arguments").cloned().unwrap_or(json!({}));
    if !args.is_object() {
        return Err((INVALID_PARAMS, "arguments must be an object".into()));
    }
    let outcome = match name {
        "search" => {
            let query = args["query"]
                .as_str()
                .filter(|q| !q.trim().is_empty())
                .ok_or((
                    INVALID_PARAMS,
                    "search needs a non-empty `query`".to_owned(),
                ))?;
            let mode = match args["mode"].as_str() {
                None | Some("hybrid") => SearchMode::Hybrid,
                Some("semantic") => SearchMode::Semantic,
                Some("lexical") => SearchMode::Lexical,
                Some(other) => return Err((INVALID_PARAMS, format!("unknown mode {other:?}"))),
            };
            run_search(home, cwd, &args, query, mode, None)
        }
        "similar" => {
            let file = args["file"]
                .as_str()
                .ok_or((INVALID_PARAMS, "similar needs a `file`".to_owned()))?;
            let like = BlockRef {
                file: cwd.join(file).to_string_lossy().into_owned(),
                line: args["line"].as_u64().map(|l| l as u32),
                name: args["name"].as_str().map(str::to_owned),
            };
            run_search(home, cwd, &args, file, SearchMode::Semantic, Some(like))
        }
        "status" => crate::daemon_status(home).map(|status| match status {
            Some(status) => serde_json::to_value(status).unwrap_or(Value::Null),
            None => json!({ "running": false }),
        }),
        other => return Err((INVALID_PARAMS, format!("unknown tool {other:?}"))),
    };
    Ok(match outcome {
        Ok(value) => json!({
            "content": [{ "type": "text", "text": serde_json::to_string_pretty(&value).unwrap_or_default() }],
            "structuredContent": value,
            "isError": false,
        }),
        Err(e) => json!({
            "content": [{ "type": "text", "text": format!("{e:#}") }],
            "isError": true,
        }),
    })
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|a| {
            a.iter()
                .filter_map(|v| v.as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default()
}

/// One search through the daemon, as `{repo_root, mode, warnings, results}` with hygrep's field
/// names and paths relative to the repository root.
fn run_search(
    home: &Home,
    cwd: &Path,
    args: &Value,
    query: &str,
    mode: SearchMode,
    like: Option<BlockRef>,
) -> Result<Value> {
    let path: PathBuf = args["path"]
        .as_str()
        .map_or_else(|| cwd.to_path_buf(), |p| cwd.join(p));
    let limit = args["n"].as_u64().unwrap_or(10).clamp(1, 100) as usize;
    let filter = SearchFilter {
        types: strings(&args["types"]),
        exclude: strings(&args["exclude"]),
        code_only: args["code_only"].as_bool().unwrap_or(false),
    };
    let found = crate::ask_search(home, &path, query, limit, mode, filter, like)?;
    let results: Vec<Value> = found
        .hits
        .iter()
        .map(|h| {
            json!({
                "file": h.path, "line": h.line, "end_line": h.end_line, "type": h.kind,
                "name": h.name, "language": h.language, "score": h.score, "content": h.content,
                "dirty": h.dirty,
            })
        })
        .collect();
    Ok(json!({
        "repo_root": found.repo_root,
        "mode": found.mode.as_str(),
        "warnings": found.warnings,
        "results": results,
    }))
}
