//! Tests of the pairwise-in-session terms and `jrc_loss`: analytic gradients against central
//! finite differences (through [`super::tests::check`], same h and tolerance), hand-computed small
//! cases, session order, OHEM over pairs, the learned JRC weights over steps, errors, and two large
//! batches.

use super::jrc::jrc;
use super::pairwise::pairwise;
use super::tests::{
    assert_close, assert_mentions, check, error_of, parse, SplitMix, REDUCTIONS, WEIGHTS,
};
use super::*;
use crate::config::Reduction;
use crate::losses::pairwise::params::PairLoss;
use crate::tensor::{HostData, HostTensor};

/// Rows of the pairwise test batch.
const PB: usize = 12;

/// Interleaved session ids: session 5 = rows 0, 2, 5, 9; session 2 = rows 1, 4, 6, 10;
/// session 9 = rows 3, 7, 11; session 4 = row 8 alone.
const SESSIONS: [i64; PB] = [5, 2, 5, 9, 2, 5, 2, 9, 4, 5, 2, 9];

/// A seeded batch for the pairwise and JRC terms: logits `x` [B] and `x1` [B, 1], graded labels
/// `g` in {0, 1, 2, 3}, session ids `s`, sample weights `w` (rows 1 and 6 zero), `c1`, `c2`,
/// JRC logits `zj` [B, 2] and binary labels `yb`. Every session of two rows or more has two
/// different labels in `g` and in `yb`.
fn pair_batch(seed: u64) -> HostBatch {
    let mut r = SplitMix(seed);
    let mut b = HostBatch::new();
    b.insert("x".into(), HostTensor::real([PB], r.reals(PB, -3.0, 3.0)));
    b.insert(
        "x1".into(),
        HostTensor::real([PB, 1], r.reals(PB, -3.0, 3.0)),
    );
    let mut g: Vec<f64> = (0..PB).map(|_| r.below(4) as f64).collect();
    (g[0], g[2], g[1], g[4], g[3], g[7]) = (3.0, 0.0, 1.0, 2.0, 0.0, 2.0);
    b.insert("g".into(), HostTensor::real([PB], g));
    b.insert("s".into(), HostTensor::int([PB], SESSIONS.to_vec()));
    let mut w = r.reals(PB, 0.2, 2.0);
    (w[1], w[6]) = (0.0, 0.0);
    b.insert("w".into(), HostTensor::real([PB], w));
    b.insert("c1".into(), HostTensor::real([PB], r.bits(PB)));
    b.insert(
        "c2".into(),
        HostTensor::real([PB, 1], r.reals(PB, 0.1, 1.0)),
    );
    b.insert(
        "zj".into(),
        HostTensor::real([PB, 2], r.reals(2 * PB, -3.0, 3.0)),
    );
    let mut yb = r.bits(PB);
    (yb[0], yb[2], yb[1], yb[4], yb[3], yb[7]) = (1.0, 0.0, 1.0, 0.0, 0.0, 1.0);
    b.insert("yb".into(), HostTensor::real([PB], yb));
    b
}

/// Every pair loss type with a spread of its options, as TOML lines.
const PAIR_LOSSES: [&str; 17] = [
    "loss_type = \"pair_wise_loss\"",
    "loss_type = \"pair_wise_loss\"\nmargin = 0.5",
    "loss_type = \"pairwise_logistic_loss\"",
    "loss_type = \"pairwise_logistic_loss\"\nhinge_margin = 0.3",
    "loss_type = \"pairwise_logistic_loss\"\nuse_label_margin = true",
    "loss_type = \"pairwise_logistic_loss\"\nhinge_margin = -0.2\nuse_label_margin = true",
    "loss_type = \"pairwise_focal_loss\"",
    "loss_type = \"pairwise_focal_loss\"\ngamma = 0.0",
    "loss_type = \"pairwise_focal_loss\"\ngamma = 1.5\nalpha = 0.25",
    "loss_type = \"pairwise_focal_loss\"\nhinge_margin = 0.8",
    "loss_type = \"pairwise_hinge_loss\"",
    "loss_type = \"pairwise_hinge_loss\"\nuse_label_margin = false",
    "loss_type = \"pairwise_hinge_loss\"\nuse_label_margin = false\nmargin = 0.4",
    "loss_type = \"pairwise_hinge_loss\"\nlabel_is_logits = false",
    "loss_type = \"pairwise_hinge_loss\"\nuse_exponent = true",
    "loss_type = \"pairwise_hinge_loss\"\nuse_exponent = true\nlabel_is_logits = false",
    "loss_type = \"pairwise_hinge_loss\"\nuse_exponent = true\nuse_label_margin = false\nmargin = 0.4",
];

fn reals(batch: &HostBatch, name: &str) -> Vec<f64> {
    match &batch[name].data {
        HostData::Real(v) => v.clone(),
        HostData::Int(_) => panic!("{name} is not real"),
    }
}

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

#[test]
fn pair_losses_gradients_match_finite_differences() {
    let batch = pair_batch(21);
    let mut n = 0;
    for loss in PAIR_LOSSES {
        for session in ["", "session = \"s\""] {
            for temperature in ["", "temperature = 0.7"] {
                let ohem = ["", "ohem_ratio = 0.5", "ohem_ratio = 0.2"];
                for (o, ohem) in ohem.iter().enumerate() {
                    let reductions: &[&str] = if o == 0 { &REDUCTIONS } else { &[""] };
                    for reduction in reductions {
                        for weights in WEIGHTS {
                            let logits = if n % 4 == 3 { "x1" } else { "x" };
                            n += 1;
                            let config = parse(&format!(
                                "[[losses]]\n{loss}\nlogits = \"{logits}\"\nlabels = \"g\"\n\
                                 {session}\n{temperature}\n{ohem}\n{reduction}\n{weights}\n"
                            ));
                            let out = check(&config, &batch, None);
                            assert!(out.total > 0.0, "{config:?}");
                        }
                    }
                }
            }
        }
    }
    assert_eq!(n, 17 * 2 * 2 * 7 * 3);
}

/// x = [1, 0, 2], y = [2, 1, 0], one session, T = 1: the pairs are (0, 1) with d = 1, (0, 2) with
/// d = −1 and (1, 2) with d = −2.
const HAND_X: [f64; 3] = [1.0, 0.0, 2.0];
const HAND_Y: [f64; 3] = [2.0, 1.0, 0.0];

