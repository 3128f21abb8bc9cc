"""The decoder and training benches run end to end and report the agreed keys (numbers are not asserted)."""

from __future__ import annotations

import argparse

import torch

torch.set_num_threads(1)


def _args(module, argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser()
    module.add_arguments(p)
    return p.parse_args(argv)


def test_decoder_bench_reports_both_runtimes() -> None:
    from fmriface.benchmarks import decoder

    out = decoder.run(_args(decoder, ["--repeats", "3", "--presets", "small-64"]))
    keys = {"ort_median_ms", "ort_p99_ms", "torch_median_ms", "torch_p99_ms"}
    assert keys <= set(out["small-64"]) and out["small-64"]["provider"] == "cpu"
    assert all(out["small-64"][k] > 0 for k in keys)


def test_train_bench_reports_images_per_second() -> None:
    from fmriface.benchmarks import train

    out = train.run(
        _args(
            train,
            [
                "--steps",
                "1",
                "--warmup",
                "0",
                "--batch-small",
                "4",
                "--presets",
                "small-64",
                "--device",
                "cpu",
                "--threads",
                "1",
            ],
        )
    )
    assert out["small-64"]["images_per_s"] > 0 and out["small-64"]["device"] == "cpu"
    assert out["small-64"]["batch_size"] == 4
