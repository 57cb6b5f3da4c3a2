//! `lossfuse check --compare A.json B.json ...`: conformance reports from several machines side
//! by side. Columns are every adapter of every report (`R0.A1`: report 0's adapter 1), rows the
//! union of the cases; a case missing from a report shows `-`, and a case whose config or seed
//! differs between reports is flagged, since its errors then come from different inputs.

use super::report::{cell_text, legend, CheckReport, Status};
use crate::error::{CliError, CliResult};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// Reads one JSON report.
pub fn load(path: &Path) -> CliResult<CheckReport> {
    let text = std::fs::read_to_string(path).map_err(|e| CliError::file(path, e))?;
    serde_json::from_str(&text)
        .map_err(|e| CliError::file(path, format!("not a `lossfuse check` JSON report: {e}")))
}

/// One column: a report's adapter.
struct Column {
    report: usize,
    adapter: usize,
}

/// The comparison as text and Markdown, and whether any report has a failure.
pub struct Comparison {
    /// The terminal table.
    pub text: String,
    /// The same as Markdown.
    pub markdown: String,
    /// Whether any cell of any report failed.
    pub any_failure: bool,
}

/// Puts `reports` (read from `files`) side by side.
pub fn side_by_side(files: &[PathBuf], reports: &[CheckReport]) -> Comparison {
    let columns: Vec<Column> = reports
        .iter()
        .enumerate()
        .flat_map(|(r, rep)| {
            (0..rep.adapters.len()).map(move |a| Column {
                report: r,
                adapter: a,
            })
        })
        .collect();
    let mut names: Vec<&str> = Vec::new();
    for rep in reports {
        for c in &rep.cases {
            if !names.contains(&c.name.as_str()) {
                names.push(&c.name);
            }
        }
    }
    let mut text = String::new();
    let mut md = String::from("# lossfuse check: reports side by side\n\n| | file | version | date | commit | seed | cases passed |\n|---|---|---|---|---|---|---|\n");
    for (r, (rep, file)) in reports.iter().zip(files).enumerate() {
        let commit = rep
            .commit
            .as_deref()
            .map(|c| &c[..c.len().min(12)])
            .unwrap_or("-");
        text.push_str(&format!(
            "R{r} = {} (lossfuse {}, {}, commit {commit}, seed {}): {} of {} cases pass\n",
            file.display(),
            rep.version,
            rep.date,
            rep.seed,
            rep.passed,
            rep.cases.len()
        ));
        for l in legend(&rep.adapters, &format!("  R{r}.")) {
            text.push_str(&format!("{l}\n"));
        }
        md.push_str(&format!(
            "| R{r} | `{}` | {} | {} | `{commit}` | {} | {} of {} |\n",
            file.display(),
            rep.version,
            rep.date,
            rep.seed,
            rep.passed,
            rep.cases.len()
        ));
    }
    md.push_str("\n| column | adapter | backend | device type | driver | subgroup sizes |\n|---|---|---|---|---|---|\n");
    for col in &columns {
        let a = &reports[col.report].adapters[col.adapter];
        let (lo, hi) = a.summary.subgroup_sizes;
        md.push_str(&format!(
            "| R{}.A{} | {} | {} | {} | {} | {lo}..{hi} |\n",
            col.report,
            col.adapter,
            a.summary.name.replace('|', "\\|"),
            a.summary.backend,
            a.summary.device_type,
            a.summary.driver.replace('|', "\\|")
        ));
    }
    let seeds: Vec<u64> = reports.iter().map(|r| r.seed).collect();
    if seeds.windows(2).any(|w| w[0] != w[1]) {
        let note = format!(
            "note: the reports used different seeds ({seeds:?}): every case saw other inputs.\n"
        );
        text.push_str(&note);
        md.push_str(&format!("\n{note}"));
    }
    let width = names.iter().map(|n| n.len()).max().unwrap_or(4).max(4) + 2;
    let mut head = format!("{:<width$}", "case");
    let mut sub = format!("{:<width$}", "");
    md.push_str("\nEach cell: result, max relative error of the losses, of a gradient (norm), and of a gradient element, against the f64 reference. `*`: the case's config differs between reports.\n\n| case |");
    let mut rule = String::from("|---|");
    for col in &columns {
        let name = format!("R{}.A{}", col.report, col.adapter);
        head.push_str(&format!("  {name:<34}"));
        sub.push_str(&format!(
            "  {:<4} {:>9} {:>9} {:>9}",
            "", "loss", "grad", "elem"
        ));
        md.push_str(&format!(" {name} | loss | grad | elem |"));
        rule.push_str("---|---:|---:|---:|");
    }
    text.push_str(&format!("{}\n{}\n", head.trim_end(), sub.trim_end()));
    md.push_str(&format!("\n{rule}\n"));
    let mut any_failure = reports.iter().any(|r| r.failed > 0);
    for name in names {
        let found: Vec<_> = reports
            .iter()
            .map(|r| r.cases.iter().find(|c| c.name == name))
            .collect();
        let configs: Vec<&str> = found.iter().flatten().map(|c| c.config.as_str()).collect();
        let differs = configs.windows(2).any(|w| w[0] != w[1]);
        let label = format!("{name}{}", if differs { " *" } else { "" });
        let mut line = format!("{label:<width$}");
        md.push_str(&format!(
            "| `{name}`{} |",
            if differs { " \\*" } else { "" }
        ));
        for col in &columns {
            let cell = found[col.report].and_then(|c| c.results.get(col.adapter));
            match cell {
                Some(c) => {
                    any_failure |= c.status == Status::Fail;
                    line.push_str(&format!("  {}", cell_text(c)));
                    let word = if c.status == Status::Pass {
                        "pass"
                    } else {
                        "**FAIL**"
                    };
                    md.push_str(&format!(
                        " {word} | {} | {} | {} |",
                        super::report::sci(c.loss),
                        super::report::sci(c.grad),
                        super::report::sci(c.elem)
                    ));
                }
                None => {
                    line.push_str(&format!("  {:<34}", "-"));
                    md.push_str(" - | | | |");
                }
            }
        }
        text.push_str(&format!("{}\n", line.trim_end()));
        md.push('\n');
    }
    Comparison {
        text,
        markdown: md,
        any_failure,
    }
}

/// Runs `--compare`: prints the side-by-side table, writes Markdown when asked; exit code 1 when
/// any report has a failure.
pub fn run(files: &[PathBuf], markdown: Option<&Path>) -> CliResult<ExitCode> {
    if let Some(path) = markdown {
        crate::files::check_output(path, "--markdown")?;
    }
    let reports = files
        .iter()
        .map(|f| load(f))
        .collect::<CliResult<Vec<_>>>()?;
    let c = side_by_side(files, &reports);
    out!("{}", c.text)?;
    if let Some(path) = markdown {
        crate::files::write_bytes(path, c.markdown.as_bytes())?;
        outln!("written: {}", path.display())?;
    }
    Ok(if c.any_failure {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}
