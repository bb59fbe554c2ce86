"""Exceptions of the cloud.

CloudError            anything the cloud refuses or cannot do
├── BrokerError       the embedded broker cannot start or stop, or a broker cannot be reached
├── StoreError        the database URL is wrong or the database cannot be opened
├── NotFoundError     a device, bundle or rollout that does not exist
├── BundleImportError a bundle tarball that is not a valid, signed coldchain bundle
├── IdentityError     the fleet's key folder (CA, revocation list, passwords) cannot be used
└── RolloutError      a rollout that cannot be started or changed (bad plan, wrong status)
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of the cloud's errors."""


class BrokerError(CloudError):
    """The embedded broker cannot start or stop, or a broker cannot be reached."""


class StoreError(CloudError):
    """The database URL is wrong or the database cannot be opened."""


class NotFoundError(CloudError):
    """A device, bundle or rollout that does not exist."""


class BundleImportError(CloudError):
    """A bundle tarball that is not a valid, signed coldchain bundle."""


class RolloutError(CloudError):
    """A rollout that cannot be started or changed."""


class IdentityError(CloudError):
    """The fleet's key folder (CA, revocation list, passwords) cannot be read or written, or an
    identity cannot be provisioned."""
