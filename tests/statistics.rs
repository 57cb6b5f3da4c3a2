//! The batch-wide terms (GHM-C, OHEM focal, F1-reweighted) on every adapter against the f64
//! reference: options, multi-step state, ties, extreme values, the four-term config in one
//! submission, and 16M rows.

mod common;
use common::*;
use lossfuse::{Batch, DType, LossConfig, OwnedBatch, Shapes};

fn term(body: &str) -> String {
    format!("[[losses]]\n{body}\n")
}

/// σ in f64, for keeping test rows away from GHM bin edges.
fn sigmoid(x: f64) -> f64 {
    1.0 / (1.0 + (-x).exp())
}

/// Logits (±`scale`), binary labels and sample weights (20% zero), with every gradient norm
/// g = |σ(x) − y| at least 1e-4 away from a multiple of 1/100 and of 1/3, so that f32 and f64 put
/// each row in the same GHM bin for 1, 3, 10 and 100 bins.
fn rows(seed: u64, b: usize, scale: f64) -> Inputs {
    let mut rng = Rng::new(seed);
    let y = binary(&mut rng, b, 0.3);
    let x: Vec<f64> = y
        .iter()
        .map(|&yi| loop {
            let x = rng.range(-scale, scale);
            let g = (sigmoid(x) - yi).abs();
            let near = |n: f64| ((g * n).round() - g * n).abs() < 1e-4 * n;
            if !near(100.0) && !near(3.0) {
                break x;
            }
        })
        .collect();
    let w = sample_weights(&mut rng, b);
    let c1 = binary(&mut rng, b, 0.5);
    Inputs::new()
        .real("x", &[b], x)
        .real("y", &[b], y)
        .real("w", &[b], w)
        .real("c1", &[b], c1)
}

#[test]
fn ghm_c_bins_momentum_and_weights() {
    let b = rows(1, 1000, 6.0);
    for bins in [1, 10, 100] {
        for momentum in [0.0, 0.75] {
            for weights in ["", "sample_weights = 'w'"] {
                // Three steps: with momentum the accumulators evolve from step to step.
                check_all(
                    &term(&format!(
                        "loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = {bins}\nmomentum = {momentum}\n{weights}"
                    )),
                    &b,
                    3,
                    TOL,
                );
            }
        }
    }
}

#[test]
fn ghm_c_empty_bins_and_no_valid_row() {
    // Logits near 0 with label 0: every g is near 0.5, so 99 of 100 bins are empty.
    let n = 300;
    let x: Vec<f64> = (0..n)
        .map(|i| 0.001 + 0.01 * (i as f64 / n as f64))
        .collect();
    let b = Inputs::new()
        .real("x", &[n], x)
        .real("y", &[n], vec![0.0; n])
        .real("zero", &[n], vec![0.0; n]);
    check_all(
        &term("loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 100\nmomentum = 0.75"),
        &b,
        2,
        TOL,
    );
    // No valid row: loss 0 and zero gradients.
    let config = term("loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nsample_weights = 'zero'");
    let reference = run_reference(&LossConfig::from_toml_str(&config).unwrap(), &b.0, 1);
    assert_eq!(reference[0].total, 0.0);
    for engine in engines() {
        let gpu = run_gpu(
            &engine,
            &LossConfig::from_toml_str(&config).unwrap(),
            &b.0,
            1,
        );
        assert_eq!(gpu[0].report.total, 0.0);
        assert!(gpu[0].grads["x"].iter().all(|&g| g == 0.0));
    }
}

