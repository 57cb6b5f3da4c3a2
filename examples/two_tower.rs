//! Two-tower retrieval trained on the GPU with lossfuse: does cross-batch negative sampling help?
//!
//! A user tower and an item tower (plain embedding tables, living in GPU buffers) are trained on a
//! synthetic, seeded interaction log in which a few popular items dominate (Zipf-like popularity
//! times a hidden user–item affinity). Twice, from the same initial tables and in the same data
//! order, with the same small batch:
//!
//! * `in_batch`: `in_batch_softmax`, the other rows of the batch are the negatives;
//! * `cbns`: `cross_batch_softmax` (Wang et al. SIGIR 2021), the batch plus a GPU-resident FIFO
//!   bank of item embeddings from earlier steps, many times the batch.
//!
//! Both use cosine similarity with a temperature, the logQ correction (log of each item's
//! frequency in the training stream) and removal of accidental hits by item id.
//!
//! Each step runs on one device shared by the trainer and lossfuse: the trainer's `gather` kernel
//! copies the batch's rows of both tables into [B, d] buffers, lossfuse binds those buffers
//! (`Batch::buffer`, no copy) and writes the gradients into its own buffers, and the trainer's
//! `adagrad` kernel (examples/two_tower.wgsl) folds them back into the table rows. Only the ids,
//! log_q and the per-step grouping of duplicate ids are uploaded; the loss scalar is read back for
//! the progress line. After every epoch the tables are read back and recall@50 of the held-out
//! positive of every user is computed on the CPU over all items, the user's training positives
//! excluded.
//!
//! Run (about three and a half minutes on lavapipe, Mesa's CPU Vulkan driver, with 2 cores;
//! nearly all of it in the bank sweeps of `cbns`):
//!
//! ```text
//! LOSSFUSE_ADAPTER=vulkan cargo run --release --example two_tower
//! LOSSFUSE_ADAPTER=vulkan cargo run --release --example two_tower -- --temperature 0.1
//! ```
//!
//! The answer depends on the temperature: run it at a few. The last line is a verdict computed
//! from the final epoch (a paired sign test over the users on which the two runs disagree).

#[path = "support/two_tower_data.rs"]
mod two_tower_data;

use lossfuse::rng::SplitMix64;
use lossfuse::wgpu;
use lossfuse::{Batch, DType, Engine, Error, LossConfig, Plan, Result, Shapes};
use std::time::Instant;
use two_tower_data::{
    mean, print_table, recall_hits, recall_of_popularity, verdict, Data, Row, World,
};

/// Data sizes and training hyper-parameters, shared by both methods.
struct Setup {
    users: usize,
    items: usize,
    /// Dimension of the hidden ground-truth factors.
    true_dim: usize,
    /// Zipf exponent of item popularity.
    zipf: f64,
    /// Scale of the hidden affinity (in nats, per unit of standardised dot product) against
    /// log-popularity when a user's positives are drawn.
    affinity: f64,
    /// Positives drawn per user; the last one is held out.
    positives: usize,
    /// Embedding dimension of both towers.
    dim: usize,
    batch: usize,
    /// Rows of the memory bank of `cbns`.
    bank: usize,
    /// Steps during which the bank is filled but not yet used.
    warmup: usize,
    temperature: f64,
    /// Adagrad learning rate.
    lr: f64,
    epochs: usize,
    /// Cut-off of the recall.
    k: usize,
    seed: u64,
}

/// Sized so that both runs take about three and a half minutes on lavapipe with 2 cores: the bank
/// sweeps of `cross_batch_softmax` cost about B·M·d multiply-adds per step, which dominates, so
/// the bank is 32 batches of 32 rather than thousands of rows behind a larger batch. The
/// temperature (the one knob the comparison is sensitive to) can be set on the command line.
const SETUP: Setup = Setup {
    users: 2000,
    items: 5000,
    true_dim: 4,
    zipf: 0.8,
    affinity: 4.0,
    positives: 11,
    dim: 32,
    batch: 32,
    bank: 1024,
    warmup: 50,
    temperature: 0.2,
    lr: 0.2,
    epochs: 4,
    k: 50,
    seed: 2024,
};

