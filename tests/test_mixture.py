"""--ngram-mix: the best model mixed with its training text's Kneser-Ney n-gram (charnn.study.mixture)."""

import json

import numpy as np
import pytest

from charnn import checkpoint as ckpt
from charnn.errors import CharnnError
from charnn.evaluate import char_losses, evaluate
from charnn.study import mixture as mixture_mod
from charnn.study.mixture import (
    MIXTURE_FILE, Mixture, cross_fitted, fit_powers, fit_run, fit_weight, geometric_losses, mixed_loss)
from charnn.study.ngram import KneserNey
from helpers import TINY, charnn, tiny_config


def _probs(n, seed):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.01, 1, n), rng.uniform(0.01, 1, n)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_fitted_weight_is_the_best_on_a_fine_grid(seed):
    pm, pn = _probs(5000, seed)
    pn = pn ** (1 + seed)  # a weaker n-gram each time: the best weight moves
    w = fit_weight(pm, pn)
    grid = np.linspace(0, 1, 2001)
    best = grid[np.argmin([mixed_loss(pm, pn, g) for g in grid])]
    assert abs(w - best) < 2e-3
    assert mixed_loss(pm, pn, w) <= min(mixed_loss(pm, pn, g) for g in grid) + 1e-7


def test_the_weight_goes_to_the_better_model_when_it_is_better_everywhere():
    pm, _ = _probs(2000, 3)
    assert fit_weight(pm, pm * 0.5) < 1e-3  # the n-gram halves every probability: no weight
    assert fit_weight(pm * 0.5, pm) > 1 - 1e-3  # the model does: all weight on the n-gram


def test_cross_fitting_scores_each_half_at_the_other_halfs_weight():
    pm, pn = _probs(1001, 4)
    pn[:500] = pn[:500] ** 3  # the halves want different weights
    h = 500
    want = (mixed_loss(pm[:h], pn[:h], fit_weight(pm[h:], pn[h:])) * h
            + mixed_loss(pm[h:], pn[h:], fit_weight(pm[:h], pn[:h])) * (1001 - h)) / 1001
    assert cross_fitted(pm, pn) == pytest.approx(want)
    assert cross_fitted(pm, pn) > mixed_loss(pm, pn, fit_weight(pm, pn))  # a weight fitted elsewhere scores worse


def test_a_mixture_file_round_trips_and_a_bad_one_is_refused(tmp_path):
    m = Mixture(order=5, weight=0.25, chars=100, model_loss=1.5, ngram_loss=1.6, loss=1.4, cross_fitted_loss=1.41)
    m.save(tmp_path)
    assert Mixture.load(tmp_path) == m
    assert Mixture.load(tmp_path / "nowhere") is None
    (tmp_path / MIXTURE_FILE).write_text('{"order": 5}')
    with pytest.raises(CharnnError, match="not a charnn mixture file"):
        Mixture.load(tmp_path)
    (tmp_path / MIXTURE_FILE).write_text(json.dumps({**m.__dict__, "weight": 1.5}))
    with pytest.raises(CharnnError, match="impossible mixture"):
        Mixture.load(tmp_path)


def test_the_command_line_reports_the_mixture(text_file, tmp_path):
    r = charnn("train", text_file, "--out", tmp_path / "run", *TINY, "--max-steps", "20", "--ngram-mix", "3",
               "--samples", "0")
    assert r.returncode == 0, r.stderr
    mix = Mixture.load(tmp_path / "run")
    assert f"mixed with its training text's 3-gram ({mix.describe()}): validation loss {mix.loss:.4f}" in r.stderr
    assert f"each half at what was fitted on the other half {mix.cross_fitted_loss:.4f}" in r.stderr  # all of it fitted


@pytest.mark.parametrize("args,message", [
    (["--ngram-mix", "31"], "--ngram-mix must be an n-gram order from 1 to 30"),
    (["--ngram-mix", "-1"], "--ngram-mix"),
    (["--ngram-mix", "3", "--unit", "bpe"], "--unit bpe is not supported with it yet"),
    (["--ngram-mix", "3", "--documents", "line"], "--documents is not supported with it yet"),
])
def test_a_bad_ngram_mix_is_one_line(text_file, tmp_path, args, message):
    r = charnn("train", text_file, "--out", tmp_path / "run", *TINY, "--max-steps", "5", *args)
    assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "run" / "last.safetensors").exists()


