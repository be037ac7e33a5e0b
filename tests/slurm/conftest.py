"""The ``slurm_cluster`` fixture: a real Slurm cluster for tests/slurm (helpers: slurm_helpers.py)."""

import pytest

from slurm_helpers import ensure_cluster


@pytest.fixture(scope="session")
def slurm_cluster() -> None:
    reason = ensure_cluster()
    if reason:
        pytest.skip(reason)
