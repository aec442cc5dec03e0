"""A container's environment and command line, as the kubelet builds them (`makeEnvironmentVariables`).

The process gets the container's env (values, Secret and ConfigMap keys, envFrom, fieldRef, resourceFieldRef) over
the image's env (`PATH` = the image table's prepended dirs + the standard container PATH, `HOSTNAME`, `HOME`, the
table's `env` and `inherit`) and `KUBERNETES_SERVICE_HOST/PORT` pointing at the API server.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable, Mapping
from decimal import Decimal
from urllib.parse import urlparse

from img2img.local.executor.quantities import parse_quantity

CONTAINER_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"


def image_env(entry: Mapping, hostname: str, host_env: Mapping[str, str]) -> dict[str, str]:
    """The environment an image entry (see config.normalize_images) gives every container, before the pod's own."""
    env = {"PATH": ":".join([*entry["path_prepend"], CONTAINER_PATH]), "HOSTNAME": hostname,
           "HOME": host_env.get("HOME", "/root")}
    for name in entry["inherit"]:
        if name in host_env:
            env[name] = host_env[name]
    env.update(entry["env"])
    return env


def kubernetes_service_env(api_url: str) -> dict[str, str]:
    """The `kubernetes` Service's variables, pointing at the API server the executor talks to."""
    api = urlparse(api_url)
    port = str(api.port or 443)
    return {
        "KUBERNETES_SERVICE_HOST": api.hostname or "127.0.0.1",
        "KUBERNETES_SERVICE_PORT": port,
        "KUBERNETES_SERVICE_PORT_HTTPS": port,
        "KUBERNETES_PORT": f"tcp://{api.hostname}:{port}",
    }


def expand(text: str, lookup: Mapping[str, str]) -> str:
    """k8s.io/kubernetes third_party/forked/golang/expansion.Expand: $(VAR), $$ escapes, unknown refs kept."""
    out = []
    checkpoint = 0
    cursor = 0
    n = len(text)
    while cursor < n:
        if text[cursor] == "$" and cursor + 1 < n:
            out.append(text[checkpoint:cursor])
            rest = text[cursor + 1:]
            if rest[0] == "$":
                read, is_var, advance = "$", False, 1
            elif rest[0] == "(":
                close = rest.find(")", 1)
                if close == -1:
                    read, is_var, advance = "$(", False, 1
                else:
                    read, is_var, advance = rest[1:close], True, close + 1
            else:
                read, is_var, advance = "$" + rest[0], False, 1
            if is_var:
                out.append(lookup[read] if read in lookup else f"$({read})")
            else:
                out.append(read)
            cursor += advance
            checkpoint = cursor + 1
        cursor += 1
    out.append(text[checkpoint:])
    return "".join(out)


class EnvError(Exception):
    """CreateContainerConfigError: the message is what the kubelet shows in the waiting state."""


_FIELD_LABEL = re.compile(r"^metadata\.(labels|annotations)\['(.+)'\]$")


def field_ref_value(pod: Mapping, path: str, *, pod_ip: str, host_ip: str) -> str:
    meta, spec = pod.get("metadata") or {}, pod.get("spec") or {}
    simple = {
        "metadata.name": meta.get("name", ""),
        "metadata.namespace": meta.get("namespace", ""),
        "metadata.uid": meta.get("uid", ""),
        "spec.nodeName": spec.get("nodeName", ""),
        "spec.serviceAccountName": spec.get("serviceAccountName", ""),
        "status.podIP": pod_ip,
        "status.podIPs": pod_ip,
        "status.hostIP": host_ip,
        "status.hostIPs": host_ip,
    }
    if path in simple:
        return simple[path] or ""
    m = _FIELD_LABEL.match(path)
    if m:
        return (meta.get(m.group(1)) or {}).get(m.group(2), "")
    if path in ("metadata.labels", "metadata.annotations"):
        items = meta.get(path.split(".")[1]) or {}
        return "\n".join(f'{k}="{v}"' for k, v in sorted(items.items()))
    raise EnvError(f"unsupported fieldRef {path!r}")


