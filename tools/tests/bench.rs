//! `lossfuse bench` on every adapter found with `--csv`, `--json` and `--plot`: the three files
//! hold what they promise (columns, one row per adapter, GPU time where the adapter has
//! timestamps, the CPU reference column, one chart series per adapter). Correctness only: no
//! assertion is about how fast anything is. A machine without an adapter fails, never skips.

mod common;
use common::{adapters, run, scratch};
use lossfuse_cli::bench::{short_label, CSV_COLUMNS};

/// Splits CSV text into rows of cells (quoted cells may hold commas and doubled quotes).
fn parse_csv(text: &str) -> Vec<Vec<String>> {
    let mut rows = Vec::new();
    for line in text.lines() {
        let mut cells = Vec::new();
        let mut cell = String::new();
        let mut quoted = false;
        let mut chars = line.chars().peekable();
        while let Some(c) = chars.next() {
            match (c, quoted) {
                ('"', true) if chars.peek() == Some(&'"') => {
                    cell.push('"');
                    chars.next();
                }
                ('"', _) => quoted = !quoted,
                (',', false) => cells.push(std::mem::take(&mut cell)),
                _ => cell.push(c),
            }
        }
        assert!(!quoted, "unterminated quote in CSV line: {line}");
        cells.push(cell);
        rows.push(cells);
    }
    rows
}

/// Checks that every element of `svg` is closed in order (a small well-formedness check: tags
/// only, no DTD or CDATA, which plotters does not write); returns the element names seen.
fn check_xml(svg: &str) -> Vec<String> {
    let mut stack: Vec<String> = Vec::new();
    let mut seen = Vec::new();
    let mut rest = svg;
    while let Some(start) = rest.find('<') {
        let end = rest[start..].find('>').expect("tag closed") + start;
        let tag = &rest[start + 1..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "mismatched </{name}>"
            );
            continue;
        }
        let name = tag
            .split(|c: char| c.is_whitespace() || c == '/')
            .next()
            .unwrap()
            .to_string();
        seen.push(name.clone());
        if !tag.ends_with('/') {
            stack.push(name);
        }
    }
    assert!(stack.is_empty(), "unclosed elements: {stack:?}");
    seen
}

