import json

import numpy as np
import pytest

from charnn.errors import CharnnError
from charnn.study.ngram import KneserNey, _keys
from helpers import learnable_text, require


def random_ids(n, v, seed=0):
    return np.random.default_rng(seed).integers(0, v, n)


@pytest.mark.parametrize("modified", [False, True])
@pytest.mark.parametrize("order,vocab", [(1, 4), (2, 5), (3, 5), (5, 7), (12, 100)])
def test_probabilities_sum_to_one_for_every_context(order, vocab, modified):
    text = random_ids(400, vocab) if vocab < 50 else random_ids(400, 20) * 5  # 20 of 100 characters seen
    m = KneserNey(order, vocab, modified=modified).fit(text)
    rng = np.random.default_rng(1)
    contexts = [text[k:k + order - 1] for k in (0, 50, 200)]  # seen contexts
    contexts += [rng.integers(0, vocab, order - 1), np.array([], dtype=np.int64), text[10:12]]  # unseen, short
    for ctx in contexts:
        d = m.distribution(ctx)
        assert d.shape == (vocab,) and np.all(d > 0)
        assert d.sum() == pytest.approx(1.0, abs=1e-9)


def _nltk_scores(ids, order, queries, vocab):
    try:
        import nltk.lm as lm_mod
    except ImportError:
        require(False, "nltk (pip install -e '.[test]')")
    from nltk.util import everygrams

    toks = [str(i) for i in ids]
    lm = lm_mod.KneserNeyInterpolated(order, discount=0.1)
    lm.fit([list(everygrams(toks, max_len=order))], vocabulary_text=toks)
    return np.array([[lm.score(str(w), [str(c) for c in ctx]) for w in range(vocab)] for ctx in queries])


@pytest.mark.parametrize("order,vocab", [(3, 6), (4, 6), (10, 90)])
def test_agrees_with_nltk_where_the_definitions_coincide(order, vocab):
    # NLTK: fixed discount 0.1 and the bare continuation unigram. The text repeats its first
    # part, so every n-gram at its very start also occurs with a character before it, where
    # NLTK's lower-order gamma (raw follower counts) and ours (continuation types) coincide.
    rng = np.random.default_rng(0)
    head = rng.integers(0, min(vocab, 6), 150) if vocab <= 6 else rng.integers(0, 12, 150) * 7
    ids = np.concatenate([head, head, head[:40]])
    ours = KneserNey(order, vocab, discount=0.1, uniform_floor=False).fit(ids)
    queries = [ids[k:k + order - 1] for k in range(0, 300, 23)] + [rng.integers(0, vocab, order - 1)]
    theirs = _nltk_scores(ids, order, queries, vocab)
    mine = np.array([[ours.probs_of(np.append(q, w), len(q))[0] for w in range(vocab)] for q in queries])
    np.testing.assert_allclose(mine, theirs, atol=1e-6, rtol=0)


def test_hashed_keys_beyond_64_bits_are_still_exact_ngram_identities():
    ids = random_ids(3000, 100, seed=3)  # base-101 digits fit 63 bits only up to 9-grams
    for n, keys in _keys(ids, 100, 14):
        if n in (9, 10, 14):
            grams = {tuple(ids[i - n + 1:i + 1]): keys[i] for i in range(n - 1, len(ids))}
            assert len(set(grams.values())) == len(grams)  # distinct n-grams, distinct keys


