"""What each kind of device gets, decided by functions of the device type so that the choices for
CUDA and Apple MPS are tested here on the CPU."""

import contextlib
import math

import pytest
import torch

from charnn import devices
from charnn import distributed as dist_mod
from charnn.config import ModelConfig
from charnn.model import CharRNN


def test_mps_gets_the_per_tensor_gradient_norm_and_cpu_cuda_the_foreach_one():
    assert devices.foreach_ok("cpu") and devices.foreach_ok("cuda") and not devices.foreach_ok("mps")


def test_fused_adamw_only_where_this_torch_has_it(monkeypatch):
    monkeypatch.setattr(devices.torch, "__version__", "2.4.1+cu121")
    assert devices.fused_adamw_ok("cpu") and devices.fused_adamw_ok("cuda") and not devices.fused_adamw_ok("mps")
    monkeypatch.setattr(devices.torch, "__version__", "2.5.0")
    assert devices.fused_adamw_ok("mps")
    monkeypatch.setattr(devices.torch, "__version__", "2.3.1")
    assert not devices.fused_adamw_ok("cpu")


@pytest.mark.parametrize("device", ["cpu", "cuda", "mps"])
def test_fp32_builds_no_autocast_context_at_all(device):
    assert isinstance(devices.autocast(device, "fp32"), contextlib.nullcontext)  # MPS + torch < 2.5 would raise
    ctx = devices.autocast("cpu", "bf16")
    assert isinstance(ctx, torch.autocast) and ctx.fast_dtype == torch.bfloat16


def test_under_bf16_autocast_a_cpu_runs_the_recurrence_in_bf16_and_a_gpu_keeps_it_fp32():
    from charnn.model import fp32_recurrence

    assert fp32_recurrence("cuda") and fp32_recurrence("mps") and not fp32_recurrence("cpu")
    m = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=16, embed=8, vocab_size=11)).eval()
    seen = {}
    m.rnn.register_forward_hook(lambda mod, inp, out: seen.update(rnn_in=inp[0].dtype, rnn_out=out[0].dtype))
    with devices.autocast("cpu", "bf16"):
        logits, (h, c) = m(torch.zeros(2, 5, dtype=torch.long))
    assert seen["rnn_out"] == torch.bfloat16 and logits.dtype == torch.bfloat16  # oneDNN's bf16 RNN
    assert all(p.dtype == torch.float32 for p in m.parameters())  # the weights stay fp32 masters
    logits32, (h32, _) = m(torch.zeros(2, 5, dtype=torch.long))
    assert logits32.dtype == torch.float32 and seen["rnn_out"] == torch.float32
    assert torch.allclose(h.float(), h32, atol=0.02)  # the same function, to bf16's precision


def _loss_and_grads(m, x, y, precision):
    """One fixed batch's loss and every weight's gradient, under `precision`'s autocast on the CPU."""
    m.zero_grad()
    with devices.autocast("cpu", precision):
        loss, _ = m.loss(x, y)
    loss.backward()
    return loss.item(), {k: p.grad.clone() for k, p in m.named_parameters()}


def test_bf16_gradients_are_fp32_gradients_to_bf16_precision():
    """One fixed batch through the whole model: the gradient of every weight under bf16 autocast
    (the recurrence in bf16 on a CPU) against fp32, within what bf16's 8-bit mantissa allows."""
    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="lstm", layers=2, hidden=64, embed=16, vocab_size=30))
    x, y = torch.randint(0, 30, (8, 40)), torch.randint(0, 30, (8, 40))

    l32, g32 = _loss_and_grads(m, x, y, "fp32")
    l16, g16 = _loss_and_grads(m, x, y, "bf16")
    assert abs(l16 - l32) < 0.01 * l32
    for k in g32:
        rel = (g16[k] - g32[k]).norm() / g32[k].norm()
        assert rel < 0.05, (k, float(rel))
        assert g16[k].dtype == torch.float32


def test_under_bf16_autocast_a_cpu_transformer_attends_in_fp32_and_multiplies_in_bf16(monkeypatch):
    """The CPU's bf16 flash attention is ~3x slower backward than fp32 (transformer.attend): the
    attention gets fp32 inputs, the linear layers stay bf16, and the gradients are fp32's to bf16's
    precision; a GPU keeps bf16 attention."""
    from charnn import transformer

    torch.manual_seed(0)
    m = transformer.CharTransformer(ModelConfig(cell="transformer", layers=2, heads=4, embed=32, hidden=32, block=16,
                                                dropout=0.0, vocab_size=30))
    x, y = torch.randint(0, 30, (4, 16)), torch.randint(0, 30, (4, 16))
    seen = []
    real = transformer.F.scaled_dot_product_attention
    monkeypatch.setattr(transformer.F, "scaled_dot_product_attention",
                        lambda q, k, v, **kw: seen.append(q.dtype) or real(q, k, v, **kw))
    linear = []
    m.blocks[0].attn.qkv.register_forward_hook(lambda mod, inp, out: linear.append(out.dtype))

    l16, g16 = _loss_and_grads(m, x, y, "bf16")
    assert seen == [torch.float32, torch.float32] and linear == [torch.bfloat16]
    l32, g32 = _loss_and_grads(m, x, y, "fp32")
    assert abs(l16 - l32) < 0.01 * l32
    for k in g32:
        assert (g16[k] - g32[k]).norm() / g32[k].norm() < 0.05, k
    q = torch.empty(1, 2, 4, 8, dtype=torch.bfloat16, device="meta")  # off the CPU bf16 goes through as it is
    seen.clear()
    assert transformer.attend(q, q, q, None, 0.0, True).dtype == torch.bfloat16 and seen == [torch.bfloat16]


