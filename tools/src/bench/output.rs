//! What `lossfuse bench` writes: the table on stdout, the summaries under it, and the CSV, JSON
//! and SVG files.

use super::peer::{peer_rel_diff, vs_peer, PeerRun};
use super::{plot, short_label, AdapterRun, BenchArgs, BenchRow, ReferenceRun};
use crate::error::{CliError, CliResult};
use std::path::Path;

/// The CSV header, one row per shape × adapter. Times in seconds, rates per second, bytes in
/// bytes; an empty cell is a value that does not apply (`gpu_s` without timestamp queries,
/// `reference_*` when the reference was skipped, with `gpu_note` / `reference_note` saying why).
pub const CSV_COLUMNS: &[&str] = &[
    "shape",
    "family",
    "series",
    "adapter",
    "backend",
    "plans",
    "rows",
    "warmup",
    "steps",
    "median_s",
    "min_s",
    "gpu_s",
    "gpu_note",
    "work_unit",
    "work_per_step",
    "work_per_s",
    "rows_per_s",
    "bytes_per_step",
    "bytes_per_s",
    "copy_bytes_per_s",
    "fraction_of_copy",
    "flops_per_step",
    "flops_per_s",
    "dispatches_per_step",
    "submissions_per_step",
    "allocated_bytes",
    "reference_s",
    "speedup_vs_reference",
    "total_loss",
    "reference_total_loss",
    "reference_rel_diff",
    "reference_note",
    "peer_s",
    "peer_min_s",
    "peer_compiled_s",
    "vs_peer",
    "peer_total_loss",
    "peer_rel_diff",
    "peer_note",
];

