//! Every bad input the loader can meet gives an error that names the file, key or field.

use std::path::Path;

use burn::module::Module;
use burn::nn::{LayerNorm, LayerNormConfig, Linear, LinearConfig};
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use safetensors::tensor::TensorView;
use safetensors::Dtype;
use sharpen_weights::text::{load_clip_text_config, load_clip_tokenizer};
use sharpen_weights::{load_module, Checkpoint, LoadSpec, WeightsError, WeightsStem};

type B = burn::backend::Flex;

#[derive(Module, Debug)]
struct Tiny<B: Backend> {
    proj: Linear<B>,
    norm: LayerNorm<B>,
}

fn tiny() -> Tiny<B> {
    let device = Default::default();
    Tiny {
        proj: LinearConfig::new(3, 2).init(&device),
        norm: LayerNormConfig::new(2).init(&device),
    }
}

fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a safetensors file of (key, dtype, shape, bytes).
fn write(path: &Path, tensors: &[(&str, Dtype, Vec<usize>, Vec<u8>)]) {
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .map(|(k, d, s, b)| (k.to_string(), TensorView::new(*d, s.clone(), b).unwrap()))
        .collect();
    safetensors::serialize_to_file(views, None, path).unwrap();
}

/// PyTorch layout of `Tiny`: Linear weight [out=2, in=3].
fn good_tensors() -> Vec<(&'static str, Dtype, Vec<usize>, Vec<u8>)> {
    vec![
        (
            "proj.weight",
            Dtype::F32,
            vec![2, 3],
            f32_bytes(&[1.0, 2.0, 3.0, 4.0, 5.0, 6.0]),
        ),
        ("proj.bias", Dtype::F32, vec![2], f32_bytes(&[0.5, -0.5])),
        ("norm.weight", Dtype::F32, vec![2], f32_bytes(&[2.0, 3.0])),
        ("norm.bias", Dtype::F32, vec![2], f32_bytes(&[0.1, 0.2])),
    ]
}

fn load(path: &Path) -> Result<Tiny<B>, WeightsError> {
    load_module(
        tiny(),
        &Checkpoint::open_file(path)?,
        &LoadSpec::exact("Tiny"),
    )
}

fn assert_mentions(err: &WeightsError, needles: &[&str]) {
    let msg = err.to_string();
    for n in needles {
        assert!(msg.contains(n), "error does not mention `{n}`: {msg}");
    }
}

#[test]
fn good_file_loads_with_pytorch_layout() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write(&path, &good_tensors());
    let m = load(&path).unwrap();
    // Linear: y = x W^T + b with W = [[1,2,3],[4,5,6]].
    let x = Tensor::<B, 2>::from_data(
        TensorData::new(vec![1.0f32, 0.0, -1.0], [1, 3]),
        &Default::default(),
    );
    let y = m.proj.forward(x).into_data().to_vec::<f32>().unwrap();
    assert_eq!(y, vec![1.0 - 3.0 + 0.5, 4.0 - 6.0 - 0.5]);
    assert_eq!(
        m.norm.gamma.val().into_data().to_vec::<f32>().unwrap(),
        vec![2.0, 3.0]
    );
    assert_eq!(
        m.norm
            .beta
            .unwrap()
            .val()
            .into_data()
            .to_vec::<f32>()
            .unwrap(),
        vec![0.1, 0.2]
    );
}

#[test]
fn half_precision_files_are_cast_to_the_model_dtype() {
    let dir = tempfile::tempdir().unwrap();
    for (dtype, enc) in [
        (
            Dtype::F16,
            (|x: f32| half::f16::from_f32(x).to_le_bytes().to_vec()) as fn(f32) -> Vec<u8>,
        ),
        (Dtype::BF16, |x: f32| {
            half::bf16::from_f32(x).to_le_bytes().to_vec()
        }),
    ] {
        let tensors: Vec<_> = good_tensors()
            .into_iter()
            .map(|(k, _, s, b)| {
                let vals: Vec<u8> = b
                    .chunks_exact(4)
                    .flat_map(|c| enc(f32::from_le_bytes(c.try_into().unwrap())))
                    .collect();
                (k, dtype, s, vals)
            })
            .collect();
        let path = dir.path().join(format!("{dtype:?}.safetensors"));
        write(&path, &tensors);
        let m = load(&path).unwrap();
        let w = m.proj.weight.val().into_data();
        assert_eq!(w.dtype, burn::tensor::DType::F32);
        // Burn layout [in, out] = transpose of the file's [out, in].
        assert_eq!(
            w.to_vec::<f32>().unwrap(),
            vec![1.0, 4.0, 2.0, 5.0, 3.0, 6.0]
        );
    }
}

