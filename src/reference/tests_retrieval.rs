//! Tests of the retrieval and embedding terms: analytic gradients against central finite
//! differences (through [`super::tests::check`], same h and tolerance; circle loss with its
//! detached factors frozen), hand-computed small cases, the memory bank of `cross_batch_softmax`
//! over steps, and errors.

use super::inputs::ClassLabels;
use super::metric::{self, Circle, Relations};
use super::tests::{assert_close, assert_mentions, check, error_of, parse, real_mut, SplitMix};
use super::tests::{REDUCTIONS, WEIGHTS};
use super::*;
use crate::config::{Reduction, TermKind};
use crate::losses::retrieval::params::{InBatchParams, Similarity};
use crate::rng;
use crate::tensor::{HostData, HostTensor};

/// Rows of the test batch.
const RB: usize = 6;
/// Embedding width of the test batch.
const D: usize = 3;

/// Item ids with accidental hits: rows 0, 2 and 5 share id 3, rows 1 and 4 share id 7.
const IDS: [i64; RB] = [3, 7, 3, 1, 7, 3];
/// Class labels of the metric terms: rows 0, 2, 5 class 0; rows 1, 4 class 1; row 3 alone.
const CLASSES: [i64; RB] = [0, 1, 0, 2, 1, 0];
/// Sessions of the metric terms: row 5 is in another session than its classmates 0 and 2.
const SESSIONS: [i64; RB] = [4, 4, 4, 8, 4, 8];

/// A seeded batch for the embedding terms: embeddings `u`, `v`, `a`, `b`, `e` [RB, D] in
/// [−1, 1); item ids `ids` (duplicates) and `uniq` (distinct); `lq` (log_q in [−3, −0.5]);
/// sample weights `w` (row 2 zero), `c1`, `c2` (the names of [`WEIGHTS`]); mining labels `lab`
/// (rows 1 and 4 do not count); class labels `cls` (integers) and `clsr` (the same as reals);
/// sessions `sess`.
fn emb_batch(seed: u64) -> HostBatch {
    let mut r = SplitMix(seed);
    let mut b = HostBatch::new();
    for name in ["u", "v", "a", "b", "e"] {
        b.insert(
            name.into(),
            HostTensor::real([RB, D], r.reals(RB * D, -1.0, 1.0)),
        );
    }
    b.insert("ids".into(), HostTensor::int([RB], IDS.to_vec()));
    b.insert("uniq".into(), HostTensor::int([RB], (10..16).collect()));
    b.insert("lq".into(), HostTensor::real([RB], r.reals(RB, -3.0, -0.5)));
    b.insert(
        "w".into(),
        HostTensor::real([RB], vec![0.5, 1.5, 0.0, 2.0, 1.0, 0.7]),
    );
    let mut c1 = r.bits(RB);
    c1[0] = 1.0;
    b.insert("c1".into(), HostTensor::real([RB], c1));
    b.insert(
        "c2".into(),
        HostTensor::real([RB, 1], r.reals(RB, 0.1, 1.0)),
    );
    b.insert(
        "lab".into(),
        HostTensor::real([RB], vec![1.0, 0.0, 1.0, 2.0, -1.0, 1.0]),
    );
    b.insert("cls".into(), HostTensor::int([RB], CLASSES.to_vec()));
    let clsr = CLASSES.iter().map(|&c| c as f64 * 0.5).collect();
    b.insert("clsr".into(), HostTensor::real([RB], clsr));
    b.insert("sess".into(), HostTensor::int([RB], SESSIONS.to_vec()));
    b
}

