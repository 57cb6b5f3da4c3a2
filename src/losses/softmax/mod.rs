//! Softmax cross-entropy over [B, C] logits (PyTorch `F.cross_entropy` semantics with label
//! smoothing, temperature, ignore_index, class weights, probability targets and z-loss; formulas
//! in docs/LOSSES.md). Every softmax term on the same logits shares the passes:
//!
//! - forward: R invocations per row (R a power of two up to the workgroup, chosen from C) sweep the
//!   row once, keeping an online log-sum-exp and the linear sums smoothing and probability targets
//!   need; rows wider than the workgroup are strided, so C is limited only by one binding. Writes
//!   the row's lse (and Σ c·t') for the backward pass and per-workgroup partial sums.
//! - backward: the same row mapping; p = exp(z − lse) per element, gradient scaled by the term's
//!   coefficient from the combine pass.
//!
//! Shader: `shaders/softmax.wgsl`; reference: `reference/softmax.rs`.

mod kd;
pub(crate) mod params;

use super::common::{coef_index, weight_expr, Inputs};
use super::family::{wrong_params, Family, Form, LossType, Resolved, Role, RoleKind};
use super::params::ParamSpec;
use super::rows::kernel::FIRST_BINDING;
use super::shapes::spec;
use crate::batch::{DType, Shapes};
use crate::config::{LossTerm, Reduction};
use crate::error::{Error, Result};
use crate::kernel::{bind, internal, Bind, Generated, Params, PassSpec, Shader, Source, Work, WG};
use crate::reference::terms::{TermState, TermValue};
use crate::tensor::HostBatch;
use crate::wgsl::{f32_literal, Specialization};
pub(crate) use params::{Distill, SoftmaxForm, SoftmaxParams};
use std::fmt::Write;

fn lit(x: f64) -> String {
    f32_literal(x as f32)
}

/// `softmax_cross_entropy` over [B, C] logits.
static SOFTMAX_TYPE: LossType = LossType {
    name: "softmax_cross_entropy",
    roles: &[
        Role::required("logits", RoleKind::Logits),
        Role::required("labels", RoleKind::ClassLabels),
    ],
    params: ParamSpec::of::<SoftmaxParams>(),
    regression: false,
    family: &SoftmaxFamily,
};

/// The loss types of this family (`classification` with C ≥ 2 resolves here too).
pub(crate) static LOSS_TYPES: &[&LossType] = &[&SOFTMAX_TYPE];

struct SoftmaxFamily;

impl Family for SoftmaxFamily {
    fn resolve(
        &'static self,
        _: &'static LossType,
        term: &LossTerm,
        shapes: &Shapes,
    ) -> Result<(Form, u64)> {
        let p: &SoftmaxParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        resolve(term, shapes, p)
    }

    fn reference(
        &self,
        _: &'static LossType,
        term: &LossTerm,
        batch: &HostBatch,
        _: TermState,
    ) -> Result<TermValue> {
        let p: &SoftmaxParams = term.kind.params().ok_or_else(|| wrong_params(term))?;
        crate::reference::softmax::evaluate(term, batch, p)
    }

    fn default_reduction(&self, term: &LossTerm) -> Reduction {
        let weighted = term
            .kind
            .params::<SoftmaxParams>()
            .is_some_and(|p| p.class_weights.is_some());
        if weighted {
            Reduction::WeightedMean
        } else {
            Reduction::NonzeroMean
        }
    }
}

