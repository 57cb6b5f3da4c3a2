//! Every kernel variant the plans build, validated without an adapter: plans of every loss type
//! and option (and the example configs) are built from typical limits, on a tiled and an untiled
//! (GL) backend, with a small storage-binding limit so that groups split and rows chunk; every
//! pass's composed WGSL must validate with naga and bind every buffer variable its entry point
//! uses.

use super::alloc::Limits;
use super::build::build;
use crate::batch::{DType, Shapes};
use crate::config::LossConfig;
use crate::losses::family::RoleKind;
use std::collections::BTreeSet;

/// Shapes for every role of every term, by what the role means, with `rows` rows.
fn shapes_for(config: &LossConfig, rows: usize) -> Shapes {
    let mut shapes = Shapes::new();
    let mut seen = BTreeSet::new();
    for term in &config.losses {
        let loss_type = term.kind.loss_type();
        for role in term.kind.roles() {
            let Some(name) = term.input(role.name) else {
                continue;
            };
            if !seen.insert(name.to_string()) {
                continue;
            }
            let (shape, dtype) = match role.kind {
                // Distillation over classes: student and teacher [B, 7].
                _ if name.starts_with("mc_") => (vec![rows, 7], DType::F32),
                RoleKind::Embeddings => (vec![rows, 24], DType::F32),
                RoleKind::Logits if loss_type == "softmax_cross_entropy" => {
                    (vec![rows, 7], DType::F32)
                }
                RoleKind::Logits if loss_type == "jrc_loss" => (vec![rows, 2], DType::F32),
                RoleKind::Logits if loss_type == "ziln_loss" => (vec![rows, 3], DType::F32),
                RoleKind::ClassLabels if loss_type == "softmax_cross_entropy" => {
                    (vec![rows], DType::I32)
                }
                RoleKind::SessionIds | RoleKind::ItemIds => (vec![rows], DType::I64),
                RoleKind::AnyLabels => (vec![rows], DType::I32),
                _ => (vec![rows], DType::F32),
            };
            shapes = shapes.tensor(name, &shape, dtype);
        }
        if let Some(w) = &term.sample_weights {
            for (name, _) in w.parts() {
                if seen.insert(name.clone()) {
                    shapes = shapes.tensor(&name, &[rows], DType::F32);
                }
            }
        }
    }
    shapes
}

