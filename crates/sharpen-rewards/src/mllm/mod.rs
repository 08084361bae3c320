//! `mllm`: an image grader behind any OpenAI-compatible chat-completions endpoint.
//!
//! Each image goes as a base64 PNG data URL with our grading prompt, which asks for five aspect
//! scores (accuracy to prompt, creativity, visual quality, consistency, thematic resonance) and an
//! overall score, 0 to 10, as a JSON object. The reply is parsed strictly (exactly those six
//! numeric keys, optionally inside one ```json fence); reward = overall / 10. Requests are retried
//! with exponential backoff on 429, 5xx, timeouts and malformed replies; at most `concurrency` run
//! at once; every grade is cached on disk under a hash of (endpoint, model, prompt template,
//! prompt, image), so a repeated request is never sent twice.
//!
//! The API key is read from the environment variable `api_key_env` and goes only into the
//! `Authorization` header: it is never logged, cached or written into errors.

mod reply;

pub use reply::{parse_reply, png_bytes, Grades, ASPECTS, DEFAULT_TEMPLATE};

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::{check_batch, failed, to_rgb8, Reward, RewardError, RewardInfo, Scored};
use reply::excerpt;

/// The grader's settings (a TOML file: `sharpen-eval score --reward mllm --weights grader.toml`).
#[derive(Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MllmConfig {
    /// The API root, e.g. `https://api.openai.com/v1`; requests go to `{base_url}/chat/completions`.
    pub base_url: String,
    pub model: String,
    /// The environment variable holding the API key (its value is never written anywhere).
    #[serde(default = "d_key_env")]
    pub api_key_env: String,
    /// Seconds per request before it counts as timed out.
    #[serde(default = "d_timeout")]
    pub timeout_s: f64,
    /// Retries after the first attempt (429, 5xx, timeouts, malformed replies).
    #[serde(default = "d_retries")]
    pub max_retries: u32,
    /// The first backoff in seconds; it doubles with each retry (a `Retry-After` header wins,
    /// up to 60 s).
    #[serde(default = "d_backoff")]
    pub backoff_s: f64,
    /// Requests in flight at once.
    #[serde(default = "d_concurrency")]
    pub concurrency: usize,
    /// Where grades are cached (default: `$XDG_CACHE_HOME/sharpen/mllm` or `~/.cache/sharpen/mllm`).
    #[serde(default)]
    pub cache_dir: Option<PathBuf>,
    /// The grading prompt, with `{prompt}` where the image's prompt goes (default: ours).
    #[serde(default)]
    pub prompt_template: Option<String>,
    /// Sent as `max_tokens` when set.
    #[serde(default)]
    pub max_tokens: Option<u32>,
}

// The key never lives in this struct, but keep Debug terse and explicit anyway.
impl std::fmt::Debug for MllmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MllmConfig")
            .field("base_url", &self.base_url)
            .field("model", &self.model)
            .field("api_key_env", &self.api_key_env)
            .finish_non_exhaustive()
    }
}

fn d_key_env() -> String {
    "OPENAI_API_KEY".to_string()
}
fn d_timeout() -> f64 {
    60.0
}
fn d_retries() -> u32 {
    4
}
fn d_backoff() -> f64 {
    1.0
}
fn d_concurrency() -> usize {
    4
}

impl MllmConfig {
    pub fn read(path: &Path) -> Result<Self, RewardError> {
        let text = std::fs::read_to_string(path)
            .map_err(|e| failed("mllm", format!("{}: {e}", path.display())))?;
        let config: Self = toml::from_str(&text)
            .map_err(|e| failed("mllm", format!("{}: {e}", path.display())))?;
        config
            .validate()
            .map_err(|e| failed("mllm", format!("{}: {e}", path.display())))?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !(self.base_url.starts_with("http://") || self.base_url.starts_with("https://")) {
            return Err(format!(
                "`base_url` {:?} is not an http(s) URL",
                self.base_url
            ));
        }
        if self.model.is_empty() {
            return Err("`model` is empty".into());
        }
        if !(self.timeout_s.is_finite() && self.timeout_s > 0.0) {
            return Err("`timeout_s` must be positive".into());
        }
        if !(self.backoff_s.is_finite() && self.backoff_s >= 0.0) {
            return Err("`backoff_s` must be zero or positive".into());
        }
        if self.concurrency == 0 {
            return Err("`concurrency` must be at least 1".into());
        }
        if !self.template().contains("{prompt}") {
            return Err("`prompt_template` has no `{prompt}`".into());
        }
        Ok(())
    }

    pub fn template(&self) -> &str {
        self.prompt_template.as_deref().unwrap_or(DEFAULT_TEMPLATE)
    }

    pub fn endpoint(&self) -> String {
        format!("{}/chat/completions", self.base_url.trim_end_matches('/'))
    }

