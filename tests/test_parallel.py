"""Shards and worker processes."""

import math

import pytest

from deepcrf.parallel import parse_shard, process_map, shard, threads_per_worker


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
