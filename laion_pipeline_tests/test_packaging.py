"""The package as pip builds it: every data file of the package in the wheel (the sample, the
templates, the bundled profiles), and no setuptools warning about the project's packages."""

import subprocess
import sys
import zipfile
from pathlib import Path

PROJECT = Path(__file__).resolve().parents[1]


def test_the_wheel_holds_every_file_of_the_package_and_builds_without_a_warning(tmp_path):
    command = [sys.executable, "-m", "pip", "wheel", str(PROJECT), "--no-deps", "--no-index"]
    command += ["--no-build-isolation", "--wheel-dir", str(tmp_path), "--verbose"]
    built = subprocess.run(
        command,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert built.returncode == 0, built.stderr[-3000:]
    log = built.stdout + built.stderr
    assert "would be ignored" not in log and "absent from the `packages`" not in log
    (wheel,) = tmp_path.glob("laion_pipeline-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        shipped = {name for name in archive.namelist() if name.startswith("laion_pipeline/")}
    tracked = subprocess.run(
        ["git", "ls-files", "laion_pipeline"],
        cwd=PROJECT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert tracked, "run in a git checkout of the project"
    assert set(tracked) <= shipped, sorted(set(tracked) - shipped)
    assert not any(name.startswith("laion_pipeline_tests/") for name in archive.namelist())
