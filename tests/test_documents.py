"""Documents (--documents): cut, framed by an end symbol, split between documents, sampled whole,
and judged per document."""

import json
import random

import pytest
import torch

from charnn import checkpoint as ckpt
from charnn.data import prepare
from charnn.documents import END, cut, framed, novelty, split_documents
from charnn.errors import CharnnError
from charnn.trainer import train
from helpers import tiny_config
from helpers import charnn


def test_line_blank_and_regex_documents():
    assert split_documents("ann\nbob\n\ncy\n", "line") == ["ann", "bob", "cy"]
    assert split_documents("a b\nc\n\n\nd e\n \nf\n", "blank") == ["a b\nc", "d e", "f"]
    text = "preface\nNo. 1\nfirst\nNo. 2\nsecond\n"
    assert split_documents(text, r"^No\. \d+$") == ["No. 1\nfirst", "No. 2\nsecond"]  # the preface is no document
    with pytest.raises(CharnnError, match="matches nothing in the text"):
        split_documents(text, "^Chapter")
    with pytest.raises(CharnnError, match="is not a valid regular expression"):
        split_documents(text, "(")
    with pytest.raises(CharnnError, match="matches at 34 of the text's 33 positions"):
        split_documents(text, "x*")  # the empty string, everywhere
    assert split_documents(text, "(?=No)") == split_documents(text, r"^No\. \d+$")  # an empty match is fine where documents start
    with pytest.raises(CharnnError, match="contains U\\+0003"):
        split_documents("a" + END + "b", "line")


def test_the_splits_cut_between_documents_after_a_seeded_shuffle():
    docs = [f"doc{i:03d}" + "x" * (i % 7) for i in range(200)]
    parts = cut(docs, (0.8, 0.1, 0.1), seed=5)
    assert sorted(sum(parts.values(), [])) == sorted(docs)  # every document once, whole
    chars = {k: sum(len(d) + 1 for d in v) for k, v in parts.items()}
    assert abs(chars["train"] / sum(chars.values()) - 0.8) < 0.02
    assert parts == cut(docs, (0.8, 0.1, 0.1), seed=5) and parts != cut(docs, (0.8, 0.1, 0.1), seed=6)
    assert parts["train"][:50] != docs[:50]  # shuffled: a sorted file does not leave the test split the Z's
    with pytest.raises(CharnnError, match="found 2 documents"):
        cut(["a", "b"], (0.8, 0.1, 0.1), 0)


def names(n=1500, seed=0) -> str:
    """Short 'names' from a tiny grammar: a consonant-vowel pattern, one a line."""
    rng = random.Random(seed)
    out = []
    for _ in range(n):
        out.append("".join(rng.choice("bdkmt") + rng.choice("aeiou") for _ in range(rng.randint(1, 3))))
    return "\n".join(out) + "\n"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    d = tmp_path_factory.mktemp("docs")
    (d / "names.txt").write_text(names())
    cfg = tiny_config(d / "names.txt", max_steps=300, eval_every=100, lr=1e-2)
    cfg.data.documents = "line"
    train(cfg, d / "run", progress=False)
    return d


def test_no_split_ever_cuts_a_document(run, tmp_path):
    enc = prepare(str(run / "names.txt"), seed=1337, split=(0.9, 0.05, 0.05), documents="line")
    docs = split_documents(names(), "line")
    for part in enc.splits((0.9, 0.05, 0.05)).values():
        text = enc.vocab.decode(part)
        assert text.endswith(END) and all(d in docs for d in text.split(END)[:-1])
    assert enc.vocab.decode(enc.ids).count(END) == len(docs)
    assert enc.lead_in == cut(docs, (0.9, 0.05, 0.05), 1337)["train"][-1] + END
    assert ckpt.load(run / "run").meta["lead_in"] == enc.lead_in  # every checkpoint carries it: enough to sample


@pytest.mark.slow
def test_sample_prints_whole_documents_that_follow_the_grammar(run):
    r = charnn("sample", run / "run", "--documents", "40", "--json", "--temperature", "0.5")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert len(got["documents"]) == 40 and got["capped"] == 0
    ok = [len(d) % 2 == 0 and all(d[i] in "bdkmt" and d[i + 1] in "aeiou" for i in range(0, len(d), 2))
          for d in got["documents"]]
    assert sum(ok) >= 36, got  # complete words of the grammar: the model ends a document where training did
    assert all(END not in d and "\n" not in d and d for d in got["documents"])
    train_docs = set(split_documents(names(), "line"))
    assert novelty(got["documents"], train_docs) == pytest.approx(sum(d not in train_docs for d in got["documents"]) / 40)
    # a cap too short for any document: none is printed cut off, and it is said
    r = charnn("sample", run / "run", "--documents", "3", "--length", "1", "--prime", "b")  # "b" needs a vowel yet
    assert r.returncode == 0 and "reached --length 1 without ending and were drawn again" in r.stderr, r.stderr
    assert all(len(line) == 2 and line[1] in "aeiou" for line in r.stdout.split()), r.stdout  # only ended ones
    # how many: --documents N as --num N says it; 0, too many, or two different counts are one line each
    r = charnn("sample", run / "run", "--num", "4", "--json", "--temperature", "0.5")
    assert r.returncode == 0 and len(json.loads(r.stdout)["documents"]) == 4, r.stderr
    for args, said in [(["--documents", "0"], "--documents must be from 1 to 10,000"),
                       (["--documents", "20000"], "--documents must be from 1 to 10,000"),
                       (["--documents", "2", "--num", "3"], "--documents 2 and --num 3: give one of them")]:
        r = charnn("sample", run / "run", *args)
        assert r.returncode == 2 and said in r.stderr and len(r.stderr.splitlines()) == 1 and not r.stdout, r.stderr


