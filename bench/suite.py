"""The benchmark suite (issue #5): one table, our figure beside a reference measured in the same run.

    make bench                      # every row (about 52 minutes on 2 cores)
    python bench/suite.py --quick   # skip the 10-minute time-to-quality row and the big corpus
    python bench/suite.py --only sampling,throughput

Rows: time to quality on tiny Shakespeare (60 s and 10 min, each preset alone and with
--ngram-mix 10; the transformer at 60 s against the
best swept plain transformer), the bf16 training step against fp32 with each one's share of its
matmul peak, training throughput (2x512 b50 s50,
3x512 b100 s100) with GFLOP/s and the share of a measured matmul peak, batch-1 and batched
sampling of a 3x512 LSTM, evaluation speed, and preparing a half-gigabyte corpus (speed, peak
memory) then training on it (peak memory). Speeds are medians of repeats; timings on a shared
2-core machine move by about 10% between runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
SHARED = HERE.parents[1] / "shared" / "data"

from charnn.config import ModelConfig  # noqa: E402
from charnn.model import CharRNN  # noqa: E402

ROWS: list[dict] = []


def row(name, ours, reference, unit, higher_better=True, target=None, note=""):
    ratio = (ours / reference if higher_better else reference / ours) if reference else float("nan")
    met = "" if target is None else ("met" if (ours >= target if higher_better else ours <= target) else "NOT met")
    ROWS.append({"row": name, "ours": ours, "reference": reference, "unit": unit, "ratio": ratio,
                 "target": target, "met": met, "note": note})
    print(f"  {name}: {_fmt(ours, unit)} {unit} vs {_fmt(reference, unit)} -> x{ratio:.3f} {met}", file=sys.stderr,
          flush=True)


def _fmt(v: float, unit: str) -> str:
    # losses differ in the third decimal between recipes; four significant digits would print 1.4000 as "1.4"
    return f"{v:.4f}" if unit == "nats" else f"{v:,.4g}"


def _median_time(fn, repeats=5, warmup=2) -> float:
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def _paired_times(fa, fb, repeats=5, warmup=2) -> tuple[float, float]:
    """Median times of fa and fb run alternately, so that both see the same machine."""
    for _ in range(warmup):
        fa()
        fb()
    ta, tb = [], []
    for _ in range(repeats):
        t = time.perf_counter()
        fa()
        ta.append(time.perf_counter() - t)
        t = time.perf_counter()
        fb()
        tb.append(time.perf_counter() - t)
    return statistics.median(ta), statistics.median(tb)


# ---- training throughput ------------------------------------------------------------------

def _lstm_train_flops(layers, hidden, embed, vocab) -> float:
    """FLOPs per character of one training step (forward + backward = 3x forward)."""
    fwd = 0
    for k in range(layers):
        inp = embed if k == 0 else hidden
        fwd += 2 * 4 * hidden * (inp + hidden)
    fwd += 2 * hidden * vocab
    return 3 * fwd


def _throughput_batches(batch: int, seq: int, count: int) -> tuple[list, int, str]:
    """`count` consecutive (x, y) batches of tiny Shakespeare (random ids when it is absent),
    laid out as charnn's training reads them."""
    from charnn.data import StreamBatcher

    data = SHARED / "tinyshakespeare.txt"
    if data.exists():
        from charnn.data import prepare

        enc = prepare(str(data))
        ids, vocab, what = enc.ids, len(enc.vocab), "tiny Shakespeare"
    else:
        vocab, what = 96, "random ids (tiny Shakespeare is absent)"
        ids = np.random.default_rng(0).integers(0, vocab, batch * seq * count + 1)
    batcher = StreamBatcher(ids, batch, seq)
    return [batcher.batch(k) for k in range(count)], vocab, what


