"""The `vdf` command: LightningCLI over vdf tasks and the video-depth datamodule.

``vdf fit|validate|test|predict --config CONFIG [--dotted.overrides ...]``; ``main(args)`` runs
the same in-process. ``vdf bench`` and ``vdf experiment`` are the speed/memory tool (`vdf.bench`)
and the ablation runner (`vdf.experiment`); ``run(args)`` dispatches to all of them. Runs are seeded, save their resolved config next to the TensorBoard logs
(``runs/<config name>/version_N/config.yaml``), checkpoint, and track the learning rate.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import Optional

import torch
import yaml
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from vdf.callbacks.interrupt import GracefulInterrupt
from vdf.callbacks.prediction_writer import DepthPredictionWriter
from vdf.callbacks.results import TestResultsWriter
from vdf.callbacks.visualization import DepthVisualizer
from vdf.cli_parser import VDFArgumentParser
from vdf.data.datamodule import VideoDepthDataModule
from vdf.data.roots import resolve_roots
from vdf.models.weights import StateDictMismatchError
from vdf.tasks.base import VideoDepthTask

DEFAULT_RUN_NAME = "vdf"


class VDFCLI(LightningCLI):
    """LightningCLI with vdf's defaults; every task is a `VideoDepthTask` subclass."""

    def add_arguments_to_parser(self, parser) -> None:
        # `vdf predict --input DIR --output DIR [--overwrite]`: short aliases of the datamodule's
        # folder input and of the prediction writer (a callback, idle outside predict).
        parser.add_lightning_class_args(DepthPredictionWriter, "writer")
        parser.add_argument(
            "--input",
            type=Optional[str],
            default=None,
            help="predict: a video, an image-sequence folder or a folder of them",
        )
        parser.add_argument(
            "--output",
            type=Optional[str],
            default=None,
            help="predict: output folder (default: beside the input, <name>_depth)",
        )
        parser.add_argument("--overwrite", type=bool, default=False, help="predict: redo complete outputs")
        parser.link_arguments("input", "data.predict_input")
        parser.link_arguments("output", "writer.output_dir")
        parser.link_arguments("overwrite", "writer.overwrite")

    def before_instantiate_classes(self) -> None:
        config = self.config[self.subcommand] if self.subcommand else self.config
        files = [str(f) for f in config.get("config") or []]
        for message in carried_init_args([f for f in files if Path(f).is_file()]):
            print(f"vdf: warning: {message}", file=sys.stderr)
        # Dataset roots named once under data.roots replace the ${name} placeholders of the datasets.
        data = config.get("data")
        if data is not None:
            data.roots = layered_roots([f for f in files if Path(f).is_file()], data.get("roots"))
        resolve_roots(data)

    def instantiate_trainer(self, **kwargs):
        # Predict writes its outputs (and their manifest) to --output: no TensorBoard run folder
        # and no config copy under runs/ for it.
        if self.subcommand == "predict":
            kwargs.setdefault("logger", False)
            self.save_config_callback = None
        return super().instantiate_trainer(**kwargs)

    def after_fit(self) -> None:
        # The path the README's next commands (validate, test, predict --ckpt_path) take.
        callback = self.trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", "") if callback is not None else ""
        if last and self.trainer.is_global_zero:
            print(f"vdf: the run's last checkpoint: {last}", file=sys.stderr)

    def _run_subcommand(self, subcommand: str) -> None:
        config = self.config[subcommand]
        if subcommand in ("validate", "test", "predict"):
            notice = random_weights_notice(config, type(self.model).__name__)
            if notice:
                print(f"vdf: note: {notice}", file=sys.stderr)
        if subcommand == "fit":
            hint = finished_checkpoint_hint(config.get("ckpt_path"), getattr(self, "_ckpt_step", None), self.trainer)
            if hint:
                print(f"vdf: note: {hint}", file=sys.stderr)
        if subcommand == "predict":
            for callback in self.trainer.callbacks:
                if isinstance(callback, DepthPredictionWriter):
                    callback.source = run_source(config)
        log_dir = _log_dir(self.trainer)
        existed = log_dir is not None and log_dir.exists()
        try:
            super()._run_subcommand(subcommand)
        except BaseException:
            # A run that fails before it trained or evaluated anything leaves no run folder behind.
            if log_dir is not None and not existed and _nothing_kept(log_dir, subcommand, self.trainer):
                import shutil

                shutil.rmtree(log_dir, ignore_errors=True)
            raise

    def _parse_ckpt_path(self) -> None:
        # Lightning merges the checkpoint's hyperparameters over the parsed model config, so a
        # test-time `--model.init_args.predictor.init_args.steps 1` or `tae: true` would be silently replaced by the
        # training run's value. In vdf the config (and the command line) says how the model is
        # built and evaluated, and the checkpoint only brings the weights; a checkpoint of another
        # task is refused in one plain line rather than as a parser error about missing arguments.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        self._ckpt_step: int | None = None
        if ckpt_path and Path(ckpt_path).is_file():
            # Read once here (mmap: only what is touched is read); the step serves `finished_checkpoint_hint`.
            checkpoint = torch.load(ckpt_path, weights_only=True, map_location="cpu", mmap=True)
            self._ckpt_step = checkpoint.get("global_step")
            hparams = checkpoint.get("hyper_parameters", {})
            theirs = hparams.get("_class_path")
            ours = config.get("model.class_path")
            if theirs and ours and theirs != ours:
                raise ValueError(
                    f"checkpoint {ckpt_path} was trained with {theirs}, but the config builds {ours}: "
                    "use the config the checkpoint was trained with (config.yaml in its run folder)"
                )

    def instantiate_classes(self) -> None:
        # jsonargparse reports a failing constructor inside its type-check summary (a ValueError
        # listing every Union member); re-raise the constructor's own error, which names the
        # file or key at fault, so that it is the last line the user reads.
        try:
            super().instantiate_classes()
        except Exception as error:
            root = _root_cause(error)
            if root is error:
                raise
            raise root from None


