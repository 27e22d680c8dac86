//! Running one child process, and stopping it so that it is really gone.
//!
//! The rules (DESIGN.md "Stopping a producer"), and the peer bugs behind them:
//! - The child leads its own process group (`process_group(0)`), and every
//!   signal goes to the group, so a shell's grandchildren (the real ffmpeg)
//!   go with it.
//! - Stop is SIGTERM, up to `kill_timeout` for the whole group to leave,
//!   SIGKILL, then reap. Exactly one task (the one in [`supervise`]) owns
//!   `wait()`; go2rtc 1.9.4–1.9.8 hung on a second `cmd.Wait()`.
//! - Pipe readers never decide when we are done: a grandchild that escaped
//!   the group can hold stdout open forever (Go's #23019). After the reap the
//!   readers get [`DRAIN`] to finish and are then dropped.
//! - A child that cannot be reaped in time is logged as abandoned and the
//!   caller moves on; a background task reaps it if it ever exits (and it
//!   counts in [`ChildCounts::running`] until then).
//!
//! Spawning sits behind [`Spawner`] so that the stream actor's tests can drive
//! fake children under tokio's paused clock.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

/// How long pipe readers get after the child is reaped.
pub const DRAIN: Duration = Duration::from_millis(300);
/// How long we wait for a SIGKILLed group to be reaped before we abandon it.
pub const REAP_GRACE: Duration = Duration::from_secs(2);
/// How many of a failed child's last stderr lines its failure line carries.
const STDERR_ON_FAILURE: usize = 5;

/// How many stderr lines are kept for the API and for error messages.
pub const STDERR_TAIL_LINES: usize = 50;
const STDERR_MAX_LINE: usize = 1000;
const GROUP_POLL: Duration = Duration::from_millis(25);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CommandSpec {
    pub program: String,
    pub args: Vec<String>,
    /// Written to the child's stdin, which is then closed (a snapshot's
    /// keyframe); `None`: stdin is /dev/null.
    pub stdin: Option<bytes::Bytes>,
}

impl std::fmt::Display for CommandSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{}",
            shell_words::join(std::iter::once(&self.program).chain(&self.args))
        )
    }
}

pub type BoxRead = Box<dyn AsyncRead + Send + Unpin>;
pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// How a child ended, as the OS reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExitKind {
    Code(i32),
    Signal(i32),
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitKind::Code(c) => write!(f, "exit code {c}"),
            ExitKind::Signal(s) => match Signal::try_from(*s) {
                Ok(sig) => write!(f, "signal {}", sig.as_str()),
                Err(_) => write!(f, "signal {s}"),
            },
        }
    }
}

/// A running child, as the supervisor needs it.
pub trait ChildProcess: Send {
    /// Sends `sig` to the child's whole process group.
    fn signal_group(&mut self, sig: Signal) -> io::Result<()>;
    /// True while any process of the group is still alive (zombies included).
    fn group_alive(&self) -> bool;
    /// Waits for the group leader to exit, and reaps it.
    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitKind>>;
}

pub struct Spawned {
    pub pid: u32,
    pub stdout: BoxRead,
    pub stderr: BoxRead,
    pub child: Box<dyn ChildProcess>,
}

pub trait Spawner: Send + Sync + 'static {
    fn spawn(&self, cmd: &CommandSpec) -> io::Result<Spawned>;
    /// This spawner's children so far.
    fn counts(&self) -> &ChildCounts;
}

/// The real thing: `tokio::process` with the child leading a new group.
#[derive(Debug, Default, Clone)]
pub struct OsSpawner {
    counts: Arc<ChildCounts>,
}

struct OsChild {
    child: tokio::process::Child,
    pgid: Pid,
    /// Counts the child as running until it is dropped; its SIGKILLs
    /// count with it.
    running: Running,
}

/// One spawner's children, for `/api/metrics`. They belong to the spawner,
/// not to the process, so that a test asserts on its own children: tests
/// running beside it in the same process cannot move them.
#[derive(Debug, Default)]
pub struct ChildCounts {
    running: AtomicI64,
    spawned: AtomicU64,
    sigkilled: AtomicU64,
}

impl ChildCounts {
    /// Children whose handle is still held: from the spawn until
    /// [`supervise`] has reaped them (an abandoned child is waited for in
    /// the background, and counts until it is reaped).
    pub fn running(&self) -> i64 {
        self.running.load(Ordering::Relaxed)
    }

