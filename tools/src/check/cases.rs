//! The conformance catalogue: every loss type and weighting strategy on seeded inputs, and the
//! edge cases (extreme logits, one row, all-zero weights, all rows ignored, sessions without
//! pairs, a bank that wraps, a non-finite input that must be refused).
//!
//! Each case is a config, a batch and a step count; the batch is drawn from the run's seed and the
//! case's name, so `--seed` changes every input and two runs with one seed see the same inputs.
//! Values are rounded to f32 before either engine sees them, so the reference and the GPU compute
//! on identical inputs.

use lossfuse::rng::SplitMix64;
use lossfuse::{HostBatch, HostTensor};
use serde::{Deserialize, Serialize};

/// How far a GPU result may be from the reference (docs/LOSSES.md: float32 against float64).
///
/// A scalar passes when |a − b| ≤ `rel`·max(|a|, |b|) + `abs`; a gradient when
/// ‖g − g_ref‖ ≤ `grad_norm`·‖g_ref‖ and max_i |g_i − g_ref,i| ≤ `grad_elem`·max_i |g_ref,i|.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct Tolerance {
    /// Relative error of every loss value, weight and the total.
    pub rel: f64,
    /// Absolute floor of the scalar test, for values that are (nearly) zero.
    pub abs: f64,
    /// Relative error of each gradient as a whole (L2 norm of the difference).
    pub grad_norm: f64,
    /// Largest element error relative to the gradient's largest element.
    pub grad_elem: f64,
}

impl Tolerance {
    /// Every bound times `factor`.
    pub fn scaled(&self, factor: f64) -> Self {
        Tolerance {
            rel: self.rel * factor,
            abs: self.abs * factor,
            grad_norm: self.grad_norm * factor,
            grad_elem: self.grad_elem * factor,
        }
    }
}

/// Per-row and softmax terms: one f32 evaluation per element.
pub const ROW_TOL: Tolerance = Tolerance {
    rel: 1e-4,
    abs: 1e-6,
    grad_norm: 1e-4,
    grad_elem: 1e-4,
};

/// Pairwise sums in f32 over up to thousands of pairs per row.
pub const PAIR_TOL: Tolerance = Tolerance {
    rel: 2e-4,
    abs: 1e-6,
    grad_norm: 2e-4,
    grad_elem: 5e-4,
};

/// Embedding terms: f32 scores over d-long dot products, and circle's γ = 32 scale.
pub const EMB_TOL: Tolerance = Tolerance {
    rel: 2e-4,
    abs: 1e-5,
    grad_norm: 5e-4,
    grad_elem: 5e-4,
};

/// What a case expects of both engines.
#[derive(Clone, Debug, PartialEq)]
pub enum Expect {
    /// Results that match the reference within the tolerance.
    Match,
    /// A refused step: both engines return an error naming this tensor (and no results).
    Refused {
        /// The tensor the error must name.
        tensor: String,
    },
}

/// One conformance case.
#[derive(Clone, Debug)]
pub struct Case {
    /// Unique name: `<loss type or strategy>/<variant>`.
    pub name: String,
    /// The family it belongs to (per-row, softmax, batch-wide, pairwise, retrieval, metric,
    /// weighting, edge).
    pub family: &'static str,
    /// What it exercises, in a few words.
    pub what: String,
    /// The TOML config.
    pub config: String,
    /// The batch, identical for every step.
    pub inputs: HostBatch,
    /// Steps run (state — learned weights, GHM histograms, EMA, the bank — carries between them).
    pub steps: usize,
    /// Tolerance against the reference.
    pub tol: Tolerance,
    /// What the engines must do.
    pub expect: Expect,
}

/// Seeded inputs for one case (the library's splitmix64).
struct Draw(SplitMix64);

impl Draw {
    /// Draws for case `name` under run seed `seed`: independent across cases.
    fn new(seed: u64, name: &str) -> Self {
        // FNV-1a of the name, so adding a case does not move the others' inputs.
        let h = name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        });
        Draw(SplitMix64::new(seed ^ h))
    }
    fn unit(&mut self) -> f64 {
        self.0.unit_f64()
    }
    fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    fn below(&mut self, n: u32) -> u32 {
        self.0.below(n)
    }
    fn reals(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.range(lo, hi)).collect()
    }
    fn binary(&mut self, n: usize, p: f64) -> Vec<f64> {
        (0..n).map(|_| (self.unit() < p) as i32 as f64).collect()
    }
    /// Sample weights: 20% zero, the rest uniform in [0.5, 2).
    fn weights(&mut self, n: usize) -> Vec<f64> {
        (0..n)
            .map(|_| {
                if self.unit() < 0.2 {
                    0.0
                } else {
                    self.range(0.5, 2.0)
                }
            })
            .collect()
    }
    /// Graded labels 0..=3.
    fn grades(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| self.below(4) as f64).collect()
    }
    /// Interleaved session ids: sizes cycling through 1, 2, 3, 5, 8, 13, 40 (some sessions have
    /// no pair), shuffled, spread over the i32 range.
    fn sessions(&mut self, n: usize) -> Vec<i64> {
        let sizes = [1usize, 2, 3, 5, 8, 13, 40];
        let mut ids = Vec::with_capacity(n);
        let mut s = 0usize;
        while ids.len() < n {
            let k = sizes[s % sizes.len()].min(n - ids.len());
            ids.extend(std::iter::repeat_n(s as i64 * 104_729 - 1_000_000, k));
            s += 1;
        }
        for i in (1..n).rev() {
            let j = self.below(i as u32 + 1) as usize;
            ids.swap(i, j);
        }
        ids
    }
    /// Logits whose GHM gradient norm |σ(x) − y| is at least 1e-4 away from a multiple of 1/100
    /// and of 1/3 and 1/10, so f32 and f64 put every row in the same bin for 1, 3, 10, 30 and
    /// 100 bins.
    fn ghm_logits(&mut self, labels: &[f64], scale: f64) -> Vec<f64> {
        labels
            .iter()
            .map(|&y| loop {
                let x = self.range(-scale, scale);
                let g = (1.0 / (1.0 + (-x).exp()) - y).abs();
                let near = |n: f64| ((g * n).round() - g * n).abs() < 1e-4 * n;
                if !near(300.0) && !near(3.0) {
                    break x;
                }
            })
            .collect()
    }
}

/// A batch builder that rounds reals to f32 (what the GPU sees).
#[derive(Default)]
struct Inputs(HostBatch);

impl Inputs {
    fn real(mut self, name: &str, shape: &[usize], v: Vec<f64>) -> Self {
        let t = HostTensor::real(shape.to_vec(), v).rounded_to_f32();
        self.0.insert(name.into(), t);
        self
    }
    fn ids(mut self, name: &str, shape: &[usize], v: Vec<i64>) -> Self {
        self.0
            .insert(name.into(), HostTensor::int(shape.to_vec(), v));
        self
    }
}

fn term(body: &str) -> String {
    format!("[[losses]]\n{body}\n")
}

