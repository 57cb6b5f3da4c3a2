//! The conformance report: what `lossfuse check` writes as JSON (and reads back for
//! `--compare`), and its renderings as a terminal table and as Markdown.

use super::cases::Tolerance;
use lossfuse::AdapterSummary;
use serde::{Deserialize, Serialize};

/// Pass or fail of one case on one adapter.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Within tolerance of the reference (or refused as expected).
    Pass,
    /// Outside tolerance, an unexpected error, or a missing expected error.
    Fail,
    /// The adapter cannot run the config (its limits); not a failure, listed with the reason.
    Unsupported,
}

/// One case on one adapter (or the agreement between adapters).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Cell {
    /// The adapter's label, `name (backend)`.
    pub adapter: String,
    /// Pass or fail.
    pub status: Status,
    /// Max relative error of the losses, weights and total (see `measure::Distance`); None when
    /// there were no results to compare.
    pub loss: Option<f64>,
    /// Max relative error of a gradient (‖g − g_ref‖ / ‖g_ref‖).
    pub grad: Option<f64>,
    /// Max element error of a gradient, relative to its largest element.
    pub elem: Option<f64>,
    /// Where the largest error is (`step 2 grad/x (norm)`).
    pub worst: Option<String>,
    /// The error, for failures and for expected refusals.
    pub message: Option<String>,
    /// Wall seconds of the run (plan, steps, read-back).
    pub seconds: f64,
}

/// One case over every adapter.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CaseReport {
    /// Case name.
    pub name: String,
    /// Family (per-row, softmax, batch-wide, pairwise, retrieval, metric, weighting, edge).
    pub family: String,
    /// What it exercises.
    pub what: String,
    /// Steps run.
    pub steps: usize,
    /// The TOML config.
    pub config: String,
    /// Tolerance against the reference.
    pub tolerance: Tolerance,
    /// `match`, or `refused: <tensor>` for a step that must be refused.
    pub expect: String,
    /// The reference's error, when it could not run a case that should match.
    pub reference_error: Option<String>,
    /// One cell per adapter, in the report's adapter order.
    pub results: Vec<Cell>,
    /// Every adapter against the first, at twice the tolerance; None with one adapter.
    pub agreement: Option<Cell>,
}

impl CaseReport {
    /// Whether the reference and every cell (and the agreement) passed; an adapter that cannot
    /// run the case does not count against it.
    pub fn passed(&self) -> bool {
        self.reference_error.is_none()
            && self
                .results
                .iter()
                .chain(&self.agreement)
                .all(|c| c.status != Status::Fail)
    }

    /// Whether some adapter could not run the case.
    pub fn unsupported(&self) -> bool {
        self.results.iter().any(|c| c.status == Status::Unsupported)
    }
}

/// An adapter as the report records it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdapterEntry {
    /// `name (backend)`: the key of the cells.
    pub label: String,
    /// Name, backend, driver, subgroup sizes and limits.
    #[serde(flatten)]
    pub summary: AdapterSummary,
}

/// A whole `lossfuse check` run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct CheckReport {
    /// `lossfuse check`.
    pub tool: String,
    /// The lossfuse version.
    pub version: String,
    /// UTC date of the run (YYYY-MM-DD).
    pub date: String,
    /// `git rev-parse HEAD` of the working directory, when it is a checkout.
    pub commit: Option<String>,
    /// The seed the inputs were drawn from.
    pub seed: u64,
    /// Every adapter checked.
    pub adapters: Vec<AdapterEntry>,
    /// Every case.
    pub cases: Vec<CaseReport>,
    /// Cases that passed on every adapter.
    pub passed: usize,
    /// Cases that failed somewhere.
    pub failed: usize,
    /// Cases that some adapter could not run (counted in `passed` when nothing failed).
    #[serde(default)]
    pub unsupported: usize,
}

/// A number in a table: 0 as `0`, else 2 significant digits in scientific notation.
pub fn sci(v: Option<f64>) -> String {
    match v {
        None => "-".into(),
        Some(0.0) => "0".into(),
        Some(x) => format!("{x:.1e}"),
    }
}

fn status_word(c: &Cell) -> &'static str {
    match c.status {
        Status::Pass => "pass",
        Status::Fail => "FAIL",
        Status::Unsupported => "n/a",
    }
}

