"""The argument parser behind ``vdf``: exact option names and short errors that lead with the cause.

jsonargparse reports a bad key inside the type check of the ``model`` Union (every member's
failure, the ``NoneType`` branch included) after about eighty lines of usage; argparse takes any
unambiguous prefix of an option (``--trainer.max_step`` as ``max_steps``). `VDFArgumentParser`
refuses abbreviations and prints one line: the key at fault, the problem, and the closest
accepted name.
"""

from __future__ import annotations

import difflib
import re
import sys
from typing import NoReturn

from jsonargparse._common import debug_mode_active
from lightning.pytorch.cli import LightningArgumentParser

_PARSER_KEY = re.compile(r'Parser key "([^"]+)"')
_CLASS_PATH = re.compile(r"Problem with given class_path '([^']+)'")
_NOT_ACCEPTED = re.compile(r"Option '([^']+)' is not accepted")
_UNRECOGNIZED = re.compile(r"unrecognized arguments: (.*)")
#: jsonargparse's lines about the Union it tried, not about the user's input.
_NOISE = (
    "Does not validate against any of the Union subtypes",
    "Subtypes:",
    "Errors:",
    "- Expected a <class 'NoneType'>",
)


def _suggest(word: str, candidates) -> str:
    close = difflib.get_close_matches(word, sorted(set(candidates)), n=1, cutoff=0.6)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _class_parameters(class_path: str) -> list[str]:
    import importlib

    from vdf.cli import _init_parameters

    module, _, name = class_path.rpartition(".")
    try:
        return list(_init_parameters(getattr(importlib.import_module(module), name)))
    except (ImportError, AttributeError, ValueError):
        return []


def brief_error(message: str, options: list[str]) -> str:
    """The cause of a parser error in one line (with a "did you mean" where a name is close).

    ``options`` are the parser's option strings, for unrecognised command-line options.
    """
    unrecognized = _UNRECOGNIZED.search(message)
    if unrecognized:
        first = unrecognized.group(1).split()[0]
        name = first.split("=")[0]
        return f"unknown option {name}{_suggest(name, options)}"
    lines = message.splitlines()
    for i, line in enumerate(lines):
        bad = _NOT_ACCEPTED.search(line)
        if not bad:
            continue
        # The nesting above the line names the key: "Parser key" lines and the class each level builds.
        keys, class_path = [], None
        for above in lines[:i]:
            if m := _PARSER_KEY.search(above):
                keys.append(m.group(1))
            if m := _CLASS_PATH.search(above):
                class_path = m.group(1)
                keys.append("init_args")
        option = bad.group(1)
        where = ".".join([*keys, option])
        owner = f"{class_path.rpartition('.')[2]} has no argument '{option}'" if class_path else "not accepted"
        suggestion = _suggest(option, _class_parameters(class_path)) if class_path else ""
        return f"{where}: {owner}{suggestion}"
    # Any other failure: the innermost line that is about the input, with the key path above it.
    keys = [m.group(1) for line in lines if (m := _PARSER_KEY.search(line))]
    useful = [
        line.strip(" -")
        for line in lines
        if line.strip()
        and not any(n in line for n in _NOISE)
        and not line.strip().startswith(("Given value", "Subtypes"))
        and not _PARSER_KEY.search(line)
        and not _CLASS_PATH.search(line)
    ]
    if len(lines) == 1:
        return _PARSER_KEY.sub(lambda m: m.group(1), message.strip(), count=1)
    cause = useful[-1] if useful else lines[0]
    return f"{'.'.join(keys)}: {cause}" if keys else cause


class VDFArgumentParser(LightningArgumentParser):
    """`LightningArgumentParser` without option abbreviations, whose errors are one line."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str, ex: Exception | None = None) -> NoReturn:
        if not self.exit_on_error or debug_mode_active():
            super().error(message, ex)
        parser = getattr(ex, "subcommand_parser", None) or self
        # A subcommand parser's prog is the main usage line followed by the subcommand's name.
        last = parser.prog.rsplit(" ", 1)[-1]
        prog = f"vdf {last}" if last in ("fit", "validate", "test", "predict") else "vdf"
        options = [o for action in parser._actions for o in action.option_strings]
        sys.stderr.write(f"{prog}: error: {brief_error(message, options)}\n")
        sys.stderr.write(f"(the accepted options: {prog} --help; full parser messages: JSONARGPARSE_DEBUG=1)\n")
        self.exit(2)


__all__ = ["VDFArgumentParser", "brief_error"]
