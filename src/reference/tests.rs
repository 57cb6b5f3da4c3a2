//! Whole-step tests of the reference: analytic gradients of `total` (inputs and learned s) against
//! central finite differences in f64 for every term, option, reduction and strategy; hand-checked
//! values; multi-step state; error messages.
//!
//! Finite differences: h = 1e-6·max(1, |x|), tolerance 1e-7 + 1e-6·|numeric| (the truncation error
//! is O(h²) ≈ 1e-12 and the rounding error about 1e-16·|total|/h ≈ 1e-9 for these sizes). Inputs
//! stay away from kinks: logits in [−3, 3] (far from the focal clip), OHEM values distinct, flood
//! levels one unit away from the total.

use super::*;
use crate::config::{Reduction, Strategy};
use crate::rng;
use crate::tensor::{HostData, HostTensor};
use std::collections::BTreeSet;

/// splitmix64 (Steele et al. 2014): a tiny seeded generator for test inputs.
pub(super) struct SplitMix(pub(super) u64);

impl SplitMix {
    pub(super) fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub(super) fn uniform(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub(super) fn reals(&mut self, n: usize, lo: f64, hi: f64) -> Vec<f64> {
        (0..n).map(|_| self.uniform(lo, hi)).collect()
    }

    pub(super) fn bits(&mut self, n: usize) -> Vec<f64> {
        (0..n).map(|_| (self.next_u64() >> 63) as f64).collect()
    }

    pub(super) fn below(&mut self, n: u64) -> i64 {
        (self.next_u64() % n) as i64
    }
}

/// Rows per test batch.
const B: usize = 7;
/// Classes of the softmax tensors.
const C: usize = 4;

/// One batch holding every tensor the tests bind (seeded, so the tests are reproducible).
fn test_batch(seed: u64) -> HostBatch {
    let mut r = SplitMix(seed);
    let mut b = HostBatch::new();
    let mut put = |name: &str, t: HostTensor| {
        b.insert(name.to_string(), t);
    };
    put("x", HostTensor::real([B], r.reals(B, -3.0, 3.0)));
    put("x1", HostTensor::real([B, 1], r.reals(B, -3.0, 3.0)));
    let mut y = r.bits(B);
    (y[0], y[1]) = (0.0, 1.0);
    put("y", HostTensor::real([B], y));
    put("ysoft", HostTensor::real([B], r.reals(B, 0.0, 1.0)));
    put("pred", HostTensor::real([B], r.reals(B, -2.0, 2.0)));
    put("target", HostTensor::real([B], r.reals(B, -2.0, 2.0)));
    put("prob", HostTensor::real([B], r.reals(B, 0.05, 0.95)));
    put("z", HostTensor::real([B, C], r.reals(B * C, -3.0, 3.0)));
    let mut cls: Vec<i64> = (0..B).map(|_| r.below(C as u64)).collect();
    cls[0] = 2;
    put("cls_all", HostTensor::int([B], cls.clone()));
    (cls[1], cls[4]) = (-100, -100);
    put("cls", HostTensor::int([B], cls));
    let tprob: Vec<f64> = (0..B)
        .flat_map(|_| {
            let row = r.reals(C, 0.0, 1.0);
            let s: f64 = row.iter().sum();
            row.into_iter().map(move |v| v / s)
        })
        .collect();
    put("tprob", HostTensor::real([B, C], tprob));
    put("a", HostTensor::real([B], r.reals(B, -3.0, 3.0)));
    put("b", HostTensor::real([B], r.reals(B, -3.0, 3.0)));
    let mut click = r.bits(B);
    (click[0], click[1]) = (1.0, 1.0);
    let buy: Vec<f64> = click.iter().map(|c| c * r.bits(1)[0]).collect();
    put("click", HostTensor::real([B], click));
    put("buy", HostTensor::real([B], buy));
    let mut w = r.reals(B, 0.2, 2.0);
    (w[2], w[5]) = (0.0, 0.0);
    put("w", HostTensor::real([B], w));
    put("c1", HostTensor::real([B], r.bits(B)));
    put("c2", HostTensor::real([B, 1], r.reals(B, 0.1, 1.0)));
    put("zeros", HostTensor::real([B], vec![0.0; B]));
    b
}

/// The three ways of giving sample weights (none, a tensor, a combination), as TOML lines.
pub(super) const WEIGHTS: [&str; 3] = [
    "",
    "sample_weights = \"w\"",
    "sample_weights = { c1 = 1.0, c2 = 3.0 }",
];

/// The reduction lines: the default and the four explicit ones.
pub(super) const REDUCTIONS: [&str; 5] = [
    "",
    "reduction = \"nonzero_mean\"",
    "reduction = \"weighted_mean\"",
    "reduction = \"mean\"",
    "reduction = \"sum\"",
];

pub(super) fn parse(toml: &str) -> LossConfig {
    LossConfig::from_toml_str(toml).unwrap_or_else(|e| panic!("{e}\n{toml}"))
}

pub(super) fn real_mut<'a>(batch: &'a mut HostBatch, name: &str) -> &'a mut Vec<f64> {
    match &mut batch.get_mut(name).unwrap().data {
        HostData::Real(v) => v,
        HostData::Int(_) => panic!("{name} is not real"),
    }
}

