//! The CLI as a user meets it: a closed pipe, output files (checked first, written atomically,
//! never the input), progress on a terminal, no driver noise without XDG_RUNTIME_DIR, the eval
//! table, and malformed input files. A machine without an adapter fails the tests that need one,
//! saying how to get one.

mod common;
use common::*;
use lossfuse::LossConfig;
use lossfuse_cli::example_batch::example_batch;
use std::collections::BTreeMap;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

/// A config with two learned weights, one of them a regression term (0.5·e^{−s}).
const LEARNED: &str = "\
loss_weight_strategy = 'uncertainty'
[uncertainty]
optimizer = 'adam'
learning_rate = 0.1

[[losses]]
loss_type = 'classification'
logits = 'x'
labels = 'y'
learn_loss_weight = true

[[losses]]
loss_type = 'sigmoid_l2_loss'
logits = 'x'
labels = 'y'
learn_loss_weight = true

[[losses]]
loss_type = 'binary_focal_loss'
logits = 'x'
labels = 'y'
weight = 0.25
";

/// Writes `config` and its example batch of `rows` rows into `dir`.
fn setup(dir: &Path, config: &str, rows: usize) -> (PathBuf, PathBuf) {
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let batch = example_batch(&LossConfig::from_toml_str(config).unwrap(), rows, 3);
    let input = dir.join("batch.safetensors");
    lossfuse_cli::io::write_batch(&input, &batch).unwrap();
    (cfg, input)
}

fn names(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    v.sort();
    v
}

/// No line of stderr is an error message (Mesa's "error: XDG_RUNTIME_DIR is invalid ..." or
/// ours).
fn assert_no_error_line(o: &Output, what: &str) {
    let e = stderr(o);
    assert!(
        !e.lines().any(|l| l.starts_with("error:")),
        "{what}: an error line on stderr:\n{e}"
    );
}

/// Runs `lossfuse args` with its stdout a pipe whose read end was closed before the process
/// started, so that its first write fails with EPIPE.
fn with_closed_stdout(args: &[&str]) -> Output {
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let o = bin()
        .args(args)
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    eprintln!("$ lossfuse {} >&-\n{}", args.join(" "), stderr(&o));
    o
}

