"""Package discovery for planc; everything else is in pyproject.toml.

The three source roots keep their places in the repository and install under one name:
planc/ is `planc`, ir/ is `planc.ir`, runtime/ is `planc.runtime`. Every package below
them (a directory with an ``__init__.py``) is found here, so new subpackages install
without being listed. `.ci/run` builds the wheel and checks that it holds every module.
"""
from setuptools import find_packages, setup

ROOTS = {"planc": "planc", "planc.ir": "ir", "planc.runtime": "runtime"}

packages = []
for name, where in ROOTS.items():
    packages.append(name)
    packages += [f"{name}.{sub}" for sub in find_packages(where) if f"{name}.{sub}" not in ROOTS]

setup(packages=packages, package_dir=ROOTS)
