"""The Noise Protocol Framework, revision 34 (noiseprotocol.org/noise.html): NNpsk0 only.

Exactly one protocol, ``Noise_NNpsk0_25519_ChaChaPoly_SHA256``, sans-IO and with no
randomness of its own (the caller passes the ephemeral private key, drawn from its injected
random source).  The pattern is ``-> psk, e`` then ``<- e, ee``.

Why NNpsk0: the pre-shared key authenticates both messages (only a holder of the PSK can
produce or accept them), and the ephemeral-ephemeral X25519 exchange (``ee``) gives each
handshake fresh keys, so a later theft of the PSK does not decrypt recorded traffic
(forward secrecy).  No static keys are needed.  WireGuard builds on a Noise pattern
(IKpsk2) in the same way.

Transport messages are sealed with ``CipherState.encrypt_at``: an explicit nonce, the
packet number chosen by the caller (as WireGuard does), instead of Noise's implicit
counter, so datagrams may be lost or reordered.  The primitives are those of the
``cryptography`` package; HKDF is Noise's own HMAC construction (section 4.3).
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305

from rudp.errors import BadPacket

PROTOCOL_NAME: bytes = b"Noise_NNpsk0_25519_ChaChaPoly_SHA256"
KEY_SIZE = 32  # DHLEN, HASHLEN, the cipher key size (section 4) and the PSK size (section 9)
TAG_SIZE = 16
MESSAGE_OVERHEAD = KEY_SIZE + TAG_SIZE  # a handshake message: 32-byte e, payload, 16-byte tag
MAX_MESSAGE_SIZE = 65535  # section 3: the largest Noise message
_MAX_NONCE = 2**64 - 1  # section 5.1: n = 2^64-1 is reserved, never used to encrypt
_HASH = "sha256"
_Buffer = bytes | bytearray | memoryview


def _hkdf(chaining_key: bytes, input_key_material: bytes, num_outputs: int) -> tuple[bytes, ...]:
    """Section 4.3 HKDF: HMAC-SHA256 extract, then 2 or 3 chained expand blocks."""
    temp_key = hmac.digest(chaining_key, input_key_material, _HASH)
    output1 = hmac.digest(temp_key, b"\x01", _HASH)
    output2 = hmac.digest(temp_key, output1 + b"\x02", _HASH)
    if num_outputs == 2:
        return output1, output2
    return output1, output2, hmac.digest(temp_key, output2 + b"\x03", _HASH)


class CipherState:
    """Section 5.1 CipherState: a key ``k`` (or none) and a nonce ``n``.

    ``encrypt_with_ad``/``decrypt_with_ad`` use and advance ``nonce`` as Noise does;
    ``encrypt_at``/``decrypt_at`` take the nonce explicitly and leave ``nonce`` alone.
    The nonce is encoded as section 12.3 says for ChaChaPoly: 32 zero bits, then the
    64-bit nonce little-endian (computed as ``(n << 32).to_bytes(12, "little")``).
    """

    __slots__ = ("_decrypt", "_encrypt", "_key", "nonce")

    def __init__(self, key: bytes | None = None) -> None:
        if key is not None and len(key) != KEY_SIZE:
            raise ValueError(f"a cipher key is {KEY_SIZE} bytes, not {len(key)}")
        self._key = None if key is None else bytes(key)
        aead = None if self._key is None else ChaCha20Poly1305(self._key)  # once, reused
        self._encrypt = None if aead is None else aead.encrypt
        self._decrypt = None if aead is None else aead.decrypt
        self.nonce = 0
        """Noise's ``n``, used (and incremented) by ``encrypt_with_ad``/``decrypt_with_ad``."""

    @property
    def key(self) -> bytes | None:
        return self._key

    def encrypt_with_ad(self, ad: _Buffer, plaintext: _Buffer) -> bytes:
        """Section 5.1 EncryptWithAd: the plaintext as is without a key."""
        if self._key is None:
            return bytes(plaintext)
        ciphertext = self.encrypt_at(self.nonce, ad, plaintext)
        self.nonce += 1
        return ciphertext

    def decrypt_with_ad(self, ad: _Buffer, ciphertext: _Buffer) -> bytes:
        """Section 5.1 DecryptWithAd: ``nonce`` advances only if the tag verified."""
        if self._key is None:
            return bytes(ciphertext)
        plaintext = self.decrypt_at(self.nonce, ad, ciphertext)
        self.nonce += 1
        return plaintext

    def encrypt_at(self, nonce: int, ad: _Buffer, plaintext: _Buffer) -> bytes:
        """ENCRYPT(k, nonce, ad, plaintext) (sections 4.2, 11.4); ValueError for a bad nonce."""
        if not 0 <= nonce < _MAX_NONCE:
            raise ValueError(f"nonce {nonce} is outside 0..2**64-2")
        if self._encrypt is None:
            raise RuntimeError("this CipherState has no key")
        return self._encrypt((nonce << 32).to_bytes(12, "little"), plaintext, ad)

    def decrypt_at(self, nonce: int, ad: _Buffer, ciphertext: _Buffer) -> bytes:
        """DECRYPT(k, nonce, ad, ciphertext); BadPacket if it does not authenticate."""
        if not 0 <= nonce < _MAX_NONCE:
            raise ValueError(f"nonce {nonce} is outside 0..2**64-2")
        if self._decrypt is None:
            raise RuntimeError("this CipherState has no key")
        try:
            return self._decrypt((nonce << 32).to_bytes(12, "little"), ciphertext, ad)
        except InvalidTag:
            raise BadPacket("AEAD tag did not verify") from None


