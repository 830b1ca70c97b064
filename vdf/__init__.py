"""vdf: video depth estimation models, data, metrics and long-video inference behind one CLI."""

__version__ = "0.1.0"
