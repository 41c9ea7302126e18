"""The one data loader behind calibration, distillation and validation.

A source (a file, a folder or a hub dataset, read by `minitron.compress.documents`) is tokenized once into a flat
stream of token ids (every document followed by EOS), cached as a memory-mapped ``.npy``, and cut
into fixed-length blocks that are shuffled by a seed and split into train and validation.
A folder holding `train.*` and `validation.*` files (and optionally `calibration.*`) is a corpus already
split by document: each split is read from its own file, so no document reaches two splits::

    from minitron.compress.data import load_blocks, calibration_blocks

    splits = load_blocks("corpus/", tokenizer, seq_len=2048, seed=0)
    for batch in splits.train.batches(8):          # LongTensor [8, 2048]
        ...
    val_loss_batches = splits.val.batches(8, limit=50)
    calib = calibration_blocks("corpus/", tokenizer, seq_len=2048, num_samples=1024)

Because every consumer goes through `load_blocks`, the calibration blocks used for pruning
importance (and FP8 calibration) never overlap the validation split: they are the calibration split where
the corpus has one, else the first shuffled train blocks.
"""

from __future__ import annotations

import hashlib
import itertools
import logging
import os
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from minitron.compress.documents import DataError, hub_spec, local_files, read_documents, render, split_files
from minitron.core.errors import BadInput
from minitron.core.records import cache_root
from tqdm import tqdm

log = logging.getLogger(__name__)

# Bump when the stream layout or the reading rules change, so old caches are not reused.
FORMAT_VERSION = "minitron-tokens-v1"
# Documents handed to the tokenizer at once: fast tokenizers encode a batch on several threads.
_ENCODE_BATCH = 64


@dataclass(eq=False, repr=False)
class TokenBlocks:
    """Fixed-length blocks of a token stream, as a view: only `indices` is owned, tokens stay on disk."""

    tokens: np.ndarray
    seq_len: int
    indices: np.ndarray

    def __len__(self) -> int:
        return len(self.indices)

    def __repr__(self) -> str:
        return f"TokenBlocks({len(self)} blocks of {self.seq_len} tokens)"

    def _rows(self) -> np.ndarray:
        # A reshape of a slice is still a view of the memory map, so indexing it reads only the rows asked for.
        n = len(self.tokens) // self.seq_len
        return self.tokens[: n * self.seq_len].reshape(n, self.seq_len)

    def __getitem__(self, i: int) -> torch.Tensor:
        return torch.from_numpy(self._rows()[self.indices[i]].astype(np.int64))

    def batches(self, batch_size: int, limit: int | None = None) -> Iterator[torch.Tensor]:
        """LongTensors [b, seq_len] in block order, the last batch possibly smaller; at most `limit` batches."""
        if batch_size < 1:
            raise BadInput(f"batch_size must be at least 1, got {batch_size}")
        rows = self._rows()
        starts = range(0, len(self), batch_size)
        for start in starts if limit is None else itertools.islice(starts, limit):
            yield torch.from_numpy(rows[self.indices[start : start + batch_size]].astype(np.int64))

    def take(self, n: int) -> TokenBlocks:
        """The first n blocks (all of them if there are fewer)."""
        if n < 0:
            raise BadInput(f"take needs n >= 0, got {n}")
        return TokenBlocks(self.tokens, self.seq_len, self.indices[:n])


@dataclass
class DataSplits:
    train: TokenBlocks
    val: TokenBlocks
    calibration: TokenBlocks | None = None
    """Blocks for importance and FP8 calibration: a split of its own where the corpus has one, else `train`."""

    def __post_init__(self):
        if self.calibration is None:
            self.calibration = self.train


def _eos_id(tokenizer) -> int:
    if tokenizer.eos_token_id is None:
        raise DataError(
            f"tokenizer {tokenizer.name_or_path!r} has no eos_token_id, so documents cannot be separated: "
            "set tokenizer.eos_token (or use the model's own tokenizer)"
        )
    return int(tokenizer.eos_token_id)


def _tokenizer_fingerprint(tokenizer) -> str:
    backend = getattr(tokenizer, "backend_tokenizer", None)
    body = backend.to_str() if backend is not None else f"{tokenizer.name_or_path}|{len(tokenizer)}"
    template = getattr(tokenizer, "chat_template", None) or ""
    return hashlib.sha256(f"{body}|eos={_eos_id(tokenizer)}|{template}".encode()).hexdigest()


def _cache_path(source: str, files: list[Path] | None, tokenizer, cache_dir: str | None) -> Path:
    """The cache file for this source and tokenizer: any edited file or other tokenizer gives a new key."""
    if files is None:
        described = "hub:" + "|".join(str(part) for part in hub_spec(source))
    else:
        described = "\n".join(f"{p.resolve()}\t{p.stat().st_size}\t{p.stat().st_mtime_ns}" for p in files)
    key = hashlib.sha256("\n".join([FORMAT_VERSION, described, _tokenizer_fingerprint(tokenizer)]).encode())
    return cache_root(cache_dir) / "tokens" / f"{key.hexdigest()}.npy"


def _batched(items: Iterable[str], n: int) -> Iterator[list[str]]:
    it = iter(items)
    while batch := list(itertools.islice(it, n)):
        yield batch


