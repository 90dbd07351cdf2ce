"""``mnist-kit serve``: the application of ``app.py`` (a drawing pad and an HTTP API on an exported model)
under waitress, a production WSGI server, on N threads that share one predictor: listening, waitress's own
refusals in JSON, idle connections evicted at the limit, and a drain on Ctrl-C or SIGTERM. Imports no training
code.
"""

from __future__ import annotations

import ctypes
import json
import logging
import signal
import threading
import time
from pathlib import Path

from mnist_kit.deploy import inference
from mnist_kit.deploy.app import IDLE_TIMEOUT, MAX_BODY, MAX_CONNECTIONS, TOO_LARGE, check_origin, create_app
from mnist_kit.errors import UserError
from mnist_kit.util import addresses

DRAIN_SECONDS = 30  # on Ctrl-C or SIGTERM, how long requests in progress may take to end


def _json_errors(server) -> None:
    """Requests that waitress refuses before the application sees them (a body over its limit, a malformed
    request) are answered in JSON like every other error, not in waitress's plain text. Uses waitress's
    ``channel_class`` and ``error_task_class`` hooks; where a version lacks them, its plain text stays."""
    try:
        from waitress.parser import ParsingError
        from waitress.task import ErrorTask
    except ImportError:  # pragma: no cover - another waitress
        return
    if not hasattr(server, "channel_class") or not hasattr(server.channel_class, "error_task_class"):
        return  # pragma: no cover

    class JsonErrorTask(ErrorTask):
        def execute(self):
            e = self.request.error
            message = TOO_LARGE if e.code == 413 else f"{e.reason.lower()}: {e.body}"
            body = json.dumps({"error": message}).encode() + b"\n"
            self.status = f"{e.code} {e.reason}"
            self.response_headers.extend([("Content-Type", "application/json"), ("X-Content-Type-Options", "nosniff")])
            self.set_close_on_finish()
            self.content_length = len(body)
            self.write(body)

    members = {"error_task_class": JsonErrorTask}
    parser = getattr(server.channel_class, "parser_class", None)
    if parser is not None and hasattr(parser, "parse_header"):
        class Parser(parser):  # type: ignore[misc, valid-type]
            def parse_header(self, header_plus):
                try:
                    return super().parse_header(header_plus)
                except ValueError:  # int() of a Content-Length over Python's 4,300 digits: it dropped the connection
                    raise ParsingError("Content-Length is invalid") from None

        members["parser_class"] = Parser
    server.channel_class = type("JsonErrorChannel", (server.channel_class,), members)


def _evict_idle(server) -> None:
    """At ``MAX_CONNECTIONS`` close the connection idle longest (one without a request being answered) to make
    room, instead of waitress's way of not accepting until one closes. Many idle or slow sockets then cost
    their own connections, never the server's answer to others."""
    accepting_now = server.readable  # waitress's check: maintenance, then accept unless at the limit

    def readable() -> bool:
        if server.accepting:
            channels = list(server.active_channels.values())
            closing = sum(1 for c in channels if c.will_close)
            if len(server._map) - closing >= server.adj.connection_limit:
                idle = [c for c in channels if not (c.will_close or c.requests or c.total_outbufs_len)]
                if idle:  # closed by the loop's next pass (a channel that will close is writable)
                    min(idle, key=lambda c: c.last_activity).will_close = True
        return accepting_now()

    server.readable = readable


def _drain(server, seconds: float) -> None:
    """After Ctrl-C or SIGTERM: accept nothing more, let the requests in progress end and their answers go
    out (for at most ``seconds``), then stop the threads. waitress alone closed its loop at once, and a request
    still running then wrote into a closed socket (EBADF in the log)."""
    server.accepting = False
    server.del_channel()
    server.socket.close()  # new connections are refused from now on

    def busy() -> bool:
        return any(c.requests or c.total_outbufs_len for c in list(server.active_channels.values()))

    deadline = time.monotonic() + seconds
    try:
        while busy() and time.monotonic() < deadline:
            server.asyncore.loop(timeout=0.05, map=server._map, use_poll=True, count=1)
    except KeyboardInterrupt:  # a second Ctrl-C: stop now
        pass
    server.task_dispatcher.shutdown(timeout=1)
    for channel in list(server.active_channels.values()):
        channel.close()
    server.trigger.close()


