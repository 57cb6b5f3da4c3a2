//! The retrieval and embedding terms on every adapter against the f64 reference: in-batch and
//! cross-batch softmax (dot and cosine, logQ, accidental hits by id in the batch and in the
//! bank), contrastive InfoNCE and NT-Xent, negative mining, circle and multi-similarity, with
//! sample weights and every reduction; the memory bank over steps with changing batches (FIFO
//! order, wrap-around, a partly filled bank, warm-up, a bank split over several bindings,
//! bit-exact save/load in the middle, a failed step that changes nothing); errors.

mod common;
use common::*;
use lossfuse::reference::Reference;
use lossfuse::{EngineOptions, Error, LossConfig, OwnedBatch, Shapes};

/// Embedding terms: f32 scores over d-long dot products, and circle's γ = 32 scale.
const EMB_TOL: Tol = Tol {
    rel: 2e-4,
    abs: 1e-5,
    grad_norm: 5e-4,
    grad_elem: 5e-4,
};

/// A batch for term set `k`: embeddings u{k}, v{k} [b, d], ids with duplicates, log_q, labels
/// with repeats, sessions, weights with zeros.
fn add_set(inputs: Inputs, rng: &mut Rng, k: usize, b: usize, d: usize) -> Inputs {
    let u = reals(rng, b * d, -1.0, 1.0);
    let v = reals(rng, b * d, -1.0, 1.0);
    let ids: Vec<i64> = (0..b).map(|_| rng.below(b as u64 / 2) as i64 - 3).collect();
    let lq = reals(rng, b, -4.0, -0.5);
    let y: Vec<f64> = (0..b).map(|_| rng.below(4) as f64).collect();
    let s: Vec<i64> = (0..b).map(|_| rng.below(3) as i64).collect();
    let w = sample_weights(rng, b);
    inputs
        .real(&format!("u{k}"), &[b, d], u)
        .real(&format!("v{k}"), &[b, d], v)
        .ids(&format!("ids{k}"), &[b], ids)
        .real(&format!("lq{k}"), &[b], lq)
        .real(&format!("y{k}"), &[b], y)
        .ids(&format!("s{k}"), &[b], s)
        .real(&format!("w{k}"), &[b], w)
}

fn batch(seed: u64, sets: usize, b: usize, d: usize) -> Inputs {
    let mut rng = Rng::new(seed);
    (0..sets).fold(Inputs::new(), |acc, k| add_set(acc, &mut rng, k, b, d))
}

/// Every term with its options, each on its own tensors so that each gradient is checked
/// alone; the reductions vary across terms.
const ALL_TERMS: &str = r#"
[[losses]]
name = "in_batch_dot"
loss_type = "in_batch_softmax"
user = "u0"
item = "v0"
item_ids = "ids0"
log_q = "lq0"
temperature = 0.5
sample_weights = "w0"
reduction = "sum"
[[losses]]
name = "in_batch_cosine"
loss_type = "in_batch_softmax"
user = "u1"
item = "v1"
similarity = "cosine"
temperature = 0.1
[[losses]]
name = "cbns"
loss_type = "cross_batch_softmax"
user = "u2"
item = "v2"
item_ids = "ids2"
log_q = "lq2"
similarity = "cosine"
temperature = 0.2
bank_size = 50
warmup_steps = 1
sample_weights = "w2"
reduction = "weighted_mean"
[[losses]]
name = "info_nce"
loss_type = "contrastive_loss"
view_a = "u3"
view_b = "v3"
similarity = "dot"
temperature = 0.7
[[losses]]
name = "nt_xent"
loss_type = "contrastive_loss"
view_a = "u4"
view_b = "v4"
variant = "nt_xent"
sample_weights = "w4"
reduction = "mean"
[[losses]]
name = "mining"
loss_type = "softmax_cross_entropy_with_negative_mining"
user = "u5"
item = "v5"
labels = "y5"
num_negative_samples = 6
margin = 0.1
gamma = 3.0
coefficient_of_support_vector = 1.5
seed = 11
sample_weights = "w5"
[[losses]]
name = "circle"
loss_type = "circle_loss"
embeddings = "u6"
labels = "y6"
session = "s6"
[[losses]]
name = "multi_similarity"
loss_type = "multi_similarity_loss"
embeddings = "u7"
labels = "y7"
sample_weights = "w7"
reduction = "weighted_mean"
"#;

