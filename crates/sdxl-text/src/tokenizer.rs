//! CLIP tokenizers of SDXL, built with the `tokenizers` crate exactly as transformers 5's
//! `CLIPTokenizer` builds its backend: BPE with the `</w>` end-of-word suffix; normaliser NFC,
//! whitespace runs collapsed to one space, lowercase; pre-tokeniser = the CLIP split regex then
//! byte-level (no prefix space); `<|startoftext|> ... <|endoftext|>` added around the ids; truncated
//! and padded to `model_max_length` (77).
//!
//! SDXL's two tokenizers share the vocabulary and differ only in the pad token: `tokenizer` pads with
//! `<|endoftext|>` (49407), `tokenizer_2` pads with `!` (id 0), which is also a special added token,
//! so a literal `!` in a prompt becomes id 0. Like transformers 5 (and unlike the slow Python
//! tokenizer and open_clip), no ftfy clean-up runs before tokenisation.
//!
//! This module holds no file IO: callers pass file contents (see `sharpen-weights` for loading).

use std::collections::BTreeMap;

use serde::Deserialize;
use tokenizers::decoders::byte_level::ByteLevel as ByteLevelDecoder;
use tokenizers::models::bpe::{Merges, Vocab, BPE};
use tokenizers::normalizers::{Lowercase, Replace, Sequence as NormalizerSequence, NFC};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::sequence::Sequence as PreTokenizerSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::processors::roberta::RobertaProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, SplitDelimiterBehavior,
    Tokenizer, TruncationDirection, TruncationParams, TruncationStrategy,
};

/// CLIP's pre-tokenisation regex (transformers 5 `CLIPTokenizer`).
const CLIP_SPLIT_REGEX: &str =
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+";

pub const CLIP_BOS: &str = "<|startoftext|>";
pub const CLIP_EOS: &str = "<|endoftext|>";
/// Sequence length of every CLIP text encoder SDXL uses.
pub const CLIP_MAX_LENGTH: usize = 77;

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("{file}: {message}")]
    InvalidFile { file: String, message: String },
    #[error("special token `{token}` ({role}) is not in the vocabulary")]
    MissingSpecialToken { token: String, role: &'static str },
    #[error("tokenizers: {0}")]
    Backend(String),
}

fn invalid(file: &str, message: impl Into<String>) -> TokenizerError {
    TokenizerError::InvalidFile {
        file: file.to_string(),
        message: message.into(),
    }
}

fn backend(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Backend(e.to_string())
}

/// The text of a CLIP tokenizer folder as the SDXL repository ships it.
#[derive(Debug, Clone, Copy)]
pub struct ClipTokenizerSources<'a> {
    /// `vocab.json`: token -> id.
    pub vocab_json: &'a str,
    /// `merges.txt`: one merge per line, optional `#version` header.
    pub merges_txt: &'a str,
    /// `tokenizer_config.json`, if present.
    pub tokenizer_config_json: Option<&'a str>,
    /// `special_tokens_map.json`, if present.
    pub special_tokens_map_json: Option<&'a str>,
}

/// A token as `tokenizer_config.json` / `special_tokens_map.json` write it: a string or an object.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum TokenSpec {
    Plain(String),
    Full(AddedTokenSpec),
}

