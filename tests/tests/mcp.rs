//! `hgd mcp`: the Model Context Protocol server, driven over stdin/stdout with JSON-RPC messages
//! as an agent sends them, against a real daemon and repository.

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};

use hgd_tests::{GitRepo, Hgd};
use serde_json::{json, Value};

struct Server {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Server {
    fn start(hgd: &Hgd, repo: &GitRepo) -> Server {
        let mut child = hgd
            .command("hgd")
            .arg("mcp")
            .current_dir(repo.path())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("run hgd mcp");
        Server {
            stdin: child.stdin.take().unwrap(),
            stdout: BufReader::new(child.stdout.take().unwrap()),
            child,
        }
    }

    fn send_line(&mut self, line: &str) {
        writeln!(self.stdin, "{line}").unwrap();
        self.stdin.flush().unwrap();
    }

    fn read(&mut self) -> Value {
        let mut line = String::new();
        assert!(
            self.stdout.read_line(&mut line).unwrap() > 0,
            "server closed"
        );
        serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"))
    }

    fn request(&mut self, id: u64, method: &str, params: Value) -> Value {
        self.send_line(
            &json!({ "jsonrpc": "2.0", "id": id, "method": method, "params": params }).to_string(),
        );
        let reply = self.read();
        assert_eq!(reply["jsonrpc"], "2.0");
        assert_eq!(reply["id"], id, "{reply}");
        reply
    }

