"""A pod's volumes on the host and its containers' bind mounts (the parts that need no API server)."""

from __future__ import annotations

import pytest

from img2img.local.executor.volumes import VolumeError, container_mounts, prepare_volumes, write_files


def prepare(tmp_path, *volumes):
    pod = {"metadata": {"name": "p", "namespace": "ns", "uid": "u"}, "spec": {"volumes": list(volumes)}}
    return prepare_volumes(pod, tmp_path / "volumes", kube=None, pvc_root=tmp_path / "pvc", pod_ip="10.0.0.1",
                           host_ip="127.0.0.1", node_allocatable=dict)


def test_empty_dir_claim_and_host_path_become_host_folders(tmp_path):
    host = tmp_path / "host"
    out = prepare(tmp_path, {"name": "scratch", "emptyDir": {}},
                  {"name": "models", "persistentVolumeClaim": {"claimName": "weights", "readOnly": True}},
                  {"name": "made", "hostPath": {"path": str(host / "new"), "type": "DirectoryOrCreate"}})
    assert out == {"scratch": (str(tmp_path / "volumes" / "scratch"), False),
                   "models": (str(tmp_path / "pvc" / "ns" / "weights"), True),
                   "made": (str(host / "new"), False)}
    assert all((tmp_path / p).is_dir() for p in ("volumes/scratch", "pvc/ns/weights", "host/new"))


def test_downward_api_files_are_written_read_only(tmp_path):
    out = prepare(tmp_path, {"name": "info", "downwardAPI": {"items": [
        {"path": "name", "fieldRef": {"fieldPath": "metadata.name"}},
        {"path": "ip", "fieldRef": {"fieldPath": "status.podIP"}, "mode": 0o600}]}})
    folder, read_only = out["info"]
    assert read_only
    assert (tmp_path / "volumes" / "info" / "name").read_text() == "p"
    assert (tmp_path / "volumes" / "info" / "ip").read_text() == "10.0.0.1"
    assert (tmp_path / "volumes" / "info" / "ip").stat().st_mode & 0o777 == 0o600


@pytest.mark.parametrize("volume,message", [
    ({"name": "v", "hostPath": {"path": "/nonexistent/img2img", "type": "Directory"}},
     'MountVolume.SetUp failed for volume "v" : hostPath type check failed: /nonexistent/img2img is not a directory'),
    ({"name": "v", "nfs": {"server": "x"}},
     'MountVolume.SetUp failed for volume "v" : volume type nfs is not supported by the local executor'),
])
def test_volume_errors_name_the_volume_and_the_reason(tmp_path, volume, message):
    with pytest.raises(VolumeError) as err:
        prepare(tmp_path, volume)
    assert str(err.value) == message


def test_container_mounts_subpaths_read_only_and_the_termination_file(tmp_path):
    volumes = {"data": (str(tmp_path / "data"), False), "conf": (str(tmp_path / "conf"), True)}
    container = {"volumeMounts": [{"name": "data", "mountPath": "/data", "subPath": "a/b", "readOnly": True},
                                  {"name": "conf", "mountPath": "/etc/conf"},
                                  {"name": "unknown", "mountPath": "/x"}]}
    mounts = container_mounts(container, volumes, tmp_path / "termination-log")
    assert mounts == [
        {"source": str(tmp_path / "data" / "a" / "b"), "target": "/data", "read_only": True},
        {"source": str(tmp_path / "conf"), "target": "/etc/conf", "read_only": True},
        {"source": str(tmp_path / "termination-log"), "target": "/dev/termination-log", "read_only": False},
    ]
    assert (tmp_path / "data" / "a" / "b").is_dir()
    custom = container_mounts({"terminationMessagePath": "/tmp/msg"}, {}, tmp_path / "t")
    assert custom[-1]["target"] == "/tmp/msg"


def test_write_files_replaces_the_folder(tmp_path):
    folder = tmp_path / "v"
    write_files(folder, {"old": (b"1", None)})
    write_files(folder, {"sub/new": (b"2", 0o400)})
    assert sorted(p.relative_to(folder).as_posix() for p in folder.rglob("*")) == ["sub", "sub/new"]
    assert (folder / "sub" / "new").stat().st_mode & 0o777 == 0o400
