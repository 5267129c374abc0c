"""Look at a report the way a reader does: headless Chromium renders it to a PNG or a DOM.

Used by the report's tests and by `make report-screenshot`:

    python -m orchestrator.report.browser experiments/local/report.html report.png \
        --preview docs/report.png

Chromium runs as a subprocess with an argument list (no shell), `--no-sandbox` because
tests run as root in containers, and a throw-away profile directory so that concurrent
runs do not fight over one.
"""

from __future__ import annotations

import argparse
import logging
import shutil
import subprocess
import tempfile
from pathlib import Path

import numpy as np

from storage.errors import OrchError

log = logging.getLogger(__name__)

_BINARIES = ("chromium", "chromium-browser", "google-chrome")
_TIMEOUT_S = 120.0


class BrowserError(OrchError):
    """Chromium is missing or could not render the page."""


def find_chromium() -> str | None:
    """Path of a Chromium binary on PATH, or None."""
    return next((p for b in _BINARIES if (p := shutil.which(b))), None)


def _run(page: Path, *flags: str) -> subprocess.CompletedProcess:
    binary = find_chromium()
    if binary is None:
        raise BrowserError(
            "no chromium on PATH", hint="apt-get install chromium (make test installs it)"
        )
    with tempfile.TemporaryDirectory(prefix="orch-chromium-") as profile:
        args = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            *flags,
            page.resolve().as_uri(),
        ]
        try:
            done = subprocess.run(
                args, capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
            )
        except subprocess.TimeoutExpired as err:
            raise BrowserError(f"chromium did not finish {page} in {_TIMEOUT_S:.0f} s") from err
    if done.returncode != 0:
        tail = done.stderr.strip().splitlines()[-1:] or ["no output"]
        raise BrowserError(f"chromium exited {done.returncode} on {page}: {tail[0]}")
    return done


def dump_dom(page: Path) -> str:
    """The page's DOM after Chromium has loaded and laid it out, as HTML text."""
    return _run(page, "--dump-dom").stdout


def screenshot(page: Path, png: Path, *, width: int = 1200, height: int = 1600) -> Path:
    """Renders `page` in a `width` x `height` window to `png`."""
    png.parent.mkdir(parents=True, exist_ok=True)
    _run(page, f"--screenshot={png.resolve()}", f"--window-size={width},{height}")
    if not png.is_file():
        raise BrowserError(f"chromium wrote no screenshot of {page}")
    return png


def crop_to_content(png: Path, *, margin_px: int = 24) -> Path:
    """Cuts the blank band below the page's last content (a tall window leaves one)."""
    import matplotlib.image as mpimg

    pixels = mpimg.imread(png)[..., :3]
    inked = np.flatnonzero((pixels < 0.97).any(axis=(1, 2)))
    if inked.size:
        bottom = min(pixels.shape[0], int(inked[-1]) + margin_px)
        mpimg.imsave(png, pixels[:bottom])
    return png


def save_preview(png: Path, out: Path, *, scale: float = 0.75) -> Path:
    """A small copy of a screenshot for docs/: scaled, 256 colours (about 150 KB a page)."""
    from PIL import Image  # matplotlib's own dependency

    with Image.open(png) as image:
        rgb = image.convert("RGB")
    size = (round(rgb.width * scale), round(rgb.height * scale))
    small = rgb.resize(size, Image.Resampling.LANCZOS)
    out.parent.mkdir(parents=True, exist_ok=True)
    small.quantize(colors=256, method=Image.Quantize.FASTOCTREE).save(out, optimize=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m orchestrator.report.browser",
        description="Screenshot a report page with headless Chromium (whole page, cropped).",
    )
    parser.add_argument("page", type=Path, help="the HTML file, e.g. experiments/local/report.html")
    parser.add_argument("png", type=Path, help="where to write the screenshot")
    parser.add_argument("--width", type=int, default=1200, help="window width, pixels")
    parser.add_argument("--height", type=int, default=8000, help="window height, pixels")
    parser.add_argument("--preview", type=Path, help="also write a small copy here")
    args = parser.parse_args(argv)
    crop_to_content(screenshot(args.page, args.png, width=args.width, height=args.height))
    print(f"screenshot written to {args.png}")
    if args.preview:
        print(f"preview written to {save_preview(args.png, args.preview)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