    fn cache_dir(&self) -> PathBuf {
        if let Some(dir) = &self.cache_dir {
            return dir.clone();
        }
        let base = std::env::var_os("XDG_CACHE_HOME")
            .map(PathBuf::from)
            .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cache")))
            .unwrap_or_else(|| PathBuf::from(".cache"));
        base.join("sharpen").join("mllm")
    }
}

/// The grader: settings, the key (kept private) and the cache folder.
pub struct MllmReward {
    config: MllmConfig,
    api_key: String,
    cache: PathBuf,
    /// One HTTP agent for every request (connections are reused).
    agent: ureq::Agent,
}

impl MllmReward {
    /// Reads the key from `config.api_key_env` (an error naming the variable when unset).
    pub fn new(config: MllmConfig) -> Result<Self, RewardError> {
        config.validate().map_err(|e| failed("mllm", e))?;
        let api_key = std::env::var(&config.api_key_env).map_err(|_| {
            failed(
                "mllm",
                format!(
                    "the environment variable `{}` (api_key_env) holding the API key is not set",
                    config.api_key_env
                ),
            )
        })?;
        let cache = config.cache_dir();
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(config.timeout_s))
            .build();
        Ok(Self {
            config,
            api_key,
            cache,
            agent,
        })
    }

    /// The cache key of one request.
    pub fn cache_key(&self, prompt: &str, png: &[u8]) -> String {
        let image = Sha256::digest(png);
        let mut h = Sha256::new();
        for part in [
            self.config.endpoint().as_bytes(),
            self.config.model.as_bytes(),
            self.config.template().as_bytes(),
            prompt.as_bytes(),
            &image[..],
        ] {
            h.update((part.len() as u64).to_le_bytes());
            h.update(part);
        }
        format!("{:x}", h.finalize())
    }

    fn cached(&self, key: &str) -> Option<Grades> {
        let text = std::fs::read_to_string(self.cache.join(format!("{key}.json"))).ok()?;
        serde_json::from_str(&text).ok()
    }

    fn store(&self, key: &str, grades: &Grades) -> Result<(), RewardError> {
        std::fs::create_dir_all(&self.cache)
            .map_err(|e| failed("mllm", format!("{}: {e}", self.cache.display())))?;
        let path = self.cache.join(format!("{key}.json"));
        let tmp = self.cache.join(format!("{key}.json.partial"));
        let text = serde_json::to_string(grades).expect("grades serialise");
        std::fs::write(&tmp, text)
            .and_then(|_| std::fs::rename(&tmp, &path))
            .map_err(|e| failed("mllm", format!("{}: {e}", path.display())))
    }

    fn request_body(&self, prompt: &str, png: &[u8]) -> String {
        let url = format!(
            "data:image/png;base64,{}",
            base64::engine::general_purpose::STANDARD.encode(png)
        );
        let mut body = serde_json::json!({
            "model": self.config.model,
            "temperature": 0,
            "messages": [{
                "role": "user",
                "content": [
                    {"type": "text", "text": self.config.template().replace("{prompt}", prompt)},
                    {"type": "image_url", "image_url": {"url": url}},
                ],
            }],
        });
        if let Some(max) = self.config.max_tokens {
            body["max_tokens"] = max.into();
        }
        body.to_string()
    }

    /// Grades one image (from the cache when it can), retrying as configured.
    pub fn grade(&self, prompt: &str, png: &[u8]) -> Result<Grades, RewardError> {
        let key = self.cache_key(prompt, png);
        if let Some(grades) = self.cached(&key) {
            tracing::debug!(key = %key, "mllm: cache hit");
            return Ok(grades);
        }
        let body = self.request_body(prompt, png);
        let endpoint = self.config.endpoint();
        let mut last = String::new();
        for attempt in 0..=self.config.max_retries {
            if attempt > 0 {
                tracing::debug!(attempt, reason = %last, "mllm: retrying");
            }
            let (retry_after, outcome) = match self
                .agent
                .post(&endpoint)
                .set("Authorization", &format!("Bearer {}", self.api_key))
                .set("Content-Type", "application/json")
                .send_string(&body)
            {
                Ok(resp) => match resp.into_string() {
                    Ok(text) => match parse_reply(&text) {
                        Ok(grades) => {
                            self.store(&key, &grades)?;
                            return Ok(grades);
                        }
                        Err(e) => (None, format!("malformed grader reply: {e}")),
                    },
                    Err(e) => (None, format!("reading the reply: {e}")),
                },
                Err(ureq::Error::Status(code, resp)) => {
                    let retry_after = resp
                        .header("Retry-After")
                        .and_then(|v| v.trim().parse::<f64>().ok());
                    let text = resp.into_string().unwrap_or_default();
                    let message = format!("HTTP {code} from {endpoint}: {}", excerpt(&text));
                    if code != 429 && code < 500 {
                        return Err(failed("mllm", message));
                    }
                    (retry_after, message)
                }
                Err(ureq::Error::Transport(t)) => {
                    let timed_out = t.to_string().to_lowercase().contains("timed out");
                    let what = if timed_out {
                        format!("request timed out after {} s", self.config.timeout_s)
                    } else {
                        format!("request failed: {t}")
                    };
                    (None, what)
                }
            };
            last = outcome;
            if attempt < self.config.max_retries {
                let backoff = retry_after
                    .unwrap_or(self.config.backoff_s * 2f64.powi(attempt as i32))
                    .min(60.0);
                std::thread::sleep(Duration::from_secs_f64(backoff));
            }
        }
        Err(failed(
            "mllm",
            format!(
                "{endpoint}: giving up after {} attempts; last: {last}",
                self.config.max_retries + 1
            ),
        ))
    }
}

