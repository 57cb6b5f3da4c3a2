//! Shared by the CLI's integration tests: the adapters a test must cover, running the binary,
//! and scratch directories.
#![allow(dead_code)]

use lossfuse::{AdapterSummary, Engine};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

pub const INSTALL: &str = "install Mesa's software drivers: apt-get update && apt-get install -y \
mesa-vulkan-drivers libegl1 libgl1-mesa-dri (Vulkan lavapipe and GL llvmpipe)";

/// Every adapter found; fails (never skips) when there is none, or when `LOSSFUSE_REQUIRE`
/// (comma-separated backends, e.g. "vulkan,gl") names a backend that is missing.
pub fn adapters() -> Vec<AdapterSummary> {
    let found = Engine::adapters();
    assert!(!found.is_empty(), "no GPU adapter found; {INSTALL}");
    if let Ok(required) = std::env::var("LOSSFUSE_REQUIRE") {
        for backend in required.split(',').filter(|s| !s.is_empty()) {
            assert!(
                found.iter().any(|a| a.backend.eq_ignore_ascii_case(backend)),
                "LOSSFUSE_REQUIRE names backend '{backend}' but no such adapter was found; {INSTALL}"
            );
        }
    }
    found
}

/// The `lossfuse` binary of this build, with `LOSSFUSE_ADAPTER` cleared so that a command's
/// default is every adapter (or the default one), whatever the caller's environment says.
pub fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossfuse"));
    c.env_remove("LOSSFUSE_ADAPTER");
    // Mesa's GL driver complains on stderr without it; harmless, but keeps messages readable.
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    c
}

/// [`bin`] with `XDG_RUNTIME_DIR` removed from the environment, as in a container, CI or `sudo`:
/// the binary must make its own (Mesa's EGL complains on stderr without one).
pub fn bin_without_runtime_dir() -> Command {
    let mut c = bin();
    c.env_remove("XDG_RUNTIME_DIR");
    c
}

/// Runs `command`, echoing its output for the test log.
pub fn run_command(mut command: Command, what: &str) -> Output {
    let out = command.output().expect("the lossfuse binary runs");
    eprintln!(
        "$ {what}\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `lossfuse args...`, echoing its output for the test log.
pub fn run(args: &[&str]) -> Output {
    let out = bin().args(args).output().expect("the lossfuse binary runs");
    eprintln!(
        "$ lossfuse {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// A fresh directory under the target's scratch space.
pub fn scratch(name: &str) -> PathBuf {
    let dir = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("cli")
        .join(name);
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

pub fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}
