"""Measurements the `ocfpy bench` subcommands run and report.

``strongswan`` measures strongSwan's charon as the reference the targets in the performance
notes are ratios against (IKE establishment rate, kernel-libipsec ESP throughput and packet
rate), on the same machine and in the same run as ocfpy's own figures. ``netns`` and
``charon`` are the plumbing it stands on (two hosts as network namespaces, a charon per
namespace driven over vici); the interop tests reuse that plumbing.
"""
