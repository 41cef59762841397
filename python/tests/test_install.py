"""`cmake --install` puts the package where Debian's /usr/bin/python3 imports it from."""

from __future__ import annotations

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import unittest


class InstallTest(unittest.TestCase):
    def test_installed_package_imports_from_the_prefix_site_directory(self) -> None:
        build = os.environ["PITLANE_PY_BUILD_DIR"]
        site = os.environ["PITLANE_PY_INSTALL_DIR"]
        prefix = os.environ["PITLANE_PY_INSTALL_PREFIX"]
        with tempfile.TemporaryDirectory() as destdir:
            env = dict(os.environ, DESTDIR=destdir)
            subprocess.run(["cmake", "--install", build, "--component", "python"],
                           check=True, env=env, stdout=subprocess.DEVNULL)
            installed = os.path.join(destdir + prefix, site)
            files = sorted(os.listdir(os.path.join(installed, "pitlane")))
            self.assertIn("__init__.py", files)
            self.assertIn("telemetry.py", files)
            self.assertTrue(any(f.startswith("_native") and f.endswith(".so") for f in files), files)

            env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
            env["PYTHONPATH"] = installed
            out = subprocess.run(
                [sys.executable, "-c",
                 "import pitlane; print(pitlane.__file__); print(pitlane.new_correlation_id())"],
                check=True, env=env, cwd=destdir, capture_output=True, text=True,
            ).stdout.split()
            self.assertTrue(out[0].startswith(installed), out)
            self.assertRegex(out[1], r"^pl-[0-9a-f]{24}$")

    def test_install_directory_is_a_site_directory_of_the_system_python(self) -> None:
        prefix = os.environ["PITLANE_PY_INSTALL_PREFIX"]
        if prefix not in ("/usr/local", "/usr"):
            self.skipTest(f"prefix {prefix} is not one /usr/bin/python3 reads by itself")
        site_dir = os.path.join(prefix, os.environ["PITLANE_PY_INSTALL_DIR"])
        sites = subprocess.run(["/usr/bin/python3", "-c",
                                "import site; print('\\n'.join(site.getsitepackages()))"],
                               check=True, capture_output=True, text=True,
                               env={"PATH": os.environ.get("PATH", "")}).stdout.split("\n")
        self.assertIn(site_dir, sites)

    def _import_error(self, package_dir: str) -> str:
        """What `import pitlane` prints from package_dir's parent, which must fail."""
        env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
        env["PYTHONPATH"] = os.path.dirname(package_dir)
        result = subprocess.run([sys.executable, "-c", "import pitlane"], env=env,
                                cwd=os.path.dirname(package_dir), capture_output=True, text=True)
        self.assertNotEqual(result.returncode, 0, result.stdout)
        return result.stderr.strip().splitlines()[-1]

    def test_a_missing_native_module_is_reported_as_not_built(self) -> None:
        # The package's Python files without the extension: what a build tree holds after
        # `./build.sh demo`, which configures the module but builds only the pitlane command.
        built = os.path.join(os.environ["PITLANE_PY_BUILD_DIR"], "python", "pitlane")
        with tempfile.TemporaryDirectory() as tmp:
            package = os.path.join(tmp, "pitlane")
            shutil.copytree(built, package, ignore=shutil.ignore_patterns("_native*", "__pycache__"))
            last = self._import_error(package)
            self.assertIn("pitlane._native is not built", last)
            self.assertIn(f"no _native*.so in {package}", last)
            self.assertIn("cmake --build build", last)
            self.assertIn("python3-dev and pybind11-dev", last)
            self.assertNotIn("circular import", last)
            # An extension that is there but does not load keeps the loader's own error.
            native = os.path.basename(glob.glob(os.path.join(built, "_native*.so"))[0])
            open(os.path.join(package, native), "w").close()
            last = self._import_error(package)
            self.assertIn(native, last)
            self.assertNotIn("is not built", last)


if __name__ == "__main__":
    unittest.main()