/// Binary-label rows: logits `x`, `x2` in ±scale, labels `y` (30% positive), `buy` ⊂ `y`, soft
/// labels, probabilities, sample weights `w` (20% zero), a second label `finish`.
fn rows(d: &mut Draw, b: usize, scale: f64) -> Inputs {
    let x = d.reals(b, -scale, scale);
    let x2 = d.reals(b, -scale, scale);
    let y = d.binary(b, 0.3);
    let buy: Vec<f64> = y
        .iter()
        .map(|&c| if c > 0.0 { d.binary(1, 0.4)[0] } else { 0.0 })
        .collect();
    let soft = d.reals(b, 0.0, 1.0);
    let p = d.reals(b, 0.01, 0.99);
    let w = d.weights(b);
    let finish = d.binary(b, 0.2);
    Inputs::default()
        .real("x", &[b], x)
        .real("x2", &[b], x2)
        .real("y", &[b], y)
        .real("buy", &[b], buy)
        .real("soft", &[b], soft)
        .real("p", &[b], p)
        .real("w", &[b], w)
        .real("finish", &[b], finish)
}

/// Softmax rows: logits `z` [b, c] in ±scale, class ids `k` (10% `ignore` when given),
/// probability targets `t`, sample weights `w`.
fn softmax_rows(d: &mut Draw, b: usize, c: usize, scale: f64, ignore: Option<i64>) -> Inputs {
    let z = d.reals(b * c, -scale, scale);
    let k: Vec<i64> = (0..b)
        .map(|_| match ignore {
            Some(i) if d.unit() < 0.1 => i,
            _ => d.below(c as u32) as i64,
        })
        .collect();
    let mut t = Vec::with_capacity(b * c);
    for _ in 0..b {
        let row: Vec<f64> = (0..c).map(|_| d.unit().powi(3)).collect();
        let s: f64 = row.iter().sum();
        t.extend(row.iter().map(|v| v / s));
    }
    let w = d.weights(b);
    Inputs::default()
        .real("z", &[b, c], z)
        .ids("k", &[b], k)
        .real("t", &[b, c], t)
        .real("w", &[b], w)
}

/// Pairwise rows: logits with exact ties (a quarter from 5 values), graded labels, weights,
/// interleaved sessions `s`.
fn pair_rows(d: &mut Draw, b: usize) -> Inputs {
    let x: Vec<f64> = (0..b)
        .map(|_| {
            if d.unit() < 0.25 {
                d.below(5) as f64 * 0.5 - 1.0
            } else {
                d.range(-3.0, 3.0)
            }
        })
        .collect();
    let y = d.grades(b);
    let w = d.weights(b);
    let s = d.sessions(b);
    Inputs::default()
        .real("x", &[b], x)
        .real("y", &[b], y)
        .real("w", &[b], w)
        .ids("s", &[b], s)
}

/// Embedding rows: `u`, `v` [b, dim] in ±1, item ids with duplicates, log_q, graded labels,
/// sessions and weights.
fn embedding_rows(d: &mut Draw, b: usize, dim: usize) -> Inputs {
    let u = d.reals(b * dim, -1.0, 1.0);
    let v = d.reals(b * dim, -1.0, 1.0);
    let ids: Vec<i64> = (0..b).map(|_| d.below(b as u32 / 2) as i64 - 3).collect();
    let lq = d.reals(b, -4.0, -0.5);
    let y = d.grades(b);
    let s: Vec<i64> = (0..b).map(|_| d.below(3) as i64).collect();
    let w = d.weights(b);
    Inputs::default()
        .real("u", &[b, dim], u)
        .real("v", &[b, dim], v)
        .ids("ids", &[b], ids)
        .real("lq", &[b], lq)
        .real("y", &[b], y)
        .ids("s", &[b], s)
        .real("w", &[b], w)
}

/// `b` embeddings `u` [b, dim] around one centre per class (labels `y`, 4 classes) and weights
/// `w`: a row's positives are close, so multi-similarity's pair mining drops pairs on both sides.
fn clustered_rows(d: &mut Draw, b: usize, dim: usize) -> Inputs {
    let centres = d.reals(4 * dim, -1.0, 1.0);
    let y: Vec<usize> = (0..b).map(|_| d.below(4) as usize).collect();
    let noise = d.reals(b * dim, -0.6, 0.6);
    let u = (0..b * dim)
        .map(|x| centres[y[x / dim] * dim + x % dim] + noise[x])
        .collect();
    let labels = y.iter().map(|&c| c as f64).collect();
    let w = d.weights(b);
    Inputs::default()
        .real("u", &[b, dim], u)
        .real("y", &[b], labels)
        .real("w", &[b], w)
}

/// Three terms on their own tensors for the weighting strategies: `ctr` (classification),
/// `reg` (sigmoid L2), `cls` (softmax CE, 5 classes).
fn weighting_rows(d: &mut Draw) -> Inputs {
    let b = 600;
    let k: Vec<i64> = (0..b).map(|_| d.below(5) as i64).collect();
    Inputs::default()
        .real("x", &[b], d.reals(b, -4.0, 4.0))
        .real("x2", &[b], d.reals(b, -4.0, 4.0))
        .real("y", &[b], d.binary(b, 0.3))
        .real("r", &[b], d.reals(b, 0.0, 1.0))
        .real("z", &[b, 5], d.reals(b * 5, -3.0, 3.0))
        .ids("k", &[b], k)
}

fn weighting_terms(learn: bool) -> String {
    let l = if learn {
        "\nlearn_loss_weight = true"
    } else {
        ""
    };
    format!(
        "[[losses]]\nname = 'ctr'\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nweight = 1.5{l}\n\
         [[losses]]\nname = 'reg'\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x2'\nlabels = 'r'\nweight = 0.5{l}\n\
         [[losses]]\nname = 'cls'\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nweight = 0.25\n"
    )
}

/// Collects cases, drawing each one's inputs from the run seed and its name.
struct Catalogue {
    seed: u64,
    cases: Vec<Case>,
}

impl Catalogue {
    #[allow(clippy::too_many_arguments)]
    fn add(
        &mut self,
        family: &'static str,
        name: &str,
        what: &str,
        config: String,
        steps: usize,
        tol: Tolerance,
        inputs: impl FnOnce(&mut Draw) -> Inputs,
    ) {
        let mut draw = Draw::new(self.seed, name);
        self.cases.push(Case {
            name: name.to_string(),
            family,
            what: what.to_string(),
            config,
            inputs: inputs(&mut draw).0,
            steps,
            tol,
            expect: Expect::Match,
        });
    }
}

/// Every case, with inputs drawn from `seed`.
pub fn catalogue(seed: u64) -> Vec<Case> {
    let mut c = Catalogue {
        seed,
        cases: Vec::new(),
    };
    per_row(&mut c);
    ziln(&mut c);
    softmax(&mut c);
    distill(&mut c);
    batch_wide(&mut c);
    pairwise(&mut c);
    listwise(&mut c);
    retrieval(&mut c);
    weighting(&mut c);
    edge(&mut c);
    c.cases
}

