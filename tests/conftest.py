from tests.slurm_fixtures import slurm_cluster  # noqa: F401  (session fixture)
