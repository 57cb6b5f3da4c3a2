//! `lossfuse soak` and `lossfuse example-batch` on every adapter: resident memory stays flat over
//! many steps of each example config (lavapipe of Mesa 22.3 leaked about 1.3 MB a step when a
//! uniform-buffer value bounded a loop), and the generated batches run.

mod common;
use common::*;

/// Steps and rows per config: a few thousand steps, so that the old leak (≥ 1 MB a step on
/// lavapipe) would exceed the 16 MB bound a hundred times over; the 100,000-step runs are in
/// bench/results/2026-12-02-soak.md.
const RUNS: &[(&str, &str, &str)] = &[
    ("ctr", "3000", "64"),
    ("batch_wide", "3000", "64"),
    ("ranking", "2000", "64"),
    ("retrieval", "300", "16"),
];

#[test]
fn memory_stays_flat_over_the_example_configs() {
    for adapter in adapters() {
        for (config, steps, rows) in RUNS {
            let path = format!(
                "{}/../examples/configs/{config}.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            let warmup = if *config == "retrieval" { "50" } else { "500" };
            let out = run(&[
                "soak",
                "--config",
                &path,
                "--adapter",
                &adapter.label(),
                "--steps",
                steps,
                "--every",
                "250",
                "--warmup",
                warmup,
                "--rows",
                rows,
            ]);
            assert!(
                out.status.success(),
                "{config} on {}: memory grew beyond the bound\n{}",
                adapter.label(),
                stdout(&out)
            );
            assert!(stdout(&out).contains("PASS"), "{}", stdout(&out));
        }
    }
}

#[test]
fn example_batch_writes_a_batch_that_eval_runs() {
    let dir = scratch("example_batch");
    for config in ["ctr", "batch_wide", "ranking", "retrieval"] {
        let cfg = format!(
            "{}/../examples/configs/{config}.toml",
            env!("CARGO_MANIFEST_DIR")
        );
        let batch = dir.join(format!("{config}.safetensors"));
        let out = run(&[
            "example-batch",
            "--config",
            &cfg,
            "--output",
            batch.to_str().unwrap(),
            "--rows",
            "48",
            "--seed",
            "7",
        ]);
        assert!(out.status.success(), "{}", stderr(&out));
        let result = dir.join(format!("{config}-out.safetensors"));
        let out = run(&[
            "eval",
            "--config",
            &cfg,
            "--input",
            batch.to_str().unwrap(),
            "--output",
            result.to_str().unwrap(),
            "--reference",
            "--quiet",
        ]);
        assert!(out.status.success(), "{config}: {}", stderr(&out));
    }
}