def test_rng_states_are_restored_per_rank_with_numeric_ranks():
    from charnn.trainer import _restore_rng, _rng_tensors

    per_rank = []
    for r in range(12):  # rank 10 must not be taken for rank 1 ("rng.10" sorts before "rng.2")
        torch.manual_seed(100 + r)
        per_rank.append({"cpu": torch.get_rng_state()})
    tensors = _rng_tensors(per_rank)
    _restore_rng(tensors, rank=10, world=12, device_type="cpu")
    assert torch.equal(torch.get_rng_state(), per_rank[10]["cpu"])
    _restore_rng(tensors, rank=2, world=12, device_type="cpu")
    assert torch.equal(torch.get_rng_state(), per_rank[2]["cpu"])
    torch.manual_seed(7)
    before = torch.get_rng_state()
    _restore_rng(tensors, rank=3, world=4, device_type="cpu")  # saved by 12 processes, resumed by 4
    assert torch.equal(torch.get_rng_state(), before)  # rank 3 keeps its fresh stream


def test_a_cpu_run_never_touches_cuda(monkeypatch):
    monkeypatch.setattr(torch.cuda, "get_rng_state", lambda *a: pytest.fail("CUDA asked on a CPU run"))
    assert set(devices.rng_states("cpu")) == {"cpu"}


def test_torchrun_refuses_mps_and_more_processes_than_gpus(monkeypatch):
    from charnn.errors import CharnnError

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    monkeypatch.setenv("LOCAL_RANK", "1")
    monkeypatch.setenv("LOCAL_WORLD_SIZE", "2")
    d = dist_mod.Dist()
    with pytest.raises(CharnnError, match="torchrun cannot share Apple's MPS"):
        d.device(torch.device("mps"))
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(CharnnError, match="2 processes on this machine but only 1 GPU; use torchrun --nproc_per_node 1"):
        d.device(torch.device("cuda"))


def test_batches_are_pinned_only_for_cuda_and_evaluation_reads_more_streams_on_a_gpu():
    assert devices.pin_ok("cuda") and not devices.pin_ok("cpu") and not devices.pin_ok("mps")
    assert devices.eval_streams("cpu") == 64
    assert devices.eval_streams("cuda") > 64 and devices.eval_streams("mps") > 64


class _ReadBacks:
    """Counts what stalls a GPU: scalar reads (.item(), float(t), bool(t) all dispatch
    aten._local_scalar_dense) and calls of Tensor.cpu()."""

    def __init__(self, monkeypatch):
        from torch.utils._python_dispatch import TorchDispatchMode

        self.scalars = self.cpu = 0
        outer = self

        class Mode(TorchDispatchMode):
            def __torch_dispatch__(self, func, types, args=(), kwargs=None):
                if func is torch.ops.aten._local_scalar_dense.default:
                    outer.scalars += 1
                return func(*args, **(kwargs or {}))

        real_cpu = torch.Tensor.cpu

        def counted(t, *a, **k):
            self.cpu += 1
            return real_cpu(t, *a, **k)

        monkeypatch.setattr(torch.Tensor, "cpu", counted)
        self.mode = Mode()


def test_evaluation_reads_back_once_however_many_windows(monkeypatch):
    import numpy as np

    from charnn.evaluate import char_losses, evaluate

    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="lstm", layers=1, hidden=16, embed=8, vocab_size=7)).eval()
    ids = np.random.default_rng(0).integers(0, 7, 5000)
    rb = _ReadBacks(monkeypatch)
    with rb.mode:
        score = evaluate(m, ids, streams=4, seq_len=32)  # 40 windows
    assert score.chars == 4999 and rb.scalars == 1 and rb.cpu == 0
    rb.scalars = 0
    with rb.mode:
        nll = char_losses(m, ids, streams=4, seq_len=32)
    assert rb.scalars == 0 and rb.cpu == 1
    assert abs(np.nanmean(nll) - score.loss) < 1e-5


@pytest.mark.parametrize("temperature", [0.0, 1.0])
def test_sampling_makes_one_device_to_host_copy_per_character(monkeypatch, temperature):
    from charnn.sample import generate
    from charnn.vocab import Vocab

    torch.manual_seed(0)
    m = CharRNN(ModelConfig(cell="gru", layers=2, hidden=16, embed=8, vocab_size=5)).eval()
    vocab = Vocab([10, 97, 98, 99, 100])
    rb = _ReadBacks(monkeypatch)
    with rb.mode:
        out = list(generate(m, vocab, prime="ab", length=30, num=3, seed=1, temperature=temperature))
    assert len(out) == 30 and rb.cpu == 30 and rb.scalars == 0


