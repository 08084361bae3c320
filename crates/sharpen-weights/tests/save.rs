//! Files written with several metadata entries are byte-reproducible (safetensors itself writes
//! the metadata map in hash order) and read back whole.

use std::collections::HashMap;

use burn::tensor::TensorData;
use sharpen_weights::{save_tensors_with_metadata, SafetensorsFile};

#[test]
fn metadata_order_does_not_change_the_bytes() {
    let tmp = tempfile::tempdir().unwrap();
    let tensors = [
        ("b.weight", TensorData::new(vec![1.0f32, -2.0, 3.5], [3])),
        ("a.weight", TensorData::new(vec![0.25f32; 4], [2, 2])),
    ];
    let metadata = || -> HashMap<String, String> {
        (0..8)
            .map(|i| (format!("key{i}"), format!("value {i}")))
            .collect()
    };
    let mut files = Vec::new();
    for i in 0..6 {
        let path = tmp.path().join(format!("f{i}.safetensors"));
        // A new map each time: a new hash seed, so safetensors would order it differently.
        save_tensors_with_metadata(&path, &tensors, Some(metadata())).unwrap();
        files.push(std::fs::read(&path).unwrap());
    }
    assert!(files.windows(2).all(|w| w[0] == w[1]), "bytes differ");
    let file = SafetensorsFile::open(&tmp.path().join("f0.safetensors")).unwrap();
    assert_eq!(file.metadata, metadata().into_iter().collect());
    let b = file.read("b.weight", burn::tensor::DType::F32).unwrap();
    assert_eq!(b.to_vec::<f32>().unwrap(), vec![1.0, -2.0, 3.5]);
    let a = file.read("a.weight", burn::tensor::DType::F32).unwrap();
    assert_eq!(a.shape.to_vec(), vec![2, 2]);
}
