"""A tf.data service started by scripts/data_service.py on 127.0.0.1, one process a server, as a
user starts it; the tests kill and restart its processes."""

import subprocess

from tests.forked_scripts import ForkedProcess
from tests.helpers import free_ports, start_script


class DataServiceProcesses:
    """A dispatcher and `workers` workers, started together (a worker waits for its dispatcher), each
    waited for until it serves."""

    def __init__(self, workers: int):
        self.dispatcher_port, *self.worker_ports = free_ports(1 + workers)
        self.processes: dict[str, ForkedProcess] = {}
        for name in ("dispatcher", *(f"worker{index}" for index in range(workers))):
            self.processes[name] = self.launch(name)
        for process in self.processes.values():
            assert "serving at" in process.stdout.readline()

    @property
    def url(self) -> str:
        return f"grpc://127.0.0.1:{self.dispatcher_port}"

    def start(self, name: str) -> None:
        """Starts (or restarts, at the same port and address) the dispatcher or worker `name`, and waits
        until it serves."""
        self.processes[name] = self.launch(name)
        assert "serving at" in self.processes[name].stdout.readline()

    def launch(self, name: str) -> ForkedProcess:
        if name == "dispatcher":
            args = ["--role=dispatcher", f"--port={self.dispatcher_port}"]
        else:
            port = self.worker_ports[int(name.removeprefix("worker"))]
            args = ["--role=worker", f"--dispatcher=127.0.0.1:{self.dispatcher_port}", f"--port={port}",
                    f"--worker_address=127.0.0.1:{port}"]
        return start_script("data_service", *args, stdout=subprocess.PIPE)

    def kill(self, name: str) -> None:
        self.processes[name].kill()
        self.processes[name].wait()

    def stop(self) -> list[tuple[int, str]]:
        """Stops every server still running as a user would (SIGTERM): (exit code, output) of each."""
        running = [process for process in self.processes.values() if process.poll() is None]
        for process in running:
            process.terminate()
        return [(process.wait(timeout=60), process.stdout.read()) for process in running]

    def kill_all(self) -> None:
        for process in self.processes.values():
            process.kill()
            process.wait()