#[test]
fn logistic_by_hand() {
    let loss = PairLoss::Logistic { margin: 0.0 };
    let w = [1.0; 3];
    let (l, g) = pairwise(
        &loss,
        1.0,
        1.0,
        Reduction::NonzeroMean,
        &HAND_X,
        &HAND_Y,
        &w,
        None,
    );
    // (softplus(−1) + softplus(1) + softplus(2)) / 3
    // = (0.31326168751822286 + 1.3132616875182228 + 2.1269280110429727) / 3.
    assert!(close(l, 1.2511504620264728, 1e-14), "{l}");
    // dl/dd = −σ(−d): −σ(−1), −σ(1), −σ(2); x_0 gets (−σ(−1) − σ(1))/3 = −1/3,
    // x_1 (σ(−1) − σ(2))/3, x_2 (σ(1) + σ(2))/3.
    let want = [-1.0 / 3.0, -0.2039518855359624, 0.5372852188692957];
    for (a, b) in g.iter().zip(want) {
        assert!(close(*a, b, 1e-14), "{g:?}");
    }
    // margin 1 shifts d: softplus(−(d − 1)) at d = 1, −1, −2 = ln 2 + softplus(2) + softplus(3).
    let loss = PairLoss::Logistic { margin: 1.0 };
    let (l, _) = pairwise(&loss, 1.0, 1.0, Reduction::Sum, &HAND_X, &HAND_Y, &w, None);
    let sp = super::binary::softplus;
    assert!(close(l, 2f64.ln() + sp(2.0) + sp(3.0), 1e-15), "{l}");
    // Pair weight is the higher-label row's weight: w = [0, 1, 5] keeps only (1, 2), weight 1;
    // weighted_mean = 1·softplus(2) / 1 (row 2 never has the higher label).
    let (l, _) = pairwise(
        &PairLoss::Logistic { margin: 0.0 },
        1.0,
        1.0,
        Reduction::WeightedMean,
        &HAND_X,
        &HAND_Y,
        &[0.0, 1.0, 5.0],
        None,
    );
    assert!(close(l, sp(2.0), 1e-15), "{l}");
    // Each reduction by hand with w = [0, 0.5, 1]: pair weights 0, 0, 0.5, Σ pw·l = 0.5·sp(2);
    // nonzero_mean divides by 1 pair, weighted_mean by 0.5, mean by 3 pairs, sum by 1.
    for (reduction, denominator) in [
        (Reduction::NonzeroMean, 1.0),
        (Reduction::WeightedMean, 0.5),
        (Reduction::Mean, 3.0),
        (Reduction::Sum, 1.0),
    ] {
        let (l, g) = pairwise(
            &PairLoss::Logistic { margin: 0.0 },
            1.0,
            1.0,
            reduction,
            &HAND_X,
            &HAND_Y,
            &[0.0, 0.5, 1.0],
            None,
        );
        assert!(
            close(l, 0.5 * sp(2.0) / denominator, 1e-15),
            "{reduction:?}: {l}"
        );
        // Only the pair (1, 2) moves: −0.5·σ(2)/D to x_1.
        let s2 = super::binary::sigmoid(2.0);
        assert!(
            close(g[1], -0.5 * s2 / denominator, 1e-15),
            "{reduction:?}: {g:?}"
        );
        assert_eq!(g[0], 0.0);
    }
    // All pair weights zero: nonzero_mean and weighted_mean have a zero denominator, L = 0.
    for reduction in [Reduction::NonzeroMean, Reduction::WeightedMean] {
        let r = pairwise(
            &PairLoss::Logistic { margin: 0.0 },
            1.0,
            1.0,
            reduction,
            &HAND_X,
            &HAND_Y,
            &[0.0, 0.0, 1.0],
            None,
        );
        assert_eq!(r, (0.0, vec![0.0; 3]));
    }
}

#[test]
fn logistic_margin_by_hand() {
    // T = 2, hinge_margin 0.5, label margin: d' = d − 0.5 − (y_i − y_j)/2.
    // (0, 1): d = 0.5, d' = 0.5 − 0.5 − 0.5 = −0.5; (0, 2): d = −0.5, d' = −0.5 − 0.5 − 1 = −2;
    // (1, 2): d = −1, d' = −1 − 0.5 − 0.5 = −2. sum = softplus(0.5) + 2·softplus(2).
    let loss = PairLoss::LogisticMargin {
        hinge_margin: Some(0.5),
        use_label_margin: true,
    };
    let (l, g) = pairwise(
        &loss,
        2.0,
        1.0,
        Reduction::Sum,
        &HAND_X,
        &HAND_Y,
        &[1.0; 3],
        None,
    );
    assert!(close(l, 5.227933006266052, 1e-14), "{l}");
    // dl/dd = −σ(−d'); x_0 gets (−σ(0.5) − σ(2))/2.
    let s = super::binary::sigmoid;
    assert!(close(g[0], (-s(0.5) - s(2.0)) / 2.0, 1e-15), "{g:?}");
    // Without either margin it is pair_wise_loss with margin 0.
    let plain = PairLoss::LogisticMargin {
        hinge_margin: None,
        use_label_margin: false,
    };
    let a = pairwise(
        &plain,
        1.3,
        1.0,
        Reduction::Mean,
        &HAND_X,
        &HAND_Y,
        &[1.0; 3],
        None,
    );
    let b = pairwise(
        &PairLoss::Logistic { margin: 0.0 },
        1.3,
        1.0,
        Reduction::Mean,
        &HAND_X,
        &HAND_Y,
        &[1.0; 3],
        None,
    );
    assert_eq!(a, b);
}

