import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import tifffile
from scipy import ndimage

from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.evaluate.segmentation import pooled_scores
from morphospace.io.store import CropStore
from morphospace.runs import RunConflictError
from morphospace.workflows import prepare as prepare_module
from morphospace.evaluate.segmentation import score_label_files
from morphospace.workflows.prepare import PrepareConfig, prepare

pytestmark = pytest.mark.slow  # trains models or runs whole workflows


def _copy_screen(screen: Path, tmp_path: Path) -> Path:
    copy = tmp_path / "screen"
    shutil.copytree(screen, copy)
    return copy


def _manifest(screen: Path) -> pd.DataFrame:
    return pd.read_csv(screen / "manifest.csv")


def test_store_contents(screen: Path, prepared: Path):
    store = CropStore(prepared)
    qc = pd.read_csv(prepared / "qc.csv")
    manifest = _manifest(screen)
    assert store.channels == ["DNA", "Actin", "Tubulin"] and store.crop_shape == (64, 64)
    assert len(store) == qc["n_cells"].sum() > 100
    assert (qc["status"] == "ok").all() and len(qc) == len(manifest)
    cells = store.cells
    for column in ("Metadata_FieldId", "Metadata_Plate", "Metadata_Well", "Metadata_MoA", "Metadata_Compound",
                   "Metadata_ObjectNumber", "Metadata_Nucleus_Center_X"):
        assert column in cells, column
    masks = store.read_masks(np.arange(10))
    assert all(m[32, 32] == 1 for m in masks)  # every crop is centred on its own nucleus
    for field_id in manifest["Metadata_FieldId"]:
        assert (prepared / "labels" / f"{field_id}_nuclei.tiff").is_file()
        assert (prepared / "labels" / f"{field_id}_cells.tiff").is_file()
    assert (prepared / "prepare_config.yaml").is_file()
    assert f"prepared {len(store)} cells" in (prepared / "prepare.log").read_text()
    assert not prepared.with_name("store.partial").exists()


def test_segmentation_matches_ground_truth(screen: Path, prepared: Path):
    field_ids = _manifest(screen)["Metadata_FieldId"].tolist()
    # confluent cells with a soft cortex, as in real MCF-7 fields, leave about a third of the borders unfound
    for kind, least in (("nuclei", 0.9), ("cells", 0.6)):
        scores = pooled_scores(score_label_files(screen / "truth", prepared / "labels", field_ids, kind))
        assert scores["f1_pooled"] >= least, (kind, scores)


def test_qc_failures_are_skipped_and_listed(screen: Path, tmp_path: Path):
    copy = _copy_screen(screen, tmp_path)
    manifest = _manifest(copy)
    blurred, saturated = manifest.iloc[1], manifest.iloc[4]
    dna = copy / blurred["FileName_DNA"]
    tifffile.imwrite(dna, ndimage.gaussian_filter(tifffile.imread(dna).astype(float), 4).astype(np.uint16))
    actin = copy / saturated["FileName_Actin"]
    image = tifffile.imread(actin)
    image[:80, :80] = 65535
    tifffile.imwrite(actin, image)
    # this plate's 14 fields are 14 different treatments whose DNA brightness differs up to fivefold, so
    # their focus slopes spread (-3.1 to -3.8) too widely for the relative rule to single out the
    # blurred field (-4.1); an absolute floor between the two does
    config = resolve_config(PrepareConfig, {"qc": {"focus_min_slope": -3.95}})
    summary = prepare(copy / "manifest.csv", tmp_path / "store", config, progress=False)
    assert summary.qc_failures.keys() == {blurred["Metadata_FieldId"], saturated["Metadata_FieldId"]}
    assert summary.qc_failures[blurred["Metadata_FieldId"]].startswith("out of focus")
    assert "saturated Actin" in summary.qc_failures[saturated["Metadata_FieldId"]]
    store = CropStore(tmp_path / "store")
    assert not store.cells["Metadata_FieldId"].isin(list(summary.qc_failures)).any()
    qc = pd.read_csv(tmp_path / "store" / "qc.csv")
    assert set(qc.loc[qc["status"] == "qc_failed", "Metadata_FieldId"]) == set(summary.qc_failures)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_bytes(p.read_bytes()[:3000]), "unreadable or truncated"),
        (lambda p: tifffile.imwrite(p, np.full((256, 256), np.nan, np.float32)), "NaN or infinite"),
        (lambda p: tifffile.imwrite(p, np.zeros((256, 256), np.uint16)), "image is empty"),
        (lambda p: tifffile.imwrite(p, np.ones((200, 256), np.uint16) * np.arange(256, dtype=np.uint16)),
         "differ in shape"),
        (lambda p: tifffile.imwrite(p, np.ones((256, 256, 3), np.uint16) * np.arange(3, dtype=np.uint16),
                                    photometric="rgb"), "colour channels"),
        (lambda p: p.unlink(), "missing image file"),
    ],
)
def test_bad_input_names_the_file_and_leaves_nothing(screen: Path, tmp_path: Path, damage, message):
    copy = _copy_screen(screen, tmp_path)
    target = copy / _manifest(copy).iloc[2]["FileName_Tubulin"]
    damage(target)
    with pytest.raises(InputError, match=message) as info:
        prepare(copy / "manifest.csv", tmp_path / "store", progress=False)
    assert target.name in str(info.value) or _manifest(copy).iloc[2]["Metadata_FieldId"] in str(info.value)
    assert not (tmp_path / "store").exists() and not (tmp_path / "store.partial").exists()


