"""charnn serve: the HTTP API in process (httpx through FastAPI's TestClient), the stream against
a real uvicorn on loopback, the bounds and the run names."""

import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
import torch

fastapi = pytest.importorskip("fastapi")
from helpers import learnable_text  # noqa: E402
from fastapi.testclient import TestClient  # noqa: E402
from helpers import Server, train_runs, wait  # noqa: E402

from charnn import checkpoint as ckpt  # noqa: E402
from charnn.inspect.activations import record_all  # noqa: E402
from charnn.web.serve import MAX_BODY, create_app, open_runs  # noqa: E402


def _charnn(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "charnn", *map(str, args)], capture_output=True, text=True,
                          timeout=timeout, env=dict(os.environ, PYTHONUNBUFFERED="1"))


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    return train_runs(tmp_path_factory.mktemp("serve"))


@pytest.fixture(scope="module")
def client(runs):
    app = create_app(open_runs([runs / "lstm", runs / "gru"]), workers=2, queue=4)
    with TestClient(app) as c:
        yield c


def test_runs_are_listed_by_name_with_what_their_checkpoints_say(client, runs):
    listed = {r["name"]: r for r in client.get("/api/runs").json()}
    assert set(listed) == {"lstm", "gru"}
    best = ckpt.load(runs / "lstm", "best")
    r = listed["lstm"]
    assert (r["cell"], r["layers"], r["hidden"], r["vocab_size"]) == ("lstm", 2, 32, len(best.vocab))
    assert r["params"] == best.build_model().num_params and r["steps"] == best.meta["step"]
    assert r["best_val_loss"] == pytest.approx(best.meta["val_loss"])
    assert listed["gru"]["cell"] == "gru" and listed["gru"]["quantities"] == ["h", "r", "z", "n"]


@pytest.mark.parametrize("body, cli", [
    ({"prime": "one two", "temperature": 0.9, "length": 120, "seed": 7},
     ["--prime", "one two", "--temperature", "0.9", "--length", "120", "--seed", "7"]),
    ({"num": 3, "top_k": 4, "top_p": 0.9, "length": 80, "seed": 3, "stop": "four"},
     ["--num", "3", "--top-k", "4", "--top-p", "0.9", "--length", "80", "--seed", "3", "--stop", "four"]),
    ({"prime": "one", "length": 100, "seed": 2, "clamp": "0:5=0.95,1:3=-0.9"},
     ["--prime", "one", "--length", "100", "--seed", "2", "--clamp", "0:5=0.95,1:3=-0.9"]),
])
@pytest.mark.slow
def test_a_sample_is_exactly_what_charnn_sample_prints(client, runs, body, cli):
    got = client.post("/api/runs/lstm/sample", json=body)
    assert got.status_code == 200, got.text
    printed = _charnn("sample", runs / "lstm", *cli)
    assert printed.returncode == 0, printed.stderr
    assert "\n----\n".join(got.json()["samples"]) + "\n" == printed.stdout
    assert len(got.json()["samples"]) == body.get("num", 1)


def _events(lines) -> list[tuple[str, dict]]:
    out, kind = [], "message"
    for line in lines:
        if line.startswith("event: "):
            kind = line[7:]
        elif line.startswith("data: "):
            out.append((kind, json.loads(line[6:])))
            kind = "message"
    return out


def test_the_stream_sends_pieces_that_make_the_same_sample_then_an_end_event(client):
    body = {"prime": "one", "length": 150, "seed": 5, "temperature": 1.0}
    with client.stream("POST", "/api/runs/lstm/sample/stream", json=body) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        events = _events(r.iter_lines())
    whole = client.post("/api/runs/lstm/sample", json=body).json()["samples"][0]
    pieces = [e["text"] for k, e in events if k == "message"]
    assert len(pieces) > 100 and events[-1] == ("end", {"chars": 150})
    assert "one" + "".join(pieces) == whole


def test_scoring_a_text_equals_charnn_eval_on_the_same_text(client, runs, tmp_path):
    text = learnable_text(60, seed=9)
    got = client.post("/api/runs/gru/eval", json={"text": text}).json()
    f = tmp_path / "t.txt"
    f.write_text(text, encoding="utf-8")
    printed = json.loads(_charnn("eval", runs / "gru", "--text", f, "--json").stdout)
    assert got["chars"] == printed["chars"] == len(text) - 1
    for k in ("loss", "bpc", "perplexity"):
        assert got[k] == pytest.approx(printed[k], rel=1e-6)