impl Setup {
    fn world(&self) -> World {
        World {
            users: self.users,
            items: self.items,
            true_dim: self.true_dim,
            zipf: self.zipf,
            affinity: self.affinity,
            positives: self.positives,
            seed: self.seed,
        }
    }
}

fn main() -> Result<()> {
    let s = Setup {
        temperature: temperature_arg()?.unwrap_or(SETUP.temperature),
        ..SETUP
    };
    let engine = Engine::new()?;
    println!("adapter: {}", engine.adapter().label());
    let t0 = Instant::now();
    let data = Data::generate(&s.world());
    println!(
        "data: {} users, {} items, {} training pairs, {} held-out pairs (built in {:.1} s)",
        s.users,
        s.items,
        data.train.len(),
        data.test.len(),
        t0.elapsed().as_secs_f64()
    );
    let popular = recall_of_popularity(&data, s.k);
    println!(
        "most-popular baseline: recall@{} = {:.4}",
        s.k,
        mean(&popular)
    );

    let mut rows: Vec<Row> = Vec::new();
    let mut final_hits: Vec<Vec<bool>> = Vec::new();
    for method in [Method::InBatch, Method::Cbns] {
        println!("training {}", method.describe(&s));
        let mut trainer = Trainer::new(&engine, &s, method)?;
        let mut hits = Vec::new();
        for epoch in 1..=s.epochs {
            let t = Instant::now();
            let loss = trainer.train_epoch(&data, epoch as u64)?;
            let train_s = t.elapsed().as_secs_f64();
            hits = trainer.evaluate(&data)?;
            let row = Row {
                epoch,
                method: method.name(),
                loss,
                recall: mean(&hits),
            };
            println!(
                "  {:<8} epoch {epoch}/{}: train loss {loss:.4}, recall@{} {:.4} \
                 ({train_s:.1} s training, {:.1} s eval)",
                row.method,
                s.epochs,
                s.k,
                row.recall,
                t.elapsed().as_secs_f64() - train_s
            );
            rows.push(row);
        }
        final_hits.push(hits);
    }

    print_table(&rows, s.k);
    println!("{}", verdict(&final_hits[0], &final_hits[1], s.k));
    println!("total time {:.1} s", t0.elapsed().as_secs_f64());
    Ok(())
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
            "usage: two_tower [--temperature T] (default 0.2)".into(),
        )),
    }
}

