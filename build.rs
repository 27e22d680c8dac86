use std::env;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

/// The functions start-up and an idle server run, in the order the release
/// link puts them first (`scripts/symbol-order` makes it).
const SYMBOL_ORDER: &str = "packaging/symbol-order.txt";

fn main() {
    // Links our executables with packed relative relocations (DT_RELR, glibc
    // 2.36+, binutils 2.38+, lld 15+): a position-independent executable
    // carries one relocation per pointer in its read-only data, 24 bytes each
    // as RELA (0.5 MB here, all read at every start and resident), a few KB
    // as RELR. Issue 17: 0.5 MB less resident for an idle server.
    println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed={SYMBOL_ORDER}");
    // Release builds only: the order is made from a release binary, and
    // debug and test builds are not what runs for long.
    if env::var("PROFILE").as_deref() == Ok("release") {
        symbol_order();
    }
}

/// Lays out first, together, the functions that start-up and an idle server
/// run. The kernel maps an executable's pages 64 KB around each fault
/// (fault-around) and keeps what a process touched: left in the compiler's
/// order, those 1.2 MB of functions are spread over the 10 MB of code, and
/// 100 idle streams kept 5 MB of it resident; together, 1.5 MB (issue 17,
/// point 4, scripts/bench-idle). On a disk with the usual 128 KB readahead
/// a cold start also reads half as much of the file.
///
/// rustc puts each function in a section of its own, so the linker can
/// order them; only lld takes a symbol list (`--symbol-ordering-file`; GNU
/// ld 2.43+ has another syntax, Debian 12's 2.40 none). rustc 1.90+ links
/// with its own lld on x86_64 Linux, but older ones and other targets
/// (aarch64) use the system's GNU ld, and a build may choose its linker: so
/// we ask the linker, and without lld the build goes on, unordered, with a
/// warning.
fn symbol_order() {
    let manifest = PathBuf::from(env::var_os("CARGO_MANIFEST_DIR").expect("set by cargo"));
    let file = manifest.join(SYMBOL_ORDER);
    let Ok(text) = fs::read_to_string(&file) else {
        println!("cargo:warning={SYMBOL_ORDER} is missing: functions are linked in the compiler's order (more resident memory when idle)");
        return;
    };
    let args = [
        format!("-Wl,--symbol-ordering-file={}", file.display()),
        // Names the current code no longer has (renamed, inlined) are
        // expected, and lld would list each of them.
        "-Wl,--no-warn-symbol-ordering".to_string(),
    ];
    if let Err(e) = linker_accepts(&args) {
        println!("cargo:warning=the linker is not lld ({e}): functions are linked in the compiler's order (more resident memory when idle)");
        return;
    }
    // The names carry a hash of the rustc that made them: with another
    // rustc few of them match, and the order is mostly lost.
    let made_by = text
        .lines()
        .find_map(|l| l.strip_prefix("# rustc "))
        .unwrap_or("unknown");
    let building = rustc_version().unwrap_or_default();
    if building.strip_prefix("rustc ") != Some(made_by) {
        println!("cargo:warning={SYMBOL_ORDER} was made with rustc {made_by}, this is {building}: most of its names will not match; run scripts/symbol-order and commit the file");
    }
    for a in args {
        println!("cargo:rustc-link-arg-bins={a}");
    }
}

/// Links an empty program with `args` as the real build would link ours
/// (same rustc, target, linker and flags). Err: the linker's complaint.
fn linker_accepts(args: &[String]) -> Result<(), String> {
    let out = PathBuf::from(env::var_os("OUT_DIR").expect("set by cargo"));
    let src = out.join("probe.rs");
    fs::write(&src, "fn main() {}\n").map_err(|e| e.to_string())?;
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let mut cmd = Command::new(rustc);
    cmd.arg("--crate-name=probe")
        .arg("--crate-type=bin")
        .arg("--edition=2021")
        .arg("-o")
        .arg(out.join("probe"))
        .arg(&src);
    if let Ok(target) = env::var("TARGET") {
        cmd.arg(format!("--target={target}"));
    }
    if let Ok(linker) = env::var("RUSTC_LINKER") {
        cmd.arg(format!("-Clinker={linker}"));
    }
    if let Ok(flags) = env::var("CARGO_ENCODED_RUSTFLAGS") {
        cmd.args(flags.split('\x1f').filter(|f| !f.is_empty()));
    }
    for a in args {
        cmd.arg(format!("-Clink-arg={a}"));
    }
    let result = cmd.output().map_err(|e| format!("cannot run rustc: {e}"))?;
    if result.status.success() {
        return Ok(());
    }
    let stderr = String::from_utf8_lossy(&result.stderr);
    Err(last_words(&stderr))
}

/// The linker's own complaint, from rustc's long "linking failed" report:
/// GNU ld says "unrecognized option", other linkers "unknown argument".
fn last_words(stderr: &str) -> String {
    let lines = || {
        stderr
            .lines()
            .map(|l| l.trim().trim_start_matches("= note:").trim())
    };
    lines()
        .find(|l| l.contains("unrecognized option") || l.contains("unknown argument"))
        .or_else(|| lines().find(|l| l.starts_with("error")))
        .unwrap_or("linking failed")
        .chars()
        .take(200)
        .collect()
}

fn rustc_version() -> Option<String> {
    let rustc = env::var_os("RUSTC").unwrap_or_else(|| "rustc".into());
    let out = Command::new(Path::new(&rustc)).arg("-V").output().ok()?;
    Some(String::from_utf8_lossy(&out.stdout).trim().to_string())
}
