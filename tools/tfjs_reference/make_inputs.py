"""Make the letterboxed 416x416 PNG inputs for the NanoDet TF.js reference fixture.

Each photo is scaled to fit inside 416x416 keeping its aspect ratio
(Pillow, BILINEAR; new size = round(w * s), round(h * s) with
s = min(416 / w, 416 / h)) and pasted at the top-left corner of a 416x416
RGB canvas filled with (0, 0, 0). The PNGs are then read by
make_reference.mjs (node) and by tests/fixtures/nanodet_tfjs/reference.py.

Run from anywhere with the project's venv:
    .venv/bin/python tools/tfjs_reference/make_inputs.py
"""

from __future__ import annotations

from pathlib import Path

from PIL import Image

SIZE = 416
ROOT = Path(__file__).resolve().parents[2]
PHOTOS = ROOT / "tests" / "data" / "photos"
OUT_DIR = ROOT / "tests" / "fixtures" / "nanodet_tfjs"
NAMES = ("dog", "person")


def letterbox(src: Path, size: int = SIZE) -> Image.Image:
    with Image.open(src) as im:
        im = im.convert("RGB")
        w, h = im.size
        scale = min(size / w, size / h)
        new_w, new_h = round(w * scale), round(h * scale)
        resized = im.resize((new_w, new_h), Image.BILINEAR)
    canvas = Image.new("RGB", (size, size), (0, 0, 0))
    canvas.paste(resized, (0, 0))
    return canvas


def main() -> None:
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    for name in NAMES:
        src = PHOTOS / f"{name}.jpg"
        dst = OUT_DIR / f"{name}.png"
        img = letterbox(src)
        # optimize=False and no metadata: plain 8-bit RGB, deterministic bytes.
        img.save(dst, format="PNG")
        print(
            f"{src.relative_to(ROOT)} -> {dst.relative_to(ROOT)}",
            f"({img.size[0]}x{img.size[1]} {img.mode})",
        )


if __name__ == "__main__":
    main()
