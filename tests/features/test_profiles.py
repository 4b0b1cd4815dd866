import numpy as np
import pandas as pd
import pytest

from morphospace.config import resolve_config
from morphospace.errors import InputError
from morphospace.features.profiles import (
    FeatureSelectConfig, ProfilesConfig, adapt_profiles_config, aggregate_profiles, build_profiles, exclude_features,
    log_transform,
    normalize_profiles, select_features, sphere_profiles,
)


def _wells(seed=0, plates=("P1", "P2"), per_plate=12):
    rng = np.random.default_rng(seed)
    rows = []
    for p, plate in enumerate(plates):
        for w in range(per_plate):
            compound = "DMSO" if w < per_plate // 2 else f"c{w % 3}"
            rows.append({"Metadata_Plate": plate, "Metadata_Well": f"W{w:02d}", "Metadata_Batch": f"B{p}",
                         "Metadata_Compound": compound,
                         "f1": rng.normal(10 * (p + 1), 2), "f2": rng.normal(5, 1) + (w % 3) * (compound != "DMSO"),
                         "f3": rng.normal(0, 1)})
    return pd.DataFrame(rows)


def test_aggregate_median_counts_and_constant_metadata():
    cells = pd.DataFrame({"Metadata_Plate": ["P"] * 5, "Metadata_Well": ["A", "A", "A", "B", "B"],
                          "Metadata_Compound": ["x", "x", "x", "y", "y"], "Metadata_Cell": [1, 2, 3, 1, 2],
                          "f": [1.0, 2.0, 10.0, 4.0, 6.0]})
    wells = aggregate_profiles(cells, ["Metadata_Plate", "Metadata_Well"], "median")
    assert wells["f"].tolist() == [2.0, 5.0]
    assert wells["Metadata_ObjectCount"].tolist() == [3, 2]
    assert "Metadata_Compound" in wells and "Metadata_Cell" not in wells


def test_standardize_against_controls_per_plate():
    wells = _wells()
    normalized = normalize_profiles(wells, "standardize", by="Metadata_Plate")  # pycytominer, per plate
    controls = normalized[wells["Metadata_Compound"] == "DMSO"]
    means = controls.groupby("Metadata_Plate")[["f1", "f2", "f3"]].mean()
    stds = controls.groupby("Metadata_Plate")[["f1", "f2", "f3"]].std(ddof=0)
    np.testing.assert_allclose(means.to_numpy(), 0, atol=1e-9)
    np.testing.assert_allclose(stds.to_numpy(), 1, atol=1e-9)
    robust = normalize_profiles(wells, "mad_robustize", by="Metadata_Plate")
    medians = robust[wells["Metadata_Compound"] == "DMSO"].groupby("Metadata_Plate")[["f1"]].median()
    np.testing.assert_allclose(medians.to_numpy(), 0, atol=1e-9)


def test_groups_without_controls_are_an_error():
    wells = _wells()
    wells.loc[(wells["Metadata_Plate"] == "P2") & (wells["Metadata_Compound"] == "DMSO"), "Metadata_Compound"] = "c9"
    with pytest.raises(InputError, match="Metadata_Plate='P2' has no control rows"):
        normalize_profiles(wells)
    with pytest.raises(InputError, match="control query"):
        normalize_profiles(_wells(), control="Metadata_Nope == 1")


def test_feature_selection_drops_constant_and_correlated():
    wells = _wells()
    wells["f_copy"] = wells["f1"] * 2 + 1
    wells["f_constant"] = 3.0
    selected = select_features(wells, FeatureSelectConfig())
    kept = [c for c in selected.columns if not c.startswith("Metadata_")]
    assert "f_constant" not in kept and not {"f1", "f_copy"} <= set(kept) and "f3" in kept
    blocked = select_features(wells, FeatureSelectConfig(operations=["blocklist"], blocklist=["f3"]))
    assert "f3" not in blocked and "f1" in blocked