def test_sums_kept_on_the_device_are_float64_except_on_mps_which_has_none():
    assert devices.wide_float("cpu") == devices.wide_float("cuda") == torch.float64
    assert devices.wide_float("mps") == torch.float32


class _OnMPS(torch.Tensor):
    """A CPU tensor that acts like one on Apple MPS in the way that crashes there: no operation
    on it may give float64. `.cpu()` hands back a plain tensor, as a copy to the host would."""

    @classmethod
    def __torch_function__(cls, func, types, args=(), kwargs=None):
        if func is torch.Tensor.cpu:
            return args[0].as_subclass(torch.Tensor).clone()
        out = super().__torch_function__(func, types, args, kwargs)
        for t in (out if isinstance(out, (tuple, list)) else [out]):
            if isinstance(t, torch.Tensor) and t.dtype == torch.float64:
                raise AssertionError(f"{func} gave float64 on an MPS tensor (Apple's MPS has no float64)")
        return out


def test_the_mps_stand_in_refuses_float64():
    with pytest.raises(AssertionError, match="float64"):
        torch.zeros(3).as_subclass(_OnMPS).double()
    assert torch.zeros(3).as_subclass(_OnMPS).cpu().double().dtype == torch.float64


@pytest.mark.parametrize("temperature,top_k,top_p", [(0.0, 0, 1.0), (1.0, 0, 1.0), (0.7, 3, 0.9)])
def test_sampling_never_asks_the_device_for_float64(temperature, top_k, top_p):
    from charnn.sample import sample_next

    logits = torch.randn(2, 7).as_subclass(_OnMPS)
    ids = sample_next(logits, torch.Generator().manual_seed(0), temperature, top_k, top_p)
    assert ids.shape == (2,) and type(ids) is torch.Tensor  # drawn on the host


def test_training_and_evaluation_keep_no_float64_on_an_mps_device(text_file, tmp_path, monkeypatch):
    """The training loop and evaluation on the CPU, with their device-side sums in the dtype
    chosen for MPS: then no operation may produce float64 (a .double() added on the device path,
    which would crash on a Mac, fails here) except the snapshot sampler's, which works on its
    copy on the host and is handed logits that refuse float64 (see _OnMPS)."""
    from torch.utils._python_dispatch import TorchDispatchMode

    from charnn import evaluate as evaluate_mod
    from charnn import sample as sample_mod
    from charnn import trainer as train_mod
    from helpers import tiny_config

    seen, host = [], []
    real_sample_next = sample_mod.sample_next

    def on_host(logits, *a, **k):
        host.append(1)
        try:
            return real_sample_next(logits.as_subclass(_OnMPS), *a, **k)
        finally:
            host.pop()

    class Float64Watch(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if not host and any(isinstance(t, torch.Tensor) and t.dtype == torch.float64
                                for t in (out if isinstance(out, (tuple, list)) else [out])):
                seen.append(str(func))
            return out

    monkeypatch.setattr(sample_mod, "sample_next", on_host)
    for mod in (train_mod, evaluate_mod):
        monkeypatch.setattr(mod, "wide_float", lambda device_type: devices.wide_float("mps"))
    with Float64Watch():
        res = train_mod.train(tiny_config(text_file, max_steps=25, eval_every=20), tmp_path / "run", progress=False)
    assert res.steps == 25 and math.isfinite(res.best_val_loss)
    assert seen == []
    # and the watch does see what the CPU's own choice (float64) makes
    for mod in (train_mod, evaluate_mod):
        monkeypatch.setattr(mod, "wide_float", devices.wide_float)
    with Float64Watch():
        train_mod.train(tiny_config(text_file, max_steps=12, eval_every=10), tmp_path / "run2", progress=False)
    assert seen


def test_precision_auto_is_bf16_only_on_a_cpu_with_bf16_units(monkeypatch):
    from charnn.config import PRESETS

    assert devices.resolve_precision("fp32", "cpu") == "fp32" and devices.resolve_precision("bf16", "cuda") == "bf16"
    assert devices.resolve_precision("auto", "cuda") == "fp32" and devices.resolve_precision("auto", "mps") == "fp32"
    monkeypatch.setattr(devices.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: True)
    assert devices.resolve_precision("auto", "cpu") == "bf16"
    monkeypatch.setattr(devices.torch.ops.mkldnn, "_is_mkldnn_bf16_supported", lambda: False)
    assert devices.resolve_precision("auto", "cpu") == "fp32"  # emulated bf16 would be slower
    # chosen by measurement: at 60 s, and at 10 minutes (docs/notes.md, docs/transformer-benchmarks.md)
    measured = ("default", "large", "long", "gpt-muon")
    assert all(PRESETS[k]["train"]["precision"] == "auto" for k in measured)
    assert all(p.get("train", {}).get("precision", "fp32") == "fp32" for k, p in PRESETS.items() if k not in measured)
