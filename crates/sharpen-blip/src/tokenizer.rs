//! BLIP's text tokenizer: bert-base-uncased WordPiece (`vocab.txt`) with `[DEC]` and `[ENC]`
//! added after the vocabulary, `[CLS] ... [SEP]`, padded with `[PAD]` and truncated to a fixed
//! length (35 for ImageReward), as transformers' `BertTokenizer` does it.

use std::collections::HashMap;

use tokenizers::models::wordpiece::WordPiece;
use tokenizers::normalizers::bert::BertNormalizer;
use tokenizers::pre_tokenizers::bert::BertPreTokenizer;
use tokenizers::processors::bert::BertProcessing;
use tokenizers::{
    AddedToken, PaddingDirection, PaddingParams, PaddingStrategy, Tokenizer, TruncationDirection,
    TruncationParams, TruncationStrategy,
};

#[derive(Debug, thiserror::Error)]
pub enum TokenizerError {
    #[error("vocab.txt: {0}")]
    Vocab(String),
    #[error("tokenizer: {0}")]
    Backend(String),
}

/// Ids and attention masks of a batch of prompts, each exactly `max_length` long.
#[derive(Debug, Clone, PartialEq)]
pub struct BertEncoding {
    pub ids: Vec<Vec<u32>>,
    pub attention_mask: Vec<Vec<u32>>,
}

pub struct BertTokenizer {
    inner: Tokenizer,
    max_length: usize,
}

fn backend(e: impl std::fmt::Display) -> TokenizerError {
    TokenizerError::Backend(e.to_string())
}

impl BertTokenizer {
    /// From the text of a `vocab.txt` (one token per line, id = line number).
    pub fn from_vocab_txt(vocab: &str, max_length: usize) -> Result<Self, TokenizerError> {
        let map: HashMap<String, u32> = vocab
            .lines()
            .enumerate()
            .map(|(i, t)| (t.trim_end_matches('\r').to_string(), i as u32))
            .collect();
        let id = |t: &str| {
            map.get(t)
                .copied()
                .ok_or_else(|| TokenizerError::Vocab(format!("no `{t}` token")))
        };
        let (cls, sep, pad) = (id("[CLS]")?, id("[SEP]")?, id("[PAD]")?);
        id("[UNK]")?;
        let model = WordPiece::builder()
            .vocab(map.clone().into_iter().collect::<ahash::AHashMap<_, _>>())
            .unk_token("[UNK]".into())
            .continuing_subword_prefix("##".into())
            .max_input_chars_per_word(100)
            .build()
            .map_err(backend)?;
        let mut inner = Tokenizer::new(model);
        inner
            .with_normalizer(Some(BertNormalizer::new(true, true, None, true)))
            .map_err(backend)?;
        inner.with_pre_tokenizer(Some(BertPreTokenizer));
        inner.with_post_processor(Some(BertProcessing::new(
            ("[SEP]".into(), sep),
            ("[CLS]".into(), cls),
        )));
        inner
            .with_truncation(Some(TruncationParams {
                max_length,
                strategy: TruncationStrategy::LongestFirst,
                stride: 0,
                direction: TruncationDirection::Right,
            }))
            .map_err(backend)?;
        inner.with_padding(Some(PaddingParams {
            strategy: PaddingStrategy::Fixed(max_length),
            direction: PaddingDirection::Right,
            pad_to_multiple_of: None,
            pad_id: pad,
            pad_type_id: 0,
            pad_token: "[PAD]".into(),
        }));
        // The special tokens the BERT vocabulary has, and BLIP's two added ones (ids after it).
        let specials: Vec<AddedToken> = [
            "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "[ENC]",
        ]
        .iter()
        .filter(|t| map.contains_key(**t) || **t == "[DEC]" || **t == "[ENC]")
        .map(|t| AddedToken::from(t.to_string(), true))
        .collect();
        inner.add_special_tokens(specials).map_err(backend)?;
        Ok(Self { inner, max_length })
    }

    pub fn max_length(&self) -> usize {
        self.max_length
    }

    /// The vocabulary size with BLIP's added tokens (30524 for bert-base-uncased).
    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    pub fn encode_batch(&self, prompts: &[&str]) -> Result<BertEncoding, TokenizerError> {
        let mut out = BertEncoding {
            ids: Vec::new(),
            attention_mask: Vec::new(),
        };
        for p in prompts {
            let enc = self.inner.encode(*p, true).map_err(backend)?;
            out.ids.push(enc.get_ids().to_vec());
            out.attention_mask.push(enc.get_attention_mask().to_vec());
        }
        Ok(out)
    }
}