def words_text(seed: int = 0) -> str:
    """Lines of words drawn at random: a 3-gram knows the spelling, a small model learns more than
    that in 150 steps, and neither knows all: their mixture beats both."""
    import random

    rng = random.Random(seed)
    words = "the king and queen of a far land rode to war with their men over hills under stars".split()
    return "\n".join(" ".join(rng.choice(words) for _ in range(rng.randint(3, 9))) for _ in range(300)) + "\n"


@pytest.fixture(scope="module")
def mixed_run(tmp_path_factory):
    """A run trained with --ngram-mix 3 for 150 steps on words_text."""
    from charnn.trainer import train
    from helpers import cache_at

    d = tmp_path_factory.mktemp("mixed")
    text = d / "text.txt"
    text.write_text(words_text(), encoding="utf-8")
    with cache_at(d / "cache"):
        train(tiny_config(text, max_steps=150, eval_every=50, ngram_mix=3), d / "run", progress=False)
        mix, _ = fit_run(d / "run")  # what charnn.train and the command line do once a run has ended
    return d / "run", mix


def test_a_run_with_ngram_mix_scores_the_best_model_and_the_ngram_and_their_mixture(mixed_run):
    from charnn.evaluate import model_text

    run, mix = mixed_run
    assert mix is not None and Mixture.load(run) == mix
    best = ckpt.load(run, "best")
    val, train_ids = model_text(best, split="val").ids, model_text(best, split="train").ids
    assert mix.chars == len(val) - 1
    # the model part is the best checkpoint's own validation loss, the n-gram part a 3-gram of the
    # training split read over the same characters
    assert mix.model_loss == pytest.approx(evaluate(best.build_model(), val).loss, rel=1e-5)
    kn = KneserNey(3, len(best.vocab), modified=True).fit(train_ids)
    assert mix.ngram_loss == pytest.approx(kn.loss(val, 1), rel=1e-9)
    assert 0 < mix.weight < 1
    assert mix.loss < min(mix.model_loss, mix.ngram_loss) - 1e-3  # each helps the other
    assert mix.loss <= mix.cross_fitted_loss < min(mix.model_loss, mix.ngram_loss)
    logged = [json.loads(line) for line in (run / "metrics.jsonl").open()][-1]
    assert logged["mixture"]["weight"] == mix.weight


def test_eval_scores_the_best_checkpoint_mixed_at_the_runs_weight(mixed_run):
    run, mix = mixed_run
    r = charnn("eval", run, "--json")
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out["mixture"]["weight"] == mix.weight
    assert out["mixture"]["loss"] == pytest.approx(mix.loss, rel=1e-6)  # the same split at the same weight
    assert out["mixture"]["loss"] < out["loss"]
    r = charnn("eval", run, "--checkpoint", "last", "--json")  # the weight was fitted for the best one
    assert r.returncode == 0 and "mixture" not in json.loads(r.stdout)


def _mixed(mix, p, q):
    """The mixture's distribution, written out from its definition."""
    if mix.kind == "geometric":
        r = p ** mix.powers[0] * q ** mix.powers[1]
        return r / r.sum()
    return (1 - mix.weight) * p + mix.weight * q


def test_the_sampler_draws_from_the_mixture_of_the_model_and_the_ngram(mixed_run):
    import torch

    import charnn

    run, mix = mixed_run
    model = charnn.load(run)
    sampler = model.mixture()
    assert sampler is not None and sampler.mixture == mix
    prime = "the king and qu"
    ids = np.asarray(model.vocab.encode(prime))
    with torch.no_grad():
        logits, _ = model.net(torch.as_tensor(ids)[None])
    want = _mixed(mix, torch.softmax(logits[0, -1].double(), -1).numpy(), sampler.ngram.distribution(ids[-2:]))
    got = torch.exp(sampler.mix(logits[:, -1], ids[None])).numpy()[0]
    assert np.allclose(got, want, atol=1e-9) and got.sum() == pytest.approx(1.0)
    # at temperature 0 the sample follows the mixture's most likely character, with or without it
    mixed = model.sample(prime, length=1, temperature=0)[0]
    alone = model.sample(prime, length=1, temperature=0, mix=False)[0]
    assert mixed == model.vocab.decode([int(np.argmax(want))])
    assert alone == model.vocab.decode([int(torch.argmax(logits[0, -1]))])


