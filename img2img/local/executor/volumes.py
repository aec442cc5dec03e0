"""A pod's volumes on this host, and the bind mounts that put them where its containers expect them.

With mount namespaces (see processes.py) volumes are bind-mounted on their `mountPath`: emptyDir (a fresh folder),
hostPath, configMap/secret/downwardAPI/projected (files written by the executor, read-only; projected service account
tokens come from the TokenRequest API), persistentVolumeClaim (`<stateDir>/pvc/<namespace>/<claim>/`, shared by the
claim's pods); and a per-container file is bind-mounted on `terminationMessagePath` (default
`/dev/termination-log`). Missing mount targets are created on the host filesystem (an empty file or folder), as the
runtime does inside an image. The files are written once: no token refresh, no volume updates.
"""

from __future__ import annotations

import base64
import os
import shutil
from collections.abc import Callable, Mapping
from pathlib import Path

from img2img.api.termination import TERMINATION_LOG_PATH
from img2img.kube import Kube
from img2img.local.executor.env import field_ref_value, resource_field_value

Files = dict[str, tuple[bytes, int | None]]  # path in the volume -> (content, mode; None: 0644)


class VolumeError(Exception):
    """FailedMount: the message is what the kubelet shows in the pod's events."""


def prepare_volumes(pod: dict, volumes_dir: Path, *, kube: Kube, pvc_root: Path, pod_ip: str, host_ip: str,
                    node_allocatable: Callable[[], dict]) -> dict[str, tuple[str, bool]]:
    """Every volume of the pod as a host path: {name: (path, read-only)}. Raises VolumeError."""
    meta, spec = pod["metadata"], pod["spec"]
    ns = meta["namespace"]
    out: dict[str, tuple[str, bool]] = {}
    for vol in spec.get("volumes") or []:
        name = vol["name"]
        target = volumes_dir / name
        if "emptyDir" in vol:
            target.mkdir(parents=True, exist_ok=True)
            out[name] = (str(target), False)
        elif "hostPath" in vol:
            out[name] = (_host_path(name, vol["hostPath"]), False)
        elif "persistentVolumeClaim" in vol:
            claim = vol["persistentVolumeClaim"]
            path = pvc_root / ns / claim["claimName"]
            path.mkdir(parents=True, exist_ok=True)
            out[name] = (str(path), bool(claim.get("readOnly")))
        elif "configMap" in vol or "secret" in vol or "downwardAPI" in vol or "projected" in vol:
            files: Files = {}
            if "configMap" in vol:
                _add_source_files(files, kube, ns, name, "configMap", vol["configMap"],
                                  vol["configMap"].get("defaultMode"))
            elif "secret" in vol:
                _add_source_files(files, kube, ns, name, "secret", vol["secret"], vol["secret"].get("defaultMode"))
            elif "downwardAPI" in vol:
                _add_downward_files(files, pod, vol["downwardAPI"].get("items") or [],
                                    vol["downwardAPI"].get("defaultMode"), pod_ip, host_ip, node_allocatable)
            else:
                mode = vol["projected"].get("defaultMode")
                for source in vol["projected"].get("sources") or []:
                    if "serviceAccountToken" in source:
                        _add_token(files, kube, pod, name, source["serviceAccountToken"], mode)
                    elif "configMap" in source:
                        _add_source_files(files, kube, ns, name, "configMap", source["configMap"], mode)
                    elif "secret" in source:
                        _add_source_files(files, kube, ns, name, "secret", source["secret"], mode)
                    elif "downwardAPI" in source:
                        _add_downward_files(files, pod, source["downwardAPI"].get("items") or [], mode, pod_ip,
                                            host_ip, node_allocatable)
            write_files(target, files)
            out[name] = (str(target), True)
        else:
            kind = next((k for k in vol if k != "name"), "?")
            raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : volume type {kind} is not '
                              "supported by the local executor")
    return out


def container_mounts(container: Mapping, volumes: Mapping[str, tuple[str, bool]],
                     termination_file: Path) -> list[dict]:
    """One container's bind mounts (executor_sandbox's spec): its volumeMounts, then its termination message file."""
    mounts = []
    for vm in container.get("volumeMounts") or []:
        source, ro = volumes.get(vm["name"], (None, False))
        if source is None:
            continue
        if vm.get("subPath"):
            source = os.path.join(source, vm["subPath"])
            if not os.path.exists(source):
                os.makedirs(source, exist_ok=True)
        mounts.append({"source": source, "target": vm["mountPath"], "read_only": ro or bool(vm.get("readOnly"))})
    mounts.append({"source": str(termination_file),
                   "target": container.get("terminationMessagePath") or TERMINATION_LOG_PATH, "read_only": False})
    return mounts


