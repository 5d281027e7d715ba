//! `hgd service`: run the daemon under the platform's service manager (a launchd agent on macOS,
//! a systemd user unit elsewhere), so it is simply there after login and started again when it
//! crashes. The definitions are the templates in `launchd/`, filled in here; only the commands
//! that load and unload them differ per manager.
//!
//! A home whose daemon a manager owns holds a [`MARKER`] file naming the manager: the client
//! then asks the manager to start the daemon instead of starting a second one itself.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};
use hgd_protocol::home::Home;

const PLIST_TEMPLATE: &str = include_str!("../../launchd/hgd.plist");
const UNIT_TEMPLATE: &str = include_str!("../../launchd/hgd.service");

/// launchd's label for the agent.
pub const LABEL: &str = "hgd.daemon";
/// systemd's name for the unit.
pub const UNIT: &str = "hgd.service";
/// In the home: which manager owns its daemon.
pub const MARKER: &str = "service";

/// Variables passed on to a managed daemon when set: where its home, model and runtime are.
const PASSED_ON: [&str; 4] = ["HGD_HOME", "HGD_MODEL_DIR", "HGD_ORT_DYLIB", "HGD_CONFIG"];

#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum Manager {
    /// A launchd agent (macOS).
    Launchd,
    /// A systemd user unit (Linux).
    Systemd,
}

impl Manager {
    /// This platform's manager.
    pub fn native() -> Manager {
        // The one platform seam of this module.
        if cfg!(target_os = "macos") {
            Manager::Launchd
        } else {
            Manager::Systemd
        }
    }

    fn name(self) -> &'static str {
        match self {
            Manager::Launchd => "launchd",
            Manager::Systemd => "systemd",
        }
    }

    /// Where the definition is installed.
    pub fn definition_path(self) -> Result<PathBuf> {
        let home = std::env::var_os("HOME")
            .filter(|h| !h.is_empty())
            .map(PathBuf::from)
            .context("HOME is not set")?;
        Ok(match self {
            Manager::Launchd => home
                .join("Library/LaunchAgents")
                .join(format!("{LABEL}.plist")),
            Manager::Systemd => std::env::var_os("XDG_CONFIG_HOME")
                .filter(|d| !d.is_empty())
                .map(PathBuf::from)
                .unwrap_or_else(|| home.join(".config"))
                .join("systemd/user")
                .join(UNIT),
        })
    }
}

/// What the definition says: the daemon binary (absolute), the log file, and the variables
/// passed on.
pub struct Definition {
    pub daemon: PathBuf,
    pub log: PathBuf,
    pub environment: Vec<(String, String)>,
}

impl Definition {
    pub fn for_home(home: &Home) -> Result<Definition> {
        let daemon = crate::connect::daemon_binary();
        let daemon = if daemon.is_absolute() {
            daemon
        } else {
            find_on_path(&daemon).with_context(|| {
                format!(
                    "cannot find {} beside hgd or on PATH; install it (`cargo install --path daemon`) or set HGD_DAEMON_BIN",
                    daemon.display()
                )
            })?
        };
        let environment = PASSED_ON
            .iter()
            .filter_map(|name| {
                let value = std::env::var_os(name).filter(|v| !v.is_empty())?;
                // HGD_HOME as the client resolved it (absolute).
                let value = if *name == "HGD_HOME" {
                    home.root().to_string_lossy().into_owned()
                } else {
                    std::path::absolute(PathBuf::from(&value))
                        .unwrap_or_else(|_| PathBuf::from(&value))
                        .to_string_lossy()
                        .into_owned()
                };
                Some(((*name).to_owned(), value))
            })
            .collect();
        Ok(Definition {
            daemon,
            log: home.daemon_log(),
            environment,
        })
    }

    /// The launchd property list.
    pub fn plist(&self) -> String {
        let mut environment = String::new();
        if !self.environment.is_empty() {
            environment.push_str("\t<key>EnvironmentVariables</key>\n\t<dict>\n");
            for (name, value) in &self.environment {
                environment.push_str(&format!(
                    "\t\t<key>{}</key>\n\t\t<string>{}</string>\n",
                    xml(name),
                    xml(value)
                ));
            }
            environment.push_str("\t</dict>\n");
        }
        PLIST_TEMPLATE
            .replace("@LABEL@", &xml(LABEL))
            .replace("@DAEMON@", &xml(&self.daemon.to_string_lossy()))
            .replace("@LOG@", &xml(&self.log.to_string_lossy()))
            .replace("@ENVIRONMENT@", &environment)
    }

    /// The systemd unit.
    pub fn unit(&self) -> String {
        let environment: String = self
            .environment
            .iter()
            .map(|(name, value)| {
                format!(
                    "Environment={}\n",
                    systemd_quoted(&format!("{name}={value}"))
                )
            })
            .collect();
        UNIT_TEMPLATE
            .replace(
                "@DAEMON@",
                &systemd_command_word(&self.daemon.to_string_lossy()),
            )
            .replace("@LOG@", &systemd_specifiers(&self.log.to_string_lossy()))
            .replace("@ENVIRONMENT@", &environment)
    }

