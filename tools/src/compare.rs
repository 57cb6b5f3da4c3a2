//! `lossfuse compare A B`: checks two `eval` outputs against each other (two adapters, or an
//! adapter and the reference). Scalars by relative error; gradients by the relative error of
//! their L2 norms and by the largest element error relative to the largest element.

use crate::error::CliResult;
use crate::eval::fmt_num;
use crate::io::read_batch;
use lossfuse::{HostBatch, HostData};
use lossfuse_cli::outln;
use std::path::PathBuf;
use std::process::ExitCode;

/// Arguments of `lossfuse compare`.
#[derive(clap::Args, Debug)]
pub struct CompareArgs {
    /// First file (e.g. a GPU run).
    pub a: PathBuf,
    /// Second file (e.g. the reference run).
    pub b: PathBuf,
    /// Tolerance on scalars and on gradient L2 norms: |a − b| ≤ atol + rtol·max(|a|, |b|).
    #[arg(long, default_value_t = 1e-4)]
    pub rtol: f64,
    /// Tolerance on the largest element error of a gradient, relative to its largest |element|.
    #[arg(long, default_value_t = 1e-3)]
    pub elem_rtol: f64,
    /// Absolute floor of both tolerances, for values that are (nearly) zero.
    #[arg(long, default_value_t = 1e-7)]
    pub atol: f64,
}

/// How one key compares.
#[derive(Clone, Debug, PartialEq)]
pub struct KeyComparison {
    /// The key (`loss/total`, `grad/logits`, ...).
    pub key: String,
    /// A's value (scalars) or L2 norm (tensors).
    pub a: f64,
    /// B's value or L2 norm.
    pub b: f64,
    /// |a − b| / max(|a|, |b|) (0 when both are 0).
    pub rel: f64,
    /// For tensors: max |a_i − b_i| and that over max |b_i|, |a_i|.
    pub elem: Option<(f64, f64)>,
    /// Why it fails, if it does.
    pub failure: Option<String>,
}

fn values(t: &lossfuse::HostTensor) -> Vec<f64> {
    match &t.data {
        HostData::Real(v) => v.clone(),
        HostData::Int(v) => v.iter().map(|&x| x as f64).collect(),
    }
}

fn rel(a: f64, b: f64) -> f64 {
    let scale = a.abs().max(b.abs());
    if a == b {
        0.0
    } else if scale == 0.0 || !scale.is_finite() {
        f64::INFINITY
    } else {
        (a - b).abs() / scale
    }
}

fn close(a: f64, b: f64, rtol: f64, atol: f64) -> bool {
    a == b || (a - b).abs() <= atol + rtol * a.abs().max(b.abs())
}

/// Compares every key of two files; keys in only one of them fail.
pub fn compare(a: &HostBatch, b: &HostBatch, args: &CompareArgs) -> Vec<KeyComparison> {
    let mut rows = Vec::new();
    let keys: std::collections::BTreeSet<&String> = a.keys().chain(b.keys()).collect();
    for key in keys {
        let (ta, tb) = match (a.get(key), b.get(key)) {
            (Some(ta), Some(tb)) => (ta, tb),
            (ta, _) => {
                rows.push(KeyComparison {
                    key: key.clone(),
                    a: f64::NAN,
                    b: f64::NAN,
                    rel: f64::NAN,
                    elem: None,
                    failure: Some(format!(
                        "missing in {}",
                        if ta.is_none() { "A" } else { "B" }
                    )),
                });
                continue;
            }
        };
        let (va, vb) = (values(ta), values(tb));
        if ta.shape != tb.shape || va.len() != vb.len() {
            rows.push(KeyComparison {
                key: key.clone(),
                a: f64::NAN,
                b: f64::NAN,
                rel: f64::NAN,
                elem: None,
                failure: Some(format!("shapes differ: {:?} vs {:?}", ta.shape, tb.shape)),
            });
            continue;
        }
        let nonfinite = va.iter().chain(&vb).any(|v| !v.is_finite());
        let row = if ta.shape.is_empty() || key.starts_with("loss/") || key.starts_with("weight/") {
            let (x, y) = (
                va.first().copied().unwrap_or(0.0),
                vb.first().copied().unwrap_or(0.0),
            );
            let ok = close(x, y, args.rtol, args.atol);
            KeyComparison {
                key: key.clone(),
                a: x,
                b: y,
                rel: rel(x, y),
                elem: None,
                failure: if nonfinite {
                    Some("not finite".into())
                } else {
                    (!ok).then(|| format!("relative error above {}", args.rtol))
                },
            }
        } else {
            let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>().sqrt();
            let (na, nb) = (norm(&va), norm(&vb));
            let max_err = va
                .iter()
                .zip(&vb)
                .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
            let scale = va.iter().chain(&vb).fold(0.0f64, |m, x| m.max(x.abs()));
            let elem_rel = if max_err == 0.0 { 0.0 } else { max_err / scale };
            let failure = if nonfinite {
                Some("not finite".into())
            } else if !close(na, nb, args.rtol, args.atol) {
                Some(format!("L2 norms differ by more than rtol {}", args.rtol))
            } else if max_err > args.atol + args.elem_rtol * scale {
                Some(format!(
                    "an element differs by more than elem_rtol {} of the largest",
                    args.elem_rtol
                ))
            } else {
                None
            };
            KeyComparison {
                key: key.clone(),
                a: na,
                b: nb,
                rel: rel(na, nb),
                elem: Some((max_err, elem_rel)),
                failure,
            }
        };
        rows.push(row);
    }
    rows
}

/// Runs `lossfuse compare`: prints the table; exit code 1 when any key fails.
pub fn run(args: &CompareArgs) -> CliResult<ExitCode> {
    let a = read_batch(&args.a)?;
    let b = read_batch(&args.b)?;
    let rows = compare(&a, &b, args);
    let width = rows.iter().map(|r| r.key.len()).max().unwrap_or(0).max(8);
    outln!("A: {}\nB: {}", args.a.display(), args.b.display())?;
    outln!(
        "{:<width$}  {:>16}  {:>16}  {:>10}  {:>10}  {:>10}  status",
        "key",
        "A (norm)",
        "B (norm)",
        "rel err",
        "max |dA|",
        "max rel"
    )?;
    for r in &rows {
        let (max_err, max_rel) = match r.elem {
            Some((e, q)) => (format!("{e:.3e}"), format!("{q:.3e}")),
            None => ("-".into(), "-".into()),
        };
        outln!(
            "{:<width$}  {:>16}  {:>16}  {:>10}  {:>10}  {:>10}  {}",
            r.key,
            fmt_num(r.a),
            fmt_num(r.b),
            format!("{:.3e}", r.rel),
            max_err,
            max_rel,
            r.failure
                .as_deref()
                .map_or("ok".to_string(), |f| format!("FAIL: {f}"))
        )?;
    }
    let failed = rows.iter().filter(|r| r.failure.is_some()).count();
    if rows.is_empty() {
        outln!("no tensors to compare")?;
        return Ok(ExitCode::from(1));
    }
    if failed > 0 {
        outln!(
            "{failed} of {} keys outside tolerance (rtol {}, elem_rtol {}, atol {})",
            rows.len(),
            args.rtol,
            args.elem_rtol,
            args.atol
        )?;
        Ok(ExitCode::from(1))
    } else {
        outln!(
            "all {} keys agree (rtol {}, elem_rtol {}, atol {})",
            rows.len(),
            args.rtol,
            args.elem_rtol,
            args.atol
        )?;
        Ok(ExitCode::SUCCESS)
    }
}