def test_pooled_standardisation_hand_computed():
    wells = pd.DataFrame({"Metadata_Plate": ["P1"] * 3 + ["P2"] * 3,
                          "Metadata_Compound": ["DMSO", "DMSO", "x", "DMSO", "DMSO", "x"],
                          "f": [1.0, 3.0, 6.0, 11.0, 13.0, 10.0]})
    out = normalize_profiles(wells, "standardize_pooled")
    # centred controls: -1, 1, -1, 1 -> pooled std (ddof 1) = sqrt(4/3)
    np.testing.assert_allclose(out["f"], np.array([-1, 1, 4, -1, 1, -2]) / np.sqrt(4 / 3))


def test_log_and_exclusion():
    table = pd.DataFrame({"Metadata_Plate": ["P"] * 3, "pos": [1.0, np.e, np.e**2], "mixed": [-1.0, 0.0, 2.0],
                          "Cells_Location_Center_X": [1.0, 2.0, 3.0]})
    logged = log_transform(table)
    np.testing.assert_allclose(logged["pos"], [0, 1, 2])
    assert logged["mixed"].tolist() == [-1.0, 0.0, 2.0]
    assert "Cells_Location_Center_X" not in exclude_features(table, ["Location"])


@pytest.mark.parametrize("method", ["ZCA", "PCA"])
def test_sphering_whitens_controls_even_when_rank_deficient(method):
    wells = _wells(per_plate=40)
    wells["f4"] = wells["f1"] + wells["f3"]  # linearly dependent: the control covariance is singular
    sphered = sphere_profiles(wells, method=method, shrinkage=0.0001)
    features = [c for c in sphered.columns if not c.startswith("Metadata_")]
    controls = sphered.loc[wells["Metadata_Compound"] == "DMSO", features].to_numpy()
    covariance = np.cov(controls, rowvar=False)
    assert np.allclose(controls.mean(axis=0), 0, atol=1e-9)
    eigenvalues = np.sort(np.linalg.eigvalsh(covariance))
    assert np.allclose(eigenvalues[1:], 1, atol=0.01) and eigenvalues[0] < 0.01  # one direction has no variance
    if method == "PCA":
        assert features == ["PC1", "PC2", "PC3", "PC4"]


def test_build_profiles_pipeline():
    cells = _wells().loc[lambda t: t.index.repeat(3)].reset_index(drop=True)
    config = resolve_config(ProfilesConfig, {"feature_select": {"operations": ["variance_threshold"]}})
    profiles = build_profiles(cells, config)
    assert len(profiles) == 24 and (profiles["Metadata_ObjectCount"] == 3).all()
    with pytest.raises(InputError, match="no numeric feature columns"):
        build_profiles(cells[["Metadata_Plate", "Metadata_Well"]])


def test_sparse_missing_values_are_filled_and_frequent_ones_dropped():
    wells = _wells()
    wells.loc[3, "f1"] = np.nan  # 1 of 24 rows: kept, filled with the control centre
    wells.loc[::2, "f2"] = np.nan  # half the rows: dropped
    profiles = build_profiles(wells, ProfilesConfig(aggregate={"enabled": False}, sphere={"enabled": False}))
    assert "f2" not in profiles and profiles.loc[3, "f1"] == 0.0
    assert np.isfinite(profiles[["f1", "f3"]].to_numpy()).all()


def test_a_singular_whitening_is_refused():
    import numpy as np
    import pandas as pd

    from morphospace.config import ConfigError, resolve_config
    from morphospace.errors import InputError
    from morphospace.features.profiles import ProfilesConfig, sphere_profiles

    with pytest.raises(ConfigError, match="sphere.shrinkage"):
        resolve_config(ProfilesConfig, {"sphere": {"shrinkage": 0}})
    rng = np.random.default_rng(0)
    table = pd.DataFrame(rng.normal(size=(5, 20)), columns=[f"f{i}" for i in range(20)])  # 5 controls, 20 features
    table.insert(0, "Metadata_Compound", "DMSO")
    with pytest.raises(InputError, match="whitening is singular.*raise sphere.shrinkage"):
        sphere_profiles(table, shrinkage=1e-14)
    assert np.isfinite(sphere_profiles(table, shrinkage=0.05).iloc[:, 1:].to_numpy()).all()


