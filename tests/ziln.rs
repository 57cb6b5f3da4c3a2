//! `ziln_loss` on every adapter against the f64 reference: value, gradient to the [B, 3] logits
//! and the per-row prediction, with σ inside and outside its clip, batches without positive or
//! without zero labels, beside other row terms (fused and unfused), and what it refuses.

mod common;
use common::*;
use lossfuse::{LossConfig, OwnedBatch, Shapes};

/// B rows: ZILN logits `zl` [B, 3] (p logit, μ, σ logit in ±`scale`), amounts `amount` (a share
/// `zero` of them 0, the rest lognormal), a binary column `x`/`y` for other row terms.
fn batch(seed: u64, b: usize, scale: f64, zero: f64) -> Inputs {
    let mut rng = Rng::new(seed);
    let zl = reals(&mut rng, 3 * b, -scale, scale);
    let amount: Vec<f64> = (0..b)
        .map(|_| {
            if rng.unit() < zero {
                0.0
            } else {
                (1.0 + rng.normal()).exp()
            }
        })
        .collect();
    let x = reals(&mut rng, b, -4.0, 4.0);
    let y = binary(&mut rng, b, 0.3);
    Inputs::new()
        .real("zl", &[b, 3], zl)
        .real("amount", &[b], amount)
        .real("x", &[b], x)
        .real("y", &[b], y)
}

fn ziln(extra: &str) -> String {
    format!("[[losses]]\nloss_type = 'ziln_loss'\nlogits = 'zl'\nlabels = 'amount'\n{extra}\n")
}

#[test]
fn defaults_against_the_reference() {
    check_all(&ziln(""), &batch(1, 1000, 3.0, 0.4), 1, TOL);
    // B not a multiple of the workgroup, one row.
    check_all(&ziln("weight = 0.5"), &batch(2, 333, 3.0, 0.4), 1, TOL);
    check_all(&ziln(""), &batch(3, 1, 2.0, 0.0), 1, TOL);
}

#[test]
fn parameters_and_the_clip_of_sigma() {
    // σ logits in ±6: softplus above max_sigma = 1.5 on a third of the rows.
    let b = batch(4, 800, 6.0, 0.3);
    check_all(
        &ziln("classification_weight = 0.3\nregression_weight = 2.0\nmu_regularization = 0.1\nsigma_regularization = 0.0\nmax_sigma = 1.5"),
        &b,
        1,
        TOL,
    );
    // σ logits down to −20: σ at its floor sqrt(1e-7) = 3.2e-4, where dNLL/dμ = −(ln y − μ)/σ²
    // scales f32's rounding of ln y − μ by 1e7: the gradient is compared to 1e-3.
    let b = batch(12, 800, 20.0, 0.3);
    check_all(
        &ziln(""),
        &b,
        1,
        Tol {
            grad_norm: 1e-3,
            grad_elem: 1e-3,
            ..TOL
        },
    );
    check_all(
        &ziln("return_log_pred_value = true"),
        &batch(5, 500, 3.0, 0.4),
        1,
        TOL,
    );
    check_all(
        &ziln("max_log_clip_value = 1.0"),
        &batch(6, 500, 3.0, 0.4),
        1,
        TOL,
    );
}

#[test]
fn only_zero_labels_and_only_positive_labels() {
    check_all(&ziln(""), &batch(7, 700, 3.0, 1.0), 1, TOL);
    check_all(&ziln(""), &batch(8, 700, 3.0, 0.0), 1, TOL);
}

#[test]
fn beside_other_row_terms_fused_and_unfused() {
    let others = "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
                  [[losses]]\nname = 'ltv2'\nloss_type = 'ziln_loss'\nlogits = 'zl'\nlabels = 'amount'\nmax_sigma = 2.0\nweight = 0.25\n";
    let config = format!("{}{others}", ziln(""));
    let b = batch(9, 1500, 3.0, 0.5);
    check_all(&config, &b, 2, TOL);
    check_all(&format!("flooding = 5.0\n{config}"), &b, 1, TOL);
    // Fused: one pass over the [B, 3] logits (the statistics pass reads only the labels).
    let config = LossConfig::from_toml_str(&config).unwrap();
    let owned = OwnedBatch::from_host(&b.0).unwrap();
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&b.0)).unwrap();
        let step = plan.step(&owned.batch()).unwrap();
        assert_eq!(
            step.counters().passes_over("zl"),
            1,
            "{}",
            engine.adapter().label()
        );
        assert_eq!(step.counters().passes_over("amount"), 2);
        let names: Vec<&String> = plan.prediction_names().collect();
        assert_eq!(names, ["ltv2", "ziln_loss"]);
    }
}

