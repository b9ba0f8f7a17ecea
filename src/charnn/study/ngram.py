"""Interpolated Kneser-Ney character n-gram models: the baseline of the paper's Table 1.

Counting: every n-gram of the training text gets a 64-bit key (exact base-V packing while it
fits, a rolling hash beyond; see `_keys`), and counts come from sorting the keys (np.unique),
so only n-grams that occur cost memory and 20-gram models of 6M characters fit in a few GB and
minutes. Written by hand because no maintained Python library builds high-order character
Kneser-Ney models at this scale (NLTK's is exact but pure Python, seconds per thousand queries;
the tests use it as the independent reference on small text).

The model (Chen & Goodman's interpolated Kneser-Ney), for context h of length n-1:

    P_n(w | h) = max(c_n(hw) - D_n, 0) / c_n(h.) + D_n * N1+(h.) / c_n(h.) * P_{n-1}(w | h')

where h' drops h's first character, c_n is the raw count at the highest order and the
continuation count N1+(.hw) (distinct characters seen before hw) below it, c_n(h.) sums c_n(hw)
over w, and N1+(h.) counts the w with c_n(hw) > 0. A context never seen defers to the lower
order. The recursion ends in the continuation unigram interpolated with the uniform
distribution over the vocabulary, so every character has a probability above zero.

By default (`modified=True` in `train_and_score`, the `charnn ngram` default) the discount
depends on the count, D1 / D2 / D3+ for counts 1 / 2 / 3 or more, estimated per order from the
counts of counts, and D_n * N1+(h.) becomes D1 N1(h.) + D2 N2(h.) + D3+ N3+(h.): Chen & Goodman's
modified Kneser-Ney, still interpolated. On War and Peace (80/10/10) the 20-gram's test loss is
1.250 nats with it and 1.298 with one discount; the paper reports 1.195 on its CRLF copy of the
text, where every '\n' follows a '\r' and costs nothing (about 2% of the characters).

Deliberate differences from NLTK's KneserNeyInterpolated (tests check agreement where they
coincide): D_n is estimated per order from counts of counts, D = n1 / (n1 + 2 n2), unless a
fixed discount is given; NLTK's unigram has no uniform floor (unseen characters get 0); and
NLTK's lower-order gamma counts the w seen after h by raw count while its alpha uses
continuation counts, so its distributions can miss 1 for contexts at the very start of the
text. Ours sum to one for every context.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from charnn.errors import CharnnError

_MIX = np.uint64(0x9E3779B97F4A7C15)  # odd multiplier for the hashed keys (golden ratio)
NGRAM_FORMAT = "charnn-ngram-2"  # 2: the hashed keys of 2026-12-07 (a file of format 1 is refused)


def _keys(ids: np.ndarray, vocab_size: int, max_order: int):
    """Yield (n, keys) for n = 1..max_order: keys[i] identifies ids[i-n+1 .. i] (i >= n-1).

    Exact (base-V digits) while V**n < 2**63; beyond, a 64-bit hash of the shorter key and the
    last unit (``_extend``), whose collisions are negligible (~ distinct^2 / 2**65: under 1e-3
    for 1e8 distinct n-grams).
    """
    ids = ids.astype(np.uint64)
    keys = ids + np.uint64(1)
    yield 1, keys
    for n in range(2, max_order + 1):
        prev = keys
        keys = np.empty_like(prev)
        keys[: n - 1] = 0  # incomplete n-grams at the start
        keys[n - 1 :] = _extend(prev[n - 2 : -1], ids[n - 1 :] + np.uint64(1), n, vocab_size)
        yield n, keys


def _extend(prev: np.ndarray, unit: np.ndarray, n: int, vocab_size: int) -> np.ndarray:
    """Keys of n-grams from the keys of their first n-1 units and their last unit (its id + 1):
    exact base-(V+1) digits while they fit in 63 bits, else a 64-bit hash of (prev, unit).

    The hash multiplies prev by an odd constant before adding the unit, so that two different
    pairs collide only when their keys differ by one of 2V particular 64-bit numbers (chance
    ~1e-19 per pair), then scrambles the bits (splitmix64's finaliser, a bijection) so that the
    next order's product sees all of them. (Until 2026-12-07 it was (prev ^ unit) * constant:
    the XOR made an n-gram's key equal another's that differed in the last two units' low bits,
    so at the hashed orders of real text (11 and up for tiny Shakespeare) contexts merged and
    the probabilities summed to more than one.)
    """
    with np.errstate(over="ignore"):
        if n <= int(63 // math.log2(vocab_size + 1)):
            return prev * np.uint64(vocab_size + 1) + unit
        z = prev * _MIX + unit
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


@dataclass
class _Order:
    """Sorted n-gram keys with their (raw or continuation) counts, and per-context totals."""

    gram_keys: np.ndarray  # (G,) sorted
    gram_counts: np.ndarray  # (G,)
    ctx_keys: np.ndarray  # (C,) sorted
    ctx_totals: np.ndarray  # (C,) sum of gram counts over w
    ctx_types: np.ndarray  # (C,) number of w with a count > 0
    discount: float
    # modified Kneser-Ney: discounts for counts 1, 2 and 3+, and per context the number of w
    # with each of those counts
    discounts: tuple[float, float, float] = (0.0, 0.0, 0.0)
    ctx_n123: np.ndarray | None = None  # (C, 3)


def _lookup(sorted_keys: np.ndarray, values: np.ndarray, queries: np.ndarray) -> np.ndarray:
    """values at the positions of queries in sorted_keys, 0 where absent."""
    if len(sorted_keys) == 0:
        return np.zeros(len(queries), dtype=values.dtype)
    pos = np.searchsorted(sorted_keys, queries)
    pos = np.minimum(pos, len(sorted_keys) - 1)
    found = sorted_keys[pos] == queries
    return np.where(found, values[pos], 0)


def _discount(counts: np.ndarray) -> float:
    n1 = int((counts == 1).sum())
    n2 = int((counts == 2).sum())
    return n1 / (n1 + 2 * n2) if n1 + n2 else 0.5


FALLBACK_DISCOUNTS = (0.5, 1.0, 1.5)  # KenLM's --discount_fallback


def _modified_discounts(counts: np.ndarray) -> tuple[float, float, float]:
    """Chen & Goodman's D1, D2, D3+ from the counts of counts n1..n4 (each at most its count).
    On small texts an estimate can be zero or negative (D3+ = 3 - 4 y n4 / n3 when n4 > 1.5 n3):
    clipped to 0, a context whose counts all fall there would free no mass for the units it never
    saw, and they would get probability 0. Such an order takes KenLM's fallback discounts instead."""
    n = [int((counts == k).sum()) for k in (1, 2, 3, 4)]
    y = n[0] / (n[0] + 2 * n[1]) if n[0] + n[1] else 0.5
    d = [k - (k + 1) * y * n[k] / n[k - 1] if n[k - 1] else y for k in (1, 2, 3)]
    if min(d) <= 0:
        return FALLBACK_DISCOUNTS
    return tuple(float(min(x, k)) for k, x in zip((1, 2, 3), d))  # type: ignore[return-value]


