"""`python -m compressor export`: a compressed model written as compressed-tensors, GGUF or plain transformers.

    python -m compressor export --run RUN_ID --format gguf --out DIR        # a run in the data folder's run store
    python -m compressor run --model demo --recipe w4-g128 --export gguf --out DIR   # right after a run

Everything the format, the folder, the recipe or the model's config already decides is checked before any
work (exit 2): an unknown format, a folder that is not new or empty or not writable, a KV-cache stage,
2-/3-bit weights in GGUF, a model GGUF's writer does not know (compressor/export/plan.py). The export is
written from the model as the lab saved it (`compressor.engine.serialize`), read back with `load_model`;
each format's own decoder measures what it wrote (compressor/export/__init__.py), and the summary printed
says what is lossless and what is not.
"""

from __future__ import annotations

import contextlib
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

from compressor.errors import LabError
from compressor.export.common import MISMATCH

FORMAT_HELP = "compressed-tensors (alias ct), gguf, or hf (plain transformers; alias transformers)"
# on the command line, the Python options a refusal names are these flags
CLI_OPTIONS = (("drop_kv_cache=True", "--drop-kv-cache"), ("mismatch='dense'", "--mismatch dense"),
               ("mismatch='requantize'", "--mismatch requantize"))


def add_parser(sub) -> None:
    e = sub.add_parser("export", help="write a stored run's compressed model as compressed-tensors, GGUF or transformers")
    e.add_argument("--run", required=True, dest="run_id", help="the run's id (the app's History tab shows it)")
    e.add_argument("--format", required=True, help=FORMAT_HELP)
    e.add_argument("--out", required=True, type=Path, help="folder to write: new or empty")
    e.add_argument("--data-dir", type=Path, help="the data folder holding the run store (default: the lab's)")
    e.add_argument("--mismatch", choices=MISMATCH, default="requantize",
                   help="a weight the format cannot transcribe exactly: re-quantize it onto the format's grid "
                        "(measured), write it dense (floats), or refuse")
    e.add_argument("--drop-kv-cache", action="store_true",
                   help="export the weights of a recipe with a KV-cache stage, without that stage")
    e.add_argument("--verify", action="store_true", help="also load the export with transformers and measure "
                   "its logits against the lab's model")
    e.set_defaults(func=cmd_export)


def add_run_flags(parser) -> None:
    """`run`'s --export/--out: the same export, from the run's compressed model."""
    parser.add_argument("--export", metavar="FORMAT", help=f"also write the compressed model as {FORMAT_HELP} "
                        "into --out (format, folder and recipe checked before the run starts)")
    parser.add_argument("--out", type=Path, help="folder for --export: new or empty")


def check_run_export(args, request) -> str | None:
    """The format `run --export` writes (None without --export), checked with the folder, the recipe and the
    model's config before the run starts; LabError (exit 2) naming the fix otherwise."""
    from compressor.export.plan import check_export

    if args.out is not None and not args.export:
        raise LabError("--out is the folder for --export: add --export FORMAT (" + FORMAT_HELP + ")")
    if not args.export:
        return None
    if args.out is None:
        raise LabError(f"--export {args.export} needs --out DIR: a new or empty folder to write it into")
    _check_saveable(request.recipe)
    config = None
    if args.export.lower() == "gguf":  # GGUF's writer knows Llama only: read the config (no weights) to say so now
        from compressor.models.loading import resolve

        config = resolve(request.model, allow_pickle=request.allow_pickle,
                         trust_remote_code=request.trust_remote_code).config
    return _cli(check_export, args.export, args.out, request.recipe, config, flags=False)


def _check_saveable(recipe) -> None:
    # bitsandbytes layers have no saved form in the lab (compressor/engine/serialize.py), and the export reads
    # the saved model: say so before the run rather than after it
    from compressor.engine.methods.bnb import Bnb4bitConfig, LLMInt8Config

    bnb = [s.method for s in recipe.stages if isinstance(s, (Bnb4bitConfig, LLMInt8Config))]
    if bnb:
        raise LabError(f"--export cannot write a {bnb[0]} run: bitsandbytes layers are not saved by the lab, and the "
                       "export reads the saved model. Export from Python instead: model, _ = compressor.compress(model, "
                       "recipe); compressor.export.export_model(model, tokenizer, FORMAT, DIR)")


