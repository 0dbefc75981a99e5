"""Pod volumes: Kubernetes' validation words, the kubelet's atomic writer, path mapping."""

from __future__ import annotations

import base64
import os
from pathlib import Path
from typing import Any

import pytest

from tcpmesh.api import InvalidInput, load_documents, load_documents_with_warnings
from tcpmesh.runtime import volumes
from tcpmesh.runtime.volumes import File, Mount, MountError

Obj = dict[str, Any]


def deployment(volume_list: str, mounts: str) -> str:
    return f"""\
apiVersion: apps/v1
kind: Deployment
metadata: {{name: d}}
spec:
  selector: {{matchLabels: {{app: d}}}}
  template:
    metadata: {{labels: {{app: d}}}}
    spec:
      containers:
      - name: c
        image: x
        command: [sleep]
        volumeMounts: {mounts}
      volumes: {volume_list}
"""


def errors(text: str) -> list[str]:
    with pytest.raises(InvalidInput) as caught:
        load_documents(text, "x.yaml")
    prefix = 'x.yaml: Deployment "d" is invalid: spec.template.spec.'
    assert all(m.startswith(prefix) for m in caught.value.messages), caught.value.messages
    return [m.removeprefix(prefix) for m in caught.value.messages]


def test_volume_names_sources_and_items_are_checked_with_kubernetes_words() -> None:
    text = deployment(
        "[{name: Bad_Name, secret: {secretName: s}},"
        " {name: s, secret: {defaultMode: 1000,"
        "  items: [{key: a, path: /abs}, {key: '', path: ..x}]}},"
        " {name: t}, {name: u, emptyDir: {}, configMap: {name: y}}]",
        "[]",
    )
    assert errors(text) == [
        'volumes[0].name: Invalid value: "Bad_Name": a lowercase RFC 1123 label must consist of '
        "lower case alphanumeric characters or '-', and must start and end with an alphanumeric "
        "character (e.g. 'my-name',  or '123-abc', regex used for validation is "
        "'[a-z0-9]([-a-z0-9]*[a-z0-9])?')",
        "volumes[1].secret.secretName: Required value",
        "volumes[1].secret.defaultMode: Invalid value: 1000: must be a number between 0 and 0777 "
        "(octal), both inclusive",
        'volumes[1].secret.items[0].path: Invalid value: "/abs": must be a relative path',
        "volumes[1].secret.items[1].key: Required value",
        "volumes[1].secret.items[1].path: Invalid value: \"..x\": must not start with '..'",
        "volumes[2]: Required value: must specify a volume type",
        "volumes[3].configMap: Forbidden: may not specify more than 1 volume type",
    ]


def test_mounts_name_a_valid_volume_and_a_unique_path() -> None:
    text = deployment(
        "[{name: a, secret: {secretName: s}}, {name: a, emptyDir: {}}]",
        "[{name: nope, mountPath: /x}, {name: a, mountPath: /x}, {name: a, mountPath: rel},"
        " {name: a, mountPath: /y, subPath: ../up}, {name: '', mountPath: ''}]",
    )
    assert errors(text) == [
        'volumes[1].name: Duplicate value: "a"',
        'containers[0].volumeMounts[0].name: Not found: "nope"',
        'containers[0].volumeMounts[1].mountPath: Invalid value: "/x": must be unique',
        'containers[0].volumeMounts[2].mountPath: Invalid value: "rel": must be an absolute path',
        "containers[0].volumeMounts[3].subPath: Invalid value: \"../up\": must not contain '..'",
        "containers[0].volumeMounts[4].name: Required value",
        "containers[0].volumeMounts[4].mountPath: Required value",
    ]


def test_a_source_the_kubelet_does_not_provide_is_a_warning_at_apply() -> None:
    text = deployment(
        "[{name: p, persistentVolumeClaim: {claimName: c}}]", "[{name: p, mountPath: /data}]"
    )
    _, warnings = load_documents_with_warnings(text, "x.yaml")
    assert warnings == [
        'x.yaml: Deployment "d": spec.template.spec.volumes[0].persistentVolumeClaim: '
        "tcpmesh's kubelet does not provide persistentVolumeClaim volumes (only secret, "
        "configMap, emptyDir, hostPath): the pod will wait in ContainerCreating"
    ]


def test_config_map_keys_and_bags_are_validated() -> None:
    text = (
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n"
        "data: {a: x, 'b c': y}\nbinaryData: {a: eA==}\n"
    )
    with pytest.raises(InvalidInput) as caught:
        load_documents(text, "x.yaml")
    assert caught.value.messages == [
        'x.yaml: ConfigMap "c" is invalid: data[a]: Invalid value: "a": duplicate of key '
        "present in binaryData",
        'x.yaml: ConfigMap "c" is invalid: data[b c]: Invalid value: "b c": a valid config key '
        "must consist of alphanumeric characters, '-', '_' or '.' (e.g. 'key.name',  or "
        "'KEY_NAME',  or 'key-name', regex used for validation is '[-._a-zA-Z0-9]+')",
        'x.yaml: ConfigMap "c" is invalid: binaryData[a]: Invalid value: "a": duplicate of key '
        "present in data",
    ]


class FakeStore:
    def __init__(self, *objects: Obj) -> None:
        self.objects = {(o["kind"], o["metadata"]["name"]): o for o in objects}

    def get(self, kind: str, namespace: str, name: str) -> Obj | None:
        return self.objects.get((kind, name))


