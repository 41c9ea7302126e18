"""Flags that several commands share, declared once so that they read and default alike everywhere."""

from __future__ import annotations

from typing import Annotated

import typer


def _device(value: str) -> str:
    from minitron.core.precision import resolve_device

    return resolve_device(value)


Device = Annotated[str, typer.Option(
    "--device", help="cpu, cuda, cuda:1, ... or auto (CUDA when torch sees a GPU, else cpu).", callback=_device)]
Overwrite = Annotated[bool, typer.Option(
    "--overwrite", help="Replace --out if it exists (it is never replaced otherwise).")]
