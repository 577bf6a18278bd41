"""ClearML Data scripts run unchanged with ``from dsfs import Dataset``.

Each script below is written the way ClearML's documentation and examples
write them (keyword arguments, ``pathlib.Path``, ``upload()`` then
``finalize()``, classmethods for store-wide verbs); only the import line
differs.  They run against a real store of every kind (local, and S3 through
a moto server), with the store chosen by ``DSFS_STORE`` as a ClearML script
gets its server from its configuration.
"""

from __future__ import annotations

import json
import textwrap
from pathlib import Path
from typing import Any

import pytest

from dsfs import Dataset
from dsfs.errors import ConflictError, NotFoundError, UsageError


def run_script(text: str, **names: Any) -> dict[str, Any]:
    """Run a script's text as ``python script.py`` would, with a few given
    global names (the data folder); returns its globals."""
    namespace: dict[str, Any] = {"__name__": "__main__", **names}
    exec(compile(textwrap.dedent(text), "clearml_style_script.py", "exec"), namespace)
    return namespace


@pytest.fixture
def local_store(tmp_path: Path, dsfs_env: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> str:
    """A local store only: these scripts exercise the API, not the backends
    (the first test runs on every backend)."""
    url = str(tmp_path / "store")
    monkeypatch.setenv("DSFS_STORE", url)
    return url


@pytest.fixture
def data(tmp_path: Path) -> Path:
    root = tmp_path / "cifar"
    (root / "images" / "cats").mkdir(parents=True)
    (root / "images" / "dogs").mkdir(parents=True)
    for i in range(4):
        (root / "images" / "cats" / f"cat{i}.png").write_bytes(b"cat" * (i + 1) * 100)
        (root / "images" / "dogs" / f"dog{i}.png").write_bytes(b"dog" * (i + 1) * 100)
        (root / "images" / f"readme{i}.txt").write_text(f"note {i}\n")
    (root / "labels.csv").write_text("file,label\ncat0.png,cat\n")
    return root


CREATE = """
    from pathlib import Path
    from dsfs import Dataset

    dataset = Dataset.create(dataset_name="cifar_sample", dataset_project="dataset_examples",
                             dataset_tags=["raw"], description="a small sample")
    added = dataset.add_files(path=DATA / "images", wildcard=["*.png", "*.txt"],
                              dataset_path="images")
    dataset.add_files(path=str(DATA / "labels.csv"))
    dataset.set_metadata({"classes": ["cat", "dog"]}, metadata_name="info")
    dataset.set_metadata(DATA / "labels.csv", metadata_name="labels")
    assert dataset.is_dirty()
    dataset.upload(show_progress=True, verbose=False)
    assert not dataset.is_dirty()
    dataset.finalize()
    dataset_id = dataset.id
"""


def test_create_upload_finalize_then_get(store_url: str, data: Path) -> None:
    created = run_script(CREATE, DATA=data)
    assert created["added"] == 12
    got = run_script("""
        from dsfs import Dataset

        ds = Dataset.get(dataset_project="dataset_examples", dataset_name="cifar_sample",
                         alias="cifar", only_completed=True)
        folder = ds.get_local_copy()
        images = ds.list_files(dataset_path="images", recursive=True)
        cats = ds.list_files(dataset_path="images/cats")
        top = ds.list_files(dataset_path="images", recursive=False)
        info = ds.get_metadata(metadata_name="info")
        labels_path = ds.get_metadata("labels")
        entries = ds.file_entries_dict
        chunks = ds.get_num_chunks()
    """)
    ds = got["ds"]
    assert ds.id == created["dataset_id"] and ds.is_final() and not ds.is_dirty()
    assert ds.tags == ["raw"] and ds.description == "a small sample"
    assert len(got["images"]) == 12 and all(p.startswith("images/") for p in got["images"])
    assert got["cats"] == [f"images/cats/cat{i}.png" for i in range(4)]
    assert got["top"] == [f"images/readme{i}.txt" for i in range(4)]
    assert got["info"] == {"classes": ["cat", "dog"]}
    assert Path(got["labels_path"]).read_text() == (data / "labels.csv").read_text()
    assert got["entries"]["labels.csv"].size == len((data / "labels.csv").read_bytes())
    assert 1 <= got["chunks"] <= 13
    folder = Path(got["folder"])
    assert (folder / "images/dogs/dog3.png").read_bytes() == b"dog" * 400
    # by reference, by id prefix, with a tag; and parent_datasets by reference
    assert Dataset.get(dataset_id="dataset_examples/cifar_sample@1.0.0").id == ds.id
    assert Dataset.get(dataset_id=ds.id[:10]).id == ds.id
    assert Dataset.get(dataset_project="dataset_examples", dataset_name="cifar_sample",
                       dataset_tags=["raw"]).id == ds.id
    with pytest.raises(NotFoundError):
        Dataset.get(dataset_project="dataset_examples", dataset_name="cifar_sample",
                    dataset_tags=["raw", "gold"])


def test_child_version_sync_remove_and_counts(local_store: str, data: Path) -> None:
    run_script(CREATE, DATA=data)
    (data / "images" / "cats" / "cat0.png").write_bytes(b"changed")
    (data / "images" / "readme0.txt").unlink()
    (data / "images" / "readme1.txt").unlink()
    (data / "images" / "new.txt").write_text("new")
    (data / "images" / "new2.txt").write_text("new 2")
    (data / "images" / "new3.txt").write_text("new 3")
    out = run_script("""
        from dsfs import Dataset

        parent = Dataset.get(dataset_project="dataset_examples", dataset_name="cifar_sample")
        child = Dataset.create(dataset_name="cifar_sample", dataset_project="dataset_examples",
                               parent_datasets=["dataset_examples/cifar_sample"])
        removed, added, modified = child.sync_folder(local_path=DATA / "images",
                                                     dataset_path="images")
        dropped = child.remove_files(dataset_path="images/dogs/*", recursive=True)
        none = child.remove_files(dataset_path="nothing/here")
        child.upload()
        child.finalize()
        modified_files = child.list_modified_files()
        removed_files = child.list_removed_files()
    """, DATA=data)
    # ClearML's Dataset.sync_folder returns (removed, added, modified), in that order
    assert (out["removed"], out["added"], out["modified"]) == (2, 3, 1)
    assert out["dropped"] == 4 and out["none"] == 0
    child = out["child"]
    assert child.parents == [out["parent"].id]
    assert out["modified_files"] == ["images/cats/cat0.png"]
    assert len(out["removed_files"]) == 6
    assert child.get_num_chunks(include_parents=False) == 4


def test_tags_description_rename_move_list_squash_delete(local_store: str, data: Path) -> None:
    first = run_script(CREATE, DATA=data)["dataset"]
    out = run_script("""
        from dsfs import Dataset

        ds = Dataset.get(dataset_id=FIRST)
        ds.add_tags(["gold", "reviewed"])
        ds.remove_tags("raw")
        ds.set_description("checked by hand")
        Dataset.rename(new_dataset_name="cifar_small", dataset_project="dataset_examples",
                       dataset_name="cifar_sample")
        Dataset.move_to_project(new_dataset_project="vision/cifar",
                                dataset_project="dataset_examples", dataset_name="cifar_small")
        moved = Dataset.get(dataset_project="vision/cifar", dataset_name="cifar_small")
        listed = Dataset.list_datasets(dataset_project="vision", partial_name="SMALL")
        flat = Dataset.list_datasets(dataset_project="vision", recursive_project_search=False)
        by_id = Dataset.list_datasets(ids=[FIRST])
        squashed = Dataset.squash(dataset_name="cifar_flat", dataset_ids=[moved.id])
        Dataset.delete(dataset_project="vision/cifar", dataset_name="cifar_flat",
                       entire_dataset=True, force=True)
        after = Dataset.list_datasets(partial_name="flat")
    """, FIRST=first.id)
    moved = out["moved"]
    assert moved.id == first.id
    assert moved.tags == ["gold", "reviewed"] and moved.description == "checked by hand"
    assert (moved.project, moved.name) == ("vision/cifar", "cifar_small")
    assert [d["id"] for d in out["listed"]] == [first.id]
    row = out["listed"][0]
    assert {k: row[k] for k in ("name", "project", "version", "tags", "status")} == {
        "name": "cifar_small", "project": "vision/cifar", "version": "1.0.0",
        "tags": ["gold", "reviewed"], "status": "completed"}
    assert out["flat"] == [] and [d["id"] for d in out["by_id"]] == [first.id]
    assert out["squashed"].project == "vision/cifar" and out["squashed"].parents == []
    assert out["after"] == []
    assert moved.get_metadata("info") == {"classes": ["cat", "dog"]}
    with pytest.raises(NotFoundError):
        Dataset.get(dataset_project="dataset_examples", dataset_name="cifar_sample")
    # the old name can be taken again; renaming onto an existing dataset is refused
    again = run_script(CREATE, DATA=data)["dataset"]
    Dataset.rename("cifar_small", "dataset_examples", "cifar_sample")
    with pytest.raises(ConflictError, match="already exists"):
        Dataset.move_to_project("dataset_examples", "vision/cifar", "cifar_small")
    assert Dataset.get(dataset_id="dataset_examples/cifar_small").id == again.id
    assert Dataset.get(dataset_id="vision/cifar/cifar_small").id == first.id


def test_delete_and_get_keywords(local_store: str, data: Path) -> None:
    first = run_script(CREATE, DATA=data)["dataset"]
    child = Dataset.get(dataset_id=first.id, writable_copy=True)
    assert not child.is_final() and child.parents == [first.id]
    child.add_files(data / "labels.csv", dataset_path="again")
    child.finalize()
    with pytest.raises(UsageError, match="force=True"):
        Dataset.delete(dataset_project="dataset_examples", dataset_name="cifar_sample",
                       entire_dataset=True)
    would = Dataset.delete(dataset_project="dataset_examples", dataset_name="cifar_sample",
                           entire_dataset=True, force=True, dry_run=True)
    assert would == [child.id, first.id]
    assert Dataset.get(dataset_id=first.id).id == first.id
    assert Dataset.get(dataset_id=first.id, store=Path(local_store)).id == first.id
    fresh = Dataset.get(dataset_project="other", dataset_name="new", auto_create=True)
    assert not fresh.is_final()
    Dataset.delete(dataset_id=child.id)
    assert Dataset.list_datasets(dataset_project="dataset_examples")[0]["id"] == first.id


@pytest.mark.parametrize(("call", "message"), [
    (lambda: Dataset.create(dataset_project="p", dataset_name="a/b"), "may not contain '/'"),
    (lambda: Dataset.create(dataset_project="p@x", dataset_name="n"), "may not contain '@'"),
    (lambda: Dataset.create(dataset_project="p", dataset_name="n", dataset_tags=["a#b"]),
     "may not contain '#'"),
    (lambda: Dataset.get(dataset_id="p/n@"), "names no version"),
    (lambda: Dataset.get(dataset_id="p/n@1.0.0#best"), "not both"),
    (lambda: Dataset.create(dataset_project="p", dataset_name="n", use_current_task=True),
     "use_current_task"),
    (lambda: Dataset.create(dataset_name="n"), "dataset_project"),
])
def test_bad_arguments_speak_python(local_store: str, call: Any, message: str) -> None:
    with pytest.raises(UsageError, match=message):
        call()


def test_metadata_must_be_json_or_a_file(local_store: str, tmp_path: Path) -> None:
    ds = Dataset.create(dataset_project="p", dataset_name="n")
    with pytest.raises(UsageError, match="JSON-able"):
        ds.set_metadata(object())
    ds.set_metadata([1, 2, {"a": None}])
    (tmp_path / "f.txt").write_text("x")
    ds.add_files(tmp_path / "f.txt")
    ds.finalize()
    assert Dataset.get(dataset_id=ds.id).get_metadata() == [1, 2, {"a": None}]
    with pytest.raises(NotFoundError, match="has no metadata 'other'"):
        ds.get_metadata("other")
    assert json.loads(json.dumps(Dataset.list_datasets()))[0]["id"] == ds.id


def test_engine_errors_speak_python(local_store: str, data: Path) -> None:
    first = run_script(CREATE, DATA=data)["dataset"]
    child = Dataset.create(dataset_project="dataset_examples", dataset_name="cifar_sample",
                           parent_datasets=[first])
    child.add_files(data / "labels.csv", dataset_path="x")
    child.finalize()
    with pytest.raises(ConflictError, match="pass force=True") as info:
        Dataset.delete(dataset_id=first.id)
    assert "--" not in str(info.value)
    Dataset.create(dataset_project="p", dataset_name="n", dataset_version="1.0.x")
    with pytest.raises(UsageError, match="give dataset_version=") as info:
        draft = Dataset.open_draft()
        draft.add_files(data / "labels.csv")
        draft.finalize()
        Dataset.create(dataset_project="p", dataset_name="n")
    assert "--version" not in str(info.value)


def test_get_by_project_alone_is_the_latest_version_in_it(local_store: str, data: Path) -> None:
    out = run_script("""
        from dsfs import Dataset

        for name, tags in (("b", ["x"]), ("a", []), ("c", ["x"]), ("b", [])):
            ds = Dataset.create(dataset_project="proj", dataset_name=name, dataset_tags=tags)
            ds.add_files(DATA / "labels.csv")
            ds.finalize()
        sub = Dataset.create(dataset_project="proj/sub", dataset_name="deeper")
        sub.add_files(DATA / "labels.csv")
        sub.finalize()
        latest = Dataset.get(dataset_project="proj")
        tagged = Dataset.get(dataset_project="proj", dataset_tags=["x"])
    """, DATA=data)
    # ClearML's Dataset.get with only a project: the most recent dataset there
    assert (out["latest"].name, out["latest"].version) == ("b", "1.0.1")
    assert out["tagged"].name == "c"
    with pytest.raises(NotFoundError):
        Dataset.get(dataset_project="empty-project")