def test_next_and_show_probs_give_the_mixtures_distribution(mixed_run):
    """The next character's candidates (the API's next, sample --show-probs) are the mixture's, the
    temperature applied to its log-probabilities as sampling applies it; mix=False / --no-mix:
    the model's own."""
    import torch

    import charnn as api

    run, mix = mixed_run
    model = api.load(run)
    sampler = model.mixture()
    prime = "the king and qu"
    ids = np.asarray(model.vocab.encode(prime))
    with torch.no_grad():
        logits, _ = model.net(torch.as_tensor(ids)[None])
    p = torch.softmax(logits[0, -1].double(), -1).numpy()
    want = _mixed(mix, p, sampler.ngram.distribution(ids[-2:]))
    hot = want**0.5 / (want**0.5).sum()  # temperature 2: softmax(log P / 2)
    V = model.vocab
    for T, dist in ((1.0, want), (2.0, hot)):
        got = model.next(prime, temperatures=(T,), top=len(V))[T]
        assert sum(got.values()) == pytest.approx(1.0)
        for k, v in got.items():
            assert v == pytest.approx(dist[V.encode(k.replace("\\n", "\n"))[0]], abs=1e-7)
    alone = model.next(prime, temperatures=(1.0,), top=3, mix=False)[1.0]
    assert [V.encode(k)[0] for k in alone] == list(np.argsort(-p)[:3])
    assert list(alone.values()) == pytest.approx(np.sort(p)[::-1][:3], abs=1e-7)
    r = charnn("sample", run, "--show-probs", "--prime", prime, "--temperatures", "1", "--json")
    out = json.loads(r.stdout)
    assert r.returncode == 0 and out["mixed"]
    assert out["probs"]["1"] == pytest.approx([want[V.encode(c)[0]] for c in out["candidates"]], abs=1e-7)
    r = charnn("sample", run, "--show-probs", "--prime", prime, "--temperatures", "1", "--no-mix", "--json")
    assert not json.loads(r.stdout)["mixed"] and json.loads(r.stdout)["probs"]["1"][0] == pytest.approx(p.max(), abs=1e-7)
    r = charnn("sample", run, "--show-probs", "--prime", prime, "--temperatures", "1")
    assert "of the model mixed with its 3-gram" in r.stdout


def test_beam_search_finds_the_mixtures_likeliest_text(mixed_run):
    """--beam on a --ngram-mix run searches the mixture: greedy follows the mixture's argmax as a
    temperature-0 sample does, the reported log-likelihood is the mixture's own score of the text,
    and a wider beam never ends below greedy."""
    import charnn as api

    run, _ = mixed_run
    model = api.load(run)
    sampler = model.mixture()
    prime = "the queen"
    greedy, g_nats = model.beam(prime, width=1, length=40)
    assert greedy == model.sample(prime, length=40, temperature=0)[0]  # the mixture's argmax at each step
    alone, a_nats = model.beam(prime, width=1, length=40, mix=False)
    assert alone == model.sample(prime, length=40, temperature=0, mix=False)[0]
    ids = np.asarray(model.vocab.encode(prime + alone))
    assert -char_losses(model.net, ids)[len(prime) - 1 : -1].sum() == pytest.approx(a_nats, rel=1e-5)  # the model's own
    text, nats = model.beam(prime, width=6, length=40)
    assert nats >= g_nats - 1e-9
    for cont, got in ((text, nats), (greedy, g_nats)):
        ids = np.asarray(model.vocab.encode(prime + cont))
        losses = mixture_mod.score(model.net, sampler.ngram, sampler.mixture, ids)  # the mixture scoring the text
        assert -losses[len(prime) - 1 : -1].sum() == pytest.approx(got, rel=1e-5)
        assert -char_losses(model.net, ids)[len(prime) - 1 : -1].sum() != pytest.approx(got, rel=1e-3)
    r = charnn("sample", run, "--beam", "6", "--prime", prime, "--length", "40")
    assert r.returncode == 0 and r.stdout == prime + text + "\n" and "of the model mixed with its 3-gram" in r.stderr
    r = charnn("sample", run, "--beam", "1", "--prime", prime, "--length", "40", "--no-mix")
    assert r.stdout == prime + alone + "\n" and "mixed" not in r.stderr
    r = charnn("sample", run, "--beam", "2", "--prime", prime, "--length", "0")  # nothing to add: no "-0.0000" per unit
    assert r.returncode == 0 and r.stdout == prime + "\n" and "(0.0000 nats per unit)" in r.stderr


