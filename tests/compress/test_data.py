"""compress.data: every source kind, the token cache, the deterministic split and every user-facing error."""

from __future__ import annotations

import copy
import json
import logging
import os
import sys
import time
import types

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import stdlib_texts
from minitron.compress import data, documents
from minitron.compress.data import DataError, calibration_blocks, load_blocks, read_documents, tokenize_corpus
from minitron.compress.tokenizer import train_tokenizer

EOS = 1


def ids(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def write_jsonl(path, records) -> str:
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    return str(path)


@pytest.fixture
def corpus(tmp_path):
    """A .py-text file big enough for a few dozen blocks of 64 tokens."""
    path = tmp_path / "corpus.txt"
    path.write_text("\n".join(stdlib_texts(3)))
    return str(path)


def count_reads(monkeypatch) -> list[str]:
    """Record every call to read_documents: a cache hit must not read (so not tokenize) anything."""
    calls, real = [], data.read_documents

    def counting(source):
        calls.append(source)
        return real(source)

    monkeypatch.setattr(data, "read_documents", counting)
    return calls


# ---------------------------------------------------------------------------------------------- sources


def test_text_file_is_one_document_followed_by_eos_and_no_bos(tmp_path, tokenizer):
    text = "def f(x):\n    return x + 1\n"
    path = tmp_path / "a.py"
    path.write_text(text)
    assert list(read_documents(str(path))) == [text]
    tokens = tokenize_corpus(str(path), tokenizer, cache_dir=tmp_path / "cache")
    assert tokens.dtype == np.uint32
    assert tokens.tolist() == ids(tokenizer, text) + [EOS]
    assert tokenizer.bos_token_id not in tokens.tolist()


def test_unknown_extension_is_read_as_plain_text(tmp_path):
    path = tmp_path / "notes.log"
    path.write_text("line one\nline two\n")
    assert list(read_documents(str(path))) == ["line one\nline two\n"]


def test_folder_mixes_kinds_in_sorted_order_and_skips_hidden_and_unknown(tmp_path):
    root = tmp_path / "corpus"
    (root / "sub").mkdir(parents=True)
    (root / ".git").mkdir()
    (root / "b.txt").write_text("bee")
    (root / "a.md").write_text("# ay")
    (root / "sub" / "c.py").write_text("x = 1")
    (root / "sub" / "d.rst").write_text("dee")
    write_jsonl(root / "e.jsonl", [{"text": "e1"}, {"text": "e2", "id": 7}])
    (root / "f.json").write_text(json.dumps([{"text": "f1"}, {"text": "f2"}]))
    (root / "g.json").write_text('{"text": "g1"}\n{"text": "g2"}\n')  # JSON Lines under a .json name
    pd.DataFrame({"text": ["h1", None, "h2"], "n": [1, 2, 3]}).to_parquet(root / "h.parquet")
    (root / "skip.bin").write_bytes(b"\x00\x01")
    (root / ".git" / "HEAD.txt").write_text("hidden")
    (root / ".notes.txt").write_text("hidden")
    assert list(read_documents(str(root))) == ["# ay", "bee", "e1", "e2", "f1", "f2", "g1", "g2", "h1", "h2",
                                               "x = 1", "dee"]


def test_jsonl_documents_are_each_followed_by_eos(tmp_path, tokenizer):
    docs = ["first document", "second one", "", "third"]
    path = write_jsonl(tmp_path / "d.jsonl", [{"text": d} for d in docs])
    tokens = tokenize_corpus(path, tokenizer, cache_dir=tmp_path / "cache").tolist()
    # The empty document has no tokens, so it adds no EOS either.
    assert tokens == ids(tokenizer, docs[0]) + [EOS] + ids(tokenizer, docs[1]) + [EOS] + ids(tokenizer, docs[3]) + [EOS]


def test_parquet_file(tmp_path, tokenizer):
    path = tmp_path / "d.parquet"
    pd.DataFrame({"text": ["alpha beta", "gamma"]}).to_parquet(path)
    assert list(read_documents(str(path))) == ["alpha beta", "gamma"]
    tokens = tokenize_corpus(str(path), tokenizer, cache_dir=tmp_path / "cache").tolist()
    assert tokens == ids(tokenizer, "alpha beta") + [EOS] + ids(tokenizer, "gamma") + [EOS]


# ---------------------------------------------------------------------------------------------- cache


def test_cache_is_reused_memory_mapped_and_invalidated_by_edits(tmp_path, tokenizer, monkeypatch):
    calls = count_reads(monkeypatch)
    path = tmp_path / "doc.txt"
    path.write_text("hello world")
    cache = tmp_path / "cache"

    first = tokenize_corpus(str(path), tokenizer, cache_dir=cache)
    second = tokenize_corpus(str(path), tokenizer, cache_dir=cache)
    assert len(calls) == 1
    assert isinstance(second, np.memmap) and second.dtype == np.uint32 and not second.flags.writeable
    assert second.tolist() == first.tolist() == ids(tokenizer, "hello world") + [EOS]
    assert [p.name for p in (cache / "tokens").iterdir()] == [os.path.basename(second.filename)]

    path.write_text("jello words")  # same size: only the mtime tells the edit apart
    os.utime(path, ns=(time.time_ns() + 10**9, time.time_ns() + 10**9))  # even on coarse-mtime file systems
    third = tokenize_corpus(str(path), tokenizer, cache_dir=cache)
    assert len(calls) == 2
    assert third.tolist() == ids(tokenizer, "jello words") + [EOS]
    assert len(list((cache / "tokens").iterdir())) == 2  # no temp files left behind


def test_cache_key_depends_on_tokenizer_and_folder_contents(tmp_path, tokenizer, monkeypatch):
    calls = count_reads(monkeypatch)
    root = tmp_path / "corpus"
    root.mkdir()
    (root / "a.txt").write_text("some text")
    cache = tmp_path / "cache"
    tokenize_corpus(str(root), tokenizer, cache_dir=cache)
    tokenize_corpus(str(root), tokenizer, cache_dir=cache)
    assert len(calls) == 1
    other = train_tokenizer(stdlib_texts(2), vocab_size=300)
    tokenize_corpus(str(root), other, cache_dir=cache)
    assert len(calls) == 2
    (root / "b.txt").write_text("a new file")
    tokenize_corpus(str(root), tokenizer, cache_dir=cache)
    assert len(calls) == 3


def test_default_cache_dir_comes_from_env(tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("MINITRON_CACHE", str(tmp_path / "envcache"))
    path = tmp_path / "doc.txt"
    path.write_text("hello")
    tokens = tokenize_corpus(str(path), tokenizer)
    assert os.path.dirname(tokens.filename) == str(tmp_path / "envcache" / "tokens")


# ---------------------------------------------------------------------------------------------- blocks


def test_split_is_deterministic_disjoint_and_sized(tmp_path, tokenizer, corpus):
    n_tokens = len(tokenize_corpus(corpus, tokenizer, cache_dir=tmp_path / "c1"))
    n_blocks = n_tokens // 64
    assert n_blocks >= 40  # the sizes below mean something only with enough blocks

    a = load_blocks(corpus, tokenizer, seq_len=64, seed=3, cache_dir=tmp_path / "c1")
    b = load_blocks(corpus, tokenizer, seq_len=64, seed=3, cache_dir=tmp_path / "c2")  # cache location is irrelevant
    c = load_blocks(corpus, tokenizer, seq_len=64, seed=4, cache_dir=tmp_path / "c1")
    assert np.array_equal(a.train.indices, b.train.indices) and np.array_equal(a.val.indices, b.val.indices)
    assert not np.array_equal(np.concatenate([a.val.indices, a.train.indices]),
                              np.concatenate([c.val.indices, c.train.indices]))
    assert len(a.val) == max(1, round(0.05 * n_blocks)) and len(a.train) == n_blocks - len(a.val)
    assert set(a.train.indices).isdisjoint(a.val.indices)
    assert sorted([*a.train.indices, *a.val.indices]) == list(range(n_blocks))
    assert not np.array_equal(a.train.indices, np.sort(a.train.indices))  # shuffled

    wide = load_blocks(corpus, tokenizer, seq_len=64, seed=3, val_fraction=0.25, cache_dir=tmp_path / "c1")
    assert len(wide.val) == round(0.25 * n_blocks)


def test_min_val_blocks_and_tiny_streams(tmp_path, tokenizer):
    path = tmp_path / "d.txt"
    path.write_text("abc " * 40)
    n_tokens = len(tokenize_corpus(str(path), tokenizer, cache_dir=tmp_path / "cache"))
    seq = n_tokens // 2
    two = load_blocks(str(path), tokenizer, seq_len=seq, val_fraction=0.0, cache_dir=tmp_path / "cache")
    assert (len(two.train), len(two.val)) == (1, 1)  # min_val_blocks=1 wins over a zero fraction
    one = load_blocks(str(path), tokenizer, seq_len=n_tokens, cache_dir=tmp_path / "cache")
    assert (len(one.train), len(one.val)) == (1, 0)


def test_blocks_items_batches_and_take(tmp_path, tokenizer, corpus):
    seq = 32
    splits = load_blocks(corpus, tokenizer, seq_len=seq, cache_dir=tmp_path / "cache")
    train, tokens = splits.train, splits.train.tokens
    assert splits.val.tokens is tokens  # views of one stream, not copies

    first = train[0]
    assert first.dtype == torch.int64 and first.shape == (seq,)
    i = int(train.indices[0])
    assert first.tolist() == tokens[i * seq:(i + 1) * seq].tolist()

    sub = train.take(10)
    assert len(sub) == 10 and np.array_equal(sub.indices, train.indices[:10])
    batches = list(sub.batches(4))
    assert [tuple(b.shape) for b in batches] == [(4, seq), (4, seq), (2, seq)]
    assert all(b.dtype == torch.int64 for b in batches)
    assert torch.equal(torch.cat(batches), torch.stack([sub[k] for k in range(10)]))
    assert [tuple(b.shape) for b in sub.batches(4, limit=2)] == [(4, seq), (4, seq)]
    assert len(train.take(10**9)) == len(train)


def test_calibration_blocks(tmp_path, tokenizer, corpus, caplog):
    splits = load_blocks(corpus, tokenizer, seq_len=64, seed=5, cache_dir=tmp_path / "cache")
    calib = calibration_blocks(corpus, tokenizer, seq_len=64, num_samples=8, seed=5, cache_dir=tmp_path / "cache")
    assert np.array_equal(calib.indices, splits.train.indices[:8])
    assert set(calib.indices).isdisjoint(splits.val.indices)

    with caplog.at_level(logging.WARNING, logger="compress.data"):
        few = calibration_blocks(corpus, tokenizer, seq_len=64, num_samples=10**6, seed=5, cache_dir=tmp_path / "cache")
    assert len(few) == len(splits.train)
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and f"only {len(splits.train)} blocks" in warnings[0]


def _write_split(folder, name, docs):
    folder.mkdir(parents=True, exist_ok=True)
    (folder / f"{name}.jsonl").write_text("".join(json.dumps({"text": d}) + "\n" for d in docs))


def test_a_folder_split_by_document_keeps_its_splits(tmp_path, tokenizer):
    """train/validation/calibration files are read each on its own: no block of one split holds another's text."""
    from tests.conftest import stdlib_texts

    texts = stdlib_texts(9)
    folder = tmp_path / "corpus"
    for name, docs in (("train", texts[:5]), ("validation", texts[5:7]), ("calibration", texts[7:])):
        _write_split(folder, name, docs)
    (folder / "README.md").write_text("not a split: ignored")
    splits = load_blocks(str(folder), tokenizer, seq_len=64, seed=1, cache_dir=tmp_path / "cache")
    for blocks, docs in ((splits.train, texts[:5]), (splits.val, texts[5:7]), (splits.calibration, texts[7:])):
        stream = [i for d in docs for i in tokenizer(d, add_special_tokens=False).input_ids + [tokenizer.eos_token_id]]
        assert blocks.tokens.tolist() == stream  # each split's blocks come from its own documents only
        assert sorted(blocks.indices) == list(range(len(stream) // 64))
    calib = calibration_blocks(str(folder), tokenizer, seq_len=64, num_samples=4, seed=1, cache_dir=tmp_path / "cache")
    assert np.array_equal(calib.indices, splits.calibration.indices[:4])
    assert splits.calibration.tokens is not splits.train.tokens

    without_calibration = tmp_path / "two"
    _write_split(without_calibration, "train", texts[:5])
    _write_split(without_calibration, "validation", texts[5:7])
    two = load_blocks(str(without_calibration), tokenizer, seq_len=64, cache_dir=tmp_path / "cache")
    assert two.calibration is two.train


def test_a_split_folder_needs_train_and_validation(tmp_path, tokenizer):
    folder = tmp_path / "half"
    _write_split(folder, "train", ["some text " * 50])
    with pytest.raises(DataError, match="needs both train.* and validation.*"):
        load_blocks(str(folder), tokenizer, seq_len=16, cache_dir=tmp_path / "cache")


# ---------------------------------------------------------------------------------------------- errors


@pytest.mark.parametrize("source", ["./missing", "/no/such/dir", "~/no-such-corpus-here", "missing.jsonl",
                                    "nested/folder/missing", "two words"])
def test_missing_local_path(source, tmp_path, tokenizer):
    with pytest.raises(DataError, match="no such file or folder: "):
        tokenize_corpus(source, tokenizer, cache_dir=tmp_path)


def test_empty_sources(tmp_path, tokenizer):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match=r"1 documents but no text \(zero tokens\)"):
        tokenize_corpus(str(tmp_path / "empty.txt"), tokenizer, cache_dir=tmp_path / "cache")
    (tmp_path / "blank.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match="has no documents"):
        tokenize_corpus(str(tmp_path / "blank.jsonl"), tokenizer, cache_dir=tmp_path / "cache")
    (tmp_path / "folder").mkdir()
    (tmp_path / "folder" / "data.bin").write_bytes(b"x")
    with pytest.raises(DataError, match=r"has no \.txt .* files"):
        tokenize_corpus(str(tmp_path / "folder"), tokenizer, cache_dir=tmp_path / "cache")
    assert not list((tmp_path / "cache" / "tokens").iterdir())  # failed runs leave nothing behind


def test_too_few_tokens_for_one_block(tmp_path, tokenizer):
    path = tmp_path / "short.txt"
    path.write_text("tiny")
    n = len(ids(tokenizer, "tiny")) + 1
    with pytest.raises(DataError, match=rf"has {n} tokens, fewer than one block of seq_len=4096.*smaller --seq-len"):
        load_blocks(str(path), tokenizer, seq_len=4096, cache_dir=tmp_path / "cache")


def test_jsonl_record_without_text_names_file_and_line(tmp_path, tokenizer):
    path = write_jsonl(tmp_path / "bad.jsonl", [{"text": "ok"}, {"content": "no text here"}])
    with pytest.raises(DataError, match=r"bad\.jsonl:2: no 'text' field"):
        tokenize_corpus(path, tokenizer, cache_dir=tmp_path / "cache")
    (tmp_path / "broken.jsonl").write_text('{"text": "ok"}\n{"text": \n')
    with pytest.raises(DataError, match=r"broken\.jsonl:2: not valid JSON"):
        list(read_documents(str(tmp_path / "broken.jsonl")))


def test_json_array_errors_name_the_file(tmp_path):
    (tmp_path / "a.json").write_text('[{"text": "ok"}, {"body": "x"}]')
    with pytest.raises(DataError, match=r"a\.json\[1\]: no 'text' field"):
        list(read_documents(str(tmp_path / "a.json")))
    (tmp_path / "b.json").write_text('[{"text": "ok"},\n')
    with pytest.raises(DataError, match=r"b\.json:2: not valid JSON"):
        list(read_documents(str(tmp_path / "b.json")))


def test_parquet_without_text_column(tmp_path):
    pd.DataFrame({"body": ["x"]}).to_parquet(tmp_path / "p.parquet")
    with pytest.raises(DataError, match=r"p\.parquet: no 'text' column \(columns: body\)"):
        list(read_documents(str(tmp_path / "p.parquet")))


@pytest.mark.parametrize("source", ["someone/some-corpus", "wikitext:wikitext-2-raw-v1@validation"])
def test_hub_name_offline_fails_fast_and_says_what_to_do(source, tmp_path, tokenizer, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    start = time.monotonic()
    with pytest.raises(DataError) as err:
        load_blocks(source, tokenizer, seq_len=16, cache_dir=tmp_path / "cache")
    assert time.monotonic() - start < 2
    message = str(err.value)
    for part in (f"{source!r} does not exist locally", "hub datasets need network", "HF_HUB_OFFLINE=1",
                 "pass a local file or folder"):
        assert part in message


class FakeHubDataset:
    column_names = ["text", "id"]

    def iter(self, batch_size):
        yield {"text": ["hub one", None, "hub two"], "id": [0, 1, 2]}


def test_hub_dataset_is_loaded_lazily_and_cached_by_name(tmp_path, tokenizer, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    loads = []
    fake = types.ModuleType("datasets")
    fake.load_dataset = lambda *args, **kw: loads.append((args, kw)) or FakeHubDataset()
    monkeypatch.setitem(sys.modules, "datasets", fake)
    source = "owner/corpus:clean@validation"
    tokens = tokenize_corpus(source, tokenizer, cache_dir=tmp_path / "cache")
    assert loads == [(("owner/corpus", "clean"), {"split": "validation"})]
    assert tokens.tolist() == ids(tokenizer, "hub one") + [EOS] + ids(tokenizer, "hub two") + [EOS]
    tokenize_corpus(source, tokenizer, cache_dir=tmp_path / "cache")
    assert len(loads) == 1  # a cache hit needs neither the hub nor the datasets package
    tokenize_corpus("owner/corpus:clean@train", tokenizer, cache_dir=tmp_path / "cache")
    assert len(loads) == 2


def test_hub_name_without_datasets_package(tmp_path, tokenizer, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)
    monkeypatch.setitem(sys.modules, "datasets", None)  # makes `import datasets` fail
    with pytest.raises(DataError, match=r"does not exist locally.*pip install datasets.*pass a local file or folder"):
        tokenize_corpus("owner/corpus", tokenizer, cache_dir=tmp_path / "cache")


def test_hub_unreachable_is_a_clear_error(tmp_path, tokenizer, monkeypatch):
    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("HF_DATASETS_OFFLINE", raising=False)

    def unreachable(*args, **kw):
        raise ConnectionError("Couldn't reach huggingface.co")

    monkeypatch.setitem(sys.modules, "datasets", types.SimpleNamespace(load_dataset=unreachable))
    with pytest.raises(DataError, match=r"does not exist locally.*need network.*ConnectionError.*pass a local file"):
        tokenize_corpus("owner/corpus", tokenizer, cache_dir=tmp_path / "cache")


def test_hub_spec_parsing():
    assert documents.hub_spec("owner/name") == ("owner/name", None, "train")
    assert documents.hub_spec("wikitext:wikitext-2-raw-v1@validation[:10%]") == (
        "wikitext", "wikitext-2-raw-v1", "validation[:10%]")


def test_tokenizer_without_eos(tmp_path, tokenizer):
    path = tmp_path / "d.txt"
    path.write_text("hello")
    no_eos = copy.deepcopy(tokenizer)  # the session tokenizer stays untouched
    no_eos.eos_token = None
    with pytest.raises(DataError, match="has no eos_token_id"):
        tokenize_corpus(str(path), no_eos, cache_dir=tmp_path / "cache")


def test_conversations_are_rendered_by_the_chat_template(tmp_path, tokenizer):
    """A `messages` record reaches the model as its chat template renders it; without a template, as its turns."""
    turns = [{"role": "user", "content": "What does len do?"}, {"role": "assistant", "content": "It counts items."}]
    path = tmp_path / "chat.jsonl"
    path.write_text(json.dumps({"messages": turns}) + "\n" + json.dumps({"text": "plain text"}) + "\n")
    assert list(read_documents(str(path))) == [turns, "plain text"]
    plain = tokenize_corpus(str(path), tokenizer, tmp_path / "cache").tolist()
    expected = tokenizer("What does len do?\n\nIt counts items.", add_special_tokens=False).input_ids
    assert plain[:len(expected) + 1] == expected + [tokenizer.eos_token_id]

    templated = copy.deepcopy(tokenizer)
    templated.chat_template = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\n{% endfor %}"
    rendered = tokenize_corpus(str(path), templated, tmp_path / "cache").tolist()  # another template: another cache
    expected = tokenizer("[user] What does len do?\n[assistant] It counts items.\n", add_special_tokens=False).input_ids
    assert rendered[:len(expected) + 1] == expected + [tokenizer.eos_token_id]
    (tmp_path / "bad.jsonl").write_text(json.dumps({"messages": [{"role": "user"}]}) + "\n")
    with pytest.raises(DataError, match="nor 'messages'"):
        list(read_documents(str(tmp_path / "bad.jsonl")))
