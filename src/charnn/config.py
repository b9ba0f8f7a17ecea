"""One dataclass per component, each owning its defaults, all round-tripping through JSON.

The resolved configuration is written beside every run (``config.json``) and inside every
checkpoint, so a checkpoint alone is enough to rebuild the model.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field, fields

from charnn.errors import CharnnError

RECURRENT = ("lstm", "gru", "rnn")
CELLS = (*RECURRENT, "transformer")
OPTIMIZERS = ("adamw", "rmsprop", "muon")
SCHEDULES = ("cosine", "epoch-decay", "constant")
DEFAULT_BPE_VOCAB = 1024
MAX_BPE_VOCAB = 65536  # token ids are stored as uint16
MAX_DOCUMENT = 10_000_000  # --max-document's bound: a "document" longer than this is a whole corpus
MAX_NS_STEPS = 10  # Muon's iterations: five already bring the update's singular values within 0.7-1.2
MAX_SEED = 2**63 - 1  # torch.manual_seed takes a signed 64-bit seed


# the fields whose command-line flag is not the field's name with dashes
FLAGS = {"checkpoint_seconds": "--checkpoint-every"}


def flag(name: str) -> str:
    """The command-line flag that sets the config field `name` (for messages)."""
    return FLAGS.get(name, "--" + name.replace("_", "-"))


@dataclass
class ModelConfig:
    cell: str = "lstm"
    layers: int = 1
    hidden: int = 384
    embed: int = 64  # learned embedding width (char-rnn used one-hot; an embedding is cheaper)
    dropout: float = 0.0
    # Regularisers that keep the fused recurrent kernels (AWD-LSTM's, Merity et al. 2017); off at 0:
    weight_drop: float = 0.0  # DropConnect on the hidden-to-hidden weights, one mask per batch
    embed_drop: float = 0.0  # drop whole symbols' embeddings, one mask per batch
    variational: float = 0.0  # dropout with one mask per sequence on the recurrence's input and output
    vocab_size: int = 0  # filled in from the data
    # Labels the model is conditioned on (--label; filled in from the data): each input id is
    # then char + vocab_size * label, and a label's embedding is added to every character's
    # (charnn.model.inputs).
    labels: int = 0
    # A transformer's (cell "transformer"): attention heads and the context length. Its width is
    # `embed` (hidden is set equal to it: the residual stream is what its layers carry).
    heads: int = 0
    block: int = 0

    @property
    def recurrent(self) -> bool:
        return self.cell in RECURRENT

    @property
    def units(self) -> int:
        """How many units each layer offers the analyses (find, ablate, --clamp, the cells page): a
        recurrent layer's cells, or a transformer block's MLP neurons (4 x its width). The MLP
        neurons are the transformer's units because they are its only privileged basis: each
        passes through its own nonlinearity (GELU), while any rotation of the residual stream's
        dimensions, or of a head's, leaves the model's function unchanged, so a single one of
        those dimensions means nothing by itself. Heads are ablated whole (inspect ablate --heads)."""
        return self.hidden if self.recurrent else 4 * self.embed

    def describe(self) -> str:
        """The model's shape in a few words: 'lstm 1x384', 'transformer 4x128, 4 heads, block 64'."""
        if self.recurrent:
            return f"{self.cell} {self.layers}x{self.hidden}"
        return f"transformer {self.layers}x{self.embed}, {self.heads} heads, block {self.block}"

    def validate(self) -> None:
        if self.cell not in CELLS:
            raise CharnnError(f"unknown cell {self.cell!r}: choose one of {', '.join(CELLS)}")
        _positive("layers", self.layers)
        _positive("hidden", self.hidden)
        _positive("embed", self.embed)
        for name in ("dropout", "weight_drop", "embed_drop", "variational"):
            if not 0.0 <= getattr(self, name) < 1.0:
                raise CharnnError(f"{flag(name)} must be in [0, 1), got {getattr(self, name)}")
        if self.recurrent:
            if self.heads or self.block:
                raise CharnnError(
                    f"--heads and --block are a transformer's settings; --cell {self.cell} has neither: "
                    f"drop them, or use --cell transformer"
                )
            return
        _positive("heads", self.heads)
        _positive("block", self.block)
        if self.embed % self.heads:
            raise CharnnError(
                f"--heads {self.heads} does not divide the transformer's width --embed {self.embed}: "
                f"choose a width that is a multiple of the heads (e.g. --embed "
                f"{-(-self.embed // self.heads) * self.heads})"
            )
        used = [flag(n) for n in ("weight_drop", "embed_drop", "variational") if getattr(self, n)]
        if used:
            raise CharnnError(
                f"{', '.join(used)}: for recurrent cells only (AWD-LSTM's regularisers of the "
                f"recurrence); a transformer takes --dropout"
            )
        if self.hidden != self.embed:
            raise CharnnError(
                f"a transformer's width is --embed ({self.embed}); --hidden ({self.hidden}) is a recurrent cell's: drop it"
            )

    def buildable(self) -> "ModelConfig":
        """This configuration, checked, with its vocabulary size set: what a model is built from."""
        self.validate()
        if self.vocab_size < 1:
            raise ValueError("ModelConfig.vocab_size must be set from the data")
        return self

    def fit_vocab(self, vocab_size: int) -> float:
        """Set the vocabulary size and cap the embedding at it; return the embedding's init scale.

        The embedding feeds only the first layer's input product, so what the two learn
        together is one map from V symbols to the gates, of rank at most V: an embedding wider
        than the vocabulary represents nothing more, and costs a (batch x E x gates) product
        forward and two backward every step (with E = 512 and V = 65 at 2x512, a fifth of the
        arithmetic). nn.LSTM draws its input weights at a scale set by the hidden size, not the
        input width, so a narrower embedding would start with a weaker input signal (8x less
        variance at 512 -> 65) and learn visibly slower at first; the returned standard
        deviation, sqrt(asked / V), makes it start as strong as the asked width would.
        """
        self.vocab_size = vocab_size
        if self.recurrent and self.embed > vocab_size:  # a transformer's embedding is its width
            scale = (self.embed / vocab_size) ** 0.5
            self.embed = vocab_size
            return scale
        return 1.0


