"""A real PostgreSQL server for the tests: Debian's `postgresql` binaries (.ci/run installs the package),
a database cluster in a temporary folder, listening on a free loopback port, a database and a user of
its own, trust authentication on loopback only. Run as the `postgres` user when the tests run as root
(PostgreSQL refuses root). Stopped, killed and started again by the tests that need the server to go away."""

import glob
import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from tests.helpers import free_ports

DATABASE, USER = "studies", "tapeloop"


def binaries() -> Path | None:
    """The folder of initdb and pg_ctl: on the PATH, else Debian's /usr/lib/postgresql/VERSION/bin."""
    on_path = shutil.which("pg_ctl")
    if on_path and shutil.which("initdb"):
        return Path(on_path).resolve().parent
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(found[-1]).parent if found else None


def why_unavailable() -> str | None:
    """Why no server can be started here, or None: the binaries, the driver, a user to run as."""
    if binaries() is None:
        return "PostgreSQL's binaries (initdb, pg_ctl) are not installed: `apt-get install postgresql`"
    try:
        import psycopg  # noqa: F401  (SQLAlchemy's driver for postgresql:// URLs)
    except ImportError:
        return "psycopg is not installed: `pip install -e '.[postgres]'`"
    if os.geteuid() == 0 and shutil.which("runuser") is None:
        return "running as root without runuser, and PostgreSQL refuses to run as root"
    return None


class PostgresServer:
    """One cluster in a folder of its own under the system's temporary folder (where the `postgres` user
    can reach it: pytest's folders are root's alone); `url` reaches its database while it runs."""

    def __init__(self):
        self.folder, self.port = Path(tempfile.mkdtemp(prefix="tapeloop-postgres-")), free_ports(1)[0]
        self.data, self.log = self.folder / "data", self.folder / "server.log"
        self.url = f"postgresql://{USER}@127.0.0.1:{self.port}/{DATABASE}"
        if os.geteuid() == 0:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "--pgdata", str(self.data), "--username", USER, "--auth=trust", "--no-sync",
                  "--encoding=UTF8", "--locale=C")
        self.start()
        self._run("createdb", "--host=127.0.0.1", f"--port={self.port}", f"--username={USER}", DATABASE)

    def _run(self, program: str, *arguments: str, check: bool = True) -> subprocess.CompletedProcess:
        command = [str(binaries() / program), *arguments]
        if os.geteuid() == 0:
            command = ["runuser", "-u", "postgres", "--", *command]
        finished = subprocess.run(command, capture_output=True, text=True, timeout=120)
        if check and finished.returncode:
            raise RuntimeError(f"{' '.join(command)} exited with {finished.returncode}: {finished.stderr.strip()}")
        return finished

    def start(self) -> None:
        """Starts the server and waits until it takes connections."""
        self._run("pg_ctl", "--pgdata", str(self.data), "--log", str(self.log), "--wait", "--options",
                  f"-c listen_addresses=127.0.0.1 -c port={self.port} -c unix_socket_directories='{self.folder}' "
                  "-c fsync=off -c max_connections=50", "start")

    def stop(self, mode: str = "fast") -> None:
        """Stops the server: `fast` (clients disconnected, a clean shutdown) or `immediate` (as if it died)."""
        self._run("pg_ctl", "--pgdata", str(self.data), "--mode", mode, "--wait", "stop", check=False)

    def remove(self) -> None:
        """Stops the server and deletes its cluster."""
        self.stop("immediate")
        shutil.rmtree(self.folder, ignore_errors=True)