def test_skip_on_error_keeps_going(screen: Path, tmp_path: Path):
    copy = _copy_screen(screen, tmp_path)
    bad = _manifest(copy).iloc[0]
    (copy / bad["FileName_DNA"]).write_bytes(b"not an image")
    config = resolve_config(PrepareConfig, {"on_error": "skip"})
    summary = prepare(copy / "manifest.csv", tmp_path / "store", config, progress=False)
    assert summary.n_errors == 1
    qc = pd.read_csv(tmp_path / "store" / "qc.csv").set_index("Metadata_FieldId")
    assert qc.loc[bad["Metadata_FieldId"], "status"] == "error"
    assert "unreadable" in qc.loc[bad["Metadata_FieldId"], "reason"]


def test_config_naming_a_missing_channel(screen: Path, tmp_path: Path):
    config = resolve_config(PrepareConfig, {"nuclei": {"channel": "Hoechst"}})
    with pytest.raises(InputError, match="nucleus channel 'Hoechst' is not one of its channels.*nuclei.channel"):
        prepare(screen / "manifest.csv", tmp_path / "store", config, progress=False)


def _interrupted_after(n_fields: int, process_field):
    """``process_field`` that raises KeyboardInterrupt once ``n_fields`` fields are done."""
    calls = {"n": 0}

    def interrupted(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] > n_fields:
            raise KeyboardInterrupt
        return process_field(*args, **kwargs)

    return interrupted


def test_resume_after_interruption_gives_the_same_store(screen: Path, prepared: Path, tmp_path: Path, monkeypatch):
    original = prepare_module.process_field
    monkeypatch.setattr(prepare_module, "process_field", _interrupted_after(5, original))
    with pytest.raises(KeyboardInterrupt):
        prepare(screen / "manifest.csv", tmp_path / "store", progress=False)
    assert not (tmp_path / "store").exists()
    assert len(list((tmp_path / "store.partial" / "fields").iterdir())) == 5
    monkeypatch.setattr(prepare_module, "process_field", original)
    with pytest.raises(RunConflictError, match="crops.size.*--restart"):
        prepare(screen / "manifest.csv", tmp_path / "store", resolve_config(PrepareConfig, {"crops": {"size": 32}}),
                progress=False)
    summary = prepare(screen / "manifest.csv", tmp_path / "store", progress=False)
    assert summary.resumed_fields == 5
    resumed, reference = CropStore(tmp_path / "store"), CropStore(prepared)
    np.testing.assert_array_equal(resumed.read(slice(None)), reference.read(slice(None)))
    pd.testing.assert_frame_equal(resumed.cells, reference.cells)


def test_existing_store_needs_overwrite(screen: Path, prepared: Path):
    with pytest.raises(FileExistsError):
        prepare(screen / "manifest.csv", prepared, progress=False)


