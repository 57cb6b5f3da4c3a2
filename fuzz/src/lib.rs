//! `lossfuse-fuzz`: a mutation fuzzer on stable Rust (no cargo-fuzz, no nightly, no sanitizer
//! runtime) for the parsers of lossfuse and its CLI: the config (TOML and JSON), the safetensors
//! reader, and `Plan::load_state`.
//!
//! Each iteration takes a seed (or an input an earlier iteration got accepted), applies stacked
//! mutations ([`mutate`]) from a generator seeded by `--seed` (a run is reproducible), and runs
//! the target ([`targets`]) on it with three detectors:
//! - **panics**: `catch_unwind` around the call; the input is saved to the crash directory with
//!   a note of the message and the run stops with exit code 1 (or, with `--keep-going`, records
//!   one input per distinct panic location and goes on);
//! - **hangs**: a watchdog thread; a call running longer than `--timeout-ms` (2 s) has its input
//!   saved, and the process exits with code 1;
//! - **unbounded allocation**: a counting global allocator ([`alloc`]); a call whose live
//!   allocations grow beyond `--alloc-cap-mb` (512 MiB) has its input saved, and the process
//!   aborts with a message before the memory is taken.

#![warn(missing_docs)]

pub mod alloc;
pub mod mutate;
pub mod targets;

use std::io::Write;
use std::panic::AssertUnwindSafe;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

/// What a run is asked to do.
#[derive(Clone, Debug)]
pub struct Options {
    /// The target (`targets::TARGETS`, or a selftest).
    pub target: String,
    /// Mutated inputs to run.
    pub iterations: u64,
    /// Seed of the mutations.
    pub seed: u64,
    /// Where crash inputs go.
    pub crash_dir: PathBuf,
    /// The longest a call may take.
    pub timeout: Duration,
    /// The most bytes one call may have live.
    pub alloc_cap: usize,
    /// Go on after a panic (one saved input per panic location).
    pub keep_going: bool,
    /// Print a status line on stderr every few seconds.
    pub progress: bool,
}

/// A saved finding.
#[derive(Clone, Debug)]
pub struct Crash {
    /// The saved input.
    pub path: PathBuf,
    /// The panic message and location.
    pub message: String,
    /// The iteration that found it.
    pub iteration: u64,
}

/// What a run did.
#[derive(Clone, Debug)]
pub struct Summary {
    /// The target.
    pub target: String,
    /// Inputs run (mutated ones; the seeds are run once more before them).
    pub iterations: u64,
    /// Of those, the ones the code under test accepted.
    pub accepted: u64,
    /// Seeds in the corpus.
    pub seeds: usize,
    /// Wall time of the iterations.
    pub elapsed: Duration,
    /// The most bytes one call had live.
    pub peak_alloc: usize,
    /// Panics found.
    pub crashes: Vec<Crash>,
}

impl Summary {
    /// Inputs per second.
    pub fn rate(&self) -> f64 {
        self.iterations as f64 / self.elapsed.as_secs_f64().max(1e-9)
    }
}

/// FNV-1a of the input, for crash file names.
fn fnv(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        h ^= b as u64;
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h
}

/// Saves a crash input as `<dir>/<target>-<kind>-<hash>.bin` with a note beside it (`.txt`:
/// the message and how to replay it); returns the input's path.
pub fn save_crash(
    dir: &Path,
    target: &str,
    kind: &str,
    input: &[u8],
    message: &str,
) -> std::io::Result<PathBuf> {
    std::fs::create_dir_all(dir)?;
    let path = dir.join(format!("{target}-{kind}-{:016x}.bin", fnv(input)));
    std::fs::write(&path, input)?;
    let note = format!(
        "target: {target}\nkind: {kind}\nbytes: {}\nmessage:\n{message}\n\nreplay: cargo run --release -p lossfuse-fuzz -- --target {target} --replay {}\n",
        input.len(),
        path.display()
    );
    std::fs::write(path.with_extension("txt"), note)?;
    Ok(path)
}

/// The last panic's message and location, recorded by the hook (which prints nothing: a run
/// that keeps going would print thousands).
static LAST_PANIC: Mutex<Option<String>> = Mutex::new(None);

