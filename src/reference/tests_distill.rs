//! The distillation terms' reference (docs/LOSSES.md §10): hand-computed values, the clip, the
//! plain BCE against sigmoid CE, the errors, and the student's gradient of the whole step
//! against central finite differences for every loss type, flag combination, shape (C = 1 as
//! [B] and [B, 1], C > 1), temperature, sample weighting and reduction, with the clip active on
//! some rows.

use super::distill::{bce_teacher, distill_row, kl_binary, l2_binary, EPS};
use super::tests::{check, parse, SplitMix, REDUCTIONS, WEIGHTS};
use super::*;
use crate::config::Reduction;
use crate::losses::distill::params::{DistillKind, Teacher};
use crate::tensor::HostTensor;

const B: usize = 6;
const C: usize = 4;

fn close(a: f64, b: f64, tol: f64) -> bool {
    (a - b).abs() <= tol * (1.0 + b.abs())
}

/// Student and teacher logits and probabilities, one column and [B, C]. Row 0 of the logits is
/// clipped: the student's σ(−20) and softmax class 0 (−25 below the rest) are below 1e-7, and so
/// are the teacher's row 1 values. Probabilities stay in [0.05, 0.95] (the clip of a probability
/// input is tested by hand: a finite difference would leave [0, 1]).
fn batch(seed: u64) -> HostBatch {
    let mut r = SplitMix(seed);
    let mut b = HostBatch::new();
    let mut x = r.reals(B, -3.0, 3.0);
    let mut t = r.reals(B, -3.0, 3.0);
    (x[0], t[1]) = (-20.0, 19.0);
    let mut xc = r.reals(B * C, -3.0, 3.0);
    let mut tc = r.reals(B * C, -3.0, 3.0);
    (xc[0], tc[C + 2]) = (-25.0, -24.0);
    b.insert("x".into(), HostTensor::real([B], x.clone()));
    b.insert("x1".into(), HostTensor::real([B, 1], x));
    b.insert("t".into(), HostTensor::real([B], t.clone()));
    b.insert("t1".into(), HostTensor::real([B, 1], t));
    b.insert("p".into(), HostTensor::real([B], r.reals(B, 0.05, 0.95)));
    b.insert("q".into(), HostTensor::real([B], r.reals(B, 0.05, 0.95)));
    b.insert("xc".into(), HostTensor::real([B, C], xc));
    b.insert("tc".into(), HostTensor::real([B, C], tc));
    let probs = |r: &mut SplitMix| -> Vec<f64> {
        (0..B)
            .flat_map(|_| {
                let row = r.reals(C, 0.1, 1.0);
                let s: f64 = row.iter().sum();
                row.into_iter().map(move |v| v / s)
            })
            .collect()
    };
    b.insert("pc".into(), HostTensor::real([B, C], probs(&mut r)));
    b.insert("qc".into(), HostTensor::real([B, C], probs(&mut r)));
    let mut w = r.reals(B, 0.2, 2.0);
    w[3] = 0.0;
    b.insert("w".into(), HostTensor::real([B], w));
    b.insert("c1".into(), HostTensor::real([B], r.bits(B)));
    b.insert("c2".into(), HostTensor::real([B, 1], r.reals(B, 0.1, 1.0)));
    b
}

fn teacher(t: f64, pred: bool, label: bool) -> Teacher {
    Teacher {
        temperature: t,
        pred_is_logits: pred,
        label_is_logits: label,
    }
}

#[test]
fn hand_computed_values() {
    // x = 0.5, t = −1, T = 2: p = σ(0.25), q = σ(−0.5).
    let k = teacher(2.0, true, true);
    assert!(close(
        kl_binary(0.5, -1.0, &k).0,
        0.06870693410012776,
        1e-14
    ));
    assert!(close(
        bce_teacher(0.5, -1.0, &k).0,
        0.7315542526793072,
        1e-14
    ));
    assert!(close(
        l2_binary(0.5, -1.0, 2.0).0,
        0.06818078098139974,
        1e-14
    ));
    // softmax([1, 2, 3]) against the teacher softmax([3, 2, 1]).
    let k = teacher(1.0, true, true);
    let (kl, _) = distill_row(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], DistillKind::Kl, &k);
    assert!(close(kl, 1.1504207652088825, 1e-14), "{kl}");
    let (l2, _) = distill_row(&[1.0, 2.0, 3.0], &[3.0, 2.0, 1.0], DistillKind::L2, &k);
    assert!(close(l2, 0.6617339685118956, 1e-14), "{l2}");
    // Probabilities in: p = 0.3, q = 0.8 (EasyRec's logit, then σ, gives them back).
    let k = teacher(1.0, false, false);
    assert!(close(kl_binary(0.3, 0.8, &k).0, 0.5341108087103075, 1e-12));
    // Same distributions: KL and L2 are 0 with a zero gradient.
    let k = teacher(1.5, true, true);
    for kind in [DistillKind::Kl, DistillKind::L2] {
        let (l, g) = distill_row(&[0.3, -1.0, 2.0], &[0.3, -1.0, 2.0], kind, &k);
        assert!(
            l.abs() < 1e-15 && g.iter().all(|g| g.abs() < 1e-15),
            "{l} {g:?}"
        );
    }
}