#: Overlay folders under configs/ that do not name a recipe (runs are named after the recipe).
OVERLAY_FOLDERS = ("tiny", "data", "strategy")


def _recipe_parts(path: str) -> tuple[str, str | None] | None:
    """``(family, stage)`` of ``configs/<family>.yaml`` or ``configs/<family>/<stage>.yaml``; None for
    a tiny or data overlay."""
    p = Path(path)
    if p.parent.name in OVERLAY_FOLDERS:
        return None
    if p.parent.name != "configs" and p.parent.parent.name in OVERLAY_FOLDERS:  # configs/data/train/<stage>.yaml
        return None
    if p.parent.name != "configs" and (p.parent.parent / f"{p.parent.name}.yaml").is_file():
        return p.parent.name, p.stem
    return p.stem, None


def run_name(configs: list[str]) -> str:
    """The run's name: ``<family>_<stage>`` of the last stage overlay, else the last recipe's name.

    ``configs/depthcrafter.yaml configs/depthcrafter/stage2.yaml configs/tiny/depthcrafter.yaml``
    -> ``depthcrafter_stage2``; ``configs/dav2.yaml configs/data/sintel.yaml`` -> ``dav2``.
    """
    for path in reversed(configs):
        parts = _recipe_parts(path)
        if parts is not None:
            family, stage = parts
            return family if stage is None else f"{family}_{stage}"
    return Path(configs[-1]).stem


def tiny_configs(configs: list[str]) -> list[str]:
    """``configs`` with the family's tiny overlay (``configs/tiny/<family>.yaml``) inserted after the
    recipe's own files and before data overlays: what ``vdf experiment --tiny`` and the docs runner
    run in place of a paper-scale recipe. Unchanged when the family has no tiny overlay or it is
    already there."""
    out = list(configs)
    positions = [i for i, c in enumerate(out) if _recipe_parts(c) is not None]
    if not positions or any(Path(c).parent.name == "tiny" for c in out):
        return out
    family = _recipe_parts(out[positions[0]])[0]
    root = Path(out[positions[0]]).parent
    root = root.parent if root.name == family else root
    tiny = root / "tiny" / f"{family}.yaml"
    if not tiny.is_file():
        return out
    out.insert(positions[-1] + 1, str(tiny))
    return out


