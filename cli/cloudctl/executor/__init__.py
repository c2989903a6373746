"""The one door to the compute hosts: runs playbooks, returns structured results."""
