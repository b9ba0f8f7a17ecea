"""sample --beam K (the most likely continuation: K = 1 is greedy, K > 1 never less likely) and
--prime-file."""

import math

import pytest
import torch

from charnn.config import ModelConfig
from charnn.errors import CharnnError
from charnn.model import build
from charnn.sample import beam_search, sample_text
from charnn.vocab import Vocab

VOCAB = Vocab([ord(c) for c in "abcde\n"])


def model(cell="lstm", seed=0):
    torch.manual_seed(seed)
    cfg = (ModelConfig(cell="transformer", layers=2, heads=2, embed=16, hidden=16, block=8, vocab_size=6)
           if cell == "transformer" else ModelConfig(cell=cell, layers=1, hidden=16, embed=6, vocab_size=6))
    m = build(cfg).eval()
    with torch.no_grad():  # sharper distributions than an untrained model's, so that paths differ
        for p in m.parameters():
            p.mul_(4)
    return m


def likelihood(m, prime: str, text: str) -> float:
    """log P(text | prime) by one plain forward pass: an independent check of the beam's score."""
    ids = torch.as_tensor(VOCAB.encode(prime + text))[None]
    with torch.no_grad():
        lp = torch.log_softmax(m(ids)[0][0].double(), -1)
    P = len(prime)
    return float(sum(lp[P - 1 + t, ids[0, P + t]] for t in range(len(text))))


@pytest.mark.parametrize("cell", ["lstm", "gru", "transformer"])
def test_beam_one_is_greedy_and_a_wider_beam_is_never_less_likely(cell):
    for seed in range(4):
        m = model(cell, seed)
        greedy = sample_text(m, VOCAB, length=20, temperature=0, prime="ab")[0]
        text, nats = beam_search(m, VOCAB, "ab", 20, 1)
        assert text == greedy and nats == pytest.approx(likelihood(m, "ab", greedy), abs=1e-4)
        for k in (2, 5):
            text_k, nats_k = beam_search(m, VOCAB, "ab", 20, k)
            assert nats_k >= nats - 1e-9
            assert nats_k == pytest.approx(likelihood(m, "ab", text_k), abs=1e-4)  # the score is the text's own


def test_a_wide_beam_finds_a_likelier_text_than_greedy_somewhere():
    gains = []
    for seed in range(8):
        m = model("lstm", seed)
        gains.append(beam_search(m, VOCAB, "a", 15, 8)[1] - beam_search(m, VOCAB, "a", 15, 1)[1])
    assert max(gains) > 1e-3  # otherwise the beam would be greedy in disguise


def test_bad_beams_are_refused():
    with pytest.raises(CharnnError, match="--beam must be from 1 to 64"):
        beam_search(model(), VOCAB, "a", 5, 0)
    assert math.isfinite(beam_search(model(), VOCAB, "", 3, 3)[1])


# ---- documents, labels and held cells ------------------------------------------------------------

DOC_VOCAB = Vocab([ord(c) for c in "\x03abcde\n"])  # the end symbol first


def doc_model(cell="lstm", seed=0, labels=0):
    torch.manual_seed(seed)
    V = len(DOC_VOCAB)
    cfg = (ModelConfig(cell="transformer", layers=1, heads=2, embed=16, hidden=16, block=8, vocab_size=V, labels=labels)
           if cell == "transformer" else ModelConfig(cell=cell, layers=1, hidden=16, embed=6, vocab_size=V, labels=labels))
    m = build(cfg).eval()
    with torch.no_grad():
        for p in m.parameters():
            p.mul_(3)
        m.head.bias[0] += 0.5  # some documents end within a few characters
    return m


def doc_likelihood(m, start_ids, doc: str, offset: int = 0) -> float:
    """log P(doc + end | start) by one forward pass over input ids (a label's offset added)."""
    ids = torch.as_tensor(list(start_ids) + [int(i) + offset for i in DOC_VOCAB.encode(doc + "\x03")])[None]
    with torch.no_grad():
        lp = torch.log_softmax(m(ids)[0][0].double(), -1)
    P, V = len(start_ids), len(DOC_VOCAB)
    return float(sum(lp[P - 1 + t, int(ids[0, P + t]) % V] for t in range(len(doc) + 1)))


