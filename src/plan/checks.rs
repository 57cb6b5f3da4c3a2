//! Checks of host tensors' values before anything is uploaded (so that a refused step changes
//! nothing), derived from what each role means ([`RoleKind`]): every real input finite (unless
//! `nonfinite = "propagate"` and the term tolerates it), sample weights and amount labels ≥ 0, labels and
//! probabilities in [0, 1], labels that must be exactly 0 or 1, class ids in [0, C). Device
//! buffers are not read back: their values are checked on the GPU (`shaders/finite.wgsl`, and
//! the softmax kernels for class ids), and a step that fails there commits nothing.

use crate::batch::{Batch, Input, Shapes};
use crate::config::NonFinite;
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Chunk, Params, PassSpec, Shader, Source, Work, WG};
use crate::losses::family::{Form, Resolved, RoleKind};
use crate::wgsl::Specialization;

/// A check of f32 values: in [0, 1], or exactly 0 or 1 when `binary`.
#[derive(Clone, Debug)]
struct UnitCheck {
    tensor: String,
    term: String,
    what: String,
    binary: bool,
}

/// Class ids of a softmax term: in [0, classes) or `ignore`.
#[derive(Clone, Debug)]
struct IdCheck {
    tensor: String,
    term: String,
    classes: u64,
    ignore: Option<i64>,
}

/// A check of one f32 tensor's values: finite, and for sample weights and amount labels
/// (`RoleKind::NonNegativeLabels`) ≥ 0.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct ValueCheck {
    pub tensor: String,
    pub term: String,
    /// NaN and ±Inf are errors.
    pub finite: bool,
    /// Negative values are errors (sample weights, amount labels).
    pub non_negative: bool,
}

crate::gpu_struct! {
    /// One dispatch of a value check of a device buffer (`ValueScan` in finite.wgsl).
    pub(crate) struct ValueScan in "finite.wgsl" test value_scan_layout {
        /// Filled in per dispatch by the plan.
        chunk: crate::kernel::Chunk,
        /// The check's word in `aux`.
        slot: u32,
        /// 1: NaN and ±Inf are bad.
        finite: u32,
        /// 1: negative values are bad.
        non_negative: u32,
    }
}

/// Elements each invocation of a value scan checks: few, long workgroups, because on the
/// software adapters starting a workgroup costs more than scanning 256 words (measured in
/// bench/results/2026-12-02-reliability.md).
pub(crate) const SCAN_ITEMS: u32 = 16;

impl ValueCheck {
    /// The pass that checks this tensor on the GPU when it comes as a device buffer, flagging
    /// its first bad element in word `slot` of `aux` (internal buffer `aux`).
    pub(crate) fn scan_pass(&self, slot: u32, aux: usize) -> PassSpec {
        PassSpec {
            label: format!("check values of {}", self.tensor),
            shader: Shader::File(
                "finite.wgsl",
                Specialization::new().u32("ITEMS", SCAN_ITEMS),
            ),
            entry: "scan_values",
            binds: vec![
                bind("scan", Bind::Chunk),
                bind(
                    "values",
                    Bind::Rows {
                        source: Source::Input(self.tensor.clone()),
                        row_bytes: 4,
                    },
                ),
                internal("flags", aux),
            ],
            work: Work::Rows {
                rows_per_wg: WG * SCAN_ITEMS,
            },
            reads: vec![self.tensor.clone()],
            params: Params::of(&ValueScan {
                chunk: Chunk::default(),
                slot,
                finite: self.finite as u32,
                non_negative: self.non_negative as u32,
            }),
        }
    }
}

/// Every host-side check of a plan.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostChecks {
    units: Vec<UnitCheck>,
    /// Finite values and non-negative weights, one check per tensor.
    values: Vec<ValueCheck>,
    ids: Vec<IdCheck>,
}

