"""Compile the sans-IO core (``gateway/core``) with mypyc: ``make compile``.

    python -m gateway.cli.build_core --in-place     # .so next to each .py of gateway/core (make compile)
    python -m gateway.cli.build_core --into DIR     # a copy of the package in DIR, compiled there

(``make clean-compiled`` removes the in-place build: a ``find``, so it needs no virtualenv.)

Why mypyc: the core is written with full type hints for mypy --strict, so mypyc compiles all of
it unchanged, from the one source that also runs interpreted (the reference).  Measured per
stage it is 1.2-2x (docs/bench.md, "Compiled core"); it does not change what any function
returns — ``tests/test_compiled_core.py`` runs a compiled and an interpreted copy side by side on
Hypothesis-generated traffic and compares frames, events, verdicts and audit records byte for byte.

Rules the compiled core imposes (found by that test and the spike): no interpreted subclass of a
core class (``codec.CapturingFramer`` lives in the core for that reason), no reading ``__slots__``,
no monkeypatching core methods or functions, declared types are enforced at run time.
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
GROUP = "fixgw_core"

SETUP = """
import sys
from pathlib import Path
from setuptools import setup
from mypyc.build import mypycify
paths = sorted(str(p) for p in Path("gateway/core").rglob("*.py") if p.name != "__init__.py")
sys.argv = [sys.argv[0], "build_ext", "--inplace"]
setup(name="fixgw_core_compiled", packages=[], script_args=sys.argv[1:],
      ext_modules=mypycify(paths, opt_level="3", debug_level="0", group_name=GROUP))
""".replace("GROUP", repr(GROUP))


def compiled_files(root: Path) -> list[Path]:
    """The build's outputs under ``root``: one extension per module and the group's shared library."""
    return [*root.glob("gateway/core/**/*.so"), *root.glob(f"{GROUP}__mypyc*.so")]


def build(root: Path) -> float:
    """Compile ``root``/gateway/core in place; the seconds it took.  Raises RuntimeError with mypyc's output."""
    t0 = time.monotonic()
    r = subprocess.run([sys.executable, "-c", SETUP], cwd=root, capture_output=True, text=True, timeout=1800)
    if r.returncode != 0:
        raise RuntimeError(f"mypyc build failed in {root}:\n{(r.stdout + r.stderr)[-4000:]}")
    shutil.rmtree(root / "build", ignore_errors=True)
    return time.monotonic() - t0


def copy_package(dest: Path) -> Path:
    """``gateway/`` (sources only) and the mypy configuration, copied into ``dest``; ``fixdicts/`` linked."""
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copytree(ROOT / "gateway", dest / "gateway",
                    ignore=shutil.ignore_patterns("__pycache__", "*.so", "*.c", "*.pyc"), dirs_exist_ok=True)
    shutil.copy(ROOT / "pyproject.toml", dest / "pyproject.toml")
    if not (dest / "fixdicts").exists():  # the dictionaries the core finds beside the package
        (dest / "fixdicts").symlink_to(ROOT / "fixdicts")
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m gateway.cli.build_core", description=__doc__.split("\n")[0])
    how = ap.add_mutually_exclusive_group(required=True)
    how.add_argument("--in-place", action="store_true", help="compile the working tree's gateway/core")
    how.add_argument("--into", type=Path, metavar="DIR", help="copy the package into DIR and compile it there")
    args = ap.parse_args(argv)
    root = ROOT if args.in_place else copy_package(args.into)
    try:
        seconds = build(root)
    except RuntimeError as exc:
        print(f"fixgw: {exc}", file=sys.stderr)
        return 1
    print(f"compiled {len(compiled_files(root)) - 1} core modules in {root} in {seconds:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
