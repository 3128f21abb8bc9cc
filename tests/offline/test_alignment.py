"""A new subject through another subject's decoder (issue 32): the group twin, fmralign's alignment checked against
scipy, the composed map, the guards, and `fit --align-to` end to end on the tiny group twin."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest

from fmriface.config import load_config, preset_path
from offline.decoding.alignment import (
    AlignmentError,
    check_disjoint,
    compose,
    fine_tune,
    fit_alignment,
    run_sessions,
)
from offline.decoding.bundle_writer import LinearMap
from offline.twin import SimulateConfig
from offline.twin.group import member_configs, shared_names
from offline.twin.simulate import prepare, subject_code


def group_config(**group) -> SimulateConfig:
    cfg = load_config(SimulateConfig, preset_path("simulate-group-tiny"), {})
    return dataclasses.replace(cfg, group=dataclasses.replace(cfg.group, **group))


def _unit_corr(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean([np.corrcoef(a[:, k], b[:, k])[0, 1] for k in range(a.shape[1])]))


def test_the_group_shares_the_shared_faces_and_the_set_fraction_of_the_code():
    members = member_configs(group_config())
    assert [m.subject for m in members] == ["01", "02", "03"] and len({m.seed for m in members}) == 3
    plans = [prepare(m) for m in members[:2]]
    names = shared_names(30)
    a, b = (p.stimuli.set_index("stim_file") for p in plans)
    params = [c for c in a.columns if c not in ("split",)]
    np.testing.assert_array_equal(a.loc[names, params].to_numpy(), b.loc[names, params].to_numpy())  # same faces
    tests = [s for s in a.index if s.startswith("test/")]
    assert not np.allclose(a.loc[tests, params].to_numpy(), b.loc[tests, params].to_numpy())  # own test faces
    assert not np.array_equal(plans[0].responsive, plans[1].responsive)  # own voxels
    # the codes of many faces: the two subjects' codes correlate unit by unit as the shared fraction says
    from offline.faces.params import sample_params

    faces = sample_params(4000, np.random.default_rng(5))
    for fraction in (0.7, 0.3, 0.0):
        one, two = (subject_code(m) for m in member_configs(group_config(shared_fraction=fraction))[:2])
        assert _unit_corr(one(faces), two(faces)) == pytest.approx(fraction, abs=0.1)  # 16 units: sampling noise
        assert one(faces).var(0).mean() == pytest.approx(1.0, abs=0.1)  # the mix keeps unit variance


def test_shared_faces_can_be_shown_several_times_in_the_first_session():
    cfg = group_config(shared_faces=10, shared_repeats=3)
    plan = prepare(member_configs(cfg)[1])
    first = plan.events[0]
    shown = first[(first.trial_type == "train_face") & (first.oneback == 0)].stim_file.value_counts()
    assert all(shown[name] == 3 for name in shared_names(10))  # each shared face three times, in three passes
    assert (plan.stimuli.split == "train").sum() == 120 - 10 * 2  # the repeats take slots of new faces
    with pytest.raises(ValueError, match="shared_faces x shared_repeats \\(150\\) must fit"):
        group_config(shared_faces=30, shared_repeats=5)


def test_a_single_twin_is_untouched_by_the_group_table():
    cfg = load_config(SimulateConfig, preset_path("simulate-tiny"), {})
    assert member_configs(cfg) == [cfg]
    assert type(subject_code(cfg)).__name__ == "FaceCode"


def test_procrustes_by_fmralign_equals_scipys_orthogonal_procrustes():
    from scipy.linalg import orthogonal_procrustes
    from scipy.stats import ortho_group

    rng = np.random.default_rng(0)
    z_new = rng.standard_normal((80, 12))
    rotation = ortho_group.rvs(12, random_state=1)
    z_ref = 1.7 * z_new @ rotation + 0.05 * rng.standard_normal((80, 12))
    matrix, offset = fit_alignment(z_new, z_ref, "procrustes", (1.0,))
    expected, _ = orthogonal_procrustes(z_new, z_ref)
    scale = np.trace(z_ref.T @ z_new @ expected) / np.sum(z_new**2)
    np.testing.assert_allclose(matrix, expected * scale, atol=1e-8)
    np.testing.assert_allclose(matrix / scale, rotation, atol=0.02)  # the known rotation, found again
    assert np.all(offset == 0)


def test_ridge_alignment_finds_a_known_linear_map_and_refuses_procrustes_of_unequal_sizes():
    rng = np.random.default_rng(1)
    z_new = rng.standard_normal((200, 10))
    true = rng.standard_normal((10, 15))
    matrix, offset = fit_alignment(z_new, z_new @ true + 0.5, "ridge", (1e-3, 1e-2, 1.0))
    np.testing.assert_allclose(matrix, true, atol=0.02)
    np.testing.assert_allclose(offset, 0.5, atol=0.02)
    with pytest.raises(AlignmentError, match="this subject has 10, the reference 15"):
        fit_alignment(z_new, z_new @ true, "procrustes", (1.0,))


def test_the_composed_map_decodes_as_alignment_then_the_references_mapping():
    rng = np.random.default_rng(2)
    ref = LinearMap(rng.standard_normal((15, 4)), rng.standard_normal(4), rng.normal(size=15), 1 + rng.random(15), "r")
    matrix, offset = rng.standard_normal((10, 15)), rng.standard_normal(15)
    x_mean, x_scale = rng.normal(size=10), 1 + rng.random(10)
    x = rng.normal(size=(7, 10))
    lm = compose(ref, matrix, offset, x_mean, x_scale, "aligned")
    z_ref = ((x - x_mean) / x_scale) @ matrix + offset  # the reference's standardised voxels
    expected = z_ref @ ref.weights + ref.bias
    np.testing.assert_allclose(((x - lm.x_mean) / lm.x_scale) @ lm.weights + lm.bias, expected, atol=1e-10)
    # fine-tuning on latents the composed map already predicts changes (almost) nothing
    y = ((x - x_mean) / x_scale) @ lm.weights + lm.bias
    x_many = rng.normal(size=(60, 10))
    y_many = ((x_many - x_mean) / x_scale) @ lm.weights + lm.bias
    tuned = fine_tune(lm, x_many, y_many, (1.0, 10.0))
    np.testing.assert_allclose(tuned.weights, lm.weights, atol=1e-8)
    assert y.shape == (7, 4)


def test_rescale_spreads_the_predictions_like_the_training_latents_and_keeps_their_directions():
    from offline.decoding.alignment import rescale

    rng = np.random.default_rng(3)
    x, y = rng.normal(size=(50, 6)), rng.normal(loc=2.0, size=(50, 4))
    shrunk = LinearMap(0.01 * rng.standard_normal((6, 4)), np.full(4, 2.0), np.zeros(6), np.ones(6), "r")
    wide = rescale(shrunk, x, y)

    def predict(lm):
        return ((x - lm.x_mean) / lm.x_scale) @ lm.weights + lm.bias

    centre = y.mean(0)
    assert (predict(wide) - centre).std() == pytest.approx((y - centre).std(), rel=1e-9)
    a, b = predict(shrunk) - centre, predict(wide) - centre
    np.testing.assert_allclose(
        a / np.linalg.norm(a, axis=1, keepdims=True), b / np.linalg.norm(b, axis=1, keepdims=True)
    )


def test_an_optional_bundle_file_is_hashed_and_checked(group, tmp_path):
    import shutil

    from service.bundle import BundleError, load_bundle

    bundle = tmp_path / "bundle"
    shutil.copytree(group["ref"], bundle)
    (bundle / "shared.npz").write_bytes((bundle / "shared.npz").read_bytes() + b"x")
    with pytest.raises(BundleError, match="shared.npz does not match the hash"):
        load_bundle(bundle)
    (bundle / "shared.npz").unlink()
    with pytest.raises(BundleError, match="shared.npz: manifest.json lists it but the file is missing"):
        load_bundle(bundle)


def test_a_test_face_among_the_shared_faces_is_refused():
    check_disjoint(["train/shared_00000.png"], ["test/test_00.png"])
    with pytest.raises(AlignmentError, match="1 test face\\(s\\) are among the shared faces"):
        check_disjoint(["train/shared_00000.png", "test/test_00.png"], ["test/test_00.png", "test/test_01.png"])


def test_sessions_are_counted_in_the_order_runs_met_them():
    names = ["sub-02_ses-01_task-faces_run-01", "sub-02_ses-01_task-faces_run-02", "sub-02_ses-03_task-faces_run-01"]
    assert run_sessions(names).tolist() == [1, 1, 2]
    assert run_sessions(["sub-02_task-faces_run-01"]).tolist() == [1]


# --- fit --align-to on the tiny group twin ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def group(tmp_path_factory) -> dict[str, Path]:
    """The tiny group (three subjects), a control group sharing nothing, a face space, and sub-01's bundle."""
    from fmriface.commands.fit import main as fit_main
    from fmriface.commands.simulate import main as simulate_main
    from fmriface.commands.train_vaegan import main as train_main

    root = tmp_path_factory.mktemp("group")
    assert simulate_main(["--config", "simulate-group-tiny", "--out", str(root / "twins")]) == 0
    assert train_main(["--config", "vaegan-tiny", "--out", str(root / "vaegan")]) == 0
    argv = ["--config", "fit-tiny", "--vaegan", str(root / "vaegan"), "--permutations", "0"]
    assert fit_main([*argv, "--bids", str(root / "twins" / "sub-01"), "--out", str(root / "ref")]) == 0
    return {"root": root, "twins": root / "twins", "vaegan": root / "vaegan", "ref": root / "ref" / "bundle"}