def throughput(layers, batch, seq, steps=8, warmup=2):
    """Training steps per second of charnn against the plain PyTorch model, on the same batches.

    Both are asked for the same model: an embedding as wide as the hidden layer (512), `layers`
    LSTM layers of 512 and a linear read-out, AdamW at 2e-3. charnn builds it as its training
    does (ModelConfig.fit_vocab caps the embedding at the vocabulary, which represents the same
    functions) with its optimiser (fused AdamW) and gradient clipping; the reference is what
    one writes first. Both walk the same consecutive batches, so their losses compare.
    """
    from charnn.config import RunConfig
    from charnn.trainer import make_optimizer

    H, E = 512, 512
    batches, V, what = _throughput_batches(batch, seq, steps + warmup)

    # reference: what one writes first
    torch.manual_seed(0)
    emb, lstm, head = torch.nn.Embedding(V, E), torch.nn.LSTM(E, H, layers, batch_first=True), torch.nn.Linear(H, V)
    params = [*emb.parameters(), *lstm.parameters(), *head.parameters()]
    opt = torch.optim.AdamW(params, lr=2e-3)
    losses_ref = []

    def ref_step():
        x, y = batches[len(losses_ref)]
        out, _ = lstm(emb(x))
        loss = torch.nn.functional.cross_entropy(head(out).reshape(-1, V), y.reshape(-1))
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses_ref.append(loss.item())

    # ours: CharRNN, configured and stepped as charnn.trainer does
    cfg = RunConfig()
    cfg.model = ModelConfig(cell="lstm", layers=layers, hidden=H, embed=E, dropout=0.0)
    embed_std = cfg.model.fit_vocab(V)
    cfg.train.lr, cfg.train.weight_decay = 2e-3, 0.01
    torch.manual_seed(0)
    model = CharRNN(cfg.model, embed_std)
    opt2 = make_optimizer(cfg, model)
    losses = []

    def our_step():  # what charnn.trainer does per step, gradient clipping included
        x, y = batches[len(losses)]
        loss, _ = model.loss(x, y)
        opt2.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.train.grad_clip, foreach=True)
        opt2.step()
        losses.append(loss.item())

    import precision as pr

    peak_before = pr.peak(torch.float32)
    t_our, t_ref = _paired_times(our_step, ref_step, repeats=steps, warmup=warmup)
    chars = batch * seq
    flops_ref = _lstm_train_flops(layers, H, E, V) * chars
    flops_our = _lstm_train_flops(layers, H, cfg.model.embed, V) * chars
    peak = max(peak_before, pr.peak(torch.float32))  # before and after the runs: the machine's speed moves
    name = f"training throughput, LSTM {layers}x512 batch {batch} seq {seq}"
    row(name, chars / t_our, chars / t_ref, "chars/s", target=None,
        note=f"{flops_our / t_our / 1e9:.0f} vs {flops_ref / t_ref / 1e9:.0f} GFLOP/s, "
             f"{100 * flops_our / t_our / 1e9 / peak:.0f}% vs {100 * flops_ref / t_ref / 1e9 / peak:.0f}% of the "
             f"{peak:.0f} GFLOP/s matmul peak; charnn's embedding is {cfg.model.embed} wide "
             f"({100 * (1 - flops_our / flops_ref):.0f}% fewer FLOPs); loss after {len(losses)} steps on {what} "
             f"{losses[-1]:.4f} vs {losses_ref[-1]:.4f}; target x1.15")
    ROWS[-1]["target_ratio"] = 1.15


def gpu_device(asked: str) -> str | None:
    """The device of the GPU rows: --gpu-device, or auto (CUDA, else Apple MPS, else none: the
    rows say skipped). "cpu" runs them on the CPU, a rehearsal of the code path (scripts/gpu_check.py
    --device cpu), not a measurement anyone should quote."""
    from charnn.devices import pick_device  # auto: CUDA, else MPS, else the CPU; a named one must be there
    from charnn.errors import CharnnError

    try:
        device = pick_device(asked).type
    except CharnnError as e:  # --gpu-device cuda or mps where there is none
        sys.exit(f"{Path(sys.argv[0]).name}: {e}")
    return None if asked == "auto" and device == "cpu" else device


def _sync(device: str):
    if device == "cuda":
        return torch.cuda.synchronize
    if device == "mps":
        return torch.mps.synchronize
    return lambda: None


def device_name(device: str) -> str:
    if device == "cuda":
        return torch.cuda.get_device_name()
    if device == "mps":
        return "Apple MPS"
    return f"the {device.upper()} (a rehearsal of the GPU code, not a GPU figure)"


