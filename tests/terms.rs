//! Every term on every adapter against the f64 reference, on seeded inputs and edge cases.

mod common;
use common::*;

/// Logits, labels and weights for per-row terms: B rows, logits in ±`scale`, some zero weights.
fn rows(seed: u64, b: usize, scale: f64) -> Inputs {
    let mut rng = Rng::new(seed);
    let x = reals(&mut rng, b, -scale, scale);
    let x2 = reals(&mut rng, b, -scale, scale);
    let y = binary(&mut rng, b, 0.3);
    let y2: Vec<f64> = y
        .iter()
        .map(|&c| {
            if c > 0.0 {
                (rng.unit() < 0.4) as i32 as f64
            } else {
                0.0
            }
        })
        .collect();
    let soft = reals(&mut rng, b, 0.0, 1.0);
    let p = reals(&mut rng, b, 0.01, 0.99);
    let w = sample_weights(&mut rng, b);
    let finish = binary(&mut rng, b, 0.2);
    Inputs::new()
        .real("x", &[b], x)
        .real("x2", &[b], x2)
        .real("y", &[b], y)
        .real("buy", &[b], y2)
        .real("soft", &[b], soft)
        .real("p", &[b], p)
        .real("w", &[b], w)
        .real("finish", &[b], finish)
}

fn term(body: &str) -> String {
    format!("[[losses]]\n{body}\n")
}