fn install_panic_hook() {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        std::panic::set_hook(Box::new(|info| {
            if let Ok(mut last) = LAST_PANIC.lock() {
                *last = Some(info.to_string());
            }
        }));
    });
}

/// Milliseconds since [`epoch`] at which the current call began, plus 1 (0: no call).
static BUSY_SINCE: AtomicU64 = AtomicU64::new(0);

fn epoch() -> Instant {
    static E: OnceLock<Instant> = OnceLock::new();
    *E.get_or_init(Instant::now)
}

fn now_ms() -> u64 {
    epoch().elapsed().as_millis() as u64 + 1
}

/// Starts the watchdog (once per process): a call longer than `timeout` has its input saved and
/// ends the process with exit code 1.
fn start_watchdog(timeout: Duration) {
    static ONCE: OnceLock<()> = OnceLock::new();
    ONCE.get_or_init(|| {
        let limit = timeout.as_millis() as u64;
        std::thread::spawn(move || loop {
            std::thread::sleep(Duration::from_millis(20));
            let since = BUSY_SINCE.load(Ordering::SeqCst);
            if since != 0 && now_ms().saturating_sub(since) > limit {
                let saved = match alloc::CURRENT.lock() {
                    Ok(c) => match &c.crash_dir {
                        Some(dir) => save_crash(
                            dir,
                            &c.target,
                            "hang",
                            &c.input,
                            &format!("one call ran longer than {limit} ms"),
                        )
                        .map(|p| p.display().to_string())
                        .unwrap_or_else(|e| format!("(not saved: {e})")),
                        None => "(no crash directory)".into(),
                    },
                    Err(_) => "(not saved)".into(),
                };
                eprintln!(
                    "lossfuse-fuzz: hang: one call ran longer than {limit} ms; input saved to {saved}"
                );
                let _ = std::io::stdout().flush();
                std::process::exit(1);
            }
        });
    });
}

/// Runs `input` through `harness` under the three detectors. Ok(accepted), or Err(panic message).
fn guarded(
    harness: &mut dyn targets::Harness,
    input: &[u8],
    cap: usize,
    peak: &mut usize,
) -> Result<bool, String> {
    {
        let mut c = alloc::CURRENT.lock().expect("the input store");
        c.input.clear();
        c.input.extend_from_slice(input);
    }
    BUSY_SINCE.store(now_ms(), Ordering::SeqCst);
    alloc::arm(cap);
    let r = std::panic::catch_unwind(AssertUnwindSafe(|| harness.run(input)));
    *peak = (*peak).max(alloc::disarm());
    BUSY_SINCE.store(0, Ordering::SeqCst);
    r.map_err(|payload| {
        LAST_PANIC
            .lock()
            .ok()
            .and_then(|mut l| l.take())
            .unwrap_or_else(|| {
                payload
                    .downcast_ref::<&str>()
                    .map(|s| s.to_string())
                    .or_else(|| payload.downcast_ref::<String>().cloned())
                    .unwrap_or_else(|| "a panic without a message".into())
            })
    })
}

/// The panic's location ("file:line:col"), to tell one bug from another.
fn location(message: &str) -> String {
    match message.strip_prefix("panicked at ") {
        Some(m) => m.split(':').take(3).collect::<Vec<_>>().join(":"),
        None => message.to_string(),
    }
}

/// Records a panic: saves its input unless one with the same location was saved already.
/// Returns whether to go on.
fn record(
    opts: &Options,
    crashes: &mut Vec<Crash>,
    iteration: u64,
    input: &[u8],
    message: String,
) -> Result<bool, String> {
    let loc = location(&message);
    if crashes.iter().any(|c| location(&c.message) == loc) {
        return Ok(opts.keep_going);
    }
    let path =
        save_crash(&opts.crash_dir, &opts.target, "panic", input, &message).map_err(|e| {
            format!(
                "cannot save a crash input in {}: {e}",
                opts.crash_dir.display()
            )
        })?;
    eprintln!(
        "lossfuse-fuzz: panic at input {iteration}: {}\n  input saved to {}",
        message.replace('\n', "\n  "),
        path.display()
    );
    crashes.push(Crash {
        path,
        message,
        iteration,
    });
    Ok(opts.keep_going)
}

