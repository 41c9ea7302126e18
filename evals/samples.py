"""Before and after, as a person reads it: greedy answers of the teacher and each student to fixed chat prompts.

    from minitron.evals.samples import write_samples
    write_samples({"teacher": "work/smollm2/teacher", "width": "work/smollm2/distilled"}, "results/smollm2/samples.md")

Numbers say how much a student lost; a few answers say what that loss looks like. The prompts are fixed, the
decoding greedy and the answers cut at `max_new_tokens`, so a rerun of the same models writes the same file.
Only models whose tokenizer has a chat template (instruct models) are asked: a base model has no turn format.
"""

from __future__ import annotations

from pathlib import Path

import torch

PROMPTS = (
    "What is the capital of France?",
    "Name three primary colors.",
    "Explain in one sentence what a Python list comprehension is.",
    "Write a Python function that returns the square of a number.",
    "What does the len() function return for a dictionary?",
    "Give one tip for writing readable code.",
)


def has_chat_template(model_dir: str | Path) -> bool:
    from transformers import AutoTokenizer

    return bool(getattr(AutoTokenizer.from_pretrained(model_dir), "chat_template", None))


@torch.no_grad()
def greedy_answers(model_dir: str | Path, prompts=PROMPTS, max_new_tokens: int = 48, device: str = "cpu"
                   ) -> list[str]:
    """Each prompt as one user turn through the model's chat template, answered greedily (one batch, padded
    on the left so every answer starts right after its prompt)."""
    from minitron.core.model_io import load_model

    model, tokenizer = load_model(model_dir, dtype=torch.float32, device=device)
    tokenizer.padding_side = "left"
    if tokenizer.pad_token is None:  # padding only fills the left of shorter prompts; the mask hides it
        tokenizer.pad_token = tokenizer.eos_token
    texts = [tokenizer.apply_chat_template([{"role": "user", "content": p}], add_generation_prompt=True,
                                           tokenize=False) for p in prompts]
    batch = tokenizer(texts, return_tensors="pt", padding=True, add_special_tokens=False).to(device)
    out = model.generate(**batch, max_new_tokens=max_new_tokens, do_sample=False, pad_token_id=tokenizer.pad_token_id)
    return [tokenizer.decode(row[batch["input_ids"].shape[1]:], skip_special_tokens=True).strip() for row in out]


def write_samples(models: dict[str, str | Path], out: str | Path, max_new_tokens: int = 48, device: str = "cpu"
                  ) -> str:
    """`out` (Markdown): every prompt, then each model's greedy answer; returns the text."""
    answers = {label: greedy_answers(path, max_new_tokens=max_new_tokens, device=device)
               for label, path in models.items()}
    lines = ["# Greedy answers to fixed prompts", "",
             f"Each model's chat template, greedy decoding, at most {max_new_tokens} new tokens (answers stop there "
             "mid-sentence). Models: " + ", ".join(f"`{label}` ({path})" for label, path in models.items()) + ".", ""]
    for i, prompt in enumerate(PROMPTS):
        lines += [f"## {prompt}", ""]
        for label in models:
            answer = " ".join(answers[label][i].split()) or "(nothing)"
            lines += [f"- **{label}**: {answer}"]
        lines.append("")
    text = "\n".join(lines)
    Path(out).write_text(text)
    return text
