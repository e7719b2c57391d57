"""Helper for the sidecar benchmark: drives the seeds' auth service package
(mcp-oauth-dynamicclient 0.2.0) the way its own code does.

    python seeds_auth.py key      -> prints a fresh RSA private key (PEM, base64) for JWT_PRIVATE_KEY_B64
    python seeds_auth.py token    -> prints an access token minted by its AuthManager.create_jwt_token
                                     (which also writes oauth:token:{jti} to Redis, as its /verify needs)

Settings come from the environment, exactly as `mcp-oauth-server` reads them.
"""

import asyncio
import base64
import sys


def key() -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    private = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = private.private_bytes(
        encoding=serialization.Encoding.PEM,
        format=serialization.PrivateFormat.PKCS8,
        encryption_algorithm=serialization.NoEncryption(),
    )
    print(base64.b64encode(pem).decode())


async def token() -> None:
    import redis.asyncio as redis
    from mcp_oauth_dynamicclient.auth_authlib import AuthManager
    from mcp_oauth_dynamicclient.config import Settings

    settings = Settings()
    manager = AuthManager(settings)
    client = redis.from_url(settings.redis_url, encoding="utf-8", decode_responses=True)
    claims = {"sub": "123", "username": "alice", "email": "alice@example.test", "name": "Alice", "scope": "openid profile email", "client_id": "bench"}
    print(await manager.create_jwt_token(claims, client))
    await client.aclose()


if __name__ == "__main__":
    if sys.argv[1:] == ["key"]:
        key()
    elif sys.argv[1:] == ["token"]:
        asyncio.run(token())
    else:
        sys.exit(__doc__)
