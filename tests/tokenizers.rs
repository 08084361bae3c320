//! CLIP tokenizers against transformers 5.24's `CLIPTokenizer` on the committed golden prompts.

use serde::Deserialize;
use sharpen_tests::{asset, fixture};
use sharpen_weights::text::load_clip_tokenizer;

#[derive(Deserialize)]
struct Golden {
    cases: Vec<Case>,
}

#[derive(Deserialize)]
struct Case {
    prompt: String,
    tokenizer: Vec<u32>,
    tokenizer_2: Vec<u32>,
}

fn golden() -> Vec<Case> {
    let text = std::fs::read_to_string(fixture("tokenizers/golden_ids.json")).expect("golden ids");
    let golden: Golden = serde_json::from_str(&text).expect("golden ids JSON");
    assert!(
        golden.cases.len() >= 50,
        "the golden set must hold at least 50 prompts"
    );
    golden.cases
}

#[test]
fn both_sdxl_tokenizers_match_transformers_on_golden_prompts() {
    let t1 = load_clip_tokenizer(&asset("clip-tokenizer/tokenizer")).unwrap();
    let t2 = load_clip_tokenizer(&asset("clip-tokenizer/tokenizer_2")).unwrap();
    assert_eq!((t1.pad_id(), t2.pad_id()), (49407, 0));
    assert_eq!((t1.vocab_size(), t1.max_length()), (49408, 77));
    let mut mismatches = Vec::new();
    let cases = golden();
    for case in &cases {
        for (name, tok, want) in [
            ("tokenizer", &t1, &case.tokenizer),
            ("tokenizer_2", &t2, &case.tokenizer_2),
        ] {
            let got = tok.encode(&case.prompt).unwrap();
            if &got != want {
                mismatches.push(format!(
                    "{name} {:?}:\n  got  {got:?}\n  want {want:?}",
                    case.prompt
                ));
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {} mismatches:\n{}",
        mismatches.len(),
        2 * cases.len(),
        mismatches.join("\n")
    );
}

#[test]
fn golden_set_covers_the_hard_cases() {
    let cases = golden();
    let has = |f: &dyn Fn(&str) -> bool| cases.iter().any(|c| f(&c.prompt));
    assert!(has(&|p| p.is_empty()));
    assert!(has(&|p| p.contains('!')));
    assert!(has(&|p| p.contains("<|endoftext|>")));
    assert!(has(&|p| p
        .chars()
        .any(|c| ('\u{4e00}'..='\u{9fff}').contains(&c))));
    assert!(has(&|p| p.chars().any(|c| c as u32 >= 0x1f300)));
    // A prompt longer than 77 tokens is truncated to BOS + 75 + EOS.
    let long = cases
        .iter()
        .find(|c| c.prompt.starts_with("word word"))
        .expect("long prompt");
    assert_eq!(long.tokenizer[76], 49407);
    assert!(long.tokenizer[1..76].iter().all(|&t| t != 49407));
}

/// A folder with `tokenizer.json` instead of `vocab.json` + `merges.txt` tokenizes identically.
#[test]
fn tokenizer_json_folders_tokenize_identically() {
    let cases = golden();
    for name in ["tokenizer", "tokenizer_2"] {
        let src = asset(&format!("clip-tokenizer/{name}"));
        let from_vocab = load_clip_tokenizer(&src).unwrap();
        let dir = std::env::temp_dir().join(format!(
            "sharpen-tokenizer-json-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(
            dir.join("tokenizer.json"),
            from_vocab.to_tokenizer_json().unwrap(),
        )
        .unwrap();
        for f in ["tokenizer_config.json", "special_tokens_map.json"] {
            std::fs::copy(src.join(f), dir.join(f)).unwrap();
        }
        let from_json = load_clip_tokenizer(&dir).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(from_json.pad_id(), from_vocab.pad_id());
        for case in &cases {
            let want = if name == "tokenizer" {
                &case.tokenizer
            } else {
                &case.tokenizer_2
            };
            assert_eq!(
                &from_json.encode(&case.prompt).unwrap(),
                want,
                "{name} {:?}",
                case.prompt
            );
        }
    }
}
