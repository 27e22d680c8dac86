use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use tracing_subscriber::EnvFilter;

use streamvisor::api::{self, AppState};
use streamvisor::config::{Config, LogFormat};
use streamvisor::hub::{Deps, Registry, Stream};
use streamvisor::net::SHUTDOWN_GRACE;
use streamvisor::supervisor::{OsSpawner, DRAIN};

const USAGE: &str = "\
Process supervisor and live-stream relay

Usage: streamvisor [OPTIONS] [COMMAND]

Commands:
  check  Validate the config and exit: 0 if it is good, 1 if not
  help   Print this message

Options:
  -c, --config <CONFIG>  Config file (go2rtc syntax) [default: streams.yaml]
  -h, --help             Print help
  -V, --version          Print version
";

/// The command line: `[check] [-c|--config FILE]`, in any order.
///
/// Parsed by hand rather than with clap: clap's parser is 0.3 MB of code
/// that runs once, and start-up maps code 64 KB at a time around each
/// fault, which an idle server keeps resident (issue 17, point 4).
#[derive(Debug)]
struct Cli {
    config: PathBuf,
    check: bool,
}

#[derive(Debug)]
enum Parsed {
    Run(Cli),
    /// --help or --version: print this on stdout and exit 0.
    Print(String),
}

fn parse_args(args: impl IntoIterator<Item = std::ffi::OsString>) -> Result<Parsed, String> {
    let mut cli = Cli {
        config: PathBuf::from("streams.yaml"),
        check: false,
    };
    let mut args = args.into_iter();
    while let Some(arg) = args.next() {
        let Some(s) = arg.to_str() else {
            return Err(format!("unexpected argument '{}'", arg.to_string_lossy()));
        };
        match s {
            "-h" | "--help" | "help" => return Ok(Parsed::Print(USAGE.into())),
            "-V" | "--version" => {
                return Ok(Parsed::Print(format!(
                    "streamvisor {}\n",
                    env!("CARGO_PKG_VERSION")
                )))
            }
            "check" if !cli.check => cli.check = true,
            "-c" | "--config" => match args.next() {
                Some(v) => cli.config = v.into(),
                None => return Err(format!("a value is required for '{s} <CONFIG>'")),
            },
            _ => {
                if let Some(v) = s.strip_prefix("--config=") {
                    cli.config = v.into();
                } else if let Some(v) = s.strip_prefix("-c").filter(|v| !v.is_empty()) {
                    // clap's `-cFILE` and `-c=FILE`.
                    cli.config = v.strip_prefix('=').unwrap_or(v).into();
                } else {
                    return Err(format!("unexpected argument '{s}'"));
                }
            }
        }
    }
    Ok(Parsed::Run(cli))
}

