mod common;
use common::*;
use lossfuse::LossConfig;

#[test]
fn scratch_in_batch() {
    let (b, d) = (5usize, 3usize);
    let mut rng = Rng::new(1);
    let u = reals(&mut rng, b * d, -1.0, 1.0);
    let v = reals(&mut rng, b * d, -1.0, 1.0);
    let t = 0.5;
    // f64 in-batch dot.
    let mut loss = 0.0;
    let mut gu = vec![0.0; b * d];
    let mut gv = vec![0.0; b * d];
    for i in 0..b {
        let s: Vec<f64> = (0..b).map(|j| (0..d).map(|c| u[i * d + c] * v[j * d + c]).sum::<f64>() / t).collect();
        let m = s.iter().cloned().fold(f64::MIN, f64::max);
        let lse = m + s.iter().map(|x| (x - m).exp()).sum::<f64>().ln();
        loss += (lse - s[i]) / b as f64;
        for j in 0..b {
            let g = ((s[j] - lse).exp() - if i == j { 1.0 } else { 0.0 }) / b as f64 / t;
            for c in 0..d {
                gu[i * d + c] += g * v[j * d + c];
                gv[j * d + c] += g * u[i * d + c];
            }
        }
    }
    let cfg = LossConfig::from_toml_str("[[losses]]\nloss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\ntemperature = 0.5\n").unwrap();
    let batch = Inputs::new().real("u", &[b, d], u).real("v", &[b, d], v);
    for e in engines() {
        let out = run_gpu(&e, &cfg, &batch.0, 2);
        println!("{} loss {} vs {loss}", e.adapter().label(), out[0].report.total);
        println!("gu {:?}\n   {:?}", &out[0].grads["u"][..6], &gu[..6]);
        println!("gv {:?}\n   {:?}", &out[0].grads["v"][..6], &gv[..6]);
    }
}

#[test]
fn scratch_smoke() {
    let (b, d) = (37usize, 8usize);
    let mut rng = Rng::new(2);
    let u = reals(&mut rng, b * d, -1.0, 1.0);
    let v = reals(&mut rng, b * d, -1.0, 1.0);
    let lq = reals(&mut rng, b, -3.0, -1.0);
    let ids: Vec<i64> = (0..b).map(|_| rng.below(20) as i64).collect();
    let y: Vec<f64> = (0..b).map(|_| rng.below(3) as f64).collect();
    let batch = Inputs::new().real("u", &[b, d], u).real("v", &[b, d], v).real("lq", &[b], lq).ids("ids", &[b], ids).real("y", &[b], y);
    for body in [
        "loss_type = 'contrastive_loss'\nview_a = 'u'\nview_b = 'v'\nvariant = 'nt_xent'",
        "loss_type = 'softmax_cross_entropy_with_negative_mining'\nuser = 'u'\nitem = 'v'\nlabels = 'y'\nseed = 3\nmargin = 0.2",
        "loss_type = 'circle_loss'\nembeddings = 'u'\nlabels = 'y'",
        "loss_type = 'multi_similarity_loss'\nembeddings = 'u'\nlabels = 'y'",
    ] {
        let cfg = LossConfig::from_toml_str(&format!("[[losses]]\n{body}\n")).unwrap();
        for e in engines() {
            let out = run_gpu(&e, &cfg, &batch.0, 3);
            let g: Vec<f32> = out[2].grads.values().flat_map(|g| g[..3].to_vec()).collect();
            println!("{}: {} {} {} {:?}", body.lines().next().unwrap(), out[0].report.total, out[1].report.total, out[2].report.total, g);
        }
    }
}
