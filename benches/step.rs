//! Criterion benchmarks of `Plan::step` (one step + `report_blocking` per iteration, so the GPU
//! work is finished when the clock stops):
//!
//! - `softmax_ce/4096x8192`: softmax cross-entropy forward and gradient, logits [4096, 8192] f32,
//!   class ids [4096].
//! - `fused_vs_separate_1m/{fused3,separate3}`: classification, binary_focal_loss and
//!   sigmoid_l2_loss on the same logits [1_048_576] (labels shared), in one plan versus three plans
//!   stepped one after the other.
//! - `batch_wide_{1m,16m}/{classification,batch_wide4}`: examples/configs/batch_wide.toml
//!   (classification, OHEM focal, ghm_c, f1_reweighted_loss on the same logits) against
//!   classification alone on the same rows: the cost of the statistics and selection passes.
//! - `pairwise_sessions_64k/{16,64,256}`: pairwise_logistic_loss on 65,536 rows in interleaved
//!   sessions of 16, 64 and 256 rows (throughput in Σ size², the pairs a step visits): time should
//!   follow Σ size² = B·size, not B².
//!
//! The adapter is `Engine::new()`'s: set `LOSSFUSE_ADAPTER` (e.g. `vulkan`, `gl`) to choose.
//! Sample sizes are small so that a run on a software adapter (lavapipe) takes minutes.
//! `lossfuse bench` reports the same shapes as rows/s and bandwidth.

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lossfuse::{Batch, DType, Engine, LossConfig, Plan, Shapes};
use std::time::Duration;

/// splitmix64: seeded inputs without a dependency.
struct SplitMix64(u64);

impl SplitMix64 {
    fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in [lo, hi), 24 random bits.
    fn range(&mut self, lo: f32, hi: f32) -> f32 {
        lo + (hi - lo) * ((self.next_u64() >> 40) as f32 / (1u32 << 24) as f32)
    }
}

const TERMS3: [&str; 3] = [
    "[[losses]]\nloss_type = 'classification'\nlogits = 'logits'\nlabels = 'labels'\n",
    "[[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'logits'\nlabels = 'labels'\ngamma = 2.0\nalpha = 0.25\n",
    "[[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'logits'\nlabels = 'labels'\n",
];

fn engine() -> Engine {
    Engine::new().unwrap_or_else(|e| {
        panic!(
            "{e}\nthe benchmarks need an adapter: apt-get install -y mesa-vulkan-drivers \
             libegl1 libgl1-mesa-dri, and LOSSFUSE_ADAPTER=vulkan or gl to choose one"
        )
    })
}

fn plan(engine: &Engine, config: &str, shapes: &Shapes) -> Plan {
    let config = LossConfig::from_toml_str(config).expect("benchmark config parses");
    engine.plan(&config, shapes).expect("benchmark plan builds")
}

/// One step of every plan, each followed by `report_blocking`.
fn step_all(plans: &mut [Plan], batch: &Batch) {
    for p in plans.iter_mut() {
        let out = p.step(batch).expect("step");
        std::hint::black_box(out.report_blocking().expect("report"));
    }
}

fn softmax_ce(c: &mut Criterion) {
    let engine = engine();
    let (b, classes) = (4096usize, 8192usize);
    let mut rng = SplitMix64(1);
    let logits: Vec<f32> = (0..b * classes).map(|_| rng.range(-4.0, 4.0)).collect();
    let labels: Vec<i32> = (0..b)
        .map(|_| (rng.next_u64() % classes as u64) as i32)
        .collect();
    let shapes = Shapes::new()
        .tensor("logits", &[b, classes], DType::F32)
        .tensor("labels", &[b], DType::I32);
    let mut plans = [plan(
        &engine,
        "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'logits'\nlabels = 'labels'\n",
        &shapes,
    )];
    let batch = Batch::new()
        .tensor("logits", &logits)
        .ids("labels", &labels);
    let mut group = c.benchmark_group("softmax_ce");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(5))
        .throughput(Throughput::Elements(b as u64));
    group.bench_function(format!("{b}x{classes}"), |bench| {
        bench.iter(|| step_all(&mut plans, &batch))
    });
    group.finish();
}

