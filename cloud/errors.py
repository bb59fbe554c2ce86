"""Exceptions of the cloud.

CloudError            anything the cloud refuses or cannot do
└── BrokerError       the embedded broker cannot start or stop
"""

from __future__ import annotations


class CloudError(Exception):
    """Base of the cloud's errors."""


class BrokerError(CloudError):
    """The embedded broker cannot start or stop."""
