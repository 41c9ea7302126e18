"""Where the text comes from: a local text file, a folder, a JSONL, JSON or Parquet file with a ``text`` field
(or a conversation in ``messages``), or a Hugging Face hub dataset (``owner/name[:config][@split]``), read as
documents in a fixed order. A folder holding `train.*` and `validation.*` files (and optionally
`calibration.*`) is a corpus already split by document (`split_files`). `minitron.compress.data` tokenizes what
this module reads.

    from minitron.compress.documents import read_documents, render
    texts = [render(doc, tokenizer) for doc in read_documents("corpus/train.jsonl")]
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterator
from pathlib import Path

from minitron.core.errors import BadInput

FOLDER_SUFFIXES = (".txt", ".md", ".rst", ".py", ".jsonl", ".json", ".parquet")
# A hub dataset id, optionally with a config after ':' and a split (slices allowed) after '@'.
_HUB_NAME = re.compile(r"[A-Za-z0-9][\w.-]*(/[\w.-]+)?(:[\w.-]+)?(@[\w.:%\[\]+-]+)?")


class DataError(BadInput):
    """A problem with the data the user passed; the message says what is wrong and how to fix it."""


SPLITS = ("train", "validation", "calibration")
"""File stems of a corpus split by document (`train.jsonl`, `validation.jsonl`, `calibration.jsonl`)."""


def split_files(source: str) -> dict[str, Path] | None:
    """The split files of a folder that holds `train.*` and `validation.*` (and optionally `calibration.*`),
    or None when `source` is not such a folder. Other files in it are not read."""
    path = Path(source).expanduser()
    if not path.is_dir():
        return None
    found: dict[str, Path] = {}
    for file in sorted(path.iterdir()):
        if file.is_file() and file.stem in SPLITS and file.suffix.lower() in FOLDER_SUFFIXES:
            if file.stem in found:
                raise DataError(f"{source} holds two {file.stem} files ({found[file.stem].name}, {file.name}); "
                                "keep one")
            found[file.stem] = file
    if not found:
        return None
    if "train" not in found or "validation" not in found:
        raise DataError(f"{source} holds {', '.join(f.name for f in found.values())} but a split corpus needs both "
                        "train.* and validation.* (calibration.* is optional); add the missing one or rename them")
    return found


def _looks_local(source: str) -> bool:
    name = source.rsplit("/", 1)[-1]
    return source.startswith((".", "/", "~")) or re.search(r"\.[A-Za-z]\w*$", name) is not None


def local_files(source: str) -> list[Path] | None:
    """The files a local source stands for, or None when `source` names a hub dataset."""
    path = Path(source).expanduser()
    if path.is_file():
        return [path]
    if path.is_dir():
        # Hidden entries are skipped so a repository's .git or .venv never leaks into a corpus.
        files = sorted(
            p for p in path.rglob("*")
            if p.is_file() and p.suffix.lower() in FOLDER_SUFFIXES
            and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise DataError(f"folder {source} has no {' '.join(FOLDER_SUFFIXES)} files: add some, or pass a file")
        return files
    if _looks_local(source) or not _HUB_NAME.fullmatch(source):
        raise DataError(f"no such file or folder: {source}")
    return None


def _read_text(path: Path) -> Iterator[str]:
    # A stray undecodable byte becomes U+FFFD instead of stopping a long tokenization run; a file that is mostly
    # such bytes (or holds NULs) is not text at all, and training on it would be silently wrong.
    text = path.read_text(encoding="utf-8", errors="replace")
    head = text[:65536]
    if head and ("\x00" in head or head.count("\ufffd") > 0.01 * len(head)):
        raise DataError(f"{path} is not UTF-8 text (binary data, or another encoding): pass text files, or "
                        "convert it to UTF-8")
    yield text


Document = str | list
"""A document: text, or a conversation (a list of {role, content} turns) that the tokenizer's chat template renders."""


def _text_of(record: object, where: str) -> Document:
    if isinstance(record, dict) and isinstance(record.get("text"), str):
        return record["text"]
    messages = record.get("messages") if isinstance(record, dict) else None
    if isinstance(messages, list) and messages and all(
            isinstance(m, dict) and isinstance(m.get("role"), str) and isinstance(m.get("content"), str)
            for m in messages):
        return messages
    raise DataError(f"{where}: no 'text' field (a string) nor 'messages' (a list of {{role, content}} turns) in this "
                    "record; every record needs one")


