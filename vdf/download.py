"""``vdf download --config C [--config C2 ...]``: fetch every Hub reference a config names.

Weights and scheduler configs named ``hf://owner/repo[@revision][/path]`` (`vdf.models.weights`)
are resolved at run time through the Hugging Face cache; this tool resolves them all ahead of
time, so that later runs can go offline (``HF_HUB_OFFLINE=1``) or run where the Hub cannot be
reached once the cache is copied there. Local paths are checked and reported, never fetched.
Each reference is printed with the config key that names it and the local path it resolved to.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jsonargparse import ArgumentParser

from vdf.models.weights import hub_cache_dir, resolve_source, weight_sources

__all__ = ["config_sources", "main"]


def config_sources(configs: list[str]) -> list[tuple[str, str]]:
    """``(dotted key, source)`` of what the layered ``configs`` load (`vdf.models.weights.weight_sources`):
    every ``hf://`` string, and every local path given to a weights argument."""
    from vdf.cli import merge_configs

    return list(weight_sources(merge_configs(configs)))


def main(args: list[str] | None = None) -> list[tuple[str, str, str]]:
    """Resolve (download) every source the configs name; returns ``(key, source, local path)``.

    Exits with status 1 after trying them all when one cannot be resolved (each failure printed).
    """
    parser = ArgumentParser(
        prog="vdf download", description="Fetch the weights a config names into the Hugging Face cache."
    )
    parser.add_argument("--config", type=str, action="append", required=True, help="config file, repeated to layer")
    configs = list(parser.parse_args(args).config)
    sources = config_sources(configs)
    print(f"Hugging Face cache: {hub_cache_dir()}")
    if not sources:
        print("nothing to download: the config names no weights")
        return []
    done, failed = [], 0
    for key, source in sources:
        try:
            path = resolve_source(source, key)
            if not path.exists():
                raise FileNotFoundError(f"{key}: {source} does not exist")
        except (FileNotFoundError, ValueError) as error:
            print(f"[error] {error}", file=sys.stderr)
            failed += 1
            continue
        print(f"{key}: {source} -> {Path(path)}")
        done.append((key, source, str(path)))
    if failed:
        print(f"{failed} of {len(sources)} could not be resolved", file=sys.stderr)
        sys.exit(1)
    return done


if __name__ == "__main__":
    main()