def secret(name: str, **data: bytes) -> Obj:
    encoded = {k: base64.b64encode(v).decode() for k, v in data.items()}
    return {"kind": "Secret", "metadata": {"name": name, "namespace": "ns"}, "data": encoded}


def test_items_choose_keys_and_modes_and_missing_things_say_what_the_kubelet_says() -> None:
    store = FakeStore(secret("tls", **{"tls.crt": b"C", "tls.key": b"K"}))
    items = [{"key": "tls.crt", "path": "crt"}, {"key": "tls.key", "path": "k/key", "mode": 0o600}]
    volume = {"name": "v", "secret": {"secretName": "tls", "items": items, "defaultMode": 0o440}}
    assert volumes.payload(volume, "ns", store) == {
        "crt": File(b"C", 0o440),
        "k/key": File(b"K", 0o600),
    }
    whole = {"name": "v", "secret": {"secretName": "tls"}}
    assert volumes.payload(whole, "ns", store) == {
        "tls.crt": File(b"C", 0o644),
        "tls.key": File(b"K", 0o644),
    }
    with pytest.raises(MountError, match=r'^secret "gone" not found$'):
        volumes.payload({"name": "v", "secret": {"secretName": "gone"}}, "ns", store)
    optional = {"secretName": "gone", "optional": True}
    assert volumes.payload({"name": "v", "secret": optional}, "ns", store) == {}
    bad_key = {"secretName": "tls", "items": [{"key": "ca.crt", "path": "ca"}]}
    with pytest.raises(MountError, match=r"^references non-existent secret key: ca\.crt$"):
        volumes.payload({"name": "v", "secret": bad_key}, "ns", store)
    config = {"kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "text"}}
    config["binaryData"] = {"b": base64.b64encode(b"\x00").decode()}
    got = volumes.payload({"name": "v", "configMap": {"name": "c"}}, "ns", FakeStore(config))
    assert got == {"a": File(b"text", 0o644), "b": File(b"\x00", 0o644)}


def test_the_atomic_writer_swaps_data_in_one_rename_and_drops_stale_names(tmp_path: Path) -> None:
    target = tmp_path / "vol"
    assert volumes.write_atomically(target, {"crt": File(b"one", 0o644), "d/x": File(b"x", 0o600)})
    first = os.readlink(target / "..data")
    assert first.startswith("..") and (target / first).is_dir()
    assert os.readlink(target / "crt") == "..data/crt"
    assert (target / "crt").read_bytes() == b"one"
    assert (target / "d" / "x").stat().st_mode & 0o777 == 0o600
    # The same content again: nothing is written, the timestamped directory stays.
    assert not volumes.write_atomically(
        target, {"crt": File(b"one", 0o644), "d/x": File(b"x", 0o600)}
    )
    assert os.readlink(target / "..data") == first
    assert volumes.write_atomically(target, {"crt": File(b"two", 0o644)})
    second = os.readlink(target / "..data")
    assert second != first and not (target / first).exists()
    assert (target / "crt").read_bytes() == b"two"
    assert not (target / "d").exists() and not (target / "d").is_symlink()
    assert sorted(p.name for p in target.iterdir()) == sorted(["..data", second, "crt"])


def test_paths_under_a_mount_map_to_its_real_directory() -> None:
    mounts = [Mount("/etc/secret-volume", "/s/vol"), Mount("/etc/secret-volume/inner/", "/s/in")]
    assert volumes.map_path("/etc/secret-volume/crt", mounts) == "/s/vol/crt"
    assert volumes.map_path("/etc/secret-volume", mounts) == "/s/vol"
    assert volumes.map_path("/etc/secret-volume/inner/x", mounts) == "/s/in/x"
    assert volumes.map_path("--cert=/etc/secret-volume/crt", mounts) == "--cert=/s/vol/crt"
    assert volumes.map_path("/etc/secret-volumes/crt", mounts) == "/etc/secret-volumes/crt"
    assert volumes.map_path("a=/etc/secret-volume/crt", mounts) == "a=/etc/secret-volume/crt"
    assert volumes.map_path("9000", mounts) == "9000"


def test_sub_paths_of_secret_volumes_are_copies_taken_at_start(tmp_path: Path) -> None:
    store = FakeStore(secret("tls", crt=b"one"))
    volume = {"name": "v", "secret": {"secretName": "tls"}}
    pod = {"spec": {"volumes": [volume, {"name": "e", "emptyDir": {}}]}}
    container = {
        "name": "c",
        "volumeMounts": [
            {"name": "v", "mountPath": "/etc/crt", "subPath": "crt"},
            {"name": "e", "mountPath": "/work", "subPath": "sub"},
        ],
    }
    volumes.set_up(tmp_path, "uid-1", "ns", volume, store)
    volumes.set_up(tmp_path, "uid-1", "ns", pod["spec"]["volumes"][1], store)
    crt, work = volumes.container_mounts(tmp_path, "uid-1", pod, container)
    assert Path(crt.host_path).read_bytes() == b"one"
    assert Path(work.host_path).is_dir()
    store.objects[("Secret", "tls")] = secret("tls", crt=b"two")
    assert volumes.set_up(tmp_path, "uid-1", "ns", volume, store)
    assert Path(crt.host_path).read_bytes() == b"one"
    volumes.remove_all_but(tmp_path, {"uid-2"})
    assert not volumes.pod_dir(tmp_path, "uid-1").exists()