#[test]
fn focal_by_hand_and_hinge_removal_leaves_the_denominators() {
    // y = [1, 0, 0, 0], x = [0.3, 0, 1, −0.5]: pairs (0, 1) d = 0.3, (0, 2) d = −0.7,
    // (0, 3) d = 0.8. With hinge_margin 0.5 the pair (0, 3) does not exist.
    let x = [0.3, 0.0, 1.0, -0.5];
    let y = [1.0, 0.0, 0.0, 0.0];
    let focal = |hinge_margin| PairLoss::Focal {
        gamma: 2.0,
        alpha: None,
        hinge_margin,
    };
    // Focal with label 1: −(1 − σ(d))²·ln σ(d): 0.10039327548859704 at 0.3, 0.49254487961650867
    // at −0.7; every reduction divides by 2 pairs, not 3.
    let (f03, f07) = (0.10039327548859704, 0.49254487961650867);
    for reduction in [
        Reduction::NonzeroMean,
        Reduction::WeightedMean,
        Reduction::Mean,
    ] {
        let (l, g) = pairwise(
            &focal(Some(0.5)),
            1.0,
            1.0,
            reduction,
            &x,
            &y,
            &[1.0; 4],
            None,
        );
        assert!(close(l, (f03 + f07) / 2.0, 1e-14), "{reduction:?}: {l}");
        assert_eq!(g[3], 0.0, "the removed pair has no gradient");
    }
    // Without the hinge the third pair counts: (f03 + f07 + l(0.8)) / 3.
    let (l, _) = pairwise(
        &focal(None),
        1.0,
        1.0,
        Reduction::Mean,
        &x,
        &y,
        &[1.0; 4],
        None,
    );
    let (f08, _) = super::binary::focal(
        0.8,
        1.0,
        &super::binary::Focal {
            gamma: 2.0,
            alpha: None,
            label_smoothing: 0.0,
        },
    );
    assert!(close(l, (f03 + f07 + f08) / 3.0, 1e-15), "{l}");
    // OHEM counts P = 2 pairs: k = round(2·0.5) = 1 keeps l(−0.7) alone (with P = 3 it would
    // keep round(1.5) = 2).
    let (l, g) = pairwise(
        &focal(Some(0.5)),
        1.0,
        0.5,
        Reduction::NonzeroMean,
        &x,
        &y,
        &[1.0; 4],
        None,
    );
    assert!(close(l, f07, 1e-14), "{l}");
    assert_eq!((g[1], g[3]), (0.0, 0.0));
    // d exactly at the hinge margin removes the pair: x = [0.5, 0], d = 0.5 ≥ 0.5.
    let r = pairwise(
        &focal(Some(0.5)),
        1.0,
        1.0,
        Reduction::Sum,
        &[0.5, 0.0],
        &[1.0, 0.0],
        &[1.0; 2],
        None,
    );
    assert_eq!(r, (0.0, vec![0.0; 2]));
    // All pairs removed: no pairs, zero loss.
    let (l, g) = pairwise(
        &focal(Some(-5.0)),
        1.0,
        1.0,
        Reduction::NonzeroMean,
        &x,
        &y,
        &[1.0; 4],
        None,
    );
    assert_eq!((l, g), (0.0, vec![0.0; 4]));
}

#[test]
fn hinge_label_is_logits_and_use_exponent_by_hand() {
    // T = 2 on HAND_X, HAND_Y: scores s = x/2 = [0.5, 0, 1]. label_is_logits: t = y/2 =
    // [1, 0.5, 0]; a = gap − d: (0, 1) 0.5 − 0.5 = 0, (0, 2) 1 + 0.5 = 1.5, (1, 2) 0.5 + 1 =
    // 1.5; mean 1. Raw labels: (0, 1) 1 − 0.5 = 0.5, (0, 2) 2 + 0.5, (1, 2) 1 + 1; mean 5/3.
    let hinge = |label_is_logits, use_exponent| PairLoss::Hinge {
        margin: 1.0,
        use_label_margin: true,
        label_is_logits,
        use_exponent,
    };
    let run = |loss: &PairLoss| {
        pairwise(
            loss,
            2.0,
            1.0,
            Reduction::Mean,
            &HAND_X,
            &HAND_Y,
            &[1.0; 3],
            None,
        )
    };
    assert!(close(run(&hinge(true, false)).0, 1.0, 1e-15));
    assert!(close(run(&hinge(false, false)).0, 5.0 / 3.0, 1e-15));
    // use_exponent: s = σ(x/2), t = σ(y/2), l = e^a − 1 for a > 0.
    let s = |v: f64| 1.0 / (1.0 + (-v / 2.0).exp());
    let (sx, sy) = (HAND_X.map(s), HAND_Y.map(s));
    let mut want = 0.0;
    for (i, j) in [(0, 1), (0, 2), (1, 2)] {
        let a: f64 = (sy[i] - sy[j]) - (sx[i] - sx[j]);
        want += (a.exp() - 1.0).max(0.0);
    }
    let (l, g) = run(&hinge(true, true));
    assert!(close(l, want / 3.0, 1e-14), "{l} {}", want / 3.0);
    assert!(g.iter().all(|v| v.is_finite()) && g.iter().any(|v| *v != 0.0));
}

#[test]
fn hinge_by_hand() {
    // Label margin: relu((y_i − y_j) − d): (0, 1) 1 − 1 = 0 (at the kink: loss 0, slope 0),
    // (0, 2) 2 + 1 = 3, (1, 2) 1 + 2 = 3; mean over 3 pairs = 2.
    let loss = PairLoss::Hinge {
        margin: 1.0,
        use_label_margin: true,
        label_is_logits: true,
        use_exponent: false,
    };
    let (l, g) = pairwise(
        &loss,
        1.0,
        1.0,
        Reduction::Mean,
        &HAND_X,
        &HAND_Y,
        &[1.0; 3],
        None,
    );
    assert_eq!(l, 2.0);
    // (0, 2) and (1, 2) have slope −1: x_0 −1/3, x_1 −1/3, x_2 +2/3.
    assert_eq!(g, vec![-1.0 / 3.0, -1.0 / 3.0, 2.0 / 3.0]);
    // Fixed margin 1: relu(1 − d) = 0, 2, 3.
    let loss = PairLoss::Hinge {
        margin: 1.0,
        use_label_margin: false,
        label_is_logits: true,
        use_exponent: false,
    };
    let (l, g) = pairwise(
        &loss,
        1.0,
        1.0,
        Reduction::Sum,
        &HAND_X,
        &HAND_Y,
        &[1.0; 3],
        None,
    );
    assert_eq!(l, 5.0);
    assert_eq!(g, vec![-1.0, -1.0, 2.0]);
    // T = 2 halves d but not the margin: relu(1 − 0.5) + relu(1 + 0.5) + relu(1 + 1) = 4; the
    // slopes are divided by T.
    let (l, g) = pairwise(
        &loss,
        2.0,
        1.0,
        Reduction::Sum,
        &HAND_X,
        &HAND_Y,
        &[1.0; 3],
        None,
    );
    assert_eq!(l, 4.0);
    assert_eq!(g, vec![-1.0, 0.0, 1.0]);
}

/// The rows of `batch` reordered so that row k of the result is row `perm[k]` of `batch` (every
/// tensor has `PB` rows).
fn permute(batch: &HostBatch, perm: &[usize]) -> HostBatch {
    let mut out = HostBatch::new();
    for (name, t) in batch {
        let width = t.len() / PB;
        let data = match &t.data {
            HostData::Real(v) => HostData::Real(
                perm.iter()
                    .flat_map(|&i| v[i * width..(i + 1) * width].to_vec())
                    .collect(),
            ),
            HostData::Int(v) => HostData::Int(
                perm.iter()
                    .flat_map(|&i| v[i * width..(i + 1) * width].to_vec())
                    .collect(),
            ),
        };
        out.insert(
            name.clone(),
            HostTensor {
                shape: t.shape.clone(),
                data,
            },
        );
    }
    out
}

