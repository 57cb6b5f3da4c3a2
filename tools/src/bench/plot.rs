//! `--plot`: an SVG chart of throughput against size. One panel per family, both axes
//! logarithmic: x the family's work per step (logits, rows, pairs or scores), y that work per
//! second at the median step time; one line (points joined in size order) per series of the
//! family (e.g. classification at 64k, 1M and 16M rows) and adapter. Text is SVG `<text>` with a
//! generic font family, so no font files are needed to draw or to view it.

use super::{short_label, BenchRow, Family};
use crate::error::{CliError, CliResult};
use plotters::prelude::*;
use std::path::Path;

const PANEL: (u32, u32) = (560, 400);

/// Tableau's ten colours: distinct on white, readable as thin lines (no yellow).
const COLOURS: [(u8, u8, u8); 10] = [
    (31, 119, 180),
    (255, 127, 14),
    (44, 160, 44),
    (214, 39, 40),
    (148, 103, 189),
    (140, 86, 75),
    (227, 119, 194),
    (127, 127, 127),
    (188, 189, 34),
    (23, 190, 207),
];

/// Writes the chart of `rows` to `path` (drawn in memory, then written atomically).
pub fn write_svg(path: &Path, rows: &[BenchRow], date: &str) -> CliResult<()> {
    let mut svg = String::new();
    draw(&mut svg, rows, date)
        .map_err(|e| CliError::file(path, format!("cannot draw the chart: {e}")))?;
    crate::files::write_bytes(path, svg.as_bytes())
}

/// A legend entry: series and adapter.
fn series_label(series: &str, adapter: &str) -> String {
    format!("{series} · {}", short_label(adapter))
}

/// (min, max) of `v` widened out to whole decades (with some room), so that points sit inside the
/// frame and every panel has labelled powers of ten at both ends, even for a single point.
fn log_range(v: impl Iterator<Item = f64>) -> std::ops::Range<f64> {
    let (lo, hi) = v
        .filter(|x| x.is_finite() && *x > 0.0)
        .fold((f64::INFINITY, 0.0f64), |(lo, hi), x| {
            (lo.min(x), hi.max(x))
        });
    if hi == 0.0 {
        return 1.0..10.0;
    }
    10f64.powf((lo / 1.5).log10().floor())..10f64.powf((hi * 1.5).log10().ceil())
}

fn draw(svg: &mut String, rows: &[BenchRow], date: &str) -> Result<(), Box<dyn std::error::Error>> {
    let families: Vec<Family> = Family::ALL
        .into_iter()
        .filter(|f| rows.iter().any(|r| r.family == *f))
        .collect();
    let mut adapters: Vec<&str> = Vec::new();
    for r in rows {
        if !adapters.contains(&r.adapter.as_str()) {
            adapters.push(&r.adapter);
        }
    }
    let cols = families.len().clamp(1, 3) as u32;
    let panel_rows = (families.len() as u32).div_ceil(cols).max(1);
    let title_h = 40;
    // At least two panels wide, so that the title fits.
    let width = cols.max(2) * PANEL.0;
    let root =
        SVGBackend::with_string(svg, (width, panel_rows * PANEL.1 + title_h)).into_drawing_area();
    root.fill(&WHITE)?;
    let (title, body) = root.split_vertically(title_h);
    title.titled(
        &format!("lossfuse bench {date}: work per second against work per step (median step)"),
        ("sans-serif", 20),
    )?;
    let (body, _) = body.split_horizontally(cols * PANEL.0);
    let panels = body.split_evenly((panel_rows as usize, cols as usize));
    for (family, area) in families.iter().zip(panels.iter()) {
        let in_family: Vec<&BenchRow> = rows.iter().filter(|r| r.family == *family).collect();
        let x_range = log_range(in_family.iter().map(|r| r.work_per_step as f64));
        let y_range = log_range(in_family.iter().map(|r| r.work_per_s()));
        let unit = family.work_unit();
        let mut chart = ChartBuilder::on(area)
            .caption(family.name(), ("sans-serif", 20))
            .margin(12)
            .x_label_area_size(42)
            .y_label_area_size(64)
            .build_cartesian_2d(x_range.log_scale(), y_range.log_scale())?;
        chart
            .configure_mesh()
            .light_line_style(TRANSPARENT)
            .x_labels(6)
            .y_labels(6)
            .x_desc(format!("{unit} per step"))
            .y_desc(format!("{unit} per second"))
            .x_label_formatter(&|x| format!("{x:.0e}"))
            .y_label_formatter(&|y| format!("{y:.0e}"))
            .draw()?;
        let mut series_names: Vec<&str> = Vec::new();
        for r in &in_family {
            if !series_names.contains(&r.series.as_str()) {
                series_names.push(&r.series);
            }
        }
        for (si, series) in series_names.iter().enumerate() {
            for (ai, adapter) in adapters.iter().enumerate() {
                let mut points: Vec<(f64, f64)> = in_family
                    .iter()
                    .filter(|r| r.series == *series && r.adapter == *adapter)
                    .map(|r| (r.work_per_step as f64, r.work_per_s()))
                    .collect();
                if points.is_empty() {
                    continue;
                }
                points.sort_by(|a, b| a.0.total_cmp(&b.0));
                let (r, g, b) = COLOURS[(si * adapters.len() + ai) % COLOURS.len()];
                let color = RGBColor(r, g, b).to_rgba();
                chart
                    .draw_series(LineSeries::new(points.clone(), color.stroke_width(2)))?
                    .label(series_label(series, adapter))
                    .legend(move |(x, y)| {
                        PathElement::new(vec![(x, y), (x + 18, y)], color.stroke_width(2))
                    });
                chart.draw_series(
                    points
                        .into_iter()
                        .map(|p| Circle::new(p, 4, color.filled())),
                )?;
            }
        }
        chart
            .configure_series_labels()
            .position(SeriesLabelPosition::UpperLeft)
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 13))
            .draw()?;
    }
    root.present()?;
    Ok(())
}
