from collections import Counter

import numpy as np
import pytest

from charnn.study.oracles import CATEGORIES, MEMORY_N, categorise


def cats(text, errors_at, ngram_right=(), words=None):
    p = np.full(len(text), 0.9)
    p[0] = np.nan
    p[list(errors_at)] = 0.1
    ng = np.zeros(len(text))
    ng[list(ngram_right)] = 0.7
    c = categorise(text, p, {1: np.zeros(len(text)), 3: ng}, Counter(words or {}))
    return {k: CATEGORIES[c[k]] for k in errors_at}, c


def test_each_oracle_takes_the_errors_it_explains_in_the_papers_order():
    name = "Chudnovsky"  # 10 letters: with the space before it, 11 characters repeat
    text = f"the cat saw {name} then the dog saw {name}, then."
    common = {"the": 50, "cat": 50, "saw": 50, "then": 50, "dog": 50}
    second = text.rindex(name) + len(name) - 1  # last letter of the repeated name
    first_name_char = text.index(name) + 3
    dog = text.index("dog")  # word start of a common word
    comma = text.index(",")
    cat_mid = text.index("cat") + 1  # inside a common word, not a word start, not punctuation
    ngram_pos = text.index("saw") + 2
    got, c = cats(text, [second, first_name_char, dog, comma, cat_mid, ngram_pos], ngram_right=[ngram_pos],
                  words=common)
    assert got[ngram_pos] == "n-gram"
    assert got[second] == "dynamic memory"  # its MEMORY_N characters and itself were seen before
    assert got[first_name_char] == "rare words"  # first time: the name is rare in training
    assert got[dog] == "word model"
    assert got[comma] == "punctuation"
    assert got[cat_mid] == "boost"
    assert int((c >= 0).sum()) == 6  # only errors get a category
    assert MEMORY_N + 1 <= len(" " + name)


def test_an_earlier_oracle_wins_when_several_apply():
    text = "x, y, z, x, y, z"
    comma = text.rindex(",")
    got, _ = cats(text, [comma], ngram_right=[comma])
    assert got[comma] == "n-gram"  # also punctuation, and also a repeat, but the n-gram oracle comes first


def test_no_errors_no_categories():
    p = np.full(20, 0.99)
    c = categorise("a" * 20, p, {}, Counter())
    assert (c == -1).all()


@pytest.mark.slow
def test_analyze_errors_command(quote_model, tmp_path):
    from helpers import charnn

    run, _ = quote_model
    r = charnn("analyze", "errors", run, "--split", "val", "--out", tmp_path / "e", "--baseline", "3")
    assert r.returncode == 0, r.stderr
    lines = r.stdout.splitlines()
    total = int(lines[0].split()[0].replace(",", ""))
    counts = [int(line.split()[-4 if "(" in line else -2].replace(",", "")) for line in lines[2:8]]
    assert sum(counts) == total > 0
    csv_rows = (tmp_path / "e" / "errors.csv").read_text().splitlines()
    assert csv_rows[0] == "category,errors,share,fixed_by_other" and len(csv_rows) == 7
    r = charnn("analyze", "errors", run, "--out", tmp_path / "e2", "--compare", run, "--baseline", "3")
    assert r.returncode == 2 and "not allowed with argument" in r.stderr


@pytest.mark.slow
def test_compare_and_baseline_count_what_the_other_gets_right(quote_model):
    from charnn.inspect import open_subject
    from charnn.subject import training_ids
    from charnn.study.oracles import CATEGORIES, analyze_errors, model_probs, ngram_probs

    run, _ = quote_model
    subject = open_subject(run, split="val", chars=4000)
    # against itself: it gets none of its own errors right (an error is p < 0.5)
    itself = analyze_errors(subject, other=subject)
    assert all(itself.compare[c] == (itself.counts[c], 0) for c in CATEGORIES)
    # against a 5-gram: exactly the errors where the 2-gram gives the true character p >= 0.5
    rep = analyze_errors(subject, baseline_order=5)
    p = model_probs(subject)
    q = ngram_probs(subject, training_ids(subject), [5])[5]
    wrong = np.isfinite(p) & (p < 0.5)
    wrong[0] = False
    right_there = wrong & (q >= 0.5)
    assert sum(n for n, _ in rep.compare.values()) == int(wrong.sum()) == rep.errors
    assert sum(f for _, f in rep.compare.values()) == int(right_there.sum()) > 0
