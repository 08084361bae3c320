//! `--model`: a diffusers pipeline folder, an SDXL single-file `.safetensors`, or a Hugging Face
//! repo id already in the local HF cache (`cargo xtask download-weights` puts it there).

use std::path::{Path, PathBuf};

use anyhow::{bail, Context};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelSource {
    Folder(PathBuf),
    SingleFile(PathBuf),
}

/// The HF hub cache: `$HF_HUB_CACHE`, else `$HF_HOME/hub`, else `~/.cache/huggingface/hub`.
pub fn hf_hub_cache() -> Option<PathBuf> {
    let env = |k| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    env("HF_HUB_CACHE")
        .or_else(|| env("HF_HOME").map(|h| h.join("hub")))
        .or_else(|| env("HOME").map(|h| h.join(".cache/huggingface/hub")))
}

pub fn resolve(model: &str, hub_cache: Option<&Path>) -> anyhow::Result<ModelSource> {
    let path = Path::new(model);
    if path.is_dir() {
        if !path.join("model_index.json").is_file() {
            bail!(
                "{}: not a diffusers pipeline folder (no model_index.json)",
                path.display()
            );
        }
        return Ok(ModelSource::Folder(path.to_path_buf()));
    }
    if path.is_file() {
        if path.extension().is_some_and(|e| e == "safetensors") {
            return Ok(ModelSource::SingleFile(path.to_path_buf()));
        }
        bail!(
            "{}: expected a pipeline folder or a single-file .safetensors checkpoint",
            path.display()
        );
    }
    let looks_like_repo = model.split('/').count() == 2
        && !model.starts_with('.')
        && !model.ends_with(".safetensors");
    if !looks_like_repo {
        bail!("{model}: no such file or folder");
    }
    let cache = hub_cache.context("no Hugging Face cache folder (set HF_HOME)")?;
    let repo = cache.join(format!("models--{}", model.replace('/', "--")));
    let commit = std::fs::read_to_string(repo.join("refs/main"))
        .with_context(|| format!("{model} is not in the local Hugging Face cache ({}); run `cargo xtask download-weights`", cache.display()))?;
    let snapshot = repo.join("snapshots").join(commit.trim());
    if !snapshot.join("model_index.json").is_file() {
        bail!(
            "{}: the cached snapshot has no model_index.json",
            snapshot.display()
        );
    }
    Ok(ModelSource::Folder(snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolves_folders_files_and_cached_repo_ids() {
        let dir = tempfile::tempdir().unwrap();
        let folder = dir.path().join("pipe");
        std::fs::create_dir_all(&folder).unwrap();
        let err = resolve(folder.to_str().unwrap(), None)
            .unwrap_err()
            .to_string();
        assert!(err.contains("model_index.json"), "{err}");
        std::fs::write(folder.join("model_index.json"), "{}").unwrap();
        assert_eq!(
            resolve(folder.to_str().unwrap(), None).unwrap(),
            ModelSource::Folder(folder.clone())
        );

        let file = dir.path().join("sd_xl_base_1.0.safetensors");
        std::fs::write(&file, b"").unwrap();
        assert_eq!(
            resolve(file.to_str().unwrap(), None).unwrap(),
            ModelSource::SingleFile(file)
        );

        let hub = dir.path().join("hub");
        let snap = hub.join("models--acme--sdxl/snapshots/abc123");
        std::fs::create_dir_all(&snap).unwrap();
        std::fs::write(snap.join("model_index.json"), "{}").unwrap();
        std::fs::create_dir_all(hub.join("models--acme--sdxl/refs")).unwrap();
        std::fs::write(hub.join("models--acme--sdxl/refs/main"), "abc123\n").unwrap();
        assert_eq!(
            resolve("acme/sdxl", Some(&hub)).unwrap(),
            ModelSource::Folder(snap)
        );
        let err = resolve("acme/other", Some(&hub)).unwrap_err();
        assert!(format!("{err:#}").contains("download-weights"), "{err:#}");
        assert!(resolve("nope.txt", None)
            .unwrap_err()
            .to_string()
            .contains("no such file"));
    }
}
