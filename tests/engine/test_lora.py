"""LoRA (kohya / A1111 format), separate VAE files and textual-inversion embeddings on the
tiny models: effects appear, and disappear completely when removed."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from sdstudio.core.errors import ModelError
from sdstudio.core.request import GenerationRequest, LoraSpec
from sdstudio.core.settings import EngineSettings
from sdstudio.engine import Engine
from sdstudio.engine.convert import vae_to_ldm
from sdstudio.engine.lora import apply_embeddings, apply_loras, load_vae, read_embedding
from tests.engine._ldm_fixtures import kohya_lora


@pytest.fixture(scope="module")
def lora_dir(tiny_models: dict[str, Path], tmp_path_factory: pytest.TempPathFactory) -> Path:
    from diffusers import DiffusionPipeline

    folder = tmp_path_factory.mktemp("loras")
    for kind in ("sd1", "sdxl"):
        pipe = DiffusionPipeline.from_pretrained(tiny_models[kind], local_files_only=True)
        save_file(kohya_lora(pipe, seed=1), str(folder / f"tiny-{kind}.safetensors"))
        sub = folder / "styles"
        sub.mkdir(exist_ok=True)
        save_file(kohya_lora(pipe, seed=2), str(sub / f"other-{kind}.safetensors"))
    return folder


def _pixels(engine: Engine, model: Path, prompt: str, **kw: object) -> tuple[np.ndarray, object]:
    req = GenerationRequest(prompt=prompt, width=64, height=64, steps=2, seed=11,
                            model=str(model), **kw)  # type: ignore[arg-type]
    out = engine.generate(req)[0]
    return np.asarray(out.image).astype(np.int16), out.info


@pytest.mark.parametrize("kind", ["sd1", "sdxl"])
def test_lora_changes_the_image_and_leaves_no_trace(
    kind: str, tiny_models: dict[str, Path], lora_dir: Path
) -> None:
    engine = Engine(EngineSettings(lora_dirs=(str(lora_dir),)))
    model = tiny_models[kind]
    base, info0 = _pixels(engine, model, "a cat")
    assert dict(info0.lora_hashes) == {}  # type: ignore[attr-defined]
    with_lora, info = _pixels(engine, model, f"a cat <lora:tiny-{kind}:0.8>")
    assert np.abs(with_lora - base).max() > 0
    raw = (lora_dir / f"tiny-{kind}.safetensors").read_bytes()  # A1111: sha256 after header
    expected = hashlib.sha256(raw[8 + int.from_bytes(raw[:8], "little"):]).hexdigest()[:12]
    assert dict(info.lora_hashes) == {f"tiny-{kind}": expected}  # type: ignore[attr-defined]
    zero, _ = _pixels(engine, model, f"a cat <lora:tiny-{kind}:0>")
    assert np.array_equal(zero, base)
    removed, _ = _pixels(engine, model, "a cat")
    assert np.array_equal(removed, base)
    # two at once, one from a subfolder, then back to one: same as that one alone
    two, info2 = _pixels(engine, model,
                         f"a cat <lora:tiny-{kind}:0.8> <lora:styles/other-{kind}:0.5>")
    assert len(info2.lora_hashes) == 2  # type: ignore[attr-defined]
    assert np.abs(two - with_lora).max() > 0
    again, _ = _pixels(engine, model, f"a cat <lora:tiny-{kind}:0.8>")
    assert np.array_equal(again, with_lora)
    engine.unload()


def test_lora_api_restores_every_weight(tiny_models: dict[str, Path], lora_dir: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd1"], local_files_only=True)
    parts = {"unet": pipe.unet, "te": pipe.text_encoder}
    before = {f"{p}.{n}": t.clone() for p, m in parts.items() for n, t in m.state_dict().items()}
    names_before = {n for n, _ in pipe.unet.named_modules()}
    settings = EngineSettings(lora_dirs=(str(lora_dir),))
    hashes = apply_loras(pipe, (LoraSpec("tiny-sd1", 1.0),), settings)
    assert list(hashes) == ["tiny-sd1"]
    after = {f"{p}.{n}": t for p, m in parts.items() for n, t in m.state_dict().items()}
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert any(k.startswith("unet.") for k in changed)
    assert any(k.startswith("te.") for k in changed)
    assert {n for n, _ in pipe.unet.named_modules()} == names_before  # no layers added
    apply_loras(pipe, (), settings)
    after = {f"{p}.{n}": t for p, m in parts.items() for n, t in m.state_dict().items()}
    assert all(torch.equal(before[k], after[k]) for k in before)


def test_unknown_and_wrong_loras(tiny_models: dict[str, Path], lora_dir: Path,
                                 tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd1"], local_files_only=True)
    settings = EngineSettings(lora_dirs=(str(lora_dir),))
    with pytest.raises(ModelError, match="not found"):
        apply_loras(pipe, (LoraSpec("nope", 1.0),), settings)
    with pytest.raises(ModelError):  # an SDXL LoRA on an SD1 model
        apply_loras(pipe, (LoraSpec("tiny-sdxl", 1.0),), settings)
    bad = tmp_path / "notalora.safetensors"
    save_file({"w": torch.zeros(2)}, str(bad))
    with pytest.raises(ModelError, match="not a LoRA"):
        apply_loras(pipe, (LoraSpec(str(bad), 1.0),), settings)


def test_separate_vae_file(tiny_models: dict[str, Path], tmp_path: Path) -> None:
    from diffusers import AutoencoderKL
    from safetensors.torch import load_file

    folder = tiny_models["sd1"]
    cfg = AutoencoderKL.load_config(folder / "vae")
    state = load_file(str(next((folder / "vae").glob("*.safetensors"))))
    same = tmp_path / "same.vae.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(state, cfg).items()}, str(same))
    changed = {k: (v * 1.05 if k.startswith("decoder.conv_out") else v) for k, v in state.items()}
    other = tmp_path / "other.vae.safetensors"
    save_file({k: v.contiguous() for k, v in vae_to_ldm(changed, cfg).items()}, str(other))

    vae = load_vae(same, device="cpu", dtype=torch.float32, scaling_factor=0.5)
    assert vae.config.scaling_factor == 0.5
    loaded = vae.state_dict()
    assert all(torch.equal(loaded[k], state[k]) for k in state)

    engine = Engine(EngineSettings(vae_dirs=(str(tmp_path),)))
    base, _ = _pixels(engine, folder, "a cat")
    same_px, info_same = _pixels(engine, folder, "a cat", vae=str(same))
    assert np.array_equal(same_px, base)
    assert info_same.vae_name  # type: ignore[attr-defined]
    other_px, _ = _pixels(engine, folder, "a cat", vae=str(other))
    assert np.abs(other_px - base).max() > 0
    # a VAE named from the VAE folders has A1111's "VAE hash" too (its file's sha256)
    by_name, info_named = _pixels(engine, folder, "a cat", vae="other.vae")
    assert np.array_equal(by_name, other_px)
    assert info_named.vae_sha256 == hashlib.sha256(other.read_bytes()).hexdigest()  # type: ignore[attr-defined]
    back, _ = _pixels(engine, folder, "a cat")
    assert np.array_equal(back, base)
    engine.unload()
    with pytest.raises(ModelError):
        load_vae(tmp_path / "missing.safetensors")


def test_embeddings_make_their_token_usable(tiny_models: dict[str, Path],
                                            tmp_path: Path) -> None:
    from diffusers import DiffusionPipeline

    pipe = DiffusionPipeline.from_pretrained(tiny_models["sd1"], local_files_only=True)
    pipe.set_progress_bar_config(disable=True)
    width = pipe.text_encoder.get_input_embeddings().weight.shape[1]
    gen = torch.Generator().manual_seed(0)
    emb_dir = tmp_path / "embeddings"
    emb_dir.mkdir()
    # A1111 safetensors ("emb_params"), A1111 .pt (string_to_param), diffusers {token: tensor}
    save_file({"emb_params": torch.randn(2, width, generator=gen)},
              str(emb_dir / "shinystyle.safetensors"))
    torch.save({"string_to_param": {"*": torch.randn(1, width, generator=gen)},
                "name": "oldstyle", "step": 100}, emb_dir / "oldstyle.pt")
    torch.save({"<learned>": torch.randn(width, generator=gen)}, emb_dir / "learned.bin")
    save_file({"emb_params": torch.randn(1, width + 8, generator=gen)},
              str(emb_dir / "wrongwidth.safetensors"))
    assert read_embedding(emb_dir / "oldstyle.pt")[""].shape == (1, width)

    skipped = apply_embeddings(pipe, EngineSettings(embedding_dirs=(str(emb_dir),)))
    assert set(skipped) == {"wrongwidth"}
    for token in ("shinystyle", "oldstyle", "learned"):
        assert token in pipe.tokenizer.get_vocab()
    ids = pipe.tokenizer("a oldstyle cat").input_ids
    assert pipe.tokenizer.convert_tokens_to_ids("oldstyle") in ids

    def run(prompt: str) -> np.ndarray:
        return pipe(prompt, num_inference_steps=1, height=64, width=64, output_type="np",
                    generator=torch.Generator().manual_seed(1)).images

    assert np.abs(run("a shinystyle cat") - run("a cat")).max() > 0
    assert apply_embeddings(pipe, EngineSettings(embedding_dirs=(str(emb_dir),))) == {
        "wrongwidth": "made for another model family"}  # loaded ones are not loaded twice


def test_engine_uses_embeddings_from_the_settings(tiny_models: dict[str, Path],
                                                  tmp_path: Path) -> None:
    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    save_file({"emb_params": torch.randn(3, 32, generator=torch.Generator().manual_seed(4))},
              str(emb_dir / "multivec.safetensors"))
    # the same prompt, without and with the embedding folder: the token's meaning changes
    without = Engine(EngineSettings())
    plain, _ = _pixels(without, tiny_models["sd1"], "a multivec cat")
    without.unload()
    engine = Engine(EngineSettings(embedding_dirs=(str(emb_dir),)))
    styled, info = _pixels(engine, tiny_models["sd1"], "a multivec cat")
    _, unused = _pixels(engine, tiny_models["sd1"], "a cat")
    engine.unload()
    assert np.abs(styled - plain).max() > 0
    digest = hashlib.sha256((emb_dir / "multivec.safetensors").read_bytes()).hexdigest()
    assert info.ti_hashes == {"multivec": digest[:12]}  # type: ignore[attr-defined]
    assert unused.ti_hashes == {}  # type: ignore[attr-defined]  # only what the prompt uses


class _Shell:
    """Pickled, it asks to run a shell command: the safe loader must refuse it unread."""

    def __reduce__(self) -> tuple[object, tuple[str]]:
        import os

        return (os.system, ("echo pwned > /dev/null",))


def test_hostile_or_unreadable_embeddings_give_a_notice(tiny_models: dict[str, Path],
                                                        tmp_path: Path) -> None:
    import pickle

    from sdstudio.core.events import Notice

    emb_dir = tmp_path / "emb"
    emb_dir.mkdir()
    gen = torch.Generator().manual_seed(5)
    save_file({"emb_params": torch.randn(2, 32, generator=gen)},
              str(emb_dir / "mygoodstyle.safetensors"))
    (emb_dir / "code.pt").write_bytes(pickle.dumps({"emb_params": _Shell()}))
    (emb_dir / "junk.safetensors").write_bytes(b"not an embedding at all")
    save_file({"emb_params": torch.randn(500, 32, generator=gen)},
              str(emb_dir / "toomany.safetensors"))
    save_file({"emb_params": torch.full((1, 32), float("nan"))}, str(emb_dir / "nan.safetensors"))
    save_file({"emb_params": torch.ones(1, 32, dtype=torch.int32)},
              str(emb_dir / "ints.safetensors"))
    with (emb_dir / "huge.bin").open("wb") as fh:  # a checkpoint put in the wrong folder
        fh.truncate(200 * 1024 * 1024)

    engine = Engine(EngineSettings(embedding_dirs=(str(emb_dir),)))
    notices: list[str] = []

    def run() -> object:
        req = GenerationRequest(prompt="a mygoodstyle cat", width=64, height=64, steps=2, seed=1,
                                model=str(tiny_models["sd1"]))
        return engine.generate(req, lambda e: notices.append(e.message)
                               if isinstance(e, Notice) else None)[0].info

    info = run()
    told = {n.split()[1]: n for n in notices if n.startswith("embedding ")}
    assert set(told) == {"code", "junk", "toomany", "nan", "ints", "huge"}, notices
    assert "code.pt" in told["code"]  # refused by the safe loader (its wording: checkpoint.py)
    assert "500 vectors" in told["toomany"] and "not finite" in told["nan"]
    assert "too large" in told["huge"]
    assert all("\n" not in n for n in told.values())
    assert len(info.notes) >= 6  # type: ignore[attr-defined]  # and in the image's notes
    notices.clear()
    run()  # the same files: told once per loaded model, not for every image
    assert not [n for n in notices if n.startswith("embedding ")]
    engine.unload()