def _skipped(name: str, why: str = "no CUDA or MPS GPU on this machine") -> None:
    print(f"  skipped: {name}: {why}", file=sys.stderr)
    ROWS.append({"row": name, "ours": float("nan"), "reference": float("nan"), "unit": "chars/s",
                 "ratio": float("nan"), "target": None, "met": "", "note": f"skipped: {why}"})


def gpu_throughput(device: str | None, layers: int = 3, hidden: int = 512, batch: int = 100, seq: int = 100,
                   repeats: int = 10):
    """The GPU path: the LSTM step under bf16 autocast (charnn's: the recurrence kept fp32) against fp32."""
    from charnn.devices import autocast

    name = f"GPU training throughput, LSTM {layers}x{hidden} batch {batch} seq {seq}, bf16 autocast vs fp32"
    if device is None:
        return _skipped(name)
    dev, sync = torch.device(device), _sync(device)
    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=layers, hidden=hidden, embed=hidden, dropout=0.0,
                                vocab_size=96)).to(dev)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3)
    x = torch.randint(0, 96, (batch, seq), device=dev)

    def step(precision):
        def run():
            with autocast(device, precision):
                loss, _ = model.loss(x, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sync()
        return run

    t_bf16, t_fp32 = _paired_times(step("bf16"), step("fp32"), repeats=repeats)
    row(name, batch * seq / t_bf16, batch * seq / t_fp32, "chars/s", note=f"{device_name(device)}; reference: fp32")


def _trainer(device: str, tmp: Path, name: str, layers: int, hidden: int, embed: int, batch: int, seq: int,
             steps: int, graph: bool = False):
    """A Trainer of `charnn train`'s loop on random text (enough for 4 x steps steps), no
    evaluations or saves in the way."""
    from charnn.config import RunConfig
    from charnn.distributed import Dist
    from charnn.trainer import Trainer

    text = tmp / "text.txt"
    if not text.exists():
        rng = np.random.default_rng(0)
        text.write_bytes(bytes(rng.integers(32, 127, batch * seq * (steps * 4 + 8)).astype(np.uint8)))
    cfg = RunConfig()
    cfg.data.text = str(text)
    cfg.model.layers, cfg.model.hidden, cfg.model.embed, cfg.model.dropout = layers, hidden, embed, 0.0
    t = cfg.train
    t.batch_size, t.seq_len, t.device, t.eval_every, t.checkpoint_seconds = batch, seq, device, 10 ** 9, 0
    t.snapshot_steps, t.cuda_graph = (), graph
    (tmp / name).mkdir()
    trainer = Trainer(cfg, tmp / name, False, None, {}, False, None, Dist())
    trainer.model.train()
    return cfg, trainer


def _loop(trainer, steps: int, sync):
    def run():
        for _ in range(steps):
            trainer.train_step()
            if trainer.state.step % 10 == 0:
                trainer.check_health()
        sync()
    return run


def gpu_train_loop(device: str | None, layers: int = 3, hidden: int = 512, batch: int = 100, seq: int = 100,
                   steps: int = 10):
    """`charnn train`'s own step (the Trainer: batches read from the memory-mapped split and copied
    to the device, the divergence watch, clipping, fused AdamW, a read-back every 10 steps)
    against a bare step on batches already on the device. The ratio is what the loop costs
    beyond the arithmetic; fp32, the same model."""
    from charnn.trainer import make_optimizer

    name = f"GPU: charnn train's step vs a bare step, LSTM {layers}x{hidden} batch {batch} seq {seq}, fp32"
    if device is None:
        return _skipped(name)
    sync = _sync(device)
    with tempfile.TemporaryDirectory() as tmp:
        _, trainer = _trainer(device, Path(tmp), "run", layers, hidden, hidden, batch, seq, steps)
        torch.manual_seed(0)
        model = CharRNN(trainer.cfg.model).to(device)
        opt = make_optimizer(trainer.cfg, model)
        x = torch.randint(0, trainer.cfg.model.vocab_size, (batch, seq), device=device)

        def bare():
            for _ in range(steps):
                loss, _ = model.loss(x, x)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            sync()

        t_our, t_ref = _paired_times(_loop(trainer, steps, sync), bare, repeats=5, warmup=1)
    chars = batch * seq * steps
    row(name, chars / t_our, chars / t_ref, "chars/s",
        note=f"{device_name(device)}; reference: the model's step on resident batches")


def gpu_graph_step(device: str | None, layers: int = 1, hidden: int = 384, batch: int = 32, seq: int = 32,
                   steps: int = 50):
    """`charnn train --cuda-graph`'s step against the same loop without it, at the default model's
    size, where the eager step is bound by the host's kernel launches. On the CPU (a rehearsal)
    the graph is charnn's stand-in, which calls the step instead of replaying it."""
    name = f"GPU: charnn train --cuda-graph vs without, LSTM {layers}x{hidden} batch {batch} seq {seq}, fp32"
    if device is None:
        return _skipped(name)
    if device == "mps":
        return _skipped(name, "--cuda-graph is for CUDA")
    sync = _sync(device)
    if device == "cpu":
        os.environ["CHARNN_CUDA_GRAPH_STAND_IN"] = "1"
    with tempfile.TemporaryDirectory() as tmp:
        _, eager = _trainer(device, Path(tmp), "eager", layers, hidden, 64, batch, seq, steps)
        _, graphed = _trainer(device, Path(tmp), "graph", layers, hidden, 64, batch, seq, steps, graph=True)
        t_our, t_ref = _paired_times(_loop(graphed, steps, sync), _loop(eager, steps, sync), repeats=5, warmup=1)
    chars = batch * seq * steps
    row(name, chars / t_our, chars / t_ref, "chars/s", note=f"{device_name(device)}; reference: the same loop, eager")


# ---- sampling -------------------------------------------------------------------------------

def sampling(num: int, length: int):
    from charnn.sample import generate, sample_next
    from charnn.vocab import Vocab

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=3, hidden=512, embed=64, dropout=0.0, vocab_size=96)).eval()
    vocab = Vocab([10] + list(range(32, 127)))

    def naive():
        gen = torch.Generator().manual_seed(0)
        out = []
        with torch.no_grad():
            logits, state = model(torch.zeros(num, 1, dtype=torch.long))
            for _ in range(length):
                nxt = sample_next(logits[:, -1], gen, 1.0)
                out.append(nxt.tolist())
                logits, state = model(nxt.unsqueeze(1), state)
        return out

    def fast():
        return list(generate(model, vocab, length=length, num=num, seed=0, temperature=1.0))

    same = naive() == fast()
    t_fast, t_naive = _paired_times(fast, naive, repeats=3, warmup=1)
    chars = num * length
    weights_mb = sum(p.numel() for n, p in model.named_parameters() if not n.startswith("embed")) * 4 / 1e6
    what = "batch-1 sampling" if num == 1 else f"batched sampling, {num} streams"
    note = f"identical samples: {'yes' if same else 'NO'}"
    if num == 1:
        note += f"; {weights_mb:.1f} MB of weights read per character = {weights_mb * chars / t_fast / 1e3:.1f} GB/s"
    row(f"{what}, LSTM 3x512", chars / t_fast, chars / t_naive, "chars/s", target=2000 if num == 1 else None,
        note=note)