@pytest.mark.parametrize("layer, quantity", [(1, "c"), (0, "f"), (1, "h")])
def test_activations_are_every_cell_of_the_layer_and_the_top_five_next_characters(client, runs, layer, quantity):
    text = "one two three.\nfour"
    got = client.post("/api/runs/lstm/activations", json={"text": text, "layer": layer, "quantity": quantity}).json()
    loaded = ckpt.load(runs / "lstm")
    model = loaded.build_model()
    ids = np.asarray(loaded.vocab.encode(text))
    want = record_all(model, ids, quantities=(quantity,)).acts[quantity][layer].numpy()  # (N, H)
    chars = got["characters"]
    assert "".join(c["char"] for c in chars) == text and got["cells"] == 32
    assert np.allclose(np.array([c["values"] for c in chars]), want, atol=1e-4)
    with torch.no_grad():
        logits, _ = model(torch.as_tensor(ids)[None])
    probs = torch.softmax(logits[0], -1)  # (N, V), independently of the recorder
    for i, c in enumerate(chars):
        top = torch.topk(probs[i], 5)
        assert [t["char"] for t in c["top"]] == [loaded.vocab.decode([j]) for j in top.indices.tolist()]
        assert [t["p"] for t in c["top"]] == pytest.approx(top.values.tolist(), abs=1e-4)
        if i + 1 < len(text):
            assert c["loss"] == pytest.approx(-float(torch.log(probs[i, ids[i + 1]])), abs=1e-4)
    assert chars[-1]["loss"] is None


@pytest.mark.parametrize("path, body, status, says", [
    ("sample", {"length": 10_001}, 422, "length"),
    ("sample", {"num": 65}, 422, "num"),
    ("sample", {"num": 0}, 422, "num"),
    ("sample", {"temperature": -1}, 422, "temperature"),
    ("sample", {"top_p": 0}, 422, "top_p"),
    ("sample", {"seed": -1}, 422, "seed"),
    ("sample", {"prime": "x" * 10_001}, 422, "prime"),
    ("sample", {"stop": ""}, 422, "stop"),
    ("sample", {"lenght": 5}, 422, "lenght"),
    ("sample", {"prime": "\u00e9t\u00e9"}, 400, "never seen"),
    ("sample", {"length": "many"}, 422, "length"),
    ("sample/stream", {"num": 2}, 400, "one sample"),
    ("sample/stream", {"prime": "Z"}, 400, "never seen"),
    ("eval", {}, 422, "text"),
    ("eval", {"text": "o"}, 422, "text"),
    ("eval", {"text": "\u4e2d\u6587"}, 400, "never seen"),
    ("activations", {"text": "one", "layer": 2}, 400, "layers 0 to 1"),
    ("activations", {"text": "one", "quantity": "z"}, 400, "has no quantity"),
    ("activations", {"text": "one", "quantity": "x"}, 422, "quantity"),
    ("activations", {"text": "o" * 10_001}, 422, "text"),
    ("activations", {"text": "one", "clamp": "9:0=0.5"}, 400, "layer 9 does not exist"),
    ("sample", {"clamp": "0:1"}, 400, "LAYER:CELL=VALUE"),
    ("sample/stream", {"clamp": "0:1=2"}, 400, "strictly between"),
])
def test_every_bad_request_is_a_4xx_with_a_message(client, path, body, status, says):
    r = client.post(f"/api/runs/lstm/{path}", json=body)
    assert r.status_code == status, r.text
    assert says in r.json()["detail"]


