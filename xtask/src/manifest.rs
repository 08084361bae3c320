//! `configs/weights.toml`: what `download-weights` can fetch.

use std::path::Path;

use anyhow::{bail, Context};
use serde::Deserialize;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    pub model: Vec<ModelEntry>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ModelEntry {
    pub name: String,
    pub repo: String,
    #[serde(default = "main")]
    pub revision: String,
    #[serde(default)]
    pub default: bool,
    #[serde(default)]
    pub description: String,
    pub files: Vec<String>,
}

fn main() -> String {
    "main".to_string()
}

impl Manifest {
    pub fn load(path: &Path) -> anyhow::Result<Self> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        Self::parse(&text).with_context(|| format!("{}", path.display()))
    }

    pub fn parse(text: &str) -> anyhow::Result<Self> {
        let manifest: Self = toml::from_str(text)?;
        for (i, m) in manifest.model.iter().enumerate() {
            if m.files.is_empty() {
                bail!("model `{}` lists no files", m.name);
            }
            if !m.repo.contains('/') {
                bail!(
                    "model `{}`: repo `{}` is not of the form owner/name",
                    m.name,
                    m.repo
                );
            }
            if manifest.model[..i].iter().any(|o| o.name == m.name) {
                bail!("model `{}` is listed twice", m.name);
            }
        }
        if manifest.model.iter().filter(|m| m.default).count() > 1 {
            bail!("more than one model has `default = true`");
        }
        Ok(manifest)
    }

    /// The entry named `name`, or the default one.
    pub fn select(&self, name: Option<&str>) -> anyhow::Result<&ModelEntry> {
        let known = || {
            self.model
                .iter()
                .map(|m| m.name.as_str())
                .collect::<Vec<_>>()
                .join(", ")
        };
        match name {
            Some(name) => {
                self.model.iter().find(|m| m.name == name).with_context(|| {
                    format!("unknown model `{name}`; the manifest has: {}", known())
                })
            }
            None => self.model.iter().find(|m| m.default).with_context(|| {
                format!("no default model in the manifest; name one of: {}", known())
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn shipped_manifest_is_valid() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs/weights.toml");
        let m = Manifest::load(&path).unwrap();
        let sdxl = m.select(None).unwrap();
        assert_eq!(sdxl.name, "sdxl-base-1.0");
        assert!(sdxl
            .files
            .iter()
            .any(|f| f == "unet/diffusion_pytorch_model.safetensors"));
        assert!(m.select(Some("sdxl-base-1.0-fp16")).is_ok());
        for reward in [
            "clip-vit-large-patch14",
            "pickscore-v1",
            "aesthetic-v2",
            "hpsv2.1",
            "clip-vit-h-14-laion",
            "imagereward-v1.0",
            "bert-base-uncased-vocab",
        ] {
            assert!(m.select(Some(reward)).is_ok(), "{reward}");
        }
    }

    #[test]
    fn bad_manifests_are_rejected() {
        let err =
            Manifest::parse("[[model]]\nname = \"a\"\nrepo = \"x/y\"\nfiles = []\n").unwrap_err();
        assert!(err.to_string().contains("lists no files"));
        let err = Manifest::parse("[[model]]\nname = \"a\"\nrepo = \"x/y\"\nfile = [\"f\"]\n")
            .unwrap_err();
        assert!(format!("{err:#}").contains("file"), "{err:#}");
        let m =
            Manifest::parse("[[model]]\nname = \"a\"\nrepo = \"x/y\"\nfiles = [\"f\"]\n").unwrap();
        assert!(m
            .select(None)
            .unwrap_err()
            .to_string()
            .contains("no default"));
        assert!(m
            .select(Some("b"))
            .unwrap_err()
            .to_string()
            .contains("the manifest has: a"));
    }
}
