"""Synthetic requests with exact token lengths, the same for every backend and model that shares a tokenizer.

    grid = parse_grid("128/128,2048/128")                      # [(128, 128), (2048, 128)]
    ids = allowed_ids(tokenizer, config.vocab_size)            # the vocabulary minus special tokens
    requests = make_requests(ids, isl=128, num_requests=64, seed=1234)

Prompts are token ids, not text: every engine here accepts ids (transformers `generate`, vLLM's
`TokensPrompt`, trtllm-bench's dataset `input_ids`, and `prompt: [ids]` in the OpenAI completions API), so
the input length is exact by construction, where text would re-tokenize a few tokens longer or shorter.
Special tokens are excluded, so no prompt carries an EOS or a pad that an engine might treat specially.
Generation is forced to OSL by each backend (EOS ignored); each backend measures what it really got.

The default grid is the ISL/OSL combinations of TensorRT-LLM's performance tables.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from minitron.core.errors import BadInput

DEFAULT_GRID = "128/128,128/2048,2048/128,2048/2048,500/2000,5000/500"


def parse_grid(spec: str) -> list[tuple[int, int]]:
    """'128/128,2048/128' -> [(128, 128), (2048, 128)], in the given order, duplicates dropped."""
    grid: list[tuple[int, int]] = []
    for part in spec.split(","):
        isl, sep, osl = part.strip().partition("/")
        try:
            point = (int(isl), int(osl))
        except ValueError:
            point = None
        if not sep or point is None or min(point) < 1:
            raise BadInput(f"--isl-osl {spec!r}: expected ISL/OSL pairs of positive integers separated by "
                             "commas, e.g. 128/128,2048/128")
        if point not in grid:
            grid.append(point)
    return grid


def allowed_ids(tokenizer, vocab_size: int | None = None) -> list[int]:
    """Token ids a prompt may contain: the tokenizer's vocabulary (below the model's `vocab_size`, which may be
    padded larger or, rarely, smaller) without its special tokens."""
    size = len(tokenizer) if vocab_size is None else min(len(tokenizer), vocab_size)
    special = set(tokenizer.all_special_ids)
    ids = [i for i in range(size) if i not in special]
    if not ids:
        raise BadInput("the tokenizer has no ordinary tokens to build prompts from; pass a model with a real "
                         "tokenizer")
    return ids


def make_requests(ids: list[int], isl: int, num_requests: int, seed: int) -> list[list[int]]:
    """`num_requests` prompts of exactly `isl` tokens drawn from `ids`; a function of (seed, isl) only, so the
    teacher and its students, on any backend, see the same prompts at a grid point."""
    rng = random.Random(f"minitron-bench-{seed}-{isl}")  # str seeds are stable across processes
    return [rng.choices(ids, k=isl) for _ in range(num_requests)]


def check_fits(isl: int, osl: int, max_positions: int | None, what: str) -> None:
    """Fail before any run when a grid point does not fit the model's positions."""
    if max_positions is not None and isl + osl > max_positions:
        raise BadInput(f"ISL+OSL {isl}+{osl} = {isl + osl} exceeds the {max_positions} positions of {what}; "
                         f"drop {isl}/{osl} from --isl-osl or benchmark a model with longer context")


def write_trtllm_dataset(path: str | Path, requests: list[list[int]], osl: int) -> Path:
    """The requests in trtllm-bench's dataset format (what `trtllm-bench prepare-dataset` writes): one JSON
    object per line with `task_id`, `input_ids` and `output_tokens`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as f:
        for i, prompt in enumerate(requests):
            f.write(json.dumps({"task_id": i, "input_ids": prompt, "output_tokens": osl}, separators=(",", ":")))
            f.write("\n")
    return path