fn per_row(c: &mut Catalogue) {
    let f = "per-row";
    let one = |body: &str| term(body);
    c.add(f, "classification/binary", "sigmoid CE, pos_weight, sample weights",
        one("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\npos_weight = 3.0\nsample_weights = 'w'"),
        1, ROW_TOL, |d| rows(d, 1000, 8.0));
    c.add(
        f,
        "classification/soft_labels",
        "soft labels with label smoothing",
        one("loss_type = 'classification'\nlogits = 'x'\nlabels = 'soft'\nlabel_smoothing = 0.1"),
        1,
        ROW_TOL,
        |d| rows(d, 1000, 8.0),
    );
    c.add(f, "classification/reductions", "four terms on one logit tensor, one per reduction",
        ["nonzero_mean", "weighted_mean", "mean", "sum"].iter().map(|r| term(&format!(
            "name = '{r}'\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'w'\nreduction = '{r}'"
        ))).collect(),
        1, ROW_TOL, |d| rows(d, 777, 5.0));
    c.add(f, "classification/label_weights", "sample weights as a combination of label columns",
        one("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = { y = 1.0, finish = 3.0, buy = 5.0 }\nreduction = 'weighted_mean'"),
        1, ROW_TOL, |d| rows(d, 1000, 4.0));
    c.add(
        f,
        "l2_loss",
        "squared error on predictions",
        one("loss_type = 'l2_loss'\npredictions = 'x'\nlabels = 'soft'"),
        1,
        ROW_TOL,
        |d| rows(d, 1000, 4.0),
    );
    c.add(
        f,
        "sigmoid_l2_loss",
        "squared error on σ(logits), weighted",
        one("loss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'soft'\nsample_weights = 'w'"),
        1,
        ROW_TOL,
        |d| rows(d, 1000, 4.0),
    );
    c.add(
        f,
        "cross_entropy_loss",
        "binary CE on probabilities",
        one("loss_type = 'cross_entropy_loss'\nprobabilities = 'p'\nlabels = 'y'"),
        1,
        ROW_TOL,
        |d| rows(d, 1000, 4.0),
    );
    c.add(f, "binary_focal_loss/alpha", "γ = 2, α = 0.25",
        one("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngamma = 2.0\nalpha = 0.25"),
        1, ROW_TOL, |d| rows(d, 1000, 6.0));
    c.add(f, "binary_focal_loss/smoothing", "γ = 1.5, label smoothing, sample weights",
        one("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngamma = 1.5\nlabel_smoothing = 0.1\nsample_weights = 'w'"),
        1, ROW_TOL, |d| rows(d, 1000, 6.0));
    c.add(f, "esmm", "CTR and CTCVR through p_ctr·p_cvr",
        one("loss_type = 'esmm'\nctr_logits = 'x'\ncvr_logits = 'x2'\nctr_labels = 'y'\nctcvr_labels = 'buy'"),
        1, ROW_TOL, |d| rows(d, 1000, 5.0));
    c.add(f, "order_calibrate_loss", "relu(σ(x) − σ(x_rel)), gradients to both towers",
        one("loss_type = 'order_calibrate_loss'\nlogits = 'x'\nrelation_logits = 'x2'\nweight = 0.5"),
        1, ROW_TOL, |d| rows(d, 1000, 5.0));
    c.add(f, "order_calibrate_loss/weighted", "sample weights, sum over the rows",
        one("loss_type = 'order_calibrate_loss'\nlogits = 'x'\nrelation_logits = 'x2'\nsample_weights = 'w'\nreduction = 'sum'"),
        1, ROW_TOL, |d| rows(d, 1000, 5.0));
    c.add(f, "per-row/fused", "four per-row terms on shared logits in one pass",
        "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nalpha = 0.25\n\
         [[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'y'\nweight = 0.5\n\
         [[losses]]\nloss_type = 'esmm'\nctr_logits = 'x'\ncvr_logits = 'x2'\nctr_labels = 'y'\nctcvr_labels = 'buy'\nweight = 2.0\n".into(),
        1, ROW_TOL, |d| rows(d, 1500, 6.0));
}

/// ZILN rows: logits `zl` [b, 3] (σ logits in ±`sigma_scale`, the others in ±3), amounts
/// `amount` (a share `zero` of them 0, the rest e^{N(1, 1)}-like), and a binary column `x`/`y`.
fn ziln_rows(d: &mut Draw, b: usize, zero: f64, sigma_scale: f64) -> Inputs {
    let mut zl = Vec::with_capacity(3 * b);
    for _ in 0..b {
        zl.push(d.range(-3.0, 3.0));
        zl.push(d.range(-3.0, 3.0));
        zl.push(d.range(-sigma_scale, sigma_scale));
    }
    let amount = (0..b)
        .map(|_| {
            if d.unit() < zero {
                0.0
            } else {
                d.range(-1.5, 3.5).exp()
            }
        })
        .collect();
    Inputs::default()
        .real("zl", &[b, 3], zl)
        .real("amount", &[b], amount)
        .real("x", &[b], d.reals(b, -4.0, 4.0))
        .real("y", &[b], d.binary(b, 0.3))
}

fn ziln(c: &mut Catalogue) {
    let f = "per-row";
    let z = |extra: &str| {
        term(&format!(
            "loss_type = 'ziln_loss'\nlogits = 'zl'\nlabels = 'amount'\n{extra}"
        ))
    };
    c.add(
        f,
        "ziln_loss",
        "zero-inflated lognormal, defaults; prediction compared too",
        z(""),
        1,
        ROW_TOL,
        |d| ziln_rows(d, 1000, 0.4, 3.0),
    );
    c.add(f, "ziln_loss/params", "both weights, both penalties, σ clipped at max_sigma = 1.5",
        z("classification_weight = 0.3\nregression_weight = 2.0\nmu_regularization = 0.1\nsigma_regularization = 0.05\nmax_sigma = 1.5\nweight = 0.5"),
        1, ROW_TOL, |d| ziln_rows(d, 777, 0.3, 6.0));
    c.add(
        f,
        "ziln_loss/log_prediction",
        "return_log_pred_value, max_log_clip_value 1",
        z("return_log_pred_value = true") + &z("name = 'clipped'\nmax_log_clip_value = 1.0"),
        1,
        ROW_TOL,
        |d| ziln_rows(d, 500, 0.4, 3.0),
    );
    c.add(
        f,
        "ziln_loss/zero_labels",
        "every amount 0: no regression part",
        z(""),
        1,
        ROW_TOL,
        |d| ziln_rows(d, 600, 1.0, 3.0),
    );
    c.add(
        f,
        "ziln_loss/positive_labels",
        "every amount > 0",
        z(""),
        1,
        ROW_TOL,
        |d| ziln_rows(d, 600, 0.0, 3.0),
    );
    // σ at its floor sqrt(1e-7): dNLL/dμ = −(ln y − μ)/σ² scales f32 rounding by 1e7.
    c.add(
        f,
        "ziln_loss/sigma_floor",
        "σ logits down to −20 (σ clipped at sqrt(1e-7))",
        z(""),
        1,
        Tolerance {
            grad_norm: 1e-3,
            grad_elem: 1e-3,
            ..ROW_TOL
        },
        |d| ziln_rows(d, 500, 0.3, 20.0),
    );
    c.add(
        f,
        "ziln_loss/fused",
        "beside classification in the fused row group, two steps",
        z("") + &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'"),
        2,
        ROW_TOL,
        |d| ziln_rows(d, 1500, 0.5, 3.0),
    );
    ziln_refused(c, &z);
}