#[test]
fn interleaved_sessions_match_sorted_sessions() {
    let batch = pair_batch(22);
    // Rows sorted by session id (stably), and reversed.
    let mut sorted: Vec<usize> = (0..PB).collect();
    sorted.sort_by_key(|&i| SESSIONS[i]);
    let reversed: Vec<usize> = (0..PB).rev().collect();
    let terms = PAIR_LOSSES.iter().map(|l| {
        format!("{l}\nlogits = \"x\"\nlabels = \"g\"\nsession = \"s\"\nsample_weights = \"w\"")
    });
    let terms: Vec<String> = terms
        .chain([
            "loss_type = \"pair_wise_loss\"\nlogits = \"x\"\nlabels = \"g\"\nsession = \"s\"\n\
             ohem_ratio = 0.4"
                .to_string(),
            "loss_type = \"jrc_loss\"\nlogits = \"zj\"\nlabels = \"yb\"\nsession = \"s\"\n\
             sample_weights = \"w\""
                .to_string(),
            "loss_type = \"jrc_loss\"\nlogits = \"zj\"\nlabels = \"yb\"\nsession = \"s\"\n\
             same_label_loss = false"
                .to_string(),
        ])
        .collect();
    for term in &terms {
        let config = parse(&format!("[[losses]]\n{term}\n"));
        let a = Reference::new(&config).unwrap().step(&batch).unwrap();
        for perm in [&sorted, &reversed] {
            let b = Reference::new(&config)
                .unwrap()
                .step(&permute(&batch, perm))
                .unwrap();
            assert!(
                close(b.total, a.total, 1e-13),
                "{term}: {} vs {}",
                b.total,
                a.total
            );
            let (name, ga) = a.grads.iter().next().unwrap();
            let gb = &b.grads[name];
            let width = ga.len() / PB;
            for (k, &i) in perm.iter().enumerate() {
                for c in 0..width {
                    let (x, y) = (gb[k * width + c], ga[i * width + c]);
                    assert!(close(x, y, 1e-13), "{term}: row {i} column {c}: {x} vs {y}");
                }
            }
        }
    }
}

#[test]
fn sessions_without_pairs_give_zero() {
    let logistic = PairLoss::Logistic { margin: 0.0 };
    fn run(x: &[f64], y: &[f64], s: &[i64]) -> (f64, Vec<f64>) {
        let logistic = PairLoss::Logistic { margin: 0.0 };
        let w = vec![1.0; x.len()];
        pairwise(
            &logistic,
            1.0,
            1.0,
            Reduction::NonzeroMean,
            x,
            y,
            &w,
            Some(s),
        )
    }
    let x = [0.3, -1.0, 2.0, 0.7, 1.1];
    // Sessions of size 1 only.
    assert_eq!(
        run(&x, &[1.0, 0.0, 2.0, 0.0, 1.0], &[0, 1, 2, 3, 4]),
        (0.0, vec![0.0; 5])
    );
    // Sessions with no positive or no negative: every row of a session has the same label.
    assert_eq!(
        run(&x, &[1.0, 0.0, 1.0, 0.0, 1.0], &[7, 3, 7, 3, 7]),
        (0.0, vec![0.0; 5])
    );
    // Ties in labels make no pair: labels 2, 2, 2, 0 in one session give the pairs (0, 3),
    // (1, 3), (2, 3) only.
    let (l, _) = pairwise(
        &logistic,
        1.0,
        1.0,
        Reduction::Sum,
        &[0.0, 0.0, 0.0, 0.0],
        &[2.0, 2.0, 2.0, 0.0],
        &[1.0; 4],
        Some(&[1, 1, 1, 1][..]),
    );
    assert!(close(l, 3.0 * 2f64.ln(), 1e-15), "{l}");
    // Ties in logits still make a pair: d = 0, l = ln 2, dl/dd = −1/2.
    let (l, g) = run(&[0.5, 0.5], &[1.0, 0.0], &[4, 4]);
    assert!(close(l, 2f64.ln(), 1e-15));
    assert_eq!(g, vec![-0.5, 0.5]);
    // Only one of the sessions has pairs: rows 0 and 3 (session 9), nonzero_mean over 1 pair;
    // session 3 is row 1 alone, session 7 rows 2 and 4 with the same label.
    let (l, g) = run(&x, &[1.0, 0.0, 1.0, 0.0, 1.0], &[9, 3, 7, 9, 7]);
    let want = super::binary::softplus(-(0.3 - 0.7));
    assert!(close(l, want, 1e-15), "{l}");
    assert_eq!((g[1], g[2], g[4]), (0.0, 0.0, 0.0));
    // Empty batch.
    assert_eq!(run(&[], &[], &[]), (0.0, vec![]));
}

#[test]
fn ohem_over_pairs() {
    let logistic = PairLoss::Logistic { margin: 0.0 };
    // Ties at the cut across sessions: row 0 (session 1, y = 1), row 1 (session 0, y = 1),
    // row 2 (session 1, y = 0), row 3 (session 0, y = 0), all logits 0. The pairs (0, 2) and
    // (1, 3) both have v = ln 2; k = round(2·0.5) = 1 keeps the lower pair index, (0, 2)
    // (0·4 + 2 = 2 < 1·4 + 3 = 7), even though session 0 sorts first.
    let (l, g) = pairwise(
        &logistic,
        1.0,
        0.5,
        Reduction::NonzeroMean,
        &[0.0; 4],
        &[1.0, 1.0, 0.0, 0.0],
        &[1.0; 4],
        Some(&[1, 0, 1, 0][..]),
    );
    assert!(close(l, 2f64.ln(), 1e-15));
    assert_eq!(g, vec![-0.5, 0.0, 0.5, 0.0]);

    // k = round(P·r): x = [3, 2, 1, 0], y = [3, 2, 1, 0], sum of v over the pairs by d:
    // d = 1 (three pairs), 2 (two), 3 (one); v = softplus(−d) is largest for the smallest d.
    let x = [3.0, 2.0, 1.0, 0.0];
    let y = [3.0, 2.0, 1.0, 0.0];
    let sp = |d: f64| super::binary::softplus(-d);
    for (ratio, k) in [
        (0.5, 3),
        (0.4, 2),
        (0.25, 2),
        (0.2, 1),
        (0.01, 1),
        (0.99, 6),
    ] {
        let (l, g) = pairwise(
            &logistic,
            1.0,
            ratio,
            Reduction::Sum,
            &x,
            &y,
            &[1.0; 4],
            None,
        );
        // The kept values, largest first: 3 × sp(1), 2 × sp(2), sp(3).
        let values = [sp(1.0), sp(1.0), sp(1.0), sp(2.0), sp(2.0), sp(3.0)];
        let want = values[..k].iter().sum::<f64>() / k as f64;
        assert!(close(l, want, 1e-15), "ratio {ratio}: {l} vs {want}");
        assert!(g.iter().sum::<f64>().abs() < 1e-15);
    }
    // round(6·0.25) = round(1.5) = 2 (half away from zero): the two kept d = 1 pairs are the
    // lowest pair indices among the three ties: (0, 1) and (1, 2), not (2, 3).
    let (_, g) = pairwise(
        &logistic,
        1.0,
        0.25,
        Reduction::NonzeroMean,
        &x,
        &y,
        &[1.0; 4],
        None,
    );
    let s = super::binary::sigmoid(-1.0) / 2.0;
    assert_eq!(g, vec![-s, 0.0, s, 0.0]);
}

