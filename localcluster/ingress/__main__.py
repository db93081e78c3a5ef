"""``python -m localcluster.ingress --kubeconfig PATH [options]``: what the kubelet runs for an
``registry.k8s.io/ingress-nginx/controller`` container, inside the Pod's network namespace.

Flags are ingress-nginx's where it has one (``--ingress-class``, ``--controller-class``,
``--http-port``, ``--healthz-port``, ``--status-port``, ``--kubeconfig``); the ConfigMap keys
this controller honours are flags of the same name (``--proxy-next-upstream "error timeout"``,
...); ``--sync-mode reload|dynamic`` is this controller's own (ingress-nginx is always dynamic);
other ingress-nginx flags (``--election-id``, ``--publish-service``, ...) are accepted and
ignored, so an ingress-nginx manifest's args work unchanged. ``$ROLLTRACE_POD_DIR`` (set by the
kubelet) is where nginx keeps its files and the access log.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import sys
from pathlib import Path

from localcluster.apiserver.httpclient import HttpClient
from localcluster.ingress.controller import ControllerSettings, IngressController
from localcluster.ingress.nginxconf import LUA_MODULES, NginxSettings, SyncMode, truth_path
from localcluster.ingress.plan import IngressClassFilter
from localcluster.nginxcommon import NginxPaths
from localcluster.state import POD_DIR_ENV
from localcluster.truth import TruthWriter

log = logging.getLogger("localcluster.ingress")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nginx-ingress-controller", description=__doc__)
    add = parser.add_argument
    add("--kubeconfig", required=True, help="the API server to watch (an in-network one)")
    add("--ingress-class", default="nginx")
    add("--controller-class", default="k8s.io/ingress-nginx")
    add("--http-port", type=int, default=80)
    add("--healthz-port", type=int, default=10254)
    add("--sync-interval", type=float, default=1.0, help="seconds between syncs to nginx")
    add("--sync-mode", type=SyncMode, choices=list(SyncMode), default=SyncMode.RELOAD,
        help="reload: every change reloads nginx; dynamic: endpoints go to the Lua balancer")  # fmt: skip
    add("--status-port", type=int, default=10246, help="dynamic mode's configuration endpoint")
    add("--proxy-next-upstream", default="error timeout")
    add("--proxy-next-upstream-tries", type=int, default=3)
    add("--proxy-next-upstream-timeout", type=float, default=0.0)
    add("--proxy-connect-timeout", type=float, default=5.0)
    add("--upstream-keepalive-connections", type=int, default=320)
    add("--upstream-keepalive-timeout", type=float, default=60.0)
    add("--upstream-keepalive-requests", type=int, default=10_000)
    return parser


def settings_from_args(args: argparse.Namespace) -> ControllerSettings:
    nginx = NginxSettings(
        proxy_next_upstream=tuple(args.proxy_next_upstream.split()),
        proxy_next_upstream_tries=args.proxy_next_upstream_tries,
        proxy_next_upstream_timeout_s=args.proxy_next_upstream_timeout,
        proxy_connect_timeout_s=args.proxy_connect_timeout,
        upstream_keepalive_connections=args.upstream_keepalive_connections,
        upstream_keepalive_timeout_s=args.upstream_keepalive_timeout,
        upstream_keepalive_requests=args.upstream_keepalive_requests,
        http_port=args.http_port,
    )
    return ControllerSettings(
        sync_interval_s=args.sync_interval,
        healthz_port=args.healthz_port,
        mode=args.sync_mode,
        status_port=args.status_port,
        classes=IngressClassFilter(args.controller_class, args.ingress_class),
        nginx=nginx,
    )


async def _serve(args: argparse.Namespace, pod_dir: Path) -> None:
    pod_dir.mkdir(parents=True, exist_ok=True)  # the kubelet names it; its user creates it
    paths = NginxPaths(pod_dir)
    truth = TruthWriter(truth_path(paths), f"ingress/{os.environ.get('POD_NAME', '')}")
    async with HttpClient.from_kubeconfig(args.kubeconfig) as client:
        controller = IngressController(client, settings_from_args(args), paths, truth)
        task = asyncio.ensure_future(controller.run())
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, task.cancel)
        with contextlib.suppress(asyncio.CancelledError):
            await task
    truth.close()


def main(argv: list[str]) -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if argv and not argv[0].startswith("-"):  # the image's entry point, /nginx-ingress-controller
        argv = argv[1:]
    args, ignored = _parser().parse_known_args(argv)
    if ignored:
        log.info("ingress-nginx flags not emulated, ignored: %s", " ".join(ignored))
    missing = [str(m) for m in LUA_MODULES if not m.exists()]
    if args.sync_mode is SyncMode.DYNAMIC and missing:
        log.error("--sync-mode dynamic needs Debian's libnginx-mod-http-lua "
                  "(scripts/install-system-deps); missing: %s", " ".join(missing))  # fmt: skip
        return 2
    pod_dir = os.environ.get(POD_DIR_ENV)
    if not pod_dir:
        log.error("$%s is not set (the kubelet sets it for this image)", POD_DIR_ENV)
        return 2
    asyncio.run(_serve(args, Path(pod_dir)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
