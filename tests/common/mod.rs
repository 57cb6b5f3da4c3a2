//! Shared by the integration tests: every adapter of the machine, seeded inputs, and comparison
//! of a GPU step with the f64 reference.
#![allow(dead_code)]

use lossfuse::reference::{Reference, ReferenceOutput};
use lossfuse::{
    Engine, EngineOptions, HostBatch, HostTensor, LossConfig, OwnedBatch, Report, Shapes,
};
use std::collections::BTreeMap;

/// Every adapter found. Fails (never skips) when there is none, or when `LOSSFUSE_REQUIRE`
/// (comma-separated backend names, e.g. "vulkan,gl", set by CI) names a backend that is missing.
pub fn engines() -> Vec<Engine> {
    engines_with(EngineOptions::default())
}

pub fn engines_with(options: EngineOptions) -> Vec<Engine> {
    let engines = Engine::all(options).unwrap_or_else(|e| {
        panic!("{e}\nThe GPU tests need an adapter: apt-get install -y mesa-vulkan-drivers libegl1 libgl1-mesa-dri")
    });
    assert!(
        !engines.is_empty(),
        "no adapter: apt-get install -y mesa-vulkan-drivers libegl1 libgl1-mesa-dri"
    );
    if let Ok(required) = std::env::var("LOSSFUSE_REQUIRE") {
        for backend in required.split(',').filter(|s| !s.is_empty()) {
            assert!(
                engines
                    .iter()
                    .any(|e| e.adapter().backend.eq_ignore_ascii_case(backend)),
                "LOSSFUSE_REQUIRE names backend '{backend}' but no such adapter was found; \
                 install mesa-vulkan-drivers (Vulkan lavapipe) and libegl1 libgl1-mesa-dri (GL llvmpipe)"
            );
        }
    }
    engines
}

/// Seeded inputs (the library's splitmix64).
pub struct Rng(lossfuse::rng::SplitMix64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(lossfuse::rng::SplitMix64::new(seed))
    }
    pub fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    /// Uniform in [0, 1).
    pub fn unit(&mut self) -> f64 {
        self.0.unit_f64()
    }
    pub fn range(&mut self, lo: f64, hi: f64) -> f64 {
        lo + (hi - lo) * self.unit()
    }
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }
    pub fn normal(&mut self) -> f64 {
        let u1 = self.unit().max(1e-300);
        let u2 = self.unit();
        (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
    }
}

pub fn reals(rng: &mut Rng, n: usize, lo: f64, hi: f64) -> Vec<f64> {
    (0..n).map(|_| rng.range(lo, hi)).collect()
}

pub fn binary(rng: &mut Rng, n: usize, p: f64) -> Vec<f64> {
    (0..n).map(|_| (rng.unit() < p) as i32 as f64).collect()
}

/// Sample weights: 20% zero, the rest uniform in [0.5, 2).
pub fn sample_weights(rng: &mut Rng, n: usize) -> Vec<f64> {
    (0..n)
        .map(|_| {
            if rng.unit() < 0.2 {
                0.0
            } else {
                rng.range(0.5, 2.0)
            }
        })
        .collect()
}

/// A batch builder that keeps the values f32-representable (what the GPU sees).
#[derive(Default, Clone)]
pub struct Inputs(pub HostBatch);

impl Inputs {
    pub fn new() -> Self {
        Self::default()
    }
    pub fn real(mut self, name: &str, shape: &[usize], v: Vec<f64>) -> Self {
        assert_eq!(shape.iter().product::<usize>(), v.len());
        let t = HostTensor::real(shape.to_vec(), v).rounded_to_f32();
        self.0.insert(name.into(), t);
        self
    }
    pub fn ids(mut self, name: &str, shape: &[usize], v: Vec<i64>) -> Self {
        self.0
            .insert(name.into(), HostTensor::int(shape.to_vec(), v));
        self
    }
}

/// One GPU step's results, read back.
#[derive(Clone, Debug)]
pub struct GpuStep {
    pub report: Report,
    pub grads: BTreeMap<String, Vec<f32>>,
    /// Each per-row prediction, by term.
    pub predictions: BTreeMap<String, Vec<f32>>,
}

/// Runs `steps` steps of `config` on `engine`, outputs poisoned with NaN before each.
pub fn run_gpu(
    engine: &Engine,
    config: &LossConfig,
    batch: &HostBatch,
    steps: usize,
) -> Vec<GpuStep> {
    let mut plan = engine
        .plan(config, &Shapes::of_host(batch))
        .unwrap_or_else(|e| panic!("{}: plan: {e}", engine.adapter().label()));
    let owned = OwnedBatch::from_host(batch).unwrap();
    let names: Vec<String> = plan.grad_names().cloned().collect();
    let predicted: Vec<String> = plan.prediction_names().cloned().collect();
    let mut out = Vec::new();
    for _ in 0..steps {
        plan.poison_outputs();
        let step = plan
            .step(&owned.batch())
            .unwrap_or_else(|e| panic!("{}: step: {e}", engine.adapter().label()));
        assert_eq!(step.counters().submissions, 1, "one submission per step");
        let report = step
            .report_blocking()
            .unwrap_or_else(|e| panic!("{}: report: {e}", engine.adapter().label()));
        let grads = names
            .iter()
            .map(|n| (n.clone(), step.read_grad(n).unwrap()))
            .collect();
        let predictions = predicted
            .iter()
            .map(|n| (n.clone(), step.read_prediction(n).unwrap()))
            .collect();
        out.push(GpuStep {
            report,
            grads,
            predictions,
        });
    }
    out
}