def transformer_sampling(length: int = 1000):
    """A transformer's sampling with its key/value cache against a loop that re-reads the visible
    context for every character (bench/transformer.py), at the gpt preset's size, batch 1."""
    import transformer as tr

    cached, reread, same = tr.sampling_speeds(6, 6, 384, 256, length)
    row(f"transformer sampling with the cache, gpt 6x384 block 256, batch 1, {length:,} chars, vs re-reading the "
        "context", cached, reread, "chars/s", note=f"identical samples: {'yes' if same else 'NO'}")
    ROWS[-1]["target_text"] = f"x5: {'met' if cached >= 5 * reread and same else 'NOT met'}"


# ---- evaluation -----------------------------------------------------------------------------

def evaluation():
    from charnn.evaluate import evaluate

    torch.manual_seed(0)
    model = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=256, embed=64, dropout=0.0, vocab_size=96)).eval()
    ids = np.random.default_rng(0).integers(0, 96, 200_000)
    t_eval = _median_time(lambda: evaluate(model, ids), repeats=3, warmup=1)
    x = torch.from_numpy(ids[:32 * 32 * 50].reshape(32 * 50, 32)).long()
    xs = x.reshape(50, 32, 32)

    def train_fwd():  # the training forward pass, batch 32 x 32, with autograd on
        state = None
        for b in xs:
            loss, state = model.loss(b, b, state)
            state = tuple(s.detach() for s in state)

    t_fwd = _median_time(train_fwd, repeats=3, warmup=1)
    row("evaluation of a split, LSTM 2x256", len(ids) / t_eval, xs.numel() / t_fwd, "chars/s",
        note="reference: the training forward pass (32 streams x 32)")


