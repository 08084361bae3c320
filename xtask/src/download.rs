//! `download-weights`: fetches a manifest entry's files from the Hugging Face Hub into the standard
//! HF cache with the `hf-hub` client (which resumes `.part` files and renames them into place), then
//! checks every file against the size and hash the Hub lists (sha256 for LFS files, the git blob
//! sha1 otherwise). A file that fails the check is removed from the cache.

use std::io::Read;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use hf_hub::api::sync::ApiBuilder;
use hf_hub::{Cache, Repo, RepoType};
use serde::Deserialize;
use sha1::Sha1;
use sha2::{Digest, Sha256};

use crate::manifest::ModelEntry;

const DEFAULT_ENDPOINT: &str = "https://huggingface.co";

/// Where and how to download. The token is never printed: `Debug` hides it.
pub struct HubOptions {
    pub endpoint: String,
    /// The hub cache root (`$HF_HOME/hub` by default), holding `models--owner--name/`.
    pub cache_dir: PathBuf,
    pub token: Option<String>,
    pub progress: bool,
    /// Retries of an interrupted transfer within one run (each resumes where the last stopped).
    pub retries: usize,
}

impl std::fmt::Debug for HubOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HubOptions")
            .field("endpoint", &self.endpoint)
            .field("cache_dir", &self.cache_dir)
            .field("token", &self.token.as_ref().map(|_| "<set>"))
            .finish()
    }
}

impl HubOptions {
    /// `HF_ENDPOINT`, `HF_HOME` (cache in `$HF_HOME/hub`) and `HF_TOKEN` (else the token file
    /// `huggingface-cli login` writes), as the Python tools read them. `dir` overrides the cache.
    pub fn from_env(dir: Option<PathBuf>) -> Self {
        let env = |k: &str| std::env::var(k).ok().filter(|v| !v.trim().is_empty());
        let cache = Cache::from_env();
        Self {
            endpoint: env("HF_ENDPOINT")
                .unwrap_or_else(|| DEFAULT_ENDPOINT.to_string())
                .trim_end_matches('/')
                .to_string(),
            cache_dir: dir.unwrap_or_else(|| cache.path().clone()),
            token: env("HF_TOKEN").or_else(|| cache.token()),
            progress: true,
            retries: 3,
        }
    }
}

/// A file as the Hub's `?blobs=true` model info lists it.
#[derive(Debug, Deserialize)]
struct Sibling {
    rfilename: String,
    #[serde(rename = "blobId")]
    blob_id: Option<String>,
    size: Option<u64>,
    lfs: Option<Lfs>,
}

#[derive(Debug, Deserialize)]
struct Lfs {
    sha256: String,
    size: u64,
}

#[derive(Debug, Deserialize)]
struct RepoInfo {
    sha: Option<String>,
    siblings: Vec<Sibling>,
}

/// Downloads (or finds in the cache) every file of `entry` at `revision`; returns the snapshot
/// paths, in manifest order.
pub fn download(
    entry: &ModelEntry,
    revision: &str,
    opts: &HubOptions,
) -> anyhow::Result<Vec<PathBuf>> {
    let api = ApiBuilder::from_cache(Cache::new(opts.cache_dir.clone()))
        .with_endpoint(opts.endpoint.clone())
        .with_token(opts.token.clone())
        .with_progress(opts.progress)
        .with_retries(opts.retries)
        .build()
        .context("setting up the Hugging Face Hub client")?;
    let where_ = format!("{}@{revision} on {}", entry.repo, opts.endpoint);
    let repo = api.repo(Repo::with_revision(
        entry.repo.clone(),
        RepoType::Model,
        revision.to_string(),
    ));
    let info: RepoInfo = repo
        .info_request()
        .query("blobs", "true")
        .call()
        .map_err(hub_error)
        .with_context(|| format!("listing the files of {where_}"))?
        .into_json()
        .with_context(|| format!("reading the file list of {where_}"))?;
    tracing::info!(
        "{}: {} files from {where_} (commit {}) into {}",
        entry.name,
        entry.files.len(),
        info.sha.as_deref().unwrap_or("?"),
        opts.cache_dir.display()
    );

    let mut paths = Vec::with_capacity(entry.files.len());
    for file in &entry.files {
        let sibling = info
            .siblings
            .iter()
            .find(|s| &s.rfilename == file)
            .with_context(|| {
                format!("{where_} has no file `{file}` (check configs/weights.toml or --revision)")
            })?;
        let path = repo
            .get(file)
            .map_err(|e| anyhow::anyhow!("{e}"))
            .with_context(|| format!("downloading `{file}` from {where_}"))?;
        if let Err(problem) = verify(&path, sibling) {
            remove_from_cache(&path);
            bail!("`{file}` from {where_} failed verification ({problem}); it was removed from the cache, run again to download it anew");
        }
        tracing::info!("ok {file}");
        paths.push(path);
    }
    Ok(paths)
}

/// `ureq` errors carry the response; keep the status and URL but never request headers.
fn hub_error(e: impl std::fmt::Display) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

fn verify(path: &Path, sibling: &Sibling) -> Result<(), String> {
    let size = std::fs::metadata(path)
        .map_err(|e| format!("cannot stat {}: {e}", path.display()))?
        .len();
    let expected_size = sibling.lfs.as_ref().map(|l| l.size).or(sibling.size);
    if let Some(expected) = expected_size {
        if size != expected {
            return Err(format!("size {size} bytes, the Hub lists {expected}"));
        }
    }
    let mut file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut sha256 = Sha256::new();
    let mut sha1 = Sha1::new();
    sha1.update(format!("blob {size}\0").as_bytes());
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = file
            .read(&mut buf)
            .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        if n == 0 {
            break;
        }
        sha256.update(&buf[..n]);
        sha1.update(&buf[..n]);
    }
    let hex = |bytes: &[u8]| bytes.iter().map(|b| format!("{b:02x}")).collect::<String>();
    match (&sibling.lfs, &sibling.blob_id) {
        (Some(lfs), _) => {
            let got = hex(&sha256.finalize());
            if got != lfs.sha256.to_ascii_lowercase() {
                return Err(format!("sha256 {got}, the Hub lists {}", lfs.sha256));
            }
        }
        (None, Some(blob_id)) => {
            let got = hex(&sha1.finalize());
            if got != blob_id.to_ascii_lowercase() {
                return Err(format!("git blob sha1 {got}, the Hub lists {blob_id}"));
            }
        }
        (None, None) => tracing::warn!(
            "{}: the Hub lists no hash; checked the size only",
            path.display()
        ),
    }
    Ok(())
}

/// Removes a snapshot entry and the blob it points to.
fn remove_from_cache(snapshot_path: &Path) {
    if let Ok(blob) = std::fs::canonicalize(snapshot_path) {
        let _ = std::fs::remove_file(&blob);
    }
    let _ = std::fs::remove_file(snapshot_path);
}

#[cfg(test)]
mod tests;
