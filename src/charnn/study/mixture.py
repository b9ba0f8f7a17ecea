"""A model mixed with a Kneser-Ney n-gram of its own training text.

The recurrent model generalises; the n-gram remembers every long string of the training text
exactly, in seconds of counting. Their errors differ, so a mixture scores lower than either
(measured on tiny Shakespeare in docs/notes.md: 4-5% below the model alone at 60 s and 10
minutes). The n-gram is ``study.ngram.KneserNey`` (modified discounts) fitted on the run's
training split. Two mixtures are fitted and the better kept:

- linear, P = (1 - w) P_model + w P_ngram, w fitted by expectation-maximisation;
- geometric, P proportional to P_model^a P_ngram^b over the symbols (a product of experts: where
  both agree it sharpens, where the n-gram has never seen the context it follows the model),
  (a, b) fitted by Newton's method; it needs both whole next-character distributions.

Both are fitted on a held-out text, the validation split (its first FIT_CHARS characters), as
the best checkpoint is chosen on it. Two or three numbers fitted on 100,000 characters can hardly
flatter the split they were fitted on, and ``cross_fitted`` measures that: each half scored with
the numbers fitted on the other half; the kind with the lower cross-fitted loss is kept.
"""

from __future__ import annotations

import json
import math
from dataclasses import MISSING, asdict, dataclass, fields
from pathlib import Path

import numpy as np
import torch

from charnn.config import NGRAM_MIX_MAX, check_ngram_mix
from charnn.errors import CharnnError
from charnn.files import is_number, write_atomic

MIXTURE_FILE = "mixture.json"
FIT_CHARS = 131_072  # validation characters the mixture is fitted on (both distributions kept: ~70 MB each)
MAX_POWER = 1e3  # a geometric mixture's exponents, fitted or read, stay within +-this (fitted ones are ~0-2)


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


def geometric_losses(lp: np.ndarray, lq: np.ndarray, targets: np.ndarray, powers) -> np.ndarray:
    """Per-target loss (nats) of P ~ P_model^a P_ngram^b: lp, lq (T, V) log-probabilities."""
    s = powers[0] * lp + powers[1] * lq
    s -= s.max(1, keepdims=True)
    return np.log(np.exp(s).sum(1)) - s[np.arange(len(targets)), targets]


def fit_powers(lp: np.ndarray, lq: np.ndarray, targets: np.ndarray, iters: int = 50) -> tuple[float, float]:
    """The (a, b) that maximise the likelihood of targets under P ~ P_model^a P_ngram^b. The
    log-likelihood is concave in (a, b) (a log-linear model), so Newton's method from (0.5, 0.5),
    halving a step that does not raise it, finds its maximum in a few steps."""
    T = len(targets)
    if T == 0:
        raise CharnnError("no characters to fit the mixture on")
    at = np.arange(T)
    fy = np.stack([lp[at, targets], lq[at, targets]], 1).sum(0)  # the features' sums at the targets
    theta = np.array([0.5, 0.5])
    loss = geometric_losses(lp, lq, targets, theta).sum()
    for _ in range(iters):
        s = theta[0] * lp + theta[1] * lq
        s -= s.max(1, keepdims=True)
        q = np.exp(s)
        q /= q.sum(1, keepdims=True)
        e1, e2 = (q * lp).sum(1), (q * lq).sum(1)  # expected features under the mixture
        grad = fy - np.array([e1.sum(), e2.sum()])
        c11 = ((q * lp * lp).sum(1) - e1 * e1).sum()
        c12 = ((q * lp * lq).sum(1) - e1 * e2).sum()
        c22 = ((q * lq * lq).sum(1) - e2 * e2).sum()
        step = np.linalg.solve(np.array([[c11, c12], [c12, c22]]) + 1e-9 * np.eye(2), grad)
        for _halving in range(30):
            new = geometric_losses(lp, lq, targets, theta + step).sum()
            if new <= loss:
                break
            step /= 2
        else:
            break
        theta, done = theta + step, loss - new < 1e-9 * T
        loss = new
        if done:
            break
    return float(theta[0]), float(theta[1])


def cross_fitted_powers(lp: np.ndarray, lq: np.ndarray, targets: np.ndarray) -> float:
    """``cross_fitted`` for the geometric mixture."""
    h = len(targets) // 2
    if h < 1:
        return float(geometric_losses(lp, lq, targets, fit_powers(lp, lq, targets)).mean())
    a = geometric_losses(lp[:h], lq[:h], targets[:h], fit_powers(lp[h:], lq[h:], targets[h:])).sum()
    b = geometric_losses(lp[h:], lq[h:], targets[h:], fit_powers(lp[:h], lq[:h], targets[:h])).sum()
    return float((a + b) / len(targets))


