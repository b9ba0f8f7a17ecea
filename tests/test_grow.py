"""--init-from onto text with characters the old run never saw: the vocabulary grows, the new
rows start fresh, the old ones are untouched at step 0."""

import torch

from charnn import checkpoint as ckpt
from charnn.trainer import Trainer, train
from charnn.distributed import Dist
from helpers import learnable_text, tiny_config


def test_the_vocabulary_grows_and_the_old_rows_are_kept(tmp_path):
    (tmp_path / "old.txt").write_text(learnable_text())
    train(tiny_config(tmp_path / "old.txt", max_steps=30, eval_every=30), tmp_path / "old", progress=False)
    (tmp_path / "new.txt").write_text(learnable_text(seed=5).replace("two", "zwei").upper() + "one two.\n")
    source = ckpt.load(tmp_path / "old")
    (tmp_path / "new").mkdir()
    trainer = Trainer(tiny_config(tmp_path / "new.txt", max_steps=20, eval_every=20), tmp_path / "new", False,
                      tmp_path / "old", None, False, None, Dist())
    old, new = source.vocab, trainer.vocab
    assert set(old.codes.tolist()) < set(new.codes.tolist()) and {ord("Z"), ord("W")} <= set(new.codes.tolist())
    weights = trainer.model.state_dict()
    for code in old.codes.tolist():  # at step 0 every old symbol's rows are the old model's
        i, j = int((old.codes == code).nonzero()[0][0]), int((new.codes == code).nonzero()[0][0])
        assert torch.equal(weights["embed.weight"][j], source.weights["embed.weight"][i])
        assert torch.equal(weights["head.weight"][j], source.weights["head.weight"][i])
        assert weights["head.bias"][j] == source.weights["head.bias"][i]
    assert torch.equal(weights["rnn.weight_hh_l0"], source.weights["rnn.weight_hh_l0"])
    fresh = [int((new.codes == c).nonzero()[0][0]) for c in set(new.codes.tolist()) - set(old.codes.tolist())]
    assert all(weights["embed.weight"][j].abs().sum() > 0 for j in fresh)  # initialised, not zero
    result = trainer.run()
    assert result.steps == 20 and ckpt.load(tmp_path / "new").vocab == new
