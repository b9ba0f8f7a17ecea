"""A model that must track quotes, trained once per test session (a few seconds on the CPU)."""

import random
from pathlib import Path


def quote_text(n: int = 60000, seed: int = 0) -> str:
    """Lower-case words outside double quotes, upper-case words inside: to predict a letter's case
    the model must know whether it is inside quotes, often 20+ characters after the quote opened."""
    rng = random.Random(seed)
    out, size = [], 0
    while size < n:
        words = ["".join(rng.choice("abcdefgh") for _ in range(rng.randint(2, 6))) for _ in range(rng.randint(3, 8))]
        piece = f'"{" ".join(words).upper()}" ' if rng.random() < 0.25 else " ".join(words) + " "
        if rng.random() < 0.2:
            piece += "\n"
        out.append(piece)
        size += len(piece)
    return "".join(out)


def train_quote_model(folder: Path) -> tuple[Path, Path]:
    """-> (run directory, a fresh held-out text file in the same style)."""
    from charnn.config import RunConfig, apply_preset
    from charnn.trainer import train

    corpus = folder / "quotes.txt"
    corpus.write_text(quote_text(), encoding="utf-8")
    held_out = folder / "held_out.txt"
    held_out.write_text(quote_text(8000, seed=1), encoding="utf-8")
    cfg = RunConfig()
    apply_preset(cfg, "tiny")
    cfg.data.text = str(corpus)
    cfg.model.layers, cfg.model.hidden, cfg.model.embed, cfg.model.dropout = 1, 8, 16, 0.0
    cfg.train.seq_len, cfg.train.batch_size, cfg.train.lr = 64, 16, 1e-2
    cfg.train.max_steps, cfg.train.eval_every, cfg.train.threads = 400, 100, 1
    run = folder / "run"
    train(cfg, run, progress=False)
    return run, held_out
