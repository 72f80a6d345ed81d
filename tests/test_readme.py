"""README.md runs as written: its Python examples, its commands and the command line agree.

Python examples
    Every ```python block runs, in README order, in **one namespace for the whole file**: the
    README reads top to bottom, and later sections use ``ccd`` and ``coadd`` from "Using it".
    The current directory is a temporary directory holding the files the examples name:
    ``patch.fits`` (the corpus file ``synthetic_3x3.fits``, 3x3 cells of 150 px with a missing
    cell), ``patch.zarr`` (the same coadd as Zarr) and ``tract/`` (the corpus ``demo_tract/``,
    3x3 patches of 4x4 inner cells).  S3 examples find their endpoint and credentials in the
    standard variables ``AWS_ENDPOINT_URL_S3``, ``AWS_ACCESS_KEY_ID`` and
    ``AWS_SECRET_ACCESS_KEY`` (s3fs leaves them to botocore); the test points them at the session
    SeaweedFS server, creates every bucket an ``s3://`` URL of the examples names and uploads there
    the local files whose names those URLs end with.  Cluster examples start their own
    ``LocalCluster``, whose worker processes inherit those variables.

Commands
    Every ``$ cellcoadd-dask ...`` line of a ```console block (``cellcoadd-dask ...`` line of a
    ```shell, ```sh or ```bash block) and every inline ``cellcoadd-dask ...`` code span names an
    existing subcommand, and every option it uses is listed by ``cellcoadd-dask SUBCOMMAND --help``
    (run through ``cellcoadd_dask.cli:main``, the console script, inside click's ``CliRunner``
    isolation).  Commands without placeholders (such as ``URL`` or ``[--box ...]``) must parse,
    and those of info, stats, cutout, plot and convert run for real in a fresh copy of the
    directory above, exiting with status 0 and writing the file they name.  Options mentioned
    on their own in inline code (```--json```) must belong to some subcommand.

A failure names the README line of the failing block or command.
"""

from __future__ import annotations

import dataclasses
import functools
import re
import shlex
import shutil
import sys
import traceback
import warnings
from collections.abc import Iterator
from importlib.metadata import entry_points
from pathlib import Path
from types import TracebackType
from typing import Any

import pytest
from click.testing import CliRunner
from paths import REPO
from servers import S3Server

from cellcoadd_dask.cli import main

README = REPO / "README.md"
SAFE_COMMANDS = frozenset({"info", "stats", "cutout", "plot", "convert"})
"""Subcommands run for real; the others are only checked against their ``--help``."""
SHELL_LANGUAGES = frozenset({"console", "shell", "sh", "bash"})
S3_VARIABLES = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL_S3")
# Variables that would let a developer's own AWS set-up leak into the examples.
AWS_NOISE = ("AWS_PROFILE", "AWS_DEFAULT_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION")

_FENCE = re.compile(r"^(`{3,}|~{3,})\s*([\w+-]*)")
_INLINE = re.compile(r"(?<!`)`([^`]+)`(?!`)")
_S3_URL = re.compile(r"s3://([a-z0-9][a-z0-9.-]+[a-z0-9])/([^\s\"')]+)")
_HELP_OPTION = re.compile(r"(?<![\w-])(--?[A-Za-z][\w-]*)")
_PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*$|\.\.\.|[\[\]]")


# --------------------------------------------------------------------------- reading the README


@dataclasses.dataclass(frozen=True)
class Block:
    """A fenced code block: its language, section and the README line of its first code line."""

    language: str
    section: str
    line: int
    text: str


@dataclasses.dataclass(frozen=True)
class Command:
    """A ``cellcoadd-dask`` command line found in the README."""

    line: int
    where: str
    argv: tuple[str, ...]

    @property
    def subcommand(self) -> str:
        return self.argv[0] if self.argv else ""

    @property
    def concrete(self) -> bool:
        """No placeholder (``URL``, ``N``, ``[--box ...]``): the command can run as written."""
        return not any(_PLACEHOLDER.search(token) for token in self.argv)

    @property
    def options(self) -> list[str]:
        return [option_name(token) for token in self.argv if is_option(token)]

    def __str__(self) -> str:
        return f"README.md line {self.line} ({self.where}): cellcoadd-dask {shlex.join(self.argv)}"


def is_option(token: str) -> bool:
    return re.match(r"^\[?--?[A-Za-z]", token) is not None


def option_name(token: str) -> str:
    return token.strip("[]").split("=", 1)[0]