impl HostChecks {
    /// The checks of `terms` under `nonfinite`.
    pub(crate) fn of<'a>(
        terms: impl Iterator<Item = &'a Resolved>,
        shapes: &Shapes,
        nonfinite: NonFinite,
    ) -> Self {
        let mut checks = Self::default();
        for t in terms {
            checks.add(t, shapes, nonfinite);
        }
        checks
    }

    /// The value checks, which device buffers get on the GPU.
    pub(crate) fn value_checks(&self) -> &[ValueCheck] {
        &self.values
    }

    /// Adds a value check of `tensor`, or strengthens the one there is.
    fn add_value(&mut self, check: ValueCheck) {
        if !(check.finite || check.non_negative) {
            return;
        }
        match self.values.iter_mut().find(|c| c.tensor == check.tensor) {
            Some(c) => {
                c.finite |= check.finite;
                c.non_negative |= check.non_negative;
            }
            None => self.values.push(check),
        }
    }

    fn add(&mut self, t: &Resolved, shapes: &Shapes, nonfinite: NonFinite) {
        let term = t.term.name.clone();
        let strict = nonfinite == NonFinite::Error || t.loss_type.refuses_nonfinite();
        let is_real = |n: &str| shapes.get(n).is_some_and(|s| !s.dtype.is_integer());
        for (role, tensor) in t.bound_roles() {
            // Integer labels are finite, but may be negative.
            if is_real(&tensor) || role.kind == RoleKind::NonNegativeLabels {
                self.add_value(ValueCheck {
                    tensor,
                    term: term.clone(),
                    finite: strict,
                    non_negative: role.kind == RoleKind::NonNegativeLabels,
                });
            }
        }
        for (tensor, _) in &t.weights {
            self.add_value(ValueCheck {
                tensor: tensor.clone(),
                term: term.clone(),
                finite: strict,
                non_negative: true,
            });
        }
        for (role, tensor) in t.bound_roles() {
            let unit = |what: String, binary| UnitCheck {
                tensor: tensor.clone(),
                term: term.clone(),
                what,
                binary,
            };
            match role.kind {
                RoleKind::BinaryLabels => self.units.push(unit("binary labels".into(), false)),
                RoleKind::Probabilities => self.units.push(unit("probabilities".into(), false)),
                RoleKind::ZeroOneLabels => {
                    let what = format!("{} labels", t.loss_type.name);
                    self.units.push(unit(what, true));
                }
                _ => {}
            }
        }
        if let Form::Softmax(form) = &t.form {
            if form.ids {
                self.ids.push(IdCheck {
                    tensor: t.input("labels").to_string(),
                    term,
                    classes: form.classes,
                    ignore: form.params.ignore_index,
                });
            }
        }
    }

    /// Checks the host tensors of `batch`.
    pub(crate) fn check(&self, batch: &Batch, shapes: &Shapes) -> Result<()> {
        for c in &self.values {
            if let Some(v) = batch.get(&c.tensor).and_then(host_f32) {
                let spec = shapes.get(&c.tensor).expect("plan tensors have shapes");
                c.check(&v, &spec.shape)?;
            }
        }
        for c in &self.units {
            if let Some(v) = batch.get(&c.tensor).and_then(host_f32) {
                c.check(&v)?;
            }
        }
        for c in &self.ids {
            c.check(batch)?;
        }
        Ok(())
    }
}

/// A host input's values as the GPU computes with them (f32), borrowed when they are f32;
/// none for a device buffer.
fn host_f32<'a>(input: &'a Input) -> Option<std::borrow::Cow<'a, [f32]>> {
    match input {
        Input::F32(v) => Some(std::borrow::Cow::Borrowed(v)),
        other => other
            .host_f64()
            .map(|v| v.into_iter().map(|x| x as f32).collect()),
    }
}

impl ValueCheck {
    fn check(&self, v: &[f32], shape: &[usize]) -> Result<()> {
        if self.finite {
            if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                return Err(Error::tensor(
                    &self.tensor,
                    Some(&self.term),
                    format!(
                        "values must be finite; element {i} of shape {shape:?} holds {}",
                        v[i]
                    ),
                ));
            }
        }
        if self.non_negative {
            if let Some(i) = v.iter().position(|x| *x < 0.0 || x.is_infinite()) {
                return Err(Error::tensor(
                    &self.tensor,
                    Some(&self.term),
                    format!(
                        "values must be finite and >= 0 (sample weights, amount labels); row {i} \
                         holds {}",
                        v[i]
                    ),
                ));
            }
        }
        Ok(())
    }
}

impl UnitCheck {
    fn check(&self, v: &[f32]) -> Result<()> {
        // NaN is the value checks' to refuse (or to let through with `nonfinite = "propagate"`).
        let bad = |x: &f32| {
            if x.is_nan() {
                false
            } else if self.binary {
                *x != 0.0 && *x != 1.0
            } else {
                !(0.0..=1.0).contains(x)
            }
        };
        let Some(row) = v.iter().position(bad) else {
            return Ok(());
        };
        let rule = if self.binary {
            "must be 0 or 1"
        } else {
            "must lie in [0, 1]"
        };
        Err(Error::tensor(
            &self.tensor,
            Some(&self.term),
            format!("{} {rule}; row {row} holds {}", self.what, v[row]),
        ))
    }
}

impl IdCheck {
    fn check(&self, batch: &Batch) -> Result<()> {
        // Device buffers are checked on the GPU (invalid rows are reported).
        let Some(ids) = batch.get(&self.tensor).and_then(Input::host_i64) else {
            return Ok(());
        };
        for (row, y) in ids.into_iter().enumerate() {
            if Some(y) != self.ignore && !(0..self.classes as i64).contains(&y) {
                return Err(Error::tensor(
                    &self.tensor,
                    Some(&self.term),
                    format!(
                        "class id {y} at row {row} is outside [0, {}) and is not ignore_index",
                        self.classes
                    ),
                ));
            }
        }
        Ok(())
    }
}
