"""Security: loopback-only defaults, CurveZMQ keys and authentication, no symlink followed out of the watch folder."""

from __future__ import annotations

import json
import os
import stat
import time
from dataclasses import fields
from pathlib import Path
from urllib.parse import urlparse

import pytest
import zmq
import zmq.auth

from fmriface.commands import keys as keys_cmd
from service import protocol
from service.live.security import (
    Authenticator,
    KeyFileError,
    client_keys,
    create_keypair,
    load_allowed_keys,
    load_secret_keypair,
    server_keys,
)
from tests.conftest import free_port


def _host(address: str) -> str:
    return urlparse(address).hostname or ""


# --- defaults bind to loopback ---------------------------------------------------------------------------


def test_every_default_address_is_loopback():
    from service.live.config import ServeConfig

    assert _host(protocol.DEFAULT_PUB) == "127.0.0.1" and _host(protocol.DEFAULT_PULL) == "127.0.0.1"
    cfg = ServeConfig()
    addresses = {f.name: getattr(cfg, f.name) for f in fields(cfg) if f.name in ("pub", "pull")}
    assert addresses and all(_host(a) == "127.0.0.1" for a in addresses.values()), addresses
    # the display's and the experiment's defaults (E's dataclasses), where present
    for mod_name, cls_name in (("stimulus.display", "DisplayConfig"), ("stimulus.experiment", "ExperimentConfig")):
        try:
            mod = __import__(mod_name, fromlist=[cls_name])
        except ImportError:
            continue
        cls = getattr(mod, cls_name, None)
        if cls is None:
            continue
        for f in fields(cls):
            v = f.default
            if isinstance(v, str) and v.startswith("tcp://"):
                assert _host(v) == "127.0.0.1", f"{cls_name}.{f.name} defaults to {v}"


def test_preset_configs_bind_to_loopback():
    from fmriface.config import CONFIG_DIR

    configs = sorted(CONFIG_DIR.glob("*.toml"))
    assert configs
    for path in configs:
        for line in path.read_text().splitlines():
            if "tcp://" in line and not line.lstrip().startswith("#"):
                address = line.split("=", 1)[1].strip().strip("\"'")
                assert _host(address) == "127.0.0.1", f"{path.name}: {line.strip()}"


def test_protocol_sockets_with_default_options_listen_on_loopback_only():
    psutil = pytest.importorskip("psutil")
    port_pub, port_pull = free_port(), free_port()
    ctx = zmq.Context()
    pub = protocol.publisher(ctx, f"tcp://127.0.0.1:{port_pub}")
    pull = protocol.puller(ctx, f"tcp://127.0.0.1:{port_pull}")
    try:
        listening = [
            c for c in psutil.Process().net_connections(kind="tcp") if c.status == psutil.CONN_LISTEN and c.laddr
        ]
        ours = {c.laddr.port: c.laddr.ip for c in listening if c.laddr.port in (port_pub, port_pull)}
        assert ours == {port_pub: "127.0.0.1", port_pull: "127.0.0.1"}
    finally:
        pub.close(linger=0)
        pull.close(linger=0)
        ctx.term()


# --- key files ---------------------------------------------------------------------------------------------