def test_sampling_without_the_training_text_warns_and_uses_the_model_alone(mixed_run, tmp_path):
    import shutil

    run, _ = mixed_run
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    text = run.parent / "text.txt"
    moved = tmp_path / "away.txt"
    shutil.move(text, moved)
    try:
        r = charnn("sample", copy, "--length", "60", "--seed", "3")
        alone = charnn("sample", copy, "--length", "60", "--seed", "3", "--no-mix")
    finally:
        shutil.move(moved, text)
    assert r.returncode == 0 and "needs its training text; using the model alone" in r.stderr
    assert r.stdout == alone.stdout
    mixed = charnn("sample", run, "--length", "60", "--seed", "3")
    assert mixed.returncode == 0 and mixed.stdout != alone.stdout  # with the text, the mixture draws other characters


def test_serve_samples_and_scores_the_mixture_as_sample_and_eval_do(mixed_run, tmp_path, monkeypatch):
    """serve reads a --ngram-mix run's best checkpoint as charnn sample and charnn eval do: mixed
    with its n-gram ("mix": false, or another checkpoint: the model alone), the stream too."""
    pytest.importorskip("fastapi")
    import uvicorn
    from fastapi.testclient import TestClient

    import charnn as api
    from charnn.cli.main import main

    run, mix = mixed_run
    model = api.load(run)
    apps = []
    monkeypatch.setattr(uvicorn, "run", lambda app, **kw: apps.append(app))
    assert main(["serve", str(run)]) == 0  # the app charnn serve would serve
    with TestClient(apps[0]) as client:
        (listed,) = client.get("/api/runs").json()
        assert listed["mixture"]["order"] == 3 and listed["mixture"]["loss"] == pytest.approx(mix.loss)
        body = {"prime": "the ", "length": 80, "seed": 3, "temperature": 0.9}
        got = client.post("/api/runs/run/sample", json=body).json()
        assert got["mixed"] and got["samples"] == ["the " + t for t in model.sample("the ", length=80, seed=3, temperature=0.9)]
        alone = client.post("/api/runs/run/sample", json=body | {"mix": False}).json()
        assert not alone["mixed"] and alone["samples"] == ["the " + model.sample("the ", length=80, seed=3, temperature=0.9,
                                                                                 mix=False)[0]]
        assert got["samples"] != alone["samples"]
        assert not client.post("/api/runs/run/sample", json=body | {"checkpoint": "last"}).json()["mixed"]
        with client.stream("POST", "/api/runs/run/sample/stream", json=body) as r:
            pieces = [json.loads(line[6:]).get("text", "") for line in r.iter_lines() if line.startswith("data: ")]
        assert "the " + "".join(pieces) == got["samples"][0]
        text = (run.parent / "text.txt").read_text()[:3000]
        (tmp_path / "t.txt").write_text(text)
        printed = json.loads(charnn("eval", run, "--text", tmp_path / "t.txt", "--json").stdout)
        scored = client.post("/api/runs/run/eval", json={"text": text}).json()
        assert scored["mixture"]["loss"] == pytest.approx(printed["mixture"]["loss"], rel=1e-6)
        assert scored["mixture"]["loss"] < scored["loss"]  # (training text: the n-gram knows it)
        assert scored["mixture"]["powers"] == printed["mixture"]["powers"]
        assert "mixture" not in client.post("/api/runs/run/eval", json={"text": text, "mix": False}).json()
        for mixed in (True, False):  # the next character's candidates, as the API's next gives them
            nxt = client.post("/api/runs/run/next", json={"text": "the qu", "temperatures": [1], "top": 4, "mix": mixed}).json()
            want = model.next("the qu", temperatures=(1.0,), top=4, mix=mixed)[1.0]
            assert nxt["mixed"] == mixed and nxt["candidates"] == list(want)
            assert nxt["probs"]["1"] == pytest.approx(list(want.values()), abs=1e-6)
    assert model.score(text).mixture == scored["mixture"] and model.score(text, mix=False).mixture is None  # the API's


def test_a_run_resumed_without_ngram_mix_keeps_no_stale_mixture(text_file, tmp_path):
    import charnn

    settings = dict(preset="tiny", hidden=32, seq_len=20, batch_size=8, threads=1, progress=False)
    run = charnn.train(text_file, tmp_path / "run", max_steps=20, ngram_mix=3, **settings)
    assert run.result.mixture is not None and (tmp_path / "run" / MIXTURE_FILE).exists()
    again = charnn.train(text_file, tmp_path / "run", resume=True, max_steps=40, ngram_mix=0, progress=False)
    assert again.steps == 40 and again.result.mixture is None
    assert not (tmp_path / "run" / MIXTURE_FILE).exists()  # its weight was fitted for an older best checkpoint