    /// Children spawned.
    pub fn spawned(&self) -> u64 {
        self.spawned.load(Ordering::Relaxed)
    }

    /// Child process groups sent SIGKILL (and still there to receive it).
    pub fn sigkilled(&self) -> u64 {
        self.sigkilled.load(Ordering::Relaxed)
    }
}

/// Counts one child in [`ChildCounts::running`] while it lives.
struct Running(Arc<ChildCounts>);

impl Running {
    fn new(counts: &Arc<ChildCounts>) -> Running {
        counts.spawned.fetch_add(1, Ordering::Relaxed);
        counts.running.fetch_add(1, Ordering::Relaxed);
        Running(counts.clone())
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self.0.running.fetch_sub(1, Ordering::Relaxed);
    }
}

impl Spawner for OsSpawner {
    fn spawn(&self, cmd: &CommandSpec) -> io::Result<Spawned> {
        let mut c = tokio::process::Command::new(&cmd.program);
        c.args(&cmd.args)
            .stdin(if cmd.stdin.is_some() {
                std::process::Stdio::piped()
            } else {
                std::process::Stdio::null()
            })
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .process_group(0)
            // We kill the group ourselves; a drop must not race that with a
            // kill of the leader alone.
            .kill_on_drop(false);
        let mut child = c.spawn()?;
        let running = Running::new(&self.counts);
        let pid = child
            .id()
            .ok_or_else(|| io::Error::other("child exited before its pid was read"))?;
        if let (Some(data), Some(mut stdin)) = (cmd.stdin.clone(), child.stdin.take()) {
            // A child that exits without reading all of it just ends this.
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = stdin.write_all(&data).await;
            });
        }
        let stdout = child
            .stdout
            .take()
            .ok_or_else(|| io::Error::other("no stdout pipe"))?;
        let stderr = child
            .stderr
            .take()
            .ok_or_else(|| io::Error::other("no stderr pipe"))?;
        Ok(Spawned {
            pid,
            stdout: Box::new(stdout),
            stderr: Box::new(stderr),
            child: Box::new(OsChild {
                child,
                pgid: Pid::from_raw(pid as i32),
                running,
            }),
        })
    }

    fn counts(&self) -> &ChildCounts {
        &self.counts
    }
}

impl ChildProcess for OsChild {
    fn signal_group(&mut self, sig: Signal) -> io::Result<()> {
        match killpg(self.pgid, sig) {
            Ok(()) => {
                if sig == Signal::SIGKILL {
                    self.running.0.sigkilled.fetch_add(1, Ordering::Relaxed);
                }
                Ok(())
            }
            Err(nix::errno::Errno::ESRCH) => Ok(()),
            Err(e) => Err(io::Error::from(e)),
        }
    }

    fn group_alive(&self) -> bool {
        // Signal 0 only checks. The group's id stays reserved while any member
        // lives, so it cannot name someone else's group meanwhile.
        if killpg(self.pgid, None::<Signal>).is_err() {
            return false;
        }
        // Signal 0 also finds zombies: killed grandchildren now belong to
        // init, which may take a second to reap them (seen in containers).
        // They are dead; only a live member counts.
        group_has_live_member(self.pgid.as_raw())
    }

    fn wait(&mut self) -> BoxFuture<'_, io::Result<ExitKind>> {
        Box::pin(async move {
            use std::os::unix::process::ExitStatusExt;
            let st = self.child.wait().await?;
            Ok(match (st.code(), st.signal()) {
                (Some(c), _) => ExitKind::Code(c),
                (None, Some(s)) => ExitKind::Signal(s),
                (None, None) => ExitKind::Code(-1),
            })
        })
    }
}

/// Whether any non-zombie process is in group `pgid` (Linux /proc).
fn group_has_live_member(pgid: i32) -> bool {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return true; // cannot tell: assume alive, the deadline still bounds us
    };
    for e in dir.flatten() {
        let name = e.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.bytes().all(|b| b.is_ascii_digit()))
        else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // proc(5): "pid (comm) state ppid pgrp …"; comm may hold spaces
        // and parentheses, so split after the last ')'.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let mut f = rest.split_whitespace();
        let state = f.next();
        let pgrp = f.nth(1).and_then(|p| p.parse::<i32>().ok());
        if pgrp == Some(pgid) && state != Some("Z") && state != Some("X") {
            return true;
        }
    }
    false
}

