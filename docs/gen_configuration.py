"""Write the settings table of docs/configuration.md from the code (seer.settings.KEYS).

    python docs/gen_configuration.py           rewrite the table between the markers
    python docs/gen_configuration.py --check   exit 1 when the page's table differs from the code's

The table lives between `<!-- settings table -->` and `<!-- end of settings table -->`; the rest of the page is
prose and stays as written.
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "lib"))

from seer.settings import settings_table_markdown  # noqa: E402

PAGE = REPO / "docs" / "configuration.md"
START, END = "<!-- settings table -->\n", "<!-- end of settings table -->\n"


def rendered(page_text: str) -> str:
    """The page with the table between the markers replaced by the code's table."""
    before, start, rest = page_text.partition(START)
    _table, end, after = rest.partition(END)
    if not start or not end:
        raise SystemExit(f"{PAGE} lacks the markers {START.strip()} ... {END.strip()}")
    return before + START + settings_table_markdown() + END + after


def main(argv: list[str]) -> int:
    text = PAGE.read_text(encoding="utf-8")
    new = rendered(text)
    if "--check" in argv:
        if new != text:
            print(f"{PAGE.relative_to(REPO)} is out of date: run python docs/gen_configuration.py", file=sys.stderr)
            return 1
        return 0
    if new != text:
        PAGE.write_text(new, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
