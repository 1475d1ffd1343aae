"""Expanding a prompt list into a deterministic sequence of work units, one image each.

A **work unit** is (item, image): image ``j`` of good line ``i``. Every item makes
``per_prompt x batch_size x batch_count`` images (a line's A1111 ``--batch_size`` /
``--n_iter`` multiply the batch's images per prompt). Units are generated one image per
engine call, so a crash loses at most the image being made.

Seed policies (the seed of every unit is decided before anything runs and written to the
manifest header, so a resume uses the same seeds even for "random"):

- ``fixed``: every prompt uses the same seed S; its images use S, S+1, ... (AUTOMATIC1111's
  convention within one job), so prompts can be compared seed for seed.
- ``increment``: +1 per image across the whole batch: the k-th unit gets S + k.
- ``random``: a fresh random seed for every image.

S is the shared default seed; when that is -1 (random) one seed is drawn for the whole batch.
A line that sets its own ``seed`` always gets seed, seed+1, ... for its images, whatever the
policy. Units are identified by a **content key** (a hash of the item's resolved request and
its occurrence number) plus the image index, so that a resume after editing the list keeps
the images already made for unchanged lines.

Key encodings (the manifest header's ``version`` says which one a batch folder uses; a folder
keeps its encoding until it is restarted, so records written by an older SD Studio still
match):

- **2** (current): the request as ``GenerationRequest.changed_dict()`` (the prompt and only
  the fields whose value differs from the field's default), as JSON with sorted keys, ASCII
  escapes and no spaces; key = first 16 hex digits of its sha256. A new field with a default
  changes no key.
- **1** (SD Studio 0.1 manifests): ``to_dict()`` of the 22 fields that existed then
  (:data:`V1_FIELDS`), every value included, same JSON rules. Fields added later join only
  when they differ from their default, so an unchanged line hashes as it did.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sdstudio.core.prompts import PromptList
from sdstudio.core.request import MAX_SEED, GenerationRequest
from sdstudio.core.sampler_names import combined_name
from sdstudio.core.settings import DEFAULT_FILENAME_PATTERN
from sdstudio.storage.manifest import MANIFEST_VERSION

SEED_POLICIES: tuple[str, ...] = ("fixed", "increment", "random")
BATCH_TAG = "sdstudio-batch"


@dataclass(frozen=True)
class BatchOptions:
    out_dir: Path
    per_prompt: int = 1
    seed_policy: str = "increment"
    pattern: str = DEFAULT_FILENAME_PATTERN
    skip_bad_lines: bool = False
    on_change: str | None = None  # "resume" | "restart" | None (ask / refuse)
    restart: bool = False  # start over even when the list did not change

    def check(self) -> BatchOptions:
        if self.seed_policy not in SEED_POLICIES:
            raise ValueError(
                f"seed policy must be one of {', '.join(SEED_POLICIES)}, not {self.seed_policy!r}"
            )
        if not isinstance(self.per_prompt, int) or not 1 <= self.per_prompt <= 10000:
            raise ValueError(
                f"images per prompt must be between 1 and 10000, not {self.per_prompt}"
            )
        if self.on_change not in (None, "resume", "restart"):
            raise ValueError(f"on_change must be resume or restart, not {self.on_change!r}")
        return self


@dataclass(frozen=True)
class WorkUnit:
    index: int  # position in the plan
    item: int  # index into PromptList.items
    line_no: int
    image: int  # image index within the item
    images: int  # images of this item in all
    key: str  # content key of the item
    seed: int
    request: GenerationRequest  # exactly one image: batch_size = batch_count = 1, seed set

    @property
    def slot(self) -> tuple[str, int]:
        return (self.key, self.image)

    def tag(self, run_id: str) -> str:
        """Written into the image's metadata (GenerationInfo.notes) so that an image saved just
        before a crash, without its manifest line, is recognised and adopted on resume."""
        return (
            f"{BATCH_TAG} run={run_id} unit={self.index} item={self.item} line={self.line_no} "
            f"image={self.image} key={self.key} seed={self.seed}"
        )


def parse_tag(note: str) -> dict[str, str] | None:
    if not note.startswith(BATCH_TAG + " "):
        return None
    out: dict[str, str] = {}
    for part in note[len(BATCH_TAG) + 1:].split():
        name, sep, value = part.partition("=")
        if sep:
            out[name] = value
    return out


def images_per_item(request: GenerationRequest, per_prompt: int) -> int:
    return per_prompt * request.batch_size * request.batch_count


# The request fields of key encoding 1: a format definition (frozen), not a field list to
# extend. New fields never go here.
V1_FIELDS: tuple[str, ...] = (
    "prompt", "negative_prompt", "width", "height", "steps", "cfg_scale", "seed", "sampler",
    "batch_size", "batch_count", "strength", "init_image", "mask", "mask_blur",
    "inpaint_only_masked", "inpaint_padding", "resize_mode", "model", "vae", "loras",
    "clip_skip", "rng",
)
KEY_ENCODINGS = (1, 2)


def request_key_data(request: GenerationRequest, encoding: int = MANIFEST_VERSION
                     ) -> dict[str, Any]:
    """What a content key hashes of ``request`` in key ``encoding`` (see the module doc)."""
    changed = _fold_schedule(request.changed_dict())
    if encoding == 1:
        full = _fold_schedule(request.to_dict())
        return {**{n: full[n] for n in V1_FIELDS},
                **{n: v for n, v in changed.items() if n not in V1_FIELDS}}
    if encoding != 2:
        raise ValueError(f"unknown batch key encoding {encoding}")
    return changed


def _fold_schedule(data: dict[str, Any]) -> dict[str, Any]:
    """A sampler + schedule type that had one combined name ("DPM++ 2M Karras") hashes as
    that name, as before schedule types were a field: old manifests keep their keys."""
    schedule = data.get("schedule_type", "Automatic")
    old = combined_name(data.get("sampler", ""), schedule)
    if old is not None:
        data = {**data, "sampler": old}
    if "schedule_type" in data and (old is not None or schedule == "Automatic"):
        data = {k: v for k, v in data.items() if k != "schedule_type"}
    return data


def item_keys(prompts: PromptList, encoding: int = MANIFEST_VERSION) -> list[str]:
    """A stable key per item: hash of its resolved request + which occurrence of it this is."""
    seen: dict[str, int] = {}
    keys: list[str] = []
    for item in prompts.items:
        data = request_key_data(item.request, encoding)
        digest = hashlib.sha256(_canonical(data).encode()).hexdigest()[:16]
        n = seen.get(digest, 0)
        seen[digest] = n + 1
        keys.append(f"{digest}.{n}")
    return keys


def fingerprint(prompts: PromptList, per_prompt: int, seed_policy: str,
                encoding: int = MANIFEST_VERSION) -> str:
    """Changes when (and only when) the plan changes: a comment edit keeps it."""
    data = {
        "items": [
            {"request": request_key_data(it.request, encoding), "seed_set": it.sets_seed}
            for it in prompts.items
        ],
        "per_prompt": per_prompt,
        "seed_policy": seed_policy,
    }
    return hashlib.sha256(_canonical(data).encode()).hexdigest()


def _canonical(data: Any) -> str:
    return json.dumps(data, sort_keys=True, ensure_ascii=True, separators=(",", ":"))


def draw_seed(rng: random.Random | None = None) -> int:
    return (rng or random.SystemRandom()).randrange(0, MAX_SEED + 1)


def decide_seeds(
    prompts: PromptList,
    per_prompt: int,
    seed_policy: str,
    draw: Callable[[], int] | None = None,
) -> list[int]:
    """The seed of every unit, in plan order."""
    draw = draw or draw_seed
    shared: int | None = None

    def batch_seed(default: int) -> int:
        nonlocal shared
        if default != -1:
            return default
        if shared is None:
            shared = draw()
        return shared

    seeds: list[int] = []
    k = 0
    for item in prompts.items:
        count = images_per_item(item.request, per_prompt)
        for j in range(count):
            if item.sets_seed and item.request.seed != -1:
                seed = item.request.seed + j
            elif seed_policy == "fixed":
                seed = batch_seed(item.request.seed) + j
            elif seed_policy == "increment":
                seed = batch_seed(item.request.seed) + k
            else:
                seed = draw()
            seeds.append(seed % (MAX_SEED + 1))
            k += 1
    return seeds


def plan_units(prompts: PromptList, per_prompt: int, seeds: Sequence[int],
               encoding: int = MANIFEST_VERSION) -> list[WorkUnit]:
    keys = item_keys(prompts, encoding)
    units: list[WorkUnit] = []
    k = 0
    for i, item in enumerate(prompts.items):
        count = images_per_item(item.request, per_prompt)
        for j in range(count):
            seed = seeds[k]
            request = item.request.replace(seed=seed, batch_size=1, batch_count=1)
            units.append(WorkUnit(k, i, item.line_no, j, count, keys[i], seed, request))
            k += 1
    if k != len(seeds):
        raise ValueError(f"{len(seeds)} seeds for {k} work units")
    return units


def count_units(prompts: PromptList, per_prompt: int) -> int:
    return sum(images_per_item(it.request, per_prompt) for it in prompts.items)
