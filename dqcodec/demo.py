"""`make demo`: encode and decode a photo that ships with scikit-image, print bpp and PSNR."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
from PIL import Image
from skimage import data

import dqcodec
from dqcodec.fileio import write_atomic


def main(out_dir: Path = Path("out/demo")) -> None:
    out_dir.mkdir(parents=True, exist_ok=True)
    original = Image.fromarray(data.astronaut())
    original.save(out_dir / "astronaut.png")
    ref = np.asarray(original, dtype=np.float64)
    print(f"astronaut.png {original.width}x{original.height} (scikit-image); files in {out_dir}/")
    print(f"{'quality':>7} {'bytes':>7} {'bpp':>7} {'PSNR dB':>8} {'encode s':>9} {'decode s':>9}")
    for quality in (0, 25, 50, 75, 100):
        t0 = time.perf_counter()
        blob = dqcodec.encode(original, quality=quality)
        t1 = time.perf_counter()
        decoded = dqcodec.decode(blob)
        t2 = time.perf_counter()
        write_atomic(out_dir / f"astronaut_q{quality}.dqc", lambda f, b=blob: f.write(b))
        decoded.save(out_dir / f"astronaut_q{quality}.png")
        mse = np.mean((np.asarray(decoded, dtype=np.float64) - ref) ** 2)
        bpp = 8 * len(blob) / (original.width * original.height)
        print(
            f"{quality:7d} {len(blob):7d} {bpp:7.4f} {10 * np.log10(255**2 / mse):8.2f} {t1 - t0:9.2f} {t2 - t1:9.2f}"
        )


if __name__ == "__main__":
    main()
