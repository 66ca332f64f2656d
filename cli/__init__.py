"""The `dqc` command line (installed as the package dqcodec.cli)."""
