"""Make CurveZMQ key pairs for encrypted, authenticated connections between the service and its peers.

Needed only when the display or the experiment runs on another host than `fmriface serve` (on one host the
service binds to 127.0.0.1 and traffic never leaves the machine). Each name gets NAME.key (the public key: copy
it to the hosts that must accept this peer) and NAME.key_secret (both keys, mode 0600: it stays on its host).
The service loads server.key_secret and accepts only the public keys in its allowed-keys folder (written here
as allowed/*.key for every name but the server); each peer loads its own secret and server.key.

Examples
--------
fmriface keys --out keys/                       # server, display, experiment
fmriface keys --out keys/ --names server,display-booth,display-console --json
"""

from __future__ import annotations

import shutil
from pathlib import Path

from fmriface.common import UsageError, emit, parser, prepare_out_dir

DEFAULT_NAMES = ("server", "display", "experiment")


def main(argv: list[str] | None = None) -> int:
    """Create the CurveZMQ key pairs named by --names in --out and print where they are; returns 0.

    Every name but the server also gets its public key copied into ``allowed/``, the service's allowed-keys folder.
    """
    p = parser("keys", __doc__)
    p.add_argument("--out", type=Path, required=True, help="folder to write the key files into")
    p.add_argument(
        "--names",
        default=",".join(DEFAULT_NAMES),
        help="comma list of key pair names; 'server' is the service's (default: server,display,experiment)",
    )
    p.add_argument("--force", action="store_true", help="empty a non-empty --out folder first (old keys are lost)")
    p.add_argument("--json", action="store_true", help="print what was written as one JSON object")
    args = p.parse_args(argv)

    names = [n.strip() for n in args.names.split(",") if n.strip()]
    if not names:
        raise UsageError("--names is empty; give at least one key pair name")
    if len(set(names)) != len(names):
        raise UsageError(f"--names repeats a name: {args.names}")

    from service.live.security import PUBLIC_SUFFIX, KeyFileError, create_keypair, load_public_key

    out = prepare_out_dir(args.out, args.force)
    allowed = out / "allowed"
    written: dict[str, dict[str, str]] = {}
    try:
        for name in names:
            public, secret = create_keypair(out, name)
            written[name] = {"public_file": str(public), "secret_file": str(secret)}
            written[name]["public_key"] = load_public_key(public).decode("ascii")
            if name != "server":
                allowed.mkdir(exist_ok=True)
                shutil.copyfile(public, allowed / f"{name}{PUBLIC_SUFFIX}")
    except KeyFileError as exc:
        raise UsageError(str(exc)) from None
    result = {
        "out": str(out),
        "keys": written,
        "allowed_dir": str(allowed) if allowed.is_dir() else None,
        "note": "keep every *.key_secret on its own host; share only *.key files",
    }
    emit(result, args.json)
    return 0
