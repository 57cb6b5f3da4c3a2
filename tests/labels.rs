//! Labels of every dtype (issue: EasyRec's callers pass int64 clicks): every labels role takes
//! F32, F64, I32, U32, I64 and U64, from host slices and from device buffers, and gives exactly
//! the result of the same labels as F32 (the cast view is the same f32 values), which matches the
//! f64 reference on the integer labels.

mod common;
use common::*;
use lossfuse::reference::ReferenceOutput;
use lossfuse::{Batch, DType, Engine, HostTensor, Input, LossConfig, Report, Shapes};

const B: usize = 600;

/// Every family with a labels role, on one batch: binary (sigmoid CE, focal), graded (pairwise,
/// pairwise logistic), class ids (softmax CE), 0/1 (JRC), metric (equality), mining (real).
const CONFIG: &str = r#"
[[losses]]
name = "ce"
loss_type = "classification"
logits = "x"
labels = "y"
[[losses]]
name = "focal"
loss_type = "binary_focal_loss"
logits = "x"
labels = "y"
ohem_ratio = 0.5
[[losses]]
name = "pairs"
loss_type = "pair_wise_loss"
logits = "x"
labels = "g"
session = "s"
[[losses]]
name = "logistic"
loss_type = "pairwise_logistic_loss"
logits = "x"
labels = "g"
session = "s"
[[losses]]
name = "jrc"
loss_type = "jrc_loss"
logits = "z"
labels = "y"
session = "s"
[[losses]]
name = "softmax"
loss_type = "softmax_cross_entropy"
logits = "zc"
labels = "c"
[[losses]]
name = "ms"
loss_type = "multi_similarity_loss"
embeddings = "u"
labels = "m"
"#;

/// The batch with integer labels: y 0/1, g graded 0..4, c class ids 0..5, m metric labels
/// beyond 2^32 (read as 64-bit words), s sessions.
fn batch() -> Inputs {
    let mut rng = Rng::new(11);
    let y: Vec<i64> = (0..B).map(|_| (rng.unit() < 0.3) as i64).collect();
    let g: Vec<i64> = (0..B).map(|_| rng.below(5) as i64).collect();
    let c: Vec<i64> = (0..B).map(|_| rng.below(5) as i64).collect();
    let m: Vec<i64> = (0..B).map(|_| (1 << 33) + rng.below(7) as i64).collect();
    let s: Vec<i64> = (0..B).map(|i| (i / 12) as i64).collect();
    Inputs::new()
        .real("x", &[B], reals(&mut rng, B, -3.0, 3.0))
        .real("z", &[B, 2], reals(&mut rng, 2 * B, -3.0, 3.0))
        .real("zc", &[B, 5], reals(&mut rng, 5 * B, -3.0, 3.0))
        .real("u", &[B, 8], reals(&mut rng, 8 * B, -1.0, 1.0))
        .ids("y", &[B], y)
        .ids("g", &[B], g)
        .ids("c", &[B], c)
        .ids("m", &[B], m)
        .ids("s", &[B], s)
}

/// The labels' values in `dtype`, as host words (little-endian).
fn words(values: &[i64], dtype: DType) -> Vec<u8> {
    let mut out = Vec::new();
    for &v in values {
        match dtype {
            DType::F32 => out.extend((v as f32).to_le_bytes()),
            DType::F64 => out.extend((v as f64).to_le_bytes()),
            DType::I32 => out.extend((v as i32).to_le_bytes()),
            DType::U32 => out.extend((v as u32).to_le_bytes()),
            DType::I64 => out.extend(v.to_le_bytes()),
            DType::U64 => out.extend((v as u64).to_le_bytes()),
        }
    }
    out
}

/// Owned host values of one dtype, and the batch input borrowing them.
enum Values {
    F32(Vec<f32>),
    F64(Vec<f64>),
    I32(Vec<i32>),
    U32(Vec<u32>),
    I64(Vec<i64>),
    U64(Vec<u64>),
}

impl Values {
    fn of(bytes: &[u8], dtype: DType) -> Self {
        match dtype {
            DType::F32 => Values::F32(bytemuck::pod_collect_to_vec(bytes)),
            DType::F64 => Values::F64(bytemuck::pod_collect_to_vec(bytes)),
            DType::I32 => Values::I32(bytemuck::pod_collect_to_vec(bytes)),
            DType::U32 => Values::U32(bytemuck::pod_collect_to_vec(bytes)),
            DType::I64 => Values::I64(bytemuck::pod_collect_to_vec(bytes)),
            DType::U64 => Values::U64(bytemuck::pod_collect_to_vec(bytes)),
        }
    }
    fn input(&self) -> Input<'_> {
        match self {
            Values::F32(v) => Input::F32(v),
            Values::F64(v) => Input::F64(v),
            Values::I32(v) => Input::I32(v),
            Values::U32(v) => Input::U32(v),
            Values::I64(v) => Input::I64(v),
            Values::U64(v) => Input::U64(v),
        }
    }
}