fn reals(batch: &HostBatch, name: &str) -> Vec<f64> {
    match &batch[name].data {
        HostData::Real(v) => v.clone(),
        HostData::Int(_) => panic!("{name} is not real"),
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

fn assert_all_close(a: &[f64], b: &[f64], tol: f64, what: &str) {
    assert_eq!(a.len(), b.len(), "{what}");
    for (x, y) in a.iter().zip(b) {
        assert!(close(*x, *y, tol), "{what}: {a:?} vs {b:?}");
    }
}

fn softplus(x: f64) -> f64 {
    super::binary::softplus(x)
}

/// ln Σ e^x, directly (the hand cases are small).
fn lse(x: &[f64]) -> f64 {
    x.iter().map(|v| v.exp()).sum::<f64>().ln()
}

/// x / ‖x‖ of one row.
fn unit(x: &[f64]) -> Vec<f64> {
    let n = x.iter().map(|v| v * v).sum::<f64>().sqrt();
    x.iter().map(|v| v / n).collect()
}

fn dot(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// The state after stepping `config` over `batches` in order.
fn state_after(config: &LossConfig, batches: &[HostBatch]) -> ReferenceState {
    let mut r = Reference::new(config).unwrap();
    for b in batches {
        r.step(b).unwrap();
    }
    r.state().clone()
}

fn total(config: &str, batch: &HostBatch) -> f64 {
    Reference::new(&parse(config))
        .unwrap()
        .step(batch)
        .unwrap()
        .total
}

// ---------------------------------------------------------------------------------------------
// Finite differences.

/// The retrieval options crossed by the gradient tests: similarity, temperature, log_q, ids.
fn retrieval_options() -> Vec<String> {
    let mut options = Vec::new();
    for similarity in ["similarity = \"dot\"", "similarity = \"cosine\""] {
        for temperature in ["", "temperature = 0.5"] {
            for log_q in ["", "log_q = \"lq\""] {
                for ids in [
                    "",
                    "item_ids = \"ids\"",
                    "item_ids = \"ids\"\nremove_accidental_hits = false",
                ] {
                    options.push(format!("{similarity}\n{temperature}\n{log_q}\n{ids}\n"));
                }
            }
        }
    }
    options
}

#[test]
fn in_batch_softmax_gradients_match_finite_differences() {
    let batch = emb_batch(1);
    let mut n = 0;
    for options in retrieval_options() {
        for reduction in REDUCTIONS {
            let weights = WEIGHTS[n % 3];
            n += 1;
            let config = parse(&format!(
                "[[losses]]\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n\
                 {options}{reduction}\n{weights}\n"
            ));
            let out = check(&config, &batch, None);
            assert!(out.total > 0.0);
        }
    }
    // One tensor bound to both roles: its gradient is the sum of both.
    for similarity in ["dot", "cosine"] {
        let config = parse(&format!(
            "[[losses]]\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"u\"\n\
             similarity = \"{similarity}\"\n"
        ));
        check(&config, &batch, None);
    }
}

#[test]
fn cross_batch_softmax_gradients_match_finite_differences() {
    let batch = emb_batch(2);
    let earlier = [emb_batch(3), emb_batch(4)];
    let mut n = 0;
    for options in retrieval_options() {
        // M = 4 after one earlier step: a partly filled bank; M = 8 after two: full and wrapped;
        // warm-up 5: the bank is filled but not used.
        for (bank, steps) in [
            ("bank_size = 8", 1),
            ("bank_size = 4", 2),
            ("bank_size = 8\nwarmup_steps = 5", 2),
        ] {
            let reduction = REDUCTIONS[n % 5];
            let weights = WEIGHTS[n % 3];
            n += 1;
            let config = parse(&format!(
                "[[losses]]\nloss_type = \"cross_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n\
                 {bank}\n{options}{reduction}\n{weights}\n"
            ));
            let state = state_after(&config, &earlier[..steps]);
            assert!(state.banks[0].as_ref().unwrap().fill > 0);
            check(&config, &batch, Some(state));
        }
    }
}

#[test]
fn contrastive_gradients_match_finite_differences() {
    let batch = emb_batch(5);
    let mut n = 0;
    for variant in ["", "variant = \"info_nce\"", "variant = \"nt_xent\""] {
        for similarity in ["", "similarity = \"dot\""] {
            for temperature in ["", "temperature = 0.7"] {
                for reduction in REDUCTIONS {
                    let weights = WEIGHTS[n % 3];
                    n += 1;
                    let config = parse(&format!(
                        "[[losses]]\nloss_type = \"contrastive_loss\"\nview_a = \"a\"\n\
                         view_b = \"b\"\n{variant}\n{similarity}\n{temperature}\n{reduction}\n\
                         {weights}\n"
                    ));
                    check(&config, &batch, None);
                }
            }
        }
        let same = parse(&format!(
            "[[losses]]\nloss_type = \"contrastive_loss\"\nview_a = \"a\"\nview_b = \"a\"\n\
             {variant}\n"
        ));
        check(&same, &batch, None);
    }
}

/// The negatives of row i under the shifts of `k` samples, `seed` and `step` (computed here from
/// the generator, independently of the reference).
fn shifts(k: u32, seed: Option<u32>, step: u32, rows: usize) -> Vec<usize> {
    (1..=k)
        .map(|k| match seed {
            None => k as usize,
            Some(s) => rng::mining_shift(s, step, k - 1, rows as u32) as usize,
        })
        .collect()
}

/// (hard, easy, smallest |(sp − margin) − sn|) over every row and negative of the mining term.
fn mining_gaps(batch: &HostBatch, margin: f64, shift: &[usize]) -> (usize, usize, f64) {
    let (u, v) = (reals(batch, "u"), reals(batch, "v"));
    let (mut hard, mut easy, mut smallest) = (0, 0, f64::INFINITY);
    for i in 0..RB {
        let ui = unit(&u[i * D..(i + 1) * D]);
        let sp = dot(&ui, &unit(&v[i * D..(i + 1) * D]));
        for s in shift {
            let j = (i + RB - s) % RB;
            let sn = dot(&ui, &unit(&v[j * D..(j + 1) * D]));
            let gap = sp - margin - sn;
            smallest = smallest.min(gap.abs());
            if gap < 0.0 {
                hard += 1;
            } else {
                easy += 1;
            }
        }
    }
    (hard, easy, smallest)
}

#[test]
fn negative_mining_gradients_match_finite_differences() {
    let batch = emb_batch(6);
    let (mut n, mut hard, mut easy) = (0, 0, 0);
    for k in [1u32, 3, 5] {
        for margin in [0.0, 0.3] {
            for (gamma, t) in [
                ("", ""),
                ("gamma = 4.0", "coefficient_of_support_vector = 1.5"),
            ] {
                for seed in [None, Some(11u32)] {
                    for labels in ["", "labels = \"lab\""] {
                        let reduction = REDUCTIONS[n % 5];
                        let weights = WEIGHTS[n % 3];
                        n += 1;
                        let seed_line = seed.map(|s| format!("seed = {s}")).unwrap_or_default();
                        let config = parse(&format!(
                            "[[losses]]\nloss_type = \"softmax_cross_entropy_with_negative_mining\"\n\
                             user = \"u\"\nitem = \"v\"\nnum_negative_samples = {k}\n\
                             margin = {margin}\n{gamma}\n{t}\n{seed_line}\n{labels}\n\
                             {reduction}\n{weights}\n"
                        ));
                        let (h, e, smallest) = mining_gaps(&batch, margin, &shifts(k, seed, 0, RB));
                        assert!(smallest > 1e-4, "a negative sits at the switch: {smallest}");
                        (hard, easy) = (hard + h, easy + e);
                        check(&config, &batch, None);
                        // A later step: other seeded shifts.
                        if seed.is_some() {
                            let state = state_after(&config, std::slice::from_ref(&batch));
                            let (.., smallest) =
                                mining_gaps(&batch, margin, &shifts(k, seed, 1, RB));
                            assert!(smallest > 1e-4);
                            check(&config, &batch, Some(state));
                        }
                    }
                }
            }
        }
    }
    assert!(hard > 20 && easy > 20, "hard {hard}, easy {easy}");
}

#[test]
fn multi_similarity_gradients_match_finite_differences() {
    let batch = emb_batch(7);
    // No cosine near the clamp at 0, and both sides of it present.
    let e = reals(&batch, "e");
    let cosines: Vec<f64> = (0..RB)
        .flat_map(|i| (0..i).map(move |j| (i, j)))
        .map(|(i, j)| dot(&unit(&e[i * D..(i + 1) * D]), &unit(&e[j * D..(j + 1) * D])))
        .collect();
    assert!(cosines.iter().all(|c| c.abs() > 1e-3), "{cosines:?}");
    assert!(cosines.iter().any(|c| *c < 0.0) && cosines.iter().any(|c| *c > 0.0));
    let mut n = 0;
    for labels in ["cls", "clsr"] {
        for session in ["", "session = \"sess\""] {
            for params in [
                "",
                "alpha = 1.0\nbeta = 5.0\nlamb = 0.5\neps = 0.0",
                "ms_mining = true",
                "ms_mining = true\nalpha = 1.0\nbeta = 5.0\nlamb = 0.5\neps = 0.3",
            ] {
                // With the sessions, ε = 0.1 mines no pair of these 6 rows.
                if !session.is_empty() && params == "ms_mining = true" {
                    continue;
                }
                for reduction in REDUCTIONS {
                    let weights = WEIGHTS[n % 3];
                    n += 1;
                    let config = parse(&format!(
                        "[[losses]]\nloss_type = \"multi_similarity_loss\"\nembeddings = \"e\"\n\
                         labels = \"{labels}\"\n{session}\n{params}\n{reduction}\n{weights}\n"
                    ));
                    check(&config, &batch, None);
                }
            }
        }
    }
}

/// Central differences of `f` at `x` against `grad` (same h and tolerance as
/// [`super::tests::check`]).
fn assert_gradient(f: impl Fn(&[f64]) -> f64, x: &[f64], grad: &[f64], what: &str) {
    assert!(
        grad.iter().any(|g| g.abs() > 1e-6),
        "{what}: vanishing gradient"
    );
    let mut work = x.to_vec();
    for i in 0..x.len() {
        let h = 1e-6 * x[i].abs().max(1.0);
        work[i] = x[i] + h;
        let plus = f(&work);
        work[i] = x[i] - h;
        let minus = f(&work);
        work[i] = x[i];
        assert_close(grad[i], (plus - minus) / (2.0 * h), &format!("{what}[{i}]"));
    }
}

#[test]
fn circle_gradients_match_finite_differences_with_the_factors_frozen() {
    let batch = emb_batch(8);
    let e = reals(&batch, "e");
    let reductions = [
        Reduction::NonzeroMean,
        Reduction::WeightedMean,
        Reduction::Mean,
        Reduction::Sum,
    ];
    let w_tensor = reals(&batch, "w");
    for labels in [
        ClassLabels::Int(&CLASSES),
        ClassLabels::Real(&[0.0, 0.5, 0.0, 1.0, 0.5, 0.0]),
    ] {
        for session in [None, Some(&SESSIONS[..])] {
            let relations = Relations { labels, session };
            for circle in [
                Circle {
                    margin: 0.25,
                    gamma: 32.0,
                },
                Circle {
                    margin: 0.4,
                    gamma: 3.0,
                },
            ] {
                for (r, reduction) in reductions.into_iter().enumerate() {
                    let ones = vec![1.0; RB];
                    let w = if r % 2 == 0 { &ones } else { &w_tensor };
                    let what = format!("{circle:?} {reduction:?} {session:?} {labels:?}");
                    let (value, grad) = metric::circle(&circle, &e, D, &relations, reduction, w);
                    let frozen = metric::circle_factors(circle.margin, &e, D, &relations);
                    let f = |x: &[f64]| {
                        let r = metric::circle_with_factors(
                            &circle,
                            x,
                            D,
                            &relations,
                            Some(&frozen),
                            reduction,
                            w,
                        );
                        r.0
                    };
                    assert!(close(f(&e), value, 1e-14), "{what}");
                    assert_gradient(f, &e, &grad, &format!("d circle/d e in {what}"));
                }
            }
        }
    }
    // Through a step: the same gradient, and it is not the derivative of the value (the factors
    // are detached), which finite differences of the total would see.
    let config = parse(
        "[[losses]]\nloss_type = \"circle_loss\"\nembeddings = \"e\"\nlabels = \"cls\"\n\
         session = \"sess\"\n",
    );
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    let relations = Relations {
        labels: ClassLabels::Int(&CLASSES),
        session: Some(&SESSIONS),
    };
    let circle = Circle {
        margin: 0.25,
        gamma: 32.0,
    };
    let (value, grad) = metric::circle(
        &circle,
        &e,
        D,
        &relations,
        Reduction::NonzeroMean,
        &[1.0; RB],
    );
    assert_eq!(out.total, value);
    assert_eq!(out.grads["e"], grad);
    let step = |b: &HostBatch| Reference::new(&config).unwrap().step(b).unwrap().total;
    let mut largest = 0f64;
    for i in 0..e.len() {
        let h = 1e-6 * e[i].abs().max(1.0);
        let mut plus = batch.clone();
        real_mut(&mut plus, "e")[i] += h;
        let mut minus = batch.clone();
        real_mut(&mut minus, "e")[i] -= h;
        let numeric = (step(&plus) - step(&minus)) / (2.0 * h);
        largest = largest.max((numeric - grad[i]).abs());
    }
    assert!(largest > 1e-3, "{largest}");
}

// ---------------------------------------------------------------------------------------------
// Hand-computed cases.

fn two_rows(name: &str, rows: [[f64; 2]; 2]) -> (String, HostTensor) {
    (name.into(), HostTensor::real([2, 2], rows.concat()))
}

#[test]
fn in_batch_softmax_by_hand() {
    // u = [(1, 0), (0, 1)], v = [(1, 0), (0, 2)], dot, T = 1: s = [[1, 0], [0, 2]].
    let batch: HostBatch = [
        two_rows("u", [[1.0, 0.0], [0.0, 1.0]]),
        two_rows("v", [[1.0, 0.0], [0.0, 2.0]]),
        ("lq".into(), HostTensor::real([2], vec![0.5, -0.5])),
        ("same".into(), HostTensor::int([2], vec![4, 4])),
        ("w".into(), HostTensor::real([2], vec![3.0, 1.0])),
    ]
    .into_iter()
    .collect();
    let base = "[[losses]]\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n";
    let out = Reference::new(&parse(base)).unwrap().step(&batch).unwrap();
    let (l0, l1) = ((1.0 + (-1f64).exp()).ln(), (1.0 + (-2f64).exp()).ln());
    assert!(close(out.total, (l0 + l1) / 2.0, 1e-15), "{}", out.total);
    // du_0 = Σ_j (p_0j − δ_0j) v_j / 2 = σ(−1)/2 · (−1, 2); dv_1 gets p_01·u_0/2 + (p_11 − 1)·u_1/2.
    let (s1, s2) = (super::binary::sigmoid(-1.0), super::binary::sigmoid(-2.0));
    assert_all_close(&out.grads["u"][..2], &[-s1 / 2.0, s1], 1e-15, "du_0");
    assert_all_close(&out.grads["v"][2..], &[s1 / 2.0, -s2 / 2.0], 1e-15, "dv_1");
    // log_q = (0.5, −0.5) on every column, the positive too: s' = [[0.5, 0.5], [−0.5, 2.5]].
    let with_q = format!("{base}log_q = \"lq\"\n");
    let want = (2f64.ln() + (1.0 + (-3f64).exp()).ln()) / 2.0;
    assert!(close(total(&with_q, &batch), want, 1e-15));
    // Equal ids: each row's only other column is an accidental hit, so l_i = 0 …
    let hits = format!("{base}item_ids = \"same\"\n");
    let out = Reference::new(&parse(&hits)).unwrap().step(&batch).unwrap();
    assert_eq!(out.total, 0.0);
    assert!(out.grads["u"].iter().all(|g| *g == 0.0));
    // … unless removal is off.
    let kept = format!("{hits}remove_accidental_hits = false\n");
    assert!(close(total(&kept, &batch), (l0 + l1) / 2.0, 1e-15));
    // T = 0.5 doubles the logits; weights (3, 1) with each reduction.
    let (t0, t1) = ((1.0 + (-2f64).exp()).ln(), (1.0 + (-4f64).exp()).ln());
    for (reduction, denominator) in [
        ("nonzero_mean", 2.0),
        ("weighted_mean", 4.0),
        ("mean", 2.0),
        ("sum", 1.0),
    ] {
        let c = format!(
            "{base}temperature = 0.5\nsample_weights = \"w\"\nreduction = \"{reduction}\"\n"
        );
        assert!(close(
            total(&c, &batch),
            (3.0 * t0 + t1) / denominator,
            1e-15
        ));
    }
    // Cosine normalises v_1 = (0, 2) to (0, 1): s = identity.
    let cosine = format!("{base}similarity = \"cosine\"\n");
    assert!(close(total(&cosine, &batch), l0, 1e-15));
}

#[test]
fn contrastive_by_hand() {
    // info_nce, dot, τ = 0.5: a = [(1, 0), (0, 1)], b = [(2, 0), (1, 1)]: s/τ = [[4, 2], [0, 2]].
    let batch: HostBatch = [
        two_rows("a", [[1.0, 0.0], [0.0, 1.0]]),
        two_rows("b", [[2.0, 0.0], [1.0, 1.0]]),
        two_rows("c", [[1.0, 1.0], [0.0, 0.0]]),
        ("w".into(), HostTensor::real([2], vec![2.0, 0.0])),
    ]
    .into_iter()
    .collect();
    let info = "[[losses]]\nloss_type = \"contrastive_loss\"\nview_a = \"a\"\nview_b = \"b\"\n\
                similarity = \"dot\"\ntemperature = 0.5\n";
    let l = (1.0 + (-2f64).exp()).ln();
    assert!(close(total(info, &batch), l, 1e-15));
    // Cosine, τ = 0.1 (the defaults): b̂ = [(1, 0), (1, 1)/√2]: row 0 [10, 10/√2], row 1 [0, 10/√2].
    let cosine = "[[losses]]\nloss_type = \"contrastive_loss\"\nview_a = \"a\"\nview_b = \"b\"\n";
    let r = 10.0 / 2f64.sqrt();
    let want = (lse(&[10.0, r]) - 10.0 + lse(&[0.0, r]) - r) / 2.0;
    assert!(close(total(cosine, &batch), want, 1e-14));
    // nt_xent, dot, τ = 1: z = [a; c] = [(1, 0), (0, 1), (1, 1), (0, 0)], positives 0↔2, 1↔3.
    // Row 0: columns 1, 2, 3 = (0, 1, 0), positive 2; row 1: (0, 1, 0) for 0, 2, 3, positive 3;
    // row 2: (1, 1, 0) for 0, 1, 3, positive 0; row 3: (0, 0, 0), positive 1.
    let e = 1f64.exp();
    let rows = [
        (2.0 + e).ln() - 1.0,
        (2.0 + e).ln(),
        (2.0 * e + 1.0).ln() - 1.0,
        3f64.ln(),
    ];
    let nt = "[[losses]]\nloss_type = \"contrastive_loss\"\nview_a = \"a\"\nview_b = \"c\"\n\
              similarity = \"dot\"\ntemperature = 1.0\nvariant = \"nt_xent\"\n";
    assert!(close(
        total(nt, &batch),
        rows.iter().sum::<f64>() / 4.0,
        1e-15
    ));
    // Weights (2, 0) go to rows 0 and 2 (view a) and to rows 1 and 3 (view b) alike.
    let weighted = |reduction: &str| {
        total(
            &format!("{nt}sample_weights = \"w\"\nreduction = \"{reduction}\"\n"),
            &batch,
        )
    };
    let num = 2.0 * (rows[0] + rows[2]);
    assert!(close(weighted("nonzero_mean"), num / 2.0, 1e-15));
    assert!(close(weighted("mean"), num / 4.0, 1e-15));
    assert!(close(weighted("weighted_mean"), num / 4.0, 1e-15));
    assert!(close(weighted("sum"), num, 1e-15));
}

#[test]
fn negative_mining_by_hand() {
    // Three unit rows, u = v = [(1, 0), (0, 1), (−1, 0)], K = 1, no seed: shift 1, so row i's
    // negative is item (i − 1) mod 3 (tf.roll by 1): row 0 ↔ item 2 (sn = −1), row 1 ↔ item 0
    // (sn = 0), row 2 ↔ item 1 (sn = 0). Rolling the other way would give sn = 0, 0, −1.
    let rows = vec![1.0, 0.0, 0.0, 1.0, -1.0, 0.0];
    let mut batch: HostBatch = [
        ("u".into(), HostTensor::real([3, 2], rows.clone())),
        ("v".into(), HostTensor::real([3, 2], rows)),
    ]
    .into_iter()
    .collect();
    let base = "[[losses]]\nloss_type = \"softmax_cross_entropy_with_negative_mining\"\n\
                user = \"u\"\nitem = \"v\"\nnum_negative_samples = 1\nlabels = \"y\"\n\
                reduction = \"sum\"\n";
    let row_loss = |config: &str, batch: &mut HostBatch, i: usize| {
        let mut y = vec![0.0; 3];
        y[i] = 1.0;
        batch.insert("y".into(), HostTensor::real([3], y));
        total(config, batch)
    };
    // γ = 1, margin 0: z = (1, sn), l = lse − 1.
    let want = [
        lse(&[1.0, -1.0]) - 1.0,
        lse(&[1.0, 0.0]) - 1.0,
        lse(&[1.0, 0.0]) - 1.0,
    ];
    for (i, w) in want.iter().enumerate() {
        assert!(close(row_loss(base, &mut batch, i), *w, 1e-15), "row {i}");
    }
    // margin 1.5, t = 2, γ = 3: sp − m = −0.5; row 0's negative (−1) is easy (−0.5 + 1 ≥ 0):
    // z = 3·(−0.5, −1); row 1's (0) is hard: z = 3·(−0.5, 2·0 + 2 − 1) = 3·(−0.5, 1).
    let sv = format!("{base}margin = 1.5\ncoefficient_of_support_vector = 2.0\ngamma = 3.0\n");
    let l0 = lse(&[-1.5, -3.0]) + 1.5;
    let l1 = lse(&[-1.5, 3.0]) + 1.5;
    assert!(close(row_loss(&sv, &mut batch, 0), l0, 1e-15));
    assert!(close(row_loss(&sv, &mut batch, 1), l1, 1e-15));
    // Labels: rows with label ≤ 0 do not count, even in `mean` (divided by the counted rows).
    batch.insert("y".into(), HostTensor::real([3], vec![1.0, 0.0, 2.0]));
    let mean = base.replace("\"sum\"", "\"mean\"");
    assert!(close(
        total(&mean, &batch),
        (want[0] + want[2]) / 2.0,
        1e-15
    ));
    // Without labels every row counts; K = 2 adds shift 2: item (i − 2) mod 3 = (i + 1) mod 3.
    let all = "[[losses]]\nloss_type = \"softmax_cross_entropy_with_negative_mining\"\n\
               user = \"u\"\nitem = \"v\"\nnum_negative_samples = 2\n";
    // Row 0: negatives items 2, 1 (−1, 0); row 1: items 0, 2 (0, 0); row 2: items 1, 0 (0, −1).
    let want = (2.0 * lse(&[1.0, -1.0, 0.0]) + lse(&[1.0, 0.0, 0.0])) / 3.0 - 1.0;
    assert!(close(total(all, &batch), want, 1e-15));
}

/// Row i's loss of negative mining computed directly from its definition, with given shifts.
fn mining_row(u: &[f64], v: &[f64], i: usize, shift: &[usize], margin: f64, gamma: f64) -> f64 {
    let b = u.len() / D;
    let ui = unit(&u[i * D..(i + 1) * D]);
    let sp = dot(&ui, &unit(&v[i * D..(i + 1) * D])) - margin;
    let mut z = vec![gamma * sp];
    for s in shift {
        let j = (i + b - s) % b;
        let sn = dot(&ui, &unit(&v[j * D..(j + 1) * D]));
        // t = 1: a hard negative's sn becomes 1·sn + 1 − 1 = sn.
        z.push(gamma * sn);
    }
    lse(&z) - z[0]
}

#[test]
fn negative_mining_seeded_shifts_follow_the_step() {
    let batch = emb_batch(9);
    let (u, v) = (reals(&batch, "u"), reals(&batch, "v"));
    let config = parse(
        "[[losses]]\nloss_type = \"softmax_cross_entropy_with_negative_mining\"\nuser = \"u\"\n\
         item = \"v\"\nnum_negative_samples = 3\nseed = 42\ngamma = 2.0\nmargin = 0.1\n",
    );
    let mut r = Reference::new(&config).unwrap();
    let mut values = Vec::new();
    for step in 0..4u32 {
        let shift: Vec<usize> = (0..3)
            .map(|k| rng::mining_shift(42, step, k, RB as u32) as usize)
            .collect();
        assert!(shift.iter().all(|s| (1..RB).contains(s)));
        let want: f64 = (0..RB)
            .map(|i| mining_row(&u, &v, i, &shift, 0.1, 2.0))
            .sum::<f64>()
            / RB as f64;
        let got = r.step(&batch).unwrap().total;
        assert!(close(got, want, 1e-14), "step {step}: {got} vs {want}");
        values.push(got);
    }
    assert!(values.windows(2).any(|p| p[0] != p[1]), "{values:?}");
}

#[test]
fn circle_by_hand() {
    // Unit rows e0 = (1, 0), e1 = (0.6, 0.8), e2 = (0.8, −0.6): S01 = 0.6, S02 = 0.8, S12 = 0.
    let e = vec![1.0, 0.0, 0.6, 0.8, 0.8, -0.6];
    let batch: HostBatch = [
        ("e".into(), HostTensor::real([3, 2], e)),
        ("y".into(), HostTensor::int([3], vec![0, 0, 1])),
        ("same".into(), HostTensor::real([3], vec![5.0; 3])),
        ("s".into(), HostTensor::int([3], vec![1, 1, 2])),
        ("apart".into(), HostTensor::int([3], vec![1, 2, 3])),
    ]
    .into_iter()
    .collect();
    let base = "[[losses]]\nloss_type = \"circle_loss\"\nembeddings = \"e\"\ngamma = 2.0\n";
    // m = 0.25, γ = 2. Row 0: positive 1 (a_p = 1.25 − 0.6 = 0.65, LP = −2·0.65·(0.6 − 0.75)
    // = 0.195), negative 2 (a_n = 0.8 + 0.25, LN = 2·1.05·(0.8 − 0.25) = 1.155). Row 1: LP =
    // 0.195, negative 2 with S = 0: a_n = 0.25, LN = 2·0.25·(−0.25) = −0.125. Row 2 has no
    // positive and does not count.
    let want = (softplus(0.195 + 1.155) + softplus(0.195 - 0.125)) / 2.0;
    let labels = format!("{base}labels = \"y\"\n");
    assert!(close(total(&labels, &batch), want, 1e-14));
    // One label, sessions (1, 1, 2): row 2 is a negative of rows 0 and 1 through its session,
    // which gives the same pairs.
    let sessions = format!("{base}labels = \"same\"\nsession = \"s\"\n");
    assert!(close(total(&sessions, &batch), want, 1e-14));
    // All rows in different sessions: no row has a positive, L = 0 with a zero gradient.
    let apart = format!("{base}labels = \"same\"\nsession = \"apart\"\n");
    let out = Reference::new(&parse(&apart))
        .unwrap()
        .step(&batch)
        .unwrap();
    assert_eq!(out.total, 0.0);
    assert!(out.grads["e"].iter().all(|g| *g == 0.0));
    // One label and no session: every pair is a positive, no row has a negative.
    assert_eq!(total(&format!("{base}labels = \"same\"\n"), &batch), 0.0);
}

#[test]
fn multi_similarity_mining_drops_pairs_in_the_gradient_test_batch() {
    // The batch of the finite-difference test: mining must drop some pairs there (else that test
    // says nothing about it) and keep others.
    let batch = emb_batch(7);
    let ms = |extra: &str| {
        total(
            &format!(
                "[[losses]]\nloss_type = \"multi_similarity_loss\"\nembeddings = \"e\"\n\
                 labels = \"cls\"\n{extra}\n"
            ),
            &batch,
        )
    };
    let (all, mined) = (ms(""), ms("ms_mining = true"));
    assert!(
        mined > 0.0 && (mined - all).abs() > 1e-3 * all,
        "{all} {mined}"
    );
}

#[test]
fn multi_similarity_mining_by_hand() {
    // The rows of multi_similarity_by_hand: S_01 = 0.6, S_02 = 0.8, S_12 = 0.48 − 0.48 = 0,
    // labels (0, 0, 1), α = 2, β = 4, λ = 0.5.
    let batch: HostBatch = [
        (
            "e".into(),
            HostTensor::real([3, 2], vec![1.0, 0.0, 0.6, 0.8, 0.8, -0.6]),
        ),
        ("y".into(), HostTensor::real([3], vec![0.0, 0.0, 1.0])),
    ]
    .into_iter()
    .collect();
    let c = |eps: f64| {
        format!(
            "[[losses]]\nloss_type = \"multi_similarity_loss\"\nembeddings = \"e\"\n\
             labels = \"y\"\nalpha = 2.0\nbeta = 4.0\nlamb = 0.5\nms_mining = true\n\
             eps = {eps:?}\n"
        )
    };
    let pos = (1.0 + (-0.2f64).exp()).ln() / 2.0;
    let l0 = pos + (1.0 + 1.2f64.exp()).ln() / 4.0;
    let l1 = pos + (1.0 + (-2f64).exp()).ln() / 4.0;
    // ε = 0.1. Row 0 (max_neg 0.8, min_pos 0.6) keeps both pairs. Row 1 (max_neg 0, min_pos
    // 0.6) keeps neither: 0.6 ≮ 0.1 and 0 ≯ 0.5. Row 2 has no positive, so no negative is mined
    // against it (EasyRec's masks would keep both).
    assert!(close(total(&c(0.1), &batch), l0 / 3.0, 1e-14));
    // ε = 0.7: row 1 keeps both (0.6 < 0.7, 0 > −0.1); row 2 still mines nothing.
    assert!(close(total(&c(0.7), &batch), (l0 + l1) / 3.0, 1e-14));
}

#[test]
fn multi_similarity_by_hand() {
    // The rows of circle_by_hand, labels (0, 0, 1), α = 2, β = 4, λ = 0.5.
    let batch: HostBatch = [
        (
            "e".into(),
            HostTensor::real([3, 2], vec![1.0, 0.0, 0.6, 0.8, 0.8, -0.6]),
        ),
        ("y".into(), HostTensor::real([3], vec![0.0, 0.0, 1.0])),
        (
            "f".into(),
            HostTensor::real([2, 2], vec![1.0, 0.0, -0.6, 0.8]),
        ),
        ("y2".into(), HostTensor::int([2], vec![0, 1])),
    ]
    .into_iter()
    .collect();
    let c =
        "[[losses]]\nloss_type = \"multi_similarity_loss\"\nembeddings = \"e\"\nlabels = \"y\"\n\
             alpha = 2.0\nbeta = 4.0\nlamb = 0.5\n";
    // Row 0: positive S = 0.6 → e^{−2·0.1}; negative S = 0.8 → e^{4·0.3}. Row 1: positive 0.6,
    // negative S = 0 → e^{−2}. Row 2: no positive (log 1 = 0), negatives 0.8 and 0.
    let pos = (1.0 + (-0.2f64).exp()).ln() / 2.0;
    let l0 = pos + (1.0 + 1.2f64.exp()).ln() / 4.0;
    let l1 = pos + (1.0 + (-2f64).exp()).ln() / 4.0;
    let l2 = (1.0 + 1.2f64.exp() + (-2f64).exp()).ln() / 4.0;
    assert!(close(total(c, &batch), (l0 + l1 + l2) / 3.0, 1e-14));
    // A negative cosine is clamped to S = 0: value at S = 0 and no gradient at all.
    let neg = "[[losses]]\nloss_type = \"multi_similarity_loss\"\nembeddings = \"f\"\n\
               labels = \"y2\"\n";
    let out = Reference::new(&parse(neg)).unwrap().step(&batch).unwrap();
    let want = (1.0 + (-50f64).exp()).ln() / 50.0;
    assert!(close(out.total, want, 1e-14), "{}", out.total);
    assert!(out.grads["f"].iter().all(|g| *g == 0.0));
}

#[test]
fn normalisation_follows_f_normalize_below_the_floor() {
    use super::retrieval::{normalise, normalise_backward};
    // (3, 4) → (0.6, 0.8); the gradient is projected: g = (1, 0) gives (1 − 0.36, −0.48)/5.
    let x = [3.0, 4.0, 0.0, 0.0, 3e-13, 4e-13];
    let unit = normalise(&x, 2);
    assert_all_close(&unit[..2], &[0.6, 0.8], 1e-15, "x̂");
    // Below the floor ‖x‖ ≤ 1e-12: x̂ = x / 1e-12 (zero stays zero) and dx = g / 1e-12.
    assert_eq!(&unit[2..4], &[0.0, 0.0]);
    assert_all_close(&unit[4..], &[0.3, 0.4], 1e-15, "x̂ below the floor");
    let g = normalise_backward(&x, 2, vec![1.0, 0.0, 1.0, -2.0, 0.5, 0.25]);
    assert_all_close(&g[..2], &[0.64 / 5.0, -0.48 / 5.0], 1e-15, "dx");
    assert_all_close(
        &g[2..],
        &[1e12, -2e12, 0.5e12, 0.25e12],
        1e-15,
        "dx below the floor",
    );
}

// ---------------------------------------------------------------------------------------------
// The memory bank.

/// A batch of B rows for the bank tests: user and item [B, 2], ids 100·tag + i, log_q −tag − i/10.
fn bank_batch(tag: u64, rows: usize) -> HostBatch {
    let mut r = SplitMix(tag);
    [
        (
            "u".into(),
            HostTensor::real([rows, 2], r.reals(2 * rows, -1.0, 1.0)),
        ),
        (
            "v".into(),
            HostTensor::real([rows, 2], r.reals(2 * rows, -1.0, 1.0)),
        ),
        (
            "ids".into(),
            HostTensor::int(
                [rows],
                (0..rows as i64).map(|i| 100 * tag as i64 + i).collect(),
            ),
        ),
        (
            "lq".into(),
            HostTensor::real(
                [rows],
                (0..rows).map(|i| -(tag as f64) - i as f64 / 10.0).collect(),
            ),
        ),
    ]
    .into_iter()
    .collect()
}

fn cross_batch(extra: &str) -> LossConfig {
    parse(&format!(
        "[[losses]]\nname = \"xb\"\nloss_type = \"cross_batch_softmax\"\nuser = \"u\"\n\
         item = \"v\"\n{extra}\n"
    ))
}

/// The bank row that row i of `batch` becomes (dot similarity).
fn bank_row(batch: &HostBatch, i: usize) -> BankRow {
    let v = reals(batch, "v");
    let HostData::Int(ids) = &batch["ids"].data else {
        unreachable!()
    };
    BankRow {
        embedding: v[2 * i..2 * i + 2].to_vec(),
        log_q: reals(batch, "lq")[i],
        id: Some(ids[i]),
    }
}

fn bank(r: &Reference) -> &BankState {
    r.state().banks[0].as_ref().unwrap()
}

#[test]
fn the_bank_is_a_fifo_that_wraps() {
    let config = cross_batch(
        "bank_size = 4\nitem_ids = \"ids\"\nremove_accidental_hits = false\nlog_q = \"lq\"",
    );
    let mut r = Reference::new(&config).unwrap();
    assert_eq!(bank(&r), &BankState::empty(4));
    assert_eq!(r.state().banks.len(), 1);
    let batches: Vec<HostBatch> = (1..=3).map(|t| bank_batch(t, 3)).collect();
    r.step(&batches[0]).unwrap();
    let b1 = |i| Some(bank_row(&batches[0], i));
    let b2 = |i| Some(bank_row(&batches[1], i));
    let b3 = |i| Some(bank_row(&batches[2], i));
    assert_eq!(
        bank(&r),
        &BankState {
            slots: vec![b1(0), b1(1), b1(2), None],
            head: 3,
            fill: 3,
        }
    );
    // The second batch fills slot 3 and wraps to slots 0 and 1.
    r.step(&batches[1]).unwrap();
    assert_eq!(
        bank(&r),
        &BankState {
            slots: vec![b2(1), b2(2), b1(2), b2(0)],
            head: 2,
            fill: 4,
        }
    );
    r.step(&batches[2]).unwrap();
    assert_eq!(
        bank(&r),
        &BankState {
            slots: vec![b3(2), b2(2), b3(0), b3(1)],
            head: 1,
            fill: 4,
        }
    );
    // B = 5 > M = 2: row i goes to slot i mod 2, the last write wins (rows 4 and 3 remain).
    let mut small = Reference::new(&cross_batch(
        "bank_size = 2\nitem_ids = \"ids\"\nlog_q = \"lq\"",
    ))
    .unwrap();
    let big = bank_batch(7, 5);
    small.step(&big).unwrap();
    let want = BankState {
        slots: vec![Some(bank_row(&big, 4)), Some(bank_row(&big, 3))],
        head: 1,
        fill: 2,
    };
    assert_eq!(bank(&small), &want);
    // Without ids and log_q: id None, log_q 0; under cosine the stored embedding is v̂.
    let mut plain = Reference::new(&cross_batch("bank_size = 3\nsimilarity = \"cosine\"")).unwrap();
    plain.step(&batches[0]).unwrap();
    let v = reals(&batches[0], "v");
    for (i, slot) in bank(&plain).slots.iter().enumerate() {
        let row = slot.as_ref().unwrap();
        assert_eq!(row.id, None);
        assert_eq!(row.log_q, 0.0);
        assert_all_close(&row.embedding, &unit(&v[2 * i..2 * i + 2]), 1e-15, "v̂");
    }
}

/// `batch` with the bank's rows appended as extra rows: user rows zero-weighted, item rows, ids
/// and log_q from `earlier` (dot similarity), plus weights "w" (1 for the batch, 0 for the rest).
fn with_extra_rows(batch: &HostBatch, earlier: &HostBatch) -> HostBatch {
    let mut joined = HostBatch::new();
    let b = batch["u"].shape[0];
    let m = earlier["u"].shape[0];
    for name in ["u", "v"] {
        let values = [reals(batch, name), reals(earlier, name)].concat();
        joined.insert(name.into(), HostTensor::real([b + m, 2], values));
    }
    let lq = [reals(batch, "lq"), reals(earlier, "lq")].concat();
    joined.insert("lq".into(), HostTensor::real([b + m], lq));
    let (HostData::Int(i1), HostData::Int(i2)) = (&batch["ids"].data, &earlier["ids"].data) else {
        unreachable!()
    };
    joined.insert(
        "ids".into(),
        HostTensor::int([b + m], [&i1[..], &i2[..]].concat()),
    );
    let w = (0..b + m).map(|i| if i < b { 1.0 } else { 0.0 }).collect();
    joined.insert("w".into(), HostTensor::real([b + m], w));
    joined
}

#[test]
fn a_partly_filled_bank_adds_its_rows_as_negatives() {
    for similarity in ["dot", "cosine"] {
        for ids in [
            "item_ids = \"ids\"\nremove_accidental_hits = false",
            "item_ids = \"ids\"",
        ] {
            let options =
                format!("similarity = \"{similarity}\"\nlog_q = \"lq\"\n{ids}\ntemperature = 0.5");
            let config = cross_batch(&format!("bank_size = 6\n{options}"));
            let earlier = bank_batch(1, 3);
            let mut batch = bank_batch(2, 3);
            // An accidental hit against the bank: batch row 1 has the id of earlier row 2.
            if let HostData::Int(ids) = &mut batch.get_mut("ids").unwrap().data {
                ids[1] = 102;
            }
            let mut r = Reference::new(&config).unwrap();
            r.step(&earlier).unwrap();
            assert_eq!(bank(&r).fill, 3);
            let out = r.step(&batch).unwrap();
            // The same as in_batch_softmax over the batch followed by the bank's rows, weighted 0.
            let in_batch = parse(&format!(
                "[[losses]]\nname = \"xb\"\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\n\
                 item = \"v\"\n{options}\nsample_weights = \"w\"\n"
            ));
            let joined = with_extra_rows(&batch, &earlier);
            let want = Reference::new(&in_batch).unwrap().step(&joined).unwrap();
            let what = format!("{similarity} {ids}");
            assert!(
                close(out.total, want.total, 1e-13),
                "{what}: {} vs {}",
                out.total,
                want.total
            );
            assert_all_close(&out.grads["u"], &want.grads["u"][..6], 1e-12, &what);
            assert_all_close(&out.grads["v"], &want.grads["v"][..6], 1e-12, &what);
            // Without the bank's rows the loss is smaller; the hit removal changes the loss.
            let alone = Reference::new(&in_batch).unwrap().step(&{
                let mut b = batch.clone();
                b.insert("w".into(), HostTensor::real([3], vec![1.0; 3]));
                b
            });
            assert!(alone.unwrap().total < out.total, "{what}");
        }
    }
    // Hit removal against the bank: with it, row 1 loses the bank column of id 102.
    let options = "log_q = \"lq\"\nitem_ids = \"ids\"";
    let earlier = bank_batch(1, 3);
    let mut batch = bank_batch(2, 3);
    if let HostData::Int(ids) = &mut batch.get_mut("ids").unwrap().data {
        ids[1] = 102;
    }
    let value = |extra: &str| {
        let config = cross_batch(&format!("bank_size = 6\n{options}\n{extra}"));
        let mut r = Reference::new(&config).unwrap();
        r.step(&earlier).unwrap();
        r.step(&batch).unwrap().total
    };
    assert!(value("") < value("remove_accidental_hits = false"));
}

#[test]
fn warm_up_fills_the_bank_without_using_it() {
    let options = "log_q = \"lq\"\nitem_ids = \"ids\"\nsimilarity = \"cosine\"";
    let config = cross_batch(&format!("bank_size = 5\nwarmup_steps = 2\n{options}"));
    let in_batch = parse(&format!(
        "[[losses]]\nname = \"xb\"\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n\
         {options}\n"
    ));
    let mut r = Reference::new(&config).unwrap();
    let batches: Vec<HostBatch> = (1..=3).map(|t| bank_batch(t, 2)).collect();
    for (step, batch) in batches.iter().enumerate() {
        let out = r.step(batch).unwrap();
        let plain = Reference::new(&in_batch).unwrap().step(batch).unwrap();
        if step < 2 {
            // Steps 0 and 1: exactly in_batch_softmax, while the bank fills.
            assert_eq!(out.total, plain.total, "step {step}");
            assert_eq!(out.grads, plain.grads, "step {step}");
        } else {
            // Step 2: the 4 banked rows are negatives.
            assert!(out.total > plain.total);
        }
        assert_eq!(bank(&r).fill, (2 * (step + 1)).min(5));
    }
}

#[test]
fn a_failed_step_leaves_the_bank_unchanged() {
    let config = cross_batch("bank_size = 4\nitem_ids = \"ids\"\nlog_q = \"lq\"");
    let mut r = Reference::new(&config).unwrap();
    r.step(&bank_batch(1, 3)).unwrap();
    let before = r.state().clone();
    let mut bad = bank_batch(2, 3);
    real_mut(&mut bad, "u")[3] = f64::NAN;
    let e = r.step(&bad).unwrap_err();
    assert_mentions(&e.to_string(), &["'u'", "'xb'", "finite"]);
    assert_eq!(r.state(), &before);
    // A bad log_q, too.
    let mut bad = bank_batch(2, 3);
    real_mut(&mut bad, "lq")[0] = f64::INFINITY;
    assert!(r.step(&bad).is_err());
    assert_eq!(r.state(), &before);
}

#[test]
fn the_bank_round_trips_through_set_state() {
    let config = cross_batch("bank_size = 5\nitem_ids = \"ids\"\nlog_q = \"lq\"");
    let mut a = Reference::new(&config).unwrap();
    a.step(&bank_batch(1, 3)).unwrap();
    a.step(&bank_batch(2, 3)).unwrap();
    let mut b = Reference::new(&config).unwrap();
    b.set_state(a.state().clone());
    assert_eq!(a.state(), b.state());
    let next = bank_batch(3, 3);
    // The same step from an empty bank gives another value: the bank matters.
    let mut fresh = Reference::new(&config).unwrap();
    fresh.set_state(ReferenceState {
        step: a.state().step,
        ..ReferenceState::initial(&config)
    });
    let out = a.step(&next).unwrap();
    assert_eq!(out, b.step(&next).unwrap());
    assert_eq!(a.state(), b.state());
    assert_ne!(fresh.step(&next).unwrap().total, out.total);
}

#[test]
fn an_unreachable_bank_is_refused() {
    let config = cross_batch("bank_size = 4\nitem_ids = \"ids\"");
    let mut r = Reference::new(&config).unwrap();
    r.step(&bank_batch(1, 3)).unwrap();
    let good = r.state().clone();
    let batch = bank_batch(2, 3);
    let refuse = |change: &dyn Fn(&mut BankState), part: &str| {
        let mut s = good.clone();
        change(s.banks[0].as_mut().unwrap());
        let mut r = Reference::new(&config).unwrap();
        r.set_state(s);
        let e = r.step(&batch).unwrap_err();
        assert!(matches!(e, Error::State(_)), "{e}");
        assert_mentions(&e.to_string(), &["'xb'", part]);
    };
    refuse(&|b| b.slots.push(None), "5 slots");
    refuse(&|b| b.head = 1, "head 1");
    refuse(&|b| b.fill = 4, "fill is 4");
    refuse(&|b| b.slots[1] = None, "slot 1");
    refuse(&|b| b.slots[2].as_mut().unwrap().id = None, "item id");
    refuse(
        &|b| b.slots[0].as_mut().unwrap().embedding.push(1.0),
        "slot 1",
    );
    refuse(
        &|b| b.slots[0].as_mut().unwrap().log_q = f64::NAN,
        "non-finite",
    );
    let mut s = good.clone();
    s.banks[0] = None;
    r.set_state(s);
    assert!(matches!(r.step(&batch), Err(Error::State(_))));
    let mut s = good.clone();
    s.banks.push(None);
    r.set_state(s);
    assert!(matches!(r.step(&batch), Err(Error::State(_))));
    // A bank on another term.
    let other = parse("[[losses]]\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n");
    let mut r = Reference::new(&other).unwrap();
    assert_eq!(r.state().banks, vec![None]);
    let mut s = r.state().clone();
    s.banks[0] = Some(BankState::empty(2));
    r.set_state(s);
    assert!(matches!(r.step(&batch), Err(Error::State(_))));
    // Embeddings of another width than the bank's.
    let mut wide = bank_batch(2, 3);
    wide.insert("u".into(), HostTensor::real([3, 3], vec![0.5; 9]));
    wide.insert("v".into(), HostTensor::real([3, 3], vec![0.5; 9]));
    let mut r = Reference::new(&config).unwrap();
    r.set_state(good);
    let e = r.step(&wide).unwrap_err();
    assert_mentions(&e.to_string(), &["'v'", "'xb'", "[3, 3]", "d = 2"]);
}

// ---------------------------------------------------------------------------------------------
// Errors.

#[test]
fn errors_name_the_tensor_the_term_and_the_shapes() {
    let batch = emb_batch(10);
    let ib = "[[losses]]\nname = \"ib\"\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\n\
              item = \"v\"\n";

    let mut b = batch.clone();
    b.insert("u".into(), HostTensor::real([RB], vec![0.0; RB]));
    assert_mentions(&error_of(ib, &b), &["'u'", "'ib'", "[B, d]", "[6]"]);
    let mut b = batch.clone();
    b.insert("u".into(), HostTensor::real([0, 3], vec![]));
    assert_mentions(&error_of(ib, &b), &["'u'", "'ib'", "B ≥ 1", "[0, 3]"]);
    let mut b = batch.clone();
    b.insert("v".into(), HostTensor::real([RB, 4], vec![0.0; RB * 4]));
    assert_mentions(
        &error_of(ib, &b),
        &["'v'", "'ib'", "[6, 3]", "[6, 4]", "'u'"],
    );
    let mut b = batch.clone();
    b.insert("v".into(), HostTensor::int([RB, D], vec![0; RB * D]));
    assert_mentions(&error_of(ib, &b), &["'v'", "'ib'", "real"]);
    let mut b = batch.clone();
    real_mut(&mut b, "v")[4] = f64::INFINITY;
    assert_mentions(&error_of(ib, &b), &["'v'", "'ib'", "finite", "element 4"]);

    let ids = format!("{ib}item_ids = \"lq\"\n");
    assert_mentions(&error_of(&ids, &batch), &["'lq'", "'ib'", "integer"]);
    let mut b = batch.clone();
    b.insert("ids".into(), HostTensor::int([RB - 1], vec![1; RB - 1]));
    let ids = format!("{ib}item_ids = \"ids\"\n");
    assert_mentions(&error_of(&ids, &b), &["'ids'", "'ib'", "[6]", "[5]"]);
    let log_q = format!("{ib}log_q = \"lq\"\n");
    let mut b = batch.clone();
    real_mut(&mut b, "lq")[2] = f64::NAN;
    assert_mentions(&error_of(&log_q, &b), &["'lq'", "'ib'", "finite"]);
    let mut b = batch.clone();
    b.insert("lq".into(), HostTensor::real([RB, 2], vec![0.0; 2 * RB]));
    assert_mentions(&error_of(&log_q, &b), &["'lq'", "'ib'", "[6, 2]"]);
    let weights = format!("{ib}sample_weights = \"u\"\n");
    assert_mentions(&error_of(&weights, &batch), &["'u'", "'ib'", "[6, 3]"]);

    let cl = "[[losses]]\nname = \"cl\"\nloss_type = \"contrastive_loss\"\nview_a = \"a\"\n\
              view_b = \"b\"\n";
    let mut b = batch.clone();
    b.insert(
        "b".into(),
        HostTensor::real([RB + 1, D], vec![0.1; (RB + 1) * D]),
    );
    assert_mentions(
        &error_of(cl, &b),
        &["'b'", "'cl'", "[6, 3]", "[7, 3]", "'a'"],
    );

    let nm =
        "[[losses]]\nname = \"nm\"\nloss_type = \"softmax_cross_entropy_with_negative_mining\"\n\
              user = \"u\"\nitem = \"v\"\n";
    for k in [6, 7] {
        let c = format!("{nm}num_negative_samples = {k}\n");
        assert_mentions(
            &error_of(&c, &batch),
            &["'u'", "'nm'", "num_negative_samples", "[6, 3]", "B = 6"],
        );
    }
    let c = format!("{nm}num_negative_samples = 5\n");
    Reference::new(&parse(&c)).unwrap().step(&batch).unwrap();
    let labels = format!("{nm}labels = \"lab\"\n");
    let mut b = batch.clone();
    real_mut(&mut b, "lab")[1] = f64::NAN;
    assert_mentions(&error_of(&labels, &b), &["'lab'", "'nm'", "finite"]);
    // Integer labels are the same reals (losses::labels).
    let mut b = batch.clone();
    b.insert("lab".into(), HostTensor::int([RB], vec![1; RB]));
    let mut r = batch.clone();
    r.insert("lab".into(), HostTensor::real([RB], vec![1.0; RB]));
    let step = |b: &HostBatch| {
        Reference::new(&parse(&labels))
            .unwrap()
            .step(b)
            .unwrap()
            .total
    };
    assert_eq!(step(&b), step(&r));

    for loss_type in ["circle_loss", "multi_similarity_loss"] {
        let m = format!(
            "[[losses]]\nname = \"m\"\nloss_type = \"{loss_type}\"\nembeddings = \"e\"\n\
             labels = \"clsr\"\n"
        );
        let mut b = batch.clone();
        real_mut(&mut b, "clsr")[0] = f64::NAN;
        assert_mentions(&error_of(&m, &b), &["'clsr'", "'m'", "finite"]);
        let mut b = batch.clone();
        b.insert("clsr".into(), HostTensor::real([RB + 1], vec![0.0; RB + 1]));
        assert_mentions(&error_of(&m, &b), &["'clsr'", "'m'", "[6]", "[7]", "'e'"]);
        let sess = format!("{m}session = \"lq\"\n");
        assert_mentions(
            &error_of(&sess, &batch),
            &["'lq'", "'m'", "integer session ids"],
        );
        let mut b = batch.clone();
        b.insert("e".into(), HostTensor::real([RB, D, 1], vec![0.1; RB * D]));
        assert_mentions(&error_of(&m, &b), &["'e'", "'m'", "[6, 3, 1]"]);
    }
}

#[test]
fn remove_accidental_hits_needs_item_ids() {
    let batch = emb_batch(11);
    let e = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n\
         remove_accidental_hits = true\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("item_ids"), "{e}");
    // A config built in code without item_ids.
    let mut config = parse(
        "[[losses]]\nname = \"ib\"\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n",
    );
    let p: &InBatchParams = config.losses[0].kind.params().unwrap();
    assert_eq!(p.remove_accidental_hits, Some(false));
    assert_eq!(p.similarity, Similarity::Dot);
    let hits = InBatchParams {
        remove_accidental_hits: Some(true),
        ..p.clone()
    };
    config.losses[0].kind = TermKind::new("in_batch_softmax", hits);
    let e = Reference::new(&config).unwrap_err();
    assert!(matches!(e, Error::Term { .. }), "{e:?}");
    assert_mentions(&e.to_string(), &["'ib'", "item_ids"]);
    // With item_ids the default removes hits: distinct ids change nothing, duplicates do.
    let ib = "[[losses]]\nloss_type = \"in_batch_softmax\"\nuser = \"u\"\nitem = \"v\"\n";
    let plain = total(ib, &batch);
    assert_eq!(total(&format!("{ib}item_ids = \"uniq\"\n"), &batch), plain);
    assert!(total(&format!("{ib}item_ids = \"ids\"\n"), &batch) < plain);
    let off = format!("{ib}item_ids = \"ids\"\nremove_accidental_hits = false\n");
    assert_eq!(total(&off, &batch), plain);
}
