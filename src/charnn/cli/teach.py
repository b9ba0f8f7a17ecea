"""`charnn teach`: the blog's worked examples, computed for real (see charnn.teach)."""

from __future__ import annotations

import sys

from charnn.cli import args as flags
from charnn.files import strict_json


def add_parsers(sub) -> None:
    t = sub.add_parser(
        "teach",
        help='the blog\'s "hello" network, computed for real: scores, probabilities, '
        "one gradient step, training until it spells the word",
    )
    t.add_argument("lesson", choices=["hello"], help="hello: a tiny RNN learns to spell a word")
    t.add_argument("--word", default="hello", help="the word to learn (default hello)")
    t.add_argument("--hidden", type=flags.count, default=3, help="hidden units (default 3)")
    t.add_argument("--steps", type=flags.count, default=300, help="training updates (default 300)")
    t.add_argument("--lr", type=flags.number, default=0.5, help="learning rate of plain SGD (default 0.5)")
    t.add_argument("--seed", type=flags.count, default=0, help="the initial weights (same seed, same lesson)")
    t.add_argument(
        "--out",
        default=None,
        metavar="PAGE.html",
        help="also write an offline page that steps training one update at a time, for any word",
    )
    t.add_argument("--json", action="store_true", help="print one JSON object")
    t.set_defaults(func=cmd_teach)


def _vec(v, width=5) -> str:
    return "[" + " ".join(f"{x:+.{2}f}".rjust(width) for x in v) + "]"


def cmd_teach(args) -> int:
    from charnn.teach import teach

    lesson = teach(args.word, args.hidden, args.steps, args.lr, args.seed)
    if args.out:
        from charnn.web.pages import write_teach_page

        path = write_teach_page(lesson, args.out)
        print(f"wrote {path}; open it in a browser", file=sys.stderr)
    if args.json:
        print(strict_json(lesson.to_dict()))
        return 0
    colour = sys.stdout.isatty()
    paint = (lambda s, up: f"\033[{32 if up else 31}m{s}\033[0m") if colour else (lambda s, up: s)
    v, b, a = lesson.vocab, lesson.before, lesson.after_one_step
    names = " ".join(v)
    print(
        f'"{lesson.word}": vocabulary {names}; each letter goes in as a one-hot vector of {len(v)}; '
        f"{args.hidden} hidden units, weights from seed {args.seed}"
    )
    print(
        "A score is the network's raw number for each letter being next; softmax turns the scores into "
        "probabilities that sum to 1. The loss is -log of the probability given to the right letter.\n"
    )
    print(
        f"{'in':>3} {'next':>4}  {'hidden state':<{7 * args.hidden}}  {'scores (' + names + ')':<{7 * len(v)}}  "
        f"{'probabilities':<{7 * len(v)}}  loss"
    )
    for t, (i, o) in enumerate(zip(lesson.inputs, lesson.targets)):
        print(
            f"{i:>3} {o:>4}  {_vec(b.hidden[t]):<{7 * args.hidden}}  {_vec(b.scores[t]):<{7 * len(v)}}  "
            f"{_vec(b.probs[t]):<{7 * len(v)}}  {b.losses[t]:.3f}"
        )
    print(f"mean loss {b.loss:.3f}\n")
    print(
        f"one gradient step (plain SGD, learning rate {lesson.lr:g}): the right letter's score should go up "
        f"(green) and the others down (red)"
    )
    for t, (i, o) in enumerate(zip(lesson.inputs, lesson.targets)):
        cells = []
        for k, letter in enumerate(v):
            d = a.scores[t][k] - b.scores[t][k]
            good = d > 0 if letter == o else d < 0
            cells.append(paint(f"{letter}:{d:+.3f}", good))
        k = v.index(o)
        rose = a.probs[t][k] > b.probs[t][k]
        print(f"{i:>3} -> {o}  " + " ".join(cells) + f"   p({o}) {b.probs[t][k]:.3f} -> " + paint(f"{a.probs[t][k]:.3f}", rose))
    print(
        f"mean loss {b.loss:.3f} -> {a.loss:.3f} (one update on the whole word can trade one letter against "
        f"another; over many updates all of them rise)\n"
    )
    at = f"from update {lesson.spelled_at}" if lesson.spelled_at else "not yet: try more --steps or a larger --lr"
    print(
        f"training: loss {lesson.curve[0]:.3f} after the first update, {lesson.final.loss:.4f} after "
        f'{len(lesson.curve)}; the most likely next letters spell "{lesson.argmax}" ({at})'
    )
    # the first input letter that comes back with another next letter ("l" in "hello")
    c = next((c for c in lesson.inputs if len({o for i, o in zip(lesson.inputs, lesson.targets) if i == c}) > 1), None)
    ls = [t for t, i in enumerate(lesson.inputs) if i == c]
    if ls:
        print(
            f'\nThe same input "{c}" appears {len(ls)} times with different next letters '
            f"({', '.join(lesson.targets[t] for t in ls)}): the input alone cannot tell them apart; the hidden "
            f"state, which carries what came before, does:"
        )
        for t in ls:
            print(f"  {c} at step {t + 1} (next {lesson.targets[t]}): hidden {_vec(lesson.final.hidden[t])}")
    return 0