# ---- the server ------------------------------------------------------------------------------

def serving():
    """charnn serve under 50 concurrent clients (bench/serve.py), against the library in one process."""
    import serve as serve_bench

    m = serve_bench.measure(clients=50, per_client=20, length=200)
    name = "charnn serve, 50 clients x 20 streamed 200-char samples, LSTM 1x384"
    row(f"{name}: requests/s", m["rps"], m["ref_rps"], "req/s",
        note="reference: the same 1,000 samples one after another in one process, no server")
    row(f"{name}: p99 latency", m["p99"], m["p99"], "s", higher_better=False, target=5.0,
        note=f"p50 {m['p50']:.2f} s; first character p50 {m['first_p50']:.3f} s, p99 {m['first_p99']:.3f} s")
    ROWS[-1]["reference"], ROWS[-1]["ratio"] = float("nan"), float("nan")
    row(f"{name}: errors", m["errors"], 0, "requests", higher_better=False, target=0,
        note=f"statuses seen: {', '.join(m['statuses'])}")
    ROWS[-1]["ratio"] = float("nan")


# ---- time to quality ------------------------------------------------------------------------

# nanoGPT's own CPU recipe (its README's "baby GPT" shrunk for a CPU), as issue #16 measured it on
# this machine; it is not rerun here (it is not part of this repository), only printed beside the rows.
NANOGPT = {60: "1.886 nats in 59 s", 600: "1.535 nats in 9.5 minutes"}
# the transformer row's pair at 60 s: the best plain transformer of the sweeps and charnn's best
# (bench/transformer.py GRIDS; docs/transformer-benchmarks.md)
GPT_60S = {"plain": "lr=3e-3,layers=2,width=192,heads=6,precision=bf16",
           "charnn": "lr=6e-3,ema=0.995,layers=2,embed=192,hidden=192,heads=6,optimizer=muon,batch_size=32,"
                     "precision=auto"}


