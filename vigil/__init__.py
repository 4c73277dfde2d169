"""What every Vigil process shares: its settings, the domain vocabulary, the ``vigil`` command."""