impl TokenSpec {
    fn content(&self) -> &str {
        match self {
            Self::Plain(s) => s,
            Self::Full(t) => &t.content,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
struct AddedTokenSpec {
    content: String,
    #[serde(default)]
    lstrip: bool,
    #[serde(default)]
    rstrip: bool,
    #[serde(default)]
    single_word: bool,
    #[serde(default)]
    normalized: Option<bool>,
    #[serde(default)]
    special: Option<bool>,
}

/// The fields of `tokenizer_config.json` and `special_tokens_map.json` this tokenizer uses.
#[derive(Debug, Default, Deserialize)]
struct SpecialTokensFile {
    bos_token: Option<TokenSpec>,
    eos_token: Option<TokenSpec>,
    unk_token: Option<TokenSpec>,
    pad_token: Option<TokenSpec>,
    model_max_length: Option<f64>,
    #[serde(default)]
    added_tokens_decoder: BTreeMap<String, AddedTokenSpec>,
}

/// Special tokens and length resolved from `tokenizer_config.json`, then `special_tokens_map.json`,
/// then CLIP's defaults.
#[derive(Debug, Clone)]
struct SpecialTokens {
    bos: String,
    eos: String,
    unk: String,
    pad: String,
    max_length: usize,
}

impl SpecialTokens {
    fn resolve(
        config: &SpecialTokensFile,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let map = parse_special("special_tokens_map.json", special_tokens_map_json)?;
        let pick = |a: &Option<TokenSpec>, b: &Option<TokenSpec>, default: &str| {
            a.as_ref()
                .or(b.as_ref())
                .map_or(default.to_string(), |t| t.content().to_string())
        };
        let max_length = match config.model_max_length.or(map.model_max_length) {
            // transformers writes a huge sentinel when no limit is set.
            Some(n) if (1.0..=1e6).contains(&n) => n as usize,
            _ => CLIP_MAX_LENGTH,
        };
        Ok(Self {
            bos: pick(&config.bos_token, &map.bos_token, CLIP_BOS),
            eos: pick(&config.eos_token, &map.eos_token, CLIP_EOS),
            unk: pick(&config.unk_token, &map.unk_token, CLIP_EOS),
            pad: pick(&config.pad_token, &map.pad_token, CLIP_EOS),
            max_length,
        })
    }
}

/// A CLIP tokenizer that returns fixed-length id sequences (BOS, tokens, EOS, padding).
#[derive(Debug, Clone)]
pub struct ClipTokenizer {
    inner: Tokenizer,
    bos_id: u32,
    eos_id: u32,
    pad_id: u32,
    max_length: usize,
}

impl ClipTokenizer {
    /// Builds the tokenizer from `vocab.json` + `merges.txt` (+ the two optional config files), as
    /// the SDXL repository ships `tokenizer/` and `tokenizer_2/`.
    pub fn from_sources(src: ClipTokenizerSources<'_>) -> Result<Self, TokenizerError> {
        let vocab_map: BTreeMap<String, u32> = serde_json::from_str(src.vocab_json)
            .map_err(|e| invalid("vocab.json", format!("not a token -> id JSON object: {e}")))?;
        let vocab: Vocab = vocab_map.iter().map(|(k, v)| (k.clone(), *v)).collect();
        let merges = parse_merges(src.merges_txt)?;

        let config = parse_special("tokenizer_config.json", src.tokenizer_config_json)?;
        let SpecialTokens {
            bos,
            eos,
            unk,
            pad,
            max_length,
        } = SpecialTokens::resolve(&config, src.special_tokens_map_json)?;

        // Special tokens must be real vocabulary entries: adding one would grow the id range past
        // the text encoder's embedding table.
        for (token, role) in [
            (&bos, "bos_token"),
            (&eos, "eos_token"),
            (&unk, "unk_token"),
            (&pad, "pad_token"),
        ] {
            if !vocab_map.contains_key(token.as_str()) {
                return Err(TokenizerError::MissingSpecialToken {
                    token: token.clone(),
                    role,
                });
            }
        }

        let model = BPE::builder()
            .vocab_and_merges(vocab, merges)
            .unk_token(unk.clone())
            .continuing_subword_prefix(String::new())
            .end_of_word_suffix("</w>".to_string())
            .fuse_unk(false)
            .build()
            .map_err(|e| invalid("vocab.json/merges.txt", format!("invalid BPE model: {e}")))?;

        let mut inner = Tokenizer::new(model);
        let normalizer = NormalizerSequence::new(vec![
            NFC.into(),
            Replace::new(
                tokenizers::normalizers::replace::ReplacePattern::Regex(r"\s+".into()),
                " ",
            )
            .map_err(backend)?
            .into(),
            Lowercase.into(),
        ]);
        inner.with_normalizer(Some(normalizer)).map_err(backend)?;
        let split = Split::new(
            SplitPattern::Regex(CLIP_SPLIT_REGEX.into()),
            SplitDelimiterBehavior::Removed,
            true,
        )
        .map_err(backend)?;
        inner.with_pre_tokenizer(Some(PreTokenizerSequence::new(vec![
            split.into(),
            ByteLevel::new(false, true, true).into(),
        ])));
        inner.with_decoder(Some(ByteLevelDecoder::default()));

        // Added tokens: what the config lists, then the special tokens themselves.
        let mut added: Vec<AddedToken> = config
            .added_tokens_decoder
            .values()
            .map(|t| {
                let special = t.special.unwrap_or(true);
                AddedToken::from(t.content.clone(), special)
                    .lstrip(t.lstrip)
                    .rstrip(t.rstrip)
                    .single_word(t.single_word)
                    .normalized(t.normalized.unwrap_or(!special))
            })
            .collect();
        for tok in [&bos, &eos, &unk, &pad] {
            if !added.iter().any(|a| &a.content == tok) {
                added.push(AddedToken::from(tok.clone(), true));
            }
        }
        inner.add_special_tokens(added).map_err(backend)?;

        Self::finish(inner, &bos, &eos, &pad, max_length)
    }

    /// Builds the tokenizer from a `tokenizer.json` (its model, normaliser, pre-tokeniser and added
    /// tokens are used as written); special tokens and length come from the folder's config files,
    /// with the same defaults as [`Self::from_sources`].
    pub fn from_tokenizer_json(
        tokenizer_json: &str,
        tokenizer_config_json: Option<&str>,
        special_tokens_map_json: Option<&str>,
    ) -> Result<Self, TokenizerError> {
        let inner: Tokenizer = tokenizer_json
            .parse()
            .map_err(|e| invalid("tokenizer.json", format!("cannot be parsed: {e}")))?;
        let config = parse_special("tokenizer_config.json", tokenizer_config_json)?;
        let special = SpecialTokens::resolve(&config, special_tokens_map_json)?;
        Self::finish(
            inner,
            &special.bos,
            &special.eos,
            &special.pad,
            special.max_length,
        )
    }

    /// The whole tokenizer (model, pipeline, padding, truncation) as `tokenizer.json` text.
    pub fn to_tokenizer_json(&self) -> Result<String, TokenizerError> {
        self.inner.to_string(false).map_err(backend)
    }

    fn finish(
        mut inner: Tokenizer,
        bos: &str,
        eos: &str,
        pad: &str,
        max_length: usize,
    ) -> Result<Self, TokenizerError> {
        let id = |tok: &str, role| {
            inner
                .token_to_id(tok)
                .ok_or_else(|| TokenizerError::MissingSpecialToken {
                    token: tok.to_string(),
                    role,
                })
        };
        let bos_id = id(bos, "bos_token")?;
        let eos_id = id(eos, "eos_token")?;
        let pad_id = id(pad, "pad_token")?;
        inner.with_post_processor(Some(
            RobertaProcessing::new((eos.to_string(), eos_id), (bos.to_string(), bos_id))
                .trim_offsets(false)
                .add_prefix_space(false),
        ));
        inner
            .with_truncation(Some(TruncationParams {
                direction: TruncationDirection::Right,
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
            }))
            .map_err(backend)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id,
            pad_type_id: 0,
            pad_token: pad.to_string(),
        }));
        Ok(Self {
            inner,
            bos_id,
            eos_id,
            pad_id,
            max_length,
        })
    }

