//! Config reload: SIGHUP and `POST /api/restart` read streams.yaml again.
//! Unchanged streams keep their producers and viewers, changed ones
//! restart, removed ones stop; a broken file changes nothing.

mod common;

use std::time::Duration;

use common::*;

const SIGHUP: i32 = 1;

fn post(port: u16, path: &str) -> (u16, serde_json::Value) {
    let (status, body) = http(port, "POST", path).unwrap();
    let json = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
    (status, json)
}

fn one_pid(srv: &Server, stream: &str) -> Option<u32> {
    srv.producer_pids(stream).first().copied()
}

fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .map(|s| !s.contains(") Z "))
        .unwrap_or(false)
}

#[test]
fn sighup_restarts_only_changed_streams_and_a_broken_file_changes_nothing() {
    let _p = heavy();
    let (d25, d50) = (demo_source(25), demo_source(50));
    let srv = Server::start(
        &format!("  keep: \"{d25}\"\n  change: \"{d25}\"\n  gone: \"{d25}\"\n"),
        // Preloaded streams run with no viewer: their pids tell the story.
        "preload:\n  change: \"\"\n  gone: \"\"\n",
    );
    let (status, flv) = open_flv(srv.port, "keep");
    assert_eq!(status, 200);
    let viewer = Drain::new(flv);
    srv.wait_for("three producers", Duration::from_secs(15), || {
        ["keep", "change", "gone"]
            .iter()
            .all(|s| one_pid(&srv, s).is_some())
    });
    let (keep, change, gone) = (
        one_pid(&srv, "keep").unwrap(),
        one_pid(&srv, "change").unwrap(),
        one_pid(&srv, "gone").unwrap(),
    );

    // 1. Change one stream, remove another; SIGHUP.
    let text = std::fs::read_to_string(&srv.config).unwrap();
    let edited = text
        .replace(
            &format!("  change: \"{d25}\""),
            &format!("  change: \"{d50}\""),
        )
        .replace(&format!("  gone: \"{d25}\"\n"), "")
        .replace("  gone: \"\"\n", "");
    assert_ne!(edited, text);
    std::fs::write(&srv.config, &edited).unwrap();
    signal(srv.pid(), SIGHUP);
    srv.wait_for(
        "the changed stream's new producer",
        Duration::from_secs(15),
        || one_pid(&srv, "change").is_some_and(|p| p != change) && !alive(change),
    );
    srv.wait_for(
        "the removed stream to stop",
        Duration::from_secs(10),
        || !alive(gone) && srv.get_json("/api/streams").1.get("gone").is_none(),
    );
    assert_eq!(one_pid(&srv, "keep"), Some(keep), "{}", srv.log());
    let before = viewer.bytes();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        viewer.bytes() > before,
        "the unchanged stream's viewer stalled"
    );
    let change2 = one_pid(&srv, "change").unwrap();

    // 2. A broken file: logged with line and column; everything runs on.
    let broken = format!("{edited}  bad: [unclosed\n");
    let bad_line = broken.lines().count();
    std::fs::write(&srv.config, &broken).unwrap();
    signal(srv.pid(), SIGHUP);
    srv.wait_for("the refusal in the log", Duration::from_secs(5), || {
        srv.log().contains("config reload refused")
    });
    let log = srv.log();
    let refusal = log
        .lines()
        .find(|l| l.contains("config reload refused"))
        .unwrap();
    assert!(
        refusal.contains(&format!("streams.yaml:{bad_line}:"))
            || refusal.contains(&format!("streams.yaml:{}:", bad_line + 1)),
        "no line:col for line {bad_line}: {refusal}"
    );
    // The API says the same, as JSON.
    let (status, v) = post(srv.port, "/api/restart");
    assert_eq!(status, 400, "{v}");
    assert!(v["line"].as_u64().unwrap() >= bad_line as u64, "{v}");
    assert!(v["col"].as_u64().is_some(), "{v}");
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(one_pid(&srv, "keep"), Some(keep));
    assert_eq!(one_pid(&srv, "change"), Some(change2));
    let before = viewer.bytes();
    std::thread::sleep(Duration::from_secs(1));
    assert!(
        viewer.bytes() > before,
        "the viewer stalled after a refused reload"
    );

    // 3. POST /api/restart with the file fixed: `gone` is back.
    std::fs::write(&srv.config, &text).unwrap();
    let (status, v) = post(srv.port, "/api/restart");
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["added"], serde_json::json!(["gone"]), "{v}");
    assert_eq!(v["restarted"], serde_json::json!(["change"]), "{v}");
    assert_eq!(v["kept"], serde_json::json!(["keep"]), "{v}");
    srv.wait_for(
        "the re-added stream's producer",
        Duration::from_secs(15),
        || one_pid(&srv, "gone").is_some(),
    );
    assert_eq!(one_pid(&srv, "keep"), Some(keep));
    viewer.close();
}