#[test]
fn classification_sigmoid() {
    let b = rows(1, 1000, 8.0);
    check_all(
        &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'"),
        &b,
        1,
        TOL,
    );
    check_all(
        &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'soft'\nlabel_smoothing = 0.1"),
        &b,
        1,
        TOL,
    );
    check_all(&term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\npos_weight = 3.0\nsample_weights = 'w'"), &b, 1, TOL);
}

#[test]
fn every_reduction() {
    let b = rows(2, 777, 5.0);
    for r in ["nonzero_mean", "weighted_mean", "mean", "sum"] {
        check_all(
            &term(&format!("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'w'\nreduction = '{r}'")),
            &b,
            1,
            TOL,
        );
    }
}

#[test]
fn regression_and_probability_terms() {
    let b = rows(3, 1000, 4.0);
    check_all(
        &term("loss_type = 'l2_loss'\npredictions = 'x'\nlabels = 'soft'"),
        &b,
        1,
        TOL,
    );
    check_all(
        &term("loss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'soft'\nsample_weights = 'w'"),
        &b,
        1,
        TOL,
    );
    check_all(
        &term("loss_type = 'cross_entropy_loss'\nprobabilities = 'p'\nlabels = 'y'"),
        &b,
        1,
        TOL,
    );
}

#[test]
fn binary_focal() {
    let b = rows(4, 1000, 6.0);
    check_all(&term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngamma = 2.0\nalpha = 0.25"), &b, 1, TOL);
    check_all(
        &term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngamma = 0.0"),
        &b,
        1,
        TOL,
    );
    check_all(
        &term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngamma = 1.5\nlabel_smoothing = 0.1\nsample_weights = 'w'"),
        &b,
        1,
        TOL,
    );
}

#[test]
fn esmm_pair() {
    let b = rows(5, 1000, 5.0);
    check_all(
        &term("loss_type = 'esmm'\nctr_logits = 'x'\ncvr_logits = 'x2'\nctr_labels = 'y'\nctcvr_labels = 'buy'"),
        &b,
        1,
        TOL,
    );
}

#[test]
fn sample_weights_as_a_combination_of_labels() {
    let b = rows(6, 1000, 4.0);
    check_all(
        &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = { y = 1.0, finish = 3.0, buy = 5.0 }\nreduction = 'weighted_mean'"),
        &b,
        1,
        TOL,
    );
}

#[test]
fn fused_terms_on_shared_logits() {
    let b = rows(7, 1500, 6.0);
    check_all(
        "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nalpha = 0.25\n\
         [[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'y'\nweight = 0.5\n\
         [[losses]]\nloss_type = 'esmm'\nctr_logits = 'x'\ncvr_logits = 'x2'\nctr_labels = 'y'\nctcvr_labels = 'buy'\nweight = 2.0\n",
        &b,
        1,
        TOL,
    );
}

#[test]
fn per_row_edge_cases() {
    // |x| up to 80, one row, B not a multiple of the workgroup, all-negative labels, all-zero weights.
    let mut rng = Rng::new(8);
    let b = 300;
    let mut x = reals(&mut rng, b, -80.0, 80.0);
    x[0] = 80.0;
    x[1] = -80.0;
    let y = binary(&mut rng, b, 0.5);
    let big = Inputs::new().real("x", &[b], x).real("y", &[b], y);
    for t in ["classification", "binary_focal_loss", "sigmoid_l2_loss"] {
        check_all(
            &term(&format!("loss_type = '{t}'\nlogits = 'x'\nlabels = 'y'")),
            &big,
            1,
            TOL,
        );
    }
    let one = Inputs::new()
        .real("x", &[1], vec![0.3])
        .real("y", &[1, 1], vec![1.0]);
    check_all(
        &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'"),
        &one,
        1,
        TOL,
    );
    let negatives = Inputs::new()
        .real("x", &[257], reals(&mut rng, 257, -3.0, 3.0))
        .real("y", &[257], vec![0.0; 257]);
    check_all(
        &term("loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nalpha = 0.25"),
        &negatives,
        1,
        TOL,
    );
    let zero_w = negatives.clone().real("w", &[257], vec![0.0; 257]);
    check_all(
        &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'w'"),
        &zero_w,
        1,
        TOL,
    );
    check_all(
        &term("loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'w'\nreduction = 'weighted_mean'"),
        &zero_w,
        1,
        TOL,
    );
}

/// Softmax inputs: logits [B, C] in ±scale, class ids with some `ignore` rows, probability targets.
fn softmax_batch(seed: u64, b: usize, c: usize, scale: f64, ignore: Option<i64>) -> Inputs {
    let mut rng = Rng::new(seed);
    let logits = reals(&mut rng, b * c, -scale, scale);
    let ids: Vec<i64> = (0..b)
        .map(|_| match ignore {
            Some(i) if rng.unit() < 0.1 => i,
            _ => rng.below(c as u64) as i64,
        })
        .collect();
    let mut probs = Vec::with_capacity(b * c);
    for _ in 0..b {
        let row: Vec<f64> = (0..c).map(|_| rng.unit().powi(3)).collect();
        let s: f64 = row.iter().sum();
        probs.extend(row.iter().map(|v| v / s));
    }
    let w: Vec<f64> = (0..b)
        .map(|_| {
            if rng.unit() < 0.1 {
                0.0
            } else {
                rng.range(0.5, 2.0)
            }
        })
        .collect();
    Inputs::new()
        .real("z", &[b, c], logits)
        .ids("k", &[b], ids)
        .real("t", &[b, c], probs)
        .real("w", &[b], w)
}

fn softmax_term(extra: &str) -> String {
    term(&format!(
        "loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\n{extra}"
    ))
}

#[test]
fn softmax_plain_smoothing_temperature() {
    for (seed, b, c) in [
        (10, 300, 2),
        (11, 200, 3),
        (12, 100, 37),
        (13, 40, 1000),
        (14, 9, 5000),
    ] {
        let batch = softmax_batch(seed, b, c, 6.0, None);
        check_all(&softmax_term(""), &batch, 1, TOL);
        check_all(
            &softmax_term("label_smoothing = 0.1\ntemperature = 0.5\nsample_weights = 'w'"),
            &batch,
            1,
            TOL,
        );
    }
}

#[test]
fn softmax_ignore_class_weights_z_loss() {
    let c = 7;
    let batch = softmax_batch(15, 500, c, 5.0, Some(-100));
    check_all(&softmax_term("ignore_index = -100"), &batch, 1, TOL);
    check_all(
        &softmax_term("ignore_index = -100\nclass_weights = [1.0, 2.0, 0.5, 0.0, 1.5, 3.0, 1.0]\nlabel_smoothing = 0.05"),
        &batch,
        1,
        TOL,
    );
    check_all(
        &softmax_term("ignore_index = -100\nz_loss = 1e-3\ntemperature = 2.0"),
        &batch,
        1,
        TOL,
    );
    for r in ["nonzero_mean", "weighted_mean", "mean", "sum"] {
        check_all(
            &softmax_term(&format!("ignore_index = -100\nsample_weights = 'w'\nclass_weights = [1.0, 2.0, 0.5, 0.0, 1.5, 3.0, 1.0]\nreduction = '{r}'")),
            &batch,
            1,
            TOL,
        );
    }
    // Every row ignored: loss 0 and zero gradient (PyTorch gives NaN).
    let all_ignored = softmax_batch(16, 50, c, 5.0, None).ids("k", &[50], vec![-100; 50]);
    check_all(&softmax_term("ignore_index = -100"), &all_ignored, 1, TOL);
}

#[test]
fn softmax_probability_targets() {
    let batch = softmax_batch(17, 300, 11, 4.0, None);
    let t = |extra: &str| {
        term(&format!(
            "loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 't'\n{extra}"
        ))
    };
    check_all(&t(""), &batch, 1, TOL);
    check_all(
        &t("label_smoothing = 0.2\nclass_weights = [1.0, 2.0, 0.5, 0.1, 1.5, 3.0, 1.0, 1.0, 1.0, 2.0, 1.0]\nz_loss = 1e-2\nsample_weights = 'w'"),
        &batch,
        1,
        TOL,
    );
}

#[test]
fn classification_with_many_classes_is_softmax() {
    let batch = softmax_batch(18, 100, 10, 4.0, None);
    check_all(
        &term("loss_type = 'classification'\nlogits = 'z'\nlabels = 'k'\nlabel_smoothing = 0.1"),
        &batch,
        1,
        TOL,
    );
}

#[test]
fn softmax_row_wider_than_a_workgroup() {
    // C = 262,144: each of the 256 invocations of a row strides over 1,024 classes.
    let batch = softmax_batch(19, 3, 262_144, 10.0, None);
    check_all(&softmax_term("label_smoothing = 0.1"), &batch, 1, TOL);
}

#[test]
fn softmax_extreme_logits() {
    let batch = softmax_batch(20, 64, 50, 80.0, None);
    check_all(&softmax_term(""), &batch, 1, TOL);
    check_all(&softmax_term("temperature = 0.25"), &batch, 1, TOL);
}