/// The last lines a child wrote to stderr.
#[derive(Debug, Default)]
pub struct StderrTail {
    lines: Mutex<VecDeque<String>>,
}

impl StderrTail {
    pub fn push(&self, line: String) {
        let mut l = self.lines.lock().unwrap_or_else(|e| e.into_inner());
        if l.len() == STDERR_TAIL_LINES {
            l.pop_front();
        }
        l.push_back(line);
    }

    pub fn lines(&self) -> Vec<String> {
        self.lines
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .cloned()
            .collect()
    }

    pub fn clear(&self) {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clear();
    }
}

/// Who ended the child.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EndedBy {
    /// It exited by itself.
    Itself,
    /// It left after SIGTERM.
    Term,
    /// It needed SIGKILL.
    Kill,
    /// It could not be reaped in time; we moved on without it.
    Abandoned,
}

/// Why the supervisor asked the child to stop.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StopReason {
    /// The owner cancelled (last viewer left, shutdown, restart).
    Requested,
    /// The stdout consumer ended (EOF, garbage, stall): the child is useless.
    Output(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub pid: u32,
    pub exit: Option<ExitKind>,
    pub ended_by: EndedBy,
    pub stop_reason: Option<StopReason>,
    /// From the stop request (or the exit) until the group was gone.
    pub stop_ms: u64,
    pub uptime: Duration,
}

pub struct Labels<'a> {
    pub stream: &'a str,
    pub source: usize,
}

/// Runs `spawned` until it exits or `stop` fires, then makes sure its whole
/// group is gone. `consume_stdout` gets stdout; if it returns, the child is
/// stopped (a producer that stopped producing is no producer).
pub async fn supervise<F, Fut>(
    spawned: Spawned,
    labels: Labels<'_>,
    kill_timeout: Duration,
    stop: CancellationToken,
    tail: Arc<StderrTail>,
    consume_stdout: F,
) -> Report
where
    F: FnOnce(BoxRead) -> Fut,
    Fut: Future<Output = String> + Send + 'static,
{
    let Spawned {
        pid,
        stdout,
        stderr,
        mut child,
    } = spawned;
    let (stream, source) = (labels.stream, labels.source);
    let started = Instant::now();
    let mut out_task = tokio::spawn(consume_stdout(stdout));
    let failure_tail = tail.clone();
    let mut err_task = tokio::spawn(read_stderr(stderr, tail, stream.to_string(), source, pid));

    let mut stop_reason = None;
    let mut exit = None;
    let mut out_done = false;
    tokio::select! {
        r = child.wait() => exit = Some(r),
        _ = stop.cancelled() => stop_reason = Some(StopReason::Requested),
        r = &mut out_task => {
            out_done = true;
            stop_reason = Some(StopReason::Output(r.unwrap_or_else(|e| format!("stdout reader failed: {e}"))));
            // stdout usually closes because the child is exiting: let it.
            if let Ok(r) = tokio::time::timeout(DRAIN, child.wait()).await {
                exit = Some(r);
            }
        }
    }
    let stop_at = Instant::now();
    let mut ended_by = EndedBy::Itself;

    if exit.is_none() {
        // Polite first: ffmpeg finishes its output on SIGTERM.
        if let Err(e) = child.signal_group(Signal::SIGTERM) {
            tracing::warn!(stream, source, pid, error = %e, "SIGTERM to process group failed");
        }
        ended_by = EndedBy::Term;
        let deadline = stop_at + kill_timeout;
        exit = wait_group(child.as_mut(), deadline, None).await;
        if exit.is_none() || child.group_alive() {
            ended_by = EndedBy::Kill;
            let _ = child.signal_group(Signal::SIGKILL);
            exit = wait_group(child.as_mut(), Instant::now() + REAP_GRACE, exit).await;
        }
    } else if child.group_alive() {
        // The leader left on its own but left members behind (a shell's
        // children): they are ours to clean up too.
        let _ = child.signal_group(Signal::SIGKILL);
        exit = wait_group(child.as_mut(), Instant::now() + REAP_GRACE, exit).await;
    }
    let exit = match exit {
        Some(Ok(k)) => Some(k),
        Some(Err(e)) => {
            tracing::warn!(stream, source, pid, error = %e, "wait() failed");
            None
        }
        None => {
            ended_by = EndedBy::Abandoned;
            None
        }
    };
    if ended_by == EndedBy::Abandoned {
        // Reaped in the background if it ever exits; until then it still
        // counts as a running child.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
    }

    // Readers get a short drain, then go: EOF is not ours to wait for.
    let drain = async {
        if !out_done {
            let _ = (&mut out_task).await;
        }
        let _ = (&mut err_task).await;
    };
    if tokio::time::timeout(DRAIN, drain).await.is_err() {
        tracing::debug!(
            stream,
            source,
            pid,
            "pipe readers dropped after drain deadline"
        );
    }
    out_task.abort();
    err_task.abort();

    let report = Report {
        pid,
        exit,
        ended_by,
        stop_reason,
        stop_ms: stop_at.elapsed().as_millis() as u64,
        uptime: stop_at - started,
    };
    let how = report
        .exit
        .map(|e| e.to_string())
        .unwrap_or_else(|| "not reaped".into());
    match ended_by {
        EndedBy::Abandoned => tracing::error!(
            stream,
            source,
            pid,
            ms = report.stop_ms,
            "producer abandoned: group did not exit after SIGKILL"
        ),
        // A child that failed: its last words go with the failure (its
        // stderr was only at debug while it ran).
        EndedBy::Itself if report.exit != Some(ExitKind::Code(0)) => {
            let lines = failure_tail.lines();
            let last = lines[lines.len().saturating_sub(STDERR_ON_FAILURE)..].join(" | ");
            tracing::warn!(stream, source, pid, ended = %how, uptime_ms = report.uptime.as_millis() as u64, stderr = %last, "producer failed")
        }
        EndedBy::Itself => {
            tracing::info!(stream, source, pid, ended = %how, uptime_ms = report.uptime.as_millis() as u64, "producer exited")
        }
        EndedBy::Term | EndedBy::Kill => tracing::info!(
            stream,
            source,
            pid,
            ended = %how,
            after = if ended_by == EndedBy::Term { "SIGTERM" } else { "SIGKILL" },
            ms = report.stop_ms,
            "producer stopped"
        ),
    }
    report
}

