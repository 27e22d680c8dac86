//! `GET /api/metrics` from the real binary, read by Prometheus's own Python
//! parser (prometheus_client, which scripts/test installs in target/pydeps).

mod common;

use std::collections::HashMap;
use std::process::Command;
use std::time::Duration;

use common::*;

/// Prints the parsed families as JSON: name, type, samples.
const PARSE: &str = r#"
import json, sys
from prometheus_client.parser import text_string_to_metric_families
with open(sys.argv[1], encoding="utf-8") as f:
    text = f.read()
out = []
for fam in text_string_to_metric_families(text):
    out.append({
        "name": fam.name,
        "type": fam.type,
        "help": fam.documentation,
        "samples": [{"name": s.name, "labels": s.labels, "value": s.value} for s in fam.samples],
    })
print(json.dumps(out))
"#;

struct Sample {
    name: String,
    labels: HashMap<String, String>,
    value: f64,
}

struct Scrape {
    text: String,
    /// Family name (counters without `_total`, as the parser names them)
    /// to type.
    types: HashMap<String, String>,
    samples: Vec<Sample>,
}

impl Scrape {
    /// The value of the sample `name{labels}` (exactly those labels).
    fn get(&self, name: &str, labels: &[(&str, &str)]) -> Option<f64> {
        self.samples
            .iter()
            .find(|s| {
                s.name == name
                    && s.labels.len() == labels.len()
                    && labels
                        .iter()
                        .all(|(k, v)| s.labels.get(*k).map(String::as_str) == Some(*v))
            })
            .map(|s| s.value)
    }

    fn value(&self, name: &str, labels: &[(&str, &str)]) -> f64 {
        self.get(name, labels)
            .unwrap_or_else(|| panic!("no {name}{labels:?} in the scrape:\n{}", self.text))
    }
}

fn pydeps() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("target/pydeps")
}

/// Scrapes `/api/metrics` and parses it with prometheus_client.
fn scrape(srv: &Server) -> Scrape {
    let (status, text) = srv.try_get("/api/metrics").unwrap();
    assert_eq!(status, 200, "{text}");
    let file = srv.dir.path().join("scrape.txt");
    std::fs::write(&file, &text).unwrap();
    let (o, _) = run_with_timeout(
        Command::new("python3")
            .env("PYTHONPATH", pydeps())
            .arg("-c")
            .arg(PARSE)
            .arg(&file),
        Duration::from_secs(30),
    );
    assert!(
        o.status.success(),
        "Prometheus's parser rejected the scrape: {}\n{text}",
        String::from_utf8_lossy(&o.stderr)
    );
    let families: Vec<serde_json::Value> = serde_json::from_slice(&o.stdout).unwrap();
    let mut types = HashMap::new();
    let mut samples = Vec::new();
    for f in &families {
        let name = f["name"].as_str().unwrap().to_string();
        let typ = f["type"].as_str().unwrap().to_string();
        // The parser is lax: a sample outside its family's block comes out
        // as an untyped family of its own, a family split in two twice.
        assert_ne!(typ, "untyped", "{name} has no TYPE of its own:\n{text}");
        assert!(
            !f["help"].as_str().unwrap_or("").is_empty(),
            "{name} has no HELP"
        );
        assert!(
            types.insert(name.clone(), typ).is_none(),
            "family {name} appears twice:\n{text}"
        );
        for s in f["samples"].as_array().unwrap() {
            samples.push(Sample {
                name: s["name"].as_str().unwrap().to_string(),
                labels: serde_json::from_value(s["labels"].clone()).unwrap(),
                value: s["value"].as_f64().unwrap(),
            });
        }
    }
    // Exactly one HELP and one TYPE line per family.
    for kind in ["# HELP ", "# TYPE "] {
        let mut seen = std::collections::HashSet::new();
        for l in text.lines().filter_map(|l| l.strip_prefix(kind)) {
            let name = l.split(' ').next().unwrap();
            assert!(seen.insert(name), "{kind}{name} twice");
        }
    }
    Scrape {
        text,
        types,
        samples,
    }
}

