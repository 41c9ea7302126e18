"""What the architecture allows: the ratio of two models' FLOPs and bytes moved per generated token
(`minitron.core.cost.token_cost`, which says how they are counted).

    ideal_speedup(teacher_record, student_record)   # {"flops": 1.9, "bytes": 2.1}

The ideal speedup of a student is the teacher's cost over the student's, each at the batch it ran with, so
a 4B model that fits twice the batch of an 8B one gets the credit the paper's Figure 10 gives it. A decode-bound
engine should approach the bytes ratio, a compute-bound one the FLOPs ratio.
"""

from __future__ import annotations

from minitron.core.cost import token_cost
from minitron.core.errors import BadInput


def record_cost(record: dict) -> dict[str, float]:
    """`token_cost` at a record's own grid point, batch and dtypes."""
    if not record.get("arch"):
        raise BadInput(f"the record of {record.get('label')!r} has no `arch`; rerun its sweep with a model "
                         "folder (or --tokenizer for --backend openai)")
    return token_cost(record["arch"], record["isl"], record["osl"], record["batch_size"], record["dtype"],
                      record.get("kv_cache_dtype"))


def ideal_speedup(baseline: dict, record: dict) -> dict[str, float]:
    """How much faster `record`'s model could be than `baseline`'s, by FLOPs and by bytes moved per token."""
    base, this = record_cost(baseline), record_cost(record)
    return {key: base[key] / this[key] for key in ("flops", "bytes")}