#[test]
fn every_term_matches_the_reference_over_steps() {
    // B = 37: not a multiple of anything; the bank of 50 wraps at the second write.
    check_all(ALL_TERMS, &batch(1, 8, 37, 8), 4, EMB_TOL);
}

#[test]
fn the_other_options_match_the_reference() {
    let config = r#"
[[losses]]
name = "in_batch_hits_no_logq"
loss_type = "in_batch_softmax"
user = "u0"
item = "v0"
item_ids = "ids0"
similarity = "cosine"
sample_weights = "w0"
[[losses]]
name = "cbns_dot_no_ids"
loss_type = "cross_batch_softmax"
user = "u1"
item = "v1"
log_q = "lq1"
bank_size = 20
reduction = "mean"
[[losses]]
name = "info_nce_cosine"
loss_type = "contrastive_loss"
view_a = "u2"
view_b = "v2"
sample_weights = "w2"
reduction = "nonzero_mean"
[[losses]]
name = "nt_xent_dot"
loss_type = "contrastive_loss"
view_a = "u3"
view_b = "v3"
variant = "nt_xent"
similarity = "dot"
temperature = 2.0
[[losses]]
name = "mining_default"
loss_type = "softmax_cross_entropy_with_negative_mining"
user = "u4"
item = "v4"
num_negative_samples = 32
[[losses]]
name = "circle_plain"
loss_type = "circle_loss"
embeddings = "u5"
labels = "ids5"
margin = 0.4
gamma = 8.0
sample_weights = "w5"
reduction = "sum"
[[losses]]
name = "ms_session"
loss_type = "multi_similarity_loss"
embeddings = "u6"
labels = "y6"
session = "s6"
alpha = 3.0
beta = 20.0
lamb = 0.5
[[losses]]
name = "ms_mined_session"
loss_type = "multi_similarity_loss"
embeddings = "u7"
labels = "y7"
session = "s7"
ms_mining = true
eps = 0.3
sample_weights = "w7"
"#;
    // B = 33 with d = 5; mining's K = 32 = B − 1 scores every other item.
    check_all(config, &batch(2, 8, 33, 5), 3, EMB_TOL);
}

#[test]
fn larger_batches_span_several_tiles_and_workgroups() {
    // B = 600: three workgroups of rows, tiles of the adapter's column count, d = 64.
    let config = r#"
[[losses]]
name = "in_batch"
loss_type = "in_batch_softmax"
user = "u0"
item = "v0"
item_ids = "ids0"
log_q = "lq0"
similarity = "cosine"
temperature = 0.05
[[losses]]
name = "nt_xent"
loss_type = "contrastive_loss"
view_a = "u1"
view_b = "v1"
variant = "nt_xent"
[[losses]]
name = "circle"
loss_type = "circle_loss"
embeddings = "u2"
labels = "y2"
"#;
    // NT-Xent over 2B = 1200 rows: more than one dispatch's range of columns (llvmpipe's loop
    // limiter stopped a single sweep of them early).
    check_all(config, &batch(3, 3, 600, 64), 1, EMB_TOL);
}

#[test]
fn negative_mining_over_more_negatives_than_one_dispatch_visits() {
    // K = 500 at d = 64: more than columns_per_dispatch(64) = 441, so the negatives go in two
    // ranges per pass, the running sums carried between them; seeded shifts.
    let config = "[[losses]]\nloss_type = 'softmax_cross_entropy_with_negative_mining'\nuser = 'u0'\nitem = 'v0'\nnum_negative_samples = 500\nmargin = 0.1\ngamma = 2.0\ncoefficient_of_support_vector = 1.5\nseed = 3\nsample_weights = 'w0'\n";
    check_all(config, &batch(10, 1, 600, 64), 2, EMB_TOL);
}

