//! Properties of plans and steps: one submission, no extra passes for terms on shared inputs,
//! determinism, state round trips, zero-copy device inputs, large inputs, clear errors.

mod common;
use common::*;
use lossfuse::wgpu;
use lossfuse::{Batch, DType, Engine, EngineOptions, Error, LossConfig, OwnedBatch, Shapes};

fn row_batch(seed: u64, b: usize) -> Inputs {
    let mut rng = Rng::new(seed);
    Inputs::new()
        .real("x", &[b], reals(&mut rng, b, -6.0, 6.0))
        .real("y", &[b], binary(&mut rng, b, 0.3))
        .real("r", &[b], reals(&mut rng, b, 0.0, 1.0))
}

const TWO: &str = "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
                   [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\n";
const THIRD: &str = "[[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'r'\n";

#[test]
fn a_third_term_on_the_same_logits_adds_no_pass() {
    let batch = row_batch(1, 5000);
    for engine in engines() {
        let count = |toml: &str| {
            let config = LossConfig::from_toml_str(toml).unwrap();
            let mut plan = engine.plan(&config, &Shapes::of_host(&batch.0)).unwrap();
            let owned = OwnedBatch::from_host(&batch.0).unwrap();
            let out = plan.step(&owned.batch()).unwrap();
            out.counters().clone()
        };
        // Coefficients known before the step: one pass writes values and gradients.
        let two = count(TWO);
        let three = count(&format!("{TWO}{THIRD}"));
        assert_eq!(two.submissions, 1);
        assert_eq!(three.submissions, 1);
        assert_eq!(
            two.dispatches, three.dispatches,
            "dispatches grew with the terms"
        );
        assert_eq!(two.passes_over("x"), 1, "values and gradients in one pass");
        assert_eq!(three.passes_over("x"), 1);
        // Flooding scales every gradient by this step's total: a forward and a backward pass,
        // still independent of the number of terms.
        let two = count(&format!("flooding = 0.1\n{TWO}"));
        let three = count(&format!("flooding = 0.1\n{TWO}{THIRD}"));
        assert_eq!(
            two.dispatches, three.dispatches,
            "dispatches grew with the terms"
        );
        assert_eq!(
            two.passes_over("x"),
            2,
            "forward and backward read the logits"
        );
        assert_eq!(three.passes_over("x"), 2);
        assert_eq!(three.submissions, 1);
    }
}

#[test]
fn two_runs_are_bit_identical() {
    let batch = row_batch(2, 3000)
        .real("z", &[3000, 9], reals(&mut Rng::new(3), 27000, -5.0, 5.0))
        .ids("k", &[3000], (0..3000).map(|i| (i % 9) as i64).collect());
    let config = LossConfig::from_toml_str(&format!(
        "{TWO}{THIRD}[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nlabel_smoothing = 0.1\n"
    ))
    .unwrap();
    for engine in engines() {
        let a = run_gpu(&engine, &config, &batch.0, 1);
        let b = run_gpu(&engine, &config, &batch.0, 1);
        assert_eq!(a[0].report, b[0].report, "{}", engine.adapter().label());
        for (name, g) in &a[0].grads {
            let bits = |v: &Vec<f32>| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(
                bits(g),
                bits(&b[0].grads[name]),
                "{}: grad/{name}",
                engine.adapter().label()
            );
        }
    }
}

#[test]
fn more_than_65535_workgroups() {
    // 65,536 workgroups of 256 rows plus a partial one: the grid needs its second dimension.
    let b = 65_536 * 256 + 1000;
    let mut rng = Rng::new(4);
    let batch = Inputs::new()
        .real("x", &[b], reals(&mut rng, b, -5.0, 5.0))
        .real("y", &[b], binary(&mut rng, b, 0.4));
    check_all(
        "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n\
         [[losses]]\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\n",
        &batch,
        1,
        TOL,
    );
}

#[test]
fn softmax_logits_larger_than_one_binding() {
    // 2048 x 16400 f32 = 134,348,800 bytes > 128 MiB, the software adapters' binding limit.
    let (b, c) = (2048, 16_400);
    let mut rng = Rng::new(5);
    let batch = Inputs::new()
        .real("z", &[b, c], reals(&mut rng, b * c, -4.0, 4.0))
        .ids(
            "k",
            &[b],
            (0..b).map(|_| rng.below(c as u64) as i64).collect(),
        );
    check_all(
        "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nlabel_smoothing = 0.1\n",
        &batch,
        1,
        TOL,
    );
}

#[test]
fn small_binding_cap_splits_every_group() {
    // A 4 KiB cap forces many chunks for rows and softmax alike; results must not change.
    let mut rng = Rng::new(6);
    let (b, c) = (3000, 37);
    let batch = row_batch(7, b)
        .real("z", &[b, c], reals(&mut rng, b * c, -4.0, 4.0))
        .ids(
            "k",
            &[b],
            (0..b).map(|_| rng.below(c as u64) as i64).collect(),
        )
        .real("w", &[b], reals(&mut rng, b, 0.0, 2.0));
    let config = LossConfig::from_toml_str(&format!(
        "{TWO}{THIRD}[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nsample_weights = 'w'\n"
    ))
    .unwrap();
    let reference = run_reference(&config, &batch.0, 1);
    for engine in engines_with(EngineOptions {
        max_binding_bytes: Some(4096),
        ..Default::default()
    }) {
        let plan = engine.plan(&config, &Shapes::of_host(&batch.0)).unwrap();
        assert!(
            plan.describe().iter().any(|(_, chunks, _)| *chunks > 10),
            "{:?}",
            plan.describe()
        );
        let gpu = run_gpu(&engine, &config, &batch.0, 1);
        assert_matches(&engine.adapter().label(), &gpu[0], &reference[0], TOL);
    }
}

const LEARNED: &str = "loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nlearning_rate = 0.05\n\
    [[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nlearn_loss_weight = true\n\
    [[losses]]\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'r'\nlearn_loss_weight = true\n";

#[test]
fn save_and_load_continue_bit_exactly() {
    let batch = row_batch(8, 2000);
    let owned = OwnedBatch::from_host(&batch.0).unwrap();
    for toml in [
        LEARNED.to_string(),
        format!("loss_weight_strategy = 'random'\n[random]\nseed = 9\n{TWO}{THIRD}"),
        format!("loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'classification'\naux = 'binary_focal_loss'\nalpha = 0.5\n{TWO}"),
    ] {
        let config = LossConfig::from_toml_str(&toml).unwrap();
        for engine in engines() {
            let shapes = Shapes::of_host(&batch.0);
            let mut plan = engine.plan(&config, &shapes).unwrap();
            for _ in 0..3 {
                plan.step(&owned.batch()).unwrap();
            }
            let saved = plan.save_state().unwrap();
            assert_eq!(plan.saved_state_len(), saved.len());
            let mut uninterrupted = Vec::new();
            for _ in 0..3 {
                let out = plan.step(&owned.batch()).unwrap();
                uninterrupted.push((out.report_blocking().unwrap(), out.read_grad("x").unwrap()));
            }
            let mut resumed = engine.plan(&config, &shapes).unwrap();
            resumed.load_state(&saved).unwrap();
            assert_eq!(resumed.save_state().unwrap(), saved, "round trip is bit-exact");
            for (report, grad) in &uninterrupted {
                let out = resumed.step(&owned.batch()).unwrap();
                assert_eq!(&out.report_blocking().unwrap(), report, "{toml}");
                let g = out.read_grad("x").unwrap();
                assert!(g.iter().zip(grad).all(|(a, b)| a.to_bits() == b.to_bits()));
            }
            // The state of another config is refused.
            let other = LossConfig::from_toml_str(TWO).unwrap();
            let mut other_plan = engine.plan(&other, &shapes).unwrap();
            assert!(matches!(other_plan.load_state(&saved), Err(Error::State(_))));
        }
    }
}

#[test]
fn a_failed_step_changes_no_state() {
    let batch = row_batch(9, 500);
    let owned = OwnedBatch::from_host(&batch.0).unwrap();
    let config = LossConfig::from_toml_str(LEARNED).unwrap();
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&batch.0)).unwrap();
        plan.step(&owned.batch()).unwrap();
        let before = plan.save_state().unwrap();
        let x = vec![0.0f32; 500];
        let short = vec![0.0f32; 499];
        let missing = Batch::new().tensor("x", &x).tensor("y", &x);
        let e = plan
            .step(&missing)
            .err()
            .expect("missing tensor is an error");
        assert!(e.to_string().contains("'r'"), "{e}");
        let bad_len = Batch::new()
            .tensor("x", &x)
            .tensor("y", &short)
            .tensor("r", &x);
        let e = plan.step(&bad_len).err().expect("short tensor is an error");
        assert!(
            e.to_string().contains("'y'") && e.to_string().contains("499"),
            "{e}"
        );
        let ids = vec![0i32; 500];
        let bad_dtype = Batch::new().tensor("x", &x).ids("y", &ids).tensor("r", &x);
        assert!(plan.step(&bad_dtype).is_err());
        let mut y = vec![0.0f32; 500];
        y[3] = 1.5;
        let e = plan
            .step(&Batch::new().tensor("x", &x).tensor("y", &y).tensor("r", &x))
            .err()
            .expect("labels outside [0, 1] are an error");
        assert!(
            e.to_string().contains("'y'") && e.to_string().contains("row 3"),
            "{e}"
        );
        assert_eq!(plan.save_state().unwrap(), before);
    }
}