def test_hashed_keys_keep_apart_ngrams_that_share_their_context():
    # Real text: one context followed by many characters, many contexts differing in their last
    # character. The keys past the exact orders once XOR-ed the last unit into the context's key,
    # which merged such n-grams (and at order 12 of tiny Shakespeare, probabilities summed to 22).
    text = learnable_text(800) + "".join(chr(97 + (i * 7 + i // 26) % 26) for i in range(3000))
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    vocab = 1000  # declared wide, so that keys are exact only up to 6-grams
    for n, keys in _keys(ids, vocab, 12):
        if n >= 7:
            grams = {tuple(ids[i - n + 1:i + 1]): keys[i] for i in range(n - 1, len(ids))}
            assert len(set(grams.values())) == len(grams)
    m = KneserNey(12, vocab, modified=True).fit(ids[:4000])
    rows = m.distributions(ids[3900:4300], 1)
    assert np.allclose(rows.sum(1), 1.0, atol=1e-9)


def test_a_file_saved_with_the_old_colliding_keys_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"1.gram_keys": np.zeros(1, dtype=np.uint64)}, str(tmp_path / "old.ngram"), metadata={"format": "charnn-ngram-1"})
    with pytest.raises(CharnnError, match="older charnn whose keys for long n-grams collided; count it again"):
        KneserNey.load(tmp_path / "old.ngram")


def test_longer_context_helps_on_structured_text():
    text = learnable_text(600)
    chars = sorted(set(text))
    ids = np.array([chars.index(c) for c in text])
    cut = int(len(ids) * 0.9)
    losses = [KneserNey(n, len(chars)).fit(ids[:cut]).loss(ids, cut) for n in (1, 2, 4, 8)]
    assert losses == sorted(losses, reverse=True)
    assert losses[-1] < 0.6 * losses[0]


def test_modified_discounts_grow_with_the_count_and_stay_in_range():
    m = KneserNey(4, 6, modified=True).fit(random_ids(3000, 6, seed=2))
    for lv in m.orders:
        d1, d2, d3 = lv.discounts
        assert 0 <= d1 <= 1 and 0 <= d2 <= 2 and 0 <= d3 <= 3


def _chen_goodman(counts):
    """D1, D2, D3+ from the counts of counts (Chen & Goodman 1998, eq. 26), clipped to [0, k]."""
    n1, n2, n3, n4 = (sum(1 for c in counts if c == k) for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2)
    return [min(max(d, 0.0), k) for k, d in ((1, 1 - 2 * y * n2 / n1), (2, 2 - 3 * y * n3 / n2), (3, 3 - 4 * y * n4 / n3))]


def test_modified_kneser_ney_is_chen_and_goodmans_written_again():
    """A bigram model with modified discounts, computed here from plain counts: the discounts of
    each order and every probability of a held-out text."""
    from collections import Counter

    V = 150
    rng = np.random.default_rng(5)
    ids = np.minimum(rng.zipf(1.6, 3000) - 1, V - 1)  # skewed: counts of 1, 2, 3, 4 and more at both orders
    m = KneserNey(2, V, modified=True).fit(ids)
    pairs = Counter(zip(ids[:-1].tolist(), ids[1:].tolist()))
    cont = Counter(w for (_, w) in pairs)  # N1+(.w): distinct left neighbours
    d_top, d_uni = _chen_goodman(list(pairs.values())), _chen_goodman(list(cont.values()))
    assert list(m.orders[1].discounts) == pytest.approx(d_top)
    assert list(m.orders[0].discounts) == pytest.approx(d_uni)

    def disc(c, d):
        return 0.0 if c == 0 else d[min(c, 3) - 1]

    def gamma(counts, d):  # the mass the discounts free, per unit of count
        return sum(d[k] * sum(1 for c in counts if min(c, 3) == k + 1) for k in range(3))

    total = sum(cont.values())
    p_uni = {w: (cont[w] - disc(cont[w], d_uni)) / total + gamma(cont.values(), d_uni) / total / V for w in range(V)}
    held = np.minimum(rng.zipf(1.6, 300) - 1, V - 1)
    want = []
    for h, w in zip(held[:-1].tolist(), held[1:].tolist()):
        row = {x: pairs[(h, x)] for x in range(V)}
        c_h = sum(row.values())
        want.append((row[w] - disc(row[w], d_top)) / c_h + gamma(row.values(), d_top) / c_h * p_uni[w]
                    if c_h else p_uni[w])
    assert m.probs_of(held, 1) == pytest.approx(want, rel=1e-9)


def test_a_fixed_discount_and_bad_orders():
    m = KneserNey(3, 4, discount=0.3).fit(random_ids(200, 4))
    assert all(lv.discount == 0.3 for lv in m.orders)
    with pytest.raises(CharnnError, match="at least 1"):
        KneserNey(0, 4)
    with pytest.raises(CharnnError, match="fewer than 2"):
        KneserNey(2, 4).fit(np.array([1]))


@pytest.mark.slow
def test_ngram_command(tmp_path):
    from helpers import charnn

    f = tmp_path / "t.txt"
    f.write_text(learnable_text(800))
    r = charnn("ngram", f, "--order", "6", "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["order"] == 6 and d["val"]["loss"] < 1.0 and d["val"]["chars"] > 100
    r = charnn("ngram", f, "--order", "3")
    assert "modified Kneser-Ney 3-gram" in r.stdout and "val" in r.stdout
    for args, msg in ((["--order", "0"], "between 1 and 30"), (["--order", "31"], "between 1 and 30"),
                      (["--order", "3", "--discount", "1.5"], "--discount must be between 0 and 1"),
                      (["--order", "3", "--split", "0.5,0.6,0"], "add up to 1")):
        r = charnn("ngram", f, *args)
        assert r.returncode == 2 and msg in r.stderr and "Traceback" not in r.stderr
    r = charnn("ngram", tmp_path / "missing.txt", "--order", "3")
    assert r.returncode == 2 and "no such file" in r.stderr


@pytest.mark.parametrize("modified", [False, True])
def test_saved_model_gives_the_same_probabilities(tmp_path, modified):
    ids = random_ids(2000, 9, seed=4)
    m = KneserNey(12, 9, modified=modified).fit(ids)  # orders past 9 use hashed keys (uint64 round trip)
    m.save(tmp_path / "m.safetensors", '{"unit": "char", "chars": "abcdefghi"}')
    back, vocab_json = KneserNey.load(tmp_path / "m.safetensors")
    assert vocab_json == '{"unit": "char", "chars": "abcdefghi"}' and back.order == 12
    q = random_ids(300, 9, seed=5)
    np.testing.assert_array_equal(back.probs_of(q, 20), m.probs_of(q, 20))


def test_loading_something_else_is_refused(tmp_path):
    (tmp_path / "x.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(CharnnError, match="cannot read n-gram model"):
        KneserNey.load(tmp_path / "x.safetensors")


@pytest.mark.slow
def test_saved_ngram_as_the_baseline_of_an_error_analysis(quote_model, tmp_path):
    from helpers import charnn

    run, _ = quote_model
    text = run.parent / "quotes.txt"
    r = charnn("ngram", text, "--order", "4", "--save", tmp_path / "q4.safetensors")
    assert r.returncode == 0, r.stderr
    by_file = charnn("analyze", "errors", run, "--split", "val", "--out", tmp_path / "a",
                     "--baseline", tmp_path / "q4.safetensors")
    by_order = charnn("analyze", "errors", run, "--split", "val", "--out", tmp_path / "b", "--baseline", "4")
    assert by_file.returncode == 0, by_file.stderr
    # a 4-gram saved from the run's own text and one trained inside the command agree
    assert by_file.stdout.splitlines()[2:] == by_order.stdout.splitlines()[2:]
    other = tmp_path / "other.txt"
    other.write_text("completely different text 0123456789")
    charnn("ngram", other, "--order", "2", "--save", tmp_path / "o.safetensors")
    r = charnn("analyze", "errors", run, "--split", "val", "--out", tmp_path / "c", "--baseline", tmp_path / "o.safetensors")
    assert r.returncode == 2 and "another vocabulary" in r.stderr


@pytest.mark.parametrize("order, modified", [(1, False), (3, False), (5, True)])
def test_whole_distributions_sum_to_one_and_hold_the_probability_of_each_target(order, modified):
    import numpy as np

    from charnn.study.ngram import KneserNey

    rng = np.random.default_rng(0)
    train_ids = rng.integers(0, 7, 5000)
    train_ids[1::3] = (train_ids[::3][: len(train_ids[1::3])] + 1) % 7  # some structure to count
    m = KneserNey(order, 7, modified=modified).fit(train_ids)
    history = rng.integers(0, 7, 300)
    d = m.distributions(history, 20)
    assert d.shape == (280, 7) and np.allclose(d.sum(1), 1.0)
    assert np.allclose(d[np.arange(280), history[20:]], m.probs_of(history, 20))


def test_discounts_estimated_out_of_range_fall_back_so_that_nothing_has_zero_probability():
    """Chen & Goodman's estimates can be zero or negative on small texts (here D3+ = 3 - 4 y n4/n3
    = -1: one unit seen 3 times, two seen 4 times): clipped to 0, no mass would be left for the
    units never seen. The order falls back to KenLM's discounts (0.5, 1, 1.5) instead."""
    ids = np.array([0] * 3 + [1] * 4 + [2] * 4)
    m = KneserNey(1, 5, modified=True).fit(ids)
    assert list(m.orders[0].discounts) == [0.5, 1.0, 1.5]
    p = m.distributions(np.array([0, 1, 2, 3, 4]), 0)
    assert np.allclose(p.sum(1), 1.0) and (p[:, 3:] > 0).all()
    assert _chen_goodman_raw([3, 4, 4])[2] < 0  # what the fallback replaces


def _chen_goodman_raw(counts):
    n1, n2, n3, n4 = (sum(1 for c in counts if c == k) for k in (1, 2, 3, 4))
    y = n1 / (n1 + 2 * n2) if n1 + n2 else 0.5
    return [k - (k + 1) * y * nk / nk1 if nk1 else y for k, nk, nk1 in ((1, n2, n1), (2, n3, n2), (3, n4, n3))]


@pytest.mark.parametrize("order, vocab, modified", [(3, 6, False), (12, 100, True)])
def test_many_contexts_at_once_read_as_each_alone(order, vocab, modified):
    """next_distributions (the mixture's sampler and scorer read it in batches) gives each row
    what ``probs_of`` gives for that context alone, rows with fewer real units than the order
    wants included (order 12 at 100 symbols: hashed keys past the 9th unit)."""
    rng = np.random.default_rng(3)
    text = np.tile(rng.integers(0, vocab, 300), 4)  # repeats: long contexts that were seen
    m = KneserNey(order, vocab, modified=modified).fit(text)
    starts = rng.integers(0, len(text) - order, 40)
    rows = np.stack([text[s : s + order - 1] for s in starts])
    avail = rng.integers(0, order, 40)
    got = m.next_distributions(rows, avail=avail)
    for row, a, d in zip(rows, avail, got):
        ctx = row[len(row) - a :]
        want = np.array([m.probs_of(np.append(ctx, w), len(ctx))[0] for w in range(vocab)])
        assert np.allclose(d, want, rtol=0, atol=1e-12)
    assert np.allclose(got.sum(1), 1.0)
    assert np.allclose(got[avail == 0], m.distribution(np.array([], dtype=np.int64)))  # the padding is never read
    assert not np.allclose(got[avail == order - 1], got[avail == order - 1][:1])  # the contexts are read
