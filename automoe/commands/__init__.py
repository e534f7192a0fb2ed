"""CLI subcommands. Every module here defines ``register(subparsers)``; `automoe.cli`
discovers them, so adding a command means adding a module."""