#[test]
fn a_closed_stdout_stops_every_command_quietly_with_exit_code_141() {
    let found = adapters();
    let dir = scratch("front_closed");
    let (cfg, input) = setup(&dir, LEARNED, 32);
    let out = dir.join("out.safetensors");
    let other = dir.join("other.safetensors");
    let o = run(&[
        "eval",
        "--config",
        p(&cfg),
        "--input",
        p(&input),
        "--output",
        p(&other),
        "--reference",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let commands: Vec<Vec<&str>> = vec![
        vec!["adapters"],
        vec!["check", "--list"],
        vec!["bench", "--list"],
        vec!["--help"],
        vec!["check", "--help"],
        vec![
            "eval",
            "--config",
            p(&cfg),
            "--input",
            p(&input),
            "--output",
            p(&out),
            "--reference",
        ],
        vec![
            "eval",
            "--config",
            p(&cfg),
            "--input",
            p(&input),
            "--output",
            p(&out),
        ],
        vec!["compare", p(&other), p(&other)],
        vec![
            "soak",
            "--config",
            p(&cfg),
            "--rows",
            "16",
            "--steps",
            "2",
            "--every",
            "1",
            "--warmup",
            "1",
        ],
    ];
    for args in &commands {
        let o = with_closed_stdout(args);
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{args:?} panicked:\n{e}");
        assert!(!e.contains("Broken pipe"), "{args:?}:\n{e}");
        assert_no_error_line(&o, &format!("{args:?}"));
        assert_eq!(o.status.code(), Some(141), "{args:?}:\n{e}");
    }
    // eval writes its file before the table: the results are not lost with the pipe.
    assert!(out.exists());
    assert!(!found.is_empty());
}

#[test]
fn eval_refuses_an_output_that_is_its_input() {
    let dir = scratch("front_same");
    let (cfg, input) = setup(&dir, LEARNED, 16);
    let before = std::fs::read(&input).unwrap();
    std::fs::create_dir(dir.join("sub")).unwrap();
    let hard = dir.join("hard.safetensors");
    std::fs::hard_link(&input, &hard).unwrap();
    let link = dir.join("link.safetensors");
    std::os::unix::fs::symlink(&input, &link).unwrap();
    let same = [
        input.clone(),
        dir.join(".").join("batch.safetensors"),
        dir.join("sub/../batch.safetensors"),
        hard,
        link,
    ];
    for output in &same {
        for engine in [&["--reference"][..], &[][..]] {
            let mut args = vec![
                "eval",
                "--config",
                p(&cfg),
                "--input",
                p(&input),
                "--output",
                p(output),
            ];
            args.extend_from_slice(engine);
            let o = run(&args);
            assert_eq!(o.status.code(), Some(2), "{}", output.display());
            let e = stderr(&o);
            assert!(
                e.starts_with("error: --output ") && e.contains("same file as --input"),
                "{}: {e}",
                output.display()
            );
        }
    }
    assert_eq!(
        std::fs::read(&input).unwrap(),
        before,
        "the input was changed"
    );
    // Another file is fine.
    let o = run(&[
        "eval",
        "--config",
        p(&cfg),
        "--input",
        p(&input),
        "--output",
        p(&dir.join("out.safetensors")),
        "--reference",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
}

#[test]
fn outputs_are_checked_before_the_run() {
    let dir = scratch("front_check");
    let (cfg, input) = setup(&dir, LEARNED, 16);
    let missing = dir.join("no_such_dir").join("f");
    let missing = p(&missing);
    let not_dir = dir.join("batch.safetensors").join("f");
    let not_dir = p(&not_dir);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        // A billion steps: only a check before the run can fail this quickly.
        (
            vec![
                "eval",
                "--config",
                p(&cfg),
                "--input",
                p(&input),
                "--output",
                missing,
                "--reference",
                "--steps",
                "1000000000",
            ],
            "--output",
        ),
        (
            vec![
                "eval",
                "--config",
                p(&cfg),
                "--input",
                p(&input),
                "--output",
                not_dir,
                "--steps",
                "1000000000",
            ],
            "--output",
        ),
        (
            vec!["example-batch", "--config", p(&cfg), "--output", missing],
            "--output",
        ),
        (
            vec!["bench", "--shape", "classification_64k", "--csv", missing],
            "--csv",
        ),
        (
            vec!["bench", "--shape", "classification_64k", "--json", missing],
            "--json",
        ),
        (
            vec!["bench", "--shape", "classification_64k", "--plot", missing],
            "--plot",
        ),
        (vec!["check", "--json", missing], "--json"),
        (vec!["check", "--markdown", not_dir], "--markdown"),
        (
            vec![
                "soak",
                "--config",
                p(&cfg),
                "--steps",
                "1000000000",
                "--json",
                missing,
            ],
            "--json",
        ),
        (
            vec![
                "check",
                "--compare",
                p(&input),
                p(&input),
                "--markdown",
                missing,
            ],
            "--markdown",
        ),
    ];
    for (args, flag) in &cases {
        let t = Instant::now();
        let o = run(args);
        let e = stderr(&o);
        assert_eq!(o.status.code(), Some(2), "{args:?}: {e}");
        assert!(e.starts_with(&format!("error: {flag} ")), "{args:?}: {e}");
        assert!(
            e.contains("does not exist") || e.contains("is not a directory"),
            "{args:?}: {e}"
        );
        assert!(
            t.elapsed() < Duration::from_secs(20),
            "{args:?} ran before failing"
        );
    }
    assert_eq!(names(&dir), ["batch.safetensors", "config.toml"]);
}

#[test]
fn an_interrupted_eval_leaves_no_output_and_keeps_the_previous_one() {
    let dir = scratch("front_sigint");
    let (cfg, input) = setup(&dir, LEARNED, 256);
    for previous in [None, Some(b"previous results".as_slice())] {
        let out = dir.join("out.safetensors");
        let _ = std::fs::remove_file(&out);
        if let Some(bytes) = previous {
            std::fs::write(&out, bytes).unwrap();
        }
        let mut cmd = bin();
        cmd.args([
            "eval",
            "--config",
            p(&cfg),
            "--input",
            p(&input),
            "--output",
            p(&out),
        ])
        .args(["--reference", "--steps", "4000000000", "-q"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
        // A shell without job control starts background commands with SIGINT ignored, and the
        // child would inherit that (`bash .ci/run &`): give it Ctrl-C's default action, as a
        // terminal's foreground process has.
        // SAFETY: only an async-signal-safe call between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::signal(libc::SIGINT, libc::SIG_DFL);
                Ok(())
            });
        }
        let mut child = cmd.spawn().unwrap();
        std::thread::sleep(Duration::from_millis(1500));
        assert!(
            child.try_wait().unwrap().is_none(),
            "eval ended before the signal"
        );
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        assert_eq!(unsafe { libc::kill(child.id() as i32, libc::SIGINT) }, 0);
        // Never hang the suite: a child that outlives the signal by 20 s fails the test.
        let deadline = Instant::now() + Duration::from_secs(20);
        while child.try_wait().unwrap().is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                panic!("eval was still running 20 s after SIGINT");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let o = child.wait_with_output().unwrap();
        assert!(!o.status.success());
        assert!(!stderr(&o).contains("panicked"), "{}", stderr(&o));
        match previous {
            None => assert!(!out.exists(), "an interrupted eval left an output"),
            Some(bytes) => assert_eq!(std::fs::read(&out).unwrap(), bytes),
        }
        let left: Vec<String> = names(&dir)
            .into_iter()
            .filter(|n| n.ends_with(".tmp"))
            .collect();
        assert!(left.is_empty(), "temporary files left: {left:?}");
    }
}

#[test]
fn every_file_a_command_writes_is_complete_and_alone() {
    let found = adapters();
    let adapter = found[0].label();
    let dir = scratch("front_files");
    let (cfg, input) = setup(&dir, LEARNED, 64);
    let f = |n: &str| dir.join(n);
    let runs: Vec<Vec<String>> = vec![
        vec![
            "example-batch".into(),
            "--config".into(),
            p(&cfg).into(),
            "--output".into(),
            p(&f("example.safetensors")).into(),
            "--rows".into(),
            "8".into(),
        ],
        vec![
            "eval".into(),
            "--config".into(),
            p(&cfg).into(),
            "--input".into(),
            p(&input).into(),
            "--output".into(),
            p(&f("eval.safetensors")).into(),
            "--steps".into(),
            "3".into(),
        ],
        vec![
            "bench".into(),
            "--shape".into(),
            "classification_64k".into(),
            "--adapter".into(),
            adapter.clone(),
            "--steps".into(),
            "1".into(),
            "--warmup".into(),
            "0".into(),
            "--gpu-steps".into(),
            "0".into(),
            "--no-reference".into(),
            "--csv".into(),
            p(&f("bench.csv")).into(),
            "--json".into(),
            p(&f("bench.json")).into(),
            "--plot".into(),
            p(&f("bench.svg")).into(),
        ],
        vec![
            "check".into(),
            "--case".into(),
            "cross_entropy_loss".into(),
            "--adapter".into(),
            adapter.clone(),
            "-q".into(),
            "--json".into(),
            p(&f("check.json")).into(),
            "--markdown".into(),
            p(&f("check.md")).into(),
        ],
        vec![
            "check".into(),
            "--compare".into(),
            p(&f("check.json")).into(),
            p(&f("check.json")).into(),
            "--markdown".into(),
            p(&f("compare.md")).into(),
        ],
        vec![
            "soak".into(),
            "--config".into(),
            p(&cfg).into(),
            "--rows".into(),
            "16".into(),
            "--steps".into(),
            "3".into(),
            "--every".into(),
            "1".into(),
            "--warmup".into(),
            "1".into(),
            "--adapter".into(),
            adapter.clone(),
            "--json".into(),
            p(&f("soak.json")).into(),
        ],
    ];
    for args in &runs {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{args:?}: {}", stderr(&o));
    }
    assert_eq!(
        names(&dir),
        [
            "batch.safetensors",
            "bench.csv",
            "bench.json",
            "bench.svg",
            "check.json",
            "check.md",
            "compare.md",
            "config.toml",
            "eval.safetensors",
            "example.safetensors",
            "soak.json"
        ]
    );
    for json in ["bench.json", "check.json", "soak.json"] {
        let text = std::fs::read_to_string(f(json)).unwrap();
        serde_json::from_str::<serde_json::Value>(&text).unwrap_or_else(|e| panic!("{json}: {e}"));
    }
    let svg = std::fs::read_to_string(f("bench.svg")).unwrap();
    assert!(
        svg.starts_with("<svg") && svg.trim_end().ends_with("</svg>"),
        "{svg:.200}"
    );
    assert_eq!(
        std::fs::read_to_string(f("bench.csv"))
            .unwrap()
            .lines()
            .count(),
        2
    );
    lossfuse_cli::io::read_batch(&f("eval.safetensors")).unwrap();
    lossfuse_cli::io::read_batch(&f("example.safetensors")).unwrap();
}

/// Runs `lossfuse args` with stderr on a pseudo-terminal; returns what the terminal showed.
fn on_a_terminal(args: &[&str]) -> (Output, String) {
    use std::io::Read;
    use std::os::fd::{FromRawFd, OwnedFd};
    let (mut master, mut slave) = (0, 0);
    // SAFETY: openpty writes two fds into the integers; the name and settings are optional.
    let rc = unsafe {
        libc::openpty(
            &mut master,
            &mut slave,
            std::ptr::null_mut(),
            std::ptr::null(),
            std::ptr::null(),
        )
    };
    assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
    // SAFETY: both fds were just opened and are owned here alone.
    let (mut master, slave) = unsafe {
        (
            std::fs::File::from_raw_fd(master),
            OwnedFd::from_raw_fd(slave),
        )
    };
    let mut cmd = bin();
    cmd.args(args)
        .stdout(Stdio::piped())
        .stderr(Stdio::from(slave));
    let child = cmd.spawn().unwrap();
    drop(cmd); // the parent's copy of the terminal side, so that reads end when the child does
    let reader = std::thread::spawn(move || {
        let mut shown = Vec::new();
        let mut buf = [0u8; 4096];
        // Ends with EIO once no process holds the terminal side.
        while let Ok(n) = master.read(&mut buf) {
            if n == 0 {
                break;
            }
            shown.extend_from_slice(&buf[..n]);
        }
        String::from_utf8_lossy(&shown).into_owned()
    });
    let o = child.wait_with_output().unwrap();
    (o, reader.join().unwrap())
}

#[test]
fn eval_shows_steps_per_second_on_a_terminal_and_nothing_elsewhere() {
    adapters();
    let dir = scratch("front_progress");
    let (cfg, input) = setup(&dir, LEARNED, 64);
    let out = dir.join("out.safetensors");
    for engine in [&["--reference"][..], &[][..]] {
        let mut args = vec![
            "eval",
            "--config",
            p(&cfg),
            "--input",
            p(&input),
            "--output",
            p(&out),
            "--steps",
            "50",
        ];
        args.extend_from_slice(engine);
        let (o, shown) = on_a_terminal(&args);
        assert_eq!(o.status.code(), Some(0), "{shown}");
        assert!(
            shown.contains("step 50/50") && shown.contains("steps/s"),
            "{engine:?}: {shown:?}"
        );
        assert!(!shown.contains('\n'), "one line, redrawn: {shown:?}");
        // The table is on stdout, unmixed.
        assert!(!stdout(&o).contains("steps/s"));
        // Off a terminal: nothing.
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0));
        assert!(!stderr(&o).contains("steps/s"), "{}", stderr(&o));
        // --quiet: nothing either.
        args.push("-q");
        let (o, shown) = on_a_terminal(&args);
        assert_eq!(o.status.code(), Some(0));
        assert!(!shown.contains("steps/s"), "{shown:?}");
    }
}

