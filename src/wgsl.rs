//! Shader sources: the `.wgsl` files under `shaders/`, how a kernel is composed from them, their
//! validation by naga, and the reflection that binds buffers to a kernel by the names of its
//! variables.
//!
//! Composition is a small preprocessor, three directives in comments, so that every file is
//! valid WGSL as it stands (and is validated so, without an adapter):
//! - `//#import file.wgsl` pulls in a shared file, once per kernel, before the file that imports
//!   it (WGSL declarations may come in any order);
//! - `const NAME: T = value; // @spec ...` declares a specialisation constant: a kernel may give
//!   it another value ([`Specialization::set`]); the file's value is the default;
//! - `//#if NAME` ... [`//#else` ...] `//#endif` keeps one branch, by a bool `@spec` constant, so
//!   that a kernel's module holds (and binds) only what that kernel uses;
//! - `//#standalone` ... `//#end` holds lines kept only when the file is composed on its own:
//!   a snippet's stand-in for the functions its importers define (its hooks), so that it can be
//!   validated alone too;
//! - `//#splice NAME` ... `//#end` marks where generated code goes ([`Specialization::splice`]);
//!   the lines between are the default, so that the file stands alone. Only what truly varies
//!   in shape is generated: the term list of a fused row group, and a term's sample weight (a
//!   linear combination of any number of tensors), each with the bindings it reads.
//!
//! naga_oil 0.23 composes modules for naga 30 too; it was not taken because the core crate stays
//! lean (it brings regex and more) and because it renames what it imports, while lossfuse binds
//! buffers by the names of the variables a kernel declares.

use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::OnceLock;

macro_rules! shader_files {
    ($($name:literal),* $(,)?) => {
        /// Every shader file, by name, as it is on disk.
        const FILES: &[(&str, &str)] = &[$(($name, include_str!(concat!("../shaders/", $name)))),*];
    };
}

shader_files!(
    "common.wgsl",
    "binary.wgsl",
    "softmax.wgsl",
    "combine.wgsl",
    "ghm.wgsl",
    "select.wgsl",
    "prepare.wgsl",
    "session.wgsl",
    "pairwise.wgsl",
    "jrc.wgsl",
    "listwise.wgsl",
    "embedding.wgsl",
    "retrieval.wgsl",
    "metric.wgsl",
    "mining.wgsl",
    "select_words.wgsl",
    "grouping.wgsl",
    "weights.wgsl",
    "sweep.wgsl",
    "rows.wgsl",
    "statistics.wgsl",
    "finite.wgsl",
    "cast.wgsl",
);

/// The text of a shader file as it is on disk (directives and all).
pub fn raw_file(name: &str) -> Option<&'static str> {
    FILES.iter().find(|(n, _)| *n == name).map(|(_, t)| *t)
}

/// Every shader file's name.
pub fn file_names() -> impl Iterator<Item = &'static str> {
    FILES.iter().map(|(n, _)| *n)
}

/// A value of a specialisation constant.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) enum SpecValue {
    U32(u32),
    F32(f32),
    Bool(bool),
}

impl SpecValue {
    fn wgsl_type(self) -> &'static str {
        match self {
            SpecValue::U32(_) => "u32",
            SpecValue::F32(_) => "f32",
            SpecValue::Bool(_) => "bool",
        }
    }

    fn literal(self) -> String {
        match self {
            SpecValue::U32(v) => format!("{v}u"),
            SpecValue::F32(v) => f32_literal(v),
            SpecValue::Bool(v) => v.to_string(),
        }
    }
}

/// An f32 WGSL literal that round-trips exactly: `f32(0.25)`, `f32(1e-7)`.
pub(crate) fn f32_literal(v: f32) -> String {
    let s = format!("{v:?}");
    let s = if s.contains('.') || s.contains('e') || s.contains("inf") || s.contains("NaN") {
        s
    } else {
        format!("{s}.0")
    };
    format!("f32({s})")
}

/// How a kernel specialises its file: constant values and generated code.
#[derive(Clone, Debug, Default, PartialEq)]
pub(crate) struct Specialization {
    consts: Vec<(String, SpecValue)>,
    splices: Vec<(String, String)>,
}

impl Specialization {
    /// No constants changed, nothing spliced.
    pub fn new() -> Self {
        Self::default()
    }

    /// Gives the `@spec` constant `name` this value.
    pub fn set(mut self, name: &str, value: SpecValue) -> Self {
        self.consts.push((name.to_string(), value));
        self
    }

    /// A u32 constant.
    pub fn u32(self, name: &str, v: u32) -> Self {
        self.set(name, SpecValue::U32(v))
    }