/// Checks a softmax term: logits [B, C] F32 with C ≥ 2 and B ≥ 1, class weights of length C,
/// labels class ids [B] (I32/U32) or probabilities [B, C] (F32).
pub(crate) fn resolve(term: &LossTerm, shapes: &Shapes, p: &SoftmaxParams) -> Result<(Form, u64)> {
    let name = term.input("logits").expect("checked");
    let logits = spec(shapes, term, name, "logits")?;
    let (b, c) = match logits.shape.as_slice() {
        [b, c] if *c >= 2 => (*b as u64, *c as u64),
        other => {
            return Err(Error::tensor(
                name,
                Some(&term.name),
                format!("softmax cross-entropy expects logits [B, C] with C >= 2, got {other:?}"),
            ))
        }
    };
    if logits.dtype != DType::F32 {
        return Err(Error::tensor(name, Some(&term.name), "logits must be F32"));
    }
    if b == 0 {
        return Err(Error::tensor(
            name,
            Some(&term.name),
            "the batch has no rows",
        ));
    }
    if let Some(w) = &p.class_weights {
        if w.len() as u64 != c {
            return Err(Error::term(
                &term.name,
                format!(
                    "class_weights has {} entries, the logits have C = {c} classes",
                    w.len()
                ),
            ));
        }
    }
    let labels_name = term.input("labels").expect("checked");
    let labels = spec(shapes, term, labels_name, "labels")?;
    let ids = match (labels.shape.as_slice(), labels.dtype) {
        (s, DType::I32 | DType::U32) if s == [b as usize] || s == [b as usize, 1] => true,
        (s, DType::F32) if s == [b as usize, c as usize] => false,
        (s, d) => {
            return Err(Error::tensor(
                labels_name,
                Some(&term.name),
                format!(
                    "softmax labels must be class ids [{b}] (any integer type) or probabilities [{b}, {c}] (F32 or F64), got {s:?} {}",
                    d.name()
                ),
            ))
        }
    };
    let form = SoftmaxForm {
        params: p.clone(),
        classes: c,
        ids,
        distill: None,
    };
    Ok((Form::Softmax(form), b))
}

/// The forward and backward passes of a softmax group.
pub(crate) struct SoftmaxPasses {
    pub forward: PassSpec,
    pub backward: PassSpec,
}

/// Per-term buffers the plan allocates for the group.
pub(crate) struct TermBuffers {
    /// Internal buffer holding the class weights (C floats), when the term has them.
    pub class_weights: Option<usize>,
    /// Internal buffer of vec2(lse, Σ c·t') per row.
    pub stats: usize,
}

/// Invocations per row: enough to keep each one busy over a few elements, at most a workgroup.
pub(crate) fn row_threads(classes: u64) -> u32 {
    (classes.next_power_of_two() / 8).clamp(1, WG as u64) as u32
}

struct TermView<'a> {
    t: &'a Resolved,
    p: &'a SoftmaxParams,
    ids: bool,
    /// A distillation term (`kd.rs`) instead of cross-entropy.
    distill: Option<Distill>,
}

fn view(t: &Resolved) -> TermView<'_> {
    match &t.form {
        Form::Softmax(f) => TermView {
            t,
            p: &f.params,
            ids: f.ids,
            distill: f.distill,
        },
        _ => unreachable!("softmax group holds softmax terms only"),
    }
}

fn row_inputs(terms: &[Resolved]) -> Inputs {
    let mut inputs = Inputs::default();
    for t in terms {
        inputs.index(t.input("labels"));
        for (w, _) in &t.weights {
            inputs.index(w);
        }
    }
    inputs
}

/// Storage buffers the backward pass binds (the larger pass).
pub(crate) fn storage_bindings(terms: &[Resolved]) -> u32 {
    let cw = terms
        .iter()
        .filter(|t| view(t).p.class_weights.is_some())
        .count() as u32;
    // chunk + scalars + logits + row inputs + class weights + stats + grad
    2 + 1 + row_inputs(terms).names.len() as u32 + cw + terms.len() as u32 + 1
}

/// What a softmax group reads: its logits, their class count, its terms and their buffers.
pub(crate) struct GroupInput<'a> {
    pub logits: &'a str,
    pub classes: u64,
    pub terms: &'a [Resolved],
    pub buffers: &'a [TermBuffers],
}

/// What the generated code of a softmax group reads: its terms, their row inputs and class
/// weights.
struct Group<'a> {
    classes: u64,
    views: Vec<TermView<'a>>,
    inputs: Inputs,
    has_cw: Vec<bool>,
}

