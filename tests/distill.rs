//! The distillation terms (docs/LOSSES.md §10) on every adapter against the f64 reference: one
//! column (fused row group) and [B, C] (softmax group, shared with cross-entropy on the same
//! logits), every flag, T ≠ 1, sample weights, and inputs where Keras' clip at 1e-7 holds.

mod common;
use common::*;

/// Probabilities with the clip active on some rows: exact 0 and 1, values below 1e-7 and above
/// 1 − 1e-7, the rest uniform.
fn clipped_probs(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|i| match i % 17 {
            0 => 0.0,
            1 => 1.0,
            2 => 3e-9,
            3 => 1.0 - 2e-8,
            _ => rng.range(0.0, 1.0),
        })
        .collect()
}

/// One column: student `x` and teacher `t` logits in ±20 (σ below 1e-7 beyond ±16.1),
/// probabilities `p`, `q`, soft labels `soft`, weights `w`.
fn columns(seed: u64, b: usize) -> Inputs {
    let mut rng = Rng::new(seed);
    let x = reals(&mut rng, b, -20.0, 20.0);
    let t = reals(&mut rng, b, -20.0, 20.0);
    let p = clipped_probs(&mut rng, b);
    let q = clipped_probs(&mut rng, b);
    let soft = reals(&mut rng, b, 0.0, 1.0);
    let y = binary(&mut rng, b, 0.3);
    let w = sample_weights(&mut rng, b);
    Inputs::new()
        .real("x", &[b], x)
        .real("t", &[b, 1], t)
        .real("p", &[b], p)
        .real("q", &[b], q)
        .real("soft", &[b], soft)
        .real("y", &[b], y)
        .real("w", &[b], w)
}

/// [b, c]: student `z` and teacher `tz` logits in ±scale, probability rows `pz`, `qz` (some
/// entries 0), class ids `k`, weights `w`.
fn classes(seed: u64, b: usize, c: usize, scale: f64) -> Inputs {
    let mut rng = Rng::new(seed);
    let z = reals(&mut rng, b * c, -scale, scale);
    let tz = reals(&mut rng, b * c, -scale, scale);
    let probs = |rng: &mut Rng| -> Vec<f64> {
        (0..b)
            .flat_map(|_| {
                let row: Vec<f64> = (0..c)
                    .map(|_| {
                        if rng.unit() < 0.1 {
                            0.0
                        } else {
                            rng.unit().powi(3)
                        }
                    })
                    .collect();
                let s: f64 = row.iter().sum::<f64>().max(1e-30);
                row.into_iter().map(move |v| v / s)
            })
            .collect()
    };
    let pz = probs(&mut rng);
    let qz = probs(&mut rng);
    let k: Vec<i64> = (0..b).map(|_| (rng.unit() * c as f64) as i64).collect();
    let w = sample_weights(&mut rng, b);
    Inputs::new()
        .real("z", &[b, c], z)
        .real("tz", &[b, c], tz)
        .real("pz", &[b, c], pz)
        .real("qz", &[b, c], qz)
        .ids("k", &[b], k)
        .real("w", &[b], w)
}

fn term(body: &str) -> String {
    format!("[[losses]]\n{body}\n")
}

const FLAGS: [(&str, &str, &str); 4] = [
    ("x", "t", ""),
    ("p", "t", "pred_is_logits = false"),
    ("x", "q", "label_is_logits = false"),
    ("p", "q", "pred_is_logits = false\nlabel_is_logits = false"),
];

