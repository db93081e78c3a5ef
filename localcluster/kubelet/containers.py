"""What process a container spec becomes: the local cluster's stand-in for images.

There is no container runtime here, so an image name selects a command: ``rolltrace/demoapp``
(any tag) runs this machine's demo app bound to the Pod's address,
``registry.k8s.io/ingress-nginx/controller`` the local ingress controller
(``localcluster.ingress``, which runs nginx in the Pod), ``local/NAME`` runs the container's own
``command``/``args`` (so users can try their own server), and anything else
fails the way a real kubelet fails an image it cannot pull. Pure functions: easy to test.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from localcluster.apiclient import JsonObject
from localcluster.state import POD_DIR_ENV

DEMOAPP_IMAGE = re.compile(r"^(?:docker\.io/)?rolltrace/demoapp(?:[:@].+)?$")
INGRESS_NGINX_IMAGE = re.compile(r"^registry\.k8s\.io/ingress-nginx/controller(?:[:@].+)?$")
LOCAL_IMAGE = re.compile(r"^local/([A-Za-z0-9._/-]+)(?::[\w.-]+)?$")
VALID_IMAGE = re.compile(r"^[a-z0-9]+(?:[._/:@-][A-Za-z0-9]+)*$")
SUPPORTED = "supported images: rolltrace/demoapp[:TAG] (the demo app), registry.k8s.io/ingress-nginx/controller[:TAG] (the local ingress controller over nginx) and local/NAME (runs the container's command and args)"
DEFAULT_DEMOAPP_PORT = 8080
# What a process inherits from the kubelet: enough to find executables and the Python env.
INHERITED_ENV = ("PATH", "LANG", "LC_ALL", "HOME", "PYTHONPATH", "VIRTUAL_ENV", "TMPDIR")


@dataclass(frozen=True)
class ImageError:
    reason: str  # container waiting reason, as upstream: ErrImagePull / InvalidImageName
    message: str


@dataclass(frozen=True)
class Launch:
    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class PodContext:
    """The Pod facts a container's env may refer to (downward API)."""

    name: str
    namespace: str
    uid: str
    node_name: str
    pod_ip: str
    host_ip: str
    directory: str = ""  # the Pod's own directory (nginx's files, the access log)

    def field(self, path: str) -> str | None:
        return {
            "metadata.name": self.name,
            "metadata.namespace": self.namespace,
            "metadata.uid": self.uid,
            "spec.nodeName": self.node_name,
            "status.podIP": self.pod_ip,
            "status.hostIP": self.host_ip,
        }.get(path)


def container_env(
    container: JsonObject, pod: PodContext, inherited: Mapping[str, str]
) -> dict[str, str]:
    env = {k: inherited[k] for k in INHERITED_ENV if k in inherited}
    env |= {"POD_NAME": pod.name, "POD_NAMESPACE": pod.namespace, "POD_IP": pod.pod_ip}
    for item in container.get("env") or []:
        value = _env_value(item, pod)
        if value is not None:
            env[item["name"]] = value
    return env


def _env_value(item: Mapping[str, Any], pod: PodContext) -> str | None:
    if "value" in item:
        return str(item["value"])
    field_ref = (item.get("valueFrom") or {}).get("fieldRef") or {}
    return pod.field(str(field_ref.get("fieldPath", "")))


def resolve_launch(
    container: JsonObject,
    pod: PodContext,
    inherited: Mapping[str, str] | None = None,
    demoapp_defaults: Mapping[str, str] | None = None,
) -> Launch | ImageError:
    """The argv and env that run ``container``, or why it cannot run. ``demoapp_defaults``
    (e.g. DEMOAPP_TRUTH) apply to demo-app containers unless their env says otherwise."""
    image = str(container.get("image") or "")
    env = container_env(container, pod, os.environ if inherited is None else inherited)
    args = [str(a) for a in container.get("args") or []]
    command = [str(c) for c in container.get("command") or []]
    if DEMOAPP_IMAGE.match(image):
        ports = container.get("ports") or []
        port = (
            ports[0].get("containerPort", DEFAULT_DEMOAPP_PORT) if ports else DEFAULT_DEMOAPP_PORT
        )
        env = {
            "DEMOAPP_HOST": pod.pod_ip,
            "DEMOAPP_PORT": str(port),
            **(demoapp_defaults or {}),
            **env,
        }
        return Launch([sys.executable, "-m", "demoapp", *args], env)
    if INGRESS_NGINX_IMAGE.match(image):
        # the image's entry point (/nginx-ingress-controller) and its args; the controller
        # starts nginx itself, in this Pod's network namespace
        argv = [sys.executable, "-m", "localcluster.ingress", *command, *args]
        return Launch(argv, {**env, POD_DIR_ENV: pod.directory})
    local = LOCAL_IMAGE.match(image)
    if local:
        return Launch([*(command or [local.group(1)]), *args], env)
    if not image or not VALID_IMAGE.match(image):
        return ImageError("InvalidImageName", f"invalid image name {image!r}; {SUPPORTED}")
    return ImageError(
        "ErrImagePull", f"image {image!r} cannot be pulled in the local cluster; {SUPPORTED}"
    )
