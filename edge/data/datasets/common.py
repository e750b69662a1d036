"""What every dataset loader shares: the Sample record, annotation-sheet reading, frame lookup, labels."""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import UserError

log = logging.getLogger(__name__)

# MEGC2019 composite (3 classes) from native labels, lower-cased (reference §2 "MEGC2019 composite"):
# negative <- SAMM anger/contempt/disgust/fear/sadness + CASME II disgust/repression; CASME II fear, sadness,
# others and SAMM other(s) are dropped. CAS(ME)^3 and MMEW follow HTNet's 3-class use of them:
# negative = disgust/fear/anger/sad(ness), others dropped.
COMPOSITE = {
    "casme2": {"disgust": "negative", "repression": "negative", "happiness": "positive", "surprise": "surprise"},
    "samm": {"anger": "negative", "contempt": "negative", "disgust": "negative", "fear": "negative",
             "sadness": "negative", "happiness": "positive", "surprise": "surprise"},
    "smic": {"negative": "negative", "positive": "positive", "surprise": "surprise"},
    "casme3": {"disgust": "negative", "fear": "negative", "anger": "negative", "sad": "negative",
               "happy": "positive", "surprise": "surprise"},
    "mmew": {"disgust": "negative", "fear": "negative", "anger": "negative", "sadness": "negative",
             "happiness": "positive", "surprise": "surprise"},
}
NATIVE_CLASSES = {
    "casme2": ("happiness", "disgust", "repression", "surprise", "others"),
    "samm": ("happiness", "anger", "contempt", "surprise", "other"),
    "smic": ("negative", "positive", "surprise"),
    "casme3": ("disgust", "surprise", "others", "fear", "anger", "sad", "happy"),
    "mmew": ("happiness", "disgust", "surprise", "fear", "sadness", "anger", "others"),
}


@dataclass
class Sample:
    """One annotated expression of a real dataset. Frame indices are the dataset's own numbers."""

    dataset: str
    subject: str
    clip: str
    onset: int
    apex: int
    offset: int
    onset_path: Path
    apex_path: Path
    offset_path: Path
    emotion: str                  # native label, lower-case ("others" for Other/Others)
    composite: str | None         # MEGC2019 3-class label or None (dropped class)
    aus: list[str] = field(default_factory=list)
    apex_estimated: bool = False  # apex missing in the annotation: midpoint of onset..offset
    source_row: int | None = None  # sheet row (1-based) it came from

    @property
    def key(self) -> str:
        """Subject namespaced by dataset, for merging datasets."""
        return f"{self.dataset}/{self.subject}"


def norm_label(label: object) -> str:
    s = str(label).strip().lower()
    return "others" if s in ("other", "others") else s


def split_aus(cell: object) -> list[str]:
    """'AU4+L10' / '4+10' / '1 or 2' -> ['4', 'L10', '1', '2'] (AU prefix dropped, side letters kept)."""
    if cell is None:
        return []
    parts = re.split(r"\+|,|\bor\b|/", str(cell))
    return [p.strip().upper().replace("AU", "") for p in parts if p.strip() and p.strip() not in ("?", "-")]


def _key(s: object) -> str:
    return re.sub(r"[^a-z0-9]", "", str(s).lower())


# The FACS coding sheets of CASME II, SAMM and MMEW share these columns (header spellings compared
# without case, spaces or punctuation, so "OnsetFrame" and "Onset Frame" are one).
FACS_COLUMNS = {"subject": ("Subject",), "filename": ("Filename",), "onset": ("OnsetFrame",),
                "apex": ("ApexFrame",), "offset": ("OffsetFrame",), "aus": ("Action Units",),
                "emotion": ("Estimated Emotion",)}


def read_sheet(path: Path, columns: dict[str, tuple[str, ...]], header_search_rows: int = 30,
               header: bool = True, sheet: int | str = 0, optional: tuple[str, ...] = ()) -> list[tuple[int, dict]]:
    """Rows of one sheet of an .xlsx (the first unless `sheet` names or numbers another) as
    (sheet row number, {name: value}) for the wanted columns.

    `columns` maps our name -> accepted header spellings (compared without case, spaces, punctuation).
    The header is the first row (within `header_search_rows`, for sheets with a preamble like SAMM's)
    holding all required spellings; the names in `optional` may be absent (their value is then None).
    Empty rows are skipped. Missing file, sheet or column -> UserError naming it.
    With `header=False` the spellings must be column numbers ("0", "1", ...).
    """
    if not path.is_file():
        raise UserError(f"annotation file {path} not found")
    try:
        import openpyxl
    except ImportError:
        raise UserError("reading .xlsx annotations needs openpyxl (pip install 'facesleuth-edge[train]')") from None
    try:
        wb = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as e:  # openpyxl raises many types for a broken file
        raise UserError(f"cannot read {path}: {e}") from None
    try:
        if isinstance(sheet, str) and sheet not in wb.sheetnames:
            raise UserError(f"{path.name}: no sheet {sheet!r} (sheets: {', '.join(wb.sheetnames)})")
        if isinstance(sheet, int) and sheet >= len(wb.worksheets):
            raise UserError(f"{path.name}: has {len(wb.worksheets)} sheet(s), sheet {sheet + 1} was expected")
        rows = list((wb[sheet] if isinstance(sheet, str) else wb.worksheets[sheet]).iter_rows(values_only=True))
    finally:
        wb.close()
    if header:
        for h, row in enumerate(rows[:header_search_rows]):
            names = [_key(c) for c in row]
            found = {}
            for ours, spellings in columns.items():
                hits = [names.index(_key(s)) for s in spellings if _key(s) in names]
                if hits:
                    found[ours] = hits[0]
            if all(ours in found for ours in columns if ours not in optional):
                break
            if len(found) >= 2:  # the header row, but a column is missing
                missing = [spellings[0] for ours, spellings in columns.items()
                           if ours not in found and ours not in optional]
                raise UserError(f"{path.name}: column(s) {', '.join(missing)} missing in the header on row {h + 1}")
        else:
            raise UserError(f"{path.name}: no header row with columns {', '.join(s[0] for s in columns.values())}")
        start = h + 1
    else:
        found, start = {ours: int(s[0]) for ours, s in columns.items()}, 0
    out = []
    for r, row in enumerate(rows[start:], start=start + 1):
        if not row or all(c is None or str(c).strip() == "" for c in row):
            continue
        values = {ours: (row[found[ours]] if ours in found and found[ours] < len(row) else None) for ours in columns}
        out.append((r, values))
    return out


