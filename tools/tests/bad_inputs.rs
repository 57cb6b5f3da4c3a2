//! The bad-input catalogue: every fault a user can make with a config, a batch, a device buffer,
//! a state blob or a batch file, as tables. Each error must name what is wrong (the fragments of
//! each row), and a refused step must change no state (`save_state()` byte-identical before and
//! after), on every adapter. Value faults of a real tensor are also tried as a device buffer
//! (found on the GPU, reported by the step's report) and through the f64 reference.

mod common;

use lossfuse::reference::Reference;
use lossfuse::{
    Batch, Engine, HostBatch, HostData, HostTensor, Input, LossConfig, OwnedBatch, Plan, Shapes,
};
use lossfuse_cli::example_batch::example_batch;

const ROWS: usize = 64;

fn config_text(name: &str) -> String {
    let path = format!(
        "{}/../examples/configs/{name}.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

fn config(name: &str) -> LossConfig {
    LossConfig::from_toml_str(&config_text(name)).unwrap()
}

fn engines() -> Vec<Engine> {
    common::adapters();
    Engine::all(Default::default()).unwrap()
}

/// One value of a real tensor.
fn set(batch: &mut HostBatch, tensor: &str, at: usize, value: f64) {
    match &mut batch.get_mut(tensor).unwrap().data {
        HostData::Real(v) => v[at] = value,
        HostData::Int(v) => v[at] = value as i64,
    }
}

/// A fault of one step's batch.
struct StepFault {
    config: &'static str,
    what: &'static str,
    fault: fn(&mut HostBatch),
    /// Fragments the error must contain.
    says: &'static [&'static str],
    /// The faulty tensor, when the fault is a value of a real tensor that can come as a device
    /// buffer (checked on the GPU).
    device: Option<&'static str>,
}

const STEP_FAULTS: &[StepFault] = &[
    StepFault {
        config: "ctr",
        what: "NaN logit",
        fault: |b| set(b, "ctr_logits", 3, f64::NAN),
        says: &["'ctr_logits'", "finite", "element 3"],
        device: Some("ctr_logits"),
    },
    StepFault {
        config: "ctr",
        what: "+Inf logit (esmm)",
        fault: |b| set(b, "cvr_logits", 5, f64::INFINITY),
        says: &["'cvr_logits'", "finite", "element 5"],
        device: Some("cvr_logits"),
    },
    StepFault {
        config: "ctr",
        what: "-Inf softmax logit",
        fault: |b| set(b, "category_logits", 17, f64::NEG_INFINITY),
        says: &["'category_logits'", "finite", "element 17"],
        device: Some("category_logits"),
    },
    StepFault {
        config: "ctr",
        what: "NaN label",
        fault: |b| set(b, "click", 2, f64::NAN),
        says: &["'click'", "finite"],
        device: Some("click"),
    },
    StepFault {
        config: "ctr",
        what: "negative sample weight",
        fault: |b| set(b, "w", 4, -0.5),
        says: &["'w'", ">= 0", "row 4"],
        device: Some("w"),
    },
    StepFault {
        config: "ctr",
        what: "NaN sample weight",
        fault: |b| set(b, "w", 6, f64::NAN),
        says: &["'w'", "finite"],
        device: Some("w"),
    },
    StepFault {
        config: "ctr",
        what: "Inf sample weight",
        fault: |b| set(b, "w", 7, f64::INFINITY),
        says: &["'w'", "finite"],
        device: Some("w"),
    },
    StepFault {
        config: "ctr",
        what: "binary label 2",
        fault: |b| set(b, "click", 9, 2.0),
        says: &["'click'", "row 9", "holds 2"],
        device: None,
    },
    StepFault {
        config: "ctr",
        what: "class id = classes",
        fault: |b| set(b, "category", 1, 8.0),
        says: &["'category'", "class id 8", "[0, 8)"],
        device: None,
    },
    StepFault {
        config: "ctr",
        what: "negative class id other than ignore_index",
        fault: |b| set(b, "category", 1, -5.0),
        says: &["'category'", "class id -5"],
        device: None,
    },
    StepFault {
        config: "ctr",
        what: "class id beyond i32",
        fault: |b| set(b, "category", 2, 3e9),
        says: &["'category'", "3000000000"],
        device: None,
    },
    StepFault {
        config: "ctr",
        what: "missing tensor",
        fault: |b| {
            b.remove("buy");
        },
        says: &["'buy'", "missing"],
        device: None,
    },
    StepFault {
        config: "ctr",
        what: "fewer rows than planned",
        fault: |b| {
            let t = b.get_mut("click").unwrap();
            *t = HostTensor::real(vec![ROWS - 1], vec![0.0; ROWS - 1]);
        },
        says: &["'click'", "63"],
        device: None,
    },
    StepFault {
        config: "ctr",
        // (Labels take integers: logits do not.)
        what: "ids where reals are planned",
        fault: |b| {
            let t = b.get_mut("ctr_logits").unwrap();
            *t = HostTensor::int(vec![ROWS], vec![0; ROWS]);
        },
        says: &["'ctr_logits'", "dtype"],
        device: None,
    },
    StepFault {
        config: "ctr",
        what: "f64 beyond f32",
        fault: |b| set(b, "ctr_logits", 0, 1e300),
        says: &["'ctr_logits'", "f32"],
        device: None,
    },
    StepFault {
        config: "batch_wide",
        what: "NaN logit (GHM-C, OHEM focal, F1)",
        fault: |b| set(b, "logits", 11, f64::NAN),
        says: &["'logits'", "finite", "element 11"],
        device: Some("logits"),
    },
    StepFault {
        config: "batch_wide",
        what: "Inf label",
        fault: |b| set(b, "labels", 0, f64::INFINITY),
        says: &["'labels'", "finite"],
        device: Some("labels"),
    },
    StepFault {
        config: "ranking",
        what: "NaN pairwise score",
        fault: |b| set(b, "score", 20, f64::NAN),
        says: &["'score'", "finite", "element 20"],
        device: Some("score"),
    },
    StepFault {
        config: "ranking",
        what: "Inf graded label",
        fault: |b| set(b, "grade", 1, f64::INFINITY),
        says: &["'grade'", "finite"],
        device: Some("grade"),
    },
    StepFault {
        config: "ranking",
        what: "NaN JRC logit",
        fault: |b| set(b, "jrc_logits", 13, f64::NAN),
        says: &["'jrc_logits'", "finite", "element 13"],
        device: Some("jrc_logits"),
    },
    StepFault {
        config: "ranking",
        what: "JRC label 2",
        fault: |b| set(b, "click", 4, 2.0),
        says: &["'click'", "row 4"],
        device: None,
    },
    StepFault {
        config: "ranking",
        what: "missing session ids",
        fault: |b| {
            b.remove("session");
        },
        says: &["'session'", "missing"],
        device: None,
    },
    StepFault {
        config: "retrieval",
        what: "NaN user embedding",
        fault: |b| set(b, "user", 40, f64::NAN),
        says: &["'user'", "finite"],
        device: Some("user"),
    },
    StepFault {
        config: "retrieval",
        what: "NaN log_q (in-batch and CBNS bank)",
        fault: |b| set(b, "log_q", 3, f64::NAN),
        says: &["'log_q'", "finite", "element 3"],
        device: Some("log_q"),
    },
    StepFault {
        config: "retrieval",
        what: "Inf metric embedding",
        fault: |b| set(b, "emb", 70, f64::INFINITY),
        says: &["'emb'", "finite"],
        device: Some("emb"),
    },
];

fn says(error: &str, fragments: &[&str], what: &str) {
    // Shown with --nocapture: the catalogue of messages, to read.
    eprintln!("{what}\n    {error}");
    for f in fragments {
        assert!(error.contains(f), "{what}: '{error}' does not say '{f}'");
    }
}

/// A plan over a clean batch of `config`, stepped twice so that its state is not the initial one.
fn stepped_plan(engine: &Engine, config: &LossConfig, clean: &HostBatch) -> Plan {
    let mut plan = engine.plan(config, &Shapes::of_host(clean)).unwrap();
    let owned = OwnedBatch::from_host(clean).unwrap();
    for _ in 0..2 {
        plan.step(&owned.batch())
            .unwrap()
            .report_blocking()
            .unwrap();
    }
    plan
}

/// The fault through the host path: refused at `OwnedBatch::from_host` or at the step.
fn host_error(plan: &mut Plan, bad: &HostBatch) -> String {
    let owned = match OwnedBatch::from_host(bad) {
        Ok(owned) => owned,
        Err(e) => return e.to_string(),
    };
    match plan.step(&owned.batch()) {
        Err(e) => e.to_string(),
        Ok(out) => match out.report_blocking() {
            Err(e) => e.to_string(),
            Ok(r) => panic!("accepted, total {}", r.total),
        },
    }
}

/// The fault with `tensor` as a device buffer: the step runs, its report is the error.
fn device_error(engine: &Engine, plan: &mut Plan, bad: &HostBatch, tensor: &str) -> String {
    let owned = OwnedBatch::from_host(bad).unwrap();
    let values = owned.batch();
    let Some(Input::F32(v)) = values.get(tensor) else {
        panic!("'{tensor}' is not an f32 tensor");
    };
    let bytes: Vec<u8> = v.iter().flat_map(|x| x.to_le_bytes()).collect();
    let buffer = engine
        .device()
        .create_buffer(&lossfuse::wgpu::BufferDescriptor {
            label: Some("trainer tensor"),
            size: bytes.len() as u64,
            usage: lossfuse::wgpu::BufferUsages::STORAGE | lossfuse::wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
    engine.queue().write_buffer(&buffer, 0, &bytes);
    let mut batch = Batch::new();
    for name in values.names() {
        let input = if name == tensor {
            Input::Buffer(&buffer)
        } else {
            values.get(name).unwrap().clone()
        };
        batch = batch.input(name.clone(), input);
    }
    let out = plan
        .step(&batch)
        .expect("device values are checked on the GPU");
    match out.report_blocking() {
        Err(e) => e.to_string(),
        Ok(r) => panic!("device buffer accepted, total {}", r.total),
    }
}

#[test]
fn every_step_fault_is_refused_naming_the_tensor_and_changes_no_state() {
    let engines = engines();
    for fault in STEP_FAULTS {
        let config = config(fault.config);
        let clean = example_batch(&config, ROWS, 7);
        let mut bad = clean.clone();
        (fault.fault)(&mut bad);
        let what = format!("{} / {}", fault.config, fault.what);
        // The f64 reference refuses it too (it computes in f64: a value beyond f32 is fine).
        if !fault.says.contains(&"f32") {
            let reference = Reference::new(&config).unwrap().step(&bad);
            let e = reference
                .err()
                .unwrap_or_else(|| panic!("{what}: reference accepted"));
            assert!(
                e.to_string().contains(fault.says[0]),
                "{what}: reference: {e}"
            );
        }
        for engine in &engines {
            let what = format!("{what} on {}", engine.adapter().label());
            let mut plan = stepped_plan(engine, &config, &clean);
            let before = plan.save_state().unwrap();
            says(&host_error(&mut plan, &bad), fault.says, &what);
            assert_eq!(plan.save_state().unwrap(), before, "{what}: state changed");
            if let Some(tensor) = fault.device {
                let e = device_error(engine, &mut plan, &bad, tensor);
                says(&e, &fault.says[..2], &format!("{what} (device buffer)"));
                assert_eq!(plan.save_state().unwrap(), before, "{what}: device: state");
            }
            // The plan goes on.
            let owned = OwnedBatch::from_host(&clean).unwrap();
            let out = plan.step(&owned.batch()).unwrap();
            assert!(out.report_blocking().unwrap().total.is_finite(), "{what}");
        }
    }
}

#[test]
fn nonfinite_propagate_lets_nan_through_except_into_embeddings() {
    let engines = engines();
    let text = format!("nonfinite = \"propagate\"\n{}", config_text("ctr"));
    let config = LossConfig::from_toml_str(&text).unwrap();
    let clean = example_batch(&config, ROWS, 7);
    let mut bad = clean.clone();
    set(&mut bad, "ctr_logits", 3, f64::NAN);
    for engine in &engines {
        let mut plan = stepped_plan(engine, &config, &clean);
        let owned = OwnedBatch::from_host(&bad).unwrap();
        let report = plan
            .step(&owned.batch())
            .unwrap()
            .report_blocking()
            .unwrap();
        assert!(report.total.is_nan(), "{}", report.total);
    }
    let text = format!("nonfinite = \"propagate\"\n{}", config_text("retrieval"));
    let config = LossConfig::from_toml_str(&text).unwrap();
    let clean = example_batch(&config, ROWS, 7);
    let mut bad = clean.clone();
    set(&mut bad, "user", 0, f64::NAN);
    for engine in &engines {
        let mut plan = stepped_plan(engine, &config, &clean);
        let before = plan.save_state().unwrap();
        says(
            &host_error(&mut plan, &bad),
            &["'user'", "finite"],
            "propagate",
        );
        assert_eq!(plan.save_state().unwrap(), before);
    }
}

/// Config and plan faults: (what, TOML, fragments).
const CONFIG_FAULTS: &[(&str, &str, &[&str])] = &[
    ("malformed TOML", "[[losses]\nloss_type = 'classification'", &["TOML"]),
    (
        "unknown loss type",
        "[[losses]]\nloss_type = 'nosuch'\nlogits = 'x'\nlabels = 'y'",
        &["nosuch"],
    ),
    (
        "unknown key",
        "[[losses]]\nname = 'f'\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngama = 2.0",
        &["'f'", "gama"],
    ),
    (
        "wrong type",
        "[[losses]]\nname = 'f'\nloss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\ngamma = 'two'",
        &["'f'", "gamma"],
    ),
    (
        "missing role",
        "[[losses]]\nname = 'c'\nloss_type = 'classification'\nlogits = 'x'",
        &["'c'", "labels"],
    ),
    (
        "negative weight",
        "[[losses]]\nname = 'c'\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nweight = -1.0",
        &["'c'", "weight", ">= 0"],
    ),
    (
        "negative flooding",
        "flooding = -0.1\n[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'",
        &["flooding"],
    ),
    (
        "negative Adam learning rate",
        "loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nlearning_rate = -0.01\n\
         [[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nlearn_loss_weight = true",
        &["learning_rate"],
    ),
    (
        "Adam beta = 1 and epsilon = 0",
        "loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nlearning_rate = 0.01\n\
         beta1 = 1.0\nbeta2 = 1.0\nepsilon = 0.0\n\
         [[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nlearn_loss_weight = true",
        &["beta1"],
    ),
    (
        "negative multi-similarity lamb",
        "[[losses]]\nname = 'ms'\nloss_type = 'multi_similarity_loss'\nembeddings = 'e'\nlabels = 'l'\nlamb = -1.0",
        &["'ms'", "lamb"],
    ),
    (
        "unknown nonfinite mode",
        "nonfinite = 'ignore'\n[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'",
        &["nonfinite"],
    ),
];

#[test]
fn every_config_fault_names_the_key() {
    for (what, text, fragments) in CONFIG_FAULTS {
        let e = LossConfig::from_toml_str(text)
            .err()
            .unwrap_or_else(|| panic!("{what}: accepted"));
        says(&e.to_string(), fragments, what);
    }
    let json = LossConfig::from_json_str("{\"losses\": [ {\"loss_type\": }]}");
    says(
        &json.err().unwrap().to_string(),
        &["JSON"],
        "malformed JSON",
    );
}

/// Plan faults (shapes): (what, TOML, shapes, fragments).
#[test]
fn every_shape_fault_names_the_tensor_and_the_shape() {
    use lossfuse::DType::{F32, I32};
    let cases: Vec<(&str, &str, Shapes, &[&str])> = vec![
        (
            "3-D classification logits",
            "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'",
            Shapes::new()
                .tensor("x", &[8, 4, 2], F32)
                .tensor("y", &[8], F32),
            &["'x'", "[8, 4, 2]"],
        ),
        (
            "1-D softmax logits",
            "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'x'\nlabels = 'k'",
            Shapes::new().tensor("x", &[8], F32).tensor("k", &[8], I32),
            &["'x'", "[8]"],
        ),
        (
            "labels of other rows",
            "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'",
            Shapes::new().tensor("x", &[8], F32).tensor("y", &[9], F32),
            &["'y'", "[9]"],
        ),
        (
            "tensor not in the shapes",
            "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'",
            Shapes::new().tensor("x", &[8], F32),
            &["'y'"],
        ),
        (
            "real class ids",
            "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'x'\nlabels = 'k'",
            Shapes::new()
                .tensor("x", &[8, 3], F32)
                .tensor("k", &[8], F32),
            &["'k'"],
        ),
        (
            "F32 softmax class ids (ids are integers, F32 labels are probabilities [B, C])",
            "[[losses]]\nloss_type = 'softmax_cross_entropy'\nlogits = 'x'\nlabels = 'k'",
            Shapes::new()
                .tensor("x", &[8, 3], F32)
                .tensor("k", &[8], F32),
            &["'k'", "F32", "[8]"],
        ),
    ];
    for engine in engines() {
        for (what, text, shapes, fragments) in &cases {
            let config = LossConfig::from_toml_str(text).unwrap();
            let e = engine
                .plan(&config, shapes)
                .err()
                .unwrap_or_else(|| panic!("{what}: planned"));
            says(&e.to_string(), fragments, what);
        }
    }
}

/// The words of a state blob.
fn words(blob: &[u8]) -> Vec<u32> {
    let h = u32::from_le_bytes(blob[12..16].try_into().unwrap()) as usize;
    blob[16 + h + 4..blob.len() - 8]
        .chunks(4)
        .map(|c| u32::from_le_bytes(c.try_into().unwrap()))
        .collect()
}

/// The words of a state blob, rewritten by `edit`, with the checksum recomputed (so that only
/// the plan's range checks stand between the words and the state).
fn rewrite(blob: &[u8], edit: impl FnOnce(&mut [u32])) -> Vec<u8> {
    let h = u32::from_le_bytes(blob[12..16].try_into().unwrap()) as usize;
    let start = 16 + h + 4;
    let mut words = words(blob);
    edit(&mut words);
    let mut out = blob[..start].to_vec();
    for w in words {
        out.extend_from_slice(&w.to_le_bytes());
    }
    let mut sum: u64 = 0xcbf2_9ce4_8422_2325;
    for b in &out {
        sum ^= *b as u64;
        sum = sum.wrapping_mul(0x0100_0000_01b3);
    }
    out.extend_from_slice(&sum.to_le_bytes());
    out
}

#[test]
fn every_state_fault_is_refused_naming_what_differs_and_keeps_the_state() {
    let ctr = config("ctr");
    let clean = example_batch(&ctr, ROWS, 7);
    let sgd_text = config_text("ctr").replace("optimizer = \"adam\"", "optimizer = \"sgd\"");
    let unlearned_text = config_text("ctr").replacen("learn_loss_weight = true", "", 1);
    let retrieval = config("retrieval");
    let retrieval_batch = example_batch(&retrieval, ROWS, 7);
    for engine in engines() {
        let mut plan = stepped_plan(&engine, &ctr, &clean);
        let blob = plan.save_state().unwrap();
        let mut flipped = blob.clone();
        let middle = flipped.len() / 2;
        flipped[middle] ^= 0x10;
        let mut nan_weight = None;
        let sgd = LossConfig::from_toml_str(&sgd_text).unwrap();
        let sgd_blob = stepped_plan(&engine, &sgd, &clean).save_state().unwrap();
        let unlearned = LossConfig::from_toml_str(&unlearned_text).unwrap();
        let unlearned_blob = stepped_plan(&engine, &unlearned, &clean)
            .save_state()
            .unwrap();
        // A learned weight that no run reaches: the first word that reads as a small nonzero
        // f32 (a learned s or an Adam moment; the step counter's bits read as a denormal), NaN.
        let blob_nan = rewrite(&blob, |w| {
            let learned = |x: &&mut u32| (1e-30..10.0).contains(&f32::from_bits(**x).abs());
            if let Some(x) = w.iter_mut().find(learned) {
                nan_weight = Some(*x);
                *x = f32::NAN.to_bits();
            }
        });
        let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
            ("a flipped bit", flipped, &["checksum"]),
            ("truncated", blob[..blob.len() - 9].to_vec(), &["truncated"]),
            (
                "not a state",
                b"hello world, a long text".to_vec(),
                &["LOSSFUSE"],
            ),
            ("saved with SGD", sgd_blob, &["optimizer", "sgd", "adam"]),
            ("saved without a learned weight", unlearned_blob, &["learn"]),
            ("a NaN learned weight", blob_nan, &["NaN"]),
        ];
        assert!(nan_weight.is_some());
        for (what, bytes, fragments) in cases {
            let e = plan.load_state(&bytes).err();
            let e = e.unwrap_or_else(|| panic!("{what}: loaded"));
            says(&e.to_string(), fragments, what);
            assert_eq!(plan.save_state().unwrap(), blob, "{what}: state changed");
        }
        // A memory bank head beyond the bank.
        let mut plan = stepped_plan(&engine, &retrieval, &retrieval_batch);
        let before = plan.save_state().unwrap();
        plan.fill_banks();
        let filled = plan.save_state().unwrap();
        plan.load_state(&before).unwrap();
        let (before_words, filled_words) = (words(&before), words(&filled));
        let fill_word = (0..before_words.len())
            .position(|i| before_words[i] != filled_words[i])
            .expect("fill_banks changes the fill word");
        let head_word = fill_word - 1;
        let bad = rewrite(&before, |w| w[head_word] = 1 << 30);
        let e = plan.load_state(&bad).expect_err("a head beyond the bank");
        says(&e.to_string(), &["head"], "bank head");
        assert_eq!(plan.save_state().unwrap(), before);
    }
}

#[test]
fn every_batch_file_fault_names_the_file_fault() {
    use lossfuse_cli::io::{batch_bytes, read_batch_bytes};
    let batch = example_batch(&config("ctr"), ROWS, 7);
    let bytes = batch_bytes(&batch).unwrap();
    let cases: Vec<(&str, Vec<u8>, &[&str])> = vec![
        (
            "truncated",
            bytes[..bytes.len() - 10].to_vec(),
            &["truncated"],
        ),
        ("empty", Vec::new(), &["header"]),
        (
            "corrupt header",
            {
                let mut b = bytes.clone();
                b[8] = b'x';
                b
            },
            &["header"],
        ),
    ];
    for (what, file, fragments) in cases {
        let e = read_batch_bytes(&file)
            .err()
            .unwrap_or_else(|| panic!("{what}: read"));
        says(&e.to_string(), fragments, what);
    }
}

#[test]
fn a_binding_limit_error_names_the_terms_and_the_tensor() {
    use lossfuse::DType::{F32, I32};
    let config = LossConfig::from_toml_str(
        "[[losses]]\nname = 'topic'\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'",
    )
    .unwrap();
    let shapes = Shapes::new()
        .tensor("z", &[100, 64], F32)
        .tensor("k", &[100], I32);
    common::adapters();
    let options = lossfuse::EngineOptions {
        max_binding_bytes: Some(128),
        ..Default::default()
    };
    for engine in Engine::all(options).unwrap() {
        let e = engine.plan(&config, &shapes).err().expect("a 256-byte row");
        says(
            &e.to_string(),
            &["'topic'", "'z'", "256 bytes"],
            "binding limit",
        );
    }
}
