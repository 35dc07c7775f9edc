"""The user's jobs (brain, connectomics, memories, training), run configs and the ``neurochunk`` CLI."""

from .config import ConfigError, Field, Section, load_config, validate
from .run import prepare, run_config

__all__ = ["ConfigError", "Field", "Section", "load_config", "prepare", "run_config", "validate"]
