//! Checks of host tensors' values before anything is uploaded (so that a refused step changes
//! nothing), derived from what each role means ([`RoleKind`]): labels and probabilities in
//! [0, 1], labels that must be exactly 0 or 1, embeddings that must be finite, class ids in
//! [0, C). Device buffers are not read back: class ids from them are checked on the GPU.

use crate::batch::{Batch, DType, Input, Shapes};
use crate::error::{Error, Result};
use crate::losses::family::{Form, Resolved, RoleKind};

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

/// Every host-side check of a plan.
#[derive(Clone, Debug, Default)]
pub(crate) struct HostChecks {
    units: Vec<UnitCheck>,
    /// (tensor, term): f32 inputs of embedding terms, which must be finite.
    finite: Vec<(String, String)>,
    ids: Vec<IdCheck>,
}

impl HostChecks {
    /// The checks of `terms`.
    pub(crate) fn of<'a>(terms: impl Iterator<Item = &'a Resolved>, shapes: &Shapes) -> Self {
        let mut checks = Self::default();
        for t in terms {
            checks.add(t, shapes);
        }
        checks
    }

    fn add(&mut self, t: &Resolved, shapes: &Shapes) {
        let term = t.term.name.clone();
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
            let f32_input = shapes.get(&tensor).is_some_and(|s| s.dtype == DType::F32);
            if matches!(t.form, Form::Embedding { .. })
                && f32_input
                && !self.finite.iter().any(|(f, _)| *f == tensor)
            {
                self.finite.push((tensor.clone(), term.clone()));
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
        for c in &self.units {
            if let Some(Input::F32(v)) = batch.get(&c.tensor) {
                c.check(v)?;
            }
        }
        for (tensor, term) in &self.finite {
            if let Some(Input::F32(v)) = batch.get(tensor) {
                if let Some(i) = v.iter().position(|x| !x.is_finite()) {
                    let spec = shapes.get(tensor).expect("plan tensors have shapes");
                    return Err(Error::tensor(
                        tensor,
                        Some(term),
                        format!(
                            "values must be finite; element {i} of shape {:?} holds {}",
                            spec.shape, v[i]
                        ),
                    ));
                }
            }
        }
        for c in &self.ids {
            c.check(batch)?;
        }
        Ok(())
    }
}

impl UnitCheck {
    fn check(&self, v: &[f32]) -> Result<()> {
        let bad = |x: &f32| {
            if self.binary {
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
        let ids: Box<dyn Iterator<Item = i64>> = match batch.get(&self.tensor) {
            Some(Input::I32(v)) => Box::new(v.iter().map(|&x| x as i64)),
            Some(Input::U32(v)) => Box::new(v.iter().map(|&x| x as i64)),
            _ => return Ok(()), // device buffers are checked on the GPU (invalid rows are reported)
        };
        for (row, y) in ids.enumerate() {
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
