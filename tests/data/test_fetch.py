"""`trainlab data fetch`: checksum verification, atomic writes, and a one-line error without network.
Served from a local HTTP server on 127.0.0.1, so nothing leaves the machine."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import threading

import pytest

from trainlab.data import fetch
from trainlab.errors import DataError


@pytest.fixture
def server(tmp_path):
    (tmp_path / "serve").mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path / "serve"))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield tmp_path / "serve", f"http://127.0.0.1:{httpd.server_address[1]}/"
    httpd.shutdown()


def test_fetch_verifies_and_writes(server, tmp_path, monkeypatch):
    folder, url = server
    payload = b"idx-bytes" * 100
    (folder / "a.gz").write_bytes(gzip.compress(payload))
    digest = hashlib.sha256(payload).hexdigest()
    monkeypatch.setitem(fetch.SOURCES, "mnist", [fetch.Download(url + "a.gz", f"sha256-content:{digest}")])
    dest = fetch.fetch_dataset("mnist", tmp_path / "out", timeout=5)
    assert gzip.decompress((dest / "a.gz").read_bytes()) == payload
    assert not list((tmp_path / "out").glob(".*"))  # no temporary file left behind


def test_fetch_rejects_a_wrong_checksum(server, tmp_path, monkeypatch):
    folder, url = server
    (folder / "b.gz").write_bytes(gzip.compress(b"tampered"))
    monkeypatch.setitem(fetch.SOURCES, "mnist", [fetch.Download(url + "b.gz", "md5:" + "0" * 32)])
    with pytest.raises(DataError, match="md5 is .* expected 0+ \\(corrupt or altered download\\)"):
        fetch.fetch_dataset("mnist", tmp_path / "out", timeout=5)
    assert not (tmp_path / "out" / "b.gz").exists()


def test_fetch_without_network_lists_alternatives(tmp_path, monkeypatch):
    monkeypatch.setitem(fetch.SOURCES, "fashion-mnist", [fetch.Download("http://127.0.0.1:9/x.gz", "md5:0")])
    with pytest.raises(
        DataError, match="cannot download .*alternatives: copy the files into .*apt-get install"
    ):
        fetch.fetch_dataset("fashion-mnist", tmp_path / "out", timeout=5)
