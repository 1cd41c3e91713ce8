"""The ``rare`` command.

    rare run   --input docs.jsonl --output out/ [--base-url URL --model NAME] [options]
    rare serve --input docs.jsonl --output out/ [--cron "0 3 * * *"] [options]
    rare estimate --input docs.jsonl [--model NAME] [options]     (sends nothing)

``run`` runs the flow in this process (against ``PREFECT_API_URL`` when set, else a temporary
local Prefect server), draws a progress bar of the LLM steps on stderr, prints the report on
stdout at the end. ``serve`` registers a scheduled deployment and executes its runs.

The config is :class:`rare_core.config.PipelineConfig`: from ``--config FILE`` (JSON or YAML),
then the options below, then ``--set dotted.key=value`` (e.g. ``--set hardneg.num_neg=5``).
Without ``--base-url`` the run uses the built-in simulator, and says so.

Before the flow starts, ``run`` and ``serve`` check what can be checked without paying for
anything (:func:`rare_core.inputs.preflight`: the input file, its format and columns, the ids,
column names the pipeline would overwrite, the BM25 engine): a problem is one line naming the
file, line, column or setting, and exit status 2. Errors are one line; ``-v`` adds tracebacks
and Prefect's logs.

Exit status: 0 the run completed; 1 the run failed (a step raised, e.g. the endpoint refused
the key, or no document made it through every step; rows failing one by one are reported,
not fatal); 2 invalid arguments, configuration or input (nothing ran).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import threading
import time
import traceback
from pathlib import Path
from typing import Any, Sequence

from pydantic import ValidationError

from rare_core.config import PipelineConfig
from rare_core.errors import RareError
from rare_core.pipeline import STEP_BY_NAME

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
SIMULATED_NOTICE = (
    "NO LLM ENDPOINT CONFIGURED: this run uses the built-in SIMULATOR.\n"
    "Every question, scenario, reasoning and answer will be SIMULATED, not written by a model.\n"
    "Pass --base-url and --model (key in $DF_API_KEY, or --api-key-env NAME) for real answers."
)


class ConfigError(ValueError):
    """The command line or the config file does not make a valid PipelineConfig."""


# -- configuration ----------------------------------------------------------------------------

def _set_dotted(data: dict[str, Any], dotted: str, value: Any) -> None:
    *parents, leaf = dotted.split(".")
    node = data
    for part in parents:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"cannot set {dotted}: {part} is not a section")
        node = child
    node[leaf] = value


def _parse_assignment(text: str) -> tuple[str, Any]:
    """``key=value``; the value is read as JSON when it parses (numbers, true, null, lists), else as text."""
    key, sep, raw = text.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects dotted.key=value, got {text!r}")
    try:
        return key.strip(), json.loads(raw)
    except json.JSONDecodeError:
        return key.strip(), raw


def _read_config_file(path: str) -> dict[str, Any]:
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    import yaml  # comes with Prefect; a JSON file is valid YAML too

    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid JSON or YAML: {exc}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path} must hold a mapping of PipelineConfig fields")
    return data


def build_config(args: argparse.Namespace) -> PipelineConfig:
    """The PipelineConfig of the command line (``ConfigError`` with every problem listed)."""
    data = _read_config_file(args.config) if args.config else {}
    options = {
        "input_path": args.input, "output_path": args.output, "cache_path": args.cache_path,
        "output_format": args.output_format, "limit": args.limit, "llm.base_url": args.base_url,
        "llm.model": args.model, "llm.api_key_env": args.api_key_env, "llm.max_workers": args.max_workers,
        "retry_failed": args.retry_failed, "llm.mode": args.mode, "shards": args.shards,
        "dask.workers": args.dask_workers, "dask.address": args.dask_address,
        "export": [f.strip() for f in args.export.split(",") if f.strip()] if args.export else None,
        "command": " ".join(["rare", *getattr(args, "argv", [])]) or None,
    }
    assignments = [(k, v) for k, v in options.items() if v is not None]
    assignments += [_parse_assignment(a) for a in args.set or []]
    for key, value in assignments:
        _set_dotted(data, key, value)
    try:
        return PipelineConfig.model_validate(data)
    except ValidationError as exc:
        problems = [_problem(e) for e in exc.errors()]
        if len(problems) == 1:
            raise ConfigError(problems[0]) from None
        raise ConfigError("invalid configuration:\n" + "\n".join(f"  {p}" for p in problems)) from None


_OPTION_OF = {"input_path": "--input"}


def _problem(error: dict) -> str:
    """One pydantic error as a line: a missing required option by its flag, an unknown key with
    the setting it most likely means."""
    loc = tuple(str(part) for part in error["loc"])
    dotted = ".".join(loc) or "(config)"
    if error["type"] == "missing" and loc and loc[0] in _OPTION_OF and len(loc) == 1:
        return f"{_OPTION_OF[loc[0]]} is required ({loc[0]} in a --config file)"
    if error["type"] == "extra_forbidden":
        guess = _closest_setting(loc)
        return f"{dotted}: unknown setting" + (f"; did you mean {guess}?" if guess else "")
    return f"{dotted}: {error['msg']}"


def _settings_of(model: type, prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every dotted path of ``model``'s fields, nested sections included."""
    from pydantic import BaseModel

    out = []
    for name, field in model.model_fields.items():
        out.append((*prefix, name))
        kind = field.annotation
        if isinstance(kind, type) and issubclass(kind, BaseModel):
            out.extend(_settings_of(kind, (*prefix, name)))
    return out


