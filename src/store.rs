//! The config file as the API changes it (`PUT`/`PATCH`/`DELETE
//! /api/streams`, `PUT`/`DELETE /api/preload`).
//!
//! Every change is made to the file first: the new text is built, parsed
//! and checked like any config, written to a temporary file beside the
//! config and renamed over it. Only then does the caller apply it to the
//! running streams. A write that fails (read-only file, full disk) changes
//! nothing in memory, so memory and file never disagree.
//!
//! The rest of the file is kept as written: comments, `${VAR}`s, key
//! order. Streams that did not change keep their lines verbatim; changed
//! and new streams are written fresh. The `preload:` section is written
//! afresh whenever it changes. A `streams:` section in flow style
//! (`streams: {a: b}`) is rewritten as a block.
//!
//! A `${VAR}` reference is never written back expanded (issue 15: a PUT
//! put `${CAM_PASS}`'s value in the file in clear text): a name, source or
//! preload query written fresh that is the expansion of one the file
//! wrote with a reference is written as the file wrote it. API input may
//! not contain `${` at all, since the file expands it when next loaded.

use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::path::{Path, PathBuf};

use crate::config::{Config, ConfigError, Layout, StreamConfig, Unreadable};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The change itself is wrong: a bad name or source (400).
    #[error("{reason}")]
    Invalid { param: &'static str, reason: String },
    #[error("stream not found: {stream}")]
    NotFound { stream: String },
    /// The file could not be written (a full or failing disk, a
    /// directory we may not write in); nothing changed (500).
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The operator made the file read-only: it is left alone (500).
    #[error("cannot write {}: the file is read-only", path.display())]
    ReadOnly { path: PathBuf },
    /// Writing would expand `${VAR}`s the file keeps as references (500).
    #[error("cannot write {}: {source}", path.display())]
    References {
        path: PathBuf,
        #[source]
        source: ReferenceError,
    },
    /// A reload found the file unreadable: nothing changed.
    #[error("cannot read {}: {reason}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        reason: Unreadable,
    },
    /// A reload found the file invalid: nothing changed.
    #[error("{0}")]
    Config(ConfigError),
}

/// The file's text and what it says, as last written or read.
pub struct Snapshot {
    pub text: String,
    pub config: Config,
}

pub struct Store {
    path: PathBuf,
    state: tokio::sync::Mutex<Snapshot>,
    env: fn(&str) -> Option<String>,
}

/// What a change did: the config before and after. The caller applies the
/// difference to the running streams while it still holds the store (the
/// guard), so changes apply in the order they were written.
pub struct Committed<'a> {
    pub old: Config,
    pub new: Config,
    pub guard: tokio::sync::MutexGuard<'a, Snapshot>,
}

impl Store {
    pub fn new(path: PathBuf, text: String, config: Config) -> Store {
        Store {
            path,
            state: tokio::sync::Mutex::new(Snapshot { text, config }),
            env: crate::config::env_secret,
        }
    }

    /// The config as it is now.
    pub async fn config(&self) -> Config {
        self.state.lock().await.config.clone()
    }

