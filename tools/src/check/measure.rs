//! Running a case on an engine or the reference, and how far two runs are apart.
//!
//! A run is a list of steps, each a set of named scalars (`total`, `loss/<term>`,
//! `weight/<term>`, `log_var_grad/<term>`, `jrc_u_grad/<term>[i]`, `scale_grad/<term>[0]`, a
//! listwise term's d total/dw) and row outputs: gradients, and per-row predictions
//! (`prediction/<term>`, compared as gradients are). Two runs are compared step by step and the
//! worst step is kept.

use super::cases::{Case, Tolerance};
use lossfuse::reference::{Reference, ReferenceOutput};
use lossfuse::{Engine, LossConfig, OwnedBatch, Report, Shapes};
use std::collections::BTreeMap;

/// One step's results, from either engine, in f64.
#[derive(Clone, Debug, Default)]
pub struct StepResult {
    /// Named scalars.
    pub scalars: BTreeMap<String, f64>,
    /// d total / d tensor, flat, and each per-row prediction as `prediction/<term>`.
    pub grads: BTreeMap<String, Vec<f64>>,
}

/// Appended to a step's error when the failed step changed the plan's state.
pub const STATE_CHANGED: &str = " (and the failed step changed the plan's state)";

/// Why a run has no results.
#[derive(Clone, Debug, PartialEq)]
pub enum RunError {
    /// The adapter cannot run this config (`lossfuse::Error::Unsupported` at plan time, e.g. a
    /// row larger than its storage bindings): not a conformance failure, but reported.
    Unsupported(String),
    /// Anything else: a wrong refusal, a GPU error, a failed read-back.
    Failed(String),
}

impl RunError {
    /// The message.
    pub fn message(&self) -> &str {
        match self {
            RunError::Unsupported(m) | RunError::Failed(m) => m,
        }
    }
}

/// Every step's results, or why there are none.
pub type RunResult = Result<Vec<StepResult>, RunError>;

/// Whether term `name` learns its weight (its d/ds is compared).
fn learned(config: &LossConfig, name: &str) -> bool {
    config.term(name).is_some_and(|t| t.learn_loss_weight)
}

/// Whether term `name` is a JRC term learning (u1, u2) (its d/du is compared).
fn jrc_learned(config: &LossConfig, name: &str) -> bool {
    config.term(name).is_some_and(|t| t.learns_jrc_weights())
}

fn from_report(config: &LossConfig, report: &Report) -> BTreeMap<String, f64> {
    let mut s = BTreeMap::new();
    s.insert("total".to_string(), report.total as f64);
    for t in &report.terms {
        s.insert(format!("loss/{}", t.name), t.value as f64);
        s.insert(format!("weight/{}", t.name), t.weight as f64);
        if learned(config, &t.name) {
            s.insert(format!("log_var_grad/{}", t.name), t.log_var_grad as f64);
        }
        if let (true, Some(j)) = (jrc_learned(config, &t.name), t.jrc) {
            for (i, g) in j.u_grad.iter().enumerate() {
                s.insert(format!("jrc_u_grad/{}[{i}]", t.name), *g as f64);
            }
        }
        if let Some(scale) = t.scale {
            s.insert(format!("scale_grad/{}[0]", t.name), scale.grad[0] as f64);
        }
    }
    s
}

fn from_reference(config: &LossConfig, out: &ReferenceOutput) -> StepResult {
    let mut s = BTreeMap::new();
    s.insert("total".to_string(), out.total);
    for (k, ((name, value), (_, weight))) in out.values.iter().zip(&out.weights).enumerate() {
        s.insert(format!("loss/{name}"), *value);
        s.insert(format!("weight/{name}"), *weight);
        if learned(config, name) {
            s.insert(format!("log_var_grad/{name}"), out.log_var_grads[k]);
        }
        if jrc_learned(config, name) {
            for (i, g) in out.jrc_u_grads[k].iter().enumerate() {
                s.insert(format!("jrc_u_grad/{name}[{i}]"), *g);
            }
        }
        // A listwise term's d total/dw (the reference keeps d/d(w, b) where JRC keeps d/du).
        // d total/db is 0 analytically (a softmax ignores a shift): the GPU's value is f32
        // rounding of a sum that cancels, with no relative scale to compare; tests/listwise.rs
        // bounds it absolutely.
        if config.term(name).is_some_and(|t| t.learns_listwise_scale()) {
            s.insert(format!("scale_grad/{name}[0]"), out.jrc_u_grads[k][0]);
        }
    }
    let mut grads = out.grads.clone();
    for (term, p) in &out.predictions {
        grads.insert(format!("prediction/{term}"), p.clone());
    }
    StepResult { scalars: s, grads }
}

/// The f64 reference over the case's steps.
pub fn run_reference(case: &Case) -> RunResult {
    let failed = |e: lossfuse::Error| RunError::Failed(e.to_string());
    let config = LossConfig::from_toml_str(&case.config).map_err(failed)?;
    let mut reference = Reference::new(&config).map_err(failed)?;
    (0..case.steps)
        .map(|_| {
            reference
                .step(&case.inputs)
                .map(|out| from_reference(&config, &out))
                .map_err(failed)
        })
        .collect()
}

