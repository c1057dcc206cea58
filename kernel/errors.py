"""Errors of corestate.kernel; all derive from CoreStateError.

Expected outcomes are not errors here: a file system without snapshots gives a weaker
provider, an unknown change set gives ``None`` ("walk everything"). Errors are for what
the caller cannot route around without a person: a busy snapshot lock, an HSM that is
missing or refuses the PIN.
"""

from __future__ import annotations

from corestate.errors import CoreStateError


class KernelError(CoreStateError):
    """Root of the errors raised by corestate.kernel."""


class SnapshotError(KernelError):
    """A snapshot could not be taken, read or cleaned up."""


class SnapshotBusy(SnapshotError):
    """Another session holds the snapshot lock of this protected path (one at a time)."""

    retryable = True
    hint = "another backup of this path is running; wait for it to finish"


class JournalError(KernelError):
    """The change journal could not start or read its store."""


class HsmError(KernelError):
    """The PKCS#11 token could not seal or unseal the root secret."""


class HsmModuleMissing(HsmError):
    """The PKCS#11 module library (the .so) cannot be loaded."""

    hint = "install the token's PKCS#11 module (e.g. softhsm2) and check the module path"


class HsmModuleUntrusted(HsmError):
    """The module a key file names is not safe to load for the user running the command
    (another user could have put their code there)."""


class HsmTokenNotFound(HsmError):
    """No token with the requested label is present."""

    retryable = True
    hint = "plug in the token or check the token label (softhsm2-util --show-slots)"


class HsmPinIncorrect(HsmError):
    """The token refused the user PIN."""

    hint = "check the PIN; several wrong PINs may lock the token"


class HsmKeyNotFound(HsmError):
    """The wrapping key named in a sealed blob is not on the token."""

    hint = "the secret was sealed on another token or the key was deleted; use the recovery phrase"


class HsmUnsealFailed(HsmError):
    """The token could not decrypt the sealed blob (wrong key, or the blob was altered)."""

    hint = "the sealed file is damaged or belongs to another token; use the recovery phrase"
