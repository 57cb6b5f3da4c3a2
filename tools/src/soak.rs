//! `lossfuse soak`: many steps of one config on one adapter, reporting the process's resident
//! memory (RSS) and the plan's GPU buffer bytes every K steps, and failing when RSS grows beyond
//! a stated bound after warm-up. A trainer runs millions of steps; a driver that leaks a little
//! per dispatch shows here long before it does there.

use crate::error::{CliError, CliResult};
use lossfuse::{Engine, EngineOptions, HostBatch, LossConfig, OwnedBatch, Shapes};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `lossfuse soak`.
#[derive(clap::Args, Debug)]
pub struct SoakArgs {
    /// Loss configuration (.toml, or .json by extension).
    #[arg(long)]
    pub config: PathBuf,
    /// Input batch (safetensors); without it, `example-batch`'s random batch for the config.
    #[arg(long)]
    pub input: Option<PathBuf>,
    /// Rows of the generated batch (without --input).
    #[arg(long, default_value_t = 512)]
    pub rows: usize,
    /// Seed of the generated batch (without --input).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Steps to run.
    #[arg(long, default_value_t = 10_000)]
    pub steps: u64,
    /// Report every this many steps.
    #[arg(long, default_value_t = 1_000)]
    pub every: u64,
    /// Steps before the baseline is taken (pipelines, driver caches and allocator pools settle).
    #[arg(long, default_value_t = 200)]
    pub warmup: u64,
    /// The largest RSS growth after warm-up, in MB, that passes.
    #[arg(long, default_value_t = 16.0)]
    pub max_growth_mb: f64,
    /// The adapter (a case-insensitive substring of "name (backend)"); default as `eval`.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Also write the samples and the verdict as JSON.
    #[arg(long)]
    pub json: Option<PathBuf>,
}

/// One report line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct Sample {
    /// Steps done.
    pub step: u64,
    /// Resident memory of the process, bytes.
    pub rss_bytes: u64,
    /// Bytes of the buffers the plan owns on the device.
    pub gpu_buffer_bytes: u64,
    /// Mean wall time per step since the previous sample, seconds.
    pub seconds_per_step: f64,
}

/// What a soak run measured.
#[derive(Clone, Debug, serde::Serialize)]
pub struct SoakResult {
    /// The adapter's label.
    pub adapter: String,
    /// The config file.
    pub config: String,
    /// Rows per step.
    pub rows: usize,
    /// Steps run.
    pub steps: u64,
    /// RSS at the end of warm-up, bytes.
    pub baseline_rss_bytes: u64,
    /// Largest RSS after warm-up minus the baseline, bytes.
    pub growth_bytes: i64,
    /// The bound, bytes.
    pub max_growth_bytes: u64,
    /// Whether growth stayed within the bound.
    pub passed: bool,
    /// Every report.
    pub samples: Vec<Sample>,
    /// UTC date of the run.
    pub date: String,
    /// Build commit.
    pub commit: String,
}

/// Resident memory of this process in bytes (Linux `/proc/self/statm`; None elsewhere).
pub fn rss_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

/// Runs `lossfuse soak`; exit code 1 when memory grew beyond the bound.
pub fn run(args: &SoakArgs) -> CliResult<std::process::ExitCode> {
    if let Some(path) = &args.json {
        crate::files::check_output(path, "--json")?;
    }
    let result = soak(args)?;
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&result)
            .map_err(|e| CliError::file(path, format!("cannot serialise: {e}")))?;
        crate::files::write_bytes(path, text.as_bytes())?;
    }
    let mb = |b: f64| b / 1e6;
    outln!(
        "{}: RSS grew {:.1} MB after warm-up (bound {:.1} MB) over {} steps: {}",
        result.adapter,
        mb(result.growth_bytes as f64),
        mb(result.max_growth_bytes as f64),
        result.steps,
        if result.passed { "PASS" } else { "FAIL" }
    )?;
    Ok(if result.passed {
        std::process::ExitCode::SUCCESS
    } else {
        std::process::ExitCode::from(1)
    })
}

fn load_batch(args: &SoakArgs, config: &LossConfig) -> CliResult<HostBatch> {
    match &args.input {
        Some(path) => crate::io::read_batch(path),
        None => Ok(crate::example_batch::example_batch(
            config, args.rows, args.seed,
        )),
    }
}

/// Runs the steps and measures; prints one line per report.
pub fn soak(args: &SoakArgs) -> CliResult<SoakResult> {
    if args.every == 0 || args.steps == 0 {
        return Err(CliError::Usage(
            "--steps and --every must be at least 1".into(),
        ));
    }
    let rss = || {
        rss_bytes().ok_or_else(|| {
            CliError::Usage("soak reads the RSS from /proc/self/statm: Linux only".into())
        })
    };
    let config = LossConfig::from_path(&args.config)?;
    let batch = load_batch(args, &config)?;
    let engine = match &args.adapter {
        Some(name) => Engine::with_adapter(name, EngineOptions::default())?,
        None => Engine::new()?,
    };
    let mut plan = engine.plan(&config, &Shapes::of_host(&batch))?;
    let owned = OwnedBatch::from_host(&batch)?;
    let gpu_batch = owned.batch();
    let mut samples = Vec::new();
    let mut baseline = None;
    let mut growth = 0i64;
    let mut since = Instant::now();
    outln!(
        "{:>10}  {:>10}  {:>10}  {:>10}",
        "step",
        "RSS MB",
        "GPU MB",
        "ms/step"
    )?;
    for step in 1..=args.steps {
        plan.step(&gpu_batch)?.report_blocking()?;
        if step == args.warmup.min(args.steps) {
            baseline = Some(rss()?);
        }
        let now = rss()?;
        if let Some(base) = baseline {
            growth = growth.max(now as i64 - base as i64);
        }
        if step % args.every == 0 || step == args.steps {
            let done = samples.last().map_or(0, |s: &Sample| s.step);
            let sample = Sample {
                step,
                rss_bytes: now,
                gpu_buffer_bytes: plan.allocated_bytes(),
                seconds_per_step: since.elapsed().as_secs_f64() / (step - done) as f64,
            };
            outln!(
                "{:>10}  {:>10.1}  {:>10.2}  {:>10.3}",
                step,
                now as f64 / 1e6,
                sample.gpu_buffer_bytes as f64 / 1e6,
                sample.seconds_per_step * 1e3
            )?;
            samples.push(sample);
            since = Instant::now();
        }
    }
    let max_growth_bytes = (args.max_growth_mb * 1e6) as u64;
    Ok(SoakResult {
        adapter: engine.adapter().label(),
        config: args.config.display().to_string(),
        rows: batch
            .values()
            .next()
            .map_or(0, |t| t.shape.first().copied().unwrap_or(1)),
        steps: args.steps,
        baseline_rss_bytes: baseline.unwrap_or(0),
        growth_bytes: growth,
        max_growth_bytes,
        passed: growth <= max_growth_bytes as i64,
        samples,
        date: crate::provenance::utc_now().1,
        commit: crate::provenance::git_commit()
            .map(|(hash, dirty)| if dirty { format!("{hash}-dirty") } else { hash })
            .unwrap_or_default(),
    })
}