    /// Creates or replaces stream `name` with `sources` (`PUT`), or
    /// replaces the sources of an existing one (`patch`).
    pub async fn put_stream(
        &self,
        name: &str,
        sources: &[String],
        allow_exec: bool,
        patch: bool,
    ) -> Result<Committed<'_>, StoreError> {
        no_reference("name", name)?;
        let snap = self.state.lock().await;
        let cfg = &snap.config;
        if patch && cfg.stream(name).is_none() {
            return Err(StoreError::NotFound {
                stream: name.to_string(),
            });
        }
        let mut names: BTreeSet<String> = cfg.streams.iter().map(|s| s.name.clone()).collect();
        names.insert(name.to_string());
        for src in sources {
            // `api.allow_files` is read from the config as it is now, so a
            // reload that turns it off takes effect at once.
            crate::config::check_api_source(src, &names, allow_exec, cfg.allow_files).map_err(
                |reason| StoreError::Invalid {
                    param: "src",
                    reason,
                },
            )?;
        }
        let mut entries = entries_of(cfg);
        match entries.iter_mut().find(|e| e.name == name) {
            Some(e) if e.sources == sources => {} // the same: nothing to write
            Some(e) => {
                e.sources = sources.to_vec();
                e.keep = false;
            }
            None => entries.push(Entry {
                name: name.to_string(),
                sources: sources.to_vec(),
                keep: false,
            }),
        }
        let preload = cfg.preload.clone();
        self.commit(snap, &entries, &preload).await
    }

    pub async fn delete_stream(&self, name: &str) -> Result<Committed<'_>, StoreError> {
        let snap = self.state.lock().await;
        if snap.config.stream(name).is_none() {
            return Err(StoreError::NotFound {
                stream: name.to_string(),
            });
        }
        let entries: Vec<Entry> = entries_of(&snap.config)
            .into_iter()
            .filter(|e| e.name != name)
            .collect();
        let mut preload = snap.config.preload.clone();
        preload.remove(name);
        self.commit(snap, &entries, &preload).await
    }

    /// Sets (`Some(query)`) or removes (`None`) a stream's preload.
    pub async fn set_preload(
        &self,
        name: &str,
        query: Option<&str>,
    ) -> Result<Committed<'_>, StoreError> {
        no_reference("src", name)?;
        if let Some(q) = query {
            no_reference("query", q)?;
        }
        let snap = self.state.lock().await;
        if snap.config.stream(name).is_none() {
            return Err(StoreError::NotFound {
                stream: name.to_string(),
            });
        }
        let entries = entries_of(&snap.config);
        let mut preload = snap.config.preload.clone();
        match query {
            Some(q) => preload.insert(name.to_string(), q.to_string()),
            None => preload.remove(name),
        };
        self.commit(snap, &entries, &preload).await
    }

    async fn commit<'a>(
        &'a self,
        mut snap: tokio::sync::MutexGuard<'a, Snapshot>,
        entries: &[Entry],
        preload: &BTreeMap<String, String>,
    ) -> Result<Committed<'a>, StoreError> {
        let old_names: Vec<String> = snap.config.streams.iter().map(|s| s.name.clone()).collect();
        let refs = references(&snap.text, &snap.config.layout, &self.env).map_err(|source| {
            StoreError::References {
                path: self.path.clone(),
                source,
            }
        })?;
        let text = rewrite(
            &snap.text,
            &snap.config.layout,
            &old_names,
            entries,
            preload,
            snap.config.preload != *preload,
            &refs,
        );
        if text == snap.text {
            let old = snap.config.clone();
            return Ok(Committed {
                new: old.clone(),
                old,
                guard: snap,
            });
        }
        let new = Config::parse(&self.path, &text, &self.env).map_err(|e: ConfigError| {
            StoreError::Invalid {
                param: "src",
                reason: e.message,
            }
        })?;
        let path = self.path.clone();
        let body = text.clone();
        tokio::task::spawn_blocking(move || write_atomically(&path, &body))
            .await
            .map_err(|e| StoreError::Write {
                path: self.path.clone(),
                source: io::Error::other(e),
            })??;
        tracing::info!(config = %self.path.display(), "config written");
        let old = std::mem::replace(&mut snap.config, new.clone());
        snap.text = text;
        Ok(Committed {
            old,
            new,
            guard: snap,
        })
    }

    /// Reads the file again (SIGHUP, `POST /api/restart`): an operator
    /// edited it. A file that cannot be read or does not parse changes
    /// nothing, and the error says where.
    pub async fn reload(&self) -> Result<Committed<'_>, StoreError> {
        let mut snap = self.state.lock().await;
        let path = self.path.clone();
        // Off the async workers, and bounded in time: a file on a hung
        // network mount must not hold the store (and the API) forever.
        let read = tokio::task::spawn_blocking(move || crate::config::read_config(&path));
        let text = match tokio::time::timeout(READ_TIMEOUT, read).await {
            Err(_) => Err(Unreadable::Io(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("no answer within {} s", READ_TIMEOUT.as_secs()),
            ))),
            Ok(Err(e)) => Err(Unreadable::Io(io::Error::other(e))),
            Ok(Ok(r)) => r.map_err(|e| e.reason),
        }
        .map_err(|reason| StoreError::Read {
            path: self.path.clone(),
            reason,
        })?;
        let new = Config::parse(&self.path, &text, &self.env).map_err(StoreError::Config)?;
        let old = std::mem::replace(&mut snap.config, new.clone());
        snap.text = text;
        Ok(Committed {
            old,
            new,
            guard: snap,
        })
    }
}

