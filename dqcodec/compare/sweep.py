"""One image through every codec: the rates it is compared at, each codec's setting for each rate,
the round trips, their measures, and crops of the pictures at one matched rate.

The rates come from the image: from the smallest file any codec writes of it at its defaults
(dqc's `-q 0`, usually; "dq:effort=5" counts as "dq") to the size JPEG gives at its default
quality 75, in `points` steps, evenly in log rate (or `rates`, when the user gives a range).
dqc's models are asked for each rate with `--bpp`; Pillow's codecs get the quality whose file
comes nearest the rate, found by search.
Every coded file and its measures are cached under the report's folder, keyed by the image's
pixels, the codec, its setting and its version, so a rerun only does what is missing.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image

from dqcodec.compare.codecs import Codec, Setting, parse_codec
from dqcodec.compare.metrics import measure_all
from dqcodec.fileio import write_atomic

JPEG_DEFAULT_QUALITY = 75  # the top of the rates compared: what JPEG's default makes of the image


@dataclass(frozen=True)
class ImageJob:
    """One image of a comparison: a task for a worker process or a Dask worker."""

    source: str
    report_dir: str
    codecs: tuple[str, ...]
    metrics: tuple[str, ...]
    points: int
    rates: tuple[float, float] | None = None


@dataclass
class ImageResult:
    source: str
    rows: list[dict] = field(default_factory=list)  # one per codec x setting
    targets: list[float] = field(default_factory=list)  # the rates compared at (bpp)
    points: dict[str, list[str]] = field(default_factory=dict)  # codec -> its setting at each target
    crops: dict | None = None  # what page.py shows of this image
    error: str | None = None
    seconds: float = 0.0


def picture_key(rgb: np.ndarray) -> str:
    """The cache's name for an image: a hash of its pixels and shape (not of its file)."""
    h = hashlib.sha256(f"{rgb.shape}".encode())
    h.update(np.ascontiguousarray(rgb).tobytes())
    return h.hexdigest()[:20]


def slug(text: str) -> str:
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in text)


class CodedCache:
    """Coded files and their measures of one image, under REPORT_DIR/.cache/<picture key>/."""

    def __init__(self, report_dir: str, key: str) -> None:
        self.root = Path(report_dir) / ".cache" / key

    def _paths(self, codec: Codec, setting: Setting) -> tuple[Path, Path]:
        version = hashlib.sha1(codec.version().encode()).hexdigest()[:8]
        folder = self.root / f"{slug(codec.name)}-{version}"
        return folder / f"{setting}.{codec.extension}", folder / f"{setting}.json"

    def entry(self, codec: Codec, setting: Setting) -> tuple[Path, dict | None]:
        coded, record = self._paths(codec, setting)
        if coded.exists() and record.exists():
            try:
                return coded, json.loads(record.read_text())
            except ValueError:  # cut short by a kill: redo it
                pass
        return coded, None

    def store(self, codec: Codec, setting: Setting, data: bytes | None, record: dict) -> Path:
        coded, path = self._paths(codec, setting)
        coded.parent.mkdir(parents=True, exist_ok=True)
        if data is not None:
            write_atomic(coded, lambda f: f.write(data))
        text = json.dumps(record)
        write_atomic(path, lambda f: f.write(text.encode()))
        return coded


