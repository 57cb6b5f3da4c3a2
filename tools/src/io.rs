//! safetensors files <-> host tensors: reading a batch (F32/F64 reals, I32/I64/U32/U64 ids) and
//! writing the f32 results of `lossfuse eval`.

use crate::error::{CliError, CliResult};
use lossfuse::{HostBatch, HostTensor};
use safetensors::tensor::{Dtype, TensorView, View};
use safetensors::{SafeTensorError, SafeTensors};
use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::Path;

/// Reads every tensor of a safetensors file. Reals (F32, F64) become [`lossfuse::HostData::Real`],
/// ids (I32, I64, U32, U64) [`lossfuse::HostData::Int`]; any other dtype is an error naming the
/// tensor. A malformed file (truncated, a corrupt header, a tensor named twice) is an error
/// naming the file and what is wrong with it.
pub fn read_batch(path: &Path) -> CliResult<HostBatch> {
    let bytes = std::fs::read(path).map_err(|e| CliError::file(path, e))?;
    read_batch_bytes(&bytes).map_err(|e| match e {
        BatchError::File(message) => CliError::file(path, message),
        BatchError::Duplicate(name) => CliError::Usage(format!(
            "tensor '{name}' appears twice in {}",
            path.display()
        )),
        BatchError::Tensor(e) => e,
    })
}

/// Why bytes are not a batch: the file as a whole, or one tensor of it.
#[derive(Debug)]
pub enum BatchError {
    /// The bytes are not a well-formed safetensors file: what is wrong with them.
    File(String),
    /// A tensor name appears twice in the header.
    Duplicate(String),
    /// A tensor is well-formed but not one lossfuse reads (its dtype, an id that does not fit).
    Tensor(CliError),
}

impl std::fmt::Display for BatchError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            BatchError::File(m) => write!(f, "{m}"),
            BatchError::Duplicate(name) => write!(f, "tensor '{name}' appears twice"),
            BatchError::Tensor(e) => write!(f, "{e}"),
        }
    }
}

/// [`read_batch`] of the bytes of a file (its name is left to the caller's error).
pub fn read_batch_bytes(bytes: &[u8]) -> Result<HostBatch, BatchError> {
    let header = check_header(bytes)?;
    let file = SafeTensors::deserialize(bytes)
        .map_err(|e| BatchError::File(explain(&e, bytes.len(), &header)))?;
    let mut batch = HostBatch::new();
    for (name, view) in file.tensors() {
        let tensor = host_tensor(&name, &view).map_err(BatchError::Tensor)?;
        batch.insert(name, tensor);
    }
    Ok(batch)
}

/// What [`check_header`] read of a safetensors file before the library reads it.
#[derive(Debug, Default)]
struct Header {
    /// Bytes of the JSON header.
    header_len: usize,
}

/// The top-level keys of a JSON object, in order, values skipped: serde's maps keep only the last
/// of two equal keys, so a tensor named twice must be seen here.
struct Keys(Vec<String>);

impl<'de> serde::Deserialize<'de> for Keys {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl<'de> serde::de::Visitor<'de> for V {
            type Value = Keys;
            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                write!(f, "a JSON object of tensors")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Keys, A::Error> {
                let mut keys = Vec::new();
                while let Some(k) = map.next_key::<String>()? {
                    map.next_value::<serde::de::IgnoredAny>()?;
                    keys.push(k);
                }
                Ok(Keys(keys))
            }
        }
        d.deserialize_map(V)
    }
}