/// How long a reload waits for the file to be read.
const READ_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(5);

/// Refuses API input with `${`: the file it is written to expands it when
/// next loaded, which would read the server's environment. Control
/// characters have no place in a name or query either (they would reach
/// the log raw, e.g. `preload started query=…`).
fn no_reference(param: &'static str, v: &str) -> Result<(), StoreError> {
    if v.chars().any(char::is_control) {
        return Err(StoreError::Invalid {
            param,
            reason: format!("{param} contains control characters"),
        });
    }
    if v.contains("${") {
        return Err(StoreError::Invalid {
            param,
            reason: format!(
                "{param} `{v}` contains `${{`: environment variables are expanded only \
                 from the config file, not from the API"
            ),
        });
    }
    Ok(())
}

/// A section of the file whose `${VAR}` references could not be read
/// back unexpanded: writing it afresh would put their values in the file.
#[derive(Debug, thiserror::Error)]
#[error(
    "the `{section}:` section holds `${{VAR}}` references that could not be \
     kept as written; edit the file by hand"
)]
pub struct ReferenceError {
    pub section: &'static str,
}

/// Expanded value → the text the file wrote, for every name, source and
/// preload query in `streams:` and `preload:` that holds a `${VAR}`: what
/// [`rewrite`] writes instead of the value. The sections are read again
/// without expansion. One that cannot be (a `${` in a flow-style plain
/// scalar) is an error if it holds a reference: writing it afresh would
/// put the values in the file.
pub fn references(
    text: &str,
    layout: &Layout,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<BTreeMap<String, String>, ReferenceError> {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut refs = BTreeMap::new();
    for section in ["streams", "preload"] {
        let Some((start, end)) = section_range(&lines, layout, section) else {
            continue;
        };
        let body = lines[start..end].concat();
        if !body.contains("${") {
            continue;
        }
        let unreadable = || ReferenceError { section };
        let raw: serde_json::Value = serde_saphyr::from_str(&body).map_err(|_| unreadable())?;
        let mut scalars = Vec::new();
        collect_strings(&raw, &mut scalars);
        for r in scalars.into_iter().filter(|r| r.contains("${")) {
            let v = crate::config::expand_env("", &r, env).map_err(|_| unreadable())?;
            refs.insert(v, r);
        }
    }
    Ok(refs)
}

fn collect_strings(v: &serde_json::Value, out: &mut Vec<String>) {
    match v {
        serde_json::Value::String(s) => out.push(s.clone()),
        serde_json::Value::Array(a) => a.iter().for_each(|x| collect_strings(x, out)),
        serde_json::Value::Object(m) => {
            for (k, x) in m {
                out.push(k.clone());
                collect_strings(x, out);
            }
        }
        _ => {}
    }
}

/// `s` as the file wrote it, if it is the expansion of a `${VAR}` there.
fn as_written<'a>(s: &'a str, refs: &'a BTreeMap<String, String>) -> &'a str {
    refs.get(s).map_or(s, String::as_str)
}

/// One stream as the file will hold it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub name: String,
    pub sources: Vec<String>,
    /// Unchanged: copy its lines from the file as they are.
    pub keep: bool,
}

