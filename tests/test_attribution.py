"""charnn attribute --eval: stratified folds that never score a document a model trained on, and
the baselines (Kneser-Ney per label, gzip kNN, Burrows' Delta) beside charnn's labelled model."""

import json
import random
from collections import Counter

import pytest

from charnn.attribution.folds import ATTRIBUTION_TRAIN, METHODS, EvalSettings, evaluate_attribution, fold_of, verdicts


def test_folds_are_stratified_seeded_and_cover_every_document_once():
    labels = ["a"] * 23 + ["b"] * 7 + ["c"] * 5
    folds = fold_of(labels, 5, seed=1)
    assert len(folds) == len(labels) and set(folds) == set(range(5))
    for name in "abc":
        per = Counter(f for f, lab in zip(folds, labels) if lab == name)
        assert max(per.values()) - min(per.get(k, 0) for k in range(5)) <= 1, (name, per)
    sizes = Counter(folds).values()
    assert max(sizes) - min(sizes) <= 1
    assert folds == fold_of(labels, 5, seed=1) and folds != fold_of(labels, 5, seed=2)


WORDS = {"A": "the of and to in that it is upon which".split(), "B": "the of and to in whilst by on there was".split()}


def essay(rng, author: str, n: int = 300) -> str:
    w = WORDS[author]
    weights = [8, 6, 5, 4, 3, 3, 2, 2, 2, 2]
    return " ".join(rng.choices(w, weights, k=n))


def corpus(rng, n_a=12, n_b=8, unknown=2) -> str:
    parts = []
    for k, author in enumerate(["A"] * n_a + ["B"] * n_b + [None] * unknown):
        head = author or "A OR B"
        parts.append(f"ESSAY {k + 1}\n{head}\n\n{essay(rng, author or 'B')}\n")
    return "\n".join(parts)


def test_the_baselines_tell_two_word_distributions_apart():
    rng = random.Random(0)
    train = [essay(rng, a) for a in "AB" * 8]
    labels = list("AB" * 8)
    test = [essay(rng, a) for a in "AB" * 5]
    s = EvalSettings(documents=r"^ESSAY \d+$", label=r"^(A|B)$")
    for m in ("ngram-all", "ngram-equal", "gzip-knn", "delta"):
        got = verdicts(m, train, labels, test, None, s)
        assert sum(g == a for g, a in zip(got, "AB" * 5)) >= 9, (m, got)


def _delta_by_hand(train, test, n_words):
    """Burrows' Delta as Burrows (2002) defines it, written again without numpy: the n most frequent
    words of the training documents; each word's relative frequency as a z-score over the training
    documents (population deviation); an author's profile is the mean z of their documents; a
    document goes to the author whose profile is nearest in mean absolute difference."""
    import re
    import statistics

    words = lambda t: re.findall(r"[a-z]+", t.lower())  # noqa: E731
    top = [w for w, _ in Counter(w for d, _ in train for w in words(d)).most_common(n_words)]

    def rates(doc):
        c = Counter(words(doc))
        return [c[w] / max(1, sum(c.values())) for w in top]

    cols = list(zip(*(rates(d) for d, _ in train)))
    mu = [statistics.fmean(col) for col in cols]
    sd = [statistics.pstdev(col) + 1e-12 for col in cols]
    z = lambda r: [(x - m) / s for x, m, s in zip(r, mu, sd)]  # noqa: E731
    authors = sorted({a for _, a in train})
    profile = {a: [statistics.fmean(col) for col in zip(*(z(rates(d)) for d, b in train if b == a))] for a in authors}
    return [min(authors, key=lambda a: statistics.fmean(abs(x - p) for x, p in zip(z(rates(d)), profile[a]))) for d in test]