#[test]
fn bench_suite_writes_csv_json_and_chart_for_every_adapter() {
    let found = adapters();
    let dir = scratch("bench_suite");
    let (csv, json, svg) = (
        dir.join("bench.csv"),
        dir.join("bench.json"),
        dir.join("bench.svg"),
    );
    let o = run(&[
        "bench",
        "--shape",
        "classification_64k",
        "--steps",
        "2",
        "--warmup",
        "1",
        "--gpu-steps",
        "1",
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(
        stdout.contains("speed-up") && stdout.contains("GFLOP/s"),
        "{stdout}"
    );

    // CSV: the documented header, one row per adapter.
    let table = parse_csv(&std::fs::read_to_string(&csv).unwrap());
    assert_eq!(table[0], CSV_COLUMNS);
    assert_eq!(table.len(), 1 + found.len(), "one row per adapter");
    let col = |row: &[String], name: &str| -> String {
        let i = CSV_COLUMNS.iter().position(|c| *c == name).unwrap();
        row[i].clone()
    };
    let num = |row: &[String], name: &str| -> f64 {
        col(row, name)
            .parse()
            .unwrap_or_else(|_| panic!("{name} = '{}' is not a number", col(row, name)))
    };
    for (row, adapter) in table[1..].iter().zip(&found) {
        assert_eq!(row.len(), CSV_COLUMNS.len());
        assert_eq!(col(row, "shape"), "classification_64k");
        assert_eq!(col(row, "family"), "per_row");
        assert_eq!(col(row, "adapter"), adapter.label());
        assert_eq!(col(row, "work_unit"), "rows");
        assert_eq!(num(row, "work_per_step"), 65536.0);
        // The FLOP model of classification: 15 per row.
        assert_eq!(num(row, "flops_per_step"), 15.0 * 65536.0);
        for c in [
            "median_s",
            "min_s",
            "bytes_per_step",
            "bytes_per_s",
            "copy_bytes_per_s",
            "fraction_of_copy",
            "flops_per_s",
            "reference_s",
            "speedup_vs_reference",
        ] {
            let v = num(row, c);
            assert!(v.is_finite() && v > 0.0, "{c} = {v}");
        }
        assert_eq!(num(row, "submissions_per_step"), 1.0);
        // Same inputs as the reference: the first step's losses agree.
        assert!(num(row, "reference_rel_diff") < 1e-4);
        assert_eq!(col(row, "reference_note"), "");
        if adapter.timestamps {
            assert!(num(row, "gpu_s") > 0.0);
        } else {
            assert_eq!(col(row, "gpu_s"), "");
            assert_eq!(col(row, "gpu_note"), "no timestamp queries");
        }
    }

    // JSON: the adapters with their copy bandwidth, when, and the same rows with passes.
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let date = v["date"].as_str().unwrap();
    assert!(
        date.len() == 10 && date.as_bytes()[4] == b'-' && date.as_bytes()[7] == b'-',
        "{date}"
    );
    let listed = v["adapters"].as_array().unwrap();
    assert_eq!(listed.len(), found.len());
    for (a, s) in listed.iter().zip(&found) {
        assert_eq!(a["name"], s.name.as_str());
        assert_eq!(a["backend"], s.backend.as_str());
        assert_eq!(a["driver"], s.driver.as_str());
        assert_eq!(a["device_type"], s.device_type.as_str());
        assert_eq!(a["subgroup_sizes"][1], s.subgroup_sizes.1);
        assert!(a["copy_bandwidth_bytes_per_s"].as_f64().unwrap() > 0.0);
    }
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), found.len());
    for (r, s) in rows.iter().zip(&found) {
        assert_eq!(r["adapter"], s.label().as_str());
        assert_eq!(r["steps"], 2);
        if s.timestamps {
            let passes = r["gpu"]["passes"].as_array().unwrap();
            assert!(!passes.is_empty());
            assert!(passes.iter().all(|p| p["seconds"].as_f64().unwrap() >= 0.0));
        } else {
            assert!(r["gpu"].is_null());
        }
        let speedup = r["reference"]["speedup"].as_f64().unwrap();
        assert!(speedup.is_finite() && speedup > 0.0);
    }

    // SVG: well-formed, axes labelled, one series (a line and a legend entry) per adapter.
    let text = std::fs::read_to_string(&svg).unwrap();
    assert!(text.trim_start().starts_with("<svg"), "not an SVG");
    let elements = check_xml(&text);
    assert!(elements.iter().any(|e| e == "text"));
    assert!(text.contains("rows per step") && text.contains("rows per second"));
    assert!(text.contains("per_row"));
    for s in &found {
        let legend = format!("classification · {}", short_label(&s.label()));
        assert_eq!(text.matches(&legend).count(), 1, "legend '{legend}'");
    }
    // Series lines are drawn 2 px wide: one polyline for the data and one in the legend each.
    assert_eq!(
        text.matches(r#"stroke-width="2""#).count(),
        2 * found.len(),
        "series per adapter"
    );
    assert_eq!(
        elements.iter().filter(|e| *e == "circle").count(),
        found.len()
    );
}

#[test]
fn bench_rejects_unknown_shapes_and_adapters_before_running() {
    adapters();
    let o = run(&["bench", "--shape", "no_such_shape"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("classification_64k"));
    let o = run(&["bench", "--skip", "no_such_shape"]);
    assert_eq!(o.status.code(), Some(2));
    let o = run(&[
        "bench",
        "--shape",
        "classification_64k",
        "--adapter",
        "no such adapter",
    ]);
    assert_eq!(o.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&o.stderr).contains("no adapter matches"));
    // --list needs no adapter and names every family.
    let o = run(&["bench", "--list"]);
    assert_eq!(o.status.code(), Some(0));
    let listed = String::from_utf8_lossy(&o.stdout);
    for family in [
        "softmax_ce",
        "per_row",
        "batch_wide",
        "pairwise",
        "retrieval",
    ] {
        assert!(listed.contains(family), "{family}");
    }
}

#[test]
fn device_inputs_upload_nothing_and_run_the_gpu_value_checks() {
    let found = adapters();
    let dir = scratch("bench_device_inputs");
    let json = dir.join("bench.json");
    let o = run(&[
        "bench",
        "--shape",
        "classification_64k",
        "--steps",
        "1",
        "--warmup",
        "1",
        "--gpu-steps",
        "1",
        "--no-reference",
        "--device-inputs",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&o.stderr)
    );
    let doc: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(doc["device_inputs"], true);
    let rows = doc["rows"].as_array().unwrap();
    assert_eq!(rows.len(), found.len());
    for (row, adapter) in rows.iter().zip(&found) {
        assert!(row["total_loss"].as_f64().unwrap().is_finite());
        if !adapter.timestamps {
            continue;
        }
        let labels: Vec<&str> = row["gpu"]["passes"]
            .as_array()
            .unwrap()
            .iter()
            .map(|p| p["label"].as_str().unwrap())
            .collect();
        for tensor in ["logits", "labels"] {
            let check = format!("check values of {tensor}");
            assert!(labels.contains(&check.as_str()), "{labels:?}");
        }
    }
}

/// A stand-in for Python that answers as the torch peer would: it checks that the inputs were
/// dumped and the script written beside them, and reports lossfuse's own first-step loss (from
/// the dumped metadata), 0.5 s a step and no compiled column.
fn fake_python(dir: &std::path::Path) -> std::path::PathBuf {
    let path = dir.join("fake-python");
    let script = r#"#!/bin/sh
while [ $# -gt 0 ]; do
    case "$1" in
        --inputs) dir=$2; shift ;;
        --shape) shape=$2; shift ;;
        --threads) threads=$2; shift ;;
    esac
    shift