/// Configs of the options that change the kernels (every loss type also runs with its defaults,
/// [`defaults`]).
const VARIANTS: &[&str] = &[
    "loss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nlabel_smoothing = 0.1\npos_weight = 2.0",
    "loss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'cls'\nlabel_smoothing = 0.1\ntemperature = 2.0\nignore_index = 3\nclass_weights = [1, 2, 1, 1, 3, 1, 1]\nz_loss = 0.01",
    "loss_type = 'l2_loss'\npredictions = 'x'\nlabels = 'y'\nreduction = 'sum'",
    "loss_type = 'sigmoid_l2_loss'\nlogits = 'x'\nlabels = 'y'\nsample_weights = { w = 1.0, y = 2.0 }",
    "loss_type = 'cross_entropy_loss'\nprobabilities = 'p'\nlabels = 'y'",
    "loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nalpha = 0.25\nlabel_smoothing = 0.1",
    "loss_type = 'binary_focal_loss'\nlogits = 'x'\nlabels = 'y'\nohem_ratio = 0.5\nsample_weights = 'w'",
    "loss_type = 'esmm'\nctr_logits = 'x'\ncvr_logits = 'x2'\nctr_labels = 'y'\nctcvr_labels = 'buy'",
    "loss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 30\nmomentum = 0.75",
    "loss_type = 'f1_reweighted_loss'\nlogits = 'x'\nlabels = 'y'\nf1_beta_square = 2.0\nlabel_smoothing = 0.1",
    "loss_type = 'pair_wise_loss'\nlogits = 'x'\nlabels = 'g'\nsession = 's'\nmargin = 0.1",
    "loss_type = 'pair_wise_loss'\nlogits = 'x'\nlabels = 'g'\nohem_ratio = 0.3",
    "loss_type = 'pairwise_logistic_loss'\nlogits = 'x'\nlabels = 'g'\nsession = 's'\nhinge_margin = 0.2\nuse_label_margin = true\nsample_weights = 'w'",
    "loss_type = 'pairwise_focal_loss'\nlogits = 'x'\nlabels = 'g'\nsession = 's'\nalpha = 0.25\nhinge_margin = 1.0\nohem_ratio = 0.5",
    "loss_type = 'pairwise_hinge_loss'\nlogits = 'x'\nlabels = 'g'\nsession = 's'\nuse_label_margin = false",
    "loss_type = 'jrc_loss'\nlogits = 'j'\nlabels = 'y'\nsession = 's'",
    "loss_type = 'jrc_loss'\nlogits = 'j'\nlabels = 'y'\nsession = 's'\nsame_label_loss = false\nloss_weight_strategy = 'uncertainty'\nuncertainty = { optimizer = 'adam', learning_rate = 0.01 }",
    "loss_type = 'listwise_rank_loss'\nlogits = 'x'\nlabels = 'g'\nsession = 's'\nlabel_is_logits = true\ntemperature = 2.0\nscale_logits = true\nscale_optimizer = { optimizer = 'adam', learning_rate = 0.01 }",
    "loss_type = 'listwise_distill_loss'\nlogits = 'x'\nlabels = 'g'\nsession = 's'\nlabel_clip_max_value = 64\nscale_logits = true\nreduction = 'sum'",
    "loss_type = 'in_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'\nlog_q = 'q'\nsimilarity = 'cosine'\ntemperature = 0.1",
    "loss_type = 'cross_batch_softmax'\nuser = 'u'\nitem = 'v'\nitem_ids = 'ids'\nbank_size = 300\nwarmup_steps = 1",
    "loss_type = 'contrastive_loss'\nview_a = 'u'\nview_b = 'v'\nvariant = 'nt_xent'",
    "loss_type = 'contrastive_loss'\nview_a = 'u'\nview_b = 'v'\nsimilarity = 'dot'\nsample_weights = 'w'",
    "loss_type = 'softmax_cross_entropy_with_negative_mining'\nuser = 'u'\nitem = 'v'\nlabels = 'y'\nnum_negative_samples = 4\nseed = 7",
    "loss_type = 'circle_loss'\nembeddings = 'u'\nlabels = 'cls_any'\nsession = 's'",
    "loss_type = 'multi_similarity_loss'\nembeddings = 'u'\nlabels = 'cls_any'",
    "loss_type = 'multi_similarity_loss'\nembeddings = 'u'\nlabels = 'cls_any'\nsession = 's'\nms_mining = true\neps = 0.2",
    "loss_type = 'ziln_loss'\nlogits = 'zl'\nlabels = 'amount'\nmax_sigma = 2.0\nreturn_log_pred_value = true\nclassification_weight = 0.5",
    "loss_type = 'kl_divergence_loss'\nlogits = 'x'\nlabels = 'kd_t'\ntemperature = 2.0\nsample_weights = 'w'",
    "loss_type = 'kl_divergence_loss'\nlogits = 'p'\nlabels = 'kd_q'\npred_is_logits = false\nlabel_is_logits = false",
    "loss_type = 'binary_cross_entropy_loss'\nlogits = 'x'\nlabels = 'kd_t'\ntemperature = 3.0\npred_is_logits = false",
    "loss_type = 'l2_distill_loss'\nlogits = 'x'\nlabels = 'kd_t'\ntemperature = 2.0",
    "loss_type = 'softmax_cross_entropy'\nlogits = 'mc_z'\nlabels = 'mc_t'",
    "loss_type = 'kl_divergence_loss'\nlogits = 'mc_z'\nlabels = 'mc_t'\ntemperature = 2.0\nsample_weights = 'w'",
    "loss_type = 'kl_divergence_loss'\nlogits = 'mc_p'\nlabels = 'mc_q'\npred_is_logits = false\nlabel_is_logits = false",
    "loss_type = 'l2_distill_loss'\nlogits = 'mc_z'\nlabels = 'mc_t'\ntemperature = 0.5",
    "loss_type = 'binary_cross_entropy_loss'\nlogits = 'mc_z'\nlabels = 'mc_t'\ntemperature = 2.0",
];

/// Every loss type whose defaults need no key, each role bound to a tensor of the role's name.
fn defaults() -> Vec<(String, LossConfig)> {
    crate::losses::registry::all()
        .filter_map(|lt| {
            let roles: String = lt
                .roles
                .iter()
                .map(|r| format!("{0} = '{0}'\n", r.name))
                .collect();
            let text = format!("[[losses]]\nloss_type = '{}'\n{roles}", lt.name);
            let config = LossConfig::from_toml_str(&text).ok()?;
            Some((format!("{} (defaults)", lt.name), config))
        })
        .collect()
}

