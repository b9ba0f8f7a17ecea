"""The blog's worked example, computed for real: a tiny RNN learns to spell one word.

"hello" has the vocabulary h, e, l, o (its letters in order of first appearance). The network reads
one letter at a time as a one-hot vector and, at each step, gives a score to every letter of the
vocabulary for the letter that comes next; the softmax of the scores is its probability. Training
nudges the scores of the right letters up and the others down. The two "l"s of "hello" have
different targets ("l" then "o"): the input alone cannot tell them apart, only the hidden state,
which carries what came before.

    h_t = tanh(W_xh x_t + W_hh h_{t-1} + b_h)      y_t = W_hy h_t + b_y      p_t = softmax(y_t)
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from charnn.errors import CharnnError


@dataclass
class Pass:
    """One reading of the word: per step the hidden state, the scores and the probabilities."""

    hidden: list[list[float]]  # (T, H)
    scores: list[list[float]]  # (T, V)
    probs: list[list[float]]  # (T, V)
    losses: list[float]  # (T,) -log p(target)

    @property
    def loss(self) -> float:
        return sum(self.losses) / len(self.losses)


class TinyRNN(torch.nn.Module):
    def __init__(self, vocab: int, hidden: int, seed: int):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w_xh = torch.nn.Parameter(torch.randn(hidden, vocab, generator=g) * 0.5)
        self.w_hh = torch.nn.Parameter(torch.randn(hidden, hidden, generator=g) * 0.5)
        self.b_h = torch.nn.Parameter(torch.zeros(hidden))
        self.w_hy = torch.nn.Parameter(torch.randn(vocab, hidden, generator=g) * 0.5)
        self.b_y = torch.nn.Parameter(torch.zeros(vocab))

    def forward(self, ids: torch.Tensor):
        """ids (T,) -> hidden (T, H), scores (T, V)."""
        h = torch.zeros(self.w_hh.shape[0])
        hs, ys = [], []
        for i in ids.tolist():
            x = torch.nn.functional.one_hot(torch.tensor(i), self.w_xh.shape[1]).float()
            h = torch.tanh(self.w_xh @ x + self.w_hh @ h + self.b_h)
            hs.append(h)
            ys.append(self.w_hy @ h + self.b_y)
        return torch.stack(hs), torch.stack(ys)


@dataclass
class Lesson:
    word: str
    vocab: list[str]
    inputs: list[str]
    targets: list[str]
    before: Pass
    after_one_step: Pass
    final: Pass
    spelled_at: int | None  # the first update after which the most likely letters spelled the word
    curve: list[float]  # the loss after each update
    lr: float
    init: dict  # the initial weights (w_xh, w_hh, b_h, w_hy, b_y) as lists

    @property
    def argmax(self) -> str:
        return "".join(self.vocab[max(range(len(p)), key=p.__getitem__)] for p in self.final.probs)

    def to_dict(self) -> dict:
        r = lambda rows: [[round(v, 6) for v in row] for row in rows]  # noqa: E731
        return {
            "word": self.word,
            "vocab": self.vocab,
            "inputs": self.inputs,
            "targets": self.targets,
            "before": {
                "probs": r(self.before.probs),
                "hidden": r(self.before.hidden),
                "scores": r(self.before.scores),
                "loss": self.before.loss,
            },
            "after_one_step": {
                "probs": r(self.after_one_step.probs),
                "scores": r(self.after_one_step.scores),
                "loss": self.after_one_step.loss,
            },
            "final": {
                "argmax": self.argmax,
                "loss": self.final.loss,
                "steps": len(self.curve),
                "spelled_at": self.spelled_at,
                "hidden": r(self.final.hidden),
            },
            "curve": [round(v, 6) for v in self.curve],
            "lr": self.lr,
        }


def _read(model: TinyRNN, ids: torch.Tensor, targets: torch.Tensor) -> Pass:
    with torch.no_grad():
        h, y = model(ids)
        logp = torch.log_softmax(y, -1)
    return Pass(h.tolist(), y.tolist(), logp.exp().tolist(), (-logp[torch.arange(len(targets)), targets]).tolist())


def teach(word: str = "hello", hidden: int = 3, steps: int = 300, lr: float = 0.5, seed: int = 0) -> Lesson:
    """Read the word, take one gradient step (plain SGD on the mean loss over the word), then go on
    to `steps` updates in all, noting after which one the most likely next letters spell the word."""
    if not 2 <= len(word) <= 40:
        raise CharnnError(f"--word must have 2 to 40 characters, got {len(word)}")
    if not 1 <= hidden <= 64:
        raise CharnnError(f"--hidden must be from 1 to 64, got {hidden}")
    if not 0 < lr <= 10:
        raise CharnnError(f"--lr must be in (0, 10], got {lr}")
    if not 1 <= steps <= 100_000:
        raise CharnnError(f"--steps must be from 1 to 100000, got {steps}")
    vocab = list(dict.fromkeys(word))  # letters in order of first appearance: h, e, l, o
    ids = torch.tensor([vocab.index(c) for c in word[:-1]])
    targets = torch.tensor([vocab.index(c) for c in word[1:]])
    model = TinyRNN(len(vocab), hidden, seed)
    init = {k: v.detach().tolist() for k, v in model.state_dict().items()}
    opt = torch.optim.SGD(model.parameters(), lr=lr)

    def update() -> float:
        _, y = model(ids)
        loss = torch.nn.functional.cross_entropy(y, targets)
        opt.zero_grad()
        loss.backward()
        opt.step()
        return float(loss.detach())

    def spelled(p: Pass) -> bool:
        return all(max(range(len(r)), key=r.__getitem__) == t for r, t in zip(p.probs, targets.tolist()))

    before = _read(model, ids, targets)
    update()
    after = _read(model, ids, targets)
    curve, first = [after.loss], (1 if spelled(after) else None)
    for k in range(2, steps + 1):
        update()
        now = _read(model, ids, targets)
        curve.append(now.loss)
        if first is None and spelled(now):
            first = k
    return Lesson(word, vocab, list(word[:-1]), list(word[1:]), before, after, _read(model, ids, targets), first, curve, lr, init)
