"""Run the app under uvicorn: one process, or `WEB_CONCURRENCY` worker processes."""

import socket
import tempfile
from pathlib import Path

import uvicorn
from uvicorn.supervisors import Multiprocess

from ..settings import ServingConfig, export

APP_FACTORY = f"{__package__}.app:create_app"


class TcpConfig(uvicorn.Config):
    """uvicorn's configuration, with a listening socket that says it is TCP.

    With several workers uvicorn binds the socket itself, leaving its protocol 0;
    asyncio then does not turn off Nagle's algorithm on the connections, and every
    keep-alive response waits ~40 ms for the client's delayed ACK.
    https://github.com/Kludex/uvicorn/issues/3149
    """

    def bind_socket(self) -> socket.socket:
        """Bind as uvicorn does, then mark the socket as TCP."""
        sock = super().bind_socket()
        tcp = socket.socket(sock.family, sock.type, socket.IPPROTO_TCP, fileno=sock.detach())
        tcp.set_inheritable(True)
        return tcp


def run(model_uri: str, settings: ServingConfig, host: str, port: int) -> None:
    """Serve until SIGTERM or Ctrl-C; requests in flight are answered before it exits."""
    # Each worker process builds the app from the environment.
    export(MODEL_URI=model_uri)
    with tempfile.TemporaryDirectory(prefix="prometheus-") as metrics_dir:
        if settings.web_concurrency > 1:
            # Workers share their metrics through files, so /metrics counts them all.
            export(PROMETHEUS_MULTIPROC_DIR=metrics_dir)
        if settings.monitoring_dir is None:
            # Every worker's model process counts its traffic here, for all to read.
            export(MONITORING_DIR=str(Path(metrics_dir) / "monitoring"))
        config = TcpConfig(
            APP_FACTORY,
            factory=True,
            host=host,
            port=port,
            workers=settings.web_concurrency,
            # The app writes its own access log, one JSON line a request.
            access_log=False,
            # On SIGTERM, requests in flight get this long to finish.
            timeout_graceful_shutdown=int(settings.request_timeout_s) + 1,
            log_level="info",
        )
        server = uvicorn.Server(config)
        if config.workers > 1:
            Multiprocess(config, sockets=[config.bind_socket()]).run()
        else:
            server.run()
        if not server.started and config.workers == 1:
            raise SystemExit("The server did not start: its log above says why.")