@dataclass
class Mixture:
    """What a run's mixture is and how it scored on the text it was fitted on (the validation
    split); losses in nats per character."""

    order: int
    weight: float  # linear: the n-gram's weight w (geometric: the linear one's, for the record)
    chars: int  # characters scored
    model_loss: float  # the model alone
    ngram_loss: float  # the n-gram alone
    loss: float  # the mixture
    cross_fitted_loss: float  # each half at what was fitted on the other half (of the first FIT_CHARS)
    kind: str = "linear"  # or "geometric" (files written before 2026-12-07 are linear)
    powers: tuple[float, float] = (1.0, 0.0)  # geometric: P ~ P_model^a P_ngram^b
    fitted_for: str = ""  # "RUN_ID:STEP" of the best checkpoint it was fitted for ("": before 2026-12-07)

    def report(self, loss: float) -> dict:
        """What eval --json, serve's /eval and the API's Score say of this mixture scoring a text at `loss`."""
        return {"order": self.order, "kind": self.kind, "weight": self.weight, "powers": list(self.powers), "loss": loss}

    def describe(self) -> str:
        if self.kind == "geometric":
            a, b = self.powers
            return f"P_model^{a:.2f} x P_{self.order}-gram^{b:.2f}, normalised"
        return f"weight {self.weight:.3f}"

    def log_probs(self, model_logits: torch.Tensor, q: np.ndarray) -> torch.Tensor:
        """The mixture's log-probabilities (..., V) from the model's logits and the n-gram's
        distributions q (..., V) at the same positions."""
        lp = torch.log_softmax(model_logits.detach().double().cpu(), -1)
        q_ = torch.from_numpy(np.asarray(q, dtype=np.float64))
        if self.kind == "geometric":
            return torch.log_softmax(self.powers[0] * lp + self.powers[1] * torch.log(q_), -1)
        return torch.log((1 - self.weight) * torch.exp(lp) + self.weight * q_)

    def save(self, run_dir: Path) -> None:
        write_atomic(Path(run_dir) / MIXTURE_FILE, (json.dumps(asdict(self), indent=2) + "\n").encode())

    @classmethod
    def load(cls, run_dir: Path) -> Mixture | None:
        path = Path(run_dir) / MIXTURE_FILE
        if not path.exists():
            return None
        try:
            d = json.loads(path.read_text(encoding="utf-8"))
            later = {f.name for f in fields(cls) if f.default is not MISSING}  # added since the first files
            m = cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d or k not in later})
            m.powers = (float(m.powers[0]), float(m.powers[1]))
        except (OSError, ValueError, KeyError, TypeError, IndexError) as e:
            raise CharnnError(f"{path} is not a charnn mixture file ({e}); delete it to use the model alone") from None
        value = {k: getattr(m, k) for k in ("order", "chars", *_REAL_FIELDS)}
        wrong = [
            f"{k} is not a whole number" for k in ("order", "chars") if not (is_number(value[k]) and isinstance(value[k], int))
        ]
        wrong += [f"{k} is not a number" for k in _REAL_FIELDS if not is_number(value[k])]
        if wrong:
            raise CharnnError(f"{path} is not a charnn mixture file ({wrong[0]}); delete it to use the model alone")
        good = m.kind in ("linear", "geometric") and all(abs(x) <= MAX_POWER for x in m.powers) and isinstance(m.fitted_for, str)
        if not (good and 1 <= m.order <= NGRAM_MIX_MAX and 0 <= m.weight <= 1):
            raise CharnnError(
                f"{path} holds an impossible mixture (order {m.order}, {m.kind}, weight {m.weight}, powers {m.powers})"
            )
        return m


_REAL_FIELDS = ("weight", "model_loss", "ngram_loss", "loss", "cross_fitted_loss")


def _contexts(ids: np.ndarray, pos: np.ndarray, length: int) -> tuple[np.ndarray, np.ndarray]:
    """The `length` ids up to and including each position in pos (any shape) as (P, length) rows,
    zero-padded before the text's start, and how many of each row are text."""
    pos = np.clip(np.asarray(pos, dtype=np.int64).ravel(), 0, len(ids) - 1)
    padded = np.concatenate([np.zeros(length, dtype=np.int64), np.asarray(ids, dtype=np.int64)])
    rows = np.lib.stride_tricks.sliding_window_view(padded, length)[pos + 1] if length else np.zeros((len(pos), 0), np.int64)
    return rows, np.minimum(pos + 1, length)


