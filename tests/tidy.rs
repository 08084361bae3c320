//! House rules from ARCHITECTURE.md, checked on the source tree.

use std::path::{Path, PathBuf};

use sharpen_tests::workspace_root;

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// (crate directory, its `src/` files) for every library crate under `crates/`.
fn library_crates() -> Vec<(PathBuf, Vec<PathBuf>)> {
    let mut crates = Vec::new();
    for entry in std::fs::read_dir(workspace_root().join("crates"))
        .unwrap()
        .flatten()
    {
        let mut files = Vec::new();
        rust_files(&entry.path().join("src"), &mut files);
        crates.push((entry.path(), files));
    }
    assert!(
        crates.len() >= 2,
        "expected the library crates under crates/"
    );
    crates
}

fn manifest_dependencies(crate_dir: &Path) -> String {
    std::fs::read_to_string(crate_dir.join("Cargo.toml")).unwrap()
}

/// Architecture Invariant: model crates never depend on the weights, data or training crates, and
/// only xtask reaches the network (besides the mllm grader's client in sharpen-rewards).
#[test]
fn dependencies_point_one_way() {
    for (dir, _) in library_crates() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        let manifest = manifest_dependencies(&dir);
        let deps: Vec<&str> = manifest
            .lines()
            .skip_while(|l| !l.starts_with("[dependencies]"))
            .skip(1)
            .take_while(|l| !l.starts_with('['))
            .filter_map(|l| l.split('=').next().map(str::trim))
            .filter(|l| !l.is_empty() && !l.starts_with('#'))
            .collect();
        for net in ["hf-hub", "ureq", "reqwest"] {
            // The mllm grader talks to a user-configured chat-completions endpoint; it is the
            // one network client outside xtask and never downloads weights.
            if name == "sharpen-rewards" && net == "ureq" {
                continue;
            }
            assert!(
                !deps.contains(&net),
                "{name} depends on {net}: downloads live only in xtask"
            );
        }
        if name.starts_with("sdxl-") {
            for upper in [
                "sharpen-weights",
                "sharpen-data",
                "sharpen-train",
                "sharpen-loss",
                "sharpen-pipeline",
            ] {
                assert!(
                    !deps.contains(&upper),
                    "model crate {name} depends on {upper}"
                );
            }
        }
    }
}

/// Architecture Invariant: libraries log through `tracing` and never print; they name no backend
/// type (outside their tests) and do no file IO in model crates.
#[test]
fn libraries_do_not_print_or_name_backends() {
    for (dir, files) in library_crates() {
        let name = dir.file_name().unwrap().to_string_lossy().to_string();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            // Only the code before a `#[cfg(test)]` module counts.
            let code = text.split("#[cfg(test)]").next().unwrap();
            for (i, line) in code.lines().enumerate() {
                let line = line.trim_start();
                if line.starts_with("//") {
                    continue;
                }
                let at = format!("{}:{}", file.display(), i + 1);
                for banned in ["println!", "eprintln!", "print!(", "dbg!("] {
                    assert!(
                        !line.contains(banned),
                        "{at}: libraries log through tracing, found {banned}"
                    );
                }
                assert!(
                    !line.contains("burn::backend::"),
                    "{at}: backend types are named only in apps and tests"
                );
                if name.starts_with("sdxl-") {
                    for io in ["std::fs", "File::open", "read_to_string"] {
                        assert!(
                            !line.contains(io),
                            "{at}: model crates do no file IO ({io})"
                        );
                    }
                }
            }
        }
    }
}

/// Files stay small: about 500 lines, split by block family.
#[test]
fn source_files_stay_small() {
    let root = workspace_root();
    let mut files = Vec::new();
    for dir in ["crates", "apps", "xtask", "tests"] {
        rust_files(&root.join(dir), &mut files);
    }
    let long: Vec<String> = files
        .iter()
        .filter_map(|f| {
            let n = std::fs::read_to_string(f).unwrap().lines().count();
            (n > 600).then(|| format!("{} ({n} lines)", f.display()))
        })
        .collect();
    assert!(long.is_empty(), "split these files: {long:?}");
}
