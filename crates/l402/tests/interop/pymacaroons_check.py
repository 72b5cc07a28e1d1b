#!/usr/bin/env python3
"""Cross-checks Turnpike's macaroons against pymacaroons (an independent implementation).

Usage: pymacaroons_check.py <command>, with a JSON request on stdin and a JSON reply on stdout.

  verify   stdin: {"root_key_hex": str, "macaroon_hex": str, "satisfy": [str, ...]}
           Decodes the V2 binary macaroon with pymacaroons, verifies it with the root key and a
           Verifier that satisfy_exact()s each string in "satisfy".
           stdout: {"verified": bool, "error": str | null, "version": int, "location": str,
                    "identifier_hex": str, "caveats": [str, ...], "signature_hex": str}

  mint     stdin: {"root_key_hex": str, "location": str, "identifier_hex": str,
                   "caveats": [str, ...]}
           Mints a V2 macaroon with pymacaroons and serializes it with BinarySerializer.
           stdout: {"macaroon_hex": str, "macaroon_b64url": str, "signature_hex": str}

  version  stdout: {"pymacaroons": str}

Exit status 0 on success (including "verified": false), 2 on bad usage or input.
"""

import binascii
import json
import sys

import pymacaroons
from pymacaroons import MACAROON_V2, Macaroon, Verifier
from pymacaroons.serializers import BinarySerializer


def cmd_verify(req):
    key = binascii.unhexlify(req["root_key_hex"])
    raw = binascii.unhexlify(req["macaroon_hex"])
    mac = BinarySerializer().deserialize_raw(raw)
    verifier = Verifier()
    for predicate in req.get("satisfy", []):
        verifier.satisfy_exact(predicate)
    error = None
    try:
        verified = bool(verifier.verify(mac, key))
    except Exception as e:  # pymacaroons raises on failure
        verified = False
        error = "%s: %s" % (type(e).__name__, e)
    return {
        "verified": verified,
        "error": error,
        "version": mac.version,
        "location": mac.location,
        "identifier_hex": binascii.hexlify(mac.identifier_bytes).decode("ascii"),
        "caveats": [c.caveat_id_bytes.decode("utf-8") for c in mac.first_party_caveats()],
        "signature_hex": mac.signature_bytes.decode("ascii"),
    }


def cmd_mint(req):
    mac = Macaroon(
        location=req["location"],
        identifier=binascii.unhexlify(req["identifier_hex"]),
        key=binascii.unhexlify(req["root_key_hex"]),
        version=MACAROON_V2,
    )
    for caveat in req.get("caveats", []):
        mac.add_first_party_caveat(caveat)
    serializer = BinarySerializer()
    return {
        "macaroon_hex": binascii.hexlify(serializer.serialize_raw(mac)).decode("ascii"),
        "macaroon_b64url": mac.serialize(serializer),
        "signature_hex": mac.signature_bytes.decode("ascii"),
    }


def main(argv):
    if len(argv) != 2 or argv[1] not in ("verify", "mint", "version"):
        sys.stderr.write("usage: pymacaroons_check.py verify|mint|version < request.json\n")
        return 2
    if argv[1] == "version":
        reply = {"pymacaroons": getattr(pymacaroons, "__version__", "unknown")}
    else:
        try:
            req = json.load(sys.stdin)
        except ValueError as e:
            sys.stderr.write("bad JSON request: %s\n" % e)
            return 2
        reply = cmd_verify(req) if argv[1] == "verify" else cmd_mint(req)
    json.dump(reply, sys.stdout)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
