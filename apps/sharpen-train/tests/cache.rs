//! `[cache]`: VAE latents and text embeddings kept on disk. A run that fills the cache and a run
//! that reads it train identically; a corrupt entry is recomputed; a run without the cache trains
//! the same up to float rounding.

mod common;

use std::path::Path;

use common::{config, metrics, ok, train_in, workspace};

fn cfg(dir: &Path, method: &str, cache: Option<&Path>) -> std::path::PathBuf {
    let mut extra = String::new();
    if let Some(c) = cache {
        extra = format!(
            "[cache]\nlatents = true\ntext = true\ndir = \"{}\"\n",
            c.display()
        );
    }
    let path = config(dir, method, &extra);
    let folder = workspace().join("tests/fixtures/data/imagefolder_txt");
    let text = std::fs::read_to_string(&path).unwrap().replace(
        "kind = \"shapes\"",
        &format!(
            "kind = \"image-folder\"\npath = \"{}\"\nrandom_flip = true",
            folder.display()
        ),
    );
    let path = path.with_file_name(format!(
        "{method}-{}.toml",
        if cache.is_some() { "cached" } else { "plain" }
    ));
    std::fs::write(&path, text).unwrap();
    path
}

fn run(cfg: &Path, out: &Path) -> String {
    let o = train_in(cfg, out, &["--steps", "6"]);
    ok(&o);
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn close(a: &[serde_json::Value], b: &[serde_json::Value]) {
    assert_eq!(a.len(), b.len());
    for (x, y) in a.iter().zip(b) {
        let (lx, ly) = (x["loss"].as_f64().unwrap(), y["loss"].as_f64().unwrap());
        assert!((lx - ly).abs() <= 1e-4 * lx.abs().max(1.0), "{x} vs {y}");
    }
}

#[test]
fn cached_runs_train_like_uncached_ones() {
    let tmp = tempfile::tempdir().unwrap();
    for method in ["standard", "sharpen-sft"] {
        let cache = tmp.path().join(format!("cache-{method}"));
        let plain = tmp.path().join(format!("{method}-plain"));
        run(&cfg(tmp.path(), method, None), &plain);
        let cached = cfg(tmp.path(), method, Some(&cache));
        let (cold, warm) = (
            tmp.path().join(format!("{method}-cold")),
            tmp.path().join(format!("{method}-warm")),
        );
        let first = run(&cached, &cold);
        assert!(first.contains("cache: latents"), "{first}");
        let second = run(&cached, &warm);
        assert_eq!(
            computed(&second),
            [0, 0],
            "{method}: the second run computes nothing"
        );
        assert!(computed(&first).iter().all(|&n| n > 0), "{first}");
        assert_eq!(metrics(&cold), metrics(&warm), "{method}");
        close(&metrics(&plain), &metrics(&cold));
    }
    // A corrupt entry is recomputed, with the same result.
    let cache = tmp.path().join("cache-standard");
    let entry = walk(&cache.join("latents")).pop().expect("latent entries");
    std::fs::write(&entry, b"not safetensors").unwrap();
    let again = tmp.path().join("again");
    let err = run(&cfg(tmp.path(), "standard", Some(&cache)), &again);
    assert!(err.contains("unreadable"), "{err}");
    assert_eq!(metrics(&again), metrics(&tmp.path().join("standard-cold")));
}

/// The "N computed" counts of the cache report (latents, text).
fn computed(stderr: &str) -> Vec<usize> {
    let line = stderr
        .lines()
        .find(|l| l.starts_with("cache: "))
        .unwrap_or_else(|| panic!("no cache report in {stderr}"));
    line.split(';')
        .map(|part| {
            let words: Vec<&str> = part.split_whitespace().collect();
            let i = words
                .iter()
                .position(|w| w.starts_with("computed"))
                .unwrap();
            words[i - 1].parse().unwrap()
        })
        .collect()
}

fn walk(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

#[test]
fn a_cache_that_cannot_apply_is_refused() {
    let tmp = tempfile::tempdir().unwrap();
    let c = config(tmp.path(), "autoencoder", "[cache]\nlatents = true\n");
    let out = train_in(&c, &tmp.path().join("r"), &[]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("cache.latents"));
}