def tokenize_corpus(source: str, tokenizer, cache_dir: str | None = None) -> np.ndarray:
    """The source as one flat uint32 token stream (doc, EOS, doc, EOS, ...), memory-mapped from the cache.

    No BOS is added per document: blocks cut across documents, so BOS would only show up at random
    positions; EOS alone marks the boundaries. The stream is written once, atomically, and reused by
    every later run with the same files and tokenizer.
    """
    eos = _eos_id(tokenizer)
    files = local_files(source)
    path = _cache_path(source, files, tokenizer, cache_dir)
    if path.exists():
        tokens = np.load(path, mmap_mode="r")
        log.info("tokens of %s: %d from cache %s", source, len(tokens), path)
        return tokens

    docs = (render(doc, tokenizer) for doc in read_documents(source))
    path.parent.mkdir(parents=True, exist_ok=True)
    # The stream's length is unknown until the end, so ids go to a raw file first and are copied into
    # the .npy afterwards: memory stays flat whatever the corpus size.
    raw_fd, raw_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".raw.tmp")
    npy_fd, npy_name = tempfile.mkstemp(dir=path.parent, prefix=path.stem, suffix=".npy.tmp")
    os.close(npy_fd)
    try:
        n_docs = n_tokens = 0
        with os.fdopen(raw_fd, "wb") as raw, tqdm(desc=f"tokenizing {source}", unit="doc") as bar:
            for batch in _batched(docs, _ENCODE_BATCH):
                ids = tokenizer(batch, add_special_tokens=False, return_attention_mask=False, verbose=False)
                ids = ids["input_ids"]
                chunk = np.fromiter(itertools.chain.from_iterable(x + [eos] for x in ids if x), dtype=np.uint32)
                chunk.tofile(raw)
                n_docs += len(batch)
                n_tokens += len(chunk)
                bar.update(len(batch))
                bar.set_postfix(tokens=n_tokens, refresh=False)
        if n_docs == 0:
            raise DataError(f"source {source} has no documents: pass a file or folder with text in it")
        if n_tokens == 0:
            raise DataError(f"source {source} has {n_docs} documents but no text (zero tokens): pass non-empty files")
        out = np.lib.format.open_memmap(npy_name, mode="w+", dtype=np.uint32, shape=(n_tokens,))
        out[:] = np.memmap(raw_name, dtype=np.uint32, mode="r", shape=(n_tokens,))
        out.flush()
        del out
        os.chmod(npy_name, 0o644)  # mkstemp makes it private; a shared cache must be readable by others
        os.replace(npy_name, path)
    finally:
        for name in (raw_name, npy_name):
            if os.path.exists(name):
                os.unlink(name)
    log.info("tokens of %s: %d documents, %d tokens, cached at %s", source, n_docs, n_tokens, path)
    return np.load(path, mmap_mode="r")


# ---------------------------------------------------------------------------------------------- blocks


def load_blocks(source: str, tokenizer, seq_len: int, seed: int = 0, val_fraction: float = 0.05,
                min_val_blocks: int = 1, cache_dir: str | None = None) -> DataSplits:
    """Cut the token stream into blocks of `seq_len`, shuffle them by `seed` and split off validation (a corpus
    split by document, see `split_files`, keeps its own splits and only has each one's blocks shuffled).

    The split depends only on the token stream, `seq_len`, `seed` and the validation settings, so
    every stage of a run (calibration, training, evaluation) sees the same train/val partition.
    """
    if seq_len < 1:
        raise BadInput(f"seq_len must be at least 1, got {seq_len}")
    if not 0 <= val_fraction < 1:
        raise BadInput(f"val_fraction must be in [0, 1), got {val_fraction}")
    files = split_files(source)
    if files is not None:
        blocks = {name: _shuffled_blocks(str(file), tokenizer, seq_len, [seed, i], cache_dir)
                  for i, (name, file) in enumerate(sorted(files.items()))}
        return DataSplits(blocks["train"], blocks["validation"], blocks.get("calibration"))
    tokens = tokenize_corpus(source, tokenizer, cache_dir)
    n_blocks = _count_blocks(source, tokens, seq_len)
    order = np.random.default_rng(seed).permutation(n_blocks)
    if n_blocks >= 2:
        # Keep at least one training block whatever the fraction asks for.
        n_val = min(max(min_val_blocks, round(val_fraction * n_blocks)), n_blocks - 1)
    else:
        n_val = 0
        log.warning("source %s gives a single block of %d tokens: no validation blocks", source, seq_len)
    return DataSplits(TokenBlocks(tokens, seq_len, order[n_val:]), TokenBlocks(tokens, seq_len, order[:n_val]))


def _count_blocks(source: str, tokens: np.ndarray, seq_len: int) -> int:
    n_blocks = len(tokens) // seq_len
    if n_blocks == 0:
        raise DataError(
            f"source {source} has {len(tokens)} tokens, fewer than one block of seq_len={seq_len}: "
            f"pass a smaller --seq-len (at most {len(tokens)}) or more data"
        )
    return n_blocks


def _shuffled_blocks(source: str, tokenizer, seq_len: int, seed: list[int], cache_dir: str | None) -> TokenBlocks:
    tokens = tokenize_corpus(source, tokenizer, cache_dir)
    order = np.random.default_rng(seed).permutation(_count_blocks(source, tokens, seq_len))
    return TokenBlocks(tokens, seq_len, order)


def calibration_blocks(source: str, tokenizer, seq_len: int, num_samples: int = 1024, seed: int = 0,
                       cache_dir: str | None = None) -> TokenBlocks:
    """The first `num_samples` shuffled calibration blocks (train blocks where the corpus has no calibration
    split): pruning importance never looks at validation data."""
    blocks = load_blocks(source, tokenizer, seq_len, seed=seed, cache_dir=cache_dir).calibration
    if len(blocks) < num_samples:
        log.warning("calibration: only %d blocks of %d tokens available (asked for %d); using all of them",
                    len(blocks), seq_len, num_samples)
    return blocks.take(num_samples)
