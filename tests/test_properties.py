"""Property tests (hypothesis): the vocabulary, the batcher and the sampler, over generated inputs.

Every test is derandomized (the same examples every run) so CI never sees a fluke; the sampling
tests use seeded generators and a chi-square bound at a false-alarm rate of 1e-6 per example.
"""

import math

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from charnn.data import StreamBatcher
from charnn.sample import filter_logits, sample_next
from charnn.vocab import Vocab

PROPS = settings(derandomize=True, deadline=None, max_examples=60)


@PROPS
@given(st.text(min_size=1, max_size=200))
def test_vocabulary_round_trips_any_unicode(text):
    vocab = Vocab(sorted(set(map(ord, text))))
    ids = vocab.encode(text)
    assert ids.min() >= 0 and ids.max() < len(vocab)
    assert vocab.decode(ids) == text
    assert Vocab.from_json(vocab.to_json()) == vocab


@PROPS
@given(st.binary(min_size=1, max_size=200))
def test_byte_vocabulary_round_trips_any_bytes(data):
    vocab = Vocab(sorted(set(data)), "bytes")
    assert bytes(vocab.codes[vocab.encode(data)].tolist()) == data


@PROPS
@given(n=st.integers(2, 3000), batch=st.integers(1, 40), seq=st.integers(1, 60))
def test_batcher_reads_each_training_character_at_most_once_per_epoch(n, batch, seq):
    """Every target is read at most once an epoch, with its true predecessor as input; all are
    read when the split divides into the streams and windows, and otherwise what is left out is
    each stream's last partial window (fewer than B x (T + 1) characters)."""
    data = np.arange(n, dtype=np.int64)  # each id is its own position
    b = StreamBatcher(data, batch, seq)
    seen = np.zeros(n, dtype=np.int64)
    for step in range(b.steps_per_epoch):
        x, y = b.batch(step)
        assert x.shape == y.shape == (b.batch_size, b.seq_len)
        assert torch.equal(y, x + 1)  # targets are the next character
        np.add.at(seen, y.reshape(-1).numpy(), 1)
    assert seen.max() <= 1 and seen[0] == 0
    left_out = (n - 1) - int(seen.sum())
    assert 0 <= left_out < b.batch_size * (b.seq_len + 1)
    if (n - 1) % (b.batch_size * b.seq_len) == 0:
        assert left_out == 0


def _chi2_bound(df: int, z: float = 4.75) -> float:
    """Upper quantile of chi-square with df degrees of freedom (Wilson-Hilferty), z = 4.75: ~1e-6."""
    return df * (1 - 2 / (9 * df) + z * math.sqrt(2 / (9 * df))) ** 3


logits_strategy = st.lists(st.floats(-4, 4, allow_nan=False), min_size=2, max_size=12)


@settings(derandomize=True, deadline=None, max_examples=25)
@given(logits=logits_strategy, temperature=st.sampled_from([0.3, 0.8, 1.0, 1.7]), seed=st.integers(0, 2**31))
def test_sampling_follows_softmax_of_logits_over_temperature(logits, temperature, seed):
    draws = 20_000
    z = torch.tensor(logits)
    expected = torch.softmax(z / temperature, dim=-1).double() * draws
    gen = torch.Generator().manual_seed(seed)
    ids = sample_next(z.expand(draws, -1), gen, temperature=temperature)
    counts = torch.bincount(ids, minlength=len(logits)).double()
    keep = expected >= 5  # the usual validity rule; rare classes are pooled
    stat = float((((counts[keep] - expected[keep]) ** 2) / expected[keep]).sum())
    rest_e, rest_c = float(expected[~keep].sum()), float(counts[~keep].sum())
    df = int(keep.sum()) - 1
    if rest_e > 0:
        stat += (rest_c - rest_e) ** 2 / max(rest_e, 1e-9) if rest_e >= 5 else 0.0
        df += rest_e >= 5
    if df >= 1:
        assert stat < _chi2_bound(df), (stat, df)


@PROPS
@given(logits=st.lists(st.integers(-300, 300), min_size=2, max_size=20, unique=True),
       top_k=st.integers(0, 25), top_p=st.floats(0.05, 1.0), temperature=st.sampled_from([0.5, 1.0, 2.0]),
       seed=st.integers(0, 2**31))
def test_top_k_and_top_p_never_emit_an_excluded_character(logits, top_k, top_p, temperature, seed):
    z = torch.tensor(logits, dtype=torch.float32) / 37  # distinct values: no ties at the cut
    # The allowed set, computed independently: the k largest, then the smallest prefix (by
    # probability among those) whose mass reaches top_p.
    order = sorted(range(len(logits)), key=lambda i: -logits[i])
    allowed = order[:top_k] if 0 < top_k < len(logits) else order
    p = torch.softmax(z[allowed] / temperature, dim=-1).tolist()
    keep, mass = [], 0.0
    for i, pi in zip(allowed, p):
        if mass >= top_p + 1e-6:
            break
        keep.append(i)
        mass += pi
    gen = torch.Generator().manual_seed(seed)
    ids = set(sample_next(z.expand(4000, -1), gen, temperature, top_k, top_p).tolist())
    assert ids <= set(keep), (ids, keep)
    assert order[0] in ids or len(keep) > 1  # the most likely character always survives
    finite = torch.isfinite(filter_logits(z[None], temperature, top_k, top_p)[0]).nonzero().flatten().tolist()
    assert set(finite) <= set(keep) and order[0] in finite


@PROPS
@given(st.text(alphabet="(){}[]ab\n", max_size=300))
def test_the_fast_bracket_depth_is_the_scanners(text):
    from charnn.brackets import scan
    from charnn.inspect.features import _depth
    from charnn.vocab import code_points

    codes = code_points(text).astype(np.int64)
    for pair in ("()", "[]", "{}"):
        want = scan(text, pair, depths=True).depth
        assert _depth(codes, pair[0], pair[1]).tolist() == want


@PROPS
@given(st.text(alphabet="(){}[]x", max_size=200))
def test_the_scanner_matches_every_closer_to_its_innermost_opener(text):
    from charnn.brackets import scan

    s = scan(text)
    for close, open_ in s.matches.items():
        assert open_ < close and text[open_] + text[close] in ("()", "[]", "{}")
        assert not scan(text[open_ + 1:close]).left_open  # what opened inside closed inside
    n_open = sum(text.count(c) for c in "([{")
    n_close = sum(text.count(c) for c in ")]}")
    assert len(s.matches) + s.left_open <= n_open and len(s.matches) + s.stray + s.crossed == n_close
    whole = scan("a([]{(x)})b" + text)
    assert {1, 2, 4, 5}.issubset(whole.matches.values())  # a well-formed prefix matches whatever follows
