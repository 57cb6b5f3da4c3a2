//! The state the reference carries between steps (docs/LOSSES.md, "Combining terms"): the
//! step counter, learned weights and their optimiser moments, EMA θ, GHM-C accumulators, learned
//! JRC weights and the memory banks of `cross_batch_softmax`.

/// The state the reference carries from one step to the next (docs/LOSSES.md, "Combining terms").
#[derive(Clone, Debug, PartialEq)]
pub struct ReferenceState {
    /// Successful steps so far; the `random` strategy draws its weights at this counter.
    pub step: u64,
    /// Learned log-variance s_k per term (config order); 0 and unused for terms not learned.
    pub log_vars: Vec<f64>,
    /// Adam first moments per term (0 for terms not learned).
    pub adam_m: Vec<f64>,
    /// Adam second moments per term (0 for terms not learned).
    pub adam_v: Vec<f64>,
    /// Adam steps taken (one count shared by all learned terms).
    pub adam_t: u64,
    /// θ of `ema_reweight` (starts at theta0; 0 and unused for other strategies).
    pub ema_theta: f64,
    /// GHM-C momentum accumulators per term (one per bin for `ghm_c` terms, empty otherwise).
    pub ghm_acc: Vec<Vec<f64>>,
    /// The learned weights of `jrc_loss` terms with uncertainty weighting, and the learned
    /// (w, b) (in `u`, starting at (1, 0)) of listwise terms with `scale_logits`, one entry per
    /// term (all zero and unused for the other terms).
    pub jrc: Vec<JrcState>,
    /// The memory bank of each `cross_batch_softmax` term, one entry per term (`None` for the
    /// other terms).
    pub banks: Vec<Option<BankState>>,
}

/// The learned (u1, u2) of one `jrc_loss` term with uncertainty weighting (docs/LOSSES.md, "jrc_loss":
/// e^{−u1}·ce + 0.5·u1 + e^{−u2}·ge + 0.5·u2), with the term's own Adam moments and step count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct JrcState {
    /// (u1, u2), starting at 0.
    pub u: [f64; 2],
    /// Adam first moments of u1, u2.
    pub m: [f64; 2],
    /// Adam second moments of u1, u2.
    pub v: [f64; 2],
    /// Adam steps taken by this term.
    pub t: u64,
}

/// The memory bank of one `cross_batch_softmax` term (docs/LOSSES.md, "Memory bank"): M slots written
/// first-in first-out at `head`, of which the first `fill` hold a row.
///
/// Writing starts at slot 0 and wraps, so the filled slots are always `slots[..fill]`; while the
/// bank is not full, `head == fill`. After a successful step the batch's rows i = 0..B − 1 are
/// written in order at slots (head + i) mod M (when B > M only the last M rows remain), then
/// head ← (head + B) mod M and fill ← min(fill + B, M).
#[derive(Clone, Debug, PartialEq)]
pub struct BankState {
    /// The M slots; `None` until first written.
    pub slots: Vec<Option<BankRow>>,
    /// The slot the next batch row goes to.
    pub head: usize,
    /// How many slots hold a row (at most M).
    pub fill: usize,
}

/// One row of a memory bank: an item of an earlier step, detached.
#[derive(Clone, Debug, PartialEq)]
pub struct BankRow {
    /// What the similarity uses: v̂ (normalised) under cosine, v under dot.
    pub embedding: Vec<f64>,
    /// The item's log_q (0 when the term has no `log_q` role).
    pub log_q: f64,
    /// The item's id (`None` when the term has no `item_ids` role).
    pub id: Option<i64>,
}

impl BankState {
    /// An empty bank of `bank_size` slots: all `None`, head 0, fill 0.
    pub fn empty(bank_size: usize) -> Self {
        Self {
            slots: vec![None; bank_size],
            head: 0,
            fill: 0,
        }
    }

    /// The rows used as negatives: the filled slots, in slot order.
    pub fn rows(&self) -> impl Iterator<Item = &BankRow> {
        self.slots[..self.fill.min(self.slots.len())]
            .iter()
            .flatten()
    }

    /// Checks that this bank is one that steps of a term with `bank_size` slots can reach:
    /// M slots, the first `fill` filled and the others empty, head = fill while not full,
    /// head < M, one embedding length, finite values, and ids present exactly when the term binds
    /// `item_ids`. Says what is wrong otherwise.
    pub(crate) fn check(&self, bank_size: usize, has_ids: bool) -> std::result::Result<(), String> {
        let m = self.slots.len();
        if m != bank_size {
            return Err(format!(
                "the bank has {m} slots but bank_size is {bank_size}"
            ));
        }
        if self.fill > m || self.head >= m || (self.fill < m && self.head != self.fill) {
            return Err(format!(
                "bank head {} and fill {} are not reachable with {m} slots (fill ≤ M, head < M, \
                 head = fill until the bank is full)",
                self.head, self.fill
            ));
        }
        if let Some(k) = (0..m).find(|&k| self.slots[k].is_some() != (k < self.fill)) {
            return Err(format!(
                "bank slot {k} is {} but fill is {} (the first fill slots hold rows, the others \
                 none)",
                if self.slots[k].is_some() {
                    "filled"
                } else {
                    "empty"
                },
                self.fill
            ));
        }
        let dim = self.rows().next().map(|r| r.embedding.len());
        for (k, row) in self.rows().enumerate() {
            if Some(row.embedding.len()) != dim || row.embedding.is_empty() {
                return Err(format!(
                    "bank slot {k} holds an embedding of {} values, slot 0 one of {}",
                    row.embedding.len(),
                    dim.unwrap_or(0)
                ));
            }
            if !row.log_q.is_finite() || row.embedding.iter().any(|v| !v.is_finite()) {
                return Err(format!("bank slot {k} holds a non-finite value"));
            }
            if row.id.is_some() != has_ids {
                return Err(format!(
                    "bank slot {k} {} an item id but the term {} 'item_ids'",
                    if row.id.is_some() { "holds" } else { "lacks" },
                    if has_ids { "binds" } else { "does not bind" }
                ));
            }
        }
        Ok(())
    }
}
