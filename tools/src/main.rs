//! `lossfuse`: the command line of the lossfuse GPU loss engine.
//!
//! - `lossfuse adapters`: every adapter and the limits plans are built by.
//! - `lossfuse eval --config C --input I --output O [--adapter NAME | --reference] [--steps N]`:
//!   losses, weights and gradients of a batch, as a safetensors file.
//! - `lossfuse compare A B [--rtol 1e-4]`: two `eval` outputs agree (exit 1 when not).
//! - `lossfuse bench [--shape NAME ...] [--skip NAME ...] [--adapter NAME ...] [--steps N]
//!   [--warmup N] [--gpu-steps N] [--no-reference] [--csv FILE] [--json FILE] [--plot FILE.svg]`:
//!   the throughput suite on every adapter (or those named): wall and GPU time per step, bytes,
//!   FLOPs, fraction of copy bandwidth, speed-up over the f64 CPU reference.
//! - `lossfuse check [--adapter NAME ...] [--seed S] [--case SUBSTRING ...] [--markdown FILE]
//!   [--json FILE]`: the conformance suite on every adapter against the f64 reference (exit 1 on
//!   any failure); `lossfuse check --compare A.json B.json ...` puts reports side by side.
//!
//! - `lossfuse soak ...`, `lossfuse example-batch --config C --output I [--rows B] [--seed S]`.
//!
//! Errors print `error: <message>` and exit with code 2. A closed standard output (`lossfuse
//! check --list | head -1`) stops the command quietly with exit code 141 (`lossfuse_cli::out`).
//! Every output file is checked before the run and written atomically (`lossfuse_cli::files`).

mod adapters;
mod compare;
mod eval;

// The bench suite, the conformance suite and the error type live in the library (src/lib.rs);
// `crate::error` still names the error type for the modules here.
use lossfuse_cli::{bench, check, errln, error, example_batch, io, out, runtime_dir, soak};

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// The lossfuse GPU loss engine: adapters, eval, compare, bench, check.
#[derive(Parser, Debug)]
#[command(name = "lossfuse", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// List every adapter with the limits lossfuse plans by.
    Adapters,
    /// Run a config over a safetensors batch on an adapter or the f64 reference.
    Eval(eval::EvalArgs),
    /// Compare two `eval` outputs (exit code 1 when any key is outside tolerance).
    Compare(compare::CompareArgs),
    /// Time the named shapes on every adapter (or those named) against the CPU reference.
    Bench(bench::BenchArgs),
    /// Conformance suite: every term and strategy on every adapter against the f64 reference
    /// (exit code 1 when any case fails); `--compare` puts reports side by side.
    Check(check::CheckArgs),
    /// Many steps of one config, reporting memory every K steps; exit code 1 when resident
    /// memory grows beyond the bound after warm-up.
    Soak(soak::SoakArgs),
    /// Write a valid random batch for a config (every role gets the shape and range it means).
    ExampleBatch(ExampleBatchArgs),
}

/// Arguments of `lossfuse example-batch`.
#[derive(clap::Args, Debug)]
struct ExampleBatchArgs {
    /// Loss configuration (.toml, or .json by extension).
    #[arg(long)]
    config: std::path::PathBuf,
    /// Where to write the batch (safetensors).
    #[arg(long)]
    output: std::path::PathBuf,
    /// Rows of the batch.
    #[arg(long, default_value_t = 512)]
    rows: usize,
    /// Seed of the values.
    #[arg(long, default_value_t = 1)]
    seed: u64,
}

fn write_example_batch(args: &ExampleBatchArgs) -> error::CliResult<()> {
    lossfuse_cli::files::check_output(&args.output, "--output")?;
    let config = lossfuse::LossConfig::from_path(&args.config)?;
    let batch = example_batch::example_batch(&config, args.rows, args.seed);
    io::write_batch(&args.output, &batch)
}

fn main() -> ExitCode {
    // First, before any thread or adapter exists: Mesa's EGL complains without a runtime dir.
    runtime_dir::ensure();
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        // --help, --version and usage errors, printed as clap would, but quietly on a closed pipe.
        Err(e) => {
            return match e.print() {
                Err(io) if io.kind() == std::io::ErrorKind::BrokenPipe => {
                    ExitCode::from(out::CLOSED_EXIT_CODE)
                }
                _ => ExitCode::from(u8::try_from(e.exit_code()).unwrap_or(2)),
            };
        }
    };
    let result = match &cli.command {
        Command::Adapters => adapters::run().map(|()| ExitCode::SUCCESS),
        Command::Eval(args) => eval::run(args).map(|()| ExitCode::SUCCESS),
        Command::Compare(args) => compare::run(args),
        Command::Bench(args) => bench::run(args).map(|()| ExitCode::SUCCESS),
        Command::Check(args) => check::run(args),
        Command::Soak(args) => soak::run(args),
        Command::ExampleBatch(args) => write_example_batch(args).map(|()| ExitCode::SUCCESS),
    };
    match result.and_then(|code| out::flush().map(|()| code)) {
        Ok(code) => code,
        Err(error::CliError::StdoutClosed) => ExitCode::from(out::CLOSED_EXIT_CODE),
        Err(e) => {
            errln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
