"""Pure domain types: no I/O, no wire formats."""
