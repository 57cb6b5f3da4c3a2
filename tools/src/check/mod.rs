//! `lossfuse check`: the conformance suite. Every case of the catalogue (`cases.rs`: every loss
//! type, weighting strategy and edge case) runs on the f64 reference and on every adapter found;
//! each adapter is compared with the reference (`measure.rs`) and with the first adapter. The
//! report (`report.rs`) is printed as a table and written as Markdown and JSON; the exit code is
//! 1 when any case fails. `--compare A.json B.json ...` puts reports from several machines side
//! by side (`compare.rs`).

pub mod cases;
pub mod compare;
pub mod measure;
pub mod report;

use crate::error::{CliError, CliResult};
use cases::{Case, Expect, Tolerance};
use lossfuse::{Engine, EngineOptions};
use measure::{distance, RunError, RunResult};
use report::{AdapterEntry, CaseReport, Cell, CheckReport, Status};
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

/// Arguments of `lossfuse check`.
#[derive(clap::Args, Debug)]
pub struct CheckArgs {
    /// The first adapter whose "name (backend)" contains this (case-insensitive; repeatable).
    /// Default: LOSSFUSE_ADAPTER when set, else every adapter found.
    #[arg(long = "adapter", value_name = "NAME")]
    pub adapters: Vec<String>,
    /// Seed of the inputs (every case draws its own from this and its name).
    #[arg(long, default_value_t = 1)]
    pub seed: u64,
    /// Only cases whose name contains this (repeatable).
    #[arg(long = "case", value_name = "SUBSTRING")]
    pub cases: Vec<String>,
    /// Where to write the Markdown report [default: lossfuse-check.md; with `--compare`, none].
    #[arg(long)]
    pub markdown: Option<PathBuf>,
    /// Where to write the JSON report, the input of `--compare` [default: lossfuse-check.json].
    #[arg(long, conflicts_with = "compare")]
    pub json: Option<PathBuf>,
    /// Multiply every tolerance by this: below 1 shows how much headroom the results have (a
    /// case then fails where its error exceeds the scaled tolerance).
    #[arg(long, default_value_t = 1.0)]
    pub tolerance_scale: f64,
    /// Cap every storage binding at this many bytes (a multiple of 256), below the adapter's own
    /// limit, so that the paths that split large tensors over several bindings are checked too.
    #[arg(long, value_name = "BYTES")]
    pub max_binding_bytes: Option<u64>,
    /// List the cases and exit.
    #[arg(long)]
    pub list: bool,
    /// Do not print progress lines on stderr.
    #[arg(long, short)]
    pub quiet: bool,
    /// Put two or more JSON reports side by side instead of running (exit 1 if any has a
    /// failure); `--markdown` is written only when given.
    #[arg(long, num_args = 2.., value_name = "REPORT.json")]
    pub compare: Option<Vec<PathBuf>>,
}

