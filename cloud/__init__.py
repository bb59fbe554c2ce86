"""The coldchain cloud: registry, fleet, rollouts, ingestion, monitoring, API."""