class KneserNey:
    def __init__(
        self, order: int, vocab_size: int, discount: float | None = None, uniform_floor: bool = True, modified: bool = False
    ):
        if order < 1:
            raise CharnnError(f"--order must be at least 1, got {order}")
        if vocab_size < 1:
            raise CharnnError("the vocabulary is empty")
        self.order = order
        self.vocab_size = vocab_size
        self.fixed_discount = discount
        self.uniform_floor = uniform_floor  # False: the unigram is the bare continuation unigram (NLTK's)
        self.modified = modified  # three discounts by count (Chen & Goodman's modified Kneser-Ney)
        self.orders: list[_Order] = []  # index n-1
        self.train_chars = 0

    def fit(self, ids: np.ndarray) -> "KneserNey":
        """Count the n-grams of ids (N,) for every order up to self.order."""
        ids = np.asarray(ids, dtype=np.int64)
        if len(ids) < 2:
            raise CharnnError("the training text holds fewer than 2 characters")
        self.train_chars = len(ids)
        N = self.order
        levels: list[_Order | None] = [None] * N
        # For the lower orders we need continuation counts: N1+(.hw) = number of distinct
        # (n+1)-grams that end in hw. Walk the orders upwards, keeping the keys of the last
        # three orders (an order's level needs its own keys, its contexts' and the next order's).
        keys_by_n: dict[int, np.ndarray] = {}
        for n, keys in _keys(ids, self.vocab_size, N):
            keys_by_n[n] = keys
            if n >= 2:
                levels[n - 2] = self._continuation_level(n - 1, keys_by_n[n - 1], keys_by_n.get(n - 2), keys)
                keys_by_n.pop(n - 2, None)
        levels[N - 1] = self._raw_level(N, keys_by_n[N], keys_by_n.get(N - 1))
        self.orders = levels  # type: ignore[assignment]
        return self

    def _discounted(self, counts: np.ndarray) -> float:
        return self.fixed_discount if self.fixed_discount is not None else _discount(counts)

    def _group(self, n, gram_keys, gram_counts, ctx_of_gram) -> _Order:
        """Totals and type counts per context, given each distinct n-gram's context key."""
        ctx_keys, inv = np.unique(ctx_of_gram, return_inverse=True)
        totals = np.bincount(inv, weights=gram_counts, minlength=len(ctx_keys)).astype(np.int32)
        types = np.bincount(inv, minlength=len(ctx_keys)).astype(np.int32)
        level = _Order(gram_keys, gram_counts, ctx_keys, totals, types, self._discounted(gram_counts))
        if self.modified:
            level.discounts = _modified_discounts(gram_counts)
            level.ctx_n123 = np.stack(
                [
                    np.bincount(inv, weights=(gram_counts == 1), minlength=len(ctx_keys)),
                    np.bincount(inv, weights=(gram_counts == 2), minlength=len(ctx_keys)),
                    np.bincount(inv, weights=(gram_counts >= 3), minlength=len(ctx_keys)),
                ],
                axis=1,
            ).astype(np.int32)
        return level

    def _raw_level(self, n, keys, ctx_keys_all) -> _Order:
        """Highest order: raw counts c(hw)."""
        valid = keys[n - 1 :]
        gram_keys, first, counts = np.unique(valid, return_index=True, return_counts=True)
        if n == 1:
            ctx = np.zeros(len(gram_keys), dtype=np.uint64)
        else:
            ctx = ctx_keys_all[n - 2 : -1][first]  # the context of each n-gram (its first occurrence)
        return self._group(n, gram_keys, counts.astype(np.int32), ctx)

    def _continuation_level(self, n, keys, ctx_keys_all, longer) -> _Order:
        """Order n < N: continuation counts N1+(.hw), from the distinct (n+1)-grams."""
        longer_valid = longer[n:]  # (n+1)-grams end at positions n..; their suffix n-gram ends there too
        _, first = np.unique(longer_valid, return_index=True)
        end = first + n  # end position of each distinct (n+1)-gram
        suffix = keys[end]  # its last n characters: the n-gram hw
        gram_keys, idx, counts = np.unique(suffix, return_index=True, return_counts=True)
        if n == 1:
            ctx = np.zeros(len(gram_keys), dtype=np.uint64)
        else:
            ctx = ctx_keys_all[end[idx] - 1]
        return self._group(n, gram_keys, counts.astype(np.int32), ctx)

    # ---- probabilities ---------------------------------------------------------------------

    def _prob(self, n: int, gram: np.ndarray, ctx: np.ndarray | None, lower: np.ndarray) -> np.ndarray:
        lv = self.orders[n - 1]
        c_hw = _lookup(lv.gram_keys, lv.gram_counts, gram).astype(np.float64)
        q = ctx if ctx is not None else np.zeros(len(gram), dtype=np.uint64)
        total = _lookup(lv.ctx_keys, lv.ctx_totals, q).astype(np.float64)
        types = _lookup(lv.ctx_keys, lv.ctx_types, q).astype(np.float64)
        seen = total > 0
        safe = np.where(seen, total, 1.0)
        if lv.ctx_n123 is not None:  # modified: the discount depends on the count
            d1, d2, d3 = lv.discounts
            d = np.where(c_hw >= 3, d3, np.where(c_hw == 2, d2, np.where(c_hw == 1, d1, 0.0)))
            pos = np.searchsorted(lv.ctx_keys, q) if len(lv.ctx_keys) else np.zeros(len(q), dtype=np.int64)
            pos = np.minimum(pos, max(len(lv.ctx_keys) - 1, 0))
            n123 = np.where(seen[:, None], lv.ctx_n123[pos], 0).astype(np.float64)
            mass = n123 @ np.array([d1, d2, d3])
            p = (c_hw - d) / safe + mass / safe * lower
        else:
            p = np.maximum(c_hw - lv.discount, 0.0) / safe + lv.discount * types / safe * lower
        return np.where(seen, p, lower)

    def probs_of(self, history: np.ndarray, targets_from: int) -> np.ndarray:
        """P(ids[t] | ids[..t-1]) for t = targets_from .. len-1 of history (N,) ids, as (T,).

        The characters before targets_from are context only (for a split: the text before it).
        """
        ids = np.asarray(history, dtype=np.int64)
        t = np.arange(targets_from, len(ids))
        p = np.full(len(t), 1.0 / self.vocab_size)
        keys_prev = np.zeros(0, dtype=np.int64)  # the order below's keys (set before order 2 reads it)
        for n, keys in _keys(ids, self.vocab_size, self.order):
            if n > 1:
                ok = t >= n - 1  # enough history for this order
                gram = np.where(ok, keys[t], 0)
                ctx = np.where(ok, keys_prev[np.maximum(t - 1, 0)], 0)
                p = np.where(ok, self._prob(n, gram, ctx, p), p)
            elif self.uniform_floor:
                p = self._prob(1, keys[t], None, p)
            else:
                lv = self.orders[0]
                p = _lookup(lv.gram_keys, lv.gram_counts, keys[t]) / max(int(lv.ctx_totals.sum()), 1)
            keys_prev = keys
        return p

    def distributions(self, history: np.ndarray, targets_from: int) -> np.ndarray:
        """The whole next-unit distribution at each target position: (T, V), rows summing to 1;
        column ids[t] of row t is what ``probs_of`` gives. Read in pieces of 65,536 targets."""
        ids = np.asarray(history, dtype=np.int64)
        t = np.arange(targets_from, len(ids))
        L = self.order - 1
        padded = np.concatenate([np.zeros(L, dtype=np.int64), ids])
        rows = np.lib.stride_tricks.sliding_window_view(padded, L)  # row t: the L units before ids[t]
        out = np.empty((len(t), self.vocab_size))
        for a in range(0, len(t), 65536):
            at = t[a : a + 65536]
            out[a : a + len(at)] = self.next_distributions(rows[at], avail=np.minimum(at, L))
        return out

    def next_distributions(self, contexts: np.ndarray, avail: np.ndarray | None = None) -> np.ndarray:
        """P(w | context) for every unit w after each of many contexts at once: contexts (T, L) ids,
        the units read before each target, oldest first (only the last order-1 count); avail (T,):
        how many of a row's last units are text (rows at a text's start have fewer; the rest is
        padding), all of them by default. -> (T, V), rows summing to 1.

        Each order looks its contexts up once and then every unit's n-gram in one batch; contexts
        the order never saw (nor longer ones, then) keep the lower order's distribution."""
        ctx = np.asarray(contexts, dtype=np.int64).reshape(len(contexts), -1)
        T, V = len(ctx), self.vocab_size
        L = min(ctx.shape[1], self.order - 1)
        u = ctx[:, ctx.shape[1] - L :].astype(np.uint64) + np.uint64(1)
        have = np.full(T, L) if avail is None else np.minimum(np.asarray(avail), L)
        units = np.arange(1, V + 1, dtype=np.uint64)
        if self.uniform_floor:
            p = self._prob_rows(1, np.broadcast_to(units, (T, V)), np.zeros(T, dtype=np.uint64), np.full((T, V), 1.0 / V))
        else:
            lv = self.orders[0]
            p = np.tile(_lookup(lv.gram_keys, lv.gram_counts, units) / max(int(lv.ctx_totals.sum()), 1), (T, 1))
        for n in range(2, L + 2):
            m = n - 1  # the context's length
            key = u[:, L - m]
            for k, j in enumerate(range(L - m + 1, L), start=2):
                key = _extend(key, u[:, j], k, V)
            p = self._prob_rows(n, _extend(key[:, None], units[None, :], n, V), key, p, have >= m)
        return p

    def _prob_rows(self, n: int, grams: np.ndarray, ctx: np.ndarray, lower: np.ndarray, rows=None) -> np.ndarray:
        """``_prob`` for whole distributions: grams (T, V) keys, ctx (T,) their contexts' keys,
        lower (T, V) the order below's distributions; rows (T,) bool: the rows this order may read."""
        lv = self.orders[n - 1]
        if len(lv.ctx_keys) == 0:
            return lower
        pos = np.minimum(np.searchsorted(lv.ctx_keys, ctx), len(lv.ctx_keys) - 1)
        seen = lv.ctx_keys[pos] == ctx
        r = np.flatnonzero(seen if rows is None else seen & rows)
        if len(r) == 0:
            return lower
        V = grams.shape[1]
        c = _lookup(lv.gram_keys, lv.gram_counts, np.ascontiguousarray(grams[r]).ravel()).reshape(len(r), V).astype(np.float64)
        total = lv.ctx_totals[pos[r]].astype(np.float64)[:, None]
        if lv.ctx_n123 is not None:  # modified: the discount depends on the count
            d1, d2, d3 = lv.discounts
            d = np.where(c >= 3, d3, np.where(c == 2, d2, np.where(c == 1, d1, 0.0)))
            mass = (lv.ctx_n123[pos[r]].astype(np.float64) @ np.array([d1, d2, d3]))[:, None]
            pr = (c - d) / total + mass / total * lower[r]
        else:
            types = lv.ctx_types[pos[r]].astype(np.float64)[:, None]
            pr = np.maximum(c - lv.discount, 0.0) / total + lv.discount * types / total * lower[r]
        out = np.array(lower, dtype=np.float64)  # lower may be a view the caller keeps
        out[r] = pr
        return out

    def loss(self, history: np.ndarray, targets_from: int) -> float:
        """Mean negative log-probability (nats per character) of the targets."""
        p = self.probs_of(history, targets_from)
        return float(-np.log(p).mean())

    # ---- saving: safetensors (numpy arrays + JSON metadata), no pickle ------------------------

    def save(self, path, vocab_json: str, about: str = "") -> None:
        import json
        from pathlib import Path

        from safetensors.numpy import save as to_bytes

        from charnn.files import write_atomic

        tensors, levels = {}, []
        for n, lv in enumerate(self.orders, start=1):
            for name in ("gram_keys", "gram_counts", "ctx_keys", "ctx_totals", "ctx_types"):
                tensors[f"{n}.{name}"] = np.ascontiguousarray(getattr(lv, name))
            if lv.ctx_n123 is not None:
                tensors[f"{n}.ctx_n123"] = np.ascontiguousarray(lv.ctx_n123)
            levels.append({"discount": lv.discount, "discounts": list(lv.discounts)})
        meta = {
            "format": NGRAM_FORMAT,
            "order": str(self.order),
            "vocab_size": str(self.vocab_size),
            "vocab": vocab_json,
            "levels": json.dumps(levels),
            "train_chars": str(self.train_chars),
            "uniform_floor": str(self.uniform_floor),
            "modified": str(self.modified),
            "about": about,
        }
        write_atomic(Path(path), to_bytes(tensors, metadata=meta))

    @classmethod
    def load(cls, path) -> tuple["KneserNey", str]:
        """-> (model, its vocabulary as JSON)."""
        import json

        from safetensors import SafetensorError, safe_open

        try:
            with safe_open(str(path), framework="numpy") as f:
                meta = f.metadata() or {}
                if meta.get("format") == "charnn-ngram-1":
                    raise CharnnError(
                        f"{path} was saved by an older charnn whose keys for long n-grams collided; "
                        f"count it again with `charnn ngram TEXT --order N --save FILE`"
                    )
                if meta.get("format") != NGRAM_FORMAT:
                    raise CharnnError(f"{path} is not an n-gram model saved by `charnn ngram --save`")
                m = cls(
                    int(meta["order"]),
                    int(meta["vocab_size"]),
                    uniform_floor=meta["uniform_floor"] == "True",
                    modified=meta["modified"] == "True",
                )
                m.train_chars = int(meta["train_chars"])
                for n, lv in enumerate(json.loads(meta["levels"]), start=1):
                    arrays = {
                        k: f.get_tensor(f"{n}.{k}") for k in ("gram_keys", "gram_counts", "ctx_keys", "ctx_totals", "ctx_types")
                    }
                    n123 = f.get_tensor(f"{n}.ctx_n123") if f"{n}.ctx_n123" in f.keys() else None
                    m.orders.append(_Order(**arrays, discount=lv["discount"], discounts=tuple(lv["discounts"]), ctx_n123=n123))
                return m, meta["vocab"]
        except (SafetensorError, OSError, KeyError, ValueError) as e:
            raise CharnnError(f"cannot read n-gram model {path} ({str(e).splitlines()[0] if str(e) else e})") from None

    def distribution(self, context: np.ndarray) -> np.ndarray:
        """P(w | context) for every w in the vocabulary, as (V,)."""
        ctx = np.asarray(context, dtype=np.int64)
        return self.next_distributions(ctx[None], avail=np.array([len(ctx)]))[0]


