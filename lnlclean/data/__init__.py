"""Data: manifests, the image cache, benchmark datasets, synthetic noise and augmentation."""
