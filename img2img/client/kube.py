"""The cluster side of the CLI: one connection to the current kube context, and API failures as one-line errors."""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, TypeVar

from img2img import API_GROUP, API_VERSION, KIND, PLURAL
from img2img.client.errors import ClientError, one_line

SERVICE_ACCOUNT_NAMESPACE = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

T = TypeVar("T")


def connect(kubeconfig: str | None = None) -> tuple[Any, str]:
    """A ``kubernetes.client.ApiClient`` for the kube context (``kubeconfig``, else ``$KUBECONFIG`` or
    ~/.kube/config), else for the pod's service account; and that context's namespace."""
    from kubernetes import client, config

    logging.getLogger("urllib3").setLevel(logging.ERROR)  # no "Retrying (…)" lines: our error says it once
    try:
        api_client = config.new_client_from_config(config_file=kubeconfig)
        _, context = config.list_kube_config_contexts(config_file=kubeconfig)
        namespace = (context.get("context") or {}).get("namespace") or "default"
    except config.ConfigException as kube_exc:
        try:
            configuration = client.Configuration()
            config.load_incluster_config(client_configuration=configuration)
            api_client = client.ApiClient(configuration)
            namespace = SERVICE_ACCOUNT_NAMESPACE.read_text().strip()
        except (config.ConfigException, OSError):
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise ClientError(f"no Kubernetes context ({where}: {one_line(kube_exc)}); set KUBECONFIG or select a "
                              "context with `kubectl config use-context`; for the embedded stack: "
                              'eval "$(img2img local up)"') from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ClientError(f"cannot load the kubeconfig: {one_line(exc)}") from None
    return api_client, namespace


@dataclass
class Cluster:
    api: Any  # kubernetes.client.CustomObjectsApi
    namespace: str  # the context's namespace, or the service account's in a pod
    server: str

    def call(self, what: str, fn: Callable[..., T], *args, **kwargs) -> T:
        """Run one API request; every failure becomes a one-line ClientError."""
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return fn(*args, **kwargs)
        except ApiException as exc:
            raise ClientError(f"{what}: {api_reason(exc)}") from None
        except HTTPError as exc:
            reason = getattr(exc, "reason", None) or exc
            raise ClientError(f"{what}: cannot reach the Kubernetes API server at {self.server}: "
                              f"{one_line(reason)}") from None

    def get(self, name: str, namespace: str) -> dict:
        return self.call(f"get {name}", self.api.get_namespaced_custom_object,
                         API_GROUP, API_VERSION, namespace, PLURAL, name)

    def find_job(self, name: str, namespace: str) -> dict:
        """``get``, with a job that does not exist said as such."""
        try:
            return self.get(name, namespace)
        except ClientError as exc:
            if "not found" in str(exc) and "not installed" not in str(exc):
                raise ClientError(f"{KIND} {name!r} not found in namespace {namespace!r}") from None
            raise


def current_cluster() -> Cluster:
    """The cluster of the current kube context (see ``connect``)."""
    from kubernetes import client

    api_client, namespace = connect()
    return Cluster(client.CustomObjectsApi(api_client), namespace, api_client.configuration.host)


def api_reason(exc) -> str:
    """What the API server said, in one line (422: every field with its reason)."""
    try:
        body = json.loads(exc.body or "{}")
    except (TypeError, ValueError):
        body = {}
    if not isinstance(body, dict):
        body = {}
    message = body.get("message") or exc.reason or f"HTTP {exc.status}"
    details = body.get("details") or {}
    if exc.status == 404 and not details.get("name") and "namespaces" not in message:
        return (f"the {KIND} resource ({PLURAL}.{API_GROUP}) is not installed in this cluster; install the CRD "
                "(kubectl apply --server-side -f crds/, or the Helm chart)")
    if exc.status == 401:
        return "unauthorized: the kube context's credentials were refused"
    return one_line(message)
