import hashlib
import http.server
import threading

import pytest

from charnn import corpus
from charnn.errors import CharnnError
from helpers import SHARED, require


def test_file_and_missing(tmp_path):
    f = tmp_path / "a.txt"
    f.write_text("abc")
    assert corpus.resolve(str(f)).files == (f,)
    with pytest.raises(CharnnError, match="no such file or folder: .*nope.txt"):
        corpus.resolve(str(tmp_path / "nope.txt"))


def test_folder_recursive_include_and_seeded_order(tmp_path):
    for i in range(12):
        sub = tmp_path / f"d{i % 3}"
        sub.mkdir(exist_ok=True)
        (sub / f"f{i}.c").write_text(f"int x{i};\n")
        (sub / f"f{i}.h").write_text("skip\n")
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "x.c").write_text("hidden\n")
    a = corpus.resolve(str(tmp_path), include="*.c", seed=1).files
    assert len(a) == 12 and all(p.suffix == ".c" for p in a)
    assert a == corpus.resolve(str(tmp_path), include="*.c", seed=1).files
    assert a != corpus.resolve(str(tmp_path), include="*.c", seed=2).files
    assert sorted(a) == sorted(corpus.resolve(str(tmp_path), include="*.c", seed=2).files)
    with pytest.raises(CharnnError, match="no non-empty files matching"):
        corpus.resolve(str(tmp_path), include="*.rs")


def test_stdlib_is_offline_and_large():
    c = corpus.resolve("stdlib")
    assert len(c.files) > 50 and c.size > 1_000_000
    assert all(p.suffix == ".py" for p in c.files)


class _Server:
    def __init__(self, payload: bytes):
        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                self.send_response(200)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *a):
                pass

        self.httpd = http.server.HTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/input.txt"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()


def test_download_verifies_and_caches():
    payload = b"First Citizen:\nBefore we proceed any further, hear me speak.\n"
    sha = hashlib.sha256(payload).hexdigest()
    srv = _Server(payload)
    try:
        path = corpus.download(srv.url, sha, "t.txt")
        assert path.read_bytes() == payload
    finally:
        srv.close()
    # Cached: a second call needs no server.
    assert corpus.download(srv.url, sha, "t.txt").read_bytes() == payload


def test_download_rejects_wrong_content():
    srv = _Server(b"tampered")
    try:
        with pytest.raises(CharnnError, match="has sha256 .* expected"):
            corpus.download(srv.url, "0" * 64, "bad.txt")
    finally:
        srv.close()
    assert not (corpus.cache_dir() / "corpora" / "bad.txt").exists()


def test_download_offline_is_a_clear_error():
    srv = _Server(b"")
    url = srv.url
    srv.close()  # nothing listens there now
    with pytest.raises(CharnnError, match="could not download x.txt .*check the network"):
        corpus.download(url, "0" * 64, "x.txt", timeout=5)


def test_pinned_shakespeare_hash_matches_reference_copy():
    require((SHARED / "tinyshakespeare.txt").exists(), "../shared/data/tinyshakespeare.txt")
    assert corpus._sha256(SHARED / "tinyshakespeare.txt") == corpus.SHAKESPEARE_SHA256
