"""Comparisons and the paper's study: models held against each other and against n-gram baselines.

- ``ngram``: interpolated Kneser-Ney n-gram models, the paper's baselines;
- ``grid``: parameter-matched cell x depth x budget grids (the paper's Table 1);
- ``oracles``: where the errors come from, the paper's oracles peeled in order;
- ``braces``: loss on '}' by distance to its '{', the RNN against an n-gram.
"""