def _read_jsonl(path: Path) -> Iterator[Document]:
    with path.open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(f"{path}:{lineno}: not valid JSON ({e.msg}); JSONL needs one object per line") from e
            yield _text_of(record, f"{path}:{lineno}")


def _read_json(path: Path) -> Iterator[Document]:
    # Many datasets ship JSON Lines under a .json name; a leading '[' tells the two apart.
    with path.open(encoding="utf-8") as f:
        head = f.read(4096).lstrip()
    if not head.startswith("["):
        yield from _read_jsonl(path)
        return
    try:
        records = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno}: not valid JSON ({e.msg}); fix the file or convert it to JSONL") from e
    for i, record in enumerate(records):
        yield _text_of(record, f"{path}[{i}]")


def _read_parquet(path: Path) -> Iterator[str]:
    try:
        import pyarrow.parquet as pq
    except ImportError as e:
        raise DataError(f"reading {path} needs pyarrow: pip install pyarrow, or convert it to JSONL") from e
    pf = pq.ParquetFile(path)
    if "text" not in pf.schema_arrow.names:
        names = ", ".join(pf.schema_arrow.names)
        raise DataError(f"{path}: no 'text' column (columns: {names}); name the column of documents 'text'")
    # Row groups are read one batch at a time so a large file never sits in memory whole.
    for batch in pf.iter_batches(columns=["text"]):
        yield from (t for t in batch.column("text").to_pylist() if t is not None)


_READERS = {".jsonl": _read_jsonl, ".json": _read_json, ".parquet": _read_parquet}


def hub_spec(source: str) -> tuple[str, str | None, str]:
    name_config, _, split = source.partition("@")
    name, _, config = name_config.partition(":")
    return name, config or None, split or "train"


def _open_hub(source: str) -> Iterator[str]:
    """Load a hub dataset now, so a missing network or package fails before any progress bar shows."""
    name, config, split = hub_spec(source)
    hint = f"{source!r} does not exist locally, so it was taken as a hub dataset; hub datasets need network"
    fix = "pass a local file or folder (.txt .md .jsonl .parquet ...) instead"
    offline = [v for v in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE")
               if os.environ.get(v, "").upper() in ("1", "ON", "YES", "TRUE")]
    if offline:
        raise DataError(f"{hint}, but {offline[0]}=1 is set: {fix}")
    try:
        from datasets import load_dataset
    except ImportError as e:
        raise DataError(f"{hint} and the `datasets` package (pip install datasets): {fix}") from e
    try:
        ds = load_dataset(name, config, split=split)
    except Exception as e:  # connection, auth and not-found errors all mean the same to the user
        raise DataError(f"{hint}, and loading it failed ({type(e).__name__}: {e}): {fix}") from e
    if "text" not in ds.column_names:
        raise DataError(f"hub dataset {source}: no 'text' column (columns: {', '.join(ds.column_names)})")
    return (t for batch in ds.iter(batch_size=1024) for t in batch["text"] if t is not None)


def _read_files(files: list[Path]) -> Iterator[Document]:
    for path in files:
        yield from _READERS.get(path.suffix.lower(), _read_text)(path)


def read_documents(source: str) -> Iterator[Document]:
    """Every document of a source in a fixed order (folders: sorted paths, each file by its own rule).

    Plain-text files are one document each; .jsonl/.json/.parquet hold one document per record's `text`
    (.jsonl/.json records may hold a conversation in `messages` instead: see `render`).
    A missing path or unreachable hub dataset raises here, at the call, not at the first document.
    """
    files = local_files(source)
    return _open_hub(source) if files is None else _read_files(files)


def render(document: Document, tokenizer) -> str:
    """A document as the text the model reads: a conversation through the tokenizer's chat template (so an
    instruct model's students keep seeing its turn format), or its turns' contents one after another where the
    tokenizer has no template (a base model)."""
    if isinstance(document, str):
        return document
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(document, tokenize=False)
    return "\n\n".join(turn["content"] for turn in document)
