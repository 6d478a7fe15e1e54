"""The `smsq` subcommands, grouped by what they act on."""
