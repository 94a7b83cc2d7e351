"""Write acvm/sequences_manifest.json from the course's sequence folders (their SHA256SUMS and SOURCE.txt).

    .venv/bin/python scripts/make_sequences_manifest.py ../shared/sequences

`acvm data fetch` checks every downloaded file against these sums; the frames themselves are
research benchmark data and never enter the repository.
"""
import json
import sys
from pathlib import Path

root = Path(sys.argv[1] if len(sys.argv) > 1 else "../shared/sequences")
manifest = {}
for folder in sorted(p for p in root.iterdir() if (p / "SHA256SUMS").is_file()):
    files = {}
    for line in (folder / "SHA256SUMS").read_text().splitlines():
        digest, name = line.split(maxsplit=1)
        files[name.lstrip("*")] = digest
    source = {}
    if (folder / "SOURCE.txt").is_file():
        for line in (folder / "SOURCE.txt").read_text().splitlines():
            key, _, value = line.partition(":")
            if key.strip() in ("repo", "path", "commit", "bench", "lic"):
                source[key.strip()] = value.strip()
    manifest[folder.name] = {"files": files, "source": source}
out = Path(__file__).resolve().parent.parent / "acvm" / "sequences_manifest.json"
out.write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
print(f"{out}: {len(manifest)} sequences, {sum(len(m['files']) for m in manifest.values())} files")