def _distributions(T, V, seed):
    """(log P_model, log P_ngram, targets): two noisy views of a hidden distribution, each
    wrong in its own way, so that their product scores better than either."""
    rng = np.random.default_rng(seed)
    truth = rng.dirichlet(np.full(V, 0.3), T)
    tgt = np.array([rng.choice(V, p=row) for row in truth])
    noisy = [np.log(truth + 0.05) + rng.normal(0, s, (T, V)) for s in (0.8, 1.2)]
    lp, lq = (x - np.log(np.exp(x).sum(1, keepdims=True)) for x in noisy)
    return lp, lq, tgt


@pytest.mark.parametrize("seed", [0, 1])
def test_the_fitted_powers_are_the_best_on_a_grid(seed):
    lp, lq, tgt = _distributions(3000, 8, seed)
    a, b = fit_powers(lp, lq, tgt)
    fitted = geometric_losses(lp, lq, tgt, (a, b)).mean()
    grid = [geometric_losses(lp, lq, tgt, (x, y)).mean() for x in np.linspace(0, 1.5, 31) for y in np.linspace(0, 1.5, 31)]
    assert fitted <= min(grid) + 1e-9
    assert fitted < min(geometric_losses(lp, lq, tgt, (1, 0)).mean(), geometric_losses(lp, lq, tgt, (0, 1)).mean())
    # the definition: P ~ P_model^a P_ngram^b, normalised over the symbols
    r = np.exp(a * lp[0] + b * lq[0])
    assert geometric_losses(lp[:1], lq[:1], tgt[:1], (a, b))[0] == pytest.approx(-np.log(r[tgt[0]] / r.sum()))


def test_a_mixture_file_from_before_geometric_mixtures_reads_as_linear(tmp_path):
    old = {"order": 4, "weight": 0.3, "chars": 10, "model_loss": 1.5, "ngram_loss": 1.6, "loss": 1.4,
           "cross_fitted_loss": 1.41}
    (tmp_path / MIXTURE_FILE).write_text(json.dumps(old))
    m = Mixture.load(tmp_path)
    assert m.kind == "linear" and m.describe() == "weight 0.300"
    import torch

    logits = torch.randn(2, 5)
    q = np.random.default_rng(0).dirichlet(np.ones(5), 2)
    got = torch.exp(m.log_probs(logits, q)).numpy()
    assert np.allclose(got, 0.7 * torch.softmax(logits.double(), -1).numpy() + 0.3 * q)
    (tmp_path / MIXTURE_FILE).write_text(json.dumps({**old, "kind": "cubic"}))
    with pytest.raises(CharnnError, match="impossible mixture"):
        Mixture.load(tmp_path)


def test_the_kind_kept_is_the_one_whose_cross_fitted_loss_is_lower(mixed_run):
    """fit keeps the geometric mixture only where it scores lower on halves it was not fitted on,
    and then the losses it reports are the geometric mixture's."""
    from charnn.evaluate import model_text

    run, mix = mixed_run
    best = ckpt.load(run, "best")
    val = np.asarray(model_text(best, split="val").ids)
    model = best.build_model()
    lp = mixture_mod._model_log_probs(model, val)
    kn = KneserNey(3, len(best.vocab), modified=True).fit(model_text(best, split="train").ids)
    lq = np.log(kn.distributions(val, 1))
    tgt = val[1:]
    pm, pn = np.exp(lp[np.arange(len(tgt)), tgt]), np.exp(lq[np.arange(len(tgt)), tgt])
    linear, geometric = cross_fitted(pm, pn), mixture_mod.cross_fitted_powers(lp, lq, tgt)
    assert mix.kind == ("geometric" if geometric < linear else "linear")
    assert mix.cross_fitted_loss == pytest.approx(min(linear, geometric))
    if mix.kind == "geometric":
        assert mix.loss == pytest.approx(geometric_losses(lp, lq, tgt, mix.powers).mean())