def test_bodies_past_the_limit_and_malformed_json_are_refused(client):
    big = json.dumps({"text": "o" * (MAX_BODY + 10)})
    r = client.post("/api/runs/lstm/eval", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413 and "over" in r.json()["detail"]
    r = client.post("/api/runs/lstm/eval", content=b'{"text": ', headers={"content-type": "application/json"})
    assert r.status_code == 422 and r.json()["detail"]


def test_clients_name_runs_and_can_reach_nothing_else(client, runs):
    (runs / "elsewhere").symlink_to(runs / "gru")  # beside the served runs, not one of them
    (runs / "secret.txt").write_text("do not serve me")
    for name in ["..", "%2e%2e", "..%2F..%2Fetc%2Fpasswd", "%2Fetc%2Fpasswd", "elsewhere", "text.txt",
                 "secret.txt", "lstm%2F..%2Fgru", "LSTM", "lstm%00", "cache"]:
        for path in ("sample", "eval", "activations"):
            r = client.post(f"/api/runs/{name}/{path}", json={"text": "one two"} if path != "sample" else {})
            assert r.status_code in (404, 405), (name, path, r.status_code)
            assert "do not serve me" not in r.text and "root:" not in r.text
    r = client.post("/api/runs/elsewhere/sample", json={})
    assert r.status_code == 404 and "lstm" in r.json()["detail"]  # says which runs there are


def test_two_runs_with_one_name_and_a_missing_folder_are_refused_at_start(runs, tmp_path):
    from charnn.errors import CharnnError

    shutil.copytree(runs / "gru", tmp_path / "gru")
    with pytest.raises(CharnnError, match="two runs are named 'gru'"):
        open_runs([runs / "gru", tmp_path / "gru"])
    with pytest.raises(CharnnError, match="not a run directory"):
        open_runs([tmp_path / "nothing"])


def test_a_checkpoint_rewritten_on_disk_is_served_at_the_next_request(runs, tmp_path):
    shutil.copytree(runs / "lstm", tmp_path / "live")
    (tmp_path / "live" / ckpt.BEST).unlink()
    shutil.copy(runs / "gru" / ckpt.BEST, tmp_path / "live" / ckpt.LAST)  # served: last (best is absent)
    with TestClient(create_app(open_runs([tmp_path / "live"]))) as c:
        assert c.get("/api/runs").json()[0]["cell"] == "gru"
        shutil.copy(runs / "lstm" / ckpt.LAST, tmp_path / "live" / ".tmp")
        os.replace(tmp_path / "live" / ".tmp", tmp_path / "live" / ckpt.LAST)  # as the trainer writes it
        assert c.get("/api/runs").json()[0]["cell"] == "lstm"


def test_the_schema_and_the_page_are_served(client):
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/runs", "/api/runs/{name}/sample", "/api/runs/{name}/sample/stream", "/api/runs/{name}/eval",
            "/api/runs/{name}/activations"} <= set(paths)
    page = client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "http://" not in page.text and "https://" not in page.text  # nothing loaded from the network


# ---- a real server on loopback -------------------------------------------------------------------

def test_pieces_arrive_before_the_end_and_a_client_that_leaves_stops_the_generation(runs, monkeypatch):
    import httpx

    from charnn.web import serve

    made = []

    def slow_stream(*a, **k):  # the real generator, paced so that 10,000 characters take 30 s or more
        for piece in real_stream(*a, **k):
            made.append(piece)
            time.sleep(0.003)
            yield piece

    real_stream = serve.stream
    monkeypatch.setattr(serve, "stream", slow_stream)
    app = create_app(open_runs([runs / "lstm"]), workers=1, queue=0)
    with Server(app) as srv:
        url = f"http://127.0.0.1:{srv.port}/api/runs/lstm/sample/stream"
        with httpx.Client(timeout=30) as http:
            with http.stream("POST", url, json={"length": 10_000, "temperature": 1.0}) as r:
                lines = r.iter_lines()
                first = next(line for line in lines if line.startswith("data: "))
                assert json.loads(first[6:])["text"]
                assert app.state.streaming == 1  # still generating: the piece came before the end
                # the one worker is busy streaming and the queue is empty: the next request waits no queue
                busy = http.post(f"http://127.0.0.1:{srv.port}/api/runs/lstm/sample", json={"length": 5})
                assert busy.status_code == 503 and busy.headers["retry-after"] == "1"
            # the client went away mid-stream (10,000 characters take far longer than this wait)
            assert wait(lambda: app.state.streaming == 0), "generation went on after the client left"
            assert len(made) < 3000, len(made)
            assert app.state.workers.active == 0
            ok = http.post(f"http://127.0.0.1:{srv.port}/api/runs/lstm/sample", json={"length": 5})
            assert ok.status_code == 200


TOKEN = "t0k3n-abcdefghijklmnop"


