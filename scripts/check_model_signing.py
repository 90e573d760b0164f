#!/usr/bin/env python3
"""Checks a bundle made by `knobs release` the way OpenSSF model-signing's key verifier does, with
Python's `cryptography` (the library model-signing signs and verifies with). Run by hand:

    /usr/bin/python3 scripts/check_model_signing.py BUNDLE KEY.pub

model-signing itself is not installable here (PyPI is out of reach), so this follows its source at
sigstore/model-transparency commit e3430730bca924e672b2e59f10524a7ffb5adf79 step by step:
sign_sigstore_pb.Signature.read (the JSON), sign_ec_key.Verifier._verify_bundle (the key hint:
SHA-256 of the key re-serialized by cryptography as SPKI PEM; ECDSA with the curve's hash over
sign_sigstore_pb.pae), signing.Verifier.verify and dsse_payload_to_manifest (types, one subject,
root digest over the listed digests), then the "files" serialization (every file but the ignored
ones, hashed with SHA-256) compared with the manifest. Prints one JSON line and exits 0 when all
hold; raises otherwise.
"""
import base64
import hashlib
import json
import pathlib
import sys

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

PAYLOAD_TYPE = "application/vnd.in-toto+json"
CURVE_HASH = {256: hashes.SHA256, 384: hashes.SHA384, 521: hashes.SHA512}


def pae(payload: bytes) -> bytes:
    return b" ".join([f"DSSEv1 {len(PAYLOAD_TYPE)} {PAYLOAD_TYPE} {len(payload)}".encode(), payload])


def main(bundle: pathlib.Path, key_path: pathlib.Path) -> None:
    public_key = serialization.load_pem_public_key(key_path.read_bytes())
    assert isinstance(public_key, ec.EllipticCurvePublicKey), "model-signing verifies elliptic-curve keys only"
    sig = json.loads((bundle / "model.sig").read_text(encoding="utf-8"))
    assert sig["mediaType"] == "application/vnd.dev.sigstore.bundle.v0.3+json"
    pem = public_key.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
    assert sig["verificationMaterial"]["publicKey"]["hint"] == hashlib.sha256(pem).hexdigest(), "key hint"
    envelope = sig["dsseEnvelope"]
    assert envelope["payloadType"] == PAYLOAD_TYPE
    payload = base64.b64decode(envelope["payload"])
    public_key.verify(
        base64.b64decode(envelope["signatures"][0]["sig"]),
        pae(payload),
        ec.ECDSA(CURVE_HASH[public_key.curve.key_size]()),
    )
    statement = json.loads(payload)
    assert statement["_type"] == "https://in-toto.io/Statement/v1"
    assert statement["predicateType"] == "https://model_signing/signature/v1.0"
    assert len(statement["subject"]) == 1
    root = hashlib.sha256()
    for r in statement["predicate"]["resources"]:
        root.update(bytes.fromhex(r["digest"]))
    assert root.hexdigest() == statement["subject"][0]["digest"]["sha256"], "root digest"
    serialization_args = statement["predicate"]["serialization"]
    assert serialization_args["method"] == "files" and serialization_args["hash_type"] == "sha256"
    ignore = [bundle / p for p in serialization_args.get("ignore_paths", [])]
    ignore += [bundle / p for p in (".git", ".gitattributes", ".github", ".gitignore", "model.sig")]
    actual = {}
    for path in bundle.glob("**/*"):
        if any(path.is_relative_to(i) for i in ignore):
            continue
        assert not path.is_symlink(), f"{path} is a symlink"
        if path.is_file():
            actual[str(path.relative_to(bundle))] = hashlib.sha256(path.read_bytes()).hexdigest()
    expected = {r["name"]: r["digest"] for r in statement["predicate"]["resources"]}
    assert actual == expected, f"manifest mismatch: {actual} != {expected}"
    names = [r["name"] for r in statement["predicate"]["resources"]]
    assert names == [str(p) for p in sorted(pathlib.PurePosixPath(n) for n in names)], "resource order"
    print(json.dumps({"verified": True, "curve": public_key.curve.name, "files": len(expected)}))


if __name__ == "__main__":
    main(pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2]))
