//! The `mllm` grader against a local chat-completions server on 127.0.0.1: success, a cache hit
//! that sends nothing, 429 then success, a timeout, malformed replies after retries, a 401 that
//! is not retried, and the API key absent from logs, outputs and the cache.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use burn::backend::Flex;
use burn::tensor::{Tensor, TensorData};
use sharpen_rewards::{MllmConfig, MllmReward, Reward};

/// What the server answers: status, body, extra headers, delay before answering.
#[derive(Clone)]
struct Answer {
    status: u16,
    body: String,
    headers: Vec<(&'static str, String)>,
    delay: Duration,
}

fn grades(overall: f64) -> String {
    let content = format!(
        r#"{{"accuracy_to_prompt": 8, "creativity": 6, "visual_quality": 7, "consistency": 9, "thematic_resonance": 5, "overall": {overall}}}"#
    );
    serde_json::json!({"choices": [{"index": 0, "message": {"role": "assistant", "content": content}}]})
        .to_string()
}

fn ok(overall: f64) -> Answer {
    Answer {
        status: 200,
        body: grades(overall),
        headers: vec![],
        delay: Duration::ZERO,
    }
}

/// A request as the server saw it.
#[derive(Clone, Debug)]
struct Seen {
    path: String,
    authorization: String,
    body: String,
}

struct Server {
    url: String,
    seen: Arc<Mutex<Vec<Seen>>>,
    script: Arc<Mutex<Vec<Answer>>>,
    /// (in flight now, most ever in flight)
    inflight: Arc<Mutex<(usize, usize)>>,
}

impl Server {
    /// Answers from `script` in order, then `ok(7)` forever.
    fn start(script: Vec<Answer>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/v1", listener.local_addr().unwrap());
        let seen = Arc::new(Mutex::new(Vec::new()));
        let script = Arc::new(Mutex::new(script));
        let inflight = Arc::new(Mutex::new((0, 0)));
        let (s, q, f) = (seen.clone(), script.clone(), inflight.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (s, q, f) = (s.clone(), q.clone(), f.clone());
                std::thread::spawn(move || {
                    let mut reader = BufReader::new(stream.try_clone().unwrap());
                    let mut line = String::new();
                    reader.read_line(&mut line).unwrap();
                    let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                    let (mut len, mut auth) = (0usize, String::new());
                    loop {
                        let mut h = String::new();
                        reader.read_line(&mut h).unwrap();
                        if h.trim().is_empty() {
                            break;
                        }
                        let (name, value) = h.split_once(':').unwrap();
                        match name.to_ascii_lowercase().as_str() {
                            "content-length" => len = value.trim().parse().unwrap(),
                            "authorization" => auth = value.trim().to_string(),
                            _ => {}
                        }
                    }
                    let mut body = vec![0u8; len];
                    reader.read_exact(&mut body).unwrap();
                    s.lock().unwrap().push(Seen {
                        path,
                        authorization: auth,
                        body: String::from_utf8(body).unwrap(),
                    });
                    let answer = {
                        let mut q = q.lock().unwrap();
                        if q.is_empty() {
                            ok(7.0)
                        } else {
                            q.remove(0)
                        }
                    };
                    {
                        let mut f = f.lock().unwrap();
                        f.0 += 1;
                        f.1 = f.1.max(f.0);
                    }
                    std::thread::sleep(answer.delay);
                    f.lock().unwrap().0 -= 1;
                    let mut head = format!(
                        "HTTP/1.1 {} X\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n",
                        answer.status,
                        answer.body.len()
                    );
                    for (k, v) in &answer.headers {
                        head.push_str(&format!("{k}: {v}\r\n"));
                    }
                    let _ = stream.write_all(format!("{head}\r\n{}", answer.body).as_bytes());
                });
            }
        });
        Self {
            url,
            seen,
            script,
            inflight,
        }
    }

    fn requests(&self) -> Vec<Seen> {
        self.seen.lock().unwrap().clone()
    }
}

const KEY: &str = "sk-test-3f9a1c77e0d54b2a";

fn config(server: &Server, key_env: &str, cache: &Path) -> MllmConfig {
    std::env::set_var(key_env, KEY);
    MllmConfig {
        base_url: server.url.clone(),
        model: "grader-1".into(),
        api_key_env: key_env.into(),
        timeout_s: 5.0,
        max_retries: 2,
        backoff_s: 0.01,
        concurrency: 2,
        cache_dir: Some(cache.to_path_buf()),
        prompt_template: None,
        max_tokens: None,
    }
}