impl Group<'_> {
    /// Term k's class weight at `idx` (1 without class weights).
    fn cw(&self, k: usize, idx: &str) -> String {
        if self.has_cw[k] {
            format!("cw{k}[{idx}]")
        } else {
            "1.0".into()
        }
    }

    /// Σ_c c_c of term k.
    fn sum_c(&self, k: usize) -> String {
        match &self.views[k].p.class_weights {
            Some(w) => lit(w.iter().sum::<f64>()),
            None => lit(self.classes as f64),
        }
    }

    fn row_value(&self, name: &str) -> String {
        format!("f32(in{}[row])", self.inputs.position(name))
    }

    fn probs_at(&self, k: usize, idx: &str) -> String {
        let labels = self.views[k].t.input("labels");
        format!("in{}[{idx}]", self.inputs.position(labels))
    }

    /// A row's class-id label, shared by both passes: y{k}, whether it is out of range and not
    /// ignored (bad{k}), the effective weight weff{k} (0 when ignored or bad; needs w{k}), the id
    /// clamped for indexing (yc{k}) and its class weight (cy{k}).
    fn id_row(&self, k: usize, indent: &str) -> String {
        let ignored = match self.views[k].p.ignore_index {
            Some(i) => format!("y{k} == {i}i"),
            None => "false".into(),
        };
        format!(
            "{indent}let y{k} = i32(in{}[row]);\n\
             {indent}let ignored{k} = {ignored};\n\
             {indent}let valid{k} = y{k} >= 0i && y{k} < i32(C);\n\
             {indent}let bad{k} = !ignored{k} && !valid{k};\n\
             {indent}let weff{k} = select(0.0, w{k}, valid{k} && !ignored{k});\n\
             {indent}let yc{k} = u32(clamp(y{k}, 0i, i32(C) - 1i));\n\
             {indent}let cy{k} = {};\n",
            self.inputs.position(self.views[k].t.input("labels")),
            self.cw(k, &format!("yc{k}")),
        )
    }

    /// Probability target `t` of term k mixed with the uniform distribution by ε.
    fn smoothed_target(&self, k: usize, t: String) -> String {
        let eps = self.views[k].p.label_smoothing;
        if eps == 0.0 {
            t
        } else {
            format!(
                "({t} * {} + {})",
                lit(1.0 - eps),
                lit(eps / self.classes as f64)
            )
        }
    }

    /// The bindings of the row inputs (class ids or probabilities), class weights and row
    /// statistics, from `FIRST_BINDING`.
    fn bindings(&self, buffers: &[TermBuffers], dtype: &dyn Fn(&str) -> DType) -> Generated {
        let is_probs = |name: &str| {
            self.views
                .iter()
                .any(|v| !v.ids && v.t.input("labels") == name)
        };
        let row_bytes = |name: &str| if is_probs(name) { self.classes * 4 } else { 4 };
        let rows = |source: Source, row_bytes: u64| Bind::Rows { source, row_bytes };
        let mut generated = Generated::from(FIRST_BINDING);
        for (i, n) in self.inputs.names.iter().enumerate() {
            let ty = match dtype(n) {
                DType::F32 => "f32",
                DType::I32 => "i32",
                DType::U32 => "u32",
                DType::I64 | DType::U64 | DType::F64 => {
                    unreachable!("64-bit labels are read through a 32-bit view (losses::labels)")
                }
            };
            let decl = format!("var<storage, read> in{i}: array<{ty}>; // {n}");
            let source = rows(Source::Input(n.clone()), row_bytes(n));
            generated.push(decl, bind(format!("in{i}"), source));
        }
        for (k, buf) in buffers.iter().enumerate() {
            if let Some(cwb) = buf.class_weights {
                let decl = format!("var<storage, read> cw{k}: array<f32>;");
                generated.push(decl, internal(format!("cw{k}"), cwb));
            }
        }
        for (k, buf) in buffers.iter().enumerate() {
            let (ty, bytes) = match self.views[k].distill {
                Some(_) => ("vec4", 16),
                None => ("vec2", 8),
            };
            let decl = format!("var<storage, read_write> stats{k}: array<{ty}<f32>>;");
            let source = rows(Source::Internal(buf.stats), bytes);
            generated.push(decl, bind(format!("stats{k}"), source));
        }
        generated
    }

    /// The forward pass's accumulators and their hooks: `forward_begin`, `forward_visit` (one
    /// element) and `forward_reduce` (across a row's invocations).
    fn forward_sweep(&self) -> String {
        let mut f = String::new();
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                f.push_str(&kd::declarations(k));
                continue;
            }
            let _ = writeln!(
                f,
                "var<private> part{k}: vec4<f32>;\nvar<private> acc_lse{k}: vec2<f32>;\nvar<private> acc_lin{k}: vec4<f32>;"
            );
        }
        f.push_str("\nfn forward_begin() {\n");
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                f.push_str(&kd::begin(k));
                continue;
            }
            let _ = writeln!(
                f,
                "    acc_lse{k} = vec2<f32>(NEG_BIG, 0.0);\n    acc_lin{k} = vec4<f32>(0.0);"
            );
        }
        f.push_str("}\n\nfn forward_visit(c: u32, base: u32, xv: f32) {\n");
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                f.push_str(&kd::visit(self, k));
                continue;
            }
            let _ = writeln!(
                f,
                "            {{\n                let z = xv * {};\n                acc_lse{k} = lse_push(acc_lse{k}, z);",
                lit(1.0 / v.p.temperature)
            );
            if v.ids {
                if v.p.label_smoothing != 0.0 {
                    let _ = writeln!(
                        f,
                        "                acc_lin{k}.x = acc_lin{k}.x + {} * z;",
                        self.cw(k, "c")
                    );
                }
            } else {
                let _ = writeln!(
                    f,
                    "                let ct = {} * {};\n                acc_lin{k}.y = acc_lin{k}.y + ct * z;\n                acc_lin{k}.z = acc_lin{k}.z + ct;",
                    self.cw(k, "c"),
                    self.smoothed_target(k, self.probs_at(k, "base + c"))
                );
            }
            f.push_str("            }\n");
        }
        f.push_str("}\n\nfn forward_reduce(lid: u32) {\n");
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                f.push_str(&kd::reduce(k));
                continue;
            }
            let _ = writeln!(f, "    acc_lse{k} = segment_lse(lid, R, acc_lse{k});");
            if !v.ids || v.p.label_smoothing != 0.0 {
                let _ = writeln!(f, "    acc_lin{k} = segment_sum(lid, R, acc_lin{k});");
            }
        }
        f.push_str("}\n");
        f
    }

    /// The second sweep of the forward pass (distillation terms only, `kd.rs`):
    /// `forward_visit2` (one element) and `forward_reduce2` (across a row's invocations).
    fn second_sweep(&self) -> String {
        let mut f = String::from("\nfn forward_visit2(c: u32, base: u32, xv: f32) {\n");
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                f.push_str(&kd::visit2(self, k));
            }
        }
        f.push_str("}\n\nfn forward_reduce2(lid: u32) {\n");
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                f.push_str(&kd::reduce2(k));
            }
        }
        f.push_str("}\n");
        f
    }

    /// `forward_row`: each term's row loss, partials and row statistics.
    fn forward_row(&self) -> String {
        let classes = self.classes;
        let mut f = String::from("\nfn forward_row(row: u32, base: u32) {\n");
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                let weight = weight_expr(&v.t.weights, |n| self.row_value(n));
                f.push_str(&kd::row(k, &v.t.term.name, &weight));
                continue;
            }
            let eps = v.p.label_smoothing;
            let zl = v.p.z_loss;
            let _ = writeln!(
                f,
                "        {{ // {}\n            let lse = acc_lse{k}.x + log(acc_lse{k}.y);\n            let w{k} = {};",
                v.t.term.name,
                weight_expr(&v.t.weights, |n| self.row_value(n))
            );
            if v.ids {
                f.push_str(&self.id_row(k, "            "));
                let _ = writeln!(
                    f,
                    "            let zy = logits[base + yc{k}] * {};\n            let l = {} * cy{k} * (lse - zy) + {} * (lse * {} - acc_lin{k}.x) + {} * lse * lse;\n            part{k} = vec4<f32>(weff{k} * l, cy{k} * weff{k}, select(0.0, 1.0, weff{k} != 0.0), select(0.0, 1.0, bad{k}));\n            stats{k}[row] = vec2<f32>(lse, 0.0);",
                    lit(1.0 / v.p.temperature),
                    lit(1.0 - eps),
                    lit(eps / classes as f64),
                    self.sum_c(k),
                    lit(zl),
                );
            } else {
                let _ = writeln!(
                    f,
                    "            let l = lse * acc_lin{k}.z - acc_lin{k}.y + {} * lse * lse;\n            part{k} = vec4<f32>(w{k} * l, w{k}, select(0.0, 1.0, w{k} != 0.0), 0.0);\n            stats{k}[row] = vec2<f32>(lse, acc_lin{k}.z);",
                    lit(zl)
                );
            }
            f.push_str("        }\n");
        }
        f.push_str("}\n\nfn write_partials(lid: u32, wg: u32) {\n");
        for k in 0..self.views.len() {
            let _ = writeln!(
                f,
                "    let sum{k} = workgroup_sum(lid, part{k});\n    \
                 if (lid == 0u && wg < chunk.wgs) {{ partials[partial_index(chunk, {k}u, wg)] = sum{k}; }}"
            );
        }
        f.push_str("}\n");
        f
    }

    /// The backward pass's `backward_setup`: each term's label, weight, lse and coefficient of
    /// the row, once.
    fn backward_setup(&self) -> String {
        let mut b = String::new();
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                let _ = writeln!(
                    b,
                    "var<private> b_st{k}: vec4<f32>;\nvar<private> b_coef{k}: f32;"
                );
                continue;
            }
            let _ = writeln!(
                b,
                "var<private> b_st{k}: vec2<f32>;\nvar<private> b_lse{k}: f32;\nvar<private> b_coef{k}: f32;"
            );
            if v.ids {
                let _ = writeln!(b, "var<private> b_yc{k}: u32;\nvar<private> b_cy{k}: f32;");
            }
        }
        b.push_str("\nfn backward_setup(row: u32) {\n");
        for (k, v) in self.views.iter().enumerate() {
            let inv_t = lit(1.0 / v.p.temperature);
            if v.distill.is_some() {
                // The row's statistics and coefficient (1/T: dz/dx of the student's logit).
                let _ = writeln!(
                    b,
                    "    // {}\n    b_st{k} = stats{k}[row];\n    b_coef{k} = scalars[{}] * ({}) * {inv_t};",
                    v.t.term.name,
                    coef_index(v.t.slot),
                    weight_expr(&v.t.weights, |n| self.row_value(n))
                );
                continue;
            }
            let _ = writeln!(
                b,
                "    // {}\n    let w{k} = {};\n    let st{k} = stats{k}[row];\n    let lse{k} = st{k}.x;",
                v.t.term.name,
                weight_expr(&v.t.weights, |n| self.row_value(n))
            );
            if v.ids {
                b.push_str(&self.id_row(k, "    "));
                let _ = writeln!(b, "    b_yc{k} = yc{k};\n    b_cy{k} = cy{k};");
            } else {
                let _ = writeln!(b, "    let weff{k} = w{k};");
            }
            let _ = writeln!(
                b,
                "    let coef{k} = scalars[{}] * weff{k} * {inv_t};\n    b_st{k} = st{k};\n    b_lse{k} = lse{k};\n    b_coef{k} = coef{k};",
                coef_index(v.t.slot)
            );
        }
        b.push_str("}\n");
        b
    }

    /// `backward_element`: Σ_k coef_k · dl_k/dx_c for one element.
    fn backward_element(&self) -> String {
        let classes = self.classes;
        let mut b = String::from(
            "\nfn backward_element(c: u32, e: u32, xv: f32) -> f32 {\n    var g = 0.0;\n",
        );
        for (k, v) in self.views.iter().enumerate() {
            if v.distill.is_some() {
                b.push_str(&kd::element(self, k));
                continue;
            }
            let eps = v.p.label_smoothing;
            let zl = v.p.z_loss;
            let inv_t = lit(1.0 / v.p.temperature);
            let _ = writeln!(
                b,
                "    {{\n        let st{k} = b_st{k};\n        let lse{k} = b_lse{k};\n        let coef{k} = b_coef{k};"
            );
            if v.ids {
                let _ = writeln!(
                    b,
                    "        let yc{k} = b_yc{k};\n        let cy{k} = b_cy{k};"
                );
            }
            let _ = writeln!(b, "        let p = exp(xv * {inv_t} - lse{k});");
            if v.ids {
                let _ = writeln!(
                    b,
                    "        let gk = {} * cy{k} * (p - select(0.0, 1.0, c == yc{k})) + {} * (p * {} - {}) + {} * lse{k} * p;",
                    lit(1.0 - eps),
                    lit(eps / classes as f64),
                    self.sum_c(k),
                    self.cw(k, "c"),
                    lit(2.0 * zl),
                );
            } else {
                let _ = writeln!(
                    b,
                    "        let gk = p * st{k}.y - {} * {} + {} * lse{k} * p;",
                    self.cw(k, "c"),
                    self.smoothed_target(k, self.probs_at(k, "e")),
                    lit(2.0 * zl)
                );
            }
            let _ = writeln!(b, "        g = g + coef{k} * gk;\n    }}");
        }
        b.push_str("    return g;\n}\n");
        b
    }
}