def _init_parameters(cls: type) -> dict[str, type]:
    """Constructor parameter names of ``cls`` (following ``**kwargs`` up the bases), each with the
    class that defines it."""
    import inspect

    found: dict[str, type] = {}
    for klass in cls.__mro__:
        init = klass.__dict__.get("__init__")
        if init is None:
            continue
        params = inspect.signature(init).parameters
        for name, param in params.items():
            if name != "self" and param.kind not in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                found.setdefault(name, klass)
        if not any(p.kind == p.VAR_KEYWORD for p in params.values()):
            break
    return found


def _carried(old_path: str, new_path: str, left: set[str]) -> list[str]:
    """The arguments of ``left`` that the new class accepts with another meaning than the old
    class's (not inherited from a class both share)."""
    import importlib

    def load(path: str):
        module, _, name = path.rpartition(".")
        try:
            return getattr(importlib.import_module(module), name)
        except (ImportError, AttributeError, ValueError):
            return None

    old_cls, new_cls = load(old_path), load(new_path)
    if old_cls is None or new_cls is None:
        return sorted(left)
    old_params, new_params = _init_parameters(old_cls), _init_parameters(new_cls)
    return sorted(k for k in left if k in new_params and new_params[k] is not old_params.get(k))


def carried_init_args(configs: list[str]) -> list[str]:
    """Warnings for overlays that change a ``class_path`` while an earlier file gave ``init_args``
    the overlay does not set again: jsonargparse carries such arguments over to the new class when
    it accepts them, which silently mixes two recipes (e.g. SegmentStitching's ``overlap`` into an
    IndependentWindows overlay). Arguments both classes inherit from a shared base mean the same
    thing and are not reported."""
    import yaml

    warnings_: list[str] = []

    def walk(old, new, key: str, where: str) -> None:
        if not isinstance(old, dict) or not isinstance(new, dict):
            return
        if "class_path" in old and "class_path" in new and old["class_path"] != new["class_path"]:
            left = set(old.get("init_args") or {}) - set(new.get("init_args") or {})
            left = _carried(old["class_path"], new["class_path"], left) if left else []
            if left:
                warnings_.append(
                    f"{where} changes {key} from {old['class_path']} to {new['class_path']}; "
                    f"the earlier init_args {sorted(left)} carry over where the new class accepts them"
                )
            return
        for k in set(old) & set(new):
            walk(old[k], new[k], f"{key}.{k}" if key else k, where)

    merged: dict = {}
    for path in configs:
        data = yaml.safe_load(Path(path).read_text()) or {}
        walk(merged, data, "", str(path))
        merged = _merge(merged, data)
    return warnings_


def merge_configs(configs: list[str]) -> dict:
    """The YAML of ``configs`` layered in order (a node whose ``class_path`` changes is replaced, as
    the parser replaces the class), for tools that read configs without parsing them."""
    import yaml

    merged: dict = {}
    for path in configs:
        merged = _merge(merged, yaml.safe_load(Path(path).read_text()) or {})
    return merged


def _merge(base, over):
    if isinstance(base, dict) and isinstance(over, dict):
        if "class_path" in over and base.get("class_path") not in (None, over["class_path"]):
            return over
        out = dict(base)
        for k, v in over.items():
            out[k] = _merge(base.get(k), v) if k in base else v
        return out
    return over


def _log_dir(trainer) -> Path | None:
    logger = trainer.logger
    log_dir = getattr(logger, "log_dir", None) if logger is not None else None
    return Path(log_dir) if log_dir else None


def _nothing_kept(log_dir: Path, subcommand: str, trainer) -> bool:
    """Whether a failed run's folder holds nothing worth keeping: no checkpoint, and (fit) no step done."""
    if any(log_dir.rglob("*.ckpt")):
        return False
    return subcommand != "fit" or trainer.global_step == 0


def _weights_files(model) -> list[str]:
    """What the model config gives its weights arguments (``weights``, ``<part>_weights``)."""
    from vdf.models.weights import is_weights_argument, weight_sources

    return [source for key, source in weight_sources(model) if is_weights_argument(key.rpartition(".")[2])]


def _as_dict(node):
    return node.as_dict() if isinstance(node, Namespace) else node