/// `ziln_loss`'s refused step: an amount < 0, named in the error.
fn ziln_refused(c: &mut Catalogue, z: &dyn Fn(&str) -> String) {
    let f = "per-row";
    let mut refused = Catalogue {
        seed: c.seed,
        cases: Vec::new(),
    };
    refused.add(
        f,
        "ziln_loss/negative_label",
        "an amount < 0: the step is refused naming it",
        z(""),
        1,
        ROW_TOL,
        |d| {
            let r = ziln_rows(d, 100, 0.4, 3.0);
            let mut amount = r.0["amount"].reals("amount", None).expect("reals").to_vec();
            amount[42] = -0.5;
            r.real("amount", &[100], amount)
        },
    );
    for mut case in refused.cases {
        case.expect = Expect::Refused {
            tensor: "amount".into(),
        };
        c.cases.push(case);
    }
}

fn softmax(c: &mut Catalogue) {
    let f = "softmax";
    let sm = |extra: &str| {
        term(&format!(
            "loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\n{extra}"
        ))
    };
    c.add(
        f,
        "softmax_cross_entropy/plain",
        "class ids, C = 37",
        sm(""),
        1,
        ROW_TOL,
        |d| softmax_rows(d, 100, 37, 6.0, None),
    );
    c.add(
        f,
        "softmax_cross_entropy/smoothing",
        "label smoothing, temperature, sample weights, C = 1000",
        sm("label_smoothing = 0.1\ntemperature = 0.5\nsample_weights = 'w'"),
        1,
        ROW_TOL,
        |d| softmax_rows(d, 40, 1000, 6.0, None),
    );
    c.add(f, "softmax_cross_entropy/ignore_class_weights", "ignore_index, class weights (one zero), z-loss",
        sm("ignore_index = -100\nclass_weights = [1.0, 2.0, 0.5, 0.0, 1.5, 3.0, 1.0]\nlabel_smoothing = 0.05\nz_loss = 1e-3"),
        1, ROW_TOL, |d| softmax_rows(d, 500, 7, 5.0, Some(-100)));
    c.add(f, "softmax_cross_entropy/probabilities", "probability targets, smoothing, class weights, z-loss",
        term("loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 't'\nlabel_smoothing = 0.2\nclass_weights = [1.0, 2.0, 0.5, 0.1, 1.5, 3.0, 1.0, 1.0, 1.0, 2.0, 1.0]\nz_loss = 1e-2\nsample_weights = 'w'"),
        1, ROW_TOL, |d| softmax_rows(d, 300, 11, 4.0, None));
    c.add(
        f,
        "softmax_cross_entropy/wide_row",
        "C = 65,536: a row wider than a workgroup",
        sm("label_smoothing = 0.1"),
        1,
        ROW_TOL,
        |d| softmax_rows(d, 3, 65_536, 10.0, None),
    );
    c.add(
        f,
        "classification/multiclass",
        "classification with C = 10 is softmax CE",
        term("loss_type = 'classification'\nlogits = 'z'\nlabels = 'k'\nlabel_smoothing = 0.1"),
        1,
        ROW_TOL,
        |d| softmax_rows(d, 100, 10, 4.0, None),
    );
}

/// Probabilities with the clip at 1e-7 active: exact 0 and 1, 3e-9 and 1 − 2e-8 on some rows.
fn kd_probs(d: &mut Draw, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| match i % 17 {
            0 => 0.0,
            1 => 1.0,
            2 => 3e-9,
            3 => 1.0 - 2e-8,
            _ => d.unit(),
        })
        .collect()
}

/// Distillation rows: student `x` and teacher `t` logits in ±20 (σ below 1e-7 beyond ±16.1),
/// probabilities `p`, `q` with the clip active, soft labels `soft`, weights `w`; and [b, c]
/// student `z`, teacher `tz` in ±12, probability rows `pz`, `qz` (some zeros), class ids `k`.
fn kd_rows(d: &mut Draw, b: usize, c: usize) -> Inputs {
    let probs = |d: &mut Draw| -> Vec<f64> {
        (0..b)
            .flat_map(|_| {
                let row: Vec<f64> = (0..c)
                    .map(|_| {
                        if d.unit() < 0.1 {
                            0.0
                        } else {
                            d.unit().powi(3)
                        }
                    })
                    .collect();
                let s: f64 = row.iter().sum::<f64>().max(1e-30);
                row.into_iter().map(move |v| v / s)
            })
            .collect()
    };
    let (pz, qz) = (probs(d), probs(d));
    let k: Vec<i64> = (0..b).map(|_| d.below(c as u32) as i64).collect();
    Inputs::default()
        .real("x", &[b], d.reals(b, -20.0, 20.0))
        .real("t", &[b], d.reals(b, -20.0, 20.0))
        .real("p", &[b], kd_probs(d, b))
        .real("q", &[b], kd_probs(d, b))
        .real("soft", &[b], d.reals(b, 0.0, 1.0))
        .real("w", &[b], d.weights(b))
        .real("z", &[b, c], d.reals(b * c, -12.0, 12.0))
        .real("tz", &[b, c], d.reals(b * c, -12.0, 12.0))
        .real("pz", &[b, c], pz)
        .real("qz", &[b, c], qz)
        .ids("k", &[b], k)
}

