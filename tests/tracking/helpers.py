"""The tracked sweep of tests/tracking/conftest.py: 2 values of λ x 2 seeds, 4 runs in 2 groups."""

COEFFS, SEEDS = (0.0, 1.0), (0, 1)
EPOCHS = 3
STEPS_PER_EPOCH = 8  # 512 images, batch 64
SWEEP_NAME = "tracking_test"