    fn call(&mut self, id: u64, tool: &str, arguments: Value) -> Value {
        let reply = self.request(
            id,
            "tools/call",
            json!({ "name": tool, "arguments": arguments }),
        );
        reply["result"].clone()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn repo() -> GitRepo {
    let repo = GitRepo::new();
    repo.write(
        "src/fingerprint.py",
        "import hashlib\n\n\ndef fingerprint(path):\n    h = hashlib.sha256()\n    with open(path, 'rb') as fh:\n        for piece in iter(lambda: fh.read(65536), b''):\n            h.update(piece)\n    return h.hexdigest()\n",
    );
    repo.write(
        "src/digest.py",
        "import hashlib\n\n\ndef file_digest(name):\n    d = hashlib.md5()\n    with open(name, 'rb') as f:\n        d.update(f.read())\n    return d.hexdigest()\n",
    );
    repo.write(
        "lib/strings.rb",
        "module Text\n  def self.slugify(title)\n    title.downcase.strip.gsub(/[^a-z0-9]+/, '-')\n  end\nend\n",
    );
    repo.commit_all("initial");
    repo
}

#[test]
fn an_agent_initializes_lists_tools_and_calls_them() {
    let hgd = Hgd::new();
    let repo = repo();
    let mut server = Server::start(&hgd, &repo);

    let init = server.request(
        1,
        "initialize",
        json!({
            "protocolVersion": "2025-06-18",
            "capabilities": {},
            "clientInfo": { "name": "test-agent", "version": "1" },
        }),
    );
    assert_eq!(init["result"]["serverInfo"]["name"], "hgd", "{init}");
    assert!(
        init["result"]["capabilities"]["tools"].is_object(),
        "{init}"
    );
    assert!(init["result"]["protocolVersion"].is_string());
    // A notification gets no reply: the next line read answers the next request.
    server.send_line(r#"{"jsonrpc":"2.0","method":"notifications/initialized"}"#);

    let list = server.request(2, "tools/list", json!({}));
    let tools = list["result"]["tools"].as_array().unwrap();
    let names: Vec<&str> = tools.iter().map(|t| t["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["search", "similar", "status"]);
    for tool in tools {
        assert_eq!(tool["inputSchema"]["type"], "object", "{tool}");
    }

    let found = server.call(
        3,
        "search",
        json!({ "query": "sha256 checksum of a file", "n": 3 }),
    );
    assert_eq!(found["isError"], false, "{found}");
    let results = found["structuredContent"]["results"].as_array().unwrap();
    assert_eq!(results[0]["file"], "src/fingerprint.py", "{found}");
    assert_eq!(results[0]["name"], "fingerprint");
    assert!(results[0]["content"].as_str().unwrap().contains("sha256"));
    // The same as text, for clients that read only `content`.
    let text = found["content"][0]["text"].as_str().unwrap();
    assert!(text.contains("src/fingerprint.py"), "{text}");

    let filtered = server.call(
        4,
        "search",
        json!({ "query": "turn a title into a slug", "types": ["ruby"], "n": 5 }),
    );
    let results = filtered["structuredContent"]["results"].as_array().unwrap();
    assert!(!results.is_empty());
    assert!(
        results.iter().all(|r| r["file"] == "lib/strings.rb"),
        "{filtered}"
    );

    let similar = server.call(
        5,
        "similar",
        json!({ "file": "src/fingerprint.py", "name": "fingerprint", "n": 2 }),
    );
    let results = similar["structuredContent"]["results"].as_array().unwrap();
    assert_eq!(results[0]["file"], "src/digest.py", "{similar}");
    assert_eq!(results[0]["name"], "file_digest");

    let status = server.call(6, "status", json!({}));
    let repos = status["structuredContent"]["repos"].as_array().unwrap();
    assert_eq!(repos.len(), 1, "{status}");

    // A tool that fails says why, as a result the agent reads.
    let failed = server.call(
        7,
        "similar",
        json!({ "file": "src/digest.py", "name": "nope" }),
    );
    assert_eq!(failed["isError"], true, "{failed}");
    assert!(failed["content"][0]["text"]
        .as_str()
        .unwrap()
        .contains("no block named"));
}

#[test]
fn malformed_messages_get_json_rpc_errors_and_the_server_keeps_going() {
    let hgd = Hgd::new();
    let repo = repo();
    let mut server = Server::start(&hgd, &repo);

    server.send_line("{this is not json");
    let reply = server.read();
    assert_eq!(reply["error"]["code"], -32700, "{reply}");
    assert_eq!(reply["id"], Value::Null);

    server.send_line(r#"[1, 2, 3]"#);
    assert_eq!(server.read()["error"]["code"], -32600);

    server
        .stdin
        .write_all(b"{\"jsonrpc\": \"2.0\", \"id\": 3, \xff\xfe}\n")
        .unwrap();
    server.stdin.flush().unwrap();
    let reply = server.read();
    assert_eq!(reply["error"]["code"], -32700, "not UTF-8: {reply}");

    // A message over the 1 MiB limit is refused, and the server reads on after it.
    let huge = format!(
        "{{\"jsonrpc\":\"2.0\",\"id\":4,\"method\":\"ping\",\"params\":{{\"pad\":\"{}\"}}}}",
        "x".repeat(3 << 20)
    );
    server.send_line(&huge);
    let reply = server.read();
    assert_eq!(reply["error"]["code"], -32600, "too long: {reply}");
    assert!(reply["error"]["message"]
        .as_str()
        .unwrap()
        .contains("longer"));

    server.send_line(r#"{"jsonrpc":"2.0","id":9,"params":{}}"#);
    let reply = server.read();
    assert_eq!(reply["error"]["code"], -32600, "{reply}");
    assert_eq!(reply["id"], 9);

    let unknown = server.request(10, "resources/list", json!({}));
    assert_eq!(unknown["error"]["code"], -32601, "{unknown}");

    let no_query = server.request(
        11,
        "tools/call",
        json!({ "name": "search", "arguments": {} }),
    );
    assert_eq!(no_query["error"]["code"], -32602, "{no_query}");
    let no_tool = server.request(12, "tools/call", json!({ "name": "grep", "arguments": {} }));
    assert_eq!(no_tool["error"]["code"], -32602, "{no_tool}");

    // An older protocol revision the server speaks is the one agreed.
    let init = server.request(
        15,
        "initialize",
        json!({ "protocolVersion": "2024-11-05", "capabilities": {}, "clientInfo": { "name": "old", "version": "1" } }),
    );
    assert_eq!(init["result"]["protocolVersion"], "2024-11-05", "{init}");

    // Still serving.
    let pong = server.request(13, "ping", json!({}));
    assert_eq!(pong["result"], json!({}), "{pong}");
    let found = server.call(14, "search", json!({ "query": "slugify" }));
    assert_eq!(found["isError"], false, "{found}");
}
