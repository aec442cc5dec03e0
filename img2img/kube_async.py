"""The async services' (operator, gateway) connection to the API server, with kubernetes_asyncio.

The CLI, the local executor and the benchmarks are synchronous and use ``img2img.kube``.
"""

from __future__ import annotations

from kubernetes_asyncio import client, config as kconfig


async def connect() -> client.ApiClient:
    """An API client: in-cluster service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    configuration = client.Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)
    except kconfig.ConfigException:
        await kconfig.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)
