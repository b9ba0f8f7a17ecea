import json
import random

import pytest

from charnn.errors import CharnnError
from charnn.samplestats import SubstringIndex, balanced, evaluate_samples, read_samples, text_hashes
from helpers import learnable_text


def test_substring_membership_matches_brute_force():
    t = learnable_text(50)
    idx = SubstringIndex(t)
    q = "one two three four five. one three. six"
    for L in (1, 4, 9, 17):
        subs = {t[i:i + L] for i in range(len(t) - L + 1)}
        assert idx.contains(L, text_hashes(q, L)).tolist() == [q[i:i + L] in subs for i in range(len(q) - L + 1)]


def test_copied_samples_are_zero_percent_novel_and_random_ones_nearly_all():
    train = learnable_text(400)
    heldout = learnable_text(100, seed=1)
    a, b = train.index("\n", 100) + 1, train.index("\n", 1000) + 1  # whole lines: whole words
    copies = [train[a:a + 300], train[b:b + 250]]
    copies = [c[: c.rindex("\n")] for c in copies]
    st = evaluate_samples(copies, train, heldout)
    assert all(v == 0.0 for v in st.novelty.values())
    assert st.longest_copy == max(map(len, copies))  # the whole longer sample
    assert st.known_words == 1.0
    rng = random.Random(0)
    noise = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz .") for _ in range(400)) for _ in range(3)]
    st = evaluate_samples(noise, train, heldout)
    assert st.novelty[10] == 1.0 and st.novelty[5] > 0.99
    assert st.longest_copy < 5
    # copies follow the held-out statistics far more closely than noise
    assert evaluate_samples(copies, train, heldout).js_divergence[2] < 0.2 * st.js_divergence[2]


def test_bracket_and_quote_balance():
    assert balanced('f(a[1], {"x": 2})')
    assert not balanced("f(a[1)]")
    assert not balanced("x)")
    assert not balanced('say "hi')
    st = evaluate_samples(['f(x) {"a"}', "g(y", '"'], "f(x) g(y)", "h(z)")
    assert st.balanced == pytest.approx(1 / 3)


def test_reading_samples_from_the_sample_command_and_from_a_run(tmp_path):
    a = tmp_path / "s.txt"
    a.write_text("first sample\n----\nsecond\nsample\n----\nthird\n")
    assert read_samples(a) == ["first sample", "second\nsample", "third\n"]
    b = tmp_path / "samples.jsonl"
    b.write_text(json.dumps({"step": 1, "text": "x y"}) + "\n" + json.dumps({"step": 2, "text": "z"}) + "\n")
    assert read_samples(b) == ["x y", "z"]
    (tmp_path / "bad.jsonl").write_text("{not json\n")
    with pytest.raises(CharnnError, match="line 1 is not a JSON object"):
        read_samples(tmp_path / "bad.jsonl")
    with pytest.raises(CharnnError, match="no such samples file"):
        read_samples(tmp_path / "none.txt")


@pytest.mark.slow
def test_evaluate_samples_command(tmp_path):
    from helpers import charnn

    train = tmp_path / "train.txt"
    train.write_text(learnable_text(800))
    text = train.read_text()
    (tmp_path / "s.txt").write_text(text[50:250] + "\n----\n" + text[900:1100])
    r = charnn("evaluate-samples", tmp_path / "s.txt", "--train", train, "--json")
    assert r.returncode == 0, r.stderr
    d = json.loads(r.stdout)
    assert d["samples"] == 2 and d["novelty"]["20"] == 0.0 and d["longest_copy"] == 200
    r = charnn("evaluate-samples", tmp_path / "s.txt", "--train", train)
    assert "longest span copied from the training text: 200 characters" in r.stdout
    r = charnn("evaluate-samples", tmp_path / "none.txt", "--train", train)
    assert r.returncode == 2 and "no such samples file" in r.stderr and "Traceback" not in r.stderr
