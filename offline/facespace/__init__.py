"""Face spaces: the VAE-GAN's latent space and the PCA baseline behind one interface.

A face space maps faces to latent vectors and back. The offline pipeline encodes stimuli, fits brain -> latent
mappings and evaluates in latent, pixel and perceptual space through this interface alone, so the VAE-GAN and
the PCA ("eigenface") baseline are interchangeable; both export the same ONNX contract for the service.

- :mod:`~offline.facespace.base`: the :class:`FaceSpace` interface, ``facespace.json``;
- :mod:`~offline.facespace.vaegan` and :mod:`~offline.facespace.pca`: the two spaces;
- :mod:`~offline.facespace.load`: loading a saved space, perceptual features, attribute directions, encoding
  a folder of stimuli.
"""

import lazy_loader

__getattr__, __dir__, __all__ = lazy_loader.attach(
    __name__,
    submod_attrs={
        "base": ["FACESPACE_FILE", "FaceSpace", "FaceSpaceError", "as_float_images", "read_meta"],
        "load": [
            "attribute_readout",
            "directions_from_latents",
            "load_facespace",
            "perceptual_features",
            "attribute_directions",
            "encode_folder",
        ],
        "pca": ["PCAFaceSpace", "fit_pca"],
        "vaegan": ["VAEGANFaceSpace", "write_vaegan_meta"],
    },
)
