"""CAM files: IRN's pickled dicts read without running code, plain arrays, bad files."""

from __future__ import annotations

import os
import pickle

import numpy as np
import pytest
import torch

from deepcrf.data.cams import load_npy, read_cams


def _irn_file(path, keys=(4, 14), h=6, w=8):
    """What IRN's make_cam.py writes: torch tensors for keys and cam, numpy high_res."""
    high_res = np.random.default_rng(0).random((len(keys), h, w)).astype(np.float32)
    np.save(
        path,
        {
            "keys": torch.tensor(keys, dtype=torch.long),
            "cam": torch.rand(len(keys), h // 2, w // 2),
            "high_res": high_res,
        },
    )
    return high_res


def test_reads_irns_dict_with_torch_tensors(tmp_path):
    high_res = _irn_file(tmp_path / "a.npy")
    cams, keys = read_cams(tmp_path / "a.npy")
    np.testing.assert_array_equal(cams, high_res)
    np.testing.assert_array_equal(keys, [4, 14])
    content = load_npy(tmp_path / "a.npy")
    assert isinstance(content["cam"], np.ndarray) and content["cam"].shape == (2, 3, 4)


def test_reads_numpy_only_dicts_lists_and_scalars(tmp_path):
    np.save(
        tmp_path / "b.npy",
        {
            "keys": np.array([0]),
            "high_res": np.ones((1, 2, 3), np.float32),
            "misc": [1, 2.5, np.float32(3.0), {"x": np.int64(4)}],
        },
    )
    content = load_npy(tmp_path / "b.npy")
    assert content["misc"][2] == 3.0 and content["misc"][3]["x"] == 4
    cams, keys = read_cams(tmp_path / "b.npy")
    assert cams.shape == (1, 2, 3) and keys.tolist() == [0]


def test_plain_array_drops_absent_classes(tmp_path):
    cams = np.zeros((20, 4, 5), np.float32)
    cams[3, 1, 1] = 0.9
    cams[11] = 0.2
    np.save(tmp_path / "c.npy", cams)
    got, keys = read_cams(tmp_path / "c.npy")
    assert keys.tolist() == [3, 11]
    np.testing.assert_array_equal(got, cams[[3, 11]])


def test_empty_keys(tmp_path):
    np.save(tmp_path / "e.npy", {"keys": np.zeros(0, np.int64), "high_res": np.zeros((0, 4, 5))})
    cams, keys = read_cams(tmp_path / "e.npy")
    assert cams.shape == (0, 4, 5) and keys.shape == (0,)


class _RunsCode:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Evals:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


@pytest.mark.parametrize("payload", [_RunsCode, _Evals])
def test_a_malicious_pickle_cannot_run_code(tmp_path, payload):
    marker = tmp_path / "pwned"
    evil = np.empty((), dtype=object)
    evil[()] = {"keys": payload(marker), "high_res": np.zeros((1, 2, 2))}
    np.save(tmp_path / "evil.npy", evil, allow_pickle=True)
    # the file really would run code through numpy's own loader
    with pytest.raises(ValueError, match="refused to unpickle"):
        load_npy(tmp_path / "evil.npy")
    with pytest.raises(ValueError, match="not allowed"):
        read_cams(tmp_path / "evil.npy")
    assert not marker.exists()
    np.load(tmp_path / "evil.npy", allow_pickle=True)
    assert marker.exists()  # proof that the payload was live


def test_array_subclasses_are_refused(tmp_path):
    arr = np.empty((), dtype=object)
    arr[()] = {"keys": np.zeros(1).view(np.recarray), "high_res": np.zeros((1, 2, 2))}
    with open(tmp_path / "sub.npy", "wb") as handle:
        np.lib.format.write_array_header_1_0(
            handle, {"descr": "|O", "fortran_order": False, "shape": ()}
        )
        pickle.dump(arr, handle, protocol=3)
    with pytest.raises(ValueError, match="refused to unpickle"):
        load_npy(tmp_path / "sub.npy")


def test_bad_files_name_the_file(tmp_path):
    (tmp_path / "text.npy").write_text("not numpy")
    with pytest.raises(ValueError, match=r"text\.npy is not an \.npy file"):
        read_cams(tmp_path / "text.npy")
    np.save(tmp_path / "nokeys.npy", {"high_res": np.zeros((1, 2, 2))})
    with pytest.raises(ValueError, match="needs 'keys' and 'high_res'"):
        read_cams(tmp_path / "nokeys.npy")
    np.save(tmp_path / "mismatch.npy", {"keys": np.array([1, 2]), "high_res": np.zeros((1, 2, 2))})
    with pytest.raises(ValueError, match="2 keys for 1 CAM channels"):
        read_cams(tmp_path / "mismatch.npy")
    np.save(tmp_path / "flat.npy", np.zeros((4, 4)))
    with pytest.raises(ValueError, match=r"expected IRN's dict .* or a \(K, H, W\) array"):
        read_cams(tmp_path / "flat.npy")
    with pytest.raises(FileNotFoundError, match="--cams"):
        read_cams(tmp_path / "missing.npy")
