//! `lossfuse bench`: the throughput suite. Every named shape ([`SHAPES`]) runs on every chosen
//! adapter and reports, per shape × adapter:
//!
//! - wall time per step: the median (and minimum) of `--steps` timed steps after `--warmup`
//!   untimed ones, each step being `plan.step` followed by `report_blocking`, so the GPU work is
//!   finished when the clock stops; host inputs are uploaded by the step, as a trainer passing
//!   host slices would;
//! - GPU time: where the adapter has timestamp queries, `--gpu-steps` more steps with pass timing
//!   on (kept apart from the wall-clock steps, whose time the queries would change): the median
//!   GPU seconds of every pass and of their sum;
//! - the bytes a step must move (`Plan::bytes_per_step`), the floating-point operations it must do
//!   ([`shapes::flops`], an analytic model), and the achieved fraction of the adapter's
//!   buffer-to-buffer copy bandwidth, measured here on the same adapter;
//! - the f64 CPU reference ([`lossfuse::reference::Reference`]) on the same inputs: its seconds per
//!   step, the GPU's speed-up over it, and how far the GPU's first-step total loss is from the
//!   reference's.
//!
//! Output: a table on stdout, a progress bar on stderr, `--csv`, `--json` and `--plot` (an SVG of
//! throughput against size, one panel per family, one line per series and adapter).

mod output;
pub mod peer;
mod plot;
pub mod progress;
pub mod shapes;

pub use output::{csv_text, CSV_COLUMNS};
pub use progress::{Phase, Progress};
pub use shapes::{
    baseline, find_shape, seed_of, session_work, step_all, zipf_sessions, Case, Family, Shape,
    BATCH_WIDE, SHAPES,
};

use crate::error::{CliError, CliResult};
use lossfuse::{AdapterSummary, Engine, EngineOptions};
use std::path::PathBuf;
use std::time::Instant;

/// Arguments of `lossfuse bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Shapes to run (repeatable); default: all. `--list` names them.
    #[arg(long = "shape", value_name = "NAME")]
    pub shapes: Vec<String>,
    /// Shapes to leave out (repeatable), e.g. the slowest on a software adapter.
    #[arg(long = "skip", value_name = "NAME")]
    pub skip: Vec<String>,
    /// Adapters (repeatable; a case-insensitive substring of "name (backend)", e.g. `vulkan`,
    /// `gl`); default: LOSSFUSE_ADAPTER when set, else every adapter found.
    #[arg(long = "adapter", value_name = "NAME")]
    pub adapters: Vec<String>,
    /// Timed steps per shape and adapter (the median is reported).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Steps with timestamp queries after the timed ones (GPU time per pass); 0: none.
    #[arg(long, default_value_t = 3)]
    pub gpu_steps: u32,
    /// Stop a shape's timed steps once they add up to this many seconds (at least one is timed;
    /// then one GPU-timing step at most): bounds the slowest shapes on software adapters. The
    /// steps actually timed are reported.
    #[arg(long, value_name = "SECONDS")]
    pub time_budget: Option<f64>,
    /// Skip the f64 CPU reference comparison.
    #[arg(long)]
    pub no_reference: bool,
    /// Skip the reference for shapes whose step models more than this many GFLOP (the reference
    /// is one CPU thread in f64: minutes for the largest retrieval shape).
    #[arg(long, default_value_t = 50.0, value_name = "GFLOP")]
    pub reference_max_gflop: f64,
    /// Write the rows as CSV (one row per shape × adapter) to this file.
    #[arg(long, value_name = "FILE")]
    pub csv: Option<PathBuf>,
    /// Write the adapters, the run's settings and the rows (with GPU time per pass) as JSON.
    #[arg(long, value_name = "FILE")]
    pub json: Option<PathBuf>,
    /// Write an SVG chart of throughput against size (one panel per family) to this file.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// No progress bar.
    #[arg(long, short)]
    pub quiet: bool,
    /// List the shapes and exit.
    #[arg(long)]
    pub list: bool,
    /// Bind every input as a buffer on the device, uploaded once before the steps (a trainer's
    /// tensors): steps upload nothing, and the GPU value checks of device buffers run.
    #[arg(long)]
    pub device_inputs: bool,
    /// Run a peer beside lossfuse on the same inputs: `torch` (python3) or `torch:PYTHON`
    /// (`bench/peers/torch_peer.py`: eager and torch.compile, on CUDA when an adapter is an
    /// NVIDIA GPU and torch sees one, else on the CPU with one thread per core). Adds the peer's
    /// time, lossfuse's speed over it and the loss agreement to every output.
    #[arg(long, value_name = "torch[:PYTHON]", value_parser = peer::PeerSpec::parse)]
    pub peer: Option<peer::PeerSpec>,
    /// The peer's eager column only (torch.compile takes minutes per shape on a small CPU).
    #[arg(long, requires = "peer")]
    pub peer_no_compile: bool,
    /// Write every shape's inputs (`<shape>.safetensors`, reals F32 bit for bit, ids I64) and
    /// metadata (`<shape>.json`: configs, lossfuse's and the reference's first-step totals) to
    /// this folder, the files the peer reads.
    #[arg(long, value_name = "DIR")]
    pub dump_inputs: Option<PathBuf>,
}