    pub fn render(&self, manager: Manager) -> String {
        match manager {
            Manager::Launchd => self.plist(),
            Manager::Systemd => self.unit(),
        }
    }
}

/// Text escaped for an XML element.
fn xml(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
        .replace('\'', "&apos;")
}

/// `%` doubled: systemd expands `%x` specifiers in most settings.
fn systemd_specifiers(text: &str) -> String {
    text.replace('%', "%%")
}

/// A double-quoted systemd value (an `Environment=` assignment): `\`, `"` and `%` escaped.
fn systemd_quoted(text: &str) -> String {
    let escaped = systemd_specifiers(text)
        .replace('\\', "\\\\")
        .replace('"', "\\\"");
    format!("\"{escaped}\"")
}

/// One word of an `ExecStart=` command line: quoted as above, and `$` doubled (it starts a
/// variable there, not in `Environment=`).
fn systemd_command_word(text: &str) -> String {
    systemd_quoted(&text.replace('$', "$$"))
}

fn find_on_path(name: &Path) -> Option<PathBuf> {
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// `hgd service install`: writes the definition, marks the home as managed, stops a daemon the
/// client started, and has the manager start one. Running it again rewrites the same files.
pub fn install(home: &Home, manager: Manager) -> Result<Vec<String>> {
    let definition = Definition::for_home(home)?;
    let path = manager.definition_path()?;
    let text = definition.render(manager);
    let dir = path.parent().expect("a file in a folder");
    fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
    fs::create_dir_all(home.logs()).with_context(|| format!("create {}", home.logs().display()))?;
    // Whether a manager owned the home before this install (a client-started daemon must stop).
    let managed_before = is_managed_now(home);
    let previous = fs::read_to_string(&path).ok();
    let unchanged = previous.as_deref() == Some(text.as_str());
    if !unchanged {
        fs::write(&path, &text).with_context(|| format!("write {}", path.display()))?;
    }
    let mut lines = vec![format!(
        "{} {}",
        if unchanged { "kept" } else { "wrote" },
        path.display()
    )];
    // A daemon this client started holds the home's lock: the manager's would be refused.
    if crate::connect::Connection::try_connect(home).is_some() && !managed_before {
        crate::stop(home)?;
        lines.push("stopped the daemon hgd had started".into());
    }
    let started = match manager {
        Manager::Systemd => run(Command::new("systemctl").args(["--user", "daemon-reload"]))
            .and_then(|_| run(Command::new("systemctl").args(["--user", "enable", "--now", UNIT])))
            // A changed unit (a new binary, another home) applies to a running daemon too.
            .and_then(|_| {
                if unchanged {
                    Ok(())
                } else {
                    run(Command::new("systemctl").args(["--user", "restart", UNIT]))
                }
            })
            .map(|_| format!("enabled and started {UNIT} (systemctl --user)")),
        Manager::Launchd => launchd_domain().and_then(|domain| {
            // Loaded already (an earlier install): unload first so the new definition is used.
            let _ = Command::new("launchctl")
                .args(["bootout", &format!("{domain}/{LABEL}")])
                .output();
            run(Command::new("launchctl")
                .arg("bootstrap")
                .arg(&domain)
                .arg(&path))
            .map(|_| format!("loaded {LABEL} into {domain}"))
        }),
    };
    match started {
        Ok(line) => lines.push(line),
        Err(e) => {
            // Nothing half-installed: the definition as it was before (none: no definition the
            // manager cannot run), and no new mark that would stop hgd starting a daemon itself.
            let restored = match &previous {
                // Written back and registered again, so the manager runs what it ran before.
                Some(old) => fs::write(&path, old).is_ok() && reregister(manager, &path).is_ok(),
                None => fs::remove_file(&path).is_ok(),
            };
            return Err(e.context(format!(
                "the {} service could not be started, so {}",
                manager.name(),
                match (&previous, restored) {
                    (None, true) =>
                        "nothing was installed; hgd keeps starting the daemon itself".to_owned(),
                    (Some(_), true) => format!("{} is as it was, and registered again", path.display()),
                    (Some(_), false) => format!(
                        "{} is back as it was but could not be registered again; see `hgd service status`",
                        path.display()
                    ),
                    (None, false) => format!(
                        "{} may be left behind; run `hgd service uninstall`",
                        path.display()
                    ),
                }
            )));
        }
    }
    // Marked last: from now on the client asks the manager for a daemon.
    fs::write(home.root().join(MARKER), manager.name())
        .with_context(|| format!("write {}", home.root().join(MARKER).display()))?;
    Ok(lines)
}

/// `hgd service uninstall`: stops the managed daemon and removes the definition and the mark.
pub fn uninstall(home: &Home, manager: Manager) -> Result<Vec<String>> {
    let path = manager.definition_path()?;
    let mut lines = Vec::new();
    if path.exists() {
        // Best effort with the manager (it may not run at all): the files go regardless.
        let stopped = match manager {
            Manager::Systemd => {
                run(Command::new("systemctl").args(["--user", "disable", "--now", UNIT]))
            }
            Manager::Launchd => launchd_domain().and_then(|domain| {
                run(Command::new("launchctl").args(["bootout", &format!("{domain}/{LABEL}")]))
            }),
        };
        fs::remove_file(&path).with_context(|| format!("remove {}", path.display()))?;
        if manager == Manager::Systemd {
            let _ = run(Command::new("systemctl").args(["--user", "daemon-reload"]));
        }
        match stopped {
            Ok(()) => lines.push(format!(
                "stopped the service and removed {}",
                path.display()
            )),
            Err(e) => lines.push(format!(
                "removed {} (the service manager said: {e:#})",
                path.display()
            )),
        }
    } else {
        lines.push(format!("not installed ({} does not exist)", path.display()));
    }
    let marker = home.root().join(MARKER);
    if marker.exists() {
        fs::remove_file(&marker).with_context(|| format!("remove {}", marker.display()))?;
    }
    Ok(lines)
}

/// `hgd service status`: the definition, whether the manager runs it, and whether a daemon
/// answers.
pub fn status(home: &Home, manager: Manager) -> Result<Vec<String>> {
    let path = manager.definition_path()?;
    let mut lines = vec![format!(
        "{} ({}): {}",
        path.display(),
        manager.name(),
        if path.exists() {
            "installed"
        } else {
            "not installed"
        }
    )];
    if path.exists() {
        let state = match manager {
            Manager::Systemd => Command::new("systemctl")
                .args(["--user", "is-active", UNIT])
                .output()
                .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned()),
            Manager::Launchd => {
                let domain = launchd_domain()?;
                Command::new("launchctl")
                    .args(["print", &format!("{domain}/{LABEL}")])
                    .output()
                    .map(|o| {
                        if o.status.success() {
                            "loaded".to_owned()
                        } else {
                            "not loaded".to_owned()
                        }
                    })
            }
        };
        lines.push(format!(
            "service: {}",
            state.unwrap_or_else(|e| format!("unknown ({e})"))
        ));
    }
    lines.push(format!(
        "daemon: {}",
        if crate::connect::Connection::try_connect(home).is_some() {
            "answering"
        } else {
            "not running"
        }
    ));
    Ok(lines)
}