def test_serve_listens_on_loopback_unless_told_and_needs_a_token_when_told(runs, monkeypatch, capsys):
    import uvicorn

    from charnn.cli.main import main

    seen = []
    monkeypatch.setattr(uvicorn, "run", lambda app, host, port, **kw: seen.append((host, port, app)))
    monkeypatch.delenv("CHARNN_SERVE_TOKEN", raising=False)
    assert main(["serve", str(runs / "lstm")]) == 0
    assert seen[-1][:2] == ("127.0.0.1", 8000) and "token" not in capsys.readouterr().err
    assert main(["serve", str(runs / "lstm"), "--host", "0.0.0.0", "--port", "9000"]) == 2
    assert "lets other machines in: give a --token" in capsys.readouterr().err and len(seen) == 1
    assert main(["serve", str(runs / "lstm"), "--host", "0.0.0.0", "--token", "short"]) == 2
    assert "at least 16 printable characters" in capsys.readouterr().err and len(seen) == 1
    assert main(["serve", str(runs / "lstm"), "--host", "0.0.0.0", "--port", "9000", "--token", TOKEN]) == 0
    assert seen[-1][:2] == ("0.0.0.0", 9000) and f"http://0.0.0.0:9000/?token={TOKEN}" in capsys.readouterr().err
    monkeypatch.setenv("CHARNN_SERVE_TOKEN", TOKEN)
    assert main(["serve", str(runs / "lstm"), "--host", "0.0.0.0"]) == 0
    with TestClient(seen[-1][2]) as c:  # the app it would have served asks for the token
        assert c.get("/api/runs").status_code == 401
        assert c.get("/api/runs", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200


def test_a_server_with_a_token_answers_nothing_without_it(runs):
    app = create_app(open_runs([runs / "lstm"]), token=TOKEN)
    good = {"authorization": f"Bearer {TOKEN}"}
    with TestClient(app) as c:
        for method, path, body in [("get", "/", None), ("get", "/api/runs", None), ("get", "/openapi.json", None),
                                   ("get", "/docs", None), ("get", "/api/runs/lstm/progress", None),
                                   ("post", "/api/runs/lstm/sample", {"length": 5}),
                                   ("post", "/api/runs/lstm/eval", {"text": "one two."}),
                                   ("post", "/api/runs/lstm/next", {"text": "one"}),
                                   ("post", "/api/runs/lstm/sample/stream", {"length": 5})]:
            call = getattr(c, method)
            kw = {"json": body} if body is not None else {}
            for headers in ({}, {"authorization": "Bearer wrong-token-abcdefgh"}, {"authorization": TOKEN}):
                r = call(path, headers=headers, **kw)
                assert r.status_code == 401 and "needs its token" in r.json()["detail"], (path, headers)
            assert call(path, headers=good, **kw).status_code == 200, path
        page = c.get(f"/?token={TOKEN}")  # how the page arrives: the address charnn serve prints
        assert page.status_code == 200 and "Bearer ${TOKEN}" in page.text
        assert c.get("/?token=nope").status_code == 401


@pytest.mark.parametrize("argv, says", [
    (["serve"], "the following arguments are required"),
    (["serve", "nowhere"], "not a run directory"),
    (["serve", "RUN", "--port", "70000"], "--port must be 0 to 65535"),
])
def test_bad_serve_commands_are_one_line(runs, argv, says):
    argv = [str(runs / "lstm") if a == "RUN" else a for a in argv]
    r = _charnn(*argv)
    assert r.returncode == 2 and says in r.stderr and len(r.stderr.strip().splitlines()) == 1


@pytest.mark.slow
def test_no_request_valid_or_not_gets_a_5xx(runs):
    """schemathesis draws requests from the OpenAPI schema (and requests that break it); none
    may end in a server error."""
    schemathesis = pytest.importorskip("schemathesis")
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from hypothesis.errors import Unsatisfiable

    app = create_app(open_runs([runs / "lstm", runs / "gru"]), workers=2, queue=64)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    seen = {}
    for result in schema.get_all_operations():
        op = result.ok()
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):
            @settings(max_examples=25, deadline=None, suppress_health_check=list(HealthCheck), database=None)
            @given(case=op.as_strategy(generation_mode=mode), real=st.sampled_from([None, "lstm", "gru"]))
            def check(case, real):
                if real and case.path_parameters and "name" in case.path_parameters:
                    case.path_parameters["name"] = real  # most drawn names are unknown: also ask real runs
                r = case.call()
                assert r.status_code < 500, (case.method, case.formatted_path, case.body, r.status_code, r.text[:300])
                seen.setdefault(op.label, set()).add(r.status_code)

            try:
                check()
            except Unsatisfiable:  # an operation without parameters has no invalid request to draw
                assert mode == schemathesis.GenerationMode.NEGATIVE
    assert len(seen) == 7  # every operation was exercised
    assert 200 in seen["POST /api/runs/{name}/sample"] and 422 in seen["POST /api/runs/{name}/sample"]


