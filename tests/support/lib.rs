//! Helpers for the parity tests: fixture paths, reference tensors, closeness checks.

use std::path::PathBuf;

use burn::tensor::backend::Backend;
use burn::tensor::{DType, Tensor, TensorData};
use sharpen_weights::Checkpoint;

/// The CPU backend the tests run on.
pub type TestBackend = burn::backend::Flex;

/// Root of the workspace.
pub fn workspace_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("tests/ has a parent")
        .to_path_buf()
}

/// `tests/fixtures/<rel>`.
pub fn fixture(rel: &str) -> PathBuf {
    workspace_root().join("tests").join("fixtures").join(rel)
}

/// `assets/<rel>`.
pub fn asset(rel: &str) -> PathBuf {
    workspace_root().join("assets").join(rel)
}

/// Reference tensors written by the Python generators (read through the project's own reader).
pub struct Reference {
    checkpoint: Checkpoint,
}

impl Reference {
    pub fn open(rel: &str) -> Self {
        let path = fixture(rel);
        let checkpoint = Checkpoint::open_file(&path).unwrap_or_else(|e| panic!("{e}"));
        Self { checkpoint }
    }

    pub fn data(&self, key: &str) -> TensorData {
        self.checkpoint
            .read(key, DType::F32)
            .unwrap_or_else(|e| panic!("reference tensor {key}: {e}"))
    }

    pub fn shape(&self, key: &str) -> Vec<usize> {
        self.checkpoint
            .entry(key)
            .unwrap_or_else(|| panic!("no reference tensor {key}"))
            .1
            .shape
            .clone()
    }

    /// Integer tensor (token ids) as i64 values.
    pub fn ids(&self, key: &str) -> (Vec<i64>, Vec<usize>) {
        let (path, entry) = self
            .checkpoint
            .entry(key)
            .unwrap_or_else(|| panic!("no reference tensor {key}"));
        assert_eq!(
            entry.dtype,
            safetensors_dtype_i64(),
            "{key} in {} is not I64",
            path.display()
        );
        let bytes = std::fs::read(path).expect("reference file");
        let values = bytes[entry.start..entry.end]
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (values, entry.shape.clone())
    }
}

impl Reference {
    /// An F64 tensor's values, flattened.
    pub fn f64s(&self, key: &str) -> Vec<f64> {
        let (path, entry) = self
            .checkpoint
            .entry(key)
            .unwrap_or_else(|| panic!("no reference tensor {key}"));
        assert_eq!(
            entry.dtype,
            sharpen_weights::SafetensorsDtype::F64,
            "{key} in {} is not F64",
            path.display()
        );
        let bytes = std::fs::read(path).expect("reference file");
        bytes[entry.start..entry.end]
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    }
}

impl Reference {
    /// A U8 tensor (8-bit images) as floats k / 255, with its shape.
    pub fn image_u8(&self, key: &str) -> TensorData {
        let (path, entry) = self
            .checkpoint
            .entry(key)
            .unwrap_or_else(|| panic!("no reference tensor {key}"));
        assert_eq!(
            entry.dtype,
            sharpen_weights::SafetensorsDtype::U8,
            "{key} in {} is not U8",
            path.display()
        );
        let bytes = std::fs::read(path).expect("reference file");
        let values = bytes[entry.start..entry.end]
            .iter()
            .map(|&b| b as f32 / 255.0)
            .collect::<Vec<_>>();
        TensorData::new(values, entry.shape.clone())
    }
}

fn safetensors_dtype_i64() -> sharpen_weights::SafetensorsDtype {
    sharpen_weights::SafetensorsDtype::I64
}

/// Largest absolute difference between `actual` and the reference; panics on a shape mismatch.
pub fn max_abs_diff<B: Backend, const D: usize>(
    actual: &Tensor<B, D>,
    expected: &TensorData,
) -> f32 {
    let actual = actual.to_data().convert::<f32>();
    assert_eq!(actual.shape, expected.shape, "shape mismatch");
    let a = actual.as_slice::<f32>().expect("f32 data");
    let e = expected.as_slice::<f32>().expect("f32 data");
    a.iter()
        .zip(e)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0f32, f32::max)
}

/// Asserts `max |actual - expected| <= tol` and that the reference is not trivially zero (unless
/// `allow_zero`), printing the difference.
pub fn assert_close<B: Backend, const D: usize>(
    what: &str,
    actual: &Tensor<B, D>,
    expected: &TensorData,
    tol: f32,
) {
    let diff = max_abs_diff(actual, expected);
    let scale = expected
        .as_slice::<f32>()
        .expect("f32")
        .iter()
        .fold(0.0f32, |m, x| m.max(x.abs()));
    let relative = if scale > 0.0 { diff / scale } else { 0.0 };
    println!(
        "{what}: max abs diff {diff:.3e} (reference max |x| {scale:.3}, relative {relative:.2e})"
    );
    assert!(diff <= tol, "{what}: max abs diff {diff:e} > {tol:e}");
}

/// A committed key list (`{"keys": {name: shape}}`, written by the generators).
pub fn key_list(rel: &str) -> std::collections::BTreeMap<String, Vec<usize>> {
    #[derive(serde::Deserialize)]
    struct KeyList {
        keys: std::collections::BTreeMap<String, Vec<usize>>,
    }
    let text = std::fs::read_to_string(fixture(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    serde_json::from_str::<KeyList>(&text)
        .unwrap_or_else(|e| panic!("{rel}: {e}"))
        .keys
}

/// Asserts that a model's parameter names and shapes equal the reference's, listing what differs;
/// prints and returns the parameter count.
pub fn assert_same_keys(
    what: &str,
    ours: &std::collections::BTreeMap<String, Vec<usize>>,
    reference: &std::collections::BTreeMap<String, Vec<usize>>,
) -> usize {
    let missing: Vec<_> = reference
        .keys()
        .filter(|k| !ours.contains_key(*k))
        .collect();
    let extra: Vec<_> = ours
        .keys()
        .filter(|k| !reference.contains_key(*k))
        .collect();
    assert!(
        missing.is_empty() && extra.is_empty(),
        "{what}: missing {missing:?}\nextra {extra:?}"
    );
    for (k, shape) in reference {
        assert_eq!(&ours[k], shape, "{what}: shape of {k}");
    }
    let params = reference
        .values()
        .map(|s| s.iter().product::<usize>())
        .sum();
    println!(
        "{what}: {} keys, {params} parameters match",
        reference.len()
    );
    params
}