pub fn run_reference(config: &LossConfig, batch: &HostBatch, steps: usize) -> Vec<ReferenceOutput> {
    let mut r = Reference::new(config).unwrap();
    (0..steps).map(|_| r.step(batch).unwrap()).collect()
}

/// Tolerances of a GPU-vs-reference comparison.
#[derive(Clone, Copy, Debug)]
pub struct Tol {
    /// Relative error of every loss value, weight and the total (with `abs` as a floor).
    pub rel: f64,
    pub abs: f64,
    /// Relative error of each gradient's L2 norm.
    pub grad_norm: f64,
    /// Max element error relative to the gradient's largest element.
    pub grad_elem: f64,
}

pub const TOL: Tol = Tol {
    rel: 1e-4,
    abs: 1e-6,
    grad_norm: 1e-4,
    grad_elem: 1e-4,
};

fn close(a: f64, b: f64, tol: Tol) -> bool {
    (a - b).abs() <= tol.rel * b.abs().max(a.abs()) + tol.abs
}

/// Asserts one GPU step matches the reference step.
pub fn assert_matches(label: &str, gpu: &GpuStep, reference: &ReferenceOutput, tol: Tol) {
    let r = &gpu.report;
    assert!(
        close(r.total as f64, reference.total, tol),
        "{label}: total {} vs reference {}",
        r.total,
        reference.total
    );
    for (i, (name, value)) in reference.values.iter().enumerate() {
        let t = r
            .term(name)
            .unwrap_or_else(|| panic!("{label}: no term {name}"));
        assert!(
            close(t.value as f64, *value, tol),
            "{label}: loss/{name} {} vs reference {value}",
            t.value
        );
        let w = reference.weights[i].1;
        assert!(
            close(t.weight as f64, w, tol),
            "{label}: weight/{name} {} vs reference {w}",
            t.weight
        );
        let g = reference.log_var_grads[i];
        assert!(
            close(t.log_var_grad as f64, g, tol),
            "{label}: d/ds {name} {} vs reference {g}",
            t.log_var_grad
        );
    }
    assert_eq!(
        gpu.grads.keys().collect::<Vec<_>>(),
        reference.grads.keys().collect::<Vec<_>>(),
        "{label}: gradient sets differ"
    );
    assert_eq!(
        gpu.predictions.keys().collect::<Vec<_>>(),
        reference.predictions.keys().collect::<Vec<_>>(),
        "{label}: prediction sets differ"
    );
    for (name, want) in &reference.predictions {
        assert_close_rows(
            label,
            &format!("prediction/{name}"),
            &gpu.predictions[name],
            want,
            tol,
        );
    }
    for (name, want) in &reference.grads {
        assert_close_rows(label, &format!("grad/{name}"), &gpu.grads[name], want, tol);
    }
}

/// Asserts a GPU row output (a gradient, a prediction) matches the reference's: every element
/// written and finite, the norm of the difference and each element within `tol`.
pub fn assert_close_rows(label: &str, name: &str, got: &[f32], want: &[f64], tol: Tol) {
    assert_eq!(got.len(), want.len(), "{label}: {name} length");
    if let Some(i) = got.iter().position(|g| !g.is_finite()) {
        panic!(
            "{label}: {name}[{i}] = {} (unwritten or not finite)",
            got[i]
        );
    }
    let norm_ref = want.iter().map(|x| x * x).sum::<f64>().sqrt();
    let norm_diff = got
        .iter()
        .zip(want)
        .map(|(&g, &w)| (g as f64 - w).powi(2))
        .sum::<f64>()
        .sqrt();
    assert!(
        norm_diff <= tol.grad_norm * norm_ref + 1e-12,
        "{label}: {name} relative error of the norm {} (norm {norm_ref})",
        norm_diff / norm_ref.max(1e-300)
    );
    let max_ref = want.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g as f64 - w).abs() <= tol.grad_elem * max_ref + 1e-12,
            "{label}: {name}[{i}] = {g} vs reference {w} (max |g| {max_ref})"
        );
    }
}

/// Runs `config` on every adapter for `steps` steps and compares each step with the reference.
pub fn check_all(config_toml: &str, batch: &Inputs, steps: usize, tol: Tol) {
    let config = LossConfig::from_toml_str(config_toml).unwrap();
    let reference = run_reference(&config, &batch.0, steps);
    for engine in engines() {
        let gpu = run_gpu(&engine, &config, &batch.0, steps);
        for (s, (g, r)) in gpu.iter().zip(&reference).enumerate() {
            assert_matches(&format!("{} step {s}", engine.adapter().label()), g, r, tol);
        }
    }
}

/// A trainer's tensor: a STORAGE | COPY_DST buffer on `device` holding `values`.
pub fn device_buffer<T: bytemuck::Pod>(
    device: &lossfuse::wgpu::Device,
    queue: &lossfuse::wgpu::Queue,
    values: &[T],
) -> lossfuse::wgpu::Buffer {
    use lossfuse::wgpu;
    let bytes: &[u8] = bytemuck::cast_slice(values);
    let b = device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("trainer tensor"),
        size: bytes.len() as u64,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    queue.write_buffer(&b, 0, bytes);
    b
}
