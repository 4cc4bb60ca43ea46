"""deepcrf.arrays: numpy -> torch without surprises, the fast transposing copy."""

import numpy as np
import pytest
import torch

from deepcrf.arrays import tensor_from_numpy, transpose_copy


def test_contiguous_writable_arrays_share_memory():
    a = np.arange(6, dtype=np.float32).reshape(2, 3)
    t = tensor_from_numpy(a)
    t[0, 0] = 42
    assert a[0, 0] == 42


def test_read_only_and_strided_arrays_are_copied_and_left_alone():
    a = np.arange(12, dtype=np.float32).reshape(3, 4)
    a.flags.writeable = False
    t = tensor_from_numpy(a)
    t += 1
    assert a[0, 0] == 0 and t[0, 0] == 1
    b = np.arange(12, dtype=np.float64).reshape(3, 4)[:, ::2]
    t = tensor_from_numpy(b, dtype=np.float32)
    assert t.is_contiguous() and t.dtype == torch.float32
    np.testing.assert_array_equal(t.numpy(), b.astype(np.float32))


@pytest.mark.parametrize(
    "shape", [(7, 3), (2, 5, 4), (1, 1), (40, 21), (3, 33, 17), (20001, 21), (2, 9000, 16)]
)
@pytest.mark.parametrize("scale", [None, 0.5])
def test_transpose_copy_equals_transpose_contiguous(shape, scale):
    x = torch.randn(shape)
    out = transpose_copy(x, scale)
    expected = x.transpose(-1, -2).contiguous() * (1 if scale is None else scale)
    assert out.is_contiguous() and out.shape == expected.shape
    torch.testing.assert_close(out, expected)


def test_tall_inputs_are_copied_block_by_block_with_a_short_last_block(monkeypatch):
    """Blocks of rows (``_BLOCK_BYTES``): several full ones and a short last one, each
    written to its own columns of the result; wider inputs keep one whole copy."""
    import deepcrf.arrays as arrays

    monkeypatch.setattr(arrays, "_BLOCK_BYTES", 21 * 4 * 100)  # 100 rows a block
    x = torch.randn(1050, 21)
    torch.testing.assert_close(transpose_copy(x), x.t().contiguous(), rtol=0, atol=0)
    wide = torch.randn(1050, arrays._BLOCKED_UP_TO + 1)
    torch.testing.assert_close(transpose_copy(wide, 2.0), 2 * wide.t(), rtol=0, atol=0)
    ints = torch.randint(-5, 5, (1050, 17), dtype=torch.int32)
    assert torch.equal(transpose_copy(ints), ints.t().contiguous())