/// `b` logits in ±6 and binary labels (30% positive), with their shapes.
fn binary_rows(b: usize, seed: u64) -> (Vec<f32>, Vec<f32>, Shapes) {
    let mut rng = SplitMix64(seed);
    let logits: Vec<f32> = (0..b).map(|_| rng.range(-6.0, 6.0)).collect();
    let labels: Vec<f32> = (0..b)
        .map(|_| if rng.range(0.0, 1.0) < 0.3 { 1.0 } else { 0.0 })
        .collect();
    let shapes =
        Shapes::new()
            .tensor("logits", &[b], DType::F32)
            .tensor("labels", &[b], DType::F32);
    (logits, labels, shapes)
}

fn fused_vs_separate(c: &mut Criterion) {
    let engine = engine();
    let b = 1usize << 20;
    let (logits, labels, shapes) = binary_rows(b, 2);
    let batch = Batch::new()
        .tensor("logits", &logits)
        .tensor("labels", &labels);
    let mut fused = [plan(&engine, &TERMS3.concat(), &shapes)];
    let mut separate: Vec<Plan> = TERMS3.iter().map(|t| plan(&engine, t, &shapes)).collect();
    let mut group = c.benchmark_group("fused_vs_separate_1m");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(4))
        .throughput(Throughput::Elements(b as u64));
    group.bench_function("fused3", |bench| {
        bench.iter(|| step_all(&mut fused, &batch))
    });
    group.bench_function("separate3", |bench| {
        bench.iter(|| step_all(&mut separate, &batch))
    });
    group.finish();
}

fn batch_wide(c: &mut Criterion) {
    let engine = engine();
    for (label, b) in [("1m", 1usize << 20), ("16m", 1usize << 24)] {
        let (logits, labels, shapes) = binary_rows(b, 3);
        let batch = Batch::new()
            .tensor("logits", &logits)
            .tensor("labels", &labels);
        let mut single = [plan(&engine, TERMS3[0], &shapes)];
        let mut four = [plan(
            &engine,
            include_str!("../examples/configs/batch_wide.toml"),
            &shapes,
        )];
        let mut group = c.benchmark_group(format!("batch_wide_{label}"));
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(if b > 1 << 20 { 20 } else { 4 }))
            .throughput(Throughput::Elements(b as u64));
        group.bench_function("classification", |bench| {
            bench.iter(|| step_all(&mut single, &batch))
        });
        group.bench_function("batch_wide4", |bench| {
            bench.iter(|| step_all(&mut four, &batch))
        });
        group.finish();
    }
}

fn pairwise_sessions(c: &mut Criterion) {
    let engine = engine();
    let b = 1usize << 16;
    let mut rng = SplitMix64(5);
    let logits: Vec<f32> = (0..b).map(|_| rng.range(-4.0, 4.0)).collect();
    let labels: Vec<f32> = (0..b).map(|_| rng.range(0.0, 4.0).floor()).collect();
    let shapes = Shapes::new()
        .tensor("logits", &[b], DType::F32)
        .tensor("labels", &[b], DType::F32)
        .tensor("session", &[b], DType::I32);
    let config = "[[losses]]\nloss_type = 'pairwise_logistic_loss'\nlogits = 'logits'\nlabels = 'labels'\nsession = 'session'\n";
    let mut group = c.benchmark_group("pairwise_sessions_64k");
    group
        .sample_size(10)
        .sampling_mode(SamplingMode::Flat)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(10));
    for size in [16usize, 64, 256] {
        // Row i joins session (i·40503 mod B) / size: sessions of `size` rows, interleaved.
        let session: Vec<i32> = (0..b).map(|i| ((i * 40503 % b) / size) as i32).collect();
        let batch = Batch::new()
            .tensor("logits", &logits)
            .tensor("labels", &labels)
            .ids("session", &session);
        let mut plans = [plan(&engine, config, &shapes)];
        group.throughput(Throughput::Elements((b * size) as u64));
        group.bench_function(format!("{size}"), |bench| {
            bench.iter(|| step_all(&mut plans, &batch))
        });
    }
    group.finish();
}

criterion_group!(
    benches,
    softmax_ce,
    fused_vs_separate,
    batch_wide,
    pairwise_sessions
);
criterion_main!(benches);