fn entries_of(cfg: &Config) -> Vec<Entry> {
    cfg.streams
        .iter()
        .map(|s: &StreamConfig| Entry {
            name: s.name.clone(),
            sources: s.sources.iter().map(|x| x.url.clone()).collect(),
            keep: true,
        })
        .collect()
}

/// Writes `text` to a temporary file beside `path` and renames it over
/// `path` (following a symlink to the real file), keeping its permissions.
/// A file with no write permission is left alone even for root: the
/// operator made it read-only on purpose.
fn write_atomically(path: &Path, text: &str) -> Result<(), StoreError> {
    use std::io::Write;
    let failed = |source| StoreError::Write {
        path: path.to_path_buf(),
        source,
    };
    let target = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_path_buf());
    let meta = std::fs::metadata(&target).map_err(failed)?;
    if meta.permissions().readonly() {
        return Err(StoreError::ReadOnly {
            path: path.to_path_buf(),
        });
    }
    let dir = target.parent().unwrap_or(Path::new("."));
    let name = target
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let tmp = dir.join(format!(".{name}.{}.tmp", std::process::id()));
    let result = (|| {
        let mut f = std::fs::File::create(&tmp)?;
        f.set_permissions(meta.permissions())?;
        f.write_all(text.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &target)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(failed(e));
    }
    Ok(())
}

/// A YAML key or scalar: plain when that reads back the same, else
/// double-quoted (JSON's quoting is valid YAML).
fn scalar(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'))
        && s.chars().any(|c| c.is_ascii_alphabetic())
        && !s.starts_with(['-', '.'])
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "nan" | "inf"
        );
    if plain {
        s.to_string()
    } else {
        serde_json::to_string(s).unwrap_or_default()
    }
}

fn stream_lines(e: &Entry, refs: &BTreeMap<String, String>) -> String {
    let name = scalar(as_written(&e.name, refs));
    let quoted = |src: &str| serde_json::to_string(as_written(src, refs)).unwrap_or_default();
    match e.sources.as_slice() {
        [] => format!("  {name}:\n"),
        [one] => format!("  {name}: {}\n", quoted(one)),
        many => {
            let mut s = format!("  {name}:\n");
            for src in many {
                s.push_str(&format!("    - {}\n", quoted(src)));
            }
            s
        }
    }
}

fn preload_block(preload: &BTreeMap<String, String>, refs: &BTreeMap<String, String>) -> String {
    let mut s = String::from("preload:\n");
    for (name, q) in preload {
        let name = scalar(as_written(name, refs));
        if q.is_empty() {
            s.push_str(&format!("  {name}:\n"));
        } else {
            s.push_str(&format!(
                "  {name}: {}\n",
                serde_json::to_string(as_written(q, refs)).unwrap_or_default()
            ));
        }
    }
    s
}

/// Whether a line ends a block: a top-level key (or document marker).
fn is_top_level(line: &str) -> bool {
    line.chars()
        .next()
        .is_some_and(|c| !c.is_whitespace() && c != '#')
}

/// The 0-based line range of top-level section `name`: its key line to the
/// line before the next section, without the comment and blank lines that
/// lead into the next section.
fn section_range(lines: &[&str], layout: &Layout, name: &str) -> Option<(usize, usize)> {
    let start = layout.sections.iter().find(|(k, _)| k == name)?.1 as usize;
    if start == 0 || start > lines.len() {
        return None;
    }
    let start = start - 1;
    let mut end = lines.len();
    for (i, l) in lines.iter().enumerate().skip(start + 1) {
        if is_top_level(l) {
            end = i;
            break;
        }
    }
    while end > start + 1 && {
        let l = lines[end - 1].trim_start();
        l.is_empty() || (l.starts_with('#') && lines[end - 1].starts_with('#'))
    } {
        end -= 1;
    }
    Some((start, end))
}

