use lossfuse::*;
#[test]
fn smoke() {
    for a in Engine::adapters() {
        println!("{:?}", a);
    }
    let engines = Engine::all(EngineOptions::default()).unwrap();
    let cfg = LossConfig::from_toml_str(
        r#"
[[losses]]
loss_type = "classification"
logits = "x"
labels = "y"
[[losses]]
name = "sm"
loss_type = "softmax_cross_entropy"
logits = "z"
labels = "c"
label_smoothing = 0.1
"#,
    )
    .unwrap();
    let b = 1000usize;
    let c = 5usize;
    let x: Vec<f32> = (0..b)
        .map(|i| ((i * 37 % 101) as f32 / 10.0) - 5.0)
        .collect();
    let y: Vec<f32> = (0..b).map(|i| (i % 3 == 0) as i32 as f32).collect();
    let z: Vec<f32> = (0..b * c)
        .map(|i| ((i * 53 % 97) as f32 / 20.0) - 2.0)
        .collect();
    let cl: Vec<i32> = (0..b).map(|i| (i % c) as i32).collect();
    // f64 expected
    let mut l1 = 0.0f64;
    for i in 0..b {
        let xi = x[i] as f64;
        let yi = y[i] as f64;
        l1 += xi.max(0.0) - xi * yi + (-xi.abs()).exp().ln_1p();
    }
    l1 /= b as f64;
    let mut l2 = 0.0f64;
    for i in 0..b {
        let row = &z[i * c..(i + 1) * c];
        let m = row.iter().cloned().fold(f32::MIN, f32::max) as f64;
        let lse = m + row.iter().map(|&v| (v as f64 - m).exp()).sum::<f64>().ln();
        let zy = row[cl[i] as usize] as f64;
        let mean: f64 = row.iter().map(|&v| lse - v as f64).sum::<f64>();
        l2 += 0.9 * (lse - zy) + 0.1 / (c as f64) * mean;
    }
    l2 /= b as f64;
    for e in engines {
        let shapes = Shapes::new()
            .tensor("x", &[b], DType::F32)
            .tensor("y", &[b], DType::F32)
            .tensor("z", &[b, c], DType::F32)
            .tensor("c", &[b], DType::I32);
        let mut plan = e.plan(&cfg, &shapes).unwrap();
        for (l, _n, r) in plan.describe() {
            println!("{l} {r:?}");
        }
        plan.poison_outputs();
        let out = plan
            .step(
                &Batch::new()
                    .tensor("x", &x)
                    .tensor("y", &y)
                    .tensor("z", &z)
                    .ids("c", &cl),
            )
            .unwrap();
        let rep = out.report_blocking().unwrap();
        let g = out.read_grad("x").unwrap();
        let gz = out.read_grad("z").unwrap();
        println!(
            "{} {:?} expect {l1} {l2}; g0 {} gz0 {} counters {:?}",
            e.adapter().label(),
            rep,
            g[0],
            gz[0],
            out.counters()
        );
        assert!(((rep.terms[0].value as f64) - l1).abs() < 1e-4 * l1);
        assert!(((rep.terms[1].value as f64) - l2).abs() < 1e-4 * l2);
        assert!(g.iter().all(|v| v.is_finite()) && gz.iter().all(|v| v.is_finite()));
    }
}
