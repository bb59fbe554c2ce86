"""The coldchain agent: runs on the appliance. Imports ``contract`` and its runtimes only."""