fn distill(c: &mut Catalogue) {
    let f = "distill";
    let kd = |lt: &str, x: &str, y: &str, extra: &str| {
        term(&format!(
            "loss_type = '{lt}'\nlogits = '{x}'\nlabels = '{y}'\n{extra}"
        ))
    };
    c.add(
        f,
        "kl_divergence_loss",
        "one column, T = 2, teacher logits in ±20 (clip at 1e-7)",
        kd("kl_divergence_loss", "x", "t", "temperature = 2.0"),
        1,
        ROW_TOL,
        |d| kd_rows(d, 1000, 2),
    );
    c.add(
        f,
        "kl_divergence_loss/probabilities",
        "student and teacher probabilities incl. 0 and 1, sample weights",
        kd(
            "kl_divergence_loss",
            "p",
            "q",
            "pred_is_logits = false\nlabel_is_logits = false\nsample_weights = 'w'",
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 1000, 2),
    );
    c.add(
        f,
        "kl_divergence_loss/classes",
        "C = 37, T = 2, beside softmax CE on the same logits",
        format!(
            "{}{}",
            term("loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'"),
            kd(
                "kl_divergence_loss",
                "z",
                "tz",
                "temperature = 2.0\nsample_weights = 'w'\nweight = 0.5"
            )
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 300, 37),
    );
    c.add(
        f,
        "kl_divergence_loss/class_probabilities",
        "C = 37, probabilities in (log(p + 1e-7)), clip active",
        kd(
            "kl_divergence_loss",
            "pz",
            "qz",
            "pred_is_logits = false\nlabel_is_logits = false",
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 300, 37),
    );
    c.add(
        f,
        "binary_cross_entropy_loss/teacher",
        "teacher logits, T = 2.5, student probabilities",
        kd(
            "binary_cross_entropy_loss",
            "p",
            "t",
            "temperature = 2.5\npred_is_logits = false",
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 1000, 2),
    );
    c.add(
        f,
        "binary_cross_entropy_loss/plain",
        "no teacher key: EasyRec's BINARY_CROSS_ENTROPY_LOSS on soft labels",
        kd("binary_cross_entropy_loss", "x", "soft", ""),
        1,
        ROW_TOL,
        |d| kd_rows(d, 1000, 2),
    );
    c.add(
        f,
        "binary_cross_entropy_loss/classes",
        "[B, C] element-wise, mean over B·C",
        kd(
            "binary_cross_entropy_loss",
            "z",
            "tz",
            "label_is_logits = true",
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 200, 9),
    );
    c.add(
        f,
        "l2_distill_loss",
        "one column, sample weights, T = 0.5",
        kd(
            "l2_distill_loss",
            "x",
            "t",
            "temperature = 0.5\nsample_weights = 'w'",
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 1000, 2),
    );
    c.add(
        f,
        "l2_distill_loss/classes",
        "C = 37, T = 3 with KL at T = 3 on the same logits",
        format!(
            "{}{}",
            kd("l2_distill_loss", "z", "tz", "temperature = 3.0"),
            kd("kl_divergence_loss", "z", "tz", "temperature = 3.0")
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 300, 37),
    );
    c.add(
        f,
        "distill/wide_row",
        "C = 5000: KL and L2 over a row wider than a workgroup",
        format!(
            "{}{}",
            kd("kl_divergence_loss", "z", "tz", ""),
            kd("l2_distill_loss", "z", "tz", "")
        ),
        1,
        ROW_TOL,
        |d| kd_rows(d, 4, 5000),
    );
    let mut bad = Catalogue {
        seed: c.seed,
        cases: Vec::new(),
    };
    bad.add(
        f,
        "distill/probability_refused",
        "a student probability above 1 with pred_is_logits = false is refused",
        kd("kl_divergence_loss", "p", "t", "pred_is_logits = false"),
        1,
        ROW_TOL,
        |d| {
            let mut p = kd_probs(d, 64);
            p[5] = 1.5;
            kd_rows(d, 64, 2).real("p", &[64], p)
        },
    );
    for mut case in bad.cases {
        case.expect = Expect::Refused { tensor: "p".into() };
        c.cases.push(case);
    }
}

fn batch_wide(c: &mut Catalogue) {
    let f = "batch-wide";
    let ghm = |d: &mut Draw, b: usize| {
        let y = d.binary(b, 0.3);
        let x = d.ghm_logits(&y, 6.0);
        Inputs::default()
            .real("x", &[b], x)
            .real("y", &[b], y)
            .real("w", &[b], d.weights(b))
    };
    c.add(
        f,
        "ghm_c/momentum",
        "10 bins, momentum 0.75, three steps (the histogram evolves)",
        term("loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 10\nmomentum = 0.75"),
        3,
        ROW_TOL,
        |d| ghm(d, 1000),
    );
    c.add(
        f,
        "ghm_c/weights",
        "30 bins, no momentum, sample weights",
        term("loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 30\nsample_weights = 'w'"),
        1,
        ROW_TOL,
        |d| ghm(d, 1000),
    );
    c.add(f, "binary_focal_loss/ohem", "OHEM: the hardest 40% of rows",
        term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = 0.4\nsample_weights = 'w'\ngamma = 1.0"),
        1, ROW_TOL, |d| rows(d, 1000, 6.0));
    c.add(
        f,
        "binary_focal_loss/ohem_tie",
        "OHEM at a tie: B·r = 500.5 keeps 500 (rint, half to even)",
        term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = 0.5"),
        1,
        ROW_TOL,
        |d| rows(d, 1001, 6.0),
    );
    c.add(f, "f1_reweighted_loss", "β² = 2, label smoothing, sample weights, two steps",
        term("loss_type = 'f1_reweighted_loss'\nlogits = 'x'\nlabels = 'y'\nf1_beta_square = 2.0\nlabel_smoothing = 0.1\nsample_weights = 'w'"),
        2, ROW_TOL, |d| rows(d, 1000, 6.0));
    c.add(
        f,
        "batch_wide/four_terms",
        "examples/configs/batch_wide.toml: four terms, one submission",
        include_str!("../../../examples/configs/batch_wide.toml").into(),
        2,
        ROW_TOL,
        |d| {
            let b = 2000;
            let y = d.binary(b, 0.3);
            let x = d.ghm_logits(&y, 6.0);
            Inputs::default()
                .real("logits", &[b], x)
                .real("labels", &[b], y)
        },
    );
}

/// `n` rows with labels 0..n: every pair of rows is a pair, P = n(n−1)/2.
fn distinct_labels(d: &mut Draw, n: usize) -> Inputs {
    Inputs::default()
        .real("x", &[n], d.reals(n, -3.0, 3.0))
        .real("y", &[n], (0..n).map(|i| i as f64).collect())
}