const BYTES_IN: &str = "streamvisor_stream_bytes_in_total";
const BYTES_OUT: &str = "streamvisor_stream_bytes_out_total";
const FRAMES_IN: &str = "streamvisor_stream_frames_in_total";
const VIEWERS: &str = "streamvisor_stream_viewers";
const STATE: &str = "streamvisor_stream_state";
const UPTIME: &str = "streamvisor_stream_producer_uptime_seconds";
const RUNNING: &str = "streamvisor_children_running";

#[test]
fn metrics_parse_and_move_while_a_reader_watches() {
    let _p = heavy();
    assert!(
        pydeps().join("prometheus_client").exists(),
        "prometheus_client is not installed in {} (scripts/test installs it)",
        pydeps().display()
    );
    // A name with a quote, a backslash, a %XX escape and a dot: the label
    // must come back from the parser as it is.
    let weird = r#"we"ird\cam%2F.x"#;
    let srv = Server::start(
        &format!(
            "  demo: \"{}\"\n  \"we\\\"ird\\\\cam%2F.x\": \"exec:true\"\n",
            demo_source(25)
        ),
        "",
    );
    let demo = ("stream", "demo");

    // Idle: every family is there, with its type.
    let idle = scrape(&srv);
    for (family, typ) in [
        ("streamvisor_stream_state", "gauge"),
        ("streamvisor_stream_viewers", "gauge"),
        ("streamvisor_stream_bytes_in", "counter"),
        ("streamvisor_stream_bytes_out", "counter"),
        ("streamvisor_stream_frames_in", "counter"),
        ("streamvisor_stream_drops", "counter"),
        ("streamvisor_stream_producer_restarts", "counter"),
        ("streamvisor_stream_producer_uptime_seconds", "gauge"),
        ("streamvisor_children_running", "gauge"),
        ("streamvisor_children_spawned", "counter"),
        ("streamvisor_children_sigkill", "counter"),
    ] {
        assert_eq!(
            idle.types.get(family).map(String::as_str),
            Some(typ),
            "{family}:\n{}",
            idle.text
        );
    }
    for name in ["demo", weird] {
        assert_eq!(
            idle.value(STATE, &[("stream", name), ("state", "idle")]),
            1.0
        );
        assert_eq!(
            idle.value(STATE, &[("stream", name), ("state", "running")]),
            0.0
        );
        assert_eq!(idle.value(FRAMES_IN, &[("stream", name)]), 0.0);
    }
    assert_eq!(idle.value(UPTIME, &[demo, ("source", "0")]), 0.0);
    assert_eq!(
        idle.value(
            "streamvisor_stream_producer_restarts_total",
            &[demo, ("source", "0")]
        ),
        0.0
    );
    let children_before = idle.value(RUNNING, &[]);

    // A reader watches.
    let (status, s) = open_flv(srv.port, "demo");
    assert_eq!(status, 200);
    let reader = Drain::new(s);
    srv.wait_for("FLV bytes", Duration::from_secs(20), || {
        reader.bytes() > 20_000
    });
    let a = scrape(&srv);
    std::thread::sleep(Duration::from_millis(1500));
    let read = reader.bytes();
    let b = scrape(&srv);
    for (m, labels) in [
        (BYTES_IN, vec![demo]),
        (FRAMES_IN, vec![demo]),
        (BYTES_OUT, vec![demo, ("protocol", "http-flv")]),
    ] {
        let (x, y) = (a.value(m, &labels), b.value(m, &labels));
        assert!(x > 0.0 && y > x, "{m}{labels:?} did not move: {x} then {y}");
    }
    // The server wrote at least what the reader had read before it asked,
    // less HTTP's chunked framing (which the reader counts and the server,
    // counting FLV bytes, does not).
    let out = b.value(BYTES_OUT, &[demo, ("protocol", "http-flv")]);
    assert!(out >= read as f64 * 0.9, "bytes out {out}, {read} read");
    assert_eq!(
        b.value(VIEWERS, &[demo, ("protocol", "http-flv")]),
        1.0,
        "{}",
        b.text
    );
    assert_eq!(b.value(STATE, &[demo, ("state", "running")]), 1.0);
    let up = [&a, &b].map(|s| s.value(UPTIME, &[demo, ("source", "0")]));
    assert!(up[0] > 0.0 && up[1] > up[0], "uptime {up:?}");
    let running = b.value(RUNNING, &[]);
    assert!(running >= 1.0 && running > children_before, "{running}");
    assert!(b.value("streamvisor_children_spawned_total", &[]) >= 1.0);
    assert_eq!(b.value(STATE, &[("stream", weird), ("state", "idle")]), 1.0);

    // The reader leaves: the stream stops and its producer is reaped.
    reader.close();
    srv.wait_for("the demo stream to stop", Duration::from_secs(15), || {
        let (_, v) = srv.get_json("/api/streams?src=demo");
        v["state"] == "idle"
    });
    let c = scrape(&srv);
    assert_eq!(c.value(VIEWERS, &[demo, ("protocol", "http-flv")]), 0.0);
    assert_eq!(c.value(STATE, &[demo, ("state", "idle")]), 1.0);
    assert_eq!(c.value(UPTIME, &[demo, ("source", "0")]), 0.0);
    assert_eq!(
        c.value(RUNNING, &[]),
        children_before,
        "children running after the stop:\n{}",
        c.text
    );
    // Counters outlive the run.
    for (m, labels) in [
        (BYTES_IN, vec![demo]),
        (FRAMES_IN, vec![demo]),
        (BYTES_OUT, vec![demo, ("protocol", "http-flv")]),
    ] {
        assert!(c.value(m, &labels) >= b.value(m, &labels), "{m} went back");
    }
}

