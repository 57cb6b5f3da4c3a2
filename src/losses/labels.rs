//! Label dtypes. Every labels role accepts F32, F64, I32, U32, I64 and U64 (EasyRec's callers pass
//! int64 clicks, PyTorch's int64 class ids, NumPy's float64 targets), while each kernel reads one
//! dtype: real labels as f32, class ids as i32 or u32. Rather than a variant of every kernel per
//! dtype, the plan builds against a *view* of the shapes in which such a tensor has the dtype its
//! kernels read, and one cast pass per tensor, first in the step, writes that view into an
//! internal buffer that every other pass binds in the tensor's place. Host tensors and device
//! buffers take the same path, so both are checked by the same tests.
//!
//! The reference reads integer labels as reals ([`real_view`]), exactly as the cast does below
//! 2^24; beyond it the cast rounds, as PyTorch's `labels.float()` does.

use crate::batch::{DType, Shapes, TensorSpec};
use crate::config::{LossConfig, LossTerm};
use crate::error::{Error, Result};
use crate::kernel::{bind, Bind, Chunk, Params, PassSpec, Shader, Source, Work, WG};
use crate::losses::family::RoleKind;
use crate::wgsl::Specialization;

/// The dtype the kernels read a tensor of `dtype` bound to a role of `kind` as, when it differs
/// (`column_logits`: the term's logits have one column, so its class labels are binary labels).
///
/// Real labels become F32; class ids of 64 bits become I32 (an id outside i32 becomes i32::MIN,
/// which no class and no sensible ignore_index is); F64 class probabilities and F64 labels
/// compared for equality become F32. Ids (sessions, items) and 64-bit integer labels compared
/// for equality are read as they are.
pub(crate) fn view(kind: RoleKind, dtype: DType, column_logits: bool) -> Option<DType> {
    use RoleKind::*;
    let real = matches!(
        kind,
        BinaryLabels | ZeroOneLabels | RealLabels | NonNegativeLabels
    ) || (kind == ClassLabels && column_logits);
    match (kind, dtype) {
        (_, DType::F32) => None,
        _ if real => Some(DType::F32),
        (ClassLabels, DType::I64 | DType::U64) => Some(DType::I32),
        (ClassLabels | AnyLabels, DType::F64) => Some(DType::F32),
        _ => None,
    }
}

/// Whether a role of `kind` reads its tensor's own integers (so it cannot share a real view).
fn reads_integers(kind: RoleKind, column_logits: bool) -> bool {
    match kind {
        RoleKind::SessionIds | RoleKind::ItemIds => true,
        RoleKind::ClassLabels => !column_logits,
        _ => false,
    }
}

/// One tensor that the kernels read in another dtype: `len` elements of `from`, cast to `to`.
#[derive(Clone, Debug, PartialEq)]
pub(crate) struct Cast {
    pub tensor: String,
    pub from: DType,
    pub to: DType,
    pub len: u64,
}

/// A binding's wish: the view it reads (None: the tensor as it is), and who asked.
struct Wish {
    view: Option<DType>,
    integers: bool,
    term: String,
    role: &'static str,
}

/// The shapes the plan's kernels read (every cast tensor with its view's dtype) and the casts.
/// A tensor bound by one term as real labels and by another as ids is an error naming both.
pub(crate) fn views(config: &LossConfig, shapes: &Shapes) -> Result<(Shapes, Vec<Cast>)> {
    let mut wishes: Vec<(String, Wish)> = Vec::new();
    for term in &config.losses {
        let Some(entry) = term.kind.entry() else {
            continue;
        };
        let column_logits = column_logits(term, shapes);
        for role in entry.roles {
            let Some(tensor) = term.input(role.name) else {
                continue;
            };
            let Some(spec) = shapes.get(tensor) else {
                continue; // the term's resolve names the missing tensor
            };
            let wish = Wish {
                view: view(role.kind, spec.dtype, column_logits),
                integers: reads_integers(role.kind, column_logits),
                term: term.name.clone(),
                role: role.name,
            };
            wishes.push((tensor.to_string(), wish));
        }
    }
    let mut viewed = shapes.clone();
    let mut casts = Vec::new();
    for (tensor, spec) in shapes.iter() {
        let mine: Vec<&Wish> = wishes
            .iter()
            .filter(|(t, _)| t == tensor)
            .map(|(_, w)| w)
            .collect();
        let Some(to) = agreed_view(tensor, spec, &mine)? else {
            continue;
        };
        viewed.insert(tensor.clone(), &spec.shape, to);
        casts.push(Cast {
            tensor: tensor.clone(),
            from: spec.dtype,
            to,
            len: spec.len() as u64,
        });
    }
    Ok((viewed, casts))
}

