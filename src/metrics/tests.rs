//! The exposition text: every family once, escaped labels and names,
//! delay buckets, one entry per output.

use super::*;
use std::collections::HashSet;

#[test]
fn label_values_are_escaped() {
    assert_eq!(escape_label("cam1"), "cam1");
    assert_eq!(escape_label("a%2Fb.c"), "a%2Fb.c");
    assert_eq!(escape_label(r#"a"b"#), r#"a\"b"#);
    assert_eq!(escape_label(r"a\b"), r"a\\b");
    assert_eq!(escape_label("a\nb"), r"a\nb");
    assert_eq!(escape_label("\\\"\n"), r#"\\\"\n"#);
    assert_eq!(escape_help("x\\y\nz \"q\""), r#"x\\y\nz "q""#);
}

/// Checks the text format's structure: every sample's family was
/// introduced by one `# HELP` and one `# TYPE`, families are not split,
/// counters end in `_total`, values parse. Returns the samples as
/// (name, labels text, value).
fn check(text: &str) -> Vec<(String, String, f64)> {
    let mut declared = HashSet::new();
    let mut current: Option<(String, String)> = None;
    let mut helped = HashSet::new();
    let mut samples = Vec::new();
    assert!(text.ends_with('\n'), "the last line ends with a newline");
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let name = rest.split(' ').next().unwrap().to_string();
            assert!(helped.insert(name.clone()), "HELP twice for {name}");
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            assert!(helped.contains(name), "TYPE before HELP for {name}");
            assert!(declared.insert(name.to_string()), "TYPE twice for {name}");
            assert!(matches!(kind, "counter" | "gauge" | "histogram"), "{line}");
            if kind == "counter" {
                assert!(name.ends_with("_total"), "counter {name}");
            } else {
                assert!(!name.ends_with("_total"), "gauge {name}");
            }
            current = Some((name.to_string(), kind.to_string()));
        } else {
            let (series, value) = line.rsplit_once(' ').unwrap();
            let (name, labels) = match series.split_once('{') {
                Some((n, l)) => (n, l.strip_suffix('}').expect("labels close")),
                None => (series, ""),
            };
            let (family, kind) = current.as_ref().expect("a sample before any TYPE");
            let base = match kind.as_str() {
                "histogram" => ["_bucket", "_sum", "_count"]
                    .iter()
                    .find_map(|s| name.strip_suffix(s))
                    .unwrap_or(name),
                _ => name,
            };
            assert_eq!(base, family, "sample outside its family: {line}");
            let value: f64 = value.parse().expect(line);
            samples.push((name.to_string(), labels.to_string(), value));
        }
    }
    samples
}

fn value(samples: &[(String, String, f64)], name: &str, labels: &str) -> Option<f64> {
    samples
        .iter()
        .find(|(n, l, _)| n == name && l == labels)
        .map(|s| s.2)
}

#[tokio::test(start_paused = true)]
async fn renders_every_family_once_with_escaped_names() {
    let a = StreamMetrics::new(3); // two sources and the publisher
    let b = StreamMetrics::new(1);
    a.set_state(2);
    a.frame_in(1000);
    a.frame_in(500);
    a.restarted(1);
    a.restarted(1);
    a.producer_up(0);
    let flv = a.output("http-flv");
    let w = Watching::new(flv.clone());
    let (bytes, drops) = a.viewer_counters(&flv);
    bytes.fetch_add(4096, Ordering::Relaxed);
    drops.fetch_add(2, Ordering::Relaxed);
    let _internal = Watching::new(a.output(INTERNAL));
    tokio::time::advance(std::time::Duration::from_millis(2500)).await;

    let weird = "we\"ird\\cam\n%2F.x";
    let text = render_text(
        &[("cam.1%20a", &a), (weird, &b)],
        Process {
            children_running: 3,
            children_spawned: 7,
            children_sigkill: 1,
        },
    );
    let s = check(&text);
    let a_ = r#"stream="cam.1%20a""#;
    let b_ = r#"stream="we\"ird\\cam\n%2F.x""#;
    let v = |name: &str, labels: String| {
        value(&s, name, &labels).unwrap_or_else(|| panic!("no {name}{{{labels}}} in\n{text}"))
    };
    assert_eq!(
        v(
            "streamvisor_stream_state",
            format!(r#"{a_},state="running""#)
        ),
        1.0
    );
    assert_eq!(
        v("streamvisor_stream_state", format!(r#"{a_},state="idle""#)),
        0.0
    );
    assert_eq!(
        v("streamvisor_stream_state", format!(r#"{b_},state="idle""#)),
        1.0
    );
    let states: f64 = s
        .iter()
        .filter(|(n, l, _)| n == "streamvisor_stream_state" && l.starts_with(a_))
        .map(|x| x.2)
        .sum();
    assert_eq!(states, 1.0, "exactly one current state");
    assert_eq!(
        v(
            "streamvisor_stream_viewers",
            format!(r#"{a_},protocol="http-flv""#)
        ),
        1.0
    );
    assert_eq!(
        v(
            "streamvisor_stream_viewers",
            format!(r#"{a_},protocol="internal""#)
        ),
        1.0
    );
    assert_eq!(
        v(
            "streamvisor_stream_bytes_out_total",
            format!(r#"{a_},protocol="http-flv""#)
        ),
        4096.0
    );
    assert_eq!(
        bytes.load(Ordering::Relaxed),
        4096,
        "the viewer's own count"
    );
    assert_eq!(
        v("streamvisor_stream_bytes_in_total", a_.to_string()),
        1500.0
    );
    assert_eq!(v("streamvisor_stream_frames_in_total", a_.to_string()), 2.0);
    assert_eq!(v("streamvisor_stream_drops_total", a_.to_string()), 2.0);
    assert_eq!(
        v(
            "streamvisor_stream_producer_restarts_total",
            format!(r#"{a_},source="1""#)
        ),
        2.0
    );
    assert_eq!(
        v(
            "streamvisor_stream_producer_uptime_seconds",
            format!(r#"{a_},source="0""#)
        ),
        2.5
    );
    assert_eq!(
        v(
            "streamvisor_stream_producer_uptime_seconds",
            format!(r#"{a_},source="publisher""#)
        ),
        0.0
    );
    // A publish-only stream has no source to restart, only a publisher.
    assert!(!text.contains(&format!(
        r#"streamvisor_stream_producer_restarts_total{{{b_}"#
    )));
    assert_eq!(
        v(
            "streamvisor_stream_producer_uptime_seconds",
            format!(r#"{b_},source="publisher""#)
        ),
        0.0
    );
    assert_eq!(v("streamvisor_children_running", String::new()), 3.0);
    assert_eq!(v("streamvisor_children_spawned_total", String::new()), 7.0);
    assert_eq!(v("streamvisor_children_sigkill_total", String::new()), 1.0);
    assert!(!text.contains("cam\n%2F"), "a raw newline in a label");

    drop(w);
    a.producer_down(0);
    let s = check(&render_text(&[("cam.1%20a", &a)], Process::default()));
    assert_eq!(
        value(
            &s,
            "streamvisor_stream_viewers",
            &format!(r#"{a_},protocol="http-flv""#)
        ),
        Some(0.0)
    );
    assert_eq!(
        value(
            &s,
            "streamvisor_stream_producer_uptime_seconds",
            &format!(r#"{a_},source="0""#)
        ),
        Some(0.0)
    );
}

#[test]
fn no_streams_still_has_every_family() {
    let text = render_text(&[], Process::default());
    let s = check(&text);
    for family in [
        "streamvisor_stream_state",
        "streamvisor_stream_viewers",
        "streamvisor_stream_bytes_in_total",
        "streamvisor_stream_bytes_out_total",
        "streamvisor_stream_frames_in_total",
        "streamvisor_stream_drops_total",
        "streamvisor_stream_producer_restarts_total",
        "streamvisor_stream_producer_uptime_seconds",
        "streamvisor_stream_delivery_delay_seconds",
    ] {
        assert!(text.contains(&format!("# TYPE {family} ")), "{family}");
    }
    assert_eq!(s.len(), 3, "only the process samples:\n{text}");
}

/// A delay lands in the first bucket whose bound is at or above it
/// (`le`), and the scrape's counts are cumulative.
#[test]
fn delays_land_in_le_buckets() {
    let h = Histogram::default();
    for us in [1, 500, 501, 5_000, 20_001, 2_000_000] {
        h.observe_us(us);
    }
    let (c, sum) = h.snapshot();
    assert_eq!(c, [2, 3, 3, 4, 4, 4, 5, 5, 5, 5, 5, 6]);
    assert_eq!(sum, 1 + 500 + 501 + 5_000 + 20_001 + 2_000_000);
}

#[test]
fn one_output_entry_per_protocol() {
    let m = StreamMetrics::new(1);
    let a = m.output("rtsp");
    let b = m.output("rtsp");
    assert!(Arc::ptr_eq(&a, &b));
    let _c = m.output("hls");
    assert_eq!(m.outputs().len(), 2);
}
