"""CLIP tokens for prompts, no torch, no transformers: A1111's prompt syntax and chunking.

Implements CLIP's byte-level BPE exactly as ``transformers.CLIPTokenizer`` (the tokenizers
backend: NFC, whitespace collapsed to one space, lowercase, CLIP's split regex, byte-level BPE
with ``</w>`` word ends) from ``resources/tokenizers/clip-l/{vocab.json,merges.txt}``. SD 1.x,
SD 2.x and SDXL all share this vocabulary.

This module is also the one place where AUTOMATIC1111's prompt syntax is read, for both the
token counter and the prompt encoder (``engine.text``):

- :func:`parse_prompt_attention` / :func:`prompt_pieces`: emphasis ``(word)``, ``[word]``,
  ``(word:1.3)``, escapes and ``BREAK``, per emphasis mode ("None" keeps brackets as text);
- :func:`chunk_prompt`: the pieces in chunks of 75 tokens as A1111's ``tokenize_line``
  (``BREAK``, the comma backtrack, embeddings kept whole in one chunk);
- :func:`encode` gives the raw token ids of a text (without BOS/EOS);
- :func:`count_tokens` counts a *prompt* as the engine encodes it (``<lora:...>`` tags removed
  the way ``GenerationRequest.prompt_loras`` removes them, then parsed and chunked: the count
  includes the padding that ``BREAK`` and the comma backtrack add, as A1111's counter);
- :func:`chunk_info` turns a count into ``(count, capacity)`` for a "12/75" display.

The vocabulary is loaded lazily on first use (about 0.3 s); importing this module is cheap.
"""

from __future__ import annotations

import re
import threading
import unicodedata
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

CHUNK = 75  # tokens per CLIP window, without BOS/EOS
BOS_ID = 49406
EOS_ID = 49407
COMMA_ID = 267  # ",</w>"
COMMA_BACKTRACK = 20  # A1111's comma_padding_backtrack default
ROUND_FACTOR = 1.1  # (word)
SQUARE_FACTOR = 1 / 1.1  # [word]
BREAK_WEIGHT = -1.0  # the weight A1111's parser gives its BREAK marker

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
    """The prompt the engine encodes: the ``<lora:...>`` tags taken out and the rest kept as
    it is, as AUTOMATIC1111's extra-network parser does (``"<lora:a:1>, cat"`` encodes
    ``", cat"``; CLIP's tokenizer folds the spaces)."""
    return _LORA_TAG.sub("", prompt)


def _weight(number: str) -> float | None:
    try:
        return float(number)
    except ValueError:  # "(a:1.2.3)" or "(a:.)": A1111 stops with an error; here it is text
        return None


def parse_prompt_attention(text: str) -> list[tuple[str, float]]:
    r"""AUTOMATIC1111's emphasis parser (``prompt_parser.parse_prompt_attention``): the text
    in pieces with their weights, ``"a (b:1.5) [c]"`` -> ``[("a ", 1.0), ("b", 1.5),
    (" ", 1.0), ("c", 0.909...)]``. ``(x)`` multiplies by 1.1, ``[x]`` divides by 1.1,
    ``(x:w)`` multiplies by w, nesting multiplies; brackets left open apply to the end;
    ``\(`` ``\)`` ``\[`` ``\]`` ``\\`` are the characters; a stray closing bracket is text.
    ``BREAK`` becomes the piece ``("BREAK", -1.0)`` (see :func:`is_break`). Adjacent pieces
    of equal weight are merged, so ``(x:1.0)`` is the same single piece as ``x``."""
    pieces: list[list[Any]] = []  # [text, weight], weights scaled as brackets close
    open_round: list[int] = []
    open_square: list[int] = []

    def scale(start: int, factor: float) -> None:
        for piece in pieces[start:]:
            piece[1] *= factor

    for match in _ATTENTION.finditer(text):
        part, number = match.group(0), match.group(1)
        factor = _weight(number) if number is not None and open_round else None
        if part.startswith("\\"):
            pieces.append([part[1:], 1.0])
        elif part == "(":
            open_round.append(len(pieces))
        elif part == "[":
            open_square.append(len(pieces))
        elif factor is not None:
            scale(open_round.pop(), factor)
        elif part == ")" and open_round:
            scale(open_round.pop(), ROUND_FACTOR)
        elif part == "]" and open_square:
            scale(open_square.pop(), SQUARE_FACTOR)
        else:
            for i, segment in enumerate(_BREAK.split(part)):
                if i:
                    pieces.append(["BREAK", BREAK_WEIGHT])
                pieces.append([segment, 1.0])
    for start in open_round:
        scale(start, ROUND_FACTOR)
    for start in open_square:
        scale(start, SQUARE_FACTOR)
    merged: list[tuple[str, float]] = []
    for piece_text, piece_weight in pieces:  # A1111 merges any equal neighbours
        if merged and merged[-1][1] == piece_weight:
            merged[-1] = (merged[-1][0] + piece_text, merged[-1][1])
        else:
            merged.append((piece_text, piece_weight))
    return merged or [("", 1.0)]


def is_break(text: str, weight: float) -> bool:
    """Whether a parsed piece is A1111's ``BREAK`` marker (a bracketed BREAK is text)."""
    return text == "BREAK" and weight == BREAK_WEIGHT


