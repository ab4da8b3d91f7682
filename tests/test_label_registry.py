"""Label ids shared by several processes on one datastore: allocated under the file lock from the file's current
content, so two processes never give one id to two structures."""

from __future__ import annotations

import json
import multiprocessing

from seer.segmentation.atlases import LabelRegistry


def _allocate(path: str, prefix: str, count: int, queue) -> None:
    registry = LabelRegistry(path)  # each process reads the file once at start, as a server does
    got = {}
    for i in range(count):
        got.update(registry.ensure([f"{prefix} structure {i}"]))
    queue.put(got)


def test_two_processes_allocating_at_once_never_share_an_id(tmp_path):
    path = str(tmp_path / "label_table.json")
    LabelRegistry(path).ensure(["liver"])
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    workers = [context.Process(target=_allocate, args=(path, prefix, 40, queue)) for prefix in ("alpha", "beta")]
    for worker in workers:
        worker.start()
    results = [queue.get(timeout=120) for _ in workers]
    for worker in workers:
        worker.join(timeout=60)
    given = {name: value for result in results for name, value in result.items()}
    assert len(given) == 80
    assert len(set(given.values())) == 80 and 1 not in given.values()  # liver keeps 1, no id given twice
    on_disk = json.loads((tmp_path / "label_table.json").read_text())["labels"]
    assert {k: v for k, v in on_disk.items() if k != "liver"} == given and on_disk["liver"] == 1


def test_a_name_another_process_registered_keeps_its_id(tmp_path):
    path = tmp_path / "label_table.json"
    first, second = LabelRegistry(path), LabelRegistry(path)
    spleen = first.ensure(["spleen"])["spleen"]
    assert second.ensure(["spleen", "liver"]) == {"spleen": spleen, "liver": spleen + 1}
    assert first.ensure(["liver"]) == {"liver": spleen + 1}