def random_weights_notice(config, model_name: str) -> str | None:
    """One line when a run evaluates or predicts with a model that loads no weights at all."""
    if config.get("ckpt_path") or _weights_files(_as_dict(config.get("model"))):
        return None
    return (
        f"{model_name} runs with random weights: neither --ckpt_path nor a weights file in the config "
        "(a tiny config has none), so its depth is not meaningful"
    )


def finished_checkpoint_hint(ckpt_path: str | None, step: int | None, trainer) -> str | None:
    """A line when ``vdf fit --ckpt_path`` resumes a run (at ``step``) that has already reached ``max_steps``."""
    if not ckpt_path or step is None:
        return None
    max_steps = trainer.max_steps
    if max_steps is None or max_steps < 0 or step < max_steps:
        return None
    return (
        f"{ckpt_path} is at step {step} and max_steps is {max_steps}: --ckpt_path resumes that run, which has "
        "nothing left to do. To fine-tune from its weights, use --model.init_args.init_weights "
        f"{ckpt_path} instead (or raise --trainer.max_steps to continue it)"
    )


def run_source(config) -> dict:
    """What made a predict run's outputs: config files, task, checkpoint, and a fingerprint of them."""
    import hashlib
    import json

    model = _as_dict(config.get("model")) or {}
    ckpt = config.get("ckpt_path")
    checkpoint = None
    if ckpt:
        path = Path(ckpt).resolve()
        stat = path.stat() if path.is_file() else None
        checkpoint = {
            "path": str(path),
            "bytes": stat.st_size if stat else None,
            "mtime": stat.st_mtime if stat else None,
        }
    identity = {"model": model, "checkpoint": checkpoint}
    fingerprint = hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {
        "config": [str(f) for f in config.get("config") or []],
        "task": model.get("class_path"),
        "checkpoint": checkpoint["path"] if checkpoint else None,
        "weights": _weights_files(model),
        "fingerprint": fingerprint,
    }


def layered_roots(files: list[str], parsed: dict[str, str] | None) -> dict[str, str]:
    """``data.roots`` of layered config files, merged by name (a later file or ``--data.roots.<name>``
    wins for its names): a benchmark overlay's roots add to a training recipe's instead of
    replacing them, as a plain dict argument would."""
    merged: dict[str, str] = {}
    for path in files:
        try:
            content = yaml.safe_load(Path(path).read_text())
        except (OSError, yaml.YAMLError):
            continue  # the parser has read it already and reports its own errors
        roots = (content or {}).get("data", {}) if isinstance(content, dict) else {}
        roots = roots.get("roots") if isinstance(roots, dict) else None
        if isinstance(roots, dict):
            merged.update({str(k): str(v) for k, v in roots.items()})
    merged.update(parsed or {})
    return merged


def _root_cause(error: BaseException) -> BaseException:
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return error