#[test]
fn out_of_range_class_ids_are_errors_and_change_no_state() {
    let (b, c) = (100, 4);
    let config = LossConfig::from_toml_str(
        "loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'sgd'\n\
         [[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nlearn_loss_weight = true\n\
         [[losses]]\nloss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nmomentum = 0.5\n",
    )
    .unwrap();
    let z = vec![0.5f32; b * c];
    let mut k = vec![1i32; b];
    // The GHM-C accumulators are state too: a failed step must not move them.
    let x: Vec<f32> = (0..b).map(|i| (i as f32 * 0.37).sin() * 4.0).collect();
    let y: Vec<f32> = (0..b).map(|i| (i % 3 == 0) as i32 as f32).collect();
    for engine in engines() {
        let shapes = Shapes::new()
            .tensor("z", &[b, c], DType::F32)
            .tensor("k", &[b], DType::I32)
            .tensor("x", &[b], DType::F32)
            .tensor("y", &[b], DType::F32);
        let mut plan = engine.plan(&config, &shapes).unwrap();
        plan.step(&plan_batch(&z, &k, &x, &y))
            .unwrap()
            .report_blocking()
            .unwrap();
        let before = plan.save_state().unwrap();
        k[17] = 4;
        let e = plan
            .step(&plan_batch(&z, &k, &x, &y))
            .err()
            .expect("host ids are checked");
        let msg = e.to_string();
        assert!(
            msg.contains("'k'") && msg.contains("row 17") && msg.contains("softmax_cross_entropy"),
            "{msg}"
        );
        // The same ids from a device buffer: detected on the GPU, reported, state untouched.
        let buf = upload(&engine, &k);
        let zbuf = upload(&engine, &z);
        let out = plan
            .step(
                &Batch::new()
                    .buffer("z", &zbuf)
                    .buffer("k", &buf)
                    .tensor("x", &x)
                    .tensor("y", &y),
            )
            .unwrap();
        let e = out.report_blocking().expect_err("device ids are checked");
        let msg = e.to_string();
        assert!(
            msg.contains("class ids")
                && msg.contains("'k'")
                && msg.contains("softmax_cross_entropy"),
            "{msg}"
        );
        assert_eq!(plan.save_state().unwrap(), before);
        k[17] = 1;
    }
}

