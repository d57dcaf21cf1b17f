#!/usr/bin/env python3
"""A browser's side of Web Push for the tests, written against PyPI's
`http_ece` and `cryptography`, so what confab sends is judged by code that
is not confab's.

  push_check.py keygen
      -> {"d": ..., "p256dh": ..., "auth": ...}   (base64url, a fresh subscription)
  push_check.py open < {"authorization", "content_encoding", "body", "d", "auth", "aud"}
      -> {"claims": {...}, "key": ..., "plaintext": ... | null}

`open` checks the VAPID token (ES256 over the header and claims, with the
key given in `k`; `aud` equal to the endpoint's origin; `exp` in the
future and at most 24 hours ahead; `sub` a mailto: or https: URL) and
decrypts the body (aes128gcm). Any failure exits non-zero with the reason.
"""
import base64
import json
import sys
import time

import http_ece
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature


def b64d(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def b64e(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def keygen():
    priv = ec.generate_private_key(ec.SECP256R1())
    pub = priv.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    d = priv.private_numbers().private_value.to_bytes(32, "big")
    import os

    return {"d": b64e(d), "p256dh": b64e(pub), "auth": b64e(os.urandom(16))}


def fail(msg):
    print(msg, file=sys.stderr)
    sys.exit(1)


def open_push(req):
    auth_header = req["authorization"]
    if not auth_header.startswith("vapid "):
        fail("authorization: not a vapid scheme: %r" % auth_header)
    params = dict(p.strip().split("=", 1) for p in auth_header[len("vapid "):].split(","))
    token, k = params["t"], params["k"]
    head_b64, claims_b64, sig_b64 = token.split(".")
    header = json.loads(b64d(head_b64))
    if header.get("alg") != "ES256":
        fail("jwt: alg %r" % header.get("alg"))
    sig = b64d(sig_b64)
    if len(sig) != 64:
        fail("jwt: signature is not raw r||s")
    der = encode_dss_signature(int.from_bytes(sig[:32], "big"), int.from_bytes(sig[32:], "big"))
    pub = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64d(k))
    try:
        pub.verify(der, (head_b64 + "." + claims_b64).encode(), ec.ECDSA(hashes.SHA256()))
    except Exception:
        fail("jwt: bad signature")
    claims = json.loads(b64d(claims_b64))
    now = time.time()
    if claims.get("aud") != req["aud"]:
        fail("jwt: aud %r, expected %r" % (claims.get("aud"), req["aud"]))
    if not (now < claims.get("exp", 0) <= now + 24 * 3600 + 60):
        fail("jwt: exp %r out of range" % claims.get("exp"))
    sub = claims.get("sub", "")
    if not (sub.startswith("mailto:") or sub.startswith("https:")):
        fail("jwt: sub %r" % sub)
    body = b64d(req["body"]) if req["body"] else b""
    plaintext = None
    if body:
        if req.get("content_encoding") != "aes128gcm":
            fail("content-encoding %r" % req.get("content_encoding"))
        priv = ec.derive_private_key(int.from_bytes(b64d(req["d"]), "big"), ec.SECP256R1())
        plaintext = http_ece.decrypt(
            body, private_key=priv, auth_secret=b64d(req["auth"]), version="aes128gcm"
        ).decode()
    return {"claims": claims, "key": k, "plaintext": plaintext}


if __name__ == "__main__":
    if sys.argv[1:] == ["keygen"]:
        print(json.dumps(keygen()))
    elif sys.argv[1:] == ["open"]:
        print(json.dumps(open_push(json.load(sys.stdin))))
    else:
        fail("usage: push_check.py keygen | open")
