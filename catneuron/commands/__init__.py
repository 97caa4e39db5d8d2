"""One module per ``catneuron`` subcommand; each defines ``register(subparsers)``."""