fn plan_batch<'a>(z: &'a [f32], k: &'a [i32], x: &'a [f32], y: &'a [f32]) -> Batch<'a> {
    Batch::new()
        .tensor("z", z)
        .ids("k", k)
        .tensor("x", x)
        .tensor("y", y)
}

fn upload<T: bytemuck::Pod>(engine: &Engine, values: &[T]) -> wgpu::Buffer {
    device_buffer(engine.device(), engine.queue(), values)
}

#[test]
fn device_buffers_are_bound_without_copies() {
    let b = 1000;
    let mut rng = Rng::new(10);
    let x: Vec<f32> = (0..b).map(|_| rng.range(-3.0, 3.0) as f32).collect();
    let y: Vec<f32> = (0..b).map(|_| (rng.unit() < 0.3) as i32 as f32).collect();
    let config = LossConfig::from_toml_str(TWO).unwrap();
    for engine in engines() {
        let shapes = Shapes::new()
            .tensor("x", &[b], DType::F32)
            .tensor("y", &[b], DType::F32);
        let mut plan = engine.plan(&config, &shapes).unwrap();
        let host = {
            let out = plan
                .step(&Batch::new().tensor("x", &x).tensor("y", &y))
                .unwrap();
            (out.report_blocking().unwrap(), out.read_grad("x").unwrap())
        };
        let (xb, yb) = (upload(&engine, &x), upload(&engine, &y));
        let out = plan
            .step(&Batch::new().buffer("x", &xb).buffer("y", &yb))
            .unwrap();
        assert_eq!(out.counters().bytes_uploaded, 0);
        assert_eq!(out.report_blocking().unwrap(), host.0);
        assert_eq!(out.read_grad("x").unwrap(), host.1);
        // A buffer without STORAGE usage is refused with the tensor's name.
        let plain = engine.device().create_buffer(&wgpu::BufferDescriptor {
            label: None,
            size: 4000,
            usage: wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let e = plan
            .step(&Batch::new().buffer("x", &plain).buffer("y", &yb))
            .err()
            .unwrap();
        assert!(
            e.to_string().contains("'x'") && e.to_string().contains("STORAGE"),
            "{e}"
        );
    }
}

/// One pooled buffer holding both tensors at aligned offsets, garbage around them (how Burn's
/// allocator places tensors): bound in place, whole and in row chunks, with the host step's
/// results; a misaligned offset and a region past the end are refused by name.
#[test]
fn buffer_regions_are_bound_at_their_offsets() {
    let b = 1000;
    let mut rng = Rng::new(12);
    let x: Vec<f32> = (0..b).map(|_| rng.range(-3.0, 3.0) as f32).collect();
    let y: Vec<f32> = (0..b).map(|_| (rng.unit() < 0.3) as i32 as f32).collect();
    let config = LossConfig::from_toml_str(TWO).unwrap();
    let chunked = EngineOptions {
        max_binding_bytes: Some(1024),
        ..EngineOptions::default()
    };
    for engine in engines().into_iter().chain(engines_with(chunked)) {
        let align = engine.device().limits().min_storage_buffer_offset_alignment as usize / 4;
        let shapes = Shapes::new()
            .tensor("x", &[b], DType::F32)
            .tensor("y", &[b], DType::F32);
        let mut plan = engine.plan(&config, &shapes).unwrap();
        let host = {
            let out = plan
                .step(&Batch::new().tensor("x", &x).tensor("y", &y))
                .unwrap();
            (out.report_blocking().unwrap(), out.read_grad("x").unwrap())
        };
        let (x_at, y_at) = (3 * align, (3 * align + b).next_multiple_of(align) + align);
        let mut pool = vec![f32::NAN; y_at + b + 7];
        pool[x_at..x_at + b].copy_from_slice(&x);
        pool[y_at..y_at + b].copy_from_slice(&y);
        let pooled = upload(&engine, &pool);
        let (x_off, y_off) = (4 * x_at as u64, 4 * y_at as u64);
        let out = plan
            .step(
                &Batch::new()
                    .buffer_at("x", &pooled, x_off)
                    .buffer_at("y", &pooled, y_off),
            )
            .unwrap();
        assert_eq!(out.counters().bytes_uploaded, 0);
        assert_eq!(out.report_blocking().unwrap(), host.0);
        assert_eq!(out.read_grad("x").unwrap(), host.1);
        let mut refused = |batch: Batch| plan.step(&batch).err().expect("refused").to_string();
        let e = refused(
            Batch::new()
                .buffer_at("x", &pooled, x_off + 4)
                .buffer_at("y", &pooled, y_off),
        );
        assert!(e.contains("'x'") && e.contains("alignment"), "{e}");
        let past = 4 * (pool.len() - b + 1).next_multiple_of(align) as u64;
        let e = refused(
            Batch::new()
                .buffer_at("x", &pooled, x_off)
                .buffer_at("y", &pooled, past),
        );
        assert!(e.contains("'y'") && e.contains("from offset"), "{e}");
    }
}

#[test]
fn engine_from_a_trainer_device() {
    let engine = engines().remove(0);
    let trainer = Engine::from_device(engine.device().clone(), engine.queue().clone()).unwrap();
    let batch = row_batch(11, 700);
    let config = LossConfig::from_toml_str(TWO).unwrap();
    let a = run_gpu(&engine, &config, &batch.0, 1);
    let b = run_gpu(&trainer, &config, &batch.0, 1);
    assert_eq!(a[0].report, b[0].report);
}

#[test]
fn plan_errors_name_the_term_the_tensor_and_the_shape() {
    let engine = engines().remove(0);
    let config = LossConfig::from_toml_str(
        "[[losses]]\nname = 'ctr'\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n",
    )
    .unwrap();
    let msg = |shapes: Shapes| {
        engine
            .plan(&config, &shapes)
            .err()
            .expect("must fail")
            .to_string()
    };
    let m = msg(Shapes::new().tensor("x", &[10], DType::F32));
    assert!(
        m.contains("'y'") && m.contains("'ctr'") && m.contains("not in the batch"),
        "{m}"
    );
    let m = msg(Shapes::new()
        .tensor("x", &[10], DType::F32)
        .tensor("y", &[11], DType::F32));
    assert!(
        m.contains("'y'") && m.contains("11") && m.contains("10"),
        "{m}"
    );
    // Labels take any dtype (cast on the GPU); logits are F32.
    let m = msg(Shapes::new()
        .tensor("x", &[10], DType::I32)
        .tensor("y", &[10], DType::I64));
    assert!(
        m.contains("'x'") && m.contains("F32") && m.contains("I32"),
        "{m}"
    );
    let m = msg(Shapes::new()
        .tensor("x", &[10, 3, 2], DType::F32)
        .tensor("y", &[10], DType::F32));
    assert!(m.contains("'x'") && m.contains("[10, 3, 2]"), "{m}");
    // Enough GHM-C terms of 1024 bins over the same rows need more workgroup memory than the
    // adapter has (4 KiB of counters each).
    let limit = engine.device().limits().max_compute_workgroup_storage_size;
    let ghm: String = (0..limit / 4096 + 1)
        .map(|i| format!("[[losses]]\nname = 'g{i}'\nloss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 1024\n"))
        .collect();
    let e = engine
        .plan(
            &LossConfig::from_toml_str(&ghm).unwrap(),
            &Shapes::new()
                .tensor("x", &[10], DType::F32)
                .tensor("y", &[10], DType::F32),
        )
        .err()
        .unwrap();
    assert!(
        matches!(e, Error::Unsupported(_)) && e.to_string().contains("bins"),
        "{e}"
    );
}

#[test]
fn every_shader_file_validates() {
    // Every file of shaders/ is listed (so none escapes validation).
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/shaders");
    for entry in std::fs::read_dir(dir).unwrap() {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        assert!(
            lossfuse::kernel::SHADER_FILES
                .iter()
                .any(|(f, _)| *f == name),
            "shaders/{name} is not in SHADER_FILES"
        );
    }
    for (file, deps) in lossfuse::kernel::SHADER_FILES {
        let mut source = String::new();
        for d in deps.iter() {
            source.push_str(lossfuse::kernel::shader_file(d).unwrap());
        }
        source.push_str(lossfuse::kernel::shader_file(file).unwrap());
        if let Err(e) = lossfuse::kernel::validate_wgsl(file, &source) {
            panic!("{e}");
        }
    }
}

#[test]
fn the_report_future_completes_under_another_executor() {
    let batch = row_batch(12, 900);
    let config = LossConfig::from_toml_str(TWO).unwrap();
    let owned = OwnedBatch::from_host(&batch.0).unwrap();
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&batch.0)).unwrap();
        let blocking = plan
            .step(&owned.batch())
            .unwrap()
            .report_blocking()
            .unwrap();
        let out = plan.step(&owned.batch()).unwrap();
        let future = futures::executor::block_on(out.report()).unwrap();
        assert_eq!(future, blocking);
    }
}

