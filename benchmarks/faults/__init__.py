"""The fault harness: proves the device agent always ends on a verified known-good or the verified
new bundle, whatever happens (``python -m benchmarks.faults``; see ``__main__``)."""
