"""``img2img-gateway --config FILE``: serve RunPod's queue API until SIGTERM.

Start-up: the configuration (``--check-config`` stops there), the model catalog for the discovery calls, an API
client (in-cluster, else the kubeconfig), the watches of the endpoints' namespaces, the API keys from their Secrets
and the operator's webhook public key from its ConfigMap (both read again every ``keyRefreshSeconds``, so a rotated
key takes effect without a restart), then the HTTP server.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from img2img.api.webhook_signing import PUBLIC_ENTRY
from img2img_gateway.auth import Grant, digest
from img2img_gateway.config import ConfigError, GatewayConfig, load_config

log = logging.getLogger("img2img_gateway")


async def load_grants(kube, config: GatewayConfig) -> list[Grant]:
    """A grant per key whose Secret holds a value; the others are logged and left out."""
    grants = []
    for ref in config.keys:
        value = await kube.read_secret_value(config.namespace, ref.secret, ref.secretKey)
        if not value:
            log.warning("API key Secret %s/%s has no value under %r: that key is not accepted", config.namespace,
                        ref.secret, ref.secretKey)
            continue
        grants.append(Grant(f"{ref.secret}/{ref.secretKey}", digest(value), frozenset(ref.endpoints),
                            ref.rateLimit))
    return grants


async def load_keys(gateway) -> None:
    """The API keys, and the webhook public key (kept when the ConfigMap is not there yet)."""
    config = gateway.config
    gateway.grants = await load_grants(gateway.kube, config)
    gateway.webhook_public_key = await gateway.kube.read_config_map_value(
        config.namespace, config.webhookPublicKeyConfigMap, PUBLIC_ENTRY) or gateway.webhook_public_key


async def refresh_keys(gateway) -> None:
    while True:
        await asyncio.sleep(gateway.config.keyRefreshSeconds)
        try:
            await load_keys(gateway)
        except Exception as exc:  # keep the keys we have: the API server may be restarting
            log.warning("reading the API key Secrets or the webhook key failed (%s); keeping the keys read before",
                        exc)


def load_catalog(config: GatewayConfig):
    if not config.catalogPath:
        return None
    from img2img_runner.catalog import Catalog, CatalogError

    try:
        return Catalog.from_file(config.catalogPath)
    except CatalogError as exc:
        raise ConfigError(str(exc)) from None


async def serve(config: GatewayConfig) -> None:
    from aiohttp import web

    from img2img_gateway.app import Gateway
    from img2img_gateway.kube import Kube, connect
    from img2img_gateway.objects import Objects
    from img2img_gateway.store import JobStore

    catalog = load_catalog(config)
    kube = Kube(await connect())
    store = JobStore(kube, config.namespaces)
    gateway = Gateway(config, kube, store, Objects(config.s3, config.presignExpirySeconds, config.imageCacheBytes),
                      catalog)
    store.start()
    await load_keys(gateway)
    gateway.keys_loaded = True
    keys = asyncio.create_task(refresh_keys(gateway))
    runner = web.AppRunner(gateway.app(), access_log=None, handle_signals=False)
    await runner.setup()
    await web.TCPSite(runner, config.host, config.port).start()
    log.info("serving RunPod's API for endpoints %s on %s:%s", ", ".join(config.endpoints), config.host, config.port)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("stopping")
    keys.cancel()
    await runner.cleanup()
    await store.stop()
    await kube.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="img2img-gateway", description=__doc__.splitlines()[0])
    parser.add_argument("--config", help="the configuration file (default: $IMG2IMG_GATEWAY_CONFIG)")
    parser.add_argument("--check-config", action="store_true", help="check the configuration and exit")
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"])
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        config = load_config(args.config)
        if args.check_config:
            load_catalog(config)
            print("configuration OK")
            return 0
        from img2img.kube_async import read_objects_of_any_depth

        read_objects_of_any_depth()
        asyncio.run(serve(config))
    except ConfigError as exc:
        print(f"img2img-gateway: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
