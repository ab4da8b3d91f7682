"""The local studies folder's datastore (apps/seer/lib/datastore.py, SeerLocalDatastore): when another server on the
same folder rewrites datastore_v2.json, the re-read model replaces the current one only with its base path set, so
a save on another thread never sees a model whose label folders are relative to the working directory."""

from __future__ import annotations

import importlib.util
import os
import shutil

from conftest import REPO


def app_datastore_module():
    """apps/seer/lib/datastore.py, loaded from its file (the app's `lib` and `main` are not put on sys.path)."""
    spec = importlib.util.spec_from_file_location("seer_app_datastore", REPO / "apps" / "seer" / "lib" / "datastore.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_a_reload_never_exposes_a_model_without_its_base_path(tmp_path, sample_data):
    SeerLocalDatastore = app_datastore_module().SeerLocalDatastore  # noqa: N806 - a class

    shutil.copy(sample_data / "mni152_t1.nii.gz", tmp_path / "mni152_t1.nii.gz")
    assigned = []

    class Watched(SeerLocalDatastore):
        def __setattr__(self, name, value):
            if name == "_datastore":
                assigned.append(value.base_path)
            super().__setattr__(name, value)

    datastore = Watched(str(tmp_path), extensions=["*.nii.gz"], auto_reload=False)
    config = tmp_path / "datastore_v2.json"
    stamp = os.stat(config).st_mtime
    os.utime(config, (stamp + 5, stamp + 5))  # another server rewrote it
    assigned.clear()
    datastore._init_from_datastore_file(throw_exception=True)
    assert assigned == [str(tmp_path)]  # one swap, with its base path already set
    label_folder = datastore._datastore.label_path("final")
    assert os.path.isabs(label_folder) and label_folder.startswith(str(tmp_path))
    assert datastore.list_images() == ["mni152_t1"]
