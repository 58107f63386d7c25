"""Subcommands of `lightwam`: each module has add_arguments(parser) and run(args) -> int."""
