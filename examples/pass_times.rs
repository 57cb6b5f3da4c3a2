//! Prints the GPU time of every pass of a step, for a shape given on the command line:
//! `cargo run --release --example pass_times -- rows 1048576`, `-- softmax 4096 8192` or
//! `-- batch_wide 1048576` (examples/configs/batch_wide.toml: the statistics, selection and
//! prepare passes of GHM-C, OHEM and F1).

use lossfuse::{Batch, DType, Engine, LossConfig, Shapes};

fn main() -> lossfuse::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let engine = Engine::new()?;
    let num = |i: usize, d: usize| args.get(i).and_then(|s| s.parse().ok()).unwrap_or(d);
    let (config, shapes, x, y, ids) = if args.first().map(String::as_str) == Some("softmax") {
        let (b, c) = (num(1, 4096), num(2, 8192));
        let config =
            "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'x'\nlabels = 'k'\n";
        let shapes = Shapes::new()
            .tensor("x", &[b, c], DType::F32)
            .tensor("k", &[b], DType::I32);
        let x: Vec<f32> = (0..b * c)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let ids: Vec<i32> = (0..b).map(|i| (i % c) as i32).collect();
        (config.to_string(), shapes, x, Vec::new(), ids)
    } else {
        let b = num(1, 1 << 20);
        let config = if args.first().map(String::as_str) == Some("batch_wide") {
            include_str!("configs/batch_wide.toml")
                .replace("\"logits\"", "\"x\"")
                .replace("\"labels\"", "\"y\"")
        } else {
            "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
                      [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\n\
                      [[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'y'\n"
                .to_string()
        };
        let shapes = Shapes::new()
            .tensor("x", &[b], DType::F32)
            .tensor("y", &[b], DType::F32);
        let x: Vec<f32> = (0..b)
            .map(|i| ((i * 7919) % 1000) as f32 / 250.0 - 2.0)
            .collect();
        let y: Vec<f32> = (0..b).map(|i| (i % 3 == 0) as i32 as f32).collect();
        (config, shapes, x, y, Vec::new())
    };
    let mut plan = engine.plan(&LossConfig::from_toml_str(&config)?, &shapes)?;
    plan.enable_pass_timing()?;
    let batch = if ids.is_empty() {
        Batch::new().tensor("x", &x).tensor("y", &y)
    } else {
        Batch::new().tensor("x", &x).ids("k", &ids)
    };
    for step in 0..3 {
        let t = std::time::Instant::now();
        plan.step(&batch)?.report_blocking()?;
        let wall = t.elapsed().as_secs_f64();
        println!(
            "step {step}: wall {:.1} ms ({})",
            wall * 1e3,
            engine.adapter().label()
        );
        for (label, s) in plan.pass_times()? {
            println!("  {label:<72} {:>9.3} ms", s * 1e3);
        }
    }
    Ok(())
}