def write_files(folder: Path, files: Files) -> None:
    if folder.exists():
        shutil.rmtree(folder)
    folder.mkdir(parents=True)
    for rel, (data, mode) in files.items():
        path = folder / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
        path.chmod(0o644 if mode is None else int(mode) & 0o777)


def _host_path(name: str, hp: dict) -> str:
    path, htype = hp["path"], hp.get("type") or ""
    if htype == "DirectoryOrCreate":
        os.makedirs(path, mode=0o755, exist_ok=True)
    elif htype == "FileOrCreate":
        os.makedirs(os.path.dirname(path) or "/", exist_ok=True)
        with open(path, "a"):
            pass
    elif htype == "Directory" and not os.path.isdir(path):
        raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {path} '
                          "is not a directory")
    elif htype == "File" and not os.path.isfile(path):
        raise VolumeError(f'MountVolume.SetUp failed for volume "{name}" : hostPath type check failed: {path} '
                          "is not a file")
    elif not htype and not os.path.exists(path):
        os.makedirs(path, exist_ok=True)  # the runtime creates a missing unchecked hostPath as a directory
    return path


def _add_source_files(files: Files, kube: Kube, ns: str, volume: str, kind: str, source: dict, default_mode) -> None:
    obj_name = source.get("name") if kind == "configMap" else source.get("secretName", source.get("name"))
    plural = "configmaps" if kind == "configMap" else "secrets"
    try:
        obj = kube.get(f"/api/v1/namespaces/{ns}/{plural}/{obj_name}")
    except Exception as e:  # noqa: BLE001
        raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {e}') from None
    if obj is None:
        if source.get("optional"):
            return
        raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : {kind.lower()} "{obj_name}" not found')
    if kind == "configMap":
        data = {k: v.encode() for k, v in (obj.get("data") or {}).items()}
        data.update({k: base64.b64decode(v) for k, v in (obj.get("binaryData") or {}).items()})
    else:
        data = {k: base64.b64decode(v) for k, v in (obj.get("data") or {}).items()}
    items = source.get("items")
    mode = source.get("defaultMode", default_mode)
    if items:
        for item in items:
            if item["key"] not in data:
                if source.get("optional"):
                    continue
                raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : configmap references '
                                  f"non-existent config key: {item['key']}" if kind == "configMap" else
                                  f'MountVolume.SetUp failed for volume "{volume}" : references non-existent '
                                  f"secret key: {item['key']}")
            files[item.get("path") or item["key"]] = (data[item["key"]], item.get("mode", mode))
    else:
        for k, v in data.items():
            files[k] = (v, mode)


def _add_downward_files(files: Files, pod: dict, items: list, mode, pod_ip: str, host_ip: str,
                        node_allocatable: Callable[[], dict]) -> None:
    for item in items:
        if "fieldRef" in item:
            value = field_ref_value(pod, item["fieldRef"].get("fieldPath", ""), pod_ip=pod_ip, host_ip=host_ip)
        elif "resourceFieldRef" in item:
            ref = item["resourceFieldRef"]
            container = next((c for c in pod["spec"].get("containers") or []
                              if c["name"] == ref.get("containerName")), {})
            value = resource_field_value(container, ref, node_allocatable())
        else:
            continue
        files[item["path"]] = (value.encode(), item.get("mode", mode))


def _add_token(files: Files, kube: Kube, pod: dict, volume: str, source: dict, mode) -> None:
    meta = pod["metadata"]
    sa = pod["spec"].get("serviceAccountName") or "default"
    body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenRequest",
            "spec": {"audiences": [source["audience"]] if source.get("audience") else [],
                     "expirationSeconds": int(source.get("expirationSeconds") or 3607),
                     "boundObjectRef": {"apiVersion": "v1", "kind": "Pod", "name": meta["name"], "uid": meta["uid"]}}}
    try:
        resp = kube.request("POST", f"/api/v1/namespaces/{meta['namespace']}/serviceaccounts/{sa}/token", body=body)
    except Exception as e:  # noqa: BLE001
        raise VolumeError(f'MountVolume.SetUp failed for volume "{volume}" : failed to fetch token: {e}') from None
    files[source.get("path") or "token"] = (resp["status"]["token"].encode(), mode if mode is not None else 0o600)