pub(super) fn assert_close(analytic: f64, numeric: f64, what: &str) {
    let tol = 1e-7 + 1e-6 * numeric.abs();
    assert!(
        (analytic - numeric).abs() <= tol,
        "{what}: analytic {analytic} vs finite difference {numeric}"
    );
}

/// Runs one step of `config` from `state` (the initial state when `None`) and checks every
/// gradient of `total`, for inputs and for the learned s_k, against central differences. For
/// `ema_reweight` θ is detached (docs/LOSSES.md), so the differences are taken with this step's weights
/// frozen.
pub(super) fn check(
    config: &LossConfig,
    batch: &HostBatch,
    state: Option<ReferenceState>,
) -> ReferenceOutput {
    let mut reference = Reference::new(config).unwrap();
    if let Some(s) = state {
        reference.set_state(s);
    }
    let s0 = reference.state().clone();
    let out = reference.clone().step(batch).unwrap();
    // ema_reweight detaches θ by default: differentiate the total with this step's weights
    // frozen (with detach_theta = false, the whole total).
    let frozen = match &config.strategy {
        Strategy::EmaReweight(e) if e.detach_theta => {
            let mut c = config.clone();
            c.strategy = Strategy::Fixed;
            for (term, (_, e)) in c.losses.iter_mut().zip(&out.weights) {
                term.weight = *e;
            }
            Reference::new(&c).unwrap()
        }
        _ => reference.clone(),
    };
    let total = |b: &HostBatch, s: &ReferenceState| {
        let mut r = frozen.clone();
        r.set_state(s.clone());
        r.step(b).unwrap().total
    };
    let what = format!("{config:?}");

    let expected: BTreeSet<String> = config
        .losses
        .iter()
        .flat_map(|t| {
            t.kind
                .differentiable_roles()
                .into_iter()
                .map(|r| t.input(r).unwrap().to_string())
        })
        .collect();
    assert_eq!(out.grads.keys().cloned().collect::<BTreeSet<_>>(), expected);

    let mut work = batch.clone();
    for (name, g) in &out.grads {
        let v = match &batch[name].data {
            HostData::Real(v) => v.clone(),
            HostData::Int(_) => panic!("{name}: integer tensor got a gradient"),
        };
        assert_eq!(g.len(), v.len(), "{name}");
        assert!(
            g.iter().any(|x| x.abs() > 1e-6),
            "the gradient of {name} vanishes, so the test checks nothing: {what}"
        );
        for i in 0..v.len() {
            let h = 1e-6 * v[i].abs().max(1.0);
            real_mut(&mut work, name)[i] = v[i] + h;
            let plus = total(&work, &s0);
            real_mut(&mut work, name)[i] = v[i] - h;
            let minus = total(&work, &s0);
            real_mut(&mut work, name)[i] = v[i];
            let numeric = (plus - minus) / (2.0 * h);
            assert_close(g[i], numeric, &format!("d total/d {name}[{i}] in {what}"));
        }
    }

    assert_eq!(out.log_var_grads.len(), config.losses.len());
    for k in 0..config.losses.len() {
        let h = 1e-6 * s0.log_vars[k].abs().max(1.0);
        let mut s = s0.clone();
        s.log_vars[k] = s0.log_vars[k] + h;
        let plus = total(batch, &s);
        s.log_vars[k] = s0.log_vars[k] - h;
        let minus = total(batch, &s);
        let numeric = (plus - minus) / (2.0 * h);
        assert_close(
            out.log_var_grads[k],
            numeric,
            &format!("d total/d s_{k} in {what}"),
        );
    }
    out
}

#[test]
fn classification_with_one_logit() {
    let batch = test_batch(1);
    let mut n = 0;
    for logits in ["x", "x1"] {
        for labels in ["y", "ysoft"] {
            for ls in ["", "label_smoothing = 0.1"] {
                for pw in ["", "pos_weight = 2.5"] {
                    for reduction in REDUCTIONS {
                        let weights = WEIGHTS[n % 3];
                        n += 1;
                        let config = parse(&format!(
                            "[[losses]]\nloss_type = \"classification\"\nlogits = \"{logits}\"\n\
                             labels = \"{labels}\"\n{ls}\n{pw}\n{reduction}\n{weights}\n"
                        ));
                        check(&config, &batch, None);
                    }
                }
            }
        }
    }
}

#[test]
fn regression_and_probability_terms() {
    let batch = test_batch(2);
    let terms = [
        "loss_type = \"l2_loss\"\npredictions = \"pred\"\nlabels = \"target\"",
        "loss_type = \"sigmoid_l2_loss\"\nlogits = \"x\"\nlabels = \"ysoft\"",
        "loss_type = \"cross_entropy_loss\"\nprobabilities = \"prob\"\nlabels = \"ysoft\"",
        "loss_type = \"cross_entropy_loss\"\nprobabilities = \"prob\"\nlabels = \"y\"",
    ];
    for term in terms {
        for reduction in REDUCTIONS {
            for weights in WEIGHTS {
                let config = parse(&format!("[[losses]]\n{term}\n{reduction}\n{weights}\n"));
                check(&config, &batch, None);
            }
        }
    }
}