fn pairwise(c: &mut Catalogue) {
    let f = "pairwise";
    let p = |body: &str| term(&format!("{body}\nlogits = 'x'\nlabels = 'y'"));
    c.add(f, "pair_wise_loss", "sessions, margin and temperature, sample weights",
        p("loss_type = 'pair_wise_loss'\nmargin = 0.5\ntemperature = 2.0\nsession = 's'\nsample_weights = 'w'"),
        1, PAIR_TOL, |d| pair_rows(d, 777));
    c.add(f, "pairwise_logistic_loss", "sessions, hinge margin, label margin, weighted mean",
        p("loss_type = 'pairwise_logistic_loss'\nhinge_margin = 0.3\nuse_label_margin = true\ntemperature = 0.5\nsession = 's'\nsample_weights = 'w'\nreduction = 'weighted_mean'"),
        1, PAIR_TOL, |d| pair_rows(d, 777));
    c.add(f, "pairwise_focal_loss", "sessions, γ = 1, α = 0.25, hinge margin",
        p("loss_type = 'pairwise_focal_loss'\ngamma = 1.0\nalpha = 0.25\nhinge_margin = 1.0\nsession = 's'"),
        1, PAIR_TOL, |d| pair_rows(d, 777));
    c.add(f, "pairwise_hinge_loss", "sessions, margin 0.7, sum",
        p("loss_type = 'pairwise_hinge_loss'\nuse_label_margin = false\nmargin = 0.7\ntemperature = 1.5\nsession = 's'\nsample_weights = 'w'\nreduction = 'sum'"),
        1, PAIR_TOL, |d| pair_rows(d, 777));
    c.add(f, "pairwise_hinge_loss/label_is_logits", "label gap as margin, labels divided by T = 2 too (EasyRec's default)",
        p("loss_type = 'pairwise_hinge_loss'\ntemperature = 2.0\nsession = 's'\nsample_weights = 'w'"),
        1, PAIR_TOL, |d| pair_rows(d, 777));
    c.add(f, "pairwise_hinge_loss/use_exponent", "σ of scores and labels, relu(e^a − 1), T = 0.5",
        p("loss_type = 'pairwise_hinge_loss'\nuse_exponent = true\ntemperature = 0.5\nsession = 's'"),
        1, PAIR_TOL, |d| pair_rows(d, 777));
    c.add(
        f,
        "pair_wise_loss/integer_labels",
        "integer labels (EasyRec's int64 clicks): graded ids for pairs, 0/1 ids for focal, cast on the GPU",
        p("loss_type = 'pair_wise_loss'\nsession = 's'")
            + &term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'click'"),
        1,
        PAIR_TOL,
        |d| {
            let r = pair_rows(d, 777);
            let y = r.0["y"].reals("y", None).expect("reals").to_vec();
            let click = y.iter().map(|&g| (g >= 2.0) as i64).collect();
            r.ids("y", &[777], y.iter().map(|&g| g as i64).collect())
                .ids("click", &[777], click)
        },
    );
    c.add(
        f,
        "pair_wise_loss/no_session_ohem",
        "all pairs of the batch, OHEM over pairs, two steps",
        p("loss_type = 'pair_wise_loss'\nohem_ratio = 0.37\nsample_weights = 'w'"),
        2,
        PAIR_TOL,
        |d| pair_rows(d, 300),
    );
    c.add(
        f,
        "pair_wise_loss/ohem_tie",
        "OHEM at a tie of the pair count: P·r = 22.5 keeps 22 (rint, half to even)",
        p("loss_type = 'pair_wise_loss'\nohem_ratio = 0.5"),
        1,
        PAIR_TOL,
        |d| distinct_labels(d, 10), // P = 45 pairs
    );
    c.add(
        f,
        "pair_wise_loss/ohem_decimal_tie",
        "OHEM at a tie of the decimal ratio: P·0.3 = 4.5 keeps 4 (exact; the f32 product keeps 5)",
        p("loss_type = 'pair_wise_loss'\nohem_ratio = 0.3"),
        1,
        PAIR_TOL,
        |d| distinct_labels(d, 6), // P = 15 pairs
    );
    let jrc = |d: &mut Draw| {
        let b = 640;
        let s = d.sessions(b);
        Inputs::default()
            .real("z", &[b, 2], d.reals(2 * b, -3.0, 3.0))
            .real("y", &[b], d.binary(b, 0.35))
            .real("w", &[b], d.weights(b))
            .ids("s", &[b], s)
    };
    c.add(f, "jrc_loss/fixed", "α = 0.3, cross-label listwise part, sample weights",
        term("loss_type = 'jrc_loss'\nlogits = 'z'\nlabels = 'y'\nsession = 's'\nalpha = 0.3\nsame_label_loss = false\nsample_weights = 'w'"),
        1, PAIR_TOL, jrc);
    c.add(f, "jrc_loss/uncertainty", "learned u1, u2 with Adam over three steps",
        term("loss_type = 'jrc_loss'\nlogits = 'z'\nlabels = 'y'\nsession = 's'\nloss_weight_strategy = 'uncertainty'\nuncertainty = { optimizer = 'adam', learning_rate = 0.05 }"),
        3, PAIR_TOL, jrc);
}

/// Graded labels `y`, teacher positions `pos` (some below 1 and beyond 512), JRC logits `z` and
/// labels `yb` besides the pairwise rows, in `pair_rows`' sessions.
fn list_rows(d: &mut Draw, b: usize) -> Inputs {
    let pos: Vec<f64> = (0..b).map(|_| d.below(700) as f64 * 0.999).collect();
    let z = d.reals(2 * b, -3.0, 3.0);
    let yb = d.binary(b, 0.35);
    pair_rows(d, b)
        .real("pos", &[b], pos)
        .real("z", &[b, 2], z)
        .real("yb", &[b], yb)
}

#[rustfmt::skip]
fn listwise(c: &mut Catalogue) {
    let f = "listwise";
    let l = |body: &str| term(&format!("{body}\nlogits = 'x'\nsession = 's'"));
    let rows = |d: &mut Draw| list_rows(d, 777);
    c.add(f, "listwise_rank_loss", "raw graded labels weigh −log softmax per session, T = 0.5, sum",
        l("loss_type = 'listwise_rank_loss'\nlabels = 'y'\ntemperature = 0.5\nreduction = 'sum'"), 1, PAIR_TOL, rows);
    c.add(f, "listwise_rank_loss/label_is_logits", "targets softmax(y/T) per session, T = 2",
        l("loss_type = 'listwise_rank_loss'\nlabels = 'y'\nlabel_is_logits = true\ntemperature = 2.0"),
        1, PAIR_TOL, rows);
    // Mean over sessions (EasyRec's): d total/db is 0 analytically and its f32 rounding, about
    // 1e-7·Σ|dl/dz| times the coefficient, stays under the absolute floor only divided by N.
    c.add(f, "listwise_rank_loss/scale_logits", "learned x·|w| + b with Adam over three steps",
        l("loss_type = 'listwise_rank_loss'\nlabels = 'y'\nscale_logits = true\nscale_optimizer = { optimizer = 'adam', learning_rate = 0.1 }"),
        3, PAIR_TOL, rows);
    c.add(f, "listwise_distill_loss", "teacher positions clipped to [1, 512], log1p(512) − log(p), normalised",
        l("loss_type = 'listwise_distill_loss'\nlabels = 'pos'"), 1, PAIR_TOL, rows);
    c.add(f, "listwise_distill_loss/scale_logits", "clip 30, T = 0.7, learned scale with SGD over three steps",
        l("loss_type = 'listwise_distill_loss'\nlabels = 'pos'\nlabel_clip_max_value = 30\ntemperature = 0.7\nscale_logits = true\nscale_optimizer = { optimizer = 'sgd', learning_rate = 0.5 }"),
        3, PAIR_TOL, rows);
    c.add(f, "listwise/shared_sort", "pair_wise_loss, jrc_loss and both listwise terms on one session tensor (one sort)",
        format!("{}{}{}{}",
            term("name = 'pairs'\nloss_type = 'pair_wise_loss'\nlogits = 'x'\nlabels = 'y'\nsession = 's'\nsample_weights = 'w'"),
            term("name = 'jrc'\nloss_type = 'jrc_loss'\nlogits = 'z'\nlabels = 'yb'\nsession = 's'"),
            term("name = 'rank'\nloss_type = 'listwise_rank_loss'\nlogits = 'x'\nlabels = 'y'\nsession = 's'"),
            term("name = 'distill'\nloss_type = 'listwise_distill_loss'\nlogits = 'x'\nlabels = 'pos'\nsession = 's'\nweight = 0.5")),
        2, PAIR_TOL, rows);
    c.add(f, "edge/listwise_sessions", "a session of 3,000 rows, one-row sessions and all-zero-label sessions",
        l("loss_type = 'listwise_rank_loss'\nlabels = 'y'"), 1, PAIR_TOL, |d| {
            let b = 3_400;
            // Rows 0..3000 one session; then sessions of 4 whose labels are all 0; then singletons.
            let s: Vec<i64> = (0..b as i64)
                .map(|i| if i < 3_000 { 7 } else if i < 3_200 { 100 + i / 4 } else { i })
                .collect();
            let y: Vec<f64> = (0..b).map(|i| if (3_000..3_200).contains(&i) { 0.0 } else { d.below(4) as f64 }).collect();
            Inputs::default()
                .real("x", &[b], d.reals(b, -3.0, 3.0))
                .real("y", &[b], y)
                .ids("s", &[b], s)
        });
}

