//! A disk cache of computed tensors (VAE latents of training images, text embeddings of
//! captions) keyed by a content hash of everything the value depends on: the input bytes and a
//! fingerprint of the model that computed it. An entry is one safetensors file under
//! `dir/<kind>/<2 hex>/<64 hex>.safetensors`, written under a temporary name and renamed, so a
//! crash never leaves a half-written entry; an unreadable entry is a miss (logged), never an error.

use std::collections::HashMap;
use std::io::Read;
use std::path::{Path, PathBuf};

use safetensors::tensor::TensorView;
use safetensors::{Dtype, SafeTensors};
use sha2::{Digest, Sha256};

use crate::DataError;

/// One cached f32 tensor.
#[derive(Debug, Clone, PartialEq)]
pub struct CachedTensor {
    pub shape: Vec<usize>,
    pub values: Vec<f32>,
}

/// sha256 over length-prefixed parts, as 64 hex digits (parts cannot run into each other).
pub fn content_key(parts: &[&[u8]]) -> String {
    let mut hash = Sha256::new();
    for part in parts {
        hash.update((part.len() as u64).to_le_bytes());
        hash.update(part);
    }
    hex(&hash.finalize())
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A fingerprint of the files of a model folder: sha256 of every file's name and full content
/// (so retrained weights of the same shape get a new fingerprint). Reads the files once.
pub fn folder_fingerprint(dir: &Path) -> Result<String, DataError> {
    let io = |path: &Path, source| DataError::Io {
        path: path.to_path_buf(),
        source,
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|e| io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.is_file())
        .collect();
    files.sort();
    let mut hash = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    for path in files {
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        hash.update((name.len() as u64).to_le_bytes());
        hash.update(name.as_bytes());
        let mut file = std::fs::File::open(&path).map_err(|e| io(&path, e))?;
        loop {
            let n = file.read(&mut buf).map_err(|e| io(&path, e))?;
            if n == 0 {
                break;
            }
            hash.update(&buf[..n]);
        }
    }
    Ok(hex(&hash.finalize()))
}

/// Entries of one kind (`latents`, `text`) under a cache folder.
#[derive(Debug, Clone)]
pub struct TensorCache {
    dir: PathBuf,
    pub hits: usize,
    pub misses: usize,
}

impl TensorCache {
    pub fn new(root: &Path, kind: &str) -> Self {
        Self {
            dir: root.join(kind),
            hits: 0,
            misses: 0,
        }
    }

    fn path(&self, key: &str) -> PathBuf {
        self.dir.join(&key[..2]).join(format!("{key}.safetensors"))
    }

    /// The entry's tensors, or None (absent or unreadable: counted as a miss).
    pub fn get(&mut self, key: &str) -> Option<HashMap<String, CachedTensor>> {
        let path = self.path(key);
        let found = std::fs::read(&path)
            .ok()
            .and_then(|bytes| match read(&bytes) {
                Ok(t) => Some(t),
                Err(e) => {
                    tracing::warn!(
                        "cache entry {} is unreadable ({e}); recomputing",
                        path.display()
                    );
                    None
                }
            });
        match found {
            Some(_) => self.hits += 1,
            None => self.misses += 1,
        }
        found
    }

    /// Stores an entry (atomically: temporary name, then rename).
    pub fn put(&self, key: &str, tensors: &[(&str, &CachedTensor)]) -> Result<(), DataError> {
        let path = self.path(key);
        let parent = path.parent().expect("entries live in a subfolder");
        std::fs::create_dir_all(parent).map_err(|source| DataError::Io {
            path: parent.to_path_buf(),
            source,
        })?;
        let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
            .iter()
            .map(|(name, t)| {
                let data = t.values.iter().flat_map(|v| v.to_le_bytes()).collect();
                (name.to_string(), t.shape.clone(), data)
            })
            .collect();
        let views: Vec<(String, TensorView<'_>)> = bytes
            .iter()
            .map(|(name, shape, data)| {
                let view = TensorView::new(Dtype::F32, shape.clone(), data)
                    .expect("byte length matches the shape");
                (name.clone(), view)
            })
            .collect();
        // Unique per process and write: data-parallel peers (threads) may write the same entry.
        static WRITES: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let n = WRITES.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let tmp = path.with_extension(format!("tmp{}.{n}", std::process::id()));
        let invalid = |message: String| DataError::Invalid {
            path: tmp.clone(),
            message,
        };
        safetensors::serialize_to_file(views, None, &tmp).map_err(|e| invalid(e.to_string()))?;
        std::fs::rename(&tmp, &path).map_err(|source| DataError::Io { path, source })
    }
}

fn read(bytes: &[u8]) -> Result<HashMap<String, CachedTensor>, String> {
    let file = SafeTensors::deserialize(bytes).map_err(|e| e.to_string())?;
    file.tensors()
        .into_iter()
        .map(|(name, view)| {
            if view.dtype() != Dtype::F32 {
                return Err(format!("`{name}` is {:?}, not F32", view.dtype()));
            }
            let values = view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            Ok((
                name,
                CachedTensor {
                    shape: view.shape().to_vec(),
                    values,
                },
            ))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_round_trip_and_bad_ones_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let mut cache = TensorCache::new(dir.path(), "latents");
        let key = content_key(&[b"image bytes", b"vae"]);
        assert_ne!(
            key,
            content_key(&[b"image byte", b"svae"]),
            "parts are delimited"
        );
        assert_eq!(cache.get(&key), None);
        let t = CachedTensor {
            shape: vec![2, 3],
            values: vec![0.5, -1.0, 2.25, 3.0, 1e-7, -0.0],
        };
        cache.put(&key, &[("latents", &t)]).unwrap();
        assert_eq!(cache.get(&key).unwrap()["latents"], t);
        assert_eq!((cache.hits, cache.misses), (1, 1));
        std::fs::write(cache.path(&key), b"garbage").unwrap();
        assert_eq!(cache.get(&key), None, "an unreadable entry is recomputed");
        let leftovers: Vec<_> = std::fs::read_dir(cache.path(&key).parent().unwrap())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains(".tmp")
            })
            .collect();
        assert!(leftovers.is_empty());
    }

    #[test]
    fn folder_fingerprints_follow_content() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.safetensors"), b"weights").unwrap();
        std::fs::write(dir.path().join("config.json"), b"{}").unwrap();
        let one = folder_fingerprint(dir.path()).unwrap();
        assert_eq!(one, folder_fingerprint(dir.path()).unwrap());
        std::fs::write(dir.path().join("a.safetensors"), b"weightz").unwrap();
        assert_ne!(one, folder_fingerprint(dir.path()).unwrap());
    }
}
