"""Decoding: the bundle's linear map, the ONNX decoder's images, the encoder for target images."""

from __future__ import annotations

import json

import numpy as np
import pytest

from fmriface.benchmarks.synth import make_bundle
from service.bundle import BundleError, load_bundle
from service.live.decoder import LatentDecoder


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return make_bundle(tmp_path_factory.mktemp("bundle") / "b", n_voxels=60, latent_size=6, image_size=10)


@pytest.fixture(scope="module")
def decoder(synth):
    return LatentDecoder(load_bundle(synth.path)).build()


def test_latent_is_the_bundle_formula(decoder, rng):
    b = decoder.bundle
    x = rng.normal(size=b.n_voxels).astype(np.float32)
    expected = ((x - b.x_mean) / b.x_scale) @ b.weights + b.bias
    np.testing.assert_allclose(decoder.latent(x), expected, rtol=1e-4, atol=1e-5)
    batch = rng.normal(size=(4, b.n_voxels)).astype(np.float32)
    np.testing.assert_allclose(decoder.latents(batch)[2], decoder.latent(batch[2]).copy(), rtol=1e-5, atol=1e-6)


def test_mapping_recovers_the_encoded_latent(synth, decoder):
    z = synth.stim_latents[2]
    np.testing.assert_allclose(decoder.latent((z @ synth.encoding).astype(np.float32)), z, atol=1e-3)


def test_images_are_uint8_hwc_and_batch_matches_single(decoder, rng):
    lat = rng.normal(size=(3, decoder.latent_size)).astype(np.float32)
    one = decoder.decode(lat[1]).copy()
    assert one.dtype == np.uint8 and one.shape == (10, 10, 3)
    np.testing.assert_array_equal(decoder.decode_batch(lat)[1], one)
    # the decoder is MatMul -> Sigmoid: check one pixel by hand
    d = decoder.session_.run(None, {decoder._in_name: lat[1:2]})[0][0]  # [3, H, W] in [0, 1]
    assert abs(int(one[4, 7, 2]) - round(float(d[2, 4, 7]) * 255)) <= 1
    assert decoder.provider_ == "cpu"


def test_encoder_inverts_the_decoder_for_target_images(decoder, rng):
    z = rng.normal(scale=0.5, size=decoder.latent_size).astype(np.float32)
    img = decoder.session_.run(None, {decoder._in_name: z[None]})[0][0].transpose(1, 2, 0)
    np.testing.assert_allclose(decoder.encode_image(img), z, atol=1e-3)
    # from uint8 (quantised) the latent is still close
    assert np.corrcoef(decoder.encode_image(decoder.decode(z).copy()), z)[0, 1] > 0.99
    with pytest.raises(ValueError, match="must be 10x10x3"):
        decoder.encode_image(np.zeros((8, 8, 3), np.uint8))


def test_a_decoder_with_the_wrong_image_shape_is_refused(synth, tmp_path):
    import shutil

    from service.bundle import write_manifest

    bad = tmp_path / "bad"
    shutil.copytree(synth.path, bad)
    manifest = json.loads((bad / "manifest.json").read_text())
    fields = {k: v for k, v in manifest.items() if k not in ("schema", "created", "files")}
    write_manifest(bad, {**fields, "image_shape": [12, 12, 3]})
    with pytest.raises(BundleError, match=r"image_shape is \[12, 12, 3\]"):
        LatentDecoder(load_bundle(bad)).build()