/// Runs one input file through a target: Ok(accepted) or Err(panic message).
pub fn replay(target: &str, input: &[u8]) -> Result<Result<bool, String>, String> {
    install_panic_hook();
    let mut h = targets::harness(target)?;
    let mut peak = 0;
    Ok(guarded(h.as_mut(), input, usize::MAX, &mut peak))
}

/// Runs `opts.iterations` mutated inputs through the target.
pub fn run(opts: &Options) -> Result<Summary, String> {
    install_panic_hook();
    let mut harness = targets::harness(&opts.target)?;
    let seeds = harness.seeds();
    if seeds.is_empty() {
        return Err("the target has no seeds".into());
    }
    {
        let mut c = alloc::CURRENT.lock().expect("the input store");
        c.crash_dir = Some(opts.crash_dir.clone());
        c.target = opts.target.clone();
    }
    start_watchdog(opts.timeout);
    let mut peak = 0;
    let mut crashes: Vec<Crash> = Vec::new();
    // Every seed as it is first: a seed the target rejects means a broken harness or corpus.
    for (i, s) in seeds.iter().enumerate() {
        match guarded(harness.as_mut(), s, opts.alloc_cap, &mut peak) {
            Ok(true) => {}
            Ok(false) => {
                return Err(format!(
                    "seed {i} of {} is rejected by the target",
                    opts.target
                ))
            }
            Err(m) => {
                if !record(opts, &mut crashes, 0, s, m)? {
                    return Ok(summary(
                        opts,
                        0,
                        0,
                        seeds.len(),
                        Duration::ZERO,
                        peak,
                        crashes,
                    ));
                }
            }
        }
    }
    let mutator = mutate::Mutator::new(&seeds, harness.text(), harness.max_len());
    let mut rng = mutate::Rng::new(opts.seed);
    // Accepted mutants, mutated further later: without coverage feedback, the inputs that got
    // past the parser are the ones worth building on.
    let mut pool: Vec<Vec<u8>> = Vec::new();
    const POOL: usize = 512;
    let mut accepted = 0;
    let start = Instant::now();
    let mut last_report = Instant::now();
    let mut input = Vec::new();
    for i in 1..=opts.iterations {
        let base = if !pool.is_empty() && rng.one_in(3) {
            rng.pick(&pool)
        } else {
            rng.pick(&seeds)
        };
        input.clear();
        input.extend_from_slice(base);
        let other = if !pool.is_empty() && rng.one_in(4) {
            rng.pick(&pool)
        } else {
            rng.pick(&seeds)
        };
        mutator.mutate(&mut rng, &mut input, other);
        match guarded(harness.as_mut(), &input, opts.alloc_cap, &mut peak) {
            Ok(true) => {
                accepted += 1;
                if pool.len() < POOL {
                    pool.push(input.clone());
                } else if rng.one_in(8) {
                    let k = rng.below(POOL);
                    pool[k].clone_from(&input);
                }
            }
            Ok(false) => {}
            Err(m) => {
                if !record(opts, &mut crashes, i, &input, m)? {
                    return Ok(summary(
                        opts,
                        i,
                        accepted,
                        seeds.len(),
                        start.elapsed(),
                        peak,
                        crashes,
                    ));
                }
            }
        }
        if opts.progress && i % 256 == 0 && last_report.elapsed() > Duration::from_secs(10) {
            last_report = Instant::now();
            let secs = start.elapsed().as_secs_f64();
            eprintln!(
                "[{}] {i}/{} inputs, {:.0}/s, {accepted} accepted, {} crashes",
                opts.target,
                opts.iterations,
                i as f64 / secs,
                crashes.len()
            );
        }
    }
    Ok(summary(
        opts,
        opts.iterations,
        accepted,
        seeds.len(),
        start.elapsed(),
        peak,
        crashes,
    ))
}

fn summary(
    opts: &Options,
    iterations: u64,
    accepted: u64,
    seeds: usize,
    elapsed: Duration,
    peak_alloc: usize,
    crashes: Vec<Crash>,
) -> Summary {
    Summary {
        target: opts.target.clone(),
        iterations,
        accepted,
        seeds,
        elapsed,
        peak_alloc,
        crashes,
    }
}