@pytest.mark.slow
def test_a_beam_over_a_documents_run_prints_the_likeliest_whole_document(run):
    import re

    def beam(k):
        r = charnn("sample", run / "run", "--beam", str(k))
        assert r.returncode == 0, r.stderr
        return r.stdout.rstrip("\n"), float(re.search(r"log-likelihood (-?[\d.]+) nats", r.stderr).group(1))

    (one, nats1), (eight, nats8) = beam(1), beam(8)
    r = charnn("sample", run / "run", "--documents", "1", "--temperature", "0", "--json")
    assert one == json.loads(r.stdout)["documents"][0]  # a beam of one is the greedy document
    assert nats8 >= nats1
    for doc in (one, eight):  # a whole name of the grammar, never the empty document training never had
        assert doc and len(doc) % 2 == 0 and all(doc[i] in "bdkmt" and doc[i + 1] in "aeiou" for i in range(0, len(doc), 2))


def test_evaluate_samples_reports_documents_found_in_the_training_split(run, tmp_path):
    train_docs = cut(split_documents(names(), "line"), (0.9, 0.05, 0.05), 1337)["train"]
    (tmp_path / "s.txt").write_text("\n".join(train_docs[:3] + ["zzqx"]) + "\n")
    r = charnn("evaluate-samples", tmp_path / "s.txt", "--train", run / "names.txt", "--documents", "line", "--json")
    assert r.returncode == 0, r.stderr
    got = json.loads(r.stdout)
    assert got["documents"] == 4 and got["novel_documents"] == 0.25


@pytest.mark.slow
def test_eval_reads_a_file_as_documents_framed_like_training(run, tmp_path):
    (tmp_path / "t.txt").write_text("bada\nkemo\n")
    r = charnn("eval", run / "run", "--text", tmp_path / "t.txt", "--json")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["chars"] == len("bada" + END + "kemo" + END)


def test_serve_and_the_api_read_a_documents_run_as_eval_and_sample_do(run):
    """/eval scores a text's documents framed as `charnn eval --text` frames a file of them (it read
    the raw characters before); /next and Model.next read the prime where a document starts, as
    sampling does: a document's first character is one of the grammar's consonants, a vowel
    follows a consonant."""
    pytest.importorskip("fastapi")
    from fastapi.testclient import TestClient

    import charnn as api
    from charnn.web.serve import create_app, open_runs

    model = api.load(run / "run")
    with TestClient(create_app(open_runs([run / "run"]), workers=1, queue=2)) as client:
        got = client.post("/api/runs/run/eval", json={"text": "bada\nkemo\n"}).json()
        assert got["chars"] == len("bada" + END + "kemo" + END)
        assert got["loss"] == pytest.approx(model.score("bada\nkemo\n").loss, rel=1e-6)
        first = client.post("/api/runs/run/next", json={"text": "", "top": 5}).json()
        assert set(first["candidates"]) == set("bdkmt"), first
        assert first["probs"]["1"] == pytest.approx(list(model.next("", top=5)[1.0].values()), abs=1e-6)
        after = client.post("/api/runs/run/next", json={"text": "k", "top": 5}).json()
        assert set(after["candidates"]) == set("aeiou"), after
        asks = {"next": {"text": "k"}, "activations": {"text": "k"}, "sample": {"prime": "k", "length": 20}}
        for endpoint, body in asks.items():  # a label is never silently ignored
            r = client.post(f"/api/runs/run/{endpoint}", json={**body, "label": "x"})
            assert r.status_code == 400 and "trained without labels" in r.text, endpoint
            assert client.post(f"/api/runs/run/{endpoint}", json=body).status_code == 200, endpoint


def test_a_documents_run_resumes_bit_identically(tmp_path):
    (tmp_path / "n.txt").write_text(names(400, seed=2))

    def cfg():
        c = tiny_config(tmp_path / "n.txt", max_steps=24, eval_every=10, dropout=0.1)
        c.data.documents = "line"
        return c

    train(cfg(), tmp_path / "whole", progress=False)
    first = train(cfg(), tmp_path / "split", progress=False, on_step=lambda s: s >= 13)
    assert first.stopped_by == "interrupt"
    train(None, tmp_path / "split", resume=True, progress=False)
    a, b = ckpt.load(tmp_path / "whole").weights, ckpt.load(tmp_path / "split").weights
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_documents_and_framing_agree():
    assert framed(["a", "bc"]) == "a" + END + "bc" + END


def test_a_document_over_the_cap_is_refused_naming_its_length_and_start():
    from charnn.documents import check_lengths
    from charnn.vocab import Vocab

    docs = ["ab", "a" * 7 + "b", "bbb"]  # the longest: 8 characters
    text = framed(docs)
    vocab = Vocab(sorted(set(map(ord, text))), "char")
    plain = vocab.encode(text)
    labelled = plain + len(vocab) * torch.randint(0, 3, (len(plain),)).numpy()  # labels do not change lengths
    for ids in (plain, labelled):
        check_lengths(ids, vocab, 8, "line")  # at the cap: taken
        with pytest.raises(CharnnError, match="a document of 8 characters \\(it starts 'aaaaaaab'\\) is over --max-document 7"):
            check_lengths(ids, vocab, 7, "line")
