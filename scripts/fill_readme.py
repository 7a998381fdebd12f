"""Copy a ``softseg compare`` report's tables and timing into the README, between two markers.

    python scripts/fill_readme.py REPORT_DIR NAME [--readme README.md]

replaces everything between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->`` with the two tables of
REPORT_DIR/summary.md (means with 95% intervals; paired differences with the baseline and p-values) and one
line with the wall time, the CPU time, the threads, torch and the machine from REPORT_DIR/summary.json.
The figures are deterministic from the seed (same torch, same threads); only the times change from machine
to machine, so run this on the idle machine the README describes.
"""

from __future__ import annotations

import argparse
import json
import re
from pathlib import Path


def block(report: Path) -> str:
    """The Markdown that goes between the markers: the report's tables, then its timing."""
    tables = []
    for line in (report / "summary.md").read_text().splitlines():
        if line.startswith("|"):
            tables.append(line)
        elif tables and tables[-1] != "":
            tables.append("")
    settings = json.loads((report / "summary.json").read_text())["settings"]
    seconds = settings["total seconds"]
    timing = (
        f"Wall time {int(seconds // 60)} min {round(seconds % 60)} s in all ({seconds} s; "
        f"{settings['total CPU seconds']} s of CPU time on {settings['threads']} threads), torch {settings['torch']}, "
        f"{settings['machine']}."
    )
    return "\n".join(tables).strip() + "\n\n" + timing


def fill(readme: Path, name: str, text: str) -> None:
    """Replace the text between the ``name`` markers of ``readme`` with ``text``."""
    pattern = re.compile(rf"(<!-- {re.escape(name)}:start -->\n).*?(\n<!-- {re.escape(name)}:end -->)", re.DOTALL)
    content = readme.read_text()
    if not pattern.search(content):
        raise SystemExit(f"fill_readme: {readme} has no <!-- {name}:start --> ... <!-- {name}:end --> markers")
    readme.write_text(pattern.sub(lambda match: match.group(1) + text + match.group(2), content, count=1))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("report", type=Path, help="a softseg compare report folder")
    parser.add_argument("name", help="the README markers' name, e.g. chase or synthetic")
    parser.add_argument("--readme", type=Path, default=Path(__file__).resolve().parents[1] / "README.md")
    args = parser.parse_args()
    fill(args.readme, args.name, block(args.report))
    print(f"fill_readme: {args.readme} <- {args.report} ({args.name})")


if __name__ == "__main__":
    main()
