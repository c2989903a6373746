"""cloudctl: a small Nova for KVM hosts, with Ansible as the hands."""

__version__ = "0.1.0"
