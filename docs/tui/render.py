"""Turn the TUI's screenshot SVGs (tests/tui/screens, written by the screenshot tests) into
the PNGs the README shows. A developer's tool, not part of the product:

    CORESTATE_UPDATE_SCREENS=1 .venv/bin/python -m pytest tests/tui/test_tui_screens.py -q
    .venv/bin/pip install -e '.[docs]'        # cairosvg (needs the system's libcairo2)
    .venv/bin/python docs/tui/render.py
"""

from __future__ import annotations

from pathlib import Path

import cairosvg

ROOT = Path(__file__).resolve().parents[2]
SHOWN = ["dashboard-120x40", "snapshots-80x24", "browse-120x40", "peers-120x40", "alerts-80x24",
         "disconnected-80x24"]


def main() -> None:
    for name in SHOWN:
        svg = ROOT / "tests" / "tui" / "screens" / f"{name}.svg"
        png = Path(__file__).parent / f"{name}.png"
        cairosvg.svg2png(url=str(svg), write_to=str(png), output_width=1100)
        print(png.relative_to(ROOT))


if __name__ == "__main__":
    main()
