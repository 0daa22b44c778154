"""Shared pytest fixtures.

Fixtures live in ``tests/fixtures_*.py`` by area and are re-exported here so
every test module can use them. Tests never download anything and never read
``../shared``: datasets are small synthetic copies written in the published
layouts, SAM models are tiny random-weight models saved as real checkpoints.
"""

from __future__ import annotations

import os

# Keep torch from over-subscribing the CI machine's two cores.
os.environ.setdefault("OMP_NUM_THREADS", "2")

from fixtures_data import *  # noqa: E402,F401,F403
from fixtures_gan import *  # noqa: E402,F401,F403
from fixtures_sam import *  # noqa: E402,F401,F403
