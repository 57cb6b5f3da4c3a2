//! The listwise terms (`listwise_rank_loss`, `listwise_distill_loss`) on every adapter against the
//! f64 reference: raw and label-logit targets, distillation from teacher positions, temperatures,
//! sessions of one row, all-zero sessions, sessions of thousands of rows spanning many blocks,
//! the learned scale (w, b) with its optimiser over steps, its state saved and loaded, and one
//! session sort shared with pair_wise_loss and jrc_loss on the same session tensor.

mod common;
use common::*;
use lossfuse::{LossConfig, Shapes};

fn term(body: &str) -> String {
    format!("[[losses]]\n{body}\n")
}

/// Sessions of the sizes given, cycling, ids shuffled over the rows and spread over the i32
/// range.
fn sessions(rng: &mut Rng, b: usize, sizes: &[usize]) -> Vec<i64> {
    let mut ids = Vec::with_capacity(b);
    let mut s = 0usize;
    while ids.len() < b {
        let n = sizes[s % sizes.len()].min(b - ids.len());
        ids.extend(std::iter::repeat_n((s as i64) * 104_729 - 1_000_000, n));
        s += 1;
    }
    for i in (1..b).rev() {
        let j = rng.below(i as u64 + 1) as usize;
        ids.swap(i, j);
    }
    ids
}

/// Logits `x`, graded labels `y` in 0..=3 (a third of them 0), teacher positions `pos` in
/// 0..700 (some below 1, some beyond the clip), JRC logits `z` and binary labels `yb`, sample
/// weights `w`, sessions `s` of the given sizes.
fn batch(seed: u64, b: usize, sizes: &[usize]) -> Inputs {
    let mut rng = Rng::new(seed);
    let y: Vec<f64> = (0..b)
        .map(|_| {
            if rng.unit() < 0.33 {
                0.0
            } else {
                rng.below(4) as f64
            }
        })
        .collect();
    let pos: Vec<f64> = (0..b).map(|_| (rng.below(700) as f64) * 0.999).collect();
    let x = reals(&mut rng, b, -3.0, 3.0);
    let z = reals(&mut rng, 2 * b, -3.0, 3.0);
    let yb = binary(&mut rng, b, 0.35);
    let w = sample_weights(&mut rng, b);
    let s = sessions(&mut rng, b, sizes);
    Inputs::new()
        .real("x", &[b], x)
        .real("y", &[b], y)
        .real("pos", &[b], pos)
        .real("z", &[b, 2], z)
        .real("yb", &[b], yb)
        .real("w", &[b], w)
        .ids("s", &[b], s)
}

const LISTWISE: &[&str] = &[
    "loss_type = 'listwise_rank_loss'\nlabels = 'y'",
    "loss_type = 'listwise_rank_loss'\nlabels = 'y'\ntemperature = 0.5",
    "loss_type = 'listwise_rank_loss'\nlabels = 'y'\nlabel_is_logits = true",
    "loss_type = 'listwise_rank_loss'\nlabels = 'y'\nlabel_is_logits = true\ntemperature = 2.5",
    "loss_type = 'listwise_rank_loss'\nlabels = 'y'\nreduction = 'sum'",
    "loss_type = 'listwise_distill_loss'\nlabels = 'pos'",
    "loss_type = 'listwise_distill_loss'\nlabels = 'pos'\nlabel_clip_max_value = 30\ntemperature = 0.7",
];

/// Per-session sums in f32 over up to thousands of rows.
const LIST_TOL: Tol = Tol {
    rel: 2e-4,
    abs: 1e-6,
    grad_norm: 2e-4,
    grad_elem: 5e-4,
};

fn listwise(loss: &str, extra: &str) -> String {
    term(&format!("{loss}\nlogits = 'x'\nsession = 's'\n{extra}"))
}

#[test]
fn every_listwise_option_with_small_sessions() {
    // Sizes 1 (a softmax over one row: no loss, no gradient) to 40, interleaved.
    let b = batch(1, 777, &[1, 2, 3, 5, 8, 13, 40]);
    for loss in LISTWISE {
        for extra in ["", "weight = 0.4"] {
            check_all(&listwise(loss, extra), &b, 1, LIST_TOL);
        }
    }
}

#[test]
fn sessions_of_thousands_of_rows_span_many_blocks() {
    // One session of 5,000 rows (20 blocks of 256), one of 1,500, and tiny ones around them.
    let b = batch(2, 7_000, &[5_000, 1, 1_500, 2, 3, 1]);
    for loss in LISTWISE {
        check_all(&listwise(loss, ""), &b, 1, LIST_TOL);
    }
    // Every row in one session.
    let one = batch(3, 3_000, &[3_000]);
    check_all(&listwise(LISTWISE[2], ""), &one, 1, LIST_TOL);
}

#[test]
fn the_learned_scale_over_steps() {
    let b = batch(4, 900, &[1, 4, 9, 30, 120]);
    for loss in LISTWISE {
        for opt in [
            "",
            "scale_optimizer = { optimizer = 'sgd', learning_rate = 0.5 }",
            "scale_optimizer = { optimizer = 'adam', learning_rate = 0.1 }",
        ] {
            check_all(
                &listwise(loss, &format!("scale_logits = true\n{opt}")),
                &b,
                3,
                LIST_TOL,
            );
        }
    }
}

