//! Two-tower retrieval written with Burn, its loss from lossfuse: does cross-batch negative
//! sampling help?
//!
//! The towers are Burn modules (an embedding table and a two-layer MLP with a residual, for users
//! and for items), trained by Burn's Adam; the loss is lossfuse's `in_batch_softmax` or
//! `cross_batch_softmax` (Wang et al. SIGIR 2021, a GPU-resident FIFO bank of earlier items), both
//! with cosine similarity, a temperature, the logQ correction and removal of accidental hits by
//! item id, stepped by `LossfuseLoss::forward` on the towers' outputs with no copy. The data is
//! `examples/two_tower.rs`'s synthetic Zipf-popular log (`examples/support/two_tower_data.rs`),
//! smaller, so that both runs take about a minute on lavapipe: the example runs in CI.
//!
//! It prints train loss and recall@50 per epoch (all items ranked for every user, the user's
//! training items excluded), a verdict computed from the last epoch (a paired sign test), and
//! fails (exit code 1) unless both runs' loss falls (from epoch 2 to the last) and recall rises
//! (from the untrained towers to the last epoch).
//!
//! ```text
//! cargo run --release -p lossfuse-burn --example two_tower_burn [-- --temperature T]
//! ```

#[path = "../../examples/support/two_tower_data.rs"]
mod two_tower_data;

use burn::backend::wgpu::WgpuBackend;
use burn::module::Module;
use burn::nn::{Embedding, EmbeddingConfig, Linear, LinearConfig};
use burn::optim::{AdamConfig, GradientsParams};
use burn::tensor::{activation::relu, Device, Int, Tensor, TensorData};
use lossfuse::{Error, Result};
use lossfuse_burn::{init, Inputs, LossfuseLoss};
use std::time::Instant;
use two_tower_data::{
    mean, print_table, recall_hits, recall_of_popularity, verdict, Data, Row, World,
};

const WORLD: World = World {
    users: 600,
    items: 1500,
    true_dim: 4,
    zipf: 0.8,
    affinity: 4.0,
    positives: 11,
    seed: 2024,
};
const DIM: usize = 32;
const BATCH: usize = 64;
const BANK: usize = 256;
const WARMUP: usize = 20;
const EPOCHS: usize = 4;
const LR: f64 = 5e-3;
const K: usize = 50;

/// One tower: an embedding table, then x + W₂ relu(W₁ x).
#[derive(Module, Debug)]
struct Tower {
    table: Embedding,
    hidden: Linear,
    out: Linear,
}

impl Tower {
    fn new(rows: usize, device: &Device) -> Self {
        Tower {
            table: EmbeddingConfig::new(rows, DIM).init(device),
            hidden: LinearConfig::new(DIM, 2 * DIM).init(device),
            out: LinearConfig::new(2 * DIM, DIM).init(device),
        }
    }

    fn forward(&self, ids: &[u32], device: &Device) -> Tensor<2> {
        let n = ids.len();
        let ids: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
        let ids = Tensor::<2, Int>::from_data(TensorData::new(ids, [n, 1]), device);
        let x = self.table.forward(ids).reshape([n, DIM]);
        x.clone() + self.out.forward(relu(self.hidden.forward(x)))
    }
}

#[derive(Module, Debug)]
struct TwoTower {
    user: Tower,
    item: Tower,
}

#[derive(Clone, Copy)]
enum Method {
    InBatch,
    Cbns,
}

impl Method {
    fn name(self) -> &'static str {
        match self {
            Method::InBatch => "in_batch",
            Method::Cbns => "cbns",
        }
    }

    fn config(self, temperature: f64) -> String {
        let (loss_type, bank) = match self {
            Method::InBatch => ("in_batch_softmax", String::new()),
            Method::Cbns => (
                "cross_batch_softmax",
                format!("bank_size = {BANK}\nwarmup_steps = {WARMUP}\n"),
            ),
        };
        format!(
            "[[losses]]\nname = 'retrieval'\nloss_type = '{loss_type}'\nuser = 'user'\nitem = 'item'\n\
             item_ids = 'item_ids'\nlog_q = 'log_q'\nsimilarity = 'cosine'\ntemperature = {temperature:?}\n\
             remove_accidental_hits = true\n{bank}"
        )
    }
}

