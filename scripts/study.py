"""Run the paper's study on ../shared/data (War and Peace 80/10/10, Linux 90/5/5) and write a report.

    .venv/bin/python scripts/study.py --per-run 60s --out runs/study --report docs/study
    make study                                   # the same, small budget

Steps, for each corpus: the 20-gram baseline (modified Kneser-Ney), a parameter-matched grid
(cells x depths x budgets, each run trained for --per-run), then on the grid's best LSTM: error
analysis, and for Linux the '}' long-range analysis; samples of that model judged by
evaluate-samples. With a transformer in the grid (the default), its best run beside the best
LSTM: which of the LSTM's errors it gets right (the oracle categories side by side), both context
curves (does the transformer's stop at its block?) and both models' sample novelty (does
attention copy more of the training text?). Finished grid runs are reused when the command is run again. The report
(markdown + PNGs) sets our numbers beside the paper's and says what the budget was.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"

CORPORA = {  # name: (file, split, the paper's 20-gram and best LSTM test loss in nats)
    "warpeace": ("warpeace.txt", "0.8,0.1,0.1", 1.195, 1.077),
    "linux": ("linux.txt", "0.9,0.05,0.05", 0.889, 0.84),
}


def charnn(*args: str, capture=True) -> subprocess.CompletedProcess:
    r = subprocess.run([sys.executable, "-m", "charnn", *args], capture_output=capture, text=True)
    if r.returncode != 0:
        sys.exit(f"study: charnn {' '.join(args)} failed:\n{r.stderr[-2000:]}")
    return r


def verdict(best: dict, ngram_loss: float) -> str:
    """One sentence: does the grid's best model beat the 20-gram at this budget?"""
    gap = best["test_loss"] - ngram_loss
    if gap < 0:
        return (f"At this budget {best['run']} beats the 20-gram by {-gap:.3f} nats per character "
                "(the paper's RNNs beat it too).")
    return (f"At this budget the 20-gram is still ahead of every model of the grid, by {gap:.3f} nats per character "
            "over the best; the paper's RNNs, trained to convergence, beat it.")


def judged_samples(out: Path, name: str, run: str, text: str, split: str) -> list[str]:
    """Five samples of `run` judged by charnn evaluate-samples (novelty: copied training text), as report lines."""
    samples = out / f"samples-{name}.txt"
    samples.write_text(charnn("sample", run, "--num", "5", "--length", "400", "--seed", "1").stdout)
    ev = charnn("evaluate-samples", str(samples), "--train", text, "--split", split).stdout
    return [f"Five samples of 400 characters from {name}, judged by `charnn evaluate-samples`:", "",
            "```", ev.strip(), "```", ""]


