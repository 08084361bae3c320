//! Folder copies (pipeline exports, test fixtures).

use std::path::Path;

use anyhow::Context;

/// Copies the folder `from` to `to` (following links), skipping the top-level entries in `skip`.
pub fn copy_tree(from: &Path, to: &Path, skip: &[&str]) -> anyhow::Result<()> {
    std::fs::create_dir_all(to).with_context(|| format!("creating {}", to.display()))?;
    for entry in std::fs::read_dir(from).with_context(|| format!("reading {}", from.display()))? {
        let entry = entry?;
        let name = entry.file_name();
        if skip.iter().any(|s| name == *s) {
            continue;
        }
        let path = entry.path();
        if path.is_dir() {
            copy_tree(&path, &to.join(&name), &[])?;
        } else {
            std::fs::copy(&path, to.join(&name))
                .with_context(|| format!("copying {}", path.display()))?;
        }
    }
    Ok(())
}
