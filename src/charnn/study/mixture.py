"""A model mixed with a Kneser-Ney n-gram of its own training text: P = (1 - w) P_model + w P_ngram.

The recurrent model generalises; the n-gram remembers every long string of the training text
exactly, in seconds of counting. Their errors differ, so a linear mixture scores lower than either
(measured on tiny Shakespeare in docs/notes.md: 3-5% below the model alone at 60 s and 10 minutes).
The n-gram is ``study.ngram.KneserNey`` (modified discounts) fitted on the run's training split.

The weight w is fitted by expectation-maximisation on a held-out text: the validation split, as
the best checkpoint is chosen on it. A single weight fitted on 100,000 characters can hardly
flatter the split it was fitted on, and ``cross_fitted`` measures that: each half of the split is
scored with the weight fitted on the other half.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch

from charnn.errors import CharnnError
from charnn.files import write_atomic

MIXTURE_FILE = "mixture.json"
MAX_ORDER = 30  # as charnn ngram


def fit_weight(p_model: np.ndarray, p_ngram: np.ndarray, iters: int = 100) -> float:
    """The weight w in [0, 1] that maximises sum log((1 - w) p_model + w p_ngram): the
    expectation-maximisation update w <- mean(w p_ngram / mixture), which never lowers the
    likelihood, from w = 0.5 until it moves less than 1e-6; then 0 or 1 if either scores better."""
    pm, pn = np.asarray(p_model, dtype=np.float64), np.asarray(p_ngram, dtype=np.float64)
    if len(pm) == 0:
        raise CharnnError("no characters to fit the n-gram's weight on")
    w = 0.5
    for _ in range(iters):
        new = float(np.mean(w * pn / ((1 - w) * pm + w * pn)))
        if abs(new - w) < 1e-6:
            w = new
            break
        w = new
    # near an end the updates creep (the likelihood is flat there): either model alone may be best
    return min((w, 0.0, 1.0), key=lambda x: mixed_loss(pm, pn, x))


def mixed_loss(p_model: np.ndarray, p_ngram: np.ndarray, w: float) -> float:
    """Mean negative log-probability (nats) of the mixture with weight w."""
    return float(-np.log((1 - w) * np.asarray(p_model) + w * np.asarray(p_ngram)).mean())


def cross_fitted(p_model: np.ndarray, p_ngram: np.ndarray) -> float:
    """The mixture's loss with each half of the text scored at the weight fitted on the other
    half: a loss whose weight never saw the characters it scores."""
    h = len(p_model) // 2
    if h < 1:
        return mixed_loss(p_model, p_ngram, fit_weight(p_model, p_ngram))
    a = mixed_loss(p_model[:h], p_ngram[:h], fit_weight(p_model[h:], p_ngram[h:]))
    b = mixed_loss(p_model[h:], p_ngram[h:], fit_weight(p_model[:h], p_ngram[:h]))
    return (a * h + b * (len(p_model) - h)) / len(p_model)


@dataclass
class Mixture:
    """What a run's mixture is and how it scored on the text its weight was fitted on."""

    order: int
    weight: float
    chars: int  # characters scored
    model_loss: float  # nats per character, the model alone
    ngram_loss: float  # ... the n-gram alone
    loss: float  # ... the mixture at `weight`
    cross_fitted_loss: float  # ... each half at the weight fitted on the other half

    def save(self, run_dir: Path) -> None:
        write_atomic(Path(run_dir) / MIXTURE_FILE, (json.dumps(asdict(self), indent=2) + "\n").encode())

    @classmethod
    def load(cls, run_dir: Path) -> Mixture | None:
        path = Path(run_dir) / MIXTURE_FILE
        if not path.exists():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            m = cls(**{k: d[k] for k in cls.__dataclass_fields__})
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise CharnnError(f"{path} is not a charnn mixture file ({e}); delete it to use the model alone") from None
        if not (1 <= m.order <= MAX_ORDER and 0 <= m.weight <= 1):
            raise CharnnError(f"{path} holds an impossible mixture (order {m.order}, weight {m.weight})")
        return m


def check_order(order: int) -> None:
    if not (isinstance(order, int) and 0 <= order <= MAX_ORDER):
        raise CharnnError(f"--ngram-mix must be an n-gram order from 1 to {MAX_ORDER} (0: off), got {order}")