def score(model, ngram, mixture: Mixture, ids: np.ndarray) -> np.ndarray:
    """Per-character losses (N,) of the mixture predicting ids[t + 1] after ids[..t], read as
    ``evaluate.char_losses`` reads the model (NaN at the last position)."""
    from charnn.evaluate import char_losses

    L = max(ngram.order - 1, 0)

    def mixed(logits, pos, _scored):
        rows, have = _contexts(ids, pos, L)
        q = ngram.next_distributions(rows, have).reshape(*logits.shape)
        return mixture.log_probs(logits, q).to(logits.device)

    return char_losses(model, ids, adjust=mixed)


def _model_log_probs(model, ids: np.ndarray) -> np.ndarray:
    """(N-1, V): row t the model's log-probabilities for ids[t + 1] after ids[..t]."""
    from charnn.evaluate import char_losses

    out: list[np.ndarray] = []  # (N, V) once the first window says V

    def keep(logits, pos, scored):
        if not out:
            out.append(np.zeros((len(ids), logits.shape[-1])))
        out[0][pos[scored]] = torch.log_softmax(logits, -1).cpu().numpy()[scored]
        return logits

    char_losses(model, ids, adjust=keep)
    return out[0][:-1]


def fit(model, train_ids: np.ndarray, held_out: np.ndarray, order: int, vocab_size: int) -> tuple[Mixture, object]:
    """The n-gram of order `order` on train_ids, and both mixtures fitted on held_out's first
    FIT_CHARS characters; the one whose cross-fitted loss is lower is kept -> (Mixture, n-gram).
    Its losses are over the whole of held_out."""
    from charnn.evaluate import char_losses
    from charnn.study.ngram import KneserNey

    check_ngram_mix(order)
    if len(held_out) < 3:
        raise CharnnError("the validation split is too short to fit the n-gram's weight on (3 characters at least)")
    held_out = np.asarray(held_out, dtype=np.int64)
    ngram = KneserNey(order, vocab_size, modified=True).fit(np.asarray(train_ids))
    part = held_out[: FIT_CHARS + 1]
    lp, lq = _model_log_probs(model, part), np.log(ngram.distributions(part, 1))
    tgt = part[1:]
    at = np.arange(len(tgt))
    pm, pn = np.exp(lp[at, tgt]), np.exp(lq[at, tgt])
    w = fit_weight(pm, pn)
    powers = fit_powers(lp, lq, tgt)
    linear_x, geometric_x = cross_fitted(pm, pn), cross_fitted_powers(lp, lq, tgt)
    mix = Mixture(
        order=order,
        weight=w,
        chars=len(held_out) - 1,
        model_loss=float(-np.log(pm).mean()),
        ngram_loss=float(-np.log(pn).mean()),
        loss=mixed_loss(pm, pn, w),
        cross_fitted_loss=linear_x,
    )
    if geometric_x < linear_x and all(abs(x) <= MAX_POWER for x in powers):  # (beyond: degenerate, and unreadable)
        mix.kind, mix.powers, mix.cross_fitted_loss = "geometric", powers, geometric_x
        mix.loss = float(geometric_losses(lp, lq, tgt, powers).mean())
    if len(held_out) > len(part):  # the rest of the split too
        mix.model_loss = float(np.nanmean(char_losses(model, held_out)))
        mix.ngram_loss = ngram.loss(held_out, 1)
        mix.loss = float(np.nanmean(score(model, ngram, mix, held_out)))
    if not all(math.isfinite(v) for v in (mix.loss, mix.model_loss, mix.ngram_loss)):
        raise CharnnError("the mixture's loss is not finite: the model gives a character zero probability")
    return mix, ngram


