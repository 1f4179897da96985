"""What the wheel ships: secagg and rfa with their py.typed markers and one version, not sims/."""

from __future__ import annotations

import tomllib
from pathlib import Path

import rfa
import secagg

ROOT = Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())


def test_the_version_has_one_source():
    assert PYPROJECT["project"]["dynamic"] == ["version"]
    assert PYPROJECT["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "secagg.__version__"}
    assert rfa.__version__ == secagg.__version__ and secagg.__version__.count(".") == 2


def test_typed_packages_ship_py_typed():
    assert PYPROJECT["tool"]["setuptools"]["package-data"]["*"] == ["py.typed"]
    for package in ("secagg", "rfa"):
        assert (ROOT / package / "py.typed").is_file()


def test_sims_stays_out_of_the_wheel():
    include = PYPROJECT["tool"]["setuptools"]["packages"]["find"]["include"]
    assert include == ["secagg*", "rfa*"]
    assert (ROOT / "sims" / "__init__.py").is_file()  # still a package for `python3 -m sims.x` from the checkout


def test_pytest_hides_rays_accelerator_tip_and_no_other_warning():
    # Issue 25: Ray's FutureWarning (a tip about a future default) showed in every run's summary.
    import warnings

    tip = ("Tip: In future versions of Ray, Ray will no longer override accelerator visible devices env var if "
           "num_gpus=0 or num_gpus=None (default).")
    with warnings.catch_warnings(record=True) as caught:  # starts from this test's filters: pyproject's
        warnings.warn(tip, FutureWarning)
        warnings.warn("Tip: something else", FutureWarning)
    assert [str(w.message) for w in caught] == ["Tip: something else"]