#[test]
fn missing_file_is_named() {
    let err = Checkpoint::open_file(Path::new("/nonexistent/model.safetensors")).unwrap_err();
    assert!(matches!(err, WeightsError::NotFound { .. }));
    assert_mentions(&err, &["/nonexistent/model.safetensors", "not found"]);
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(dir.path().join("model.fp16.safetensors"), b"").unwrap();
    let err = Checkpoint::open_folder(dir.path(), WeightsStem::Transformers, None).unwrap_err();
    assert_mentions(
        &err,
        &[
            "model.safetensors",
            "model.safetensors.index.json",
            "model.fp16.safetensors",
            "fp16",
        ],
    );
}

#[test]
fn truncated_file_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    write(&path, &good_tensors());
    let bytes = std::fs::read(&path).unwrap();
    std::fs::write(&path, &bytes[..bytes.len() - 5]).unwrap();
    let err = Checkpoint::open_file(&path).unwrap_err();
    assert!(
        matches!(err, WeightsError::InvalidSafetensors { .. }),
        "{err}"
    );
    assert_mentions(&err, &["model.safetensors", "truncated"]);
    // Cut inside the header.
    std::fs::write(&path, &bytes[..20]).unwrap();
    assert_mentions(
        &Checkpoint::open_file(&path).unwrap_err(),
        &["model.safetensors", "header"],
    );
    std::fs::write(&path, &bytes[..3]).unwrap();
    assert_mentions(
        &Checkpoint::open_file(&path).unwrap_err(),
        &["model.safetensors", "too short"],
    );
}

#[test]
fn corrupt_header_is_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("weights.safetensors");
    let header = b"{\"proj.weight\": {\"dtype\": \"F32\", oops";
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    std::fs::write(&path, bytes).unwrap();
    let err = Checkpoint::open_file(&path).unwrap_err();
    assert_mentions(&err, &["weights.safetensors", "JSON"]);
}

#[test]
fn lying_offsets_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    // Two tensors whose byte ranges overlap; the data section is long enough for both claims.
    let header = br#"{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 12]);
    std::fs::write(&path, bytes).unwrap();
    let err = Checkpoint::open_file(&path).unwrap_err();
    assert_mentions(&err, &["model.safetensors", "offsets", "`b`"]);
    // Offsets that give a byte size different from shape x dtype.
    let header = br#"{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}"#;
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend_from_slice(header);
    bytes.extend_from_slice(&[0u8; 8]);
    std::fs::write(&path, bytes).unwrap();
    assert_mentions(
        &Checkpoint::open_file(&path).unwrap_err(),
        &["model.safetensors"],
    );
}

#[test]
fn wrong_dtype_names_file_and_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = good_tensors();
    tensors[1] = ("proj.bias", Dtype::I32, vec![2], vec![0u8; 8]);
    write(&path, &tensors);
    let err = load(&path).unwrap_err();
    assert!(matches!(err, WeightsError::WrongDtype { .. }), "{err}");
    assert_mentions(&err, &["model.safetensors", "proj.bias", "I32"]);
}

#[test]
fn key_mismatches_are_listed_together() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = good_tensors();
    tensors.remove(3); // norm.bias missing
    tensors.push(("extra.weight", Dtype::F32, vec![1], f32_bytes(&[1.0])));
    tensors[0] = ("proj.weight", Dtype::F32, vec![3, 2], f32_bytes(&[0.0; 6])); // transposed: wrong shape
    write(&path, &tensors);
    let err = load(&path).unwrap_err();
    assert!(matches!(err, WeightsError::KeyMismatch { .. }), "{err}");
    assert_mentions(
        &err,
        &[
            "model.safetensors",
            "Tiny",
            "norm.bias",
            "extra.weight",
            "proj.weight",
            "[2, 3]",
            "[3, 2]",
        ],
    );
}

#[test]
fn allowed_extras_are_not_unused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    let mut tensors = good_tensors();
    tensors.push(("proj.position_ids", Dtype::I64, vec![1], vec![0u8; 8]));
    write(&path, &tensors);
    assert!(load(&path).is_err());
    let spec = LoadSpec {
        model: "Tiny",
        allowed_extra: &[r"proj\.position_ids"],
        ..LoadSpec::exact("Tiny")
    };
    load_module(tiny(), &Checkpoint::open_file(&path).unwrap(), &spec).unwrap();
}

