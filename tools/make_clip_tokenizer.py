"""Generate the CLIP BPE tokenizer files shipped in ``resources/tokenizers``.

The CLIP byte-pair vocabulary is public data that OpenAI published with CLIP; PyPI packages ship
it (``clip/bpe_simple_vocab_16e6.txt.gz`` inside the ``clip-anytorch`` wheel). Stable Diffusion
1.x, 2.x and SDXL all tokenize with it. This script fetches that wheel with pip (no model hub),
rebuilds ``vocab.json`` and ``merges.txt`` exactly as CLIP builds its encoder, and writes two
tokenizer folders that ``transformers.CLIPTokenizer.from_pretrained`` loads offline:

* ``clip-l``   — SD 1.x and SDXL's first tokenizer: pads with ``<|endoftext|>`` (49407);
* ``clip-g``   — SD 2.x and SDXL's second tokenizer (OpenCLIP): pads with ``!`` (id 0).

Usage: ``python tools/make_clip_tokenizer.py [--wheel PATH] [--out resources/tokenizers]``
"""

from __future__ import annotations

import argparse
import gzip
import json
import subprocess
import sys
import tempfile
import zipfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from sdstudio.core.tokens import bytes_to_unicode  # CLIP's byte table

BPE_MEMBER = "clip/bpe_simple_vocab_16e6.txt.gz"
MODEL_MAX_LENGTH = 77


def build_vocab(bpe_text: str) -> tuple[dict[str, int], list[str]]:
    lines = bpe_text.split("\n")
    merges = lines[1 : 49152 - 256 - 2 + 1]
    symbols = list(bytes_to_unicode().values())
    vocab = symbols + [s + "</w>" for s in symbols]
    vocab += ["".join(m.split()) for m in merges]
    vocab += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab)}, merges


def fetch_bpe(wheel: Path | None) -> str:
    with tempfile.TemporaryDirectory() as tmp:
        if wheel is None:
            subprocess.run(
                [sys.executable, "-m", "pip", "download", "--no-deps", "-q", "-d", tmp,
                 "clip-anytorch==2.6.0"],
                check=True,
            )
            wheel = next(Path(tmp).glob("*.whl"))
        with zipfile.ZipFile(wheel) as zf:
            return gzip.decompress(zf.read(BPE_MEMBER)).decode("utf-8")


def write_tokenizer(folder: Path, vocab: dict[str, int], merges: list[str], pad: str) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text(
        "#version: 0.2\n" + "\n".join(merges) + "\n", encoding="utf-8"
    )
    special = {
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": pad,
    }
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MODEL_MAX_LENGTH,
        "do_lower_case": True,
        "clean_up_tokenization_spaces": False,
        **special,
    }
    (folder / "special_tokens_map.json").write_text(json.dumps(special, indent=2) + "\n")
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--wheel", type=Path, help="a local clip-anytorch wheel")
    parser.add_argument(
        "--out", type=Path, default=Path(__file__).resolve().parents[1] / "resources" / "tokenizers"
    )
    args = parser.parse_args(argv)
    vocab, merges = build_vocab(fetch_bpe(args.wheel))
    assert len(vocab) == 49408, len(vocab)
    write_tokenizer(args.out / "clip-l", vocab, merges, pad="<|endoftext|>")
    write_tokenizer(args.out / "clip-g", vocab, merges, pad="!")
    print(f"wrote {args.out / 'clip-l'} and {args.out / 'clip-g'} ({len(vocab)} tokens)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