/// Settings of one measurement.
#[derive(Clone, Copy, Debug)]
pub struct MeasureOptions {
    /// Untimed steps.
    pub warmup: u32,
    /// Timed steps.
    pub steps: u32,
    /// Steps with pass timing (where the adapter has timestamp queries).
    pub gpu_steps: u32,
    /// Seconds of timed steps after which timing stops early (see `--time-budget`).
    pub time_budget: Option<f64>,
    /// Inputs as device buffers (see `--device-inputs`).
    pub device_inputs: bool,
}

/// GPU time from timestamp queries.
#[derive(Clone, Debug)]
pub struct GpuTimes {
    /// Steps with timing on.
    pub steps: u32,
    /// Median over those steps of the sum of every pass's GPU seconds.
    pub total_s: f64,
    /// Every pass in order (label, median GPU seconds); labels are prefixed `plan<k>/` when a
    /// case steps several plans.
    pub passes: Vec<(String, f64)>,
}

/// What the f64 CPU reference gave on the case's inputs.
#[derive(Clone, Debug)]
pub enum ReferenceRun {
    /// It ran.
    Ran {
        /// Median seconds of one step of every plan's reference.
        seconds: f64,
        /// Steps timed (each from the initial state).
        steps: u32,
        /// The total loss of that step (summed over plans).
        total: f64,
    },
    /// It did not run, and why.
    Skipped(String),
}

/// One shape measured on one adapter.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Shape name.
    pub shape: String,
    /// The shape's family.
    pub family: Family,
    /// Its series in the family's plot panel.
    pub series: String,
    /// The adapter's "name (backend)".
    pub adapter: String,
    /// The adapter's backend.
    pub backend: String,
    /// Plans stepped per step.
    pub plans: usize,
    /// Rows per step.
    pub rows: usize,
    /// Untimed steps.
    pub warmup: u32,
    /// Timed steps.
    pub steps: u32,
    /// Median seconds per step.
    pub median_s: f64,
    /// Fastest step, seconds.
    pub min_s: f64,
    /// GPU time per pass, where the adapter has timestamp queries and `--gpu-steps` > 0.
    pub gpu: Option<GpuTimes>,
    /// Why `gpu` is empty.
    pub gpu_note: String,
    /// Bytes a step must move (sum of `Plan::bytes_per_step`).
    pub bytes_per_step: u64,
    /// Floating-point operations a step must do ([`shapes::flops`]).
    pub flops_per_step: u64,
    /// Units of the family's work per step.
    pub work_per_step: u64,
    /// Compute dispatches per step (all plans).
    pub dispatches_per_step: u64,
    /// Queue submissions per step (all plans).
    pub submissions_per_step: u64,
    /// Pairwise shapes: (Σ over sessions of size², pairs) per step.
    pub session_work: (u64, u64),
    /// Retrieval shapes: similarity scores per step.
    pub scores: u64,
    /// GPU buffers the plans hold (`Plan::allocated_bytes`): the peak, as nothing is allocated
    /// per step.
    pub allocated_bytes: u64,
    /// Total loss of the first step of fresh plans (summed over plans), for the reference check.
    pub first_total: f64,
    /// The reference on the same inputs.
    pub reference: ReferenceRun,
    /// The peer (`--peer`) on the same inputs.
    pub peer: peer::PeerRun,
    /// The adapter's measured copy bandwidth, bytes/s.
    pub copy_bandwidth: f64,
}