def test_dask_workers_give_the_same_store(screen: Path, prepared: Path, tmp_path: Path):
    prepare(screen / "manifest.csv", tmp_path / "store", workers=2, progress=False)
    parallel, reference = CropStore(tmp_path / "store"), CropStore(prepared)
    np.testing.assert_array_equal(parallel.read(slice(None)), reference.read(slice(None)))
    pd.testing.assert_frame_equal(parallel.cells, reference.cells)


def test_aligned_masked_crops_and_z_stacks(screen: Path, tmp_path: Path):
    copy = _copy_screen(screen, tmp_path)
    manifest = _manifest(copy).head(3)
    for path in manifest["FileName_DNA"]:
        plane = tifffile.imread(copy / path)
        tifffile.imwrite(copy / path, np.stack([plane // 2, plane, plane // 3]), photometric="minisblack")
    manifest.to_csv(copy / "manifest.csv", index=False)
    config = resolve_config(PrepareConfig, {"crops": {"align": True, "mask_outside_cell": True, "size": 48,
                                                      "border": "drop"},
                                            "illumination": {"enabled": False}, "denoise": {"method": "median"}})
    with pytest.raises(InputError, match="holds 3 planes .* planar colour or a short z-stack.*short_stacks: true"):
        prepare(copy / "manifest.csv", tmp_path / "store", config, progress=False)
    config.short_stacks = True
    prepare(copy / "manifest.csv", tmp_path / "store", config, progress=False)
    store = CropStore(tmp_path / "store")
    images, masks = store.read(slice(None)), store.read_masks(slice(None))
    assert store.crop_shape == (48, 48) and len(store) > 10
    assert np.all(images[np.broadcast_to((masks == 0)[:, None], images.shape)] == 0)
    assert not store.cells["Metadata_Padded"].any()


def test_resume_with_a_reordered_and_changed_manifest_keys_results_by_field(screen: Path, tmp_path: Path,
                                                                            monkeypatch):
    copy = _copy_screen(screen, tmp_path)
    original = prepare_module.process_field
    monkeypatch.setattr(prepare_module, "process_field", _interrupted_after(6, original))
    with pytest.raises(KeyboardInterrupt):
        prepare(copy / "manifest.csv", tmp_path / "store", progress=False)
    monkeypatch.setattr(prepare_module, "process_field", original)
    manifest = _manifest(copy)
    noisy = manifest.iloc[2]  # done before the interruption, now replaced by camera noise
    image = tifffile.imread(copy / noisy["FileName_DNA"])
    noise = np.random.default_rng(0).normal(image.mean(), image.std() / 4 + 1, image.shape)
    tifffile.imwrite(copy / noisy["FileName_DNA"], noise.clip(0, None).astype(image.dtype))
    manifest.iloc[::-1].to_csv(copy / "manifest.csv", index=False)  # and the rows reversed
    prepare(copy / "manifest.csv", tmp_path / "store", progress=False)
    shutil.rmtree(tmp_path / "store.lock", ignore_errors=True)
    prepare(copy / "manifest.csv", tmp_path / "fresh", progress=False)  # the same inputs, never interrupted
    resumed, fresh = CropStore(tmp_path / "store"), CropStore(tmp_path / "fresh")
    np.testing.assert_array_equal(resumed.read(slice(None)), fresh.read(slice(None)))
    pd.testing.assert_frame_equal(resumed.cells, fresh.cells)
    qc = pd.read_csv(tmp_path / "store" / "qc.csv").set_index("Metadata_FieldId")
    assert qc.loc[noisy["Metadata_FieldId"], "status"] == "qc_failed"
    assert qc.loc[noisy["Metadata_FieldId"], "reason"].startswith("no_foreground")
    assert noisy["Metadata_FieldId"] not in set(resumed.cells["Metadata_FieldId"])
    assert not (tmp_path / "store" / "labels" / f"{noisy['Metadata_FieldId']}_nuclei.tiff").exists()


def test_a_second_prepare_of_the_same_store_stops_at_once(screen: Path, tmp_path: Path):
    import json

    from morphospace.locks import LockedError, lock_path

    lock = lock_path(tmp_path / "store")
    lock.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(), "started": "now",
                                "command": "morphospace prepare ..."}))
    with pytest.raises(LockedError, match=f"store.lock: another morphospace process is writing .*pid {os.getpid()}"):
        prepare(screen / "manifest.csv", tmp_path / "store", progress=False)
    assert not (tmp_path / "store.partial").exists() and lock.exists()
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    lock.write_text(json.dumps({"pid": int(dead.stdout), "host": socket.gethostname()}))  # a stale lock
    copy = _copy_screen(screen, tmp_path)
    _manifest(copy).head(3).to_csv(copy / "manifest.csv", index=False)
    assert prepare(copy / "manifest.csv", tmp_path / "store", progress=False).n_cells > 0
    assert not lock.exists()


