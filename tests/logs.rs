//! `log:` as go2rtc has it: `format: json`, a level, and a level per
//! module; and a child's stderr, which is noise while it runs and evidence
//! when it fails.

mod common;

use std::time::Duration;

use common::*;

/// The server's log as JSON objects, one per line; a line that is not one
/// fails the test.
fn json_lines(log: &str) -> Vec<serde_json::Value> {
    log.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("not a JSON line ({e}): {l}")))
        .collect()
}

#[test]
fn json_format_module_levels_and_stderr_of_a_failing_child() {
    let _p = heavy();
    // `chatty` writes to stderr while it works; `broken` writes and fails.
    let chatty = "exec:sh -c 'echo chatty-progress-line >&2; exec ffmpeg -hide_banner -loglevel error -nostdin -re -f lavfi -i testsrc2=size=160x120:rate=10 -c:v libx264 -preset ultrafast -g 10 -f flv pipe:1'";
    let broken = "exec:sh -c 'echo broken-last-words >&2; exit 3'";
    let srv = Server::start(
        &format!("  chatty: \"{chatty}\"\n  broken: \"{broken}#start_timeout=2s\"\n"),
        // Warnings only, but the streams module (the hub) at info.
        "log:\n  format: json\n  level: warn\n  streams: info\n",
    );
    let (status, flv) = open_flv(srv.port, "chatty");
    assert_eq!(status, 200);
    let viewer = Drain::new(flv);
    srv.wait_for("chatty's producer", Duration::from_secs(10), || {
        !srv.producer_pids("chatty").is_empty()
    });
    // Someone asks for the broken stream: it fails.
    let _ = http_get(srv.port, "/api/stream.flv?src=broken");
    srv.wait_for(
        "broken's failure in the log",
        Duration::from_secs(10),
        || srv.log().contains("producer failed"),
    );
    std::thread::sleep(Duration::from_millis(500));
    viewer.close();

    let lines = json_lines(&srv.log());
    let msg = |v: &serde_json::Value| v["fields"]["message"].as_str().unwrap_or("").to_string();
    // Lifecycle lines carry their fields as JSON fields.
    let started = lines
        .iter()
        .find(|v| msg(v) == "producer started" && v["fields"]["stream"] == "chatty")
        .unwrap_or_else(|| panic!("no producer started line: {lines:?}"));
    assert!(started["fields"]["pid"].as_u64().is_some(), "{started}");
    assert_eq!(started["level"], "INFO");
    assert!(lines.iter().any(|v| msg(v) == "viewer joined"));
    // `level: warn` silenced everyone else's info lines.
    assert!(
        !lines.iter().any(|v| msg(v).ends_with(" ready")),
        "info outside the streams module despite level: warn"
    );
    // A working child's stderr is debug: not here.
    assert!(
        !lines
            .iter()
            .any(|v| msg(v).contains("chatty-progress-line")),
        "a healthy child's stderr was logged above debug: {}",
        srv.log()
    );
    // A failing child's stderr is logged with its failure, at warn or above.
    let failed = lines.iter().find(|v| msg(v) == "producer failed").unwrap();
    assert_eq!(failed["level"], "WARN", "{failed}");
    assert_eq!(failed["fields"]["stream"], "broken", "{failed}");
    assert_eq!(failed["fields"]["ended"], "exit code 3", "{failed}");
    assert_eq!(failed["fields"]["stderr"], "broken-last-words", "{failed}");
}