#[test]
fn ohem_over_pairs_drops_what_is_not_positive() {
    let logistic = PairLoss::Logistic { margin: 0.0 };
    // Kept values ≤ 0 are dropped: hinge pairs already satisfied have v = 0, and so do pairs
    // of zero weight. Hinge margin 1 on x = [3, 0, 0.5], y = [1, 0, 0]: (0, 1) d = 3 → 0,
    // (0, 2) d = 2.5 → 0; P = 2, k = 2, both dropped.
    let hinge = PairLoss::Hinge {
        margin: 1.0,
        use_label_margin: false,
        label_is_logits: true,
        use_exponent: false,
    };
    let (l, g) = pairwise(
        &hinge,
        1.0,
        0.9,
        Reduction::NonzeroMean,
        &[3.0, 0.0, 0.5],
        &[1.0, 0.0, 0.0],
        &[1.0; 3],
        None,
    );
    assert_eq!((l, g), (0.0, vec![0.0; 3]));
    // x = [0.5, 0, 3], y = [1, 0, 0]: (0, 1) v = 0.5, (0, 2) v = 3.5; k = round(2·0.9) = 2, both
    // kept: mean 2. With y = [1, 0, 1]: (0, 1) v = 0.5 and (2, 1) v = 0 (x_2 − x_1 = 3): k = 2,
    // the zero is dropped, mean of one pair: 0.5.
    let (l, _) = pairwise(
        &hinge,
        1.0,
        0.9,
        Reduction::NonzeroMean,
        &[0.5, 0.0, 3.0],
        &[1.0, 0.0, 0.0],
        &[1.0; 3],
        None,
    );
    assert_eq!(l, 2.0);
    let (l, g) = pairwise(
        &hinge,
        1.0,
        0.9,
        Reduction::NonzeroMean,
        &[0.5, 0.0, 3.0],
        &[1.0, 0.0, 1.0],
        &[1.0; 3],
        None,
    );
    assert_eq!(l, 0.5);
    assert_eq!(g, vec![-1.0, 1.0, 0.0]);
    // Zero-weight pairs: weights [0, 1, 2] on the same rows make every pair weigh 0 or come from
    // row 2 (w = 2, v = 0): nothing is left.
    let (l, _) = pairwise(
        &hinge,
        1.0,
        0.9,
        Reduction::NonzeroMean,
        &[0.5, 0.0, 3.0],
        &[1.0, 0.0, 1.0],
        &[0.0, 1.0, 2.0],
        None,
    );
    assert_eq!(l, 0.0);
    // P = 0: no pairs at all.
    let (l, g) = pairwise(
        &logistic,
        1.0,
        0.5,
        Reduction::NonzeroMean,
        &[1.0, 2.0],
        &[1.0, 1.0],
        &[1.0; 2],
        None,
    );
    assert_eq!((l, g), (0.0, vec![0.0; 2]));
    // The kept pairs' factor is pw / count: weights [2, 1, 1, 1] on the first example keep
    // (0, 2) with v = 2·ln 2, L = 2 ln 2 and dL/dx_0 = 2·(−1/2).
    let (l, g) = pairwise(
        &logistic,
        1.0,
        0.5,
        Reduction::NonzeroMean,
        &[0.0; 4],
        &[1.0, 1.0, 0.0, 0.0],
        &[2.0, 1.0, 1.0, 1.0],
        Some(&[1, 0, 1, 0][..]),
    );
    assert!(close(l, 2.0 * 2f64.ln(), 1e-15));
    assert_eq!(g, vec![-1.0, 0.0, 1.0, 0.0]);
    // The reduction is ignored under OHEM.
    let batch = pair_batch(23);
    let base = "[[losses]]\nloss_type = \"pairwise_focal_loss\"\nlogits = \"x\"\nlabels = \"g\"\n\
                session = \"s\"\nohem_ratio = 0.3\nsample_weights = \"w\"\n";
    let totals: Vec<f64> = REDUCTIONS
        .iter()
        .map(|r| {
            let config = parse(&format!("{base}{r}\n"));
            Reference::new(&config).unwrap().step(&batch).unwrap().total
        })
        .collect();
    assert!(totals.iter().all(|t| *t == totals[0]), "{totals:?}");
}

/// The four losses' configurations for the large batches.
fn large_losses() -> [PairLoss; 4] {
    [
        PairLoss::Logistic { margin: 0.1 },
        PairLoss::LogisticMargin {
            hinge_margin: Some(0.2),
            use_label_margin: true,
        },
        PairLoss::Focal {
            gamma: 2.0,
            alpha: Some(0.25),
            hinge_margin: Some(1.0),
        },
        PairLoss::Hinge {
            margin: 1.0,
            use_label_margin: true,
            label_is_logits: true,
            use_exponent: false,
        },
    ]
}

/// Σ_i dL/dx_i = 0: every pair adds +g to x_i and −g to x_j.
fn assert_balanced(g: &[f64], what: &str) {
    let sum: f64 = g.iter().sum();
    let size: f64 = g.iter().map(|v| v.abs()).sum();
    assert!(size > 0.0, "{what}: zero gradient");
    assert!(
        sum.abs() <= 1e-12 * size,
        "{what}: Σ grad = {sum} (Σ|g| = {size})"
    );
}

#[test]
fn large_batches_run() {
    let mut r = SplitMix(24);
    // 10 000 rows in one session: the same as no session at all (one group either way).
    let rows = 10_000;
    let x = r.reals(rows, -3.0, 3.0);
    let y: Vec<f64> = (0..rows).map(|_| r.below(4) as f64).collect();
    let w = r.reals(rows, 0.0, 2.0);
    let session = vec![42i64; rows];
    for loss in large_losses() {
        let (l, g) = pairwise(
            &loss,
            0.8,
            1.0,
            Reduction::NonzeroMean,
            &x,
            &y,
            &w,
            Some(&session),
        );
        assert!(l.is_finite() && l > 0.0, "{loss:?}: {l}");
        assert!(g.iter().all(|v| v.is_finite()));
        assert_balanced(&g, &format!("{loss:?}, one session"));
        let (l2, g2) = pairwise(&loss, 0.8, 1.0, Reduction::NonzeroMean, &x, &y, &w, None);
        assert_eq!((l, &g), (l2, &g2), "{loss:?}");
    }
    // B = 4096 without session, every pair of the batch; OHEM over them on one loss.
    let rows = 4096;
    let x = r.reals(rows, -3.0, 3.0);
    let y: Vec<f64> = (0..rows).map(|_| r.below(4) as f64).collect();
    let w = r.reals(rows, 0.0, 2.0);
    for loss in large_losses() {
        let (l, g) = pairwise(&loss, 1.0, 1.0, Reduction::Mean, &x, &y, &w, None);
        assert!(l.is_finite() && l > 0.0, "{loss:?}: {l}");
        assert_balanced(&g, &format!("{loss:?}, no session"));
    }
    let (l, g) = pairwise(
        &large_losses()[0],
        1.0,
        0.1,
        Reduction::Mean,
        &x,
        &y,
        &w,
        None,
    );
    assert!(l.is_finite() && l > 0.0);
    assert_balanced(&g, "OHEM, no session");
}