def _closest_setting(loc: tuple[str, ...]) -> str | None:
    """The setting an unknown key most likely means: a close name in the same section, else the
    same (or a close) name in any section (``num_neg`` -> ``hardneg.num_neg``)."""
    import difflib

    settings = _settings_of(PipelineConfig)
    section, leaf = loc[:-1], loc[-1]
    siblings = [path[-1] for path in settings if path[:-1] == section]
    near = difflib.get_close_matches(leaf, siblings, n=1, cutoff=0.6)
    if near:
        return ".".join((*section, near[0]))
    anywhere = {path[-1]: path for path in settings if len(path) > 1}
    near = difflib.get_close_matches(leaf, list(anywhere), n=1, cutoff=0.75)
    return ".".join(anywhere[near[0]]) if near else None


# -- rare run ---------------------------------------------------------------------------------

class _ProgressBars:
    """A progress listener (tasks.progress) drawing one bar per LLM step on stderr; in a sharded
    run, the step's label names the shard being answered ("Doc2Query 3/10") and, as shards
    finish, how many are done ("Doc2Query 4/10 shards", rows of the finished shards)."""

    def __init__(self, console) -> None:
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self.progress = Progress(TextColumn("{task.description:<14}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), TextColumn("{task.fields[endpoint]}"), console=console)
        self._bars: dict[str, Any] = {}

    def __call__(self, step: str, done: int, total: int, live: dict[str, Any]) -> None:
        label = STEP_BY_NAME[step].label if step in STEP_BY_NAME else step
        if step not in self._bars:
            self._bars[step] = self.progress.add_task(label, total=total, endpoint="")
        fields: dict[str, Any] = {}
        if "in_flight" in live:
            fields["endpoint"] = f"{live['in_flight']:>3} in flight / limit {live['limit']}  429s {live['refused_429']}"
        if "shards" in live:
            fields.update(description=f"{label} {live['shards_done']}/{live['shards']} shards", endpoint="")
        elif "shard" in live:
            fields["description"] = f"{label} {live['shard']}"
        self.progress.update(self._bars[step], completed=done, total=total, **fields)


def _notice(console, text: str, style: str) -> None:
    from rich.panel import Panel

    console.print(Panel(text, style=style))


def _one_line(exc: BaseException) -> str:
    """An error as one line: our own errors by their message, others with their type."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, (RareError, OSError, ValueError)) else f"{type(exc).__name__}: {text}"


def quiet_prefect(verbose: bool) -> None:
    """Before Prefect is first imported (it reads its logging settings then): Prefect's console
    logs (task failures with two tracebacks, a line per log or event it could not send) would
    bury the one line this command prints and tear the progress bar; the Prefect API still gets
    them all, and ``-v`` shows them. The local API started for a run must not phone home
    (offline machines would log an error on every run)."""
    if not verbose:
        os.environ.setdefault("PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL", "CRITICAL")
        os.environ.setdefault("PREFECT_LOGGING_INTERNAL_LEVEL", "CRITICAL")  # its services' "failed to process item"
        # Prefect's log shipper writes "--- Error logging to API ---" to stderr for every batch
        # it cannot send, unless the standard library's logging is told not to report its errors.
        logging.raiseExceptions = False
    # Prefect's client retries a call to an API that went away for about a minute (2+4+8+16+32 s),
    # and a run's end makes several: three retries (2+4+8 s) outlast a server restart.
    os.environ.setdefault("PREFECT_CLIENT_MAX_RETRIES", "3")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


class _Lines(logging.Handler):
    """Our own warnings (the ``rare`` loggers) as ``rare: ...`` lines on the run's console."""

    def __init__(self, console) -> None:
        super().__init__(logging.WARNING)
        self.console = console

    def emit(self, record: logging.LogRecord) -> None:
        from rich.markup import escape

        self.console.print(f"rare: {escape(record.getMessage())}", soft_wrap=True, highlight=False)


def run(config: PipelineConfig, verbose: bool = False) -> int:
    """Run the flow on ``config`` in this process; prints the report; returns the exit status."""
    quiet_prefect(verbose)
    from rich.console import Console
    from rich.markup import escape

    from deployments.local_server import run_api
    from flows.runners import run_pipeline
    from tasks.io import REPORT_FILE
    from tasks.progress import dropped_reports, progress_listener

    err = Console(stderr=True)
    from rare_core.config import LLMRoles

    simulated = any(not config.llm_for(role).base_url for role in LLMRoles.model_fields)
    if simulated:
        _notice(err, SIMULATED_NOTICE, "bold yellow")
    if config.limit is not None and not config.hardneg.corpus_path:
        from rare_core.inputs import count_documents

        total = count_documents(config.model_copy(update={"limit": None}))
        if total > config.limit:
            err.print(f"--limit {config.limit}: {config.limit:,} of the {total:,} documents are asked; the hard "
                      f"negatives are mined from all {total:,} (their index is built once and cached)",
                      soft_wrap=True, highlight=False)
    started = time.time()
    # The publisher counts the reports it dropped over the process's life (a test session, a
    # notebook, runs many flows): this run's are those after this point.
    dropped_before, _ = dropped_reports()
    bars = _ProgressBars(err)
    lines = _Lines(err)
    logging.getLogger("rare").addHandler(lines)
    state, lost = None, None
    try:
        with run_api() as api_url, bars.progress, progress_listener(bars):
            state = run_pipeline(config, return_state=True)
    except KeyboardInterrupt:
        return interrupted(config, started)
    except Exception as exc:  # noqa: BLE001 - Prefect raises, not returns, when it cannot record the run's state
        if not _prefect_unreachable(exc):
            raise
        lost = exc
    finally:
        logging.getLogger("rare").removeHandler(lines)
    report_file = Path(config.output_path).resolve() / REPORT_FILE
    exc = lost if state is None else None if state.is_completed() else state.result(raise_on_failure=False)
    dropped, why = dropped_reports()
    dropped -= dropped_before
    if dropped or _prefect_unreachable(exc):
        _API_LOST.set()
        written = report_file.is_file() and report_file.stat().st_mtime >= started
        why = _one_line(exc) if _prefect_unreachable(exc) else why
        if written and exc is not None:
            err.print(f"rare: the Prefect API at {escape(api_url)} stopped answering ({escape(why or '')}): Prefect "
                      f"could not record the run's end, but its files are complete ({report_file.parent})",
                      soft_wrap=True, highlight=False)
            return EXIT_FAILED
        if exc is not None:
            err.print(f"rare: the Prefect API at {escape(api_url)} stopped answering ({escape(why or '')}): the run "
                      "stopped; answers already paid for are cached: run the same command again once it answers",
                      soft_wrap=True, highlight=False)
            return EXIT_FAILED
        err.print(f"rare: the Prefect API at {escape(api_url)} did not take {dropped} report(s) of this run "
                  f"({escape(why or '')}): its record there is incomplete; the files here are complete",
                  soft_wrap=True, highlight=False)
    if state.is_completed():
        result = state.result()
        print(result.report.markdown if verbose or not result.report.brief else result.report.brief)
        err.print(_where_things_are(config, result, report_file), soft_wrap=True, highlight=False)
        if result.simulated:
            _notice(err, "The answers of this run are SIMULATED (built-in simulator), not model output.", "bold yellow")
        return EXIT_OK
    if report_file.is_file() and report_file.stat().st_mtime >= started:  # written by this run
        print(report_file.read_text(encoding="utf-8"))
    if verbose and isinstance(exc, BaseException):
        traceback.print_exception(exc)
    reason = _one_line(exc) if isinstance(exc, BaseException) else (state.message or state.name)
    err.print(f"[bold red]rare: the run failed:[/] {escape(reason)}", soft_wrap=True, highlight=False)
    return EXIT_FAILED


# Set when the Prefect API went away during a run: see console().
_API_LOST = threading.Event()


def _prefect_unreachable(exc: object) -> bool:
    """Whether a run failed because the Prefect API did not answer: Prefect's client is the
    only part of a run that speaks httpx (the LLM client's transport is aiohttp)."""
    import httpx

    return isinstance(exc, httpx.TransportError)


def _where_things_are(config: PipelineConfig, result, report_file: Path) -> str:
    """The end of a run on stderr: the files it wrote, and what to do next."""
    out = Path(config.output_path).resolve()
    lines = [f"Dataset: {result.exported.dataset.path} ({result.exported.dataset.rows:,} rows)"]
    if result.exported.failed is not None:
        lines.append(f"Failed rows: {result.exported.failed.path} ({result.exported.failed.rows:,}, with reasons)")
    lines.append(f"Report: {report_file.with_suffix('.html')} (charts; also {report_file.name})")
    exports = Path(config.export_path or out / "exports").resolve()
    for name in config.export:
        lines.append(f"Export {name}: {exports / name}")
    if result.simulated:
        lines.append("Next: a real endpoint (--base-url URL --model NAME, key in $DF_API_KEY); "
                     "`rare estimate` prices it first")
    elif not config.export:
        lines.append(f"Next: `rare export {config.output_path} --format messages --to exports/` for your trainer")
    return "\n".join(lines)


def interrupted(config: PipelineConfig | None, started: float) -> int:
    """The one line of a run stopped by Ctrl-C or SIGTERM -> its exit status (130)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C while we print must not add a traceback
    answers = ""
    if config is not None:
        from rare_core.llm.cache import answers_since
        from rare_core.artifacts.layout import resolve_paths

        path = resolve_paths(config).llm.cache_path
        if path:
            answers = f"{answers_since(path, started):,} answers of this run are cached; "
    print(f"rare: interrupted: {answers}run the same command again to resume", file=sys.stderr)
    return EXIT_INTERRUPTED


# -- rare export ------------------------------------------------------------------------------

def export_run(out_dir: str, formats: str, to: str) -> int:
    """``rare export OUT_DIR --format F --to DIR``: a finished run's dataset in training formats."""
    from rare_core.exports import export, file_chunks
    from rare_core.report import RunSummary
    from tasks.io import DATASET_STEM, RUN_CONFIG_FILE, SUMMARY_FILE, provenance_of

    folder = Path(out_dir)
    try:
        config = PipelineConfig.model_validate_json((folder / RUN_CONFIG_FILE).read_text(encoding="utf-8"))
        summary = RunSummary.model_validate_json((folder / SUMMARY_FILE).read_text(encoding="utf-8"))
        dataset = file_chunks(folder / f"{DATASET_STEM}.{config.output_format}")
        names = [f.strip() for f in formats.split(",") if f.strip()]
        written = export(dataset, config, names, Path(to), provenance_of(summary, config, config.command))
    except FileNotFoundError as exc:
        print(f"rare: {out_dir} is not the output folder of a finished run ({Path(exc.filename).name} is missing)",
              file=sys.stderr)
        return EXIT_USAGE
    except (RareError, ValueError, OSError) as exc:
        print(f"rare: {_one_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    for name, path in written.items():
        print(f"{name}: {path}")
    return EXIT_OK


# -- command line -----------------------------------------------------------------------------

def _add_config_options(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("configuration (PipelineConfig)")
    group.add_argument("--config", metavar="FILE", help="JSON or YAML file with PipelineConfig fields")
    group.add_argument("--input", metavar="PATH", help="documents file (.json, .jsonl, .csv, .parquet)")
    group.add_argument("--output", metavar="DIR", help="folder of the dataset and the report (default ./out)")
    group.add_argument("--cache-path", metavar="DIR", help="folder of the step files and caches (default ./cache)")
    group.add_argument("--output-format", choices=["json", "jsonl", "csv", "parquet"], help="dataset format")
    group.add_argument("--limit", type=int, metavar="N", help="use only the first N documents")
    group.add_argument("--base-url", metavar="URL", help="OpenAI-compatible endpoint; omit to use the simulator")
    group.add_argument("--model", metavar="NAME", help="model name (required with --base-url)")
    group.add_argument("--api-key-env", metavar="VAR", help="NAME of the environment variable holding the key")
    group.add_argument("--max-workers", type=int, metavar="N", help="LLM requests in flight at once")
    group.add_argument("--export", metavar="F[,F...]", help="training formats to write at the end of the run "
                       "(messages, sharegpt, alpaca, prompt-completion, retrieval, rare, hf, dpo, kto)")
    group.add_argument("--batch", action="store_const", const="batch", dest="mode",
                       help="send the LLM requests through the Batch API (half the price; llm.mode=batch)")
    group.add_argument("--retry-failed", action="store_true", default=None,
                       help="ask again the rows an earlier run failed for their content (unusable answers)")
    group.add_argument("--shards", type=_shards, metavar="N|auto",
                       help="split the documents into N shards, each cached and resumed on its own (default auto: "
                            "one per 10,000 documents, at least 2 per Dask worker)")
    group.add_argument("--dask-workers", type=int, metavar="W",
                       help="run the shards on a local Dask cluster of W worker processes")
    group.add_argument("--dask-address", metavar="tcp://HOST:PORT", help="run the shards on an existing Dask cluster")
    group.add_argument("--set", action="append", metavar="KEY=VALUE",
                       help="any config field by dotted path, e.g. hardneg.num_neg=5 (repeatable)")


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rare-pipeline")
    except PackageNotFoundError:
        return "(not installed)"


def _shards(text: str) -> int | str:
    if text == "auto":
        return text
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of shards or 'auto', got {text!r}") from None


def check_prefect_api(serving: bool) -> None:
    """The configured Prefect API answers (``APIUnreachableError`` naming it); ``rare serve``
    also needs one to be configured (``ConfigError`` saying how)."""
    from prefect.settings import PREFECT_API_URL

    from deployments.local_server import check_api

    configured = PREFECT_API_URL.value()
    if configured:
        check_api(configured)
    elif serving:
        raise ConfigError("rare serve needs a Prefect server that outlives it: start one (`prefect server start`, "
                          "http://127.0.0.1:4200) and set PREFECT_API_URL=http://127.0.0.1:4200/api")


def repair_cache(path: str) -> int:
    """``rare repair-cache PATH``: check a response cache; a damaged one is moved aside and every
    answer that can still be read is kept in a fresh file at PATH."""
    from rare_core.llm.cache import check, salvage

    if not Path(path).is_file():
        print(f"rare: {path} is not a file", file=sys.stderr)
        return EXIT_USAGE
    problem = check(path)
    if problem is None:
        print(f"{path}: sound, nothing to repair")
        return EXIT_OK
    result = salvage(path)
    print(f"{path}: damaged ({problem}); moved to {result.moved_to}; {result.kept:,} answers kept in a fresh "
          f"{path}" + ("; some could not be read" if result.unreadable else ""))
    return EXIT_OK


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"expected a share between 0 (excluded) and 1, got {text!r}")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rare", description="RARE training-data pipeline (Prefect).")
    parser.add_argument("--version", action="version", version=f"rare {_version()}")
    commands = parser.add_subparsers(dest="command", required=True)
    run_parser = commands.add_parser("run", help="run the pipeline once, here, with a progress bar")
    _add_config_options(run_parser)
    run_parser.add_argument("-v", "--verbose", action="store_true", help="show Prefect's run logs and tracebacks on stderr")
    export_parser = commands.add_parser("export", help="write a finished run's dataset in training formats")
    export_parser.add_argument("out_dir", metavar="OUT_DIR", help="the run's output folder (dataset, run_config.json)")
    export_parser.add_argument("--format", required=True, metavar="F[,F...]",
                               help="messages, sharegpt, alpaca, prompt-completion, retrieval, rare, hf, dpo, kto")
    export_parser.add_argument("--to", required=True, metavar="DIR", help="folder of the exports (one subfolder each)")
    estimate_parser = commands.add_parser("estimate", help="requests, tokens and cost of a run, sending nothing")
    _add_config_options(estimate_parser)
    estimate_parser.add_argument("--acceptance-rate", type=_rate, metavar="P",
                                 help="share of checked answers expected to pass verification (default 0.5); a trial "
                                      "run's report gives it as verify_accepted / samples_drawn")
    estimate_parser.add_argument("-v", "--verbose", action="store_true", help="tracebacks on stderr")
    repair_parser = commands.add_parser("repair-cache", help="check a response cache; move a damaged one aside, "
                                        "keeping every answer that can still be read")
    repair_parser.add_argument("path", metavar="PATH", help="the response cache (default place: "
                               "CACHE_PATH/llm_responses.sqlite)")
    serve_parser = commands.add_parser("serve", help="serve the flow as a scheduled deployment (Ctrl-C stops)")
    _add_config_options(serve_parser)
    serve_parser.add_argument("--name", help="deployment name (default rare-served)")
    serve_parser.add_argument("--cron", help='cron schedule, UTC (default "0 3 * * *")')
    serve_parser.add_argument("--no-schedule", action="store_true", help="serve without a schedule")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``rare`` console script; returns the exit status."""
    if threading.current_thread() is threading.main_thread():
        # SIGTERM (`kill`, a scheduler or container stopping the job) ends the command as Ctrl-C
        # does: the shards in flight are cancelled and the processes this one started (Prefect's
        # server, the simulator, a Dask cluster) are stopped. By default Python would die at once
        # and leave them running, with no cleanup code run.
        signal.signal(signal.SIGTERM, signal.default_int_handler)
    started = time.time()
    parser = _parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parser.parse_args(argv)
    args.argv = argv
    config = None
    try:
        if args.command == "export":
            return export_run(args.out_dir, args.format, args.to)
        if args.command == "repair-cache":
            return repair_cache(args.path)
        verbose = getattr(args, "verbose", False)
        if args.command == "run":
            quiet_prefect(verbose)
        try:
            config = build_config(args)
            from rare_core.inputs import preflight

            preflight(config)
            if args.command in ("run", "serve"):
                check_prefect_api(serving=args.command == "serve")
        except (ConfigError, RareError, OSError) as exc:
            if verbose:
                traceback.print_exc()
            print(f"rare: {exc if isinstance(exc, ConfigError) else _one_line(exc)}", file=sys.stderr)
            return EXIT_USAGE
        return _command(args, config, verbose)
    except KeyboardInterrupt:
        return interrupted(config if args.command == "run" else None, started)


def _command(args: argparse.Namespace, config: PipelineConfig, verbose: bool) -> int:
    if args.command == "run":
        return run(config, verbose=verbose)
    if args.command == "estimate":
        from rare_core.estimate import build_estimate, render_estimate

        rate = {} if args.acceptance_rate is None else {"acceptance_rate": args.acceptance_rate}
        print(render_estimate(build_estimate(config, **rate)))
        return EXIT_OK
    from deployments.serve import ServeOptions, serve

    given = {"name": args.name, "cron": args.cron}
    options = ServeOptions(**{k: v for k, v in given.items() if v is not None})
    serve(config, options.model_copy(update={"cron": None}) if args.no_schedule else options)
    return EXIT_OK


def console() -> None:
    """The ``rare`` console script: :func:`main`, then exit with its status.

    Workaround: when the Prefect API went away during a run, Prefect's event and log shippers
    still hold what they could not send, and at interpreter exit they wait for it without a
    limit (prefect._internal.concurrency.services, ``drain(at_exit=True)``): the command would
    hang after its last line. Its files are written and closed by then, so it leaves at once."""
    code = main()
    if _API_LOST.is_set():
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    sys.exit(code)


if __name__ == "__main__":
    console()