#[test]
fn without_xdg_runtime_dir_no_error_line_appears() {
    let found = adapters();
    let dir = scratch("front_xdg");
    let (cfg, input) = setup(&dir, LEARNED, 32);
    let out = dir.join("out.safetensors");
    let mut engines: Vec<Vec<String>> = vec![vec![]];
    engines.extend(
        found
            .iter()
            .map(|a| vec!["--adapter".to_string(), a.label()]),
    );
    for unset in [true, false] {
        let env = |mut c: Command| {
            if !unset {
                c.env("XDG_RUNTIME_DIR", "/no/such/lossfuse/runtime");
            }
            c
        };
        let mut c = env(bin_without_runtime_dir());
        c.arg("adapters");
        let o = run_command(c, "lossfuse adapters (no XDG_RUNTIME_DIR)");
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        assert_no_error_line(&o, "adapters");
        for engine in &engines {
            let mut c = env(bin_without_runtime_dir());
            c.args([
                "eval",
                "--config",
                p(&cfg),
                "--input",
                p(&input),
                "--output",
                p(&out),
            ]);
            c.args(engine);
            let o = run_command(c, &format!("lossfuse eval {engine:?} (no XDG_RUNTIME_DIR)"));
            assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
            assert_no_error_line(&o, &format!("eval {engine:?}"));
        }
    }
    // The directory it made is private.
    use std::os::unix::fs::MetadataExt;
    let uid = unsafe { libc::geteuid() };
    let made = std::env::temp_dir().join(format!("lossfuse-runtime-{uid}"));
    let m = std::fs::symlink_metadata(&made).unwrap();
    assert!(
        m.is_dir() && m.uid() == uid && m.mode() & 0o777 == 0o700,
        "{m:?}"
    );
}