/// Whether the term's `logits` tensor is a column `[B]` or `[B, 1]`.
fn column_logits(term: &LossTerm, shapes: &Shapes) -> bool {
    term.input("logits")
        .and_then(|t| shapes.get(t))
        .is_some_and(|s| super::shapes::rows_of(s).is_some())
}

/// The one view every binding of a tensor can read, if any.
fn agreed_view(tensor: &str, spec: &TensorSpec, wishes: &[&Wish]) -> Result<Option<DType>> {
    let Some(first) = wishes.iter().find(|w| w.view.is_some()) else {
        return Ok(None);
    };
    let to = first.view.expect("found");
    for w in wishes {
        let clash = match w.view {
            Some(v) => v != to,
            None => w.integers,
        };
        if clash {
            return Err(Error::tensor(
                tensor,
                Some(&w.term),
                format!(
                    "{} {:?} is read as {} by role '{}' of term '{}' and as its own {} by role \
                     '{}' here; bind two tensors",
                    spec.dtype.name(),
                    spec.shape,
                    to.name(),
                    first.role,
                    first.term,
                    spec.dtype.name(),
                    w.role
                ),
            ));
        }
    }
    Ok(Some(to))
}

crate::gpu_struct! {
    /// One dispatch of a label cast (`CastPass` in cast.wgsl).
    pub(crate) struct CastPass in "cast.wgsl" test cast_pass_layout {
        /// Filled in per dispatch by the plan.
        chunk: Chunk,
    }
}

/// Elements each invocation casts (few, long workgroups, as the value scans).
const CAST_ITEMS: u32 = 16;

/// How cast.wgsl reads a source of `dtype`.
fn source_kind(dtype: DType) -> u32 {
    match dtype {
        DType::F32 => 0,
        DType::I32 => 1,
        DType::U32 => 2,
        DType::I64 => 3,
        DType::U64 => 4,
        DType::F64 => 5,
    }
}

/// The pass writing `cast`'s view into internal buffer `out`.
pub(crate) fn pass(cast: &Cast, out: usize) -> PassSpec {
    let spec = Specialization::new()
        .u32("ITEMS", CAST_ITEMS)
        .u32("SOURCE", source_kind(cast.from))
        .bool("TO_I32", cast.to == DType::I32);
    PassSpec {
        label: format!(
            "cast {} {} to {}",
            cast.tensor,
            cast.from.name(),
            cast.to.name()
        ),
        shader: Shader::File("cast.wgsl", spec),
        entry: "cast_labels",
        binds: vec![
            bind("params", Bind::Chunk),
            bind(
                "source",
                Bind::Rows {
                    source: Source::Input(cast.tensor.clone()),
                    row_bytes: cast.from.size(),
                },
            ),
            bind(
                "view",
                Bind::Rows {
                    source: Source::Internal(out),
                    row_bytes: 4,
                },
            ),
        ],
        work: Work::Rows {
            rows_per_wg: WG * CAST_ITEMS,
        },
        reads: vec![cast.tensor.clone()],
        params: Params::of(&CastPass {
            chunk: Chunk::default(),
        }),
    }
}

/// The host batch as the reference reads `term`: integer tensors bound to roles the kernels
/// read as reals become reals (none when nothing needs it).
pub(crate) fn real_view(
    term: &LossTerm,
    batch: &crate::tensor::HostBatch,
) -> Option<crate::tensor::HostBatch> {
    use crate::tensor::{HostData, HostTensor};
    let entry = term.kind.entry()?;
    let logits = term.input("logits").and_then(|t| batch.get(t));
    let column_logits = logits.is_some_and(|t| matches!(t.shape.as_slice(), [_] | [_, 1]));
    let mut out: Option<crate::tensor::HostBatch> = None;
    for role in entry.roles {
        let Some(name) = term.input(role.name) else {
            continue;
        };
        let Some(HostTensor {
            shape,
            data: HostData::Int(v),
        }) = batch.get(name)
        else {
            continue;
        };
        if view(role.kind, DType::I64, column_logits) == Some(DType::F32) {
            let reals = v.iter().map(|&x| x as f64).collect();
            out.get_or_insert_with(|| batch.clone())
                .insert(name.to_string(), HostTensor::real(shape.clone(), reals));
        }
    }
    out
}
