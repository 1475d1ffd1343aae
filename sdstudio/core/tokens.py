"""CLIP token counting for the prompt panel: no torch, no transformers.

Implements CLIP's byte-level BPE exactly as ``transformers.CLIPTokenizer`` (the tokenizers
backend: NFC, whitespace collapsed to one space, lowercase, CLIP's split regex, byte-level BPE
with ``</w>`` word ends) from ``resources/tokenizers/clip-l/{vocab.json,merges.txt}``. SD 1.x,
SD 2.x and SDXL all share this vocabulary.

- :func:`encode` gives the raw token ids of a text (without BOS/EOS);
- :func:`count_tokens` counts a *prompt* as SD Studio's engine encodes it: ``<lora:...>`` tags
  are removed the way ``GenerationRequest.prompt_loras`` removes them, the rest is encoded in
  chunks of 75. With ``emphasis=True`` it counts the way AUTOMATIC1111's counter does:
  extra-network tags ignored, emphasis syntax such as ``(word:1.2)``, ``((word))`` and
  ``[word]`` parsed away (each weighted piece tokenized on its own), and ``BREAK`` padding to
  the next chunk of 75;
- :func:`chunk_info` turns a count into ``(count, capacity)`` for a "12/75" display.

The vocabulary is loaded lazily on first use (about 0.3 s); importing this module is cheap.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path

CHUNK = 75  # tokens per CLIP window, without BOS/EOS
BOS_ID = 49406
EOS_ID = 49407
COMMA_ID = 267  # ",</w>"

_SPECIAL = {"<|startoftext|>": BOS_ID, "<|endoftext|>": EOS_ID}
_CLIP_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+"
)
# Close fallback with the standard library: letters = word chars that are not digits or "_".
_FALLBACK_PATTERN = (
    r"<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|(?:[^\s\w]|_)+"
)
_WHITESPACE = re.compile(r"\s+")
# The LoRA tag as core.request strips it (kept in step by a test)
_LORA_TAG = re.compile(r"<lora:([^:>]+)(?::([^:>]*))?(?::[^>]*)?>")
_SPACES = re.compile(r"\s{2,}")
# Extra-network tags A1111 ignores: <lora:name:1>, <lyco:...>, <hypernet:...>
_EXTRA_NETWORK = re.compile(r"<(?:lora|lyco|hypernet)(?::[^>]*)?>", re.IGNORECASE)
# AUTOMATIC1111's prompt_parser.re_attention and re_break
_ATTENTION = re.compile(
    r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:\s*([+-]?[.\d]+)\s*\)|\)|]|[^\\()\[\]:]+|:",
    re.VERBOSE,
)
_BREAK = re.compile(r"\s*\bBREAK\b\s*", re.S)


def default_tokenizer_dir() -> Path:
    from sdstudio.core.paths import resources_dir

    return resources_dir() / "tokenizers" / "clip-l"


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table."""
    bs = (
        list(range(ord("!"), ord("~") + 1))
        + list(range(ord("¡"), ord("¬") + 1))
        + list(range(ord("®"), ord("ÿ") + 1))
    )
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs), strict=True))


