"""A small AMQP 1.0 peer (python-qpid-proton) for the Service Bus adapter's wire test.

It accepts what the real azure-servicebus client does when it sends in development-emulator mode
(plain AMQP on loopback): the CBS put-token exchange on `$cbs`, then messages on any queue link,
which it accepts and prints as JSON lines on stdout. Run: python tests/amqp_peer.py 127.0.0.1:PORT
"""

from __future__ import annotations

import json
import sys
from typing import Any

from proton import Message
from proton.handlers import MessagingHandler
from proton.reactor import Container


def _text(value: Any) -> str | None:
    return None if value is None else str(value)


class Peer(MessagingHandler):  # type: ignore[misc]
    def __init__(self, url: str) -> None:
        super().__init__(auto_accept=False)
        self.url = url
        self.reply_links: dict[tuple[Any, str], Any] = {}

    def on_start(self, event: Any) -> None:
        event.container.listen(self.url)
        print(json.dumps({"listening": self.url}), flush=True)

    def on_link_opening(self, event: Any) -> None:
        link = event.link
        if link.is_sender:  # the client's receiving side, e.g. the CBS reply link
            link.source.address = link.remote_source.address
            self.reply_links[(event.connection, link.remote_source.address)] = link
        else:
            link.target.address = link.remote_target.address

    def on_message(self, event: Any) -> None:
        msg = event.message
        target = event.link.remote_target.address
        if target == "$cbs":
            # The SAS token is taken as given: the peer checks the exchange, not the signature.
            reply = Message(
                address=msg.reply_to,
                correlation_id=msg.id,
                properties={"status-code": 202, "status-description": "Accepted"},
            )
            link = self.reply_links.get((event.connection, msg.reply_to))
            if link is None:
                link = next(lk for (conn, _), lk in self.reply_links.items() if conn == event.connection)
            link.send(reply)
        else:
            body = msg.body
            if isinstance(body, (bytes, memoryview)):
                body = bytes(body).decode("utf-8", "replace")
            print(
                json.dumps(
                    {
                        "to": target,
                        "message_id": _text(msg.id),
                        "correlation_id": _text(msg.correlation_id),
                        "content_type": _text(msg.content_type),
                        "properties": {str(k): str(v) for k, v in (msg.properties or {}).items()},
                        "annotations": {str(k): str(v) for k, v in (msg.annotations or {}).items()},
                        "body": body if isinstance(body, str) else repr(body),
                    }
                ),
                flush=True,
            )
        self.accept(event.delivery)


if __name__ == "__main__":
    Container(Peer(sys.argv[1])).run()