/// One step with every labels tensor in `dtype` (class ids and metric labels stay integers when
/// `dtype` is F32 or F64), from host slices or from
/// device buffers: the report and x's gradient.
fn step(engine: &Engine, inputs: &Inputs, dtype: DType, device: bool) -> (Report, Vec<f32>) {
    let config = LossConfig::from_toml_str(CONFIG).unwrap();
    let mut shapes = Shapes::of_host(&inputs.0);
    let label_dtype = |name: &str| match (name, dtype) {
        // Class ids are integers (F32/F64 labels of a softmax term are probabilities); metric
        // labels beyond 2^32 are not f32-distinct.
        ("c" | "m", DType::F32 | DType::F64) => DType::I64,
        ("m", DType::I32 | DType::U32) => DType::I64, // ids beyond 2^32
        _ => dtype,
    };
    let labels = ["y", "g", "c", "m"];
    let mut values = Vec::new();
    for name in labels {
        let HostTensor { shape, data } = &inputs.0[name];
        let lossfuse::HostData::Int(v) = data else {
            unreachable!()
        };
        shapes.insert(name, shape, label_dtype(name));
        values.push(Values::of(&words(v, label_dtype(name)), label_dtype(name)));
    }
    let mut plan = engine.plan(&config, &shapes).unwrap();
    let owned = lossfuse::OwnedBatch::from_host(&inputs.0).unwrap();
    let buffers: Vec<_> = values
        .iter()
        .map(|v| {
            let bytes = words_of(v);
            device_buffer(engine.device(), engine.queue(), &bytes)
        })
        .collect();
    let mut batch: Batch = owned.batch();
    for (k, name) in labels.into_iter().enumerate() {
        batch = match device {
            true => batch.buffer(name, &buffers[k]),
            false => batch.input(name, values[k].input()),
        };
    }
    let out = plan.step(&batch).unwrap();
    (out.report_blocking().unwrap(), out.read_grad("x").unwrap())
}

fn words_of(v: &Values) -> Vec<u8> {
    match v {
        Values::F32(v) => bytemuck::cast_slice(v).to_vec(),
        Values::F64(v) => bytemuck::cast_slice(v).to_vec(),
        Values::I32(v) => bytemuck::cast_slice(v).to_vec(),
        Values::U32(v) => bytemuck::cast_slice(v).to_vec(),
        Values::I64(v) => bytemuck::cast_slice(v).to_vec(),
        Values::U64(v) => bytemuck::cast_slice(v).to_vec(),
    }
}

#[test]
fn every_label_dtype_gives_the_f32_result_and_matches_the_reference() {
    let inputs = batch();
    let config = LossConfig::from_toml_str(CONFIG).unwrap();
    let reference = &run_reference(&config, &inputs.0, 1)[0];
    for engine in engines() {
        let label = engine.adapter().label();
        let (f32_report, f32_grad) = step(&engine, &inputs, DType::F32, false);
        let gpu = GpuStep {
            report: f32_report.clone(),
            grads: [("x".to_string(), f32_grad.clone())].into(),
            predictions: Default::default(),
        };
        assert_matches_only(&label, &gpu, reference);
        for dtype in DType::LABELS {
            for device in [false, true] {
                let (report, grad) = step(&engine, &inputs, dtype, device);
                let what = format!("{label}: labels {} (device buffer: {device})", dtype.name());
                assert_eq!(report.total.to_bits(), f32_report.total.to_bits(), "{what}");
                for (a, b) in report.terms.iter().zip(&f32_report.terms) {
                    assert_eq!(a.value.to_bits(), b.value.to_bits(), "{what}: {}", a.name);
                }
                assert!(grad
                    .iter()
                    .zip(&f32_grad)
                    .all(|(a, b)| a.to_bits() == b.to_bits()));
            }
        }
    }
}

/// Compares the total, every term and x's gradient (the one gradient read back) with the
/// reference.
fn assert_matches_only(label: &str, gpu: &GpuStep, reference: &ReferenceOutput) {
    let mut r = reference.clone();
    r.grads.retain(|k, _| k == "x");
    let mut g = gpu.clone();
    g.grads.retain(|k, _| k == "x");
    assert_matches(label, &g, &r, PAIR);
}

