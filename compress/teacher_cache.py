"""The frozen teacher's last hidden states, computed once per token block and reused by every run that feeds it
the same tokens.

    minitron distill --teacher T --student S --data D --out OUT --steps 12 --teacher-cache work/teacher-outputs

Why: the findings train several students from one teacher on the same batches (width, depth, random init and
random pruning under one seed), and on a CPU the teacher's forward pass is about a third of a distillation step.
Hidden states, not logits: the KD loss computes the teacher's logits chunk by chunk from them (fp32 logits of a
49k vocabulary would be 400 MB per step; the hidden states of 8 x 256 tokens of a 576-wide model are 5 MB).
Entries are keyed by the teacher's weights (sha256 of its safetensors), the device and precision the forward
ran under, and the token ids themselves, so a hit returns the bits a forward pass would have computed. One
process only: under torchrun the sharded teacher's forward is a collective every rank must join.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import torch
from minitron.core.gguf import file_sha256
from minitron.core.records import atomic_file
from safetensors.torch import load_file, save_file


def weights_digest(model_dir: str | Path) -> str:
    """The names and sha256 of a checkpoint's safetensors files, in name order."""
    return "|".join(f"{path.name}:{file_sha256(path)}" for path in sorted(Path(model_dir).glob("*.safetensors")))


class TeacherCache:
    """`hidden(teacher, ids)`: the teacher's last hidden state for `ids`, from `root` when it holds it."""

    def __init__(self, root: str | Path, teacher_dir: str | Path, context: str):
        """`context` names what else changes the forward's bits (device, precision)."""
        self.folder = Path(root) / hashlib.sha256(f"{weights_digest(teacher_dir)}|{context}".encode()).hexdigest()[:24]
        self.hits = self.misses = 0

    def hidden(self, teacher, ids: torch.Tensor) -> torch.Tensor:
        key = hashlib.sha256(f"{tuple(ids.shape)}|{ids.dtype}".encode() + ids.cpu().numpy().tobytes()).hexdigest()
        path = self.folder / f"{key}.safetensors"
        if path.is_file():
            self.hits += 1
            return load_file(path, device=str(ids.device))["hidden"]
        self.misses += 1
        with torch.no_grad():
            hidden = teacher.model(input_ids=ids, use_cache=False).last_hidden_state
        with atomic_file(path) as tmp:  # another process may write the same entry
            save_file({"hidden": hidden.detach().cpu().contiguous()}, str(tmp))
        return hidden
