//! `lossfuse bench`: per-step wall time of named shapes on one adapter, as rows/s, bytes moved
//! and the achieved bandwidth against the adapter's own buffer-copy bandwidth.
//!
//! Each timed step is `plan.step` followed by `report_blocking`, so the GPU work is finished when
//! the clock stops; host inputs are uploaded by the step, as a trainer passing host slices would.

use crate::error::{CliError, CliResult};
use lossfuse::rng::SplitMix64;
use lossfuse::{Batch, DType, Engine, EngineOptions, LossConfig, OwnedBatch, Shapes};
use std::path::PathBuf;
use std::time::Instant;

/// The named shapes: (name, what it runs).
pub const SHAPES: &[(&str, &str)] = &[
    (
        "softmax_ce_4096x8192",
        "softmax_cross_entropy, logits [4096, 8192] f32, class ids [4096]",
    ),
    (
        "fused3_1m",
        "classification + binary_focal_loss + sigmoid_l2_loss on logits [1048576], one plan",
    ),
    (
        "separate3_1m",
        "the same three terms as three plans stepped one after the other",
    ),
    (
        "classification_1m",
        "classification alone on logits [1048576]: the baseline of batch_wide4_1m",
    ),
    (
        "batch_wide4_1m",
        "examples/configs/batch_wide.toml (classification, OHEM focal, ghm_c, f1) on logits [1048576]",
    ),
    (
        "classification_16m",
        "classification alone on logits [16777216]: the baseline of batch_wide4_16m",
    ),
    (
        "batch_wide4_16m",
        "examples/configs/batch_wide.toml on logits [16777216]",
    ),
    (
        "pairwise_zipf_64k",
        "pairwise_logistic_loss on 65536 rows in shuffled sessions of Zipf sizes (mean about 50), graded labels 0..3",
    ),
    (
        "pairwise_zipf_64k_x4",
        "the same rows with every 4 sessions merged into one (fewer, larger sessions)",
    ),
    (
        "pairwise_zipf_64k_x16",
        "the same rows with every 16 sessions merged into one",
    ),
    (
        "pairwise_zipf_64k_x64",
        "the same rows with every 64 sessions merged into one",
    ),
    (
        "pairwise_batch_16k",
        "pairwise_logistic_loss on 16384 rows without a session tensor: all 268M row pairs",
    ),
    (
        "in_batch_4096_d64",
        "in_batch_softmax, user and item [4096, 64], cosine, logQ and item ids: 16.8M scores",
    ),
    (
        "cbns_1024_m16k",
        "cross_batch_softmax, user and item [1024, 64], a full bank of M = 16384 rows",
    ),
    (
        "cbns_1024_m256k",
        "cross_batch_softmax, user and item [1024, 64], a full bank of M = 262144 rows",
    ),
];

/// The retrieval config of the `in_batch_*` and `cbns_*` shapes (`bank_size` replaced).
const RETRIEVAL: &str = "[[losses]]\nloss_type = 'in_batch_softmax'\nuser = 'user'\nitem = 'item'\nitem_ids = 'item_id'\nlog_q = 'log_q'\nsimilarity = 'cosine'\ntemperature = 0.05\n";

/// The pairwise config of the `pairwise_zipf_*` shapes.
const PAIRWISE: &str = "[[losses]]\nloss_type = 'pairwise_logistic_loss'\nlogits = 'logits'\nlabels = 'labels'\nsession = 'session'\n";

/// Session ids for `rows` rows: sizes drawn from a Zipf law P(s) ∝ s^-1.5 on 1..=4096 (mean
/// about 50), every `merge` consecutive sessions then merged into one, rows shuffled.
pub fn zipf_sessions(rng: &mut SplitMix64, rows: usize, merge: usize) -> Vec<i32> {
    let cumulative: Vec<f64> = (1..=4096)
        .scan(0.0, |acc, s| {
            *acc += (s as f64).powf(-1.5);
            Some(*acc)
        })
        .collect();
    let total = *cumulative.last().expect("non-empty");
    let mut ids = Vec::with_capacity(rows);
    let mut session = 0usize;
    while ids.len() < rows {
        let u = rng.unit_f32() as f64 * total;
        let size = cumulative.partition_point(|&c| c < u) + 1;
        for _ in 0..size.min(rows - ids.len()) {
            ids.push((session / merge) as i32);
        }
        session += 1;
    }
    // Fisher-Yates: sessions arrive interleaved, as from a shuffled data loader.
    for i in (1..rows).rev() {
        let j = rng.below(i as u32 + 1) as usize;
        ids.swap(i, j);
    }
    ids
}

