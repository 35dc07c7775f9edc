"""Assemble BENCHMARKS.md from the per-topic results files in ``benchmarks/results/``.

``python benchmarks/assemble.py`` rewrites ``BENCHMARKS.md``: the overview, then one section per issue
made of its results files (their headings moved one level down, each file's title dropped).
"""

from __future__ import annotations

import re
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
SECTIONS = (
    ("Foundation: stores, tiers, S3 (issue 2)", ("foundation",), "io"),
    ("Spiking simulation (issue 3)", ("brain", "brain_gpu", "brain_multigpu"), "brain"),
    ("Connectomics volumes (issue 4)", ("connectomics",), "connectomics"),
    ("Memory bank (issue 5)", ("memories",), "memories"),
    ("Training stages (issue 6)", ("training",), "training"),
    ("Cluster, HPC and dashboard (issue 7)", ("cluster",), "cluster"),
)


def _body(path: Path, level: int) -> str:
    """The results file without its title, headings moved ``level`` levels down."""
    text = path.read_text().split("\n", 1)[1] if path.read_text().startswith("# ") else path.read_text()
    return re.sub(r"(?m)^(#+) ", lambda m: "#" * (len(m.group(1)) + level) + " ", text).strip()


def assemble() -> str:
    parts = [(RESULTS / "overview.md").read_text().strip()]
    for title, names, script in SECTIONS:
        files = [RESULTS / f"{n}.md" for n in names if (RESULTS / f"{n}.md").exists()]
        sources = ", ".join(f"`benchmarks/results/{f.name}`" for f in files)
        commands = ", ".join(sorted({f"`benchmarks/{script}.py`"} | {f"`benchmarks/{f.stem}.py`" for f in files
                                                                    if (RESULTS.parent / f"{f.stem}.py").exists()}))
        parts.append(f"## {title}\n\nSource: {sources} (commands in {commands}).")
        for k, f in enumerate(files):
            if k:  # later files of a section keep their title as a subsection
                parts.append("### " + f.read_text().split("\n", 1)[0].lstrip("# ").strip())
                parts.append(_body(f, 2))
            else:
                parts.append(_body(f, 1))
    return "\n\n".join(parts) + "\n"


if __name__ == "__main__":
    out = RESULTS.parent.parent / "BENCHMARKS.md"
    out.write_text(assemble())
    print(f"wrote {out}")