@dataclass
class DataConfig:
    text: str = "stdlib"  # a file, a folder or a built-in corpus name
    include: str = "*"  # glob for files inside a folder
    unit: str = "char"  # "char" (Unicode code points), "bytes", or "bpe" (byte-pair tokens)
    bpe_vocab: int = 0  # with unit "bpe": tokens to learn from the training split (0: 1024); flag --bpe-vocab
    encoding_errors: str = "strict"  # or "replace"
    split: tuple[float, float, float] = (0.9, 0.05, 0.05)
    # (a folder's files are read in an order shuffled by the run's seed, TrainConfig.seed)
    documents: str = ""  # "", "line", "blank" or a regex matching each document's start (charnn.documents)
    label: str = ""  # documents: a regex whose first group, first match inside a document, is its label
    labels_file: str = ""  # documents: or a file with one label a line, one per document
    max_document: int = 100_000  # documents: the longest a run takes, in characters (a longer one is refused)

    def validate(self) -> None:
        if self.unit not in ("char", "bytes", "bpe"):
            raise CharnnError(f"--unit must be 'char', 'bytes' or 'bpe', got {self.unit!r}")
        if self.unit == "bpe":
            if self.bpe_vocab and not 2 <= self.bpe_vocab <= MAX_BPE_VOCAB:  # 0: the default (complete())
                raise CharnnError(f"--bpe-vocab must be between 2 and {MAX_BPE_VOCAB:,}, got {self.bpe_vocab}")
        elif self.bpe_vocab:
            raise CharnnError(
                f"--bpe-vocab is for --unit bpe (tokens); with --unit {self.unit} the vocabulary is "
                f"the text's own {'characters' if self.unit == 'char' else 'bytes'}"
            )
        if self.encoding_errors not in ("strict", "replace"):
            raise CharnnError(f"--encoding-errors must be 'strict' or 'replace', got {self.encoding_errors!r}")
        split = tuple(float(x) for x in self.split)
        if len(split) != 3 or any(x < 0 for x in split) or split[0] <= 0:
            raise CharnnError(f"--split needs three non-negative fractions TRAIN,VAL,TEST with TRAIN > 0, got {self.split}")
        if abs(sum(split) - 1.0) > 1e-6:
            raise CharnnError(f"--split fractions must add up to 1, got {sum(split):g}")
        if self.documents and self.unit != "char":
            raise CharnnError(
                f"--documents reads characters (--unit char); --unit {self.unit} with documents is not supported yet"
            )
        if len(self.documents) > 1000 or len(self.label) > 1000:
            raise CharnnError("--documents, --label: a regular expression of at most 1000 characters, please")
        if (self.label or self.labels_file) and not self.documents:
            raise CharnnError("--label and --labels label documents: give --documents SPLIT too")
        if self.label and self.labels_file:
            raise CharnnError("give --label REGEX or --labels FILE, not both")
        if not (isinstance(self.max_document, int) and 1 <= self.max_document <= MAX_DOCUMENT):
            raise CharnnError(f"--max-document must be from 1 to {MAX_DOCUMENT:,} characters, got {self.max_document}")