def test_a_validation_split_longer_than_the_fitting_part_is_scored_whole(mixed_run, monkeypatch):
    """Past FIT_CHARS the mixture is fitted on the split's start but scored over all of it, read
    as the model is read (score: the n-gram looked up window by window)."""
    from charnn.evaluate import model_text

    run, full = mixed_run
    best = ckpt.load(run, "best")
    val = np.asarray(model_text(best, split="val").ids)
    train_ids = model_text(best, split="train").ids
    model = best.build_model()
    monkeypatch.setattr(mixture_mod, "FIT_CHARS", len(val) // 3)
    mix, kn = mixture_mod.fit(model, train_ids, val, 3, len(best.vocab))
    assert mix.chars == len(val) - 1
    assert mix.model_loss == pytest.approx(full.model_loss, rel=1e-6) and mix.ngram_loss == pytest.approx(full.ngram_loss)
    # the whole split, at what was fitted on its first third, equals the same mixture read in one piece
    lp = mixture_mod._model_log_probs(model, val)
    lq = np.log(kn.distributions(val, 1))
    tgt = val[1:]
    if mix.kind == "geometric":
        want = geometric_losses(lp, lq, tgt, mix.powers).mean()
    else:
        want = mixed_loss(np.exp(lp[np.arange(len(tgt)), tgt]), np.exp(lq[np.arange(len(tgt)), tgt]), mix.weight)
    assert mix.loss == pytest.approx(want, rel=1e-5)
    assert mix.loss != pytest.approx(full.loss, rel=1e-7)  # fitted on less, so (slightly) other numbers


def test_a_mixture_fitted_for_another_best_checkpoint_is_not_used(mixed_run, tmp_path):
    """A resumed run stopped before it refitted keeps the mixture.json of its older best
    checkpoint: sample and eval warn and read the model alone rather than a stale mixture."""
    import shutil

    run, mix = mixed_run
    best = ckpt.load(run, "best")
    assert mix.fitted_for == f"{best.config.run_id}:{best.meta['step']}"
    copy = tmp_path / "run"
    shutil.copytree(run, copy)
    (copy / MIXTURE_FILE).write_text(json.dumps({**json.loads((run / MIXTURE_FILE).read_text()),
                                                 "fitted_for": f"{best.config.run_id}:7"}))
    r = charnn("sample", copy, "--length", "60", "--seed", "3")
    alone = charnn("sample", copy, "--length", "60", "--seed", "3", "--no-mix")
    assert r.returncode == 0 and "fitted for another best checkpoint (step 7, this one is at step" in r.stderr
    assert r.stdout == alone.stdout
    e = charnn("eval", copy, "--json")
    assert e.returncode == 0 and "mixture" not in json.loads(e.stdout)


def test_a_transformer_mixes_as_the_lstm_does(tmp_path):
    """The mixture reads the model's distributions through evaluate's windows, whatever the
    family (a transformer's readout is tied to its embedding): its losses are the model's own."""
    import charnn

    (tmp_path / "t.txt").write_text(words_text(1), encoding="utf-8")
    run = charnn.train(str(tmp_path / "t.txt"), str(tmp_path / "run"), cell="transformer", layers=1, heads=2, embed=16,
                       block=32, max_steps=40, eval_every=40, seq_len=32, batch_size=8, ngram_mix=3, progress=False)
    mix = run.result.mixture
    best = ckpt.load(tmp_path / "run", "best")
    from charnn.evaluate import model_text

    assert mix.model_loss == pytest.approx(evaluate(best.build_model(), model_text(best, split="val").ids).loss, rel=1e-5)
    assert mix.loss <= min(mix.model_loss, mix.ngram_loss) + 1e-12  # the fit can always take either alone


@pytest.mark.parametrize(
    "change, says",
    [
        ({"weight": "x"}, "weight is not a number"),
        ({"order": 5.5}, "order is not a whole number"),
        ({"order": True}, "order is not a whole number"),
        ({"chars": None}, "chars is not a whole number"),
        ({"loss": [1]}, "loss is not a number"),
        ({"kind": "geometric", "powers": [1e308, 1e308]}, "impossible mixture"),
        ({"kind": "geometric", "powers": [0.5, float("nan")]}, "impossible mixture"),
    ],
)
def test_a_mixture_file_with_a_field_of_the_wrong_kind_is_refused_in_one_line(tmp_path, change, says):
    """Each of these once reached the sampler: a string weight or a fractional order as a
    TypeError's traceback, exponents of 1e308 as non-finite probabilities blamed on the model."""
    m = Mixture(order=5, weight=0.25, chars=100, model_loss=1.5, ngram_loss=1.6, loss=1.4, cross_fitted_loss=1.41)
    (tmp_path / MIXTURE_FILE).write_text(json.dumps({**m.__dict__, **change}))
    with pytest.raises(CharnnError, match=says):
        Mixture.load(tmp_path)