def test_keys_command_writes_pairs_with_private_secrets(tmp_path, capsys):
    out = tmp_path / "keys"
    assert keys_cmd.main(["--out", str(out), "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result["keys"]) == {"server", "display", "experiment"}
    for name, info in result["keys"].items():
        secret_mode = stat.S_IMODE(os.stat(info["secret_file"]).st_mode)
        assert secret_mode == 0o600, (name, oct(secret_mode))
        public, secret = zmq.auth.load_certificate(info["secret_file"])  # ZeroMQ's own reader takes them
        assert public.decode() == info["public_key"] and len(secret) == 40
        assert zmq.auth.load_certificate(info["public_file"]) == (public, None)
        assert secret not in Path(info["public_file"]).read_bytes()
    assert sorted(p.name for p in (out / "allowed").iterdir()) == ["display.key", "experiment.key"]
    assert len({i["public_key"] for i in result["keys"].values()}) == 3  # fresh pairs, all different
    with pytest.raises(Exception, match="not empty"):
        keys_cmd.main(["--out", str(out)])


def test_secret_key_files_that_others_can_read_are_refused(tmp_path):
    _, secret = create_keypair(tmp_path, "server")
    assert len(load_secret_keypair(secret)[1]) == 40
    os.chmod(secret, 0o644)
    with pytest.raises(KeyFileError, match="chmod 600"):
        load_secret_keypair(secret)
    with pytest.raises(KeyFileError, match="exists"):
        create_keypair(tmp_path, "server")
    with pytest.raises(KeyFileError, match="no secret key"):
        load_secret_keypair(tmp_path / "server.key")
    (tmp_path / "allowed").mkdir()
    with pytest.raises(KeyFileError, match="holds no"):
        load_allowed_keys(tmp_path / "allowed")
    (tmp_path / "junk.key").write_text("nothing here\n")
    with pytest.raises(KeyFileError, match="not a ZeroMQ certificate"):
        load_allowed_keys(tmp_path)
    with pytest.raises(KeyFileError, match="letters, digits"):
        create_keypair(tmp_path, "../escape")


def test_curve_keys_never_show_the_secret(tmp_path):
    _, secret_file = create_keypair(tmp_path, "server")
    keys = server_keys(secret_file)
    assert keys.secret.decode() not in repr(keys) and keys.public.decode() in repr(keys)
    with pytest.raises(protocol.ProtocolError, match="40-character"):
        protocol.CurveKeys(b"short", keys.secret)


# --- CurveZMQ: only listed peers get through ---------------------------------------------------------------


@pytest.fixture
def keyring(tmp_path):
    assert keys_cmd.main(["--out", str(tmp_path / "keys"), "--names", "server,display,experiment"]) == 0
    create_keypair(tmp_path / "stranger", "intruder")  # a valid pair the service does not list
    return tmp_path


def _until_subscribed(pub, sub, timeout: float = 30.0) -> None:
    """Send ``status`` probes until ``sub`` receives one: its connection, handshake and subscription are live
    (an event to wait on, instead of a sleep), then drop whatever probes are still queued."""
    deadline = time.monotonic() + timeout
    while protocol.recv(sub, 20, protocol.SERVICE_TOPICS) is None:
        assert time.monotonic() < deadline, "the subscription never came up"
        protocol.send(pub, "status", {"seq": 0, "probe": True})
    while protocol.recv(sub, 50, protocol.SERVICE_TOPICS) is not None:
        pass


def _drain(sock, wait_ms: int = 300) -> list[protocol.Message]:
    out = []
    while (m := protocol.recv(sock, wait_ms)) is not None:
        out.append(m)
    return out


def test_curve_admits_listed_subscribers_and_pushers_only(keyring, capsys):
    k = keyring / "keys"
    pub_addr, pull_addr = f"tcp://127.0.0.1:{free_port()}", f"tcp://127.0.0.1:{free_port()}"
    server_ctx, peer_ctx = zmq.Context(), zmq.Context()
    auth = Authenticator(server_ctx, k / "allowed").start()
    srv = server_keys(k / "server.key_secret")
    pub = protocol.publisher(server_ctx, pub_addr, curve=srv)
    pull = protocol.puller(server_ctx, pull_addr, curve=srv)
    display = client_keys(k / "display.key_secret", k / "server.key")
    experiment = client_keys(k / "experiment.key_secret", k / "server.key")
    intruder = client_keys(keyring / "stranger" / "intruder.key_secret", k / "server.key")
    subs = {
        "display": protocol.subscriber(peer_ctx, pub_addr, curve=display),
        "intruder": protocol.subscriber(peer_ctx, pub_addr, curve=intruder),
        "plain": protocol.subscriber(peer_ctx, pub_addr),
    }
    pushes = {
        "experiment": protocol.pusher(peer_ctx, pull_addr, curve=experiment),
        "intruder": protocol.pusher(peer_ctx, pull_addr, curve=intruder),
        "plain": protocol.pusher(peer_ctx, pull_addr),
    }
    try:
        _until_subscribed(pub, subs["display"])  # the display's handshake and subscription are done
        assert auth.wait_for_handshakes(refused=2, timeout=30)  # the intruder's subscriber and pusher were refused
        for i in range(10):
            protocol.send(pub, "frame", {"seq": i, "volume": i})
        got = {name: [m.header["volume"] for m in _drain(s)] for name, s in subs.items() if name != "display"}
        got["display"] = [m.header["volume"] for m in _drain(subs["display"]) if m.topic == "frame"]
        assert got == {"display": list(range(10)), "intruder": [], "plain": []}
        for name, s in pushes.items():
            protocol.send(s, "event", protocol.event_header("trigger", 0, sender=name))
        first = protocol.recv(pull, 30000)  # the experiment's event, once its handshake is through
        assert first is not None, "no event within 30 s"
        received = [first.header["sender"]] + [m.header["sender"] for m in _drain(pull, 300)]
        assert received == ["experiment"]
        assert auth.accepted >= 2 and auth.refused >= 2
        assert set(auth.refused_keys) == {intruder.public.decode()}
    finally:
        auth.stop()
        for s in [pub, pull, *subs.values(), *pushes.values()]:
            s.close(linger=0)
        server_ctx.term()
        peer_ctx.term()


class _Tap:
    """A TCP relay on 127.0.0.1 that records every byte going from the server to the client."""

    def __init__(self, target_port: int) -> None:
        import socket
        import threading

        self.target = target_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.seen = bytearray()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        import selectors
        import socket

        self.listener.settimeout(5)
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        server = socket.create_connection(("127.0.0.1", self.target))
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, server)
        sel.register(server, selectors.EVENT_READ, client)
        try:
            while not self._stop.is_set():
                for key, _ in sel.select(0.05):
                    data = key.fileobj.recv(65536)
                    if not data:
                        return
                    if key.fileobj is server:
                        self.seen += data
                    key.data.sendall(data)
        finally:
            sel.close()
            client.close()
            server.close()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self.listener.close()


@pytest.mark.parametrize("encrypted", [True, False])
def test_curve_traffic_is_encrypted_on_the_wire(keyring, encrypted):
    """What crosses the network with CURVE on carries no header text; without it (the control) it does."""
    k = keyring / "keys"
    port = free_port()
    server_ctx, peer_ctx = zmq.Context(), zmq.Context()
    auth = Authenticator(server_ctx, k / "allowed").start() if encrypted else None
    srv = server_keys(k / "server.key_secret") if encrypted else None
    cli = client_keys(k / "display.key_secret", k / "server.key") if encrypted else None
    pub = protocol.publisher(server_ctx, f"tcp://127.0.0.1:{port}", curve=srv)
    tap = _Tap(port)
    sub = protocol.subscriber(peer_ctx, f"tcp://127.0.0.1:{tap.port}", curve=cli)
    try:
        _until_subscribed(pub, sub)
        for i in range(5):
            protocol.send(pub, "frame", {"seq": i, "volume": i, "note": "VISIBLE-MARKER"}, b"PIXELS-MARKER")
        got = _drain(sub)
        assert [m.header["volume"] for m in got] == list(range(5))  # the relay passes everything
        assert (b"VISIBLE-MARKER" in tap.seen) is not encrypted
        assert (b"PIXELS-MARKER" in tap.seen) is not encrypted
    finally:
        if auth is not None:
            auth.stop()
        sub.close(linger=0)
        pub.close(linger=0)
        tap.close()
        server_ctx.term()
        peer_ctx.term()


# --- the watch folder: nothing outside it is followed ------------------------------------------------------


def _volume(value: float):
    import numpy as np

    data = np.full((6, 7, 5), value, np.float32)
    data[0, 0, 0] = value + 1
    affine = np.diag([3.0, 3.0, 3.5, 1.0])
    return data, affine


def _write(folder: Path, acq: int, fmt: str = "nifti") -> Path:
    from service.scanner.writers import write_volume

    data, affine = _volume(100.0 * acq)
    name = f"001_000001_{acq:06d}" + (".nii" if fmt == "nifti" else ".dcm")
    return write_volume(data, affine, folder / name, fmt, acquisition=acq, tr=2.0)[0]


def _drain_watcher(watcher, seconds: float) -> list:
    out, deadline = [], time.monotonic() + seconds
    while time.monotonic() < deadline:
        item = watcher.get(timeout=0.1)
        if item is not None:
            out.append(item)
    return out


def _release_fifo(path: Path) -> None:
    """Unblock a reader stuck on a FIFO (so a failing test does not hang), if one is."""
    try:
        fd = os.open(path, os.O_WRONLY | os.O_NONBLOCK)
    except OSError:
        return
    os.close(fd)


def _start_within(watcher, seconds: float) -> bool:
    import threading

    t = threading.Thread(target=watcher.start, daemon=True)
    t.start()
    t.join(seconds)
    return not t.is_alive()


def test_symlinks_to_files_outside_the_watch_folder_are_not_followed(tmp_path):
    from service.intake.watcher import VolumeWatcher
    from service.volume import IntakeEvent, Volume

    watch, outside = tmp_path / "watch", tmp_path / "elsewhere"
    watch.mkdir()
    outside.mkdir()
    _write(watch, 1)
    os.symlink(_write(outside, 2), watch / "001_000001_000002.nii")  # present at start, absolute link
    os.symlink(Path("..") / "elsewhere" / "secret", watch / "001_000001_000009.nii")  # relative, dangling
    watcher = VolumeWatcher(watch, polling="on", gap_timeout_s=0.3)
    watcher.start()
    try:
        os.symlink(_write(outside, 3, "mosaic"), watch / "001_000001_000003.dcm")  # arrives while watching
        (outside / "secret").write_bytes((outside / "001_000001_000002.nii").read_bytes())
        _write(watch, 4)
        items = _drain_watcher(watcher, 1.5)
    finally:
        watcher.stop()
    volumes = [i for i in items if isinstance(i, Volume)]
    assert [v.acquisition for v in volumes] == [1, 4]
    assert all(v.path.parent == watch and not v.path.is_symlink() for v in volumes)
    ignored = [i for i in items if isinstance(i, IntakeEvent) and i.kind == "ignored"]
    named = {Path(i.path).name for i in ignored if i.path is not None}
    assert {"001_000001_000002.nii", "001_000001_000003.dcm"} <= named, ignored
    assert all("outside the watch folder" in i.reason for i in ignored if Path(i.path).name in named)


def test_a_symlink_to_a_fifo_outside_is_never_opened(tmp_path):
    """Opening a FIFO blocks until someone writes: a watcher that follows the link hangs at start-up."""
    from service.intake.watcher import VolumeWatcher
    from service.volume import Volume

    watch, outside = tmp_path / "watch", tmp_path / "elsewhere"
    watch.mkdir()
    outside.mkdir()
    _write(watch, 1)
    os.mkfifo(outside / "pipe")
    os.symlink(outside / "pipe", watch / "001_000001_000002.dcm")
    watcher = VolumeWatcher(watch, polling="on", gap_timeout_s=0.3)
    try:
        started = _start_within(watcher, 5.0)
        if not started:
            _release_fifo(outside / "pipe")
        assert started, "VolumeWatcher.start() opened a FIFO outside the watch folder through a symlink"
        _write(watch, 3)
        items = _drain_watcher(watcher, 1.0)
        assert [i.acquisition for i in items if isinstance(i, Volume)] == [1, 3]
    finally:
        _release_fifo(outside / "pipe")
        watcher.stop()


def test_a_fifo_in_the_watch_folder_does_not_block_intake(tmp_path):
    """A special file named like a scanner file (FIFO) is ignored, and the volumes after it still arrive."""
    from service.intake.watcher import VolumeWatcher
    from service.volume import Volume

    watch = tmp_path / "watch"
    watch.mkdir()
    watcher = VolumeWatcher(watch, polling="on", gap_timeout_s=0.3)
    watcher.start()
    try:
        os.mkfifo(watch / "001_000001_000001.dcm")
        time.sleep(0.2)
        _write(watch, 2)
        _write(watch, 3)
        items = _drain_watcher(watcher, 1.5)
        _release_fifo(watch / "001_000001_000001.dcm")
        assert [i.acquisition for i in items if isinstance(i, Volume)] == [2, 3], items
    finally:
        _release_fifo(watch / "001_000001_000001.dcm")
        watcher.stop()


def test_a_stimulus_program_loads_its_keys_through_the_protocol_module_alone(keyring):
    """The display may import only service.protocol: CurveKeys.load gives it the same keys as service.live.security."""
    k = keyring / "keys"
    via_protocol = protocol.CurveKeys.load(k / "display.key_secret", k / "server.key")
    assert via_protocol == client_keys(k / "display.key_secret", k / "server.key")
    assert protocol.CurveKeys.load(k / "server.key_secret") == server_keys(k / "server.key_secret")
    assert via_protocol.server_key == server_keys(k / "server.key_secret").public
    os.chmod(k / "display.key_secret", 0o640)
    with pytest.raises(protocol.ProtocolError, match="chmod 600"):
        protocol.CurveKeys.load(k / "display.key_secret", k / "server.key")
    with pytest.raises(protocol.ProtocolError, match="no secret key"):
        protocol.CurveKeys.load(k / "server.key")