#[test]
fn prediction_of_a_term_without_one_names_the_term() {
    let b = batch(10, 64, 3.0, 0.4);
    let config = LossConfig::from_toml_str(&format!(
        "{}[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n",
        ziln("")
    ))
    .unwrap();
    let owned = OwnedBatch::from_host(&b.0).unwrap();
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&b.0)).unwrap();
        let step = plan.step(&owned.batch()).unwrap();
        let e = step.prediction("classification").unwrap_err().to_string();
        assert!(
            e.contains("classification") && e.contains("ziln_loss"),
            "{e}"
        );
        assert_eq!(step.read_prediction("ziln_loss").unwrap().len(), 64);
    }
}

#[test]
fn refusals_name_the_term_key_and_tensor() {
    let e = LossConfig::from_toml_str(&ziln("sample_weights = 'x'"))
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("ziln_loss") && e.contains("sample_weights"),
        "{e}"
    );
    let e = LossConfig::from_toml_str(&ziln("reduction = 'sum'"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("reduction"), "{e}");
    let e = LossConfig::from_toml_str(&ziln("max_sigma = 0.0"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("max_sigma"), "{e}");
    let config = LossConfig::from_toml_str(&ziln("")).unwrap();
    let engine = &engines()[0];
    // Logits [B, 2] are refused when the plan is built, naming the tensor and its shape.
    let wrong = Shapes::new()
        .tensor("zl", &[10, 2], lossfuse::DType::F32)
        .tensor("amount", &[10], lossfuse::DType::F32);
    let e = engine.plan(&config, &wrong).err().unwrap().to_string();
    assert!(
        e.contains("zl") && e.contains("[10, 2]") && e.contains("[B, 3]"),
        "{e}"
    );
    // A negative amount is refused before anything runs, on the GPU and in the reference.
    let mut b = batch(11, 50, 3.0, 0.4);
    if let lossfuse::HostData::Real(v) = &mut b.0.get_mut("amount").unwrap().data {
        v[7] = -1.0;
    }
    let owned = OwnedBatch::from_host(&b.0).unwrap();
    let mut plan = engine.plan(&config, &Shapes::of_host(&b.0)).unwrap();
    let e = plan.step(&owned.batch()).err().unwrap().to_string();
    assert!(e.contains("amount") && e.contains(">= 0"), "{e}");
    let mut r = lossfuse::reference::Reference::new(&config).unwrap();
    let e = r.step(&b.0).unwrap_err().to_string();
    assert!(e.contains("amount") && e.contains("row 7"), "{e}");
}

#[test]
fn a_negative_amount_in_a_device_buffer_is_refused_on_the_gpu() {
    let b = 500;
    let mut rng = Rng::new(13);
    let zl: Vec<f32> = reals(&mut rng, 3 * b, -2.0, 2.0)
        .into_iter()
        .map(|v| v as f32)
        .collect();
    let mut amount: Vec<f32> = (0..b).map(|i| (i % 3) as f32).collect();
    amount[321] = -2.0;
    let config = LossConfig::from_toml_str(&ziln("")).unwrap();
    let shapes = Shapes::new()
        .tensor("zl", &[b, 3], lossfuse::DType::F32)
        .tensor("amount", &[b], lossfuse::DType::F32);
    for engine in engines() {
        let mut plan = engine.plan(&config, &shapes).unwrap();
        let zb = device_buffer(engine.device(), engine.queue(), &zl);
        let ab = device_buffer(engine.device(), engine.queue(), &amount);
        let batch = lossfuse::Batch::new()
            .buffer("zl", &zb)
            .buffer("amount", &ab);
        let out = plan.step(&batch).unwrap();
        let e = out
            .report_blocking()
            .expect_err("a negative amount")
            .to_string();
        assert!(e.contains("'amount'") && e.contains("element 321"), "{e}");
    }
}

/// Bindings of 4 KiB: the [B, 3] logits (12 bytes a row) and the columns split into chunks, the
/// count of positives still covers every chunk.
#[test]
fn chunked_rows_match_the_reference() {
    let b = batch(14, 2000, 3.0, 0.4);
    let config = LossConfig::from_toml_str(&format!(
        "{}[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n",
        ziln("")
    ))
    .unwrap();
    let reference = run_reference(&config, &b.0, 1);
    for engine in engines_with(lossfuse::EngineOptions {
        max_binding_bytes: Some(4096),
        ..Default::default()
    }) {
        let gpu = run_gpu(&engine, &config, &b.0, 1);
        assert_matches(&engine.adapter().label(), &gpu[0], &reference[0], TOL);
    }
}
