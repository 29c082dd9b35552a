"""One build step that pyproject.toml cannot express: install the top-level module cli.py as persist.cli.

The source tree keeps cli.py at the top (the project's layout); installed, the command line lives at
persist/cli/__init__.py so that nothing named `cli` lands at the top of site-packages. Editable installs map
persist.cli to ./cli and setuptools' finder resolves that to ./cli.py.
"""

from setuptools import setup
from setuptools.command.build_py import build_py

CLI_PACKAGE = "persist.cli"


class BuildPy(build_py):
    def check_package(self, package: str, package_dir: str):  # noqa: ANN201 - setuptools' signature
        return None if package == CLI_PACKAGE else super().check_package(package, package_dir)

    def find_package_modules(self, package: str, package_dir: str):  # noqa: ANN201
        if package == CLI_PACKAGE:
            return [(package, "__init__", "cli.py")]
        return super().find_package_modules(package, package_dir)


setup(cmdclass={"build_py": BuildPy})
