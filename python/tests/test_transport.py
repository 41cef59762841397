"""Transport selection from Python is the C++ worker's: with no host of its namespace on this
machine and PITLANE_GRPC_TARGET set, the module streams over gRPC (same API, same catalog)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import unittest

from pitlane_testing import TIMEOUT, HostProcess, remove_segments, unique_namespace

STOP = "snakepit.python.call.stop"

CHILD = r"""
import json
from pitlane import telemetry
for i in range(5):
    telemetry.emit("python.call.stop", {"duration": i}, {"command": "predict"})
telemetry.emit("inference.start")  # unknown to the catalog: counted by the host, not delivered
print(json.dumps(telemetry.shutdown()))
"""


class GrpcFallbackTest(unittest.TestCase):
    def test_worker_without_a_local_host_streams_over_grpc(self) -> None:
        host_ns = unique_namespace()
        worker_ns = unique_namespace()  # no host runs for this one
        host = HostProcess(host_ns, grpc_listen="127.0.0.1:0")
        try:
            self.assertGreater(host.grpc_port, 0)
            env = dict(os.environ)
            env.pop("PITLANE_TRANSPORT", None)
            env.update({
                "PITLANE_NAMESPACE": worker_ns,
                "PITLANE_WORKER_ID": "py-remote",
                "PITLANE_GRPC_TARGET": f"127.0.0.1:{host.grpc_port}",
            })
            out = subprocess.run([sys.executable, "-c", CHILD], env=env, capture_output=True,
                                 text=True, timeout=TIMEOUT * 2)
            self.assertEqual(out.returncode, 0, out.stderr)
            final = json.loads(out.stdout.strip().splitlines()[-1])
            self.assertEqual(final["emitted"], 6, final)
            events = host.wait_count(STOP, 5)
            self.assertEqual([e["measurements"]["duration"] for e in events], [0, 1, 2, 3, 4])
            for e in events:
                self.assertEqual(e["transport"], "grpc")
                self.assertEqual(e["worker_id"], "py-remote")
                self.assertEqual(e["metadata"]["command"], "predict")
            # The worker's own counters reached the host over the stream: the books balance.
            def remote_ring(s: dict) -> dict:
                rings = [r for r in s["rings"] if r["worker_id"] == "py-remote"]
                return rings[0] if rings else {}

            stats = host.wait_stats(lambda s: remote_ring(s).get("emitted") == 6
                                    and remote_ring(s).get("delivered") == 5)
            ring = remote_ring(stats)
            self.assertTrue(ring["segment"].startswith("grpc:"), ring)
            self.assertEqual(ring["rejected"]["unknown_event"], 1)
            self.assertTrue(ring["conserved"], ring)
            # Nothing of the worker's reached /dev/shm: it never used shared memory.
            self.assertFalse([p for p in os.listdir("/dev/shm") if f"pitlane.{worker_ns}." in p])
        finally:
            host.close()
            remove_segments(host_ns)
            remove_segments(worker_ns)


if __name__ == "__main__":
    unittest.main()
