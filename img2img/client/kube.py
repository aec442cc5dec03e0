"""The cluster side of the CLI: Img2ImgJobs on the current kube context (img2img.kube), failures as one-line errors."""

from __future__ import annotations

from typing import Any

from img2img import API_GROUP, KIND, PLURAL
from img2img.client.errors import ClientError, one_line
from img2img.kube import Kube, KubeError, NoContext, connect, job_path


class Cluster:
    """Img2ImgJobs by name; every failure becomes a one-line ClientError."""

    def __init__(self, kube: Kube):
        self.kube = kube
        self.namespace = kube.namespace  # the context's namespace, or the service account's in a pod

    def call(self, what: str, method: str, path: str, **kwargs) -> Any:
        """One API request (see ``Kube.request``), ``what`` naming it in the error."""
        try:
            return self.kube.request(method, path, **kwargs)
        except KubeError as exc:
            raise ClientError(f"{what}: {api_reason(exc)}") from None

    def get(self, name: str, namespace: str) -> dict:
        return self.call(f"get {name}", "GET", job_path(namespace, name))

    def find_job(self, name: str, namespace: str) -> dict:
        """``get``, with a job that does not exist said as such."""
        try:
            return self.get(name, namespace)
        except ClientError as exc:
            if "not found" in str(exc) and "not installed" not in str(exc):
                raise ClientError(f"{KIND} {name!r} not found in namespace {namespace!r}") from None
            raise


def current_cluster(kubeconfig: str | None = None) -> Cluster:
    """The cluster of the kube context (``kubeconfig``, else ``$KUBECONFIG`` or ~/.kube/config), else of the pod's
    service account."""
    try:
        return Cluster(connect(kubeconfig))
    except NoContext as exc:
        raise ClientError(f"no Kubernetes context ({exc.where}: {one_line(exc.why)}); set KUBECONFIG or select a "
                          "context with `kubectl config use-context`; for the embedded stack: "
                          'eval "$(img2img local up)"') from None
    except (OSError, ValueError, TypeError, KeyError) as exc:
        raise ClientError(f"cannot load the kubeconfig: {one_line(exc)}") from None


def api_reason(exc: KubeError) -> str:
    """What the API server said, in one line (422: every field with its reason)."""
    if exc.status == 404 and not exc.details.get("name") and "namespaces" not in exc.message:
        return (f"the {KIND} resource ({PLURAL}.{API_GROUP}) is not installed in this cluster; install the CRD "
                "(kubectl apply --server-side -f crds/, or the Helm chart)")
    if exc.status == 401:
        return "unauthorized: the kube context's credentials were refused"
    return one_line(exc.message)
