"""charnn teach hello: the blog's worked example, in the terminal, as JSON, and as a page that trains
the same network in the browser."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest

from charnn.teach import teach


def test_one_update_raises_each_right_letter_and_training_spells_the_word():
    lesson = teach("hello")  # seed 0
    assert lesson.vocab == ["h", "e", "l", "o"]
    targets = [lesson.vocab.index(c) for c in "ello"]
    for before, after, k in zip(lesson.before.probs, lesson.after_one_step.probs, targets):
        assert after[k] > before[k]
    assert lesson.after_one_step.loss < lesson.before.loss
    assert lesson.argmax == "ello" and lesson.spelled_at is not None and lesson.final.loss < 0.05
    # the two "l" inputs have different targets; only their hidden states tell them apart
    assert lesson.inputs[2] == lesson.inputs[3] == "l" and lesson.targets[2] != lesson.targets[3]
    assert not np.allclose(lesson.final.hidden[2], lesson.final.hidden[3], atol=0.1)
    assert all(abs(sum(p) - 1) < 1e-6 for p in lesson.before.probs)


def test_the_lesson_is_the_same_for_a_seed_and_another_for_another():
    assert teach("hello", seed=3).to_dict() == teach("hello", seed=3).to_dict()
    assert teach("hello", seed=3).to_dict()["before"] != teach("hello", seed=4).to_dict()["before"]


@pytest.mark.slow
def test_the_json_has_the_fixed_fields_and_bad_input_is_one_line():
    run = lambda *a: subprocess.run([sys.executable, "-m", "charnn", "teach", "hello", *a], capture_output=True,  # noqa: E731
                                    text=True, timeout=120, env=dict(os.environ, PYTHONUNBUFFERED="1"))
    r = run("--json", "--steps", "200")
    d = json.loads(r.stdout)
    assert d["vocab"] == ["h", "e", "l", "o"] and len(d["before"]["probs"]) == 4
    assert {"probs", "loss"} <= set(d["before"]) and {"probs", "loss"} <= set(d["after_one_step"])
    assert d["final"]["argmax"] == "ello" and d["final"]["steps"] == 200 and d["final"]["loss"] < 0.05
    text = run()
    assert text.returncode == 0 and "score" in text.stdout and 'spell "ello"' in text.stdout
    bad = run("--word", "x")
    assert bad.returncode == 2 and "--word must have 2 to 40 characters" in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_the_page_trains_the_same_network_in_the_browser(browser, tmp_path):
    lesson = teach("hello")
    from charnn.web.pages import write_teach_page

    page_path = write_teach_page(lesson, tmp_path / "teach.html")
    page = browser.new_page()
    errors = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.on("request", lambda r: None if r.url.startswith("file:") else errors.append(r.url))
    page.goto(page_path.resolve().as_uri())
    probs = lambda: np.array(page.evaluate("teach.forward().ps"))  # noqa: E731
    assert np.allclose(probs(), lesson.before.probs, atol=1e-5)  # the same weights as the command
    page.click("[data-testid=step]")
    assert np.allclose(probs(), lesson.after_one_step.probs, atol=1e-4)  # its backprop = PyTorch's autograd
    assert page.locator("#table td.target.up").count() >= 4  # the right letters' scores went up, in green
    for _ in range(4):
        page.click("[data-testid=fifty]")
    assert page.get_attribute("[data-testid=status]", "data-argmax") == "ello"
    assert "different next letters" in page.text_content("[data-testid=same]")
    page.fill("[data-testid=word]", "noon")  # another word, typed in
    page.dispatch_event("[data-testid=word]", "change")
    for _ in range(10):
        page.click("[data-testid=fifty]")
    assert page.get_attribute("[data-testid=status]", "data-argmax") == "oon"
    assert errors == []