impl BenchRow {
    /// Rows per second at the median.
    pub fn rows_per_s(&self) -> f64 {
        self.rows as f64 / self.median_s
    }
    /// Achieved bytes per second at the median.
    pub fn bytes_per_s(&self) -> f64 {
        self.bytes_per_step as f64 / self.median_s
    }
    /// Achieved fraction of the adapter's copy bandwidth.
    pub fn fraction_of_copy(&self) -> f64 {
        self.bytes_per_s() / self.copy_bandwidth
    }
    /// Modelled floating-point operations per second at the median.
    pub fn flops_per_s(&self) -> f64 {
        self.flops_per_step as f64 / self.median_s
    }
    /// Units of work per second at the median.
    pub fn work_per_s(&self) -> f64 {
        self.work_per_step as f64 / self.median_s
    }
    /// Reference seconds per step over the GPU's median.
    pub fn speedup(&self) -> Option<f64> {
        match self.reference {
            ReferenceRun::Ran { seconds, .. } => Some(seconds / self.median_s),
            ReferenceRun::Skipped(_) => None,
        }
    }
    /// |GPU − reference| / |reference| of the first step's total loss.
    pub fn reference_rel_diff(&self) -> Option<f64> {
        match self.reference {
            ReferenceRun::Ran { total, .. } => {
                Some((self.first_total - total).abs() / total.abs().max(1e-30))
            }
            ReferenceRun::Skipped(_) => None,
        }
    }
}

/// The median of `v` (sorted in place); 0 when empty.
fn median(v: &mut [f64]) -> f64 {
    if v.is_empty() {
        return 0.0;
    }
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        0.5 * (v[n / 2 - 1] + v[n / 2])
    }
}

/// Builds the case's plans on `engine`, runs `warmup` untimed and `steps` timed steps (fewer when
/// they exceed `time_budget`), then (with timestamp queries) `gpu_steps` steps with pass timing. `progress` hears of every step. The
/// row's reference is `Skipped` and its copy bandwidth 0 until the caller fills them in.
pub fn measure(
    engine: &Engine,
    case: &Case,
    opts: MeasureOptions,
    progress: &mut dyn FnMut(Phase, u32, u32),
) -> CliResult<BenchRow> {
    progress(Phase::Build, 0, 0);
    let mut plans = case.plans(engine)?;
    let buffers = opts
        .device_inputs
        .then(|| upload_inputs(engine, &case.batch()));
    let batch = match &buffers {
        Some(buffers) => buffers
            .iter()
            .fold(lossfuse::Batch::new(), |b, (name, buf)| {
                b.buffer(name.clone(), buf)
            }),
        None => case.batch(),
    };
    let bytes_per_step = plans.iter().map(|p| p.bytes_per_step()).sum();
    let allocated_bytes = plans.iter().map(|p| p.allocated_bytes()).sum();
    let mut times = Vec::with_capacity(opts.steps as usize);
    let (mut dispatches, mut submissions) = (0, 0);
    let mut first_total = 0.0;
    let over_budget = |times: &[f64]| {
        opts.time_budget
            .is_some_and(|b| times.iter().sum::<f64>() >= b)
    };
    for i in 0..opts.warmup + opts.steps {
        if i < opts.warmup {
            progress(Phase::Warmup, i + 1, opts.warmup);
        } else {
            progress(Phase::Timed, i - opts.warmup + 1, opts.steps);
        }
        let start = Instant::now();
        let (mut d, mut s, mut total) = (0, 0, 0.0);
        for plan in plans.iter_mut() {
            let out = plan.step(&batch)?;
            total += out.report_blocking()?.total as f64;
            d += out.counters().dispatches;
            s += out.counters().submissions;
        }
        let elapsed = start.elapsed().as_secs_f64();
        if i == 0 {
            first_total = total;
        }
        (dispatches, submissions) = (d, s);
        if i >= opts.warmup {
            times.push(elapsed);
            if over_budget(&times) {
                break;
            }
        }
    }
    let gpu_steps = if over_budget(&times) {
        opts.gpu_steps.min(1)
    } else {
        opts.gpu_steps
    };
    let steps = times.len() as u32;
    let median_s = median(&mut times).max(1e-9);
    let (gpu, gpu_note) = if gpu_steps == 0 {
        (None, "--gpu-steps 0".to_string())
    } else if !engine.adapter().timestamps {
        (None, "no timestamp queries".to_string())
    } else {
        gpu_times(&mut plans, &batch, gpu_steps, progress)?
    };
    Ok(BenchRow {
        shape: case.name.clone(),
        family: case.family,
        series: case.series.to_string(),
        adapter: engine.adapter().label(),
        backend: engine.adapter().backend.clone(),
        plans: plans.len(),
        rows: case.rows,
        warmup: opts.warmup,
        steps,
        median_s,
        min_s: times.first().copied().unwrap_or(median_s),
        gpu,
        gpu_note,
        bytes_per_step,
        flops_per_step: case.flops,
        work_per_step: case.work,
        dispatches_per_step: dispatches,
        submissions_per_step: submissions,
        session_work: case.session_work,
        scores: case.scores,
        allocated_bytes,
        first_total,
        reference: ReferenceRun::Skipped("not run".into()),
        peer: peer::PeerRun::Skipped("no --peer".into()),
        copy_bandwidth: 0.0,
    })
}

