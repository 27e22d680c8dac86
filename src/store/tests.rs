//! The config file as the API edits it: untouched lines kept as written,
//! references and variables kept, bad edits refused, failed writes named,
//! bounded reloads, quoting.

use super::*;

fn parse(text: &str) -> Config {
    Config::parse(Path::new("s.yaml"), text, &|_| Some("secret".into())).unwrap()
}

fn edit(text: &str, f: impl FnOnce(&mut Vec<Entry>, &mut BTreeMap<String, String>)) -> String {
    let cfg = parse(text);
    let names: Vec<String> = cfg.streams.iter().map(|s| s.name.clone()).collect();
    let mut entries = entries_of(&cfg);
    let mut preload = cfg.preload.clone();
    f(&mut entries, &mut preload);
    let changed = preload != cfg.preload;
    let refs = references(text, &cfg.layout, &|_| Some("secret".into())).unwrap();
    let out = rewrite(
        text,
        &cfg.layout,
        &names,
        &entries,
        &preload,
        changed,
        &refs,
    );
    parse(&out); // always valid
    out
}

const FILE: &str = "# my cameras\napi:\n  listen: \":1984\" # the API\n\nstreams:\n  # the garden\n  garden: rtsp://admin:${PASS}@10.0.0.2/s # main\n  door:\n    - rtsp://10.0.0.3/s\n    - \"ffmpeg:door#audio=aac\"\n\n# logging\nlog:\n  level: info\n";

#[test]
fn a_new_stream_keeps_every_other_line_as_written() {
    let out = edit(FILE, |e, _| {
        e.push(Entry {
            name: "cam3".into(),
            sources: vec!["rtsp://10.0.0.4/s".into()],
            keep: false,
        })
    });
    assert_eq!(
        out,
        FILE.replace(
            "    - \"ffmpeg:door#audio=aac\"\n",
            "    - \"ffmpeg:door#audio=aac\"\n  cam3: \"rtsp://10.0.0.4/s\"\n"
        )
    );
}

#[test]
fn a_changed_stream_is_rewritten_and_a_deleted_one_removed() {
    let out = edit(FILE, |e, _| {
        e[1].sources = vec!["rtsp://10.0.0.9/s".into(), "ffmpeg:door#audio=aac".into()];
        e[1].keep = false;
        e.remove(0);
    });
    assert!(
        out.contains("# my cameras\napi:\n  listen: \":1984\" # the API\n"),
        "{out}"
    );
    assert!(!out.contains("garden"), "{out}");
    assert!(
        out.contains("  door:\n    - \"rtsp://10.0.0.9/s\"\n    - \"ffmpeg:door#audio=aac\"\n"),
        "{out}"
    );
    assert!(out.ends_with("\n# logging\nlog:\n  level: info\n"), "{out}");
    let cfg = parse(&out);
    assert_eq!(cfg.streams.len(), 1);
}