@pytest.mark.parametrize("cell", ["lstm", "transformer"])
def test_a_document_beam_of_one_is_the_greedy_document_and_wider_beams_find_likelier_whole_ones(cell):
    from charnn.sample import beam_document, sample_documents

    meta, start, ended, better = {"lead_in": "ab\x03"}, DOC_VOCAB.encode("ab\x03"), 0, 0
    for seed in range(6):
        m = doc_model(cell, seed)
        greedy, _ = sample_documents(m, DOC_VOCAB, meta["lead_in"], 1, cap=30, temperature=0)
        one, nats1 = beam_document(m, DOC_VOCAB, meta, cap=30, width=1)
        assert (greedy[0] if greedy else None) == one
        if one is not None:
            ended += 1
            assert nats1 == pytest.approx(doc_likelihood(m, start, one), abs=1e-4)
        for k in (3, 8):
            doc, nats = beam_document(m, DOC_VOCAB, meta, cap=30, width=k)
            assert doc is not None or one is None  # a beam ends whenever greedy does
            if doc is not None:
                assert "\x03" not in doc and nats >= nats1 - 1e-9
                assert nats == pytest.approx(doc_likelihood(m, start, doc), abs=1e-4)  # the whole document's own score
        better += nats > nats1 + 1e-3
    # an untrained model's likeliest document is often the empty one (the beam's known taste for
    # short texts); a trained one has never seen an empty document
    assert ended >= 2 and better >= 2


def test_a_document_beam_writes_with_the_label_asked_for():
    from charnn.sample import beam_document

    m = doc_model(labels=2, seed=1)
    meta = {"lead_in": "ab\x03", "labels": ["x", "y"], "lead_label": "y"}
    V = len(DOC_VOCAB)
    docs = {}
    for name, lab in (("x", 0), ("y", 1)):
        doc, nats = beam_document(m, DOC_VOCAB, meta, label=name, cap=30, width=4)
        start = [int(i) + V * 1 for i in DOC_VOCAB.encode("ab\x03")]  # the lead-in written by "y" ...
        start[-1] += V * (lab - 1)  # ... its end symbol carrying the label asked for
        assert nats == pytest.approx(doc_likelihood(m, start, doc, offset=V * lab), abs=1e-4)
        docs[name] = doc
    with pytest.raises(CharnnError, match="not one of this run's labels"):
        beam_document(m, DOC_VOCAB, meta, label="z", cap=30, width=4)
    with pytest.raises(CharnnError, match="not on documents"):
        beam_document(model(), VOCAB, {}, cap=30, width=4)


@pytest.mark.parametrize("cell", ["lstm", "transformer"])
def test_a_beam_of_one_with_held_cells_is_the_greedy_clamped_sample(cell):
    from charnn.sample import parse_clamp

    for seed in range(3):
        m = model(cell, seed)
        clamped = parse_clamp("0:1=0.9,0:3=-0.9" if cell == "lstm" else "0:1=3,0:5=-2", m.cfg)
        greedy = sample_text(m, VOCAB, length=20, temperature=0, prime="ab", clamped=clamped)[0]
        assert beam_search(m, VOCAB, "ab", 20, 1, clamped=clamped)[0] == greedy
        assert beam_search(m, VOCAB, "ab", 20, 4, clamped=clamped)[1] >= beam_search(m, VOCAB, "ab", 20, 1, clamped=clamped)[1]
    free = [beam_search(model(cell, s), VOCAB, "ab", 20, 1)[0] for s in range(3)]
    held = [beam_search(model(cell, s), VOCAB, "ab", 20, 1, clamped=clamped)[0] for s in range(3)]
    assert free != held  # the held cells change what is written
