"""The `vdf` command: LightningCLI over vdf tasks and the video-depth datamodule.

``vdf fit|validate|test|predict --config CONFIG [--dotted.overrides ...]``; ``main(args)`` runs
the same in-process. ``vdf bench`` and ``vdf experiment`` are the speed/memory tool (`vdf.bench`)
and the ablation runner (`vdf.experiment`); ``run(args)`` dispatches to all of them. Runs are seeded, save their resolved config next to the TensorBoard logs
(``runs/<config name>/version_N/config.yaml``), checkpoint, and track the learning rate.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Optional

import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import LearningRateMonitor, ModelCheckpoint
from lightning.pytorch.cli import LightningCLI

from vdf.callbacks.prediction_writer import DepthPredictionWriter
from vdf.callbacks.results import TestResultsWriter
from vdf.callbacks.visualization import DepthVisualizer
from vdf.data.datamodule import VideoDepthDataModule
from vdf.tasks.base import VideoDepthTask

DEFAULT_RUN_NAME = "vdf"


class VDFCLI(LightningCLI):
    """LightningCLI with vdf's defaults; every task is a `VideoDepthTask` subclass."""

    def add_arguments_to_parser(self, parser) -> None:
        # `vdf predict --input DIR --output DIR [--overwrite]`: short aliases of the datamodule's
        # folder input and of the prediction writer (a callback, idle outside predict).
        parser.add_lightning_class_args(DepthPredictionWriter, "writer")
        parser.add_argument("--input", type=Optional[str], default=None, help="folder of videos for predict")
        parser.add_argument("--output", type=Optional[str], default=None, help="output folder for predict")
        parser.add_argument("--overwrite", type=bool, default=False, help="predict: redo complete outputs")
        parser.link_arguments("input", "data.predict_input")
        parser.link_arguments("output", "writer.output_dir")
        parser.link_arguments("overwrite", "writer.overwrite")

    def before_instantiate_classes(self) -> None:
        # Name the TensorBoard run after the last config file, so runs/ reads like configs/.
        config = self.config[self.subcommand] if self.subcommand else self.config
        files = config.get("config") or []
        logger = config.get("trainer.logger")
        if files and isinstance(logger, Namespace) and logger.get("init_args.name") == DEFAULT_RUN_NAME:
            logger.init_args.name = Path(str(files[-1])).stem

    def _parse_ckpt_path(self) -> None:
        # Lightning merges the checkpoint's hyperparameters over the parsed model config, so a
        # test-time `--model.init_args.steps 1` or `tae: true` would be silently replaced by the
        # training run's value. In vdf the config (and the command line) says how the model is
        # built and evaluated, and the checkpoint only brings the weights; a checkpoint of another
        # task is refused in one plain line rather than as a parser error about missing arguments.
        subcommand = self.config.get("subcommand")
        config = self.config[subcommand] if subcommand else None
        ckpt_path = config.get("ckpt_path") if config is not None else None
        if ckpt_path and Path(ckpt_path).is_file():
            hparams = torch.load(ckpt_path, weights_only=True, map_location="cpu").get("hyper_parameters", {})
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


def _root_cause(error: BaseException) -> BaseException:
    while (error.__cause__ or error.__context__) is not None:
        error = error.__cause__ or error.__context__
    return error


def cli_options() -> dict:
    """The keyword arguments `main` builds `VDFCLI` with (shared by ``vdf bench`` and ``vdf experiment``)."""
    return dict(
        model_class=VideoDepthTask,
        datamodule_class=VideoDepthDataModule,
        subclass_mode_model=True,
        seed_everything_default=0,
        save_config_kwargs={"overwrite": True},
        trainer_defaults={
            "logger": {
                "class_path": "lightning.pytorch.loggers.TensorBoardLogger",
                "init_args": {"save_dir": "runs", "name": DEFAULT_RUN_NAME},
            },
            "callbacks": [
                ModelCheckpoint(save_last=True),
                LearningRateMonitor(logging_interval="step"),
                DepthVisualizer(),
                TestResultsWriter(),
            ],
            "use_distributed_sampler": False,
        },
    )


def main(args: list[str] | None = None) -> VDFCLI:
    """Run the CLI; ``args`` as on the command line (None reads ``sys.argv``)."""
    return VDFCLI(**cli_options(), args=args)


#: Subcommands that are not Lightning's: ``vdf bench`` (speed and memory) and ``vdf experiment``.
TOOLS = {"bench": "vdf.bench", "experiment": "vdf.experiment"}


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
    its path and the reason; the others are still written). ``vdf bench`` and ``vdf experiment``
    dispatch to `vdf.bench` and `vdf.experiment`.
    """
    if len(sys.argv) > 1 and sys.argv[1] in TOOLS:
        run(sys.argv[1:])
        return
    cli = main()
    writer = next((c for c in cli.trainer.callbacks if isinstance(c, DepthPredictionWriter)), None)
    if cli.subcommand == "predict" and writer is not None and writer.failed:
        sys.exit(1)
