"""One validator per file format a dataset brings: label tables (CSV) and ground-truth boxes.

A problem a user can fix is an error that names the file, the row and the fix; a few bad rows in a large
public file (a box outside its image) are a warning naming them, and those rows are left out of every
number, never used as they are.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mxa._optional import require

__all__ = ["BOX_TOLERANCE", "box_problem", "read_table", "warn_bad_boxes"]

log = logging.getLogger(__name__)

#: How far past the image edge a box may reach, as a fraction of the side (annotation tools overshoot by a
#: pixel or two); such a box is clipped to the image. Further out, the box is wrong and left out.
BOX_TOLERANCE = 0.02


def box_problem(box: Sequence[float], frame: tuple[float, float] | None = None) -> str | None:
    """Why ``x1, y1, x2, y2`` is not a usable box in a ``frame`` = (width, height) image, or None.

    With ``frame=None`` (an image whose size is known only when it is read) only finiteness, order and
    non-negative coordinates are checked.

    Examples:
        >>> from mxa.data.validate import box_problem
        >>> box_problem([10, 10, 5, 20], (100, 100))
        'inverted or empty (x2 <= x1 or y2 <= y1)'
        >>> box_problem([0.1, 0.1, 0.5, 0.5], (1, 1)) is None
        True
    """
    if len(box) != 4:
        return f"{len(box)} numbers, not 4 (x1, y1, x2, y2)"
    try:
        x1, y1, x2, y2 = (float(v) for v in box)
    except (TypeError, ValueError):
        return f"not numbers: {list(box)!r}"
    if not all(math.isfinite(v) for v in (x1, y1, x2, y2)):
        return "not finite (NaN or inf)"
    if x2 <= x1 or y2 <= y1:
        return "inverted or empty (x2 <= x1 or y2 <= y1)"
    w, h = frame if frame is not None else (math.inf, math.inf)
    tol_w = BOX_TOLERANCE * (w if math.isfinite(w) else 0.0)
    tol_h = BOX_TOLERANCE * (h if math.isfinite(h) else 0.0)
    if x1 < -tol_w or y1 < -tol_h or x2 > w + tol_w or y2 > h + tol_h:
        where = f"the {w:g} x {h:g} image" if frame is not None else "the image (negative coordinates)"
        return f"outside {where}"
    return None


def warn_bad_boxes(source: str | Path, bad: list[tuple[str, str, str]]) -> None:
    """One warning for the rejected boxes of ``source``: (image id, label, reason) of the first few."""
    if not bad:
        return
    shown = "; ".join(f"{i} {label}: {why}" for i, label, why in bad[:3])
    more = f" and {len(bad) - 3} more" if len(bad) > 3 else ""
    log.warning(
        "%s: %d box(es) cannot be used and are left out (their labels are kept): %s%s. Fix those rows "
        "(x1 < x2, y1 < y2, finite, inside the image) to use them",
        source,
        len(bad),
        shown,
        more,
    )


def read_table(path: str | Path, columns: Sequence[str] = (), what: str = "label file", **kwargs: Any) -> Any:
    """``pandas.read_csv`` of a dataset's table, with every way it can fail as one ``ValueError`` naming
    the file and the fix: unreadable text encoding, no content, a header and no rows, missing columns.

    Examples:
        >>> import tempfile, pathlib
        >>> from mxa.data.validate import read_table
        >>> p = pathlib.Path(tempfile.mkdtemp()) / "t.csv"
        >>> _ = p.write_text("Path,Sex\\n")
        >>> read_table(p, ["Path"])
        Traceback (most recent call last):
        ...
        ValueError: ...t.csv has a header and no rows: it names no image; ...
    """
    pd = require("pandas", f"Reading the {what}")
    path = Path(path)
    try:
        frame = pd.read_csv(path, **kwargs)
    except UnicodeDecodeError as e:
        raise ValueError(
            f"{path} is not UTF-8 text ({e.reason} at byte {e.start}); save the {what} as UTF-8 (it may be "
            "Latin-1: `iconv -f latin1 -t utf-8`)"
        ) from None
    except pd.errors.EmptyDataError:
        raise ValueError(f"{path} is empty: the {what} has no header and no rows; restore the file") from None
    except pd.errors.ParserError as e:
        raise ValueError(
            f"{path} is not a readable CSV ({str(e).splitlines()[0]}); restore the file"
        ) from None
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise ValueError(
            f"{path} lacks the column(s) {missing} a {what} has (its columns: {list(frame.columns)[:12]}); "
            "is it the right file?"
        )
    if len(frame) == 0:
        raise ValueError(f"{path} has a header and no rows: it names no image; restore the {what}")
    return frame