def attention_beside(name: str, out: Path, lstm: dict, gpt: dict, text: str, split: str, report: Path) -> list[str]:
    """The grid's best transformer beside its best LSTM: errors, context curves, sample novelty."""
    from charnn.model import STUDY_BLOCK  # the context the grid's transformers read

    lstm_run, gpt_run = str(out / "grid" / lstm["run"]), str(out / "grid" / gpt["run"])
    print(f"[{name}] {gpt['run']} beside {lstm['run']}", file=sys.stderr, flush=True)
    err = charnn("analyze", "errors", lstm_run, "--compare", gpt_run, "--out", str(out / "errors-vs-gpt"),
                 "--chars", "50000").stdout
    lines = [f"### Attention beside recurrence: {gpt['run']} (test loss {gpt['test_loss']:.3f}) and {lstm['run']} "
             f"({lstm['test_loss']:.3f})", "",
             f"Which of {lstm['run']}'s errors on 50,000 test characters {gpt['run']} gets right, by the paper's "
             "oracle categories (`charnn analyze errors --compare`):", "", "```", err.strip(), "```", ""]
    for label, run in (("LSTM", lstm_run), ("transformer", gpt_run)):
        ctx = charnn("analyze", "context", run, "--out", str(out / f"context-{label}"), "--split", "test",
                     "--max-context", "256").stdout
        shutil.copy(out / f"context-{label}" / "context.png", report / f"{name}-context-{label}.png")
        lines += [f"Loss when the {label} may read only the last k characters (`charnn analyze context`; the "
                  f"transformer's block is {STUDY_BLOCK}):", "", "```", ctx.strip(), "```", "",
                  f"![context]({name}-context-{label}.png)", ""]
    return lines + judged_samples(out, gpt["run"], gpt_run, text, split)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--per-run", default="60s", help="training time of each grid run (default 60s)")
    ap.add_argument("--cells", default="rnn,lstm,gru,transformer")
    ap.add_argument("--layers", default="1,2")
    ap.add_argument("--params", default="130k")
    ap.add_argument("--corpora", default="warpeace,linux")
    ap.add_argument("--lr", default="8e-3", help="peak learning rate of every grid run (default 8e-3)")
    ap.add_argument("--dropout", default="0", help="dropout of every grid run (default 0)")
    ap.add_argument("--out", type=Path, default=ROOT / "runs" / "study")
    ap.add_argument("--report", type=Path, default=ROOT / "docs" / "study")
    args = ap.parse_args()
    if not DATA.is_dir():
        sys.exit(f"study: {DATA} is absent; the study needs the reference corpora")
    t0 = time.perf_counter()
    args.report.mkdir(parents=True, exist_ok=True)
    command = (f"python scripts/study.py --per-run {args.per_run} --cells {args.cells} --layers {args.layers} "
               f"--params {args.params} --corpora {args.corpora} --lr {args.lr} --dropout {args.dropout}")
    lines = [f"# The paper's study, reproduced with {args.per_run} of training per model", "",
             f"Made by `{command}` on this project's 2-core CPU machine. Budget: every grid model trained for "
             f"{args.per_run} of wall time with the same optimiser in fp32 (AdamW, peak learning rate {args.lr}, cosine "
             f"decay, dropout {args.dropout}); the paper trained for days on GPUs, so a small budget leaves our "
             "losses far above the paper's: the point is the protocol and the comparisons, which anyone can rerun "
             "at a larger budget.", ""]
    reused = 0  # grid runs finished by an earlier run of this command
    for name in args.corpora.split(","):
        fname, split, paper_ngram, paper_lstm = CORPORA[name]
        text = str(DATA / fname)
        out = args.out / name
        print(f"[{name}] 20-gram", file=sys.stderr, flush=True)
        ng = json.loads(charnn("ngram", text, "--order", "20", "--split", split, "--json").stdout)
        print(f"[{name}] grid", file=sys.stderr, flush=True)
        reused += len(list((out / "grid").glob("*/result.json")))
        grid = charnn("grid", text, "--out", str(out / "grid"), "--cells", args.cells, "--layers", args.layers,
                      "--params", args.params, "--max-time", args.per_run, "--split", split,
                      "--lr", args.lr, "--dropout", args.dropout).stdout
        results = [json.loads(p.read_text()) for p in (out / "grid").glob("*/result.json")]
        overall = min(results, key=lambda r: r["test_loss"])
        best = min((r for r in results if r["cell"] == "lstm"), key=lambda r: r["test_loss"], default=None) or overall
        best_run = str(out / "grid" / best["run"])
        shutil.copy(out / "grid" / "grid.png", args.report / f"{name}-grid.png")
        print(f"[{name}] error analysis of {best['run']}", file=sys.stderr, flush=True)
        err = charnn("analyze", "errors", best_run, "--out", str(out / "errors"), "--chars", "50000").stdout
        shutil.copy(out / "errors" / "errors.png", args.report / f"{name}-errors.png")
        lines += [f"## {name} ({fname}, split {split})", "",
                  "| model | test loss (nats) | the paper |", "|---|---|---|",
                  f"| 20-gram, modified Kneser-Ney | {ng['test']['loss']:.3f} | {paper_ngram} |",
                  f"| best {best['cell'].upper()} of our grid: {best['run']} | {best['test_loss']:.3f} "
                  f"| best LSTM {paper_lstm} |",
                  *([f"| best of our grid: {overall['run']} | {overall['test_loss']:.3f} | |"] if overall is not best
                    else []), "",
                  verdict(overall, ng["test"]["loss"]), "",
                  "The grid (test loss; hidden size and parameters in brackets):", "", grid.strip(), "",
                  f"![grid]({name}-grid.png)", "",
                  f"Error analysis of {best['run']} on 50,000 test characters (`charnn analyze errors`):", "",
                  "```", err.strip(), "```", "", f"![errors]({name}-errors.png)", ""]
        if name == "linux":
            print(f"[{name}] braces", file=sys.stderr, flush=True)
            br = charnn("analyze", "braces", best_run, "--out", str(out / "braces")).stdout
            shutil.copy(out / "braces" / "braces.png", args.report / f"{name}-braces.png")
            lines += ["Loss on `}` by distance back to its `{` (`charnn analyze braces`):", "", "```", br.strip(),
                      "```", "", f"![braces]({name}-braces.png)", ""]
        lines += judged_samples(out, best["run"], best_run, text, split)
        gpt = min((r for r in results if r["cell"] == "transformer"), key=lambda r: r["test_loss"], default=None)
        if gpt is not None and best["cell"] == "lstm":
            lines += attention_beside(name, out, best, gpt, text, split, args.report)
    lines += [f"Total time: {(time.perf_counter() - t0) / 60:.1f} minutes"
              + (f", reusing {reused} grid runs trained by an earlier run of the same command." if reused else "."),
              ""]
    (args.report / "README.md").write_text("\n".join(lines), encoding="utf-8")
    print(f"wrote {args.report / 'README.md'}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