def _return_large_blocks() -> None:
    """Have every allocation of 1 MB or more mapped on its own, so that freeing it gives it back to the system
    (glibc's M_MMAP_THRESHOLD; elsewhere nothing). glibc's default threshold rises to 32 MB once such blocks are
    freed, after which a decoded giant image's blocks stayed in the heap: the server kept about 600 MB after two
    5000x5000 PNGs, and 30-100 MB above idle even with malloc_trim; with this it returns to idle (within 1 MB).
    The requests a server answers all day (drawings, photos of a few megapixels) make no such allocations."""
    m_mmap_threshold = -3
    try:
        ctypes.CDLL(None).mallopt(m_mmap_threshold, 1 << 20)
    except (AttributeError, OSError):
        pass


def serve(model_dir: Path, host: str = "127.0.0.1", port: int = 8080, threads: int = 4, device: str = "cpu",
          runtime: str = "auto", cors: str | None = None, say=print) -> None:
    """Serve the export in ``model_dir`` until Ctrl-C or SIGTERM; ``say`` the address once it listens."""
    import waitress

    addresses.check_address(host, port)
    check_origin(cors)
    _return_large_blocks()
    # one thread per prediction: the requests of N clients run side by side on the server's threads
    predictor = inference.Predictor(model_dir, device=device, runtime=runtime, threads=1)
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)  # "task queue depth" under load: not a fault
    if host not in addresses.LOOPBACK:
        say(f"warning: binding {host}: the server has no authentication, so anyone who can reach this address "
            "can send it images and read the model's metadata")
    app = create_app(predictor, cors=cors)
    try:  # waitress refuses a larger body itself, before it buffers it (a little more: a form's own lines)
        server = waitress.create_server(app, host=host, port=port, threads=threads, ident="mnist-kit",
                                        max_request_body_size=MAX_BODY + 64 * 1024,
                                        clear_untrusted_proxy_headers=True, connection_limit=MAX_CONNECTIONS,
                                        channel_timeout=IDLE_TIMEOUT, cleanup_interval=10,
                                        asyncore_use_poll=True)  # select() fails on descriptors over 1023
    except OSError as e:
        raise UserError(f"cannot listen on {host}:{port}: {e.strerror}; choose another --port") from None
    _json_errors(server)
    _evict_idle(server)
    url = addresses.url(host, server.effective_port) + "/"
    meta = predictor.meta
    accuracy = (meta.get("checks") or {}).get("val_accuracy")
    say(f"serving {Path(model_dir)} ({meta.get('dataset')}, {len(meta['classes'])} classes"
        + (f", {accuracy:.2%} {meta['checks'].get('split', 'validation')} accuracy" if accuracy is not None else "")
        + f") on {predictor.runtime} with {threads} threads at {url}; press Ctrl-C to stop")
    try:  # waitress's server.run(), but for what it does on Ctrl-C: drop queued requests, wait 5 s, return
        server.asyncore.loop(timeout=server.adj.asyncore_loop_timeout, map=server._map, use_poll=True)
    except KeyboardInterrupt:  # Ctrl-C or SIGTERM: stop listening, let requests in progress end, end normally
        pass
    finally:
        _drain(server, DRAIN_SECONDS)
        if threading.current_thread() is threading.main_thread():  # another Ctrl-C now ends the process at once,
            for signum in (signal.SIGINT, signal.SIGTERM):          # not in a traceback from Python's exit
                signal.signal(signum, signal.SIG_DFL)
    say("stopped")
