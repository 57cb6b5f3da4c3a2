//! Tests of the listwise terms (`listwise_rank_loss`, `listwise_distill_loss`): analytic
//! gradients for the logits and the learned (w, b) against central finite differences,
//! hand-computed values (a one-row session, an all-zero session that still counts), the learned
//! scale over steps, and the refused keys.

use super::tests::{assert_close, check, parse, SplitMix};
use super::*;
use crate::tensor::HostTensor;

/// Rows of the test batch.
const LB: usize = 12;

/// Session 5 = rows 0, 2, 5, 9; session 2 = rows 1, 4, 6, 10 (all labels 0 in `g`); session 9 =
/// rows 3, 7, 11; session 4 = row 8 alone.
const SESSIONS: [i64; LB] = [5, 2, 5, 9, 2, 5, 2, 9, 4, 5, 2, 9];

/// Logits `x`, graded labels `g` (session 2 all zero), teacher positions `pos` (one beyond the
/// default clip of 512, one below 1), session ids `s`.
fn list_batch(seed: u64) -> HostBatch {
    let mut r = SplitMix(seed);
    let mut b = HostBatch::new();
    b.insert("x".into(), HostTensor::real([LB], r.reals(LB, -3.0, 3.0)));
    let mut g: Vec<f64> = (0..LB).map(|_| r.below(4) as f64).collect();
    for i in [1, 4, 6, 10] {
        g[i] = 0.0;
    }
    (g[0], g[2], g[3]) = (3.0, 1.0, 2.0);
    b.insert("g".into(), HostTensor::real([LB], g));
    let mut pos: Vec<f64> = (0..LB).map(|_| 1.0 + r.below(20) as f64).collect();
    (pos[3], pos[5]) = (700.0, 0.5);
    b.insert("pos".into(), HostTensor::real([LB], pos));
    b.insert("s".into(), HostTensor::int([LB], SESSIONS.to_vec()));
    b
}

/// The listwise variants, as TOML lines after the roles.
const VARIANTS: [&str; 8] = [
    "loss_type = \"listwise_rank_loss\"\nlabels = \"g\"",
    "loss_type = \"listwise_rank_loss\"\nlabels = \"g\"\ntemperature = 0.5",
    "loss_type = \"listwise_rank_loss\"\nlabels = \"g\"\nlabel_is_logits = true",
    "loss_type = \"listwise_rank_loss\"\nlabels = \"g\"\nlabel_is_logits = true\ntemperature = 2.0",
    "loss_type = \"listwise_rank_loss\"\nlabels = \"g\"\nreduction = \"sum\"",
    "loss_type = \"listwise_distill_loss\"\nlabels = \"pos\"",
    "loss_type = \"listwise_distill_loss\"\nlabels = \"pos\"\nlabel_clip_max_value = 6\ntemperature = 0.7",
    "loss_type = \"listwise_distill_loss\"\nlabels = \"pos\"\nlabel_clip_max_value = 1",
];

fn config(variant: &str, extra: &str) -> LossConfig {
    parse(&format!(
        "[[losses]]\nname = \"list\"\nlogits = \"x\"\nsession = \"s\"\n{variant}\n{extra}\n"
    ))
}

/// A state with the learned (w, b) of term 0 set.
fn with_scale(config: &LossConfig, wb: [f64; 2]) -> ReferenceState {
    let mut s = ReferenceState::initial(config);
    s.jrc[0].u = wb;
    s
}

/// Checks d total/d(w, b) of term 0 against central differences from state `s0`.
fn check_scale_grads(config: &LossConfig, batch: &HostBatch, s0: &ReferenceState) {
    let mut r = Reference::new(config).unwrap();
    r.set_state(s0.clone());
    let out = r.step(batch).unwrap();
    for k in 0..2 {
        let total = |d: f64| {
            let mut s = s0.clone();
            s.jrc[0].u[k] += d;
            let mut r = Reference::new(config).unwrap();
            r.set_state(s);
            r.step(batch).unwrap().total
        };
        let h = 1e-6;
        let numeric = (total(h) - total(-h)) / (2.0 * h);
        assert_close(
            out.jrc_u_grads[0][k],
            numeric,
            &format!("d total/d {} in {config:?}", ["w", "b"][k]),
        );
    }
    assert!(out.jrc_u_grads[0][0].abs() > 1e-6, "d/dw vanishes");
}

#[test]
fn listwise_gradients_match_finite_differences() {
    let batch = list_batch(41);
    for v in VARIANTS {
        check(&config(v, ""), &batch, None);
        check(&config(v, "weight = 0.6"), &batch, None);
        let scaled = config(v, "scale_logits = true");
        for wb in [[1.0, 0.0], [0.7, 0.3], [-1.4, -0.5]] {
            let s = with_scale(&scaled, wb);
            check(&scaled, &batch, Some(s.clone()));
            check_scale_grads(&scaled, &batch, &s);
        }
    }
}

