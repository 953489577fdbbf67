"""The systems under test, each started fresh in a work directory of the run.

PostgreSQL 15 (Debian's `postgresql-15`) and Shoal run as separate server processes on free
loopback ports, both with fsync on commit, and are stopped when the run ends. A Shoal cluster
runs as an etcd (Debian's `etcd-server`) and nodes that join it, all on loopback. DuckDB runs
in this process on a database file of its own.
"""

import os
import shutil
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import psycopg

PG_BIN = Path("/usr/lib/postgresql/15/bin")

# What PostgreSQL gets beyond its defaults: durability as Shoal's default (`--fsync true`),
# and memory a user of a 24 GiB machine would give it.
PG_SETTINGS = {
    "fsync": "on",
    "synchronous_commit": "on",
    "full_page_writes": "on",
    "shared_buffers": "2GB",
    "work_mem": "64MB",
    "maintenance_work_mem": "512MB",
    "max_connections": "100",
    "max_wal_size": "8GB",
}

# Shoal's counterpart of shared_buffers: its block cache, the same 2 GiB.
BLOCK_CACHE_BYTES = 2 * 1024 ** 3
SHOAL_ARGS = ["--fsync", "true", "--block-cache-bytes", str(BLOCK_CACHE_BYTES)]


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_for(connect, what, proc, log, timeout=60.0):
    deadline = time.monotonic() + timeout
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode}; its log:\n{log.read_text()}")
        try:
            with connect():
                return
        except psycopg.OperationalError:
            if time.monotonic() > deadline:
                raise RuntimeError(f"{what} did not accept connections in {timeout} s")
            time.sleep(0.2)


class Server:
    """A server process of the run: its directory and log under the work directory, a free
    loopback port, and the user and database the workloads connect as."""

    name = ""
    # Shoal gets its own physical design (partition keys) where the schema is created.
    shoal = False

    def __init__(self, workdir: Path, user: str):
        self.dir = workdir / self.name.lower()
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.user = user
        self.dbname = user
        self.log = self.dir / "server.log"
        self.proc = None

    def start(self, args, **popen):
        self.proc = subprocess.Popen(args, stdout=open(self.log, "ab"),
                                     stderr=subprocess.STDOUT, **popen)
        _wait_for(self.connect, self.name, self.proc, self.log)

    def connect(self, **kw):
        return psycopg.connect(host="127.0.0.1", port=self.port, user=self.user,
                               dbname=self.dbname, autocommit=True, **kw)

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class Postgres(Server):
    name = "PostgreSQL"

    def __init__(self, workdir: Path):
        super().__init__(workdir, "postgres")
        as_root = os.geteuid() == 0
        # PostgreSQL refuses to run as root: then the server runs as the `postgres` user.
        prefix = ["runuser", "-u", "postgres", "--"] if as_root else []
        if as_root:
            # The postgres user must reach its directory through the run's (private) one.
            workdir.chmod(0o755)
            shutil.chown(self.dir, "postgres")
            self.log.touch()
            shutil.chown(self.log, "postgres")
        data = self.dir / "data"
        subprocess.run(
            prefix + [str(PG_BIN / "initdb"), "-D", str(data), "--auth=trust", "-U", self.user,
                      "--encoding=UTF8", "--locale=C.UTF-8"],
            check=True, stdout=subprocess.DEVNULL)
        settings = [arg for k, v in PG_SETTINGS.items() for arg in ("-c", f"{k}={v}")]
        self.start(prefix + [str(PG_BIN / "postgres"), "-D", str(data), "-p", str(self.port),
                             "-k", str(self.dir), "-c", "listen_addresses=127.0.0.1"] + settings)

    def version(self):
        with self.connect() as c:
            return c.execute("show server_version").fetchone()[0]


class Shoal(Server):
    name = "Shoal"
    shoal = True

    def __init__(self, workdir: Path, binary: Path):
        super().__init__(workdir, "shoal")
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.start([str(binary), "start", "--data-dir", str(self.dir / "data"),
                    "--listen", f"127.0.0.1:{self.port}", "--metrics-listen", "off",
                    "--auth", "trust", *SHOAL_ARGS], env=env)


class Etcd:
    """A one-member etcd on loopback for the cluster's metadata."""

    def __init__(self, workdir: Path):
        self.dir = workdir / "etcd"
        self.dir.mkdir(parents=True)
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        peer = f"http://127.0.0.1:{free_port()}"
        binary = shutil.which("etcd") or "/usr/bin/etcd"
        self.proc = subprocess.Popen(
            [binary, "--name", "bench", "--data-dir", str(self.dir / "data"),
             "--listen-client-urls", self.url, "--advertise-client-urls", self.url,
             "--listen-peer-urls", peer, "--initial-advertise-peer-urls", peer,
             "--initial-cluster", f"bench={peer}", "--log-level", "error"],
            stdout=open(self.dir / "etcd.log", "ab"), stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 30
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"etcd exited with {self.proc.returncode}")
            try:
                socket.create_connection(("127.0.0.1", self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("etcd did not accept connections in 30 s")
                time.sleep(0.2)

    def stop(self):
        Server.stop(self)


class ShoalNode(Server):
    """Node `number` of a Shoal cluster on `etcd`. The nodes share the single server's block
    cache between them, so that the cluster uses the memory the single server does."""

    shoal = True

    def __init__(self, workdir: Path, binary: Path, etcd: Etcd, number: int, nodes: int):
        self.name = f"Shoal-node{number}"
        super().__init__(workdir, "shoal")
        self.metrics_port = free_port()
        env = dict(os.environ, RUST_LOG=os.environ.get("RUST_LOG", "warn"))
        self.start([str(binary), "start", "--data-dir", str(self.dir / "data"),
                    "--listen", f"127.0.0.1:{self.port}",
                    "--flight-listen", f"127.0.0.1:{free_port()}",
                    "--metrics-listen", f"127.0.0.1:{self.metrics_port}",
                    "--etcd", etcd.url, "--auth", "trust", "--fsync", "true",
                    "--block-cache-bytes", str(BLOCK_CACHE_BYTES // nodes)], env=env)

    def bytes_received(self):
        """Bytes of Arrow batches this node received from fragments other nodes ran."""
        url = f"http://127.0.0.1:{self.metrics_port}/metrics"
        text = urllib.request.urlopen(url, timeout=10).read().decode()
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line.startswith("shoal_fragment_bytes_received_total"))


class ShoalCluster:
    """etcd and `nodes` Shoal nodes; clients talk to the first node."""

    def __init__(self, workdir: Path, binary: Path, nodes: int):
        self.etcd = Etcd(workdir)
        self.nodes = []
        try:
            for number in range(1, nodes + 1):
                self.nodes.append(ShoalNode(workdir, binary, self.etcd, number, nodes))
            deadline = time.monotonic() + 60
            while self.live_nodes() < nodes:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"only {self.live_nodes()} of {nodes} nodes are up")
                time.sleep(0.2)
        except BaseException:
            self.stop()
            raise
        self.entry = self.nodes[0]

    def live_nodes(self):
        with self.nodes[0].connect() as c:
            return c.execute("select count(*) from shoal.nodes where state = 'up'").fetchone()[0]

    def stop(self):
        for node in self.nodes:
            node.stop()
        self.etcd.stop()
