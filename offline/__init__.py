"""Everything that runs before the scan: face data, the VAE-GAN and PCA face spaces, the digital-twin
subject, BIDS loading, trial estimates, voxel selection, mappings, evaluation, reports and the bundle."""
