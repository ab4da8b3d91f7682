"""The one bounded cache type: byte and item bounds, LRU order, single-flight filling."""

import threading
import time

import numpy as np
import SimpleITK as sitk

from seer.cache import BoundedCache, nbytes


def test_byte_bound_evicts_least_recently_used():
    cache = BoundedCache("t", max_bytes=3000)
    for name in "abc":
        cache.put(name, np.zeros(1000, np.uint8))
    assert cache.get("a") is not None  # a is now the most recent
    cache.put("d", np.zeros(1000, np.uint8))
    assert cache.get("b") is None and cache.get("a") is not None and cache.get("d") is not None
    assert cache.size <= 3000


def test_a_value_larger_than_the_bound_is_returned_but_not_kept():
    cache = BoundedCache("t", max_bytes=100)
    big = np.zeros(1000, np.uint8)
    assert cache.get_or_make("k", lambda: big) is big
    assert len(cache) == 0 and cache.stats()["too_large"] == 1


def test_item_bound():
    cache = BoundedCache("t", max_items=2)
    for i in range(5):
        cache.put(i, str(i))
    assert cache.cached_keys() == [3, 4]


def test_concurrent_askers_make_a_value_once_and_leave_no_lock_behind():
    cache = BoundedCache("t", max_items=4)
    calls = []

    def make():
        calls.append(1)
        time.sleep(0.2)
        return "value"

    results = []
    threads = [threading.Thread(target=lambda: results.append(cache.get_or_make("k", make))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1 and results == ["value"] * 6
    assert cache._making == {}


def test_nbytes_counts_arrays_images_and_containers_once():
    array = np.zeros((10, 10), np.float32)
    image = sitk.Image([8, 8, 8], sitk.sitkFloat32)
    assert nbytes(array) == 400
    assert nbytes(image) == 8 * 8 * 8 * 4
    assert 400 + 2048 <= nbytes({"a": array, "b": [array, image]}) < 400 + 2048 + 1000
