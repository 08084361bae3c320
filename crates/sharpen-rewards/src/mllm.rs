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

use std::collections::BTreeMap;
use std::io::Cursor;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use base64::Engine;
use burn::tensor::backend::Backend;
use burn::tensor::{Tensor, TensorData};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::clip::failed;
use crate::{check_batch, to_rgb8, Reward, RewardError, RewardInfo, Scored};

/// The aspects the grader scores, in reply order; `overall` comes last.
pub const ASPECTS: [&str; 6] = [
    "accuracy_to_prompt",
    "creativity",
    "visual_quality",
    "consistency",
    "thematic_resonance",
    "overall",
];

/// Our grading prompt; `{prompt}` is replaced by the image's prompt.
pub const DEFAULT_TEMPLATE: &str = "You are judging an image that a text-to-image model made \
from this prompt:\n\"{prompt}\"\n\nScore the image on each aspect from 0 (worst) to 10 (best):\n\
- accuracy_to_prompt: does it show everything the prompt asks for, with the right attributes, \
counts and relations?\n- creativity: is the interpretation original and interesting?\n\
- visual_quality: is it sharp, well lit and free of artefacts and distortions?\n\
- consistency: are objects, lighting, perspective and style coherent across the image?\n\
- thematic_resonance: does it convey the mood and theme the prompt implies?\n\
Then give overall, your overall judgement from 0 to 10.\n\
Answer with one JSON object and nothing else, with exactly these keys and numbers as values: \
{\"accuracy_to_prompt\": n, \"creativity\": n, \"visual_quality\": n, \"consistency\": n, \
\"thematic_resonance\": n, \"overall\": n}";

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

/// One image's grades: every aspect in [0, 10].
pub type Grades = BTreeMap<String, f64>;

/// The grader: settings, the key (kept private) and the cache folder.
pub struct MllmReward {
    config: MllmConfig,
    api_key: String,
    cache: PathBuf,
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
        Ok(Self {
            config,
            api_key,
            cache,
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
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs_f64(self.config.timeout_s))
            .build();
        let body = self.request_body(prompt, png);
        let endpoint = self.config.endpoint();
        let mut last = String::new();
        for attempt in 0..=self.config.max_retries {
            if attempt > 0 {
                tracing::debug!(attempt, reason = %last, "mllm: retrying");
            }
            let (retry_after, outcome) = match agent
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

fn excerpt(text: &str) -> String {
    let t: String = text.chars().take(200).collect();
    if text.chars().count() > 200 {
        format!("{t}…")
    } else {
        t
    }
}

/// The grades in a chat-completions reply: `choices[0].message.content` must be one JSON object
/// (optionally in a ```json fence) with exactly the [`ASPECTS`] as numbers in [0, 10].
pub fn parse_reply(body: &str) -> Result<Grades, String> {
    let reply: serde_json::Value =
        serde_json::from_str(body).map_err(|e| format!("the reply is not JSON ({e})"))?;
    let content = reply["choices"][0]["message"]["content"]
        .as_str()
        .ok_or_else(|| format!("no choices[0].message.content in {}", excerpt(body)))?;
    let mut inner = content.trim();
    if let Some(rest) = inner.strip_prefix("```") {
        let rest = rest.strip_prefix("json").unwrap_or(rest);
        inner = rest
            .trim()
            .strip_suffix("```")
            .ok_or_else(|| format!("unterminated code fence in {:?}", excerpt(content)))?
            .trim();
    }
    let object: serde_json::Map<String, serde_json::Value> = serde_json::from_str(inner)
        .map_err(|e| format!("content is not a JSON object ({e}): {:?}", excerpt(content)))?;
    let mut grades = Grades::new();
    for aspect in ASPECTS {
        let value = object
            .get(aspect)
            .ok_or_else(|| format!("missing `{aspect}` in {:?}", excerpt(content)))?
            .as_f64()
            .ok_or_else(|| format!("`{aspect}` is not a number in {:?}", excerpt(content)))?;
        if !(0.0..=10.0).contains(&value) {
            return Err(format!("`{aspect}` = {value} is outside 0..10"));
        }
        grades.insert(aspect.to_string(), value);
    }
    if let Some(extra) = object.keys().find(|k| !ASPECTS.contains(&k.as_str())) {
        return Err(format!(
            "unexpected key `{extra}` in {:?}",
            excerpt(content)
        ));
    }
    Ok(grades)
}

/// One image as PNG bytes.
pub fn png_bytes(rgb: &[u8], width: usize, height: usize) -> Vec<u8> {
    let mut out = Vec::new();
    {
        let mut encoder = png::Encoder::new(Cursor::new(&mut out), width as u32, height as u32);
        encoder.set_color(png::ColorType::Rgb);
        encoder.set_depth(png::BitDepth::Eight);
        let mut writer = encoder.write_header().expect("in-memory PNG header");
        writer.write_image_data(rgb).expect("in-memory PNG data");
    }
    out
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

    fn reply(content: &str) -> String {
        serde_json::json!({"choices": [{"message": {"role": "assistant", "content": content}}]})
            .to_string()
    }

    const GOOD: &str = r#"{"accuracy_to_prompt": 8, "creativity": 6.5, "visual_quality": 7, "consistency": 9, "thematic_resonance": 5, "overall": 7.5}"#;

    #[test]
    fn replies_are_parsed_strictly() {
        let g = parse_reply(&reply(GOOD)).unwrap();
        assert_eq!(g["overall"], 7.5);
        assert_eq!(g.len(), 6);
        let fenced = parse_reply(&reply(&format!("```json\n{GOOD}\n```"))).unwrap();
        assert_eq!(fenced, g);
        for (content, needle) in [
            ("The image is nice. Overall 7", "not a JSON object"),
            (
                &GOOD.replace("\"overall\": 7.5", "\"overall\": 11"),
                "outside 0..10",
            ),
            (&GOOD.replace(", \"overall\": 7.5", ""), "missing `overall`"),
            (
                &GOOD.replace("7.5}", "7.5, \"notes\": \"x\"}"),
                "unexpected key `notes`",
            ),
            (
                &GOOD.replace("\"creativity\": 6.5", "\"creativity\": \"high\""),
                "`creativity` is not a number",
            ),
        ] {
            let e = parse_reply(&reply(content)).unwrap_err();
            assert!(e.contains(needle), "{content}: {e}");
        }
        assert!(parse_reply("<html>").unwrap_err().contains("not JSON"));
        assert!(parse_reply("{}").unwrap_err().contains("choices[0]"));
    }

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
