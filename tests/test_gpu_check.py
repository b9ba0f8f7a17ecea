"""`make gpu-check` runs on a GPU only when a session is lent one (first on an H200, 2026-12-04);
here its every check runs on the CPU instead (`--device cpu`), so that the script itself (its
commands, its parsing, its verdicts) is known to work before a GPU session spends its few minutes
on it."""

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
import gpu_check  # noqa: E402

from charnn.config import ModelConfig  # noqa: E402
from charnn.model import CharRNN  # noqa: E402

CHECKS = ["train fp32", "train bf16", "bf16 autocast runs the recurrence as charnn's rule says",
          "resumed equals a straight run (no dropout, 2 layers)", "resumed equals a straight run (dropout 0.1, 1 layer)",
          "sample (the same seed twice", "torchrun over 2 cpu processes", "bench GPU rows",
          "--cuda-graph trains the same run as without", "resumed equals a straight run (--cuda-graph, dropout 0.1"]


@pytest.mark.slow
def test_every_check_of_gpu_check_passes_when_rehearsed_on_the_cpu(capsys):
    rc = gpu_check.main(["--device", "cpu", "--steps", "60", "--hidden", "64"])
    out = capsys.readouterr().out
    verdicts = [x for x in out.splitlines() if x.startswith(("ok  ", "FAIL"))]
    assert rc == 0, out
    assert len(verdicts) == len(CHECKS) and all(x.startswith("ok  ") for x in verdicts), out
    for check, line in zip(CHECKS, verdicts):
        assert check in line, (check, line)
    assert "bit-identical" in verdicts[3] and "bit-identical" in verdicts[4] and "bit-identical" in verdicts[9]
    assert "max weight difference 0.00e+00" in verdicts[8]  # on the CPU the stand-in does the very same arithmetic
    assert f"gpu-check: {len(CHECKS)} of {len(CHECKS)} ok" in out


def test_without_a_gpu_it_says_so_and_exits_0(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(torch.backends.mps, "is_available", lambda: False)
    assert gpu_check.main([]) == 0
    assert "no GPU here" in capsys.readouterr().out


def test_the_bf16_check_sees_which_precision_the_recurrence_ran_in(monkeypatch):
    from charnn import model as model_module

    model = CharRNN(ModelConfig(cell="lstm", layers=1, hidden=16, embed=8, dropout=0.0, vocab_size=20)).eval()
    assert gpu_check.bf16_dtypes(model, "cpu")[:2] == (torch.bfloat16, torch.bfloat16)  # a CPU's rule: bf16
    # under a GPU's rule (the recurrence kept fp32) the check must see fp32
    monkeypatch.setattr(model_module, "fp32_recurrence", lambda device_type: True)
    assert gpu_check.bf16_dtypes(model, "cpu")[:2] == (torch.float32, torch.bfloat16)


@pytest.mark.slow
def test_a_refusal_under_torchrun_counts_as_one_line_despite_torchruns_own_traceback(tmp_path):
    """What a Mac's check of `torchrun ... --device mps` reads, seen here with --device cuda on a
    machine without CUDA: each rank's one line, then torchrun's own traceback of its child."""
    if torch.cuda.is_available():
        pytest.skip("needs a machine without CUDA")
    (tmp_path / "t.txt").write_text("hello world\n" * 200)
    r = gpu_check.charnn("train", tmp_path / "t.txt", "--out", tmp_path / "r", "--device", "cuda", "--max-steps", 5,
                         procs=2, timeout=300)
    assert r.returncode != 0 and "Traceback" in r.stderr  # torchrun's, not charnn's
    assert gpu_check.refused_in_one_line(r, "CUDA")
    assert not gpu_check.refused_in_one_line(r, "MPS")
    # a failed verdict prints charnn's own line, which a tail of the stderr (torchrun's summary) misses
    assert not any("charnn train: error:" in x for x in r.stderr.splitlines()[-8:])
    assert any(x.startswith("charnn train: error:") for x in gpu_check.what_it_said(r.stderr))
    r.stderr += '\nTraceback (most recent call last):\n  File "/x/src/charnn/train.py", line 1, in f\n'
    assert not gpu_check.refused_in_one_line(r, "CUDA")
