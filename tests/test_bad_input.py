"""The bad-input catalogue: every way a user can get a command wrong ends in one line on stderr,
a non-zero exit code, no traceback, nothing on stdout, and every file of theirs as it was."""

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from helpers import cache_at, learnable_text
from helpers import TINY, charnn


def _rewrite(src: Path, dst: Path, config=None, drop_config=False, tensor=None):
    """A copy of checkpoint src with its metadata or one tensor changed, saved without a checksum
    check (as a crafted or damaged file would be)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(src), "pt") as f:
        md, tensors = dict(f.metadata()), {k: f.get_tensor(k) for k in f.keys()}
    if config:
        c = json.loads(md["config"])
        c["model"].update(config)
        md["config"] = json.dumps(c)
    if drop_config:
        del md["config"]
    if tensor:
        name, fn = tensor
        tensors[name] = fn(tensors[name])
        md.pop("checksum")  # a consistent file whose weights are bad
    save_file(tensors, str(dst), metadata=md)


@pytest.fixture(scope="module")
def d(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    with cache_at(d / "cache"):
        (d / "text.txt").write_text(learnable_text())
        r = charnn("train", d / "text.txt", "--out", d / "run", *TINY, "--max-steps", "40", "--eval-every", "20",
                   "--samples", "0")
        assert r.returncode == 0, r.stderr
        r = charnn("train", d / "text.txt", "--out", d / "other", *TINY, "--max-steps", "20", "--samples", "0")
        assert r.returncode == 0, r.stderr
        r = charnn("train", d / "text.txt", "--out", d / "trun", "--cell", "transformer", "--layers", "1", "--embed", "16",
                   "--heads", "2", "--block", "16", "--max-steps", "5", "--samples", "0", "--threads", "1", "--quiet")
        assert r.returncode == 0, r.stderr
        (d / "bad.txt").write_bytes(b"abc \xc3\x28 def")
        (d / "binary.bin").write_bytes(bytes(range(256)) * 4)
        (d / "unknown.txt").write_text("QQQ")
        (d / "empty.txt").write_text("")
        (d / "samples.txt").write_text("one two three.\n" * 10)
        last = d / "run" / "last.safetensors"
        good = last.read_bytes()
        flipped = bytearray(good)
        flipped[-3] ^= 0x10
        (d / "flipped.safetensors").write_bytes(bytes(flipped))
        (d / "cut.safetensors").write_bytes(good[: len(good) // 2])
        _rewrite(last, d / "huge.safetensors", config={"hidden": 6000})
        _rewrite(last, d / "giant.safetensors", config={"hidden": 10**9})
        _rewrite(last, d / "noconfig.safetensors", drop_config=True)
        _rewrite(last, d / "nan.safetensors", tensor=("model.head.bias", lambda t: t * float("nan")))
        (d / "notes.safetensors").write_bytes(b"my notes, not a checkpoint")
        (d / "onlybest").mkdir()
        shutil.copy(d / "run" / "best.safetensors", d / "onlybest" / "best.safetensors")
        shutil.copytree(d / "run", d / "foreign")
        shutil.copy(d / "other" / "last.safetensors", d / "foreign" / "last.safetensors")
        (d / "a_file").write_text("not a folder")
        return d


T = ["train", "{d}/text.txt", "--out", "{d}/o"]
CATALOGUE = [
    # train: the text
    (["train", "{d}/missing.txt", "--out", "{d}/o"], "no such file or folder"),
    (["train", "{d}/bad.txt", "--out", "{d}/o"], "not valid UTF-8 at byte offset 4; pass --encoding-errors replace"),
    (["train", "{d}/empty.txt", "--out", "{d}/o"], "empty"),
    # train: flags
    (T + ["--cell", "tree"], "invalid choice"),
    (T + ["--documents", "("], "--documents '(' is not a valid regular expression"),
    (T + ["--documents", "^Chapter [IVX]+$"], "matches nothing in the text, so there are no documents"),
    (T + ["--documents", ""], "argument --documents: it is empty: give line, blank or a regular expression"),
    (T + ["--documents", "x*"], "so every document would be a character or two"),
    (["evaluate-samples", "--train", "{d}/text.txt", "--documents", " ", "{d}/text.txt"], "--documents: it is empty"),
    (T + ["--documents", "line", "--unit", "bytes"], "--documents reads characters (--unit char)"),
    (T + ["--documents", "line", "--max-document", "5"], "is over --max-document 5: check that --documents 'line'"),
    (T + ["--documents", "line", "--max-document", "0"], "--max-document must be from 1 to 10,000,000 characters"),
    (["sample", "{d}/run", "--prime-file", "{d}/nothing.txt"], "nothing.txt: no such file"),
    (["sample", "{d}/run", "--prime-file", "{d}"], "is a folder; give a text file"),
    (["sample", "{d}/run", "--num", "1000000000"], "at most 10,000 samples are drawn together"),
    (["sample", "{d}/run", "--beam", "4", "--length", "100000000"], "--length with --beam must be from 0 to 10,000"),
    (["sample", "{d}/run", "--prime-file", "/dev/null"], "/dev/null is not a regular file"),
    (["sample", "{d}/run", "--prime-file", "{d}/bad.txt"], "is not UTF-8 text"),
    (["sample", "{d}/run", "--prime-file", "{d}/samples.txt", "--prime", "x"], "give --prime TEXT or --prime-file"),
    (["sample", "{d}/run", "--beam", "100"], "--beam must be from 1 to 64"),
    (["sample", "{d}/run", "--documents", "3"], "this run was trained on one stream of text, not on documents"),
    (T + ["--documents", "line", "--label", "^one"], "has no group: put the label in parentheses"),
    (T + ["--label", "^(one)"], "--label and --labels label documents: give --documents SPLIT too"),
    (T + ["--documents", "line", "--label", "^(six)"], "matches no document (or only empty groups)"),
    (T + ["--documents", "line", "--label", "^(one)"], "every labelled document has the label 'one'"),
    (T + ["--documents", "line", "--labels", "{d}/samples.txt"], "has 10 lines but the text has 400 documents"),
    (["sample", "{d}/run", "--label", "one"], "--label: this run was trained without labels"),
    (["attribute", "{d}/run", "{d}/samples.txt"], "was trained without labels; attribution needs --documents"),
    (["attribute", "{d}/run", "{d}/samples.txt", "--calibrate", "500"], "--calibrate 500: at most 100 reference"),
    (["attribute", "--eval", "{d}/text.txt", "--documents", "line", "--label", "^(a)", "--out", "{d}/att", "--preset",
      "huge"], "unknown preset 'huge'"),
    (T + ["--cell", "transformer", "--heads", "3"], "--heads 3 does not divide the transformer's width --embed 128"),
    (T + ["--cell", "transformer", "--block", "100000"], "--block 100000 is longer than the training split"),
    (T + ["--cell", "transformer", "--hidden", "64"], "a transformer's width is --embed (128): drop --hidden"),
    (T + ["--cell", "transformer", "--seq-len", "32"], "--seq-len (32) must equal --block (64)"),
    (T + ["--cell", "transformer", "--weight-drop", "0.1"], "--weight-drop: for recurrent cells only"),
    (T + ["--heads", "4"], "--cell lstm has neither"),
    (T + ["--preset", "gpt-cpu", "--cell", "gru"], "--cell gru has neither"),
    (T + ["--windows", "random"], "use --windows streams (the default) with a recurrent cell"),
    (T + ["--max-time", "10x"], "invalid duration"),
    (T + ["--checkpoint-every", "soon"], "invalid duration"),
    (T + ["--split", "0.5,0.5"], "three fractions"),
    (T + ["--split", "0.5,0.3,0.3"], "add up to 1"),
    (T + ["--split", "0,0.5,0.5"], "TRAIN > 0"),
    (T + ["--dropout", "1.5"], "--dropout must be in"),
    (T + ["--dropout", "-0.1"], "--dropout must be in"),
    (T + ["--lr", "0"], "--lr must be positive"),
    (T + ["--lr", "nan"], "expected a finite number"),
    (T + ["--hidden", "0"], "--hidden must be a positive"),
    (T + ["--layers", "two"], "expected a whole number"),
    (T + ["--batch-size", "0"], "--batch-size must be a positive"),
    (T + ["--seq-len", "0"], "--seq-len must be a positive"),
    (T + ["--eval-every", "0"], "--eval-every must be a positive"),
    (T + ["--max-epochs", "-1"], "--max-epochs must not be negative"),
    (T + ["--grad-clip", "-1"], "--grad-clip must not be negative"),
    (T + ["--weight-decay", "-1"], "--weight-decay must not be negative"),
    (T + ["--seed", "99999999999999999999999"], "--seed must be a whole number from 0 to 9223372036854775807"),
    (T + ["--ema", "1.5"], "--ema must be 0 (off) or between 0 and 1"),
    (T + ["--min-lr-frac", "1.5"], "--min-lr-frac must be from 0 to 1"),
    (T + ["--optimizer", "muon", "--muon-ns-steps", "0"], "--muon-ns-steps must be a whole number from 1 to 10"),
    (T + ["--optimizer", "muon", "--muon-ns-steps", "100"], "--muon-ns-steps must be a whole number from 1 to 10"),
    (T + ["--optimizer", "adamw", "--muon-ns-steps", "3"], "--muon-ns-steps sets Muon's iterations, and this run"),
    (T + ["--optimizer", "adamw", "--muon-gates"], "--muon-gates sets how Muon steps the recurrent matrices, and this run"),
    (T + ["--seed", "-5"], "expected a number >= 0"),
    (T + ["--preset", "huge"], "unknown preset"),
    (T + ["--device", "cuda"], "no CUDA GPU"),
    (T + ["--init-from", "{d}/nothing"], "no such run directory"),
    (T + ["--init-from", "{d}/run", "--hidden", "64"], "--init-from takes the model's shape"),
    # train: the run directory
    (["train", "{d}/text.txt", "--out", "{d}/run"], "already holds a run; pass --resume"),
    (["train", "{d}/text.txt", "--out", "{d}/a_file"], "is a file, not a run directory"),
    (["train", "{d}/text.txt", "--out", "{d}/a_file/sub"], "cannot create the run directory"),
    (["train", "--resume", "--out", "{d}/nothing"], "holds no last.safetensors"),
    (["train", "--resume", "--out", "{d}/foreign"], "belongs to another run"),
    (["train", "{d}/samples.txt", "--out", "{d}/run", "--resume"], "differ from it: --text (saved"),
    (["train", "--resume", "--out", "{d}/run", "--hidden", "64"], "--hidden (saved 32, given 64)"),
    (["train", "--resume", "--out", "{d}/run", "--lr", "1"], "--lr (saved 0.01, given 1)"),
    # sample
    (["sample", "{d}/nothing"], "no such run directory"),
    (["sample", "{d}/run", "--prime", "XYZ"], "never seen 3 characters: 'X', 'Y', 'Z'"),
    (["sample", "{d}/run", "--temperature", "-1"], "--temperature must be"),
    (["sample", "{d}/run", "--temperature", "hot"], "expected a number"),
    (["sample", "{d}/run", "--top-p", "0"], "--top-p must be in (0, 1]"),
    (["sample", "{d}/run", "--top-k", "-1"], "expected a number >= 0"),
    (["sample", "{d}/run", "--length", "many"], "expected a whole number"),
    (["sample", "{d}/run", "--clamp", "0:99999=0.5"], "cell 99999 does not exist"),
    (["sample", "{d}/run", "--checkpoint", "step:7"], "kept no checkpoint at step 7; it kept none"),
    (["sample", "{d}/run", "--checkpoint", "middle"], "invalid checkpoint 'middle'"),
    (["analyze", "dynamics", "{d}/run", "--out", "{d}/dyn"], "kept no checkpoints over training"),
    (["analyze", "dynamics", "{d}/run", "--out", "{d}/dyn", "--orders", "0-3"], "orders run from 1 to 20"),
    (["sample", "{d}/run", "--clamp", "0:1=high"], "is not LAYER:CELL=VALUE"),
    (["sample", "{d}/trun", "--clamp", "0:64=0.5"], "neuron 64 does not exist; layers have neurons 0 to 63"),
    (["sample", "{d}/trun", "--clamp", "0:1=50"], "a transformer's MLP neuron is held at a value between -10 and 10"),
    (["inspect", "saturation", "{d}/trun", "--out", "{d}/sat"], "a transformer has no gates"),
    (["inspect", "ablate", "{d}/trun"], "say what to silence: --cells"),
    (["inspect", "ablate", "{d}/run", "--heads", "0:1"], "--heads silences a transformer's attention heads"),
    (["inspect", "ablate", "{d}/trun", "--heads", "0:2"], "--heads 0:2: this model has layers 0..0 and heads 0..1"),
    (["inspect", "ablate", "{d}/trun", "--cells", "0:64"], "and MLP neurons 0..63 per layer"),
    (["inspect", "ablate", "{d}/trun", "--heads", "0:1", "--mode", "mean"], "--heads are silenced by zeroing"),
    (["inspect", "ablate", "{d}/trun", "--cells", "0:1", "--mode", "value:11"], "between -10 and 10"),
    (["serve", "{d}/nothing"], "not a run directory"),
    (["export", "{d}/run", "--out", "{d}/no/such/folder"], "does not exist"),
    (["export", "{d}/run", "--out", "{d}/samples.txt"], "is a file"),
    (["sample", "{d}/onlybest", "--checkpoint", "last"], "holds no last.safetensors (only best.safetensors)"),
    (["sample", "{d}/flipped.safetensors"], "is damaged: its tensors do not match the checksum"),
    (["sample", "{d}/cut.safetensors"], "it is damaged, cut short or not a checkpoint"),
    (["sample", "{d}/huge.safetensors"], "do not fit its own configuration (lstm 1x6000"),
    (["sample", "{d}/giant.safetensors"], "do not fit its own configuration (lstm 1x1000000000"),
    (["sample", "{d}/noconfig.safetensors"], "has no config in its metadata"),
    (["sample", "{d}/nan.safetensors"], "holds non-finite weights (NaN or inf in head.bias)"),
    (["sample", "{d}/notes.safetensors"], "cannot read checkpoint"),
    # eval and info
    (["eval", "{d}/run", "--text", "{d}/missing.txt"], "no such file or folder"),
    (["eval", "{d}/run", "--text", "{d}/bad.txt"], "not valid UTF-8 at byte offset 4; this model reads Unicode"),
    (["eval", "{d}/run", "--text", "{d}/binary.bin"], "it can only score UTF-8 text"),
    (["eval", "{d}/run", "--text", "{d}/unknown.txt"], "has 1 character: 'Q' that the model's vocabulary lacks"),
    (["eval", "{d}/run", "--split", "nope"], "invalid choice"),
    (["eval", "{d}/nan.safetensors"], "holds non-finite weights"),
    (["info", "{d}/text.txt"], "cannot read checkpoint"),
    (["info", "{d}/flipped.safetensors"], "is damaged"),
    (["check", "{d}/nothing"], "no such run directory"),
    # the analyses
    (["inspect", "cells", "{d}/run", "--out", "{d}/a_file/page.html"], ""),
    (["inspect", "cells", "{d}/nothing", "--out", "{d}/page.html"], "no such run directory"),
    (["ngram", "{d}/missing.txt", "--order", "3"], "no such file or folder"),
    (["ngram", "{d}/text.txt", "--order", "0"], "order"),
    (["grid", "{d}/text.txt", "--out", "{d}/g", "--cells", "lstm,tree"], "tree"),
    (["evaluate-samples", "{d}/missing.txt", "--train", "{d}/text.txt"], "missing.txt"),
    ([], "usage"),
]


def _snapshot(d: Path) -> dict:
    """Every file under d and its hash; a run's .lock (which holds the PID of the last trainer to
    open the run, and is kept so that two trainers always lock the same file) aside."""
    return {str(p.relative_to(d)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(d.rglob("*")) if p.is_file() and "cache" not in p.parts and p.name != ".lock"}


def test_the_catalogue_is_large():
    assert len(CATALOGUE) >= 40


@pytest.mark.parametrize("args,message", CATALOGUE, ids=[" ".join(a[:1] + a[4:6] if a[:1] == ["train"] else a[:2])
                                                         + "|" + m for a, m in CATALOGUE])
@pytest.mark.slow
def test_bad_input_is_one_clear_line(d, args, message):
    if "cuda" in args and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    before = _snapshot(d)
    r = charnn(*[a.format(d=d) for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert "Traceback" not in r.stderr
    if args:
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert r.stdout == ""
    assert message in r.stderr, r.stderr
    assert _snapshot(d) == before  # nothing of the user's is touched, nothing new is left
    assert not (d / "o").exists()


@pytest.mark.slow
def test_too_many_threads_are_capped_with_a_warning(d, tmp_path):
    r = charnn("train", d / "text.txt", "--out", tmp_path / "r", *TINY, "--threads", "100000", "--max-steps", "3",
               "--samples", "0")
    assert r.returncode == 0, r.stderr
    assert f"--threads 100000 is more than this machine's {os.cpu_count()} cores; using {os.cpu_count()}" in r.stderr


@pytest.mark.slow
def test_a_full_disk_is_one_line_and_keeps_the_last_checkpoint(d, tmp_path):
    """RLIMIT_FSIZE makes every write past 60 KB fail as a full disk does (Python ignores SIGXFSZ)."""
    import resource

    shutil.copytree(d / "run", tmp_path / "run")
    before = (tmp_path / "run" / "last.safetensors").read_bytes()
    assert len(before) > 60_000

    def limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (60_000, 60_000))

    r = subprocess.run([sys.executable, "-m", "charnn", "train", "--resume", "--out", str(tmp_path / "run"),
                        "--max-steps", "60", "--quiet", "--samples", "0"], capture_output=True, text=True,
                       preexec_fn=limit, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "(the previous one is kept): File too large" in r.stderr
    assert (tmp_path / "run" / "last.safetensors").read_bytes() == before
    assert not list((tmp_path / "run").glob(".*.tmp"))
    r = charnn("train", "--resume", "--out", tmp_path / "run", "--max-steps", "60", "--quiet", "--samples", "0")
    assert r.returncode == 0 and "after 60 steps" in r.stderr  # with space again, it continues