def frame_number(cell: object, path: Path, row: int, column: str, allow_missing: bool = False) -> int | None:
    """An annotation cell as a frame number; missing/sentinel (None, '', '/', '-', -1) -> None if allowed."""
    if cell is None or str(cell).strip() in ("", "/", "-", "-1", "NA", "n/a"):
        if allow_missing:
            return None
        raise UserError(f"{path.name} row {row}: {column} is empty")
    try:
        v = float(str(cell).strip())
    except ValueError:
        raise UserError(f"{path.name} row {row}: {column} {cell!r} is not a frame number") from None
    if v != int(v) or v < 0:
        raise UserError(f"{path.name} row {row}: {column} {cell!r} is not a frame number")
    return int(v)


_NUM = re.compile(r"(\d+)(?!.*\d)")  # the last run of digits in a file stem


def list_frames(folder: Path) -> dict[int, Path]:
    """{frame number: path} of the images in `folder`, numbered by the last digits of the file name
    (so 'img46.jpg', 'reg_img46.jpg', '006_05562.jpg', '46.jpg' all work, whatever the zero padding)."""
    if not folder.is_dir():
        raise UserError(f"frame folder {folder} not found")
    out: dict[int, Path] = {}
    for p in folder.iterdir():
        if p.suffix.lower() in (".jpg", ".jpeg", ".png", ".bmp"):
            m = _NUM.search(p.stem)
            if m:
                out[int(m.group(1))] = p
    if not out:
        raise UserError(f"no numbered frames in {folder}")
    return dict(sorted(out.items()))


def frame_path(frames: dict[int, Path], n: int, folder: Path, what: str, tolerance: int = 0) -> Path:
    """The path of frame n; with `tolerance`, the nearest existing frame within it (dropped frames)."""
    if n in frames:
        return frames[n]
    near = [k for k in frames if abs(k - n) <= tolerance]
    if near:
        k = min(near, key=lambda k: (abs(k - n), k))
        log.warning("%s frame %d missing in %s; using frame %d", what, n, folder, k)
        return frames[k]
    raise UserError(f"{what} frame {n} not found in {folder} (frames {min(frames)}..{max(frames)})")


def find_one(root: Path, patterns: tuple[str, ...], what: str) -> Path:
    """The first file/folder under `root` matching one of the glob patterns, or UserError naming them."""
    if not root.is_dir():
        raise UserError(f"dataset folder {root} not found")
    for pat in patterns:
        hits = sorted(root.glob(pat))
        if hits:
            return hits[0]
    raise UserError(f"{what} not found under {root} (looked for {', '.join(patterns)})")


def make_sample(dataset: str, subject: str, clip: str, folder: Path, onset: int, apex: int | None, offset: int,
                emotion: str, aus: list[str], sheet: Path | None = None, row: int | None = None,
                tolerance: int = 0) -> Sample:
    """A Sample with frame paths resolved; a missing apex becomes onset + (offset - onset) // 2 (MEB)."""
    where = f"{sheet.name} row {row}: " if sheet is not None else ""
    if offset < onset:
        raise UserError(f"{where}offset {offset} before onset {onset} ({subject}/{clip})")
    estimated = apex is None or not onset <= apex <= offset
    if apex is not None and estimated:
        log.warning("%sapex %s outside onset..offset %d..%d; using the midpoint", where, apex, onset, offset)
    if estimated:
        apex = onset + (offset - onset) // 2
    frames = list_frames(folder)
    return Sample(dataset, subject, clip, onset, apex, offset,
                  frame_path(frames, onset, folder, "onset", tolerance),
                  frame_path(frames, apex, folder, "apex", tolerance),
                  frame_path(frames, offset, folder, "offset", tolerance),
                  emotion, COMPOSITE[dataset].get(emotion), aus, estimated, row)
