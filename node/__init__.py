"""The node: backup engine, catalog, placement, repair, anomaly model, runtime and CLI.

``node.core`` holds the pure, sans-I/O decision cores; ``node.engine`` the backup and
restore data path; ``node.runtime`` the trio daemon; ``node.cli`` the command line.
"""
