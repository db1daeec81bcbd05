"""Shared test settings: hypothesis profiles (``HYPOTHESIS_PROFILE=thorough`` for long runs)."""

from __future__ import annotations

import os

from hypothesis import settings

# ``ci`` keeps the whole suite quick and still reaches every state; ``thorough`` is for runs
# that may take minutes. Neither has a deadline: a slow machine is not a bug.
settings.register_profile(
    "ci", max_examples=80, stateful_step_count=50, deadline=None, print_blob=True
)
settings.register_profile(
    "thorough", max_examples=5000, stateful_step_count=100, deadline=None, print_blob=True
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))