@dataclass(slots=True)
class _SymmetricState:
    """Section 5.2 SymmetricState: the chaining key ``ck``, the hash ``h``, a CipherState."""

    ck: bytes
    h: bytes
    cipher: CipherState

    @classmethod
    def initialize(cls, protocol_name: bytes) -> _SymmetricState:
        """InitializeSymmetric: ``h`` is the name zero-padded, or hashed if longer."""
        h = protocol_name.ljust(KEY_SIZE, b"\x00")
        if len(protocol_name) > KEY_SIZE:
            h = hashlib.sha256(protocol_name).digest()
        return cls(h, h, CipherState())

    def copy(self) -> _SymmetricState:
        cipher = CipherState(self.cipher.key)
        cipher.nonce = self.cipher.nonce
        return _SymmetricState(self.ck, self.h, cipher)

    def mix_key(self, input_key_material: bytes) -> None:
        self.ck, temp_k = _hkdf(self.ck, input_key_material, 2)
        self.cipher = CipherState(temp_k)  # HASHLEN = 32: no truncation needed

    def mix_hash(self, data: bytes) -> None:
        self.h = hashlib.sha256(self.h + data).digest()

    def mix_key_and_hash(self, input_key_material: bytes) -> None:
        self.ck, temp_h, temp_k = _hkdf(self.ck, input_key_material, 3)
        self.mix_hash(temp_h)
        self.cipher = CipherState(temp_k)

    def encrypt_and_hash(self, plaintext: bytes) -> bytes:
        ciphertext = self.cipher.encrypt_with_ad(self.h, plaintext)
        self.mix_hash(ciphertext)
        return ciphertext

    def decrypt_and_hash(self, ciphertext: bytes) -> bytes:
        plaintext = self.cipher.decrypt_with_ad(self.h, ciphertext)  # BadPacket if forged
        self.mix_hash(ciphertext)
        return plaintext

    def split(self) -> tuple[CipherState, CipherState]:
        temp_k1, temp_k2 = _hkdf(self.ck, b"", 2)
        return CipherState(temp_k1), CipherState(temp_k2)


