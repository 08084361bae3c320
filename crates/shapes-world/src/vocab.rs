//! A CLIP tokenizer vocabulary for the shapes world: the same byte-level BPE layout as CLIP's
//! `vocab.json` / `merges.txt` (256 byte symbols, the same 256 with the `</w>` end-of-word
//! suffix, merges, then `<|startoftext|>` and `<|endoftext|>` last), with just enough merges that
//! every word of the world's captions is one token. Any other text still tokenises (into bytes),
//! so the tokenizer code path is CLIP's own; only the vocabulary is tiny (a few hundred ids
//! instead of 49,408), which keeps the text encoders' embedding tables small.

use std::collections::BTreeMap;

use crate::scene::{COLORS, RELATIONS, SHAPES};

/// Every word the captions use, in a fixed order (the order decides the merge list).
pub fn caption_words() -> Vec<String> {
    let mut words: Vec<String> = vec!["a".into()];
    let mut push = |w: &str| {
        if !words.iter().any(|x| x == w) {
            words.push(w.to_string());
        }
    };
    for c in COLORS {
        push(c.word());
    }
    for s in SHAPES {
        push(s.word());
    }
    for r in RELATIONS {
        for w in r.words().split(' ') {
            push(w);
        }
    }
    words
}

/// GPT-2 / CLIP byte -> printable character table, in CLIP's vocabulary order.
fn byte_symbols() -> Vec<(u8, char)> {
    let printable = |b: u8| (b'!'..=b'~').contains(&b) || (0xA1..=0xAC).contains(&b) || b >= 0xAE;
    let mut out: Vec<(u8, char)> = (0..=255u8)
        .filter(|&b| printable(b))
        .map(|b| (b, char::from(b)))
        .collect();
    let mut n = 0u32;
    for b in 0..=255u8 {
        if !printable(b) {
            out.push((b, char::from_u32(256 + n).expect("a valid char")));
            n += 1;
        }
    }
    out
}

/// Applies `merges` (by rank) to one word's symbols, as BPE does.
fn apply_merges(
    mut symbols: Vec<String>,
    ranks: &BTreeMap<(String, String), usize>,
) -> Vec<String> {
    loop {
        let best = symbols
            .windows(2)
            .enumerate()
            .filter_map(|(i, w)| ranks.get(&(w[0].clone(), w[1].clone())).map(|r| (*r, i)))
            .min();
        let Some((_, i)) = best else {
            return symbols;
        };
        let merged = format!("{}{}", symbols[i], symbols[i + 1]);
        symbols.splice(i..i + 2, [merged]);
    }
}

/// The tokenizer files' text: (`vocab.json`, `merges.txt`).
pub fn clip_tokenizer_files() -> (String, String) {
    let bytes = byte_symbols();
    let mut vocab: Vec<String> = bytes.iter().map(|(_, c)| c.to_string()).collect();
    vocab.extend(bytes.iter().map(|(_, c)| format!("{c}</w>")));
    let mut merges: Vec<(String, String)> = Vec::new();
    let mut ranks = BTreeMap::new();
    for word in caption_words() {
        // ASCII words: each byte's symbol is the character itself.
        let mut symbols: Vec<String> = word.chars().map(|c| c.to_string()).collect();
        let last = symbols.pop().expect("a non-empty word");
        symbols.push(format!("{last}</w>"));
        loop {
            symbols = apply_merges(symbols, &ranks);
            if symbols.len() == 1 {
                break;
            }
            let pair = (symbols[0].clone(), symbols[1].clone());
            ranks.insert(pair.clone(), merges.len());
            vocab.push(format!("{}{}", pair.0, pair.1));
            merges.push(pair);
        }
    }
    vocab.push("<|startoftext|>".into());
    vocab.push("<|endoftext|>".into());
    let map: serde_json::Map<String, serde_json::Value> = vocab
        .iter()
        .enumerate()
        .map(|(i, t)| (t.clone(), serde_json::Value::from(i)))
        .collect();
    let vocab_json = serde_json::to_string(&map).expect("a JSON object serialises");
    let mut merges_txt = String::from("#version: 0.2\n");
    for (a, b) in &merges {
        merges_txt.push_str(&format!("{a} {b}\n"));
    }
    (vocab_json, merges_txt)
}

/// Size of the vocabulary [`clip_tokenizer_files`] writes (`<|endoftext|>` is the last id).
pub fn clip_vocab_size() -> usize {
    let (vocab, _) = clip_tokenizer_files();
    serde_json::from_str::<serde_json::Map<String, serde_json::Value>>(&vocab)
        .expect("our own JSON")
        .len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vocabulary_layout_is_clips() {
        let (vocab, merges) = clip_tokenizer_files();
        let map: BTreeMap<String, usize> = serde_json::from_str(&vocab).unwrap();
        let n = map.len();
        assert_eq!(map["!"], 0, "CLIP's first byte symbol");
        assert_eq!(map["!</w>"], 256);
        assert_eq!(map["<|endoftext|>"], n - 1);
        assert_eq!(map["<|startoftext|>"], n - 2);
        for w in caption_words() {
            assert!(map.contains_key(&format!("{w}</w>")), "{w} is one token");
        }
        assert_eq!(merges.lines().count() - 1, n - 514);
        assert_eq!(
            caption_words().join(" "),
            "a red green blue yellow circle square triangle to the left of right above below"
        );
    }
}