def _gzip_by_hand(train, test, k):
    """Jiang et al.'s gzip classifier written again: normalised compression distance
    (C(xy) - min(C(x), C(y))) / max(C(x), C(y)), the k nearest training documents vote, a tie
    goes to the label of the nearest among the tied."""
    import gzip

    size = lambda t: len(gzip.compress(t.encode("utf-8")))  # noqa: E731
    out = []
    for doc in test:
        dist = sorted(((size(doc + " " + d) - min(size(doc), size(d))) / max(size(doc), size(d)), i)
                      for i, (d, _) in enumerate(train))
        near = [train[i][1] for _, i in dist[:k]]
        best = max(near.count(a) for a in near)
        out.append(next(a for a in near if near.count(a) == best))
    return out


def test_delta_and_gzip_give_the_verdicts_their_definitions_give():
    """The baselines' verdicts (the Federalist table reports them) equal the methods written again
    from their papers, on random three-author corpora where the authors overlap, so that a wrong
    scaling, distance or vote changes some verdicts."""
    from charnn.attribution.folds import _delta_verdicts, _gzip_verdicts

    vocab = ["the", "of", "upon", "whilst", "and", "by", "to", "on", "which", "would"]
    differ = 0
    for seed in range(12):
        rng = random.Random(seed)
        style = {a: [rng.uniform(0.2, 3) for _ in vocab] for a in "ABC"}
        doc = lambda a: " ".join(rng.choices(vocab, style[a], k=rng.randint(20, 120)))  # noqa: E731
        train = [(doc(a), a) for a in "ABC" * 5]
        test = [doc(a) for a in "ABCABCAB"]
        delta = _delta_verdicts(train, test, 8)
        assert delta == _delta_by_hand(train, test, 8), seed
        assert _gzip_verdicts(train, test, 3) == _gzip_by_hand(train, test, 3), seed
        differ += delta != _gzip_by_hand(train, test, 3)
    assert differ  # the two methods disagree somewhere: the corpora are not trivially separable


@pytest.mark.slow
def test_attribution_eval_never_scores_a_document_a_model_trained_on(tmp_path):
    rng = random.Random(3)
    (tmp_path / "c.txt").write_text(corpus(rng))
    s = EvalSettings(documents=r"^ESSAY \d+$", label=r"^(A|B)$", folds=3, max_time=0, max_steps=150, preset="tiny",
                     train=ATTRIBUTION_TRAIN, extra={"eval_every": 150, "threads": 1})
    res = evaluate_attribution(str(tmp_path / "c.txt"), tmp_path / "out", s, progress=lambda m: None)
    saved = json.loads((tmp_path / "out" / "fold-1" / "config.json").read_text())["train"]
    assert {k: saved[k] for k in ATTRIBUTION_TRAIN} == ATTRIBUTION_TRAIN  # attribution's own settings reach its models
    folds = json.loads((tmp_path / "out" / "folds.json").read_text())["folds"]
    assert sorted(sum(folds, [])) == list(range(20))  # every labelled essay scored once, none of the unknown
    text = (tmp_path / "c.txt").read_text()
    essays = [e for e in text.split("ESSAY ") if e]
    for f, held in enumerate(folds):
        trained = (tmp_path / "out" / f"fold-{f + 1}.txt").read_text()
        assert not any(essays[i].split("\n", 1)[1].strip() in trained for i in held)  # no held-out essay trained on
        assert sum(essays[i].split("\n", 1)[1].strip() in trained for i in range(20) if i not in held) == 20 - len(held)
    assert set(res["methods"]) == set(METHODS)
    for m in ("ngram-all", "ngram-equal", "delta"):
        assert res["methods"][m]["accuracy"] >= 0.9, (m, res["methods"][m])
    assert all(set(r["unlabelled"]) == {"ESSAY 21", "ESSAY 22"} for r in res["methods"].values())
    assert res["methods"]["charnn"]["correct"] == sum(
        v == ("A" if int(i) < 12 else "B") for i, v in res["methods"]["charnn"]["verdicts"].items())
    assert (tmp_path / "out" / "attribution.png").read_bytes()[:4] == b"\x89PNG"
    assert (tmp_path / "out" / "attribution.csv").read_text().startswith("method,accuracy,correct,documents")
