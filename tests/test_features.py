"""deepcrf.features: the bandwidth parser, pixel-grid and bilateral features, grid lattices."""

import pytest
import torch

from deepcrf.features import bilateral_features, grid_features, grid_lattice, per_axis
from deepcrf.lattice import build_lattice


def test_per_axis_parses_numbers_sequences_and_tensors():
    assert per_axis(3, 2, "sxy") == [3.0, 3.0]
    assert per_axis((2, 4, 8), 3, "spacing") == [2.0, 4.0, 8.0]
    assert per_axis(torch.tensor([1.5, 2.5]), 2, "sxy") == [1.5, 2.5]


@pytest.mark.parametrize(
    ("value", "count", "message"),
    [((1, 2), 3, "3 numbers"), (0, 2, "positive"), (float("nan"), 1, "positive"),
     ("ab", 2, "numbers"), ((1, -1), 2, "positive")],
)  # fmt: skip
def test_per_axis_errors_name_the_argument(value, count, message):
    with pytest.raises(ValueError, match=f"bilateral_srgb.*{message}"):
        per_axis(value, count, "bilateral_srgb")


def test_grid_features_2d_are_x_then_y_over_bandwidth():
    f = grid_features((2, 3), sxy=(2.0, 4.0))  # rows 2 (sxy 2), cols 3 (sxy 4)
    assert f.shape == (6, 2) and f.dtype == torch.float32
    rows, cols = torch.meshgrid(torch.arange(2.0), torch.arange(3.0), indexing="ij")
    torch.testing.assert_close(f[:, 0], cols.reshape(-1) / 4.0)  # x = column / sxy_cols
    torch.testing.assert_close(f[:, 1], rows.reshape(-1) / 2.0)


def test_grid_features_3d_use_anisotropic_spacing_in_axis_order():
    f = grid_features((2, 3, 4), sxy=2.0, spacing=(5.0, 1.0, 0.5))
    z, y, x = torch.meshgrid(*(torch.arange(float(n)) for n in (2, 3, 4)), indexing="ij")
    expected = torch.stack([z * 5.0 / 2, y / 2, x * 0.5 / 2]).reshape(3, -1).T
    torch.testing.assert_close(f, expected)


def test_bilateral_features_positions_then_channels_over_srgb():
    image = torch.arange(2 * 2 * 4, dtype=torch.uint8).reshape(2, 2, 4)  # 4 channels
    f = bilateral_features(image, sxy=1.0, srgb=(1.0, 2.0, 4.0, 8.0))
    assert f.shape == (4, 6)
    torch.testing.assert_close(f[:, :2], grid_features((2, 2), 1.0))
    torch.testing.assert_close(
        f[:, 2:], image.reshape(4, 4).float() / torch.tensor([1.0, 2.0, 4.0, 8.0])
    )
    with pytest.raises(ValueError, match="srgb"):
        bilateral_features(image, sxy=1.0, srgb=(1.0, 2.0))


def test_grid_lattice_is_cached_and_filters_like_a_fresh_lattice():
    shape, sxy = (9, 11), 3.0
    lattice = grid_lattice(shape, sxy, copies=2)
    assert grid_lattice(shape, sxy, copies=2) is lattice
    assert grid_lattice(shape, sxy, copies=1) is not lattice
    values = torch.rand(2 * 99, 5)
    fresh = build_lattice(grid_features(shape, sxy))
    # each copy is filtered on its own: the two images never mix
    torch.testing.assert_close(lattice.filter(values)[:99], fresh.filter(values[:99]))
    torch.testing.assert_close(lattice.filter(values)[99:], fresh.filter(values[99:]))