def config_files(args: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files of a command line, in order."""
    files = []
    for i, arg in enumerate(args):
        if arg in ("--config", "-c") and i + 1 < len(args):
            files.append(args[i + 1])
        elif arg.startswith("--config="):
            files.append(arg.split("=", 1)[1])
    return files


#: ``vdf --help`` and each subcommand's usage line (jsonargparse's own lists every option, ~80 lines).
MAIN_HELP = dict(
    description="vdf: train, evaluate, run and compare video depth models (a Lightning CLI).",
    usage="vdf {fit,validate,test,predict,bench,experiment,download,demo,cache-latents} --config CONFIG [--config OVERLAY ...] [--key value ...]",
    epilog=(
        "Tools beside the Lightning subcommands: 'vdf bench CONFIG ...' measures speed and memory "
        "(vdf bench --help), 'vdf experiment GRID' runs an ablation grid (vdf experiment --help), "
        "'vdf download --config C' fetches the weights a config names from the Hugging Face Hub. "
        "'vdf demo --config CONFIG' serves a web page to try a model on a video (vdf demo --help). "
        "'vdf cache-latents --config C --output DIR' encodes a training set's video latents once (SVD families). "
        "Each subcommand's options: vdf SUBCOMMAND --help."
    ),
)
SUBCOMMAND_USAGE = {
    "fit": "vdf fit --config CONFIG [--config OVERLAY ...] [--ckpt_path CKPT] [--key value ...]",
    "validate": "vdf validate --config CONFIG [--config OVERLAY ...] --ckpt_path CKPT [--key value ...]",
    "test": "vdf test --config CONFIG [--config OVERLAY ...] --ckpt_path CKPT [--key value ...]",
    "predict": (
        "vdf predict --config CONFIG [--config OVERLAY ...] --input PATH --output DIR "
        "[--overwrite true] [--ckpt_path CKPT] [--key value ...]"
    ),
}


def cli_options(run: str = DEFAULT_RUN_NAME) -> dict:
    """The keyword arguments `main` builds `VDFCLI` with (shared by ``vdf bench`` and ``vdf experiment``);
    ``run`` names the TensorBoard run (``runs/<run>/version_N``)."""
    return dict(
        parser_class=VDFArgumentParser,
        parser_kwargs={**MAIN_HELP, **{name: {"usage": usage} for name, usage in SUBCOMMAND_USAGE.items()}},
        model_class=VideoDepthTask,
        datamodule_class=VideoDepthDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": run},
            },
            "callbacks": [
                ModelCheckpoint(save_last=True),
                LearningRateMonitor(logging_interval="step"),
                DepthVisualizer(),
                TestResultsWriter(),
                GracefulInterrupt(),
            ],
            "use_distributed_sampler": False,
        },
    )


def main(args: list[str] | None = None) -> VDFCLI:
    """Run the CLI; ``args`` as on the command line (None reads ``sys.argv``).

    The run is named after the recipe (``runs/<family>[_<stage>]/``, so that runs/ reads like
    configs/) before parsing, so that ``--print_config`` shows the name the run will use.
    """
    files = config_files(list(sys.argv[1:] if args is None else args))
    return VDFCLI(**cli_options(run_name(files) if files else DEFAULT_RUN_NAME), args=args)


#: Subcommands that are not Lightning's: ``vdf bench`` (speed and memory), ``vdf experiment``,
#: ``vdf download`` (the Hub weights a config names, fetched ahead of time), ``vdf demo`` (a web page)
#: and ``vdf cache-latents`` (a training set's video latents, encoded once: `vdf.cache`).
TOOLS = {
    "bench": "vdf.bench",
    "experiment": "vdf.experiment",
    "download": "vdf.download",
    "demo": "vdf.demo",
    "cache-latents": "vdf.cache",
}


def run(args: list[str] | None = None):
    """`main`, or the ``bench`` / ``experiment`` tool when ``args[0]`` names one (what ``vdf`` runs)."""
    argv = list(sys.argv[1:] if args is None else args)
    if argv and argv[0] in TOOLS:
        import importlib

        return importlib.import_module(TOOLS[argv[0]]).main(argv[1:])
    return main(argv)


def entrypoint() -> None:
    """Console-script entry point (``vdf``): runs `main` on ``sys.argv``.

    The exit status is 1 when ``vdf predict`` could not process some input (each is reported with
    its path and the reason; the others are still written). ``vdf bench``, ``vdf experiment`` and
    ``vdf download`` dispatch to `vdf.bench`, `vdf.experiment` and `vdf.download`.
    """
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        try:
            run(sys.argv[1:])
        except (FileNotFoundError, ValueError) as error:
            # A missing config or a bad grid is one line, not a traceback.
            print(f"vdf {sys.argv[1]}: error: {error}", file=sys.stderr)
            sys.exit(2)
        return
    try:
        cli = main()
    except (ValueError, FileNotFoundError, StateDictMismatchError) as error:
        # vdf's own errors name the file or key and the fix: the message, not a traceback
        # (VDF_DEBUG=1 shows it).
        if os.environ.get("VDF_DEBUG"):
            raise
        command = next((a for a in sys.argv[1:] if a in SUBCOMMAND_USAGE), "")
        print(f"vdf {command}: error: {error}".replace("vdf : ", "vdf: "), file=sys.stderr)
        print("(the traceback: VDF_DEBUG=1)", file=sys.stderr)
        sys.exit(2)
    writer = next((c for c in cli.trainer.callbacks if isinstance(c, DepthPredictionWriter)), None)
    if cli.subcommand == "predict" and writer is not None and writer.failed:
        sys.exit(1)