def _fit_aligned(group: dict[str, Path], bids: Path, out: Path, *extra: str) -> dict:
    from fmriface.commands.fit import main as fit_main

    argv = ["--config", "fit-tiny", "--vaegan", str(group["vaegan"]), "--permutations", "0", "--json"]
    argv += ["--bids", str(bids), "--out", str(out), "--align-to", str(group["ref"]), *extra]
    assert fit_main(argv) == 0
    return json.loads((out / "report" / "evaluation.json").read_text())


def test_the_reference_bundle_carries_its_patterns_of_the_shared_faces(group):
    from service.bundle import load_bundle

    bundle = load_bundle(group["ref"])
    assert "shared.npz" in bundle.manifest["files"]
    with np.load(group["ref"] / "shared.npz") as z:
        assert list(z["ids"]) == shared_names(30) and z["x"].shape == (30, bundle.n_voxels)


def test_fit_align_to_writes_an_aligned_bundle_and_the_sessions_table(group, tmp_path, capsys):
    from service.bundle import load_bundle

    evaluation = _fit_aligned(group, group["twins"] / "sub-02", tmp_path / "aligned")
    capsys.readouterr()
    table = evaluation["alignment"]
    assert [r["sessions"] for r in table["rows"]] == [1, 2, 4]  # curve (1, 2, 4, 8) on a 4-session twin
    first = table["rows"][0]
    assert first["shared_faces"] == 30 and first["train_faces"] == 30
    for row in table["rows"]:
        assert {"alone", "aligned", "aligned_fine_tuned", "aligned_centred"} <= set(row)
    report = tmp_path / "aligned" / "report"
    assert "A new subject through another subject's decoder" in (report / "report.html").read_text()
    assert (report / "figures" / "alignment.png").stat().st_size > 5000
    bundle = load_bundle(tmp_path / "aligned" / "bundle")
    record = bundle.manifest["alignment"]
    assert record["method"] == "ridge" and record["sessions"] == 1 and len(record["shared_faces"]) == 30
    assert record["reference_manifest_sha256"] == table["reference_manifest_sha256"]
    # one session whose training faces are all shared: the reference's mapping was fitted on them, so no face is
    # left to score the candidates on fairly; auto says so and takes the aligned map fine-tuned
    cv = record["cross_validation"]
    assert cv["folds"] == 0 and cv["scores"] == {} and record["mapping"] == "fine_tuned" and "no held-out" in cv["why"]
    assert "alignment.npz" in bundle.manifest["files"]
    # two sessions: the second session's faces (never the reference's) are scored; the best one is taken
    two = _fit_aligned(group, group["twins"] / "sub-02", tmp_path / "two", "--align-sessions", "2")
    cv2 = two["alignment"]["bundle"]["cross_validation"]
    assert cv2["folds"] >= 1 and set(cv2["scores"]) == {"aligned", "fine_tuned", "alone"}
    assert two["alignment"]["bundle"]["mapping"] == max(cv2["scores"], key=cv2["scores"].get)
    # the aligned map asked for: the alignment is in the mapping and kept beside it
    _fit_aligned(group, group["twins"] / "sub-02", tmp_path / "forced", "--align-bundle", "aligned")
    forced = load_bundle(tmp_path / "forced" / "bundle")
    assert forced.manifest["alignment"]["mapping"] == "aligned" and "alignment.npz" in forced.manifest["files"]
    with np.load(tmp_path / "forced" / "bundle" / "alignment.npz") as z:
        assert z["matrix"].shape == (forced.n_voxels, load_bundle(group["ref"]).n_voxels)


