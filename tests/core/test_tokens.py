"""The torch-free CLIP token counter agrees with transformers' CLIPTokenizer; A1111's prompt
syntax (emphasis, escapes, BREAK) and its chunking (75 tokens, comma backtrack, embeddings)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from sdstudio.core import tokens
from sdstudio.core.paths import resources_dir
from sdstudio.core.request import EMPHASIS_MODES

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
    """Prompts that fit one chunk, read as plain text (emphasis "None"): the counts equal
    CLIPTokenizer's, after the engine's clean-up of leading / trailing commas (which it drops
    with the LoRA tags)."""
    checked = 0
    for p in PROMPTS:
        expected = len(hf_tokenizer(p.strip(" ,"), add_special_tokens=False).input_ids)
        if expected > tokens.CHUNK:
            continue
        checked += 1
        assert tokens.count_tokens(p, emphasis="None") == expected, p
        if not any(c in p for c in "()[]\\") and "BREAK" not in p:
            assert tokens.count_tokens(p) == expected, p  # nothing to parse away
    assert checked >= 45


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
        for mode in EMPHASIS_MODES:
            assert tokens.count_tokens(prompt, emphasis=mode) == tokens.count_tokens(
                clean, emphasis=mode)


def test_emphasis_counted_like_a1111() -> None:
    base = tokens.count_tokens("a photo of a cat")
    assert tokens.count_tokens("a (photo:1.3) of a [cat]") == base
    assert tokens.count_tokens("a ((photo)) of a cat <lora:x:1>") == base
    assert tokens.count_tokens("a (photo:1.3) of a [cat]", emphasis="Ignore") == base
    # "None": the brackets are text
    assert tokens.count_tokens("a ((photo)) of a cat", emphasis="None") == len(
        tokens.encode("a ((photo)) of a cat")) > base
    # escaped brackets are text
    assert tokens.count_tokens(r"a \(cat\)") == len(tokens.encode("a (cat)"))
    # pieces are tokenized apart: "(a)b" is "a" + "b", not the word "ab"
    assert tokens.count_tokens("(red)dish") == len(tokens.encode("red")) + len(
        tokens.encode("dish"))
    assert tokens.count_tokens("reddish") == len(tokens.encode("reddish"))


def test_break_pads_to_next_chunk() -> None:
    n = tokens.count_tokens("a cat BREAK a dog")
    assert n == 75 + 2
    assert tokens.chunk_info(n) == (77, 150)
    assert tokens.count_tokens("a cat BREAK a dog", emphasis="Ignore") == n
    # with "None" BREAK is a word; a bracketed BREAK is a word; BREAK needs word bounds
    assert tokens.count_tokens("a cat BREAK a dog", emphasis="None") == 5
    assert tokens.count_tokens("a cat (BREAK) a dog") == 5
    assert tokens.count_tokens("a catBREAK a dog") == len(tokens.encode("a catbreak a dog"))
    # a BREAK at the end closes the chunk and adds no empty one; at the start it does
    assert tokens.count_tokens("a cat BREAK") == 75
    assert tokens.count_tokens("BREAK a cat") == 75 + 2
    assert tokens.count_tokens("a BREAK BREAK b") == 75 * 2 + 1


# AUTOMATIC1111's own examples (modules/prompt_parser.py, parse_prompt_attention docstring)
A1111_PARSER_EXAMPLES: list[tuple[str, list[tuple[str, float]]]] = [
    ("normal text", [("normal text", 1.0)]),
    ("an (important) word", [("an ", 1.0), ("important", 1.1), (" word", 1.0)]),
    ("(unbalanced", [("unbalanced", 1.1)]),
    ("\\(literal\\]", [("(literal]", 1.0)]),
    ("(unnecessary)(parens)", [("unnecessaryparens", 1.1)]),
    ("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).",
     [("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
      ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1)]),
]


@pytest.mark.parametrize(("text", "expected"), A1111_PARSER_EXAMPLES)
def test_parser_matches_a1111_examples(text: str, expected: list[tuple[str, float]]) -> None:
    assert tokens.parse_prompt_attention(text) == expected  # exact floats, as A1111's


@pytest.mark.parametrize(("text", "expected"), [
    ("a (b:1.5) [c] ((d))", [("a ", 1.0), ("b", 1.5), (" ", 1.0), ("c", 1 / 1.1),
                              (" ", 1.0), ("d", 1.1 * 1.1)]),
    ("(a : 1.5 ) b", [("a ", 1.5), (" b", 1.0)]),  # spaces around the number
    ("(a:-1)", [("a", -1.0)]),
    ("((a:2)[b])", [("a", 2 * 1.1), ("b", 1 / 1.1 * 1.1)]),
    ("[[a]]", [("a", 1 / 1.1 / 1.1)]),
    ("[a", [("a", 1 / 1.1)]),  # unbalanced: applies to the end
    ("a) b] c", [("a) b] c", 1.0)]),  # stray closing brackets are text
    ("a:1.5) b", [("a:1.5) b", 1.0)]),  # a weight without an open bracket is text
    ("(a:1.5", [("a:1.5", 1.1)]),  # no closing: ":" and "1.5" text inside an open (
    ("a \\\\ b \\c", [("a \\ b c", 1.0)]),  # "\\\\" is a backslash; a lone one is dropped
    ("(a:1.2.3)", [("a:1.2.3)", 1.1)]),  # A1111 fails on the number; here it is text
    ("", [("", 1.0)]),
    ("a BREAK b", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
    ("(a BREAK b)", [("a", 1.1), ("BREAK", -1.1), ("b", 1.1)]),  # not a break (A1111)
    ("a\nBREAK\nb", [("a", 1.0), ("BREAK", -1.0), ("b", 1.0)]),
])
def test_parser_cases(text: str, expected: list[tuple[str, float]]) -> None:
    parsed = tokens.parse_prompt_attention(text)
    assert [t for t, _ in parsed] == [t for t, _ in expected]
    assert [w for _, w in parsed] == pytest.approx([w for _, w in expected], rel=1e-12)


def test_is_break_and_pieces_per_mode() -> None:
    parsed = tokens.parse_prompt_attention("a BREAK (b BREAK c)")
    assert [tokens.is_break(t, w) for t, w in parsed] == [False, True, False, False, False,
                                                                 False]
    assert tokens.prompt_pieces("a (b) BREAK c", "None") == [("a (b) BREAK c", 1.0)]
    for mode in ("Original", "No norm", "Ignore"):
        assert tokens.prompt_pieces("a (b) BREAK c", mode) == tokens.parse_prompt_attention(
            "a (b) BREAK c")


def _chunks(pieces: list[tuple[str, float]], **kw: object) -> tokens.ChunkedPrompt:
    return tokens.chunk_prompt(pieces, tokens.encode, **kw)  # type: ignore[arg-type]


def test_chunks_at_75_token_boundaries() -> None:
    cat = tokens.encode("cat")[0]
    for n, chunk_sizes in ((1, [1]), (74, [74]), (75, [75]), (76, [75, 1]), (150, [75, 75]),
                           (151, [75, 75, 1]), (200, [75, 75, 50])):
        got = _chunks([(" ".join(["cat"] * n), 1.0)])
        assert [len(c.tokens) for c in got.chunks] == chunk_sizes, n
        assert got.token_count == n and all(c.tokens == [cat] * len(c.tokens)
                                             for c in got.chunks)
        assert len(got.chunks) == tokens.chunk_info(got.token_count)[1] // 75
    empty = _chunks([("", 1.0)])
    assert len(empty.chunks) == 1 and empty.chunks[0].tokens == [] and empty.token_count == 0


def test_chunk_weights_follow_the_pieces() -> None:
    got = _chunks(tokens.parse_prompt_attention("a (cat:1.5) BREAK [dog]"))
    a, cat, dog = (tokens.encode(w)[0] for w in ("a", "cat", "dog"))
    assert [c.tokens for c in got.chunks] == [[a, cat], [dog]]
    assert got.chunks[0].weights == [1.0, 1.5]
    assert got.chunks[1].weights == pytest.approx([1 / 1.1])
    assert got.token_count == 75 + 1


def test_chunk_rows_bos_eos_and_pad() -> None:
    chunk = tokens.PromptChunk([5, 6], [1.5, 0.5])
    eos, bos = tokens.EOS_ID, tokens.BOS_ID
    assert chunk.row(bos, eos, eos) == [bos, 5, 6] + [eos] * 74  # CLIP ViT-L: EOS padding
    assert chunk.row(bos, eos, 0) == [bos, 5, 6, eos] + [0] * 73  # OpenCLIP: 0 after EOS
    assert chunk.row_weights() == [1.0, 1.5, 0.5] + [1.0] * 74
    full = tokens.PromptChunk(list(range(75)), [1.0] * 75)
    assert full.row(bos, eos, 0) == [bos, *range(75), eos]


def test_comma_backtrack_like_a1111() -> None:
    # 6 tokens per item: the last comma of chunk 1 is token 71, so the 3 tokens after it move
    # to chunk 2 and chunk 1 is padded; the same happens again at chunk 2's end: 2 x 3 more
    prompt = ", ".join(["a b c d e"] * 30)
    plain = len(tokens.encode(prompt))
    assert plain == 30 * 6 - 1
    assert tokens.count_tokens(prompt) == plain + 6
    got = _chunks([(prompt, 1.0)])
    comma = tokens.COMMA_ID
    assert [len(c.tokens) for c in got.chunks] == [72, 72, 35]
    assert got.chunks[0].tokens[-1] == comma and got.chunks[1].tokens[-1] == comma
    assert got.chunks[1].tokens[:3] == tokens.encode("a b c")  # moved from chunk 1
    off = _chunks([(prompt, 1.0)], comma_backtrack=0)
    assert [len(c.tokens) for c in off.chunks] == [75, 75, 29] and off.token_count == plain
    # a comma further back than 20 tokens does not move anything
    far = ", ".join([" ".join(["x"] * 50)] * 3)
    assert tokens.count_tokens(far) == len(tokens.encode(far))


def test_comma_exactly_at_the_boundary_is_not_moved() -> None:
    # A1111: a comma arriving when the chunk is full notes its place, then the chunk closes
    # and the comma starts the next chunk; nothing moves
    prompt = " ".join(["x"] * 75) + ", y"
    got = _chunks([(prompt, 1.0)])
    assert [len(c.tokens) for c in got.chunks] == [75, 2]
    assert got.chunks[1].tokens[0] == tokens.COMMA_ID


def test_long_prompt_over_150_tokens() -> None:
    prompt = ", ".join(["masterpiece best quality"] * 50)  # 50 * 3 + 49 commas = 199 tokens
    plain = len(tokens.encode(prompt))
    assert plain == 199
    got = _chunks(tokens.parse_prompt_attention(prompt))
    assert len(got.chunks) == 3
    assert sum(len(c.tokens) for c in got.chunks) == plain  # every token kept, none cut
    assert got.token_count == tokens.count_tokens(prompt) > plain  # backtrack padding


def test_embeddings_stay_whole_in_a_chunk() -> None:
    group = (50000, 50001, 50002)

    def at(ids: object, pos: int) -> int:
        seq = list(ids)  # type: ignore[call-overload]
        return 3 if tuple(seq[pos:pos + 3]) == group else 0

    cat = tokens.encode("cat")[0]
    for before, sizes in ((72, [75]), (73, [73, 3]), (74, [74, 3]), (75, [75, 3])):
        got = tokens.chunk_prompt([("x", 1.2)], lambda _t, n=before: [cat] * n + list(group),
                                  embedding_at=at)
        assert [len(c.tokens) for c in got.chunks] == sizes, before
        assert got.chunks[-1].tokens[-3:] == list(group)
        assert got.chunks[-1].weights[-3:] == [1.2] * 3
        assert got.token_count == 75 * (len(sizes) - 1) + sizes[-1]


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
