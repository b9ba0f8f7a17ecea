"""Sampling: pure functions of logits with an explicit generator, and a generate() loop.

Same seed, same text: every random choice is drawn from a ``torch.Generator`` passed in.
"""

from __future__ import annotations

import math
from typing import Iterator

import numpy as np
import torch

from charnn.errors import CharnnError
from charnn.model import Model
from charnn.stepper import Stepper, make_stepper
from charnn.vocab import Vocab


def filter_logits(logits: torch.Tensor, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0) -> torch.Tensor:
    """logits (B, V) -> logits with temperature applied and filtered tokens set to -inf.

    temperature 0 keeps only the argmax. top_k > 0 keeps the k most likely; top_p < 1 keeps the
    smallest set whose probability reaches top_p (nucleus sampling). The most likely id always
    survives.
    """
    logits = logits.float()
    if temperature <= 0:
        keep = torch.zeros_like(logits, dtype=torch.bool)
        keep.scatter_(-1, logits.argmax(-1, keepdim=True), True)
        return logits.masked_fill(~keep, float("-inf"))
    # In float64 and shifted by the maximum first, so that a tiny temperature (down to 5e-324)
    # cannot overflow: the most likely id stays at 0 and the others go to -inf, never inf - inf.
    logits = logits.double()
    logits = (logits - logits.max(-1, keepdim=True).values) / temperature
    if 0 < top_k < logits.shape[-1]:
        kth = torch.topk(logits, top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    if top_p < 1.0:
        sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
        probs = torch.softmax(sorted_logits, dim=-1)
        # Drop a token when the tokens before it already reach top_p.
        drop_sorted = (probs.cumsum(-1) - probs) >= top_p
        drop = torch.zeros_like(drop_sorted).scatter(-1, order, drop_sorted)
        logits = logits.masked_fill(drop, float("-inf"))
    return logits


def sample_next(
    logits: torch.Tensor, generator: torch.Generator, temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0
) -> torch.Tensor:
    """logits (B, V) on any device -> ids (B,) on the CPU.

    The logits are copied to the CPU and filtered and drawn there with the CPU `generator`, so a
    seed gives the same text on every device (up to the logits' float rounding); that is one
    device-to-host copy per character, which the caller needs anyway to print the character.
    Nothing else reads back.
    """
    # Filtered on the CPU too: the filter works in float64, which Apple's MPS does not have.
    filtered = filter_logits(logits.float().cpu(), temperature, top_k, top_p)
    if temperature <= 0:
        return filtered.argmax(-1)
    probs = torch.softmax(filtered, dim=-1)
    if not np.isfinite(probs.numpy()).all():  # checked on the copy: no second read-back
        raise NonFiniteOutput(
            "the model's next-character probabilities are not finite (its weights overflow); "
            "use another checkpoint or retrain with a lower --lr"
        )
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


class NonFiniteOutput(CharnnError):
    """The model produced NaN or infinite logits: its weights are unusable."""


MAX_NUM = 10_000  # samples (or documents) drawn in one batch


def check_options(temperature: float, top_k: int, top_p: float, length: int, num: int) -> None:
    if not (temperature >= 0 and math.isfinite(temperature)):  # NaN passes a "< 0" test (the API's callers)
        raise CharnnError(f"--temperature must be 0 (argmax) or a positive finite number, got {temperature}")
    if top_k < 0:
        raise CharnnError(f"--top-k must be 0 (off) or positive, got {top_k}")
    if not 0 < top_p <= 1:
        raise CharnnError(f"--top-p must be in (0, 1], got {top_p}")
    if length < 0:
        raise CharnnError(f"--length must not be negative, got {length}")
    if num < 1:
        raise CharnnError(f"--num must be at least 1, got {num}")
    if num > MAX_NUM:  # one batch: a billion streams asked the allocator for 256 GB and died in a traceback
        raise CharnnError(f"at most {MAX_NUM:,} samples are drawn together, got {num:,}; draw more with another --seed")


Clamped = dict  # layer -> (cells (K,) int64, values (K,) float32): what --clamp holds


def parse_clamp(spec: str | None, cfg) -> Clamped:
    """`LAYER:CELL=VALUE[,...]` -> the clamped cells of each layer, for ``generate`` and ``Stepper``.

    VALUE is on the scale the pages show: tanh(c) for an LSTM (strictly between -1 and 1; its
    cell state c is held at atanh(VALUE), and h follows from it), h for a GRU or RNN (-1 to 1),
    a transformer's MLP neuron after its GELU (-MLP_CLAMP to MLP_CLAMP; CELL then counts the
    block's 4 x width neurons, ``ModelConfig.units``). cfg: the model's ModelConfig.
    """
    if not spec:
        return {}
    lstm = cfg.cell == "lstm"
    unit = "cell" if cfg.recurrent else "neuron"
    found: dict[int, dict[int, float]] = {}
    for part in spec.split(","):
        part = part.strip()
        try:
            where, value_s = part.split("=")
            layer_s, cell_s = where.split(":")
            layer, cell, value = int(layer_s), int(cell_s), float(value_s)
        except ValueError:
            raise CharnnError(f"--clamp {part!r} is not LAYER:CELL=VALUE (for example 0:42=0.9)") from None
        if not 0 <= layer < cfg.layers:
            raise CharnnError(f"--clamp {part}: layer {layer} does not exist; this model has layers 0 to {cfg.layers - 1}")
        if not 0 <= cell < cfg.units:
            raise CharnnError(f"--clamp {part}: {unit} {cell} does not exist; layers have {unit}s 0 to {cfg.units - 1}")
        check_clamp_value(f"--clamp {part}", value, cfg.cell)
        if cell in found.setdefault(layer, {}):
            raise CharnnError(f"--clamp names layer {layer} {unit} {cell} twice")
        found[layer][cell] = value
    clamped = {}
    for layer, cells in found.items():
        values = torch.tensor(list(cells.values()), dtype=torch.float32)
        clamped[layer] = (torch.tensor(list(cells), dtype=torch.long), torch.atanh(values) if lstm else values)
    return clamped


MLP_CLAMP = 10.0  # bound on a transformer neuron's held value: GELU outputs of a trained model stay well inside


def check_clamp_value(what: str, value: float, cell: str) -> None:
    """Refuse a held value off the unit's scale (tanh(c) for an LSTM, h for a GRU or RNN, an MLP
    neuron's GELU output for a transformer) in one line."""
    if cell == "transformer":
        if not -MLP_CLAMP <= value <= MLP_CLAMP:
            raise CharnnError(
                f"{what}: a transformer's MLP neuron is held at a value between {-MLP_CLAMP:g} and "
                f"{MLP_CLAMP:g} (its GELU output; most lie between -0.2 and 3)"
            )
        return
    lstm = cell == "lstm"
    if not (-1 < value < 1 if lstm else -1 <= value <= 1):
        raise CharnnError(
            f"{what}: the value is {'tanh(c)' if lstm else 'h'}, so it must be "
            f"{'strictly between -1 and 1' if lstm else 'between -1 and 1'}"
        )


def generate(
    model: Model,
    vocab: Vocab,
    prime: str = "",
    length: int = 500,
    num: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    clamped: Clamped | None = None,
    mix=None,
) -> Iterator[list[int]]:
    """Yield, for each new position, the ids chosen for the `num` streams (a list of length num).

    The prime is fed first (its characters must be in the vocabulary); with no prime the model
    starts from a newline if it knows one, else from its first vocabulary entry. `clamped`
    (``parse_clamp``) hold cells at fixed values while the prime is read and at every step. `mix`
    (a ``study.mixture.Sampler``): draw from the model mixed with its run's n-gram (--ngram-mix).
    """
    check_options(temperature, top_k, top_p, length, num)
    if model.training:
        raise ValueError(
            "sampling needs the model in eval mode (dropout off): call model.eval() first, "
            "or load it with Checkpoint.build_model()"
        )
    x = _start(model, vocab, prime).expand(num, -1)  # raises here, before anything is generated, on unknown characters
    return _generate(model, x, length, torch.Generator().manual_seed(seed), temperature, top_k, top_p, clamped, mix=mix)


def generate_labelled(
    model: Model,
    vocab: Vocab,
    label: int,
    lead_in: str = "",
    lead_label: int = 0,
    prime: str = "",
    length: int = 500,
    num: int = 1,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    clamped: Clamped | None = None,
) -> Iterator[list[int]]:
    """``generate`` for a model conditioned on labels: it reads `lead_in` as written by a
    document labelled `lead_label` (its last character, the end symbol, carries `label`, since it
    predicts the next document's first character), then `prime` and its own characters with
    `label`. Yields character ids."""
    check_options(temperature, top_k, top_p, length, num)
    x = _labelled_start(model, vocab, label, lead_in, lead_label, prime).expand(num, -1)
    return _generate(
        model,
        x,
        length,
        torch.Generator().manual_seed(seed),
        temperature,
        top_k,
        top_p,
        clamped,
        offset=model.cfg.vocab_size * label,
    )


def _labelled_start(model: Model, vocab: Vocab, label: int, lead_in: str, lead_label: int, prime: str) -> torch.Tensor:
    """(1, P) input ids of ``generate_labelled``'s start: the lead-in, its end symbol carrying `label`, the prime."""
    V = model.cfg.vocab_size
    lead = vocab.encode(lead_in) + V * lead_label
    if len(lead):
        lead[-1] += V * (label - lead_label)
    ids = np.concatenate([lead, vocab.encode(prime) + V * label]) if lead_in or prime else vocab.start_ids() + V * label
    return torch.as_tensor(ids, dtype=torch.long, device=model.head.weight.device)[None]


def start_ids(model: Model, vocab: Vocab, meta: dict, prime: str = "", label: str | None = None) -> torch.Tensor:
    """(1, P) ids a model reads before what follows `prime`, as sampling reads them: for a run of
    documents the lead-in first (where training starts a document) and the prime, in `label`'s
    style for a run conditioned on labels; for one stream of text the prime alone. meta: the
    checkpoint's."""
    refuse_label_unless_labelled(meta, label)
    if meta.get("lead_in"):
        lab, lead = label_numbers(meta, label)
        return _labelled_start(model, vocab, lab, meta["lead_in"], lead, prime)
    return _start(model, vocab, prime)


def _start(model: Model, vocab: Vocab, prime: str) -> torch.Tensor:
    """(1, P) ids the model reads first: the prime, else a newline if it knows one, else id 0."""
    start = vocab.encode(prime) if prime else vocab.start_ids()
    return torch.as_tensor(start, dtype=torch.long, device=model.head.weight.device).unsqueeze(0)


@torch.no_grad()
def _read_prime(model: Model, x: torch.Tensor, clamped: Clamped | None) -> tuple[torch.Tensor, Stepper]:
    """Read x (num, P) -> the logits (num, V) after it and a Stepper to go on from there."""
    device = model.head.weight.device
    if clamped:  # the prime is read with the cells held too, one step at a time
        clamped = {k: (idx.to(device), val.to(device)) for k, (idx, val) in clamped.items()}
        stepper = make_stepper(model, model.init_state(x.shape[0], device), clamped)
        for t in range(x.shape[1]):
            last = stepper.step(x[:, t])
        return last, stepper
    logits, state = model(x)
    return logits[:, -1], make_stepper(model, state)  # then one fused cell op per layer and character


def _generate(model, x, length, gen, temperature, top_k, top_p, clamped=None, offset: int = 0, mix=None) -> Iterator[list[int]]:
    """x: (num, P) prime ids. The model is only read: it must already be in eval mode. offset:
    what turns a character into the model's input id (a label's, see generate_labelled). mix: a
    ``study.mixture.Sampler``, which reads the last characters of each sample (kept here)."""
    last, stepper = _read_prime(model, x, clamped)
    device = last.device
    recent = x.cpu().numpy() if mix is not None else None
    for _ in range(length):
        if mix is not None:
            last = mix.mix(last, recent)
        nxt = sample_next(last, gen, temperature, top_k, top_p)  # (num,) on the CPU
        yield nxt.tolist()
        if mix is not None:
            recent = np.concatenate([recent, nxt.numpy()[:, None]], 1)[:, -max(mix.context, 1) :]
        last = stepper.step((nxt + offset).to(device, non_blocking=True))


def stream_document(
    model: Model, vocab: Vocab, meta: dict, label: str | None = None, prime: str = "", length: int = 500, seed: int = 0, **kw
) -> Iterator[str]:
    """One document of a run trained with --documents, as pieces of text as it is written (what
    serve streams): started as ``sample_documents`` starts one, ended at the end symbol (not
    included) or after `length` units."""
    from charnn.documents import END

    lab, lead = label_numbers(meta, label)
    ids_iter = generate_labelled(model, vocab, lab, meta.get("lead_in", ""), lead, prime, length, 1, seed, **kw)
    return (p.replace(END, "") for p in _pieces(ids_iter, vocab.stream_decoder(), END))


def stream(
    model: Model,
    vocab: Vocab,
    prime: str = "",
    length: int = 500,
    seed: int = 0,
    temperature: float = 1.0,
    top_k: int = 0,
    top_p: float = 1.0,
    stop: str | None = None,
    clamped: Clamped | None = None,
    mix=None,
) -> Iterator[str]:
    """One sample as pieces of text, each as soon as it is generated (what a terminal prints and
    a server streams; a piece is empty while a multi-byte character is incomplete). It ends after
    `length` units, or right after the first occurrence of `stop` (which it includes)."""
    ids_iter = generate(model, vocab, prime, length, 1, seed, temperature, top_k, top_p, clamped, mix)  # checks the prime now
    return _pieces(ids_iter, vocab.stream_decoder(), stop)


def _pieces(ids_iter, decode, stop: str | None) -> Iterator[str]:
    tail = ""  # the last characters, for a stop string that spans pieces
    for ids in ids_iter:
        piece = decode(ids)
        if stop:
            tail += piece
            cut = tail.find(stop)
            if cut >= 0:
                yield piece[: len(piece) - (len(tail) - cut - len(stop))]
                return
            tail = tail[-len(stop) :]
        yield piece


@torch.no_grad()
def next_probs(
    model: Model,
    vocab: Vocab,
    prime: str,
    temperatures=(0.2, 0.5, 1.0, 1.5),
    top: int = 8,
    clamped: Clamped | None = None,
    meta: dict | None = None,
    label: str | None = None,
    mix=None,
) -> dict:
    """The next character's distribution after `prime`, at each temperature: softmax(logits / T)
    (T = 0: all mass on the most likely). -> {"candidates": [ids, most likely first], "probs": {T: [p per
    candidate]}}: what `sample --show-probs` prints and the page shows on hover. meta (the
    checkpoint's): a run of documents reads the prime where a document starts, in `label`'s style
    for a labelled run (``start_ids``), as sampling does. mix (a ``study.mixture.Sampler``): the
    distribution of the model mixed with its run's n-gram, the temperature applied to the
    mixture's log-probabilities as sampling applies it."""
    if model.training:
        raise ValueError("next_probs needs the model in eval mode (dropout off)")
    x = start_ids(model, vocab, meta or {}, prime, label)
    logits = _read_prime(model, x, clamped)[0]
    if mix is not None:
        logits = mix.mix(logits, x.cpu().numpy())
    logits = logits[0].cpu().double()  # MPS has no float64
    order = torch.argsort(logits, descending=True)[:top]
    probs = {}
    for t in temperatures:
        p = torch.softmax(filter_logits(logits[None], float(t)), -1)[0]
        probs[float(t)] = p[order].tolist()
    return {"candidates": order.tolist(), "probs": probs}


DOCUMENT_ROUNDS = 5  # draws of the missing documents before sample_documents gives up on a cap that is too short


def sample_documents(
    model: Model,
    vocab: Vocab,
    lead_in: str,
    num: int = 1,
    cap: int = 500,
    prime: str = "",
    seed: int = 0,
    label: int = 0,
    lead_label: int = 0,
    **kw,
) -> tuple[list[str], int]:
    """`num` whole documents from a model trained with --documents: each starts where training
    starts one (after reading `lead_in`, the checkpoint's) and `prime`, and ends at the end
    symbol, which is not returned. A document still going after `cap` units is dropped and
    drawn again (up to DOCUMENT_ROUNDS draws): -> (the complete documents, each with the prime
    in front; how many reached the cap). label, lead_label: for a model conditioned on labels
    (``generate_labelled``)."""
    from charnn.documents import END

    if END not in vocab.decode(range(len(vocab))):
        raise CharnnError(
            "this run was trained on one stream of text, not on documents (train with --documents "
            "SPLIT to sample whole documents)"
        )
    end = int(vocab.encode(END)[0])
    done: list[str] = []
    capped = 0
    for k in range(DOCUMENT_ROUNDS):
        want = num - len(done)
        if want <= 0:
            break
        rows: list[list[int]] = [[] for _ in range(want)]
        ended = [False] * want
        for ids in generate_labelled(model, vocab, label, lead_in, lead_label, prime, cap + 1, want, seed + k, **kw):
            for i, t in enumerate(ids):
                if not ended[i]:
                    ended[i] = t == end
                    if not ended[i]:
                        rows[i].append(t)
            if all(ended):
                break
        done += [prime + vocab.decode(r) for r, e in zip(rows, ended) if e]
        capped += ended.count(False)
    return done, capped


def refuse_label_unless_labelled(meta: dict, name: str | None, flag: str = "label") -> None:
    """A label name given to a run trained without labels is a mistake (it would be ignored): one
    line, the same from the command line (flag "--label"), the API and the server."""
    if name is not None and not meta.get("labels"):
        raise CharnnError(f"{flag}: this run was trained without labels (train with --documents SPLIT --label REGEX)")


def label_numbers(meta: dict, name: str | None) -> tuple[int, int]:
    """(the label's number, the lead-in's label's number) for a labelled run; (0, 0) otherwise.
    A labelled run needs a known label name, and an unlabelled one takes none. meta: the
    checkpoint's."""
    refuse_label_unless_labelled(meta, name)
    names = meta.get("labels") or []
    if not names:
        return 0, 0
    shown = ", ".join(names[:20]) + (f" and {len(names) - 20} more" if len(names) > 20 else "")
    if name is None:
        raise CharnnError(f"this run writes in the style of a label: give --label NAME, one of {shown}")
    if name not in names:
        raise CharnnError(f"--label {name!r} is not one of this run's labels: {shown}")
    return names.index(name), names.index(meta["lead_label"])


MAX_BEAM = 64
# a beam's hypotheses grow by copying (the search's time goes as the length squared): 10,000 units
# take about 20 s on a small model, and a hundred million never ended
MAX_BEAM_LENGTH = 10_000


@torch.no_grad()
def beam_search(
    model: Model,
    vocab: Vocab,
    prime: str = "",
    length: int = 200,
    width: int = 4,
    clamped: Clamped | None = None,
    mix=None,
) -> tuple[str, float]:
    """The most likely continuation of `prime` of `length` units that a beam of `width` finds:
    -> (its text, its log-likelihood in nats). Width 1 is greedy decoding. A beam can drop the
    greedy path on the way and end below it; the greedy continuation is searched too, and the
    likelier of the two is returned, so a beam never does worse than greedy. `clamped` holds cells
    as in ``generate``; mix (a ``study.mixture.Sampler``): the likelihood is the mixture's."""
    _check_beam(model, width, length)
    ids, nats, _ = _best_of(model, _start(model, vocab, prime), length, width, clamped, mix=mix)
    return vocab.decode(ids), nats


@torch.no_grad()
def beam_document(
    model: Model,
    vocab: Vocab,
    meta: dict,
    label: str | None = None,
    prime: str = "",
    cap: int = 500,
    width: int = 4,
    clamped: Clamped | None = None,
) -> tuple[str | None, float]:
    """The most likely whole document (after `prime`) that a beam of `width` finds, for a run
    trained with --documents: started as ``sample_documents`` starts one, finished by the end
    symbol (not returned); its log-likelihood counts the end symbol. Hypotheses that end leave
    the beam for a list of finished ones; the search stops when no open one can still beat the
    best finished (a log-likelihood only falls as a text grows) or at `cap` units. -> (the
    document with the prime in front, its nats), or (None, -inf) when none ended within the cap."""
    from charnn.documents import END

    _check_beam(model, width, cap)
    if END not in vocab.decode(range(len(vocab))):
        raise CharnnError(
            "this run was trained on one stream of text, not on documents (train with --documents "
            "SPLIT to sample whole documents)"
        )
    lab, lead = label_numbers(meta, label)
    x = _labelled_start(model, vocab, lab, meta.get("lead_in", ""), lead, prime)
    ids, nats, ended = _best_of(
        model, x, cap + 1, width, clamped, offset=model.cfg.vocab_size * lab, end=int(vocab.encode(END)[0])
    )
    return (prime + vocab.decode(ids), nats) if ended else (None, -math.inf)


def _check_beam(model: Model, width: int, length: int) -> None:
    if not 1 <= width <= MAX_BEAM:
        raise CharnnError(f"--beam must be from 1 to {MAX_BEAM}, got {width}")
    if not 0 <= length <= MAX_BEAM_LENGTH:
        raise CharnnError(f"--length with --beam must be from 0 to {MAX_BEAM_LENGTH:,} units, got {length:,}")
    if model.training:
        raise ValueError("beam search needs the model in eval mode (dropout off)")


def _best_of(model, x, length, width, clamped, offset=0, end=None, mix=None) -> tuple[list[int], float, bool]:
    """The beam's best and greedy's, whichever is likelier (an ended text before an open one)."""
    best = _beam(model, x, length, width, clamped, offset, end, mix)
    if width > 1:
        best = max(best, _beam(model, x, length, 1, clamped, offset, end, mix), key=lambda r: (r[2], r[1]))
    return best


def _beam(
    model: Model,
    x: torch.Tensor,
    length: int,
    width: int,
    clamped: Clamped | None,
    offset: int,
    end: int | None,
    mix=None,
) -> tuple[list[int], float, bool]:
    """A beam of `width` from the prime ids x (1, P) for up to `length` units: -> (the best
    text's character ids, its nats, whether it ended at `end`, which is left out of the ids).
    offset: what turns a character into the model's input id (a label's). mix: a
    ``study.mixture.Sampler`` whose log-probabilities replace the model's (stream runs only: it
    reads each hypothesis' last characters, kept here)."""
    from charnn.model import select_state

    last, stepper = _read_prime(model, x, clamped)
    recent = x.cpu().numpy()[:, -max(mix.context, 1) :] if mix is not None else None

    def log_probs(logits: torch.Tensor) -> torch.Tensor:  # the model's, or the mixture's (on the same device)
        return torch.log_softmax(logits.double(), -1) if mix is None else mix.mix(logits, recent)

    lp = log_probs(last)  # (B, V)
    scores = torch.zeros(1, dtype=torch.float64, device=lp.device)
    seqs = torch.zeros(1, 0, dtype=torch.long, device=lp.device)
    V = lp.shape[-1]
    done: tuple[float, list[int]] = (-math.inf, [])  # the best ended text
    for _ in range(length):
        cand = (scores[:, None] + lp).flatten()
        top = cand.topk(min(width if end is None or width == 1 else 2 * width, cand.numel()))  # 1: greedy
        beam, char = top.indices // V, top.indices % V
        scores, seqs = top.values, torch.cat([seqs[beam], char[:, None]], 1)
        if end is not None:
            ended = char == end
            if ended.any() and float(scores[ended].max()) > done[0]:
                k = int(torch.where(ended, scores, -math.inf).argmax())
                done = (float(scores[k]), seqs[k, :-1].tolist())
            live = (~ended).nonzero().flatten()[:width]
            if not len(live) or done[0] >= float(scores[live].max()):
                return done[1], done[0], True
            beam, char, scores, seqs = beam[live], char[live], scores[live], seqs[live]
        stepper = make_stepper(model, select_state(model, stepper.state(), beam), stepper.clamped)
        if recent is not None:
            b, c = beam.cpu().numpy(), char.cpu().numpy()
            recent = np.concatenate([recent[b], c[:, None]], 1)[:, -max(mix.context, 1) :]
        lp = log_probs(stepper.step(char + offset))
    if done[0] > -math.inf:
        return done[1], done[0], True
    k = int(scores.argmax())
    return seqs[k].tolist(), float(scores[k]), False


def sample_text(model: Model, vocab: Vocab, length: int = 500, num: int = 1, stop: str | None = None, **kw) -> list[str]:
    """`num` whole samples drawn together (without the prime), each cut right after `stop`."""
    cols = list(generate(model, vocab, length=length, num=num, **kw))
    texts = [vocab.decode([c[i] for c in cols]) for i in range(num)]
    if stop:
        texts = [t[: t.index(stop) + len(stop)] if stop in t else t for t in texts]
    return texts