#[test]
fn variables_stay_unexpanded_in_untouched_streams() {
    let out = edit(FILE, |e, _| {
        e[1].sources = vec![];
        e[1].keep = false;
    });
    assert!(out.contains("${PASS}"), "{out}");
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn a_changed_stream_keeps_its_references() {
    // A client that echoes /api/streams' url sends the value back.
    let out = edit(FILE, |e, _| {
        e[0].sources = vec![
            "rtsp://admin:secret@10.0.0.2/s".into(),
            "rtsp://10.0.0.7/s".into(),
        ];
        e[0].keep = false;
    });
    assert!(
        out.contains("  garden:\n    - \"rtsp://admin:${PASS}@10.0.0.2/s\"\n"),
        "{out}"
    );
    assert!(!out.contains("secret"), "{out}");
}

#[test]
fn a_flow_style_section_written_afresh_keeps_its_references() {
    let text = "streams: {a: \"rtsp://u:${PASS}@h/s\", \"${NAME}\": rtsp://h/t}\n";
    let out = edit(text, |e, _| {
        e.push(Entry {
            name: "b".into(),
            sources: vec![],
            keep: false,
        })
    });
    assert_eq!(
        out,
        "streams:\n  a: \"rtsp://u:${PASS}@h/s\"\n  \"${NAME}\": \"rtsp://h/t\"\n  b:\n"
    );
}

#[test]
fn references_that_cannot_be_read_back_refuse_the_write() {
    // A `{` in a plain flow scalar parses once expanded, not before.
    let text = "streams: {a: rtsp://u:${PASS}@h/s}\n";
    let cfg = parse(text);
    let e = references(text, &cfg.layout, &|_| Some("secret".into())).unwrap_err();
    assert!(e.to_string().contains("streams"), "{e}");
    // Without a reference there is nothing to keep.
    let text = "streams: {a: rtsp://u:p@h/s}\n";
    assert!(references(text, &parse(text).layout, &|_| None)
        .unwrap()
        .is_empty());
}

#[test]
fn api_input_with_a_reference_is_refused() {
    let e = no_reference("src", "rtsp://h/${HOME}").unwrap_err();
    assert!(
        matches!(e, StoreError::Invalid { param: "src", .. }),
        "{e:?}"
    );
    assert!(no_reference("src", "rtsp://h/$HOME{x}").is_ok());
    assert!(no_reference("query", "video\r\nINFO forged").is_err());
}

#[test]
fn a_failed_write_names_the_file_and_keeps_the_io_error() {
    let dir = tempfile::tempdir().unwrap();
    let gone = dir.path().join("gone").join("streams.yaml");
    match write_atomically(&gone, "streams: {}\n") {
        Err(StoreError::Write { path, source }) => {
            assert_eq!(path, gone);
            assert_eq!(source.kind(), io::ErrorKind::NotFound);
        }
        other => panic!("{other:?}"),
    }
    let ro = dir.path().join("ro.yaml");
    std::fs::write(&ro, "streams: {}\n").unwrap();
    let mut perm = std::fs::metadata(&ro).unwrap().permissions();
    perm.set_readonly(true);
    std::fs::set_permissions(&ro, perm).unwrap();
    let e = write_atomically(&ro, "streams:\n  a:\n").unwrap_err();
    assert!(
        matches!(&e, StoreError::ReadOnly { path } if *path == ro),
        "{e:?}"
    );
    assert_eq!(
        e.to_string(),
        format!("cannot write {}: the file is read-only", ro.display())
    );
}

#[test]
fn a_reload_reads_only_a_bounded_regular_file() {
    use crate::config::{read_config, MAX_CONFIG};
    let dir = tempfile::tempdir().unwrap();
    let fifo = dir.path().join("fifo.yaml");
    assert!(std::process::Command::new("mkfifo")
        .arg(&fifo)
        .status()
        .unwrap()
        .success());
    // Returns at once, with no writer on the FIFO.
    let e = read_config(&fifo).unwrap_err();
    assert!(e.to_string().contains("not a regular file"), "{e}");
    assert!(read_config(dir.path())
        .unwrap_err()
        .to_string()
        .contains("not a regular file"));
    assert!(read_config(Path::new("/dev/zero"))
        .unwrap_err()
        .to_string()
        .contains("not a regular file"));
    let big = dir.path().join("big.yaml");
    std::fs::write(&big, vec![b'#'; MAX_CONFIG as usize + 1]).unwrap();
    assert!(read_config(&big).unwrap_err().to_string().contains("bytes"));
    let ok = dir.path().join("ok.yaml");
    std::fs::write(&ok, "streams: {}\n").unwrap();
    assert_eq!(read_config(&ok).unwrap(), "streams: {}\n");
}

#[test]
fn preload_is_added_changed_and_removed() {
    let out = edit(FILE, |_, p| {
        p.insert("door".into(), "video&audio".into());
    });
    assert!(
        out.ends_with("preload:\n  door: \"video&audio\"\n"),
        "{out}"
    );
    assert_eq!(
        parse(&out).preload.get("door").map(String::as_str),
        Some("video&audio")
    );
    let out2 = edit(&out, |_, p| {
        p.clear();
    });
    assert_eq!(out2, FILE);
}

#[test]
fn flow_style_and_missing_sections() {
    let out = edit("streams: {a: rtsp://x/y}\n", |e, _| {
        e.push(Entry {
            name: "b".into(),
            sources: vec![],
            keep: false,
        })
    });
    assert_eq!(out, "streams:\n  a: \"rtsp://x/y\"\n  b:\n");
    let out = edit("log: {level: info}", |e, _| {
        e.push(Entry {
            name: "1".into(),
            sources: vec!["rtsp://x/y".into()],
            keep: false,
        })
    });
    assert_eq!(
        out,
        "log: {level: info}\nstreams:\n  \"1\": \"rtsp://x/y\"\n"
    );
}

#[test]
fn awkward_names_and_sources_are_quoted() {
    for name in ["true", "no", "-x", "a b", "ü"] {
        let out = edit(FILE, |e, _| {
            e.push(Entry {
                name: name.into(),
                sources: vec!["rtsp://h/p?a=1&b=#x\"y".into()],
                keep: false,
            })
        });
        let cfg = parse(&out);
        let s = cfg.stream(name).unwrap_or_else(|| panic!("{name}: {out}"));
        assert_eq!(s.sources[0].url, "rtsp://h/p?a=1&b=#x\"y");
    }
}
