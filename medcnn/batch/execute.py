"""Running a batch: in-process, on local worker processes, or on a Dask cluster.

:func:`run_batch` lists the cases, runs :func:`medcnn.batch.runner.run_case` for each
(isolated: a failing case becomes an error row), shows a progress bar with ETA on stderr,
and writes the batch report (CSV tables, ``report.json``, ``report.html``).

Parallelism
-----------
* ``workers=1`` (default): in this process.
* ``workers=N``: a :class:`concurrent.futures.ProcessPoolExecutor` with the *spawn* start
  method (safe with torch and CUDA). With ``threads="auto"`` each worker uses the usable
  cores divided by N (at least one; fewer while other processes keep cores busy), so N
  workers never run more threads than there are cores; each loads the model once.
  Threads are decided per case by :class:`medcnn.inference.ThreadPolicy`. GPU: every worker process
  holds its own copy of the model; with ``device="cuda"`` (or ``auto``) and several
  visible GPUs, worker *i* gets ``cuda:(i mod n_gpus)``; on one GPU all workers share it
  (its memory must hold N models plus N sliding-window accumulators, so keep N small,
  e.g. 2-3, which overlaps reading/writing/figures of one case with inference of another).
* ``scheduler="tcp://host:8786"`` (or a ``distributed.Client``): each case is one Dask
  task. Workers must have medcnn installed and see the input and output paths (shared
  file system). With ``device`` starting with ``cuda`` every task asks for the Dask
  resource ``{"GPU": 1}``: start GPU workers with ``dask worker ADDRESS --resources GPU=1
  --nthreads 1`` so one case at a time runs per GPU.

Ctrl-C: pending cases are cancelled, running ones are interrupted; every file is written
atomically, so nothing half-written is left, and rerunning the same command resumes.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from os import PathLike
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from medcnn.batch.bundles import bundle_info
from medcnn.batch.cases import Case, discover_cases, report_skipped
from medcnn.batch.runner import MODES, BatchSettings, record_inputs, record_model, redact_record, run_case
from medcnn.errors import ConfigError

__all__ = ["run_batch", "BatchResult", "resolve_mode", "write_report"]

REPORT_SCHEMA = "medcnn-batch-report/1"


@dataclass
class BatchResult:
    """Outcome of :func:`run_batch`.

    Attributes:
        records: one record per case, in input order.
        out: output folder.
        report_files: name -> path of the written report files (empty if interrupted).
        elapsed_s: wall-clock seconds.
    """

    records: list[dict[str, Any]]
    out: Path
    report_files: dict[str, Path] = field(default_factory=dict)
    elapsed_s: float = 0.0

    @property
    def n_ok(self) -> int:
        """Cases with results (computed now or up to date)."""
        return sum(r["status"] in ("ok", "skipped") for r in self.records)

    @property
    def n_skipped(self) -> int:
        return sum(r["status"] == "skipped" for r in self.records)

    @property
    def n_failed(self) -> int:
        return sum(r["status"] == "error" for r in self.records)

    @property
    def exit_code(self) -> int:
        """0 when every case has a result, 2 when any failed."""
        return 2 if self.n_failed else 0

    @property
    def summary_line(self) -> str:
        line = f"{self.n_ok} ok, {self.n_failed} failed"
        if self.n_skipped:
            line += f" ({self.n_skipped} skipped (up to date), not recomputed)"
        return line


def resolve_mode(mode: str, task: str | None) -> str:
    """``auto`` -> the bundle's task (``cardiac`` / ``tumour``) or ``volumes``."""
    if mode not in MODES:
        raise ConfigError.expected(f"mode one of {', '.join(MODES)}", repr(mode))
    if mode != "auto":
        return mode
    return task or "volumes"


# ----------------------------------------------------------------------------- workers
_WORKER_COUNTER = None