#[derive(Clone, Copy, PartialEq)]
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

    /// What the progress line says about the method.
    fn describe(self, s: &Setup) -> String {
        match self {
            Method::InBatch => format!(
                "in_batch: in_batch_softmax, {} negatives per row (the rest of the batch)",
                s.batch - 1
            ),
            Method::Cbns => format!(
                "cbns: cross_batch_softmax, {} negatives per row (the rest of the batch and a bank \
                 of {} rows = {} batches, used after {} warm-up steps)",
                s.batch - 1 + s.bank,
                s.bank,
                s.bank / s.batch,
                s.warmup
            ),
        }
    }

    /// The lossfuse config: the same retrieval term, with or without the bank.
    fn config(self, s: &Setup) -> Result<LossConfig> {
        let (loss_type, bank) = match self {
            Method::InBatch => ("in_batch_softmax", String::new()),
            Method::Cbns => (
                "cross_batch_softmax",
                format!("bank_size = {}\nwarmup_steps = {}\n", s.bank, s.warmup),
            ),
        };
        LossConfig::from_toml_str(&format!(
            "[[losses]]\n\
             name = \"retrieval\"\n\
             loss_type = \"{loss_type}\"\n\
             user = \"user\"\n\
             item = \"item\"\n\
             item_ids = \"item_ids\"\n\
             log_q = \"log_q\"\n\
             similarity = \"cosine\"\n\
             temperature = {:?}\n\
             remove_accidental_hits = true\n\
             {bank}",
            s.temperature
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// GPU side: the trainer's buffers and kernels around the loss.

fn storage(device: &wgpu::Device, label: &str, bytes: usize) -> wgpu::Buffer {
    device.create_buffer(&wgpu::BufferDescriptor {
        label: Some(label),
        size: (bytes.max(16) as u64).next_multiple_of(4),
        usage: wgpu::BufferUsages::STORAGE
            | wgpu::BufferUsages::COPY_DST
            | wgpu::BufferUsages::COPY_SRC,
        mapped_at_creation: false,
    })
}

/// The per-step grouping of one tower's batch ids by table row, uploaded for `adagrad`.
struct Segments {
    count: wgpu::Buffer,
    rows: wgpu::Buffer,
    starts: wgpu::Buffer,
    members: wgpu::Buffer,
}

impl Segments {
    fn new(device: &wgpu::Device, batch: usize) -> Self {
        Segments {
            count: device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("segment count"),
                size: 16,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            rows: storage(device, "segment rows", batch * 4),
            starts: storage(device, "segment starts", (batch + 1) * 4),
            members: storage(device, "segment members", batch * 4),
        }
    }

    /// Groups the batch rows by id (rows in increasing order within an id) and uploads the
    /// groups; returns their number.
    fn upload(&self, queue: &wgpu::Queue, ids: &[u32]) -> u32 {
        let mut order: Vec<u32> = (0..ids.len() as u32).collect();
        order.sort_by_key(|&r| (ids[r as usize], r));
        let mut rows = Vec::new();
        let mut starts = Vec::new();
        for (m, &r) in order.iter().enumerate() {
            let id = ids[r as usize];
            if rows.last() != Some(&id) {
                rows.push(id);
                starts.push(m as u32);
            }
        }
        starts.push(order.len() as u32);
        let count = rows.len() as u32;
        queue.write_buffer(&self.count, 0, bytemuck::cast_slice(&[count, 0, 0, 0]));
        queue.write_buffer(&self.rows, 0, bytemuck::cast_slice(&rows));
        queue.write_buffer(&self.starts, 0, bytemuck::cast_slice(&starts));
        queue.write_buffer(&self.members, 0, bytemuck::cast_slice(&order));
        count
    }
}

/// One tower: its embedding table (and, through the update bind group, Adagrad's state), and the
/// batch's rows of the table.
struct Tower {
    rows: usize,
    table: wgpu::Buffer,
    ids: wgpu::Buffer,
    gathered: wgpu::Buffer,
    segments: Segments,
    gather: wgpu::BindGroup,
    update: wgpu::BindGroup,
}

impl Tower {
    /// A table of `rows` × d, uniform in ±0.1 from `seed` (the same for both methods).
    fn new(ctx: &Gpu, name: &str, rows: usize, seed: u64, grad: &wgpu::Buffer) -> Self {
        let (device, d, b) = (&ctx.device, ctx.dim, ctx.batch);
        let mut rng = SplitMix64::new(seed);
        let init: Vec<f32> = (0..rows * d).map(|_| rng.range_f32(-0.1, 0.1)).collect();
        let table = storage(device, &format!("{name} table"), rows * d * 4);
        ctx.queue
            .write_buffer(&table, 0, bytemuck::cast_slice(&init));
        // Adagrad's customary initial accumulator keeps the first steps bounded. Only the update
        // bind group refers to it, which keeps it alive.
        let accum = storage(device, &format!("{name} accum"), rows * d * 4);
        ctx.queue
            .write_buffer(&accum, 0, bytemuck::cast_slice(&vec![0.1f32; rows * d]));
        let ids = storage(device, &format!("{name} ids"), b * 4);
        // Exactly [B, d]: `gather` bounds itself by the buffer's length.
        let gathered = device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(&format!("{name} rows")),
            size: (b * d * 4) as u64,
            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let segments = Segments::new(device, b);
        let gather = ctx.bind(&ctx.gather, &[(0, &ids), (1, &table), (2, &gathered)]);
        let update = ctx.bind(
            &ctx.adagrad,
            &[
                (4, &segments.count),
                (5, &segments.rows),
                (6, &segments.starts),
                (7, &segments.members),
                (8, grad),
                (9, &table),
                (10, &accum),
            ],
        );
        Tower {
            rows,
            table,
            ids,
            gathered,
            segments,
            gather,
            update,
        }
    }

    /// Reads the table back (blocking).
    fn read(&self, ctx: &Gpu) -> Result<Vec<f32>> {
        read_f32(ctx, &self.table, self.rows * ctx.dim)
    }
}

/// The device, the trainer's two pipelines, and the sizes they were built for.
struct Gpu {
    device: wgpu::Device,
    queue: wgpu::Queue,
    gather: wgpu::ComputePipeline,
    adagrad: wgpu::ComputePipeline,
    dim: usize,
    batch: usize,
}

impl Gpu {
    fn new(engine: &Engine, s: &Setup) -> Result<Self> {
        let device = engine.device().clone();
        let scope = device.push_error_scope(wgpu::ErrorFilter::Validation);
        let module = device.create_shader_module(wgpu::ShaderModuleDescriptor {
            label: Some("two_tower.wgsl"),
            source: wgpu::ShaderSource::Wgsl(include_str!("two_tower.wgsl").into()),
        });
        let pipeline = |entry: &str, constants: &[(&str, f64)]| {
            device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: &module,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    ..Default::default()
                },
                cache: None,
            })
        };
        let dim = ("D", s.dim as f64);
        let gather = pipeline("gather", &[dim]);
        let adagrad = pipeline("adagrad", &[dim, ("LR", s.lr)]);
        if let Some(e) = pollster::block_on(scope.pop()) {
            return Err(Error::Gpu(format!("two_tower.wgsl: {e}")));
        }
        Ok(Gpu {
            device,
            queue: engine.queue().clone(),
            gather,
            adagrad,
            dim: s.dim,
            batch: s.batch,
        })
    }

    fn bind(
        &self,
        pipeline: &wgpu::ComputePipeline,
        entries: &[(u32, &wgpu::Buffer)],
    ) -> wgpu::BindGroup {
        let entries: Vec<wgpu::BindGroupEntry> = entries
            .iter()
            .map(|&(binding, buffer)| wgpu::BindGroupEntry {
                binding,
                resource: buffer.as_entire_binding(),
            })
            .collect();
        self.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: None,
            layout: &pipeline.get_bind_group_layout(0),
            entries: &entries,
        })
    }

    /// Records `pipeline` over `invocations` threads of 64.
    fn dispatch(
        &self,
        encoder: &mut wgpu::CommandEncoder,
        pipeline: &wgpu::ComputePipeline,
        group: &wgpu::BindGroup,
        invocations: usize,
    ) {
        let mut pass = encoder.begin_compute_pass(&Default::default());
        pass.set_pipeline(pipeline);
        pass.set_bind_group(0, group, &[]);
        pass.dispatch_workgroups(invocations.div_ceil(64) as u32, 1, 1);
    }
}

