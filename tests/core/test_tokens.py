"""The torch-free CLIP token counter agrees with transformers' CLIPTokenizer."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.core import tokens
from sdstudio.core.paths import resources_dir

PROMPTS: list[str] = [
    "a photo of a cat",
    "",
    " ",
    "A Photo Of A CAT",
    "masterpiece, best quality, 1girl, solo, looking at viewer, smile",
    "portrait of an old man, highly detailed, 8k, unreal engine, trending on artstation",
    "it's a dog's life, isn't it? they're here; we've been, I'm sure, you'll see, he'd go",
    "'s't're've'm'll'd",
    "numbers 1234567890 and 3.14159 and 1,000,000 and 10k 4K 2160p",
    "¼ ½ ² ³ Ⅻ ٣ ४",
    "café naïve résumé façade coöperate",
    "Straße ĞİŞ İstanbul DİYARBAKIR",
    "東京タワー 夜景 写真",
    "한국어 프롬프트 테스트",
    "Москва зимой, снег",
    "emoji 🐱🐶✨🔥 👩‍🚀",
    "mixed😀text😀without spaces",
    "punctuation!!! ??? ... --- ___ *** ### @@@ $$$ %%% ^^^ &&& ~~~",
    "quotes \"double\" 'single' `back`",
    "brackets (a) [b] {c} <d> (e:1.2)",
    "path/to/file.png and C:\\Windows\\System32 and https://example.com/?q=1&x=2",
    "tabs\tand\nnewlines\r\nand  double  spaces",
    "   leading and trailing   ",
    "under_score snake_case __dunder__ _lead trail_",
    "hyphen-ated well-known state-of-the-art",
    "e-mail someone@example.com #hashtag @mention",
    "math: 2+2=4, x^2, a*b, 5%, 1/2, 3<4>2",
    "combining e\u0301 a\u0308 n\u0303",
    "zero\u200bwidth\u200cjoiner\u200d",
    "nbsp\u00a0here and\u2003em space",
    "ｆｕｌｌｗｉｄｔｈ ＡＢＣ １２３",
    "ligature ﬁ ﬂ",
    "greek αβγδ ΑΒΓΔ σς",
    "arabic مرحبا بالعالم",
    "hebrew שלום עולם",
    "hindi नमस्ते दुनिया",
    "thai สวัสดีชาวโลก",
    "<|startoftext|>special<|endoftext|> tokens",
    "supercalifragilisticexpialidocious pneumonoultramicroscopicsilicovolcanoconiosis",
    "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
    "x" * 300,
    "a, " * 60,
    ("a beautiful landscape with mountains, a lake, trees, clouds, sunset, golden hour, "
     "volumetric lighting, by greg rutkowski and alphonse mucha, highly detailed, "
     "digital painting, concept art, smooth, sharp focus, illustration, ") * 3,
    "The quick brown fox jumps over the lazy dog. " * 12,
    "UPPER lower MiXeD CaSe",
    "don't won't can't shouldn't",
    "rock'n'roll o'clock y'all",
    "$100 €50 £20 ¥1000 ₿",
    "control\x01chars\x7f",
    "sd studio\u3000ideographic space",
    "1girl, (masterpiece:1.2), [blurry], ((detailed))",
]


@pytest.fixture(scope="module")
def hf_tokenizer():  # type: ignore[no-untyped-def]
    transformers = pytest.importorskip("transformers")
    return transformers.CLIPTokenizer.from_pretrained(
        str(resources_dir() / "tokenizers" / "clip-l")
    )


def test_known_ids() -> None:
    assert tokens.encode("a photo of a cat") == [320, 1125, 539, 320, 2368]
    assert tokens.count_tokens("a photo of a cat") == 5


@pytest.mark.parametrize("prompt", PROMPTS)
def test_encode_matches_transformers(hf_tokenizer, prompt: str) -> None:  # type: ignore[no-untyped-def]
    expected = hf_tokenizer(prompt, add_special_tokens=False).input_ids
    assert tokens.encode(prompt) == expected


def test_count_matches_transformers_on_plain_prompts(hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Plain prompts (no LoRA tags): the counts equal CLIPTokenizer's, after the engine's
    clean-up of leading / trailing commas (which it drops with the LoRA tags)."""
    plain = [p for p in PROMPTS if "<lora" not in p]
    assert len(plain) >= 45
    for p in plain:
        expected = len(hf_tokenizer(p.strip(" ,"), add_special_tokens=False).input_ids)
        assert tokens.count_tokens(p) == expected, p
        if p == p.strip(" ,"):
            assert tokens.count_tokens(p) == len(hf_tokenizer(p).input_ids) - 2