#[test]
fn the_clip_of_keras_kld() {
    let k = teacher(1.0, true, true);
    // Student σ(−20) ≈ 2e-9 is clipped to 1e-7: the value uses 1e-7, and its gradient through
    // p is 0 (only the 1 − p class moves it).
    let (l, g) = kl_binary(-20.0, 0.0, &k);
    assert!(close(l, 7.365900645949791, 1e-12), "{l}");
    let p = super::binary::sigmoid(-20.0);
    assert!(close(g, 0.5 * p, 1e-12), "{g}");
    // Teacher probability 0 (label_is_logits = false): q = 1e-7 after EasyRec's clip.
    let (l, _) = kl_binary(0.0, 0.0, &teacher(1.0, true, false));
    assert!(close(l, 0.6931454687503853, 1e-12), "{l}");
    // A student probability outside [1e-7, 1 − 1e-7] has a constant logit: no gradient.
    for x in [0.0, 1e-9, 1.0] {
        let (_, g) = kl_binary(x, 0.3, &teacher(1.0, false, false));
        assert_eq!(g, 0.0, "{x}");
    }
    // C > 1: a class at p < 1e-7 gets no gradient from its own log p̂.
    let (_, g) = distill_row(&[-30.0, 0.0, 1.0], &[0.0, 0.0, 0.0], DistillKind::Kl, &k);
    let z = [-30.0f64, 0.0, 1.0];
    let s: f64 = z.iter().map(|v| v.exp()).sum();
    let p0 = (-30.0f64).exp() / s;
    assert!(p0 < EPS);
    // S = Σ over the unclipped classes of q̂ = 2/3.
    assert!(close(g[0], p0 * 2.0 / 3.0, 1e-12), "{}", g[0]);
}

/// Every config of one loss type: flags, temperatures, shapes.
fn configs(loss_type: &str) -> Vec<String> {
    let flags: &[&str] = match loss_type {
        "l2_distill_loss" => &[""],
        _ => &[
            "",
            "pred_is_logits = false",
            "label_is_logits = false",
            "pred_is_logits = false\nlabel_is_logits = false",
        ],
    };
    let mut out = Vec::new();
    for f in flags {
        for temperature in ["temperature = 1.0", "temperature = 2.5"] {
            let pred_probs = f.contains("pred_is_logits = false");
            let label_probs = f.contains("label_is_logits = false");
            for (col, cls) in [("x", "t"), ("x1", "t1"), ("xc", "tc")] {
                let multi = col == "xc";
                let x = match (pred_probs, multi) {
                    (true, false) => "p",
                    (true, true) => "pc",
                    (false, _) => col,
                };
                let y = match (label_probs, multi) {
                    (true, false) => "q",
                    (true, true) => "qc",
                    (false, _) => cls,
                };
                out.push(format!(
                    "[[losses]]\nloss_type = \"{loss_type}\"\nlogits = \"{x}\"\nlabels = \"{y}\"\n\
                     {f}\n{temperature}\n"
                ));
            }
        }
    }
    out
}

#[test]
fn student_gradients_match_finite_differences() {
    let batch = batch(11);
    for loss_type in [
        "kl_divergence_loss",
        "binary_cross_entropy_loss",
        "l2_distill_loss",
    ] {
        for config in configs(loss_type) {
            let c = parse(&config);
            assert_eq!(c.losses[0].effective_reduction(), Reduction::Mean);
            let out = check(&c, &batch, None);
            assert_eq!(
                out.grads.len(),
                1,
                "only the student gets a gradient: {config}"
            );
        }
    }
}

#[test]
fn sample_weights_and_reductions() {
    let batch = batch(12);
    for loss_type in [
        "kl_divergence_loss",
        "l2_distill_loss",
        "binary_cross_entropy_loss",
    ] {
        for (x, y) in [("x", "t"), ("xc", "tc")] {
            if loss_type == "binary_cross_entropy_loss" && x == "xc" {
                continue; // element-wise over [B, C]: no per-row weights (refused below)
            }
            for reduction in REDUCTIONS {
                for weights in WEIGHTS {
                    let config = parse(&format!(
                        "[[losses]]\nloss_type = \"{loss_type}\"\nlogits = \"{x}\"\nlabels = \
                         \"{y}\"\ntemperature = 2.0\n{reduction}\n{weights}\n"
                    ));
                    check(&config, &batch, None);
                }
            }
        }
    }
    // The default reduction with sample weights is Σ w·l / B (Keras' sample_weight mean; EasyRec
    // multiplies reduce_mean by a constant weight, the same value).
    let base = "[[losses]]\nloss_type = \"kl_divergence_loss\"\nlogits = \"x\"\nlabels = \"t\"\n";
    let plain = Reference::new(&parse(base)).unwrap().step(&batch).unwrap();
    let scaled = parse(&format!(
        "{base}sample_weights = {{ c2 = 0.0, c1 = 0.0, w = 0.0 }}\n"
    ));
    let zero = Reference::new(&scaled).unwrap().step(&batch).unwrap();
    assert_eq!(zero.total, 0.0);
    let w = batch["w"].reals("w", None).unwrap();
    let k = teacher(1.0, true, true);
    let x = batch["x"].reals("x", None).unwrap();
    let t = batch["t"].reals("t", None).unwrap();
    let want: f64 = (0..B)
        .map(|i| w[i] * kl_binary(x[i], t[i], &k).0)
        .sum::<f64>()
        / B as f64;
    let weighted = parse(&format!("{base}sample_weights = \"w\"\n"));
    let got = Reference::new(&weighted).unwrap().step(&batch).unwrap();
    assert!(close(got.total, want, 1e-14), "{} vs {want}", got.total);
    let mean: f64 = (0..B).map(|i| kl_binary(x[i], t[i], &k).0).sum::<f64>() / B as f64;
    assert!(close(plain.total, mean, 1e-14));
}