class ClipTokenizer:
    """CLIP BPE over a vocab.json + merges.txt folder. Thread-safe; caches per word."""

    def __init__(self, folder: Path | str | None = None, cache_size: int = 65536) -> None:
        self.folder = Path(folder) if folder is not None else default_tokenizer_dir()
        self._lock = threading.Lock()
        self._loaded = False
        self._encoder: dict[str, int] = {}
        self._ranks: dict[tuple[str, str], int] = {}
        self._byte_encoder = bytes_to_unicode()
        self._split: Callable[[str], list[str]] = re.compile(_FALLBACK_PATTERN).findall
        self._bpe_ids: Callable[[str], tuple[int, ...]] = lru_cache(maxsize=cache_size)(
            self._bpe_ids_uncached
        )

    # ------------------------------------------------------------------------------ loading
    def _ensure_loaded(self) -> None:
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            # CLIP's vocabulary is its byte symbols, the same with "</w>", one token per merge
            # and the two special tokens, in that order (exactly how vocab.json is made). It is
            # rebuilt from merges.txt in a Python loop instead of parsing the 1.5 MB vocab.json:
            # json.loads would hold the interpreter lock for ~40 ms while the window runs.
            symbols = list(bytes_to_unicode().values())
            tokens = symbols + [sym + "</w>" for sym in symbols]
            ranks: dict[tuple[str, str], int] = {}
            with open(self.folder / "merges.txt", encoding="utf-8") as fh:
                for line in fh:
                    if line.startswith("#version") or not line.strip():
                        continue
                    first, _, second = line.rstrip("\n").partition(" ")
                    ranks[(first, second)] = len(ranks)
                    tokens.append(first + second)
            tokens += ["<|startoftext|>", "<|endoftext|>"]
            encoder = {token: index for index, token in enumerate(tokens)}
            try:
                import regex

                self._split = regex.compile(_CLIP_PATTERN, regex.IGNORECASE).findall
            except ImportError:  # pragma: no cover - regex comes with transformers
                self._split = re.compile(_FALLBACK_PATTERN, re.IGNORECASE).findall
            self._encoder = encoder
            self._ranks = ranks
            self._loaded = True

    # --------------------------------------------------------------------------------- BPE
    def _bpe_ids_uncached(self, piece: str) -> tuple[int, ...]:
        special = _SPECIAL.get(piece)
        if special is not None:
            return (special,)
        word = "".join(self._byte_encoder[b] for b in piece.encode("utf-8"))
        symbols = [*word[:-1], word[-1] + "</w>"]
        ranks = self._ranks
        while len(symbols) > 1:
            best_rank = None
            best_i = -1
            for i in range(len(symbols) - 1):
                r = ranks.get((symbols[i], symbols[i + 1]))
                if r is not None and (best_rank is None or r < best_rank):
                    best_rank, best_i = r, i
            if best_rank is None:
                break
            first, second = symbols[best_i], symbols[best_i + 1]
            merged: list[str] = []
            i = 0
            while i < len(symbols):  # merge every occurrence of the best pair, left to right
                if i < len(symbols) - 1 and symbols[i] == first and symbols[i + 1] == second:
                    merged.append(first + second)
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        encoder = self._encoder
        return tuple(encoder.get(s, EOS_ID) for s in symbols)

    @staticmethod
    def normalize(text: str) -> str:
        return _WHITESPACE.sub(" ", unicodedata.normalize("NFC", text)).lower()

    def encode(self, text: str) -> list[int]:
        """Token ids of ``text`` without BOS/EOS, as CLIPTokenizer gives them."""
        self._ensure_loaded()
        ids: list[int] = []
        for piece in self._split(self.normalize(text)):
            ids.extend(self._bpe_ids(piece))
        return ids

    def count(self, text: str) -> int:
        return len(self.encode(text))


# ------------------------------------------------------------------------- prompt parsing
def strip_lora_tags(prompt: str) -> str:
    """The prompt the engine encodes: ``GenerationRequest.prompt_loras``'s clean-up."""
    return _SPACES.sub(" ", _LORA_TAG.sub("", prompt)).strip(" ,")