fn main() -> Result<()> {
    let temperature = temperature_arg()?.unwrap_or(0.2);
    let (device, engine) = init(WgpuBackend::Auto)?;
    let device = device.autodiff();
    println!("adapter: {}", engine.adapter().label());
    let t0 = Instant::now();
    let data = Data::generate(&WORLD);
    println!(
        "data: {} users, {} items, {} training pairs; most-popular recall@{K} = {:.4}",
        WORLD.users,
        WORLD.items,
        data.train.len(),
        mean(&recall_of_popularity(&data, K))
    );
    let mut rows = Vec::new();
    let mut finals = Vec::new();
    let mut failures = Vec::new();
    for method in [Method::InBatch, Method::Cbns] {
        let (run, hits) = train(method, temperature, &data, &device, &engine)?;
        // From epoch 2: during epoch 1 the bank fills (more negatives, a higher loss), so epoch 2
        // is the first both methods spend entirely as they train.
        let (first, last) = (&run[2], &run[run.len() - 1]);
        if !(last.loss < first.loss && last.recall > run[0].recall) {
            failures.push(format!(
                "{}: loss {:.4} -> {:.4}, recall {:.4} -> {:.4}",
                method.name(),
                first.loss,
                last.loss,
                run[0].recall,
                last.recall
            ));
        }
        rows.extend(run);
        finals.push(hits);
    }
    print_table(&rows, K);
    println!("{}", verdict(&finals[0], &finals[1], K));
    println!("total time {:.1} s", t0.elapsed().as_secs_f64());
    if !failures.is_empty() {
        eprintln!(
            "the loss must fall and recall rise: {}",
            failures.join("; ")
        );
        std::process::exit(1);
    }
    Ok(())
}

/// One method's run: the rows of its table (epoch 0: before training) and its final hits.
fn train(
    method: Method,
    temperature: f64,
    data: &Data,
    device: &Device,
    engine: &lossfuse::Engine,
) -> Result<(Vec<Row>, Vec<bool>)> {
    // The same initial towers for both methods: Burn's initialisers draw from this seed.
    device.seed(WORLD.seed);
    let mut model = TwoTower {
        user: Tower::new(WORLD.users, device),
        item: Tower::new(WORLD.items, device),
    };
    let loss = LossfuseLoss::from_toml(&method.config(temperature), engine)?;
    let mut optimizer = AdamConfig::new().init();
    let mut hits = evaluate(&model, data, device);
    let mut rows = vec![Row {
        epoch: 0,
        method: method.name(),
        loss: f64::NAN,
        recall: mean(&hits),
    }];
    for epoch in 1..=EPOCHS {
        let t = Instant::now();
        let (mut total, mut steps) = (0.0, 0);
        for pairs in data
            .epoch_order(WORLD.seed, epoch as u64)
            .chunks_exact(BATCH)
        {
            let users: Vec<u32> = pairs.iter().map(|p| p.0).collect();
            let items: Vec<u32> = pairs.iter().map(|p| p.1).collect();
            let log_q: Vec<f32> = items.iter().map(|&i| data.log_q[i as usize]).collect();
            let ids: Vec<i32> = items.iter().map(|&i| i as i32).collect();
            let out = loss.forward(
                Inputs::new()
                    .float("user", model.user.forward(&users, device))
                    .float("item", model.item.forward(&items, device))
                    .int(
                        "item_ids",
                        Tensor::<1, Int>::from_data(TensorData::new(ids, [BATCH]), device),
                    )
                    .float(
                        "log_q",
                        Tensor::<1>::from_data(TensorData::new(log_q, [BATCH]), device),
                    ),
            )?;
            total += out.report.total as f64;
            steps += 1;
            let grads = GradientsParams::from_grads(out.total.backward(), &model);
            model = optimizer.step(LR, model, grads);
        }
        hits = evaluate(&model, data, device);
        let row = Row {
            epoch,
            method: method.name(),
            loss: total / steps.max(1) as f64,
            recall: mean(&hits),
        };
        println!(
            "  {:<8} epoch {epoch}/{EPOCHS}: train loss {:.4}, recall@{K} {:.4} ({:.1} s)",
            row.method,
            row.loss,
            row.recall,
            t.elapsed().as_secs_f64()
        );
        rows.push(row);
    }
    Ok((rows, hits))
}

/// Recall@K of the held-out pairs, every item ranked by the towers' cosine similarity.
fn evaluate(model: &TwoTower, data: &Data, device: &Device) -> Vec<bool> {
    let host = |t: Tensor<2>| {
        t.inner()
            .into_data()
            .try_to_vec::<f32>()
            .unwrap_or_default()
    };
    let users: Vec<u32> = (0..WORLD.users as u32).collect();
    let items: Vec<u32> = (0..WORLD.items as u32).collect();
    let u = host(model.user.forward(&users, device));
    let v = host(model.item.forward(&items, device));
    recall_hits(data, &u, &v, DIM, K)
}

/// `--temperature T` from the command line, if given.
fn temperature_arg() -> Result<Option<f64>> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    match args.as_slice() {
        [] => Ok(None),
        [flag, value] if flag == "--temperature" => value
            .parse::<f64>()
            .ok()
            .filter(|t| *t > 0.0)
            .map(Some)
            .ok_or_else(|| {
                Error::Config(format!(
                    "--temperature needs a positive number, got '{value}'"
                ))
            }),
        _ => Err(Error::Config(
            "usage: two_tower_burn [--temperature T] (default 0.2)".into(),
        )),
    }
}
