//! A valid random batch for any config (`lossfuse example-batch`, and the inputs of `lossfuse
//! soak`): every tensor a term names gets the shape, dtype and value range its role means, so
//! that every example config runs in one line without hand-made data.
//!
//! Roles, by meaning: logits and predictions are reals in [-4, 4]; binary labels are 0/1 with
//! P(1) = 0.3; regression labels lie in [0, 1]; probabilities in [0.01, 0.99]; softmax logits
//! are [B, 8] with class ids in [0, 8); graded pairwise labels are 0..=4; session ids are I64
//! with sessions of about 8 rows; embeddings are [B, 32] normal; item ids are I64 drawn from
//! B/2 items (so some collide, as accidental hits do); log_q is in [-8, -2]; sample weights
//! lie in [0, 2].

use lossfuse::rng::SplitMix64;
use lossfuse::{HostBatch, HostTensor, LossConfig, LossTerm, Role, RoleKind};

/// Classes of the softmax terms' logits.
pub const CLASSES: usize = 8;
/// Dimension of the embedding terms' rows.
pub const DIM: usize = 32;

/// A batch of `rows` rows for `config`, reproducible from `seed`. A tensor named by several
/// roles is drawn for the first of them.
pub fn example_batch(config: &LossConfig, rows: usize, seed: u64) -> HostBatch {
    let mut rng = SplitMix64::new(seed);
    let mut batch = HostBatch::new();
    for term in &config.losses {
        for role in term.kind.roles() {
            if let Some(name) = term.input(role.name) {
                if !batch.contains_key(name) {
                    let tensor = draw(term, role, rows, &mut rng);
                    batch.insert(name.to_string(), tensor);
                }
            }
        }
        if let Some(weights) = &term.sample_weights {
            for (name, _) in weights.parts() {
                batch
                    .entry(name)
                    .or_insert_with(|| reals(&mut rng, &[rows], 0.0, 2.0));
            }
        }
    }
    batch
}

fn reals(rng: &mut SplitMix64, shape: &[usize], lo: f64, hi: f64) -> HostTensor {
    let n = shape.iter().product();
    let v = (0..n).map(|_| lo + (hi - lo) * rng.unit_f64()).collect();
    HostTensor::real(shape.to_vec(), v)
}

fn normals(rng: &mut SplitMix64, shape: &[usize]) -> HostTensor {
    let n = shape.iter().product();
    let v = (0..n)
        .map(|_| {
            // Box–Muller on two uniforms in (0, 1].
            let u1 = 1.0 - rng.unit_f64();
            let u2 = rng.unit_f64();
            (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
        })
        .collect();
    HostTensor::real(shape.to_vec(), v)
}

fn ids(rng: &mut SplitMix64, rows: usize, below: usize) -> HostTensor {
    let v = (0..rows)
        .map(|_| rng.below(below.max(1) as u32) as i64)
        .collect();
    HostTensor::int(vec![rows], v)
}

fn binary(rng: &mut SplitMix64, rows: usize) -> HostTensor {
    let v = (0..rows)
        .map(|_| f64::from(u8::from(rng.unit_f64() < 0.3)))
        .collect();
    HostTensor::real(vec![rows], v)
}

/// The tensor of one role of `term`, by what the role means (and, for the shapes of logits and
/// the grades of labels, the loss type).
fn draw(term: &LossTerm, role: &Role, rows: usize, rng: &mut SplitMix64) -> HostTensor {
    let b = rows;
    let loss_type = term.kind.loss_type();
    match role.kind {
        RoleKind::Embeddings => normals(rng, &[b, DIM]),
        RoleKind::Logits => match loss_type {
            "softmax_cross_entropy" => reals(rng, &[b, CLASSES], -3.0, 3.0),
            "jrc_loss" => reals(rng, &[b, 2], -3.0, 3.0),
            "ziln_loss" => reals(rng, &[b, 3], -2.0, 2.0),
            _ => reals(rng, &[b], -4.0, 4.0),
        },
        RoleKind::Probabilities => reals(rng, &[b], 0.01, 0.99),
        RoleKind::ClassLabels if loss_type == "softmax_cross_entropy" => ids(rng, b, CLASSES),
        RoleKind::RealLabels if loss_type.starts_with("pair") => {
            let v = (0..b).map(|_| f64::from(rng.below(5))).collect();
            HostTensor::real(vec![b], v)
        }
        // Negative mining counts the rows whose label is > 0.
        RoleKind::RealLabels if loss_type.contains("negative_mining") => binary(rng, b),
        RoleKind::RealLabels => reals(rng, &[b], 0.0, 1.0),
        // Amounts: 0 or lognormal-ish, as a lifetime value.
        RoleKind::NonNegativeLabels => {
            let v = (0..b)
                .map(|_| {
                    if rng.unit_f64() < 0.4 {
                        0.0
                    } else {
                        (4.0 * rng.unit_f64() - 1.0).exp()
                    }
                })
                .collect();
            HostTensor::real(vec![b], v)
        }
        RoleKind::AnyLabels => ids(rng, b, (b / 4).max(2)),
        RoleKind::SessionIds => ids(rng, b, (b / 8).max(1)),
        RoleKind::ItemIds => ids(rng, b, (b / 2).max(1)),
        RoleKind::LogQ => reals(rng, &[b], -8.0, -2.0),
        RoleKind::BinaryLabels | RoleKind::ZeroOneLabels | RoleKind::ClassLabels => binary(rng, b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_example_config_gets_a_batch_the_reference_accepts() {
        let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/configs");
        let mut seen = 0;
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            let config = LossConfig::from_path(&path).unwrap();
            let batch = example_batch(&config, 64, 1);
            let mut reference = lossfuse::reference::Reference::new(&config).unwrap();
            let out = reference
                .step(&batch)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            assert!(out.total.is_finite(), "{}", path.display());
            seen += 1;
        }
        assert!(seen >= 4);
    }

    #[test]
    fn the_seed_decides_the_values() {
        let config = LossConfig::from_toml_str(
            "[[losses]]\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\n",
        )
        .unwrap();
        assert_eq!(example_batch(&config, 10, 3), example_batch(&config, 10, 3));
        assert_ne!(example_batch(&config, 10, 3), example_batch(&config, 10, 4));
    }
}
