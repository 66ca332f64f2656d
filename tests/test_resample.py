import numpy as np
import pytest
import torch
from PIL import Image

from dqcodec.format.resample import filter_taps, resize


@pytest.mark.parametrize(("n_in", "n_out"), [(40, 20), (40, 60), (37, 53), (9, 4), (1, 5)])
def test_filter_weights_sum_to_one_and_stay_in_range(n_in: int, n_out: int) -> None:
    idx, w = filter_taps(n_in, n_out)
    assert idx.shape[0] == n_out and idx.min() >= 0 and idx.max() < n_in
    assert torch.allclose(w.sum(1), torch.ones(n_out, dtype=torch.float64))


def test_flat_picture_stays_flat_and_same_size_is_identity() -> None:
    flat = torch.full((3, 30, 50), 77, dtype=torch.uint8)
    assert torch.equal(resize(flat, 75, 45), torch.full((3, 45, 75), 77, dtype=torch.uint8))
    noise = torch.randint(0, 256, (3, 12, 9), dtype=torch.uint8)
    assert torch.equal(resize(noise, 9, 12), noise)


def test_matches_pillow_lanczos_on_a_photo() -> None:
    from skimage import data

    img = Image.fromarray(data.astronaut()[100:228, 150:310])
    src = torch.from_numpy(np.asarray(img).copy()).permute(2, 0, 1)
    for size in ((80, 64), (240, 192), (101, 77)):
        ours = resize(src, *size).permute(1, 2, 0).numpy().astype(int)
        pillow = np.asarray(img.resize(size, Image.LANCZOS)).astype(int)
        # Pillow rounds to 8 bits between its two passes; the format does not
        assert np.abs(ours - pillow).mean() < 0.5