/// A CSV cell: quoted when it holds a comma, a quote or a line break (adapter names do).
fn cell(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn opt(v: Option<f64>) -> String {
    v.map(|x| format!("{x:e}")).unwrap_or_default()
}

/// The rows as CSV text, header first.
pub fn csv_text(rows: &[BenchRow]) -> String {
    let mut out = CSV_COLUMNS.join(",") + "\n";
    for r in rows {
        let (reference_s, reference_total, note) = match &r.reference {
            ReferenceRun::Ran { seconds, total, .. } => {
                (Some(*seconds), Some(*total), String::new())
            }
            ReferenceRun::Skipped(why) => (None, None, why.clone()),
        };
        let cells = [
            r.shape.clone(),
            r.family.name().to_string(),
            r.series.clone(),
            r.adapter.clone(),
            r.backend.clone(),
            r.plans.to_string(),
            r.rows.to_string(),
            r.warmup.to_string(),
            r.steps.to_string(),
            format!("{:e}", r.median_s),
            format!("{:e}", r.min_s),
            opt(r.gpu.as_ref().map(|g| g.total_s)),
            r.gpu_note.clone(),
            r.family.work_unit().to_string(),
            r.work_per_step.to_string(),
            format!("{:e}", r.work_per_s()),
            format!("{:e}", r.rows_per_s()),
            r.bytes_per_step.to_string(),
            format!("{:e}", r.bytes_per_s()),
            format!("{:e}", r.copy_bandwidth),
            format!("{:e}", r.fraction_of_copy()),
            r.flops_per_step.to_string(),
            format!("{:e}", r.flops_per_s()),
            r.dispatches_per_step.to_string(),
            r.submissions_per_step.to_string(),
            r.allocated_bytes.to_string(),
            opt(reference_s),
            opt(r.speedup()),
            format!("{:e}", r.first_total),
            opt(reference_total),
            opt(r.reference_rel_diff()),
            note,
            opt(r.peer.eager_s()),
            opt(match &r.peer {
                PeerRun::Ran { eager, .. } => Some(eager.min_s),
                PeerRun::Skipped(_) => None,
            }),
            opt(r.peer.compiled_s()),
            opt(vs_peer(r)),
            opt(match &r.peer {
                PeerRun::Ran { loss, .. } => Some(*loss),
                PeerRun::Skipped(_) => None,
            }),
            opt(peer_rel_diff(r)),
            r.peer.note().to_string(),
        ];
        out += &cells.iter().map(|c| cell(c)).collect::<Vec<_>>().join(",");
        out.push('\n');
    }
    out
}

/// The JSON document: when, what, with which settings, on which adapters, and the rows.
fn json_value(
    args: &BenchArgs,
    started: &(String, String),
    adapters: &[AdapterRun],
    rows: &[BenchRow],
) -> serde_json::Value {
    let git = crate::provenance::git_commit();
    serde_json::json!({
        "date": started.0,
        "started_utc": started.1,
        "commit": git.as_ref().map(|g| g.0.clone()),
        "commit_dirty": git.as_ref().map(|g| g.1),
        "warmup": args.warmup,
        "steps": args.steps,
        "gpu_steps": args.gpu_steps,
        "device_inputs": args.device_inputs,
        "flop_model": "analytic, forward + gradient, floating-point operations only (exp, log count 1): lossfuse_cli::bench::shapes::flops",
        "adapters": adapters.iter().map(|a| serde_json::json!({
            "label": a.summary.label(),
            "name": a.summary.name,
            "backend": a.summary.backend,
            "device_type": a.summary.device_type,
            "driver": a.summary.driver,
            "subgroup_sizes": [a.summary.subgroup_sizes.0, a.summary.subgroup_sizes.1],
            "timestamps": a.summary.timestamps,
            "max_storage_binding": a.summary.max_storage_binding,
            "copy_bandwidth_bytes_per_s": a.copy_bandwidth,
            "copy_bytes": a.copy_bytes,
        })).collect::<Vec<_>>(),
        "rows": rows.iter().map(|r| row_json(rows, r)).collect::<Vec<_>>(),
    })
}

/// One row as JSON (in two halves: one `json!` of all of it exceeds the macro recursion limit).
fn row_json(rows: &[BenchRow], r: &BenchRow) -> serde_json::Value {
    let has_pairs = r.session_work.0 > 0;
    let mut v = serde_json::json!({
        "shape": r.shape,
        "family": r.family.name(),
        "series": r.series,
        "adapter": r.adapter,
        "backend": r.backend,
        "plans": r.plans,
        "rows": r.rows,
        "warmup": r.warmup,
        "steps": r.steps,
        "median_s": r.median_s,
        "min_s": r.min_s,
        "gpu": r.gpu.as_ref().map(|g| serde_json::json!({
            "steps": g.steps,
            "total_s": g.total_s,
            "passes": g.passes.iter().map(|(label, s)| serde_json::json!({
                "label": label,
                "seconds": s,
            })).collect::<Vec<_>>(),
        })),
        "gpu_note": (!r.gpu_note.is_empty()).then_some(&r.gpu_note),
        "work_unit": r.family.work_unit(),
        "work_per_step": r.work_per_step,
        "work_per_s": r.work_per_s(),
        "rows_per_s": r.rows_per_s(),
    });
    let rest = serde_json::json!({
        "bytes_per_step": r.bytes_per_step,
        "bytes_per_s": r.bytes_per_s(),
        "fraction_of_copy": r.fraction_of_copy(),
        "flops_per_step": r.flops_per_step,
        "flops_per_s": r.flops_per_s(),
        "dispatches_per_step": r.dispatches_per_step,
        "submissions_per_step": r.submissions_per_step,
        "allocated_bytes": r.allocated_bytes,
        "session_size_squared_sum": has_pairs.then_some(r.session_work.0),
        "pairs": has_pairs.then_some(r.session_work.1),
        "pairs_per_s": has_pairs.then(|| r.session_work.1 as f64 / r.median_s),
        "scores": (r.scores > 0).then_some(r.scores),
        "scores_per_s": (r.scores > 0).then(|| r.scores as f64 / r.median_s),
        "baseline": ratio(rows, r).map(|x| x.0),
        "time_ratio_to_baseline": ratio(rows, r).map(|x| x.1),
        "total_loss": r.first_total,
        "reference": match &r.reference {
            ReferenceRun::Ran { seconds, steps, total } => serde_json::json!({
                "seconds": seconds,
                "steps": steps,
                "total_loss": total,
                "speedup": r.speedup(),
                "rel_diff": r.reference_rel_diff(),
            }),
            ReferenceRun::Skipped(why) => serde_json::json!({ "skipped": why }),
        },
        "peer": peer_json(r),
    });
    if let (Some(a), serde_json::Value::Object(b)) = (v.as_object_mut(), rest) {
        a.extend(b);
    }
    v
}

/// The peer's result of a row as JSON.
fn peer_json(r: &BenchRow) -> serde_json::Value {
    let times = |t: &super::peer::PeerTimes| serde_json::json!({ "median_s": t.median_s, "min_s": t.min_s, "steps": t.steps });
    match &r.peer {
        PeerRun::Ran {
            device,
            threads,
            torch,
            loss,
            eager,
            compiled,
            note,
        } => serde_json::json!({
            "peer": "torch",
            "torch": torch,
            "device": device,
            "threads": threads,
            "eager": times(eager),
            "compiled": compiled.as_ref().map(times),
            "total_loss": loss,
            "rel_diff": peer_rel_diff(r),
            "vs_peer": vs_peer(r),
            "note": (!note.is_empty()).then_some(note),
        }),
        PeerRun::Skipped(why) => serde_json::json!({ "skipped": why }),
    }
}

/// For the chart: the peer's eager time of each shape as a row of its own (adapter
/// "torch eager (<device>)"), beside the adapters' rows.
fn peer_rows(rows: &[BenchRow]) -> Vec<BenchRow> {
    let mut out: Vec<BenchRow> = Vec::new();
    for r in rows {
        let (PeerRun::Ran { device, eager, .. }, false) =
            (&r.peer, out.iter().any(|p| p.shape == r.shape))
        else {
            continue;
        };
        let mut p = r.clone();
        p.adapter = format!("torch eager ({device})");
        p.median_s = eager.median_s;
        out.push(p);
    }
    out
}

/// Writes `--csv` and `--json` (and, when `last`, `--plot`).
pub fn write_files(
    args: &BenchArgs,
    started: &(String, String),
    adapters: &[AdapterRun],
    rows: &[BenchRow],
    last: bool,
) -> CliResult<()> {
    // Atomically: an interrupted run keeps the files of the last finished shape, whole.
    let write = |path: &Path, text: String| crate::files::write_bytes(path, text.as_bytes());
    if let Some(path) = &args.csv {
        write(path, csv_text(rows))?;
    }
    if let Some(path) = &args.json {
        let text = serde_json::to_string_pretty(&json_value(args, started, adapters, rows))
            .map_err(|e| CliError::file(path, format!("cannot encode JSON: {e}")))?;
        write(path, text + "\n")?;
    }
    if let (true, Some(path)) = (last, &args.plot) {
        let mut with_peer = rows.to_vec();
        with_peer.extend(peer_rows(rows));
        plot::write_svg(path, &with_peer, &started.0)?;
    }
    Ok(())
}

/// The table's header line (with the peer's columns when `peer`).
pub fn table_header(peer: bool) -> String {
    let tail = if peer {
        format!(" {:>10} {:>8}", "peer ms", "vs peer")
    } else {
        String::new()
    };
    let head = format!(
        "{:<22} {:<18} {:>10} {:>10} {:>10} {:>10} {:>9} {:>7} {:>7} {:>8} {:>10} {:>8}",
        "shape",
        "adapter",
        "median ms",
        "min ms",
        "GPU ms",
        "work/s",
        "MB/step",
        "GB/s",
        "of copy",
        "GFLOP/s",
        "ref ms",
        "speed-up"
    );
    head + &tail
}

/// One table line (with the peer's columns when `peer`).
pub fn table_row(r: &BenchRow, peer: bool) -> String {
    let tail = match (peer, r.peer.eager_s(), vs_peer(r)) {
        (false, _, _) => String::new(),
        (true, Some(s), Some(x)) => format!(" {:>10.1} {:>8}", s * 1e3, format!("{x:.2}x")),
        (true, _, _) => format!(" {:>10} {:>8}", "-", "-"),
    };
    table_cells(r) + &tail
}

/// The table line's columns up to the reference's.
fn table_cells(r: &BenchRow) -> String {
    let gpu = r
        .gpu
        .as_ref()
        .map(|g| format!("{:.3}", g.total_s * 1e3))
        .unwrap_or_else(|| "-".into());
    let (reference, speedup) = match (&r.reference, r.speedup()) {
        (ReferenceRun::Ran { seconds, .. }, Some(x)) => {
            (format!("{:.1}", seconds * 1e3), format!("{x:.2}x"))
        }
        _ => ("-".into(), "-".into()),
    };
    format!(
        "{:<22} {:<18} {:>10.3} {:>10.3} {:>10} {:>10.3e} {:>9.1} {:>7.2} {:>6.2}% {:>8.2} {:>10} {:>8}",
        r.shape,
        short_label(&r.adapter),
        r.median_s * 1e3,
        r.min_s * 1e3,
        gpu,
        r.work_per_s(),
        r.bytes_per_step as f64 / 1e6,
        r.bytes_per_s() / 1e9,
        100.0 * r.fraction_of_copy(),
        r.flops_per_s() / 1e9,
        reference,
        speedup
    )
}

/// What the columns mean, printed under the table.
pub fn table_legend() -> String {
    "median/min ms: wall time of a step (upload, passes, read-back of the losses); GPU ms: sum of \
the passes' timestamp-query times, median ('-': no timestamp queries or --gpu-steps 0); work/s: \
the family's unit (elements, rows, pairs, scores) per second; MB/step: what a step must move; \
GB/s and of copy: that over the median, and against the adapter's measured copy bandwidth; \
GFLOP/s: the modelled FLOPs over the median; ref ms: the f64 CPU reference's step; speed-up: \
ref ms / median ms ('-': reference skipped); with --peer, peer ms: the PyTorch peer's eager step \
(forward and backward to the inputs) on the same inputs, vs peer: its best of eager and \
torch.compile over lossfuse's median (above 1x lossfuse is faster)"
        .to_string()
}

/// The peer's line under a shape's rows: times, loss agreement, or why it did not run.
pub fn peer_line(shape: &str, run: &PeerRun) -> String {
    match run {
        PeerRun::Ran {
            device,
            threads,
            torch,
            loss,
            eager,
            compiled,
            note,
        } => {
            let compiled = match compiled {
                Some(c) => format!("torch.compile {:.3} ms", c.median_s * 1e3),
                None => "no torch.compile".into(),
            };
            let note = if note.is_empty() {
                String::new()
            } else {
                format!(" ({note})")
            };
            format!(
                "{shape} on torch {torch} ({device}, {threads} threads): eager {:.3} ms (min {:.3}, {} steps), {compiled}; first-step total loss {loss:.6e}{note}",
                eager.median_s * 1e3,
                eager.min_s * 1e3,
                eager.steps
            )
        }
        PeerRun::Skipped(why) => format!("{shape}: torch peer not run: {why}"),
    }
}

/// The time ratio of a `batch_wide4_*` row to its `classification_*` baseline on the same adapter.
fn ratio(rows: &[BenchRow], r: &BenchRow) -> Option<(String, f64)> {
    let base = super::baseline(&r.shape)?;
    let b = rows
        .iter()
        .find(|x| x.shape == base && x.adapter == r.adapter)?;
    Some((base, r.median_s / b.median_s))
}

/// The lines under the table: baselines, pairwise work, retrieval memory, reference agreement.
pub fn print_summaries(rows: &[BenchRow]) -> CliResult<()> {
    // The cost of the batch-wide terms: time against one classification term on the same rows.
    for r in rows {
        if let Some((base, x)) = ratio(rows, r) {
            outln!(
                "{}: {x:.2}x the time of {base} on {}",
                r.shape,
                short_label(&r.adapter)
            )?;
        }
    }
    // Pairwise shapes: the work is Σ size² (each pair is visited from both rows), not B².
    for r in rows.iter().filter(|r| r.session_work.0 > 0) {
        let (visits, pairs) = r.session_work;
        outln!(
            "{} on {}: {pairs} pairs, Σ size² = {visits}: {:.3e} pairs/s, {:.3} ns per Σ size²",
            r.shape,
            short_label(&r.adapter),
            pairs as f64 / r.median_s,
            r.median_s * 1e9 / visits as f64
        )?;
    }
    // Retrieval shapes: scores streamed per second; memory is the plans' buffers (linear in M).
    for r in rows.iter().filter(|r| r.scores > 0) {
        outln!(
            "{} on {}: {} scores per step, {:.3e} scores/s, {:.1} MiB of GPU buffers",
            r.shape,
            short_label(&r.adapter),
            r.scores,
            r.scores as f64 / r.median_s,
            r.allocated_bytes as f64 / (1u64 << 20) as f64
        )?;
    }
    // The reference ran on the same inputs: its first-step total against the GPU's.
    for r in rows {
        match (&r.reference, r.reference_rel_diff()) {
            (ReferenceRun::Ran { total, .. }, Some(d)) => outln!(
                "{} on {}: first-step total loss {:.6e}, reference {:.6e} (relative difference {:.1e})",
                r.shape,
                short_label(&r.adapter),
                r.first_total,
                total,
                d
            )?,
            (ReferenceRun::Skipped(why), _) => {
                outln!("{} on {}: reference {why}", r.shape, short_label(&r.adapter))?
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn csv_cells_with_commas_or_quotes_are_quoted() {
        assert_eq!(cell("Vulkan"), "Vulkan");
        assert_eq!(
            cell("llvmpipe (LLVM 15.0.6, 256 bits)"),
            "\"llvmpipe (LLVM 15.0.6, 256 bits)\""
        );
        assert_eq!(cell("a\"b"), "\"a\"\"b\"");
    }

    #[test]
    fn short_labels_keep_the_name_and_the_backend() {
        assert_eq!(
            super::super::short_label("llvmpipe (LLVM 15.0.6, 256 bits) (Vulkan)"),
            "llvmpipe (Vulkan)"
        );
        assert_eq!(
            super::super::short_label("NVIDIA H100 (Vulkan)"),
            "NVIDIA H100 (Vulkan)"
        );
    }
}
