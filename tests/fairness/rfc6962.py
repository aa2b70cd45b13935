#!/usr/bin/env python3
"""An independent RFC 6962 / RFC 9162 check of the service's log, in the standard library only.

Reads JSON on stdin: {"leaves": [base64 leaf bytes, position order], "root": base64,
"inclusion": [{"index", "size", "hashes"}], "consistency": [{"from", "to", "hashes"}]}.
Recomputes every tree hash from the leaves (MTH, RFC 6962 §2.1), checks each inclusion proof
(RFC 9162 §2.1.3.2) and consistency proof (§2.1.4.2) against those hashes, and prints "ok";
any disagreement exits 1 with the reason.
"""
import base64
import hashlib
import json
import sys


def leaf_hash(data):
    return hashlib.sha256(b"\x00" + data).digest()


def node_hash(left, right):
    return hashlib.sha256(b"\x01" + left + right).digest()


def mth(hashes):
    """Merkle tree hash of a list of leaf hashes (RFC 6962 §2.1)."""
    n = len(hashes)
    if n == 0:
        return hashlib.sha256(b"").digest()
    if n == 1:
        return hashes[0]
    k = 1
    while k * 2 < n:
        k *= 2
    return node_hash(mth(hashes[:k]), mth(hashes[k:]))


def verify_inclusion(index, size, leaf, proof, root):
    """RFC 9162 §2.1.3.2."""
    if index >= size:
        return False
    fn, sn, r = index, size - 1, leaf
    for p in proof:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            r = node_hash(p, r)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            r = node_hash(r, p)
        fn >>= 1
        sn >>= 1
    return sn == 0 and r == root


def verify_consistency(first, second, first_root, second_root, proof):
    """RFC 9162 §2.1.4.2."""
    if first == second:
        return not proof and first_root == second_root
    if first & (first - 1) == 0:
        proof = [first_root] + proof
    if not proof:
        return False
    fn, sn = first - 1, second - 1
    while fn & 1:
        fn >>= 1
        sn >>= 1
    fr = sr = proof[0]
    for c in proof[1:]:
        if sn == 0:
            return False
        if fn & 1 or fn == sn:
            fr = node_hash(c, fr)
            sr = node_hash(c, sr)
            if not fn & 1:
                while True:
                    fn >>= 1
                    sn >>= 1
                    if fn & 1 or fn == 0:
                        break
        else:
            sr = node_hash(sr, c)
        fn >>= 1
        sn >>= 1
    return fr == first_root and sr == second_root and sn == 0


def main():
    given = json.load(sys.stdin)
    b64 = base64.b64decode
    leaves = [leaf_hash(b64(l)) for l in given["leaves"]]
    root = mth(leaves)
    if root != b64(given["root"]):
        sys.exit("the leaves do not make the signed root")
    for p in given["inclusion"]:
        i, size = p["index"], p["size"]
        if not verify_inclusion(i, size, leaves[i], [b64(h) for h in p["hashes"]], mth(leaves[:size])):
            sys.exit(f"inclusion proof of index {i} in size {size} does not verify")
    for p in given["consistency"]:
        m, n = p["from"], p["to"]
        if not verify_consistency(m, n, mth(leaves[:m]), mth(leaves[:n]), [b64(h) for h in p["hashes"]]):
            sys.exit(f"consistency proof {m} -> {n} does not verify")
    print("ok")


if __name__ == "__main__":
    main()
