"""A TCP proxy on loopback whose traffic can be blackholed: packets dropped, no reset, no FIN.

`BlackholeProxy(host, port).start()` forwards `127.0.0.1:<proxy.port>` to `host:port`.
`blackhole()` stops every byte in both directions: the proxy stops forwarding (the far side
sees silence), and, when the process may (root with `iptables`), the kernel drops the
loopback packets to and from the proxy's port, so the near side's TCP gets no ACK either (its
keepalive probes and retransmissions go unanswered, as when a network path dies). New
connections hang in the handshake meanwhile. `restore()` lets everything flow again.
"""

import contextlib
import os
import shutil
import socket
import subprocess
import threading


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._listener.settimeout(0.2)
        self.port: int = self._listener.getsockname()[1]
        self._flowing = threading.Event()
        self._flowing.set()
        self._closed = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._rules: list[list[str]] = []
        self._accepting = threading.Thread(target=self._accept, daemon=True)

    def start(self) -> "BlackholeProxy":
        self._accepting.start()
        return self

    def blackhole(self) -> None:
        self._flowing.clear()
        if os.geteuid() == 0 and shutil.which("iptables"):
            for match in ("--dport", "--sport"):
                rule = ["INPUT", "-i", "lo", "-p", "tcp", match, str(self.port), "-j", "DROP"]
                if subprocess.run(["iptables", "-I", *rule], capture_output=True).returncode == 0:
                    self._rules.append(rule)

    def restore(self) -> None:
        while self._rules:
            subprocess.run(["iptables", "-D", *self._rules.pop()], capture_output=True)
        self._flowing.set()

    def stop(self) -> None:
        self.restore()
        self._closed.set()
        self._listener.close()
        with self._lock:
            for sock in self._sockets:
                with contextlib.suppress(OSError):
                    sock.close()

    def _accept(self) -> None:
        while not self._closed.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self._sockets.update((client, upstream))
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(source, sink), daemon=True).start()

    def _pump(self, source: socket.socket, sink: socket.socket) -> None:
        try:
            while True:
                self._flowing.wait()
                data = source.recv(65536)
                if not data:
                    break
                self._flowing.wait()  # what was read just before the blackhole is held, not sent
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
                with self._lock:
                    self._sockets.discard(sock)
                with contextlib.suppress(OSError):
                    sock.close()