fn read_f32(ctx: &Gpu, buffer: &wgpu::Buffer, n: usize) -> Result<Vec<f32>> {
    let size = (n * 4) as u64;
    let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("read back"),
        size,
        usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    });
    let mut encoder = ctx.device.create_command_encoder(&Default::default());
    encoder.copy_buffer_to_buffer(buffer, 0, &staging, 0, size);
    ctx.queue.submit([encoder.finish()]);
    let (tx, rx) = std::sync::mpsc::channel();
    staging.map_async(wgpu::MapMode::Read, .., move |r| {
        let _ = tx.send(r);
    });
    ctx.device
        .poll(wgpu::PollType::wait_indefinitely())
        .map_err(|e| Error::Gpu(format!("waiting for the GPU: {e}")))?;
    rx.recv()
        .map_err(|_| Error::Gpu("map callback dropped".into()))?
        .map_err(|e| Error::Gpu(format!("mapping: {e}")))?;
    let values = bytemuck::cast_slice(
        &staging
            .get_mapped_range(..)
            .map_err(|e| Error::Gpu(format!("reading: {e}")))?,
    )
    .to_vec();
    staging.unmap();
    Ok(values)
}

/// One method's training run: the loss plan and both towers.
struct Trainer {
    gpu: Gpu,
    plan: Plan,
    user: Tower,
    item: Tower,
    log_q: wgpu::Buffer,
    seed: u64,
    batch: usize,
    k: usize,
}

