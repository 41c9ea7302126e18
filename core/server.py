"""OpenAI-compatible servers (trtllm-serve, vllm serve, ...): where their API lives and whether one answers.
Both the throughput sweeps (bench, `--backend openai`) and the evals (`eval run --backend openai`) check a server
the same way before sending it work.

    probe("http://localhost:8000/v1")     # [{"id": "model-name", ...}]; EngineUnavailable when nothing answers
"""

from __future__ import annotations

import http.client
import json
import urllib.error
import urllib.request

from minitron.core.errors import EngineUnavailable

UNANSWERED = (urllib.error.URLError, OSError, ValueError, http.client.HTTPException)
"""What a server that does not answer properly raises: a refused or reset connection, a timeout, a body cut short
(http.client's IncompleteRead), JSON that does not parse."""


def api_root(url: str) -> str:
    """http://host:8000/v1, http://host:8000/v1/completions or http://host:8000 -> http://host:8000."""
    return url.rstrip("/").removesuffix("/completions").removesuffix("/v1")


def _get_json(url: str, timeout: float) -> dict:
    with urllib.request.urlopen(url, timeout=timeout) as reply:
        return json.load(reply)


def probe(url: str, timeout: float = 5.0) -> list[dict]:
    """The models the server serves (`GET /v1/models`); EngineUnavailable when nothing answers."""
    models_url = api_root(url) + "/v1/models"
    try:
        return _get_json(models_url, timeout).get("data", [])
    except UNANSWERED as err:
        raise EngineUnavailable(f"no OpenAI-compatible server answers at {models_url} ({err}); start one, e.g. "
                                "`trtllm-serve DIR/checkpoint` or `vllm serve DIR`, and pass its URL as --model"
                                ) from None


def server_version(url: str, timeout: float = 5.0) -> str | None:
    """`GET /version` where the server has it (vLLM, TensorRT-LLM), else None."""
    try:
        return str(_get_json(api_root(url) + "/version", timeout).get("version")) or None
    except UNANSWERED:
        return None
