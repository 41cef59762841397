"""`cmake --install` puts the package where Debian's /usr/bin/python3 imports it from."""

from __future__ import annotations

import os
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

if __name__ == "__main__":
    unittest.main()