    /// An f32 constant, rounded from f64 once here.
    pub fn f32(self, name: &str, v: f64) -> Self {
        self.set(name, SpecValue::F32(v as f32))
    }

    /// A bool constant.
    pub fn bool(self, name: &str, v: bool) -> Self {
        self.set(name, SpecValue::Bool(v))
    }

    /// Generated code for the `//#splice name` line.
    pub fn splice(mut self, name: &str, code: impl Into<String>) -> Self {
        self.splices.push((name.to_string(), code.into()));
        self
    }
}

/// The files `text` imports, recursively, each once, dependencies first; then `text` itself.
fn collect_imports<'a>(
    label: &str,
    text: &'a str,
    seen: &mut Vec<&'static str>,
    out: &mut Vec<(&'a str, &'a str)>,
) -> Result<(), String> {
    for line in text.lines() {
        if let Some(name) = line.trim().strip_prefix("//#import ") {
            let name = name.trim();
            let Some((file, body)) = FILES.iter().find(|(n, _)| *n == name) else {
                return Err(format!("{label}: imports unknown shader file '{name}'"));
            };
            if !seen.contains(file) {
                seen.push(file);
                collect_imports(file, body, seen, out)?;
                out.push((file, body));
            }
        }
    }
    Ok(())
}

/// `NAME` and `TYPE` of a line `const NAME: TYPE = value; // @spec`.
fn spec_line(line: &str) -> Option<(&str, &str)> {
    let rest = line.trim().strip_prefix("const ")?;
    if !line.contains("// @spec") {
        return None;
    }
    let (name, rest) = rest.split_once(':')?;
    let (ty, _) = rest.split_once('=')?;
    Some((name.trim(), ty.trim()))
}

/// The value of every `@spec` constant of `parts`: the declared default, or `spec`'s.
fn spec_values(
    label: &str,
    parts: &[(&str, &str)],
    spec: &Specialization,
) -> Result<BTreeMap<String, SpecValue>, String> {
    let mut values = BTreeMap::new();
    for (_, body) in parts {
        for line in body.lines() {
            let Some((name, ty)) = spec_line(line) else {
                continue;
            };
            let given = spec.consts.iter().rev().find(|(n, _)| n == name);
            let value = match given {
                Some((_, v)) if v.wgsl_type() != ty => {
                    return Err(format!(
                        "{label}: constant {name} is {ty}, given a {}",
                        v.wgsl_type()
                    ))
                }
                Some((_, v)) => *v,
                None if ty == "bool" => SpecValue::Bool(line.contains("= true;")),
                // Only bools steer `//#if`; other defaults stay as written.
                None => continue,
            };
            values.insert(name.to_string(), value);
        }
    }
    if let Some((name, _)) = spec.consts.iter().find(|(n, _)| !values.contains_key(n)) {
        return Err(format!(
            "{label}: no `// @spec` constant {name} to specialise"
        ));
    }
    Ok(values)
}