#[test]
fn ghm_c_state_saves_and_resumes_bit_exactly() {
    let b = rows(2, 2000, 5.0);
    let config = LossConfig::from_toml_str(&term(
        "loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 30\nmomentum = 0.75\nsample_weights = 'w'",
    ))
    .unwrap();
    let reference = run_reference(&config, &b.0, 4);
    let owned = OwnedBatch::from_host(&b.0).unwrap();
    for engine in engines() {
        let shapes = Shapes::of_host(&b.0);
        let mut plan = engine.plan(&config, &shapes).unwrap();
        let run = |plan: &mut lossfuse::Plan| {
            let out = plan.step(&owned.batch()).unwrap();
            (out.report_blocking().unwrap(), out.read_grad("x").unwrap())
        };
        run(&mut plan);
        run(&mut plan);
        let saved = plan.save_state().unwrap();
        let third = run(&mut plan);
        let fourth = run(&mut plan);
        assert!(
            (fourth.0.total as f64 - reference[3].total).abs() < 1e-4 * reference[3].total,
            "{}: step 4 {} vs reference {}",
            engine.adapter().label(),
            fourth.0.total,
            reference[3].total
        );
        let mut resumed = engine.plan(&config, &shapes).unwrap();
        resumed.load_state(&saved).unwrap();
        assert_eq!(run(&mut resumed), third, "resumed step 3 is bit-identical");
        assert_eq!(run(&mut resumed), fourth, "resumed step 4 is bit-identical");
        assert_eq!(resumed.save_state().unwrap(), plan.save_state().unwrap());
        // A fresh state differs once the accumulators have moved.
        resumed.reset_state();
        assert_ne!(resumed.save_state().unwrap(), plan.save_state().unwrap());
    }
}

#[test]
fn ohem_ratios_on_random_rows() {
    let b = rows(3, 1000, 6.0);
    for ratio in [0.001, 0.1, 0.5, 0.999] {
        for extra in [
            "",
            "alpha = 0.25\nsample_weights = 'w'",
            "gamma = 0.0\nlabel_smoothing = 0.1",
        ] {
            check_all(
                &term(&format!(
                    "loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = {ratio}\n{extra}"
                )),
                &b,
                1,
                TOL,
            );
        }
    }
}

#[test]
fn ohem_keeps_exactly_k_among_ties() {
    // Rows drawn from four (logit, label) pairs: every value is tied hundreds of times, so the
    // k-th value is tied across the cut for every ratio; the lowest indices must be kept.
    let n = 1000;
    let mut rng = Rng::new(4);
    let pairs = [(2.0, 0.0), (-1.0, 1.0), (0.5, 0.0), (-3.0, 0.0)];
    let (x, y): (Vec<f64>, Vec<f64>) = (0..n).map(|_| pairs[rng.below(4) as usize]).unzip();
    let b = Inputs::new().real("x", &[n], x).real("y", &[n], y);
    for ratio in [0.001, 0.1, 0.25, 0.5, 0.999] {
        check_all(
            &term(&format!(
                "loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = {ratio}"
            )),
            &b,
            1,
            TOL,
        );
    }
    // All equal: k = 3 of 7 keeps rows 0, 1 and 2.
    let b = Inputs::new()
        .real("x", &[7], vec![1.0; 7])
        .real("y", &[7], vec![0.0; 7]);
    let config = LossConfig::from_toml_str(&term(
        "loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = 0.4",
    ))
    .unwrap();
    for engine in engines() {
        let g = &run_gpu(&engine, &config, &b.0, 1)[0].grads["x"];
        assert!(g[..3].iter().all(|&v| v > 0.0), "{g:?}");
        assert!(g[3..].iter().all(|&v| v == 0.0), "{g:?}");
    }
}

#[test]
fn ohem_with_negative_zero_and_huge_values() {
    // Huge logits on the wrong side (value ≈ 80), zero sample weights (value 0, never averaged),
    // tiny ones, and ordinary rows. (Negative sample weights are refused: tests/bad_inputs.rs.)
    let n = 600;
    let mut rng = Rng::new(5);
    let mut x = Vec::new();
    let mut y = Vec::new();
    let mut w = Vec::new();
    for i in 0..n {
        let label = (i % 2) as f64;
        match i % 5 {
            0 => x.push(if label == 1.0 { -80.0 } else { 80.0 }),
            _ => x.push(rng.range(-4.0, 4.0)),
        }
        y.push(label);
        w.push(match i % 7 {
            0 => 0.0,
            1 => rng.range(0.0, 1e-6),
            _ => rng.range(0.5, 2.0),
        });
    }
    let b = Inputs::new()
        .real("x", &[n], x)
        .real("y", &[n], y)
        .real("w", &[n], w);
    for ratio in [1.0 / n as f64, 0.1, 0.5, 0.999] {
        check_all(
            &term(&format!(
                "loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = {ratio}\nsample_weights = 'w'\ngamma = 1.0"
            )),
            &b,
            1,
            TOL,
        );
    }
}

