//! `hgd hooks install|uninstall`: git hooks that tell the daemon when HEAD may have moved.
//!
//! The hooks folder is whatever git uses (`git rev-parse --git-path hooks`, which honours
//! `core.hooksPath`). A hook that is already there is kept: it is renamed `<hook>.hgd-chained` and
//! hgd's hook runs it after notifying; uninstalling puts it back.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// The hooks after which HEAD or the checked-out tree may differ.
pub const HOOKS: [&str; 4] = ["post-commit", "post-merge", "post-checkout", "post-rewrite"];

const TEMPLATE: &str = include_str!("../../hooks/hgd-hook.sh");
/// Marks a hook file as hgd's.
const MARKER: &str = "# hgd-hook:";
const CHAINED_SUFFIX: &str = ".hgd-chained";

/// The folder git runs hooks from for the repository at `repo`.
pub fn hooks_dir(repo: &Path) -> Result<PathBuf> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo)
        .args(["rev-parse", "--git-path", "hooks"])
        .output()
        .context("run git")?;
    if !out.status.success() {
        bail!(
            "{} is not in a git repository: {}",
            repo.display(),
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    let dir = PathBuf::from(String::from_utf8_lossy(&out.stdout).trim());
    Ok(if dir.is_absolute() {
        dir
    } else {
        repo.join(dir)
    })
}

fn is_ours(path: &Path) -> bool {
    fs::read_to_string(path).is_ok_and(|text| text.contains(MARKER))
}

/// Installs the four hooks; returns what it did, one line per hook.
pub fn install(repo: &Path, hgd: &Path) -> Result<Vec<String>> {
    let dir = hooks_dir(repo)?;
    fs::create_dir_all(&dir).with_context(|| format!("create {}", dir.display()))?;
    let script = TEMPLATE.replace("@HGD@", &hgd.to_string_lossy().replace('\'', "'\\''"));
    let mut report = Vec::new();
    for name in HOOKS {
        let hook = dir.join(name);
        let chained = dir.join(format!("{name}{CHAINED_SUFFIX}"));
        let mut note = "installed";
        if hook.exists() && !is_ours(&hook) {
            if chained.exists() {
                bail!(
                    "both {} and {} exist; move one of them away first",
                    hook.display(),
                    chained.display()
                );
            }
            fs::rename(&hook, &chained)
                .with_context(|| format!("keep the existing {}", hook.display()))?;
            note = "installed, existing hook chained";
        } else if hook.exists() {
            note = "updated";
        }
        // Write beside and rename, so git never runs a half-written hook.
        let tmp = dir.join(format!(".{name}.hgd-tmp"));
        fs::write(&tmp, &script).with_context(|| format!("write {}", tmp.display()))?;
        fs::set_permissions(&tmp, fs::Permissions::from_mode(0o755))?;
        fs::rename(&tmp, &hook).with_context(|| format!("install {}", hook.display()))?;
        report.push(format!("{}: {note}", hook.display()));
    }
    Ok(report)
}

/// Removes hgd's hooks and restores the ones they chained.
pub fn uninstall(repo: &Path) -> Result<Vec<String>> {
    let dir = hooks_dir(repo)?;
    let mut report = Vec::new();
    for name in HOOKS {
        let hook = dir.join(name);
        let chained = dir.join(format!("{name}{CHAINED_SUFFIX}"));
        if !is_ours(&hook) {
            continue;
        }
        if chained.exists() {
            fs::rename(&chained, &hook).with_context(|| format!("restore {}", hook.display()))?;
            report.push(format!("{}: restored the previous hook", hook.display()));
        } else {
            fs::remove_file(&hook).with_context(|| format!("remove {}", hook.display()))?;
            report.push(format!("{}: removed", hook.display()));
        }
    }
    Ok(report)
}