fn images(n: usize, seed: u32) -> Tensor<Flex, 4> {
    let values: Vec<f32> = (0..n * 3 * 8 * 8)
        .map(|i| ((i as u32 * 31 + seed * 7) % 256) as f32 / 255.0)
        .collect();
    Tensor::from_data(TensorData::new(values, [n, 3, 8, 8]), &Default::default())
}

fn scores(t: Tensor<Flex, 1>) -> Vec<f32> {
    t.into_data().to_vec::<f32>().unwrap()
}

fn files_under(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .map(|d| d.map(|e| e.unwrap().path()).collect())
        .unwrap_or_default()
}

#[test]
fn grades_then_answers_from_the_cache() {
    let server = Server::start(vec![ok(8.0), ok(6.0)]);
    let cache = tempfile::tempdir().unwrap();
    let grader = MllmReward::new(config(&server, "SHARPEN_KEY_A", cache.path())).unwrap();
    let prompts = ["a red circle", "a blue square"];
    let scored = grader.score_detailed(images(2, 1), &prompts).unwrap();
    let mut got = scores(scored.scores);
    got.sort_by(f32::total_cmp);
    assert_eq!(got, vec![0.6, 0.8]);
    for a in &scored.aspects {
        assert_eq!(a.len(), 6);
        assert_eq!(a["accuracy_to_prompt"], 8.0);
    }
    let seen = server.requests();
    assert_eq!(seen.len(), 2);
    for s in &seen {
        assert_eq!(s.path, "/v1/chat/completions");
        assert_eq!(s.authorization, format!("Bearer {KEY}"));
        let body: serde_json::Value = serde_json::from_str(&s.body).unwrap();
        assert_eq!(body["model"], "grader-1");
        let content = &body["messages"][0]["content"];
        let text = content[0]["text"].as_str().unwrap();
        assert!(prompts.iter().any(|p| text.contains(p)), "{text}");
        assert!(text.contains("thematic_resonance") && text.contains("overall"));
        let url = content[1]["image_url"]["url"].as_str().unwrap();
        assert!(url.starts_with("data:image/png;base64,iVBOR"), "{url:.40}");
    }
    // The same prompts and images again: from the cache, nothing sent.
    let again = grader.score(images(2, 1), &prompts).unwrap();
    assert_eq!(server.requests().len(), 2);
    assert_eq!(scores(again).len(), 2);
    // The cache holds grades, never the key.
    let files = files_under(cache.path());
    assert_eq!(files.len(), 2);
    for f in files {
        assert!(!std::fs::read_to_string(f).unwrap().contains(KEY));
    }
}

#[test]
fn rate_limits_are_retried_and_timeouts_reported() {
    let server = Server::start(vec![Answer {
        status: 429,
        body: r#"{"error": {"message": "slow down"}}"#.into(),
        headers: vec![("Retry-After", "0".into())],
        delay: Duration::ZERO,
    }]);
    let cache = tempfile::tempdir().unwrap();
    let grader = MllmReward::new(config(&server, "SHARPEN_KEY_B", cache.path())).unwrap();
    let s = scores(grader.score(images(1, 2), &["x"]).unwrap());
    assert_eq!(s, vec![0.7]);
    assert_eq!(server.requests().len(), 2, "one 429, one success");

    let slow = Answer {
        delay: Duration::from_millis(1500),
        ..ok(9.0)
    };
    let server = Server::start(vec![slow.clone(), slow.clone(), slow]);
    let mut c = config(&server, "SHARPEN_KEY_B", cache.path());
    c.timeout_s = 0.3;
    c.max_retries = 1;
    let grader = MllmReward::new(c).unwrap();
    let err = grader.score(images(1, 3), &["x"]).unwrap_err().to_string();
    assert!(
        err.contains("timed out after 0.3 s") && err.contains("2 attempts"),
        "{err}"
    );
    assert!(!err.contains(KEY));
}

