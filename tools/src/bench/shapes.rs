//! The named shapes of the suite, their seeded inputs, and what a step of each must do: bytes
//! come from the plans (`Plan::bytes_per_step`), floating-point operations from the model in
//! [`flops`].

use crate::error::{CliError, CliResult};
use lossfuse::reference::{BankRow, BankState, Reference};
use lossfuse::rng::SplitMix64;
use lossfuse::{
    params, Batch, DType, Engine, HostBatch, HostTensor, Input, LossConfig, OwnedBatch, Plan,
    Shapes, TermKind,
};

/// A family of shapes: one panel of `--plot`, one criterion group, one unit of work.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Family {
    /// Softmax cross-entropy over [B, C] logits; work: logits (B × C elements).
    SoftmaxCe,
    /// Per-row terms fused on the same logits (or as separate plans); work: rows.
    PerRow,
    /// classification, OHEM focal, GHM-C and F1 on the same logits; work: rows.
    BatchWide,
    /// pairwise_logistic_loss within sessions; work: pairs (i, j) with y_i > y_j.
    Pairwise,
    /// listwise_rank_loss: a softmax per session; work: rows.
    Listwise,
    /// In-batch and cross-batch softmax; work: similarity scores B × (B + M).
    Retrieval,
}

impl Family {
    /// Every family, in report order.
    pub const ALL: [Family; 6] = [
        Family::SoftmaxCe,
        Family::PerRow,
        Family::BatchWide,
        Family::Pairwise,
        Family::Listwise,
        Family::Retrieval,
    ];

    /// The family's name in tables, CSV, JSON and criterion group names.
    pub fn name(self) -> &'static str {
        match self {
            Family::SoftmaxCe => "softmax_ce",
            Family::PerRow => "per_row",
            Family::BatchWide => "batch_wide",
            Family::Pairwise => "pairwise",
            Family::Listwise => "listwise",
            Family::Retrieval => "retrieval",
        }
    }

    /// What one unit of the family's work is (the x axis of the plot, "work/s" in the table).
    pub fn work_unit(self) -> &'static str {
        match self {
            Family::SoftmaxCe => "elements",
            Family::PerRow | Family::BatchWide | Family::Listwise => "rows",
            Family::Pairwise => "pairs",
            Family::Retrieval => "scores",
        }
    }
}

/// A named shape of the suite.
#[derive(Clone, Copy, Debug)]
pub struct Shape {
    /// The name `--shape` takes.
    pub name: &'static str,
    /// Its family.
    pub family: Family,
    /// The line it belongs to in its family's plot panel (shapes of one series differ in size).
    pub series: &'static str,
    /// What it runs.
    pub about: &'static str,
    /// Sized for a GPU with tens of GiB (`bench/gpu/run.sh`): run only when named with
    /// `--shape`, never by default nor by the criterion suite.
    pub gpu_sized: bool,
}

const fn shape(
    name: &'static str,
    family: Family,
    series: &'static str,
    about: &'static str,
) -> Shape {
    Shape {
        name,
        family,
        series,
        about,
        gpu_sized: false,
    }
}

/// A shape sized for a large GPU (see [`Shape::gpu_sized`]).
const fn gpu_shape(
    name: &'static str,
    family: Family,
    series: &'static str,
    about: &'static str,
) -> Shape {
    Shape {
        gpu_sized: true,
        ..shape(name, family, series, about)
    }
}

