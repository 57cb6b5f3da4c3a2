//! `bench/gpu/run.sh --cpu`: the GPU run's script end to end on this machine's software Vulkan
//! adapter (lavapipe), with its small shapes and a few check cases: every file it promises is
//! written and holds what it says. The peer runs with `PYTHON` when that names a Python with
//! torch; without one the bench says so and goes on, which is what is checked then.

mod common;
use common::{adapters, scratch};

#[test]
fn the_gpu_script_runs_end_to_end_on_lavapipe() {
    adapters();
    let out = scratch("gpu_script");
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../bench/gpu/run.sh");
    let o = std::process::Command::new("bash")
        .arg(script)
        .args(["--cpu", "--bin", env!("CARGO_BIN_EXE_lossfuse"), "--out"])
        .arg(&out)
        .output()
        .expect("bash runs");
    let log = format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    assert_eq!(o.status.code(), Some(0), "{log}");
    let read =
        |f: &str| std::fs::read_to_string(out.join(f)).unwrap_or_else(|e| panic!("{f}: {e}"));
    assert!(read("adapters.txt").contains("(Vulkan)"), "{log}");
    let check: serde_json::Value = serde_json::from_str(&read("check.json")).unwrap();
    assert_eq!(check["failed"], 0, "{}", read("check.md"));
    assert!(check["passed"].as_u64().unwrap() >= 3);
    let bench: serde_json::Value = serde_json::from_str(&read("bench.json")).unwrap();
    let rows = bench["rows"].as_array().unwrap();
    let shapes: Vec<&str> = rows.iter().map(|r| r["shape"].as_str().unwrap()).collect();
    assert_eq!(
        shapes,
        [
            "classification_64k",
            "listwise_zipf_64k",
            "pairwise_zipf_64k"
        ]
    );
    for r in rows {
        assert!(r["backend"] == "Vulkan" && r["median_s"].as_f64().unwrap() > 0.0);
        // The peer ran (a Python with torch) or said why not.
        let peer = &r["peer"];
        assert!(
            peer["eager"]["median_s"].is_number() || peer["skipped"].is_string(),
            "{peer}"
        );
    }
    assert!(read("bench.csv")
        .lines()
        .next()
        .unwrap()
        .contains("vs_peer"));
    assert!(read("bench.md").contains("peer ms"));
    assert!(read("bench.svg").trim_end().ends_with("</svg>"));
    assert!(read("run.log").contains("== done in"));
}