fn retrieval(c: &mut Catalogue) {
    let (r, m) = ("retrieval", "metric");
    // B = 37: not a multiple of anything; d = 8.
    let e = |d: &mut Draw| embedding_rows(d, 37, 8);
    c.add(r, "in_batch_softmax/dot", "dot, logQ, accidental hits by id, weights, sum",
        term("loss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'\nlog_q = 'lq'\ntemperature = 0.5\nsample_weights = 'w'\nreduction = 'sum'"),
        1, EMB_TOL, e);
    c.add(r, "in_batch_softmax/cosine", "cosine (gradient through the normalisation), τ = 0.1",
        term("loss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\nsimilarity = 'cosine'\ntemperature = 0.1"),
        1, EMB_TOL, e);
    c.add(r, "cross_batch_softmax", "bank of 50 (wraps at the second write), warm-up 1, four steps",
        term("loss_type = 'cross_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'\nlog_q = 'lq'\nsimilarity = 'cosine'\ntemperature = 0.2\nbank_size = 50\nwarmup_steps = 1\nsample_weights = 'w'\nreduction = 'weighted_mean'"),
        4, EMB_TOL, e);
    c.add(r, "contrastive_loss/info_nce", "InfoNCE, dot, τ = 0.7",
        term("loss_type = 'contrastive_loss'\nview_a = 'u'\nview_b = 'v'\nsimilarity = 'dot'\ntemperature = 0.7"),
        1, EMB_TOL, e);
    c.add(r, "contrastive_loss/nt_xent", "NT-Xent (2B rows), weights, mean",
        term("loss_type = 'contrastive_loss'\nview_a = 'u'\nview_b = 'v'\nvariant = 'nt_xent'\nsample_weights = 'w'\nreduction = 'mean'"),
        1, EMB_TOL, e);
    c.add(r, "softmax_cross_entropy_with_negative_mining", "K = 6 negatives, margin, γ, support vectors, labels",
        term("loss_type = 'softmax_cross_entropy_with_negative_mining'\nuser = 'u'\nitem = 'v'\nlabels = 'y'\nnum_negative_samples = 6\nmargin = 0.1\ngamma = 3.0\ncoefficient_of_support_vector = 1.5\nseed = 11\nsample_weights = 'w'"),
        2, EMB_TOL, e);
    c.add(
        m,
        "circle_loss",
        "graded labels, sessions",
        term("loss_type = 'circle_loss'\nembeddings = 'u'\nlabels = 'y'\nsession = 's'"),
        1,
        EMB_TOL,
        e,
    );
    c.add(m, "multi_similarity_loss", "graded labels, weights, weighted mean",
        term("loss_type = 'multi_similarity_loss'\nembeddings = 'u'\nlabels = 'y'\nsample_weights = 'w'\nreduction = 'weighted_mean'"),
        1, EMB_TOL, e);
    c.add(m, "multi_similarity_loss/ms_mining", "pair mining (ε = 0.1) over 300 clustered rows, d = 16, weights",
        term("loss_type = 'multi_similarity_loss'\nembeddings = 'u'\nlabels = 'y'\nms_mining = true\nbeta = 10.0\nlamb = 0.5\nsample_weights = 'w'"),
        1, EMB_TOL, |d| clustered_rows(d, 300, 16));
    c.add(r, "in_batch_softmax/d64_tiles", "B = 300, d = 64: several tiles, workgroups and column ranges",
        term("loss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'\nlog_q = 'lq'\nsimilarity = 'cosine'\ntemperature = 0.05"),
        1, EMB_TOL, |d| embedding_rows(d, 300, 64));
}

fn weighting(c: &mut Catalogue) {
    let f = "weighting";
    c.add(
        f,
        "strategy/fixed",
        "three terms with fixed weights, two steps",
        format!("loss_weight_strategy = 'fixed'\n{}", weighting_terms(false)),
        2,
        ROW_TOL,
        weighting_rows,
    );
    c.add(
        f,
        "strategy/uncertainty",
        "learned weights, no optimiser (s_k and d/ds_k reported)",
        format!(
            "loss_weight_strategy = 'uncertainty'\n{}",
            weighting_terms(true)
        ),
        2,
        ROW_TOL,
        weighting_rows,
    );
    c.add(f, "strategy/uncertainty_sgd", "learned weights, SGD on the GPU over five steps",
        format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'sgd'\nlearning_rate = 0.5\n{}", weighting_terms(true)),
        5, ROW_TOL, weighting_rows);
    c.add(f, "strategy/uncertainty_adam", "learned weights, Adam on the GPU over five steps",
        format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nlearning_rate = 0.1\n{}", weighting_terms(true)),
        5, ROW_TOL, weighting_rows);
    c.add(
        f,
        "strategy/random",
        "random loss weights (RLW), fresh each step",
        format!(
            "loss_weight_strategy = 'random'\n[random]\nseed = 42\n{}",
            weighting_terms(false)
        ),
        4,
        ROW_TOL,
        weighting_rows,
    );
    c.add(f, "strategy/ema_reweight", "EMA reweighting of an auxiliary term over five steps",
        format!("loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'ctr'\naux = 'reg'\nalpha = 0.3\nlambda = 2.0\ntheta0 = 0.1\n{}", weighting_terms(false)),
        5, ROW_TOL, weighting_rows);
    c.add(f, "strategy/ema_reweight_attached", "EMA reweighting with detach_theta = false: the gradient flows through θ̃ within the step",
        format!("loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'ctr'\naux = 'reg'\nalpha = 0.3\nlambda = 2.0\ntheta0 = 0.1\ndetach_theta = false\n{}", weighting_terms(false)),
        5, ROW_TOL, weighting_rows);
    c.add(
        f,
        "flooding/below",
        "flooding level below the total (no flip)",
        format!("flooding = 0.05\n{}", weighting_terms(false)),
        1,
        ROW_TOL,
        weighting_rows,
    );
    c.add(f, "flooding/above_uncertainty", "flooding above the total (gradient flips) with learned weights",
        format!("flooding = 50.0\nloss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'sgd'\nlearning_rate = 0.1\n{}", weighting_terms(true)),
        3, ROW_TOL, weighting_rows);
}