#[test]
fn binary_focal_options() {
    let batch = test_batch(3);
    let mut n = 0;
    for gamma in ["gamma = 0.0", "gamma = 1.5", ""] {
        for alpha in ["", "alpha = 0.25"] {
            for ls in ["", "label_smoothing = 0.1"] {
                for labels in ["y", "ysoft"] {
                    for ohem in ["", "ohem_ratio = 0.5", "ohem_ratio = 0.3"] {
                        let reductions: &[&str] = if ohem.is_empty() { &REDUCTIONS } else { &[""] };
                        for reduction in reductions {
                            let weights = WEIGHTS[n % 3];
                            n += 1;
                            let config = parse(&format!(
                                "[[losses]]\nloss_type = \"binary_focal_loss\"\nlogits = \"x\"\n\
                                 labels = \"{labels}\"\n{gamma}\n{alpha}\n{ls}\n{ohem}\n\
                                 {reduction}\n{weights}\n"
                            ));
                            check(&config, &batch, None);
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn softmax_options() {
    let batch = test_batch(4);
    let mut n = 0;
    for loss_type in ["softmax_cross_entropy", "classification"] {
        for temperature in ["", "temperature = 0.7"] {
            for ls in ["", "label_smoothing = 0.1"] {
                for cw in ["", "class_weights = [0.5, 2.0, 1.5, 1.0]"] {
                    for z in ["", "z_loss = 0.01"] {
                        for (labels, ignore) in [
                            ("cls_all", ""),
                            ("cls", "ignore_index = -100"),
                            ("cls_all", "ignore_index = 2"),
                            ("tprob", ""),
                        ] {
                            for reduction in REDUCTIONS {
                                let weights = WEIGHTS[n % 3];
                                n += 1;
                                let config = parse(&format!(
                                    "[[losses]]\nloss_type = \"{loss_type}\"\nlogits = \"z\"\n\
                                     labels = \"{labels}\"\n{temperature}\n{ls}\n{cw}\n{z}\n\
                                     {ignore}\n{reduction}\n{weights}\n"
                                ));
                                check(&config, &batch, None);
                            }
                        }
                    }
                }
            }
        }
    }
}

#[test]
fn esmm_all_reductions_and_weights() {
    let batch = test_batch(5);
    for reduction in REDUCTIONS {
        for weights in WEIGHTS {
            let config = parse(&format!(
                "[[losses]]\nloss_type = \"esmm\"\nctr_logits = \"a\"\ncvr_logits = \"b\"\n\
                 ctr_labels = \"click\"\nctcvr_labels = \"buy\"\n{reduction}\n{weights}\n"
            ));
            check(&config, &batch, None);
        }
    }
}

#[test]
fn order_calibrate_all_reductions_and_weights() {
    let batch = test_batch(6);
    for reduction in REDUCTIONS {
        for weights in WEIGHTS {
            let config = parse(&format!(
                "[[losses]]\nloss_type = \"order_calibrate_loss\"\nlogits = \"a\"\n\
                 relation_logits = \"b\"\n{reduction}\n{weights}\n"
            ));
            check(&config, &batch, None);
        }
    }
    // EasyRec's reduce_mean over the rows by default: the rows below their relation count in
    // the denominator too.
    let config = parse(
        "[[losses]]\nloss_type = \"order_calibrate_loss\"\nlogits = \"a\"\nrelation_logits = \"b\"\n",
    );
    assert_eq!(config.losses[0].effective_reduction(), Reduction::Mean);
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    let (a, b) = (
        batch["a"].reals("a", None).unwrap(),
        batch["b"].reals("b", None).unwrap(),
    );
    let want: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &r)| (binary::sigmoid(x) - binary::sigmoid(r)).max(0.0))
        .sum::<f64>()
        / a.len() as f64;
    assert!((out.total - want).abs() < 1e-14, "{} vs {want}", out.total);
}

/// Five terms; `ctr`, `focal` and `sl2` share the logits `x`, so their gradients add up.
const MULTI: &str = r#"
[[losses]]
name = "ctr"
loss_type = "classification"
logits = "x"
labels = "y"
weight = 0.7
LEARN
[[losses]]
name = "reg"
loss_type = "l2_loss"
predictions = "pred"
labels = "target"
weight = 0.3
LEARN
[[losses]]
name = "cls"
loss_type = "softmax_cross_entropy"
logits = "z"
labels = "cls"
ignore_index = -100
class_weights = [0.5, 2.0, 1.5, 1.0]
weight = 1.5
LEARN
[[losses]]
name = "focal"
loss_type = "binary_focal_loss"
logits = "x"
labels = "y"
alpha = 0.25
weight = 2.0
sample_weights = "w"
[[losses]]
name = "esmm"
loss_type = "esmm"
ctr_logits = "a"
cvr_logits = "b"
ctr_labels = "click"
ctcvr_labels = "buy"
weight = 0.5
[[losses]]
name = "sl2"
loss_type = "sigmoid_l2_loss"
logits = "x"
labels = "ysoft"
"#;

fn multi(head: &str, learn: bool) -> LossConfig {
    let learn = if learn {
        "learn_loss_weight = true"
    } else {
        ""
    };
    parse(&format!("{head}\n{}", MULTI.replace("LEARN", learn)))
}

fn values(out: &ReferenceOutput) -> Vec<f64> {
    out.values.iter().map(|(_, v)| *v).collect()
}

fn weights(out: &ReferenceOutput) -> Vec<f64> {
    out.weights.iter().map(|(_, v)| *v).collect()
}

fn weighted_sum(out: &ReferenceOutput) -> f64 {
    values(out)
        .iter()
        .zip(weights(out))
        .map(|(l, e)| l * e)
        .sum()
}

#[test]
fn fixed_weights_sum_the_terms() {
    let batch = test_batch(6);
    let out = check(&multi("", false), &batch, None);
    assert_eq!(weights(&out), vec![0.7, 0.3, 1.5, 2.0, 0.5, 1.0]);
    assert!((out.total - weighted_sum(&out)).abs() < 1e-14);
    assert_eq!(out.log_var_grads, vec![0.0; 6]);
}

#[test]
fn uncertainty_weights_and_their_gradient() {
    let batch = test_batch(7);
    let config = multi("loss_weight_strategy = \"uncertainty\"", true);
    let mut state = ReferenceState::initial(&config);
    state.log_vars = vec![0.3, -0.5, 0.2, 0.0, 0.0, 0.0];
    let out = check(&config, &batch, Some(state));
    let l = values(&out);
    let e = weights(&out);
    // l2_loss is a regression term: 0.5·e^{−s}.
    let want_e = [
        (-0.3f64).exp(),
        0.5 * 0.5f64.exp(),
        (-0.2f64).exp(),
        2.0,
        0.5,
        1.0,
    ];
    for (a, b) in e.iter().zip(want_e) {
        assert!((a - b).abs() < 1e-14, "{e:?}");
    }
    let want_total = weighted_sum(&out) + 0.5 * (0.3 - 0.5 + 0.2);
    assert!((out.total - want_total).abs() < 1e-13);
    assert!((out.log_var_grads[1] - (-want_e[1] * l[1] + 0.5)).abs() < 1e-14);
    assert_eq!(&out.log_var_grads[3..], &[0.0; 3]);
}

#[test]
fn random_weights_follow_the_step_counter() {
    let batch = test_batch(8);
    let config = multi(
        "loss_weight_strategy = \"random\"\n[random]\nseed = 11",
        false,
    );
    let mut state = ReferenceState::initial(&config);
    state.step = 3;
    let out = check(&config, &batch, Some(state));
    assert_eq!(weights(&out), rng::rlw_weights(11, 3, 6));
    assert!((out.total - weighted_sum(&out)).abs() < 1e-14);

    let mut reference = Reference::new(&config).unwrap();
    let first = reference.step(&batch).unwrap();
    let second = reference.step(&batch).unwrap();
    assert_eq!(weights(&first), rng::rlw_weights(11, 0, 6));
    assert_eq!(weights(&second), rng::rlw_weights(11, 1, 6));
    assert_ne!(weights(&first), weights(&second));
    assert_eq!(reference.state().step, 2);
}

#[test]
fn ema_reweight_gradient_and_theta() {
    let batch = test_batch(9);
    let head = "loss_weight_strategy = \"ema_reweight\"\n[ema_reweight]\nmain = \"ctr\"\n\
                aux = \"focal\"\nalpha = 0.3\nlambda = 2.0\ntheta0 = 0.4";
    let config = multi(head, false);
    let out = check(&config, &batch, None);
    let l = values(&out);
    let theta = 0.3 * (l[0] / (l[0] + 2.0 * l[3])) + 0.7 * 0.4;
    let e = weights(&out);
    assert_eq!([e[0], e[1], e[2], e[4], e[5]], [1.0, 0.3, 1.5, 0.5, 1.0]);
    assert!((e[3] - theta).abs() < 1e-15, "{e:?} vs {theta}");
    assert!((out.total - weighted_sum(&out)).abs() < 1e-14);
}

/// With `detach_theta = false` the gradient is the derivative of the total, θ̃ included (finite
/// differences of the whole total, two steps so that θ_t ≠ θ0), and differs from the detached one.
#[test]
fn ema_reweight_attached_theta_is_differentiated() {
    let batch = test_batch(9);
    let head = |detach: bool| {
        format!(
            "loss_weight_strategy = \"ema_reweight\"\n[ema_reweight]\nmain = \"ctr\"\n\
             aux = \"focal\"\nalpha = 0.3\nlambda = 2.0\ntheta0 = 0.4\ndetach_theta = {detach}"
        )
    };
    let attached = multi(&head(false), false);
    let mut r = Reference::new(&attached).unwrap();
    r.step(&batch).unwrap();
    let out = check(&attached, &batch, Some(r.state().clone()));
    let detached = check(&multi(&head(true), false), &batch, Some(r.state().clone()));
    assert_eq!(out.total, detached.total);
    assert_eq!(out.weights, detached.weights);
    let differs = out.grads.iter().any(|(n, g)| g != &detached.grads[n]);
    assert!(
        differs,
        "the attached gradient must differ from the detached one"
    );
}

#[test]
fn flooding_above_and_below_the_total() {
    let batch = test_batch(10);
    for head in ["", "loss_weight_strategy = \"uncertainty\""] {
        let learn = !head.is_empty();
        let plain = check(&multi(head, learn), &batch, None);
        for (offset, sign) in [(-1.0, 1.0), (1.0, -1.0)] {
            let b = plain.total + offset;
            let config = multi(&format!("flooding = {b:?}\n{head}"), learn);
            let out = check(&config, &batch, None);
            let want = (plain.total - b).abs() + b;
            assert!((out.total - want).abs() < 1e-13, "{} vs {want}", out.total);
            assert_eq!(out.weights, plain.weights);
            for (name, g) in &out.grads {
                for (a, p) in g.iter().zip(&plain.grads[name]) {
                    assert_eq!(*a, sign * p);
                }
            }
            for (a, p) in out.log_var_grads.iter().zip(&plain.log_var_grads) {
                assert_eq!(*a, sign * p);
            }
        }
        // At equality the gradient is 0.
        let config = multi(&format!("flooding = {:?}\n{head}", plain.total), learn);
        let out = Reference::new(&config).unwrap().step(&batch).unwrap();
        assert!(out.grads.values().flatten().all(|g| *g == 0.0));
    }
}

#[test]
fn sgd_and_adam_update_the_learned_weights() {
    let batch = test_batch(11);
    let sgd = multi(
        "loss_weight_strategy = \"uncertainty\"\n[uncertainty]\noptimizer = \"sgd\"\nlearning_rate = 0.1",
        true,
    );
    let mut reference = Reference::new(&sgd).unwrap();
    let out = reference.step(&batch).unwrap();
    let s = &reference.state().log_vars;
    for (s_k, g_k) in s.iter().zip(&out.log_var_grads) {
        assert_eq!(*s_k, -0.1 * g_k);
    }
    assert_eq!(&s[3..], &[0.0; 3]);

    let adam = multi(
        "loss_weight_strategy = \"uncertainty\"\n[uncertainty]\noptimizer = \"adam\"\n\
         learning_rate = 0.05\nbeta1 = 0.9\nbeta2 = 0.99\nepsilon = 1e-8",
        true,
    );
    let mut reference = Reference::new(&adam).unwrap();
    let (mut m, mut v, mut s) = ([0.0; 6], [0.0; 6], [0.0f64; 6]);
    for t in 1..=3 {
        let out = reference.step(&batch).unwrap();
        for k in 0..3 {
            let g = out.log_var_grads[k];
            assert!(g.abs() > 1e-3);
            m[k] = 0.9 * m[k] + 0.1 * g;
            v[k] = 0.99 * v[k] + 0.01 * g * g;
            let m_hat = m[k] / (1.0 - 0.9f64.powi(t));
            let v_hat = v[k] / (1.0 - 0.99f64.powi(t));
            s[k] -= 0.05 * m_hat / (v_hat.sqrt() + 1e-8);
        }
        let state = reference.state();
        assert_eq!(state.adam_t, t as u64);
        assert_eq!(state.step, t as u64);
        for k in 0..6 {
            assert!(
                (state.log_vars[k] - s[k]).abs() < 1e-15,
                "{:?} vs {s:?}",
                state.log_vars
            );
            assert!((state.adam_m[k] - m[k]).abs() < 1e-15);
            assert!((state.adam_v[k] - v[k]).abs() < 1e-15);
        }
        if t == 1 {
            // The first Adam step moves each s by about lr against the sign of its gradient.
            for (s_k, g_k) in s.iter().zip(&out.log_var_grads).take(3) {
                assert!((s_k + 0.05 * g_k.signum()).abs() < 1e-6);
            }
        }
    }

    // Optimizer none: s never changes; the step counter still moves.
    let none = multi("loss_weight_strategy = \"uncertainty\"", true);
    let mut reference = Reference::new(&none).unwrap();
    reference.step(&batch).unwrap();
    reference.step(&batch).unwrap();
    assert_eq!(reference.state().log_vars, vec![0.0; 6]);
    assert_eq!(reference.state().step, 2);
}

#[test]
fn ema_theta_evolves_over_steps() {
    let batch = test_batch(12);
    let head = "loss_weight_strategy = \"ema_reweight\"\n[ema_reweight]\nmain = \"ctr\"\n\
                aux = \"focal\"\nalpha = 0.5\nlambda = 1.5\ntheta0 = 0.2";
    let mut reference = Reference::new(&multi(head, false)).unwrap();
    assert_eq!(reference.state().ema_theta, 0.2);
    let mut theta = 0.2;
    for _ in 0..4 {
        let out = reference.step(&batch).unwrap();
        let l = values(&out);
        theta = 0.5 * (l[0] / (l[0] + 1.5 * l[3])) + 0.5 * theta;
        assert!((out.weights[3].1 - theta).abs() < 1e-15);
        assert_eq!(reference.state().ema_theta, out.weights[3].1);
    }
    // Both terms 0 (all sample weights 0): θ̃ = θ, so θ stays.
    let zero = parse(
        "loss_weight_strategy = \"ema_reweight\"\n[ema_reweight]\nmain = \"m\"\naux = \"a\"\n\
         alpha = 0.5\ntheta0 = 0.3\n[[losses]]\nname = \"m\"\nloss_type = \"l2_loss\"\n\
         predictions = \"pred\"\nlabels = \"target\"\nsample_weights = \"zeros\"\n[[losses]]\n\
         name = \"a\"\nloss_type = \"classification\"\nlogits = \"x\"\nlabels = \"y\"\n\
         sample_weights = \"zeros\"\n",
    );
    let mut reference = Reference::new(&zero).unwrap();
    let out = reference.step(&batch).unwrap();
    assert_eq!(out.total, 0.0);
    assert_eq!(reference.state().ema_theta, 0.3);
}

#[test]
fn a_failed_step_leaves_the_state_unchanged() {
    let batch = test_batch(13);
    let config = multi(
        "loss_weight_strategy = \"uncertainty\"\n[uncertainty]\noptimizer = \"adam\"",
        true,
    );
    let mut reference = Reference::new(&config).unwrap();
    reference.step(&batch).unwrap();
    let after_one = reference.state().clone();
    assert_eq!(after_one.step, 1);

    let mut missing = batch.clone();
    missing.remove("buy"); // read by the last-but-one term, after others succeeded
    assert!(reference.step(&missing).is_err());
    let mut bad_class = batch.clone();
    bad_class.insert(
        "cls".into(),
        HostTensor::int([B], vec![0, 1, 2, 3, 4, 0, 1]),
    );
    assert!(reference.step(&bad_class).is_err());
    assert_eq!(reference.state(), &after_one);

    reference.step(&batch).unwrap();
    assert_eq!(reference.state().step, 2);
    assert_eq!(reference.state().adam_t, 2);
}

#[test]
fn softmax_hand_values_through_a_step() {
    // Two rows, C = 3, class weights with the default weighted_mean: (c_0·l_0 + c_2·l_1) / (c_0 + c_2).
    let config = parse(
        "[[losses]]\nloss_type = \"softmax_cross_entropy\"\nlogits = \"z\"\nlabels = \"y\"\n\
         class_weights = [2.0, 1.0, 0.5]\nignore_index = -1\n",
    );
    let mut batch = HostBatch::new();
    batch.insert(
        "z".into(),
        HostTensor::real([3, 3], vec![1.0, 2.0, 3.0, 0.0, 0.0, 0.0, 9.0, 9.0, 9.0]),
    );
    batch.insert("y".into(), HostTensor::int([3], vec![0, 2, -1]));
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    let l0 = 2.40760596444438; // ln(e + e² + e³) − 1
    let l1 = 3f64.ln();
    let want = (2.0 * l0 + 0.5 * l1) / 2.5;
    assert!((out.total - want).abs() < 1e-13, "{} vs {want}", out.total);
    assert_eq!(
        &out.grads["z"][6..],
        &[0.0; 3],
        "the ignored row gets no gradient"
    );

    // An all-ignored batch: loss 0 and zero gradient (PyTorch gives NaN).
    batch.insert("y".into(), HostTensor::int([3], vec![-1, -1, -1]));
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    assert_eq!(out.total, 0.0);
    assert!(out.grads["z"].iter().all(|g| *g == 0.0));
}

#[test]
fn focal_nonzero_mean_counts_nonzero_weights() {
    let batch = test_batch(14);
    let config = parse(
        "[[losses]]\nloss_type = \"binary_focal_loss\"\nlogits = \"x\"\nlabels = \"y\"\n\
         sample_weights = \"w\"\n",
    );
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    let HostData::Real(x) = &batch["x"].data else {
        unreachable!()
    };
    let HostData::Real(y) = &batch["y"].data else {
        unreachable!()
    };
    let HostData::Real(w) = &batch["w"].data else {
        unreachable!()
    };
    let f = super::binary::Focal {
        gamma: 2.0,
        alpha: None,
        label_smoothing: 0.0,
    };
    let sum: f64 = (0..B)
        .map(|i| w[i] * super::binary::focal(x[i], y[i], &f).0)
        .sum();
    assert!(
        (out.total - sum / 5.0).abs() < 1e-14,
        "5 of 7 weights are non-zero"
    );
}

pub(super) fn error_of(config: &str, batch: &HostBatch) -> String {
    let config = parse(config);
    let mut reference = Reference::new(&config).unwrap();
    let e = reference.step(batch).unwrap_err();
    assert!(matches!(e, Error::Tensor { .. }), "{e:?}");
    e.to_string()
}

pub(super) fn assert_mentions(message: &str, parts: &[&str]) {
    for p in parts {
        assert!(message.contains(p), "'{message}' does not mention {p}");
    }
}

#[test]
fn errors_name_the_tensor_the_term_and_the_shapes() {
    let batch = test_batch(15);
    let ctr = "[[losses]]\nname = \"ctr\"\nloss_type = \"classification\"\nlogits = \"x\"\nlabels = \"y\"\n";

    let mut b = batch.clone();
    b.remove("y");
    assert_mentions(&error_of(ctr, &b), &["'y'", "'ctr'", "missing", "labels"]);

    let mut b = batch.clone();
    b.insert("y".into(), HostTensor::real([B + 1], vec![0.0; B + 1]));
    assert_mentions(&error_of(ctr, &b), &["'y'", "'ctr'", "[7]", "[8]", "'x'"]);

    // Integer labels are read as reals (losses::labels), and checked as reals.
    let mut b = batch.clone();
    b.insert("y".into(), HostTensor::int([B], vec![2; B]));
    assert_mentions(&error_of(ctr, &b), &["'y'", "'ctr'", "[0, 1]"]);

    let mut b = batch.clone();
    b.insert("y".into(), HostTensor::real([B], vec![2.0; B]));
    assert_mentions(&error_of(ctr, &b), &["'y'", "'ctr'", "[0, 1]"]);

    let mut b = batch.clone();
    b.insert("x".into(), HostTensor::real([B, 2, 2], vec![0.0; B * 4]));
    assert_mentions(&error_of(ctr, &b), &["'x'", "'ctr'", "[7, 2, 2]"]);

    let mut b = batch.clone();
    b.insert("x".into(), HostTensor::real([B], vec![0.0; 3]));
    assert_mentions(&error_of(ctr, &b), &["'x'", "'ctr'", "3 values", "[7]"]);

    let weighted = format!("{ctr}sample_weights = \"nope\"\n");
    assert_mentions(
        &error_of(&weighted, &batch),
        &["'nope'", "'ctr'", "sample_weights"],
    );
    let weighted = format!("{ctr}sample_weights = {{ c1 = 1.0, z = 2.0 }}\n");
    assert_mentions(&error_of(&weighted, &batch), &["'z'", "'ctr'", "[7, 4]"]);

    let pw = format!("{ctr}pos_weight = 2.0\n")
        .replace("\"x\"", "\"z\"")
        .replace("\"y\"", "\"cls_all\"");
    assert_mentions(
        &error_of(&pw, &batch),
        &["'z'", "'ctr'", "pos_weight", "[7, 4]"],
    );
    let t = format!("{ctr}temperature = 2.0\nz_loss = 0.1\n");
    assert_mentions(
        &error_of(&t, &batch),
        &["'x'", "'ctr'", "temperature", "z_loss"],
    );

    let sm = "[[losses]]\nname = \"sm\"\nloss_type = \"softmax_cross_entropy\"\nlogits = \"z\"\nlabels = \"cls\"\n";
    assert_mentions(&error_of(sm, &batch), &["'cls'", "'sm'", "-100", "[0, 4)"]);
    let ignore = format!("{sm}ignore_index = -1\n");
    assert_mentions(
        &error_of(&ignore, &batch),
        &["'cls'", "'sm'", "-100", "ignore_index (-1)"],
    );
    let cw = format!("{sm}class_weights = [1.0, 2.0]\nignore_index = -100\n");
    assert_mentions(
        &error_of(&cw, &batch),
        &["'z'", "'sm'", "class_weights", "2 entries", "C = 4"],
    );
    let on_x = sm.replace("\"z\"", "\"x\"");
    assert_mentions(&error_of(&on_x, &batch), &["'x'", "'sm'", "[B, C]", "[7]"]);
    let probs = sm.replace("\"cls\"", "\"w\"");
    assert_mentions(&error_of(&probs, &batch), &["'w'", "'sm'", "[7, 4]", "[7]"]);
    let short = sm.replace("\"cls\"", "\"short\"");
    let mut b = batch.clone();
    b.insert("short".into(), HostTensor::int([3], vec![0; 3]));
    assert_mentions(&error_of(&short, &b), &["'short'", "'sm'", "[7]", "[3]"]);

    let esmm =
        "[[losses]]\nname = \"e\"\nloss_type = \"esmm\"\nctr_logits = \"a\"\ncvr_logits = \"z\"\n\
                ctr_labels = \"click\"\nctcvr_labels = \"buy\"\n";
    assert_mentions(&error_of(esmm, &batch), &["'z'", "'e'", "[7, 4]"]);
    let ce = "[[losses]]\nname = \"ce\"\nloss_type = \"cross_entropy_loss\"\nprobabilities = \"x\"\nlabels = \"y\"\n";
    assert_mentions(
        &error_of(ce, &batch),
        &["'x'", "'ce'", "probabilities", "[0, 1]"],
    );
}

#[test]
fn a_state_of_the_wrong_size_is_refused() {
    let config = multi("", false);
    let mut reference = Reference::new(&config).unwrap();
    let mut state = reference.state().clone();
    state.log_vars.pop();
    reference.set_state(state);
    let e = reference.step(&test_batch(16)).unwrap_err();
    assert!(matches!(e, Error::State(_)), "{e}");
}

#[test]
fn combined_sample_weights_are_the_weighted_sum_of_tensors() {
    let batch = test_batch(17);
    let config = parse(
        "[[losses]]\nloss_type = \"l2_loss\"\npredictions = \"pred\"\nlabels = \"target\"\n\
         reduction = \"sum\"\nsample_weights = { c1 = 1.0, c2 = 3.0 }\n",
    );
    let out = Reference::new(&config).unwrap().step(&batch).unwrap();
    let col = |n: &str| match &batch[n].data {
        HostData::Real(v) => v.clone(),
        HostData::Int(_) => unreachable!(),
    };
    let (p, t, c1, c2) = (col("pred"), col("target"), col("c1"), col("c2"));
    let want: f64 = (0..B)
        .map(|i| (c1[i] + 3.0 * c2[i]) * (p[i] - t[i]).powi(2))
        .sum();
    assert!((out.total - want).abs() < 1e-13, "{} vs {want}", out.total);
}

#[test]
fn an_invalid_config_is_refused_by_new() {
    let mut config = multi("", false);
    config.strategy = Strategy::EmaReweight(crate::config::EmaReweight {
        main: "ctr".into(),
        aux: "nope".into(),
        alpha: 0.1,
        lambda: 1.0,
        theta0: 0.0,
        detach_theta: true,
    });
    assert!(Reference::new(&config).is_err());
}

#[test]
fn f1_reweighted_options_and_gradient_through_neg_w() {
    let batch = test_batch(11);
    let mut n = 0;
    for beta in ["", "f1_beta_square = 4.0", "f1_beta_square = 0.25"] {
        for ls in ["", "label_smoothing = 0.2"] {
            for reduction in REDUCTIONS {
                let weights = WEIGHTS[n % 3];
                n += 1;
                let config = parse(&format!(
                    "[[losses]]\nloss_type = \"f1_reweighted_loss\"\nlogits = \"x\"\n\
                     labels = \"y\"\n{beta}\n{ls}\n{reduction}\n{weights}\n"
                ));
                check(&config, &batch, None);
            }
        }
    }
    // By hand: β² = 1 gives neg_w = tp / (tp + 1e-8) ≈ 1, i.e. plain sigmoid CE.
    let plain = parse("[[losses]]\nloss_type='classification'\nlogits='x'\nlabels='y'\n");
    let f1 = parse("[[losses]]\nloss_type='f1_reweighted_loss'\nlogits='x'\nlabels='y'\n");
    let a = Reference::new(&plain).unwrap().step(&batch).unwrap().total;
    let b = Reference::new(&f1).unwrap().step(&batch).unwrap().total;
    assert!((a - b).abs() < 1e-6 * a, "{a} vs {b}");
}

#[test]
fn ghm_c_options_and_momentum_over_steps() {
    let batch = test_batch(12);
    for bins in ["", "bins = 1", "bins = 3", "bins = 100"] {
        for momentum in ["", "momentum = 0.75"] {
            for weights in WEIGHTS {
                let config = parse(&format!(
                    "[[losses]]\nloss_type = \"ghm_c\"\nlogits = \"x\"\nlabels = \"y\"\n\
                     {bins}\n{momentum}\n{weights}\n"
                ));
                // The weights are detached and piecewise constant, so finite differences see
                // exactly the analytic gradient away from the bin edges.
                check(&config, &batch, None);
                // A second step from the evolved accumulators.
                let mut r = Reference::new(&config).unwrap();
                r.step(&batch).unwrap();
                check(&config, &batch, Some(r.state().clone()));
            }
        }
    }
    // Momentum: acc_k ← m·acc_k + (1 − m)·n_k, so after two identical steps acc = (1 − m²)·n.
    let config =
        parse("[[losses]]\nloss_type='ghm_c'\nlogits='x'\nlabels='y'\nbins=1\nmomentum=0.5\n");
    let mut r = Reference::new(&config).unwrap();
    r.step(&batch).unwrap();
    r.step(&batch).unwrap();
    assert_eq!(r.state().ghm_acc[0], vec![B as f64 * 0.75]);
    // A state without the accumulators is refused.
    let mut s = r.state().clone();
    s.ghm_acc[0].clear();
    r.set_state(s);
    assert!(matches!(r.step(&batch), Err(Error::State(_))));
    // 'reduction' does not apply to ghm_c.
    let e = LossConfig::from_toml_str(
        "[[losses]]\nloss_type='ghm_c'\nlogits='x'\nlabels='y'\nreduction='sum'\n",
    )
    .unwrap_err();
    assert!(e.to_string().contains("reduction"), "{e}");
}
