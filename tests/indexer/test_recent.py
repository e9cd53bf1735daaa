"""The bounded map of a version's hot payloads (``indexer.local.Recent``), shared by every serving thread."""

import threading
from collections import Counter

from indexer.local import Recent


def test_threads_racing_over_overlapping_keys_each_get_every_value_and_the_map_stays_bounded():
    recent = Recent(size=50)
    loads: Counter[str] = Counter()
    lock = threading.Lock()

    def load(keys: list[str]) -> dict[str, str]:
        with lock:
            loads.update(keys)
        return {k: k.upper() for k in keys if k != "absent"}  # one key the store does not hold

    barrier = threading.Barrier(8)
    results: list[dict[str, str]] = []
    failures: list[str] = []

    def reader(offset: int) -> None:
        barrier.wait()
        for start in range(0, 200, 7):
            keys = [f"k{(start + offset + i) % 120}" for i in range(10)] + ["absent"]
            got = recent.get_or_load(keys, load)
            if got != {k: k.upper() for k in keys if k != "absent"}:
                failures.append(f"{keys}: {got}")
            results.append(got)

    threads = [threading.Thread(target=reader, args=(i * 5,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == [] and len(results) == 8 * len(range(0, 200, 7))
    assert len(recent.get_many([f"k{i}" for i in range(120)])) <= 50  # never more than its size
    assert loads["absent"] >= 1 and set(loads) <= {f"k{i}" for i in range(120)} | {"absent"}