#[test]
fn f1_reweighted_options() {
    let b = rows(6, 1000, 5.0);
    let mut n = 0;
    for beta in [1.0, 4.0, 0.25] {
        for ls in ["", "label_smoothing = 0.1"] {
            for reduction in ["nonzero_mean", "weighted_mean", "mean", "sum"] {
                let weights = [
                    "",
                    "sample_weights = 'w'",
                    "sample_weights = { w = 1.0, c1 = 2.0 }",
                ][n % 3];
                n += 1;
                check_all(
                    &term(&format!(
                        "loss_type = 'f1_reweighted_loss'\nlogits = 'x'\nlabels = 'y'\nf1_beta_square = {beta}\n{ls}\nreduction = '{reduction}'\n{weights}"
                    )),
                    &b,
                    1,
                    TOL,
                );
            }
        }
    }
}

/// examples/configs/batch_wide.toml (classification, focal with OHEM, GHM-C and F1 on the same
/// logits) on tensors `x` and `y`.
fn four_terms() -> String {
    include_str!("../examples/configs/batch_wide.toml")
        .replace("\"logits\"", "\"x\"")
        .replace("\"labels\"", "\"y\"")
}

#[test]
fn four_terms_share_one_submission_and_two_reads() {
    let b = rows(7, 5000, 6.0);
    for head in [
        "",
        "flooding = 0.05\n",
        "loss_weight_strategy = 'uncertainty'\n",
    ] {
        let config = format!("{head}{}", four_terms());
        // run_gpu asserts one submission per step; three steps move the GHM-C accumulators.
        check_all(&config, &b, 3, TOL);
        let config = LossConfig::from_toml_str(&config).unwrap();
        let owned = OwnedBatch::from_host(&b.0).unwrap();
        for engine in engines() {
            let mut plan = engine.plan(&config, &Shapes::of_host(&b.0)).unwrap();
            let out = plan.step(&owned.batch()).unwrap();
            let counters = out.counters().clone();
            // Statistics, then loss and gradient; flooding needs this step's total first.
            let reads = if head.starts_with("flooding") { 3 } else { 2 };
            assert_eq!(
                counters.tensor_passes["x"],
                reads,
                "{head}: {:?}",
                plan.describe()
            );
            assert_eq!(counters.submissions, 1);
        }
    }
}

#[test]
fn sixteen_million_rows() {
    let n = 1 << 24;
    let mut rng = Rng::new(8);
    let mut x = Vec::with_capacity(n);
    let mut y = Vec::with_capacity(n);
    for _ in 0..n {
        let label = (rng.unit() < 0.1) as i32 as f32;
        x.push(rng.range(-6.0, 6.0) as f32);
        y.push(label);
    }
    let config = LossConfig::from_toml_str(&four_terms()).unwrap();
    let mut host = lossfuse::HostBatch::new();
    host.insert(
        "x".into(),
        lossfuse::HostTensor::real([n], x.iter().map(|&v| v as f64).collect()),
    );
    host.insert(
        "y".into(),
        lossfuse::HostTensor::real([n], y.iter().map(|&v| v as f64).collect()),
    );
    let reference = run_reference(&config, &host, 1).remove(0);
    drop(host);
    let shapes = Shapes::new()
        .tensor("x", &[n], DType::F32)
        .tensor("y", &[n], DType::F32);
    for engine in engines() {
        let mut plan = engine.plan(&config, &shapes).unwrap();
        plan.poison_outputs();
        let out = plan
            .step(&Batch::new().tensor("x", &x).tensor("y", &y))
            .unwrap();
        let report = out.report_blocking().unwrap();
        let grad = out.read_grad("x").unwrap();
        let step = GpuStep {
            report,
            grads: [("x".to_string(), grad)].into(),
            predictions: Default::default(),
        };
        // At 16M rows a few values near OHEM's cut or a GHM bin edge fall on the other side in
        // f32, moving those rows' gradients wholesale: check values and the gradient's norm, not
        // every element.
        let tol = Tol {
            rel: 1e-4,
            abs: 1e-6,
            grad_norm: 1e-3,
            grad_elem: f64::INFINITY,
        };
        assert_matches(
            &format!("{} 16M rows", engine.adapter().label()),
            &step,
            &reference,
            tol,
        );
    }
}