/// The named shapes, in the order `lossfuse bench` runs them by default.
pub const SHAPES: &[Shape] = &[
    shape(
        "softmax_ce_4096x8192",
        Family::SoftmaxCe,
        "softmax_ce",
        "softmax_cross_entropy, logits [4096, 8192] f32, class ids [4096]",
    ),
    shape(
        "kd_softmax_4096x1024",
        Family::SoftmaxCe,
        "kd_softmax",
        "softmax_cross_entropy on class ids and kl_divergence_loss at T = 2 against teacher \
         logits, student and teacher [4096, 1024] f32: one softmax group",
    ),
    shape(
        "classification_64k",
        Family::PerRow,
        "classification",
        "classification alone on logits [65536]: the smallest shape (smoke tests, the size axis)",
    ),
    shape(
        "classification_1m",
        Family::PerRow,
        "classification",
        "classification alone on logits [1048576]: the baseline of batch_wide4_1m",
    ),
    shape(
        "classification_16m",
        Family::PerRow,
        "classification",
        "classification alone on logits [16777216]: the baseline of batch_wide4_16m",
    ),
    shape(
        "fused3_1m",
        Family::PerRow,
        "fused3",
        "classification + binary_focal_loss + sigmoid_l2_loss on logits [1048576], one plan",
    ),
    shape(
        "fused3_16m",
        Family::PerRow,
        "fused3",
        "the same three terms on logits [16777216], one plan",
    ),
    shape(
        "separate3_1m",
        Family::PerRow,
        "separate3",
        "the three terms of fused3_1m as three plans stepped one after the other",
    ),
    shape(
        "batch_wide4_1m",
        Family::BatchWide,
        "batch_wide4",
        "examples/configs/batch_wide.toml (classification, OHEM focal, ghm_c, f1) on logits [1048576]",
    ),
    shape(
        "batch_wide4_16m",
        Family::BatchWide,
        "batch_wide4",
        "examples/configs/batch_wide.toml on logits [16777216]",
    ),
    shape(
        "pairwise_zipf_64k",
        Family::Pairwise,
        "zipf_64k",
        "pairwise_logistic_loss on 65536 rows in shuffled sessions of Zipf sizes (mean about 50), graded labels 0..3",
    ),
    shape(
        "pairwise_zipf_64k_x4",
        Family::Pairwise,
        "zipf_64k",
        "the same rows with every 4 sessions merged into one (fewer, larger sessions)",
    ),
    shape(
        "pairwise_zipf_64k_x16",
        Family::Pairwise,
        "zipf_64k",
        "the same rows with every 16 sessions merged into one",
    ),
    shape(
        "pairwise_zipf_64k_x64",
        Family::Pairwise,
        "zipf_64k",
        "the same rows with every 64 sessions merged into one",
    ),
    shape(
        "listwise_zipf_64k",
        Family::Listwise,
        "listwise_zipf_64k",
        "listwise_rank_loss on pairwise_zipf_64k's rows: 65536 rows in shuffled sessions of Zipf sizes, graded labels 0..3",
    ),
    shape(
        "pairwise_batch_16k",
        Family::Pairwise,
        "batch_16k",
        "pairwise_logistic_loss on 16384 rows without a session tensor: all 268M row pairs",
    ),
    shape(
        "in_batch_4096_d64",
        Family::Retrieval,
        "in_batch",
        "in_batch_softmax, user and item [4096, 64], cosine, logQ and item ids: 16.8M scores",
    ),
    shape(
        "cbns_1024_m16k",
        Family::Retrieval,
        "cbns",
        "cross_batch_softmax, user and item [1024, 64], a full bank of M = 16384 rows",
    ),
    shape(
        "cbns_1024_m256k",
        Family::Retrieval,
        "cbns",
        "cross_batch_softmax, user and item [1024, 64], a full bank of M = 262144 rows",
    ),
    // GPU-sized shapes (after the others, so that every other shape keeps its seed).
    gpu_shape(
        "classification_64m",
        Family::PerRow,
        "classification",
        "classification alone on logits [67108864] (GPU-sized: 512 MiB of inputs)",
    ),
    gpu_shape(
        "softmax_ce_16384x131072",
        Family::SoftmaxCe,
        "softmax_ce",
        "softmax_cross_entropy, logits [16384, 131072] f32 (GPU-sized: 8 GiB of logits)",
    ),
    gpu_shape(
        "in_batch_16384_d128",
        Family::Retrieval,
        "in_batch_d128",
        "in_batch_softmax, user and item [16384, 128], cosine, logQ and item ids: 268M scores",
    ),
    gpu_shape(
        "in_batch_65536_d128",
        Family::Retrieval,
        "in_batch_d128",
        "in_batch_softmax, user and item [65536, 128]: 4.3G scores in linear memory (an eager \
         peer needs a 16 GiB score matrix)",
    ),
    gpu_shape(
        "cbns_4096_m1m",
        Family::Retrieval,
        "cbns",
        "cross_batch_softmax, user and item [4096, 64], a full bank of M = 1048576 rows",
    ),
];