/// Builds the passes. `dtype(name)` is a row input's dtype; `grad_accumulates` as for rows.
pub(crate) fn passes(
    group: GroupInput,
    partials: usize,
    scalars: usize,
    dtype: &dyn Fn(&str) -> DType,
    grad_accumulates: bool,
) -> SoftmaxPasses {
    let GroupInput {
        logits,
        classes,
        terms,
        buffers,
    } = group;
    let g = Group {
        classes,
        views: terms.iter().map(view).collect(),
        inputs: row_inputs(terms),
        has_cw: buffers.iter().map(|b| b.class_weights.is_some()).collect(),
    };
    let r = row_threads(classes);
    let generated = g.bindings(buffers, dtype);
    let splice = format!(
        "{}{}{}{}\n{}{}",
        generated.wgsl,
        g.forward_sweep(),
        g.second_sweep(),
        g.forward_row(),
        g.backward_setup(),
        g.backward_element()
    );
    let logits_rows = |source: Source| Bind::Rows {
        source,
        row_bytes: classes * 4,
    };
    let mut common = vec![bind(
        "logits",
        logits_rows(Source::Input(logits.to_string())),
    )];
    common.extend(generated.binds);
    let mut fwd = vec![bind("chunk", Bind::Chunk), internal("partials", partials)];
    fwd.extend(common.iter().cloned());
    let mut bwd = vec![bind("chunk", Bind::Chunk), internal("scalars", scalars)];
    bwd.extend(common);
    bwd.push(bind("grad", logits_rows(Source::Grad(logits.to_string()))));
    let mut reads = vec![logits.to_string()];
    reads.extend(g.inputs.names.iter().cloned());
    let label = format!("softmax[{logits}]");
    let spec = Specialization::new()
        .u32("C", classes as u32)
        .u32("R", r)
        .bool("ACCUMULATE", grad_accumulates)
        .bool("SECOND_SWEEP", g.views.iter().any(|v| v.distill.is_some()))
        .splice("terms", splice);
    let pass = |name: &str, entry: &'static str, binds| PassSpec {
        label: format!("{label} {name}"),
        shader: Shader::File("softmax.wgsl", spec.clone()),
        entry,
        binds,
        work: Work::Rows {
            rows_per_wg: WG / r,
        },
        reads: reads.clone(),
        params: Params::none(),
    };
    SoftmaxPasses {
        forward: pass("forward", "forward", fwd),
        backward: pass("backward", "backward", bwd),
    }
}