#[test]
fn plain_bce_is_mean_sigmoid_ce_and_refuses_sample_weights() {
    let batch = batch(13);
    let bce =
        "[[losses]]\nloss_type = \"binary_cross_entropy_loss\"\nlogits = \"x\"\nlabels = \"q\"\n";
    let ce = "[[losses]]\nloss_type = \"classification\"\nlogits = \"x\"\nlabels = \"q\"\nreduction = \"mean\"\n";
    let a = check(&parse(bce), &batch, None);
    let b = Reference::new(&parse(ce)).unwrap().step(&batch).unwrap();
    assert!(close(a.total, b.total, 1e-14), "{} vs {}", a.total, b.total);
    let e = Reference::new(&parse(&format!("{bce}sample_weights = \"w\"\n")))
        .unwrap()
        .step(&batch)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("sample_weights") && e.contains("classification"),
        "{e}"
    );
    // Without a teacher key the labels are targets: a teacher's logit is refused.
    let logits =
        "[[losses]]\nloss_type = \"binary_cross_entropy_loss\"\nlogits = \"x\"\nlabels = \"t\"\n";
    let e = Reference::new(&parse(logits))
        .unwrap()
        .step(&batch)
        .unwrap_err();
    assert!(e.to_string().contains("'t'"), "{e}");
    // A teacher key makes it distillation from the teacher's logits.
    let kd = format!("{logits}label_is_logits = true\n");
    check(&parse(&kd), &batch, None);
}

#[test]
fn bce_over_classes_is_the_element_mean() {
    let batch = batch(14);
    let config = parse(
        "[[losses]]\nloss_type = \"binary_cross_entropy_loss\"\nlogits = \"xc\"\nlabels = \"tc\"\n\
         temperature = 2.0\n",
    );
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    let x = batch["xc"].reals("xc", None).unwrap();
    let t = batch["tc"].reals("tc", None).unwrap();
    let k = teacher(2.0, true, true);
    let want: f64 = (0..B * C)
        .map(|i| bce_teacher(x[i], t[i], &k).0)
        .sum::<f64>()
        / (B * C) as f64;
    assert!(close(out.total, want, 1e-14), "{} vs {want}", out.total);
    let weighted = parse(
        "[[losses]]\nloss_type = \"binary_cross_entropy_loss\"\nlogits = \"xc\"\nlabels = \"tc\"\n\
         temperature = 2.0\nsample_weights = \"w\"\n",
    );
    let e = Reference::new(&weighted).unwrap().step(&batch).unwrap_err();
    assert!(e.to_string().contains("B·C"), "{e}");
}

#[test]
fn shape_and_value_errors_name_the_tensor() {
    let batch = batch(15);
    let cases = [
        ("kl_divergence_loss", "x", "tc", "", "'tc'"),
        ("l2_distill_loss", "xc", "t", "", "'t'"),
        (
            "kl_divergence_loss",
            "x",
            "t",
            "pred_is_logits = false",
            "'x'",
        ),
        (
            "kl_divergence_loss",
            "xc",
            "tc",
            "label_is_logits = false",
            "'tc'",
        ),
    ];
    for (lt, x, y, extra, named) in cases {
        let config = parse(&format!(
            "[[losses]]\nloss_type = \"{lt}\"\nlogits = \"{x}\"\nlabels = \"{y}\"\n{extra}\n"
        ));
        let e = Reference::new(&config)
            .unwrap()
            .step(&batch)
            .unwrap_err()
            .to_string();
        assert!(e.contains(named), "{lt} {x} {y}: {e}");
    }
    for bad in ["temperature = 0.0", "temperature = -1.0"] {
        let text = format!(
            "[[losses]]\nloss_type = \"kl_divergence_loss\"\nlogits = \"x\"\nlabels = \"t\"\n{bad}\n"
        );
        let e = LossConfig::from_toml_str(&text).unwrap_err().to_string();
        assert!(e.contains("temperature"), "{e}");
    }
}