def resource_field_value(container: Mapping, ref: Mapping, node_alloc: Mapping[str, Decimal]) -> str:
    resource = ref.get("resource", "")
    divisor = parse_quantity(ref.get("divisor") or "1")
    if divisor == 0:
        divisor = Decimal(1)
    kind, _, name = resource.partition(".")
    resources = container.get("resources") or {}
    raw = (resources.get(kind) or {}).get(name)
    if raw is None and kind == "requests":
        raw = (resources.get("limits") or {}).get(name)
    if raw is not None:
        value = parse_quantity(raw)
    else:  # no limit: the node's allocatable, as the kubelet reports it
        value = node_alloc.get(name, Decimal(0)) if kind == "limits" else Decimal(0)
    return str(int(math.ceil(value / divisor)))


def secret_value(secret: Mapping, key: str) -> str | None:
    data = secret.get("data") or {}
    if key in data:
        return base64.b64decode(data[key]).decode("utf-8", errors="replace")
    string_data = secret.get("stringData") or {}
    return string_data.get(key)


def configmap_value(cm: Mapping, key: str) -> str | None:
    data = cm.get("data") or {}
    if key in data:
        return data[key]
    binary = cm.get("binaryData") or {}
    if key in binary:
        return base64.b64decode(binary[key]).decode("utf-8", errors="replace")
    return None


_ENV_NAME = re.compile(r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")

Getter = Callable[[str, str], "Mapping | None"]  # (namespace, name) -> object, None if not found


def _referenced(ns: str, ref: Mapping, get: Getter, noun: str) -> Mapping | None:
    """The Secret or ConfigMap ``ref`` names; None when it is missing and optional, else the kubelet's error."""
    obj = get(ns, ref.get("name", ""))
    if obj is None and not ref.get("optional"):
        raise EnvError(f'{noun} "{ref.get("name")}" not found')
    return obj


def container_env(pod: Mapping, container: Mapping, *, get_secret: Getter, get_configmap: Getter,
                  service_env: Mapping[str, str], pod_ip: str, host_ip: str,
                  node_alloc: Mapping[str, Decimal] | None = None) -> dict[str, str]:
    """kubelet makeEnvironmentVariables: envFrom, then env (with $(VAR) expansion), then service links.

    Raises EnvError with the kubelet's message for CreateContainerConfigError.
    """
    ns = (pod.get("metadata") or {}).get("namespace", "default")
    # where a variable can come from: (read it, a key's value, the kubelet's words for it)
    sources = {"configMapRef": (get_configmap, configmap_value, "configmap", "ConfigMap"),
               "secretRef": (get_secret, secret_value, "secret", "Secret")}
    key_refs = {"secretKeyRef": sources["secretRef"], "configMapKeyRef": sources["configMapRef"]}
    env: dict[str, str] = {}
    for source in container.get("envFrom") or []:
        prefix = source.get("prefix") or ""
        kind = next((k for k in sources if k in source), None)
        if kind is None:
            continue
        get, value_of, noun, _ = sources[kind]
        ref = source[kind]
        obj = _referenced(ns, ref, get, noun)
        for k in (obj or {}).get("data") or {}:
            if _ENV_NAME.match(prefix + k):
                env[prefix + k] = value_of(obj, k) or ""
    lookup_base = dict(service_env)
    for var in container.get("env") or []:
        name = var.get("name", "")
        if "valueFrom" not in var:
            value = expand(var.get("value") or "", {**lookup_base, **env})
        else:
            source = var["valueFrom"] or {}
            kind = next((k for k in key_refs if k in source), None)
            if kind is not None:
                get, value_of, noun, title = key_refs[kind]
                ref = source[kind]
                obj = _referenced(ns, ref, get, noun)
                value = value_of(obj, ref.get("key", "")) if obj is not None else None
                if value is None:
                    if ref.get("optional"):
                        continue
                    raise EnvError(f"couldn't find key {ref.get('key')} in {title} {ns}/{ref.get('name')}")
            elif "fieldRef" in source:
                value = field_ref_value(pod, source["fieldRef"].get("fieldPath", ""), pod_ip=pod_ip, host_ip=host_ip)
            elif "resourceFieldRef" in source:
                value = resource_field_value(container, source["resourceFieldRef"], node_alloc or {})
            else:
                raise EnvError(f"unsupported valueFrom for {name}")
        env[name] = value
    for k, v in service_env.items():
        env.setdefault(k, v)
    return env


def container_argv(container: Mapping, env: Mapping[str, str]) -> list[str] | None:
    """command + args with $(VAR) expansion; None when there is no command (there is no image entrypoint here)."""
    command = list(container.get("command") or [])
    if not command:
        return None
    return [expand(a, env) for a in command + list(container.get("args") or [])]