def test_stdlib_fallback_regex_close(hf_tokenizer) -> None:  # type: ignore[no-untyped-def]
    """Without the `regex` package the counter still works (exact for common text)."""
    import re

    tok = tokens.ClipTokenizer()
    tok._ensure_loaded()
    tok._split = re.compile(tokens._FALLBACK_PATTERN, re.IGNORECASE).findall
    for p in PROMPTS[:30]:
        if any(c in p for c in "¼½²³Ⅻ"):
            continue
        assert tok.encode(p) == hf_tokenizer(p, add_special_tokens=False).input_ids, p


def test_lora_tags_ignored_like_the_engine() -> None:
    from sdstudio.core.request import GenerationRequest

    base = tokens.count_tokens("a photo of a cat")
    assert tokens.count_tokens("a photo of a cat <lora:detail_tweaker:0.8>") == base
    assert tokens.count_tokens("<lora:x:1> a photo of a cat") == base
    for prompt in ("a, <lora:x:0.5>, b", "<lora:a> <lora:b:2>  c  d ,", "(x:1.2) <lora:y:1> z"):
        clean, _ = GenerationRequest(prompt=prompt).prompt_loras()
        assert tokens.strip_lora_tags(prompt) == clean
        assert tokens.count_tokens(prompt) == len(tokens.encode(clean))


def test_emphasis_counted_like_a1111() -> None:
    base = tokens.count_tokens("a photo of a cat")
    assert tokens.count_tokens("a (photo:1.3) of a [cat]", emphasis=True) == base
    assert tokens.count_tokens("a ((photo)) of a cat <lora:x:1>", emphasis=True) == base
    assert tokens.count_tokens("a ((photo)) of a cat") > base  # the engine encodes brackets
    # escaped brackets are text
    assert tokens.count_tokens(r"a \(cat\)", emphasis=True) == len(tokens.encode("a (cat)"))


def test_break_pads_to_next_chunk() -> None:
    n = tokens.count_tokens("a cat BREAK a dog", emphasis=True)
    assert n == 75 + 2
    assert tokens.chunk_info(n) == (77, 150)


def test_parse_prompt_attention() -> None:
    parsed = tokens.parse_prompt_attention("a (b:1.5) [c] ((d))")
    assert parsed[0] == ("a ", 1.0)
    assert parsed[1] == ("b", 1.5)
    assert parsed[3][0] == "c" and parsed[3][1] == pytest.approx(1 / 1.1)
    assert parsed[-1][0] == "d" and parsed[-1][1] == pytest.approx(1.21)


def test_comma_backtrack_like_a1111() -> None:
    # 6 tokens per item: the last comma of chunk 1 is token 71, so the 3 tokens after it move
    # to chunk 2 and chunk 1 is padded; the same happens again at chunk 2's end: 2 x 3 more
    prompt = ", ".join(["a b c d e"] * 30)
    plain = tokens.count_tokens(prompt)
    assert plain == 30 * 6 - 1
    assert tokens.count_prompt_tokens(prompt, comma_backtrack=20) == plain + 6


@pytest.mark.parametrize(
    ("n", "expected"),
    [(0, (0, 75)), (1, (1, 75)), (75, (75, 75)), (76, (76, 150)), (151, (151, 225))],
)
def test_chunk_info(n: int, expected: tuple[int, int]) -> None:
    assert tokens.chunk_info(n) == expected


def test_import_is_fast_and_lazy() -> None:
    code = (
        "import time, sys; t = time.perf_counter(); import sdstudio.core.tokens as T; "
        "dt = time.perf_counter() - t; "
        "assert 'torch' not in sys.modules and 'transformers' not in sys.modules; "
        "assert T._DEFAULT is None; print(dt)"
    )
    times = []
    for _ in range(5):  # the best of 5: the machine may be busy
        out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                             check=True, cwd=Path(__file__).resolve().parents[2])
        times.append(float(out.stdout.strip()))
    assert min(times) < 0.05, times


def test_encoder_rebuilt_from_merges_equals_the_shipped_vocab() -> None:
    import json

    from sdstudio.core.tokens import ClipTokenizer, default_tokenizer_dir

    tok = ClipTokenizer(default_tokenizer_dir())
    tok._ensure_loaded()
    shipped = json.loads((default_tokenizer_dir() / "vocab.json").read_text(encoding="utf-8"))
    assert tok._encoder == shipped
