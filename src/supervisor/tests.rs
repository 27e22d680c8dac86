//! One child process, with real shell children: its exit and stderr tail,
//! TERM then KILL, its counts, and grandchildren that are killed or hold
//! the pipe.

use super::*;

fn sh(script: &str) -> CommandSpec {
    CommandSpec {
        program: "sh".into(),
        args: vec!["-c".into(), script.into()],
        stdin: None,
    }
}

async fn drain_stdout(mut out: BoxRead) -> String {
    let mut sink = Vec::new();
    let _ = out.read_to_end(&mut sink).await;
    "stdout closed".to_string()
}

async fn run(
    script: &str,
    kill_timeout: Duration,
    stop_after: Option<Duration>,
) -> (Report, Vec<String>) {
    run_with(&OsSpawner::default(), script, kill_timeout, stop_after).await
}

async fn run_with(
    spawner: &OsSpawner,
    script: &str,
    kill_timeout: Duration,
    stop_after: Option<Duration>,
) -> (Report, Vec<String>) {
    let s = spawner.spawn(&sh(script)).unwrap();
    let pid = s.pid;
    let tail = Arc::new(StderrTail::default());
    let stop = CancellationToken::new();
    if let Some(d) = stop_after {
        let stop = stop.clone();
        tokio::spawn(async move {
            tokio::time::sleep(d).await;
            stop.cancel();
        });
    }
    let r = supervise(
        s,
        Labels {
            stream: "t",
            source: 0,
        },
        kill_timeout,
        stop,
        tail.clone(),
        drain_stdout,
    )
    .await;
    assert!(
        !group_has_live_member(pid as i32),
        "group {pid} still has a live member"
    );
    (r, tail.lines())
}

#[tokio::test]
async fn exits_by_itself_and_keeps_stderr() {
    let (r, tail) = run(
        "echo one >&2; printf 'two\\nthree' >&2; exit 3",
        Duration::from_secs(1),
        None,
    )
    .await;
    assert_eq!(r.exit, Some(ExitKind::Code(3)));
    assert_eq!(r.ended_by, EndedBy::Itself);
    assert_eq!(tail, vec!["one", "two", "three"]);
}

#[tokio::test]
async fn term_is_enough_for_a_polite_child() {
    let (r, _) = run(
        "sleep 30 & wait",
        Duration::from_secs(5),
        Some(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(r.ended_by, EndedBy::Term);
    assert!(r.stop_ms < 5000, "{r:?}");
}

#[tokio::test]
async fn kill_follows_a_child_that_ignores_term() {
    let spawner = OsSpawner::default();
    // The shell ignores TERM and keeps a grandchild that holds stdout.
    let (r, _) = run_with(
        &spawner,
        "trap 'echo ignoring TERM >&2' TERM; sleep 30 & while :; do sleep 0.1; done",
        Duration::from_millis(300),
        Some(Duration::from_millis(200)),
    )
    .await;
    assert_eq!(r.ended_by, EndedBy::Kill);
    assert_eq!(r.exit, Some(ExitKind::Signal(9)));
    assert!(r.stop_ms >= 300, "{r:?}");
    assert_eq!(
        spawner.counts().sigkilled(),
        1,
        "the SIGKILL was not counted"
    );
    assert_eq!(spawner.counts().spawned(), 1);
    assert_eq!(spawner.counts().running(), 0, "reaped, so not running");
}

#[tokio::test]
async fn children_are_counted_while_their_handle_lives() {
    let spawner = OsSpawner::default();
    let s = spawner.spawn(&sh("sleep 30")).unwrap();
    let counts = spawner.counts();
    assert_eq!((counts.spawned(), counts.running()), (1, 1));
    let stop = CancellationToken::new();
    stop.cancel();
    let r = supervise(
        s,
        Labels {
            stream: "t",
            source: 0,
        },
        Duration::from_secs(2),
        stop,
        Default::default(),
        drain_stdout,
    )
    .await;
    assert_eq!(r.ended_by, EndedBy::Term);
    assert_eq!(counts.running(), 0, "reaped, so no longer running");
    assert_eq!(counts.sigkilled(), 0, "TERM was enough");
}

#[tokio::test]
async fn leftover_grandchildren_are_killed_when_the_leader_exits() {
    // The leader exits at once; its grandchild would hold stdout forever.
    let (r, _) = run("sleep 30 & exit 0", Duration::from_secs(1), None).await;
    assert_eq!(r.exit, Some(ExitKind::Code(0)));
}

#[tokio::test]
async fn escaped_grandchild_holding_the_pipe_does_not_hang_us() {
    // setsid takes the grandchild out of our group: we cannot kill it,
    // but we must not wait for its end of stdout either (Go #23019).
    let script = "setsid sleep 3 & exit 0";
    let s = OsSpawner::default().spawn(&sh(script)).unwrap();
    let t = Instant::now();
    let r = supervise(
        s,
        Labels {
            stream: "t",
            source: 0,
        },
        Duration::from_secs(1),
        CancellationToken::new(),
        Default::default(),
        drain_stdout,
    )
    .await;
    assert_eq!(r.exit, Some(ExitKind::Code(0)));
    assert!(
        t.elapsed() < Duration::from_secs(2),
        "hung on the escaped grandchild's pipe"
    );
}

#[test]
fn tail_keeps_the_last_lines() {
    let t = StderrTail::default();
    for i in 0..(STDERR_TAIL_LINES + 5) {
        t.push(i.to_string());
    }
    let l = t.lines();
    assert_eq!(l.len(), STDERR_TAIL_LINES);
    assert_eq!(l[0], "5");
}
