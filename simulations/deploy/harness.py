"""Real-process deployment on loopback: a SuperLink (TLS, SuperNode authentication, SQLite) and SuperNodes, started
through the scripts of ``simulations/deploy/``, and every process they start stopped again, by pid.

What ``tests/deployment`` and the demo (:mod:`simulations.deploy.demo`, ``make deploy-demo``) share. Every process a
:class:`Deployment` starts carries a unique ``TREELORA_DEPLOY_TAG`` in its environment, which its children
(SuperExec, ServerApp, ClientApp processes) inherit; :meth:`Deployment.cleanup` kills exactly the processes with that
tag (read from ``/proc/<pid>/environ``), so nothing survives a failure, and nothing else is touched. Ports are
chosen free at run time; each component logs to ``<dir>/logs/<name>.log``.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import ssl
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

from treelora.logs import quiet_env

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "simulations" / "deploy"
BIN = Path(sys.executable).parent

__all__ = ["Deployment", "Proc", "TINY", "free_port", "process_tree", "tagged_pids", "kill_pids", "checkpoint_round"]

#: A tiny run config (tiny random BERT, synthetic text, finite-difference l1-grad): the tests' base and the demo's
#: ``--quick`` run (each adds its out-dir and scenario keys).
TINY = {
    "method": "treelora", "scenario": "staggered", "stream": "synthetic-text", "backbone": "tiny-bert",
    "regularizer": "l1-grad-fd", "local-steps": 2, "batch-size": 8, "train-per-class": 16, "test-per-class": 4,
    "sketch-dim": 64, "threads": 1,
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _children_map() -> dict[int, list[int]]:
    kids: dict[int, list[int]] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            stat = (proc / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        kids.setdefault(ppid, []).append(int(proc.name))
    return kids


def process_tree(pid: int) -> list[int]:
    """pid and all its descendants (snapshot)."""
    kids, out, todo = _children_map(), [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(kids.get(p, []))
    return out


def tagged_pids(tag: str) -> list[int]:
    """Processes whose environment carries TREELORA_DEPLOY_TAG=<tag>: exactly what this test started."""
    needle = f"TREELORA_DEPLOY_TAG={tag}".encode()
    pids = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            env = (proc / "environ").read_bytes()
        except OSError:
            continue
        if needle in env.split(b"\0"):
            pids.append(int(proc.name))
    return pids


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def kill_pids(pids: list[int], sig: int = signal.SIGKILL, wait: float = 10.0) -> None:
    for pid in pids:
        try:
            os.kill(pid, sig)
        except (ProcessLookupError, PermissionError):
            pass
    deadline = time.time() + wait
    while time.time() < deadline and any(_alive(p) for p in pids):
        time.sleep(0.1)


class Proc:
    """A started component (script → exec'd flower-* process) with its log."""

    def __init__(self, name: str, popen: subprocess.Popen, log: Path) -> None:
        self.name, self.popen, self.log = name, popen, log

    @property
    def pid(self) -> int:
        return self.popen.pid

    def text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def tail(self, n: int = 40) -> str:
        return f"----- {self.name} ({self.log}) -----\n" + "\n".join(self.text().splitlines()[-n:])

    def kill_tree(self, sig: int = signal.SIGKILL, grace: float = 15.0) -> None:
        """Signal the component and all its descendants (SuperExec, ServerApp/ClientApp processes) at once;
        SIGKILL whatever is still alive after ``grace`` seconds."""
        pids = process_tree(self.pid)
        kill_pids(pids, sig, wait=grace)
        kill_pids([p for p in pids if _alive(p)], signal.SIGKILL)
        try:
            self.popen.wait(timeout=10)
        except subprocess.TimeoutExpired:
            pass

    def children_named(self, name: str) -> list[int]:
        """Live descendants whose command line mentions ``name`` (e.g. flwr-clientapp)."""
        out = []
        for pid in process_tree(self.pid)[1:]:
            try:
                cmd = Path(f"/proc/{pid}/cmdline").read_bytes()
            except OSError:
                continue
            if name.encode() in cmd and _alive(pid):
                out.append(pid)
        return out


def checkpoint_round(out: Path) -> int:
    """Round of ``<out>/checkpoint.pb`` (0 when absent); the file is replaced atomically by the server."""
    from protos.wire import parse_checkpoint

    path = out / "checkpoint.pb"
    return int(parse_checkpoint(path.read_bytes()).round) if path.exists() else 0


class Deployment:
    """One SuperLink with TLS + node authentication + SQLite, and SuperNodes, all on 127.0.0.1, under ``tmp``
    (certs/, keys/, state/, flwr-home/, logs/, superlink.db). ``tag`` defaults to a fresh one."""

    def __init__(self, tmp: Path, tag: str | None = None) -> None:
        self.tmp = tmp
        self.tag = tag or uuid.uuid4().hex
        self.port = free_port()
        self.logs = tmp / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        self.procs: list[Proc] = []
        self.superlink: Proc | None = None
        self.nodes: dict[int, Proc] = {}
        self.node_ports: dict[int, int] = {}
        self.env = quiet_env(dict(
            os.environ,
            TREELORA_DEPLOY_TAG=self.tag,
            DEPLOY_DIR=str(tmp),
            FLWR_HOME=str(tmp / "flwr-home"),
            FLWR_DISABLE_RUNTIME_DEPENDENCY_INSTALLATION="1",
            HF_HUB_OFFLINE="1",
            TOKENIZERS_PARALLELISM="false",
            SUPERLINK_PORT=str(self.port),
            SUPERLINK_ADDRESS=f"127.0.0.1:{self.port}",
            PYTHON=sys.executable,
            PATH=f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}",
            PYTHONUNBUFFERED="1",
        ))

    # ------------------------------------------------------------------ helpers
    def sh(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess:
        proc = subprocess.run(list(args), cwd=ROOT, env=self.env, capture_output=True, text=True, timeout=timeout)
        if check and proc.returncode != 0:
            raise AssertionError(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
        return proc

    def start(self, name: str, *args: str, env: dict[str, str] | None = None) -> Proc:
        log = self.logs / f"{name}.log"
        with open(log, "ab") as f:
            popen = subprocess.Popen(list(args), cwd=ROOT, env=dict(self.env, **(env or {})), stdout=f,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        proc = Proc(name, popen, log)
        self.procs.append(proc)
        return proc

    def diagnostics(self) -> str:
        return "\n".join(p.tail() for p in self.procs)

    def wait_for(self, what: str, cond: Callable[[], object], timeout: float, interval: float = 0.3) -> object:
        deadline = time.time() + timeout
        while time.time() < deadline:
            value = cond()
            if value:
                return value
            time.sleep(interval)
        raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}\n{self.diagnostics()}")

    # ------------------------------------------------------------------ setup steps (the scripts of simulations/deploy)
    def make_certs(self) -> None:
        self.sh("bash", str(DEPLOY / "make_certs.sh"), str(self.tmp / "certs"))

    def make_keys(self, *names: str) -> None:
        self.sh(sys.executable, "-m", "simulations.deploy.make_keys", "gen", "--out", str(self.tmp / "keys"), *names)

    def start_superlink(self) -> Proc:
        self.superlink = self.start("superlink", "bash", str(DEPLOY / "start_superlink.sh"))
        self.wait_for("the SuperLink's TLS port", self._tls_ready, 60)
        return self.superlink

    def _tls_ready(self) -> bool:
        if self.superlink is not None and self.superlink.popen.poll() is not None:
            raise AssertionError(f"the SuperLink exited ({self.superlink.popen.returncode})\n{self.diagnostics()}")
        ctx = ssl.create_default_context(cafile=str(self.tmp / "certs" / "ca.crt"))
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as sock:
                with ctx.wrap_socket(sock, server_hostname="127.0.0.1"):
                    return True
        except OSError:
            return False

    def configure_cli(self) -> None:
        self.sh("bash", str(DEPLOY / "configure_cli.sh"))

    def register(self, *names: str) -> dict[str, int]:
        """make_keys.py register (what `flwr supernode register` does) for each key; returns name → node id."""
        out = self.sh(
            sys.executable,
            "-m",
            "simulations.deploy.make_keys",
            "register",
            "--keys",
            str(self.tmp / "keys"),
            "--connection",
            "deploy",
            *names,
        ).stdout
        ids = {line.split()[0]: int(line.split()[1]) for line in out.splitlines() if len(line.split()) == 2}
        assert set(ids) == set(names), out
        return ids

    def start_node(
        self, pid: int, num: int, key: str | None = None, extra: tuple[str, ...] = (), name: str | None = None,
        device: str = "cpu",
    ) -> Proc:
        port = self.node_ports.setdefault(pid, free_port()) if key is None else free_port()
        env = {"NODE_PORT": str(port)}
        if key is not None:
            env["NODE_KEY"] = str(self.tmp / "keys" / key)
        proc = self.start(
            name or f"node{pid}",
            "bash",
            str(DEPLOY / "start_supernode.sh"),
            str(pid),
            str(num),
            str(self.tmp / "state"),
            device,
            *extra,
            env=env,
        )
        if key is None:
            self.nodes[pid] = proc
        return proc

    def wait_nodes_active(self, ids: list[int], timeout: float = 60) -> None:
        """Until the SuperLink has logged the activation of every given node id."""

        def done() -> bool:
            text = self.superlink.text() if self.superlink else ""
            return all(f"Activated node_id={i}" in text for i in ids)

        self.wait_for(f"activation of nodes {ids}", done, timeout)

    def write_preset(self, run_config: dict) -> Path:
        """A run-config TOML file under the deployment's folder."""
        preset = self.tmp / f"preset-{uuid.uuid4().hex[:6]}.toml"
        preset.write_text("".join(f"{k} = {json.dumps(v)}\n" for k, v in run_config.items()))
        return preset

    def submit(self, run_config: dict, overrides: str = "") -> int:
        """run_federation.sh with STREAM=0; returns the run id."""
        preset = self.write_preset(run_config)
        proc = subprocess.run(
            ["bash", str(DEPLOY / "run_federation.sh"), str(preset), overrides, "--format", "json"],
            cwd=ROOT,
            env=dict(self.env, STREAM="0"),
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert proc.returncode == 0, f"run_federation.sh failed:\n{proc.stdout}\n{proc.stderr}\n{self.diagnostics()}"
        data = json.loads(proc.stdout[proc.stdout.index("{") :])
        assert data.get("success"), proc.stdout
        return int(data["run-id"])

    def cleanup(self) -> None:
        for proc in self.procs:
            if proc.popen.poll() is None:
                kill_pids(process_tree(proc.pid), signal.SIGKILL, wait=5)
        kill_pids(tagged_pids(self.tag), signal.SIGKILL, wait=10)
        for proc in self.procs:
            try:
                proc.popen.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
