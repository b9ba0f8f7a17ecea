import numpy as np
import pytest

from charnn.errors import CharnnError
from charnn.vocab import Vocab


def vocab_of(text, unit="char"):
    data = text.encode() if unit == "bytes" else text
    return Vocab(sorted(set(Vocab([0], unit).units(data).tolist())), unit)


@pytest.mark.parametrize("text", ["", "a", "hello, world\n", "emoji 🙂🚀 and CJK 漢字かな", "tab\tnul\x00end"])
def test_char_round_trip(text):
    v = vocab_of(text + "x")
    ids = v.encode(text)
    assert ids.shape == (len(text),)
    assert v.decode(ids) == text
    assert Vocab.from_json(v.to_json()) == v


def test_bytes_round_trip_multibyte():
    text = "naïve 🙂 漢"
    v = vocab_of(text, "bytes")
    ids = v.encode(text)
    assert len(ids) == len(text.encode())
    assert v.decode(ids) == text
    assert Vocab.from_json(v.to_json()) == v


def test_ids_follow_sorted_units():
    v = vocab_of("cab")
    assert v.encode("abc").tolist() == [0, 1, 2]
    assert v.dtype == np.uint8


def test_unknown_characters_are_named():
    v = vocab_of("abc")
    with pytest.raises(CharnnError, match=r"never seen 2 characters: 'x', 'z'"):
        v.encode("abxzx")


def test_stream_decoder_holds_back_partial_utf8():
    text = "é🙂"
    v = vocab_of(text, "bytes")
    dec = v.stream_decoder()
    pieces = [dec([i]) for i in v.encode(text)]
    assert "".join(pieces) == text
    assert pieces[0] == ""  # first byte of a two-byte sequence waits for the second


def test_large_vocab_dtype():
    v = Vocab(range(300))
    assert v.dtype == np.uint16