/// Every input of `batch` in a storage buffer of its own on `engine`'s device.
fn upload_inputs(
    engine: &Engine,
    batch: &lossfuse::Batch,
) -> Vec<(String, lossfuse::wgpu::Buffer)> {
    use lossfuse::wgpu::util::DeviceExt;
    use lossfuse::Input;
    let bytes_of = |input: &Input| -> Vec<u8> {
        match input {
            Input::F32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::I32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::U32(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::I64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::U64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::F64(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Input::Buffer(_) | Input::BufferAt(..) => Vec::new(),
        }
    };
    batch
        .names()
        .map(|name| {
            let mut contents = bytes_of(batch.get(name).expect("a name of the batch"));
            contents.resize(contents.len().max(4).next_multiple_of(4), 0);
            let buffer =
                engine
                    .device()
                    .create_buffer_init(&lossfuse::wgpu::util::BufferInitDescriptor {
                        label: Some(name),
                        contents: &contents,
                        usage: lossfuse::wgpu::BufferUsages::STORAGE,
                    });
            (name.clone(), buffer)
        })
        .collect()
}

/// `steps` steps with pass timing on every plan: the median of each pass and of the per-step sum.
fn gpu_times(
    plans: &mut [lossfuse::Plan],
    batch: &lossfuse::Batch,
    steps: u32,
    progress: &mut dyn FnMut(Phase, u32, u32),
) -> CliResult<(Option<GpuTimes>, String)> {
    for plan in plans.iter_mut() {
        if let Err(e) = plan.enable_pass_timing() {
            return Ok((None, format!("pass timing unavailable: {e}")));
        }
    }
    let many = plans.len() > 1;
    let mut labels: Vec<String> = Vec::new();
    let mut per_pass: Vec<Vec<f64>> = Vec::new();
    let mut totals = Vec::new();
    for i in 0..steps {
        progress(Phase::GpuTiming, i + 1, steps);
        let mut k = 0;
        let mut total = 0.0;
        for (p, plan) in plans.iter_mut().enumerate() {
            plan.step(batch)?.report_blocking()?;
            for (label, seconds) in plan.pass_times()? {
                if i == 0 {
                    labels.push(if many {
                        format!("plan{p}/{label}")
                    } else {
                        label
                    });
                    per_pass.push(Vec::new());
                }
                if let Some(v) = per_pass.get_mut(k) {
                    v.push(seconds);
                }
                total += seconds;
                k += 1;
            }
        }
        totals.push(total);
    }
    let passes = labels
        .into_iter()
        .zip(per_pass.iter_mut())
        .map(|(l, v)| (l, median(v)))
        .collect();
    Ok((
        Some(GpuTimes {
            steps,
            total_s: median(&mut totals),
            passes,
        }),
        String::new(),
    ))
}

/// Times the f64 reference on the case's inputs: one step of every plan's reference from the
/// initial state (a full bank for CBNS, as on the GPU); two more, and the median, when a step
/// takes under half a second. Gives the first step's total loss too.
pub fn reference_run(case: &Case) -> CliResult<ReferenceRun> {
    let host = case.host_batch();
    let mut times = Vec::new();
    let mut first_total = 0.0;
    for i in 0..3 {
        let mut refs = case.references()?;
        let start = Instant::now();
        let mut total = 0.0;
        for r in refs.iter_mut() {
            total += r.step(&host)?.total;
        }
        times.push(start.elapsed().as_secs_f64());
        if i == 0 {
            first_total = total;
            if times[0] >= 0.5 {
                break;
            }
        }
    }
    let steps = times.len() as u32;
    Ok(ReferenceRun::Ran {
        seconds: median(&mut times).max(1e-9),
        steps,
        total: first_total,
    })
}

/// An adapter as the suite ran it: what it is and its measured copy bandwidth.
#[derive(Clone, Debug)]
pub struct AdapterRun {
    /// Name, backend, driver, limits.
    pub summary: AdapterSummary,
    /// Buffer-to-buffer copy bandwidth, bytes per second (reads + writes).
    pub copy_bandwidth: f64,
    /// Bytes of the copy it was measured with.
    pub copy_bytes: u64,
}

/// "llvmpipe (Vulkan)" for "llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)": short enough for a
/// table column or a legend, still telling the backends apart.
pub fn short_label(summary_label: &str) -> String {
    match (summary_label.find(" ("), summary_label.rfind(" (")) {
        (Some(first), Some(last)) if first < last => {
            format!("{}{}", &summary_label[..first], &summary_label[last..])
        }
        _ => summary_label.to_string(),
    }
}

/// The shape names to run: `--shape` or all, less `--skip`; unknown names are errors.
pub fn chosen_shapes(args: &BenchArgs) -> CliResult<Vec<&'static Shape>> {
    for n in args.shapes.iter().chain(&args.skip) {
        find_shape(n)?;
    }
    let names: Vec<&str> = if args.shapes.is_empty() {
        SHAPES
            .iter()
            .filter(|s| !s.gpu_sized)
            .map(|s| s.name)
            .collect()
    } else {
        args.shapes.iter().map(String::as_str).collect()
    };
    names
        .into_iter()
        .filter(|n| !args.skip.iter().any(|s| s == n))
        .map(find_shape)
        .collect()
}

/// Where the inputs are dumped: `--dump-inputs`, else, for the peer, a folder of this run's
/// own under the system's temporary folder (None: neither flag).
fn dump_folder(args: &BenchArgs) -> CliResult<Option<PathBuf>> {
    if let Some(dir) = &args.dump_inputs {
        return Ok(Some(dir.clone()));
    }
    Ok(args
        .peer
        .as_ref()
        .map(|_| std::env::temp_dir().join(format!("lossfuse-bench-peer-{}", std::process::id()))))
}

/// Dumps the case's inputs (`--dump-inputs`, or for the peer) and runs the peer on them, setting
/// each of this shape's rows' peer result; returns the peer's line for under the table rows.
fn dump_and_run_peer(
    args: &BenchArgs,
    dir: &Option<PathBuf>,
    case: &Case,
    reference: &ReferenceRun,
    rows: &mut [BenchRow],
    engines: &[Engine],
    bar: &mut Progress,
) -> CliResult<Option<String>> {
    let Some(dir) = dir else { return Ok(None) };
    let first_total = rows.first().map(|r| r.first_total);
    peer::dump_case(dir, case, first_total, reference)?;
    let Some(spec) = &args.peer else {
        return Ok(None);
    };
    let nvidia = engines
        .iter()
        .any(|e| e.adapter().name.to_lowercase().contains("nvidia"));
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let options = peer::PeerOptions {
        spec,
        dir,
        steps: args.steps,
        warmup: args.warmup,
        time_budget: args.time_budget,
        device: if nvidia { "cuda" } else { "cpu" },
        threads,
        compile: !args.peer_no_compile,
    };
    bar.update(
        &format!("{} on the torch peer", case.name),
        Phase::Peer,
        0,
        0,
    );
    let run = peer::run_peer(&options, &case.name)?;
    bar.clear();
    let line = output::peer_line(&case.name, &run);
    for row in rows.iter_mut() {
        row.peer = run.clone();
    }
    if args.dump_inputs.is_none() {
        // The folder is this run's own: the next shape's files replace these.
        let _ = std::fs::remove_file(dir.join(format!("{}.safetensors", case.name)));
    }
    Ok(Some(line))
}

/// Runs `lossfuse bench`.
pub fn run(args: &BenchArgs) -> CliResult<()> {
    if args.list {
        for s in SHAPES {
            let gpu = if s.gpu_sized {
                " (run only when named)"
            } else {
                ""
            };
            outln!("{:<23} {:<11} {}{gpu}", s.name, s.family.name(), s.about)?;
        }
        return Ok(());
    }
    // Reject unknown names and unwritable outputs' parents before opening a device.
    let shapes = chosen_shapes(args)?;
    for (path, flag) in [
        (&args.csv, "--csv"),
        (&args.json, "--json"),
        (&args.plot, "--plot"),
    ] {
        if let Some(path) = path {
            crate::files::check_output(path, flag)?;
        }
    }
    if shapes.is_empty() {
        return Err(CliError::Usage("no shape left to run".into()));
    }
    let engines = crate::engines::open(&args.adapters, EngineOptions::default())?;
    let started = crate::provenance::utc_now();
    let mut adapters = Vec::new();
    for engine in &engines {
        const COPY_BYTES: u64 = 256 << 20;
        let copy_bytes = COPY_BYTES.min(engine.adapter().max_buffer);
        let copy_bandwidth = engine.copy_bandwidth(copy_bytes, 5);
        let a = engine.adapter();
        outln!(
            "adapter: {} [{}; driver {}; subgroups {}..{}; timestamps {}]: copy {:.2} GB/s ({} MiB buffer copy, median of 5)",
            a.label(),
            a.device_type,
            a.driver,
            a.subgroup_sizes.0,
            a.subgroup_sizes.1,
            if a.timestamps { "yes" } else { "no" },
            copy_bandwidth / 1e9,
            copy_bytes >> 20
        )?;
        adapters.push(AdapterRun {
            summary: a.clone(),
            copy_bandwidth,
            copy_bytes,
        });
    }
    let opts = MeasureOptions {
        warmup: args.warmup,
        steps: args.steps,
        gpu_steps: args.gpu_steps,
        time_budget: args.time_budget,
        device_inputs: args.device_inputs,
    };
    let dumps = dump_folder(args)?;
    outln!("{}", output::table_header(args.peer.is_some()))?;
    let units = shapes.len() * (engines.len() + usize::from(!args.no_reference));
    let mut bar = Progress::new(units, !args.quiet);
    let mut rows: Vec<BenchRow> = Vec::new();
    for shape in &shapes {
        let case = Case::new(shape.name, seed_of(shape.name))?;
        let reference = if args.no_reference {
            ReferenceRun::Skipped("skipped (--no-reference)".into())
        } else if case.flops as f64 > args.reference_max_gflop * 1e9 {
            bar.finish_unit(&format!("{} reference skipped", shape.name));
            ReferenceRun::Skipped(format!(
                "skipped: {:.0} GFLOP/step > --reference-max-gflop {}",
                case.flops as f64 / 1e9,
                args.reference_max_gflop
            ))
        } else {
            let what = format!("{} on the f64 CPU reference", shape.name);
            bar.update(shape.name, Phase::Reference, 0, 0);
            let r = reference_run(&case)?;
            bar.finish_unit(&what);
            r
        };
        for (engine, adapter) in engines.iter().zip(&adapters) {
            let what = format!(
                "{} on {}",
                shape.name,
                short_label(&engine.adapter().label())
            );
            let mut row = measure(engine, &case, opts, &mut |phase, step, steps| {
                bar.update(&what, phase, step, steps)
            })?;
            bar.finish_unit(&what);
            row.reference = reference.clone();
            row.copy_bandwidth = adapter.copy_bandwidth;
            bar.clear();
            if args.peer.is_none() {
                outln!("{}", output::table_row(&row, false))?;
            }
            rows.push(row);
        }
        let first = rows.len() - engines.len();
        let measured = &mut rows[first..];
        let peer_line = dump_and_run_peer(
            args, &dumps, &case, &reference, measured, &engines, &mut bar,
        )?;
        if let Some(line) = peer_line {
            // Printed once the peer has run, with its columns, then the peer's own line.
            for row in measured.iter() {
                outln!("{}", output::table_row(row, true))?;
            }
            outln!("{line}")?;
        }
        // Files list the rows adapter by adapter (stable: shapes stay in run order).
        rows.sort_by_key(|r| adapters.iter().position(|a| a.summary.label() == r.adapter));
        // Rewritten after every shape, so that a long run interrupted keeps what it measured.
        output::write_files(args, &started, &adapters, &rows, false)?;
    }
    bar.clear();
    outln!("{}", output::table_legend())?;
    output::print_summaries(&rows)?;
    output::write_files(args, &started, &adapters, &rows, true)?;
    Ok(())
}