@dataclass
class TrainConfig:
    seq_len: int = 32
    batch_size: int = 32
    lr: float = 1.2e-2
    optimizer: str = "adamw"
    muon_ns_steps: int = 5  # Newton-Schulz iterations per Muon update (torch's default 5)
    muon_gates: bool = False  # Muon orthogonalises each gate's block of a recurrent matrix on its own (charnn.optim)
    weight_decay: float = 0.01
    schedule: str = "cosine"
    warmup_steps: int = 100
    min_lr_frac: float = 0.05  # cosine decays to this fraction of --lr
    decay_after_epochs: int = 10  # char-rnn's per-epoch decay: start after this many epochs
    decay_rate: float = 0.97  # ... and multiply the rate by this every epoch
    grad_clip: float = 1.0  # max global gradient norm; 0 disables
    grad_clamp: float = 0.0  # char-rnn's element-wise clamp; 0 disables
    max_steps: int = 0  # 0: no step limit
    max_epochs: float = 0.0  # 0: no epoch limit
    max_time: float = 0.0  # seconds; 0: no time limit
    patience: int = 0  # evaluations without improvement before stopping; 0 disables
    eval_every: int = 200
    eval_chars: int = 2_000_000  # cap on validation characters per evaluation during training; 0: the whole split
    checkpoint_seconds: float = 300.0  # seconds between saves of the training state besides evaluations; 0: only those
    seed: int = 1337  # weights, dropout, and the order of a folder's files
    device: str = "auto"
    threads: int = 0  # torch intra-op threads; 0 leaves torch's default
    # fp32; bf16 autocast (on a CPU the recurrence too; on a GPU only the embedding and read-out:
    # measured no faster there on an H200); or auto: bf16 on a CPU with native bf16 units, else fp32
    precision: str = "fp32"
    compile: bool = False  # torch.compile the training step (GPU; on a CPU it costs its compile time)
    cuda_graph: bool = False  # replay the step's forward, backward and clipping from one CUDA graph
    snapshot_steps: tuple[int, ...] = (100, 300, 500, 700, 1200, 2000)
    snapshot_chars: int = 300
    keep_checkpoints: str = "snapshots"  # weights kept at the snapshot steps and each doubling after; or none
    keep_every: int = 0  # also keep the weights every N steps; 0: off
    ema: float = 0.0  # decay of an exponential moving average of the weights used to evaluate and keep; 0: off
    windows: str = "streams"  # consecutive windows of parallel streams (state carried), or "random" places (no state)
    tensorboard: bool = False  # also write the curves and samples as TensorBoard events under RUN/tensorboard
    ngram_mix: int = 0  # at the end, mix the best model with a Kneser-Ney n-gram of this order (charnn.study.mixture); 0: off

    def validate(self) -> None:
        _positive("seq-len", self.seq_len)
        _positive("batch-size", self.batch_size)
        _positive("eval-every", self.eval_every)
        if self.optimizer not in OPTIMIZERS:
            raise CharnnError(f"unknown optimizer {self.optimizer!r}: choose one of {', '.join(OPTIMIZERS)}")
        if not (isinstance(self.muon_ns_steps, int) and 1 <= self.muon_ns_steps <= MAX_NS_STEPS):
            raise CharnnError(
                f"--muon-ns-steps must be a whole number from 1 to {MAX_NS_STEPS} (Newton-Schulz iterations), "
                f"got {self.muon_ns_steps}"
            )
        if self.schedule not in SCHEDULES:
            raise CharnnError(f"unknown schedule {self.schedule!r}: choose one of {', '.join(SCHEDULES)}")
        if not self.lr > 0:
            raise CharnnError(f"--lr must be positive, got {self.lr}")
        for name in (
            "max_steps",
            "max_epochs",
            "max_time",
            "patience",
            "grad_clip",
            "grad_clamp",
            "warmup_steps",
            "eval_chars",
            "weight_decay",
            "checkpoint_seconds",
            "threads",
        ):
            if getattr(self, name) < 0:
                raise CharnnError(f"{flag(name)} must not be negative")
        if not (isinstance(self.seed, int) and 0 <= self.seed <= MAX_SEED):
            raise CharnnError(f"--seed must be a whole number from 0 to {MAX_SEED}, got {self.seed}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise CharnnError(f"--device must be auto, cpu, cuda or mps, got {self.device!r}")
        if self.precision not in ("auto", "fp32", "bf16"):
            raise CharnnError(f"--precision must be auto, fp32 or bf16, got {self.precision!r}")
        if not all(isinstance(s, int) and s >= 0 for s in self.snapshot_steps):
            raise CharnnError(f"snapshot_steps must be whole numbers of steps, got {self.snapshot_steps}")
        if self.keep_checkpoints not in ("snapshots", "none"):
            raise CharnnError(f"--keep-checkpoints must be snapshots or none, got {self.keep_checkpoints!r}")
        if self.keep_every < 0:
            raise CharnnError("--keep-every must not be negative")
        if not 0 <= self.min_lr_frac <= 1:
            raise CharnnError(f"--min-lr-frac must be from 0 to 1 (a fraction of --lr), got {self.min_lr_frac}")
        if self.windows not in ("streams", "random"):
            raise CharnnError(f"--windows must be streams or random, got {self.windows!r}")
        if not (self.ema == 0 or 0 < self.ema < 1):
            raise CharnnError(f"--ema must be 0 (off) or between 0 and 1 (e.g. 0.999), got {self.ema}")
        check_ngram_mix(self.ngram_mix)


NGRAM_MIX_MAX = 30  # the highest order --ngram-mix counts (as charnn ngram's --order)


def check_ngram_mix(order: int) -> None:
    """--ngram-mix's order: 0 (off) or 1..NGRAM_MIX_MAX; also for callers that skip validate (the bench)."""
    if not (isinstance(order, int) and 0 <= order <= NGRAM_MIX_MAX):
        raise CharnnError(f"--ngram-mix must be an n-gram order from 1 to {NGRAM_MIX_MAX} (0: off), got {order}")


@dataclass
class RunConfig:
    """Everything needed to rebuild and continue a run."""

    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    preset: str = ""
    run_id: str = ""  # made at a run's first start; every checkpoint of the run carries it

    def complete(self) -> "RunConfig":
        """Fill in what the settings left to a default or gave loosely: the number of byte-pair
        tokens (--unit bpe without --bpe-vocab), the split and the kept steps as tuples (a
        command line or JSON gives lists). A run completes its settings, then validates them."""
        d = self.data
        if d.unit == "bpe" and not d.bpe_vocab:
            d.bpe_vocab = DEFAULT_BPE_VOCAB
        if len(d.split) == 3:  # another length is validate()'s to report
            a, b, c = (float(x) for x in d.split)
            d.split = (a, b, c)
        self.train.snapshot_steps = tuple(self.train.snapshot_steps)
        return self

    def validate(self) -> "RunConfig":
        """Check every setting (nothing is changed: complete() fills in the defaults)."""
        self.model.validate()
        self.data.validate()
        self.train.validate()
        m = self.model
        if m.recurrent and self.train.windows == "random":
            raise CharnnError(
                f"--windows random reads unrelated windows, and --cell {m.cell} carries its state from one "
                f"window to the next: use --windows streams (the default) with a recurrent cell"
            )
        if self.train.ngram_mix and (self.data.unit == "bpe" or self.data.documents):
            raise CharnnError(
                "--ngram-mix mixes a model of one running text's characters with their n-gram; "
                f"{'--unit bpe' if self.data.unit == 'bpe' else '--documents'} is not supported with it yet: leave one out"
            )
        if not m.recurrent and self.train.seq_len != m.block:
            raise CharnnError(
                f"a transformer trains on windows as long as its context: --seq-len ({self.train.seq_len}) "
                f"must equal --block ({m.block}); give --block alone"
            )
        return self

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "RunConfig":
        if not isinstance(d, dict) or not all(isinstance(d.get(k, {}), dict) for k in ("model", "data", "train")):
            raise CharnnError("the run configuration is malformed (not a JSON object of sections); was it written by charnn?")
        try:
            return cls(
                model=_build(ModelConfig, d.get("model", {})),
                data=_build(DataConfig, d.get("data", {})),
                train=_build(TrainConfig, d.get("train", {})),
                preset=str(d.get("preset", "")),
                run_id=str(d.get("run_id", "")),
            )
        except (TypeError, ValueError) as e:
            raise CharnnError(f"the run configuration is malformed ({e}); was it written by charnn?") from None

    @classmethod
    def from_json(cls, text: str) -> "RunConfig":
        try:
            d = json.loads(text)
        except json.JSONDecodeError as e:
            raise CharnnError(f"the run configuration is not valid JSON ({e})") from None
        return cls.from_dict(d)


# settings saved under an earlier name (a run made before the rename still loads and resumes)
RENAMED = {"checkpoint_every": "checkpoint_seconds"}


def _build(kind, d: dict):
    known = {f.name for f in fields(kind)}
    d = {RENAMED.get(k, k): v for k, v in d.items()}
    kwargs = {k: v for k, v in d.items() if k in known}  # ignore keys from newer versions
    obj = kind(**kwargs)
    for f in fields(kind):
        if isinstance(getattr(obj, f.name), list):
            setattr(obj, f.name, tuple(getattr(obj, f.name)))
    return obj


def _positive(name: str, value: int) -> None:
    if not (isinstance(value, int) and value > 0):
        raise CharnnError(f"--{name} must be a positive integer, got {value}")


# Presets: named model + training settings over the dataclass defaults (a field a preset does not
# name keeps its default). "default" (the best of a sweep at 60 s: the defaults) and "large"
# (the best measured at 10 minutes) were chosen on tiny Shakespeare on a 2-core CPU; "long" (the
# best measured at 30 minutes on War and Peace, 2.5M training characters) is "large" without
# dropout, with a longer weight average and the learning rate decayed to 5%, for multi-MB corpora
# trained for half an hour or more, where the model underfits. docs/notes.md
# lists what was measured. On such a CPU one wide layer beat two narrower ones at both budgets:
# it does the same arithmetic in fewer, larger matrix products. bf16 where the CPU has it: at 10
# minutes 1.42x the steps of fp32 and a lower loss (bf16 1.3880 and 1.3843 in two rounds, fp32 1.3963 in the
# first). Muon per gate with three iterations (the default preset's), on 32 streams: at a fixed
# 4,000 steps 1.3812 against AdamW's 1.4127, at about 0.65x the steps per second; at 10 minutes,
# mixed with the 10-gram, 1.3470 and 1.3480 against AdamW's 1.3503 twice, in two alternated rounds
# (stacked Muon with five iterations on 64 streams lost, 1.3990).
_LARGE: dict[str, dict] = {
    "model": {"cell": "lstm", "layers": 1, "hidden": 768, "embed": 64, "dropout": 0.25},
    "train": {
        "seq_len": 32,
        "batch_size": 32,
        "lr": 8e-3,
        "warmup_steps": 100,
        "weight_decay": 0.1,
        "ema": 0.999,
        "min_lr_frac": 0.2,
        "precision": "auto",
        "optimizer": "muon",
        "muon_ns_steps": 3,
        "muon_gates": True,
    },
}
_MUON = ("optimizer", "muon_ns_steps", "muon_gates")
PRESETS: dict[str, dict[str, dict]] = {
    "tiny": {
        "model": {"cell": "lstm", "layers": 1, "hidden": 64, "embed": 32},
        "train": {"seq_len": 50, "batch_size": 16, "lr": 1e-2, "eval_every": 100, "warmup_steps": 50},
    },
    # the dataclass defaults above (one place holds them), with bf16 where the CPU has it (measured
    # 1.4x the steps and 1.5% lower loss at 60 s, the same loss at equal steps) and Muon on the
    # recurrent matrices at 8e-3 with 64 streams (2% lower than AdamW at 60 s in two alternated
    # rounds; Muon's Newton-Schulz cost is per step, so a larger batch pays) (docs/notes.md)
    # three Newton-Schulz iterations per Muon update, not five: the same loss at 1,000 steps in 10% less
    # time, 0.005-0.011 nats lower at 60 s in three alternated rounds (two lost 0.04 nats per step)
    # and Muon per gate (each gate's block of the recurrent matrices orthogonalised on its own): 0.008-0.011
    # nats lower at a fixed 1,200 steps on two seeds
    "default": {
        "train": {"precision": "auto", "optimizer": "muon", "muon_ns_steps": 3, "muon_gates": True, "lr": 8e-3, "batch_size": 64}
    },
    "large": _LARGE,
    "long": {
        "model": {**_LARGE["model"], "dropout": 0.0},
        # an evaluation of War and Peace's validation split costs ~80 steps: evaluate less often
        # AdamW, as it was measured (Muon per gate was chosen for `large` at 10 minutes, not measured here)
        "train": {
            **{k: v for k, v in _LARGE["train"].items() if k not in _MUON},
            "ema": 0.9995,
            "min_lr_frac": 0.05,
            "eval_every": 2000,
        },
    },
    "paper": {
        "model": {"cell": "lstm", "layers": 2, "hidden": 512, "embed": 64, "dropout": 0.5},
        "train": {
            "seq_len": 100,
            "batch_size": 100,
            "lr": 2e-3,
            "optimizer": "rmsprop",
            "schedule": "epoch-decay",
            "grad_clamp": 5.0,
            "grad_clip": 0.0,
            "warmup_steps": 50,
        },
    },
    # nanoGPT's character-level recipes as published (config/train_shakespeare_char.py and its README's
    # laptop command): AdamW with betas (0.9, 0.99), weight decay 0.1, 100 warmup steps, cosine to a
    # tenth of the peak; the windows are the block long.
    "gpt-cpu": {
        "model": {"cell": "transformer", "layers": 4, "heads": 4, "embed": 128, "hidden": 128, "block": 64, "dropout": 0.0},
        "train": {
            "seq_len": 64,
            "batch_size": 12,
            "lr": 1e-3,
            "min_lr_frac": 0.1,
            "weight_decay": 0.1,
            "warmup_steps": 100,
            "windows": "random",
        },
    },
    # charnn's best transformer at 60 s on a 2-core CPU (docs/transformer-benchmarks.md, rounds 5-6):
    # wider and shallower than gpt-cpu, Muon on the blocks' matrices, weights averaged, bf16 where
    # the CPU has it (its attention kept fp32: transformer.attend; 1.5-1.6x the fp32 step), and a batch
    # of 32 windows over which Muon's fixed cost per step is spread: x0.91 the best swept plain
    # transformer's loss at 1.2-1.3x its training characters per second, in three rounds
    "gpt-muon": {
        "model": {"cell": "transformer", "layers": 2, "heads": 6, "embed": 192, "hidden": 192, "block": 64, "dropout": 0.0},
        "train": {
            "seq_len": 64,
            "batch_size": 32,
            "lr": 6e-3,
            "optimizer": "muon",
            "min_lr_frac": 0.1,
            "weight_decay": 0.1,
            "warmup_steps": 100,
            "windows": "random",
            "ema": 0.995,
            "precision": "auto",
        },
    },
    "gpt": {
        "model": {"cell": "transformer", "layers": 6, "heads": 6, "embed": 384, "hidden": 384, "block": 256, "dropout": 0.2},
        "train": {
            "seq_len": 256,
            "batch_size": 64,
            "lr": 1e-3,
            "min_lr_frac": 0.1,
            "weight_decay": 0.1,
            "warmup_steps": 100,
            "eval_every": 250,
            "windows": "random",
        },
    },
}


def apply_preset(cfg: RunConfig, name: str) -> None:
    if name not in PRESETS:
        raise CharnnError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    for section, values in PRESETS[name].items():
        target = getattr(cfg, section)
        for k, v in values.items():
            setattr(target, k, v)
    cfg.preset = name
