//! `lossfuse check`, the conformance suite, on every adapter found: it passes and writes its
//! table, Markdown and JSON; a failure exits 1 and is named; `--compare` puts reports side by
//! side; bad arguments exit 2.

mod common;
use common::*;
use serde_json::Value;

fn read_json(path: &std::path::Path) -> Value {
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

#[test]
fn check_passes_on_every_adapter_and_writes_its_three_outputs() {
    let found = adapters();
    let dir = scratch("check_all");
    let (md, json) = (dir.join("check.md"), dir.join("check.json"));
    let o = run(&["check", "--markdown", p(&md), "--json", p(&json)]);
    assert_eq!(o.status.code(), Some(0), "{}{}", stdout(&o), stderr(&o));
    let v = read_json(&json);
    let cases = v["cases"].as_array().unwrap();
    let text = stdout(&o);
    assert!(
        text.contains(&format!(
            "{0} of {0} cases pass on every adapter",
            cases.len()
        )),
        "{text}"
    );
    // The adapters, with what lets reports from other machines be put side by side.
    let reported = v["adapters"].as_array().unwrap();
    assert_eq!(reported.len(), found.len());
    for (a, want) in reported.iter().zip(&found) {
        assert_eq!(a["label"], want.label());
        assert_eq!(a["backend"], want.backend);
        assert_eq!(a["driver"], want.driver);
        assert_eq!(a["subgroup_sizes"][1], want.subgroup_sizes.1);
        assert!(text.contains(&want.label()), "{text}");
    }
    assert_eq!(v["seed"], 1);
    assert_eq!(v["failed"], 0);
    assert_eq!(v["date"].as_str().unwrap().len(), 10);
    // Every loss type and strategy is among the cases, each with a cell per adapter within its
    // tolerance.
    let configs: String = cases
        .iter()
        .map(|c| c["config"].as_str().unwrap())
        .collect();
    for t in lossfuse::loss_types() {
        assert!(
            configs.contains(&format!("loss_type = '{t}'")),
            "no case for {t}"
        );
    }
    for s in lossfuse::config::WEIGHT_STRATEGIES {
        assert!(
            cases.iter().any(|c| c["name"] == format!("strategy/{s}")),
            "no case for {s}"
        );
    }
    let markdown = std::fs::read_to_string(&md).unwrap();
    for case in cases {
        let name = case["name"].as_str().unwrap();
        let results = case["results"].as_array().unwrap();
        assert_eq!(results.len(), found.len(), "{name}");
        let tol = &case["tolerance"];
        for r in results {
            assert_eq!(r["status"], "pass", "{name}: {r}");
            if case["expect"] == "match" {
                assert!(
                    r["loss"].as_f64().unwrap() <= tol["rel"].as_f64().unwrap(),
                    "{name}"
                );
                assert!(r["grad"].as_f64().unwrap() <= tol["grad_norm"].as_f64().unwrap());
                assert!(r["elem"].as_f64().unwrap() <= tol["grad_elem"].as_f64().unwrap());
            } else {
                // The tensor each refused case names (a NaN embedding, a probability above 1).
                let tensor = if name.starts_with("distill/") {
                    "'p'"
                } else {
                    "'u'"
                };
                assert!(
                    r["message"].as_str().unwrap().contains(tensor),
                    "{name}: {r}"
                );
            }
        }
        assert_eq!(
            case["agreement"].is_null(),
            found.len() < 2 || case["expect"] != "match"
        );
        assert!(
            markdown.contains(&format!("| `{name}` |")),
            "{name} not in the Markdown"
        );
    }
    // Every Markdown table (a run of lines starting with '|') has rows as wide as its header.
    let mut width = None;
    for line in markdown.lines() {
        if !line.starts_with('|') {
            width = None;
            continue;
        }
        // Escaped pipes inside cells are not separators.
        let n = line.replace("\\|", "").matches('|').count();
        assert_eq!(*width.get_or_insert(n), n, "ragged Markdown row: {line}");
    }
}

#[test]
fn a_tolerance_too_tight_fails_with_exit_1_naming_the_case() {
    let found = adapters();
    let dir = scratch("check_tight");
    let json = dir.join("check.json");
    let o = run(&[
        "check",
        "--case",
        "classification/binary",
        "--tolerance-scale",
        "1e-6",
        "--markdown",
        p(&dir.join("check.md")),
        "--json",
        p(&json),
    ]);
    assert_eq!(o.status.code(), Some(1), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("FAIL"), "{text}");
    for a in &found {
        assert!(
            text.contains(&format!(
                "classification/binary on {}: outside tolerance",
                a.label()
            )),
            "{text}"
        );
    }
    let v = read_json(&json);
    assert_eq!(v["failed"], 1);
    assert_eq!(v["cases"][0]["results"][0]["status"], "fail");
}

#[test]
fn compare_puts_reports_side_by_side() {
    let found = adapters();
    let dir = scratch("check_compare");
    let (a, b) = (dir.join("a.json"), dir.join("b.json"));
    let md = |n: &str| dir.join(n);
    let o = run(&[
        "check",
        "-q",
        "--case",
        "softmax_cross_entropy/plain",
        "--json",
        p(&a),
        "--markdown",
        p(&md("a.md")),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let first = found[0].label();
    let o = run(&[
        "check",
        "-q",
        "--seed",
        "2",
        "--adapter",
        &first,
        "--case",
        "softmax_cross_entropy/plain",
        "--case",
        "edge/one_row",
        "--json",
        p(&b),
        "--markdown",
        p(&md("b.md")),
    ]);
    assert_eq!(o.status.code(), Some(0));
    let side = md("side.md");
    let o = run(&["check", "--compare", p(&a), p(&b), "--markdown", p(&side)]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for col in (0..found.len())
        .map(|i| format!("R0.A{i}"))
        .chain(["R1.A0".into()])
    {
        assert!(text.contains(&col), "{col} missing: {text}");
    }
    assert!(text.contains("different seeds"), "{text}");
    // edge/one_row is only in the second report.
    let row = text
        .lines()
        .find(|l| l.starts_with("edge/one_row"))
        .unwrap();
    assert!(row.contains(" - ") || row.contains("  -"), "{row}");
    assert!(std::fs::read_to_string(&side)
        .unwrap()
        .contains("| R1.A0 |"));

    // A failure in any report makes the comparison exit 1.
    let mut v = read_json(&b);
    v["cases"][0]["results"][0]["status"] = "fail".into();
    v["failed"] = 1.into();
    std::fs::write(&b, v.to_string()).unwrap();
    let o = run(&["check", "--compare", p(&a), p(&b)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAIL"));

    // Something that is not a report: exit 2 naming the file.
    std::fs::write(&b, "{}").unwrap();
    let o = run(&["check", "--compare", p(&a), p(&b)]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("b.json"), "{}", stderr(&o));
}

#[test]
fn a_case_an_adapter_cannot_run_is_reported_unsupported_not_failed() {
    let found = adapters();
    let dir = scratch("check_unsupported");
    let json = dir.join("check.json");
    // C = 65,536 floats per softmax row cannot fit 64 KiB bindings; the per-row case still runs.
    let o = run(&[
        "check",
        "--max-binding-bytes",
        "65536",
        "--case",
        "softmax_cross_entropy/wide_row",
        "--case",
        "classification/binary",
        "--json",
        p(&json),
        "--markdown",
        p(&dir.join("check.md")),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    assert!(text.contains("unsupported (not run)"), "{text}");
    assert!(
        text.contains("2 of 2 cases pass where they ran; 1 were not run"),
        "{text}"
    );
    let v = read_json(&json);
    assert_eq!(v["unsupported"], 1);
    for case in v["cases"].as_array().unwrap() {
        let want = if case["name"] == "softmax_cross_entropy/wide_row" {
            "unsupported"
        } else {
            "pass"
        };
        let results = case["results"].as_array().unwrap();
        assert_eq!(results.len(), found.len());
        for r in results {
            assert_eq!(r["status"], want, "{r}");
        }
    }
}

#[test]
fn bad_arguments_exit_2_saying_what_is_known() {
    let found = adapters();
    let o = run(&["check", "--adapter", "no such adapter"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains(&found[0].label()), "{}", stderr(&o));
    let o = run(&["check", "--case", "no such case"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("--list"), "{}", stderr(&o));
    let o = run(&["check", "--list"]);
    assert_eq!(o.status.code(), Some(0));
    assert!(stdout(&o).contains("cross_batch_softmax"));
    assert!(stdout(&o).contains("edge/nan_refused"));
}