#[test]
fn pairwise_errors_name_the_tensor_and_the_term() {
    let batch = pair_batch(25);
    let term = "[[losses]]\nname = \"rank\"\nloss_type = \"pairwise_hinge_loss\"\nlogits = \"x\"\n\
                labels = \"g\"\nsession = \"s\"\n";
    // Real session ids are refused.
    let mut b = batch.clone();
    b.insert("s".into(), HostTensor::real([PB], vec![1.0; PB]));
    assert_mentions(
        &error_of(term, &b),
        &["'s'", "'rank'", "session ids", "reals"],
    );
    // Session ids with the wrong number of rows.
    let mut b = batch.clone();
    b.insert("s".into(), HostTensor::int([5], vec![1; 5]));
    assert_mentions(&error_of(term, &b), &["'s'", "'rank'", "[12]", "[5]"]);
    // Non-finite logits and labels.
    let mut b = batch.clone();
    let mut x = reals(&batch, "x");
    x[4] = f64::NAN;
    b.insert("x".into(), HostTensor::real([PB], x));
    assert_mentions(&error_of(term, &b), &["'x'", "'rank'", "finite", "4"]);
    let mut b = batch.clone();
    let mut g = reals(&batch, "g");
    g[2] = f64::INFINITY;
    b.insert("g".into(), HostTensor::real([PB], g));
    assert_mentions(&error_of(term, &b), &["'g'", "'rank'", "finite"]);
    // [B, 2] logits are not a column.
    let on_z = term.replace("\"x\"", "\"zj\"");
    assert_mentions(&error_of(&on_z, &batch), &["'zj'", "'rank'", "[12, 2]"]);
    // A missing session tensor.
    let mut b = batch.clone();
    b.remove("s");
    assert_mentions(
        &error_of(term, &b),
        &["'s'", "'rank'", "missing", "session"],
    );
}

// ---------------------------------------------------------------------------------------------
// jrc_loss

#[test]
fn jrc_by_hand() {
    // One session of three rows: y = [1, 1, 0], z = [(0, 2), (0, 0), (1, 1)].
    let z = [0.0, 2.0, 0.0, 0.0, 1.0, 1.0];
    let y = [1.0, 1.0, 0.0];
    let s = [3, 3, 3];
    let w = [1.0; 3];
    // ce: lse(0, 2) − 2, lse(0, 0) − 0, lse(1, 1) − 1 = 0.1269280110429727, ln 2, ln 2 …
    // (the third row's label is 0: lse(1, 1) − z_{2,0} = ln 2 + 1 − 1).
    let ce_rows = [(1.0 + 2f64.exp()).ln() - 2.0, 2f64.ln(), 2f64.ln()];
    let ce = ce_rows.iter().sum::<f64>() / 3.0;
    // same_label_loss: column 1 over the session, lse(2, 0, 1) = 2.40760596444438:
    // L_0 = lse − 2, L_1 = lse − 0; column 0, lse(0, 0, 1) = ln(2 + e): L_2 = ln(2 + e) − 1.
    let lse1 = (2f64.exp() + 1.0 + 1f64.exp()).ln();
    let lse0 = (2.0 + 1f64.exp()).ln();
    let same = (lse1 - 2.0 + lse1 + lse0 - 1.0) / 3.0;
    assert!(close(same, 1.1222188809402704, 1e-14));
    let p = jrc(&z, &y, &s, &w, Reduction::NonzeroMean, true);
    assert!(close(p.ce, ce, 1e-14), "{} vs {ce}", p.ce);
    assert!(close(p.ge, same, 1e-15), "{} vs {same}", p.ge);
    // d ge/d z_{j,1} = (−[y_j = 1] + 2·softmax(2, 0, 1)_j)/3.
    let e1 = |v: f64| (v - lse1).exp();
    let want = [
        (-1.0 + 2.0 * e1(2.0)) / 3.0,
        (-1.0 + 2.0 * e1(0.0)) / 3.0,
        2.0 * e1(1.0) / 3.0,
    ];
    for (j, want) in want.into_iter().enumerate() {
        assert!(close(p.grad_ge[2 * j + 1], want, 1e-15), "{:?}", p.grad_ge);
    }
    // d ce/d z: (softmax − one-hot)/3.
    assert!(close(p.grad_ce[0], (1.0 / (1.0 + 2f64.exp())) / 3.0, 1e-15));

    // Without same_label_loss each row meets only the other label, in the column of its own:
    // L_0 = lse(2, 1) − 2 = softplus(−1), L_1 = lse(0, 1) − 0 = softplus(1),
    // L_2 = lse(1, 0, 0) − 1 = ln(e + 2) − 1.
    let p = jrc(&z, &y, &s, &w, Reduction::NonzeroMean, false);
    assert!(close(p.ge, 0.7259893629894988, 1e-14), "{}", p.ge);
    // The negative row 2 gets gradient in column 1 from both positives:
    // (e^{1 − lse(2, 1)} + e^{1 − lse(0, 1)})/3 = (σ(−1) + σ(1))/3 = 1/3.
    assert!(close(p.grad_ge[5], 1.0 / 3.0, 1e-15), "{:?}", p.grad_ge);
    // Row 0, column 1: softmax weight − 1 = σ(1) − 1; rows 0 and 1, column 0: 1/(e + 2) each
    // from L_2; row 2, column 0: e/(e + 2) − 1.
    let s1 = super::binary::sigmoid(1.0);
    let e = 1f64.exp();
    let want = [
        1.0 / (e + 2.0),
        s1 - 1.0,
        1.0 / (e + 2.0),
        super::binary::sigmoid(-1.0) - 1.0,
        e / (e + 2.0) - 1.0,
        1.0,
    ];
    for (a, b) in p.grad_ge.iter().zip(want) {
        assert!(close(*a, b / 3.0, 1e-15), "{:?}", p.grad_ge);
    }

    // Through a step: fixed α = 0.25 gives 0.25·ce + 0.75·ge.
    let config = parse(
        "[[losses]]\nloss_type = \"jrc_loss\"\nlogits = \"z\"\nlabels = \"y\"\nsession = \"s\"\n\
         alpha = 0.25\n",
    );
    let mut batch = HostBatch::new();
    batch.insert("z".into(), HostTensor::real([3, 2], z.to_vec()));
    batch.insert("y".into(), HostTensor::real([3], y.to_vec()));
    batch.insert("s".into(), HostTensor::int([3], s.to_vec()));
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    assert!(close(out.total, 0.25 * ce + 0.75 * same, 1e-15));

    // Two sessions; a session with one label only contributes ge = 0 without same_label_loss,
    // and lse over itself with it (a single row: L = 0).
    let z = [0.0, 2.0, 0.0, 0.0, 1.0, 1.0, 0.5, -0.5];
    let y = [1.0, 1.0, 0.0, 1.0];
    let s = [3, 3, 3, 8];
    let p = jrc(&z, &y, &s, &[1.0; 4], Reduction::Sum, true);
    assert!(close(p.ge, same * 3.0 / 4.0, 1e-15), "{}", p.ge);
    assert_eq!((p.grad_ge[6], p.grad_ge[7]), (0.0, 0.0));
    let p = jrc(&z, &y, &s, &[1.0; 4], Reduction::Sum, false);
    assert!(close(p.ge, 0.7259893629894988 * 3.0 / 4.0, 1e-14));
}