impl Trainer {
    fn new(engine: &Engine, s: &Setup, method: Method) -> Result<Self> {
        let gpu = Gpu::new(engine, s)?;
        let (b, d) = (s.batch, s.dim);
        let shapes = Shapes::new()
            .tensor("user", &[b, d], DType::F32)
            .tensor("item", &[b, d], DType::F32)
            .tensor("item_ids", &[b], DType::U32)
            .tensor("log_q", &[b], DType::F32);
        let plan = engine.plan(&method.config(s)?, &shapes)?;
        // The gradient buffers are the plan's and stay the same every step, so the update bind
        // groups can be built once.
        let user = Tower::new(&gpu, "user", s.users, s.seed + 1, plan.grad("user")?);
        let item = Tower::new(&gpu, "item", s.items, s.seed + 2, plan.grad("item")?);
        let log_q = storage(&gpu.device, "log_q", b * 4);
        Ok(Trainer {
            gpu,
            plan,
            user,
            item,
            log_q,
            seed: s.seed,
            batch: b,
            k: s.k,
        })
    }

    /// One pass over the training pairs (the last partial batch dropped); the mean loss.
    fn train_epoch(&mut self, data: &Data, epoch: u64) -> Result<f64> {
        let order = data.epoch_order(self.seed, epoch);
        let mut total = 0.0;
        let mut steps = 0usize;
        for chunk in order.chunks_exact(self.batch) {
            total += self.step(data, chunk)? as f64;
            steps += 1;
        }
        Ok(total / steps.max(1) as f64)
    }

    /// gather → loss (lossfuse) → adagrad, three submissions on one queue, which runs them in
    /// order; the loss value is read back at the end.
    fn step(&mut self, data: &Data, pairs: &[(u32, u32)]) -> Result<f32> {
        let users: Vec<u32> = pairs.iter().map(|p| p.0).collect();
        let items: Vec<u32> = pairs.iter().map(|p| p.1).collect();
        let log_q: Vec<f32> = items.iter().map(|&i| data.log_q[i as usize]).collect();
        let q = &self.gpu.queue;
        q.write_buffer(&self.user.ids, 0, bytemuck::cast_slice(&users));
        q.write_buffer(&self.item.ids, 0, bytemuck::cast_slice(&items));
        q.write_buffer(&self.log_q, 0, bytemuck::cast_slice(&log_q));
        let user_groups = self.user.segments.upload(q, &users);
        let item_groups = self.item.segments.upload(q, &items);

        let rows = self.batch * self.gpu.dim;
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        for t in [&self.user, &self.item] {
            self.gpu
                .dispatch(&mut encoder, &self.gpu.gather, &t.gather, rows);
        }
        q.submit([encoder.finish()]);

        let out = self.plan.step(
            &Batch::new()
                .buffer("user", &self.user.gathered)
                .buffer("item", &self.item.gathered)
                .buffer("item_ids", &self.item.ids)
                .buffer("log_q", &self.log_q),
        )?;
        let mut encoder = self.gpu.device.create_command_encoder(&Default::default());
        for (t, groups) in [(&self.user, user_groups), (&self.item, item_groups)] {
            self.gpu.dispatch(
                &mut encoder,
                &self.gpu.adagrad,
                &t.update,
                groups as usize * self.gpu.dim,
            );
        }
        q.submit([encoder.finish()]);
        Ok(out.report_blocking()?.total)
    }

    /// Hits of recall@k on the held-out pairs: all items ranked by cosine similarity (what the
    /// model is trained to score; the logQ correction is a training-time adjustment only).
    fn evaluate(&self, data: &Data) -> Result<Vec<bool>> {
        let d = self.gpu.dim;
        let (users, items) = (self.user.read(&self.gpu)?, self.item.read(&self.gpu)?);
        Ok(recall_hits(data, &users, &items, d, self.k))
    }
}
