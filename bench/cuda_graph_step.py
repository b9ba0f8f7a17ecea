"""The probe that led to `--cuda-graph`: can the default model's whole training step (forward,
backward, clipping, fused AdamW, the carried state) be captured in one CUDA graph, does it give
the eager step's numbers, and how much faster is it? On a GPU the default-size eager step is bound
by the host launching kernels (docs/notes.md). charnn's own version (charnn.cudagraph) keeps
the optimiser's step out of the graph; this probe measures the whole step in one.

    python bench/cuda_graph_step.py     # CUDA only; elsewhere it says so and exits 0

On an NVIDIA H200 (2026-12-04, torch 2.11): batch 32 x 32, eager 3.10 ms and graph 1.04 ms a
step, weights equal after 60 steps; batch 128, 3.45 and 1.20 ms, weights 1.3e-5 apart.
"""
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from charnn.config import RunConfig
from charnn.model import CharRNN

if not torch.cuda.is_available():
    print("cuda_graph_step: no CUDA here: nothing to measure")
    sys.exit(0)
dev, sync = "cuda", torch.cuda.synchronize
cfg = RunConfig()
m_cfg = cfg.model
print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}; model {m_cfg}", flush=True)
K = 60


def build(batch):
    torch.manual_seed(0)
    m = CharRNN(m_cfg).to(dev).train()
    opt = torch.optim.AdamW(m.parameters(), lr=torch.tensor(2e-3, device=dev), weight_decay=0.1,
                            fused=True, capturable=True)
    h = m.init_state(batch)
    return m, opt, h


def body(m, opt, x, y, state):
    opt.zero_grad(set_to_none=True)
    loss, st = m.loss(x, y, state)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(m.parameters(), 5.0, foreach=True)
    opt.step()
    return loss.detach(), tuple(s.detach() for s in st) if isinstance(st, tuple) else st.detach()


for batch in (32, 128):
    T = cfg.train.seq_len
    torch.manual_seed(1)
    data = torch.randint(0, m_cfg.vocab_size, (K + 400, batch, T + 1), device=dev)
    # eager, K steps
    m, opt, st = build(batch)
    for i in range(K):
        loss_e, st = body(m, opt, data[i, :, :-1], data[i, :, 1:], st)
    w_e = [p.detach().clone() for p in m.parameters()]

    def eager(n, m=m, opt=opt):
        s = m.init_state(batch)
        for i in range(n):
            _, s = body(m, opt, data[i, :, :-1], data[i, :, 1:], s)
        sync()

    # the same K steps from the same weights: 3 eager warm-up steps on a side stream (cuDNN, cuBLAS and
    # the optimiser's state are set up outside the capture), then one captured step replayed
    try:
        m2, opt2, st2 = build(batch)
        sx = torch.empty(batch, T, dtype=torch.long, device=dev); sy = torch.empty_like(sx)
        sst = tuple(s.clone() for s in st2)
        s_ = torch.cuda.Stream(); s_.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(s_):
            for i in range(3):
                sx.copy_(data[i, :, :-1]); sy.copy_(data[i, :, 1:])
                _, out = body(m2, opt2, sx, sy, sst)
                for a, b in zip(sst, out): a.copy_(b)
        torch.cuda.current_stream().wait_stream(s_)
        g = torch.cuda.CUDAGraph()
        opt2.zero_grad(set_to_none=True)
        with torch.cuda.graph(g):
            loss_g, out = m2.loss(sx, sy, sst)
            loss_g.backward()
            torch.nn.utils.clip_grad_norm_(m2.parameters(), 5.0, foreach=True)
            opt2.step()
            with torch.no_grad():
                for a, b in zip(sst, out): a.copy_(b)
        for i in range(3, K):
            sx.copy_(data[i, :, :-1]); sy.copy_(data[i, :, 1:])
            g.replay()
        sync()
        diff = max(float((a - b.detach()).abs().max()) for a, b in zip(w_e, m2.parameters()))
        print(f"batch {batch}: captured; after {K} steps loss eager {float(loss_e):.6f} graph {float(loss_g.detach()):.6f}, "
              f"max weight diff {diff:.2e}", flush=True)

        def graph(n):
            for i in range(n):
                sx.copy_(data[i, :, :-1]); sy.copy_(data[i, :, 1:])
                g.replay()
            sync()

        eager(10); graph(10)
        res = {}
        for rep in range(3):
            for name, f in (("eager", eager), ("graph", graph)):
                t0 = time.perf_counter(); f(300); res.setdefault(name, []).append((time.perf_counter() - t0) / 300)
        print(f"batch {batch} seq {T}: " + ", ".join(f"{k} {min(v)*1e3:.3f} ms/step (max {max(v)*1e3:.3f})"
                                                   for k, v in res.items()), flush=True)
    except Exception as e:
        import traceback; traceback.print_exc()
        print(f"batch {batch}: capture failed: {type(e).__name__}: {e}", flush=True)