/// The new file text: `entries` as the `streams:` section, `preload` as
/// the `preload:` section (rewritten only if `preload_changed`), the rest
/// as it was. `old_names[i]` is the stream whose key is on
/// `layout.stream_lines[i]`. What is written afresh keeps its `${VAR}`
/// references (`refs`, from [`references`]).
pub fn rewrite(
    text: &str,
    layout: &Layout,
    old_names: &[String],
    entries: &[Entry],
    preload: &BTreeMap<String, String>,
    preload_changed: bool,
    refs: &BTreeMap<String, String>,
) -> String {
    let lines: Vec<&str> = text.split_inclusive('\n').collect();
    let mut replacements: Vec<(usize, usize, String)> = Vec::new();
    let mut appended = String::new();

    // streams:
    let unchanged = entries.len() == old_names.len()
        && entries
            .iter()
            .zip(old_names)
            .all(|(e, n)| e.keep && &e.name == n);
    if !unchanged {
        match section_range(&lines, layout, "streams") {
            Some((start, end)) => {
                let key_line = lines[start];
                let inline = key_line
                    .split_once(':')
                    .map(|(_, rest)| rest.split('#').next().unwrap_or("").trim())
                    .is_some_and(|r| !r.is_empty());
                // Each old stream's lines: from its key to the next one's.
                // A stream's comment lines just above its key go with it.
                let starts: Vec<usize> = layout
                    .stream_lines
                    .iter()
                    .map(|&l| {
                        let mut s = (l as usize).saturating_sub(1);
                        while s > start + 1 && {
                            let prev = lines[s - 1];
                            prev.trim_start().starts_with('#')
                                && prev.starts_with(char::is_whitespace)
                        } {
                            s -= 1;
                        }
                        s
                    })
                    .collect();
                let ranges_ok = !inline
                    && starts.len() == old_names.len()
                    && starts.windows(2).all(|w| w[0] < w[1])
                    && starts.iter().all(|&s| s > start && s < end);
                let mut block = String::new();
                if ranges_ok {
                    block.push_str(key_line);
                    if !key_line.ends_with('\n') {
                        block.push('\n');
                    }
                    // Comments between `streams:` and the first stream.
                    let first = starts.first().copied().unwrap_or(end);
                    block.extend(lines[start + 1..first].iter().copied());
                } else {
                    block.push_str("streams:\n");
                }
                for e in entries {
                    let old = old_names.iter().position(|n| n == &e.name);
                    match old {
                        Some(i) if e.keep && ranges_ok => {
                            let to = starts.get(i + 1).copied().unwrap_or(end);
                            for l in &lines[starts[i]..to] {
                                block.push_str(l);
                            }
                            if !block.ends_with('\n') {
                                block.push('\n');
                            }
                        }
                        _ => block.push_str(&stream_lines(e, refs)),
                    }
                }
                replacements.push((start, end, block));
            }
            None => {
                appended.push_str("streams:\n");
                for e in entries {
                    appended.push_str(&stream_lines(e, refs));
                }
            }
        }
    }

    // preload:
    if preload_changed {
        let block = if preload.is_empty() {
            String::new()
        } else {
            preload_block(preload, refs)
        };
        match section_range(&lines, layout, "preload") {
            Some((start, end)) => replacements.push((start, end, block)),
            None => appended.push_str(&block),
        }
    }

    replacements.sort_by_key(|r| std::cmp::Reverse(r.0));
    let mut out: Vec<String> = lines.iter().map(|l| l.to_string()).collect();
    for (start, end, block) in replacements {
        out.splice(start..end, std::iter::once(block));
    }
    let mut text = out.concat();
    if !appended.is_empty() {
        if !text.is_empty() && !text.ends_with('\n') {
            text.push('\n');
        }
        text.push_str(&appended);
    }
    text
}

#[cfg(test)]
mod tests;