/// The cell as `pass 1.2e-7 3.4e-6 5.0e-6`, or `pass refused` for an expected error.
pub fn cell_text(c: &Cell) -> String {
    match c.status {
        Status::Pass if c.loss.is_none() && c.grad.is_none() => {
            return format!("{:<4} {:<29}", status_word(c), "refused as expected")
        }
        Status::Unsupported => return format!("{:<4} {:<29}", status_word(c), "unsupported"),
        _ => {}
    }
    format!(
        "{:<4} {:>9} {:>9} {:>9}",
        status_word(c),
        sci(c.loss),
        sci(c.grad),
        sci(c.elem)
    )
}

/// `A0 = llvmpipe (Vulkan): driver ..., subgroups 8..8` lines.
pub fn legend(adapters: &[AdapterEntry], prefix: &str) -> Vec<String> {
    adapters
        .iter()
        .enumerate()
        .map(|(i, a)| {
            let (lo, hi) = a.summary.subgroup_sizes;
            format!(
                "{prefix}A{i} = {}: {}, driver {}, subgroup sizes {lo}..{hi}",
                a.label, a.summary.device_type, a.summary.driver
            )
        })
        .collect()
}

/// Failures as `case on adapter: message (worst)` lines.
pub fn failures(report: &CheckReport) -> Vec<String> {
    let mut out = Vec::new();
    for case in &report.cases {
        if let Some(e) = &case.reference_error {
            out.push(format!("{}: the reference failed: {e}", case.name));
        }
        for c in case.results.iter().chain(&case.agreement) {
            if c.status == Status::Fail {
                let why = c
                    .message
                    .clone()
                    .or_else(|| {
                        c.worst
                            .as_ref()
                            .map(|w| format!("outside tolerance, worst at {w}"))
                    })
                    .unwrap_or_default();
                out.push(format!("{} on {}: {why}", case.name, c.adapter));
            }
        }
    }
    out
}

/// Cases an adapter could not run, as `case on adapter: reason` lines.
pub fn unsupported(report: &CheckReport) -> Vec<String> {
    report
        .cases
        .iter()
        .flat_map(|case| {
            case.results
                .iter()
                .filter(|c| c.status == Status::Unsupported)
                .map(move |c| {
                    format!(
                        "{} on {}: {}",
                        case.name,
                        c.adapter,
                        c.message.as_deref().unwrap_or("")
                    )
                })
        })
        .collect()
}

/// `57 of 57 cases pass on every adapter`, or with the unsupported and failed counts.
pub fn summary(report: &CheckReport) -> String {
    let n = report.cases.len();
    let mut s = if report.unsupported == 0 {
        format!("{} of {n} cases pass on every adapter", report.passed)
    } else {
        format!(
            "{} of {n} cases pass where they ran; {} were not run on some adapter (unsupported there)",
            report.passed, report.unsupported
        )
    };
    if report.failed > 0 {
        s.push_str(&format!("; {} fail", report.failed));
    }
    s
}

/// The terminal table: one row per case, one column group per adapter.
pub fn table(report: &CheckReport) -> String {
    let mut s = String::new();
    s.push_str(&format!(
        "lossfuse check {} — {} cases, seed {}, {}{}\n",
        report.version,
        report.cases.len(),
        report.seed,
        report.date,
        report
            .commit
            .as_ref()
            .map(|c| format!(", commit {}", &c[..c.len().min(12)]))
            .unwrap_or_default()
    ));
    for l in legend(&report.adapters, "") {
        s.push_str(&format!("{l}\n"));
    }
    s.push_str("Errors against the f64 reference, worst over steps: loss = losses, weights and total; grad = ‖g − g_ref‖/‖g_ref‖; elem = max |g − g_ref| / max |g_ref|.\n");
    if report.adapters.len() > 1 {
        s.push_str("agree = every adapter against A0 at twice the tolerance.\n");
    }
    let width = report
        .cases
        .iter()
        .map(|c| c.name.len())
        .max()
        .unwrap_or(4)
        .max(4);
    let mut head = format!("{:<width$} {:>5}", "case", "steps");
    let mut sub = format!("{:<width$} {:>5}", "", "");
    for i in 0..report.adapters.len() {
        head.push_str(&format!("  {:<34}", format!("A{i}")));
        sub.push_str(&format!(
            "  {:<4} {:>9} {:>9} {:>9}",
            "", "loss", "grad", "elem"
        ));
    }
    if report.adapters.len() > 1 {
        head.push_str(&format!("  {:<34}", "agree"));
        sub.push_str(&format!(
            "  {:<4} {:>9} {:>9} {:>9}",
            "", "loss", "grad", "elem"
        ));
    }
    s.push_str(head.trim_end());
    s.push('\n');
    s.push_str(sub.trim_end());
    s.push('\n');
    for case in &report.cases {
        let mut line = format!("{:<width$} {:>5}", case.name, case.steps);
        for c in &case.results {
            line.push_str(&format!("  {}", cell_text(c)));
        }
        if let Some(c) = &case.agreement {
            line.push_str(&format!("  {}", cell_text(c)));
        }
        s.push_str(line.trim_end());
        s.push('\n');
    }
    let fails = failures(report);
    if !fails.is_empty() {
        s.push_str("\nfailures:\n");
        for f in fails {
            s.push_str(&format!("  {f}\n"));
        }
    }
    let skipped = unsupported(report);
    if !skipped.is_empty() {
        s.push_str("\nunsupported (not run):\n");
        for f in skipped {
            s.push_str(&format!("  {f}\n"));
        }
    }
    s.push_str(&format!("\n{}\n", summary(report)));
    s
}