/// Lines of one file with the directives applied: `//#if` blocks kept or dropped, splices and
/// constants substituted. `used` records the splices used.
fn emit_file(
    label: &str,
    body: &str,
    root: bool,
    spec: &Specialization,
    values: &BTreeMap<String, SpecValue>,
    used: &mut [bool],
    out: &mut String,
) -> Result<(), String> {
    // Per open `//#if`: (whether its branch is kept, whether the enclosing text is kept).
    let mut conditions: Vec<(bool, bool)> = Vec::new();
    let mut skipping_splice = false;
    for line in body.lines() {
        let trimmed = line.trim();
        let live = conditions.last().is_none_or(|&(kept, outer)| kept && outer);
        if let Some(name) = trimmed.strip_prefix("//#if ") {
            let kept = match values.get(name.trim()) {
                Some(SpecValue::Bool(b)) => *b,
                _ => {
                    return Err(format!(
                        "{label}: `//#if {name}` needs a bool `// @spec` constant"
                    ))
                }
            };
            conditions.push((kept, live));
            continue;
        }
        if trimmed == "//#else" || trimmed == "//#endif" {
            let Some((kept, outer)) = conditions.pop() else {
                return Err(format!("{label}: `{trimmed}` without `//#if`"));
            };
            if trimmed == "//#else" {
                conditions.push((!kept, outer));
            }
            continue;
        }
        if !live || trimmed.starts_with("//#import ") {
            continue;
        }
        if trimmed == "//#end" {
            skipping_splice = false;
            continue;
        }
        if skipping_splice {
            continue;
        }
        if trimmed == "//#standalone" {
            skipping_splice = !root;
            continue;
        }
        if let Some(name) = trimmed.strip_prefix("//#splice ") {
            if let Some(i) = spec.splices.iter().position(|(n, _)| n == name.trim()) {
                used[i] = true;
                skipping_splice = true;
                out.push_str(&spec.splices[i].1);
                if !spec.splices[i].1.ends_with('\n') {
                    out.push('\n');
                }
            }
            continue;
        }
        match spec_line(line).and_then(|(name, ty)| Some((name, ty, values.get(name)?))) {
            Some((name, ty, value)) => {
                let _ = writeln!(out, "const {name}: {ty} = {}; // @spec", value.literal());
            }
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    if !conditions.is_empty() {
        return Err(format!("{label}: `//#if` without `//#endif`"));
    }
    Ok(())
}

/// Composes `text` (a file's body, or generated text with `//#import` lines): the imported
/// files, then `text`, with the constants, `//#if` blocks and splices of `spec` applied. Errors
/// name `label` and a constant or splice the text does not declare.
pub(crate) fn compose_text(
    label: &str,
    text: &str,
    spec: &Specialization,
) -> Result<String, String> {
    let mut parts = Vec::new();
    collect_imports(label, text, &mut Vec::new(), &mut parts)?;
    parts.push((label, text));
    let values = spec_values(label, &parts, spec)?;
    let mut used = vec![false; spec.splices.len()];
    let mut out = String::new();
    let root = parts.len() - 1;
    for (i, (file, body)) in parts.iter().enumerate() {
        let _ = writeln!(out, "// ---- {file}");
        emit_file(label, body, i == root, spec, &values, &mut used, &mut out)?;
    }
    if let Some(i) = used.iter().position(|u| !u) {
        return Err(format!(
            "{label}: no `//#splice {}` line",
            spec.splices[i].0
        ));
    }
    Ok(out)
}

/// Composes shader file `file` with `spec`.
pub(crate) fn compose(file: &str, spec: &Specialization) -> Result<String, String> {
    let text = raw_file(file).ok_or_else(|| format!("no shader file '{file}'"))?;
    compose_text(file, text, spec)
}

/// A shader file with its imports, as every kernel built from it without specialisation sees it.
pub fn shader_file(name: &str) -> Option<&'static str> {
    static COMPOSED: OnceLock<BTreeMap<&'static str, String>> = OnceLock::new();
    let all = COMPOSED.get_or_init(|| {
        FILES
            .iter()
            .filter_map(|(n, _)| Some((*n, compose(n, &Specialization::new()).ok()?)))
            .collect()
    });
    all.get(name).map(String::as_str)
}

/// Parses and validates WGSL with naga; the error names `label` and the line at fault.
pub fn validate_wgsl(label: &str, source: &str) -> Result<(), String> {
    parse(label, source).map(|_| ())
}

/// The parsed and validated module.
pub(crate) fn parse(
    label: &str,
    source: &str,
) -> Result<(naga::Module, naga::valid::ModuleInfo), String> {
    let module = naga::front::wgsl::parse_str(source)
        .map_err(|e| e.emit_to_string_with_path(source, label))?;
    let info = naga::valid::Validator::new(
        naga::valid::ValidationFlags::all(),
        naga::valid::Capabilities::empty(),
    )
    .validate(&module)
    .map_err(|e| e.emit_to_string_with_path(source, label))?;
    Ok((module, info))
}

/// A buffer variable an entry point uses: its name and binding index (group 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct UsedBinding {
    pub name: String,
    pub binding: u32,
    /// Whether the kernel may write it.
    pub writable: bool,
}

