"""Byte-pair token models (--unit bpe) and `charnn compare`: losses per token and per character,
the same text as a char model, resume, sampling from a checkpoint alone, and the comparison."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from helpers import learnable_text, tiny_config
from hypothesis import given, settings
from hypothesis import strategies as st
from helpers import charnn

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import model_text
from charnn.trainer import train
from charnn.vocab import BYTE_CHARS, TokenVocab, Vocab

TRAIN_TEXT = "naïve café — “quoted” words, spaces  and\ttabs\n" * 40 + learnable_text(200)


@pytest.fixture(scope="module")
def tokens() -> TokenVocab:
    return TokenVocab.train(TRAIN_TEXT, 300)


def test_byte_table_matches_the_library():
    from tokenizers import pre_tokenizers

    assert sorted(BYTE_CHARS) == sorted(pre_tokenizers.ByteLevel.alphabet()) and len(set(BYTE_CHARS)) == 256
    # a string of every printable ASCII byte is pre-tokenised to itself, a space to "Ġ" (GPT-2's convention)
    pre = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    text = "".join(chr(b) for b in range(32, 127)) + "é\n"
    assert pre.pre_tokenize_str(text)[0][0] == "".join(BYTE_CHARS[b] for b in text.encode("utf-8"))


@settings(max_examples=60, deadline=None)
@given(st.text(alphabet=sorted(set(TRAIN_TEXT)), max_size=200))
def test_round_trip_and_character_counts(tokens, text):
    ids = tokens.encode(text)
    assert tokens.decode(ids) == text
    assert tokens.char_counts()[ids].sum() == len(text)  # lead bytes: exact even where a token cuts a character
    stream = tokens.stream_decoder()
    assert "".join(stream([i]) for i in ids) == text


def test_merges_learned_and_vocabulary_travels_as_json(tokens):
    alphabet = len(set(TRAIN_TEXT.encode("utf-8")))
    # merges stop early when pairs run out (this text repeats a few words)
    assert alphabet + 20 < len(tokens) <= 300 and any(len(p) >= 3 for p in tokens.pieces())
    assert len(tokens.encode(TRAIN_TEXT)) < 0.6 * len(TRAIN_TEXT.encode("utf-8"))
    again = Vocab.from_json(tokens.to_json())
    assert isinstance(again, TokenVocab) and again == tokens
    assert np.array_equal(again.encode(TRAIN_TEXT), tokens.encode(TRAIN_TEXT))
    assert TokenVocab.train(TRAIN_TEXT, 300) == tokens  # learning is deterministic


def test_unseen_characters_are_refused_by_name(tokens):
    # the library would silently drop a byte it never saw; the model's text must not lose characters
    with pytest.raises(CharnnError, match=r"never seen 2 characters: 'Z', '☃'"):
        tokens.encode("one ☃ Z")


def bpe_config(path, size=200, **kw):
    cfg = tiny_config(path, **kw)
    cfg.data.unit, cfg.data.bpe_vocab = "bpe", size
    cfg.data.split = (0.8, 0.1, 0.1)
    return cfg


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """A char model and a token model of the same text (module-scoped: trained once)."""
    root = tmp_path_factory.mktemp("bpe")
    text = root / "t.txt"
    text.write_text(TRAIN_TEXT * 2, encoding="utf-8")
    char_cfg = tiny_config(text, max_steps=40)
    char_cfg.data.split = (0.8, 0.1, 0.1)
    train(char_cfg, root / "char", progress=False)
    train(bpe_config(text, max_steps=40), root / "bpe", progress=False)
    return root


def test_token_model_scores_the_same_text_as_a_char_model(runs):
    c, t = ckpt.load(runs / "char"), ckpt.load(runs / "bpe")
    assert t.vocab.unit == "bpe" and t.config.model.vocab_size == len(t.vocab) <= 200
    for split in ("train", "val", "test"):
        assert t.vocab.decode(model_text(t, split=split).ids) == c.vocab.decode(model_text(c, split=split).ids)


@pytest.mark.slow
def test_bits_per_character_is_total_nats_over_characters(runs):
    loaded = ckpt.load(runs / "bpe")
    ids = model_text(loaded, split="val").ids
    model = loaded.build_model()
    with torch.no_grad():  # one plain pass from the zero state: eval reads a split this short as one stream
        logits, _ = model(torch.as_tensor(np.asarray(ids, dtype=np.int64))[None])
    x = torch.as_tensor(np.asarray(ids[1:], dtype=np.int64))
    total = float(torch.nn.functional.cross_entropy(logits[0, :-1].double(), x, reduction="sum"))
    val_text = ckpt.load(runs / "char").vocab.decode(model_text(ckpt.load(runs / "char"), split="val").ids)
    first = loaded.vocab.tokenizer.decode([int(ids[0])])
    assert val_text.startswith(first)
    chars = len(val_text) - len(first)  # scored: every character after the first token
    got = json.loads(charnn("eval", runs / "bpe", "--json").stdout)
    assert len(ids) - 1 < 512 and got["tokens"] == len(ids) - 1 and got["chars"] == chars
    assert got["loss"] == pytest.approx(total / (len(ids) - 1), rel=1e-5)
    assert got["bpc"] == pytest.approx(total / chars / math.log(2), rel=1e-5)
    plain = charnn("eval", runs / "bpe").stdout
    assert f"{got['bpc']:.4f} bits/char" in plain and "nats/token" in plain
    # the training log's bits per character is the same quantity
    last = [json.loads(line) for line in (runs / "bpe" / "metrics.jsonl").read_text().splitlines()
            if "val_bpc" in line][-1]
    best = ckpt.load(runs / "bpe", "best").meta
    assert last["val_bpc"] == pytest.approx(last["val_loss"] * (len(ids) - 1) / chars / math.log(2), rel=1e-6)
    assert best["val_bpc"] == pytest.approx(best["val_loss"] * (len(ids) - 1) / chars / math.log(2), rel=1e-6)


@pytest.mark.slow
def test_a_checkpoint_alone_samples_tokens(runs, tmp_path, monkeypatch):
    alone = tmp_path / "model.safetensors"
    shutil.copy(runs / "bpe" / "best.safetensors", alone)
    monkeypatch.setenv("CHARNN_CACHE", str(tmp_path / "empty-cache"))
    p = charnn("sample", alone, "--prime", "one two", "--length", "60", "--seed", "3")
    assert p.returncode == 0, p.stderr
    assert p.stdout.startswith("one two") and len(p.stdout) > 60  # 60 tokens hold more than 60 characters
    assert set(p.stdout) <= set(TRAIN_TEXT) | {"\n", "\ufffd"}  # a sample may cut a character
    again = charnn("sample", alone, "--prime", "one two", "--length", "60", "--seed", "3")
    assert again.stdout == p.stdout
    probs = charnn("sample", alone, "--prime", "one two", "--show-probs", "--json")
    got = json.loads(probs.stdout)
    assert probs.returncode == 0 and sum(got["probs"]["1"]) <= 1 + 1e-6 and len(got["candidates"]) == 10


def test_resume_is_bit_identical_for_a_token_run(runs, tmp_path):
    text = runs / "t.txt"
    train(bpe_config(text, max_steps=30), tmp_path / "whole", progress=False)
    train(bpe_config(text, max_steps=30), tmp_path / "split", progress=False, on_step=lambda s: s >= 12)
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = ckpt.load(tmp_path / "whole", "last"), ckpt.load(tmp_path / "split", "last")
    assert a.vocab == b.vocab and all(torch.equal(a.weights[k], b.weights[k]) for k in a.weights)


@pytest.mark.slow
def test_token_runs_refuse_what_needs_characters(runs, tmp_path):
    cases = [("inspect", "find", runs / "bpe"), ("analyze", "context", runs / "bpe", "--out", tmp_path / "c"),
             ("export", runs / "bpe", "--out", tmp_path / "w")]
    for args in cases:
        p = charnn(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1
        assert "byte-pair tokens" in p.stderr
    p = charnn("train", runs / "t.txt", "--out", tmp_path / "r", "--vocab-size", "300")
    assert p.returncode == 2 and "--bpe-vocab is for --unit bpe" in p.stderr
    p = charnn("train", runs / "t.txt", "--out", tmp_path / "r", "--unit", "bpe", "--bpe-vocab", "1")
    assert p.returncode == 2 and "--bpe-vocab must be between 2 and 65,536" in p.stderr
    assert not (tmp_path / "r").exists() or not any((tmp_path / "r").iterdir())


def test_cells_page_shows_one_span_per_token(runs, tmp_path):
    from charnn.inspect import open_subject
    from charnn.web.pages import cells_page_data

    subject = open_subject(runs / "bpe", split="val", chars=120, tokens_ok=True)
    data = cells_page_data(subject)
    assert len(data["text"]) == len(subject.ids) == 120 and "".join(data["text"]) == subject.vocab.decode(subject.ids)
    assert any(len(piece) > 1 for piece in data["text"]) and data["jump"] == []
    p = charnn("inspect", "cells", runs / "bpe", "--out", tmp_path / "cells.html", "--chars", "100")
    assert p.returncode == 0 and "100 tokens" in p.stderr


@pytest.mark.slow
def test_compare_trains_each_unit_at_the_same_budget(runs, tmp_path):
    from charnn.study.compare import parse_units

    with pytest.raises(CharnnError, match="each unit is char or bpe:K"):
        parse_units("char,words")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "compare.md").write_text("my notes\n")
    p = charnn("compare", runs / "t.txt", "--out", mine, "--units", "char", "--max-steps", "5")
    assert p.returncode == 2 and "was not written by charnn" in p.stderr and len(p.stderr.strip().splitlines()) == 1
    assert (mine / "compare.md").read_text() == "my notes\n" and not (mine / "char").exists()  # nothing trained
    out = tmp_path / "cmp"
    p = charnn("compare", runs / "t.txt", "--out", out, "--units", "char,bpe:200", "--max-steps", "25",
               "--params", "20k", "--split", "0.8,0.1,0.1", "--json", timeout=300)
    assert p.returncode == 0, p.stderr
    res = {r["unit"]: r for r in json.loads(p.stdout)["results"]}
    assert set(res) == {"char", "bpe:200"}
    assert all(abs(r["params"] - 20_000) / 20_000 < 0.05 for r in res.values())
    assert res["char"]["vocab"] < res["bpe:200"]["vocab"] <= 200 and res["char"]["hidden"] > res["bpe:200"]["hidden"]
    assert res["char"]["chars_per_unit"] == 1 and res["bpe:200"]["chars_per_unit"] > 1.5
    for unit, r in res.items():
        run = out / r["run"]
        assert r["steps"] == 25 and ckpt.load(run).config.model.hidden == r["hidden"]
        ev = json.loads(charnn("eval", run, "--split", "test", "--json").stdout)
        assert r["test_bpc"] == pytest.approx(ev["bpc"], rel=1e-6)  # the table's number is charnn eval's
        assert 0 <= r["novel_20"] <= 1 and r["longest_copy"] >= 0
    assert res["char"]["test_chars"] == pytest.approx(res["bpe:200"]["test_chars"], abs=8)  # the same test text
    assert {"compare.md", "compare.csv", "compare.png", "compare.json"} <= {f.name for f in out.iterdir()}
    assert "| bpe:200 |" in (out / "compare.md").read_text()
    # a finished comparison is not trained again; a damaged cached result is measured again
    before = (out / "char" / "last.safetensors").stat().st_mtime_ns
    (out / "char" / "result.json").write_text('{"unit": "char", "run": "char"')
    assert charnn("compare", runs / "t.txt", "--out", out, "--units", "char,bpe:200", "--max-steps", "25",
                  "--params", "20k", "--split", "0.8,0.1,0.1").returncode == 0
    assert (out / "char" / "last.safetensors").stat().st_mtime_ns == before
    assert json.loads((out / "char" / "result.json").read_text())["test_bpc"] == pytest.approx(res["char"]["test_bpc"])
