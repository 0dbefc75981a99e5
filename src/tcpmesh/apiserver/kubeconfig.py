"""``<state dir>/kubeconfig``: how kubectl and Kubernetes clients reach the running mesh.

One cluster, one user and one context, all named ``tcpmesh``, and that context current,
so ``KUBECONFIG=$(tcpmesh kubeconfig --path) kubectl get vs`` needs nothing else. The CA
is embedded (``certificate-authority-data``) so the file stands alone when copied, and the
bearer token is in it, hence mode 0600.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import Any

import yaml

from tcpmesh.apiserver.credentials import write_private

FILENAME = "kubeconfig"
CONTEXT = "tcpmesh"


def kubeconfig_path(state_dir: Path) -> Path:
    return state_dir / FILENAME


def kubeconfig(url: str, token: str, ca_pem: bytes) -> dict[str, Any]:
    """The kubeconfig document for a server at ``url`` signed by the CA ``ca_pem``."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "preferences": {},
        "clusters": [
            {
                "name": CONTEXT,
                "cluster": {
                    "server": url,
                    "certificate-authority-data": base64.b64encode(ca_pem).decode("ascii"),
                },
            }
        ],
        "users": [{"name": CONTEXT, "user": {"token": token}}],
        "contexts": [
            {
                "name": CONTEXT,
                "context": {"cluster": CONTEXT, "user": CONTEXT, "namespace": "default"},
            }
        ],
        "current-context": CONTEXT,
    }


def write_kubeconfig(state_dir: Path, url: str, token: str, ca_pem: bytes) -> Path:
    path = kubeconfig_path(state_dir)
    text = yaml.safe_dump(kubeconfig(url, token, ca_pem), sort_keys=False)
    write_private(path, text.encode())
    return path
