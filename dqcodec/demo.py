"""`make demo`: encode and decode a photo that ships with scikit-image, print bpp and PSNR."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

from dqcodec.decoding import decode
from dqcodec.encoding import encode
from dqcodec.fileio import write_atomic
from dqcodec.metrics import psnr_of_pictures
from dqcodec.models.loading import load_model


def main(out_dir: Path = Path("out/demo")) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    original = Image.fromarray(data.astronaut())
    original.save(out_dir / "astronaut.png")
    ref = np.asarray(original.convert("RGB"))
    print(f"astronaut.png {original.width}x{original.height} (scikit-image); files in {out_dir}/")
    print(f"{'quality':>7} {'scale':>5} {'bytes':>7} {'bpp':>7} {'PSNR dB':>8} {'encode s':>9} {'decode s':>9}")
    load_model()  # the times below are coding only
    # scale 1 is the model's own range; 0.5 and 1.5 code a resampled picture (below and above it)
    for quality, scale in ((0, 0.5), (0, 1), (25, 1), (50, 1), (75, 1), (100, 1), (100, 1.5)):
        t0 = time.perf_counter()
        blob = encode(original, quality=quality, scale=scale)
        t1 = time.perf_counter()
        decoded = decode(blob)
        t2 = time.perf_counter()
        stem = f"astronaut_q{quality}" + ("" if scale == 1 else f"_scale{scale:g}")
        write_atomic(out_dir / f"{stem}.dqc", lambda f, b=blob: f.write(b))
        decoded.save(out_dir / f"{stem}.png")
        bpp = 8 * len(blob) / (original.width * original.height)
        psnr = psnr_of_pictures(ref, np.asarray(decoded))
        print(f"{quality:7d} {scale:5g} {len(blob):7d} {bpp:7.4f} {psnr:8.2f} {t1 - t0:9.2f} {t2 - t1:9.2f}")


if __name__ == "__main__":
    main()
