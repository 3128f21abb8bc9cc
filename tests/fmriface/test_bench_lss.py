"""fmriface bench lss: the per-trial cost of the live LSS estimate, on a small run."""

from __future__ import annotations

import json

from fmriface.commands.bench import main


def test_bench_lss_times_live_trials_and_the_whole_run(capsys):
    assert main(["lss", "--json", "--voxels", "200", "--volumes", "60"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["voxels"] == 200 and out["volumes"] == 60 and out["live_beta_ms"]["n"] > 5
    assert out["live_t_ms"]["median"] > 0 and out["whole_run_beta_ms_per_trial"] > 0
