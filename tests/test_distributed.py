"""diffcore.distributed: the blocks of examples each rank computes, and their gather in order."""

import threading

import numpy as np
import pytest

from diffcore.distributed import LOCAL, World, gather_rows, shard, world_of


class ThreadWorld:
    """A World of ``size`` threads in one process (an all_gather through a shared list and a barrier)."""

    def __init__(self, rank, size, board, sync):
        self.rank, self.size, self._board, self._sync = rank, size, board, sync

    def all_gather(self, x):
        self._board[self.rank] = np.asarray(x)
        self._sync.wait()
        out = np.concatenate(list(self._board))
        self._sync.wait()
        return out

    def any(self, flag):
        return bool(self.all_gather(np.asarray([flag])).any())

    def barrier(self):
        self._sync.wait()


def run_ranks(size, fn):
    board, sync = [None] * size, threading.Barrier(size)
    results = [None] * size

    def body(r):
        results[r] = fn(ThreadWorld(r, size, board, sync))

    threads = [threading.Thread(target=body, args=(r,)) for r in range(size)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    return results


@pytest.mark.parametrize("n", [0, 1, 5, 7, 8, 13])
@pytest.mark.parametrize("size", [1, 2, 3, 4])
def test_shards_cover_all_examples_once_in_order_and_gather_back(n, size):
    data = np.arange(n * 2, dtype=np.float32).reshape(n, 2) + 0.5
    blocks = run_ranks(size, lambda w: list(shard(n, w)))
    assert sum(blocks, []) == list(range(n))
    assert max(map(len, blocks)) - min(map(len, blocks)) <= 1
    gathered = run_ranks(size, lambda w: gather_rows(w, data[list(shard(n, w))], n))
    for g in gathered:
        np.testing.assert_array_equal(g, data)


def test_local_world_and_checks():
    assert isinstance(LOCAL, World) and (LOCAL.rank, LOCAL.size) == (0, 1)
    assert list(shard(3)) == [0, 1, 2] and LOCAL.any(True) and not LOCAL.any(False)
    assert world_of(object()) is LOCAL

    class Bad:
        world = ThreadWorld(2, 2, None, None)

    with pytest.raises(ValueError, match="rank 2 of size 2"):
        world_of(Bad())
    with pytest.raises(ValueError, match="holds"):
        gather_rows(LOCAL, np.zeros((2, 1)), 3)
    with pytest.raises(ValueError, match="n"):
        shard(-1)
