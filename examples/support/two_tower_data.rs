//! The two-tower examples' synthetic world and evaluation, shared by `examples/two_tower.rs`
//! (hand-written kernels) and `burn/examples/two_tower_burn.rs` (Burn), which include this file
//! with `#[path]`: the same interaction log, recall@k and verdict for both.
#![allow(dead_code)]

use lossfuse::rng::SplitMix64;

/// The synthetic world: who likes what.
pub struct World {
    pub users: usize,
    pub items: usize,
    /// Dimension of the hidden ground-truth factors.
    pub true_dim: usize,
    /// Zipf exponent of item popularity.
    pub zipf: f64,
    /// Scale of the hidden affinity (in nats, per unit of standardised dot product) against
    /// log-popularity when a user's positives are drawn.
    pub affinity: f64,
    /// Positives drawn per user; the last one is held out.
    pub positives: usize,
    pub seed: u64,
}

/// One line of the final table.
pub struct Row {
    pub epoch: usize,
    pub method: &'static str,
    pub loss: f64,
    pub recall: f64,
}

pub fn print_table(rows: &[Row], k: usize) {
    println!();
    println!("epoch  method    train loss  recall@{k}");
    for r in rows {
        println!(
            "{:>5}  {:<8}  {:>10.4}  {:>9.4}",
            r.epoch, r.method, r.loss, r.recall
        );
    }
    println!("(train losses of the two methods are not comparable: the bank adds negatives)");
}

/// Whether the bank helped, from the final epoch's hits of both runs on the same held-out pairs:
/// the recall difference and a paired sign test over the users on which the runs disagree.
pub fn verdict(in_batch: &[bool], cbns: &[bool], k: usize) -> String {
    let (a, b) = (mean(in_batch), mean(cbns));
    let only_cbns = in_batch
        .iter()
        .zip(cbns)
        .filter(|(x, y)| !**x && **y)
        .count();
    let only_in_batch = in_batch
        .iter()
        .zip(cbns)
        .filter(|(x, y)| **x && !**y)
        .count();
    let disagree = (only_cbns + only_in_batch).max(1) as f64;
    let z = (only_cbns as f64 - only_in_batch as f64) / disagree.sqrt();
    let outcome = if z > 1.96 {
        "the bank HELPED"
    } else if z < -1.96 {
        "the bank HURT"
    } else {
        "no significant difference from the bank"
    };
    format!(
        "verdict: {outcome}: final recall@{k} {b:.4} with the bank vs {a:.4} in-batch \
         ({:+.1}% relative; {only_cbns} users hit only with the bank, {only_in_batch} only \
         in-batch, sign test z = {z:.2})",
        100.0 * (b - a) / a.max(1e-12)
    )
}

pub fn mean(hits: &[bool]) -> f64 {
    hits.iter().filter(|&&h| h).count() as f64 / hits.len().max(1) as f64
}

// ---------------------------------------------------------------------------------------------
// Synthetic data.

/// The interaction log: training pairs, one held-out pair per user, and what the logQ correction
/// and the evaluation need.
pub struct Data {
    /// (user, item), in generation order; shuffled per epoch.
    pub train: Vec<(u32, u32)>,
    /// (user, held-out item), one per user.
    pub test: Vec<(u32, u32)>,
    /// Each user's training items (excluded from the ranking at evaluation).
    pub seen: Vec<Vec<u32>>,
    /// log(frequency of the item in the training stream); 0 for items never seen (never used).
    pub log_q: Vec<f32>,
    /// Occurrences of each item in the training stream.
    pub counts: Vec<u32>,
}