const JRC: &str = "[[losses]]\nname = \"jrc\"\nloss_type = \"jrc_loss\"\nlogits = \"zj\"\n\
                   labels = \"yb\"\nsession = \"s\"\n";

/// d total/d(u1, u2) of every term against central differences from `state`.
fn check_jrc_u(config: &LossConfig, batch: &HostBatch, state: &ReferenceState) -> ReferenceOutput {
    let mut reference = Reference::new(config).unwrap();
    reference.set_state(state.clone());
    let out = reference.clone().step(batch).unwrap();
    assert_eq!(out.jrc_u_grads.len(), config.losses.len());
    for k in 0..config.losses.len() {
        for m in 0..2 {
            let h = 1e-6;
            let total = |delta: f64| {
                let mut s = state.clone();
                s.jrc[k].u[m] += delta;
                let mut r = reference.clone();
                r.set_state(s);
                r.step(batch).unwrap().total
            };
            let numeric = (total(h) - total(-h)) / (2.0 * h);
            assert_close(
                out.jrc_u_grads[k][m],
                numeric,
                &format!("d total/d u{}[{k}]", m + 1),
            );
        }
    }
    out
}

#[test]
fn jrc_gradients_match_finite_differences() {
    let batch = pair_batch(26);
    let mut n = 0;
    for same in ["", "same_label_loss = false"] {
        for (weighting, u) in [
            ("", [0.0, 0.0]),
            ("alpha = 0.3", [0.0, 0.0]),
            ("loss_weight_strategy = \"uncertainty\"", [0.3, -0.4]),
        ] {
            for reduction in REDUCTIONS {
                for weights in WEIGHTS {
                    n += 1;
                    let config = parse(&format!(
                        "{JRC}{same}\n{weighting}\n{reduction}\n{weights}\n"
                    ));
                    let mut state = ReferenceState::initial(&config);
                    state.jrc[0].u = u;
                    let out = check(&config, &batch, Some(state.clone()));
                    let du = check_jrc_u(&config, &batch, &state);
                    if u == [0.0, 0.0] {
                        assert_eq!(du.jrc_u_grads, vec![[0.0, 0.0]]);
                    } else {
                        assert!(du.jrc_u_grads[0].iter().all(|g| g.abs() > 1e-3));
                    }
                    assert_eq!(out.total, du.total);
                }
            }
        }
    }
    assert_eq!(n, 2 * 3 * 5 * 3);
}

#[test]
fn jrc_u_gradient_carries_the_term_weight_and_the_flooding_sign() {
    let batch = pair_batch(27);
    // Outer uncertainty weight e^{−s} on the JRC term, a second term, and a flood level above the
    // total (sign −1).
    let config = parse(&format!(
        "loss_weight_strategy = \"uncertainty\"\nflooding = 50.0\n{JRC}\
         loss_weight_strategy = \"uncertainty\"\nlearn_loss_weight = true\n\
         same_label_loss = false\n\
         [[losses]]\nname = \"rank\"\nloss_type = \"pair_wise_loss\"\nlogits = \"x\"\n\
         labels = \"g\"\nsession = \"s\"\nweight = 0.5\n"
    ));
    let mut state = ReferenceState::initial(&config);
    state.log_vars[0] = 0.4;
    state.jrc[0].u = [-0.2, 0.7];
    let out = check(&config, &batch, Some(state.clone()));
    let du = check_jrc_u(&config, &batch, &state);
    assert!(out.total > 50.0, "flooded: {}", out.total);
    assert_eq!(du.jrc_u_grads[1], [0.0, 0.0]);
    // By hand: −e^{−s}·(−e^{−u1}·ce + 0.5), with ce from the parts.
    let z = reals(&batch, "zj");
    let y = reals(&batch, "yb");
    let p = jrc(&z, &y, &SESSIONS, &[1.0; PB], Reduction::NonzeroMean, false);
    let e = (-0.4f64).exp();
    let want = [
        -e * (-(0.2f64).exp() * p.ce + 0.5),
        -e * (-(-0.7f64).exp() * p.ge + 0.5),
    ];
    for (got, want) in du.jrc_u_grads[0].into_iter().zip(want) {
        assert!(close(got, want, 1e-14), "{:?}", du.jrc_u_grads);
    }
}

