"""Secret and ConfigMap volumes through the real runtime: pods wait for a missing Secret,
read their files at the mountPath they asked for, see updates, and leave nothing behind."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import sys
import time
from pathlib import Path

import pytest

from tcpmesh.runtime import volumes
from tests.integration.test_runtime import (
    Obj,
    _first_pod_ip,
    ask,
    container_status,
    deployment,
    mesh,
    pods_of,
    ready_pods,
    wait_for,
)

pytestmark = pytest.mark.integration

# Answers each connection with what it reads at the paths it was given (env, flag, cwd).
READER = """
import json, os, socket, sys
flag = sys.argv[1].split("=", 1)[1]
server = socket.create_server((os.environ["POD_IP"], 9000))
while True:
    conn, _ = server.accept()
    with conn:
        conn.sendall(json.dumps({
            "env": open(os.environ["CERT"]).read(),
            "flag": open(flag).read(),
            "note": open("note.txt").read(),
            "cert_path": os.environ["CERT"],
        }).encode() + b"\\n")
"""


def secret(value: str) -> Obj:
    encoded = base64.b64encode(value.encode()).decode()
    return {
        "apiVersion": "v1",
        "kind": "Secret",
        "metadata": {"name": "certs", "namespace": "default"},
        "type": "Opaque",
        "data": {"tls.crt": encoded},
    }


def config_map(value: str) -> Obj:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "notes", "namespace": "default"},
        "data": {"note.txt": value},
    }


def reader() -> Obj:
    return deployment(
        "reader",
        1,
        {
            "image": "python",
            "command": [sys.executable, "-c", READER, "--cert=/etc/secret-volume/crt"],
            "env": [{"name": "CERT", "value": "/etc/secret-volume/crt"}],
            "workingDir": "/etc/notes",
            "ports": [{"containerPort": 9000}],
            "volumeMounts": [
                {"name": "secret-volume", "mountPath": "/etc/secret-volume", "readOnly": True},
                {"name": "notes", "mountPath": "/etc/notes"},
            ],
        },
        volumes=[
            {
                "name": "secret-volume",
                "secret": {
                    "secretName": "certs",
                    "defaultMode": 0o400,
                    "items": [{"key": "tls.crt", "path": "crt"}],
                },
            },
            {"name": "notes", "configMap": {"name": "notes"}},
        ],
    )


def failed_mounts(store: object, pod: str) -> list[Obj]:
    events = store.list("Event", "default")  # type: ignore[attr-defined]
    return [
        e for e in events if e["involvedObject"]["name"] == pod and e["reason"] == "FailedMount"
    ]


def test_a_secret_volume_waits_for_its_secret_then_follows_it_and_goes_with_the_pod(
    tmp_path: Path,
) -> None:
    first = _first_pod_ip()

    async def scenario() -> None:
        async with mesh(tmp_path, first) as (store, _):
            store.create(config_map("hello"))
            store.create(reader())
            pods = await wait_for(lambda: pods_of(store, "reader"), "the pod")
            name = pods[0]["metadata"]["name"]
            events = await wait_for(lambda: failed_mounts(store, name), "FailedMount")
            assert events[0]["type"] == "Warning"
            assert events[0]["message"] == (
                'MountVolume.SetUp failed for volume "secret-volume" : secret "certs" not found'
            )
            pod = pods_of(store, "reader")[0]
            assert pod["status"]["phase"] == "Pending"
            assert container_status(pod)["state"] == {"waiting": {"reason": "ContainerCreating"}}

            store.create(secret("one"))
            ready = await wait_for(lambda: ready_pods(store, "reader", 1), "the pod running")
            ip, uid = ready[0]["status"]["podIP"], ready[0]["metadata"]["uid"]
            answer = json.loads(await ask(ip, 9000, b""))
            assert (answer["env"], answer["flag"], answer["note"]) == ("one", "one", "hello")
            real = volumes.pod_dir(tmp_path / "state", uid) / "volumes"
            assert answer["cert_path"] == str(real / "kubernetes.io~secret/secret-volume/crt")
            crt = real / "kubernetes.io~secret" / "secret-volume" / "crt"
            assert os.readlink(crt) == "..data/crt"
            assert crt.stat().st_mode & 0o777 == 0o400

            pid = container_status(ready[0])["containerID"]
            store.replace(
                {**secret("two"), "metadata": store.get("Secret", "default", "certs")["metadata"]}
            )
            store.replace(
                {
                    **config_map("bye"),
                    "metadata": store.get("ConfigMap", "default", "notes")["metadata"],
                }
            )
            started = time.monotonic()

            async def updated() -> None:
                while True:
                    got = json.loads(await ask(ip, 9000, b""))
                    if (got["env"], got["note"]) == ("two", "bye"):
                        return
                    await asyncio.sleep(0.1)

            await asyncio.wait_for(updated(), 10)
            print(f"volume update seen after {time.monotonic() - started:.2f}s")
            assert container_status(pods_of(store, "reader")[0])["containerID"] == pid

            store.delete("Deployment", "default", "reader")
            await wait_for(lambda: not pods_of(store, "reader"), "the pod gone")
            await wait_for(
                lambda: not volumes.pod_dir(tmp_path / "state", uid).exists(), "its volumes gone"
            )

    asyncio.run(scenario())