/// Counts its wakes and unparks the thread that waits on it.
struct CountingWaker {
    wakes: std::sync::atomic::AtomicUsize,
    thread: std::thread::Thread,
}

impl std::task::Wake for CountingWaker {
    fn wake(self: std::sync::Arc<Self>) {
        self.wake_by_ref();
    }
    fn wake_by_ref(self: &std::sync::Arc<Self>) {
        self.wakes.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        self.thread.unpark();
    }
}

#[test]
fn the_report_future_waits_to_be_woken_instead_of_spinning() {
    use std::future::Future;
    use std::sync::atomic::Ordering;
    // Large enough that the step is still running when the future is first polled.
    let batch = row_batch(13, 1 << 20);
    let config = LossConfig::from_toml_str(TWO).unwrap();
    let owned = OwnedBatch::from_host(&batch.0).unwrap();
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&batch.0)).unwrap();
        let blocking = plan
            .step(&owned.batch())
            .unwrap()
            .report_blocking()
            .unwrap();
        let out = plan.step(&owned.batch()).unwrap();
        let counter = std::sync::Arc::new(CountingWaker {
            wakes: 0.into(),
            thread: std::thread::current(),
        });
        let waker = std::task::Waker::from(counter.clone());
        let mut cx = std::task::Context::from_waker(&waker);
        let mut future = std::pin::pin!(out.report());
        let mut polls = 0;
        let report = loop {
            polls += 1;
            if let std::task::Poll::Ready(r) = future.as_mut().poll(&mut cx) {
                break r.unwrap();
            }
            // Poll again only once woken (a spurious unpark just polls once more).
            while counter.wakes.load(Ordering::SeqCst) < polls {
                std::thread::park();
            }
        };
        assert_eq!(report, blocking);
        // A spinning future wakes itself at every poll; this one is woken by the map callback
        // and by the end of the device wait: at most three polls.
        assert!(
            polls <= 3,
            "{polls} polls, {} wakes",
            counter.wakes.load(Ordering::SeqCst)
        );
    }
}

#[test]
fn adapters_are_chosen_by_name_or_backend() {
    for engine in engines() {
        let backend = engine.adapter().backend.to_lowercase();
        let chosen =
            Engine::with_adapter(&backend.to_uppercase(), EngineOptions::default()).unwrap();
        assert_eq!(chosen.adapter().backend.to_lowercase(), backend);
    }
    let e = Engine::with_adapter("no-such-adapter", EngineOptions::default())
        .err()
        .expect("unknown adapter");
    assert!(
        matches!(e, Error::Adapter(_)) && e.to_string().contains("found:"),
        "{e}"
    );
}
