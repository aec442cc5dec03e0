"""``img2img-operator``: kopf for login, health, startup and cleanup; the reflectors, the dispatcher and the runner
endpoint for everything else, the last two in the replica that leads.

kopf handles no resource: it would list jobs unpaged and hold a worker with each job's whole body (with 10,000 jobs
present, most of the operator's memory), and write on them. Jobs are watched by the operator's own reflectors
(``Kube.reflect``: paged lists, each page trimmed to what the cache keeps, then a watch), one per watched namespace
or one for all, in every replica; runner pods and RunnerPools, in the runner namespace only (which need not be a
namespace whose jobs are watched, and the operator has no rights on pods anywhere else), by two more in the leader.
The dispatcher, the runner endpoint and the webhook deliveries are the only writers, and run only in the leader
(``elector``): kopf runs its startup handlers in every replica (its peering pauses watching, not them), so startup
only stands for election, and the replica starts acting once it holds the Lease: it reads (or makes) the runner-token
key and the webhook signing key, publishes the signing key's public key, and starts them; the dispatcher acts once
the reflectors have listed. A standby keeps its job cache warm and serves health and metrics, nothing else: it writes
nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import logging
import os
import sys
import time
from typing import Any

import kopf
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from img2img.api.webhook_signing import PUBLIC_ENTRY, SECRET_ENTRY, new_secret_key, public_key_text, read_secret_key
from img2img.kube_async import read_objects_of_any_depth

from .cache import Cache
from .cleanup import Cleanup
from .config import ConfigError, OperatorConfig, load_config
from .dispatcher import Dispatcher
from .elector import Elector, exit_process
from .kube import Kube
from .leases import LeaseTable
from .metrics import Metrics
from .runner_api import RunnerApi
from .runner_pods import made_by_operator
from .runners import Registry
from .staging import Staging
from .webhooks import Webhooks

KEY_BYTES = 32  # the runner-token key, when the operator creates it

log = logging.getLogger("img2img_operator")


def login(settings: kopf.OperatorSettings) -> kopf.ConnectionInfo | None:
    """The credentials, kopf's and the operator's client's: the pod's service account, else the kubeconfig."""
    return kopf.login_with_service_account(settings=settings) or kopf.login_with_kubeconfig(settings=settings)


def build_settings(config: OperatorConfig) -> kopf.OperatorSettings:
    """kopf handles no resource (no watch, no diff-base, no progress, no finalizer: nothing written on a job, the
    spec with its inline images never copied); what is left of its settings is for login, startup and probes."""
    settings = kopf.OperatorSettings()
    settings.networking.request_timeout = 60
    settings.networking.connect_timeout = 10
    settings.peering.standalone = True  # one replica acts through the Lease (elector), not kopf's peering
    # No namespace or CRD scanning (it needs cluster-wide list rights the chart does not grant).
    settings.scanning.disabled = True
    return settings


# ---- the runtime -------------------------------------------------------------------------------------------------
class Runtime:
    """What lives as long as the operator: configuration, cache, metrics, the leader election, and (once leading)
    the dispatcher, the runner endpoint, the webhook deliveries and the reflectors of the runner namespace."""

    def __init__(self, config: OperatorConfig):
        self.config = config
        self.dispatcher: Dispatcher | None = None
        self.runner_api: RunnerApi | None = None
        self.webhooks: Webhooks | None = None
        self.metrics = Metrics()
        self.kube: Kube | None = None
        self.elector: Elector | None = None
        self.leading: asyncio.Task | None = None
        self.task: asyncio.Task | None = None
        self.cleaning: asyncio.Task | None = None  # deletes the S3 areas of deleted jobs (``cleanup``)
        self.job_reflectors: list[asyncio.Task] = []
        self.jobs_listed: list[asyncio.Event] = []  # one per job reflector: set once it has listed
        self.reflectors: list[asyncio.Task] = []
        self.started = time.monotonic()
        self.key: bytes | None = None  # signs runner tokens: read (or made) at startup
        self._foreign: set[str] = set()  # pods with the runner labels that the operator did not make (logged once)
        self.cache = Cache(on_change=self._changed, is_runner=self._made_here)

    def _made_here(self, pod: dict[str, Any]) -> bool:
        """A pod of the runner namespace is a runner only if this operator made it (its token, signed with the key)."""
        if self.key is not None and made_by_operator(pod, self.key):
            return True
        name = (pod.get("metadata") or {}).get("name") or ""
        if name not in self._foreign:
            self._foreign.add(name)
            log.warning("pod %s/%s has the runner labels but the operator did not make it: ignored (not counted, "
                        "served or removed)", (pod.get("metadata") or {}).get("namespace"), name)
        return False

    def _changed(self) -> None:
        if self.dispatcher is not None:
            self.dispatcher.poke()

    async def begin(self, settings: kopf.OperatorSettings) -> None:
        """At startup, in every replica: connect, watch the jobs, serve metrics, stand for election."""
        self.kube = kube = Kube(functools.partial(login, settings))
        for ns in self.config.namespaces or [None]:  # None: every namespace, in one list and watch
            listed = asyncio.Event()
            self.jobs_listed.append(listed)
            self.job_reflectors.append(asyncio.create_task(kube.reflect(
                kube.jobs_path(ns), {}, functools.partial(self.cache.replace_jobs, namespace=ns),
                self.cache.job_event, relist_seconds=self.config.timing.resync_seconds, keep=self.cache.listed_job,
                listed=listed), name=f"jobs of {ns or 'every namespace'}"))
        if self.config.metrics_port:
            self.metrics.serve(self.config.metrics_port)
        self.elector = Elector(kube, self.config.leader_election, self.config.runners.namespace, kube.instance)
        self.leading = asyncio.create_task(self._lead(), name="leader election")

    async def _lead(self) -> None:
        assert self.elector is not None and self.kube is not None
        await self.elector.campaign()
        self.metrics.leader.set(1)
        try:
            if self.config.leader_election.label_pod:
                await self.kube.label_leader(self.config.runners.namespace, self.kube.instance)
            await self.start()
        except Exception as e:
            log.exception("cannot start acting as the leader")
            await self.elector.release()
            exit_process(f"cannot start acting as the leader ({type(e).__name__}: {e})", code=1)
        await self.elector.keep()

    async def start(self) -> None:
        """Start acting (the leader only): the keys (made when missing; the signing key's public key published), the
        runner endpoint, the dispatcher with the webhook deliveries, the deletion of deleted jobs' S3 areas, the
        reflectors of the runner namespace."""
        assert self.kube is not None
        kube = self.kube
        runners = self.config.runners
        self.key = key = await kube.secret_entry(runners.namespace, runners.token_secret, "key",
                                                 lambda: os.urandom(KEY_BYTES))
        signing = await self.signing_key(kube)
        staging = Staging(self.config.s3)
        leases, registry = LeaseTable(), Registry()
        self.webhooks = Webhooks(self.config, self.cache, kube, staging, self.metrics, signing)
        self.dispatcher = Dispatcher(self.config, self.cache, kube, staging, self.metrics, leases, registry, key,
                                     self.webhooks)
        self.runner_api = RunnerApi(self.config, self.cache, self.dispatcher, leases, registry, kube, staging,
                                    self.metrics, key)
        await self.runner_api.start()
        cleanup = Cleanup(self.config, self.cache, staging, leases.holds)
        self.cache.on_job_gone = cleanup.job_gone
        dispatcher = self.dispatcher
        self.cleaning = asyncio.create_task(cleanup.run(lambda: dispatcher.synced), name="S3 cleanup")
        resync = self.config.timing.resync_seconds
        pods_listed, pools_listed = asyncio.Event(), asyncio.Event()
        self.reflectors = [
            asyncio.create_task(kube.reflect(kube.pods_path(runners.namespace), kube.POD_QUERY,
                                             self.cache.replace_pods, self.cache.pod_event, relist_seconds=resync,
                                             listed=pods_listed), name="runner pods"),
            asyncio.create_task(kube.reflect(kube.pools_path(runners.namespace), {},
                                             self.cache.replace_pools, self.cache.pool_event, relist_seconds=resync,
                                             listed=pools_listed), name="runner pools"),
        ]
        self.task = asyncio.create_task(self._dispatch([*self.jobs_listed, pods_listed, pools_listed]),
                                        name="img2img dispatcher")
        log.info("operator started (namespaces: %s; runners in %s, endpoint on :%d; GPU classes: %s; metrics on "
                 ":%s)", ", ".join(self.config.namespaces) or "all", runners.namespace, runners.port,
                 ", ".join(self.config.gpu_classes), self.config.metrics_port)

    async def _dispatch(self, listed: list[asyncio.Event]) -> None:
        """The dispatcher, once every reflector has listed (the cache holds the whole picture)."""
        assert self.dispatcher is not None
        for event in listed:
            await event.wait()
        await self.dispatcher.run()

    async def signing_key(self, kube: Kube) -> Ed25519PrivateKey:
        """The webhook signing key (its Secret made when missing), its public key published beside it."""
        hooks = self.config.webhooks
        text = await kube.secret_entry(hooks.namespace, hooks.signing_key_secret, SECRET_ENTRY,
                                       lambda: new_secret_key().encode())
        try:
            signing = read_secret_key(text.decode())
        except (UnicodeDecodeError, ValueError) as e:
            where = f"Secret {hooks.namespace}/{hooks.signing_key_secret}, key {SECRET_ENTRY}"
            raise RuntimeError(f"{where}: {e}") from None
        await kube.publish(hooks.namespace, hooks.public_key_config_map, {PUBLIC_ENTRY: public_key_text(signing)})
        return signing

    async def stop(self) -> None:
        """Stop renewing the Lease and acting, then release the Lease (a standby takes over at once)."""
        for task in [self.leading, *self.reflectors, self.task, self.cleaning, *self.job_reflectors]:
            if task is not None:
                task.cancel()
                try:
                    await task
                except (asyncio.CancelledError, Exception):
                    pass
        if self.webhooks is not None:
            await self.webhooks.close()
        if self.runner_api is not None:
            await self.runner_api.stop()
        if self.elector is not None:
            await self.elector.release()
        if self.kube is not None:
            await self.kube.close()

    def health(self) -> dict[str, Any]:
        """Liveness: a standby is alive; a leader's dispatcher runs and has passed recently (once it has listed the
        cluster)."""
        if self.elector is None or not self.elector.leading:
            return self.elector.describe() if self.elector is not None else {"role": "starting"}
        d = self.dispatcher
        if self.task is None or d is None:
            return {"role": "leader", "dispatcher": "starting"}
        if self.task.done():
            raise RuntimeError(f"the dispatcher stopped: {self.task.exception()!r}")
        stale_after = max(120.0, 6 * self.config.timing.tick_seconds)
        if d.synced and d.last_pass is not None and time.monotonic() - d.last_pass > stale_after:
            raise RuntimeError(f"no dispatcher pass for {time.monotonic() - d.last_pass:.0f} s")
        return {"role": "leader", "dispatcher": "running" if d.synced else "listing", "jobs": len(self.cache)}


def build_registry(runtime: Runtime) -> kopf.OperatorRegistry:
    registry = kopf.OperatorRegistry()

    @kopf.on.login(registry=registry)
    def credentials(settings: kopf.OperatorSettings, **_: Any) -> kopf.ConnectionInfo | None:
        return login(settings)

    @kopf.on.startup(registry=registry)
    async def startup(settings: kopf.OperatorSettings, **_: Any) -> None:
        await runtime.begin(settings)

    @kopf.on.cleanup(registry=registry)
    async def cleanup(**_: Any) -> None:
        await runtime.stop()

    @kopf.on.probe(id="dispatcher", registry=registry)
    def probe(**_: Any) -> dict[str, Any]:
        return runtime.health()

    return registry


# ---- logging -----------------------------------------------------------------------------------------------------
class _TextContext(logging.Filter):
    """Text logs: ``[namespace/job #attempt]`` before the message of records that carry a job."""

    def filter(self, record: logging.LogRecord) -> bool:
        job = getattr(record, "job", None)
        if job and not getattr(record, "_img2img_prefixed", False):
            where = f"{getattr(record, 'namespace', '')}/{job}"
            attempt = getattr(record, "attempt", None)
            record.msg = f"[{where}{f' #{attempt}' if attempt else ''}] {record.msg}"
            record._img2img_prefixed = True
        return True


def configure_logging(config: OperatorConfig, level: str | None = None) -> None:
    level = level or config.logging.level
    kopf.configure(
        debug=level == "DEBUG",
        quiet=level in ("WARNING", "ERROR"),
        log_format=kopf.LogFormat.JSON if config.logging.format == "json" else kopf.LogFormat.FULL,
    )
    logging.getLogger().setLevel(level)
    ours = logging.getLogger("img2img_operator")
    ours.setLevel(level)
    if config.logging.format == "text":
        for name in ("img2img_operator", "img2img_operator.dispatcher", "img2img_operator.kube",
                     "img2img_operator.runner_api", "img2img_operator.webhooks"):
            logging.getLogger(name).addFilter(_TextContext())
    if level != "DEBUG":
        # kopf logs every event handler call at INFO: only its warnings, unless debugging
        logging.getLogger("kopf.objects").setLevel(logging.WARNING)
    for noisy in ("botocore", "boto3", "urllib3", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ---- entry point -------------------------------------------------------------------------------------------------
def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="img2img-operator", description=__doc__.split("\n")[0])
    parser.add_argument("--config", help="the configuration file (default: $IMG2IMG_OPERATOR_CONFIG)")
    parser.add_argument("--log-level", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="overrides logging.level of the configuration")
    parser.add_argument("--check-config", action="store_true", help="load the configuration, print it, and exit")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        config = load_config(args.config)
    except ConfigError as e:
        print(f"img2img-operator: {e}", file=sys.stderr)
        return 2
    if args.check_config:
        print(config.model_dump_json(by_alias=True, indent=2))
        return 0
    configure_logging(config, args.log_level)
    read_objects_of_any_depth()
    runtime = Runtime(config)
    asyncio.run(kopf.operator(
        registry=build_registry(runtime),
        settings=build_settings(config),
        standalone=True,
        liveness_endpoint=f"http://0.0.0.0:{config.health_port}/healthz",
        clusterwide=config.all_namespaces,
        namespaces=config.namespaces,
    ))
    return 0


if __name__ == "__main__":
    sys.exit(main())
