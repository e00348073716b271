"""The tools around the core: migration CLI, plan checker, embedded server, seed, demo, volume."""

from __future__ import annotations
