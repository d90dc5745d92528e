"""Where studies and fits write their reports and caches.

A folder given on the command line (``--reports``), by default ``docs/reports``
under the current directory (the repository's root when run from a checkout),
never a path beside the installed package, which may not be writable.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

#: The default report folder, relative to the current directory.
REPORTS = Path("docs") / "reports"
#: The default folder of the pictures the docs show, relative to the current directory.
IMAGES = Path("docs") / "img"


def add_reports_option(parser: argparse.ArgumentParser) -> None:
    """``--reports DIR``: where the command writes its reports (default ``docs/reports``)."""
    parser.add_argument(
        "--reports",
        type=Path,
        default=REPORTS,
        help=f"folder the reports and caches are written to (default: {REPORTS}, from the current directory)",
    )


def write_report(folder: Path, name: str, record: object) -> Path:
    """Write ``record`` as indented JSON to ``folder/name`` (folder made if
    missing) and return the path.

    >>> import tempfile; folder = Path(tempfile.mkdtemp()) / "reports"
    >>> write_report(folder, "x.json", {"a": 1}).read_text()
    '{\\n "a": 1\\n}\\n'
    """
    path = folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(record, indent=1) + "\n")
    return path
