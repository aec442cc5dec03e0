"""The gateway's connection to the API server (kubernetes_asyncio), and what the async services (operator, gateway)
need to read any object the API server stores.

The CLI, the local executor and the benchmarks are synchronous and use ``img2img.kube``; the operator has its own
aiohttp client (``img2img_operator.kube``). kubernetes_asyncio is imported only when a client is made, so that the
operator, which reads objects of any depth too, never loads it (about 70 MB of memory).
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kubernetes_asyncio import client

# The API server stores objects nested up to 10 000 levels deep (its JSON decoder's limit), and a job's free-form
# fields (script_args, comments, A1111 options) take any value. Python's json parser recurses once per level and
# stops at the recursion limit (1000): a single tenant's deeply nested job would stop every list and watch of the
# operator and the gateway, before validation could refuse the job. CPython 3.11 (the images') honours a higher
# limit; copying such a value takes about two frames a level.
API_SERVER_MAX_DEPTH = 10_000


def read_objects_of_any_depth() -> None:
    """Let this process parse (and copy) any object the API server stores; called once by the services' main."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), 3 * API_SERVER_MAX_DEPTH))


async def connect() -> client.ApiClient:
    """An API client: in-cluster service account, else the kubeconfig ($KUBECONFIG or ~/.kube/config)."""
    from kubernetes_asyncio import client, config as kconfig

    configuration = client.Configuration()
    try:
        kconfig.load_incluster_config(client_configuration=configuration)
    except kconfig.ConfigException:
        await kconfig.load_kube_config(client_configuration=configuration)
    return client.ApiClient(configuration)
