mod common;
use common::*;
use lossfuse::LossConfig;

fn softplus(z: f64) -> f64 {
    z.max(0.0) + (-z.abs()).exp().ln_1p()
}

#[test]
fn smoke() {
    let mut rng = Rng::new(3);
    let b = 700;
    let x = reals(&mut rng, b, -3.0, 3.0);
    let y: Vec<f64> = (0..b).map(|_| rng.below(3) as f64).collect();
    let s: Vec<i64> = (0..b).map(|_| rng.below(40) as i64 * 7919 - 100).collect();
    let batch = Inputs::new()
        .real("x", &[b], x.clone())
        .real("y", &[b], y.clone())
        .ids("s", &[b], s.clone());
    // brute force, pair_wise_loss, nonzero_mean with w = 1
    let mut sum = 0.0;
    let mut n = 0.0;
    let mut g = vec![0.0; b];
    for i in 0..b {
        for j in 0..b {
            if y[i] > y[j] && s[i] == s[j] {
                let d = x[i] - x[j];
                sum += softplus(-d);
                n += 1.0;
                let dl = -1.0 / (1.0 + d.exp());
                g[i] += dl;
                g[j] -= dl;
            }
        }
    }
    for session in ["session = 's'", ""] {
        let config = LossConfig::from_toml_str(&format!(
            "[[losses]]\nloss_type='pair_wise_loss'\nlogits='x'\nlabels='y'\n{session}\n"
        ))
        .unwrap();
        for engine in engines() {
            let out = run_gpu(&engine, &config, &batch.0, 2);
            println!(
                "{} {session}: {} grad[0..4] {:?}",
                engine.adapter().label(),
                out[1].report.total,
                &out[1].grads["x"][..4]
            );
        }
    }
    println!(
        "expected {} grad {:?}",
        sum / n,
        g[..4].iter().map(|v| v / n).collect::<Vec<_>>()
    );
}
