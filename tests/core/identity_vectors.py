"""Fixed identity test vectors shared by the identity, keystore and CLI tests.

A phrase and the public key and backup key it must give forever, and identity
files byte for byte as the version 1 code wrote them (before recovery phrases
and Argon2id), which must keep loading.
"""

from __future__ import annotations

from usenetsync_cli.core.identity import Identity

# The fixed test vector: this phrase is this identity, forever.
PHRASE = (
    "abandon amount liar amount expire adjust cage candy arch gather drum bullet"
    " absurd math era live bid rhythm alien crouch range attend journey unaware"
)
PHRASE_PUBKEY = (
    "uspk1zrb6wsquc2oe5loqw427x54iwxbjujwywh4npfqtuw3t7e272bx2shfsl7vmezppawjuww3uhz6runz5tnn54zp7psc7kycuojbg4veyjhioe"
)
PHRASE_BACKUP_KEY = "c4524697fe7cf8ff770f1b804824f2ab444f58b1963c2c2f3f4b9019e67f1373"
# An identity file exactly as the version 1 code wrote it (V1_IDENTITY, scrypt n=2^15,
# passphrase "old passphrase", salt 00..0f, nonce 00..0b).
V1_PASS = "old passphrase"
V1_PROTECTED = b"""{
  "type": "usenetsync-identity",
  "version": 1,
  "sign_pub": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
  "box_pub": "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ=",
  "protection": "scrypt-aes256gcm",
  "scrypt": {
    "n": 32768,
    "r": 8,
    "p": 1,
    "salt": "AAECAwQFBgcICQoLDA0ODw=="
  },
  "nonce": "AAECAwQFBgcICQoL",
  "private": "VIIlCEISjF2gq14YS55N/CgjfYRv3fzlKGXczy71xnQ3E+yswoVIhnACQhFaDaEROl1P0RYbE1GyQqmy1zuNpsiL4FSMDYUFQmhvrdIs3gk=",
  "checksum": "9Er83RM49JrBAgqfDd3lHaavsj/uOI0efD65z31Fipw="
}
"""
V1_PLAIN = b"""{
  "type": "usenetsync-identity",
  "version": 1,
  "sign_pub": "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg=",
  "box_pub": "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ=",
  "protection": "none",
  "private": "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8gISIjJCUmJygpKissLS4vMDEyMzQ1Njc4OTo7PD0+Pw==",
  "checksum": "FqCotg/7PnttkNrSo+ctzCPdcL2fQAX+iinmM5tJ/wk="
}
"""
# The identity the version 1 files hold (random keys, no phrase).
V1_IDENTITY = Identity.from_private_bytes(bytes(range(32)), bytes(range(32, 64)))