def probabilities(model, ngram, ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(P_model, P_ngram) of ids[t] after ids[..t-1] for t = 1..N-1, each read as ``evaluate``
    reads the text (the n-gram with the same characters before it as the model)."""
    from charnn.evaluate import char_losses

    ids = np.asarray(ids, dtype=np.int64)
    p_model = np.exp(-char_losses(model, ids)[:-1])
    p_ngram = ngram.probs_of(ids, 1)
    return p_model, p_ngram


def fit(model, train_ids: np.ndarray, held_out: np.ndarray, order: int, vocab_size: int) -> tuple[Mixture, object]:
    """The n-gram of order `order` on train_ids, and its weight fitted on held_out -> (Mixture, n-gram)."""
    from charnn.study.ngram import KneserNey

    check_order(order)
    if len(held_out) < 3:
        raise CharnnError("the validation split is too short to fit the n-gram's weight on (3 characters at least)")
    ngram = KneserNey(order, vocab_size, modified=True).fit(np.asarray(train_ids))
    pm, pn = probabilities(model, ngram, held_out)
    w = fit_weight(pm, pn)
    mix = Mixture(
        order=order,
        weight=w,
        chars=len(pm),
        model_loss=float(-np.log(pm).mean()),
        ngram_loss=float(-np.log(pn).mean()),
        loss=mixed_loss(pm, pn, w),
        cross_fitted_loss=cross_fitted(pm, pn),
    )
    if not all(math.isfinite(v) for v in (mix.loss, mix.model_loss, mix.ngram_loss)):
        raise CharnnError("the mixture's loss is not finite: the model gives a character zero probability")
    return mix, ngram


def fit_run(run_dir: Path) -> Mixture | None:
    """--ngram-mix, once a run has ended: its best checkpoint mixed with an n-gram of its training
    split (the order its last checkpoint's settings give), the weight fitted on its validation
    split; kept in RUN/mixture.json and logged to metrics.jsonl. None for a run without it."""
    from charnn import checkpoint as ckpt
    from charnn.devices import pick_device
    from charnn.evaluate import model_text
    from charnn.log import warn

    run_dir = Path(run_dir)
    order = ckpt.load(run_dir, "last").config.train.ngram_mix
    if not order:  # a run resumed without it: no weight fitted for an older best checkpoint stays behind
        (run_dir / MIXTURE_FILE).unlink(missing_ok=True)
        return None
    best = ckpt.load(run_dir, "best")
    val = model_text(best, split="val").ids
    if len(val) < 3:
        warn("--ngram-mix: the validation split is too short to fit the n-gram's weight on; no mixture")
        return None
    model = best.build_model(pick_device(best.config.train.device))
    mix, _ = fit(model, model_text(best, split="train").ids, val, order, len(best.vocab))
    mix.save(run_dir)
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": best.meta.get("step"), "mixture": asdict(mix)}) + "\n")
    return mix


def score_run_text(loaded, model, run_dir: Path, ids: np.ndarray) -> tuple[Mixture, float] | None:
    """A run's mixture (RUN/mixture.json, from --ngram-mix) scoring ids: (the mixture, its loss in
    nats per character over ids[1:]) at the weight the run fitted; None for a run without one. The
    n-gram is counted again from the run's training split, which must still be where it was."""
    mix = Mixture.load(run_dir) if Path(run_dir).is_dir() else None
    ngram = run_ngram(loaded, mix.order) if mix is not None else None
    if mix is None or ngram is None:
        return None
    pm, pn = probabilities(model, ngram, ids)
    return mix, mixed_loss(pm, pn, mix.weight)


class Sampler:
    """Sampling from a run's mixture: the model's next-character logits turned into the
    mixture's log-probabilities, given what each sample has read so far (its prime and the
    characters drawn), so that temperature, top-k and top-p then apply to the mixture."""

    def __init__(self, ngram, weight: float):
        self.ngram, self.weight = ngram, float(weight)
        self.context = max(ngram.order - 1, 0)

    def mix(self, logits: torch.Tensor, history: np.ndarray) -> torch.Tensor:
        """logits (num, V), history (num, P) ids -> log((1 - w) softmax(logits) + w P_ngram), (num, V)."""
        p = torch.softmax(logits.detach().double().cpu(), -1)
        ctx = history[:, history.shape[1] - min(self.context, history.shape[1]) :]
        q = self.ngram.next_distributions(ctx)  # every sample's context in one batch
        out = torch.log((1 - self.weight) * p + self.weight * torch.from_numpy(q))
        return out.to(logits.device)


def sampler_for(loaded, run_dir: Path) -> Sampler | None:
    """The Sampler of a run trained with --ngram-mix (None without RUN/mixture.json); its n-gram is
    counted again from the run's training split."""
    mix = Mixture.load(run_dir) if Path(run_dir).is_dir() else None
    ngram = run_ngram(loaded, mix.order) if mix is not None else None
    return Sampler(ngram, mix.weight) if ngram is not None and mix is not None else None


def run_ngram(loaded, order: int):
    """The Kneser-Ney n-gram a run's mixture uses, counted again from its training split (counting
    takes seconds, so it is not stored); None, with a warning, when the text is no longer where
    the run read it: the model alone is still whole."""
    from charnn.evaluate import model_text
    from charnn.log import warn
    from charnn.study.ngram import KneserNey

    try:
        ids = model_text(loaded, split="train").ids
    except CharnnError as e:
        warn(f"the run's n-gram mixture (--ngram-mix) needs its training text; using the model alone ({e})")
        return None
    return KneserNey(order, len(loaded.vocab), modified=True).fit(np.asarray(ids))
