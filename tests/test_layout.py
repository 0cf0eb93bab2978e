"""The package: installed (no sys.path edits anywhere), no module that shadows a library, cheap command-line help."""
import pkgutil
import subprocess
import sys
from pathlib import Path

from conftest import ROOT

# Where Python puts a folder of ours first on sys.path: `python app.py` (the root), `python train/run.py` (train/),
# `python benchmarks/x.py` (benchmarks/), and the packages' own top level.
SCRIPT_DIRS = [ROOT, ROOT / "train", ROOT / "benchmarks"]


def _names(folder: Path) -> set[str]:
    return {p.stem for p in folder.glob("*.py")} | {p.name for p in folder.iterdir() if (p / "__init__.py").is_file()}


def test_no_module_of_ours_shadows_a_library():
    outside = [p for p in sys.path if p and not Path(p).resolve().is_relative_to(ROOT)]
    libraries = {m.name for m in pkgutil.iter_modules(outside)} | set(sys.builtin_module_names)
    for folder in SCRIPT_DIRS:
        clash = _names(folder) & libraries
        assert not clash, f"{folder.relative_to(ROOT.parent)} holds {sorted(clash)}, which shadow installed modules"


def test_no_sys_path_edits():
    files = [*ROOT.glob("*.py"), *(p for d in ("modeling", "space", "train", "hub", "benchmarks", "tests")
                                   for p in (ROOT / d).rglob("*.py"))]
    edits = [f"{p.relative_to(ROOT)}:{i}" for p in files if p != Path(__file__)
             for i, line in enumerate(p.read_text().splitlines(), 1)
             if "sys.path.insert" in line or "sys.path.append" in line or "sys.path[" in line]
    assert not edits


def test_evaluation_help_does_not_import_torch():
    """`python -m train.evaluation --help` answers from the argument dataclass alone (torch loads in main)."""
    code = ("import runpy, sys\nsys.argv = ['train.evaluation', '--help']\n"
            "try:\n    runpy.run_module('train.evaluation', run_name='__main__')\nexcept SystemExit:\n    pass\n"
            "print('torch loaded' if 'torch' in sys.modules else 'no torch')")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, cwd="/")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "--calibration_dir" in done.stdout and done.stdout.strip().endswith("no torch")


def test_results_schema_reads_without_torch(tmp_path):
    """The app (or anyone) reads results.json and a config's calibration through modeling.formats, torch-free."""
    code = ("import sys\nfrom modeling.formats import calibration_from, read_results\n"
            "print(calibration_from({'threshold': 0.7}), 'torch' in sys.modules)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "{'temperature': 1.0, 'threshold': 0.7} False"
