"""Stages: each reads the file contracts, calls the libraries of the kit, writes contracts; none calls another."""
