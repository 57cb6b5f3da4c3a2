//! Every weighting strategy, flooding and learned-weight optimiser, over several steps, on every
//! adapter against the reference.

mod common;
use common::*;

fn batch(seed: u64) -> Inputs {
    let mut rng = Rng::new(seed);
    let b = 600;
    Inputs::new()
        .real("x", &[b], reals(&mut rng, b, -4.0, 4.0))
        .real("x2", &[b], reals(&mut rng, b, -4.0, 4.0))
        .real("y", &[b], binary(&mut rng, b, 0.3))
        .real("r", &[b], reals(&mut rng, b, 0.0, 1.0))
        .real("z", &[b, 5], reals(&mut rng, b * 5, -3.0, 3.0))
        .ids("k", &[b], (0..b).map(|_| rng.below(5) as i64).collect())
}

fn terms(learn: bool) -> String {
    let l = if learn {
        "\nlearn_loss_weight = true"
    } else {
        ""
    };
    format!(
        "[[losses]]\nname = 'ctr'\nloss_type = 'classification'\nlogits = 'x'\nlabels = 'y'\nweight = 1.5{l}\n\
         [[losses]]\nname = 'reg'\nloss_type = 'sigmoid_l2_loss'\nlogits = 'x2'\nlabels = 'r'\nweight = 0.5{l}\n\
         [[losses]]\nname = 'cls'\nloss_type = 'softmax_cross_entropy'\nlogits = 'z'\nlabels = 'k'\nweight = 0.25\n"
    )
}

#[test]
fn fixed_weights() {
    check_all(
        &format!("loss_weight_strategy = 'fixed'\n{}", terms(false)),
        &batch(1),
        2,
        TOL,
    );
}

#[test]
fn uncertainty_without_optimizer() {
    check_all(
        &format!("loss_weight_strategy = 'uncertainty'\n{}", terms(true)),
        &batch(2),
        2,
        TOL,
    );
}

#[test]
fn uncertainty_with_sgd_over_steps() {
    check_all(
        &format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'sgd'\nlearning_rate = 0.5\n{}", terms(true)),
        &batch(3),
        5,
        TOL,
    );
}

#[test]
fn uncertainty_with_adam_over_steps() {
    check_all(
        &format!("loss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'adam'\nlearning_rate = 0.1\n{}", terms(true)),
        &batch(4),
        5,
        TOL,
    );
}

#[test]
fn random_weights_change_each_step() {
    let config = format!(
        "loss_weight_strategy = 'random'\n[random]\nseed = 42\n{}",
        terms(false)
    );
    check_all(&config, &batch(5), 4, TOL);
    let reference = run_reference(
        &lossfuse::LossConfig::from_toml_str(&config).unwrap(),
        &batch(5).0,
        2,
    );
    assert_ne!(
        reference[0].weights, reference[1].weights,
        "RLW draws fresh weights each step"
    );
}

#[test]
fn ema_reweighting_over_steps() {
    check_all(
        &format!(
            "loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'ctr'\naux = 'reg'\nalpha = 0.3\nlambda = 2.0\ntheta0 = 0.1\n{}",
            terms(false)
        ),
        &batch(6),
        5,
        TOL,
    );
}

#[test]
fn ema_reweighting_with_attached_theta() {
    check_all(
        &format!(
            "loss_weight_strategy = 'ema_reweight'\n[ema_reweight]\nmain = 'ctr'\naux = 'reg'\nalpha = 0.3\nlambda = 2.0\ntheta0 = 0.1\ndetach_theta = false\n{}",
            terms(false)
        ),
        &batch(6),
        5,
        TOL,
    );
}

#[test]
fn flooding_above_and_below_the_total() {
    for level in ["0.05", "50.0"] {
        check_all(
            &format!("flooding = {level}\n{}", terms(false)),
            &batch(7),
            1,
            TOL,
        );
        check_all(
            &format!("flooding = {level}\nloss_weight_strategy = 'uncertainty'\n[uncertainty]\noptimizer = 'sgd'\nlearning_rate = 0.1\n{}", terms(true)),
            &batch(7),
            3,
            TOL,
        );
    }
}