/// The 8-byte little-endian header length, then a JSON object of tensors (and `__metadata__`).
/// Checks what the safetensors crate reports badly or not at all: a short or truncated file,
/// a header that is not UTF-8 JSON, and a tensor name that appears twice (safetensors 0.6 keeps
/// the last of the two entries and then reports the data of the first as the bad offsets of
/// whichever tensor follows it, or accepts the file when the two entries are the same).
fn check_header(bytes: &[u8]) -> Result<Header, BatchError> {
    let n = bytes.len();
    let Some(len_bytes) = bytes.get(..8) else {
        return Err(BatchError::File(format!(
            "truncated: {n} bytes, shorter than the 8-byte header length a safetensors file \
             starts with"
        )));
    };
    let header_len = u64::from_le_bytes(len_bytes.try_into().expect("8 bytes"));
    let available = (n - 8) as u64;
    if header_len > available {
        return Err(BatchError::File(format!(
            "truncated or not a safetensors file: the header length says {header_len} bytes, \
             but only {available} follow it"
        )));
    }
    let header_len = header_len as usize;
    let text = std::str::from_utf8(&bytes[8..8 + header_len]).map_err(|e| {
        BatchError::File(format!(
            "not a safetensors file: the {header_len}-byte header is not UTF-8 ({e})"
        ))
    })?;
    let keys: Keys = serde_json::from_str(text).map_err(|e| {
        BatchError::File(format!(
            "not a safetensors file: the {header_len}-byte header is not a JSON object: {e}"
        ))
    })?;
    let mut seen = std::collections::HashSet::new();
    for k in &keys.0 {
        if !seen.insert(k.as_str()) {
            return Err(if k == "__metadata__" {
                BatchError::File("the header has two __metadata__ entries".to_string())
            } else {
                BatchError::Duplicate(k.clone())
            });
        }
    }
    Ok(Header { header_len })
}

/// The safetensors crate's error, said in terms of the file.
fn explain(e: &SafeTensorError, file_len: usize, header: &Header) -> String {
    let data_len = file_len.saturating_sub(8 + header.header_len);
    match e {
        SafeTensorError::MetadataIncompleteBuffer => format!(
            "truncated or corrupt: the header's tensors do not end where the file does ({data_len} \
             bytes of data after the header)"
        ),
        SafeTensorError::InvalidOffset(name) => format!(
            "corrupt header: the data offsets of tensor '{name}' do not start where the previous \
             tensor's data ends"
        ),
        SafeTensorError::TensorInvalidInfo => {
            "corrupt header: a tensor's data offsets do not match its shape and dtype".to_string()
        }
        SafeTensorError::ValidationOverflow => {
            "corrupt header: a tensor's shape is too large (its size overflows)".to_string()
        }
        SafeTensorError::HeaderTooLarge => {
            format!(
                "the header is {} bytes, more than safetensors reads",
                header.header_len
            )
        }
        SafeTensorError::InvalidHeaderDeserialization(e) => {
            format!("corrupt header: {e}")
        }
        other => format!("not a valid safetensors file: {other}"),
    }
}

fn tensor_error(name: &str, message: String) -> CliError {
    CliError::Lib(lossfuse::Error::Tensor {
        tensor: name.to_string(),
        term: None,
        message,
    })
}

fn words<const N: usize>(data: &[u8]) -> impl Iterator<Item = [u8; N]> + '_ {
    data.chunks_exact(N).map(|c| {
        let mut w = [0u8; N];
        w.copy_from_slice(c);
        w
    })
}

/// Converts one safetensors tensor (little-endian) to a host tensor.
pub fn host_tensor(name: &str, view: &TensorView<'_>) -> CliResult<HostTensor> {
    let shape = view.shape().to_vec();
    let data = view.data();
    let tensor = match view.dtype() {
        Dtype::F32 => HostTensor::real(
            shape,
            words::<4>(data)
                .map(|w| f32::from_le_bytes(w) as f64)
                .collect(),
        ),
        Dtype::F64 => HostTensor::real(shape, words::<8>(data).map(f64::from_le_bytes).collect()),
        Dtype::I32 => HostTensor::int(
            shape,
            words::<4>(data)
                .map(|w| i32::from_le_bytes(w) as i64)
                .collect(),
        ),
        Dtype::U32 => HostTensor::int(
            shape,
            words::<4>(data)
                .map(|w| u32::from_le_bytes(w) as i64)
                .collect(),
        ),
        Dtype::I64 => HostTensor::int(shape, words::<8>(data).map(i64::from_le_bytes).collect()),
        Dtype::U64 => {
            let mut ids = Vec::with_capacity(data.len() / 8);
            for (i, w) in words::<8>(data).enumerate() {
                let v = u64::from_le_bytes(w);
                ids.push(i64::try_from(v).map_err(|_| {
                    tensor_error(
                        name,
                        format!("U64 id {v} at element {i} does not fit in i64"),
                    )
                })?);
            }
            HostTensor::int(shape, ids)
        }
        other => {
            return Err(tensor_error(
                name,
                format!(
                    "unsupported dtype {other:?}; use F32 or F64 for real values and \
                     I32, I64, U32 or U64 for ids"
                ),
            ))
        }
    };
    Ok(tensor)
}

