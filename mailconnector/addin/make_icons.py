"""Draw the add-in's icons (an envelope on a blue tile, with a link badge) in every size the
manifest refers to. Run after changing the design or mailconnector.manifest's sizes:

    .venv/bin/python mailconnector/addin/make_icons.py

The PNGs are committed; the CRM serves them under /addin/icons/.
"""

from __future__ import annotations

import sys
from pathlib import Path

from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))

from mailconnector.manifest import icon_sizes  # noqa: E402

BLUE = (15, 94, 168, 255)
WHITE = (255, 255, 255, 255)
GREEN = (23, 132, 58, 255)
SUPER = 8  # drawn this many times larger, then scaled down: smooth edges at 16 px


def draw(size: int) -> Image.Image:
    big = size * SUPER
    img = Image.new("RGBA", (big, big), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    u = big / 32  # design grid: 32 x 32
    d.rounded_rectangle((0, 0, big - 1, big - 1), radius=6 * u, fill=BLUE)
    # Envelope
    left, top, right, bottom = 6 * u, 9 * u, 26 * u, 23 * u
    line = max(SUPER, round(1.8 * u))
    d.rounded_rectangle((left, top, right, bottom), radius=1.5 * u, outline=WHITE, width=line)
    d.line([(left + u, top + u), (16 * u, 17 * u), (right - u, top + u)], fill=WHITE, width=line)
    # Link badge, bottom right
    cx, cy, r = 24 * u, 24 * u, 6.5 * u
    d.ellipse((cx - r, cy - r, cx + r, cy + r), fill=GREEN, outline=WHITE, width=line)
    w = max(SUPER, round(1.6 * u))
    d.line([(cx - 3 * u, cy), (cx + 3 * u, cy)], fill=WHITE, width=w)
    d.line([(cx, cy - 3 * u), (cx, cy + 3 * u)], fill=WHITE, width=w)
    return img.resize((size, size), Image.Resampling.LANCZOS)


def main() -> None:
    out = HERE / "icons"
    out.mkdir(exist_ok=True)
    for size in icon_sizes():
        draw(size).save(out / f"icon-{size}.png", optimize=True)
        print(f"icons/icon-{size}.png")


if __name__ == "__main__":
    main()
