"""Builds the `pitlane` Python package for pip (pyproject.toml), offline.

The package is pitlane/ (pure Python) plus the native extension pitlane._native, which links the
static pitlane worker libraries. It is built by this repository's CMake (target
pitlane_py_native, python/CMakeLists.txt) — never by setuptools' own compiler calls, so there is
one build of it:
  - PITLANE_BUILD_DIR=<a configured and built CMake build dir, as an absolute path>: the
    extension already built there (<dir>/python/pitlane/_native*.so) is taken as it is (fast;
    what the tests do). pip runs this file in python/, not where pip was started, so a relative
    path is refused (from the repository root: PITLANE_BUILD_DIR=$PWD/build);
  - otherwise CMake configures the source tree above this directory into a build directory
    under build/pip (libraries, Python module only; no tests, benchmarks or CLI) and builds the
    target. Needs the Debian packages build.sh lists, no network.
"""

import glob
import os
import re
import shutil
import subprocess
import sys

from setuptools import Extension, find_packages, setup
from setuptools.command.build_ext import build_ext
from setuptools.command.build_py import build_py

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.dirname(HERE)


def project_version():
    with open(os.path.join(SOURCE, "CMakeLists.txt")) as f:
        match = re.search(r"project\(pitlane VERSION ([0-9.]+)", f.read())
    if not match:
        raise RuntimeError("no `project(pitlane VERSION x.y.z)` in CMakeLists.txt")
    return match.group(1)


class CMakeBuildExt(build_ext):
    """Copies the CMake-built pitlane._native into the wheel."""

    def build_extension(self, ext):
        build_dir = os.environ.get("PITLANE_BUILD_DIR")
        if build_dir:
            # pip runs this file with python/ as the working directory, not the directory pip
            # was started from, so a relative path cannot mean what the user meant.
            if not os.path.isabs(build_dir):
                raise RuntimeError(
                    f"PITLANE_BUILD_DIR={build_dir} is relative: it must be an absolute path. "
                    f"pip runs this build in {HERE}, where it would mean "
                    f"{os.path.join(HERE, build_dir)}. From the repository root: "
                    f"PITLANE_BUILD_DIR=$PWD/{build_dir} pip install ... ./python")
            origin = f"PITLANE_BUILD_DIR={build_dir}"
            hint = (f"build it there first (cmake --build {build_dir} --target pitlane_py_native; "
                    "python3-dev and pybind11-dev must be installed when that build dir is "
                    "configured), or unset PITLANE_BUILD_DIR to build it with CMake here")
        else:
            build_dir = os.path.join(SOURCE, "build", "pip")
            subprocess.check_call([
                "cmake", "-S", SOURCE, "-B", build_dir, "-DCMAKE_BUILD_TYPE=Release",
                "-DPITLANE_BUILD_TESTS=OFF", "-DPITLANE_BUILD_BENCHMARKS=OFF",
                "-DPITLANE_BUILD_CLI=OFF", "-DPITLANE_BUILD_PYTHON=ON",
                f"-DPython3_EXECUTABLE={sys.executable}"])
            subprocess.check_call(["cmake", "--build", build_dir, "--target", "pitlane_py_native",
                                   "-j", str(os.cpu_count() or 1)])
            origin = "the CMake build of this source tree"
            hint = "see the CMake output above"
        module_dir = os.path.join(build_dir, "python", "pitlane")
        built = glob.glob(os.path.join(module_dir, "_native*.so"))
        if not built:
            raise RuntimeError(f"no pitlane/_native*.so in {module_dir} ({origin}): {hint}")
        target = self.get_ext_fullpath(ext.name)
        os.makedirs(os.path.dirname(target), exist_ok=True)
        shutil.copyfile(built[0], target)


class VersionedBuildPy(build_py):
    """pitlane/__init__.py carries @PROJECT_VERSION@ (CMake's configure_file fills it too)."""

    def run(self):
        super().run()
        init = os.path.join(self.build_lib, "pitlane", "__init__.py")
        with open(init) as f:
            text = f.read()
        with open(init, "w") as f:
            f.write(text.replace("@PROJECT_VERSION@", project_version()))


setup(
    version=project_version(),
    packages=find_packages(include=["pitlane", "pitlane.*"]),  # pitlane.snakepit too
    ext_modules=[Extension("pitlane._native", sources=[])],
    cmdclass={"build_ext": CMakeBuildExt, "build_py": VersionedBuildPy},
    zip_safe=False,
)
