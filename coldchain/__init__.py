"""coldchain: the command-line shell over contract, compiler, agent and cloud."""

__version__ = "0.1.0"