impl<B: Backend> Reward<B> for MllmReward {
    fn info(&self) -> RewardInfo {
        RewardInfo {
            name: "mllm",
            range: (0.0, 1.0),
            differentiable: false,
        }
    }

    fn score(&self, images: Tensor<B, 4>, prompts: &[&str]) -> Result<Tensor<B, 1>, RewardError> {
        Ok(self.score_detailed(images, prompts)?.scores)
    }

    fn score_detailed(
        &self,
        images: Tensor<B, 4>,
        prompts: &[&str],
    ) -> Result<Scored<B>, RewardError> {
        let [batch, _, h, w] = images.dims();
        check_batch("mllm", batch, prompts.len())?;
        let device = images.device();
        let pngs: Vec<Vec<u8>> = to_rgb8(images)
            .iter()
            .map(|rgb| png_bytes(rgb, w, h))
            .collect();
        let results: Vec<Mutex<Option<Result<Grades, RewardError>>>> =
            (0..batch).map(|_| Mutex::new(None)).collect();
        let next = Mutex::new(0usize);
        std::thread::scope(|s| {
            for _ in 0..self.config.concurrency.min(batch) {
                s.spawn(|| loop {
                    let i = {
                        let mut n = next.lock().expect("queue lock");
                        let i = *n;
                        *n += 1;
                        i
                    };
                    if i >= batch {
                        break;
                    }
                    let r = self.grade(prompts[i], &pngs[i]);
                    *results[i].lock().expect("result lock") = Some(r);
                });
            }
        });
        let mut scores = Vec::with_capacity(batch);
        let mut aspects = Vec::with_capacity(batch);
        for r in results {
            let grades = r
                .into_inner()
                .expect("result lock")
                .expect("every image graded")?;
            scores.push((grades["overall"] / 10.0) as f32);
            aspects.push(grades);
        }
        Ok(Scored {
            scores: Tensor::from_data(TensorData::new(scores, [batch]), &device),
            aspects,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_keys_change_with_every_part() {
        std::env::set_var("SHARPEN_TEST_KEY_UNIT", "k");
        let config = MllmConfig {
            base_url: "http://127.0.0.1:1/v1".into(),
            model: "m".into(),
            api_key_env: "SHARPEN_TEST_KEY_UNIT".into(),
            timeout_s: 1.0,
            max_retries: 0,
            backoff_s: 0.0,
            concurrency: 1,
            cache_dir: Some(PathBuf::from("/nonexistent")),
            prompt_template: None,
            max_tokens: None,
        };
        let base = MllmReward::new(config.clone())
            .unwrap()
            .cache_key("p", b"img");
        let other = |c: MllmConfig| MllmReward::new(c).unwrap().cache_key("p", b"img");
        assert_ne!(
            base,
            MllmReward::new(config.clone())
                .unwrap()
                .cache_key("q", b"img")
        );
        assert_ne!(
            base,
            MllmReward::new(config.clone())
                .unwrap()
                .cache_key("p", b"imh")
        );
        assert_ne!(
            base,
            other(MllmConfig {
                model: "n".into(),
                ..config.clone()
            })
        );
        assert_ne!(
            base,
            other(MllmConfig {
                base_url: "http://127.0.0.1:2/v1".into(),
                ..config.clone()
            })
        );
        assert_ne!(
            base,
            other(MllmConfig {
                prompt_template: Some("{prompt}!".into()),
                ..config.clone()
            })
        );
        // Not part of the key: retries, timeouts, concurrency.
        assert_eq!(
            base,
            other(MllmConfig {
                max_retries: 3,
                timeout_s: 9.0,
                ..config.clone()
            })
        );
        let e = MllmReward::new(MllmConfig {
            api_key_env: "SHARPEN_TEST_UNSET_VAR".into(),
            ..config
        })
        .err()
        .unwrap()
        .to_string();
        assert!(
            e.contains("`SHARPEN_TEST_UNSET_VAR`") && e.contains("not set"),
            "{e}"
        );
    }
}
