import numpy as np
import pytest
import torch

from charnn import data
from charnn.errors import CharnnError
from charnn.vocab import Vocab


def naive_ids(text):
    chars = sorted(set(text))
    return [chars.index(c) for c in text], chars


def test_encoding_matches_naive(tmp_path):
    text = "héllo wörld 🙂\n漢字 " * 50
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    enc = data.prepare(str(f))
    ids, chars = naive_ids(text)
    assert np.asarray(enc.ids).tolist() == ids
    assert enc.vocab.decode(range(len(enc.vocab))) == "".join(chars)


def test_chunk_boundaries_inside_multibyte_sequences(tmp_path, monkeypatch):
    text = "a🙂é漢" * 100
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    for chunk in (1, 2, 3, 5, 7):
        monkeypatch.setattr(data, "CHUNK", chunk)
        enc = data._encode(data.corpus_mod.resolve(str(f)), "char", "strict", tmp_path / f"c{chunk}", "k")
        assert enc.vocab.decode(np.asarray(enc.ids)) == text


def test_cache_is_reused_and_keyed_by_content(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("abcabc" * 100)
    a = data.prepare(str(f))
    stamp = (data.corpus_mod.cache_dir() / "data" / a.key / "ids.bin").stat().st_mtime_ns
    b = data.prepare(str(f))
    assert b.key == a.key
    assert (data.corpus_mod.cache_dir() / "data" / a.key / "ids.bin").stat().st_mtime_ns == stamp
    f.write_text("abcabd" * 100)
    assert data.prepare(str(f)).key != a.key
    assert data.prepare(str(f), unit="bytes").key != data.prepare(str(f)).key


def test_invalid_utf8_names_the_byte_offset(tmp_path):
    f = tmp_path / "bad.txt"
    f.write_bytes(b"hello " * 10 + b"\xff\xfe" + b"world")
    with pytest.raises(CharnnError, match=r"bad.txt is not valid UTF-8 at byte offset 60; pass --encoding-errors replace"):
        data.prepare(str(f))
    enc = data.prepare(str(f), encoding_errors="replace")
    assert "\ufffd" in enc.vocab.decode(np.asarray(enc.ids))
    enc = data.prepare(str(f), unit="bytes")
    assert len(enc.ids) == 60 + 2 + 5


def test_too_little_text(tmp_path):
    f = tmp_path / "one.txt"
    f.write_text("a")
    with pytest.raises(CharnnError, match="holds 1 characters"):
        data.prepare(str(f))


def test_splits_are_contiguous(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("".join(chr(97 + i % 26) for i in range(1000)))
    s = data.prepare(str(f)).splits((0.8, 0.1, 0.1))
    assert [len(s[k]) for k in ("train", "val", "test")] == [800, 100, 100]
    joined = np.concatenate([s["train"], s["val"], s["test"]])
    assert joined.tolist() == np.asarray(data.prepare(str(f)).ids).tolist()


def test_streams_continue_from_window_to_window():
    ids = np.arange(1001)
    b = data.StreamBatcher(ids, batch_size=4, seq_len=10)
    assert b.stream_len == 250 and b.steps_per_epoch == 25
    x0, y0 = b.batch(0)
    x1, _ = b.batch(1)
    assert x0.shape == (4, 10)
    assert (y0[:, :-1] == x0[:, 1:]).all()  # targets are the inputs shifted by one
    assert (x1[:, 0] == y0[:, -1]).all()  # the next window starts where this one ended
    assert x0[:, 0].tolist() == [0, 250, 500, 750]  # stream b starts at b * L


def test_a_process_reads_only_its_own_streams_as_one_contiguous_block():
    b = data.StreamBatcher(np.arange(1001), batch_size=4, seq_len=10)
    whole = b.window(3)
    x, y = b.batch(3)
    assert whole.shape == (4, 11) and whole.is_contiguous()
    assert torch.equal(whole[:, :-1], x) and torch.equal(whole[:, 1:], y)
    mine = b.window(3, first=2, count=2)  # rank 1 of 2
    assert mine.is_contiguous() and torch.equal(mine, whole[2:4])


def test_too_little_data_shrinks_batch_with_warning(capsys):
    b = data.StreamBatcher(np.arange(50), batch_size=32, seq_len=10)
    assert b.batch_size == 4 and b.steps_per_epoch >= 1
    assert "--batch-size lowered to 4" in capsys.readouterr().err
    b = data.StreamBatcher(np.arange(6), batch_size=8, seq_len=10)
    assert (b.batch_size, b.seq_len) == (1, 5)


@pytest.mark.parametrize("n,streams,seq_len", [(2, 4, 3), (100, 4, 7), (1000, 16, 32), (57, 3, 100)])
def test_eval_windows_score_every_position_once(n, streams, seq_len):
    ids = np.arange(n)
    seen = []
    for x, y in eval_windows_list(ids, streams, seq_len):
        mask = y >= 0
        assert (y[mask] == x[mask] + 1).all()  # y is the character after x
        seen += y[mask].tolist()
    assert sorted(seen) == list(range(1, n))


def eval_windows_list(ids, streams, seq_len):
    return list(data.eval_windows(ids, streams, seq_len, warmup=5))


def test_remap_into_a_larger_vocabulary(tmp_path):
    f = tmp_path / "t.txt"
    f.write_text("cab" * 10)
    enc = data.prepare(str(f))
    big = Vocab([ord(c) for c in "abcdz"])
    assert big.decode(enc.remap(big).ids) == "cab" * 10
    with pytest.raises(CharnnError, match="'c'"):
        enc.remap(Vocab([ord("a"), ord("b")]))


def test_ascii_blocks_and_utf8_blocks_mix(tmp_path, monkeypatch):
    # small reads make some blocks pure ASCII (taken as bytes) and others UTF-8 (decoded)
    text = ("plain ascii words\n" * 3 + "a🙂é漢 ") * 40
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    ids, chars = naive_ids(text)
    for chunk in (3, 16, 64, 1 << 16):
        monkeypatch.setattr(data, "CHUNK", chunk)
        enc = data._encode(data.corpus_mod.resolve(str(f)), "char", "strict", tmp_path / f"m{chunk}", "k")
        assert np.asarray(enc.ids).tolist() == ids
    monkeypatch.setattr(data, "CHUNK", 16)
    bad = tmp_path / "bad.txt"
    bad.write_bytes(b"hello " * 10 + b"\xff\xfe" + b"world")
    with pytest.raises(CharnnError, match="at byte offset 60;"):
        data.prepare(str(bad))


def test_a_killed_encodes_temporary_folder_is_removed_once_stale(tmp_path, monkeypatch):
    import os
    import time

    monkeypatch.setenv("CHARNN_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "cache" / "data"
    old, young = root / ".abc.killed", root / ".def.running"
    for d in (old, young):
        d.mkdir(parents=True)
        (d / "ids.bin").write_bytes(b"\0" * 10)
    past = time.time() - 2 * data.STALE_AFTER
    os.utime(old, (past, past))
    (tmp_path / "t.txt").write_text("some text to encode\n" * 10)
    enc = data.prepare(str(tmp_path / "t.txt"))
    assert len(enc.ids) == 200
    assert not old.exists() and young.exists()  # a young one may be another process's encode
