"""Disk bounds of a state folder: registrations by size (least recently used first), proposals by age once
rewarded and by size, results by age."""

import os
import time

from seer.housekeeping import DiskLimits, Housekeeper, prune


def _file(path, kb, age_s, now):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * kb * 1024)
    os.utime(path, (now - age_s, now - age_s))
    return path


def test_prune_keeps_what_rewards_need_and_bounds_the_rest(tmp_path):
    now = time.time()
    day = 86400
    regs = tmp_path / "registrations"
    for i, age in enumerate((5, 3, 1)):  # pair-0 least recently used
        _file(regs / f"pair-{i}" / "field.mha", 400, age * day, now)
        os.utime(regs / f"pair-{i}", (now - age * day, now - age * day))
    old_rewarded = _file(tmp_path / "proposals" / "a.nii.gz", 10, 40 * day, now)
    old_pending = _file(tmp_path / "proposals" / "b.nii.gz", 10, 40 * day, now)
    new_rewarded = _file(tmp_path / "proposals" / "c.nii.gz", 10, 2 * day, now)
    stale_result = _file(tmp_path / "results" / "r1.nrrd", 1, 2 * day, now)
    fresh_result = _file(tmp_path / "results" / "r2.nrrd", 1, 60, now)
    limits = DiskLimits(registrations_mb=1.0, proposals_days=30, proposals_mb=100, results_hours=24)

    report = prune(tmp_path, limits, rewarded={str(old_rewarded), str(new_rewarded)}, now=now)

    assert sorted(p.name for p in regs.iterdir()) == ["pair-1", "pair-2"]  # 1.2 MB -> 0.8 MB, oldest gone
    assert not old_rewarded.exists() and old_pending.exists() and new_rewarded.exists()
    assert not stale_result.exists() and fresh_result.exists()
    assert report["registrations"]["removed"] == 1 and report["proposals"]["removed"] == 1
    assert report["results"]["removed"] == 1


def test_the_size_bound_removes_the_oldest_proposals_even_unrewarded(tmp_path):
    now = time.time()
    files = [_file(tmp_path / "proposals" / f"{i}.nii.gz", 512, (10 - i) * 60, now) for i in range(4)]
    prune(tmp_path, DiskLimits(proposals_mb=1.0), rewarded=set(), now=now)
    assert [f.exists() for f in files] == [False, False, True, True]


def test_housekeeper_reports_and_survives_a_missing_folder(tmp_path):
    keeper = Housekeeper(tmp_path / "nothing-yet", DiskLimits(), rewarded=set)
    report = keeper.run_once()
    assert report["proposals"] == {"removed": 0, "freed_mb": 0.0, "kept_mb": 0.0} and keeper.last is report