def test_fit_align_to_refuses_another_face_space_and_test_faces_in_the_alignment(group, tmp_path):
    import shutil

    from offline.decoding.alignment import AlignmentError

    bids = tmp_path / "sub-03"
    shutil.copytree(group["twins"] / "sub-03", bids)
    shared = bids / "stimuli" / "shared.tsv"
    ref = tmp_path / "ref"
    shutil.copytree(group["ref"], ref)
    with np.load(ref / "shared.npz") as z:
        ids, x = list(z["ids"]), z["x"]
    # a reference whose shared faces include one of this subject's test faces: refused, never scored
    np.savez(ref / "shared.npz", ids=np.array([*ids[:-1], "test/test_00.png"]), x=x)
    from service.bundle import sha256_file, write_manifest

    manifest = json.loads((ref / "manifest.json").read_text())
    write_manifest(ref, {k: v for k, v in manifest.items() if k not in ("schema", "created", "files")})
    assert sha256_file(ref / "shared.npz") == json.loads((ref / "manifest.json").read_text())["files"]["shared.npz"]
    with pytest.raises(AlignmentError, match="test face\\(s\\) are among the shared faces"):
        _fit_aligned({**group, "ref": ref}, bids, tmp_path / "out")
    assert shared.is_file()


@pytest.mark.slow
def test_an_aligned_bundle_decodes_live_as_offline_and_the_run_records_its_alignment(group, tmp_path):
    """sub-02's last test run replayed through `serve` with its aligned bundle: every trial's live latent equals the
    offline computation on the whole run (the same linear map), and the run's manifest names the alignment."""
    from fmriface.demo.replay_check import replay_check
    from service.bundle import load_bundle

    _fit_aligned(group, group["twins"] / "sub-02", tmp_path / "aligned")
    bundle = tmp_path / "aligned" / "bundle"
    bold = sorted((group["twins"] / "sub-02").glob("sub-02/ses-*/func/*task-faces*_bold.nii.gz"))
    tests = [b for b in bold if "test" in json.dumps(_events_kinds(b))]
    out = replay_check(bundle, tests[-1], tmp_path / "live", say=lambda *_: None)
    assert out["trials"] > 0 and out["volumes_ok"] > 0
    assert out["median_r"] >= 0.999 and out["min_r"] >= 0.99, out
    assert out["bundle_summary"]["alignment"] == load_bundle(bundle).manifest["alignment"]


def _events_kinds(bold: Path) -> list[str]:
    import pandas as pd

    events = bold.with_name(bold.name.replace("_bold.nii.gz", "_events.tsv"))
    return sorted(set(pd.read_csv(events, sep="\t")["trial_type"].astype(str)))


def test_too_few_shared_faces_are_refused_by_count():
    from offline.decoding.alignment import Reference, check_alignable

    lm = LinearMap(np.zeros((2, 1)), np.zeros(1), np.zeros(2), np.ones(2), "r")
    ref = Reference(Path("ref"), "0" * 64, lm, shared_names(5), np.zeros((5, 2)))
    check_alignable(ref, shared_names(4) + ["train/train_00009.png"])
    with pytest.raises(AlignmentError, match="only 3 of the reference's 5 shared faces"):
        check_alignable(ref, shared_names(3))
