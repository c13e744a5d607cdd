"""aiokafka 0.14.0's OAUTHBEARER client ends the exchange after sending its token,
whatever the broker answers. Kafka answers a token it refuses (expired, another
audience, a bad signature) with an error challenge ({"status": "invalid_token"}, RFC
7628 section 3.2.2) and waits for the client's %x01 before failing the
authentication; aiokafka took the challenge for success, sent its next request into
the unfinished exchange, and the broker dropped the connection: the client saw a
broken connection instead of a refusal.

`RefusalAwareOAuthAuthenticator` answers the challenge with %x01, so the broker's
SaslAuthenticate error reaches aiokafka, which raises SaslAuthenticationFailed with
the broker's message. `install()` puts it where aiokafka's connections look it up
(`aiokafka.conn.OAuthAuthenticator`, read at each authentication)."""

from __future__ import annotations

import aiokafka.conn


class RefusalAwareOAuthAuthenticator(aiokafka.conn.OAuthAuthenticator):
    """aiokafka's OAUTHBEARER authenticator, answering an error challenge."""

    async def step(self, payload):
        if self._token_sent and payload:
            self.refusal = payload.decode("utf-8", "replace")
            return b"\x01", True
        return await super().step(payload)


def install() -> None:
    """Make every aiokafka connection authenticate OAUTHBEARER with the refusal-aware
    authenticator (idempotent)."""
    aiokafka.conn.OAuthAuthenticator = RefusalAwareOAuthAuthenticator
