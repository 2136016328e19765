#!/usr/bin/env python3
"""A real SMTP server (RFC 5321, aiosmtpd) for the tests: started by the test harness on a free
port, it stores each message it accepts as <n>.eml in --dir, with <n>.json beside it (envelope
sender, recipients, when). Prints "ready <port>" once it listens.

  --refuse ADDRESS   answer RCPT TO for ADDRESS with 550 (a mailbox that does not exist)
  --tls CERT KEY     TLS from the first byte (smtps://), with that certificate
  --starttls CERT KEY  plain first, STARTTLS required before MAIL (smtp://...?tls=required)
  --delay SECONDS    wait this long before answering DATA (a slow relay)
"""
import argparse
import asyncio
import json
import os
import signal
import ssl
import sys
import time

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP


class Store:
    def __init__(self, directory, refuse, delay):
        self.directory = directory
        self.refuse = {a.lower() for a in refuse}
        self.delay = delay
        self.count = len([f for f in os.listdir(directory) if f.endswith(".eml")])

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address.lower() in self.refuse:
            return "550 5.1.1 <%s>: no such mailbox" % address
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.delay:
            await asyncio.sleep(self.delay)
        self.count += 1
        base = os.path.join(self.directory, "%06d" % self.count)
        with open(base + ".eml.tmp", "wb") as f:
            f.write(envelope.original_content or envelope.content)
        with open(base + ".json", "w") as f:
            json.dump({"mail_from": envelope.mail_from, "rcpt_tos": envelope.rcpt_tos,
                       "at": time.time()}, f)
        os.replace(base + ".eml.tmp", base + ".eml")
        return "250 2.0.0 queued as %06d" % self.count


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--dir", required=True)
    parser.add_argument("--refuse", action="append", default=[])
    parser.add_argument("--tls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--starttls", nargs=2, metavar=("CERT", "KEY"))
    parser.add_argument("--delay", type=float, default=0.0)
    args = parser.parse_args()
    os.makedirs(args.dir, exist_ok=True)
    context = None
    if args.tls:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls[0], args.tls[1])
    server_kwargs = {"data_size_limit": 10 * 1024 * 1024}
    if args.starttls:
        starttls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        starttls.load_cert_chain(args.starttls[0], args.starttls[1])
        server_kwargs.update(tls_context=starttls, require_starttls=True)
    controller = Controller(Store(args.dir, args.refuse, args.delay), hostname="127.0.0.1",
                            port=args.port, ssl_context=context, server_kwargs=server_kwargs)
    controller.start()
    print("ready %d" % args.port, flush=True)
    stop = asyncio.Event()

    def stopping(*_):
        controller.stop()
        sys.exit(0)

    signal.signal(signal.SIGTERM, stopping)
    signal.signal(signal.SIGINT, stopping)
    while True:
        time.sleep(3600)


if __name__ == "__main__":
    main()