#[test]
fn the_learned_scale_and_its_gradient_are_reported() {
    let b = batch(5, 600, &[2, 7, 25]);
    let config = LossConfig::from_toml_str(&listwise(
        LISTWISE[3],
        "scale_logits = true\nscale_optimizer = { optimizer = 'sgd', learning_rate = 2.0 }",
    ))
    .unwrap();
    let reference = run_reference(&config, &b.0, 3);
    for engine in engines() {
        let gpu = run_gpu(&engine, &config, &b.0, 3);
        for (g, r) in gpu.iter().zip(&reference) {
            let scale = g.report.terms[0].scale.expect("scale reported");
            let want = r.jrc_u_grads[0];
            for (i, (got, want)) in scale.grad.iter().zip(want).enumerate() {
                assert!(
                    (*got as f64 - want).abs() < 1e-4 * (1.0 + want.abs()),
                    "{}: d/d{}: {got} vs {want}",
                    engine.adapter().label(),
                    ["w", "b"][i]
                );
            }
        }
        assert_eq!(gpu[0].report.terms[0].scale.unwrap().wb, [1.0, 0.0]);
        let wb = gpu[2].report.terms[0].scale.unwrap().wb;
        assert!(wb[0] != 1.0, "w after two sgd steps: {wb:?}");
    }
    // Without scale_logits nothing is reported.
    let plain = LossConfig::from_toml_str(&listwise(LISTWISE[0], "")).unwrap();
    for engine in engines() {
        assert!(run_gpu(&engine, &plain, &b.0, 1)[0].report.terms[0]
            .scale
            .is_none());
    }
}

#[test]
fn the_learned_scale_saves_and_loads() {
    let b = batch(6, 500, &[3, 10, 50]);
    let config = LossConfig::from_toml_str(&listwise(
        LISTWISE[5],
        "scale_logits = true\nscale_optimizer = { optimizer = 'adam', learning_rate = 0.2 }",
    ))
    .unwrap();
    let owned = lossfuse::OwnedBatch::from_host(&b.0).unwrap();
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&b.0)).unwrap();
        let fresh = plan.save_state().unwrap();
        plan.step(&owned.batch())
            .unwrap()
            .report_blocking()
            .unwrap();
        let saved = plan.save_state().unwrap();
        assert_ne!(saved, fresh, "one adam step moves (w, b)");
        let run = |plan: &mut lossfuse::Plan| {
            (0..2)
                .map(|_| {
                    let out = plan.step(&owned.batch()).unwrap();
                    (out.report_blocking().unwrap(), out.read_grad("x").unwrap())
                })
                .collect::<Vec<_>>()
        };
        let first = run(&mut plan);
        plan.load_state(&saved).unwrap();
        let again = run(&mut plan);
        assert_eq!(first, again, "{}", engine.adapter().label());
        // A reset starts again from w = 1, b = 0.
        plan.reset_state();
        assert_eq!(plan.save_state().unwrap(), fresh);
        let w1 = plan
            .step(&owned.batch())
            .unwrap()
            .report_blocking()
            .unwrap();
        assert_eq!(w1.terms[0].scale.unwrap().wb, [1.0, 0.0]);
    }
}

#[test]
fn listwise_pairwise_and_jrc_share_one_session_sort() {
    let b = batch(7, 1_000, &[1, 2, 6, 17, 60]);
    let config = format!(
        "{}{}{}{}",
        term("name = 'pairs'\nloss_type = 'pair_wise_loss'\nlogits = 'x'\nlabels = 'y'\nsession = 's'\nsample_weights = 'w'"),
        term("name = 'jrc'\nloss_type = 'jrc_loss'\nlogits = 'z'\nlabels = 'yb'\nsession = 's'"),
        term("name = 'rank'\nloss_type = 'listwise_rank_loss'\nlogits = 'x'\nlabels = 'y'\nsession = 's'\nscale_logits = true\nscale_optimizer = { optimizer = 'sgd', learning_rate = 0.1 }"),
        term("name = 'distill'\nloss_type = 'listwise_distill_loss'\nlogits = 'x'\nlabels = 'pos'\nsession = 's'\nweight = 0.5"),
    );
    check_all(&config, &b, 2, LIST_TOL);
    let parsed = LossConfig::from_toml_str(&config).unwrap();
    for engine in engines() {
        let plan = engine.plan(&parsed, &Shapes::of_host(&b.0)).unwrap();
        let labels: Vec<String> = plan.describe().into_iter().map(|(l, _, _)| l).collect();
        let sorts = labels
            .iter()
            .filter(|l| l.ends_with("session init"))
            .count();
        assert_eq!(sorts, 1, "one sort of 's' for all four terms: {labels:?}");
        assert!(labels.iter().any(|l| l.starts_with("listwise[rank]")));
        assert!(labels.iter().any(|l| l.starts_with("listwise[distill]")));
    }
}

#[test]
fn sample_weights_are_refused_at_config_time() {
    let e = LossConfig::from_toml_str(&listwise(LISTWISE[0], "name = 'lw'\nsample_weights = 'w'"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("lw") && e.contains("sample_weights"), "{e}");
}
