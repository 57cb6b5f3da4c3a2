//! Criterion benchmarks of the `lossfuse bench` suite, for regression tracking: the same named
//! shapes on the same seeded inputs (`lossfuse_cli::bench::SHAPES`, `Case::new`), one group per
//! family (`softmax_ce`, `per_row`, `batch_wide`, `pairwise`, `retrieval`), one benchmark per
//! shape. An iteration is one step of every plan of the case, each followed by
//! `report_blocking`, so the GPU work is finished when the clock stops; throughput is the
//! family's work (logits, rows, pairs or scores) per step.
//!
//! ```text
//! cargo bench -p lossfuse-cli --bench suite                        # everything (hours on lavapipe)
//! cargo bench -p lossfuse-cli --bench suite -- per_row/            # one family
//! cargo bench -p lossfuse-cli --bench suite -- 'batch_wide4_1m$'   # one shape
//! LOSSFUSE_ADAPTER=gl cargo bench -p lossfuse-cli --bench suite -- softmax_ce
//! ```
//!
//! The adapter is `Engine::new()`'s: `LOSSFUSE_ADAPTER` (a substring of "name (backend)") chooses.
//! Samples are few (10, flat sampling) because software adapters are slow: on lavapipe the
//! retrieval shapes take about a minute per step (in_batch_4096_d64 ≈ 71 s, cbns_1024_m16k ≈ 48 s,
//! cbns_1024_m256k ≈ 12 min), so their ten samples take 10 minutes to 2 hours; filter them out
//! unless that is what you mean to measure. Inputs and plans are built only for the shapes the
//! filter selects (inputs when the benchmark is registered, plans on its first iteration).

use criterion::{criterion_group, criterion_main, Criterion, SamplingMode, Throughput};
use lossfuse::{Engine, Plan};
use lossfuse_cli::bench::{seed_of, step_all, Case, Family, SHAPES};
use std::time::Duration;

fn engine() -> Engine {
    Engine::new().unwrap_or_else(|e| {
        panic!(
            "{e}\nthe benchmarks need an adapter: apt-get install -y mesa-vulkan-drivers \
             libegl1 libgl1-mesa-dri, and LOSSFUSE_ADAPTER=vulkan or gl to choose one"
        )
    })
}

/// Measurement time per benchmark: enough for ten samples of the family's typical step on
/// lavapipe (criterion extends it, with a warning, when a step is slower).
fn measurement_time(family: Family) -> Duration {
    Duration::from_secs(match family {
        Family::SoftmaxCe => 20,
        Family::PerRow | Family::BatchWide | Family::Listwise => 10,
        Family::Pairwise => 60,
        Family::Retrieval => 120,
    })
}

fn suite(c: &mut Criterion) {
    let engine = engine();
    for family in Family::ALL {
        let mut group = c.benchmark_group(family.name());
        group
            .sample_size(10)
            .sampling_mode(SamplingMode::Flat)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(measurement_time(family));
        for shape in SHAPES {
            // GPU-sized shapes need tens of GiB: bench/gpu/run.sh names them.
            if shape.family != family || shape.gpu_sized {
                continue;
            }
            let case = Case::new(shape.name, seed_of(shape.name)).expect("suite shape builds");
            group.throughput(Throughput::Elements(case.work));
            let mut plans: Option<Vec<Plan>> = None;
            group.bench_function(shape.name, |b| {
                // Plans compile their pipelines (seconds on software adapters): only for the
                // shapes criterion's filter runs, once.
                let plans = plans.get_or_insert_with(|| case.plans(&engine).expect("plans build"));
                let batch = case.batch();
                b.iter(|| std::hint::black_box(step_all(plans, &batch).expect("step")));
            });
        }
        group.finish();
    }
}

criterion_group!(benches, suite);
criterion_main!(benches);