const DELAY: &str = "streamvisor_stream_delivery_delay_seconds";

/// Issue 17: each output's delivery delay (the hub taking a frame → the
/// output handing it to the viewer's socket) is a Prometheus histogram
/// with millisecond buckets, fed while a viewer watches.
#[test]
fn delivery_delay_is_a_histogram_per_output() {
    let _p = heavy();
    let srv = Server::start(&format!("  demo: \"{}\"\n", demo_source(25)), "");
    let (status, s) = open_flv(srv.port, "demo");
    assert_eq!(status, 200);
    let reader = Drain::new(s);
    srv.wait_for("FLV bytes", Duration::from_secs(20), || {
        reader.bytes() > 20_000
    });
    // Live frames after the join's GOP snapshot (which is not counted).
    std::thread::sleep(Duration::from_millis(1500));
    let m = scrape(&srv);
    assert_eq!(
        m.types.get(DELAY).map(String::as_str),
        Some("histogram"),
        "{}",
        m.text
    );
    let flv = [("stream", "demo"), ("protocol", "http-flv")];
    let count = m.value(&format!("{DELAY}_count"), &flv);
    assert!(count >= 10.0, "{count} frames delivered:\n{}", m.text);
    let mut last = 0.0;
    for le in [
        "0.0005", "0.001", "0.002", "0.005", "0.01", "0.02", "0.05", "0.1", "0.2", "0.5", "1",
        "+Inf",
    ] {
        let n = m.value(&format!("{DELAY}_bucket"), &[flv[0], flv[1], ("le", le)]);
        assert!(
            n >= last,
            "bucket le={le} below the one before:\n{}",
            m.text
        );
        last = n;
    }
    assert_eq!(last, count, "+Inf is not the count");
    // A relay adds milliseconds: most frames go out within 100 ms even on
    // a busy test machine, and the mean is under that.
    let fast = m.value(&format!("{DELAY}_bucket"), &[flv[0], flv[1], ("le", "0.1")]);
    assert!(fast >= count * 0.9, "{fast} of {count} within 100 ms");
    let sum = m.value(&format!("{DELAY}_sum"), &flv);
    assert!(
        sum > 0.0 && sum / count < 0.1,
        "mean delay {} s",
        sum / count
    );
    reader.close();
}
