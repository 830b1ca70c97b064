"""vdf: video depth estimation models, data, metrics and long-video inference behind one CLI.

From Python, without Lightning: ``vdf.load(config, ckpt=None, **overrides)`` returns the config's
predictor (`vdf.api.load`).
"""

__version__ = "0.1.0"


def load(config, ckpt=None, device=None, **overrides):
    """The predictor of a vdf config, ready to run; see `vdf.api.load`."""
    from vdf.api import load as _load

    return _load(config, ckpt=ckpt, device=device, **overrides)