/// Reads an f32 output file's scalars.
fn scalars(path: &Path) -> BTreeMap<String, f64> {
    let batch = lossfuse_cli::io::read_batch(path).unwrap();
    batch
        .into_iter()
        .filter(|(_, t)| t.len() == 1)
        .map(|(k, t)| match t.data {
            lossfuse::HostData::Real(v) => (k, v[0]),
            lossfuse::HostData::Int(v) => (k, v[0] as f64),
        })
        .collect()
}

#[test]
fn the_eval_table_shows_learned_s_and_what_the_total_includes() {
    let found = adapters();
    let dir = scratch("front_table");
    let (cfg, input) = setup(&dir, LEARNED, 64);
    let mut engines = vec![vec!["--reference".to_string()]];
    engines.push(vec!["--adapter".to_string(), found[0].label()]);
    for engine in &engines {
        let out = dir.join("out.safetensors");
        let mut args = vec![
            "eval",
            "--config",
            p(&cfg),
            "--input",
            p(&input),
            "--output",
            p(&out),
            "--steps",
            "4",
        ];
        args.extend(engine.iter().map(String::as_str));
        let o = run(&args);
        assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
        let text = stdout(&o);
        let t = scalars(&out);
        let row = |name: &str| -> Vec<String> {
            text.lines()
                .find(|l| l.split_whitespace().next() == Some(name))
                .unwrap_or_else(|| panic!("no row {name}:\n{text}"))
                .split_whitespace()
                .map(str::to_string)
                .collect()
        };
        let header = text.lines().find(|l| l.starts_with("term")).unwrap();
        assert!(
            header.contains("value L")
                && header.contains("weight w")
                && header.contains("learned s"),
            "{text}"
        );
        for (name, c, formula) in [
            ("classification", 1.0, "e^-s"),
            ("sigmoid_l2_loss", 0.5, "0.5·e^-s"),
        ] {
            let r = row(name);
            assert_eq!(r.len(), 7, "{r:?}");
            let (w, s): (f64, f64) = (r[2].parse().unwrap(), r[3].parse().unwrap());
            assert_eq!(r[4..], ["w", "=", formula], "{r:?}");
            // After four Adam steps s has moved; the weight is c·e^{−s}, as in the file.
            assert!(s.abs() > 1e-3, "{name}: s = {s}");
            assert!((w - c * (-s).exp()).abs() < 1e-6, "{name}: w {w}, s {s}");
            assert!((t[&format!("log_var/{name}")] - s).abs() < 1e-6, "{name}");
            assert!((t[&format!("weight/{name}")] - w).abs() < 1e-6, "{name}");
        }
        // A fixed weight has no s.
        let r = row("binary_focal_loss");
        assert_eq!(r.len(), 3, "{r:?}");
        assert_eq!(r[2].parse::<f64>().unwrap(), 0.25);
        assert!(!t.contains_key("log_var/binary_focal_loss"));
        assert!(
            text.contains("total = Σ w·L + Σ ½·s over the terms with learned weights"),
            "{text}"
        );
        // total = Σ w·L + Σ ½·s, from the file's numbers.
        let sum: f64 = ["classification", "sigmoid_l2_loss", "binary_focal_loss"]
            .iter()
            .map(|n| t[&format!("weight/{n}")] * t[&format!("loss/{n}")])
            .sum::<f64>()
            + 0.5 * (t["log_var/classification"] + t["log_var/sigmoid_l2_loss"]);
        assert!(
            (sum - t["loss/total"]).abs() < 1e-5 * sum.abs(),
            "{sum} vs {}",
            t["loss/total"]
        );
        let g = text
            .lines()
            .find(|l| l.starts_with("gradient of total"))
            .unwrap();
        assert!(
            g.contains("L2 norm") && g.contains("max |g_i|") && g.contains("elements"),
            "{text}"
        );
        let r = row("grad/x");
        assert_eq!(r[3], "64", "{r:?}");
    }
    // Without learned weights: no s column, and the total is Σ w·L.
    let (cfg, input) = setup(
        &dir,
        "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nweight = 2.0\n",
        8,
    );
    let o = run(&[
        "eval",
        "--config",
        p(&cfg),
        "--input",
        p(&input),
        "--output",
        p(&dir.join("o.safetensors")),
        "--reference",
    ]);
    let text = stdout(&o);
    assert!(
        !text.contains("learned s") && text.contains("total = Σ w·L\n"),
        "{text}"
    );
}

