//! Keeps the fuzzer honest in CI: every target runs a few thousand mutated inputs and finds
//! nothing (a finding fails the test, with the saved input's path in the output), and each
//! detector fires on a target that misbehaves on purpose and saves the input that did it. The
//! long runs (a million inputs a target) are in bench/results/2026-12-01-fuzz.md.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn fuzz(args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_lossfuse-fuzz"));
    c.args(args).arg("--quiet");
    if std::env::var_os("XDG_RUNTIME_DIR").is_none() {
        c.env("XDG_RUNTIME_DIR", std::env::temp_dir());
    }
    let o = c.output().expect("the fuzzer runs");
    eprintln!(
        "$ lossfuse-fuzz {}\n{}{}",
        args.join(" "),
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    o
}

fn crash_dir(name: &str) -> PathBuf {
    let d = Path::new(env!("CARGO_TARGET_TMPDIR"))
        .join("fuzz")
        .join(name);
    let _ = std::fs::remove_dir_all(&d);
    d
}

fn files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
        .map(|r| r.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default();
    v.sort();
    v
}

#[test]
fn every_target_runs_thousands_of_inputs_and_finds_nothing() {
    for (target, n) in [
        ("config-toml", 4000),
        ("config-json", 4000),
        ("config-reference", 3000),
        ("safetensors", 4000),
        ("state", 2000),
    ] {
        let dir = crash_dir(target);
        let n = n.to_string();
        let o = fuzz(&[
            "--target",
            target,
            "--iterations",
            &n,
            "--seed",
            "7",
            "--crash-dir",
            dir.to_str().unwrap(),
        ]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert_eq!(
            o.status.code(),
            Some(0),
            "{target} found something:\n{out}{}",
            String::from_utf8_lossy(&o.stderr)
        );
        assert!(
            out.starts_with(&format!("{target}: {n} inputs in ")),
            "{out}"
        );
        assert!(
            out.contains("inputs/s") && out.contains(" 0 crashes"),
            "{out}"
        );
        // Some mutants get through: the harness reaches past the first check.
        let accepted: u64 = out
            .split("; ")
            .nth(1)
            .unwrap()
            .split(' ')
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(accepted > 0, "{out}");
        assert!(files(&dir).is_empty(), "{:?}", files(&dir));
    }
}

#[test]
fn a_run_is_reproducible_from_its_seed() {
    let run = |seed: &str| {
        let o = fuzz(&[
            "--target",
            "config-toml",
            "--iterations",
            "3000",
            "--seed",
            seed,
        ]);
        assert_eq!(o.status.code(), Some(0));
        // "N accepted" depends only on the inputs, which depend only on the seed.
        String::from_utf8_lossy(&o.stdout)
            .split("; ")
            .nth(1)
            .unwrap()
            .to_string()
    };
    assert_eq!(run("5"), run("5"));
    assert_ne!(run("5"), run("6"));
}

/// Runs a selftest target; returns its output and the files it saved.
fn selftest(kind: &str, extra: &[&str]) -> (Output, Vec<PathBuf>) {
    let dir = crash_dir(&format!("selftest-{kind}"));
    let target = format!("selftest-{kind}");
    let mut args = vec![
        "--target",
        target.as_str(),
        "--iterations",
        "100000",
        "--crash-dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let o = fuzz(&args);
    (o, files(&dir))
}

/// The saved input is the one that misbehaved (it holds a 0xff byte), and its note says what
/// happened.
fn assert_saved(saved: &[PathBuf], kind: &str, note_has: &str) {
    assert_eq!(saved.len(), 2, "{saved:?}");
    let bin = saved
        .iter()
        .find(|p| p.extension().unwrap() == "bin")
        .unwrap();
    assert!(bin
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .starts_with(&format!("selftest-{kind}-{kind}-")));
    assert!(std::fs::read(bin).unwrap().contains(&0xff));
    let note = std::fs::read_to_string(bin.with_extension("txt")).unwrap();
    assert!(
        note.contains(note_has) && note.contains("--replay"),
        "{note}"
    );
}

#[test]
fn a_panic_is_caught_saved_and_fails_the_run() {
    let (o, saved) = selftest("panic", &[]);
    assert_eq!(o.status.code(), Some(1));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("panic at input") && err.contains("input saved to"),
        "{err}"
    );
    assert_saved(&saved, "panic", "selftest: a 0xff byte");
    // The saved input replays to the same panic.
    let bin = saved
        .iter()
        .find(|p| p.extension().unwrap() == "bin")
        .unwrap();
    let o = fuzz(&[
        "--target",
        "selftest-panic",
        "--replay",
        bin.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&o.stdout).contains("selftest: a 0xff byte"));
}

#[test]
fn a_hang_is_saved_and_fails_the_run() {
    let t = std::time::Instant::now();
    let (o, saved) = selftest("hang", &["--timeout-ms", "300"]);
    assert_eq!(o.status.code(), Some(1));
    assert!(
        t.elapsed().as_secs() < 30,
        "the watchdog did not stop the run"
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("hang: one call ran longer than 300 ms"));
    assert_saved(&saved, "hang", "longer than 300 ms");
}

#[test]
fn an_unbounded_allocation_is_saved_and_aborts_the_run() {
    let (o, saved) = selftest("alloc", &["--alloc-cap-mb", "64"]);
    assert!(!o.status.success());
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        err.contains("unbounded allocation") && err.contains("over the cap of 67108864 bytes"),
        "{err}"
    );
    assert_saved(&saved, "alloc", "the cap is 67108864 bytes");
}