    /// Token ids of one prompt: BOS, at most `max_length - 2` tokens, EOS, padding; always
    /// `max_length` long.
    pub fn encode(&self, prompt: &str) -> Result<Vec<u32>, TokenizerError> {
        let enc = self.inner.encode(prompt, true).map_err(backend)?;
        Ok(enc.get_ids().to_vec())
    }

    /// [`Self::encode`] for several prompts.
    pub fn encode_batch(&self, prompts: &[&str]) -> Result<Vec<Vec<u32>>, TokenizerError> {
        prompts.iter().map(|p| self.encode(p)).collect()
    }

    pub fn bos_id(&self) -> u32 {
        self.bos_id
    }

    pub fn eos_id(&self) -> u32 {
        self.eos_id
    }

    pub fn pad_id(&self) -> u32 {
        self.pad_id
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }
}

fn parse_merges(text: &str) -> Result<Merges, TokenizerError> {
    let mut merges = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if (i == 0 && line.starts_with("#version")) || line.is_empty() {
            continue;
        }
        let mut parts = line.split(' ');
        match (parts.next(), parts.next(), parts.next()) {
            (Some(a), Some(b), None) if !a.is_empty() && !b.is_empty() => {
                merges.push((a.to_string(), b.to_string()))
            }
            _ => {
                return Err(invalid(
                    "merges.txt",
                    format!(
                        "line {}: expected two space-separated symbols, found `{line}`",
                        i + 1
                    ),
                ));
            }
        }
    }
    Ok(merges)
}

