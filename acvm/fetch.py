"""``acvm data fetch``: the course's real sequences, downloaded, checked and unpacked.

Each sequence is one archive ``<base URL>/<NAME>.tar.gz`` holding the folder ``NAME/`` in the
layout :func:`acvm.data.load_sequence` reads. Every file is checked against the SHA-256 sums the
package ships (``acvm/sequences_manifest.json``, made from the course's ``SHA256SUMS`` files by
``scripts/make_sequences_manifest.py``) before the folder appears, so a damaged or different
download never looks like a sequence. An interrupted download resumes where it stopped (HTTP
``Range``). The sequences are research benchmark data that this repository does not host: the
base URL is where a course publishes the archives (``--url`` or ``$ACVM_DATA_URL``).
"""
from __future__ import annotations

import errno
import json
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from .weights import sha256

__all__ = ["manifest", "fetch", "FetchError"]

MANIFEST = Path(__file__).resolve().parent / "sequences_manifest.json"


class FetchError(RuntimeError):
    """A sequence could not be fetched; the message says which and why."""


def manifest() -> dict:
    """``{name: {"files": {relative path: sha256}, "source": {...}}}`` of the course's sequences."""
    return json.loads(MANIFEST.read_text())


def _download(url: str, part: Path, timeout: float) -> None:
    """Fetch ``url`` into ``part``, continuing from its current size when the server allows."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            resumed = have and response.status == 206
            with open(part, "ab" if resumed else "wb") as out:
                shutil.copyfileobj(response, out, 1 << 20)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:      # already complete
            return
        raise FetchError(f"{url}: the server answered {exc.code} {exc.reason}") from None
    except urllib.error.URLError as exc:
        raise FetchError(f"cannot reach {url} ({exc.reason}): no network, or a wrong --url") from None
    except OSError as exc:
        if exc.errno == errno.ENOSPC:
            raise FetchError(f"the disk is full while writing {part} (the part kept so far stays there; "
                             "free space and run the command again to continue)") from None
        raise FetchError(f"{url}: {exc}") from None


def _check(folder: Path, files: dict[str, str], name: str) -> None:
    for rel, digest in sorted(files.items()):
        path = folder / rel
        if not path.is_file():
            raise FetchError(f"{name}: the archive lacks {rel}")
        if sha256(path) != digest:
            raise FetchError(f"{name}/{rel}: its SHA-256 differs from the course's (a damaged download, or "
                             "another version of the sequence); nothing was installed")


def fetch(names: list[str] | None = None, to: str | os.PathLike | None = None, url: str | None = None,
          timeout: float = 60.0, log=print) -> list[Path]:
    """Download, check and unpack sequences (default: all of the manifest) into ``to`` (default:
    :func:`acvm.data.user_sequences_dir`, where the course looks last). A sequence already there
    and intact is skipped. Returns the sequence folders. Raises :class:`FetchError` naming the
    sequence and the reason; the sequences finished before it stay installed."""
    from .data import user_sequences_dir
    known = manifest()
    names = list(names or known)
    unknown = [n for n in names if n not in known]
    if unknown:
        raise FetchError(f"unknown sequence {', '.join(unknown)}; the course's are {', '.join(sorted(known))}")
    base = (url or os.environ.get("ACVM_DATA_URL") or "").rstrip("/")
    if not base:
        raise FetchError("no download location: the sequences are benchmark data this repository does not host; "
                         "pass --url (or set ACVM_DATA_URL) to where your course publishes <NAME>.tar.gz")
    to = Path(to) if to else user_sequences_dir()
    to.mkdir(parents=True, exist_ok=True)
    done = []
    for name in names:
        target, files = to / name, known[name]["files"]
        if target.is_dir():
            try:
                _check(target, files, name)
                log(f"{name}: already in {target}, intact")
                done.append(target)
                continue
            except FetchError:
                log(f"{name}: {target} is incomplete or changed; fetching it again")
        part = to / f".{name}.tar.gz.part"
        _download(f"{base}/{name}.tar.gz", part, timeout)
        with tempfile.TemporaryDirectory(dir=to, prefix=f".{name}.") as tmp:
            try:
                with tarfile.open(part) as archive:
                    archive.extractall(tmp, filter="data")
            except (tarfile.TarError, EOFError) as exc:
                part.unlink(missing_ok=True)
                raise FetchError(f"{name}: the archive is not a readable .tar.gz ({exc}); it was removed, "
                                 "run the command again") from None
            try:
                _check(Path(tmp) / name, files, name)
            except FetchError:
                part.unlink(missing_ok=True)      # the next run downloads it afresh
                raise
            if target.exists():
                shutil.rmtree(target)
            os.replace(Path(tmp) / name, target)
        part.unlink(missing_ok=True)
        log(f"{name}: {len(files)} files checked, in {target}")
        done.append(target)
    return done