#[test]
fn sweeps_holding_blocks_of_rows_match_the_reference() {
    // Every term with 3 and 8 rows per sweep invocation (the CPU adapters' choice at this size
    // is 1): B = 300 leaves the second block row partial and the third clamped; NT-Xent's 600
    // columns at d = 16 take two ranges of columns_per_dispatch_block(16, 3) = 405.
    let config = LossConfig::from_toml_str(ALL_TERMS).unwrap();
    let batch = batch(4, 8, 300, 16);
    let reference = run_reference(&config, &batch.0, 2);
    for rows in [3, 8] {
        let options = EngineOptions {
            sweep_block_rows: Some(rows),
            ..Default::default()
        };
        for engine in engines_with(options) {
            let gpu = run_gpu(&engine, &config, &batch.0, 2);
            for (s, (g, r)) in gpu.iter().zip(&reference).enumerate() {
                let label = format!("{} rows {rows} step {s}", engine.adapter().label());
                assert_matches(&label, g, r, EMB_TOL);
            }
        }
    }
}

/// Steps with a different batch each time (so that the bank's order matters), on one adapter,
/// compared with the reference step by step; returns the state bytes after every step.
fn run_bank(
    engine: &lossfuse::Engine,
    config: &LossConfig,
    batches: &[Inputs],
    reference: &mut Reference,
    label: &str,
) -> Vec<Vec<u8>> {
    let mut plan = engine
        .plan(config, &Shapes::of_host(&batches[0].0))
        .unwrap();
    let mut states = Vec::new();
    let names: Vec<String> = plan.grad_names().cloned().collect();
    for (s, b) in batches.iter().enumerate() {
        let owned = OwnedBatch::from_host(&b.0).unwrap();
        plan.poison_outputs();
        let out = plan.step(&owned.batch()).unwrap();
        let report = out.report_blocking().unwrap();
        let grads = names
            .iter()
            .map(|n| (n.clone(), out.read_grad(n).unwrap()))
            .collect();
        let want = reference.step(&b.0).unwrap();
        assert_matches(
            &format!("{label} step {s}"),
            &GpuStep {
                report,
                grads,
                predictions: Default::default(),
            },
            &want,
            EMB_TOL,
        );
        let state = plan.save_state().unwrap();
        assert_eq!(plan.saved_state_len(), state.len(), "with memory banks");
        states.push(state);
    }
    states
}

const BANK: &str = r#"
[[losses]]
loss_type = "cross_batch_softmax"
user = "u0"
item = "v0"
item_ids = "ids0"
log_q = "lq0"
similarity = "cosine"
temperature = 0.25
bank_size = 60
warmup_steps = 2
"#;

#[test]
fn the_bank_is_a_fifo_over_steps_split_or_whole_and_saves_bit_exact() {
    let config = LossConfig::from_toml_str(BANK).unwrap();
    // B = 16, d = 4: 60 rows wrap after 4 writes; steps 0 and 1 are warm-up.
    let batches: Vec<Inputs> = (0..7).map(|s| batch(100 + s, 1, 16, 4)).collect();
    // 512-byte bindings split the bank's embeddings into parts of 32 and 28 rows.
    for (options, how) in [
        (EngineOptions::default(), "whole"),
        (
            EngineOptions {
                max_binding_bytes: Some(512),
                ..Default::default()
            },
            "split",
        ),
    ] {
        for engine in engines_with(options) {
            let label = format!("{} {how}", engine.adapter().label());
            let mut reference = Reference::new(&config).unwrap();
            let states = run_bank(&engine, &config, &batches, &mut reference, &label);
            // Resume from the state after step 3 in a fresh plan: the rest is bit-identical.
            let mut resumed = Reference::new(&config).unwrap();
            for b in &batches[..4] {
                resumed.step(&b.0).unwrap();
            }
            let mut plan = engine
                .plan(&config, &Shapes::of_host(&batches[0].0))
                .unwrap();
            plan.load_state(&states[3]).unwrap();
            for (s, b) in batches.iter().enumerate().skip(4) {
                let owned = OwnedBatch::from_host(&b.0).unwrap();
                plan.step(&owned.batch())
                    .unwrap()
                    .report_blocking()
                    .unwrap();
                assert_eq!(
                    plan.save_state().unwrap(),
                    states[s],
                    "{label}: the resumed run's state after step {s} differs"
                );
                resumed.step(&b.0).unwrap();
            }
            assert_eq!(
                resumed.state(),
                reference.state(),
                "reference resumed from the same steps"
            );
        }
    }
}