def test_fields_of_noise_another_size_or_missing_are_listed_not_fatal(screen: Path, tmp_path: Path):
    copy = _copy_screen(screen, tmp_path)
    manifest = _manifest(copy)
    noise = manifest.iloc[0]
    for channel in ("DNA", "Actin", "Tubulin"):  # a field of pure camera noise: no fake cells
        shape = tifffile.imread(copy / noise[f"FileName_{channel}"]).shape
        tifffile.imwrite(copy / noise[f"FileName_{channel}"],
                         np.random.default_rng(1).poisson(100, shape).astype(np.uint16))
    smaller = manifest.iloc[1]  # a field of another size in the same plate
    for channel in ("DNA", "Actin", "Tubulin"):
        path = copy / smaller[f"FileName_{channel}"]
        tifffile.imwrite(path, tifffile.imread(path)[:200, :180])
    missing = manifest.iloc[2]
    (copy / missing["FileName_Actin"]).unlink()
    config = resolve_config(PrepareConfig, {"on_error": "skip"})
    summary = prepare(copy / "manifest.csv", tmp_path / "store", config, progress=False)
    qc = pd.read_csv(tmp_path / "store" / "qc.csv").set_index("Metadata_FieldId")
    assert qc.loc[noise["Metadata_FieldId"], "reason"].startswith("no_foreground") and summary.n_errors == 1
    assert qc.loc[missing["Metadata_FieldId"], "status"] == "error" and "not found" in qc.loc[
        missing["Metadata_FieldId"], "reason"]
    assert qc.loc[smaller["Metadata_FieldId"], "status"] == "ok" and qc.loc[smaller["Metadata_FieldId"], "n_cells"] > 0
    cells = CropStore(tmp_path / "store").cells
    assert noise["Metadata_FieldId"] not in set(cells["Metadata_FieldId"])
    illumination = sorted(p.name for p in (tmp_path / "store" / "illumination").glob("*_DNA_*.tiff"))
    assert len(illumination) == 1 and "_256x256_" in illumination[0]  # one field of 200 x 180 px: too few to estimate


def test_each_field_is_read_once_per_pass_and_the_illumination_sample_is_bounded(screen: Path, tmp_path: Path,
                                                                                 monkeypatch):
    reads: dict[str, int] = {}
    original = prepare_module.read_field

    def counted(spec, *args, **kwargs):
        reads[spec.field_id] = reads.get(spec.field_id, 0) + 1
        return original(spec, *args, **kwargs)

    monkeypatch.setattr(prepare_module, "read_field", counted)
    config = resolve_config(PrepareConfig, {"illumination": {"max_fields": 3}, "fields_per_task": 4})
    prepare(screen / "manifest.csv", tmp_path / "store", config, progress=False)
    fields = _manifest(screen)["Metadata_FieldId"].astype(str)
    assert reads == {field_id: 2 for field_id in fields}  # QC and thumbnails together, then the crops
    store = tmp_path / "store"
    assert not (store / "thumbnails").exists() and len(list((store / "illumination").glob("*.tiff"))) == 3
    specs = prepare_module.read_manifest(screen / "manifest.csv")
    candidates = prepare_module.illumination_candidates(specs, config.illumination)
    assert [len(ids) for ids in candidates.values()] == [6]  # twice max_fields of the plate's 14 fields
    assert prepare_module.illumination_candidates(specs[::-1], config.illumination) == candidates