class ImageSweep:
    """The round trips of one image, each done once (and cached)."""

    def __init__(self, job: ImageJob, img: Image.Image) -> None:
        self.job, self.img = job, img
        self.reference = np.asarray(img)
        self.pixels = img.width * img.height
        self.cache = CodedCache(job.report_dir, picture_key(self.reference))
        self.decoded: dict[tuple[str, Setting], np.ndarray] = {}  # the pictures the crops need, kept
        self.keep: set[tuple[str, Setting]] = set()

    def coded(self, codec: Codec, setting: Setting) -> dict:
        """The file of `codec` at `setting` (made, or found in the cache) and its size."""
        path, record = self.cache.entry(codec, setting)
        if record is None:
            t0 = time.process_time()
            data = codec.encode(self.img, setting)
            record = {"bytes": len(data), "encode_cpu_s": time.process_time() - t0}
            path = self.cache.store(codec, setting, data, record)
        record["bytes"] = os.path.getsize(path)  # the size on disk
        return record

    def bpp(self, codec: Codec, setting: Setting) -> float:
        return 8 * self.coded(codec, setting)["bytes"] / self.pixels

    def measured(self, codec: Codec, setting: Setting) -> dict:
        """`coded`, decoded by the codec's own decoder and measured."""
        record = self.coded(codec, setting)
        if not all(m in record for m in self.job.metrics):
            path, _ = self.cache.entry(codec, setting)
            t0 = time.process_time()
            decoded = codec.decode(path.read_bytes())
            record["decode_cpu_s"] = time.process_time() - t0
            record |= measure_all([m for m in self.job.metrics if m not in record], self.reference, decoded)
            self.cache.store(codec, setting, None, record)
            if (codec.name, setting) in self.keep:
                self.decoded[codec.name, setting] = decoded
        return record

    def picture(self, codec: Codec, setting: Setting) -> np.ndarray:
        if (codec.name, setting) not in self.decoded:
            path, _ = self.cache.entry(codec, setting)
            self.decoded[codec.name, setting] = codec.decode(path.read_bytes())
        return self.decoded[codec.name, setting]

    def lowest(self, codec: Codec) -> Setting:
        return Setting("quality", codec.quality_range[0])

    def setting_for(self, codec: Codec, target: float) -> Setting:
        """dqc: its smallest file where the rate is below it, else --bpp. Pillow's codecs: the
        quality whose file comes nearest `target` in log rate (files grow with quality)."""
        low = self.lowest(codec)
        if self.bpp(codec, low) >= target:
            return low
        if codec.learned:
            return Setting("bpp", round(target, 4))
        lo, hi = codec.quality_range
        high = Setting("quality", hi)
        if self.bpp(codec, high) <= target:
            return high
        rate_lo, rate_hi = self.bpp(codec, low), self.bpp(codec, high)
        step = 0
        while hi - lo > 1:
            # interpolate in log rate, every other step halve: a few encodes per target
            if step % 2 == 0 and rate_lo > 0:
                share = math.log(target / rate_lo) / math.log(rate_hi / rate_lo)
                q = min(max(lo + round(share * (hi - lo)), lo + 1), hi - 1)
            else:
                q = (lo + hi) // 2
            step += 1
            rate = self.bpp(codec, Setting("quality", q))
            if rate <= target:
                lo, rate_lo = q, rate
            else:
                hi, rate_hi = q, rate
        nearer_low = abs(math.log(target / max(rate_lo, 1e-9))) <= abs(math.log(rate_hi / target))
        return Setting("quality", lo if nearer_low else hi)

    def targets(self, codecs: list[Codec]) -> list[float]:
        if self.job.rates is not None:
            lo, hi = self.job.rates
        else:
            # the families' own defaults, so that adding "dq:effort=5" to a comparison keeps its rates
            families = [parse_codec(f) for f in dict.fromkeys(c.family for c in codecs)]
            lo = min(self.bpp(c, self.lowest(c)) for c in families)
            jpeg = parse_codec("jpeg")
            hi = self.bpp(jpeg, Setting("quality", JPEG_DEFAULT_QUALITY))
            hi = max(hi, 8 * lo)  # a flat picture: JPEG's file is small too
        n = max(2, self.job.points)
        return [float(v) for v in np.geomspace(lo, hi, n)]


def run_image(job: ImageJob) -> ImageResult:
    """Every codec of `job` on its image. A bad image is a result with its error, not an exception."""
    from dqcodec.cli.files import outcome
    from dqcodec.cli.images import open_image

    t0 = time.perf_counter()
    result = ImageResult(job.source)
    holder: list[Image.Image] = []

    def read() -> None:
        img, _, _ = open_image(job.source, allow_large=False)
        holder.append(img.convert("RGB"))

    code, message = outcome(read, job.source)
    if code:
        result.error = message
        return result
    img = holder[0]
    sweep = ImageSweep(job, img)
    codecs = [parse_codec(name) for name in job.codecs]
    result.targets = sweep.targets(codecs)
    name = Path(job.source).name
    from dqcodec.compare.crops import crop_image, matched_index

    shown = matched_index(result.targets)
    for codec in codecs:
        chosen: list[Setting] = []
        for target in result.targets:
            failed = _attempt(lambda c=codec, t=target, out=chosen: out.append(sweep.setting_for(c, t)))
            if failed:
                result.rows.append({"image": name, "codec": codec.name, "error": failed})
                break
        result.points[codec.name] = [str(s) for s in chosen]
        if len(chosen) > shown:  # a whole picture per point would not fit in memory for large photos
            sweep.keep.add((codec.name, chosen[shown]))
        for setting in dict.fromkeys(chosen):
            row = {"image": name, "codec": codec.name, "setting": str(setting), "width": img.width,
                   "height": img.height}  # fmt: skip
            failed = _attempt(lambda c=codec, s=setting, out=row: out.update(sweep.measured(c, s)))
            row["bpp"] = 8 * row["bytes"] / sweep.pixels if "bytes" in row else None
            if failed:
                row["error"] = failed
            result.rows.append(row)
    failed = _attempt(lambda: setattr(result, "crops", crop_image(sweep, codecs, result)))
    if failed:
        result.crops = {"error": failed}
    result.seconds = time.perf_counter() - t0
    return result


def _attempt(fn: object) -> str | None:
    """fn(); its error as one line, or None (one codec's failure does not end the image's others)."""
    try:
        fn()  # type: ignore[operator]
    except Exception as e:  # noqa: BLE001 - a row says what failed, the run goes on
        return f"{type(e).__name__}: {e}".splitlines()[0][:300]
    return None
