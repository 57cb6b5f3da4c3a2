//! `lossfuse-fuzz --target config-toml|config-json|config-reference|safetensors|state
//! [--iterations N] [--seed S]
//! [--crash-dir DIR] [--timeout-ms T] [--alloc-cap-mb M] [--keep-going] [--quiet]`, or
//! `lossfuse-fuzz --target T --replay FILE`. Exit code 0: nothing found; 1: a panic or a hang
//! (the input is saved in the crash directory, its path printed); an abort (SIGABRT) with a
//! message: a call allocated beyond the cap; 2: bad arguments.

use lossfuse_fuzz::{replay, run, targets::TARGETS, Options};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

const USAGE: &str = "usage: lossfuse-fuzz --target \
config-toml|config-json|config-reference|safetensors|state \
[--iterations N (100000)] [--seed S (1)] [--crash-dir DIR (fuzz/crashes)] [--timeout-ms T (2000)] \
[--alloc-cap-mb M (512)] [--keep-going] [--quiet]\n       lossfuse-fuzz --target T --replay FILE";

fn parse() -> Result<(Options, Option<PathBuf>), String> {
    let mut opts = Options {
        target: String::new(),
        iterations: 100_000,
        seed: 1,
        crash_dir: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/crashes")),
        timeout: Duration::from_millis(2000),
        alloc_cap: 512 << 20,
        keep_going: false,
        progress: true,
    };
    let mut replay = None;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
        let number = |name: &str, v: String| -> Result<u64, String> {
            v.replace('_', "")
                .parse()
                .map_err(|_| format!("{name} takes a whole number, got '{v}'"))
        };
        match a.as_str() {
            "--target" => opts.target = value("--target")?,
            "--iterations" => opts.iterations = number("--iterations", value("--iterations")?)?,
            "--seed" => opts.seed = number("--seed", value("--seed")?)?,
            "--crash-dir" => opts.crash_dir = value("--crash-dir")?.into(),
            "--timeout-ms" => {
                opts.timeout =
                    Duration::from_millis(number("--timeout-ms", value("--timeout-ms")?)?)
            }
            "--alloc-cap-mb" => {
                opts.alloc_cap =
                    (number("--alloc-cap-mb", value("--alloc-cap-mb")?)? as usize) << 20
            }
            "--replay" => replay = Some(PathBuf::from(value("--replay")?)),
            "--keep-going" => opts.keep_going = true,
            "--quiet" | "-q" => opts.progress = false,
            "--help" | "-h" => {
                println!("{USAGE}\ntargets: {}", TARGETS.join(", "));
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument '{other}'")),
        }
    }
    if opts.target.is_empty() {
        return Err(format!(
            "--target is required; targets: {}",
            TARGETS.join(", ")
        ));
    }
    Ok((opts, replay))
}

fn main() -> ExitCode {
    let (opts, replay_file) = match parse() {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: {e}\n{USAGE}");
            return ExitCode::from(2);
        }
    };
    if let Some(file) = replay_file {
        let input = match std::fs::read(&file) {
            Ok(b) => b,
            Err(e) => {
                eprintln!("error: {}: {e}", file.display());
                return ExitCode::from(2);
            }
        };
        return match replay(&opts.target, &input) {
            Ok(Ok(accepted)) => {
                println!(
                    "{}: {} ({} bytes)",
                    file.display(),
                    if accepted {
                        "accepted"
                    } else {
                        "rejected with an error"
                    },
                    input.len()
                );
                ExitCode::SUCCESS
            }
            Ok(Err(panic)) => {
                println!("{}: {panic}", file.display());
                ExitCode::from(1)
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::from(2)
            }
        };
    }
    match run(&opts) {
        Ok(s) => {
            println!(
                "{}: {} inputs in {:.1} s, {:.0} inputs/s; {} accepted ({:.1} %), {} seeds; \
                 largest allocation of one call {:.2} MiB; {} crashes; seed {}",
                s.target,
                s.iterations,
                s.elapsed.as_secs_f64(),
                s.rate(),
                s.accepted,
                100.0 * s.accepted as f64 / s.iterations.max(1) as f64,
                s.seeds,
                s.peak_alloc as f64 / (1u64 << 20) as f64,
                s.crashes.len(),
                opts.seed
            );
            for c in &s.crashes {
                println!("crash at input {}: {}", c.iteration, c.path.display());
            }
            if s.crashes.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(1)
            }
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
