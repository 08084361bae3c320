//! `download-weights` end to end against a local server on 127.0.0.1 that answers like the Hub:
//! model info with `blobs=true`, `resolve/` URLs with ranges, ETag / X-Linked-Etag / X-Repo-Commit.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

use sha1::Sha1;
use sha2::{Digest, Sha256};

use super::{download, HubOptions};
use crate::manifest::ModelEntry;

const COMMIT: &str = "0123456789abcdef0123456789abcdef01234567";
const REPO: &str = "acme/tiny-sdxl";

#[derive(Clone)]
struct HubFile {
    /// What the Hub's listing says the file is.
    listed: Vec<u8>,
    /// What the server actually sends (differs for a corrupted transfer).
    served: Vec<u8>,
    lfs: bool,
}

#[derive(Default)]
struct State {
    files: HashMap<String, HubFile>,
    /// Files whose first full-body transfer is cut off half-way.
    interrupt_once: Vec<String>,
    /// (path, Range header, Authorization header) of every request.
    log: Vec<(String, Option<String>, Option<String>)>,
}

struct FakeHub {
    endpoint: String,
    state: Arc<Mutex<State>>,
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn git_blob_sha1(content: &[u8]) -> String {
    let mut h = Sha1::new();
    h.update(format!("blob {}\0", content.len()).as_bytes());
    h.update(content);
    hex(&h.finalize())
}

impl FakeHub {
    fn start(files: HashMap<String, HubFile>, interrupt_once: Vec<String>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let endpoint = format!("http://{}", listener.local_addr().unwrap());
        let state = Arc::new(Mutex::new(State {
            files,
            interrupt_once,
            log: Vec::new(),
        }));
        let shared = state.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let state = shared.clone();
                std::thread::spawn(move || serve(stream, &state));
            }
        });
        Self { endpoint, state }
    }

    fn ranges_for(&self, file: &str) -> Vec<String> {
        let state = self.state.lock().unwrap();
        state
            .log
            .iter()
            .filter(|(p, _, _)| p.ends_with(file))
            .filter_map(|(_, r, _)| r.clone())
            .collect()
    }
}