@dataclass
class NgramReport:
    order: int
    train_chars: int
    losses: dict[str, tuple[float, int]]  # split -> (nats per char, chars scored)
    seconds: float

    def to_dict(self) -> dict:
        return {
            "order": self.order,
            "train_chars": self.train_chars,
            "seconds": self.seconds,
            **{k: {"loss": v, "bpc": v / math.log(2), "chars": c} for k, (v, c) in self.losses.items()},
        }


def train_and_score(
    text: str,
    order: int,
    split=(0.9, 0.05, 0.05),
    include: str = "*",
    unit: str = "char",
    encoding_errors: str = "strict",
    seed: int = 1337,
    discount: float | None = None,
    modified: bool = True,
    save: str | None = None,
) -> NgramReport:
    """Fit on the training split of TEXT; score the validation and test splits, each read with
    the text before it as context (as the RNN is evaluated)."""
    import time

    from charnn.data import prepare

    t0 = time.perf_counter()
    enc = prepare(text, include, unit, encoding_errors, seed)
    parts = enc.splits(split)
    model = KneserNey(order, len(enc.vocab), discount, modified=modified and discount is None).fit(np.asarray(parts["train"]))
    if save:
        model.save(save, enc.vocab.to_json(), about=f"{order}-gram of the training split {split} of {text}")
    losses = {}
    start = len(parts["train"])
    for name in ("val", "test"):
        piece = parts[name]
        if len(piece):
            lead = max(0, start - order)  # enough history for the first character
            history = np.asarray(enc.ids[lead : start + len(piece)])
            losses[name] = (model.loss(history, start - lead), len(piece))
        start += len(piece)
    return NgramReport(order, model.train_chars, losses, time.perf_counter() - t0)