#[test]
fn listwise_hand_values() {
    // Sessions 7 = rows 0, 1; 3 = row 2 alone; 9 = rows 3, 4.
    let mut b = HostBatch::new();
    b.insert(
        "x".into(),
        HostTensor::real([5], vec![1.0, 2.0, 0.5, 0.0, 3.0]),
    );
    b.insert("s".into(), HostTensor::int([5], vec![7, 7, 3, 9, 9]));
    b.insert(
        "g".into(),
        HostTensor::real([5], vec![1.0, 0.0, 2.0, 0.0, 0.0]),
    );
    b.insert(
        "pos".into(),
        HostTensor::real([5], vec![1.0, 3.0, 2.0, 600.0, 1.0]),
    );
    let value = |v: &str, extra: &str| {
        let c = config(v, extra);
        let mut r = Reference::new(&c).unwrap();
        r.set_state(with_scale(&c, [-2.0, 1.0]));
        r.step(&b).unwrap()
    };
    let rank = "loss_type = \"listwise_rank_loss\"\nlabels = \"g\"";
    // Session 7: −1·log softmax(1; 1, 2) = log(e + e²) − 1; session 3: 0 (one row); session 9:
    // labels all 0, so 0, and it still counts: L = (log(e + e²) − 1)/3.
    let raw = value(rank, "");
    assert!(
        (raw.total - 0.43775389583940766).abs() < 1e-12,
        "{}",
        raw.total
    );
    let one_row = raw.grads["x"][2];
    assert_eq!(one_row, 0.0, "a one-row session has no gradient");
    // d/dx_0 = (softmax_0·Σy − y_0)/3 = (e/(e + e²) − 1)/3.
    let e = std::f64::consts::E;
    assert!((raw.grads["x"][0] - (e / (e + e * e) - 1.0) / 3.0).abs() < 1e-12);
    assert_eq!(
        raw.grads["x"][3], 0.0,
        "an all-zero session has no gradient"
    );
    let logits = value(rank, "label_is_logits = true");
    assert!(
        (logits.total - 0.8643025392406566).abs() < 1e-12,
        "{}",
        logits.total
    );
    let raw_t = value(rank, "temperature = 2.0");
    assert!((raw_t.total - 0.32469232806003556).abs() < 1e-12);
    let logits_t = value(rank, "label_is_logits = true\ntemperature = 2.0");
    assert!((logits_t.total - 0.5789066425879289).abs() < 1e-12);
    let sum = value(rank, "reduction = \"sum\"");
    assert!((sum.total - 3.0 * 0.43775389583940766).abs() < 1e-12);
    let distill = "loss_type = \"listwise_distill_loss\"\nlabels = \"pos\"";
    // Positions clipped to [1, 512], log(513) − log(p), normalised per session.
    let d = value(distill, "");
    assert!((d.total - 0.30368266631936314).abs() < 1e-12, "{}", d.total);
    // With the learned scale at (w, b) = (−2, 1): z = (2x + 1)/T.
    let scaled = value(distill, "temperature = 0.5\nscale_logits = true");
    assert!(
        (scaled.total - 0.7383173038585947).abs() < 1e-12,
        "{}",
        scaled.total
    );
}

#[test]
fn the_learned_scale_steps_with_its_optimizer() {
    let batch = list_batch(7);
    let c = config(
        VARIANTS[2],
        "scale_logits = true\nscale_optimizer = { optimizer = \"sgd\", learning_rate = 0.5 }",
    );
    let mut r = Reference::new(&c).unwrap();
    assert_eq!(r.state().jrc[0].u, [1.0, 0.0], "w starts at 1, b at 0");
    let out = r.step(&batch).unwrap();
    let g = out.jrc_u_grads[0];
    assert_eq!(r.state().jrc[0].u, [1.0 - 0.5 * g[0], -0.5 * g[1]]);
    assert!(
        g[1].abs() < 1e-12,
        "a shift of every logit does not change a softmax"
    );
    // Without an optimiser (w, b) stay, and d total/d(w, b) is still reported.
    let mut none = Reference::new(&config(VARIANTS[2], "scale_logits = true")).unwrap();
    let out = none.step(&batch).unwrap();
    assert_eq!(none.state().jrc[0].u, [1.0, 0.0]);
    assert_eq!(out.jrc_u_grads[0], g);
    // Adam over three steps moves w.
    let adam = config(
        VARIANTS[5],
        "scale_logits = true\nscale_optimizer = { optimizer = \"adam\", learning_rate = 0.1 }",
    );
    let mut r = Reference::new(&adam).unwrap();
    for _ in 0..3 {
        r.step(&batch).unwrap();
    }
    assert_eq!(r.state().jrc[0].t, 3);
    assert!((r.state().jrc[0].u[0] - 1.0).abs() > 0.05);
}

#[test]
fn refused_keys_name_the_term_and_key() {
    let refused = |v: &str, extra: &str, key: &str| {
        let text =
            format!("[[losses]]\nname = \"list\"\nlogits = \"x\"\nsession = \"s\"\n{v}\n{extra}\n");
        let e = LossConfig::from_toml_str(&text).unwrap_err().to_string();
        assert!(e.contains("list") && e.contains(key), "{e}");
    };
    for v in [VARIANTS[0], VARIANTS[5]] {
        refused(v, "sample_weights = \"w\"", "sample_weights");
        refused(v, "reduction = \"nonzero_mean\"", "reduction");
        refused(v, "temperature = 0.0", "temperature");
        refused(
            v,
            "scale_optimizer = { optimizer = \"sgd\" }",
            "scale_optimizer",
        );
    }
    refused(
        VARIANTS[5],
        "label_clip_max_value = 0.5",
        "label_clip_max_value",
    );
    let no_session =
        "[[losses]]\nloss_type = \"listwise_rank_loss\"\nlogits = \"x\"\nlabels = \"g\"\n";
    let e = LossConfig::from_toml_str(no_session)
        .unwrap_err()
        .to_string();
    assert!(e.contains("session"), "{e}");
}