fn configs() -> Vec<(String, LossConfig)> {
    let mut out = defaults();
    out.extend(VARIANTS.iter().map(|v| {
        let text = format!("[[losses]]\n{v}\n");
        let config = LossConfig::from_toml_str(&text).unwrap_or_else(|e| panic!("{v}: {e}"));
        (v.lines().next().unwrap().to_string(), config)
    }));
    // All of them at once: the row terms fuse, the groups split at the binding limit.
    let all: String = VARIANTS
        .iter()
        .enumerate()
        .map(|(i, v)| format!("[[losses]]\nname = 't{i}'\n{v}\n"))
        .collect();
    out.push(("all".into(), LossConfig::from_toml_str(&all).unwrap()));
    // Flooding unfuses the row group (a backward pass per group).
    out.push((
        "flooding".into(),
        LossConfig::from_toml_str(&format!("flooding = 0.1\n{all}")).unwrap(),
    ));
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/configs");
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        out.push((
            path.display().to_string(),
            LossConfig::from_path(&path).unwrap(),
        ));
    }
    out
}

/// Limits of an adapter (`cpu`: a software one, whose retrieval sweeps hold blocks of rows).
fn limits(tiled: bool, max_binding: u64, cpu: bool) -> Limits {
    Limits {
        max_storage_buffers: 12,
        max_buffer: 256 << 20,
        max_binding,
        align: 256,
        max_grid: 65535,
        workgroup_bytes: 16384,
        tiled,
        cpu,
        block_rows: None,
    }
}

#[test]
fn every_kernel_variant_validates_without_an_adapter() {
    let mut sources = BTreeSet::new();
    let mut loss_types = BTreeSet::new();
    for (name, config) in configs() {
        loss_types.extend(config.losses.iter().map(|t| t.kind.loss_type()));
        for (rows, max_binding) in [(300, 128 << 20), (3000, 4096)] {
            let shapes = shapes_for(&config, rows);
            for (tiled, cpu) in [(true, false), (false, false), (true, true), (false, true)] {
                let blueprint = match build(&config, &shapes, &limits(tiled, max_binding, cpu)) {
                    Ok(b) => b,
                    // Small bindings refuse the sweeps that must fit one; that is a clear error.
                    Err(e) if max_binding == 4096 => {
                        assert!(e.to_string().contains("binding"), "{name}: {e}");
                        continue;
                    }
                    Err(e) => panic!("{name} (rows {rows}, tiled {tiled}): {e}"),
                };
                assert!(!blueprint.passes.is_empty());
                for pass in &blueprint.passes {
                    let label = format!("{name}: {}", pass.spec.label);
                    let source = pass.spec.shader.source(&label).unwrap();
                    if !sources.insert((source.clone(), pass.spec.entry)) {
                        continue;
                    }
                    let used = crate::wgsl::used_bindings(&label, &source, pass.spec.entry)
                        .unwrap_or_else(|e| panic!("{e}"));
                    super::record::check_bindings(&pass.spec, used.iter().map(|b| b.name.as_str()))
                        .unwrap_or_else(|e| panic!("{label}: {e}"));
                }
            }
        }
    }
    for t in crate::parse::loss_types() {
        assert!(loss_types.contains(t), "no variant of {t}");
    }
    assert!(
        sources.len() > 100,
        "only {} distinct kernels",
        sources.len()
    );
}

#[test]
fn a_refused_plan_names_the_limit() {
    let config = LossConfig::from_toml_str(
        "[[losses]]\nloss_type = 'ghm_c'\nlogits = 'x'\nlabels = 'y'\nbins = 1024\n",
    )
    .unwrap();
    let shapes = shapes_for(&config, 100);
    let mut small = limits(true, 128 << 20, false);
    small.workgroup_bytes = 4096;
    let e = build(&config, &shapes, &small).unwrap_err();
    assert!(e.to_string().contains("workgroup memory"), "{e}");
    small = limits(true, 128 << 20, false);
    small.max_buffer = 1000;
    let shapes = shapes_for(&config, 1000);
    let e = build(&config, &shapes, &small).unwrap_err();
    assert!(e.to_string().contains("largest buffer"), "{e}");
}