/// The case on `engine`: outputs poisoned with NaN before every step, so an unwritten output
/// shows up as a non-finite value rather than as last step's numbers.
pub fn run_gpu(engine: &Engine, case: &Case) -> RunResult {
    // Messages leave out the adapter: the report's cell names it.
    let failed = RunError::Failed;
    let config = LossConfig::from_toml_str(&case.config).map_err(|e| failed(e.to_string()))?;
    let mut plan = match engine.plan(&config, &Shapes::of_host(&case.inputs)) {
        Ok(plan) => plan,
        Err(lossfuse::Error::Unsupported(m)) => return Err(RunError::Unsupported(m)),
        Err(e) => return Err(failed(format!("plan: {e}"))),
    };
    let owned = OwnedBatch::from_host(&case.inputs).map_err(|e| failed(e.to_string()))?;
    let batch = owned.batch();
    let names: Vec<String> = plan.grad_names().cloned().collect();
    let predicted: Vec<String> = plan.prediction_names().cloned().collect();
    let mut steps = Vec::with_capacity(case.steps);
    for s in 0..case.steps {
        plan.poison_outputs();
        let before = plan.save_state().map_err(|e| failed(e.to_string()))?;
        let out = match plan.step(&batch) {
            Ok(out) => out,
            Err(e) => {
                // A failed step must leave the state (bank, histograms, learned weights) as it was.
                let unchanged = plan.save_state().is_ok_and(|after| after == before);
                let note = if unchanged { "" } else { STATE_CHANGED };
                return Err(failed(format!("step {s}: {e}{note}")));
            }
        };
        let submissions = out.counters().submissions;
        if submissions != 1 {
            return Err(failed(format!(
                "step {s}: {submissions} queue submissions, expected one"
            )));
        }
        let report = out
            .report_blocking()
            .map_err(|e| failed(format!("step {s}: {e}")))?;
        let mut grads = BTreeMap::new();
        for n in &names {
            let g = out
                .read_grad(n)
                .map_err(|e| failed(format!("step {s}: reading grad/{n}: {e}")))?;
            grads.insert(n.clone(), g.into_iter().map(f64::from).collect());
        }
        for n in &predicted {
            let p = out
                .read_prediction(n)
                .map_err(|e| failed(format!("step {s}: reading prediction/{n}: {e}")))?;
            grads.insert(
                format!("prediction/{n}"),
                p.into_iter().map(f64::from).collect(),
            );
        }
        steps.push(StepResult {
            scalars: from_report(&config, &report),
            grads,
        });
    }
    Ok(steps)
}

/// How far a run is from a baseline run: the three measures of the conformance table, each the
/// worst over every step, scalar or gradient, normalised so that a case passes when each is at
/// most its tolerance.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Distance {
    /// max |a − b| / (max(|a|, |b|) + abs/rel) over every scalar (losses, weights, total, learned
    /// weight gradients).
    pub loss: f64,
    /// max ‖g − g_ref‖ / (‖g_ref‖ + 1e-12/grad_norm) over every gradient.
    pub grad: f64,
    /// max_i |g_i − g_ref,i| / (max_i |g_ref,i| + 1e-12/grad_elem) over every gradient.
    pub elem: f64,
    /// Where the largest of the three (relative to its tolerance) is: `step 2 grad/x`.
    pub worst: String,
    /// Why the runs cannot be compared (different keys or lengths, a non-finite value).
    pub mismatch: Option<String>,
}

impl Distance {
    /// Whether every measure is within `tol` (NaN never is).
    pub fn within(&self, tol: &Tolerance) -> bool {
        self.mismatch.is_none()
            && self.loss <= tol.rel
            && self.grad <= tol.grad_norm
            && self.elem <= tol.grad_elem
    }
}

