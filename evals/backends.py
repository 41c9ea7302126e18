"""The model behind an evaluation: lm-eval's own backends, chosen by name.

- `hf`: a checkpoint folder through lm-eval's HFLM (CPU works: device="cpu");
- `memory`: a model object already in memory (HFLM wrapping it), so the depth scan scores every candidate
  block on Winogrande without reloading;
- `vllm`: lm-eval's vLLM backend (GPU, `pip install vllm`);
- `openai`: any OpenAI-compatible completions server (`trtllm-serve`, `vllm serve`) through lm-eval's
  `local-completions`.
Engines are imported only when chosen; a missing one is a clear error, not a traceback.
"""

from __future__ import annotations

import importlib.util

from minitron.core.errors import BadInput, MissingDependency

BACKENDS = ("hf", "vllm", "openai")


class BackendUnavailable(MissingDependency):
    """The model backend (its package or server) is not available here."""


def hf_lm(model, tokenizer=None, device: str = "cpu", batch_size: int = 8):
    """HFLM over a folder (str/Path) or an in-memory model object (then `tokenizer` is required)."""
    from lm_eval.models.huggingface import HFLM

    if isinstance(model, (str, bytes)) or hasattr(model, "__fspath__"):
        return HFLM(pretrained=str(model), device=device, batch_size=batch_size, dtype="auto")
    if tokenizer is None:
        raise BadInput("an in-memory model needs its tokenizer")
    return HFLM(pretrained=model, tokenizer=tokenizer, device=device, batch_size=batch_size)


def vllm_lm(model: str, batch_size: int = 8, **engine_args):
    if importlib.util.find_spec("vllm") is None:
        raise BackendUnavailable("the vllm backend needs vLLM, which is not installed here: `pip install vllm` on a "
                                 "machine with a GPU (or use --backend hf)")
    from lm_eval.models.vllm_causallms import VLLM

    return VLLM(pretrained=str(model), dtype="auto", batch_size=batch_size, **engine_args)


def openai_lm(base_url: str, tokenizer: str | None = None, served_model: str | None = None, concurrency: int = 8):
    """lm-eval's local-completions against `base_url` (e.g. http://localhost:8000/v1). Loglikelihood tasks need
    a server that returns prompt logprobs (`echo`); generation tasks work with any."""
    from lm_eval.models.openai_completions import LocalCompletionsAPI
    from minitron.core.server import api_root, probe  # the same server check as the throughput sweeps

    served = [m["id"] for m in probe(base_url)]
    missing = [pkg for pkg in ("aiohttp", "tenacity") if importlib.util.find_spec(pkg) is None]
    if missing:  # lm-eval's API models import them only when a request is sent, deep inside a run
        raise BackendUnavailable(f"the openai backend needs {' and '.join(missing)} (lm-eval's API extra): "
                                 "`pip install 'minitron[api]'` or `pip install 'lm-eval[api]'`")
    model = served_model or (served[0] if served else None)
    if model is None:
        raise BackendUnavailable(f"{base_url} serves no models; pass --served-model NAME")
    return LocalCompletionsAPI(base_url=api_root(base_url) + "/v1/completions", model=model, tokenizer=tokenizer or model,
                               tokenizer_backend="huggingface", tokenized_requests=False,
                               num_concurrent=concurrency)


def make_lm(backend: str, model: str, device: str = "cpu", batch_size: int = 8, tokenizer: str | None = None,
            served_model: str | None = None):
    """The lm-eval model for `minitron eval run`."""
    if backend == "hf":
        return hf_lm(model, device=device, batch_size=batch_size)
    if backend == "vllm":
        return vllm_lm(model, batch_size=batch_size)
    if backend == "openai":
        return openai_lm(model, tokenizer=tokenizer, served_model=served_model)
    raise BadInput(f"--backend {backend!r} is unknown; choose from {', '.join(BACKENDS)}")