def _init_worker(counter, device: str, workers: int = 1) -> None:
    """Process-pool initializer: this worker's share of the cores as its torch threads (the
    most a prediction's ``auto`` policy then uses, :class:`medcnn.inference.ThreadPolicy`),
    a GPU per worker on multi-GPU hosts."""
    from medcnn.batch import runner

    with counter.get_lock():
        index = counter.value
        counter.value += 1
    try:
        import torch

        from medcnn.inference.threads import usable_cores

        torch.set_num_threads(max(1, usable_cores() // max(1, int(workers))))
        with _suppress():
            torch.set_num_interop_threads(1)
        if device in ("auto", "cuda") and torch.cuda.is_available() and torch.cuda.device_count() > 1:
            runner._WORKER_DEVICE = f"cuda:{index % torch.cuda.device_count()}"
    except ImportError:  # pragma: no cover - torch is a dependency
        pass


class _suppress:
    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return exc[0] is not None and issubclass(exc[0], RuntimeError)


def _crash_record(case: Case, settings: BatchSettings, exc: BaseException) -> dict[str, Any]:
    """Record for a case whose worker died (or a scheduler failure) before returning."""
    rec = {
        "schema": "medcnn-case-result/1", "case_id": case.case_id, "status": "error", "mode": settings.mode,
        "origin": case.origin, "inputs": record_inputs(case, settings), "model": record_model(settings),
        "config_hash": settings.config_hash, "input_hash": None, "volumes": [], "lesions": [], "cardiac": None,
        "curve": None, "qc_flags": [], "outputs": {}, "timings_s": {},
        "error": {"type": type(exc).__name__,
                  "message": f"worker failed while processing the case: {type(exc).__name__}: "
                             f"{' '.join(str(exc).split())}"},
    }
    return redact_record(rec, case, settings)


def _run_inline(cases, settings, done):
    for c in cases:
        done(c, run_case(c, settings))


def _run_processes(cases, settings, done, workers: int):
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = multiprocessing.get_context("spawn")
    counter = ctx.Value("i", 0)
    pool = ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_init_worker,
                               initargs=(counter, str(settings.device), workers))
    futures = {}
    try:
        for c in cases:
            futures[pool.submit(run_case, c, settings)] = c
        pending = set(futures)
        while pending:
            finished, pending = wait(pending, return_when=FIRST_COMPLETED)
            for f in finished:
                done(futures[f], _result_or_crash(f, futures[f], settings))
    except BaseException:
        for f in futures:
            f.cancel()
        procs = list(getattr(pool, "_processes", {}).values())
        for p in procs:  # interrupt running cases: their atomic writes clean up
            if p.is_alive():
                try:
                    os.kill(p.pid, signal.SIGINT)
                except OSError:
                    pass
        pool.shutdown(wait=True, cancel_futures=True)
        raise
    pool.shutdown(wait=True)


def _result_or_crash(future, case, settings):
    """The case record of a finished future; a dead or lost worker becomes one failed case."""
    try:
        return future.result()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - isolate the case, keep the batch going
        return _crash_record(case, settings, exc)


def _run_dask(cases, settings, done, scheduler):
    try:
        from distributed import Client, as_completed
    except ImportError as exc:  # pragma: no cover - optional dependency
        raise ConfigError.expected("the dask[distributed] package for --scheduler", "it is not installed",
                                   hint="pip install 'medcnn[dask]'") from exc
    own = not isinstance(scheduler, Client)
    client = Client(scheduler) if own else scheduler
    resources = {"GPU": 1} if str(settings.device).startswith("cuda") else None
    futures = {}
    try:
        for c in cases:
            fut = client.submit(run_case, c, settings, key=f"medcnn-case-{c.case_id}-{os.urandom(4).hex()}",
                                pure=False, resources=resources)
            futures[fut] = c
        for fut in as_completed(list(futures)):
            done(futures[fut], _result_or_crash(fut, futures[fut], settings))
    except BaseException:
        client.cancel(list(futures))
        raise
    finally:
        if own:
            client.close()


# ----------------------------------------------------------------------------- report
def _methods_union(records: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Every method text of the records' provenance (first wording of each key)."""
    out: dict[str, str] = {}
    for r in records:
        for k, v in ((r.get("provenance") or {}).get("methods") or {}).items():
            out.setdefault(k, v)
    return out


def write_report(records: Sequence[Mapping[str, Any]], out: str | PathLike[str], *, settings: BatchSettings,
                 title: str | None = None, model_validation: Mapping[str, Any] | None = None,
                 model_source: Mapping[str, Any] | None = None) -> dict[str, Path]:
    """Write the CSV tables, ``report.json`` and ``report.html`` of a batch into ``out``."""
    from medcnn.measure.cardiac import CARDIAC_COLUMNS
    from medcnn.measure.lesions import LESION_COLUMNS
    from medcnn.measure.volumes import VOLUME_COLUMNS
    from medcnn.report import build_tables, write_html, write_json, write_tables
    from medcnn.report.provenance import HASH_METHOD, environment_info
    from medcnn.report.tables import COLUMN_DESCRIPTIONS

    from medcnn.report.provenance import PATHS_METHOD, display_path

    out = Path(out)
    tables = build_tables(records)
    columns: dict[str, str] = {}
    from medcnn.measure.intervals import INTERVAL_COLUMNS

    from medcnn.measure.intensity import INTENSITY_COLUMNS

    from medcnn.measure.body import BSA_COLUMNS

    for d in (VOLUME_COLUMNS, COLUMN_DESCRIPTIONS, CARDIAC_COLUMNS, BSA_COLUMNS, LESION_COLUMNS, INTERVAL_COLUMNS,
              INTENSITY_COLUMNS):
        for k, v in d.items():
            columns.setdefault(k, v)
    columns["input_hash"] = HASH_METHOD
    if not settings.include_paths:
        columns["inputs"] = f"{columns['inputs']} ({PATHS_METHOD})"
    used = {c for df in tables.values() for c in df.columns}
    model_path = display_path(settings.model, include_paths=settings.include_paths)
    sidecar = {"report": "report.json", "model": {"name": settings.model_name, "sha256": settings.model_sha256,
                                                  "spec_sha256": settings.model_spec_sha256},
               "environment": environment_info(),
               "settings": {"mode": settings.mode, "precision": settings.precision, "tta": settings.tta,
                            "backend": settings.backend,
                            **({"whole_slice": settings.whole_slice} if settings.whole_slice is not None else {}),
                            "config_hash": settings.config_hash},
               "methods": _methods_union(records),
               "inputs": [{"case_id": r["case_id"], "input_hash": r.get("input_hash"),
                           "files": [i.get("path") for i in r.get("inputs") or []]} for r in records]}
    paths = write_tables(tables, out, descriptions=columns, extra=sidecar)
    counts = {"total": len(records), "ok": sum(r["status"] in ("ok", "skipped") for r in records),
              "computed": sum(r["status"] == "ok" for r in records),
              "skipped": sum(r["status"] == "skipped" for r in records),
              "failed": sum(r["status"] == "error" for r in records)}
    report = {
        "schema": REPORT_SCHEMA,
        "title": title or f"medcnn batch report: {settings.model_name}",
        "generated_utc": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M:%S UTC"),
        "medcnn_version": environment_info()["medcnn_version"],
        "environment": environment_info(),
        "model": {"name": settings.model_name, "sha256": settings.model_sha256,
                  "spec_sha256": settings.model_spec_sha256, "path": model_path,
                  "labels": {str(k): v for k, v in settings.labels.items()},
                  **({"regions": dict(settings.regions)} if settings.regions else {}),
                  "validation": {k: v for k, v in (model_validation or {}).items() if k != "cases"},
                  **({"imported_from": dict(model_source)} if model_source else {})},
        "settings": {"mode": settings.mode, "device": settings.device, "precision": settings.precision,
                     "tta": settings.tta, "deterministic": settings.deterministic, "backend": settings.backend,
                     **({"whole_slice": settings.whole_slice} if settings.whole_slice is not None else {}),
                     "include_identifiers": settings.include_identifiers, "include_paths": settings.include_paths,
                     "config_hash": settings.config_hash},
        "counts": counts,
        "tables": {k: p.name for k, p in paths.items()},
        "columns": {k: v for k, v in columns.items() if k in used},
        "cases": list(records),
    }
    paths["json"] = write_json(report, out / "report.json")
    paths["html"] = write_html(report, out / "report.html", image_root=out)
    return paths


def _with_body_size(cases: list[Case], height_cm: Any, weight_kg: Any, *, mode: str) -> list[Case]:
    """``cases`` with the ``--height`` / ``--weight`` of the command line, checked: both or
    neither, plausible, a cardiac batch of one case, not also given by its manifest row."""
    import dataclasses

    from medcnn.measure.body import body_size

    body = body_size(height_cm, weight_kg, names=("--height", "--weight"))
    if body is None:
        return cases
    if mode != "cardiac":
        raise ConfigError.expected("--height/--weight with a cardiac model or --mode cardiac (they index cardiac "
                                   "volumes by the body surface area)", f"mode {mode}")
    if len(cases) != 1:
        raise ConfigError.expected("--height/--weight with one patient's case", f"{len(cases)} cases",
                                   hint="one patient's height and weight must not index another's volumes: give "
                                        "them per case in a manifest (columns height_cm, weight_kg)")
    case = cases[0]
    if case.height_cm is not None:
        raise ConfigError.expected("the height and weight either on the command line or in the manifest",
                                   f"both (manifest: {case.height_cm:g} cm, {case.weight_kg:g} kg)", path=case.origin)
    return [dataclasses.replace(case, height_cm=body.height_cm, weight_kg=body.weight_kg)]


# ----------------------------------------------------------------------------- batch
def _whole_slice(request: bool | None, info: Any) -> bool | None:
    """The batch's whole-slice decision for a bundle: the request, else the bundle's measured
    verdict; ``None`` for 3D models (nothing to decide). Asking it of a 3D model stops the batch."""
    from medcnn.models.bundle import network_spatial_dims, whole_slice_default

    if network_spatial_dims(info.json) != 2:
        if request:
            raise ConfigError.expected("--whole-slice only with a 2D model", f"{info.name} (3D network)")
        return None
    return bool(request) if request is not None else whole_slice_default(info.json)


def run_batch(
    scans: Sequence[str | PathLike[str] | Case],
    *,
    model: str | PathLike[str],
    out: str | PathLike[str],
    mode: str = "auto",
    workers: int = 1,
    scheduler: Any = None,
    device: str = "auto",
    precision: str = "auto",
    tta: bool | None = None,
    deterministic: bool = False,
    include_identifiers: bool = False,
    include_paths: bool = False,
    resume: bool = True,
    figures: bool = True,
    dicom: bool = False,
    dicom_fractional: bool = False,
    progress: bool = True,
    on_case: Callable[[dict[str, Any]], None] | None = None,
    title: str | None = None,
    threads: int | str = "auto",
    allow_input_mismatch: bool = False,
    backend: str = "torch",
    cache_dir: str | PathLike[str] | None = None,
    whole_slice: bool | None = None,
    height_cm: float | str | None = None,
    weight_kg: float | str | None = None,
) -> BatchResult:
    """Segment and measure many scans; write label maps and a batch report into ``out``.

    Args:
        scans: files, folders, globs, DICOM folders or CSV manifests (see
            :mod:`medcnn.batch.cases`), or ready :class:`Case` objects.
        model: default bundle name (``medcnn models list``) or bundle path.
        out: output folder (created): ``cases/<id>/`` per case (label maps, figures,
            ``result.json``) and ``report.html``, ``report.json``, ``*.csv``.
        mode: ``auto`` (from the bundle), ``cardiac``, ``tumour`` or ``volumes``.
        workers: local worker processes (spawn; ``threads="auto"`` shares the cores among them).
        scheduler: Dask scheduler address or ``distributed.Client`` (each case a task).
        device, precision, tta, deterministic: inference settings.
        include_identifiers: add DICOM patient name / ID / birth date to the report.
        include_paths: keep full input and model paths in every output; by default
            reports name inputs by case id and file name only.
        resume: skip cases whose outputs are up to date (input hash, model sha256, settings).
        figures: draw overlay and curve figures.
        dicom: for DICOM series inputs also write a DICOM SEG and an SR TID 1500 per scan
            (``cases/<id>/<id>_seg.dcm``, ``<id>_sr.dcm``; see docs/dicom.md).
        dicom_fractional: with ``dicom``, a FRACTIONAL SEG of the class probabilities (8-bit)
            instead of the binary label map, as ``medcnn segment --dicom-fractional``.
        progress: show a progress bar with ETA on stderr.
        threads: CPU threads per case: ``"auto"`` (usable cores / workers, less the cores
            other processes keep busy) or an integer (:class:`medcnn.inference.ThreadPolicy`).
        backend: network executor, ``"torch"`` (default), ``"onnxruntime"`` or ``"auto"``
            (:class:`medcnn.inference.Segmenter`); recorded per case in
            ``provenance.inference.backend``.
        cache_dir: folder of the ONNX exports (default: ``$MEDCNN_CACHE/onnx`` or
            ``~/.cache/medcnn/onnx``).
        whole_slice: 2D models: one network call per whole slice instead of overlapping windows;
            ``None`` (default): the bundle's measured verdict
            (:func:`medcnn.models.bundle.whole_slice_default`). The decision is part of
            ``config_hash`` when it is on.
        on_case: called in this process with each finished record (in completion order).
        allow_input_mismatch: run inputs that clearly do not fit the model (a CT series for
            an MRI model; by default such a case fails), flagged
            ``INPUT_MODEL_MISMATCH_OVERRIDDEN`` (:mod:`medcnn.models.compat`).
        height_cm, weight_kg: one patient's height (cm) and weight (kg), both or neither
            (``--height`` / ``--weight``): the cardiac results get the Mosteller BSA and
            BSA-indexed values. Only for a cardiac batch of exactly one case whose manifest row
            does not give them itself; a manifest gives them per case (columns ``height_cm``,
            ``weight_kg``).

    Returns:
        :class:`BatchResult` (``exit_code`` 2 when any case failed).

    Raises:
        ConfigError, InputFileNotFoundError, BundleError: problems that stop the whole
        batch before any case runs (bad model, manifest without needed columns...).
        KeyboardInterrupt: after cancelling; finished cases keep their outputs.
    """
    from medcnn.inference.threads import parse_threads

    t0 = time.perf_counter()
    if int(workers) < 1:
        raise ConfigError.expected("--workers >= 1", repr(workers))
    if scheduler is not None and int(workers) > 1:
        raise ConfigError.expected("either --workers or --scheduler", "both",
                                   hint="with a Dask scheduler the cluster's workers run the cases")
    if dicom_fractional and not dicom:
        raise ConfigError.expected("--dicom-fractional together with --dicom", "--dicom-fractional alone")
    from medcnn.inference.executors import BACKENDS

    if backend not in BACKENDS:
        raise ConfigError.expected(f"--backend one of {', '.join(BACKENDS)}", repr(backend))
    info = bundle_info(model)
    settings = BatchSettings(
        model=str(Path(info.path).resolve()), model_name=info.name, model_sha256=info.sha256,
        model_spec_sha256=info.spec_sha256,
        labels=dict(info.labels), out=str(Path(out).resolve()), mode=resolve_mode(mode, info.task),
        device=str(device), precision=str(precision), tta=None if tta is None else bool(tta),
        deterministic=bool(deterministic),
        include_identifiers=bool(include_identifiers), include_paths=bool(include_paths), resume=bool(resume),
        figures=bool(figures), dicom=bool(dicom), dicom_fractional=bool(dicom_fractional),
        threads=parse_threads(threads),
        workers=int(workers) if scheduler is None else 1,
        regions=info.regions,
        input_description=info.input_description,
        allow_input_mismatch=bool(allow_input_mismatch),
        backend=str(backend), cache_dir=None if cache_dir is None else str(cache_dir),
        whole_slice=_whole_slice(whole_slice, info))
    # verify the weights (sha256, tensor names/shapes) once, before any case: a bad model
    # stops the batch with one clear error instead of failing every case
    from medcnn.models import load_bundle

    load_bundle(settings.model)
    items = list(scans)
    cases = [c for c in items if isinstance(c, Case)]
    paths = [s for s in items if not isinstance(s, Case)]
    if paths:
        skipped: list = []  # label maps of folders / globs (issue 26 point 3); ED/ES pairs in cardiac mode
        cases += discover_cases(paths, channels=info.channels, pair_phases=settings.mode == "cardiac",
                                skipped=skipped)
        report_skipped(skipped, "medcnn run")
    if not cases:
        raise ConfigError.expected("at least one scan, folder, glob or manifest", "no cases")
    cases = _with_body_size(cases, height_cm, weight_kg, mode=settings.mode)
    Path(settings.out).mkdir(parents=True, exist_ok=True)
    from medcnn.batch.runner import _clean_stale_temporaries

    _clean_stale_temporaries(Path(settings.out))  # left by a killed earlier run

    from tqdm import tqdm

    order = {c.case_id: i for i, c in enumerate(cases)}
    results: dict[str, dict[str, Any]] = {}
    bar = tqdm(total=len(cases), unit="case", file=sys.stderr, disable=not progress, dynamic_ncols=True,
               desc="medcnn run", smoothing=0.1)

    def done(case: Case, rec: dict[str, Any]) -> None:
        results[case.case_id] = rec
        for flag in rec.get("qc_flags") or []:  # e.g. a NIfTI header read by the rule for inconsistent ones
            if flag.get("scope") == "input":
                bar.write(f"{case.case_id}: warning: {flag['message']}", file=sys.stderr)
        if rec["status"] == "error":
            bar.write(f"{case.case_id}: failed: {rec['error']['message']}", file=sys.stderr)
        n_fail = sum(r["status"] == "error" for r in results.values())
        n_skip = sum(r["status"] == "skipped" for r in results.values())
        bar.set_postfix_str(f"{len(results) - n_fail} ok ({n_skip} up to date), {n_fail} failed", refresh=False)
        bar.update(1)
        if on_case is not None:
            on_case(rec)

    try:
        if scheduler is not None:
            _run_dask(cases, settings, done, scheduler)
        elif int(workers) > 1 and len(cases) > 1:
            _run_processes(cases, settings, done, min(int(workers), len(cases)))
        else:
            _run_inline(cases, settings, done)
    finally:
        bar.close()
    records = sorted(results.values(), key=lambda r: order.get(r["case_id"], 0))
    result = BatchResult(records=records, out=Path(settings.out))
    result.report_files = write_report(records, settings.out, settings=settings, title=title,
                                       model_validation=info.validation,
                                       model_source=(info.json.get("provenance") or {}).get("imported_from"))
    result.elapsed_s = time.perf_counter() - t0
    return result
