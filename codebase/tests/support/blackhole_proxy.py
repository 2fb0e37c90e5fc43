"""A TCP proxy the test controls, which can turn into a blackhole: bytes stop, nothing is reset.

`blackhole()` makes every connection through the proxy (and every new one) go silent in both
directions, the way a network partition does: the peers see no reset and no close, only
silence. `restore()` lets the held bytes flow again, and a side that was closed meanwhile
(a server that ended the session) is then closed on the other side too. Reusable by any test
or the chaos harness:

    proxy = BlackholeProxy("127.0.0.1", 5432).start()
    ... connect to 127.0.0.1:proxy.port ...
    proxy.blackhole(); ...; proxy.restore()
    proxy.stop()

A userspace proxy cannot stop its own kernel from acknowledging TCP segments, so where the
process may (root with `iptables`), `blackhole()` also has the kernel drop the loopback packets
to and from the proxy's port: the near side's TCP then gets no ACK either (its keepalive probes
and retransmissions go unanswered, as when a network path dies). Without that, what the peers
do not get is application data (queries, answers, heartbeats), which bounded waits
(heartbeats, server-side timeouts) still detect.
"""

import contextlib
import os
import select
import shutil
import socket
import subprocess
import threading


class BlackholeProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target_host = target_host
        self.target_port = target_port
        self.port = 0
        self._flowing = threading.Event()
        self._flowing.set()
        self._stopped = threading.Event()
        self._listener: socket.socket | None = None
        self._sockets: set[socket.socket] = set()
        self._lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._rules: list[list[str]] = []

    def start(self) -> "BlackholeProxy":
        listener = socket.create_server(("127.0.0.1", 0))
        listener.settimeout(0.1)
        self._listener = listener
        self.port = listener.getsockname()[1]
        self._spawn(self._accept)
        return self

    def blackhole(self) -> None:
        """From now on no byte passes, either way, on any connection; none is closed or reset."""
        self._flowing.clear()
        if os.geteuid() == 0 and shutil.which("iptables"):
            for match in ("--dport", "--sport"):
                rule = ["INPUT", "-i", "lo", "-p", "tcp", match, str(self.port), "-j", "DROP"]
                if subprocess.run(["iptables", "-I", *rule], capture_output=True, check=False).returncode == 0:
                    self._rules.append(rule)

    def restore(self) -> None:
        while self._rules:
            subprocess.run(["iptables", "-D", *self._rules.pop()], capture_output=True, check=False)
        self._flowing.set()

    @property
    def blackholed(self) -> bool:
        return not self._flowing.is_set()

    def stop(self) -> None:
        self.restore()
        self._stopped.set()
        if self._listener is not None:
            self._listener.close()
        with self._lock:
            for sock in list(self._sockets):
                with contextlib.suppress(OSError):
                    sock.close()
        for thread in self._threads:
            thread.join(5)

    def __enter__(self) -> "BlackholeProxy":
        return self.start()

    def __exit__(self, *_exc: object) -> None:
        self.stop()

    def _spawn(self, target, *args) -> None:  # type: ignore[no-untyped-def]
        thread = threading.Thread(target=target, args=args, daemon=True)
        self._threads.append(thread)
        thread.start()

    def _accept(self) -> None:
        assert self._listener is not None
        while not self._stopped.is_set():
            try:
                client, _address = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._connect, client)

    def _connect(self, client: socket.socket) -> None:
        self._track(client)
        while not self._flowing.wait(0.1):  # a connection opened in the blackhole waits in silence
            if self._stopped.is_set():
                return
        try:
            upstream = socket.create_connection((self.target_host, self.target_port), timeout=5)
        except OSError:
            client.close()
            return
        self._track(upstream)
        self._spawn(self._pump, client, upstream)
        self._spawn(self._pump, upstream, client)

    def _track(self, sock: socket.socket) -> None:
        with self._lock:
            self._sockets.add(sock)

    def _pump(self, source: socket.socket, destination: socket.socket) -> None:
        try:
            while not self._stopped.is_set():
                if not self._flowing.wait(0.1):
                    continue  # hold the bytes: do not even read them
                readable, _, _ = select.select([source], [], [], 0.1)
                if not readable or not self._flowing.is_set():
                    continue
                data = source.recv(65536)
                if not data:
                    destination.shutdown(socket.SHUT_WR)
                    return
                destination.sendall(data)
        except (OSError, ValueError):  # ValueError: the other direction closed the socket meanwhile
            for sock in (source, destination):
                with contextlib.suppress(OSError):
                    sock.close()