def _cli(fn, *a, flags: bool = True, **kw):
    """`fn(*a, **kw)`, with the Python option names in a refusal replaced by `export`'s flags (`flags`), or said
    to be export_model's options (`run --export` has none of them)."""
    from compressor.export.result import ExportRefused

    try:
        return fn(*a, **kw)
    except ExportRefused as e:
        message = str(e)
        for python, flag in CLI_OPTIONS:
            message = message.replace(f"pass {python}", f"pass {flag}" if flags else
                                      f"export from Python with compressor.export.export_model(..., {python})")
        raise LabError(message) from None


def export_saved(folder: str | Path, fmt: str, out: Path, report=None, *, mismatch: str = "requantize",
                 drop_kv_cache: bool = False, verify: bool = False, flags: bool = True) -> int:
    """Loads the lab-saved model in `folder` and exports it; prints what was written. Returns the exit status."""
    from compressor.export import export_model
    from compressor.models.loading import load_model

    folder = Path(folder).resolve()
    model, tokenizer = load_model(str(folder), roots=[folder], log=lambda m: None)
    result = _cli(export_model, model, tokenizer, fmt, out, report=report, mismatch=mismatch,
                  drop_kv_cache=drop_kv_cache, verify=verify, flags=flags)
    print(result.summary())
    for note in result.model_notes:
        print(f"  note: {note}")
    print(f"{result.fmt} export written to {out} ({result.bytes_written / 2**20:.1f} MiB: {', '.join(result.files)})")
    return 0


@contextlib.contextmanager
def model_folder(fmt: str | None) -> Iterator[str | None]:
    """For `run --export`: a temporary folder the run saves its compressed model into (None without --export),
    removed on leaving, however the run ends."""
    if fmt is None:
        yield None
        return
    with tempfile.TemporaryDirectory(prefix="lab-export-") as folder:
        yield folder


def export_after_run(folder: str, fmt: str, out: Path, report) -> int:
    """`run --export`'s export: the exit status, with a refusal printed (not raised) so the run's report is
    still written by --json."""
    from compressor.engine.serialize import is_compressed_folder

    if not is_compressed_folder(folder):  # the runner logs why it saved nothing
        print("error: the run saved no compressed model, so nothing was exported (see the log above)", file=sys.stderr)
        return 1
    try:
        return export_saved(folder, fmt, out, report=report.compression, flags=False)
    except LabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2


def stored_model(run_id: str, data_dir: Path | None = None):
    """(folder of the run's saved compressed model, its RunRecord); LabError saying how to get one otherwise."""
    from compressor.engine.serialize import is_compressed_folder
    from compressor.paths import default_data_dir
    from compressor.runs.store import DB_NAME, SUCCEEDED, RunStore

    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    if not (data_dir / DB_NAME).is_file():  # RunStore would create an empty one
        raise LabError(f"no run store in {data_dir}: give the app's data folder with --data-dir (or LAB_DATA_DIR)")
    store = RunStore(data_dir)
    try:
        run = store.get_run(run_id.strip())
        if run is None:
            kept = [r.id for r in store.list_runs(status=SUCCEEDED, limit=50, include_report=False)
                    if r.artifact_path and is_compressed_folder(r.artifact_path)]
            raise LabError(f"no run {run_id!r} in {data_dir}: runs with a saved model there: "
                           f"{', '.join(kept[:10]) or 'none'}")
    finally:
        store.close()
    if run.status != SUCCEEDED:
        raise LabError(f"run {run.id} is {run.status}: only a succeeded run has a compressed model to export")
    if not run.artifact_path or not is_compressed_folder(run.artifact_path):
        recipe = run.recipe if isinstance(run.recipe, str) and "\n" not in run.recipe else "RECIPE"
        raise LabError(f"run {run.id} kept no compressed model (the app keeps the last few within a size cap, and "
                       "never a bitsandbytes one): compress it again and export in one go with python -m compressor "
                       f"run --model {run.model_spec or 'MODEL'} --recipe {recipe} --export FORMAT --out DIR")
    return Path(run.artifact_path), run


def cmd_export(args) -> int:
    from compressor.export.plan import check_export

    fmt = check_export(args.format, args.out, mismatch=args.mismatch)  # before anything loads
    folder, run = stored_model(args.run_id, args.data_dir)
    _cli(check_export, fmt, args.out, run.recipe, drop_kv_cache=args.drop_kv_cache, mismatch=args.mismatch)
    report = run.load_report()
    print(f"run {run.id}: {run.model_spec}, recipe {run.recipe if isinstance(run.recipe, str) else 'custom'}",
          file=sys.stderr)
    return export_saved(folder, fmt, args.out, report=report.compression if report else None,
                        mismatch=args.mismatch, drop_kv_cache=args.drop_kv_cache, verify=args.verify)