/// `listwise_zipf_64k`: pairwise_zipf_64k's rows (same seed and draws) under
/// `listwise_rank_loss`: (rows, config texts, shapes).
fn listwise_zipf_64k(inputs: &mut OwnedBatch) -> (usize, Vec<String>, Shapes) {
    let mut rng = SplitMix64::new(0x2a1f);
    let b = 1usize << 16;
    let sessions = zipf_sessions(&mut rng, b, 1);
    let labels: Vec<f32> = (0..b).map(|_| rng.below(4) as f32).collect();
    inputs.insert_real("logits", (0..b).map(|_| rng.range_f32(-4.0, 4.0)).collect());
    inputs.insert_real("labels", labels);
    inputs.insert_ids("session", sessions);
    let shapes = Shapes::new()
        .tensor("logits", &[b], DType::F32)
        .tensor("labels", &[b], DType::F32)
        .tensor("session", &[b], DType::I32);
    let text = PAIRWISE.replace("pairwise_logistic_loss", "listwise_rank_loss");
    (b, vec![text], shapes)
}

/// The shape called `name`, or a usage error listing the known names.
pub fn find_shape(name: &str) -> CliResult<&'static Shape> {
    SHAPES.iter().find(|s| s.name == name).ok_or_else(|| {
        CliError::Usage(format!(
            "unknown shape '{name}'; known: {}",
            SHAPES.iter().map(|s| s.name).collect::<Vec<_>>().join(", ")
        ))
    })
}

/// The seed of a shape's inputs: fixed per name (its place in [`SHAPES`]), so that a shape run
/// alone, in the whole suite or under criterion sees the same inputs.
pub fn seed_of(name: &str) -> u64 {
    0x5eed_0000 + SHAPES.iter().position(|s| s.name == name).unwrap_or(0) as u64
}

/// The retrieval config of the `in_batch_*` and `cbns_*` shapes (`bank_size` replaced).
/// A trainer's distillation step: CE on the hard label and KL against the teacher at T = 2 on
/// the same student logits.
const KD_SOFTMAX: &str = "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'labels'\n\
     [[losses]]\nloss_type = 'kl_divergence_loss'\nlogits = 'logits'\nlabels = 'teacher'\ntemperature = 2.0\n";
const RETRIEVAL: &str = "[[losses]]\nloss_type = 'in_batch_softmax'\nuser = 'user'\nitem = 'item'\nitem_ids = 'item_id'\nlog_q = 'log_q'\nsimilarity = 'cosine'\ntemperature = 0.05\n";

/// The pairwise config of the `pairwise_zipf_*` shapes.
const PAIRWISE: &str = "[[losses]]\nloss_type = 'pairwise_logistic_loss'\nlogits = 'logits'\nlabels = 'labels'\nsession = 'session'\n";

/// The four-term config of the `batch_wide4_*` shapes.
pub const BATCH_WIDE: &str = include_str!("../../../examples/configs/batch_wide.toml");

const TERMS3: [&str; 3] = [
    "[[losses]]\nloss_type = 'classification'\nlogits = 'logits'\nlabels = 'labels'\n",
    "[[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'logits'\nlabels = 'labels'\ngamma = 2.0\nalpha = 0.25\n",
    "[[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'logits'\nlabels = 'labels'\n",
];