/// (Σ over sessions of size², pairs with y_i > y_j in the same session).
pub fn session_work(sessions: &[i32], labels: &[f32]) -> (u64, u64) {
    let mut by_session: std::collections::BTreeMap<i32, Vec<f32>> = Default::default();
    for (s, y) in sessions.iter().zip(labels) {
        by_session.entry(*s).or_default().push(*y);
    }
    let mut visits = 0u64;
    let mut pairs = 0u64;
    for ys in by_session.values() {
        visits += (ys.len() * ys.len()) as u64;
        let mut counts = [0u64; 4];
        for y in ys {
            counts[*y as usize] += 1;
        }
        for hi in 0..4 {
            for lo in 0..hi {
                pairs += counts[hi] * counts[lo];
            }
        }
    }
    (visits, pairs)
}

/// The four-term config of the `batch_wide4_*` shapes.
pub const BATCH_WIDE: &str = include_str!("../../examples/configs/batch_wide.toml");

/// The shape a shape is compared with (same rows, one `classification` term), if any.
pub fn baseline(shape: &str) -> Option<String> {
    shape
        .strip_prefix("batch_wide4_")
        .map(|size| format!("classification_{size}"))
}

/// Arguments of `lossfuse bench`.
#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Shapes to run (repeatable); default: all. `--list` names them.
    #[arg(long = "shape", value_name = "NAME")]
    pub shapes: Vec<String>,
    /// Adapter (substring of "name (backend)"); default: LOSSFUSE_ADAPTER, else the default one.
    #[arg(long)]
    pub adapter: Option<String>,
    /// Timed steps per shape (the median is reported).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
    /// Untimed steps before timing.
    #[arg(long, default_value_t = 2)]
    pub warmup: u32,
    /// Also write the rows as JSON to this file.
    #[arg(long)]
    pub json: Option<PathBuf>,
    /// List the shapes and exit.
    #[arg(long)]
    pub list: bool,
}

const TERMS3: [&str; 3] = [
    "[[losses]]\nloss_type = 'classification'\nlogits = 'logits'\nlabels = 'labels'\n",
    "[[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'logits'\nlabels = 'labels'\ngamma = 2.0\nalpha = 0.25\n",
    "[[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'logits'\nlabels = 'labels'\n",
];

/// A benchmark case: its plans' configs, shapes and seeded inputs.
pub struct Case {
    /// Shape name.
    pub name: String,
    /// Rows (batch size).
    pub rows: usize,
    /// One config per plan, stepped in order.
    pub configs: Vec<LossConfig>,
    /// The shapes every plan is built for.
    pub shapes: Shapes,
    /// Pairwise shapes: (Σ over sessions of size², pairs) per step; (0, 0) otherwise.
    pub session_work: (u64, u64),
    /// Retrieval shapes: similarity scores per step (B × (B + M)); 0 otherwise.
    pub scores: u64,
    /// Retrieval shapes: rows M of the memory bank (marked full before timing).
    pub bank: u64,
    inputs: OwnedBatch,
}