/// Waits until the leader is reaped and the group is empty, or `deadline`.
/// Returns the leader's exit once known (`prior` if it was known before).
async fn wait_group(
    child: &mut dyn ChildProcess,
    deadline: Instant,
    prior: Option<io::Result<ExitKind>>,
) -> Option<io::Result<ExitKind>> {
    let mut exit = prior;
    loop {
        if exit.is_none() {
            match tokio::time::timeout_at(deadline.min(Instant::now() + GROUP_POLL), child.wait())
                .await
            {
                Ok(r) => exit = Some(r),
                Err(_) => {
                    if Instant::now() >= deadline {
                        return None;
                    }
                    continue;
                }
            }
        }
        if !child.group_alive() || Instant::now() >= deadline {
            return exit;
        }
        tokio::time::sleep_until(deadline.min(Instant::now() + GROUP_POLL)).await;
    }
}

/// stderr goes line by line to `tracing` and to the tail ring. Lines are
/// lossy UTF-8 and capped in length, so a child spewing binary or one
/// endless line costs bounded memory.
async fn read_stderr(
    mut r: BoxRead,
    tail: Arc<StderrTail>,
    stream: String,
    source: usize,
    pid: u32,
) {
    let mut buf = Vec::with_capacity(4096);
    let mut chunk = [0u8; 4096];
    let emit = |line: &[u8]| {
        let s = String::from_utf8_lossy(line);
        let s = s.trim_end_matches('\r');
        if s.trim().is_empty() {
            return;
        }
        let s: String = s.chars().take(STDERR_MAX_LINE).collect();
        // A child may print its input URL (ffmpeg does on errors): no
        // password or `${VAR}` value reaches the log or the API, and no
        // control character forges a log line.
        let s = crate::redact::clean(&s);
        // ffmpeg's progress and warnings are noise while it works; a failure
        // repeats the last lines at warn (see `supervise`).
        tracing::debug!(stream = %stream, source, pid, "stderr: {s}");
        tail.push(s);
    };
    loop {
        let n = match r.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        while let Some(i) = buf.iter().position(|&b| b == b'\n') {
            emit(&buf[..i]);
            buf.drain(..=i);
        }
        if buf.len() > STDERR_MAX_LINE * 4 {
            emit(&buf);
            buf.clear();
        }
    }
    if !buf.is_empty() {
        emit(&buf);
    }
}

#[cfg(test)]
mod tests;
