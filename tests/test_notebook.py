"""examples/tour.ipynb runs from top to bottom (briefer training, same steps) and shows what it
says it shows; it is stored without outputs."""

import json
from pathlib import Path

import pytest

TOUR = Path(__file__).resolve().parents[1] / "examples" / "tour.ipynb"


def test_the_tour_is_stored_without_outputs():
    nb = json.loads(TOUR.read_text(encoding="utf-8"))
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(c["outputs"] == [] and c["execution_count"] is None for c in code)


@pytest.mark.slow
def test_the_tour_runs_and_shows_a_sample_a_score_a_cell_and_a_clamp(monkeypatch, tmp_path):
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    monkeypatch.setenv("CHARNN_TOUR_SECONDS", "8")
    monkeypatch.setenv("TMPDIR", str(tmp_path))  # the tour's run directory lands here
    nb = nbformat.read(TOUR, as_version=4)
    nbclient.NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    text = {}
    for k, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        out = []
        for o in cell.outputs:
            assert o.output_type != "error", o
            out.append(o.get("text", "") + (json.dumps(o["data"]) if o.get("data") else ""))
        text[k] = "".join(out)
    assert "Run(" in text[0] and "bits/char" in text[0]
    assert "Model(lstm" in text[1] and len(text[1]) > 300  # the model and a 300-character sample
    assert "T=0.5:" in text[2] and "T=1.0:" in text[2]
    tiny, noise = [float(line.split()[0]) for line in text[3].splitlines()[1:3]]
    assert tiny < noise  # code costs the model fewer bits than random letters
    assert "layer 0 cell" in text[4] and "r = " in text[4]
    assert "<iframe srcdoc=" in text[5]  # the cells page, inline
    assert text[7].count("held at") == 2