fn edge(c: &mut Catalogue) {
    let f = "edge";
    c.add(
        f,
        "edge/extreme_logits",
        "|x| up to 80 on three per-row terms (saturated sigmoids)",
        "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'y'\n"
            .into(),
        1,
        ROW_TOL,
        |d| {
            let b = 300;
            let mut x = d.reals(b, -80.0, 80.0);
            (x[0], x[1]) = (80.0, -80.0);
            Inputs::default()
                .real("x", &[b], x)
                .real("y", &[b], d.binary(b, 0.5))
        },
    );
    c.add(
        f,
        "edge/one_row",
        "a batch of one row, labels [1, 1]",
        term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'"),
        1,
        ROW_TOL,
        |_| {
            Inputs::default()
                .real("x", &[1], vec![0.3])
                .real("y", &[1, 1], vec![1.0])
        },
    );
    c.add(
        f,
        "edge/all_negative",
        "every label 0 with α-balanced focal loss",
        term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nalpha = 0.25"),
        1,
        ROW_TOL,
        |d| {
            Inputs::default()
                .real("x", &[257], d.reals(257, -3.0, 3.0))
                .real("y", &[257], vec![0.0; 257])
        },
    );
    c.add(f, "edge/zero_weights", "every sample weight 0 (weighted mean of nothing is 0)",
        term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'w'\nreduction = 'weighted_mean'"),
        1, ROW_TOL, |d| Inputs::default()
            .real("x", &[257], d.reals(257, -3.0, 3.0))
            .real("y", &[257], d.binary(257, 0.5))
            .real("w", &[257], vec![0.0; 257]));
    c.add(
        f,
        "edge/softmax_extreme",
        "softmax logits up to ±80 at τ = 0.25",
        term("loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\ntemperature = 0.25"),
        1,
        ROW_TOL,
        |d| softmax_rows(d, 64, 50, 80.0, None),
    );
    c.add(
        f,
        "edge/softmax_all_ignored",
        "every row ignore_index: loss 0, zero gradient",
        term(
            "loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nignore_index = -100",
        ),
        1,
        ROW_TOL,
        |d| softmax_rows(d, 50, 7, 5.0, None).ids("k", &[50], vec![-100; 50]),
    );
    c.add(
        f,
        "edge/ghm_zero_weights",
        "GHM-C with every sample weight 0",
        term("loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'w'"),
        1,
        ROW_TOL,
        |d| {
            let y = d.binary(300, 0.3);
            let x = d.ghm_logits(&y, 4.0);
            Inputs::default()
                .real("x", &[300], x)
                .real("y", &[300], y)
                .real("w", &[300], vec![0.0; 300])
        },
    );
    c.add(
        f,
        "edge/sessions_without_pairs",
        "every session a single row or a single grade: no pair",
        term("loss_type = 'pairwise_logistic_loss'\nlogits = 'x'\nlabels = 'y'\nsession = 's'"),
        1,
        PAIR_TOL,
        |d| {
            let b = 200;
            // Sessions of 4 rows sharing one grade, and singletons.
            let s: Vec<i64> = (0..b as i64)
                .map(|i| if i < 120 { i / 4 } else { i })
                .collect();
            let y: Vec<f64> = s.iter().map(|&k| (k % 4) as f64).collect();
            Inputs::default()
                .real("x", &[b], d.reals(b, -3.0, 3.0))
                .real("y", &[b], y)
                .ids("s", &[b], s)
        },
    );
    c.add(f, "edge/mining_all_negatives", "negative mining with K = B − 1 (every other row)",
        term("loss_type = 'softmax_cross_entropy_with_negative_mining'\nuser = 'u'\nitem = 'v'\nnum_negative_samples = 36"),
        1, EMB_TOL, |d| embedding_rows(d, 37, 8));
    c.add(
        f,
        "edge/in_batch_duplicate_items",
        "every item id the same: accidental hits mask all but the positive",
        term("loss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'"),
        1,
        EMB_TOL,
        |d| embedding_rows(d, 16, 4).ids("ids", &[16], vec![7; 16]),
    );
    let mut nan = Catalogue {
        seed: c.seed,
        cases: Vec::new(),
    };
    // Embedding inputs are checked on the host: a NaN would otherwise enter the memory bank.
    // (Per-row terms propagate NaN, as PyTorch does.)
    nan.add(
        f,
        "edge/nan_refused",
        "a NaN user embedding: the step is refused naming the tensor",
        term("loss_type = 'cross_batch_softmax'\nuser = 'u'\nitem = 'v'\nbank_size = 64"),
        1,
        EMB_TOL,
        |d| {
            let mut e = embedding_rows(d, 16, 4);
            let mut u = d.reals(64, -1.0, 1.0);
            u[17] = f64::NAN;
            e = e.real("u", &[16, 4], u);
            e
        },
    );
    for mut case in nan.cases {
        case.expect = Expect::Refused { tensor: "u".into() };
        c.cases.push(case);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use lossfuse::{LossConfig, Strategy};
    use std::collections::BTreeSet;

    #[test]
    fn names_are_unique_and_configs_parse() {
        let cases = catalogue(1);
        let names: BTreeSet<_> = cases.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names.len(), cases.len(), "duplicate case names");
        for case in &cases {
            LossConfig::from_toml_str(&case.config)
                .unwrap_or_else(|e| panic!("{}: {e}", case.name));
            assert!(case.steps >= 1);
        }
    }

    #[test]
    fn every_loss_type_and_strategy_is_covered() {
        let cases = catalogue(1);
        let mut types = BTreeSet::new();
        let mut strategies = BTreeSet::new();
        let mut flooding = false;
        for case in &cases {
            let config = LossConfig::from_toml_str(&case.config).unwrap();
            let value: toml::Value = toml::from_str(&case.config).unwrap();
            for t in value["losses"].as_array().unwrap() {
                types.insert(t["loss_type"].as_str().unwrap().to_string());
            }
            strategies.insert(match config.strategy {
                Strategy::Fixed => "fixed",
                Strategy::Uncertainty(_) => "uncertainty",
                Strategy::Random { .. } => "random",
                Strategy::EmaReweight(_) => "ema_reweight",
            });
            flooding |= config.flooding.is_some();
        }
        for t in lossfuse::loss_types() {
            assert!(types.contains(t), "no case for loss_type {t}");
        }
        for s in lossfuse::config::WEIGHT_STRATEGIES {
            assert!(strategies.contains(s), "no case for strategy {s}");
        }
        assert!(flooding, "no case with flooding");
    }

    #[test]
    fn the_seed_changes_the_inputs_and_only_the_seed() {
        let (a, b, a2) = (catalogue(1), catalogue(2), catalogue(1));
        for ((x, y), x2) in a.iter().zip(&b).zip(&a2) {
            // Compared as text: NaN (edge/nan_refused) is not equal to itself.
            let text = |c: &Case| format!("{:?}", c.inputs);
            assert_eq!(text(x), text(x2), "{}: same seed, same inputs", x.name);
            if x.name != "edge/one_row" {
                assert_ne!(x.inputs, y.inputs, "{}: another seed, other inputs", x.name);
            }
        }
    }
}