const PAIR: Tol = Tol {
    rel: 2e-4,
    abs: 1e-6,
    grad_norm: 2e-4,
    grad_elem: 5e-4,
};

/// F64 labels round to nearest, ties to even, on the GPU as Rust's `as f32` does: read back
/// through l2_loss's gradient 2(x − y)/B at x = 0, B = 2^k (exact), over ties, subnormals, values
/// beyond f32's range... kept finite, and integers above 2^24 of every integer dtype.
#[test]
fn f64_and_wide_integer_labels_round_as_rust_does() {
    let mut specials: Vec<f64> = vec![
        0.0,
        -0.0,
        1.0,
        0.1,
        -2.5e-3,
        1.0 + f32::EPSILON as f64 / 2.0,       // a tie: to even (1.0)
        1.0 + 3.0 * f32::EPSILON as f64 / 2.0, // a tie: to even (up)
        1.0 + f32::EPSILON as f64 / 2.0 + 1e-15,
        f32::MIN_POSITIVE as f64 / 3.0, // an f32 subnormal
        f32::MIN_POSITIVE as f64 * 1.5,
        1.401298464324817e-45 * 0.5, // half the smallest subnormal: ties to 0
        1.401298464324817e-45 * 0.75,
        1e-300,
        1.7e38,
        16777217.0, // 2^24 + 1: a tie
        123456789.0,
        -987654321.5,
    ];
    let mut rng = Rng::new(5);
    while specials.len() < 256 {
        let e = rng.range(-140.0, 120.0);
        specials.push(rng.range(-1.0, 1.0) * 2f64.powf(e));
    }
    let b = specials.len();
    let config = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = 'l2_loss'\npredictions = 'p'\nlabels = 'y'\nreduction = 'sum'",
    )
    .unwrap();
    let p = vec![0.0f32; b];
    let ints: Vec<i64> = (0..b as i64)
        .map(|i| (i - 128) * 123_456_789_013 + (i % 7))
        .collect();
    for engine in engines() {
        let label = engine.adapter().label();
        let read = |dtype: DType, bytes: &[u8]| {
            let shapes = Shapes::new()
                .tensor("p", &[b], DType::F32)
                .tensor("y", &[b], dtype);
            let mut plan = engine.plan(&config, &shapes).unwrap();
            let y = device_buffer(engine.device(), engine.queue(), bytes);
            let out = plan
                .step(&Batch::new().tensor("p", &p).buffer("y", &y))
                .unwrap();
            // d/dp (p − y)² = 2(p − y) = −2y, exactly.
            let g = out.read_grad("p").unwrap();
            g.iter().map(|g| -g / 2.0).collect::<Vec<f32>>()
        };
        let got = read(DType::F64, bytemuck::cast_slice(&specials));
        for (i, (&want, got)) in specials.iter().zip(&got).enumerate() {
            let want = want as f32;
            assert!(
                want.to_bits() == got.to_bits() || (want == 0.0 && *got == 0.0),
                "{label}: element {i}: {:e} became {got:e}, Rust says {want:e}",
                specials[i]
            );
        }
        let from_i64 = read(DType::I64, bytemuck::cast_slice(&ints));
        let unsigned: Vec<u64> = ints.iter().map(|&v| v.unsigned_abs()).collect();
        let from_u64 = read(DType::U64, bytemuck::cast_slice(&unsigned));
        for i in 0..b {
            for (got, want) in [
                (from_i64[i], ints[i] as f64),
                (from_u64[i], unsigned[i] as f64),
            ] {
                let err = (got as f64 - want).abs() / want.abs().max(1.0);
                assert!(
                    err <= 1.5 * f32::EPSILON as f64,
                    "{label}: {want} became {got}"
                );
            }
        }
    }
}

/// A tensor bound as real labels by one term and as session ids by another cannot have one
/// view: the plan says which roles clash.
#[test]
fn labels_read_as_reals_and_as_ids_are_refused() {
    let config = LossConfig::from_toml_str(
        "[[losses]]\nname = 'a'\nloss_type = 'pair_wise_loss'\nlogits = 'x'\nlabels = 's'\nsession = 's'",
    )
    .unwrap();
    let shapes = Shapes::new()
        .tensor("x", &[8], DType::F32)
        .tensor("s", &[8], DType::I64);
    for engine in engines() {
        let e = engine
            .plan(&config, &shapes)
            .err()
            .expect("refused")
            .to_string();
        assert!(
            e.contains("'s'") && e.contains("role 'labels'") && e.contains("'session'"),
            "{e}"
        );
    }
}