impl Case {
    /// Builds a named case with inputs drawn from `seed`.
    pub fn new(name: &str, seed: u64) -> CliResult<Self> {
        let mut rng = SplitMix64::new(seed);
        let mut inputs = OwnedBatch::default();
        let mut session_work = (0, 0);
        let (mut scores, mut bank) = (0u64, 0u64);
        let (rows, texts, shapes) = match name {
            "softmax_ce_4096x8192" => {
                let (b, c) = (4096usize, 8192usize);
                inputs.insert_real(
                    "logits",
                    (0..b * c).map(|_| rng.range_f32(-4.0, 4.0)).collect(),
                );
                inputs.insert_ids(
                    "labels",
                    (0..b).map(|_| rng.below(c as u32) as i32).collect(),
                );
                let text = "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'labels'\n";
                let shapes = Shapes::new().tensor("logits", &[b, c], DType::F32).tensor(
                    "labels",
                    &[b],
                    DType::I32,
                );
                (b, vec![text.to_string()], shapes)
            }
            "fused3_1m" | "separate3_1m" | "classification_1m" | "batch_wide4_1m"
            | "classification_16m" | "batch_wide4_16m" => {
                let b = if name.ends_with("_16m") {
                    1usize << 24
                } else {
                    1usize << 20
                };
                inputs.insert_real("logits", (0..b).map(|_| rng.range_f32(-6.0, 6.0)).collect());
                inputs.insert_real(
                    "labels",
                    (0..b)
                        .map(|_| if rng.unit_f32() < 0.3 { 1.0 } else { 0.0 })
                        .collect(),
                );
                let texts = match name {
                    "fused3_1m" => vec![TERMS3.concat()],
                    "separate3_1m" => TERMS3.iter().map(|t| t.to_string()).collect(),
                    n if n.starts_with("classification_") => vec![TERMS3[0].to_string()],
                    _ => vec![BATCH_WIDE.to_string()],
                };
                let shapes = Shapes::new().tensor("logits", &[b], DType::F32).tensor(
                    "labels",
                    &[b],
                    DType::F32,
                );
                (b, texts, shapes)
            }
            "pairwise_batch_16k" => {
                let b = 1usize << 14;
                let labels: Vec<f32> = (0..b).map(|_| rng.below(4) as f32).collect();
                session_work = self::session_work(&vec![0; b], &labels);
                inputs.insert_real("logits", (0..b).map(|_| rng.range_f32(-4.0, 4.0)).collect());
                inputs.insert_real("labels", labels);
                let shapes = Shapes::new().tensor("logits", &[b], DType::F32).tensor(
                    "labels",
                    &[b],
                    DType::F32,
                );
                let text = PAIRWISE.replace("session = 'session'\n", "");
                (b, vec![text], shapes)
            }
            n if n.starts_with("in_batch_") || n.starts_with("cbns_") => {
                let (b, m) = match n {
                    "cbns_1024_m16k" => (1024usize, 16384u64),
                    "cbns_1024_m256k" => (1024, 262144),
                    _ => (4096, 0),
                };
                let d = 64;
                for t in ["user", "item"] {
                    inputs.insert_real(t, (0..b * d).map(|_| rng.range_f32(-1.0, 1.0)).collect());
                }
                inputs.insert_ids(
                    "item_id",
                    (0..b).map(|_| rng.below(100_000) as i32).collect(),
                );
                inputs.insert_real(
                    "log_q",
                    (0..b).map(|_| rng.range_f32(-12.0, -4.0)).collect(),
                );
                // Scores per step: B × (B + M) with the bank full.
                scores = b as u64 * (b as u64 + m);
                bank = m;
                let text = if m > 0 {
                    RETRIEVAL.replace("in_batch_softmax", "cross_batch_softmax")
                        + &format!("bank_size = {m}\n")
                } else {
                    RETRIEVAL.to_string()
                };
                let shapes = Shapes::new()
                    .tensor("user", &[b, d], DType::F32)
                    .tensor("item", &[b, d], DType::F32)
                    .tensor("item_id", &[b], DType::I32)
                    .tensor("log_q", &[b], DType::F32);
                (b, vec![text], shapes)
            }
            n if n.starts_with("pairwise_zipf_64k") => {
                // One seed for every merge factor: the same rows, grouped differently.
                let mut rng = SplitMix64::new(0x2a1f);
                let b = 1usize << 16;
                let merge = n
                    .strip_prefix("pairwise_zipf_64k_x")
                    .map_or(Ok(1), str::parse)
                    .map_err(|_| CliError::Usage(format!("bad shape '{n}'")))?;
                let sessions = zipf_sessions(&mut rng, b, merge);
                let labels: Vec<f32> = (0..b).map(|_| rng.below(4) as f32).collect();
                session_work = self::session_work(&sessions, &labels);
                inputs.insert_real("logits", (0..b).map(|_| rng.range_f32(-4.0, 4.0)).collect());
                inputs.insert_real("labels", labels);
                inputs.insert_ids("session", sessions);
                let shapes = Shapes::new()
                    .tensor("logits", &[b], DType::F32)
                    .tensor("labels", &[b], DType::F32)
                    .tensor("session", &[b], DType::I32);
                (b, vec![PAIRWISE.to_string()], shapes)
            }
            other => {
                return Err(CliError::Usage(format!(
                    "unknown shape '{other}'; known: {}",
                    SHAPES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
                )))
            }
        };
        let configs = texts
            .iter()
            .map(|t| LossConfig::from_toml_str(t))
            .collect::<Result<Vec<_>, _>>()?;
        Ok(Self {
            name: name.to_string(),
            rows,
            configs,
            shapes,
            session_work,
            scores,
            bank,
            inputs,
        })
    }

