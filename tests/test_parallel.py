"""Shards and worker processes."""

import math

import pytest

from deepcrf import threads
from deepcrf.parallel import (
    available_cpus,
    cgroup_cpu_quota,
    parse_shard,
    process_map,
    shard,
    threads_per_worker,
)


def test_shards_partition_names():
    names = [f"2007_{i:06d}" for i in range(200)]
    parts = [shard(names, i, 3) for i in range(3)]
    assert sorted(n for p in parts for n in p) == sorted(names)
    assert all(len(p) > 40 for p in parts)
    assert shard(names, 1, 3) == shard(list(reversed(names)), 1, 3)[::-1]


@pytest.mark.parametrize("spec", ["3/2", "0/0", "a/b", "1", "-1/2"])
def test_bad_shard_specs(spec):
    with pytest.raises(ValueError, match="--shard"):
        parse_shard(spec)


def test_process_map_same_results_for_any_jobs():
    items = [1.0, 4.0, 9.0, 16.0, 25.0]
    one = dict(process_map(math.sqrt, items, jobs=1))
    two = dict(process_map(math.sqrt, items, jobs=2))
    assert one == two == {x: math.sqrt(x) for x in items}
    assert threads_per_worker(2, cpus=2) == 1 and threads_per_worker(1, cpus=8) == 8
    with pytest.raises(ValueError, match="--jobs"):
        list(process_map(math.sqrt, items, jobs=0))


def test_cgroup_quota_v2_and_v1(tmp_path):
    assert cgroup_cpu_quota(str(tmp_path)) is None  # no files: no limit
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 1.5
    v1 = tmp_path / "cpu"
    v1.mkdir()
    (v1 / "cpu.cfs_quota_us").write_text("50000\n")
    (v1 / "cpu.cfs_period_us").write_text("100000\n")
    assert cgroup_cpu_quota(str(tmp_path)) == 0.5  # the tighter limit wins
    (v1 / "cpu.cfs_quota_us").write_text("-1\n")
    (tmp_path / "cpu.max").write_text("garbage\n")
    assert cgroup_cpu_quota(str(tmp_path)) is None
    assert available_cpus() >= 1


def _worker_budget(_item: int) -> int:
    return threads.cpu_budget()


def test_workers_divide_the_threads():
    budgets = [b for _, b in process_map(_worker_budget, [0, 1], jobs=2, threads=1)]
    assert budgets == [1, 1]  # each worker's thread policy stays within its share