fn serve(stream: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    let target = line.split_whitespace().nth(1).unwrap_or("/").to_string();
    let mut headers = HashMap::new();
    loop {
        let mut h = String::new();
        if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
            break;
        }
        if let Some((k, v)) = h.split_once(':') {
            headers.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    let range = headers.get("range").cloned();
    let mut guard = state.lock().unwrap();
    guard.log.push((
        target.clone(),
        range.clone(),
        headers.get("authorization").cloned(),
    ));
    let mut out = stream;
    let path = target.split('?').next().unwrap_or("");
    if path == format!("/api/models/{REPO}/revision/main") {
        let siblings: Vec<serde_json::Value> = guard
            .files
            .iter()
            .map(|(name, f)| {
                let mut s = serde_json::json!({"rfilename": name, "size": f.listed.len()});
                if f.lfs {
                    s["lfs"] = serde_json::json!({"sha256": hex(&Sha256::digest(&f.listed)), "size": f.listed.len()});
                } else {
                    s["blobId"] = serde_json::json!(git_blob_sha1(&f.listed));
                }
                s
            })
            .collect();
        let body = serde_json::json!({"sha": COMMIT, "siblings": siblings}).to_string();
        let _ = write!(out, "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        return;
    }
    let prefix = format!("/{REPO}/resolve/main/");
    let Some(file) = path.strip_prefix(&prefix).map(str::to_string) else {
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    };
    let Some(f) = guard.files.get(&file).cloned() else {
        let _ = write!(
            out,
            "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
        );
        return;
    };
    let total = f.served.len();
    let (start, end) = match range.as_deref().and_then(|r| r.strip_prefix("bytes=")) {
        Some(r) => {
            let (a, b) = r.split_once('-').unwrap();
            let a: usize = a.parse().unwrap();
            let b: usize = if b.is_empty() {
                total - 1
            } else {
                b.parse().unwrap()
            };
            (a, b.min(total - 1))
        }
        None => (0, total - 1),
    };
    // The Hub's ETag: the sha256 for LFS files, the git blob sha1 otherwise.
    let etag = if f.lfs {
        hex(&Sha256::digest(&f.listed))
    } else {
        git_blob_sha1(&f.listed)
    };
    let etag_header = if f.lfs {
        format!("X-Linked-Etag: \"{etag}\"\r\nETag: \"other\"")
    } else {
        format!("ETag: \"{etag}\"")
    };
    let body = &f.served[start..=end];
    let cut = start == 0 && end + 1 == total && total > 1 && guard.interrupt_once.contains(&file);
    if cut {
        guard.interrupt_once.retain(|x| x != &file);
    }
    drop(guard);
    let _ = write!(
        out,
        "HTTP/1.1 206 Partial Content\r\nContent-Length: {}\r\nContent-Range: bytes {start}-{end}/{total}\r\nX-Repo-Commit: {COMMIT}\r\n{etag_header}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    let sent = if cut { &body[..body.len() / 2] } else { body };
    let _ = out.write_all(sent);
    let _ = out.flush();
    // Dropping the stream closes the connection (early, for a cut transfer).
}

fn payload(n: usize, seed: u8) -> Vec<u8> {
    (0..n)
        .map(|i| (i as u8).wrapping_mul(31).wrapping_add(seed))
        .collect()
}

fn entry(files: &[&str]) -> ModelEntry {
    ModelEntry {
        name: "tiny".into(),
        repo: REPO.into(),
        revision: "main".into(),
        default: true,
        description: String::new(),
        files: files.iter().map(|s| s.to_string()).collect(),
    }
}

fn options(hub: &FakeHub, cache: &std::path::Path, retries: usize) -> HubOptions {
    HubOptions {
        endpoint: hub.endpoint.clone(),
        cache_dir: cache.to_path_buf(),
        token: Some("hf_secret_token".into()),
        progress: false,
        retries,
    }
}

#[test]
fn downloads_into_the_hf_cache_layout_and_sends_the_token() {
    let weights = payload(300_000, 7);
    let config = br#"{"hidden_size": 8}"#.to_vec();
    let files = HashMap::from([
        (
            "unet/diffusion_pytorch_model.safetensors".to_string(),
            HubFile {
                listed: weights.clone(),
                served: weights.clone(),
                lfs: true,
            },
        ),
        (
            "unet/config.json".to_string(),
            HubFile {
                listed: config.clone(),
                served: config.clone(),
                lfs: false,
            },
        ),
    ]);
    let hub = FakeHub::start(files, vec![]);
    let cache = tempfile::tempdir().unwrap();
    let e = entry(&[
        "unet/config.json",
        "unet/diffusion_pytorch_model.safetensors",
    ]);
    let paths = download(&e, "main", &options(&hub, cache.path(), 0)).unwrap();
    let snapshot = cache
        .path()
        .join("models--acme--tiny-sdxl")
        .join("snapshots")
        .join(COMMIT);
    assert_eq!(paths[0], snapshot.join("unet/config.json"));
    assert_eq!(std::fs::read(&paths[0]).unwrap(), config);
    assert_eq!(std::fs::read(&paths[1]).unwrap(), weights);
    let main_ref =
        std::fs::read_to_string(cache.path().join("models--acme--tiny-sdxl/refs/main")).unwrap();
    assert_eq!(main_ref.trim(), COMMIT);
    let blob = std::fs::canonicalize(&paths[1]).unwrap();
    assert_eq!(
        blob.file_name().unwrap().to_str().unwrap(),
        hex(&Sha256::digest(&weights)),
        "LFS blobs are named by sha256"
    );
    let state = hub.state.lock().unwrap();
    assert!(state
        .log
        .iter()
        .all(|(_, _, auth)| auth.as_deref() == Some("Bearer hf_secret_token")));
    drop(state);
    // A second run finds everything in the cache: no file transfer.
    let before = hub.state.lock().unwrap().log.len();
    download(&e, "main", &options(&hub, cache.path(), 0)).unwrap();
    let after = hub.state.lock().unwrap().log.len();
    assert_eq!(
        after - before,
        1,
        "only the file listing is requested again"
    );
}

#[test]
fn an_interrupted_transfer_resumes_where_it_stopped() {
    let weights = payload(400_000, 3);
    let name = "text_encoder/model.safetensors";
    let files = HashMap::from([(
        name.to_string(),
        HubFile {
            listed: weights.clone(),
            served: weights.clone(),
            lfs: true,
        },
    )]);
    let hub = FakeHub::start(files, vec![name.to_string()]);
    let cache = tempfile::tempdir().unwrap();
    let e = entry(&[name]);
    // First run: the connection drops half-way and no retry is allowed.
    let err = download(&e, "main", &options(&hub, cache.path(), 0)).unwrap_err();
    assert!(format!("{err:#}").contains(name), "{err:#}");
    let blobs = cache.path().join("models--acme--tiny-sdxl/blobs");
    let part: Vec<_> = std::fs::read_dir(&blobs)
        .unwrap()
        .flatten()
        .filter(|e| e.path().extension().is_some_and(|x| x == "part"))
        .collect();
    assert_eq!(part.len(), 1, "a .part file is kept for resuming");
    let partial = part[0].metadata().unwrap().len();
    assert!(
        partial > 0 && partial < weights.len() as u64,
        "partial size {partial}"
    );
    assert!(!cache
        .path()
        .join("models--acme--tiny-sdxl/snapshots")
        .join(COMMIT)
        .join(name)
        .exists());
    // Second run resumes from the partial file.
    let paths = download(&e, "main", &options(&hub, cache.path(), 0)).unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), weights);
    let resumed = format!("bytes={partial}-");
    assert!(
        hub.ranges_for(name).contains(&resumed),
        "expected a request for {resumed}: {:?}",
        hub.ranges_for(name)
    );
}

#[test]
fn retries_within_one_run_resume_too() {
    let weights = payload(250_000, 9);
    let name = "vae/diffusion_pytorch_model.safetensors";
    let files = HashMap::from([(
        name.to_string(),
        HubFile {
            listed: weights.clone(),
            served: weights.clone(),
            lfs: true,
        },
    )]);
    let hub = FakeHub::start(files, vec![name.to_string()]);
    let cache = tempfile::tempdir().unwrap();
    let paths = download(&entry(&[name]), "main", &options(&hub, cache.path(), 2)).unwrap();
    assert_eq!(std::fs::read(&paths[0]).unwrap(), weights);
    assert!(hub
        .ranges_for(name)
        .iter()
        .any(|r| r != "bytes=0-" && r != "bytes=0-0"));
}

#[test]
fn a_corrupted_file_is_rejected_and_not_left_in_the_cache() {
    let listed = payload(200_000, 1);
    let mut served = listed.clone();
    served[12_345] ^= 0xff;
    let config = b"{}".to_vec();
    let name = "unet/diffusion_pytorch_model.safetensors";
    let files = HashMap::from([
        (
            name.to_string(),
            HubFile {
                listed,
                served,
                lfs: true,
            },
        ),
        (
            "unet/config.json".to_string(),
            HubFile {
                listed: config.clone(),
                served: b"[]".to_vec(),
                lfs: false,
            },
        ),
    ]);
    let hub = FakeHub::start(files, vec![]);
    let cache = tempfile::tempdir().unwrap();
    let repo = cache.path().join("models--acme--tiny-sdxl");
    for (file, what) in [(name, "sha256"), ("unet/config.json", "sha1")] {
        let err = download(&entry(&[file]), "main", &options(&hub, cache.path(), 0)).unwrap_err();
        let msg = format!("{err:#}");
        assert!(
            msg.contains(file) && msg.contains(what) && msg.contains("removed"),
            "{msg}"
        );
        assert!(
            !repo.join("snapshots").join(COMMIT).join(file).exists(),
            "{file} left in the snapshot"
        );
    }
    let blobs: Vec<_> = std::fs::read_dir(repo.join("blobs"))
        .unwrap()
        .flatten()
        .map(|e| e.file_name())
        .collect();
    assert!(
        blobs.iter().all(|b| b.to_string_lossy().ends_with(".lock")),
        "blobs left: {blobs:?}"
    );
}

#[test]
fn a_file_missing_from_the_repository_is_named() {
    let hub = FakeHub::start(HashMap::new(), vec![]);
    let cache = tempfile::tempdir().unwrap();
    let err = download(
        &entry(&["vae/config.json"]),
        "main",
        &options(&hub, cache.path(), 0),
    )
    .unwrap_err();
    assert!(
        err.to_string().contains("no file `vae/config.json`"),
        "{err}"
    );
}

#[test]
fn the_token_is_not_in_debug_output() {
    let opts = HubOptions {
        endpoint: "x".into(),
        cache_dir: "/c".into(),
        token: Some("hf_secret".into()),
        progress: false,
        retries: 0,
    };
    assert!(!format!("{opts:?}").contains("hf_secret"));
}