    /// The inputs as a batch borrowing this case.
    pub fn batch(&self) -> Batch<'_> {
        self.inputs.batch()
    }
}

/// One measured shape.
#[derive(Clone, Debug)]
pub struct BenchRow {
    /// Shape name.
    pub shape: String,
    /// Plans stepped per step.
    pub plans: usize,
    /// Rows per step.
    pub rows: usize,
    /// Timed steps.
    pub steps: u32,
    /// Median seconds per step.
    pub median_s: f64,
    /// Fastest step, seconds.
    pub min_s: f64,
    /// Bytes a step must move (sum of `Plan::bytes_per_step`).
    pub bytes_per_step: u64,
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
}

/// Builds the case's plans on `engine` and times `steps` steps after `warmup` untimed ones.
pub fn measure(engine: &Engine, case: &Case, warmup: u32, steps: u32) -> CliResult<BenchRow> {
    let mut plans = case
        .configs
        .iter()
        .map(|c| engine.plan(c, &case.shapes))
        .collect::<Result<Vec<_>, _>>()?;
    if case.bank > 0 {
        for plan in plans.iter_mut() {
            plan.fill_banks();
        }
    }
    let batch = case.batch();
    let bytes_per_step = plans.iter().map(|p| p.bytes_per_step()).sum();
    let allocated_bytes = plans.iter().map(|p| p.allocated_bytes()).sum();
    let mut times = Vec::with_capacity(steps as usize);
    let (mut dispatches, mut submissions) = (0, 0);
    for i in 0..warmup + steps {
        let start = Instant::now();
        let (mut d, mut s) = (0, 0);
        for plan in plans.iter_mut() {
            let out = plan.step(&batch)?;
            out.report_blocking()?;
            d += out.counters().dispatches;
            s += out.counters().submissions;
        }
        let elapsed = start.elapsed().as_secs_f64();
        if i >= warmup {
            times.push(elapsed);
        }
        (dispatches, submissions) = (d, s);
    }
    times.sort_by(f64::total_cmp);
    let median_s = if times.len() % 2 == 1 {
        times[times.len() / 2]
    } else {
        0.5 * (times[times.len() / 2 - 1] + times[times.len() / 2])
    };
    Ok(BenchRow {
        shape: case.name.clone(),
        plans: plans.len(),
        rows: case.rows,
        steps,
        median_s: median_s.max(1e-9),
        min_s: times.first().copied().unwrap_or(median_s),
        bytes_per_step,
        dispatches_per_step: dispatches,
        submissions_per_step: submissions,
        session_work: case.session_work,
        scores: case.scores,
        allocated_bytes,
    })
}

