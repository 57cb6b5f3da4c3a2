//! `lossfuse soak` and `lossfuse example-batch` on every adapter: resident memory stays flat over
//! many steps of each example config (lavapipe of Mesa 22.3 leaked about 1.3 MB a step when a
//! uniform-buffer value bounded a loop), and the generated batches run.

mod common;
use common::*;

/// Steps and rows per config: enough steps after warm-up that the old leak (≥ 1 MB a step on
/// lavapipe) would exceed the 16 MB bound several times over, few enough for CI.
const RUNS: &[(&str, &str, &str)] = &[
    ("ctr", "400", "256"),
    ("batch_wide", "400", "256"),
    ("ranking", "300", "128"),
    ("retrieval", "60", "32"),
];

#[test]
fn memory_stays_flat_over_the_example_configs() {
    for adapter in adapters() {
        for (config, steps, rows) in RUNS {
            let path = format!(
                "{}/../examples/configs/{config}.toml",
                env!("CARGO_MANIFEST_DIR")
            );
            let warmup = if *config == "retrieval" { "20" } else { "100" };
            let out = run(&[
                "soak",
                "--config",
                &path,
                "--adapter",
                &adapter.label(),
                "--steps",
                steps,
                "--every",
                "100",
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