#[test]
fn a_failed_step_changes_no_state_and_errors_name_the_fault() {
    let config = LossConfig::from_toml_str(BANK).unwrap();
    let good = batch(7, 1, 16, 4);
    for engine in engines() {
        let mut plan = engine.plan(&config, &Shapes::of_host(&good.0)).unwrap();
        let owned = OwnedBatch::from_host(&good.0).unwrap();
        for _ in 0..3 {
            plan.step(&owned.batch())
                .unwrap()
                .report_blocking()
                .unwrap();
        }
        let before = plan.save_state().unwrap();
        let mut bad = good.clone();
        if let lossfuse::HostData::Real(v) = &mut bad.0.get_mut("u0").unwrap().data {
            v[5] = f64::NAN;
        }
        let owned_bad = OwnedBatch::from_host(&bad.0).unwrap();
        let err = plan
            .step(&owned_bad.batch())
            .err()
            .expect("a NaN must fail");
        let text = err.to_string();
        assert!(
            text.contains("u0") && text.contains("cross_batch_softmax") && text.contains("[16, 4]"),
            "{text}"
        );
        assert_eq!(
            plan.save_state().unwrap(),
            before,
            "a failed step changed the state"
        );
    }
    // Plan-time errors name the term, the tensor and the shapes.
    let engine = &engines()[0];
    let mining = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = 'softmax_cross_entropy_with_negative_mining'\nuser = 'u0'\nitem = 'v0'\nnum_negative_samples = 16\n",
    )
    .unwrap();
    let e = engine
        .plan(&mining, &Shapes::of_host(&good.0))
        .err()
        .unwrap();
    assert!(matches!(e, Error::Tensor { .. }), "{e}");
    let t = e.to_string();
    assert!(
        t.contains("u0") && t.contains("B = 16") && t.contains("[16, 4]"),
        "{t}"
    );
    let mut other = batch(8, 1, 16, 4);
    other.0.get_mut("v0").unwrap().shape = vec![8, 8];
    let in_batch = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = 'in_batch_softmax'\nuser = 'u0'\nitem = 'v0'\n",
    )
    .unwrap();
    let e = engine
        .plan(&in_batch, &Shapes::of_host(&other.0))
        .err()
        .unwrap();
    let t = e.to_string();
    assert!(
        t.contains("v0") && t.contains("[8, 8]") && t.contains("[16, 4]"),
        "{t}"
    );
    let e = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = 'in_batch_softmax'\nuser = 'u0'\nitem = 'v0'\nremove_accidental_hits = true\n",
    )
    .err()
    .unwrap();
    assert!(e.to_string().contains("item_ids"), "{e}");
}

#[test]
fn a_full_bank_of_a_million_rows_at_d64_spans_two_bindings() {
    // M = 1,048,576 rows of d = 64: 256 MiB of embeddings, more than one 128 MiB binding. The
    // bank is marked full (its rows are zero, as in a fresh plan) and the reference is given the
    // same bank; 8 loss rows keep the step short on a CPU adapter.
    let m = 1usize << 20;
    let config = LossConfig::from_toml_str(&format!(
        "[[losses]]\nloss_type = 'cross_batch_softmax'\nuser = 'u0'\nitem = 'v0'\nlog_q = 'lq0'\n\
         similarity = 'cosine'\ntemperature = 0.5\nbank_size = {m}\n"
    ))
    .unwrap();
    let inputs = batch(9, 1, 8, 64);
    let mut reference = Reference::new(&config).unwrap();
    let mut state = reference.state().clone();
    state.banks[0] = Some(lossfuse::reference::BankState {
        slots: vec![
            Some(lossfuse::reference::BankRow {
                embedding: vec![0.0; 64],
                log_q: 0.0,
                id: None,
            });
            m
        ],
        head: 0,
        fill: m,
    });
    reference.set_state(state);
    let want = reference.step(&inputs.0).unwrap();
    for engine in engines() {
        let label = engine.adapter().label();
        let mut plan = engine.plan(&config, &Shapes::of_host(&inputs.0)).unwrap();
        let bank_bytes = m as u64 * (64 * 4 + 12);
        let allocated = plan.allocated_bytes();
        assert!(
            allocated >= bank_bytes && allocated < bank_bytes + (1 << 20),
            "{label}: {allocated} bytes for a bank of {bank_bytes}"
        );
        plan.fill_banks();
        let owned = OwnedBatch::from_host(&inputs.0).unwrap();
        let names: Vec<String> = plan.grad_names().cloned().collect();
        let out = plan.step(&owned.batch()).unwrap();
        let report = out.report_blocking().unwrap();
        let grads = names
            .iter()
            .map(|n| (n.clone(), out.read_grad(n).unwrap()))
            .collect();
        assert_matches(
            &label,
            &GpuStep {
                report,
                grads,
                predictions: Default::default(),
            },
            &want,
            EMB_TOL,
        );
    }
}