fn parse_special(file: &str, text: Option<&str>) -> Result<SpecialTokensFile, TokenizerError> {
    match text {
        None => Ok(SpecialTokensFile::default()),
        Some(text) => serde_json::from_str(text).map_err(|e| invalid(file, e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toy(pad: &str, config: Option<&str>) -> Result<ClipTokenizer, TokenizerError> {
        let vocab = r#"{"!": 0, "a": 1, "b": 2, "a</w>": 3, "b</w>": 4, "ab</w>": 5, "!</w>": 6,
            "<|startoftext|>": 7, "<|endoftext|>": 8}"#;
        let map = format!(r#"{{"pad_token": "{pad}", "model_max_length": 6}}"#);
        ClipTokenizer::from_sources(ClipTokenizerSources {
            vocab_json: vocab,
            merges_txt: "#version: 0.2\na b</w>\n",
            tokenizer_config_json: config,
            special_tokens_map_json: Some(&map),
        })
    }

    #[test]
    fn pads_truncates_and_merges() {
        let t = toy("<|endoftext|>", None).unwrap();
        assert_eq!(t.encode("ab").unwrap(), vec![7, 5, 8, 8, 8, 8]);
        assert_eq!(t.encode("AB a").unwrap(), vec![7, 5, 3, 8, 8, 8]);
        // Truncated to BOS + 4 tokens + EOS.
        assert_eq!(t.encode("a a a a a a a").unwrap(), vec![7, 3, 3, 3, 3, 8]);
        assert_eq!(t.encode("").unwrap(), vec![7, 8, 8, 8, 8, 8]);
    }

    #[test]
    fn bang_pad_token_is_special() {
        let t1 = toy("<|endoftext|>", None).unwrap();
        let t2 = toy("!", None).unwrap();
        assert_eq!(t1.encode("a!").unwrap(), vec![7, 3, 6, 8, 8, 8]);
        assert_eq!(t2.encode("a!").unwrap(), vec![7, 3, 0, 8, 0, 0]);
        assert_eq!(t2.pad_id(), 0);
    }

    #[test]
    fn bad_files_name_themselves() {
        let err = ClipTokenizer::from_sources(ClipTokenizerSources {
            vocab_json: "[1, 2]",
            merges_txt: "",
            tokenizer_config_json: None,
            special_tokens_map_json: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("vocab.json"), "{err}");
        let err = ClipTokenizer::from_sources(ClipTokenizerSources {
            vocab_json: r#"{"a": 0}"#,
            merges_txt: "a b c\n",
            tokenizer_config_json: None,
            special_tokens_map_json: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("merges.txt: line 1"), "{err}");
        let err = toy("!", Some("{not json")).unwrap_err();
        assert!(err.to_string().contains("tokenizer_config.json"), "{err}");
        let err = toy("<pad>", None).unwrap_err();
        assert!(err.to_string().contains("<pad>"), "{err}");
    }
}