def test_progress_is_the_runs_logs_after_a_step(client, runs):
    logged = [json.loads(x) for x in (runs / "lstm" / "metrics.jsonl").read_text().splitlines()]
    got = client.get("/api/runs/lstm/progress").json()
    assert [m["step"] for m in got["metrics"]] == [r["step"] for r in logged]
    later = client.get("/api/runs/lstm/progress", params={"since": 40}).json()
    assert later["metrics"] and all(m["step"] > 40 for m in later["metrics"])
    assert all(s["step"] > 40 for s in later["samples"]) and any(s["text"] for s in got["samples"])
    assert client.get("/api/runs/lstm/progress", params={"since": -1}).status_code == 422
    assert client.get("/api/runs/nope/progress").status_code == 404


def test_a_clamped_cell_holds_its_value_while_reading_and_changes_the_predictions(client):
    text = "one two three.\none two"
    free = client.post("/api/runs/lstm/activations", json={"text": text, "layer": 1, "quantity": "c"}).json()
    held = client.post("/api/runs/lstm/activations",
                       json={"text": text, "layer": 1, "quantity": "c", "clamp": "1:4=-0.8,1:9=0.7"}).json()
    assert all(c["values"][4] == pytest.approx(-0.8, abs=1e-4) and c["values"][9] == pytest.approx(0.7, abs=1e-4)
               for c in held["characters"])
    assert [c["loss"] for c in held["characters"]] != [c["loss"] for c in free["characters"]]
    a = client.post("/api/runs/lstm/sample", json={"length": 200, "seed": 1}).json()["samples"]
    b = client.post("/api/runs/lstm/sample", json={"length": 200, "seed": 1, "clamp": "0:0=0.99,0:1=-0.99"}).json()
    assert b["samples"] != a


def test_a_failure_after_the_stream_started_ends_it_with_an_error_event(client, monkeypatch):
    from charnn.sample import NonFiniteOutput
    from charnn.web import serve

    def broken(*a, **k):
        def gen():
            yield "a"
            yield "b"
            raise NonFiniteOutput("the model's next-character probabilities are not finite")
        return gen()

    monkeypatch.setattr(serve, "stream", broken)
    with client.stream("POST", "/api/runs/lstm/sample/stream", json={}) as r:
        assert r.status_code == 200
        events = _events(r.iter_lines())
    assert events[0] == ("message", {"text": "a"}) and events[-1][0] == "error"
    assert "not finite" in events[-1][1]["detail"]


def test_next_gives_the_candidates_at_each_temperature_as_show_probs_does(client, runs):
    got = client.post("/api/runs/lstm/next", json={"text": "one two th", "temperatures": [0.5, 1], "top": 4}).json()
    printed = json.loads(_charnn("sample", runs / "lstm", "--prime", "one two th", "--show-probs", "--temperatures",
                                 "0.5,1", "--json").stdout)
    assert got["candidates"] == printed["candidates"][:4]
    for t in ("0.5", "1"):
        assert got["probs"][t] == pytest.approx(printed["probs"][t][:4], abs=1e-5)
    assert client.post("/api/runs/lstm/next", json={"temperatures": [-1]}).status_code == 400
    assert client.post("/api/runs/lstm/next", json={"temperatures": []}).status_code == 422


def test_requests_may_name_a_kept_checkpoint(client, runs):
    assert client.get("/api/runs").json()[0]["kept_steps"] == [20, 40]
    body = {"length": 80, "seed": 4, "checkpoint": "step:20"}
    got = client.post("/api/runs/lstm/sample", json=body).json()["samples"][0]
    printed = _charnn("sample", runs / "lstm", "--length", "80", "--seed", "4", "--checkpoint", "step:20")
    assert got + "\n" == printed.stdout
    assert got != client.post("/api/runs/lstm/sample", json=dict(body, checkpoint="best")).json()["samples"][0]
    early = client.post("/api/runs/lstm/eval", json={"text": "one two three.\n", "checkpoint": "step:20"}).json()
    late = client.post("/api/runs/lstm/eval", json={"text": "one two three.\n", "checkpoint": "step:40"}).json()
    assert early["loss"] != late["loss"]
    missing = client.post("/api/runs/lstm/sample", json={"checkpoint": "step:7"})
    assert missing.status_code == 400 and "it kept steps 20, 40" in missing.json()["detail"]
    assert client.post("/api/runs/lstm/sample", json={"checkpoint": "../best"}).status_code == 422
