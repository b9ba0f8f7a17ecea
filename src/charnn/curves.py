"""--tensorboard: a run's curves (losses, bits per character, learning rate, gradient norm,
speed) and its snapshot samples as TensorBoard event files under RUN/tensorboard/.

The records are the ones the trainer writes to metrics.jsonl and samples.jsonl, so the two never
disagree. A resumed run continues the curves without repeated or orphaned steps: its writer
starts with TensorBoard's purge marker at the checkpoint's step + 1, and TensorBoard discards
every older event past it (what a killed process wrote after its last checkpoint). Event files
are append-only records, each with its own checksum: a record cut short by a kill is skipped by
readers, so nothing half-written is ever shown.
"""

from __future__ import annotations

import math
from pathlib import Path

from charnn.errors import CharnnError

FOLDER = "tensorboard"
# metrics.jsonl key -> TensorBoard tag
TAGS = {
    "train_loss": "loss/train",
    "val_loss": "loss/val",
    "val_bpc": "bpc/val",
    "lr": "lr",
    "grad_norm": "grad_norm",
    "chars_per_s": "speed/units_per_s",
}


def require() -> None:
    """Fail before training starts, in one line, when TensorBoard is not installed."""
    try:
        import tensorboard  # noqa: F401
    except ImportError:
        raise CharnnError(
            "--tensorboard needs the tensorboard package: pip install tensorboard (or pip install -e '.[tensorboard]')"
        ) from None


class Curves:
    def __init__(self, run: Path, resumed_at: int | None, chars: bool):
        """resumed_at: the step a resumed run continues from (None: a fresh run). chars: the
        run's units are characters, so its training loss is also drawn in bits per character."""
        require()
        from torch.utils.tensorboard import SummaryWriter

        self.chars = chars
        self.writer = SummaryWriter(str(run / FOLDER), purge_step=None if resumed_at is None else resumed_at + 1)

    def record(self, rec: dict) -> None:
        """One metrics.jsonl record; flushed at once, so that what the curves show never runs
        behind the logs by more than a record."""
        step = rec["step"]
        for key, tag in TAGS.items():
            value = rec.get(key)
            if isinstance(value, (int, float)) and math.isfinite(value):
                self.writer.add_scalar(tag, value, step)
        if self.chars and isinstance(rec.get("train_loss"), float) and math.isfinite(rec["train_loss"]):
            self.writer.add_scalar("bpc/train", rec["train_loss"] / math.log(2), step)
        self.writer.flush()

    def sample(self, step: int, text: str, temperature: float) -> None:
        # TensorBoard renders text as markdown: a code block keeps the sample's lines and spaces
        fence = "````" if "```" in text else "```"
        self.writer.add_text("samples", f"temperature {temperature:g}\n\n{fence}\n{text}\n{fence}", step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
