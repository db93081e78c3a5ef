"""The ingress controller's nginx: the nginx child both hops share
(``localcluster.nginxcommon.Nginx``: config test, start, reload, stop) plus, in dynamic mode,
the POST of every backend's endpoints to its Lua configuration endpoint.
"""

from __future__ import annotations

import json

import aiohttp

from localcluster.ingress.nginxconf import Backend
from localcluster.nginxcommon import Nginx, NginxError

# A POST to nginx's own loopback endpoint answers in milliseconds; longer means nginx is stuck.
POST_TIMEOUT_S = 5.0


class IngressNginx(Nginx):
    async def post_backends(self, status_port: int, backends: list[Backend]) -> int:
        """Every backend's endpoints to the Lua configuration endpoint (dynamic mode); returns
        the version nginx gave them, which its workers record when they switch to it."""
        url = f"http://127.0.0.1:{status_port}/configuration/backends"
        timeout = aiohttp.ClientTimeout(total=POST_TIMEOUT_S)
        try:
            async with (
                aiohttp.ClientSession(timeout=timeout) as session,
                session.post(url, data=json.dumps(backends)) as response,
            ):
                answer = await response.text()
        except (aiohttp.ClientError, TimeoutError) as error:
            raise NginxError(f"POST {url}: {error!r}") from error
        if response.status != 201:
            raise NginxError(f"POST {url}: {response.status} {answer}")
        return int(answer)