/// A safetensors file from a JSON header and data bytes.
fn raw_file(header: &str, data: &[u8]) -> Vec<u8> {
    let mut v = (header.len() as u64).to_le_bytes().to_vec();
    v.extend_from_slice(header.as_bytes());
    v.extend_from_slice(data);
    v
}

#[test]
fn malformed_batches_are_reported_with_the_file_and_what_is_wrong() {
    let dir = scratch("front_malformed");
    let (cfg, input) = setup(&dir, LEARNED, 16);
    let out = dir.join("out.safetensors");
    let eval = |file: &Path| {
        let o = run(&[
            "eval",
            "--config",
            p(&cfg),
            "--input",
            p(file),
            "--output",
            p(&out),
            "--reference",
        ]);
        assert_eq!(o.status.code(), Some(2), "{}", file.display());
        let e = stderr(&o);
        assert!(!e.contains("panicked"), "{e}");
        e
    };
    // 'x' twice: safetensors 0.6 keeps the second entry and blames 'y' for the first's bytes.
    let dup = dir.join("dup.safetensors");
    let f32s = |n: usize| vec![0u8; 4 * n];
    std::fs::write(
        &dup,
        raw_file(
            r#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"y":{"dtype":"F32","shape":[2],"data_offsets":[8,16]},"x":{"dtype":"F32","shape":[2],"data_offsets":[16,24]}}"#,
            &f32s(6),
        ),
    )
    .unwrap();
    let e = eval(&dup);
    assert_eq!(
        e.trim_end(),
        format!("error: tensor 'x' appears twice in {}", dup.display())
    );
    // Truncated at every length: the file is named, and what is wrong is said.
    let bytes = std::fs::read(&input).unwrap();
    let cut = dir.join("cut.safetensors");
    for len in [0, 5, 8, 20, bytes.len() / 2, bytes.len() - 1] {
        std::fs::write(&cut, &bytes[..len]).unwrap();
        let e = eval(&cut);
        assert!(
            e.contains("cut.safetensors") && e.contains("truncated"),
            "{len}: {e}"
        );
    }
    // A corrupt header.
    let bad = dir.join("bad.safetensors");
    std::fs::write(
        &bad,
        raw_file(
            r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
            &f32s(2),
        ),
    )
    .unwrap();
    let e = eval(&bad);
    assert!(
        e.contains("bad.safetensors") && e.contains("do not match its shape"),
        "{e}"
    );
    assert!(!out.exists());
}