/// Embeddings around one centre per class (4 classes), so that a row's positives are all close
/// and the pair mining drops negatives as well as positives; with the (positives, negatives)
/// each row's mining at ε keeps, by the f64 cosines.
fn clustered(rng: &mut Rng, b: usize, d: usize, eps: f64) -> (Inputs, [usize; 2], [usize; 2]) {
    let centres = reals(rng, 4 * d, -1.0, 1.0);
    let y: Vec<usize> = (0..b).map(|_| rng.below(4) as usize).collect();
    let u: Vec<f64> = (0..b * d)
        .map(|x| centres[y[x / d] * d + x % d] + 0.6 * rng.range(-1.0, 1.0))
        .collect();
    let unit: Vec<Vec<f64>> = u
        .chunks(d)
        .map(|r| {
            let n = r.iter().map(|v| v * v).sum::<f64>().sqrt();
            r.iter().map(|v| v / n).collect()
        })
        .collect();
    let s = |i: usize, j: usize| -> f64 {
        let c: f64 = unit[i].iter().zip(&unit[j]).map(|(a, b)| a * b).sum();
        c.max(0.0)
    };
    let (mut kept, mut all) = ([0, 0], [0, 0]);
    for i in 0..b {
        let others = (0..b).filter(|&j| j != i);
        let (pos, neg): (Vec<usize>, Vec<usize>) = others.partition(|&j| y[j] == y[i]);
        let max_neg = neg
            .iter()
            .map(|&j| s(i, j))
            .fold(f64::NEG_INFINITY, f64::max);
        let min_pos = pos.iter().map(|&j| s(i, j)).fold(f64::INFINITY, f64::min);
        kept[0] += pos.iter().filter(|&&j| s(i, j) < max_neg + eps).count();
        kept[1] += neg.iter().filter(|&&j| s(i, j) > min_pos - eps).count();
        all[0] += pos.len();
        all[1] += neg.len();
    }
    let labels = y.iter().map(|&c| c as f64).collect();
    let w = sample_weights(rng, b);
    let inputs = Inputs::new()
        .real("u", &[b, d], u)
        .real("y", &[b], labels)
        .real("w", &[b], w);
    (inputs, kept, all)
}

#[test]
fn multi_similarity_mining_matches_the_reference() {
    // B = 600 at d = 64: two column ranges per sweep, so the bounds are carried between the
    // mining dispatches; B = 45 at d = 8 in one range.
    for (seed, b, d, eps) in [(21, 600, 64, 0.1), (22, 45, 8, 0.05)] {
        let (inputs, kept, all) = clustered(&mut Rng::new(seed), b, d, eps);
        // Both sides mined, neither emptied.
        for side in 0..2 {
            assert!(
                kept[side] > 0 && kept[side] < all[side],
                "{kept:?} of {all:?}"
            );
        }
        let config = format!(
            "[[losses]]\nloss_type = 'multi_similarity_loss'\nembeddings = 'u'\nlabels = 'y'\n\
             ms_mining = true\neps = {eps:?}\nalpha = 2.0\nbeta = 10.0\nlamb = 0.5\n\
             sample_weights = 'w'\nreduction = 'weighted_mean'\n"
        );
        check_all(&config, &inputs, 1, EMB_TOL);
    }
}
