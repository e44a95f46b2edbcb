"""An SMTP relay for the STARTTLS mail tests (tests/e2e/mail.rs), on aiosmtpd.

maildev cannot offer STARTTLS with a login, so the tests of the default
mode (`mail.smtp.tls = "starttls"`) use this one. It listens on
127.0.0.1:<port>, and in `starttls` mode offers STARTTLS with the given
certificate, requires it before anything else, and takes only the given
login. In `plain` mode it offers no STARTTLS at all (a relay a client
must refuse rather than send in the clear). Each message it accepts is
written to <out>/<n>.eml with the envelope in <n>.json. It prints
"ready" once it listens, and runs until killed.

Usage: relay.py --port P --out DIR --mode starttls|plain
                [--cert PEM --key PEM --user U --password W]
"""

import argparse
import json
import pathlib
import ssl
import sys
import threading

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult, LoginPassword


class Store:
    """Writes every accepted message to the out folder."""

    def __init__(self, out: pathlib.Path):
        self.out = out
        self.count = 0
        self.lock = threading.Lock()

    async def handle_DATA(self, server, session, envelope):
        with self.lock:
            self.count += 1
            n = self.count
        (self.out / f"{n}.eml").write_bytes(envelope.original_content or envelope.content)
        (self.out / f"{n}.json").write_text(
            json.dumps(
                {
                    "from": envelope.mail_from,
                    "to": envelope.rcpt_tos,
                    "tls": session.ssl is not None,
                    "login": session.authenticated,
                }
            )
        )
        return "250 OK"


def authenticator(user: str, password: str):
    def check(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login.decode() == user
            and auth_data.password.decode() == password
        )
        # handled=False: aiosmtpd answers a refusal (535) itself.
        return AuthResult(success=ok, handled=False)

    return check


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--out", type=pathlib.Path, required=True)
    parser.add_argument("--mode", choices=["starttls", "plain"], required=True)
    parser.add_argument("--cert")
    parser.add_argument("--key")
    parser.add_argument("--user")
    parser.add_argument("--password")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    options = {}
    if args.mode == "starttls":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)
        options = {
            "tls_context": context,
            "require_starttls": True,
            "auth_require_tls": True,
            "auth_required": True,
            "authenticator": authenticator(args.user, args.password),
        }
    controller = Controller(Store(args.out), hostname="127.0.0.1", port=args.port, **options)
    controller.start()
    print("ready", flush=True)
    threading.Event().wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