/// An f32 tensor to be written: shape and row-major values.
#[derive(Clone, Debug, PartialEq)]
pub struct OutTensor {
    /// Dimensions; `[]` for a scalar.
    pub shape: Vec<usize>,
    /// Row-major values.
    pub values: Vec<f32>,
}

impl OutTensor {
    /// A scalar (shape `[]`).
    pub fn scalar(value: f32) -> Self {
        Self {
            shape: Vec::new(),
            values: vec![value],
        }
    }
}

impl View for &OutTensor {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.values.iter().flat_map(|v| v.to_le_bytes()).collect())
    }
    fn data_len(&self) -> usize {
        self.values.len() * 4
    }
}

/// Writes named f32 tensors to a safetensors file (atomically: [`crate::files::write_atomic`]).
pub fn write_tensors(path: &Path, tensors: &BTreeMap<String, OutTensor>) -> CliResult<()> {
    let bytes = safetensors::serialize(tensors.iter().map(|(k, v)| (k.as_str(), v)), None)
        .map_err(|e| CliError::file(path, format!("cannot serialise: {e}")))?;
    crate::files::write_bytes(path, &bytes)
}

/// A host tensor as safetensors sees it: reals as F32 (what the GPU reads), ids as I64.
struct HostView<'a>(&'a HostTensor);

impl View for HostView<'_> {
    fn dtype(&self) -> Dtype {
        match self.0.data {
            lossfuse::HostData::Real(_) => Dtype::F32,
            lossfuse::HostData::Int(_) => Dtype::I64,
        }
    }
    fn shape(&self) -> &[usize] {
        &self.0.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Owned(match &self.0.data {
            lossfuse::HostData::Real(v) => {
                v.iter().flat_map(|&x| (x as f32).to_le_bytes()).collect()
            }
            lossfuse::HostData::Int(v) => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
        })
    }
    fn data_len(&self) -> usize {
        match &self.0.data {
            lossfuse::HostData::Real(v) => v.len() * 4,
            lossfuse::HostData::Int(v) => v.len() * 8,
        }
    }
}

/// A batch of host tensors as the bytes of a safetensors file (reals F32, ids I64).
pub fn batch_bytes(batch: &HostBatch) -> Result<Vec<u8>, SafeTensorError> {
    let views = batch.iter().map(|(k, v)| (k.as_str(), HostView(v)));
    safetensors::serialize(views, None)
}

