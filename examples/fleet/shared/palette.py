"""The fleet's design palette: colour and spacing tokens, and colour maths on them.

Shared by two skills: `design-tokens` serves it, `visual-diff` judges screenshots against it.
Both list `shared/**` in their `watch`, so a change here redeploys both. Their build step
vendors this file into the release, so a running release never reads the working tree.
"""

from __future__ import annotations

import math

COLORS: dict[str, str] = {
    "primary": "#1f6feb",
    "secondary": "#8250df",
    "success": "#1a7f37",
    "warning": "#9a6700",
    "danger": "#cf222e",
    "text": "#1f2328",
    "muted": "#656d76",
    "background": "#ffffff",
    "surface": "#f6f8fa",
    "border": "#d0d7de",
}

SPACING: dict[str, str] = {
    "xs": "4px",
    "sm": "8px",
    "md": "16px",
    "lg": "24px",
    "xl": "40px",
}


def hex_to_rgb(color: str) -> tuple[int, int, int]:
    """`#rrggbb` or `#rgb` (case-insensitive) as an (r, g, b) tuple; ValueError otherwise."""
    if not isinstance(color, str) or not color.startswith("#"):
        raise ValueError(f"not a hex colour: {color!r}")
    digits = color[1:]
    if len(digits) == 3:
        digits = "".join(d * 2 for d in digits)
    if len(digits) != 6:
        raise ValueError(f"not a hex colour: {color!r}")
    try:
        value = int(digits, 16)
    except ValueError:
        raise ValueError(f"not a hex colour: {color!r}") from None
    return (value >> 16) & 0xFF, (value >> 8) & 0xFF, value & 0xFF


def distance(a: str, b: str) -> float:
    """Euclidean distance between two hex colours in RGB space (0 to about 441.7)."""
    return math.dist(hex_to_rgb(a), hex_to_rgb(b))


def nearest(color: str) -> tuple[str, float]:
    """The palette token closest to `color`, and how far it is."""
    return min(((name, distance(color, hex_)) for name, hex_ in COLORS.items()), key=lambda t: t[1])


def css() -> str:
    """The tokens as CSS custom properties."""
    lines = [":root {"]
    lines += [f"  --color-{name}: {value};" for name, value in COLORS.items()]
    lines += [f"  --space-{name}: {value};" for name, value in SPACING.items()]
    lines.append("}")
    return "\n".join(lines) + "\n"
