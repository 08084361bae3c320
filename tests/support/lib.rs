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
        let (bytes, shape) = self.raw(key, sharpen_weights::SafetensorsDtype::I64);
        let values = bytes
            .chunks_exact(8)
            .map(|b| i64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect();
        (values, shape)
    }
}

impl Reference {
    /// An F64 tensor's values, flattened.
    pub fn f64s(&self, key: &str) -> Vec<f64> {
        let (bytes, _) = self.raw(key, sharpen_weights::SafetensorsDtype::F64);
        bytes
            .chunks_exact(8)
            .map(|b| f64::from_le_bytes(b.try_into().expect("8 bytes")))
            .collect()
    }
}

impl Reference {
    /// A tensor's raw bytes and shape, checking its stored dtype.
    fn raw(&self, key: &str, dtype: sharpen_weights::SafetensorsDtype) -> (Vec<u8>, Vec<usize>) {
        let (path, entry) = self
            .checkpoint
            .entry(key)
            .unwrap_or_else(|| panic!("no reference tensor {key}"));
        assert_eq!(entry.dtype, dtype, "{key} in {}", path.display());
        let bytes = std::fs::read(path).expect("reference file");
        (bytes[entry.start..entry.end].to_vec(), entry.shape.clone())
    }

    /// A U8 tensor (8-bit images) as floats k / 255, with its shape.
    pub fn image_u8(&self, key: &str) -> TensorData {
        let (bytes, shape) = self.raw(key, sharpen_weights::SafetensorsDtype::U8);
        let values = bytes.iter().map(|&b| b as f32 / 255.0).collect::<Vec<_>>();
        TensorData::new(values, shape)
    }

    /// A U8 image ([3, h, w] or [b, 3, h, w]) as a [b, 3, h, w] tensor in [0, 1].
    pub fn image(&self, key: &str) -> Tensor<TestBackend, 4> {
        let data = self.image_u8(key);
        let s = data.shape.clone();
        let n = s.iter().product::<usize>();
        let flat = Tensor::<TestBackend, 1>::from_data(
            TensorData::new(data.into_vec::<f32>().expect("f32"), [n]),
            &Default::default(),
        );
        match s.as_slice() {
            [c, h, w] => flat.reshape([1, *c, *h, *w]),
            [b, c, h, w] => flat.reshape([*b, *c, *h, *w]),
            other => panic!("{key}: not an image shape {other:?}"),
        }
    }
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