def time_to_quality(budget: float, preset: str, plain: dict, target: float, target_ratio: float):
    """charnn's preset against, in the same run, the strongest plain recipe we know for this budget
    (bench/time_to_quality.plain_recipe with `plain`'s settings) and char-rnn's defaults."""
    import time_to_quality as ttq

    from charnn.config import RunConfig, apply_preset
    from charnn.data import prepare
    from charnn.trainer import train

    data = SHARED / "tinyshakespeare.txt"
    if not data.exists():
        print(f"  skipped time to quality: {data} is absent", file=sys.stderr)
        return
    cfg = RunConfig()
    apply_preset(cfg, preset)
    cfg.data.text, cfg.data.split = str(data), (0.9, 0.1, 0.0)
    cfg.train.max_time, cfg.train.eval_every, cfg.train.snapshot_steps = budget, 10 ** 9, ()
    cfg.train.keep_checkpoints = "none"
    with tempfile.TemporaryDirectory() as d:
        res = train(cfg, Path(d) / "run", progress=False)
    enc = prepare(str(data))
    n_train = int(len(enc.ids) * 0.9)
    ref_loss, ref_steps = ttq.plain_recipe(enc.ids, n_train, len(enc.vocab), budget, **plain)
    crnn_loss, crnn_steps = ttq.plain_recipe(enc.ids, n_train, len(enc.vocab), budget, char_rnn=True)
    what = (f"{plain.get('layers', 2)}x{plain.get('hidden', 512)} nn.LSTM ({plain.get('precision', 'fp32')}), "
            f"dropout {plain.get('dropout', 0.2)}, "
            f"AdamW {plain.get('lr', 3e-3):g} (weight decay {plain.get('weight_decay', 0.01):g}) warmup + cosine, "
            f"carried state")
    # issue #16's target is a ratio to the better of the two plain recipes, measured in this run (absolute
    # losses at a fixed wall time move with the machine's speed); `target` (an absolute loss) is a note only
    share = res.last_val_loss / min(ref_loss, crnn_loss)
    row(f"time to quality, tiny Shakespeare, {budget / 60:g} min, val loss, vs the best plain recipe",
        res.last_val_loss, ref_loss, "nats", higher_better=False,
        note=f"preset {preset} ({cfg.model.layers}x{cfg.model.hidden}), {res.steps} steps; reference: {what}, "
             f"{ref_steps} steps; ours is x{share:.3f} the better plain recipe's loss; the old absolute target "
             f"{target:g} nats: {'met' if res.last_val_loss <= target else 'NOT met'}")
    verdict = "met" if share <= target_ratio else "NOT met"
    ROWS[-1]["target_text"] = f"ours <= x{target_ratio:g} the better plain loss: {verdict}"
    # the same preset with --ngram-mix 10 (the model mixed with its training split's 10-gram; the
    # n-gram's counting comes out of the budget; the loss is the cross-fitted one), against the same plain run
    mixed_loss, mixed_steps = ttq.charnn_run(data, budget, preset, ngram_mix=10)
    share = mixed_loss / min(ref_loss, crnn_loss)
    row(f"time to quality, tiny Shakespeare, {budget / 60:g} min, val loss, with --ngram-mix 10, vs the best plain recipe",
        mixed_loss, ref_loss, "nats", higher_better=False,
        note=f"preset {preset} with --ngram-mix 10, {mixed_steps} steps; the reference run above, unmixed; ours is "
             f"x{share:.3f} the better plain recipe's loss")
    verdict = "met" if share <= target_ratio else "NOT met"
    ROWS[-1]["target_text"] = f"ours <= x{target_ratio:g} the better plain loss: {verdict}"
    nanogpt = NANOGPT.get(budget, "not measured at this budget")
    row(f"time to quality, tiny Shakespeare, {budget / 60:g} min, val loss, vs char-rnn's defaults",
        res.last_val_loss, crnn_loss, "nats", higher_better=False,
        note=f"reference: char-rnn's recipe (2x128, one-hot, 50 x 50, RMSprop 2e-3), {crnn_steps} steps; "
             f"for scale, nanoGPT's CPU recipe on this machine (issue #16, not rerun): {nanogpt}")


def transformer_time_to_quality(budget: float, plain: str, ours: str, target_ratio: float):
    """charnn's transformer (settings over the gpt-cpu preset) against the best plain transformer of
    bench/transformer.py's sweep for this budget (GRIDS there; docs/transformer-benchmarks.md),
    trained in the same run, plain first."""
    import transformer as tr
    from time_to_quality import _settings

    from charnn.data import prepare

    data = SHARED / "tinyshakespeare.txt"
    if not data.exists():
        print(f"  skipped transformer time to quality: {data} is absent", file=sys.stderr)
        return
    enc = prepare(str(data))
    n_train = int(len(enc.ids) * 0.9)
    ref_loss, ref_steps = tr.plain_gpt(enc.ids, n_train, len(enc.vocab), budget, **_settings(plain))
    loss, steps = tr.charnn_gpt(data, budget, **_settings(ours))
    # training characters read per second of the budget: steps x windows x window length
    p, o = _settings(plain), _settings(ours)
    ref_rate = ref_steps * p.get("batch", 12) * p.get("block", 64) / budget
    rate = steps * o.get("batch_size", 12) * o.get("seq_len", 64) / budget
    row(f"transformer time to quality, tiny Shakespeare, {budget / 60:g} min, val loss, vs the best swept plain "
        "transformer", loss, ref_loss, "nats", higher_better=False,
        note=f"charnn gpt-cpu with {ours}, {steps} steps, {rate:,.0f} training chars/s; reference: plain transformer "
             f"(nanoGPT's recipe) with {plain}, {ref_steps} steps, {ref_rate:,.0f} chars/s (x{rate / ref_rate:.2f}); "
             f"ours is x{loss / ref_loss:.3f}")
    verdict = "met" if loss / ref_loss <= target_ratio and rate >= ref_rate else "NOT met"
    ROWS[-1]["target_text"] = f"ours <= x{target_ratio:g} the plain loss, at no fewer chars/s: {verdict}"


