"""A real two-node Ray cluster on this machine: two raylets started by `ray start` (a head
with 2 CPUs, a second node with 1), each in a process group of its own, with their own temp
dirs and ports, so no other `ray.init()` on the machine can find them. `automoe search
--ray-address` runs one actor per node; the second node's raylet is SIGKILLed mid-search,
and the search finishes on the head with the front of an undisturbed (serial) run. The
fixture kills every process the test started and waits for them, even when the test fails.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
from search_helpers import make_world

from automoe.cli import main

pytest.importorskip("ray")
pytestmark = pytest.mark.slow  # still in `make test`
RAY = Path(sys.executable).with_name("ray")
VOLATILE = ["worker", "eval_seconds"]  # who scored a row and how long it took


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _processes() -> dict[int, tuple[int, str]]:
    """pid -> (parent pid, command line) of every process readable in /proc."""
    out = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            cmd = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])  # the name may hold spaces
        out[int(entry.name)] = (ppid, cmd.strip() or stat.split("(", 1)[1].split(")")[0])
    return out


def _tree(root: int) -> dict[int, str]:
    """``root`` and its descendants: pid -> command line."""
    procs = _processes()
    found, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in procs and pid not in found:
            found[pid] = procs[pid][1]
            todo += [p for p, (ppid, _) in procs.items() if ppid == pid]
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _kill_node(node: Node) -> list[int]:
    """SIGKILLs the node's raylet and every process under it (its workers), as a machine
    failure would; returns their pids. Killing the raylet alone leaves its workers running
    as orphans for a while, and they keep answering calls."""
    pids = list(_tree(node.raylet()))
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    return pids


@dataclass
class Node:
    proc: subprocess.Popen
    output: list[str]

    def workers(self) -> list[int]:
        return [p for p, cmd in _tree(self.proc.pid).items() if "ScoringWorker" in cmd]

    def raylet(self) -> int:
        (pid,) = [p for p, cmd in _tree(self.proc.pid).items()
                  if cmd.split()[0].endswith("/raylet")]
        return pid


@dataclass
class Cluster:
    address: str
    temp: Path
    head: Node
    node: Node
    add_node: Callable[[int], Node]


@pytest.fixture(scope="module")
def cluster():
    # Ray's unix socket paths must stay under 108 characters: a short temp dir of our own.
    temp = Path(tempfile.mkdtemp(prefix="automoe-ray-"))
    env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
    env.update(RAY_AUTH_MODE="disabled", RAY_worker_niceness="0", RAY_USAGE_STATS_ENABLED="0",
               # a dead node is noticed in seconds, not Ray's default of about 30 s
               RAY_health_check_period_ms="1000", RAY_health_check_timeout_ms="2000",
               RAY_health_check_failure_threshold="5")
    nodes: list[Node] = []

    def start(*args: str) -> Node:
        proc = subprocess.Popen([str(RAY), "start", "--block", "--node-ip-address=127.0.0.1",
                                 "--disable-usage-stats", "--include-log-monitor=false", *args],
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                env=env, start_new_session=True)
        node = Node(proc, [])
        nodes.append(node)
        ready = threading.Event()

        def read() -> None:
            for line in proc.stdout:
                node.output.append(line)
                if "Ray runtime started" in line:
                    ready.set()

        threading.Thread(target=read, daemon=True).start()
        end = time.monotonic() + 300  # a node starts a handful of processes
        while not ready.wait(0.2):
            if proc.poll() is not None or time.monotonic() > end:
                raise RuntimeError("ray start did not come up:\n" + "".join(node.output[-30:]))
        return node

    try:
        port = _free_port()
        head = start("--head", f"--port={port}", "--num-cpus=2", f"--temp-dir={temp / 'h'}",
                     "--include-dashboard=false", f"--dashboard-agent-listen-port={_free_port()}")

        def add_node(cpus: int) -> Node:
            return start(f"--address=127.0.0.1:{port}", f"--num-cpus={cpus}",
                         f"--temp-dir={temp / f'n{len(nodes)}'}",
                         f"--dashboard-agent-listen-port={_free_port()}")

        yield Cluster(f"127.0.0.1:{port}", temp, head, add_node(1), add_node)
    finally:
        started: dict[int, str] = {}
        for n in nodes:
            started.update(_tree(n.proc.pid))
        for n in nodes:  # the group of `ray start --block`: raylet, GCS, agents, workers
            with contextlib.suppress(ProcessLookupError):
                os.killpg(n.proc.pid, signal.SIGKILL)
        for pid in started:  # any that left the group
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for n in nodes:
            n.proc.wait(timeout=60)
        deadline = time.monotonic() + 60
        while any(_alive(p) for p in started) and time.monotonic() < deadline:
            time.sleep(0.2)
        shutil.rmtree(temp, ignore_errors=True)
        left = {p: c for p, c in started.items() if _alive(p)}
        assert not left, f"processes of the test cluster still running: {left}"


def _wait(condition, what: str, driver: subprocess.Popen, timeout: float = 240.0) -> None:
    end = time.monotonic() + timeout
    while not condition():
        assert driver.poll() is None, f"the search exited ({driver.returncode}) before {what}"
        assert time.monotonic() < end, f"no {what} within {timeout:g} s"
        time.sleep(0.05)


def test_the_cluster_is_private_and_local_ray_never_joins_one(cluster):
    # Nothing points a plain ray.init() on this machine at the test cluster...
    port = cluster.address.split(":")[1]
    default = Path(tempfile.gettempdir()) / "ray" / "ray_current_cluster"
    assert not default.exists() or port not in default.read_text()
    assert port in (cluster.temp / "h" / "ray_current_cluster").read_text()
    # ...and the search's and retrain's own local Ray would not join it even if something
    # did (RAY_ADDRESS is what a plain ray.init() follows first).
    code = (
        "import json, ray\n"
        "from automoe.search.run import SearchSettings, _init_ray as search\n"
        "from automoe.training.retrain.job import RetrainSettings, _init_ray as retrain\n"
        "out = []\n"
        "for init, s in ((search, SearchSettings(supernet='s', data='d', out='o', workers=1)),\n"
        "                (retrain, RetrainSettings(run_dir='r', concurrent=1))):\n"
        "    assert init(s)\n"
        "    out.append([len(ray.nodes()), ray.cluster_resources().get('CPU')])\n"
        "    ray.shutdown()\n"
        "print(json.dumps(out))\n")
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "RAY_ADDRESS": cluster.address}
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads(done.stdout.strip().splitlines()[-1]) == [[1, 1.0], [1, 1.0]]


def test_search_survives_losing_a_node(cluster, tmp_path):
    supernet, data = make_world(tmp_path)
    common = ["search", "--supernet", str(supernet), "--data", str(data), "--objectives",
              "loss,flops", "--generations", "4", "--population", "6", "--dev-sentences", "8",
              "--seed", "5", "--no-baselines", "--quiet"]
    assert main([*common, "--workers", "0", "--out", str(tmp_path / "serial")]) == 0

    out = tmp_path / "ray"
    env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
    driver = subprocess.Popen(
        [sys.executable, "-m", "automoe.cli", *common, "--workers", "2", "--ray-address",
         cluster.address, "--out", str(out)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, start_new_session=True)
    try:
        _wait(lambda: cluster.head.workers() and cluster.node.workers(),
              "scoring actor on each node", driver)
        assert len(cluster.head.workers()) == len(cluster.node.workers()) == 1
        checkpoint = out / "checkpoint.json"
        _wait(lambda: checkpoint.exists()
              and json.loads(checkpoint.read_text())["generation"] >= 1,
              "first generation", driver)
        # Freeze the driver mid-search while the node dies, so its next call to the actor
        # there surely finds it gone (it runs 4 generations in seconds).
        os.killpg(driver.pid, signal.SIGSTOP)
        stopped_at = json.loads(checkpoint.read_text())["generation"]
        gone = _kill_node(cluster.node)  # the second node is gone, its actor with it
        end = time.monotonic() + 60
        while any(_alive(p) for p in gone) and time.monotonic() < end:
            time.sleep(0.1)
        assert not any(_alive(p) for p in gone), "the node's processes outlived SIGKILL"
        os.killpg(driver.pid, signal.SIGCONT)
        stdout, stderr = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    assert driver.returncode == 0, stderr.decode()[-3000:]
    assert stopped_at < 4 and json.loads((out / "checkpoint.json").read_text())["generation"] == 4

    assert (out / "pareto.csv").read_bytes() == (tmp_path / "serial" / "pareto.csv").read_bytes()
    table = pd.read_csv(out / "candidates.csv")
    pd.testing.assert_frame_equal(
        table.drop(columns=VOLATILE),
        pd.read_csv(tmp_path / "serial" / "candidates.csv").drop(columns=VOLATILE))
    # The lost actor's slot was refilled on the head and scored the later generations.
    replaced = table[table["worker"].str.contains(".", regex=False)]
    assert len(replaced) and replaced["generation"].min() >= 1, table[["generation", "worker"]]


def _kill_node_under_its_trial(trials: Path, node: Node, seen: dict, stop: threading.Event
                               ) -> None:
    """Kills ``node`` (`_kill_node`) once the trial running there has reported (and so stored a
    checkpoint); notes the trial's key, pid and updates in ``seen``."""
    while not stop.is_set():
        for result in trials.glob("trial_*/result.json"):
            lines = result.read_text().splitlines()
            if lines and lines[0].endswith("}"):
                row = json.loads(lines[0])
                if row["pid"] in _tree(node.proc.pid):
                    seen.update(key=result.parent.name.removeprefix("trial_"), pid=row["pid"],
                                updates=row["updates"])
                    _kill_node(node)
                    return
        time.sleep(0.05)