class HandshakeState:
    """Section 5.3 HandshakeState for NNpsk0: two messages, then ``split()``.

    A message that fails to read raises ``BadPacket`` and changes nothing: the tokens are
    processed on a copy of the symmetric state, committed only once the tag verified.
    """

    def __init__(
        self, *, initiator: bool, psk: bytes, ephemeral_private: bytes, prologue: bytes = b""
    ) -> None:
        if len(psk) != KEY_SIZE:  # section 9: a PSK is 32 bytes
            raise ValueError(f"the PSK is {KEY_SIZE} bytes, not {len(psk)}")
        if len(ephemeral_private) != KEY_SIZE:
            raise ValueError(f"an X25519 private key is {KEY_SIZE} bytes")
        self.initiator = initiator
        self._psk = bytes(psk)
        self._e = X25519PrivateKey.from_private_bytes(bytes(ephemeral_private))
        self._e_pub = self._e.public_key().public_bytes_raw()
        self._ee: bytes | None = None  # DH(e, re), computed once re is known
        self._step = 0  # messages processed
        self._symmetric = _SymmetricState.initialize(PROTOCOL_NAME)
        self._symmetric.mix_hash(bytes(prologue))  # section 5.3 Initialize; NN has no pre-messages

    @property
    def finished(self) -> bool:
        return self._step == 2  # section 7.5 pattern NN, section 9.4 modifier psk0

    @property
    def handshake_hash(self) -> bytes:
        """Section 11.2 channel binding: ``h``, final once ``finished``."""
        return self._symmetric.h

    def _our_turn(self) -> bool:
        return not self.finished and (self._step % 2 == 0) == self.initiator

    def _exchange(self, remote_public: bytes) -> bytes:
        """Sections 4.1/12.1 DH; an all-zero output (a low-order point) is an error."""
        try:
            shared = self._e.exchange(X25519PublicKey.from_public_bytes(remote_public))
        except ValueError:  # cryptography refuses the all-zero output itself
            shared = bytes(KEY_SIZE)
        if not any(shared):
            raise BadPacket("X25519 with a low-order point")
        return shared

    def _mix_tokens(self, symmetric: _SymmetricState, e_pub: bytes, ee: bytes | None) -> None:
        """The tokens of message ``_step``: ``psk, e`` then ``e, ee`` (section 9.2 rules)."""
        if self._step == 0:
            symmetric.mix_key_and_hash(self._psk)  # "psk"
        symmetric.mix_hash(e_pub)  # "e" ...
        symmetric.mix_key(e_pub)  # ... which in a PSK handshake also does MixKey
        if self._step == 1:
            assert ee is not None
            symmetric.mix_key(ee)  # "ee"

    def write_message(self, payload: bytes = b"") -> bytes:
        """Section 5.3 WriteMessage; RuntimeError out of turn, ValueError if too large."""
        if not self._our_turn():
            raise RuntimeError("not this side's turn to write a handshake message")
        if len(payload) + MESSAGE_OVERHEAD > MAX_MESSAGE_SIZE:
            raise ValueError(f"a handshake message is at most {MAX_MESSAGE_SIZE} bytes")
        symmetric = self._symmetric.copy()
        self._mix_tokens(symmetric, self._e_pub, self._ee)  # the responder has ee from message 1
        message = self._e_pub + symmetric.encrypt_and_hash(bytes(payload))
        self._symmetric = symmetric
        self._step += 1
        return message

    def read_message(self, message: _Buffer) -> bytes:
        """Section 5.3 ReadMessage: the payload, or BadPacket (state unchanged)."""
        if self._our_turn() or self.finished:
            raise BadPacket("handshake message out of turn")
        if not MESSAGE_OVERHEAD <= len(message) <= MAX_MESSAGE_SIZE:
            raise BadPacket(f"a handshake message of {len(message)} bytes")
        data = bytes(message)
        remote = data[:KEY_SIZE]
        ee = self._exchange(remote) if self._step == 1 else None
        symmetric = self._symmetric.copy()
        self._mix_tokens(symmetric, remote, ee)
        payload = symmetric.decrypt_and_hash(data[KEY_SIZE:])
        if ee is None:  # the responder: DH only once the tag verified (a forgery costs less)
            ee = self._exchange(remote)
        self._symmetric = symmetric
        self._ee = ee
        self._step += 1
        return payload

    def split(self) -> tuple[CipherState, CipherState]:
        """Section 5.2 Split: (initiator->responder, responder->initiator)."""
        if not self.finished:
            raise RuntimeError("split() before the handshake finished")
        return self._symmetric.split()