/// Writes a batch of host tensors to a safetensors file (reals F32, ids I64; atomically).
pub fn write_batch(path: &Path, batch: &HostBatch) -> CliResult<()> {
    let bytes =
        batch_bytes(batch).map_err(|e| CliError::file(path, format!("cannot serialise: {e}")))?;
    crate::files::write_bytes(path, &bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A safetensors file from a JSON header and data bytes.
    fn raw(header: &str, data_len: usize) -> Vec<u8> {
        let mut v = (header.len() as u64).to_le_bytes().to_vec();
        v.extend_from_slice(header.as_bytes());
        v.extend(std::iter::repeat_n(0u8, data_len));
        v
    }

    fn entry(name: &str, start: usize, end: usize) -> String {
        format!(
            r#""{name}":{{"dtype":"F32","shape":[{}],"data_offsets":[{start},{end}]}}"#,
            (end - start) / 4
        )
    }

    fn file_error(bytes: &[u8]) -> String {
        match read_batch_bytes(bytes) {
            Err(BatchError::File(m)) => m,
            other => panic!("expected a file error, got {other:?}"),
        }
    }

    #[test]
    fn a_name_twice_is_reported_under_its_own_name() {
        // safetensors 0.6 keeps the last entry of a name: here it then blames 'b' for the bytes
        // of the first 'a' ...
        let blamed = raw(
            &format!(
                "{{{},{},{}}}",
                entry("a", 0, 8),
                entry("b", 8, 16),
                entry("a", 16, 24)
            ),
            24,
        );
        let e = SafeTensors::deserialize(&blamed).unwrap_err().to_string();
        assert!(
            e.contains("`b`"),
            "safetensors changed how it reads a name twice: {e}"
        );
        // ... and here it accepts the file, one 'x' silently dropped.
        let silent = raw(
            &format!(
                "{{{},{},{}}}",
                entry("x", 0, 8),
                entry("y", 8, 16),
                entry("x", 0, 8)
            ),
            16,
        );
        assert_eq!(SafeTensors::deserialize(&silent).unwrap().len(), 2);
        for (bytes, name) in [(&blamed, "a"), (&silent, "x")] {
            match read_batch_bytes(bytes) {
                Err(BatchError::Duplicate(n)) => assert_eq!(n, name),
                other => panic!("{other:?}"),
            }
        }
        let meta = raw(r#"{"__metadata__":{},"__metadata__":{}}"#, 0);
        assert!(file_error(&meta).contains("two __metadata__"));
    }

    #[test]
    fn every_truncation_of_a_file_is_an_error_saying_so() {
        let mut batch = HostBatch::new();
        batch.insert("x".into(), HostTensor::real(vec![3, 2], vec![1.0; 6]));
        batch.insert("ids".into(), HostTensor::int(vec![3], vec![1, 2, 3]));
        let bytes = batch_bytes(&batch).unwrap();
        assert_eq!(read_batch_bytes(&bytes).unwrap(), batch);
        for len in 0..bytes.len() {
            let e = file_error(&bytes[..len]);
            assert!(
                e.contains("truncated"),
                "{len} of {} bytes: {e}",
                bytes.len()
            );
        }
        // Trailing bytes are corrupt too.
        let mut longer = bytes.clone();
        longer.push(0);
        assert!(file_error(&longer).contains("do not end where the file does"));
    }

    #[test]
    fn a_corrupt_header_says_what_is_wrong() {
        let cases = [
            (raw("[1, 2]", 0), "not a JSON object"),
            (raw("{\"x\": ", 0), "not a JSON object"),
            (
                {
                    let mut v = raw("{}  ", 0);
                    v[9] = 0xff;
                    v
                },
                "not UTF-8",
            ),
            (raw(&format!("{{{}}}", entry("x", 4, 12)), 12), "'x'"),
            (
                raw(
                    r#"{"x":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#,
                    8,
                ),
                "do not match its shape",
            ),
            (
                raw(
                    r#"{"x":{"dtype":"F32","shape":[4294967296,4294967296],"data_offsets":[0,8]}}"#,
                    8,
                ),
                "too large",
            ),
            (
                raw(
                    r#"{"x":{"dtype":"Q9","shape":[2],"data_offsets":[0,8]}}"#,
                    8,
                ),
                "corrupt header",
            ),
        ];
        for (bytes, want) in cases {
            let e = file_error(&bytes);
            assert!(e.contains(want), "want {want:?} in {e:?}");
        }
        // A dtype lossfuse does not read is the tensor's error, not the file's.
        let bf16 = raw(
            r#"{"x":{"dtype":"BF16","shape":[2],"data_offsets":[0,4]}}"#,
            4,
        );
        match read_batch_bytes(&bf16) {
            Err(BatchError::Tensor(e)) => assert!(e.to_string().contains("tensor 'x'")),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn read_batch_names_the_file() {
        let dir = std::env::temp_dir().join(format!("lossfuse-io-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("twice.safetensors");
        std::fs::write(
            &path,
            raw(
                &format!("{{{},{}}}", entry("x", 0, 8), entry("x", 8, 16)),
                16,
            ),
        )
        .unwrap();
        let e = read_batch(&path).unwrap_err().to_string();
        assert_eq!(e, format!("tensor 'x' appears twice in {}", path.display()));
        std::fs::write(&path, b"short").unwrap();
        let e = read_batch(&path).unwrap_err().to_string();
        assert!(
            e.contains("twice.safetensors") && e.contains("truncated"),
            "{e}"
        );
    }
}