/// Whether a service manager owns this home's daemon: the home is marked and the definition
/// is still installed where this client looks (a definition removed by hand leaves a mark that
/// no longer counts; `hgd service uninstall` removes it).
pub fn is_managed_now(home: &Home) -> bool {
    let Some(manager) = marked_manager(home) else {
        return false;
    };
    // Not dropped here: another client may see the definition where this one does not (another
    // HOME); without it in sight, this client simply starts the daemon itself.
    manager.definition_path().is_ok_and(|p| p.exists())
}

/// The manager the home's mark names (`None`: not marked).
fn marked_manager(home: &Home) -> Option<Manager> {
    match fs::read_to_string(home.root().join(MARKER)).ok()?.as_str() {
        "launchd" => Some(Manager::Launchd),
        _ => Some(Manager::Systemd),
    }
}

/// Asks the manager that owns this home's daemon to start it (a no-op when it runs).
pub fn start_managed(home: &Home) -> Result<()> {
    let manager = marked_manager(home).unwrap_or(Manager::Systemd);
    match manager {
        Manager::Systemd => run(Command::new("systemctl").args(["--user", "start", UNIT])),
        Manager::Launchd => {
            let target = format!("{}/{LABEL}", launchd_domain()?);
            run(Command::new("launchctl").args(["kickstart", &target]))
        }
    }
}

/// Has the manager load the definition at `path` again and run it (after a failed re-install
/// restored the previous one).
fn reregister(manager: Manager, path: &Path) -> Result<()> {
    match manager {
        Manager::Systemd => run(Command::new("systemctl").args(["--user", "daemon-reload"]))
            .and_then(|_| run(Command::new("systemctl").args(["--user", "start", UNIT]))),
        Manager::Launchd => {
            let domain = launchd_domain()?;
            run(Command::new("launchctl")
                .arg("bootstrap")
                .arg(&domain)
                .arg(path))
        }
    }
}

/// `gui/<uid>`: the logged-in user's launchd domain.
fn launchd_domain() -> Result<String> {
    let out = Command::new("id")
        .arg("-u")
        .output()
        .context("run `id -u`")?;
    let uid = String::from_utf8_lossy(&out.stdout).trim().to_owned();
    if !out.status.success() || uid.is_empty() {
        bail!("cannot find the user id (`id -u` failed)");
    }
    Ok(format!("gui/{uid}"))
}

fn run(command: &mut Command) -> Result<()> {
    let shown = format!(
        "{} {}",
        command.get_program().to_string_lossy(),
        command
            .get_args()
            .map(|a| a.to_string_lossy())
            .collect::<Vec<_>>()
            .join(" ")
    );
    let out = command
        .output()
        .with_context(|| format!("cannot run `{shown}`"))?;
    if !out.status.success() {
        bail!(
            "`{shown}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(())
}
