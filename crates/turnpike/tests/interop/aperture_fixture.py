#!/usr/bin/env python3
"""Builds an Aperture database with tokens minted the way Aperture mints them, with pymacaroons
(an implementation independent of Turnpike's).

Usage: aperture_fixture.py DB_PATH, with a JSON request on stdin:

  {"tokens": [{"name": str, "service": str, "capabilities": str, "constraints": {k: v},
               "valid_until": int | null, "stored": bool}]}

Creates DB_PATH (SQLite) with Aperture's `secrets` table (its migration 000001, verbatim
schema), then for each token: a random preimage, the L402 v0 identifier
(u16 BE 0 | sha256(preimage) | 32 random bytes), a random 32-byte root key, a V2 macaroon at
location "lsat" with Aperture's caveats in its order (services=<svc>:0,
<svc>_capabilities=<caps>, each constraint, <svc>_valid_until=<t> when set), and the row
(sha256(identifier), root key, now) unless "stored" is false.

stdout: {"tokens": {name: {"macaroon_b64": str, "macaroon_hex": str, "preimage_hex": str,
                           "macaroon_preimage_hex": str (with a preimage=<hex> caveat),
                           "id_hash_hex": str, "root_key_hex": str}}}
"""

import base64
import binascii
import datetime
import hashlib
import json
import os
import sqlite3
import sys

from pymacaroons import MACAROON_V2, Macaroon
from pymacaroons.serializers import BinarySerializer

SCHEMA = """
CREATE TABLE IF NOT EXISTS secrets (
    id INTEGER PRIMARY KEY,
    hash BLOB UNIQUE NOT NULL,
    secret BLOB UNIQUE NOT NULL,
    created_at TIMESTAMP NOT NULL
);

CREATE INDEX IF NOT EXISTS secrets_hash_idx ON secrets (hash);
"""


def mint(spec):
    preimage = os.urandom(32)
    payment_hash = hashlib.sha256(preimage).digest()
    identifier = b"\x00\x00" + payment_hash + os.urandom(32)
    root_key = os.urandom(32)
    mac = Macaroon(location="lsat", identifier=identifier, key=root_key, version=MACAROON_V2)
    svc = spec["service"]
    mac.add_first_party_caveat("services=%s:0" % svc)
    mac.add_first_party_caveat("%s_capabilities=%s" % (svc, spec.get("capabilities", "")))
    for k, v in spec.get("constraints", {}).items():
        mac.add_first_party_caveat("%s=%s" % (k, v))
    if spec.get("valid_until") is not None:
        mac.add_first_party_caveat("%s_valid_until=%d" % (svc, spec["valid_until"]))
    raw = BinarySerializer().serialize_raw(mac)
    # The gRPC form (`Macaroon: <hex>`): the client appends the preimage as a caveat.
    held = mac.copy()
    held.add_first_party_caveat("preimage=%s" % binascii.hexlify(preimage).decode("ascii"))
    return {
        "macaroon_preimage_hex": binascii.hexlify(BinarySerializer().serialize_raw(held)).decode("ascii"),
        "identifier": identifier,
        "root_key": root_key,
        "macaroon_b64": base64.b64encode(raw).decode("ascii"),
        "macaroon_hex": binascii.hexlify(raw).decode("ascii"),
        "preimage_hex": binascii.hexlify(preimage).decode("ascii"),
        "id_hash_hex": hashlib.sha256(identifier).hexdigest(),
        "root_key_hex": binascii.hexlify(root_key).decode("ascii"),
    }


def main():
    if len(sys.argv) != 2:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    req = json.load(sys.stdin)
    db = sqlite3.connect(sys.argv[1])
    db.executescript(SCHEMA)
    out = {}
    for spec in req["tokens"]:
        t = mint(spec)
        if spec.get("stored", True):
            db.execute(
                "INSERT INTO secrets (hash, secret, created_at) VALUES (?, ?, ?)",
                (hashlib.sha256(t["identifier"]).digest(), t["root_key"],
                 datetime.datetime.now(datetime.timezone.utc).isoformat()),
            )
        del t["identifier"], t["root_key"]
        out[spec["name"]] = t
    db.commit()
    db.close()
    json.dump({"tokens": out}, sys.stdout)


if __name__ == "__main__":
    main()