done
[ -f "$dir/$shape.safetensors" ] && [ -f "$dir/torch_peer.py" ] || { echo "not dumped" >&2; exit 1; }
loss=$(sed -n 's/.*"lossfuse_total_loss": \([-0-9.eE+]*\).*/\1/p' "$dir/$shape.json")
echo "{\"shape\": \"$shape\", \"device\": \"cpu\", \"device_note\": null, \"threads\": $threads, \"torch\": \"fake\", \"loss\": $loss, \"eager\": {\"median_s\": 0.5, \"min_s\": 0.4, \"steps\": 3}, \"compiled\": null, \"compiled_note\": \"no compiler here\"}"
"#;
    std::fs::write(&path, script).unwrap();
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    path
}

#[test]
fn a_peer_adds_its_columns_to_the_table_csv_json_and_chart() {
    let found = adapters();
    let dir = scratch("bench_peer");
    let python = fake_python(&dir);
    let (csv, json, svg) = (dir.join("b.csv"), dir.join("b.json"), dir.join("b.svg"));
    let peer = format!("torch:{}", python.display());
    let o = run(&[
        "bench",
        "-q",
        "--shape",
        "classification_64k",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-reference",
        "--peer",
        &peer,
        "--csv",
        csv.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--plot",
        svg.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    assert!(out.contains("peer ms") && out.contains("vs peer"), "{out}");
    assert!(
        out.contains("classification_64k on torch fake (cpu,"),
        "{out}"
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows.len(), found.len());
    for r in rows {
        let peer = &r["peer"];
        assert_eq!(peer["eager"]["median_s"], 0.5);
        assert_eq!(peer["compiled"], serde_json::Value::Null);
        assert_eq!(peer["note"], "no compiler here");
        let vs = peer["vs_peer"].as_f64().unwrap();
        let median = r["median_s"].as_f64().unwrap();
        assert!((vs - 0.5 / median).abs() <= 1e-9 * vs, "{vs} {median}");
    }
    // The first adapter's loss is what the fake peer echoes.
    assert_eq!(rows[0]["peer"]["total_loss"], rows[0]["total_loss"]);
    assert_eq!(rows[0]["peer"]["rel_diff"], 0.0);
    let table = parse_csv(&std::fs::read_to_string(&csv).unwrap());
    let col = |name: &str| table[0].iter().position(|c| c == name).unwrap();
    for row in &table[1..] {
        assert_eq!(row[col("peer_s")].parse::<f64>().unwrap(), 0.5);
        assert!(row[col("vs_peer")].parse::<f64>().unwrap() > 0.0);
        assert_eq!(row[col("peer_note")], "no compiler here");
    }
    assert!(std::fs::read_to_string(&svg)
        .unwrap()
        .contains("torch eager (cpu)"));
}

#[test]
fn a_missing_python_is_said_and_the_bench_goes_on() {
    adapters();
    let o = run(&[
        "bench",
        "--shape",
        "classification_64k",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-reference",
        "--peer",
        "torch:/nonexistent/python3",
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let out = common::stdout(&o);
    assert!(
        out.contains("classification_64k: torch peer not run: cannot run '/nonexistent/python3'"),
        "{out}"
    );
    let o = run(&["bench", "--peer", "jax", "--shape", "classification_64k"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(common::stderr(&o).contains("unknown peer 'jax'"));
}

#[test]
fn dumped_inputs_are_the_values_the_gpu_read() {
    adapters();
    let dir = scratch("bench_dump");
    let o = run(&[
        "bench",
        "-q",
        "--shape",
        "pairwise_zipf_64k",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-reference",
        "--adapter",
        "vulkan",
        "--dump-inputs",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let case = lossfuse_cli::bench::Case::new(
        "pairwise_zipf_64k",
        lossfuse_cli::bench::seed_of("pairwise_zipf_64k"),
    )
    .unwrap();
    let dumped = lossfuse_cli::io::read_batch(&dir.join("pairwise_zipf_64k.safetensors")).unwrap();
    assert_eq!(dumped, case.host_batch());
    let meta: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("pairwise_zipf_64k.json")).unwrap())
            .unwrap();
    assert_eq!(meta["rows"], 65536);
    assert!(meta["lossfuse_total_loss"].as_f64().unwrap() > 0.0);
    let configs = meta["configs"].as_array().unwrap();
    assert_eq!(configs.len(), 1);
    lossfuse::LossConfig::from_toml_str(configs[0].as_str().unwrap()).unwrap();
}

#[test]
#[ignore = "needs PyTorch: LOSSFUSE_TORCH_PYTHON=/path/to/venv/bin/python cargo test -p lossfuse-cli --test bench -- --ignored"]
fn peer_losses_agree_with_lossfuse() {
    let python = std::env::var("LOSSFUSE_TORCH_PYTHON")
        .expect("LOSSFUSE_TORCH_PYTHON names a Python with torch, numpy and safetensors");
    let dir = scratch("bench_real_peer");
    let json = dir.join("b.json");
    let peer = format!("torch:{python}");
    let mut args = vec![
        "bench",
        "-q",
        "--adapter",
        "vulkan",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--gpu-steps",
        "0",
        "--no-reference",
        "--peer",
        &peer,
        "--peer-no-compile",
        "--json",
        json.to_str().unwrap(),
    ];
    // The families the peer knows (bench/peers/torch_peer.py; the others are still to write).
    for shape in [
        "softmax_ce_4096x8192",
        "classification_64k",
        "fused3_1m",
        "separate3_1m",
        "kd_softmax_4096x1024",
        "in_batch_4096_d64",
    ] {
        args.extend(["--shape", shape]);
    }
    let o = run(&args);
    assert_eq!(o.status.code(), Some(0), "{}", common::stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    for r in v["rows"].as_array().unwrap() {
        let diff = r["peer"]["rel_diff"].as_f64();
        assert!(
            diff.is_some_and(|d| d <= 1e-5),
            "{}: {}",
            r["shape"],
            r["peer"]
        );
    }
}