def fit_run(run_dir: Path) -> tuple[Mixture, Sampler] | None:
    """--ngram-mix, once a run has ended: its best checkpoint mixed with an n-gram of its training
    split (the order its last checkpoint's settings give), fitted on its validation split; kept in
    RUN/mixture.json and logged to metrics.jsonl. -> (the mixture, a Sampler of it: the n-gram
    already counted), or None for a run without it."""
    from charnn import checkpoint as ckpt
    from charnn.devices import pick_device
    from charnn.evaluate import model_text
    from charnn.log import warn

    run_dir = Path(run_dir)
    order = ckpt.load(run_dir, "last").config.train.ngram_mix
    if not order:  # a run resumed without it: no mixture fitted for an older best checkpoint stays behind
        (run_dir / MIXTURE_FILE).unlink(missing_ok=True)
        return None
    best = ckpt.load(run_dir, "best")
    val = model_text(best, split="val").ids
    if len(val) < 3:
        warn("--ngram-mix: the validation split is too short to fit the n-gram's weight on; no mixture")
        return None
    model = best.build_model(pick_device(best.config.train.device))
    mix, ngram = fit(model, model_text(best, split="train").ids, val, order, len(best.vocab))
    mix.fitted_for = checkpoint_identity(best)
    mix.save(run_dir)
    with open(run_dir / "metrics.jsonl", "a", encoding="utf-8") as f:
        f.write(json.dumps({"step": best.meta.get("step"), "mixture": asdict(mix)}) + "\n")
    return mix, Sampler(ngram, mix)


class Sampler:
    """Sampling from a run's mixture: the model's next-character logits turned into the
    mixture's log-probabilities, given what each sample has read so far (its prime and the
    characters drawn), so that temperature, top-k and top-p then apply to the mixture."""

    def __init__(self, ngram, mixture: Mixture):
        self.ngram, self.mixture = ngram, mixture
        self.context = max(ngram.order - 1, 0)

    def scored(self, model, ids: np.ndarray) -> dict:
        """The mixture scoring ids (its loss in nats per character over ids[1:]), as ``Mixture.report``:
        what eval, serve's /eval and the API's score report."""
        return self.mixture.report(float(np.nanmean(score(model, self.ngram, self.mixture, np.asarray(ids, dtype=np.int64)))))

    def mix(self, logits: torch.Tensor, history: np.ndarray) -> torch.Tensor:
        """logits (num, V), history (num, P) ids -> the mixture's log-probabilities (num, V)."""
        ctx = history[:, history.shape[1] - min(self.context, history.shape[1]) :]
        q = self.ngram.next_distributions(ctx)  # every sample's context in one batch
        return self.mixture.log_probs(logits, q).to(logits.device)


def sampler_for(loaded, run_dir: Path) -> Sampler | None:
    """The Sampler of a run trained with --ngram-mix (None without RUN/mixture.json); its n-gram is
    counted again from the run's training split."""
    mix = _load_for(loaded, run_dir)
    ngram = run_ngram(loaded, mix.order) if mix is not None else None
    return Sampler(ngram, mix) if ngram is not None and mix is not None else None


def about(loaded, run_dir: Path) -> dict | None:
    """What RUN/mixture.json says (order, kind, describe, loss), when it was fitted for this best
    checkpoint; None otherwise, quietly (serve lists it; nothing is counted)."""
    from charnn import checkpoint as ckpt

    if loaded.path is None or Path(loaded.path).name != ckpt.BEST:
        return None
    try:
        m = Mixture.load(run_dir) if Path(run_dir).is_dir() else None
    except CharnnError:
        return None
    if m is None or not _fitted_for(m, loaded):
        return None
    return {"order": m.order, "kind": m.kind, "describe": m.describe(), "loss": m.loss}


def checkpoint_identity(loaded) -> str:
    """RUN_ID:STEP, what a mixture's fitted_for names: the checkpoint it was fitted for."""
    return f"{loaded.config.run_id}:{loaded.meta.get('step')}"


def _fitted_for(mix: Mixture, loaded) -> bool:
    """Whether the mixture was fitted for this checkpoint (files from before 2026-12-07 name none)."""
    return not mix.fitted_for or mix.fitted_for == checkpoint_identity(loaded)


def _load_for(loaded, run_dir: Path) -> Mixture | None:
    """RUN/mixture.json when it was fitted for this best checkpoint; None, with a warning, when
    the best checkpoint has changed since (a resumed run that was stopped before it refitted)."""
    from charnn.log import warn

    mix = Mixture.load(run_dir) if Path(run_dir).is_dir() else None
    if mix is not None and not _fitted_for(mix, loaded):
        warn(
            f"the run's n-gram mixture was fitted for another best checkpoint (step {mix.fitted_for.split(':')[-1]}, "
            f"this one is at step {loaded.meta.get('step')}); using the model alone (charnn train --resume --out "
            f"{run_dir} fits it again once it ends)"
        )
        return None
    return mix


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