#[test]
fn jrc_uncertainty_optimisers_over_three_steps() {
    let batch = pair_batch(28);
    let z = reals(&batch, "zj");
    let y = reals(&batch, "yb");
    let w = reals(&batch, "w");
    let parts = jrc(&z, &y, &SESSIONS, &w, Reduction::NonzeroMean, true);
    let weighted = format!("{JRC}loss_weight_strategy = \"uncertainty\"\nsample_weights = \"w\"\n");

    // SGD: u ← u − lr·(−e^{−u}·part + 0.5), term weight 2.
    let config = parse(&format!(
        "{weighted}weight = 2.0\nuncertainty = {{ optimizer = \"sgd\", learning_rate = 0.1 }}\n"
    ));
    let mut reference = Reference::new(&config).unwrap();
    let mut u = [0.0f64; 2];
    for _ in 0..3 {
        let out = reference.step(&batch).unwrap();
        let want_l = (-u[0]).exp() * parts.ce + 0.5 * u[0] + (-u[1]).exp() * parts.ge + 0.5 * u[1];
        assert!(close(out.values[0].1, want_l, 1e-14), "{out:?}");
        let g = [
            2.0 * (-(-u[0]).exp() * parts.ce + 0.5),
            2.0 * (-(-u[1]).exp() * parts.ge + 0.5),
        ];
        for m in 0..2 {
            assert!(close(out.jrc_u_grads[0][m], g[m], 1e-14));
            u[m] -= 0.1 * g[m];
        }
        let state = reference.state();
        for m in 0..2 {
            assert!(
                close(state.jrc[0].u[m], u[m], 1e-14),
                "{:?} vs {u:?}",
                state.jrc
            );
        }
        assert_eq!(state.jrc[0].t, 0);
    }
    assert!(u.iter().all(|v| v.abs() > 1e-3), "u moved: {u:?}");

    // Adam with the term's own step counter.
    let config = parse(&format!(
        "{weighted}uncertainty = {{ optimizer = \"adam\", learning_rate = 0.05, beta1 = 0.9, \
         beta2 = 0.99, epsilon = 1e-8 }}\n"
    ));
    let mut reference = Reference::new(&config).unwrap();
    let (mut m, mut v, mut u) = ([0.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
    for t in 1..=3 {
        let out = reference.step(&batch).unwrap();
        let g = [
            -(-u[0]).exp() * parts.ce + 0.5,
            -(-u[1]).exp() * parts.ge + 0.5,
        ];
        for k in 0..2 {
            assert!(close(out.jrc_u_grads[0][k], g[k], 1e-14));
            m[k] = 0.9 * m[k] + 0.1 * g[k];
            v[k] = 0.99 * v[k] + 0.01 * g[k] * g[k];
            let m_hat = m[k] / (1.0 - 0.9f64.powi(t));
            let v_hat = v[k] / (1.0 - 0.99f64.powi(t));
            u[k] -= 0.05 * m_hat / (v_hat.sqrt() + 1e-8);
        }
        let state = reference.state();
        assert_eq!(state.jrc[0].t, t as u64);
        assert_eq!(
            state.adam_t, 0,
            "the strategy's Adam counter is not the term's"
        );
        for k in 0..2 {
            assert!(
                close(state.jrc[0].u[k], u[k], 1e-14),
                "{:?} vs {u:?}",
                state.jrc
            );
            assert!(close(state.jrc[0].m[k], m[k], 1e-14));
            assert!(close(state.jrc[0].v[k], v[k], 1e-14));
        }
        if t == 1 {
            // The first Adam step moves each u by about lr against the sign of its gradient.
            for k in 0..2 {
                assert!((u[k] + 0.05 * g[k].signum()).abs() < 1e-6);
            }
        }
    }

    // Optimizer none: u stays at 0, d/du is still reported.
    let config = parse(&weighted);
    let mut reference = Reference::new(&config).unwrap();
    let out = reference.step(&batch).unwrap();
    reference.step(&batch).unwrap();
    assert_eq!(reference.state().jrc[0], JrcState::default());
    assert!(close(out.jrc_u_grads[0][0], -parts.ce + 0.5, 1e-14));

    // Fixed weighting never touches the JRC state.
    let config = parse(&format!("{JRC}alpha = 0.7\n"));
    let mut reference = Reference::new(&config).unwrap();
    let out = reference.step(&batch).unwrap();
    assert_eq!(out.jrc_u_grads, vec![[0.0, 0.0]]);
    assert_eq!(reference.state().jrc[0], JrcState::default());
}

#[test]
fn a_failed_jrc_step_leaves_the_state_unchanged() {
    let batch = pair_batch(29);
    let config = parse(&format!(
        "{JRC}loss_weight_strategy = \"uncertainty\"\n\
         uncertainty = {{ optimizer = \"adam\", learning_rate = 0.1 }}\n"
    ));
    let mut reference = Reference::new(&config).unwrap();
    reference.step(&batch).unwrap();
    let after_one = reference.state().clone();
    assert_eq!(after_one.jrc[0].t, 1);
    assert_ne!(after_one.jrc[0].u, [0.0, 0.0]);

    let mut bad = batch.clone();
    let mut yb = reals(&batch, "yb");
    yb[3] = 0.5;
    bad.insert("yb".into(), HostTensor::real([PB], yb));
    let e = reference.step(&bad).unwrap_err();
    assert_mentions(&e.to_string(), &["'yb'", "'jrc'", "row 3", "0.5", "0 or 1"]);
    assert_eq!(reference.state(), &after_one);

    reference.step(&batch).unwrap();
    assert_eq!(reference.state().jrc[0].t, 2);

    // A state without the per-term JRC entries is refused.
    let mut s = reference.state().clone();
    s.jrc.clear();
    reference.set_state(s);
    assert!(matches!(reference.step(&batch), Err(Error::State(_))));
}

#[test]
fn jrc_errors_name_the_tensor_and_the_term() {
    let batch = pair_batch(30);
    // Logits must be [B, 2].
    let on_x = JRC.replace("\"zj\"", "\"x\"");
    assert_mentions(
        &error_of(&on_x, &batch),
        &["'x'", "'jrc'", "[B, 2]", "[12]"],
    );
    let mut b = batch.clone();
    b.insert("zj".into(), HostTensor::real([4, 6], vec![0.0; 24]));
    assert_mentions(&error_of(JRC, &b), &["'zj'", "'jrc'", "[B, 2]", "[4, 6]"]);
    // Labels with the wrong number of rows, graded labels, non-finite logits.
    let mut b = batch.clone();
    b.insert("yb".into(), HostTensor::real([5], vec![0.0; 5]));
    assert_mentions(&error_of(JRC, &b), &["'yb'", "'jrc'", "[12]", "[5]"]);
    let on_g = JRC.replace("\"yb\"", "\"g\"");
    assert_mentions(
        &error_of(&on_g, &batch),
        &["'g'", "'jrc'", "0 or 1", "row 0"],
    );
    let mut b = batch.clone();
    let mut z = reals(&batch, "zj");
    z[5] = f64::NEG_INFINITY;
    b.insert("zj".into(), HostTensor::real([PB, 2], z));
    assert_mentions(&error_of(JRC, &b), &["'zj'", "'jrc'", "finite"]);
    // Session ids: required, integers.
    let mut b = batch.clone();
    b.remove("s");
    assert_mentions(&error_of(JRC, &b), &["'s'", "'jrc'", "missing"]);
    let mut b = batch.clone();
    b.insert("s".into(), HostTensor::real([PB], vec![0.0; PB]));
    assert_mentions(&error_of(JRC, &b), &["'s'", "'jrc'", "session ids"]);
}