fn md_escape(text: &str) -> String {
    text.replace('|', "\\|").replace('\n', " ")
}

/// The Markdown report: adapters, the table, tolerances, failures.
pub fn markdown(report: &CheckReport) -> String {
    let mut s = format!(
        "# lossfuse check\n\nlossfuse {}, {}{}, seed {}: {}.\n\n",
        report.version,
        report.date,
        report
            .commit
            .as_ref()
            .map(|c| format!(", commit `{c}`"))
            .unwrap_or_default(),
        report.seed,
        summary(report)
    );
    s.push_str("| | adapter | backend | device type | driver | subgroup sizes |\n|---|---|---|---|---|---|\n");
    for (i, a) in report.adapters.iter().enumerate() {
        let (lo, hi) = a.summary.subgroup_sizes;
        s.push_str(&format!(
            "| A{i} | {} | {} | {} | {} | {lo}..{hi} |\n",
            md_escape(&a.summary.name),
            a.summary.backend,
            a.summary.device_type,
            md_escape(&a.summary.driver)
        ));
    }
    s.push_str(
        "\nEach cell: result, then the worst error over the case's steps against the f64 reference: \
         **loss** = max relative error of the losses, weights and total; **grad** = ‖g − g_ref‖ / ‖g_ref‖; \
         **elem** = max |g − g_ref| / max |g_ref|. **tol** is the case's tolerance on each (loss / grad / elem).",
    );
    if report.adapters.len() > 1 {
        s.push_str(" **agree**: every adapter against A0, at twice the tolerance.");
    }
    s.push_str("\n\n| case | family | steps | tol |");
    let mut rule = "|---|---|---:|---|".to_string();
    let groups: Vec<String> = (0..report.adapters.len())
        .map(|i| format!("A{i}"))
        .chain((report.adapters.len() > 1).then(|| "agree".to_string()))
        .collect();
    for g in &groups {
        s.push_str(&format!(" {g} | loss | grad | elem |"));
        rule.push_str("---|---:|---:|---:|");
    }
    s.push('\n');
    s.push_str(&rule);
    s.push('\n');
    for case in &report.cases {
        let t = &case.tolerance;
        s.push_str(&format!(
            "| `{}` | {} | {} | {} / {} / {} |",
            case.name,
            case.family,
            case.steps,
            sci(Some(t.rel)),
            sci(Some(t.grad_norm)),
            sci(Some(t.grad_elem))
        ));
        for c in case.results.iter().chain(&case.agreement) {
            let word = match (c.status, c.loss.is_none() && c.grad.is_none()) {
                (Status::Pass, true) => "pass (refused)",
                (Status::Pass, false) => "pass",
                (Status::Fail, _) => "**FAIL**",
                (Status::Unsupported, _) => "n/a",
            };
            s.push_str(&format!(
                " {word} | {} | {} | {} |",
                sci(c.loss),
                sci(c.grad),
                sci(c.elem)
            ));
        }
        if case.agreement.is_none() && report.adapters.len() > 1 {
            s.push_str(" - | | | |");
        }
        s.push('\n');
    }
    let fails = failures(report);
    if !fails.is_empty() {
        s.push_str("\n## Failures\n\n");
        for f in fails {
            s.push_str(&format!("- {}\n", md_escape(&f)));
        }
    }
    let skipped = unsupported(report);
    if !skipped.is_empty() {
        s.push_str("\n## Unsupported (not run)\n\n");
        for f in skipped {
            s.push_str(&format!("- {}\n", md_escape(&f)));
        }
    }
    s.push_str("\n## Cases\n\n| case | what |\n|---|---|\n");
    for case in &report.cases {
        s.push_str(&format!(
            "| `{}` | {} |\n",
            case.name,
            md_escape(&case.what)
        ));
    }
    s
}
