//! Integration tests of the `lossfuse` binary: eval on every adapter found and on the reference,
//! compare, error exit codes, adapters and bench. A machine without an adapter fails these tests
//! with a message saying how to get one; they never pass silently.

mod common;
use common::*;
use lossfuse::AdapterSummary;
use safetensors::tensor::{Dtype, TensorView};
use safetensors::SafeTensors;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Output;

/// splitmix64, for reproducible inputs.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// A tensor to write: dtype, shape, little-endian bytes.
struct Raw(Dtype, Vec<usize>, Vec<u8>);

fn f32s(shape: &[usize], v: impl IntoIterator<Item = f64>) -> Raw {
    let bytes = v
        .into_iter()
        .flat_map(|x| (x as f32).to_le_bytes())
        .collect();
    Raw(Dtype::F32, shape.to_vec(), bytes)
}

fn f64s(shape: &[usize], v: impl IntoIterator<Item = f64>) -> Raw {
    Raw(
        Dtype::F64,
        shape.to_vec(),
        v.into_iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn i64s(shape: &[usize], v: impl IntoIterator<Item = i64>) -> Raw {
    Raw(
        Dtype::I64,
        shape.to_vec(),
        v.into_iter().flat_map(|x| x.to_le_bytes()).collect(),
    )
}

fn write(path: &Path, tensors: &[(&str, Raw)]) {
    let views: Vec<(&str, TensorView<'_>)> = tensors
        .iter()
        .map(|(n, Raw(d, s, b))| (*n, TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

/// Reads an f32 output file: name -> (shape, values).
fn read(path: &Path) -> BTreeMap<String, (Vec<usize>, Vec<f32>)> {
    let bytes = std::fs::read(path).unwrap();
    let file = SafeTensors::deserialize(&bytes).unwrap();
    file.tensors()
        .into_iter()
        .map(|(n, v)| {
            assert_eq!(v.dtype(), Dtype::F32, "{n}");
            let vals = v
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (n, (v.shape().to_vec(), vals))
        })
        .collect()
}

const B: usize = 37;
const C: usize = 5;

/// Binary logits and labels (F32), softmax logits (F64) and class ids (I64), sample weights.
fn write_batch(path: &Path) {
    let mut rng = Rng(7);
    let x: Vec<f64> = (0..B).map(|_| rng.unit() * 8.0 - 4.0).collect();
    let y: Vec<f64> = (0..B).map(|_| (rng.unit() < 0.4) as i32 as f64).collect();
    let w: Vec<f64> = (0..B).map(|_| 0.5 + rng.unit()).collect();
    let sm: Vec<f64> = (0..B * C).map(|_| rng.unit() * 6.0 - 3.0).collect();
    let cls: Vec<i64> = (0..B).map(|_| (rng.next() % C as u64) as i64).collect();
    write(
        path,
        &[
            ("x", f32s(&[B], x)),
            ("y", f32s(&[B], y)),
            ("w", f32s(&[B], w)),
            ("sm", f64s(&[B, C], sm)),
            ("cls", i64s(&[B], cls)),
        ],
    );
}

const CONFIG: &str = "\
[[losses]]
loss_type = 'classification'
logits = 'x'
labels = 'y'
sample_weights = 'w'

[[losses]]
loss_type = 'binary_focal_loss'
logits = 'x'
labels = 'y'
alpha = 0.25

[[losses]]
loss_type = 'softmax_cross_entropy'
logits = 'sm'
labels = 'cls'
label_smoothing = 0.1
weight = 0.5
";

const LEARNED: &str = "\
loss_weight_strategy = 'uncertainty'
[uncertainty]
optimizer = 'adam'
learning_rate = 0.1

[[losses]]
loss_type = 'classification'
logits = 'x'
labels = 'y'
learn_loss_weight = true

[[losses]]
loss_type = 'sigmoid_l2_loss'
logits = 'x'
labels = 'y'
learn_loss_weight = true
";

fn setup(name: &str, config: &str) -> (PathBuf, PathBuf, PathBuf) {
    let dir = scratch(name);
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, config).unwrap();
    let input = dir.join("batch.safetensors");
    write_batch(&input);
    (dir, cfg, input)
}

fn eval(cfg: &Path, input: &Path, output: &Path, engine: &[&str], steps: u32) -> Output {
    let steps = steps.to_string();
    let mut args = vec![
        "eval",
        "--config",
        p(cfg),
        "--input",
        p(input),
        "--output",
        p(output),
        "--steps",
        &steps,
    ];
    args.extend_from_slice(engine);
    run(&args)
}

/// `eval --steps steps` on every adapter found agrees with `reference`.
fn every_adapter_agrees(
    found: &[AdapterSummary],
    dir: &Path,
    cfg: &Path,
    input: &Path,
    reference: &Path,
    steps: u32,
) {
    for (i, a) in found.iter().enumerate() {
        let out = dir.join(format!("adapter{i}.safetensors"));
        let o = eval(cfg, input, &out, &["--adapter", &a.label()], steps);
        assert_eq!(o.status.code(), Some(0), "{}: {}", a.label(), stderr(&o));
        assert_agree(&out, reference);
    }
}

fn assert_agree(a: &Path, b: &Path) {
    let o = run(&["compare", p(a), p(b), "--rtol", "1e-4"]);
    assert_eq!(
        o.status.code(),
        Some(0),
        "{} and {} disagree:\n{}",
        a.display(),
        b.display(),
        stdout(&o)
    );
}

#[test]
fn adapters_prints_a_block_per_adapter() {
    let found = adapters();
    let o = run(&["adapters"]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for a in &found {
        assert!(text.contains(&a.label()), "{} missing:\n{text}", a.label());
    }
    for field in [
        "backend",
        "device type",
        "driver",
        "subgroup sizes",
        "max storage binding",
        "max buffer",
        "storage buffers per stage",
        "workgroups per dimension",
        "invocations per workgroup",
        "workgroup memory",
        "timestamps",
    ] {
        assert_eq!(text.matches(field).count(), found.len(), "{field}:\n{text}");
    }
}

#[test]
fn eval_writes_every_output_in_the_input_shapes() {
    let (dir, cfg, input) = setup("outputs", CONFIG);
    let out = dir.join("ref.safetensors");
    let o = eval(&cfg, &input, &out, &["--reference"], 1);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let text = stdout(&o);
    for name in [
        "classification",
        "binary_focal_loss",
        "softmax_cross_entropy",
        "total",
    ] {
        assert!(text.contains(name), "{name} not printed:\n{text}");
    }
    let t = read(&out);
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "grad/sm",
            "grad/x",
            "loss/binary_focal_loss",
            "loss/classification",
            "loss/softmax_cross_entropy",
            "loss/total",
            "weight/binary_focal_loss",
            "weight/classification",
            "weight/softmax_cross_entropy",
        ]
    );
    assert_eq!(t["grad/sm"].0, [B, C]);
    assert_eq!(t["grad/x"].0, [B]);
    assert_eq!(t["loss/total"].0, Vec::<usize>::new());
    assert_eq!(t["weight/softmax_cross_entropy"].1, [0.5]);
    let (losses, weights): (Vec<f32>, Vec<f32>) = [
        "classification",
        "binary_focal_loss",
        "softmax_cross_entropy",
    ]
    .iter()
    .map(|n| (t[&format!("loss/{n}")].1[0], t[&format!("weight/{n}")].1[0]))
    .unzip();
    let total: f32 = losses.iter().zip(&weights).map(|(l, w)| l * w).sum();
    assert!((total - t["loss/total"].1[0]).abs() < 1e-5 * total.abs());
}

#[test]
fn eval_on_every_adapter_agrees_with_the_reference() {
    let found = adapters();
    let (dir, cfg, input) = setup("agree", CONFIG);
    let reference = dir.join("reference.safetensors");
    let o = eval(&cfg, &input, &reference, &["--reference"], 1);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    for (i, a) in found.iter().enumerate() {
        let out = dir.join(format!("adapter{i}.safetensors"));
        let o = eval(&cfg, &input, &out, &["--adapter", &a.label()], 1);
        assert_eq!(o.status.code(), Some(0), "{}: {}", a.label(), stderr(&o));
        assert!(stdout(&o).contains(&a.label()), "{}", stdout(&o));
        assert_agree(&out, &reference);
    }
    // By backend name, as a user would type it.
    for backend in ["vulkan", "gl"] {
        if found
            .iter()
            .any(|a| a.backend.eq_ignore_ascii_case(backend))
        {
            let out = dir.join(format!("{backend}.safetensors"));
            let o = eval(&cfg, &input, &out, &["--adapter", backend], 1);
            assert_eq!(o.status.code(), Some(0), "{backend}: {}", stderr(&o));
            assert_agree(&out, &reference);
        }
    }
}

#[test]
fn eval_over_steps_carries_learned_weights_like_the_reference() {
    let found = adapters();
    let (dir, cfg, input) = setup("steps", LEARNED);
    let reference = dir.join("reference.safetensors");
    let o = eval(&cfg, &input, &reference, &["--reference"], 4);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = read(&reference);
    assert!(t.contains_key("log_var_grad/classification"));
    // After four Adam steps the learned weights have moved away from e^0 = 1.
    assert!((t["weight/classification"].1[0] - 1.0).abs() > 1e-3);
    let first = dir.join("reference1.safetensors");
    let o = eval(&cfg, &input, &first, &["--reference"], 1);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert_eq!(
        run(&["compare", p(&first), p(&reference)]).status.code(),
        Some(1),
        "step 1 and step 4 should differ"
    );
    every_adapter_agrees(&found, &dir, &cfg, &input, &reference, 4);
}

#[test]
fn missing_tensor_exits_2_naming_it() {
    let found = adapters();
    let config = CONFIG.replace("labels = 'cls'", "labels = 'class_ids'");
    let (dir, cfg, input) = setup("missing", &config);
    let out = dir.join("out.safetensors");
    let mut engines = vec![vec!["--reference".to_string()]];
    engines.extend(
        found
            .iter()
            .map(|a| vec!["--adapter".to_string(), a.label()]),
    );
    for engine in engines {
        let engine: Vec<&str> = engine.iter().map(String::as_str).collect();
        let o = eval(&cfg, &input, &out, &engine, 1);
        assert_eq!(o.status.code(), Some(2), "{engine:?}");
        let e = stderr(&o);
        assert!(e.starts_with("error: "), "{e}");
        assert!(e.contains("'class_ids'"), "{engine:?}: {e}");
        assert!(!e.contains("panicked"), "{e}");
    }
    assert!(!out.exists(), "no output on error");
}

#[test]
fn unsupported_dtype_exits_2_naming_it() {
    let dir = scratch("dtype");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, CONFIG).unwrap();
    let input = dir.join("batch.safetensors");
    write(
        &input,
        &[
            ("x", Raw(Dtype::BF16, vec![2], vec![0, 0x3f, 0, 0x40])),
            ("y", f32s(&[2], [0.0, 1.0])),
        ],
    );
    let out = dir.join("out.safetensors");
    for engine in [&["--reference"][..], &[][..]] {
        let o = eval(&cfg, &input, &out, engine, 1);
        assert_eq!(o.status.code(), Some(2));
        let e = stderr(&o);
        assert!(e.contains("tensor 'x'") && e.contains("BF16"), "{e}");
    }
    // Not a safetensors file at all; a file that does not exist.
    std::fs::write(&input, b"not safetensors").unwrap();
    let o = eval(&cfg, &input, &out, &["--reference"], 1);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("batch.safetensors"), "{}", stderr(&o));
    let o = eval(
        &cfg,
        &dir.join("nope.safetensors"),
        &out,
        &["--reference"],
        1,
    );
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("nope.safetensors"), "{}", stderr(&o));
    // A bad config names its problem.
    std::fs::write(&cfg, "[[losses]]\nloss_type = 'no_such_loss'\n").unwrap();
    write_batch(&input);
    let o = eval(&cfg, &input, &out, &["--reference"], 1);
    assert_eq!(o.status.code(), Some(2));
    assert!(stderr(&o).contains("no_such_loss"), "{}", stderr(&o));
}

#[test]
fn unknown_adapter_exits_2_listing_those_found() {
    let found = adapters();
    let (dir, cfg, input) = setup("unknown_adapter", CONFIG);
    let o = eval(
        &cfg,
        &input,
        &dir.join("out.safetensors"),
        &["--adapter", "no-such-gpu"],
        1,
    );
    assert_eq!(o.status.code(), Some(2));
    let e = stderr(&o);
    assert!(
        e.contains("no-such-gpu") && e.contains(&found[0].name),
        "{e}"
    );
}

#[test]
fn no_adapter_says_how_to_install_one() {
    // dx12 does not exist on Linux, so restricting wgpu to it leaves no adapter.
    if cfg!(windows) {
        return;
    }
    let adapters_with = |backend: &str| {
        let o = bin()
            .env("WGPU_BACKEND", backend)
            .arg("adapters")
            .output()
            .unwrap();
        assert_eq!(o.status.code(), Some(2));
        let e = stderr(&o);
        assert!(e.contains(&format!("WGPU_BACKEND = '{backend}'")), "{e}");
        e
    };
    assert!(adapters_with("dx12").contains("mesa-vulkan-drivers"));
    // A name wgpu does not know is named as such, not blamed on missing drivers.
    assert!(!adapters_with("bogus").contains("apt-get"));
}

#[test]
fn an_unknown_lossfuse_adapter_names_the_variable() {
    let dir = scratch("adapter_env");
    let config = format!(
        "{}/../examples/configs/ctr.toml",
        env!("CARGO_MANIFEST_DIR")
    );
    let batch = dir.join("b.safetensors");
    let run = |args: &[&std::ffi::OsStr]| {
        bin()
            .env("LOSSFUSE_ADAPTER", "nosuch")
            .args(args)
            .output()
            .unwrap()
    };
    // example-batch needs no adapter; eval does.
    let o = run(&[
        "example-batch".as_ref(),
        "--config".as_ref(),
        config.as_ref(),
        "--output".as_ref(),
        batch.as_ref(),
    ]);
    assert!(o.status.success(), "{}", stderr(&o));
    let out = dir.join("o.safetensors");
    let o = run(&[
        "eval".as_ref(),
        "--config".as_ref(),
        config.as_ref(),
        "--input".as_ref(),
        batch.as_ref(),
        "--output".as_ref(),
        out.as_ref(),
    ]);
    assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
    assert!(stderr(&o).contains("LOSSFUSE_ADAPTER"), "{}", stderr(&o));
    assert!(stderr(&o).contains("nosuch"), "{}", stderr(&o));
}

#[test]
fn compare_flags_differences() {
    let dir = scratch("compare");
    let a = dir.join("a.safetensors");
    let b = dir.join("b.safetensors");
    let c = dir.join("c.safetensors");
    let scalar = |v: f64| f32s(&[], [v]);
    let grad: Vec<f64> = (0..100).map(|i| (i as f64 - 50.0) * 1e-3).collect();
    write(
        &a,
        &[
            ("loss/total", scalar(1.0)),
            ("grad/x", f32s(&[100], grad.clone())),
        ],
    );
    // Within 1e-4 on the scalar and the norm.
    let mut close = grad.clone();
    close[3] *= 1.0 + 1e-6;
    write(
        &b,
        &[
            ("loss/total", scalar(1.00005)),
            ("grad/x", f32s(&[100], close)),
        ],
    );
    assert_eq!(run(&["compare", p(&a), p(&b)]).status.code(), Some(0));
    // The loss is off by 1e-3.
    write(
        &c,
        &[
            ("loss/total", scalar(1.001)),
            ("grad/x", f32s(&[100], grad.clone())),
        ],
    );
    let o = run(&["compare", p(&a), p(&c)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("FAIL"), "{}", stdout(&o));
    // A looser tolerance accepts it.
    assert_eq!(
        run(&["compare", p(&a), p(&c), "--rtol", "1e-2"])
            .status
            .code(),
        Some(0)
    );
    // Two elements swapped: same norm, but the element check catches it.
    let mut swapped = grad.clone();
    swapped.swap(0, 99);
    write(
        &c,
        &[
            ("loss/total", scalar(1.0)),
            ("grad/x", f32s(&[100], swapped)),
        ],
    );
    assert_eq!(run(&["compare", p(&a), p(&c)]).status.code(), Some(1));
    // A key in only one file fails.
    write(&c, &[("loss/total", scalar(1.0))]);
    let o = run(&["compare", p(&a), p(&c)]);
    assert_eq!(o.status.code(), Some(1));
    assert!(stdout(&o).contains("missing in B"), "{}", stdout(&o));
    // A file that is not there is an error, not a difference.
    assert_eq!(
        run(&["compare", p(&a), p(&dir.join("nope"))]).status.code(),
        Some(2)
    );
}

#[test]
fn bench_writes_json_rows() {
    let found = adapters();
    let dir = scratch("bench");
    let json = dir.join("bench.json");
    let o = run(&[
        "bench",
        "--shape",
        "fused3_1m",
        "--shape",
        "separate3_1m",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-reference",
        "--json",
        p(&json),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert!(
        v["adapters"][0]["copy_bandwidth_bytes_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    let rows = v["rows"].as_array().unwrap();
    // Every adapter, rows listed adapter by adapter.
    assert_eq!(rows.len(), 2 * found.len());
    assert_eq!(rows[0]["shape"], "fused3_1m");
    assert_eq!(rows[0]["plans"], 1);
    assert_eq!(rows[0]["submissions_per_step"], 1);
    assert_eq!(rows[1]["plans"], 3);
    assert_eq!(rows[1]["rows"], 1 << 20);
    for r in rows {
        assert!(r["median_s"].as_f64().unwrap() > 0.0);
        assert!(r["bytes_per_step"].as_u64().unwrap() > 0);
        assert!(r["fraction_of_copy"].as_f64().unwrap() > 0.0);
    }
    // Separate plans must move at least what the fused one does.
    assert!(rows[1]["bytes_per_step"].as_u64() >= rows[0]["bytes_per_step"].as_u64());
    let o = run(&["bench", "--shape", "no_such_shape"]);
    assert_eq!(o.status.code(), Some(2));
    assert!(
        stderr(&o).contains("softmax_ce_4096x8192"),
        "{}",
        stderr(&o)
    );
}

const BATCH_WIDE: &str = "\
[[losses]]
loss_type = 'classification'
logits = 'x'
labels = 'y'

[[losses]]
loss_type = 'binary_focal_loss'
logits = 'x'
labels = 'y'
ohem_ratio = 0.3
sample_weights = 'w'

[[losses]]
loss_type = 'ghm_c'
logits = 'x'
labels = 'y'
bins = 10
momentum = 0.5

[[losses]]
loss_type = 'f1_reweighted_loss'
logits = 'x'
labels = 'y'
f1_beta_square = 2.0
";

#[test]
fn eval_of_batch_wide_terms_over_steps_agrees_with_the_reference() {
    let found = adapters();
    let (dir, cfg, input) = setup("batch_wide", BATCH_WIDE);
    let reference = dir.join("reference.safetensors");
    // Three steps: the GHM-C accumulators evolve.
    let o = eval(&cfg, &input, &reference, &["--reference"], 3);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = read(&reference);
    for name in ["binary_focal_loss", "ghm_c", "f1_reweighted_loss"] {
        assert!(t[&format!("loss/{name}")].1[0] > 0.0, "loss/{name}");
    }
    every_adapter_agrees(&found, &dir, &cfg, &input, &reference, 3);
}

const RANKING: &str = include_str!("../../examples/configs/ranking.toml");

#[test]
fn eval_of_pairwise_and_jrc_terms_over_steps_agrees_with_the_reference() {
    let found = adapters();
    let dir = scratch("ranking");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, RANKING).unwrap();
    // Interleaved sessions of 1 to 12 rows with 64-bit ids, graded labels, JRC's two columns.
    let n = 500;
    let mut rng = Rng(11);
    let session: Vec<i64> = (0..n)
        .map(|_| ((rng.next() % 60) as i64) * 1_000_000_007)
        .collect();
    let input = dir.join("batch.safetensors");
    write(
        &input,
        &[
            ("score", f32s(&[n], (0..n).map(|_| rng.unit() * 6.0 - 3.0))),
            ("grade", f32s(&[n], (0..n).map(|_| (rng.next() % 4) as f64))),
            ("session", i64s(&[n], session)),
            (
                "jrc_logits",
                f32s(&[n, 2], (0..2 * n).map(|_| rng.unit() * 4.0 - 2.0)),
            ),
            (
                "click",
                f32s(&[n], (0..n).map(|_| (rng.unit() < 0.3) as i32 as f64)),
            ),
        ],
    );
    let reference = dir.join("reference.safetensors");
    // Three steps: JRC's learned u1, u2 take Adam steps.
    let o = eval(&cfg, &input, &reference, &["--reference"], 3);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = read(&reference);
    for name in ["rank", "rank_plain", "rank_focal", "rank_hard", "jrc"] {
        assert!(t[&format!("loss/{name}")].1[0] > 0.0, "loss/{name}");
    }
    assert_eq!(t["jrc_u_grad/jrc"].0, vec![2]);
    assert_eq!(t["grad/jrc_logits"].0, vec![n, 2]);
    every_adapter_agrees(&found, &dir, &cfg, &input, &reference, 3);
}

const RETRIEVAL: &str = include_str!("../../examples/configs/retrieval.toml");

#[test]
fn eval_of_retrieval_terms_over_steps_agrees_with_the_reference() {
    let found = adapters();
    let dir = scratch("retrieval");
    let cfg = dir.join("config.toml");
    std::fs::write(&cfg, RETRIEVAL).unwrap();
    // B = 300 rows of d = 16; ids with duplicates (accidental hits); the bank fills over the
    // steps and is used from the third.
    let (n, d) = (300, 16);
    let mut rng = Rng(12);
    let emb = |rng: &mut Rng| {
        f32s(
            &[n, d],
            (0..n * d)
                .map(|_| rng.unit() * 2.0 - 1.0)
                .collect::<Vec<_>>(),
        )
    };
    let input = dir.join("batch.safetensors");
    let tensors = vec![
        ("user", emb(&mut rng)),
        ("item", emb(&mut rng)),
        ("view_a", emb(&mut rng)),
        ("view_b", emb(&mut rng)),
        ("emb", emb(&mut rng)),
        (
            "item_id",
            i64s(&[n], (0..n).map(|_| (rng.next() % 200) as i64)),
        ),
        (
            "log_q",
            f32s(
                &[n],
                (0..n).map(|_| -1.0 - 4.0 * rng.unit()).collect::<Vec<_>>(),
            ),
        ),
        (
            "label",
            i64s(&[n], (0..n).map(|_| (rng.next() % 12) as i64)),
        ),
        (
            "click",
            f32s(
                &[n],
                (0..n)
                    .map(|_| (rng.unit() < 0.6) as i32 as f64)
                    .collect::<Vec<_>>(),
            ),
        ),
    ];
    write(&input, &tensors);
    let reference = dir.join("reference.safetensors");
    let o = eval(&cfg, &input, &reference, &["--reference"], 4);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = read(&reference);
    for name in ["in_batch", "cbns", "ssl", "sv_softmax", "circle", "ms"] {
        assert!(t[&format!("loss/{name}")].1[0] > 0.0, "loss/{name}");
    }
    for g in ["user", "item", "view_a", "view_b", "emb"] {
        assert_eq!(t[&format!("grad/{g}")].0, vec![n, d], "grad/{g}");
    }
    every_adapter_agrees(&found, &dir, &cfg, &input, &reference, 4);
}

#[test]
fn bench_reports_batch_wide_terms_against_their_baseline() {
    adapters();
    let dir = scratch("bench_batch_wide");
    let json = dir.join("bench.json");
    let o = run(&[
        "bench",
        "--shape",
        "classification_1m",
        "--shape",
        "batch_wide4_1m",
        "--steps",
        "1",
        "--warmup",
        "0",
        "--no-reference",
        "--json",
        p(&json),
    ]);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("batch_wide4_1m: ")
            && stdout(&o).contains("x the time of classification_1m"),
        "{}",
        stdout(&o)
    );
    let v: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let rows = v["rows"].as_array().unwrap();
    assert_eq!(rows[1]["shape"], "batch_wide4_1m");
    assert_eq!(rows[1]["submissions_per_step"], 1);
    assert_eq!(rows[1]["baseline"], "classification_1m");
    assert!(rows[1]["time_ratio_to_baseline"].as_f64().unwrap() > 0.0);
    assert!(rows[0]["baseline"].is_null());
}

/// `ziln_loss` writes its per-row prediction as `prediction/<term>` ([B]), the same on every
/// adapter as on the reference, and equal to σ(x₀)·exp(μ + σ²/2) of the logits it read.
#[test]
fn eval_writes_the_ziln_prediction() {
    let found = adapters();
    let dir = scratch("ziln");
    let cfg = dir.join("config.toml");
    std::fs::write(
        &cfg,
        "[[losses]]\nname = 'ltv'\nloss_type = 'ziln_loss'\nlogits = 'zl'\nlabels = 'amount'\n",
    )
    .unwrap();
    let input = dir.join("batch.safetensors");
    let mut rng = Rng(11);
    let zl: Vec<f64> = (0..3 * B).map(|_| rng.unit() * 4.0 - 2.0).collect();
    let amount: Vec<f64> = (0..B)
        .map(|_| {
            if rng.unit() < 0.4 {
                0.0
            } else {
                (rng.unit() * 3.0).exp()
            }
        })
        .collect();
    write(
        &input,
        &[
            ("zl", f32s(&[B, 3], zl.clone())),
            ("amount", f32s(&[B], amount)),
        ],
    );
    let reference = dir.join("reference.safetensors");
    let o = eval(&cfg, &input, &reference, &["--reference"], 1);
    assert_eq!(o.status.code(), Some(0), "{}", stderr(&o));
    let t = read(&reference);
    let keys: Vec<&str> = t.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "grad/zl",
            "loss/ltv",
            "loss/total",
            "prediction/ltv",
            "weight/ltv"
        ]
    );
    assert_eq!(t["grad/zl"].0, [B, 3]);
    let (shape, pred) = &t["prediction/ltv"];
    assert_eq!(shape, &[B]);
    let softplus = |z: f64| (1.0 + z.exp()).ln();
    for (i, &p) in pred.iter().enumerate() {
        let x: Vec<f64> = zl[3 * i..3 * i + 3]
            .iter()
            .map(|&v| v as f32 as f64)
            .collect();
        let s = softplus(x[2]);
        let want = (x[1] + 0.5 * s * s).exp() / (1.0 + (-x[0]).exp());
        assert!(
            (p as f64 - want).abs() <= 1e-5 * want,
            "prediction/ltv[{i}] = {p}, σ(x₀)·exp(μ + σ²/2) = {want}"
        );
    }
    every_adapter_agrees(&found, &dir, &cfg, &input, &reference, 1);
}
