//! The dependency rules between our modules (issue 18; docs/ARCHITECTURE.md
//! "The rules"), checked on the source: every `crate::…` path outside a
//! comment is an edge from the module its file is in to the module the
//! path names. An edge the table below does not allow, a module the table
//! does not know, or an import cycle fails the test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The outputs: each turns the hub's deliveries into one protocol, and
/// none may reach into another (what two of them share goes to `net`,
/// `media` or the hub). `http_flv` (HTTP-FLV play and publish) is one,
/// though only the API's router mounts it.
const OUTPUTS: &[&str] = &[
    "hls", "http_flv", "mp4", "rtmp", "rtsp", "snapshot", "webrtc",
];

/// What an output may import: the hub it reads, the pure media code, the
/// socket helpers, the output pump, config, and the shared services
/// (credentials, metrics types, log cleaning). `supervisor`: the JPEG snapshot runs an ffmpeg
/// decoder as a child, through the same supervisor as the producers.
const OUTPUT_MAY_USE: &[&str] = &[
    "auth",
    "config",
    "hub",
    "media",
    "metrics",
    "net",
    "pump",
    "redact",
    "supervisor",
];

/// Every other module and what it may import. `None`: the front (the HTTP
/// router and the wiring), which mounts the outputs and may import any
/// module, cycles aside.
fn allowed(module: &str) -> Option<Option<&'static [&'static str]>> {
    Some(match module {
        // Pure: parsers, muxers, codecs. Imports nothing of ours.
        "media" => Some(&[]),
        // Leaves that everything may use.
        "metrics" | "net" | "redact" => Some(&[]),
        // Runs children; knows no media, no streams.
        "supervisor" => Some(&["redact"]),
        "config" => Some(&["media", "net", "redact"]),
        "auth" => Some(&["config", "redact"]),
        // The source grammar (what a `streams:` entry runs).
        "source" => Some(&["config", "media", "redact", "supervisor"]),
        "hub" => Some(&[
            "config",
            "media",
            "metrics",
            "redact",
            "source",
            "supervisor",
        ]),
        // The one output pump: a viewer's batches to its socket.
        "pump" => Some(&["hub", "net"]),
        // The config file's editor (the API's stream edits).
        "store" => Some(&["config", "hub", "redact"]),
        m if OUTPUTS.contains(&m) => Some(OUTPUT_MAY_USE),
        "api" | "web" | "preload" => None,
        _ => return None,
    })
}

/// `crate::x` paths that are not modules.
const NOT_MODULES: &[&str] = &["replay_fuzz_corpus"];

/// The module a file under `src/` belongs to (`rtsp/conn.rs` → `rtsp`);
/// `None` for the crate roots.
fn module_of(rel: &str) -> Option<String> {
    let first = rel.split('/').next()?;
    let m = first.strip_suffix(".rs").unwrap_or(first);
    (m != "lib" && m != "main").then(|| m.to_string())
}

/// The modules `text` names through `crate::…`, comments aside.
fn names(text: &str) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    for line in text.lines() {
        let t = line.trim_start();
        if t.starts_with("//") {
            continue;
        }
        let mut rest = t;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            if let Some(group) = rest.strip_prefix('{') {
                // `use crate::{a::X, b};`
                let end = group.find('}').unwrap_or(group.len());
                for part in group[..end].split(',') {
                    let head = part.trim().split("::").next().unwrap_or("");
                    if !head.is_empty() {
                        out.insert(head.to_string());
                    }
                }
                continue;
            }
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                .unwrap_or(rest.len());
            if end > 0 {
                out.insert(rest[..end].to_string());
            }
        }
    }
    out
}

type Edges = BTreeMap<String, BTreeSet<String>>;

fn edges(files: &[(String, String)]) -> Edges {
    let mut e = Edges::new();
    for (rel, text) in files {
        let Some(m) = module_of(rel) else { continue };
        let to = e.entry(m.clone()).or_default();
        for n in names(text) {
            if n != m && !NOT_MODULES.contains(&n.as_str()) {
                to.insert(n);
            }
        }
    }
    e
}

/// Every broken rule, one line each.
fn violations(e: &Edges) -> Vec<String> {
    let mut out = Vec::new();
    for (from, tos) in e {
        let rule = match allowed(from) {
            None => {
                out.push(format!(
                    "module `{from}` is not in tests/layout.rs's table: say what it may import"
                ));
                continue;
            }
            Some(r) => r,
        };
        for to in tos {
            if !e.contains_key(to) {
                continue; // an external path, such as a macro
            }
            if let Some(ok) = rule {
                if !ok.contains(&to.as_str()) {
                    out.push(format!("`{from}` imports `{to}`, which it may not"));
                }
            }
        }
    }
    // Cycles: a depth-first walk from every module.
    fn walk(
        e: &Edges,
        at: &str,
        path: &mut Vec<String>,
        done: &mut BTreeSet<String>,
        out: &mut Vec<String>,
    ) {
        if let Some(i) = path.iter().position(|p| p == at) {
            let mut cycle = path[i..].to_vec();
            cycle.push(at.to_string());
            out.push(format!("import cycle: {}", cycle.join(" -> ")));
            return;
        }
        if !done.insert(at.to_string()) {
            return;
        }
        path.push(at.to_string());
        for to in e.get(at).into_iter().flatten() {
            walk(e, to, path, done, out);
        }
        path.pop();
    }
    let mut done = BTreeSet::new();
    for m in e.keys() {
        walk(e, m, &mut Vec::new(), &mut done, &mut out);
    }
    out
}

fn read_src(dir: &Path, root: &Path, out: &mut Vec<(String, String)>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            read_src(&p, root, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            let rel = p.strip_prefix(root).unwrap().to_string_lossy().into_owned();
            out.push((rel, std::fs::read_to_string(&p).unwrap()));
        }
    }
}

#[test]
fn our_modules_import_only_what_the_rules_allow() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    read_src(&root, &root, &mut files);
    let e = edges(&files);
    // The walk saw the tree: the hub and an output, with their edges.
    assert!(e.get("rtsp").is_some_and(|t| t.contains("hub")), "{e:?}");
    let bad = violations(&e);
    assert!(bad.is_empty(), "{}", bad.join("\n"));
}

#[test]
fn the_check_finds_a_forbidden_edge_an_unknown_module_and_a_cycle() {
    let f = |rel: &str, text: &str| (rel.to_string(), text.to_string());
    let files = vec![
        f("hub/mod.rs", "use crate::media::Frame;\n"),
        f("media/mod.rs", "// crate::hub in a comment is no edge\n"),
        // An output reaching into another, inside a `use crate::{…}`.
        f(
            "rtmp/mod.rs",
            "use crate::{hub::Viewer, rtsp::write};\n/// [`crate::api`]\n",
        ),
        f("rtsp/conn.rs", "let x = crate::hub::X;\n"),
        f("gadget.rs", "use crate::hub;\n"),
        // supervisor -> config -> supervisor.
        f("supervisor.rs", "use crate::config::Config;\n"),
        f("config.rs", "crate::supervisor::spawn();\n"),
    ];
    let bad = violations(&edges(&files));
    let has = |s: &str| bad.iter().any(|b| b.contains(s));
    assert!(has("`rtmp` imports `rtsp`"), "{bad:?}");
    assert!(!has("`rtmp` imports `hub`") && !has("api"), "{bad:?}");
    assert!(!has("`media` imports"), "a comment is no edge: {bad:?}");
    assert!(has("module `gadget` is not in"), "{bad:?}");
    assert!(has("`supervisor` imports `config`"), "{bad:?}");
    assert!(has("import cycle"), "{bad:?}");
}
