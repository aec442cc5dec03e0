"""The local executor: plays kube-scheduler and the kubelet of one node, against a real API server.

    python -m img2img.local.executor --kubeconfig PATH --config executor.yaml [--node-name N] [--state-dir D]

The configuration file is described in config.py; what the executor does, in the package's docstring.
"""

from __future__ import annotations

import argparse
import atexit
import logging
import os
import signal
import sys
import threading
import time
from pathlib import Path

import yaml

from img2img.kube import connect
from img2img.local.executor.config import Config
from img2img.local.executor.events import EventRecorder
from img2img.local.executor.informer import Informer
from img2img.local.executor.kubelet import Kubelet
from img2img.local.executor.node import NodeAgent
from img2img.local.executor.scheduler import Scheduler

log = logging.getLogger(__name__)


class Executor:
    """The node, its kubelet and (optionally) the scheduler, fed by two watches (pods, nodes) and one controller
    thread that runs a pass of each whenever something changed."""

    def __init__(self, cfg: Config, kubeconfig: str):
        self.cfg = cfg
        self.stop = threading.Event()
        self.changed = threading.Event()
        self.kube = connect(kubeconfig, pool_size=64)  # as large as a burst of pod workers: no reconnecting
        self.events = EventRecorder(self.kube, cfg.node_name, self.stop)
        self.pods = Informer(lambda: connect(kubeconfig), "/api/v1/pods", "pods", self.notify, self.stop)
        self.nodes = Informer(lambda: connect(kubeconfig), "/api/v1/nodes", "nodes", self.notify, self.stop)
        self.services = Informer(lambda: connect(kubeconfig), "/api/v1/services", "services", self.notify, self.stop)
        self.node = NodeAgent(cfg, self.kube, self.nodes, self.stop)
        self.kubelet = Kubelet(cfg, self.kube, self.events, self.node, self.notify)
        self.scheduler = Scheduler(cfg.scheduler_name, self.kube, self.events) if cfg.scheduler else None
        self.controller: threading.Thread | None = None

    def notify(self) -> None:
        self.changed.set()

    def _controller(self) -> None:
        while not self.stop.is_set():
            self.changed.wait(1.0)
            self.changed.clear()
            if self.kubelet.stopping:
                return
            time.sleep(0.02)  # let bursts of watch events coalesce
            try:
                pods = self.pods.snapshot()
                self.kubelet.networks.sync(pods, self.services.snapshot())
                self.kubelet.sync(pods)
                if self.scheduler is not None:
                    self.scheduler.schedule_pending(pods, self.nodes.snapshot())
            except Exception:  # noqa: BLE001
                log.exception("controller pass failed")

    def run(self) -> None:
        cfg = self.cfg
        self.kubelet.prepare()
        self.node.register()
        log.info("executor for node %s: capacity %s, labels %s, taints %s, scheduler %s, mount namespaces %s, "
                 "state %s, images %s", cfg.node_name, cfg.capacity, cfg.labels, cfg.taints,
                 cfg.scheduler_name if cfg.scheduler else "off", "on" if self.kubelet.mount_namespace else "off",
                 cfg.state_dir, list(cfg.images))
        self.node.start_heartbeat()
        self.pods.start()
        self.nodes.start()
        self.services.start()
        while not all(i.synced.wait(0.5) for i in (self.pods, self.nodes, self.services)):
            if self.stop.is_set():
                return
        self.controller = threading.Thread(target=self._controller, name="controller", daemon=True)
        self.controller.start()
        while not self.stop.wait(0.5):
            pass

    def shutdown(self) -> None:
        """Graceful node shutdown: every pod gets SIGTERM, then SIGKILL, and a terminal status."""
        if not self.kubelet.stop_admitting():
            return
        self.changed.set()
        if self.controller is not None and self.controller is not threading.current_thread():
            self.controller.join(10)  # it owns the kubelet's workers; it creates no new worker once stopping
        self.kubelet.shut_down()
        self.stop.set()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m img2img.local.executor", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kubeconfig", required=True)
    parser.add_argument("--config", help="executor.yaml (see img2img/local/executor/config.py)")
    parser.add_argument("--node-name", help="override nodeName")
    parser.add_argument("--state-dir", help="override stateDir")
    parser.add_argument("--log-level", default=os.environ.get("IMG2IMG_EXECUTOR_LOG_LEVEL", "INFO"))
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(message)s",
                        stream=sys.stderr)
    raw = {}
    if args.config:
        raw = yaml.safe_load(Path(args.config).read_text()) or {}
    cfg = Config.from_dict(raw)
    if args.node_name:
        cfg.node_name = args.node_name
    if args.state_dir:
        cfg.state_dir = Path(args.state_dir)
    executor = Executor(cfg, args.kubeconfig)
    processes = executor.kubelet.processes

    def on_signal(signum, _frame):
        log.info("received %s", signal.Signals(signum).name)
        threading.Thread(target=executor.shutdown, name="shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    atexit.register(processes.kill_all)
    try:
        executor.run()
    except KeyboardInterrupt:
        executor.shutdown()
    finally:
        processes.kill_all()
        executor.kubelet.networks.close()
    log.info("executor stopped")
    return 0