/// The distance of run `a` from baseline `b` under `tol`.
pub fn distance(a: &[StepResult], b: &[StepResult], tol: &Tolerance) -> Distance {
    let mut d = Distance::default();
    let mut worst = 0.0f64;
    let mut note = |d: &mut Distance, ratio: f64, what: String| {
        // NaN ratios rank above everything.
        if ratio.is_nan() || ratio > worst {
            worst = if ratio.is_nan() { f64::INFINITY } else { ratio };
            d.worst = what;
        }
    };
    if a.len() != b.len() {
        d.mismatch = Some(format!("{} steps against {}", a.len(), b.len()));
        return d;
    }
    for (s, (x, y)) in a.iter().zip(b).enumerate() {
        if x.scalars.keys().ne(y.scalars.keys()) {
            d.mismatch = Some(format!("step {s}: different scalars"));
            return d;
        }
        if x.grads.keys().ne(y.grads.keys()) {
            d.mismatch = Some(format!(
                "step {s}: gradients of {:?} against {:?}",
                x.grads.keys().collect::<Vec<_>>(),
                y.grads.keys().collect::<Vec<_>>()
            ));
            return d;
        }
        for (k, &va) in &x.scalars {
            let vb = y.scalars[k];
            let e = if va == vb {
                0.0
            } else {
                (va - vb).abs() / (va.abs().max(vb.abs()) + tol.abs / tol.rel)
            };
            if !va.is_finite() && d.mismatch.is_none() {
                d.mismatch = Some(format!("step {s} {k} = {va}"));
            }
            d.loss = nan_max(d.loss, e);
            note(&mut d, e / tol.rel, format!("step {s} {k}"));
        }
        for (k, ga) in &x.grads {
            let gb = &y.grads[k];
            if ga.len() != gb.len() {
                d.mismatch = Some(format!(
                    "step {s} grad/{k}: {} elements against {}",
                    ga.len(),
                    gb.len()
                ));
                return d;
            }
            if let Some(i) = ga.iter().position(|v| !v.is_finite()) {
                if d.mismatch.is_none() {
                    d.mismatch = Some(format!(
                        "step {s} grad/{k}[{i}] = {} (unwritten or not finite)",
                        ga[i]
                    ));
                }
            }
            let norm_b = gb.iter().map(|v| v * v).sum::<f64>().sqrt();
            let max_b = gb.iter().fold(0.0f64, |m, v| m.max(v.abs()));
            let (mut diff2, mut max_diff) = (0.0f64, 0.0f64);
            for (va, vb) in ga.iter().zip(gb) {
                let e = (va - vb).abs();
                diff2 += e * e;
                max_diff = nan_max(max_diff, e);
            }
            let g = diff2.sqrt() / (norm_b + 1e-12 / tol.grad_norm);
            let el = max_diff / (max_b + 1e-12 / tol.grad_elem);
            d.grad = nan_max(d.grad, g);
            d.elem = nan_max(d.elem, el);
            note(
                &mut d,
                g / tol.grad_norm,
                format!("step {s} grad/{k} (norm)"),
            );
            note(
                &mut d,
                el / tol.grad_elem,
                format!("step {s} grad/{k} (element)"),
            );
        }
    }
    d
}

/// max that keeps NaN.
fn nan_max(a: f64, b: f64) -> f64 {
    if a.is_nan() || b.is_nan() {
        f64::NAN
    } else {
        a.max(b)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::cases::ROW_TOL;

    fn step(total: f64, g: &[f64]) -> StepResult {
        StepResult {
            scalars: [("total".to_string(), total)].into(),
            grads: [("x".to_string(), g.to_vec())].into(),
        }
    }

    #[test]
    fn identical_runs_are_zero_apart() {
        let a = [step(1.5, &[0.1, -0.2])];
        let d = distance(&a, &a, &ROW_TOL);
        assert_eq!((d.loss, d.grad, d.elem), (0.0, 0.0, 0.0));
        assert!(d.within(&ROW_TOL));
    }

    #[test]
    fn each_measure_is_relative_and_fails_beyond_its_tolerance() {
        let b = [step(2.0, &[1.0, 0.0, 0.0, 0.0])];
        let a = [step(2.0 * (1.0 + 5e-5), &[1.0, 3e-4, 0.0, 0.0])];
        let d = distance(&a, &b, &ROW_TOL);
        assert!((d.loss - 5e-5).abs() < 1e-6, "{d:?}");
        assert!((d.grad - 3e-4).abs() < 1e-8, "{d:?}");
        assert!((d.elem - 3e-4).abs() < 1e-8, "{d:?}");
        assert!(!d.within(&ROW_TOL));
        assert_eq!(d.worst, "step 0 grad/x (norm)");
    }

    #[test]
    fn the_absolute_floor_spares_values_near_zero() {
        // |a − b| = 5e-7 on a value of 1e-9: within abs = 1e-6.
        let (a, b) = ([step(5e-7, &[0.0])], [step(1e-9, &[0.0])]);
        let d = distance(&a, &b, &ROW_TOL);
        assert!(d.loss <= ROW_TOL.rel, "{d:?}");
    }

    #[test]
    fn non_finite_values_and_different_shapes_never_pass() {
        let b = [step(1.0, &[1.0, 2.0])];
        let d = distance(&[step(1.0, &[f32::NAN as f64, 2.0])], &b, &ROW_TOL);
        assert!(!d.within(&ROW_TOL));
        assert!(d.mismatch.unwrap().contains("grad/x[0]"));
        let d = distance(&[step(f64::NAN, &[1.0, 2.0])], &b, &ROW_TOL);
        assert!(!d.within(&ROW_TOL));
        let d = distance(&[step(1.0, &[1.0])], &b, &ROW_TOL);
        assert!(d.mismatch.unwrap().contains("1 elements against 2"));
        let d = distance(&[], &b, &ROW_TOL);
        assert!(!d.within(&ROW_TOL));
    }
}