impl Data {
    /// Hidden factors p_u, q_i ~ N(0, I); a user's positives are drawn without replacement from
    /// softmax_i(affinity · p_u·q_i / √k + log pop_i), pop_i = (rank_i + 1)^−zipf with a random
    /// popularity rank per item: popular items dominate, the affinity decides among them.
    pub fn generate(s: &World) -> Self {
        let mut rng = SplitMix64::new(s.seed);
        let k = s.true_dim;
        let p: Vec<f64> = (0..s.users * k).map(|_| normal(&mut rng)).collect();
        let q: Vec<f64> = (0..s.items * k).map(|_| normal(&mut rng)).collect();
        let mut rank: Vec<usize> = (0..s.items).collect();
        shuffle(&mut rank, &mut rng);
        let log_pop: Vec<f64> = rank
            .iter()
            .map(|&r| -s.zipf * ((r + 1) as f64).ln())
            .collect();

        let scale = s.affinity / (k as f64).sqrt();
        let mut train = Vec::new();
        let mut test = Vec::new();
        let mut seen = Vec::new();
        let mut cumulative = vec![0.0f64; s.items];
        for u in 0..s.users {
            let pu = &p[u * k..(u + 1) * k];
            let logits: Vec<f64> = (0..s.items)
                .map(|i| scale * dot64(pu, &q[i * k..(i + 1) * k]) + log_pop[i])
                .collect();
            let top = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let mut acc = 0.0;
            for (c, l) in cumulative.iter_mut().zip(&logits) {
                acc += (l - top).exp();
                *c = acc;
            }
            let mut drawn: Vec<u32> = Vec::with_capacity(s.positives);
            while drawn.len() < s.positives {
                let x = rng.unit_f64() * acc;
                let i = cumulative.partition_point(|&c| c <= x).min(s.items - 1) as u32;
                if !drawn.contains(&i) {
                    drawn.push(i);
                }
            }
            // Draws are exchangeable, so the last one is a fair held-out positive.
            let held_out = drawn.pop().expect("positives > 0");
            test.push((u as u32, held_out));
            train.extend(drawn.iter().map(|&i| (u as u32, i)));
            seen.push(drawn);
        }
        let mut counts = vec![0u32; s.items];
        for &(_, i) in &train {
            counts[i as usize] += 1;
        }
        let n = train.len() as f64;
        let log_q = counts
            .iter()
            .map(|&c| {
                if c > 0 {
                    (c as f64 / n).ln() as f32
                } else {
                    0.0
                }
            })
            .collect();
        Data {
            train,
            test,
            seen,
            log_q,
            counts,
        }
    }

    /// The training pairs in epoch `epoch`'s order: the same for every method.
    pub fn epoch_order(&self, seed: u64, epoch: u64) -> Vec<(u32, u32)> {
        let mut order = self.train.clone();
        shuffle(
            &mut order,
            &mut SplitMix64::new(seed ^ epoch.wrapping_mul(0x9e37)),
        );
        order
    }
}

pub fn normal(rng: &mut SplitMix64) -> f64 {
    // Box–Muller; 1 − u keeps the logarithm finite.
    let u1 = 1.0 - rng.unit_f64();
    let u2 = rng.unit_f64();
    (-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()
}

pub fn shuffle<T>(v: &mut [T], rng: &mut SplitMix64) {
    for i in (1..v.len()).rev() {
        let j = (rng.next_u64() % (i as u64 + 1)) as usize;
        v.swap(i, j);
    }
}

pub fn dot64(a: &[f64], b: &[f64]) -> f64 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}

/// Recall@k of ranking every user's unseen items by training popularity: the bar to clear.
pub fn recall_of_popularity(data: &Data, k: usize) -> Vec<bool> {
    let scores: Vec<f32> = data.counts.iter().map(|&c| c as f32).collect();
    data.test
        .iter()
        .map(|&(u, item)| in_top_k(&scores, item, &data.seen[u as usize], k))
        .collect()
}

/// Whether `item` ranks among the top k of `scores` once the `excluded` items are removed
/// (ties count against the item).
pub fn in_top_k(scores: &[f32], item: u32, excluded: &[u32], k: usize) -> bool {
    let target = scores[item as usize];
    let above = scores.iter().filter(|&&x| x >= target).count() - 1;
    let excluded_above = excluded
        .iter()
        .filter(|&&j| j != item && scores[j as usize] >= target)
        .count();
    above - excluded_above < k
}

/// Hits of recall@k on the held-out pairs: every item ranked by the cosine similarity of the two
/// towers' embeddings (`users` [U, d] and `items` [I, d], row-major), the user's training items
/// excluded.
pub fn recall_hits(data: &Data, users: &[f32], items: &[f32], d: usize, k: usize) -> Vec<bool> {
    let (users, items) = (normalised(users.to_vec(), d), normalised(items.to_vec(), d));
    let mut scores = vec![0.0f32; items.len() / d];
    data.test
        .iter()
        .map(|&(u, item)| {
            let uv = &users[u as usize * d..(u as usize + 1) * d];
            for (j, s) in scores.iter_mut().enumerate() {
                *s = dot32(uv, &items[j * d..(j + 1) * d]);
            }
            in_top_k(&scores, item, &data.seen[u as usize], k)
        })
        .collect()
}

pub fn normalised(mut rows: Vec<f32>, d: usize) -> Vec<f32> {
    for r in rows.chunks_exact_mut(d) {
        let n = dot32(r, r).sqrt().max(1e-12);
        r.iter_mut().for_each(|x| *x /= n);
    }
    rows
}

pub fn dot32(a: &[f32], b: &[f32]) -> f32 {
    a.iter().zip(b).map(|(x, y)| x * y).sum()
}
