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