/// The buffer variables entry point `entry` of `source` uses, by binding index.
pub(crate) fn used_bindings(
    label: &str,
    source: &str,
    entry: &str,
) -> Result<Vec<UsedBinding>, String> {
    let (module, info) = parse(label, source)?;
    let index = module
        .entry_points
        .iter()
        .position(|e| e.name == entry)
        .ok_or_else(|| format!("{label}: no entry point '{entry}'"))?;
    let function = info.get_entry_point(index);
    let mut out = Vec::new();
    for (handle, var) in module.global_variables.iter() {
        let Some(binding) = &var.binding else {
            continue;
        };
        if function[handle].is_empty() {
            continue;
        }
        let writable = match var.space {
            naga::AddressSpace::Storage { access } => access.contains(naga::StorageAccess::STORE),
            _ => false,
        };
        if binding.group != 0 {
            return Err(format!(
                "{label}: bindings live in group 0, not {}",
                binding.group
            ));
        }
        out.push(UsedBinding {
            name: var.name.clone().unwrap_or_default(),
            binding: binding.binding,
            writable,
        });
    }
    out.sort_by_key(|b| b.binding);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn literals_round_trip() {
        assert_eq!(f32_literal(1.0), "f32(1.0)");
        assert_eq!(f32_literal(0.25), "f32(0.25)");
        assert_eq!(f32_literal(-2.0), "f32(-2.0)");
        assert_eq!(f32_literal(1e-7), "f32(1e-7)");
    }

    #[test]
    fn every_file_composes_and_validates_as_it_stands() {
        for name in file_names() {
            let source = shader_file(name).unwrap_or_else(|| panic!("{name} does not compose"));
            validate_wgsl(name, source).unwrap_or_else(|e| panic!("{e}"));
        }
    }

    #[test]
    fn specialisation_replaces_declared_constants_only() {
        let text = "const A: u32 = 1u; // @spec the a\nconst B: f32 = 2.0;\n\
                    //#splice body\nfn default_f() {}\n//#end\nfn after() {}\n";
        let spec = Specialization::new()
            .u32("A", 7)
            .splice("body", "fn f() {}");
        let out = compose_text("t", text, &spec).unwrap();
        assert!(
            out.contains("const A: u32 = 7u;") && out.contains("fn f() {}"),
            "{out}"
        );
        assert!(
            !out.contains("default_f") && out.contains("fn after()"),
            "{out}"
        );
        let plain = compose_text("t", text, &Specialization::new()).unwrap();
        assert!(
            plain.contains("fn default_f() {}") && !plain.contains("//#end"),
            "{plain}"
        );
        let bad = Specialization::new().u32("B", 1);
        assert!(compose_text("t", text, &bad).unwrap_err().contains("B"));
        let wrong_type = Specialization::new().bool("A", true);
        assert!(compose_text("t", text, &wrong_type)
            .unwrap_err()
            .contains("u32"));
        let no_splice = Specialization::new().splice("nope", "x");
        assert!(compose_text("t", text, &no_splice)
            .unwrap_err()
            .contains("nope"));
    }

    #[test]
    fn if_blocks_follow_bool_constants() {
        let text = "const FAST: bool = false; // @spec\n//#if FAST\nfn fast() {}\n//#else\n\
                    fn slow() {}\n//#endif\nfn always() {}\n";
        let plain = compose_text("t", text, &Specialization::new()).unwrap();
        assert!(
            plain.contains("fn slow") && !plain.contains("fn fast") && plain.contains("always")
        );
        let fast = compose_text("t", text, &Specialization::new().bool("FAST", true)).unwrap();
        assert!(fast.contains("fn fast") && !fast.contains("fn slow") && fast.contains("always"));
        assert!(compose_text("t", "//#if NOPE\n//#endif\n", &Specialization::new()).is_err());
        assert!(compose_text(
            "t",
            text.replace("//#endif\n", "").as_str(),
            &Specialization::new()
        )
        .is_err());
    }

    #[test]
    fn standalone_blocks_stay_only_in_the_root_file() {
        // sweep.wgsl's stand-in hooks: kept alone, dropped where a kernel imports it.
        let alone = compose("sweep.wgsl", &Specialization::new()).unwrap();
        assert!(alone.contains("fn sweep_visit"), "{alone}");
        let text = "//#import sweep.wgsl\nfn sweep_stage(lid: u32, first: u32, n: u32) {}\n\
                    fn sweep_visit(item: u32, slot: u32) {}\n";
        let imported = compose_text("t", text, &Specialization::new()).unwrap();
        assert_eq!(
            imported
                .matches("fn sweep_visit(item: u32, slot: u32) {")
                .count(),
            1
        );
        validate_wgsl("t", &imported).unwrap();
    }

    #[test]
    fn imports_come_once_and_first() {
        let text = "//#import binary.wgsl\n//#import common.wgsl\nfn main_fn() {}\n";
        let out = compose_text("t", text, &Specialization::new()).unwrap();
        assert_eq!(out.matches("// ---- common.wgsl").count(), 1);
        let common = out.find("// ---- common.wgsl").unwrap();
        let binary = out.find("// ---- binary.wgsl").unwrap();
        assert!(common < binary && binary < out.find("fn main_fn").unwrap());
        assert!(compose_text("t", "//#import nope.wgsl\n", &Specialization::new()).is_err());
    }

    #[test]
    fn reflection_names_the_used_bindings() {
        let src = "@group(0) @binding(0) var<storage, read> a: array<f32>;\n\
                   @group(0) @binding(1) var<storage, read_write> b: array<f32>;\n\
                   @group(0) @binding(2) var<storage, read> unused: array<f32>;\n\
                   @compute @workgroup_size(1) fn main() { b[0] = a[0]; }\n";
        let used = used_bindings("t", src, "main").unwrap();
        assert_eq!(
            used,
            vec![
                UsedBinding {
                    name: "a".into(),
                    binding: 0,
                    writable: false
                },
                UsedBinding {
                    name: "b".into(),
                    binding: 1,
                    writable: true
                },
            ]
        );
    }
}