def _peak_note(flops: float, t32: float, t16: float, p32: float, p16: float) -> str:
    return (f"fp32 reaches {100 * flops / t32 / 1e9 / p32:.0f}% of its {p32:.0f} GFLOP/s matmul peak, bf16 "
            f"{100 * flops / t16 / 1e9 / p16:.0f}% of its {p16:.0f}")


def precision_speed():
    """charnn's training step in bf16 against fp32 (bench/precision.py) for the default preset's LSTM
    and the gpt-muon transformer, with each one's share of its own matrix-multiply peak measured in
    the same run."""
    import precision as pr

    p32, p16 = pr.peak(torch.float32), pr.peak(torch.bfloat16)
    B, T = 32, 32
    t32, t16, flops = pr.step_times("lstm", 1, 384, B, T)
    row("training step in bf16 (CPU recurrence included), default model 1x384, 32 x 32, chars/s, vs fp32",
        B * T / t16, B * T / t32, "chars/s", note=_peak_note(flops, t32, t16, p32, p16))
    B, T = 24, 64  # the gpt-muon preset's transformer: the attention stays fp32 on the CPU (transformer.attend)
    t32, t16, flops = pr.step_times("transformer", 2, 192, B, T)
    row("training step in bf16, gpt-muon transformer 2x192, 24 x 64, chars/s, vs fp32", B * T / t16, B * T / t32,
        "chars/s", note=_peak_note(flops, t32, t16, p32, p16))


# ---- a corpus larger than memory ------------------------------------------------------------

def _child_peak(cmd: list[str], env=None) -> tuple[float, float, str]:
    """(seconds, peak resident GB, stdout) of a command run in its own process."""
    script = ("import resource, subprocess, sys, time, json; t = time.perf_counter(); "
              "r = subprocess.run(sys.argv[1:], capture_output=True, text=True); "
              "print(json.dumps([time.perf_counter() - t, "
              "resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1e6, r.returncode, r.stderr[-500:]]))")
    r = subprocess.run([sys.executable, "-c", script, *cmd], capture_output=True, text=True, env=env)
    secs, peak, rc, err = json.loads(r.stdout)
    if rc != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {err}")
    return secs, peak, err


def big_corpus(path: Path | None):
    if path is None or not path.exists():
        print("  skipped the big corpus: build it with ../shared/data/make_linux.py --all --chars 0 and pass "
              "--big-corpus PATH", file=sys.stderr)
        return
    size = path.stat().st_size
    with tempfile.TemporaryDirectory() as d:
        env = dict(os.environ, CHARNN_CACHE=d)
        prep = ("import sys; from charnn.data import prepare; e = prepare(sys.argv[1]); "
                "print(len(e.ids), len(e.vocab), file=sys.stderr)")
        secs, peak, _ = _child_peak([sys.executable, "-c", prep, str(path)], env)
        read = _median_time(lambda: _read_all(path), repeats=1, warmup=0)
        row("preparing a big corpus (MB/s of UTF-8 text)", size / 1e6 / secs, size / 1e6 / read, "MB/s", target=50,
            note=f"{size / 1e6:.0f} MB; reference: reading the file; peak memory {peak:.2f} GB (target < 1.5)")
        ROWS.append({"row": "peak memory while preparing", "ours": peak, "reference": size / 1e9, "unit": "GB",
                     "ratio": size / 1e9 / peak, "target": 1.5, "met": "met" if peak < 1.5 else "NOT met",
                     "note": "reference: the file size"})
        tr = [sys.executable, "-m", "charnn", "train", str(path), "--out", f"{d}/run", "--max-steps", "200",
              "--eval-every", "100", "--eval-chars", "200000", "--samples", "0", "--quiet", "--split", "0.98,0.01,0.01"]
        secs, peak, _ = _child_peak(tr, env)
        ROWS.append({"row": "peak memory while training on it (200 steps)", "ours": peak, "reference": size / 1e9,
                     "unit": "GB", "ratio": size / 1e9 / peak, "target": 1.5,
                     "met": "met" if peak < 1.5 else "NOT met", "note": "reference: the file size; data is memory-mapped"})