def strip_extra_networks(prompt: str) -> str:
    """Remove ``<lora:...>``-style tags, as A1111 does before counting and encoding."""
    return _EXTRA_NETWORK.sub("", prompt)


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    """AUTOMATIC1111's emphasis parser: ``"a (b:1.5) [c]"`` -> ``[("a ", 1.0), ("b", 1.5),
    (" ", 1.0), ("c", 0.909...)]``; ``BREAK`` becomes ``("BREAK", -1.0)``."""
    res: list[list[object]] = []
    round_brackets: list[int] = []
    square_brackets: list[int] = []

    def multiply_range(start: int, multiplier: float) -> None:
        for p in range(start, len(res)):
            res[p][1] = float(res[p][1]) * multiplier  # type: ignore[arg-type]

    for m in _ATTENTION.finditer(text):
        part = m.group(0)
        weight = m.group(1)
        if part.startswith("\\"):
            res.append([part[1:], 1.0])
        elif part == "(":
            round_brackets.append(len(res))
        elif part == "[":
            square_brackets.append(len(res))
        elif weight is not None and round_brackets:
            try:
                multiply_range(round_brackets.pop(), float(weight))
            except ValueError:  # "(a:1.2.3)": A1111 would fail; treat as text
                res.append([part, 1.0])
        elif part == ")" and round_brackets:
            multiply_range(round_brackets.pop(), 1.1)
        elif part == "]" and square_brackets:
            multiply_range(square_brackets.pop(), 1 / 1.1)
        else:
            for i, piece in enumerate(_BREAK.split(part)):
                if i > 0:
                    res.append(["BREAK", -1.0])
                res.append([piece, 1.0])
    for pos in round_brackets:
        multiply_range(pos, 1.1)
    for pos in square_brackets:
        multiply_range(pos, 1 / 1.1)
    if not res:
        return [("", 1.0)]
    merged: list[tuple[str, float]] = []
    for text_part, w in res:
        weight_f = float(w)  # type: ignore[arg-type]
        if merged and merged[-1][1] == weight_f and weight_f != -1.0:
            merged[-1] = (merged[-1][0] + str(text_part), weight_f)
        else:
            merged.append((str(text_part), weight_f))
    return merged


def count_prompt_tokens(
    prompt: str, tokenizer: ClipTokenizer | None = None, comma_backtrack: int = 0
) -> int:
    """A1111's token count for a prompt, including the padding that ``BREAK`` (and, with
    ``comma_backtrack`` > 0, A1111's "pad to the last comma" option) adds to full chunks."""
    tok = tokenizer or _default()
    token_count = 0
    last_comma = -1
    chunk_tokens: list[int] = []

    def next_chunk(is_last: bool = False) -> None:
        nonlocal token_count, last_comma, chunk_tokens
        token_count += len(chunk_tokens) if is_last else CHUNK
        chunk_tokens = []
        last_comma = -1

    for text, weight in parse_prompt_attention(strip_extra_networks(prompt)):
        if text == "BREAK" and weight == -1.0:
            next_chunk()
            continue
        for token in tok.encode(text):
            if token == COMMA_ID:
                last_comma = len(chunk_tokens)
            elif (
                comma_backtrack
                and len(chunk_tokens) == CHUNK
                and last_comma != -1
                and len(chunk_tokens) - last_comma <= comma_backtrack
            ):
                reloc = chunk_tokens[last_comma + 1 :]
                next_chunk()
                chunk_tokens = reloc
            if len(chunk_tokens) == CHUNK:
                next_chunk()
            chunk_tokens.append(token)
    if chunk_tokens or token_count == 0:
        next_chunk(is_last=True)
    return token_count


# -------------------------------------------------------------------------- module API
_DEFAULT: ClipTokenizer | None = None
_DEFAULT_LOCK = threading.Lock()


def _default() -> ClipTokenizer:
    global _DEFAULT
    if _DEFAULT is None:
        with _DEFAULT_LOCK:
            if _DEFAULT is None:
                _DEFAULT = ClipTokenizer()
    return _DEFAULT


def encode(text: str) -> list[int]:
    """Raw CLIP token ids of ``text`` (no BOS/EOS, nothing stripped)."""
    return _default().encode(text)


@lru_cache(maxsize=512)
def count_tokens(text: str, *, emphasis: bool = False) -> int:
    """Tokens in a prompt, without BOS/EOS. By default as SD Studio's engine encodes it
    (LoRA tags removed, everything else is text); with ``emphasis=True`` as AUTOMATIC1111
    counts it (emphasis syntax parsed away, ``BREAK`` padding to the next chunk included).
    For plain text both equal ``len(encode(text))``."""
    if emphasis:
        return count_prompt_tokens(text)
    return len(_default().encode(strip_lora_tags(text)))


def chunk_info(n: int) -> tuple[int, int]:
    """``(n, capacity)`` for a "12/75" display: capacity grows in steps of 75."""
    n = max(0, int(n))
    return n, max(1, -(-n // CHUNK)) * CHUNK


def preload() -> None:
    """Load the vocabulary now (call from a background thread to hide the first-use cost)."""
    _default()._ensure_loaded()
