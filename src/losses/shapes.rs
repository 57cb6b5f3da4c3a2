//! Checks of a term's tensors against the shapes a plan is built for, shared by the families:
//! every failure is an [`Error::Tensor`] naming the tensor, the term, the role and the shape.

use crate::batch::{DType, Shapes, TensorSpec};
use crate::config::{LossTerm, SampleWeights};
use crate::error::{Error, Result};

/// B of a per-row column: `[B]` or `[B, 1]`.
pub(crate) fn rows_of(spec: &TensorSpec) -> Option<u64> {
    match spec.shape.as_slice() {
        [b] => Some(*b as u64),
        [b, 1] => Some(*b as u64),
        _ => None,
    }
}

/// The shape of `tensor`, bound to `role` of `term`.
pub(crate) fn spec<'a>(
    shapes: &'a Shapes,
    term: &LossTerm,
    tensor: &str,
    role: &str,
) -> Result<&'a TensorSpec> {
    shapes.get(tensor).ok_or_else(|| {
        Error::tensor(
            tensor,
            Some(&term.name),
            format!("role '{role}' names a tensor that is not in the batch"),
        )
    })
}

/// Checks that `tensor` (bound to `role`) is a column `[B]` or `[B, 1]` of one of `dtype_ok`,
/// with `rows` rows when given and at least one row; returns B.
pub(crate) fn expect_vector(
    shapes: &Shapes,
    term: &LossTerm,
    tensor: &str,
    role: &str,
    rows: Option<u64>,
    dtype_ok: &[DType],
) -> Result<u64> {
    let s = spec(shapes, term, tensor, role)?;
    let b = rows_of(s).ok_or_else(|| {
        Error::tensor(
            tensor,
            Some(&term.name),
            format!(
                "role '{role}' expects shape [B] or [B, 1], got {:?}",
                s.shape
            ),
        )
    })?;
    if !dtype_ok.contains(&s.dtype) {
        let names: Vec<&str> = dtype_ok.iter().map(|d| d.name()).collect();
        return Err(Error::tensor(
            tensor,
            Some(&term.name),
            format!(
                "role '{role}' expects {}, got {}",
                names.join(" or "),
                s.dtype.name()
            ),
        ));
    }
    if let Some(rows) = rows {
        if b != rows {
            return Err(Error::tensor(
                tensor,
                Some(&term.name),
                format!(
                    "role '{role}' has {b} rows, expected {rows} (shape {:?})",
                    s.shape
                ),
            ));
        }
    }
    if b == 0 {
        return Err(Error::tensor(
            tensor,
            Some(&term.name),
            "the batch has no rows",
        ));
    }
    Ok(b)
}

/// The term's sample weights as (tensor, coefficient), each an F32 column of `rows` rows.
pub(crate) fn sample_weights(
    term: &LossTerm,
    shapes: &Shapes,
    rows: u64,
) -> Result<Vec<(String, f64)>> {
    let Some(sw) = &term.sample_weights else {
        return Ok(Vec::new());
    };
    for (t, _) in sw.parts() {
        expect_vector(
            shapes,
            term,
            &t,
            "sample_weights",
            Some(rows),
            &[DType::F32],
        )?;
    }
    Ok(match sw {
        SampleWeights::Tensor(t) => vec![(t.clone(), 1.0)],
        SampleWeights::Combination(v) => v.clone(),
    })
}

/// An embedding term's tensors: every differentiable role F32 `[B, d]` with one B and one d
/// (B, d ≥ 1); the other roles per-row columns of B rows: ids and sessions of any integer type,
/// labels compared for equality of any dtype, real labels and log_q F32. Returns (B, d, the
/// first embedding tensor).
pub(crate) fn embeddings<'a>(
    term: &'a LossTerm,
    roles: &[crate::losses::family::Role],
    shapes: &Shapes,
) -> Result<(u64, u64, &'a str)> {
    use crate::losses::family::RoleKind;
    let mut dims: Option<(u64, u64, &str)> = None;
    for role in roles.iter().filter(|r| r.kind.differentiable()) {
        let name = term.input(role.name).expect("required");
        let s = spec(shapes, term, name, role.name)?;
        let (b, d) = match (s.shape.as_slice(), s.dtype) {
            ([b, d], DType::F32) if *b > 0 && *d > 0 => (*b as u64, *d as u64),
            (shape, dtype) => {
                return Err(Error::tensor(
                    name,
                    Some(&term.name),
                    format!(
                        "role '{}' expects embeddings [B, d] F32 with B, d >= 1, got {shape:?} {}",
                        role.name,
                        dtype.name()
                    ),
                ))
            }
        };
        match dims {
            Some((b0, d0, first)) if (b, d) != (b0, d0) => {
                return Err(Error::tensor(
                    name,
                    Some(&term.name),
                    format!(
                        "role '{}' has shape [{b}, {d}], but '{first}' has [{b0}, {d0}]: the \
                         embeddings of a term must agree",
                        role.name
                    ),
                ))
            }
            Some(_) => {}
            None => dims = Some((b, d, name)),
        }
    }
    let (b, d, first) = dims.expect("embedding terms have differentiable roles");
    let ints = DType::INTEGERS;
    let any = [DType::F32, DType::I32, DType::U32, DType::I64, DType::U64];
    for role in roles {
        let Some(name) = term.input(role.name) else {
            continue;
        };
        let dtypes: &[DType] = match role.kind {
            RoleKind::ItemIds | RoleKind::SessionIds => &ints,
            RoleKind::AnyLabels => &any,
            RoleKind::LogQ | RoleKind::RealLabels | RoleKind::NonNegativeLabels => &[DType::F32],
            _ => continue,
        };
        expect_vector(shapes, term, name, role.name, Some(b), dtypes)?;
    }
    Ok((b, d, first))
}