/// Runs `lossfuse bench`.
pub fn run(args: &BenchArgs) -> CliResult<()> {
    if args.list {
        for (name, what) in SHAPES {
            println!("{name:<22} {what}");
        }
        return Ok(());
    }
    let names: Vec<String> = if args.shapes.is_empty() {
        SHAPES.iter().map(|s| s.0.to_string()).collect()
    } else {
        args.shapes.clone()
    };
    // Reject unknown names before opening a device.
    for n in &names {
        if !SHAPES.iter().any(|s| s.0 == n) {
            return Err(CliError::Usage(format!(
                "unknown shape '{n}'; known: {}",
                SHAPES.iter().map(|s| s.0).collect::<Vec<_>>().join(", ")
            )));
        }
    }
    let engine = match &args.adapter {
        Some(name) => Engine::with_adapter(name, EngineOptions::default())?,
        None => Engine::new()?,
    };
    let adapter = engine.adapter().label();
    const COPY_BYTES: u64 = 256 << 20;
    let copy_bytes = COPY_BYTES.min(engine.adapter().max_buffer);
    let copy_bw = engine.copy_bandwidth(copy_bytes, 5);
    println!("adapter: {adapter}");
    println!(
        "copy bandwidth: {:.2} GB/s (buffer copy of {} MiB, median of 5)",
        copy_bw / 1e9,
        copy_bytes >> 20
    );
    println!(
        "{:<22} {:>5} {:>5} {:>11} {:>11} {:>12} {:>10} {:>8} {:>8} {:>10}",
        "shape",
        "plans",
        "steps",
        "median ms",
        "min ms",
        "rows/s",
        "MB/step",
        "GB/s",
        "of copy",
        "dispatch"
    );
    let mut rows = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let case = Case::new(name, 0x5eed_0000 + i as u64)?;
        let row = measure(&engine, &case, args.warmup, args.steps)?;
        println!(
            "{:<22} {:>5} {:>5} {:>11.3} {:>11.3} {:>12.4e} {:>10.1} {:>8.2} {:>7.1}% {:>10}",
            row.shape,
            row.plans,
            row.steps,
            row.median_s * 1e3,
            row.min_s * 1e3,
            row.rows_per_s(),
            row.bytes_per_step as f64 / 1e6,
            row.bytes_per_s() / 1e9,
            100.0 * row.bytes_per_s() / copy_bw,
            row.dispatches_per_step
        );
        rows.push(row);
    }
    // The cost of the batch-wide terms: time against one classification term on the same rows.
    let ratio = |r: &BenchRow| -> Option<(String, f64)> {
        let base = baseline(&r.shape)?;
        let b = rows.iter().find(|x| x.shape == base)?;
        Some((base, r.median_s / b.median_s))
    };
    for r in &rows {
        if let Some((base, x)) = ratio(r) {
            println!("{}: {x:.2}x the time of {base}", r.shape);
        }
    }
    // Pairwise shapes: the work is Σ size² (each pair is visited from both rows), not B².
    for r in rows.iter().filter(|r| r.session_work.0 > 0) {
        let (visits, pairs) = r.session_work;
        println!(
            "{}: {pairs} pairs, Σ size² = {visits}: {:.3e} pairs/s, {:.3} ns per Σ size²",
            r.shape,
            pairs as f64 / r.median_s,
            r.median_s * 1e9 / visits as f64
        );
    }
    // Retrieval shapes: scores streamed per second; memory is the plans' buffers (linear in M).
    for r in rows.iter().filter(|r| r.scores > 0) {
        println!(
            "{}: {} scores per step, {:.3e} scores/s, {:.1} MiB of GPU buffers",
            r.shape,
            r.scores,
            r.scores as f64 / r.median_s,
            r.allocated_bytes as f64 / (1u64 << 20) as f64
        );
    }
    if let Some(path) = &args.json {
        let json = serde_json::json!({
            "adapter": adapter,
            "backend": engine.adapter().backend,
            "copy_bandwidth_bytes_per_s": copy_bw,
            "copy_bytes": copy_bytes,
            "warmup": args.warmup,
            "rows": rows.iter().map(|r| serde_json::json!({
                "shape": r.shape,
                "plans": r.plans,
                "rows": r.rows,
                "steps": r.steps,
                "median_s": r.median_s,
                "min_s": r.min_s,
                "rows_per_s": r.rows_per_s(),
                "bytes_per_step": r.bytes_per_step,
                "bytes_per_s": r.bytes_per_s(),
                "fraction_of_copy": r.bytes_per_s() / copy_bw,
                "dispatches_per_step": r.dispatches_per_step,
                "submissions_per_step": r.submissions_per_step,
                "session_size_squared_sum": (r.session_work.0 > 0).then_some(r.session_work.0),
                "pairs": (r.session_work.0 > 0).then_some(r.session_work.1),
                "pairs_per_s": (r.session_work.0 > 0).then(|| r.session_work.1 as f64 / r.median_s),
                "scores": (r.scores > 0).then_some(r.scores),
                "scores_per_s": (r.scores > 0).then(|| r.scores as f64 / r.median_s),
                "allocated_bytes": r.allocated_bytes,
                "baseline": ratio(r).map(|x| x.0),
                "time_ratio_to_baseline": ratio(r).map(|x| x.1),
            })).collect::<Vec<_>>(),
        });
        let text = serde_json::to_string_pretty(&json)
            .map_err(|e| CliError::file(path, format!("cannot encode JSON: {e}")))?;
        std::fs::write(path, text + "\n").map_err(|e| CliError::file(path, e))?;
    }
    Ok(())
}