fn main() -> ExitCode {
    let cli = match parse_args(std::env::args_os().skip(1)) {
        Ok(Parsed::Run(cli)) => cli,
        Ok(Parsed::Print(text)) => {
            print!("{text}");
            return ExitCode::SUCCESS;
        }
        Err(e) => {
            eprintln!(
                "error: {e}\n\nUsage: streamvisor [OPTIONS] [COMMAND]\n\nFor more information, try '--help'."
            );
            return ExitCode::from(2);
        }
    };
    let (cfg, text) = match Config::load_with_text(&cli.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("streamvisor: {e}");
            return ExitCode::from(1);
        }
    };
    if cli.check {
        for w in &cfg.warnings {
            eprintln!("warning: {w}");
        }
        println!(
            "{}: ok ({} streams)",
            cli.config.display(),
            cfg.streams.len()
        );
        return ExitCode::SUCCESS;
    }
    // RUST_LOG, when set, wins over the config's `log:`.
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(&cfg.log.filter));
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match cfg.log.format {
        LogFormat::Json => logs.json().init(),
        f => {
            let ansi = f == LogFormat::Color
                || (f == LogFormat::Auto && std::io::IsTerminal::is_terminal(&std::io::stderr()));
            logs.with_ansi(ansi).init()
        }
    }
    raise_fd_limit();
    let rt = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("streamvisor: cannot start the runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match rt.block_on(run(cfg, text)) {
        Ok(()) => {
            // Connections still open (HTTP-FLV viewers) must not delay exit.
            rt.shutdown_timeout(Duration::from_millis(100));
            ExitCode::SUCCESS
        }
        Err(e) => {
            tracing::error!("{e:#}");
            eprintln!("streamvisor: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Raises the soft open-file limit to the hard one, as Go's runtime does at
/// start (so go2rtc runs with it): every viewer is a socket, and the soft
/// limit is often 1024 while the hard one is far higher (systemd: 524288).
fn raise_fd_limit() {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => tracing::debug!(from = soft, to = hard, "open-file limit raised"),
            Err(e) => tracing::debug!(limit = soft, hard, error = %e, "open-file limit kept"),
        },
        Ok((soft, _)) => tracing::debug!(limit = soft, "open-file limit"),
        Err(e) => tracing::debug!(error = %e, "open-file limit unknown"),
    }
}

/// The address our own producers use to reach a listener of ours: loopback
/// when it listens on every interface.
fn loopback(bound: SocketAddr) -> SocketAddr {
    let ip = match bound.ip() {
        IpAddr::V4(ip) if ip.is_unspecified() => IpAddr::V4(Ipv4Addr::LOCALHOST),
        IpAddr::V6(ip) if ip.is_unspecified() => IpAddr::V6(std::net::Ipv6Addr::LOCALHOST),
        ip => ip,
    };
    SocketAddr::new(ip, bound.port())
}

async fn run(cfg: Config, text: String) -> anyhow::Result<()> {
    for w in &cfg.warnings {
        tracing::warn!("{w}");
    }
    let listener = match cfg.api_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("api.listen: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    // With `api.listen: ""` (Home Assistant's managed config: the API on a
    // unix socket only), our own `ffmpeg:STREAM` readers still need an
    // HTTP-FLV to read: a listener on a loopback port of its own, which
    // only our children are told, serving only token-bearing internal reads
    // (`api::internal_router`).
    let (listener, private) = match listener {
        Some(l) => (Some(l), false),
        None => (
            Some(
                tokio::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                    .await
                    .context("binding the internal loopback listener")?,
            ),
            true,
        ),
    };
    let bound = listener.as_ref().map(|l| l.local_addr()).transpose()?;
    let rtsp = match cfg.rtsp_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("rtsp.listen: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    let rtsp_bound = rtsp.as_ref().map(|l| l.local_addr()).transpose()?;
    let rtmp = match cfg.rtmp_listen {
        Some(addr) => Some(
            tokio::net::TcpListener::bind(addr)
                .await
                .with_context(|| format!("rtmp.listen: cannot listen on {addr}"))?,
        ),
        None => None,
    };
    // Every WebRTC peer on one port (go2rtc's :8555), UDP and TCP.
    let webrtc = match cfg.webrtc.listen {
        Some(_) => {
            let t = streamvisor::webrtc::net::Transport::bind(&cfg.webrtc).await?;
            tracing::info!(udp = ?t.udp_addrs(), tcp = ?t.tcp_addrs(), "webrtc ready");
            Some(t)
        }
        None => None,
    };
    let deps = Arc::new(Deps {
        spawner: Arc::new(OsSpawner::default()),
        ffmpeg_bin: cfg.ffmpeg_bin.clone(),
        // Our own readers (`ffmpeg:STREAM`) authenticate with a per-run
        // token (`internal_tokens`), never with the API password, which
        // their command line would show to every local user.
        internal_base: bound.map(|a| format!("http://{}", loopback(a))),
        rtsp_base: rtsp_bound.map(|a| format!("rtsp://{}", loopback(a))),
        publish: cfg.publish.clone(),
        internal_tokens: Default::default(),
        ffmpeg_templates: cfg.ffmpeg_templates.clone(),
    });
    let streams: Vec<Stream> = cfg
        .streams
        .iter()
        .map(|s| Stream::spawn(s.clone(), deps.clone()))
        .collect();
    let registry = Arc::new(Registry::new(streams.clone(), deps.clone()));
    // Shutdown: every listener stops accepting and ends its connections
    // (`stop`), and is waited for (`listeners`), before the streams stop.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|s| *s).await;
    };
    let mut listeners = Vec::new();
    if let (Some(l), Some(addr)) = (rtsp, rtsp_bound) {
        tracing::info!(listen = %addr, "rtsp server ready");
        listeners.push(tokio::spawn(streamvisor::rtsp::serve(
            l,
            registry.clone(),
            streamvisor::auth::Gate::new(cfg.rtsp_auth.as_ref(), cfg.api_auth.as_ref()),
            cfg.rtsp_max_connections,
            stopped(stop_rx.clone()),
        )));
    }
    if let Some(l) = rtmp {
        tracing::info!(listen = %l.local_addr()?, "rtmp server ready");
        let gate = streamvisor::auth::Gate::either(cfg.api_auth.as_ref(), cfg.rtsp_auth.as_ref());
        listeners.push(tokio::spawn(streamvisor::rtmp::serve(
            l,
            registry.clone(),
            gate,
            cfg.rtmp_max_connections,
            stopped(stop_rx.clone()),
        )));
    }
    let preloads = streamvisor::preload::Preloads::new(registry.clone());
    preloads.sync(&cfg.preload);
    let state = Arc::new(AppState {
        hls: streamvisor::hls::Hls::new(cfg.hls, registry.clone()),
        registry: registry.clone(),
        store: Arc::new(streamvisor::store::Store::new(
            cfg.path.clone(),
            text,
            cfg.clone(),
        )),
        preloads,
        gate: streamvisor::auth::Gate::new(cfg.api_auth.as_ref(), cfg.rtsp_auth.as_ref()),
        origins: cfg.api_origin.clone(),
        hosts: cfg.api_hosts.clone(),
        allow_exec: cfg.allow_exec,
        snapshots: Default::default(),
        webrtc,
        ice_servers: cfg.webrtc.ice_servers.clone(),
        config_path: std::fs::canonicalize(&cfg.path)
            .unwrap_or(cfg.path.clone())
            .display()
            .to_string(),
        rtsp_listen: cfg.rtsp_listen,
    });
    if let (Some(l), Some(addr)) = (listener, bound) {
        if private {
            tracing::debug!(listen = %addr, "internal readers' loopback listener");
        } else {
            tracing::info!(listen = %addr, streams = streams.len(), config = %cfg.path.display(), "streamvisor {} ready", env!("CARGO_PKG_VERSION"));
        }
        // The private listener serves internal reads and nothing else:
        // `api.listen: ""` means no API over TCP.
        let router = if private {
            api::internal_router(state.clone())
        } else {
            api::router(state.clone())
        };
        let shutdown = stopped(stop_rx.clone());
        let max = cfg.api_max_connections;
        listeners.push(tokio::spawn(async move {
            if let Err(e) = api::serve(l, router, max, shutdown).await {
                tracing::error!(error = %e, "HTTP server failed");
            }
        }));
    }
    if private && cfg.api_unix_listen.is_none() {
        tracing::info!(
            streams = streams.len(),
            "streamvisor ready (HTTP API disabled)"
        );
    }
    if let Some(path) = cfg.api_unix_listen.clone() {
        let l = api::bind_unix(&path)
            .with_context(|| format!("api.unix_listen: cannot listen on {}", path.display()))?;
        let router = api::router(state.clone());
        let shutdown = stopped(stop_rx.clone());
        tracing::info!(listen = %path.display(), "api listening on a unix socket");
        let max = cfg.api_max_connections;
        listeners.push(tokio::spawn(async move {
            if let Err(e) = api::serve_unix(l, router, max, shutdown).await {
                tracing::error!(error = %e, path = %path.display(), "api.unix_listen failed");
            }
        }));
    }

    // The store has its own copy (`state.store.config()`): this one would
    // stay in this future's state, unused, for as long as the server runs.
    drop(cfg);

    // SIGHUP reloads streams.yaml, as `POST /api/restart` does.
    let mut hup = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup())
        .context("installing SIGHUP handler")?;
    let reloader = state.clone();
    tokio::spawn(async move {
        while hup.recv().await.is_some() {
            tracing::info!(signal = "SIGHUP", "reloading the config");
            if let Err(e) = api::reload(&reloader).await {
                tracing::error!("config reload refused, the running config is kept: {e}");
            }
        }
    });

    // Once start-up is over (the streams' actors and the servers have run
    // their first steps), give back what only start-up needed.
    tokio::spawn(async {
        tokio::time::sleep(Duration::from_secs(1)).await;
        release_startup_memory();
    });

    let signal = wait_for_signal().await?;
    tracing::info!(signal, "shutting down");
    // In order (docs/ARCHITECTURE.md "Shutdown"): stop accepting and end
    // the viewers, so that none is left to start a producer again; then
    // stop the producers; then exit.
    let _ = stop_tx.send(true);
    let ended = futures_util::future::join_all(listeners);
    if tokio::time::timeout(SHUTDOWN_GRACE + Duration::from_millis(400), ended)
        .await
        .is_err()
    {
        tracing::warn!("some connections did not end in time");
    }
    // Every stream stops at once; each applies TERM → kill_timeout → KILL.
    // The config as last reloaded.
    let cfg = state.store.config().await;
    let max_kill = cfg
        .streams
        .iter()
        .flat_map(|s| &s.sources)
        .map(|s| s.timeouts.kill_timeout)
        .max()
        .unwrap_or_default();
    // Streams created by publishers, and hidden transcodes, too.
    let streams = registry.everything();
    let all = futures_util::future::join_all(streams.iter().map(|s| s.shutdown()));
    if tokio::time::timeout(max_kill + DRAIN + Duration::from_millis(500), all)
        .await
        .is_err()
    {
        tracing::error!("some producers did not stop in time");
    }
    tracing::info!("bye");
    Ok(())
}

/// Gives back the heap's free pages once start-up is over (issue 17: 100
/// idle streams in ≤ 8.7 MB resident). Parsing the config's YAML and
/// building every stream leave freed blocks that glibc keeps mapped;
/// `malloc_trim(0)` returns whole free pages inside the heap too, not only
/// its top, so the memory is really freed (not just unmapped from us).
fn release_startup_memory() {
    // SAFETY: malloc_trim only releases free memory of glibc's allocator.
    let trimmed = unsafe { nix::libc::malloc_trim(0) } == 1;
    tracing::debug!(heap_trimmed = trimmed, "start-up heap released");
}

async fn wait_for_signal() -> anyhow::Result<&'static str> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).context("installing SIGTERM handler")?;
    let mut int = signal(SignalKind::interrupt()).context("installing SIGINT handler")?;
    Ok(tokio::select! {
        _ = term.recv() => "SIGTERM",
        _ = int.recv() => "SIGINT",
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Parsed, String> {
        parse_args(args.iter().map(std::ffi::OsString::from))
    }

    fn run(args: &[&str]) -> (String, bool) {
        match parse(args) {
            Ok(Parsed::Run(c)) => (c.config.display().to_string(), c.check),
            Ok(Parsed::Print(_)) => panic!("{args:?}: printed instead of running"),
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    /// Every form clap accepted before (the unit file, the container, the
    /// tests and Home Assistant's run.sh use `-c FILE` and `check -c FILE`).
    #[test]
    fn command_line_forms_clap_accepted() {
        assert_eq!(run(&[]), ("streams.yaml".into(), false));
        assert_eq!(run(&["-c", "/etc/s.yaml"]), ("/etc/s.yaml".into(), false));
        assert_eq!(run(&["--config", "a.yaml"]), ("a.yaml".into(), false));
        assert_eq!(run(&["--config=a.yaml"]), ("a.yaml".into(), false));
        assert_eq!(run(&["-ca.yaml"]), ("a.yaml".into(), false));
        assert_eq!(run(&["-c=a.yaml"]), ("a.yaml".into(), false));
        assert_eq!(run(&["check", "-c", "a.yaml"]), ("a.yaml".into(), true));
        assert_eq!(run(&["-c", "a.yaml", "check"]), ("a.yaml".into(), true));
        assert_eq!(run(&["check"]), ("streams.yaml".into(), true));
        for a in ["--version", "-V"] {
            let Ok(Parsed::Print(v)) = parse(&[a]) else {
                panic!("{a}")
            };
            assert_eq!(v, format!("streamvisor {}\n", env!("CARGO_PKG_VERSION")));
        }
        for a in ["--help", "-h", "help"] {
            let Ok(Parsed::Print(h)) = parse(&[a]) else {
                panic!("{a}")
            };
            assert!(h.contains("-c, --config"), "{h}");
        }
        assert!(parse(&["-c"]).unwrap_err().contains("a value is required"));
        assert!(parse(&["bogus"]).unwrap_err().contains("'bogus'"));
        assert!(parse(&["check", "check"]).is_err());
    }
}
