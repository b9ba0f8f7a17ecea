"""Break each feature in the smallest way and check that its tests notice: a test that still
passes when what it claims to test is switched off proves nothing.

Each mutant replaces one piece of source text with another in a temporary copy of the repository
and runs the tests that should catch it there; "caught" means they failed. Run with `make
mutants` (not part of CI: it takes a few minutes). Add a mutant for every new feature's tests.

    python scripts/mutants.py              # all mutants
    python scripts/mutants.py --only bf16  # the ones whose name contains "bf16"
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Mutant:
    name: str
    file: str  # under src/charnn
    old: str
    new: str
    tests: str  # a test file, optionally "::" nothing else; -k expression below
    k: str = ""


MUTANTS = [
    Mutant("bf16 autocast switched off", "devices.py", '    if precision == "bf16":\n',
           "    if False:\n", "tests/test_train.py", "bf16"),
    Mutant("a GPU's recurrence under bf16 autocast", "model.py", '    return device_type != "cpu"\n',
           "    return False\n", "tests/test_devices.py", "recurrence"),
    Mutant("a CPU's recurrence kept in fp32", "model.py", '    return device_type != "cpu"\n',
           "    return True\n", "tests/test_devices.py", "recurrence"),
    Mutant("foreach norm on MPS", "devices.py", 'return device_type in ("cpu", "cuda")\n',
           'return True\n', "tests/test_devices.py", "foreach"),
    Mutant("--compile does not compile", "trainer.py", "self.net = cast(torch.nn.Module, torch.compile(self.net))", "pass",
           "tests/test_train.py", "compiled"),
    Mutant("checkpoint written in place", "files.py", "    tmp = tmp_path(path)\n", "    tmp = path\n",
           "tests/test_checkpoint.py", "durable_rename or round_trip"),
    Mutant("no fsync before the rename", "files.py", "            f.flush()\n            os.fsync(f.fileno())\n"
           "        _fault(\"after-tmp\"", "            f.flush()\n        _fault(\"after-tmp\"",
           "tests/test_checkpoint.py", "durable_rename"),
    Mutant("evaluation without warm-up", "data.py", "warmup: int = 100, positions", "warmup: int = 0, positions",
           "tests/test_evaluate.py"),
    Mutant("snapshot novelty inverted", "samplestats.py", "(~train.contains(L, h)).mean()",
           "(train.contains(L, h)).mean()", "tests/test_train.py", "novel"),
    Mutant("minutes read as seconds", "cli/args.py", '{"h": 3600, "m": 60, "s": 1}', '{"h": 3600, "m": 1, "s": 1}',
           "tests/test_train.py", "duration"),
    Mutant("every rank trains the whole batch", "distributed.py", "return self.rank * per, per",
           "return 0, batch_size", "tests/test_distributed.py", "two_processes"),
    Mutant("logs not cut back on resume", "trainer.py",
           "                keep_lines(out / name, lambda line: json.loads(line).get(\"step\", 0) <= step)\n",
           "                pass\n", "tests/test_faults.py", "bit_identical and after_tmp_3"),
    Mutant("RNG not restored on resume", "trainer.py",
           "        _restore_rng(saved.tensors, self.dd.rank, self.dd.world, self.device.type)\n", "",
           "tests/test_train.py", "bit_identical"),
    Mutant("checksum not verified", "checkpoint.py", 'if "checksum" in md and checksum(raw) != md["checksum"]:',
           "if False:", "tests/test_checkpoint.py", "changed_byte"),
    Mutant("no run lock", "files.py", "            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)\n",
           "            pass\n", "tests/test_train.py", "one_trainer"),
    Mutant("a NaN loss goes on", "trainer.py", "new = (~torch.isfinite(loss) | (loss > DIVERGED_LOSS) | ~torch.isfinite(norm))",
           "new = (loss != loss) & (loss == loss)", "tests/test_train.py", "diverg"),
    Mutant("a read-back every step", "trainer.py", "        self._watch(loss, norm, st.step + 1)\n",
           "        self._watch(loss, norm, st.step + 1)\n        loss.item()\n",
           "tests/test_train.py", "reads_nothing"),
    Mutant("foreign checkpoint resumed", "trainer.py", "if saved.config.run_id and mine and saved.config.run_id != mine:",
           "if False:", "tests/test_train.py", "another_run"),
    Mutant("top-p keeps more than it should", "sample.py", "(probs.cumsum(-1) - probs) >= top_p",
           "(probs.cumsum(-1) - probs) >= top_p + 0.05", "tests/test_properties.py", "excluded"),
    Mutant("temperature off by 10%", "sample.py", "values) / temperature",
           "values) / (temperature * 1.1)", "tests/test_properties.py", "softmax"),
    Mutant("stop string across pieces missed", "sample.py", "            tail = tail[-len(stop) :]\n",
           "            tail = \"\"\n", "tests/test_sample.py", "stop"),
    Mutant("chars/s is 0 in the first second", "trainer.py",
           "                elif not settled:", "                elif False:", "tests/test_promises.py", "progress"),
    Mutant("second Ctrl-C ignored", "trainer.py", "        if self.signum:\n            raise KeyboardInterrupt\n", "",
           "tests/test_promises.py", "second_ctrl_c"),
    Mutant("evaluation reads the whole split during training", "trainer.py",
           "max_chars=t.eval_chars,", "max_chars=0,", "tests/test_train.py", "eval_chars"),
    Mutant("transformer cache positions restart at 0", "transformer.py",
           "pos = torch.arange(P, P + x.shape[1], device=x.device)", "pos = torch.arange(0, x.shape[1], device=x.device)",
           "tests/test_transformer.py", "cache_equals_the_full"),
    Mutant("transformer attention not causal", "transformer.py", "is_causal=not P and T > 1)", "is_causal=False)",
           "tests/test_transformer.py", "never_changes_the_logits_before"),
    Mutant("sliding window keeps no context", "transformer.py",
           "kv = self.trunk(ids, None, probe.edits() if probe else None)[1] if self.keep else None",
           "kv = None", "tests/test_transformer.py", "evaluation_equals or window_slides"),
    Mutant("recording pieces off the slide period", "inspect/activations.py", "align=cfg.block - model.keep",
           "align=1", "tests/test_units.py", "parallel_pieces"),
    Mutant("transformer clamp ignored when sampling", "transformer.py", "            if i in self.clamped:\n",
           "            if False:\n", "tests/test_units.py", "clamp_holds"),
    Mutant("muted head still speaks", "transformer.py", "            y[:, probe.mute[self.index]] = 0\n", "",
           "tests/test_units.py", "silencing_a_head"),
    Mutant("documents framed without their end symbol", "documents.py", 'return "".join(d + END for d in docs)',
           'return "".join(d for d in docs)', "tests/test_documents.py", "cuts_a_document or framing"),
    Mutant("documents split in file order", "documents.py", "order = np.random.default_rng(seed).permutation(len(docs)).tolist()",
           "order = list(range(len(docs)))", "tests/test_documents.py", "seeded_shuffle"),
    Mutant("the label never reaches the model", "model.py",
           "return model.embed(x % cfg.vocab_size) + model.label_embed(x // cfg.vocab_size)",
           "return model.embed(x % cfg.vocab_size)", "tests/test_labels.py", "alphabet"),
    Mutant("an end symbol carries its own document's label", "data.py",
           "out[e] += V * doc_labels[min(k + 1, len(doc_labels) - 1)]", "out[e] += V * doc_labels[k]",
           "tests/test_labels.py", "end_symbol"),
    Mutant("serve's cells read without the label asked for", "web/serve.py",
           "ids = chars + len(loaded.vocab) * label", "ids = chars + 0 * label", "tests/test_labels.py", "cells_in_the_label"),
    Mutant("a document over the cap taken", "documents.py", "    if lengths[k] > cap:", "    if lengths[k] > 10 * cap:",
           "tests/test_documents.py", "over_the_cap"),
    Mutant("a fold trains on what it scores", "attribution/folds.py",
           "tr = [known[j] for j in range(len(known)) if folds[j] != f]", "tr = list(known)",
           "tests/test_attribution.py", "never_scores"),
    Mutant("Delta without the z-scores", "attribution/folds.py", "float(np.abs((rates(d) - mu) / sd - cent[n]).mean())",
           "float(np.abs((rates(d) - mu) - cent[n] * sd).mean())", "tests/test_attribution.py", "definitions"),
    Mutant("Delta in squared distance", "attribution/folds.py", "float(np.abs((rates(d) - mu) / sd - cent[n]).mean())",
           "float((((rates(d) - mu) / sd - cent[n]) ** 2).mean())", "tests/test_attribution.py", "definitions"),
    Mutant("gzip distance not normalised", "attribution/folds.py", "- min(c, s)) / max(c, s)", "- min(c, s))",
           "tests/test_attribution.py", "definitions"),
    Mutant("gzip: the nearest decides, not the vote", "attribution/folds.py", "if votes[train[i][1]] == top))",
           "if True))", "tests/test_attribution.py", "definitions"),
    Mutant("snapshot steps ignored", "trainer.py", "if st.step in t.snapshot_steps or val is not None:",
           "if val is not None:", "tests/test_promises.py", "snapshots_at"),
    Mutant("a resumed run's curves keep the lost future", "curves.py",
           "purge_step=None if resumed_at is None else resumed_at + 1", "purge_step=None",
           "tests/test_curves.py", "resumed"),
    Mutant("gate saturation at 0.2 / 0.8", "inspect/saturation.py", "LOW, HIGH = 0.1, 0.9", "LOW, HIGH = 0.2, 0.8",
           "tests/test_inspect_analyses.py", "tenth"),
    Mutant("modified Kneser-Ney's D_k misweighted", "study/ngram.py", "d = [k - (k + 1) * y * n[k] / n[k - 1]",
           "d = [k - k * y * n[k] / n[k - 1]", "tests/test_ngram.py", "chen"),
    Mutant("the weight average takes d of the new weights", "trainer.py",
           "torch._foreach_lerp_(self.values, params, 1 - d)", "torch._foreach_lerp_(self.values, params, d)",
           "tests/test_train.py", "closed_form"),
    Mutant("the probe is scored on the half it was fitted on", "study/emergence.py", "    test = ~fit\n",
           "    test = fit\n", "tests/test_emergence.py", "shuffled"),
    Mutant("no fallback for discounts estimated at zero or below", "study/ngram.py", "    if min(d) <= 0:\n",
           "    if False:\n", "tests/test_ngram.py", "fall_back"),
    Mutant("Muon's part takes no matrices", "optim.py", "        hidden = p.dim() == 2 and", "        hidden = False and",
           "tests/test_optim.py"),
    Mutant("the composite's second part keeps the first's numbering", "optim.py",
           "state = dict(first[\"state\"]) | {i + n: s", "state = dict(first[\"state\"]) | {i: s",
           "tests/test_optim.py", "round_trips"),
    Mutant("a document beam ignores the end symbol", "sample.py", "            ended = char == end\n",
           "            ended = char < 0\n", "tests/test_beam.py", "document"),
    Mutant("a beam drops the held cells when it reorders", "sample.py",
           "select_state(model, stepper.state(), beam), stepper.clamped)", "select_state(model, stepper.state(), beam))",
           "tests/test_beam.py", "held"),
    Mutant("a wrong token lets a client in", "web/serve.py", "if hmac.compare_digest(given, self.token):",
           "if True:", "tests/test_serve.py", "token"),
    Mutant("the page forgets its token", "web/templates/serve.html",
           "const headers = TOKEN ? { authorization: `Bearer ${TOKEN}` } : {};", "const headers = {};",
           "tests/test_serve_browser.py", "token"),
    Mutant("the API's sample ignores its seed", "api.py", "stop=stop, prime=prime, seed=seed, **opts)",
           "stop=stop, prime=prime, seed=0, **opts)", "tests/test_api.py", "samples_equal"),
    Mutant("the API's errors drop the model to compare with", "api.py",
           "rep = oracles.analyze_errors(subject, other, order)", "rep = oracles.analyze_errors(subject, None, order)",
           "tests/test_api.py", "errors_and_braces"),
    Mutant("the API's analyses read n-gram orders wrong", "api.py",
           'return parse_orders(orders if isinstance(orders, str) else ",".join(str(int(n)) for n in orders))',
           'return parse_orders(orders if isinstance(orders, str) else "1")', "tests/test_api.py", "context_dynamics"),
    Mutant("a label given to an unlabelled run is ignored", "sample.py",
           '    if name is not None and not meta.get("labels"):\n', "    if False:\n",
           "tests/test_documents.py", "serve_and_the_api"),
    Mutant("a CPU transformer attends in bf16 under autocast", "transformer.py",
           '    if q.device.type != "cpu" or q.dtype != torch.bfloat16:\n', "    if True:\n",
           "tests/test_devices.py", "attends_in_fp32"),
]


def copy_repo(dest: Path) -> None:
    skip = shutil.ignore_patterns(".git", ".venv", "runs", "__pycache__", "*.egg-info", ".pytest_cache",
                                  ".hypothesis")
    for part in ("src", "tests", "bench", "pyproject.toml"):
        src = ROOT / part
        (shutil.copytree(src, dest / part, ignore=skip) if src.is_dir() else shutil.copy(src, dest / part))


def run_mutant(m: Mutant) -> tuple[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        copy_repo(tmp)
        path = tmp / "src" / "charnn" / m.file
        text = path.read_text(encoding="utf-8")
        if text.count(m.old) != 1:
            return f"BROKEN MUTANT ({m.old!r} found {text.count(m.old)} times)", 0.0
        path.write_text(text.replace(m.old, m.new), encoding="utf-8")
        env = dict(os.environ, PYTHONPATH=str(tmp / "src"), CHARNN_CACHE=str(tmp / "cache"))
        env.pop("CI", None)
        cmd = [sys.executable, "-m", "pytest", "-q", "-x", "-p", "no:cacheprovider", m.tests]
        if m.k:
            cmd += ["-k", m.k]
        t0 = time.perf_counter()
        r = subprocess.run(cmd, cwd=tmp, env=env, capture_output=True, text=True, timeout=900)
        took = time.perf_counter() - t0
        if r.returncode == 5:
            return "BROKEN MUTANT (no test selected)", took
        return ("caught" if r.returncode != 0 else "MISSED"), took


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", default="", help="run the mutants whose name contains this")
    args = ap.parse_args()
    chosen = [m for m in MUTANTS if args.only in m.name]
    print("| mutant | tests | result | seconds |\n|---|---|---|---|")
    results = []
    for m in chosen:
        verdict, took = run_mutant(m)
        results.append(verdict)
        print(f"| {m.name} | {m.tests}{' -k ' + repr(m.k) if m.k else ''} | {verdict} | {took:.0f} |", flush=True)
    caught = results.count("caught")
    print(f"caught {caught} of {len(chosen)}")
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