def test_retrain_trial_whose_node_dies_is_retried_from_its_checkpoint(cluster, tmp_path):
    from automoe.search import SearchSettings, run_search

    node = cluster.add_node(1)  # with the head's 2 CPUs: three 1-CPU trials, one of them here
    supernet, data = make_world(tmp_path)
    run = tmp_path / "search"
    run_search(SearchSettings(supernet=str(supernet), data=str(data), out=str(run),
                              objectives=("loss", "flops"), generations=1, population=4,
                              workers=0, dev_sentences=8, baselines=False, progress=False))
    keys = list(pd.read_csv(run / "candidates.csv", dtype={"key": str})["key"][:3])
    seen: dict = {}
    stop = threading.Event()
    killer = threading.Thread(target=_kill_node_under_its_trial,
                              args=(run / "retrain" / "tune", node, seen, stop), daemon=True)
    killer.start()
    try:
        # In its own process: this one may hold the suite's local Ray, which a command
        # started here would use instead of the cluster.
        env = {**os.environ, "PYTHONPATH": os.getcwd(), "OMP_NUM_THREADS": "1"}
        rc = subprocess.run(
            [sys.executable, "-m", "automoe.cli", "retrain", str(run), "--keys", ",".join(keys),
             "--ray-address", cluster.address, "--max-failures", "2", "--max-updates", "4",
             "--warmup-updates", "1", "--max-tokens", "256", "--valid-sentences", "8",
             "--report-every", "2", "--beam", "1", "--test-sentences", "2", "-q"],
            env=env, capture_output=True, text=True, timeout=600).returncode
    finally:
        stop.set()
        killer.join(timeout=10)
    assert rc == 0
    assert seen.get("updates") == 2, "no trial ran on the second node"
    table = pd.read_csv(run / "retrained.csv", dtype={"key": str}).set_index("key")
    assert (table["status"] == "finished").all() and (table["updates"] == 4).all()
    # The retried trial went on from its checkpoint at update 2 (no second report of 2),
    # in another process.
    rows = [json.loads(line) for line in
            (run / "retrain" / "tune" / f"trial_{seen['key']}" / "result.json").read_text()
            .splitlines()]
    assert [r["updates"] for r in rows][:2] == [2, 4]
    assert rows[0]["pid"] == seen["pid"] and rows[1]["pid"] != seen["pid"]