/// Runs `lossfuse check`.
pub fn run(args: &CheckArgs) -> CliResult<ExitCode> {
    if let Some(files) = &args.compare {
        return compare::run(files, args.markdown.as_deref());
    }
    if !(args.tolerance_scale > 0.0 && args.tolerance_scale.is_finite()) {
        return Err(CliError::Usage(format!(
            "--tolerance-scale must be a positive number, got {}",
            args.tolerance_scale
        )));
    }
    let cases: Vec<Case> = cases::catalogue(args.seed)
        .into_iter()
        .map(|mut c| {
            c.tol = c.tol.scaled(args.tolerance_scale);
            c
        })
        .filter(|c| args.cases.is_empty() || args.cases.iter().any(|f| c.name.contains(f.as_str())))
        .collect();
    if cases.is_empty() {
        return Err(CliError::Usage(format!(
            "no case matches {:?}; `lossfuse check --list` names them",
            args.cases
        )));
    }
    if args.list {
        for c in &cases {
            outln!("{:<48} {:<10} {}", c.name, c.family, c.what)?;
        }
        return Ok(ExitCode::SUCCESS);
    }
    let json_path = args
        .json
        .clone()
        .unwrap_or_else(|| "lossfuse-check.json".into());
    let md_path = args
        .markdown
        .clone()
        .unwrap_or_else(|| "lossfuse-check.md".into());
    // Before the suite runs (minutes), not after.
    crate::files::check_output(&json_path, "--json")?;
    crate::files::check_output(&md_path, "--markdown")?;
    let options = EngineOptions {
        max_binding_bytes: args.max_binding_bytes,
        ..Default::default()
    };
    let engines = crate::engines::open(&args.adapters, options)?;
    let report = check(&cases, &engines, args.seed, |line| {
        if !args.quiet {
            crate::errln!("{line}");
        }
    });
    // The reports first: a closed stdout (`| head`) must not lose what the suite measured.
    let json = serde_json::to_string_pretty(&report)
        .map_err(|e| CliError::file(&json_path, format!("cannot encode JSON: {e}")))?;
    crate::files::write_bytes(&json_path, (json + "\n").as_bytes())?;
    crate::files::write_bytes(&md_path, report::markdown(&report).as_bytes())?;
    out!("{}", report::table(&report))?;
    outln!("written: {} and {}", md_path.display(), json_path.display())?;
    Ok(if report.failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

/// Runs every case on the reference and on every engine; `progress` gets one line per case.
pub fn check(
    cases: &[Case],
    engines: &[Engine],
    seed: u64,
    mut progress: impl FnMut(String),
) -> CheckReport {
    let adapters: Vec<AdapterEntry> = engines
        .iter()
        .map(|e| AdapterEntry {
            label: e.adapter().label(),
            summary: e.adapter().clone(),
        })
        .collect();
    let mut reports = Vec::with_capacity(cases.len());
    for (i, case) in cases.iter().enumerate() {
        let started = Instant::now();
        let r = check_case(case, engines);
        progress(format!(
            "[{}/{}] {}: {} ({:.1} s)",
            i + 1,
            cases.len(),
            case.name,
            r.results
                .iter()
                .chain(&r.agreement)
                .map(|c| match c.status {
                    Status::Pass => "pass",
                    Status::Fail => "FAIL",
                    Status::Unsupported => "n/a",
                })
                .collect::<Vec<_>>()
                .join(" "),
            started.elapsed().as_secs_f64()
        ));
        reports.push(r);
    }
    let passed = reports.iter().filter(|c| c.passed()).count();
    let unsupported = reports.iter().filter(|c| c.unsupported()).count();
    CheckReport {
        tool: "lossfuse check".into(),
        version: env!("CARGO_PKG_VERSION").into(),
        date: crate::provenance::utc_now().0,
        commit: crate::provenance::git_commit().map(|(hash, dirty)| {
            if dirty {
                format!("{hash}-dirty")
            } else {
                hash
            }
        }),
        seed,
        adapters,
        failed: reports.len() - passed,
        passed,
        unsupported,
        cases: reports,
    }
}

/// One case on the reference and every engine.
fn check_case(case: &Case, engines: &[Engine]) -> CaseReport {
    let reference = run_timed(|| measure::run_reference(case));
    let gpu: Vec<(String, (RunResult, f64))> = engines
        .iter()
        .map(|e| (e.adapter().label(), run_timed(|| measure::run_gpu(e, case))))
        .collect();
    let mut reference_error = None;
    let results: Vec<Cell> = match &case.expect {
        Expect::Match => {
            if let Err(e) = &reference.0 {
                reference_error = Some(e.message().to_string());
            }
            gpu.iter()
                .map(|(label, (run, secs))| match (run, &reference.0) {
                    (Ok(steps), Ok(want)) => {
                        measured(label, distance(steps, want, &case.tol), &case.tol, *secs)
                    }
                    (Err(RunError::Unsupported(m)), _) => unsupported(label, m.clone(), *secs),
                    (Err(RunError::Failed(m)), _) => failed(label, m.clone(), *secs),
                    (Ok(_), Err(_)) => failed(label, "no reference to compare with".into(), *secs),
                })
                .collect()
        }
        Expect::Refused { tensor } => {
            let named = |e: &str| e.contains(&format!("'{tensor}'"));
            match &reference.0 {
                Ok(_) => {
                    reference_error = Some("the reference accepted an input it must refuse".into())
                }
                Err(e) if !named(e.message()) => {
                    reference_error = Some(format!(
                        "refused without naming '{tensor}': {}",
                        e.message()
                    ))
                }
                Err(_) => {}
            }
            gpu.iter()
                .map(|(label, (run, secs))| match run {
                    Err(RunError::Unsupported(m)) => unsupported(label, m.clone(), *secs),
                    Err(RunError::Failed(e)) if named(e) && !e.contains(measure::STATE_CHANGED) => {
                        Cell {
                            adapter: label.clone(),
                            status: Status::Pass,
                            loss: None,
                            grad: None,
                            elem: None,
                            worst: None,
                            message: Some(e.clone()),
                            seconds: *secs,
                        }
                    }
                    Err(RunError::Failed(e)) if named(e) => failed(label, e.clone(), *secs),
                    Err(RunError::Failed(e)) => failed(
                        label,
                        format!("refused without naming '{tensor}': {e}"),
                        *secs,
                    ),
                    Ok(_) => failed(label, "accepted an input it must refuse".into(), *secs),
                })
                .collect()
        }
    };
    let agreement = agreement(case, &gpu);
    CaseReport {
        name: case.name.clone(),
        family: case.family.to_string(),
        what: case.what.clone(),
        steps: case.steps,
        config: case.config.clone(),
        tolerance: case.tol,
        expect: match &case.expect {
            Expect::Match => "match".into(),
            Expect::Refused { tensor } => format!("refused: {tensor}"),
        },
        reference_error,
        results,
        agreement,
    }
}

/// Every adapter with results against the first such, at twice the tolerance (each may be `tol`
/// from the reference on either side). None when fewer than two adapters have results (a failed
/// or unsupported run is reported in its own cell) and for expected refusals.
fn agreement(case: &Case, gpu: &[(String, (RunResult, f64))]) -> Option<Cell> {
    if case.expect != Expect::Match {
        return None;
    }
    let ran: Vec<(&String, &Vec<measure::StepResult>)> = gpu
        .iter()
        .filter_map(|(label, (run, _))| run.as_ref().ok().map(|steps| (label, steps)))
        .collect();
    let ((first_label, base), others) = ran.split_first()?;
    let twice = case.tol.scaled(2.0);
    // The adapter farthest from the first, by its largest measure relative to its tolerance.
    let mut farthest: Option<(f64, &String, measure::Distance)> = None;
    for (label, steps) in others {
        let d = distance(steps, base, &twice);
        let ratio = if d.mismatch.is_some() {
            f64::INFINITY
        } else {
            (d.loss / twice.rel)
                .max(d.grad / twice.grad_norm)
                .max(d.elem / twice.grad_elem)
        };
        let ratio = if ratio.is_nan() { f64::INFINITY } else { ratio };
        if farthest.as_ref().is_none_or(|f| ratio > f.0) {
            farthest = Some((ratio, label, d));
        }
    }
    let (_, label, d) = farthest?;
    let mut cell = measured("adapters agree", d, &twice, 0.0);
    if cell.status == Status::Fail {
        let why = cell.message.clone().unwrap_or_else(|| {
            format!(
                "outside twice the tolerance, worst at {}",
                cell.worst.clone().unwrap_or_default()
            )
        });
        cell.message = Some(format!("{label} against {first_label}: {why}"));
    }
    Some(cell)
}

fn run_timed(f: impl FnOnce() -> RunResult) -> (RunResult, f64) {
    let t = Instant::now();
    let r = f();
    (r, t.elapsed().as_secs_f64())
}

fn measured(label: &str, d: measure::Distance, tol: &Tolerance, seconds: f64) -> Cell {
    let finite = |v: f64| v.is_finite().then_some(v);
    Cell {
        adapter: label.into(),
        status: if d.within(tol) {
            Status::Pass
        } else {
            Status::Fail
        },
        loss: finite(d.loss),
        grad: finite(d.grad),
        elem: finite(d.elem),
        worst: (!d.worst.is_empty()).then(|| d.worst.clone()),
        message: d.mismatch.clone(),
        seconds,
    }
}

fn unsupported(label: &str, message: String, seconds: f64) -> Cell {
    Cell {
        status: Status::Unsupported,
        ..failed(label, message, seconds)
    }
}

fn failed(label: &str, message: String, seconds: f64) -> Cell {
    Cell {
        adapter: label.into(),
        status: Status::Fail,
        loss: None,
        grad: None,
        elem: None,
        worst: None,
        message: Some(message),
        seconds,
    }
}