def _cells(seed=0, per_class=15):
    """Cells of three phenotypes, no plate, well or compound: the table of a folder-per-class collection."""
    rng = np.random.default_rng(seed)
    n = 3 * per_class
    phenotype = np.repeat(["round", "long", "big"], per_class)
    return pd.DataFrame({"Metadata_Phenotype": phenotype, "Metadata_FileName": [f"{p}/{i}.png" for i, p in
                                                                                enumerate(phenotype)],
                         "Metadata_StoreIndex": np.arange(n), "Nuclei_AreaShape_Area": rng.normal(100, 10, n),
                         "Nuclei_Intensity_MeanIntensity_ch0": rng.normal(0, 1, n)})


def test_cell_level_profiles_need_no_wells_plates_or_controls():
    cells = _cells()
    cells.loc[3, ["Nuclei_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_ch0"]] = np.nan  # no nucleus found
    config = resolve_config(ProfilesConfig, {"level": "cells", "sphere": {"enabled": False}})
    applied, notes = adapt_profiles_config(cells, config, "cells.parquet")
    assert not applied.aggregate.enabled and applied.normalize.by is None and applied.normalize.control is None
    assert [n.rsplit("(", 1)[-1] for n in notes] == ["aggregate.enabled=false)", "normalize.by=null)",
                                                       "normalize.control=null)"]
    assert "normalize.control \"Metadata_Compound == 'DMSO'\" cannot be evaluated" in notes[2]
    profiles = build_profiles(cells, config, "cells.parquet")
    assert len(profiles) == len(cells) - 1 and 3 not in profiles["Metadata_StoreIndex"].tolist()
    assert list(profiles.columns[:3]) == ["Metadata_Phenotype", "Metadata_FileName", "Metadata_StoreIndex"]
    kept = cells.drop(index=3)
    area = np.log(kept["Nuclei_AreaShape_Area"])  # positive in all rows: logged, then standardised on all cells
    assert np.allclose(profiles["Nuclei_AreaShape_Area"], (area - area.mean()) / area.std(ddof=1))
    sphered = build_profiles(cells, resolve_config(ProfilesConfig, {"level": "cells"}), "cells.parquet")
    covariance = np.cov(sphered[["Nuclei_AreaShape_Area", "Nuclei_Intensity_MeanIntensity_ch0"]].T)
    assert np.allclose(covariance, np.eye(2), atol=0.06)  # whitened on all cells (5% shrinkage)


def test_aggregation_or_controls_the_table_lacks_are_errors_that_say_what_to_set():
    with pytest.raises(InputError) as aggregation:
        build_profiles(_cells(), ProfilesConfig(), "cells.parquet")
    assert str(aggregation.value).startswith(
        "cells.parquet: cannot aggregate by ['Metadata_Plate', 'Metadata_Well']: no column(s) ['Metadata_Plate', "
        "'Metadata_Well'] (its metadata columns: ['Metadata_Phenotype', 'Metadata_FileName', 'Metadata_StoreIndex']). "
        "A table of single cells without wells: --level cells (no aggregation)")
    wells = _wells().drop(columns="Metadata_Compound")
    with pytest.raises(InputError, match=r"wells.csv: normalize.control .* cannot be evaluated .* use all rows: "
                                         "--set normalize.control=null"):
        build_profiles(wells, ProfilesConfig(), "wells.csv")
    with pytest.raises(InputError, match="wells.csv: sphere.control .* selects no row"):
        build_profiles(_wells().assign(Metadata_Compound="x"), resolve_config(
            ProfilesConfig, {"normalize": {"method": "none"}}), "wells.csv")