#[test]
fn malformed_replies_fail_after_retries_and_client_errors_at_once() {
    let bad = Answer {
        status: 200,
        body: serde_json::json!({"choices": [{"message": {"content": "Looks great! 9/10"}}]})
            .to_string(),
        headers: vec![],
        delay: Duration::ZERO,
    };
    let server = Server::start(vec![bad.clone(), bad.clone(), bad]);
    let cache = tempfile::tempdir().unwrap();
    let grader = MllmReward::new(config(&server, "SHARPEN_KEY_C", cache.path())).unwrap();
    let err = grader.score(images(1, 4), &["x"]).unwrap_err().to_string();
    assert!(
        err.contains("malformed grader reply") && err.contains("3 attempts"),
        "{err}"
    );
    assert_eq!(server.requests().len(), 3);
    assert!(
        files_under(cache.path()).is_empty(),
        "nothing cached on failure"
    );

    let server = Server::start(vec![Answer {
        status: 401,
        body: r#"{"error": {"message": "bad key"}}"#.into(),
        headers: vec![],
        delay: Duration::ZERO,
    }]);
    let grader = MllmReward::new(config(&server, "SHARPEN_KEY_C", cache.path())).unwrap();
    let err = grader.score(images(1, 5), &["x"]).unwrap_err().to_string();
    assert!(err.contains("HTTP 401") && err.contains("bad key"), "{err}");
    assert!(!err.contains(KEY));
    assert_eq!(server.requests().len(), 1, "a 401 is not retried");
    let _ = &server.script;
}

#[test]
fn the_command_scores_with_aspects_and_never_shows_the_key() {
    let server = Server::start(vec![]);
    let tmp = tempfile::tempdir().unwrap();
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    std::fs::copy(
        root.join("assets/shapes-sample/images/0000.png"),
        tmp.path().join("a.png"),
    )
    .unwrap();
    std::fs::write(
        tmp.path().join("in.jsonl"),
        "{\"image\": \"a.png\", \"prompt\": \"a red circle below a blue triangle\"}\n",
    )
    .unwrap();
    let grader = tmp.path().join("grader.toml");
    std::fs::write(
        &grader,
        format!(
            "base_url = \"{}\"\nmodel = \"grader-1\"\napi_key_env = \"SHARPEN_KEY_CLI\"\ncache_dir = \"{}\"\n",
            server.url,
            tmp.path().join("cache").display()
        ),
    )
    .unwrap();
    let out = tmp.path().join("out.jsonl");
    let run = Command::new(env!("CARGO_BIN_EXE_sharpen-eval"))
        .args(["score", "--reward", "mllm", "--weights"])
        .arg(&grader)
        .arg("--input")
        .arg(tmp.path().join("in.jsonl"))
        .arg("--output")
        .arg(&out)
        .env("SHARPEN_KEY_CLI", KEY)
        .env("RUST_LOG", "trace")
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(run.status.success(), "{stderr}");
    let line: serde_json::Value =
        serde_json::from_str(std::fs::read_to_string(&out).unwrap().trim()).unwrap();
    assert!((line["score"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    assert_eq!(line["aspects"]["overall"].as_f64().unwrap(), 7.0);
    assert_eq!(line["aspects"]["creativity"].as_f64().unwrap(), 6.0);
    assert_eq!(server.requests()[0].authorization, format!("Bearer {KEY}"));
    assert!(
        !stdout.contains(KEY) && !stderr.contains(KEY),
        "key in the logs"
    );
    assert!(!std::fs::read_to_string(&out).unwrap().contains(KEY));
    for f in files_under(&tmp.path().join("cache")) {
        assert!(!std::fs::read_to_string(f).unwrap().contains(KEY));
    }
    // Without the variable: a clear error naming it, and no request.
    let run = Command::new(env!("CARGO_BIN_EXE_sharpen-eval"))
        .args(["score", "--reward", "mllm", "--weights"])
        .arg(&grader)
        .arg("--input")
        .arg(tmp.path().join("in.jsonl"))
        .arg("--output")
        .arg(&out)
        .env_remove("SHARPEN_KEY_CLI")
        .output()
        .unwrap();
    assert!(!run.status.success());
    assert!(String::from_utf8_lossy(&run.stderr).contains("`SHARPEN_KEY_CLI`"));
}

#[test]
fn at_most_concurrency_requests_are_in_flight() {
    let slow = Answer {
        delay: Duration::from_millis(150),
        ..ok(5.0)
    };
    let server = Server::start(vec![slow; 6]);
    let cache = tempfile::tempdir().unwrap();
    let grader = MllmReward::new(config(&server, "SHARPEN_KEY_D", cache.path())).unwrap();
    let prompts = ["a", "b", "c", "d", "e", "f"];
    let s = scores(grader.score(images(6, 6), &prompts).unwrap());
    assert_eq!(s, vec![0.5; 6]);
    assert_eq!(server.requests().len(), 6);
    let most = server.inflight.lock().unwrap().1;
    assert_eq!(most, 2, "concurrency = 2 in the config");
}
