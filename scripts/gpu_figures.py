"""One Markdown table of the GPU check's figures (called by scripts/gpu_check.sh).

Reads the JSON lines the gpu-marked tests append (``MEDCNN_GPU_FIGURES``), the
benchmark's ``--json`` rows and the pytest log, and prints a heading with the card's
name and versions followed by one table: check, configuration, figure. Standard
library only (it runs on the bare GPU machine).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path


def _pct(v: float) -> str:
    return f"{100 * v:.3f} %"


def test_rows(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    if not path.is_file():
        return rows
    for line in path.read_text(encoding="utf-8").splitlines():
        if not line.strip():
            continue
        r = json.loads(line)
        check = r.pop("check")
        if "agreement" in r:
            what = " ".join(str(r[k]) for k in ("bundle", "precision", "grid") if k in r)
            extra = f", {r['seconds']:.2f} s" if "seconds" in r else ""
            rows.append((check, what, f"labels equal on {_pct(r['agreement'])} of voxels{extra}"))
        elif "peak_mib" in r:
            rows.append((check, f"{r['case']}, stitched on the {r['plan']}",
                         f"peak {r['peak_mib']:.0f} MiB (plan's estimate {r['estimate_mib']:.0f} MiB)"))
        else:
            rows.append((check, ", ".join(f"{k} {v}" for k, v in r.items() if k not in ("bit_identical", "resume",
                                                                                    "fallbacks")),
                         r.get("fallbacks") or r.get("resume") or ("bit-identical" if r.get("bit_identical")
                                                                   else json.dumps(r))))
    return rows


def bench_rows(path: Path) -> list[tuple[str, str, str]]:
    rows = []
    if not path.is_file():
        return rows
    for table in json.loads(path.read_text(encoding="utf-8")):
        if table["device"] != "cuda":
            continue
        size = "x".join(map(str, table["volume"]))
        for r in table["rows"]:
            amp = r.get("x_monai_amp_same_batch")
            fig = f"{r['median_s']:.3f} s, {r['x_monai_fp32']:.2f}x MONAI fp32"
            if amp is not None:
                fig += f", **{amp:.2f}x MONAI AMP** ({r['monai_amp_row'].replace('monai sliding_window_inference ', '')})"
            fig += f", peak {r['peak_mib']:.0f} MiB, labels = MONAI fp32 on {_pct(r['agreement_vs_monai_fp32'])}"
            rows.append(("inference speed", f"{r['configuration']} ({size}, roi {table['roi'][0]})", fig))
    return rows


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--facts", required=True)
    ap.add_argument("--figures", type=Path, required=True)
    ap.add_argument("--bench", type=Path, required=True)
    ap.add_argument("--pytest-log", type=Path, required=True)
    ap.add_argument("--pytest-rc", type=int, required=True)
    ap.add_argument("--bench-rc", type=int, required=True)
    ap.add_argument("--seconds", type=int, default=0)
    args = ap.parse_args(argv)
    summary = "no pytest summary"
    if args.pytest_log.is_file():
        lines = [ln for ln in args.pytest_log.read_text(encoding="utf-8", errors="replace").splitlines()
                 if re.search(r"\d+ (passed|failed|skipped|error)", ln)]
        summary = lines[-1].strip("= ") if lines else summary
    card = re.match(r"GPU (.+?) \(", args.facts)
    print(f"### medcnn GPU check on {card.group(1) if card else 'an unknown GPU'}\n")
    print(f"{args.facts}. Wall time {args.seconds} s.\n")
    print("| check | configuration | figure |")
    print("|---|---|---|")
    status = "passed" if args.pytest_rc == 0 else f"FAILED (exit {args.pytest_rc})"
    print(f"| gpu-marked tests | tests/test_gpu.py | {status}: {summary} |")
    for row in test_rows(args.figures) + bench_rows(args.bench):
        print("| " + " | ".join(c.replace("|", "/") for c in row) + " |")
    if args.bench_rc != 0:
        print(f"| inference speed | benchmarks/bench_inference.py | FAILED (exit {args.bench_rc}) |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