def prompt_pieces(prompt: str, emphasis: str = "Original") -> list[tuple[str, float]]:
    """The pieces A1111 tokenizes for an emphasis mode: with ``"None"`` the whole prompt is
    one piece of weight 1 (brackets and ``BREAK`` are text); otherwise the parsed pieces
    ("Ignore" parses the same way and then leaves the weights unused)."""
    if emphasis == "None":
        return [(prompt, 1.0)]
    return parse_prompt_attention(prompt)


# ----------------------------------------------------------------------------- chunking
@dataclass
class PromptChunk:
    """One 75-token window of a prompt: its token ids (up to 75, without BOS/EOS) and the
    weight of each."""

    tokens: list[int] = field(default_factory=list)
    weights: list[float] = field(default_factory=list)

    def row(self, bos: int, eos: int, pad: int) -> list[int]:
        """The 77 ids the text encoder sees: BOS, the tokens, EOS up to 76, EOS; then, as
        A1111's ``process_tokens`` does for encoders whose pad id is not EOS, every id
        after the first EOS becomes ``pad``."""
        ids = [bos, *self.tokens, *[eos] * (CHUNK - len(self.tokens)), eos]
        if pad != eos:
            first = ids.index(eos)
            ids[first + 1:] = [pad] * (len(ids) - first - 1)
        return ids

    def row_weights(self) -> list[float]:
        """The 77 weights matching :meth:`row` (1.0 for BOS, EOS and padding)."""
        return [1.0, *self.weights, *[1.0] * (CHUNK + 1 - len(self.weights))]


@dataclass
class ChunkedPrompt:
    chunks: list[PromptChunk]
    token_count: int  # A1111's count: full chunks as 75, the last one as its tokens


def chunk_prompt(
    pieces: Sequence[tuple[str, float]],
    tokenize: Callable[[str], Sequence[int]],
    *,
    comma_id: int = COMMA_ID,
    comma_backtrack: int = COMMA_BACKTRACK,
    embedding_at: Callable[[Sequence[int], int], int] | None = None,
) -> ChunkedPrompt:
    """Split parsed prompt pieces into 75-token chunks as A1111's ``tokenize_line`` does.

    Each piece is tokenized on its own. A chunk is closed when it holds 75 tokens, and at
    ``BREAK``. When a chunk is full and its last comma is at most ``comma_backtrack``
    tokens back, the tokens after that comma move on to the next chunk (A1111's
    ``comma_padding_backtrack``, 20 by default; 0 turns it off). ``embedding_at(ids, i)``
    gives the length of a textual-inversion embedding's tokens starting at ``ids[i]`` (0 when
    none starts there): an embedding that does not fit in the current chunk starts the next.
    The token count is A1111's: each closed chunk counts 75, the last one its tokens."""
    chunks: list[PromptChunk] = []
    current = PromptChunk()
    count = 0
    last_comma = -1

    def close(last: bool = False) -> None:
        nonlocal current, count, last_comma
        count += len(current.tokens) if last else CHUNK
        chunks.append(current)
        current = PromptChunk()
        last_comma = -1

    for text, weight in pieces:
        if is_break(text, weight):
            close()
            continue
        ids = list(tokenize(text))
        pos = 0
        while pos < len(ids):
            token = ids[pos]
            full = len(current.tokens) == CHUNK
            if token == comma_id:
                last_comma = len(current.tokens)
            elif (comma_backtrack and full and last_comma != -1
                  and CHUNK - last_comma <= comma_backtrack):
                cut = last_comma + 1
                moved = PromptChunk(current.tokens[cut:], current.weights[cut:])
                del current.tokens[cut:], current.weights[cut:]
                close()
                current = moved
            if len(current.tokens) == CHUNK:
                close()
            span = embedding_at(ids, pos) if embedding_at is not None else 0
            if span > 1 and len(current.tokens) + span > CHUNK:
                close()  # an embedding's vectors stay together in one chunk
            span = max(span, 1)
            current.tokens.extend(ids[pos:pos + span])
            current.weights.extend([weight] * span)
            pos += span
    if current.tokens or not chunks:
        close(last=True)
    return ChunkedPrompt(chunks, count)


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
def count_tokens(text: str, *, emphasis: str = "Original") -> int:
    """A1111's token count for a prompt as the engine encodes it with ``emphasis`` (one of
    ``core.request.EMPHASIS_MODES``): LoRA tags removed, emphasis syntax parsed away (not
    with "None"), and the padding that ``BREAK`` and the comma backtrack add to full chunks
    included. For plain text without commas near a chunk's end it is
    ``len(encode(text))``."""
    pieces = prompt_pieces(strip_lora_tags(text), emphasis)
    return chunk_prompt(pieces, _default().encode).token_count


def chunk_info(n: int) -> tuple[int, int]:
    """``(n, capacity)`` for a "12/75" display: capacity grows in steps of 75."""
    n = max(0, int(n))
    return n, max(1, -(-n // CHUNK)) * CHUNK


def preload() -> None:
    """Load the vocabulary now (call from a background thread to hide the first-use cost)."""
    _default()._ensure_loaded()