def readme_blocks(text: str) -> list[Block]:
    """The fenced code blocks of ``text``, in order."""
    blocks: list[Block] = []
    section = "(top)"
    fence: str | None = None
    language, start = "", 0
    body: list[str] = []
    for number, line in enumerate(text.splitlines(), start=1):
        if fence is None:
            opening = _FENCE.match(line)
            if opening:
                fence, language, start, body = opening.group(1), opening.group(2).lower(), number + 1, []
            elif line.startswith("#"):
                section = line.lstrip("#").strip()
        elif line.strip().startswith(fence):
            blocks.append(Block(language, section, start, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    return blocks


def prose(text: str) -> str:
    """``text`` with the lines of fenced blocks blanked out (line numbers kept)."""
    lines = text.splitlines()
    for block in readme_blocks(text):
        for index in range(block.line - 2, block.line + block.text.count("\n")):
            lines[index] = ""
    return "\n".join(lines)


def inline_spans(text: str) -> Iterator[tuple[int, str]]:
    """``(line, content)`` of the inline code spans outside fenced blocks (spans may wrap lines)."""
    outside = prose(text)
    for match in _INLINE.finditer(outside):
        yield outside.count("\n", 0, match.start()) + 1, " ".join(match.group(1).split())


def readme_commands(text: str) -> list[Command]:
    """Every ``cellcoadd-dask`` command of the shell blocks and inline code spans."""
    commands = []
    for block in readme_blocks(text):
        if block.language not in SHELL_LANGUAGES:
            continue
        for offset, line in enumerate(block.text.splitlines()):
            shell = line.strip()
            if shell.startswith("$ "):
                shell = shell[2:].strip()
            elif block.language == "console":
                continue  # output
            argv = shlex.split(shell, comments=True)
            if argv and argv[0] == "cellcoadd-dask":
                commands.append(Command(block.line + offset, f"{block.language} block", tuple(argv[1:])))
    for line, span in inline_spans(text):
        if span.split(" ", 1)[0] == "cellcoadd-dask":
            commands.append(Command(line, "inline code", tuple(shlex.split(span)[1:])))
    return sorted(commands, key=lambda command: command.line)


README_TEXT = README.read_text()
COMMANDS = readme_commands(README_TEXT)
PYTHON_BLOCKS = [block for block in readme_blocks(README_TEXT) if block.language in ("python", "py", "pycon")]


# --------------------------------------------------------------------------- the command line


@dataclasses.dataclass(frozen=True)
class CliRun:
    status: int
    output: str


def run_cli(*argv: str) -> CliRun:
    """Run the console script's function, ``cellcoadd_dask.cli:main``, in click's test isolation."""
    with CliRunner().isolation() as (_, _, mixed):
        try:
            status = main(list(argv))
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
        output = mixed.getvalue().decode(errors="replace")
    return CliRun(status, output)


@functools.cache
def subcommands() -> frozenset[str]:
    """The subcommands listed by ``cellcoadd-dask --help``."""
    result = run_cli("--help")
    assert result.status == 0, result.output
    listing = result.output.split("Commands:", 1)[1]
    return frozenset(line.split()[0] for line in listing.splitlines() if line.strip())


@functools.cache
def help_options(subcommand: str) -> frozenset[str]:
    """The options listed by ``cellcoadd-dask SUBCOMMAND --help``."""
    result = run_cli(subcommand, "--help")
    assert result.status == 0, result.output
    options = result.output.split("Options:", 1)[1]
    return frozenset(_HELP_OPTION.findall(options))


def check_usage(command: Command) -> dict[str, Any]:
    """Parse a concrete command as click would; return its subcommand's parameters."""
    import click

    from cellcoadd_dask.cli import cli

    sub = cli.commands[command.subcommand]
    try:
        with sub.make_context(command.subcommand, list(command.argv[1:])) as ctx:
            return dict(ctx.params)
    except click.UsageError as exc:
        pytest.fail(f"{command}: {exc.format_message()}", pytrace=False)


# --------------------------------------------------------------------------- the files the examples use


@pytest.fixture(scope="module")
def examples_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A directory with the files the README names: patch.fits, patch.zarr and tract/ (read-only)."""
    from cellcoadd_dask import open_coadd
    from cellcoadd_dask.testing import corpus_path

    directory = tmp_path_factory.mktemp("readme-files")
    shutil.copyfile(corpus_path("synthetic_3x3.fits"), directory / "patch.fits")
    shutil.copytree(corpus_path("demo_tract"), directory / "tract")
    open_coadd(directory / "patch.fits").write_zarr(str(directory / "patch.zarr"))
    return directory


@pytest.fixture
def workdir(examples_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of `examples_dir`, made the current directory."""
    directory = tmp_path / "work"
    shutil.copytree(examples_dir, directory)
    monkeypatch.chdir(directory)
    return directory


@pytest.fixture
def s3_environment(s3_server: S3Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Point the standard AWS variables at the session S3 server; forget env-based clients after."""
    import s3fs

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", s3_server.key)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", s3_server.secret)
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", s3_server.endpoint_url)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "no-aws-config"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "no-aws-credentials"))
    for name in AWS_NOISE:
        monkeypatch.delenv(name, raising=False)
    try:
        yield
    finally:
        s3fs.S3FileSystem.clear_instance_cache()


def stage_s3_objects(s3_server: S3Server, sources: str, local: Path) -> None:
    """Create the buckets the examples name and upload the local files their URLs end with."""
    fs = s3_server.filesystem()
    for bucket, key in sorted(set(_S3_URL.findall(sources))):
        if not fs.exists(bucket):
            fs.mkdir(bucket)
        if (local / key).is_file():
            fs.put_file(str(local / key), f"{bucket}/{key}")


# --------------------------------------------------------------------------- tests


def readme_line_of(tb: TracebackType | None) -> int | None:
    """The README line of the innermost traceback frame in README code."""
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if frame.f_code.co_filename == str(README):
            line = lineno
    return line


def test_readme_has_examples_to_check() -> None:
    assert PYTHON_BLOCKS, "README.md has no ```python block"
    assert {command.subcommand for command in COMMANDS} >= SAFE_COMMANDS, (
        f"README.md shows no command of {sorted(SAFE_COMMANDS - {c.subcommand for c in COMMANDS})}"
    )


def test_readme_python_examples_run_as_written(
    workdir: Path, s3_server: S3Server, s3_environment: None, tmp_path: Path
) -> None:
    import dask

    sources = "".join(block.text for block in PYTHON_BLOCKS)
    for name in S3_VARIABLES:
        assert name in README_TEXT, f"README.md no longer says where S3 credentials come from ({name})"
    stage_s3_objects(s3_server, sources, workdir)
    namespace: dict[str, Any] = {"__name__": "__readme__"}
    with dask.config.set({"temporary-directory": str(tmp_path / "dask")}), warnings.catch_warnings():
        # A dashboard (with bokeh installed) falls back to a random port when 8787 is taken.
        warnings.filterwarnings("ignore", message=r"Port \d+ is already in use", category=UserWarning)
        for block in PYTHON_BLOCKS:
            # Pad so that line numbers in tracebacks are README line numbers.
            code = compile("\n" * (block.line - 1) + block.text, str(README), "exec")
            try:
                exec(code, namespace)
            except Exception as exc:
                line = readme_line_of(exc.__traceback__) or block.line
                detail = "".join(traceback.format_exception(exc))
                pytest.fail(
                    f"README.md line {line} (```python block at line {block.line}, section "
                    f"{block.section!r}) raised {type(exc).__name__}: {exc}\n\n{detail}",
                    pytrace=False,
                )


def test_readme_console_script_is_cli_main() -> None:
    (script,) = entry_points(group="console_scripts", name="cellcoadd-dask")
    assert script.value == "cellcoadd_dask.cli:main"


@pytest.mark.parametrize("command", COMMANDS, ids=lambda c: f"line{c.line}-{c.subcommand}")
def test_readme_command_matches_the_cli(command: Command, workdir: Path) -> None:
    if command.subcommand not in subcommands():
        pytest.fail(f"{command}: no subcommand {command.subcommand!r} (have {sorted(subcommands())})",
                    pytrace=False)
    unknown = [option for option in command.options if option not in help_options(command.subcommand)]
    if unknown:
        pytest.fail(f"{command}: `cellcoadd-dask {command.subcommand} --help` lists no {', '.join(unknown)}",
                    pytrace=False)
    if not command.concrete:
        return
    params = check_usage(command)
    if command.subcommand not in SAFE_COMMANDS:
        return
    result = run_cli(*command.argv)
    if result.status != 0:
        pytest.fail(f"{command}: exit status {result.status}\n{result.output}", pytrace=False)
    written = params.get("output") or (params.get("dst") if command.subcommand == "convert" else None)
    if written is not None and not (workdir / written).exists():
        pytest.fail(f"{command}: exited 0 but wrote no {written}\n{result.output}", pytrace=False)


def test_readme_options_in_prose_belong_to_a_subcommand() -> None:
    known = set().union(*(help_options(name) for name in subcommands()))
    unknown = [
        f"README.md line {line}: `{span}`"
        for line, span in inline_spans(README_TEXT)
        if is_option(span) and option_name(span.split(" ", 1)[0]) not in known
    ]
    assert not unknown, "options no subcommand takes:\n" + "\n".join(unknown)