/// Session ids for `rows` rows: sizes drawn from a Zipf law P(s) ∝ s^-1.5 on 1..=4096 (mean
/// about 50), every `merge` consecutive sessions then merged into one, rows shuffled.
pub fn zipf_sessions(rng: &mut SplitMix64, rows: usize, merge: usize) -> Vec<i32> {
    let cumulative: Vec<f64> = (1..=4096)
        .scan(0.0, |acc, s| {
            *acc += (s as f64).powf(-1.5);
            Some(*acc)
        })
        .collect();
    let total = cumulative.last().copied().unwrap_or(1.0);
    let mut ids = Vec::with_capacity(rows);
    let mut session = 0usize;
    while ids.len() < rows {
        let u = rng.unit_f32() as f64 * total;
        let size = cumulative.partition_point(|&c| c < u) + 1;
        for _ in 0..size.min(rows - ids.len()) {
            ids.push((session / merge.max(1)) as i32);
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

/// (Σ over sessions of size², pairs with y_i > y_j in the same session) for graded labels 0..3.
pub fn session_work(sessions: &[i32], labels: &[f32]) -> (u64, u64) {
    let mut by_session: std::collections::BTreeMap<i32, [u64; 4]> = Default::default();
    for (s, y) in sessions.iter().zip(labels) {
        by_session.entry(*s).or_default()[(*y as usize).min(3)] += 1;
    }
    let mut visits = 0u64;
    let mut pairs = 0u64;
    for counts in by_session.values() {
        let size: u64 = counts.iter().sum();
        visits += size * size;
        for hi in 0..4 {
            for lo in 0..hi {
                pairs += counts[hi] * counts[lo];
            }
        }
    }
    (visits, pairs)
}

/// The shape a shape is compared with (same rows, one `classification` term), if any.
pub fn baseline(shape: &str) -> Option<String> {
    shape
        .strip_prefix("batch_wide4_")
        .map(|size| format!("classification_{size}"))
}

/// The floating-point work of a step, as an analytic model (not a count of executed
/// instructions).
///
/// Rules: each +, −, ×, ÷, comparison (max, min, |·|), exp, log, log1p and sqrt is one operation;
/// the forward value and the gradient are both counted, in the passes the plan runs; integer work
/// (session grouping and sorting, radix selection, histogram counts, index arithmetic, id masks)
/// and memory traffic are not. Reducing a row's loss into the partial sums (× sample weight, +)
/// and scaling its gradient by the term's coefficient count 3 per row and term.
///
/// - classification (sigmoid CE, one logit), per row: loss max(x,0) − x·y + log1p(e^−|x|) 7,
///   gradient σ(x) − y 5, reduction 3: **15**.
/// - sigmoid_l2_loss, per row: σ 4, (σ − y)² 2, gradient 2(σ − y)σ(1 − σ) 4, reduction 3:
///   **13**.
/// - binary_focal_loss, per row: σ 4, p_t 4, α_t 3, (1 − p_t)^γ 4, CE 7, product 2, gradient 14,
///   reduction 3: **41**; with OHEM the statistics pass evaluates the loss again for the
///   selection key (24): **65**.
/// - ghm_c, per row: statistics pass g = |σ − y| 6 and bin 2; loss pass the same 8, CE 7,
///   gradient 5, × β 1, reduction 3: **32**.
/// - f1_reweighted_loss, per row: statistics pass σ and three sums 7; loss pass σ 4, row weight
///   2, gradient 4, reduction 3: **20**.
/// - softmax_cross_entropy, per logit: forward (online log-sum-exp: max, −, exp, +) 4, backward
///   p = exp(z − lse) and × coefficient 3: **7**; per row (log, target pick, reduction) 10.
/// - kl_divergence_loss over [B, C], per logit: first sweep two scaled logits and two online
///   log-sum-exp pushes 10, second sweep (two log-probabilities, two clips, exp, product, two
///   sums) 9, backward (two log-probabilities, exp of each, clip test, product, × coefficient)
///   9: **28**; per row (two lse logs, reduction) 8.
/// - pairwise_logistic_loss: per pair with y_i > y_j, loss softplus(−(s_i − s_j)) 7 and the
///   gradient σ computed from both ends of the pair 2 × 5: **17**; per visited pair of a session
///   (Σ size², both orders) the label comparison 1; per row gather and apply 3.
/// - in_batch_softmax / cross_batch_softmax at dimension d: three sweeps over the scores. The
///   log-sum-exp sweep computes every score q·k/T − bias (2d + 2) and pushes it (4): 2d + 6 per
///   score of B × (B + M); the dq sweep recomputes the score and p = exp(s − lse) and adds p·k
///   (4d + 4) per score of B × (B + M); the dk sweep does the same for the batch columns only
///   (4d + 4 per score of B × B); per row of user and item, normalisation and the apply through
///   it 6d each: 12d per row.
pub mod flops {
    /// classification (one logit), per row.
    pub const CLASSIFICATION: u64 = 15;
    /// sigmoid_l2_loss, per row.
    pub const SIGMOID_L2: u64 = 13;
    /// binary_focal_loss, per row.
    pub const FOCAL: u64 = 41;
    /// binary_focal_loss with OHEM, per row.
    pub const FOCAL_OHEM: u64 = 65;
    /// ghm_c, per row.
    pub const GHM_C: u64 = 32;
    /// f1_reweighted_loss, per row.
    pub const F1: u64 = 20;
    /// softmax_cross_entropy, per logit.
    pub const SOFTMAX_PER_LOGIT: u64 = 7;
    /// softmax_cross_entropy, per row.
    pub const SOFTMAX_PER_ROW: u64 = 10;
    /// kl_divergence_loss over [B, C], per logit.
    pub const KD_PER_LOGIT: u64 = 28;
    /// kl_divergence_loss over [B, C], per row.
    pub const KD_PER_ROW: u64 = 8;
    /// pairwise_logistic_loss, per pair with y_i > y_j.
    pub const PAIR: u64 = 17;
    /// pairwise terms, per visited (ordered) pair of a session.
    pub const PAIR_VISIT: u64 = 1;
    /// pairwise terms, per row.
    pub const PAIR_ROW: u64 = 3;

    /// in_batch_softmax or cross_batch_softmax: `b` rows, bank of `m` rows, dimension `d`.
    pub fn retrieval(b: u64, m: u64, d: u64) -> u64 {
        let all = b * (b + m);
        all * (2 * d + 6) + all * (4 * d + 4) + b * b * (4 * d + 4) + b * 12 * d
    }
}

/// Sizes a term's FLOPs depend on.
struct Work {
    rows: u64,
    classes: u64,
    visits: u64,
    pairs: u64,
    dim: u64,
}

/// The [`flops`] model of one term; 0 for loss types no shape of the suite uses.
fn term_flops(kind: &TermKind, w: &Work) -> u64 {
    let softmax = w.rows * w.classes * flops::SOFTMAX_PER_LOGIT + w.rows * flops::SOFTMAX_PER_ROW;
    match kind.loss_type() {
        "classification" if w.classes > 1 => softmax,
        "classification" => w.rows * flops::CLASSIFICATION,
        "softmax_cross_entropy" => softmax,
        "kl_divergence_loss" if w.classes > 1 => {
            w.rows * w.classes * flops::KD_PER_LOGIT + w.rows * flops::KD_PER_ROW
        }
        "sigmoid_l2_loss" => w.rows * flops::SIGMOID_L2,
        "binary_focal_loss" => match kind.params::<params::FocalParams>() {
            Some(p) if p.ohem_ratio < 1.0 => w.rows * flops::FOCAL_OHEM,
            _ => w.rows * flops::FOCAL,
        },
        "ghm_c" => w.rows * flops::GHM_C,
        "f1_reweighted_loss" => w.rows * flops::F1,
        "pair_wise_loss"
        | "pairwise_logistic_loss"
        | "pairwise_focal_loss"
        | "pairwise_hinge_loss" => {
            w.pairs * flops::PAIR + w.visits * flops::PAIR_VISIT + w.rows * flops::PAIR_ROW
        }
        "in_batch_softmax" => flops::retrieval(w.rows, 0, w.dim),
        "cross_batch_softmax" => {
            let bank = kind
                .params::<params::CrossBatchParams>()
                .map_or(0, |p| p.bank_rows() as u64);
            flops::retrieval(w.rows, bank, w.dim)
        }
        _ => 0,
    }
}

/// A benchmark case: its plans' configs, shapes and seeded inputs.
pub struct Case {
    /// Shape name.
    pub name: String,
    /// The shape's family.
    pub family: Family,
    /// Its series in the family's plot panel.
    pub series: &'static str,
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
    /// Retrieval shapes: the embedding dimension d.
    pub dim: usize,
    /// Units of the family's work per step ([`Family::work_unit`]).
    pub work: u64,
    /// Floating-point operations per step (the [`flops`] model, all plans).
    pub flops: u64,
    /// Softmax shapes: the classes C; 1 otherwise.
    pub classes: usize,
    /// The configs as TOML, one per plan (what `--dump-inputs` writes for the peer).
    pub config_texts: Vec<String>,
    inputs: OwnedBatch,
}

impl Case {
    /// Builds a named case with inputs drawn from `seed`.
    pub fn new(name: &str, seed: u64) -> CliResult<Self> {
        let shape = find_shape(name)?;
        let mut rng = SplitMix64::new(seed);
        let mut inputs = OwnedBatch::default();
        let mut session_work = (0, 0);
        let (mut scores, mut bank, mut dim, mut classes) = (0u64, 0u64, 0usize, 1usize);
        let (rows, texts, shapes) = match name {
            "softmax_ce_4096x8192" | "softmax_ce_16384x131072" => {
                let (b, c) = match name {
                    "softmax_ce_4096x8192" => (4096usize, 8192usize),
                    _ => (16384, 131072),
                };
                classes = c;
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
            "kd_softmax_4096x1024" => {
                let (b, c) = (4096usize, 1024usize);
                classes = c;
                for t in ["logits", "teacher"] {
                    inputs.insert_real(t, (0..b * c).map(|_| rng.range_f32(-4.0, 4.0)).collect());
                }
                inputs.insert_ids(
                    "labels",
                    (0..b).map(|_| rng.below(c as u32) as i32).collect(),
                );
                let shapes = Shapes::new()
                    .tensor("logits", &[b, c], DType::F32)
                    .tensor("teacher", &[b, c], DType::F32)
                    .tensor("labels", &[b], DType::I32);
                (b, vec![KD_SOFTMAX.to_string()], shapes)
            }
            n if shape.family == Family::PerRow || shape.family == Family::BatchWide => {
                let b = if n.ends_with("_64m") {
                    1usize << 26
                } else if n.ends_with("_16m") {
                    1usize << 24
                } else if n.ends_with("_64k") {
                    1usize << 16
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
                let texts = match shape.series {
                    "fused3" => vec![TERMS3.concat()],
                    "separate3" => TERMS3.iter().map(|t| t.to_string()).collect(),
                    "classification" => vec![TERMS3[0].to_string()],
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
            "listwise_zipf_64k" => listwise_zipf_64k(&mut inputs),
            n if shape.family == Family::Retrieval => {
                let (b, m, d) = match n {
                    "cbns_1024_m16k" => (1024usize, 16384u64, 64usize),
                    "cbns_1024_m256k" => (1024, 262144, 64),
                    "cbns_4096_m1m" => (4096, 1 << 20, 64),
                    "in_batch_16384_d128" => (16384, 0, 128),
                    "in_batch_65536_d128" => (65536, 0, 128),
                    _ => (4096, 0, 64),
                };
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
                dim = d;
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
            n => {
                // pairwise_zipf_64k and its merged variants. One seed for every merge factor:
                // the same rows, grouped differently.
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
        };
        let configs = texts
            .iter()
            .map(|t| LossConfig::from_toml_str(t))
            .collect::<Result<Vec<_>, _>>()?;
        let w = Work {
            rows: rows as u64,
            classes: classes as u64,
            visits: session_work.0,
            pairs: session_work.1,
            dim: dim as u64,
        };
        let flops = configs
            .iter()
            .flat_map(|c| &c.losses)
            .map(|t| term_flops(&t.kind, &w))
            .sum();
        let work = match shape.family {
            Family::SoftmaxCe => (rows * classes) as u64,
            Family::PerRow | Family::BatchWide | Family::Listwise => rows as u64,
            Family::Pairwise => session_work.1,
            Family::Retrieval => scores,
        };
        Ok(Self {
            name: name.to_string(),
            family: shape.family,
            series: shape.series,
            rows,
            configs,
            shapes,
            session_work,
            scores,
            bank,
            dim,
            work,
            flops,
            classes,
            config_texts: texts.iter().map(|t| t.to_string()).collect(),
            inputs,
        })
    }

    /// The inputs as a batch borrowing this case.
    pub fn batch(&self) -> Batch<'_> {
        self.inputs.batch()
    }

    /// The same inputs for the f64 reference: reals widened from the f32 the GPU reads, so both
    /// see the same values.
    pub fn host_batch(&self) -> HostBatch {
        let batch = self.batch();
        let mut host = HostBatch::new();
        for (name, spec) in self.shapes.iter() {
            let tensor = match batch.get(name) {
                Some(Input::F32(v)) => {
                    HostTensor::real(spec.shape.clone(), v.iter().map(|&x| x as f64).collect())
                }
                Some(Input::I32(v)) => {
                    HostTensor::int(spec.shape.clone(), v.iter().map(|&x| x as i64).collect())
                }
                Some(Input::U32(v)) => {
                    HostTensor::int(spec.shape.clone(), v.iter().map(|&x| x as i64).collect())
                }
                Some(Input::U64(v)) => {
                    HostTensor::int(spec.shape.clone(), v.iter().map(|&x| x as i64).collect())
                }
                Some(Input::F64(v)) => HostTensor::real(spec.shape.clone(), v.to_vec()),
                Some(Input::I64(v)) => HostTensor::int(spec.shape.clone(), v.to_vec()),
                // Cases hold host values only.
                Some(Input::Buffer(_) | Input::BufferAt(..)) | None => continue,
            };
            host.insert(name.clone(), tensor);
        }
        host
    }

    /// The case's plans on `engine`, with every memory bank marked full (rows zero) so that a
    /// step sees all M rows as negatives from the first step on.
    pub fn plans(&self, engine: &Engine) -> CliResult<Vec<Plan>> {
        let mut plans = self
            .configs
            .iter()
            .map(|c| engine.plan(c, &self.shapes))
            .collect::<Result<Vec<_>, _>>()?;
        if self.bank > 0 {
            for plan in plans.iter_mut() {
                plan.fill_banks();
            }
        }
        Ok(plans)
    }

    /// One f64 reference per plan, each in the state the GPU plans start from: a memory bank
    /// full of zero rows (log_q 0, id 0), as [`Plan::fill_banks`] leaves a fresh plan's.
    pub fn references(&self) -> CliResult<Vec<Reference>> {
        self.configs
            .iter()
            .map(|c| {
                let mut r = Reference::new(c)?;
                if self.bank > 0 {
                    let mut state = r.state().clone();
                    for (bank, term) in state.banks.iter_mut().zip(&c.losses) {
                        if let Some(bank) = bank {
                            let row = BankRow {
                                embedding: vec![0.0; self.dim],
                                log_q: 0.0,
                                id: term.inputs.contains_key("item_ids").then_some(0),
                            };
                            let m = bank.slots.len();
                            *bank = BankState {
                                slots: vec![Some(row); m],
                                head: 0,
                                fill: m,
                            };
                        }
                    }
                    r.set_state(state);
                }
                Ok(r)
            })
            .collect()
    }
}

/// One step of every plan, each followed by `report_blocking` (so the GPU work is finished when
/// it returns); the sum of the plans' total losses.
pub fn step_all(plans: &mut [Plan], batch: &Batch) -> CliResult<f64> {
    let mut total = 0.0;
    for plan in plans.iter_mut() {
        let out = plan.step(batch)?;
        total += out.report_blocking()?.total as f64;
    }
    Ok(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_shape_has_a_unique_name_and_a_flop_model() {
        for (i, s) in SHAPES.iter().enumerate() {
            assert!(SHAPES[..i].iter().all(|t| t.name != s.name), "{}", s.name);
        }
        // Small shapes of each kind of model: per row, softmax, retrieval.
        let c = Case::new("classification_64k", seed_of("classification_64k")).unwrap();
        assert_eq!((c.work, c.flops), (1 << 16, 15 << 16));
        let f = Case::new("fused3_1m", 1).unwrap();
        assert_eq!(f.flops, (15 + 41 + 13) << 20);
        let r = Case::new("cbns_1024_m16k", 1).unwrap();
        assert_eq!(r.work, 1024 * (1024 + 16384));
        assert_eq!(r.flops, flops::retrieval(1024, 16384, 64));
        assert!(Case::new("nope", 1).is_err());
    }

    #[test]
    fn session_work_counts_visits_and_ordered_label_pairs() {
        // Session 0: labels 0, 1, 1 (2 pairs, 9 visits); session 1: 3, 0 (1 pair, 4 visits).
        let (visits, pairs) = session_work(&[0, 0, 0, 1, 1], &[0.0, 1.0, 1.0, 3.0, 0.0]);
        assert_eq!((visits, pairs), (13, 3));
    }
}