#[test]
fn kd_one_column_every_flag() {
    let b = columns(1, 1500);
    for lt in ["kl_divergence_loss", "binary_cross_entropy_loss"] {
        for (x, y, flags) in FLAGS {
            // Without a teacher key binary_cross_entropy_loss is the plain loss on targets.
            let flags = match (lt, flags) {
                ("binary_cross_entropy_loss", "") => "label_is_logits = true",
                _ => flags,
            };
            for t in ["", "temperature = 2.5"] {
                let body =
                    format!("loss_type = '{lt}'\nlogits = '{x}'\nlabels = '{y}'\n{flags}\n{t}");
                check_all(&term(&body), &b, 1, TOL);
            }
        }
    }
    for t in ["", "temperature = 0.5"] {
        let body = format!("loss_type = 'l2_distill_loss'\nlogits = 'x'\nlabels = 't'\n{t}");
        check_all(&term(&body), &b, 1, TOL);
    }
    let plain = "loss_type = 'binary_cross_entropy_loss'\nlogits = 'x'\nlabels = 'soft'";
    check_all(&term(plain), &b, 1, TOL);
}

#[test]
fn kd_one_column_weights_and_fusion() {
    let b = columns(2, 1000);
    for lt in [
        "kl_divergence_loss",
        "l2_distill_loss",
        "binary_cross_entropy_loss",
    ] {
        let body = format!(
            "loss_type = '{lt}'\nlogits = 'x'\nlabels = 't'\ntemperature = 2.0\nsample_weights = 'w'"
        );
        check_all(&term(&body), &b, 1, TOL);
    }
    // A trainer's step: CE on the hard label, KD terms and the plain BCE on the same logits, one
    // fused row group.
    let config = "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'kl_divergence_loss'\nlogits = 'x'\nlabels = 't'\ntemperature = 2.0\nweight = 0.5\n\
         [[losses]]\nloss_type = 'l2_distill_loss'\nlogits = 'x'\nlabels = 't'\n\
         [[losses]]\nloss_type = 'binary_cross_entropy_loss'\nlogits = 'x'\nlabels = 'soft'\nweight = 2.0\n";
    check_all(config, &b, 1, TOL);
}

#[test]
fn kd_classes_every_flag() {
    // ±12: a row spans up to 24, so some classes are below 1e-7 at T = 1.
    let b = classes(3, 300, 37, 12.0);
    for (x, y, flags) in [
        ("z", "tz", ""),
        ("pz", "tz", "pred_is_logits = false"),
        ("z", "qz", "label_is_logits = false"),
        (
            "pz",
            "qz",
            "pred_is_logits = false\nlabel_is_logits = false",
        ),
    ] {
        for t in ["", "temperature = 2.5"] {
            let body = format!(
                "loss_type = 'kl_divergence_loss'\nlogits = '{x}'\nlabels = '{y}'\n{flags}\n{t}"
            );
            check_all(&term(&body), &b, 1, TOL);
        }
    }
    for t in ["", "temperature = 3.0\nsample_weights = 'w'"] {
        let body = format!("loss_type = 'l2_distill_loss'\nlogits = 'z'\nlabels = 'tz'\n{t}");
        check_all(&term(&body), &b, 1, TOL);
    }
    let body =
        "loss_type = 'binary_cross_entropy_loss'\nlogits = 'z'\nlabels = 'tz'\ntemperature = 2.0";
    check_all(&term(body), &b, 1, TOL);
}

#[test]
fn kd_classes_share_the_softmax_group() {
    // CE on the hard label at T = 1, KL at T = 2 with sample weights and L2 on the same logits:
    // one forward and one backward pass over them; a wide row (C = 2000) is strided.
    for (seed, b, c) in [(4, 200, 11), (5, 6, 2000)] {
        let inputs = classes(seed, b, c, 8.0);
        let config = "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\n\
             [[losses]]\nloss_type = 'kl_divergence_loss'\nlogits = 'z'\nlabels = 'tz'\ntemperature = 2.0\nsample_weights = 'w'\nweight = 0.7\n\
             [[losses]]\nloss_type = 'l2_distill_loss'\nlogits = 'z'\nlabels = 'tz'\nweight = 3.0\n";
        check_all(config, &inputs, 1, TOL);
    }
}