#[test]
fn sharded_checkpoints_load_and_lying_indexes_are_named() {
    let dir = tempfile::tempdir().unwrap();
    let t = good_tensors();
    write(
        &dir.path().join("model-00001-of-00002.safetensors"),
        &t[..2],
    );
    write(
        &dir.path().join("model-00002-of-00002.safetensors"),
        &t[2..],
    );
    let index = |map: serde_json::Value| {
        std::fs::write(
            dir.path().join("model.safetensors.index.json"),
            serde_json::json!({"metadata": {"total_size": 40}, "weight_map": map}).to_string(),
        )
        .unwrap()
    };
    index(serde_json::json!({
        "proj.weight": "model-00001-of-00002.safetensors", "proj.bias": "model-00001-of-00002.safetensors",
        "norm.weight": "model-00002-of-00002.safetensors", "norm.bias": "model-00002-of-00002.safetensors"}));
    let ckpt = Checkpoint::open_folder(dir.path(), WeightsStem::Transformers, None).unwrap();
    load_module(tiny(), &ckpt, &LoadSpec::exact("Tiny")).unwrap();
    // The index says norm.bias is in shard 1; it is in shard 2.
    index(serde_json::json!({
        "proj.weight": "model-00001-of-00002.safetensors", "proj.bias": "model-00001-of-00002.safetensors",
        "norm.weight": "model-00002-of-00002.safetensors", "norm.bias": "model-00001-of-00002.safetensors"}));
    let err = Checkpoint::open_folder(dir.path(), WeightsStem::Transformers, None).unwrap_err();
    assert_mentions(&err, &["model.safetensors.index.json", "norm.bias"]);
    // The index names a shard that does not exist.
    index(serde_json::json!({"proj.weight": "model-00009-of-00009.safetensors"}));
    let err = Checkpoint::open_folder(dir.path(), WeightsStem::Transformers, None).unwrap_err();
    assert_mentions(&err, &["model-00009-of-00009.safetensors", "not found"]);
    std::fs::write(
        dir.path().join("model.safetensors.index.json"),
        "{\"metadata\": {}}",
    )
    .unwrap();
    let err = Checkpoint::open_folder(dir.path(), WeightsStem::Transformers, None).unwrap_err();
    assert_mentions(&err, &["model.safetensors.index.json", "weight_map"]);
}

const CONFIG: &str = r#"{"vocab_size": 10, "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
  "num_attention_heads": 2, "max_position_embeddings": 7, "hidden_act": "gelu", "layer_norm_eps": 1e-5}"#;

#[test]
fn config_json_errors_name_file_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("config.json");
    let err = load_clip_text_config(dir.path()).unwrap_err();
    assert_mentions(&err, &["config.json", "not found"]);

    std::fs::write(&path, CONFIG).unwrap();
    load_clip_text_config(dir.path()).unwrap();

    std::fs::write(&path, CONFIG.replace("\"hidden_size\": 8, ", "")).unwrap();
    assert_mentions(
        &load_clip_text_config(dir.path()).unwrap_err(),
        &["config.json", "missing field `hidden_size`"],
    );

    std::fs::write(&path, CONFIG.replace("\"gelu\"", "\"swish\"")).unwrap();
    assert_mentions(
        &load_clip_text_config(dir.path()).unwrap_err(),
        &["config.json", "hidden_act", "swish"],
    );

    std::fs::write(
        &path,
        CONFIG.replace("\"num_attention_heads\": 2", "\"num_attention_heads\": 3"),
    )
    .unwrap();
    assert_mentions(
        &load_clip_text_config(dir.path()).unwrap_err(),
        &["config.json", "num_attention_heads"],
    );

    std::fs::write(&path, CONFIG.replace("10", "\"ten\"")).unwrap();
    assert_mentions(
        &load_clip_text_config(dir.path()).unwrap_err(),
        &["config.json", "invalid type"],
    );
}

#[test]
fn tokenizer_folder_errors_name_the_folder_and_file() {
    let dir = tempfile::tempdir().unwrap();
    let err = load_clip_tokenizer(dir.path()).unwrap_err();
    assert_mentions(&err, &["vocab.json", "not found"]);
    std::fs::write(dir.path().join("vocab.json"), "{}").unwrap();
    std::fs::write(dir.path().join("merges.txt"), "#version: 0.2\nbad\n").unwrap();
    let err = load_clip_tokenizer(dir.path()).unwrap_err();
    assert_mentions(
        &err,
        &[&dir.path().display().to_string(), "merges.txt", "line 2"],
    );
}