def _read_all(path: Path) -> None:
    with open(path, "rb") as f:
        while f.read(1 << 24):
            pass


# ---- the table ------------------------------------------------------------------------------

def machine() -> str:
    return (f"{platform.machine()}, {os.cpu_count()} cores, {torch.get_num_threads()} torch threads, "
            f"torch {torch.__version__}, python {platform.python_version()}")


def print_table() -> None:
    print(f"\nmachine: {machine()}\n")
    print("| row | ours | reference (same run) | ratio | target | notes |")
    print("|---|---|---|---|---|---|")
    for r in ROWS:
        tgt = r["target"] if r["target"] is not None else r.get("target_ratio")
        if r.get("target_text"):
            tgt_s = r["target_text"]
        elif r.get("target_ratio") and r["target"] is None:
            met = "met" if r["ratio"] >= r["target_ratio"] else "NOT met"
            tgt_s = f"x{r['target_ratio']:g}: {met}"
        elif tgt is not None:
            tgt_s = f"{tgt:g}: {r['met']}"
        else:
            tgt_s = "report"
        if math.isnan(r["ours"]):
            print(f"| {r['row']} | - | - | - | - | {r['note']} |")
            continue
        ref = "-" if math.isnan(r["reference"]) else f"{_fmt(r['reference'], r['unit'])} {r['unit']}"
        ratio = "-" if math.isnan(r["ratio"]) else f"x{r['ratio']:.3f}"
        print(f"| {r['row']} | {_fmt(r['ours'], r['unit'])} {r['unit']} | {ref} | {ratio} | {tgt_s} | {r['note']} |")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="skip the 10-minute row and the big corpus")
    ap.add_argument("--only", default="", help="comma-separated: ttq,ttq10,ttq-gpt,precision,throughput,gpu,sampling,"
                                               "eval,serve,big")
    ap.add_argument("--big-corpus", type=Path, default=None, help="a half-gigabyte text (make_linux.py --all)")
    ap.add_argument("--gpu-device", choices=["auto", "cuda", "mps", "cpu"], default="auto",
                    help="the GPU rows' device (auto: CUDA, else MPS, else skipped; cpu: a rehearsal of the code)")
    ap.add_argument("--gpu-small", action="store_true", help="GPU rows at a toy size (for rehearsals on a CPU)")
    args = ap.parse_args()
    only = set(filter(None, args.only.split(",")))

    def want(k):
        return (not only or k in only) and not (args.quick and k in ("ttq10", "big"))

    if want("throughput"):
        throughput(2, 50, 50, steps=16)
        throughput(3, 100, 100, steps=6)
    if want("gpu"):
        dev = gpu_device(args.gpu_device)
        size = dict(layers=1, hidden=64, batch=8, seq=20) if args.gpu_small else {}
        gpu_throughput(dev, **size, **({"repeats": 3} if args.gpu_small else {}))
        gpu_train_loop(dev, **size)
        gpu_graph_step(dev, **(dict(hidden=64, batch=8, seq=20) if args.gpu_small else {}))
    if want("sampling"):
        sampling(1, 1000)
        sampling(64, 200)
        transformer_sampling()
    if want("eval"):
        evaluation()
    if want("serve"):
        serving()
    if want("ttq"):
        # the best plain recipe of the 60 s sweep (time_to_quality.GRIDS "60s", "60s-2"; docs/notes.md)
        time_to_quality(60, "default", {"layers": 1, "hidden": 512, "dropout": 0.0, "lr": 8e-3, "precision": "bf16"},
                        1.50, 0.95)
    if want("ttq10"):
        # the best plain recipe of the 10-minute sweep (time_to_quality.GRIDS "10min" and its second round)
        time_to_quality(600, "large", {"layers": 2, "hidden": 512, "dropout": 0.2, "lr": 3e-3, "precision": "bf16"}, 1.40, 0.95)
    if want("ttq-gpt"):
        transformer_time_to_quality(60, GPT_60S["plain"], GPT_60S["charnn"], 0.97)
    if want("precision"):
        precision_speed()
    if want("big"):
        big_corpus(args.big_corpus)
    print_table()
    return 0


if __name__ == "__main__":
    sys.exit(main())
