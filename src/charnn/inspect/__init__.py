"""Look inside a trained model: the analyses of "Visualizing and Understanding Recurrent Networks".

- ``activations.record``: every cell's h, c and gates while reading a text, chunk by chunk;
- ``features``: what a cell might track (quotes, brackets, line position, ...);
- ``find.find_cells``: cells ranked by correlation with each feature;
- ``saturation.gate_saturation``: how often gates are shut or open;
- ``ablate.ablate``: silence cells and measure the loss where each feature is on and off;
- ``attention``: a transformer's attention, and its heads ranked by what they attend to.

The pages that show these live in ``charnn.web``; comparisons with other models (n-grams, the
error oracles, braces) in ``charnn.study``.
"""

from charnn.inspect.ablate import ablate, parse_cells
from charnn.inspect.find import find_cells
from charnn.inspect.saturation import gate_saturation
from charnn.subject import open_subject

__all__ = ["ablate", "parse_cells", "find_cells", "gate_saturation", "open_subject"]
