"""acvm data fetch against a local HTTP server (127.0.0.1, started and stopped here) serving
archives made from the shared sequences: checked, resumed, and a damaged byte refused."""
import http.server
import io
import tarfile
import threading
from pathlib import Path

import pytest

from acvm.fetch import FetchError, fetch, manifest

from conftest import ROOT

SHARED = ROOT.parent / "shared" / "sequences"
NAME = "OTB_Crossing"                      # the smallest of the six (1.5 MB)


def _archive(folder: Path, damage: str | None = None) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                data = path.read_bytes()
                rel = path.relative_to(folder).as_posix()
                if rel == damage:
                    data = data[:100] + bytes([data[100] ^ 0xFF]) + data[101:]
                info = tarfile.TarInfo(f"{folder.name}/{rel}")
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buf.getvalue()


@pytest.fixture
def server():
    files, ranges = {}, []

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = files.get(self.path.lstrip("/"))
            if body is None:
                self.send_error(404)
                return
            start = 0
            if self.headers.get("Range"):
                start = int(self.headers["Range"].split("=")[1].split("-")[0])
                ranges.append(start)
            self.send_response(206 if start else 200)
            self.send_header("Content-Length", str(len(body) - start))
            self.end_headers()
            self.wfile.write(body[start:])

        def log_message(self, *args):
            pass
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}", files, ranges
    httpd.shutdown()
    httpd.server_close()


pytestmark = pytest.mark.skipif(not (SHARED / NAME).is_dir(), reason="needs ../shared/sequences")


def test_manifest_holds_every_file_of_the_six():
    m = manifest()
    assert sorted(m) == sorted(p.name for p in SHARED.iterdir() if (p / "SHA256SUMS").is_file())
    assert len(m[NAME]["files"]) == len((SHARED / NAME / "SHA256SUMS").read_text().splitlines())


def test_fetch_checks_unpacks_and_the_loader_reads_it(server, tmp_path):
    from acvm.data import load_sequence
    base, files, _ = server
    files[f"{NAME}.tar.gz"] = _archive(SHARED / NAME)
    [folder] = fetch([NAME], tmp_path, base, log=lambda *a: None)
    assert folder == tmp_path / NAME
    seq, ref = load_sequence(folder), load_sequence(SHARED / NAME)
    assert len(seq) == len(ref) and (seq.boxes == ref.boxes).all()
    assert not list(tmp_path.glob(".*"))                       # no partial file or temporary folder left
    said = []
    fetch([NAME], tmp_path, base, log=said.append)             # a second run finds it intact
    assert "intact" in said[0]


def test_an_interrupted_download_resumes_from_where_it_stopped(server, tmp_path):
    base, files, ranges = server
    body = _archive(SHARED / NAME)
    files[f"{NAME}.tar.gz"] = body
    (tmp_path / f".{NAME}.tar.gz.part").write_bytes(body[:len(body) // 2])    # cut half-way
    fetch([NAME], tmp_path, base, log=lambda *a: None)
    assert ranges == [len(body) // 2]
    assert (tmp_path / NAME / "groundtruth_rect.txt").is_file()


def test_a_damaged_byte_is_refused_and_nothing_is_installed(server, tmp_path):
    base, files, _ = server
    files[f"{NAME}.tar.gz"] = _archive(SHARED / NAME, damage="img/0005.jpg")
    with pytest.raises(FetchError, match=f"{NAME}/img/0005.jpg: its SHA-256 differs"):
        fetch([NAME], tmp_path, base, log=lambda *a: None)
    assert not (tmp_path / NAME).exists() and not list(tmp_path.glob(".*"))


def test_clear_errors_for_no_network_no_location_and_unknown_names(tmp_path, monkeypatch):
    monkeypatch.delenv("ACVM_DATA_URL", raising=False)
    with pytest.raises(FetchError, match="no download location"):
        fetch([NAME], tmp_path)
    with pytest.raises(FetchError, match="unknown sequence OTB_Nope"):
        fetch(["OTB_Nope"], tmp_path, "http://127.0.0.1:9")
    with pytest.raises(FetchError, match="cannot reach http://127.0.0.1:9/"):
        fetch([NAME], tmp_path, "http://127.0.0.1:9", timeout=5)
