"""Crops of one image at one matched rate, for the report's side-by-side viewer: the original and
each codec's picture, where the codecs differ most, and dqc's granularity map over its own crop."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from PIL import Image

from dqcodec.compare.codecs import Codec, Setting
from dqcodec.fileio import write_atomic

if TYPE_CHECKING:
    from dqcodec.compare.sweep import ImageResult, ImageSweep

CROP_SIDE = 160  # pixels a side
CROP_STRIDE = 8


def matched_index(targets: list[float]) -> int:
    """The rate the crops are shown at: the middle of the compared range."""
    return len(targets) // 2


def busiest_window(errors: list[np.ndarray], side: int) -> tuple[int, int]:
    """Top-left corner of the side x side window where the codecs' RMS errors spread the most."""
    h, w = errors[0].shape
    rms = []
    for e in errors:
        s = np.pad(e, ((1, 0), (1, 0))).cumsum(0).cumsum(1)
        window = s[side:, side:] - s[:-side, side:] - s[side:, :-side] + s[:-side, :-side]
        rms.append(np.sqrt(window[::CROP_STRIDE, ::CROP_STRIDE] / side**2))
    stacked = np.stack(rms)
    spread = stacked.max(0) - stacked.min(0)
    y, x = np.unravel_index(int(np.argmax(spread)), spread.shape)
    return int(x) * CROP_STRIDE, int(y) * CROP_STRIDE


def save_crop(path: Path, picture: np.ndarray) -> None:
    buf = io.BytesIO()
    Image.fromarray(picture).save(buf, format="WEBP", lossless=True, quality=100, method=4)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda f: f.write(buf.getvalue()))


def granularity_overlay(data: bytes, decoded: np.ndarray) -> np.ndarray:
    """dqc's picture tinted by the level of each region (as `dqc info --map` draws it)."""
    from dqcodec.decoding import decode_tokens
    from dqcodec.granularity_map import draw

    c, tokens = decode_tokens(data)
    coded = Image.fromarray(decoded).resize((c.coded_width, c.coded_height), Image.Resampling.BICUBIC)
    overlay = draw(coded, tokens.levels[0]).resize((c.header.width, c.header.height), Image.Resampling.NEAREST)
    return np.asarray(overlay)


def crop_image(sweep: ImageSweep, codecs: list[Codec], result: ImageResult) -> dict | None:
    from dqcodec.compare.sweep import slug

    k = matched_index(result.targets)
    shown = [(c, Setting.parse(result.points[c.name][k])) for c in codecs if len(result.points.get(c.name, [])) > k]
    if not shown:
        return None
    ref = sweep.reference
    side = min(*ref.shape[:2], CROP_SIDE)
    pictures = {c.name: sweep.picture(c, s) for c, s in shown}
    errors = [np.mean((p.astype(np.float64) - ref.astype(np.float64)) ** 2, axis=2) for p in pictures.values()]
    x, y = busiest_window(errors, side)
    folder = Path(sweep.job.report_dir) / "crops" / slug(Path(sweep.job.source).stem)
    box = (slice(y, y + side), slice(x, x + side))
    save_crop(folder / "original.webp", ref[box])
    entries = []
    for codec, setting in shown:
        record = sweep.measured(codec, setting)
        entry = {"codec": codec.name, "setting": str(setting), "bytes": record["bytes"],
                 "bpp": 8 * record["bytes"] / sweep.pixels, "crop": f"{folder.name}/{slug(codec.name)}.webp",
                 "scores": {m: record[m] for m in sweep.job.metrics if m in record}}  # fmt: skip
        save_crop(folder / f"{slug(codec.name)}.webp", pictures[codec.name][box])
        if codec.family == "dq":
            path, _ = sweep.cache.entry(codec, setting)
            overlay = granularity_overlay(path.read_bytes(), pictures[codec.name])
            save_crop(folder / f"{slug(codec.name)}-map.webp", overlay[box])
            entry["map"] = f"{folder.name}/{slug(codec.name)}-map.webp"
        entries.append(entry)
    return {"target_bpp": result.targets[k], "box": [x, y, side, side], "original": f"{folder.name}/original.webp",
            "codecs": entries}  # fmt: skip
