//! `hgd remote add|list|remove`: the config file's `[remote.NAME]` tables, edited in place
//! (`toml_edit` keeps the rest of the file, comments included). The daemon reads the file again
//! when it changes, so no restart is needed. Credentials never go in the file: they come from the
//! AWS environment variables and profile files.

use anyhow::{bail, Context, Result};
use hgd_protocol::config::{Config, Remote};

/// The config file, its text ("" when it does not exist yet) and that text as a document to
/// edit.
fn read_config() -> Result<(std::path::PathBuf, String, toml_edit::DocumentMut)> {
    let path = Config::path().context("no config folder: set HGD_CONFIG to a file")?;
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(e) => return Err(e).with_context(|| format!("read {}", path.display())),
    };
    let doc = text
        .parse()
        .with_context(|| format!("{} is not valid TOML", path.display()))?;
    Ok((path, text, doc))
}

/// Writes `text` in one rename, then reads the whole file back as hgd does; a file hgd would
/// refuse is put back as it was.
fn write_config(path: &std::path::Path, old: &str, text: &str) -> Result<()> {
    let write = |text: &str| -> Result<()> {
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).with_context(|| format!("create {}", dir.display()))?;
        }
        let temp = path.with_extension("toml.hgd-tmp");
        std::fs::write(&temp, text)
            .and_then(|_| std::fs::rename(&temp, path))
            .with_context(|| format!("write {}", path.display()))
    };
    write(text)?;
    if let Err(e) = Config::load() {
        write(old)?;
        bail!("{e}\n(the file is unchanged)");
    }
    Ok(())
}

pub fn add(remote: &Remote) -> Result<Vec<String>> {
    remote
        .validate()
        .map_err(|problem| anyhow::anyhow!("remote {}: {problem}", remote.name))?;
    let (path, old, mut doc) = read_config()?;
    let remotes = doc
        .entry("remote")
        .or_insert_with(|| {
            let mut table = toml_edit::Table::new();
            table.set_implicit(true);
            toml_edit::Item::Table(table)
        })
        .as_table_mut()
        .context("`remote` in the config file is not a table of remotes")?;
    if remotes.contains_key(&remote.name) {
        bail!(
            "a remote named {} exists; `hgd remote remove {}` first",
            remote.name,
            remote.name
        );
    }
    let mut table = toml_edit::Table::new();
    table.insert("uri", toml_edit::value(remote.uri.as_str()));
    if let Some(endpoint) = &remote.endpoint {
        table.insert("endpoint", toml_edit::value(endpoint.as_str()));
    }
    if let Some(region) = &remote.region {
        table.insert("region", toml_edit::value(region.as_str()));
    }
    for (key, on) in [
        ("allow_http", remote.allow_http),
        ("read_only", remote.read_only),
        ("publish", remote.publish),
    ] {
        if on {
            table.insert(key, toml_edit::value(true));
        }
    }
    remotes.insert(&remote.name, toml_edit::Item::Table(table));
    write_config(&path, &old, &doc.to_string())?;
    Ok(vec![format!(
        "added remote {} ({}{}) to {}",
        remote.name,
        remote.uri,
        if remote.read_only { ", read-only" } else { "" },
        path.display()
    )])
}

pub fn remove(name: &str) -> Result<Vec<String>> {
    let (path, old, mut doc) = read_config()?;
    let removed = doc
        .get_mut("remote")
        .and_then(|r| r.as_table_mut())
        .and_then(|r| r.remove(name));
    if removed.is_none() {
        bail!("no remote named {name} (`hgd remote list` shows them)");
    }
    if doc
        .get("remote")
        .and_then(|r| r.as_table())
        .is_some_and(|r| r.is_empty())
    {
        doc.remove("remote");
    }
    write_config(&path, &old, &doc.to_string())?;
    Ok(vec![format!(
        "removed remote {name} from {}",
        path.display()
    )])
}

pub fn list(json: bool) -> Result<Vec<String>> {
    let config = Config::load()?;
    if json {
        let remotes: Vec<_> = config
            .remotes
            .iter()
            .map(|r| {
                serde_json::json!({
                    "name": r.name,
                    "uri": r.uri,
                    "endpoint": r.endpoint,
                    "region": r.region,
                    "allow_http": r.allow_http,
                    "read_only": r.read_only,
                    "publish": r.publish,
                })
            })
            .collect();
        return Ok(vec![serde_json::to_string_pretty(&remotes)?]);
    }
    Ok(config
        .remotes
        .iter()
        .map(|r| {
            let mut notes = Vec::new();
            if let Some(endpoint) = &r.endpoint {
                notes.push(format!("endpoint {endpoint}"));
            }
            if let Some(region) = &r.region {
                notes.push(format!("region {region}"));
            }
            if r.read_only {
                notes.push("read-only".into());
            }
            if r.publish {
                notes.push("the daemon publishes".into());
            }
            if notes.is_empty() {
                format!("{}\t{}", r.name, r.uri)
            } else {
                format!("{}\t{}\t{}", r.name, r.uri, notes.join(", "))
            }
        })
        .collect())
}
