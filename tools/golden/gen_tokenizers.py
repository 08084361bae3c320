"""CLIP tokenizer assets and golden token ids.

1. Builds the CLIP BPE vocabulary (vocab.json + merges.txt) from `bpe_simple_vocab_16e6.txt.gz`,
   which ships in the open_clip_torch wheel (MIT), and lays it out as SDXL's `tokenizer/` and
   `tokenizer_2/` folders (same files and config keys as the real repository).
2. Tokenizes a golden prompt set with transformers' CLIPTokenizer loaded from those folders, with the
   arguments diffusers' SDXL pipeline uses (padding="max_length", max_length=77, truncation=True).
"""

import gzip
import json
import shutil
from pathlib import Path

import open_clip
from common import ASSETS, FIXTURES, write_json

OUT = ASSETS / "clip-tokenizer"

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def bytes_to_unicode() -> list[str]:
    """GPT-2's reversible byte -> printable unicode table, in its order."""
    printable = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    table = printable[:]
    extra = 0
    for b in range(256):
        if b not in printable:
            printable.append(b)
            table.append(256 + extra)
            extra += 1
    return [chr(c) for c in table]


def build_vocab():
    bpe = Path(open_clip.__file__).parent / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(bpe).read().decode("utf-8").split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    chars = bytes_to_unicode()
    vocab = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + [BOS, EOS]
    assert len(vocab) == 49408, len(vocab)
    return {tok: i for i, tok in enumerate(vocab)}, merges


def added(content, normalized):
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
        "special": True,
    }


def token_map(content, normalized=True):
    return {k: v for k, v in added(content, normalized).items() if k != "special"}


def write_folder(name: str, vocab: dict, merges: list, pad: str):
    d = OUT / name
    d.mkdir(parents=True, exist_ok=True)
    write_json(d / "vocab.json", vocab)
    (d / "merges.txt").write_text("#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8")
    decoder = {"49406": added(BOS, True), "49407": added(EOS, False)}
    if pad == "!":
        decoder = {"0": added("!", False), **decoder}
    write_json(
        d / "tokenizer_config.json",
        {
            "add_prefix_space": False,
            "added_tokens_decoder": decoder,
            "bos_token": BOS,
            "clean_up_tokenization_spaces": True,
            "do_lower_case": True,
            "eos_token": EOS,
            "errors": "replace",
            "model_max_length": 77,
            "pad_token": pad,
            "tokenizer_class": "CLIPTokenizer",
            "unk_token": EOS,
        },
    )
    write_json(
        d / "special_tokens_map.json",
        {
            "bos_token": token_map(BOS),
            "eos_token": token_map(EOS),
            "pad_token": pad if pad == "!" else token_map(pad),
            "unk_token": token_map(EOS),
        },
    )


PROMPTS = [
    "",
    "a photo of a cat",
    "A Photo Of A CAT",
    "an astronaut riding a horse on the moon, highly detailed, 8k",
    "a red circle above a blue square",
    "a green triangle to the left of a yellow circle",
    "Hello!",
    "wow!!! amazing!!!",
    "!",
    "!!",
    "! ! !",
    "what?!",
    "<|endoftext|>",
    "a cat <|endoftext|> a dog",
    "<|startoftext|> start",
    "<|ENDOFTEXT|> upper",
    "a dog's bone, it's the cat's",
    "they'll've gone; I'd say we're done",
    "DON'T SHOUT",
    "naïve café résumé façade",
    "Ångström über straße",
    "東京の夜景、ネオン",
    "一只在草地上奔跑的狗",
    "서울의 밤하늘",
    "Привет, мир",
    "مرحبا بالعالم",
    "नमस्ते दुनिया",
    "🐱🐶 cute pets 🎉",
    "a 👩‍🚀 astronaut with 🚀",
    "flag 🇯🇵 and 🏳️‍🌈",
    "numbers 1234567890 and 3.14159",
    "year 2024, 50% off, $19.99",
    "punctuation ... ??? !!! ,,, ;;; ---",
    "a---b___c***d",
    "(masterpiece:1.2), [best quality], {detailed}",
    "tabs\tand\nnewlines\r\nand   spaces",
    "   leading and trailing spaces   ",
    "emoji at end 😀",
    "HTML &amp; entities &lt;b&gt;",
    "https://example.com/path?query=1&x=2",
    "email@example.com",
    "C++ and C# and F#",
    "x" * 100,
    "word " * 80,
    "a very long prompt " + "with many many descriptive words " * 12,
    "mixed 日本語 and English and emoji 🎌 together",
    "ﬁ ligature and ＦＵＬＬＷＩＤＴＨ",
    "e\u0301 combining accent",
    "zero\u200bwidth space",
    "the quick brown fox jumps over the lazy dog",
    "a painting in the style of van gogh, starry night",
    "photo-realistic, ultra-detailed, octane render, trending on artstation",
    "a man with a hat! and a woman with an umbrella!",
    "semi;colon:colon|pipe/slash\\backslash",
    "'quoted' \"double quoted\" `backtick`",
    "UPPER lower MiXeD 123abc abc123",
]


def main():
    vocab, merges = build_vocab()
    for sub in ("tokenizer", "tokenizer_2"):
        if (OUT / sub).exists():
            shutil.rmtree(OUT / sub)
    write_folder("tokenizer", vocab, merges, pad=EOS)
    write_folder("tokenizer_2", vocab, merges, pad="!")
    licence = Path(open_clip.__file__).parents[1] / "open_clip_torch-3.3.0.dist-info" / "licenses" / "LICENSE"
    (OUT / "LICENSE-open_clip").write_text(licence.read_text(encoding="utf-8"), encoding="utf-8")

    from transformers import CLIPTokenizer

    cases = []
    toks = [CLIPTokenizer.from_pretrained(str(OUT / n)) for n in ("tokenizer", "tokenizer_2")]
    for prompt in PROMPTS:
        ids = [
            t(prompt, padding="max_length", max_length=77, truncation=True).input_ids for t in toks
        ]
        cases.append({"prompt": prompt, "tokenizer": ids[0], "tokenizer_2": ids[1]})
    out = FIXTURES / "tokenizers" / "golden_ids.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    rows = ",\n".join(json.dumps(c, ensure_ascii=False) for c in cases)
    out.write_text('{"transformers": "5.24.0",\n"cases": [\n' + rows + "\n]}\n", encoding="utf-8")
    print(f"{len(cases)} prompts; vocab {len(vocab)}; merges {len(merges)}")


if __name__ == "__main__":
    main()
